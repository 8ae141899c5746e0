//! The InfluxDB writer against a real server that speaks the InfluxDB v2 write API
//! (victoria-metrics): names and values, an outage, the bound, and a restart.

// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod records_support;

use std::time::{Duration, Instant};

use communalia::records::influx::{InfluxSettings, InfluxSink};
use communalia::records::schema::{self, Counters, Sample};
use records_support::*;

/// The first point's time, in ns: an hour ago (victoria-metrics silently drops samples older
/// than its retention, a month by default), on a whole second.
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as i64;
        (now - 3600) * 1_000_000_000
    })
}

fn settings(url: &str, dir: &std::path::Path) -> InfluxSettings {
    let mut s = InfluxSettings::new(url, "org", "bucket", "token", dir);
    s.flush_interval = Duration::from_millis(50);
    s.request_timeout = Duration::from_secs(2);
    s.retry_max = Duration::from_millis(200);
    s.batch_points = 7;
    s
}

/// One line per "cycle" `i`: the cycles counter is `i`, one second apart.
fn cycle_line(site: &str, i: u64) -> String {
    let st = village(site);
    let points = schema::points(&Sample {
        state: &st,
        cycle_seconds: 0.01,
        counters: Counters {
            cycles: i,
            ..Counters::default()
        },
    });
    let only: Vec<_> = points
        .into_iter()
        .filter(|p| p.series == schema::CYCLES)
        .collect();
    let mut lines = schema::line_protocol(&only, t0() + i as i64 * 1_000_000_000);
    assert_eq!(lines.len(), 1);
    lines.remove(0)
}

fn cycles_exported(vm: &Victoria, site: &str) -> (Vec<f64>, Vec<i64>) {
    let got = vm.export(&format!("{}{{site=\"{site}\"}}", schema::CYCLES.metric()));
    assert!(got.len() <= 1, "one series expected: {got:?}");
    got.into_iter()
        .next()
        .map(|e| (e.values, e.timestamps))
        .unwrap_or_default()
}

fn expected(range: std::ops::Range<u64>) -> (Vec<f64>, Vec<i64>) {
    (
        range.clone().map(|i| i as f64).collect(),
        range
            .map(|i| (t0() + i as i64 * 1_000_000_000) / 1_000_000)
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_point_of_a_cycle_arrives_under_its_schema_name_with_its_value() {
    let vm = Victoria::start();
    let buf = tempfile::tempdir().unwrap();
    let sink = InfluxSink::spawn(settings(&vm.url(), buf.path())).unwrap();
    let st = village("names");
    let points = schema::points(&Sample {
        state: &st,
        cycle_seconds: 0.0125,
        counters: Counters {
            communs_issued_millis: 4200,
            influxdb_points_dropped: 3,
            mqtt_malformed_payloads: 1,
            cycles: 99,
        },
    });
    let lines = schema::line_protocol(&points, t0());
    let n = lines.len() as u64;
    sink.push(lines);
    assert!(
        eventually(Duration::from_secs(10), || sink.stats().sent == n).await,
        "{:?}",
        sink.stats()
    );
    let exported = vm.export("{site=\"names\"}");
    assert_eq!(exported.len(), points.len(), "{exported:#?}");
    for p in &points {
        let name = p.series.metric();
        let found = exported.iter().find(|e| {
            e.metric.get("__name__") == Some(&name)
                && p.series
                    .tags
                    .iter()
                    .zip(&p.tags)
                    .all(|(k, v)| e.metric.get(*k) == Some(v))
        });
        let Some(e) = found else {
            panic!("{name} {:?} not stored: {exported:#?}", p.tags)
        };
        assert_eq!(e.values, vec![p.value], "{name} {:?}", p.tags);
        assert_eq!(e.timestamps, vec![t0() / 1_000_000], "{name}");
    }
    // Spot checks that do not go through the schema's own naming.
    let got =
        vm.export("communalia_load_measured_watts{site=\"names\",load=\"saw\",tier=\"workshop\"}");
    assert_eq!(got[0].values, vec![1750.0]);
    let got = vm.export("communalia_site_battery_soc_percent{site=\"names\"}");
    assert_eq!(got[0].values, vec![55.5]);
    let stats = sink.shutdown().await;
    assert_eq!((stats.buffered, stats.dropped), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_every_point_arrives_once_in_order() {
    let mut vm = Victoria::start();
    let buf = tempfile::tempdir().unwrap();
    let sink = InfluxSink::spawn(settings(&vm.url(), buf.path())).unwrap();
    let site = "outage";
    for i in 0..20 {
        sink.push(vec![cycle_line(site, i)]);
    }
    assert!(eventually(Duration::from_secs(10), || sink.stats().sent == 20).await);

    vm.stop();
    const DOWN: u64 = 600;
    for i in 20..20 + DOWN {
        sink.push(vec![cycle_line(site, i)]);
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || sink.stats().buffered == DOWN).await,
        "{:?}",
        sink.stats()
    );
    // Every line of the outage is on disk, not only counted as waiting (which includes the
    // memory queue): a crash now would lose none of them.
    let lines_on_disk = || -> u64 {
        std::fs::read_dir(buf.path())
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .map(|t| t.lines().count() as u64)
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(10), || lines_on_disk() == DOWN).await,
        "{} of {DOWN} lines on disk",
        lines_on_disk()
    );
    let on_disk = std::fs::read_dir(buf.path()).unwrap().count();
    assert!(on_disk >= 2, "the outage went to disk segments: {on_disk}");
    assert_eq!(sink.stats().sent, 20);

    vm.restart();
    let back = Instant::now();
    let total = 20 + DOWN + 30;
    for i in 20 + DOWN..total {
        sink.push(vec![cycle_line(site, i)]);
    }
    assert!(
        eventually(Duration::from_secs(30), || sink.stats().sent == total).await,
        "{:?}",
        sink.stats()
    );
    let drained = back.elapsed();
    eprintln!(
        "outage: {DOWN} points buffered, {} points sent in {drained:?} after the database returned",
        DOWN + 30
    );
    let stats = sink.shutdown().await;
    assert_eq!((stats.buffered, stats.dropped), (0, 0));
    assert_eq!(cycles_exported(&vm, site), expected(0..total));
    assert_eq!(std::fs::read_dir(buf.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_bound_the_oldest_points_are_dropped_and_counted() {
    let port = free_port(); // nothing listens yet
    let buf = tempfile::tempdir().unwrap();
    let mut s = settings(&format!("http://127.0.0.1:{port}"), buf.path());
    s.buffer_max_points = 21;
    let sink = InfluxSink::spawn(s).unwrap();
    let site = "bound";
    for i in 0..100 {
        sink.push(vec![cycle_line(site, i)]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = sink.stats();
            s.buffered + s.dropped == 100 && s.buffered <= 21 && s.dropped >= 79
        })
        .await,
        "{:?}",
        sink.stats()
    );
    let kept = sink.stats().buffered;
    let vm = Victoria::start_with(port, Vec::new());
    assert!(
        eventually(Duration::from_secs(20), || sink.stats().sent == kept).await,
        "{:?}",
        sink.stats()
    );
    let stats = sink.shutdown().await;
    assert_eq!(stats.dropped, 100 - kept);
    assert_eq!(cycles_exported(&vm, site), expected(100 - kept..100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_left_on_disk_at_shutdown_are_sent_by_the_next_start() {
    let port = free_port();
    let buf = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let site = "restart";
    let sink = InfluxSink::spawn(settings(&url, buf.path())).unwrap();
    for i in 0..30 {
        sink.push(vec![cycle_line(site, i)]);
    }
    let stats = sink.shutdown().await;
    assert_eq!((stats.sent, stats.buffered, stats.dropped), (0, 30, 0));

    let vm = Victoria::start_with(port, Vec::new());
    let sink = InfluxSink::spawn(settings(&url, buf.path())).unwrap();
    assert_eq!(sink.stats().buffered, 30);
    for i in 30..35 {
        sink.push(vec![cycle_line(site, i)]);
    }
    assert!(
        eventually(Duration::from_secs(10), || sink.stats().sent == 35).await,
        "{:?}",
        sink.stats()
    );
    sink.shutdown().await;
    assert_eq!(cycles_exported(&vm, site), expected(0..35));
}

/// A stand-in for the database that records every line it accepts, in arrival order: it
/// answers 503 while `down`, and 400 to a body holding a `poison` line.
#[derive(Default)]
struct Recorder {
    down: std::sync::atomic::AtomicBool,
    unavailable: std::sync::atomic::AtomicU64,
    lines: std::sync::Mutex<Vec<String>>,
    requests: std::sync::Mutex<Vec<(String, String)>>,
}

async fn recorder() -> (String, std::sync::Arc<Recorder>) {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    async fn write(
        State(r): State<Arc<Recorder>>,
        Query(q): Query<HashMap<String, String>>,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let params = format!(
            "org={} bucket={} precision={}",
            q.get("org").map_or("", |s| s),
            q.get("bucket").map_or("", |s| s),
            q.get("precision").map_or("", |s| s)
        );
        r.requests.lock().unwrap().push((params, auth));
        if r.down.load(Ordering::Relaxed) {
            r.unavailable.fetch_add(1, Ordering::Relaxed);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        if body.contains("poison") {
            return StatusCode::BAD_REQUEST;
        }
        r.lines
            .lock()
            .unwrap()
            .extend(body.lines().map(str::to_owned));
        StatusCode::NO_CONTENT
    }
    let state = Arc::new(Recorder::default());
    let app = axum::Router::new()
        .route("/api/v2/write", axum::routing::post(write))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_arrive_exactly_once_and_in_push_order_across_server_errors() {
    use std::sync::atomic::Ordering;
    let (url, rec) = recorder().await;
    let buf = tempfile::tempdir().unwrap();
    let sink = InfluxSink::spawn(settings(&url, buf.path())).unwrap();
    let line = |i: u64| format!("communalia_counters,site=order cycles_total={i}.0 {i}");
    for i in 0..10 {
        sink.push(vec![line(i)]);
    }
    assert!(eventually(Duration::from_secs(10), || sink.stats().sent == 10).await);

    rec.down.store(true, Ordering::Relaxed);
    for i in 10..400 {
        sink.push(vec![line(i), line(i + 1000)]);
        if i % 40 == 0 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || sink.stats().buffered == 780).await,
        "{:?}",
        sink.stats()
    );
    assert!(
        rec.unavailable.load(Ordering::Relaxed) >= 2,
        "the writer retried while the server answered 503"
    );
    rec.down.store(false, Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(20), || sink.stats().sent == 790).await,
        "{:?}",
        sink.stats()
    );
    let mut want: Vec<String> = (0..10).map(line).collect();
    for i in 10..400 {
        want.push(line(i));
        want.push(line(i + 1000));
    }
    assert_eq!(*rec.lines.lock().unwrap(), want);
    for (params, auth) in rec.requests.lock().unwrap().iter() {
        assert_eq!(params, "org=org bucket=bucket precision=ns");
        assert_eq!(auth, "Token token");
    }
    let stats = sink.shutdown().await;
    assert_eq!((stats.buffered, stats.dropped), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_database_refuses_as_malformed_is_dropped_and_does_not_block_the_rest() {
    let (url, rec) = recorder().await;
    let buf = tempfile::tempdir().unwrap();
    let mut s = settings(&url, buf.path());
    s.batch_points = 1;
    let sink = InfluxSink::spawn(s).unwrap();
    sink.push(vec![
        "m v=1.0 1".into(),
        "poison v=2.0 2".into(),
        "m v=3.0 3".into(),
    ]);
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = sink.stats();
            s.sent == 2 && s.dropped == 1
        })
        .await,
        "{:?}",
        sink.stats()
    );
    assert_eq!(*rec.lines.lock().unwrap(), vec!["m v=1.0 1", "m v=3.0 3"]);
    sink.shutdown().await;
}
