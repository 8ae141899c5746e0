//! The HTTP API over a real socket: every route, the JSON contract of MISSION.md, the write guard,
//! errors as JSON, server-sent events and graceful shutdown. A minimal HTTP/1.1 client over a
//! tokio `TcpStream` keeps the test free of extra crates and shows exactly what goes on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use communalia::http::{App, Published, serve};
use communalia::records::schema::{Counters, Sample, points, prometheus_text};
use communalia::state::{
    AssemblyTierView, AssemblyView, BatteryView, CommunsView, DecisionView, DeviceView, GridState,
    HealthReserveView, LoadView, PlanStepView, PlanView, SiteView, StateView, TierView,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const TOKEN: &str = "correct-horse-battery-staple";

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn load(id: &str, tier: &str, rank: usize, on: bool, watts: f64, reason: &str) -> LoadView {
    LoadView {
        id: id.into(),
        name: id.replace('_', " "),
        tier: tier.into(),
        rank,
        on,
        allocated_watts: if on { watts } else { 0.0 },
        measured_watts: Some(if on { watts - 4.0 } else { 0.0 }),
        reported_on: Some(on),
        reason: reason.into(),
        fault: None,
    }
}

fn state_at(time: String) -> StateView {
    StateView {
        time: time.clone(),
        site: SiteView {
            id: "kalinzu".into(),
            name: "Kalinzu village".into(),
            utc_offset_minutes: 180,
        },
        available_watts: 2100.0,
        pv_watts: Some(2600.0),
        consumption_watts: Some(1900.0),
        battery: Some(BatteryView {
            soc_percent: Some(64.5),
            watts: Some(-700.0),
        }),
        grid_state: GridState::Scarcity,
        status: String::new(),
        dry_run: false,
        devices: vec![
            DeviceView {
                id: "inverter".into(),
                name: "PV inverter".into(),
                online: true,
                last_seen: Some(time.clone()),
            },
            DeviceView {
                id: "meter".into(),
                name: "Main meter".into(),
                online: false,
                last_seen: None,
            },
        ],
        tiers: vec![
            TierView {
                name: "health".into(),
                rank: 1,
                demanded_watts: 180.0,
                served_watts: 180.0,
            },
            TierView {
                name: "workshop".into(),
                rank: 5,
                demanded_watts: 1500.0,
                served_watts: 0.0,
            },
        ],
        loads: vec![
            load(
                "clinic_fridge",
                "health",
                1,
                true,
                120.0,
                "on: tier 1, fully served",
            ),
            load(
                "workshop",
                "workshop",
                5,
                false,
                1500.0,
                "workshop off: tier 5; 2.1 kW available went to tiers 1-4 (1.9 kW demanded)",
            ),
        ],
        assembly_errors: vec![],
    }
}

fn plan(now: chrono::DateTime<chrono::Utc>) -> PlanView {
    PlanView {
        generated_at: rfc3339(now),
        step_minutes: 15,
        steps: (0..4)
            .map(|i| PlanStepView {
                start: rfc3339(now + chrono::Duration::minutes(15 * i)),
                pv_watts: 2000.0 - 100.0 * i as f64,
                soc_percent: Some(64.0 + i as f64),
                loads: BTreeMap::from([("clinic_fridge".to_string(), 120.0)]),
            })
            .collect(),
        diagnostics: vec!["solved in 3 ms".into()],
    }
}

fn assembly() -> AssemblyView {
    AssemblyView {
        decision: DecisionView {
            date: "2026-10-03".into(),
            reference: "General assembly 2026-10, minutes item 4".into(),
            summary: None,
            quorum: 40,
            present: 57,
            votes_for: 49,
            votes_against: 3,
            abstentions: 5,
        },
        tiers: vec![AssemblyTierView {
            name: "health".into(),
            rank: 1,
            sharing: "in_order".into(),
            loads: vec!["clinic_fridge".into()],
        }],
        health_reserve: HealthReserveView {
            tier: "health".into(),
            min_wh: 2000.0,
            margin_percent: 20.0,
        },
        communs: CommunsView {
            per_kwh_shifted: 1.0,
            per_hour_maintenance: 2.0,
            demurrage_percent_per_year: 6.0,
            account_ceiling: 500.0,
            attestations_needed: 3,
        },
        rejected_errors: vec![],
    }
}

fn published_at(time: chrono::DateTime<chrono::Utc>) -> Published {
    let state = state_at(rfc3339(time));
    let metrics = prometheus_text(&points(&Sample {
        state: &state,
        cycle_seconds: 0.004,
        counters: Counters::default(),
    }));
    Published {
        state,
        plan: plan(time),
        assembly: assembly(),
        metrics,
    }
}

/// Routes the ledger would merge in: one write that echoes, one that parses JSON.
fn ledger_like_routes() -> Router {
    Router::new()
        .route(
            "/api/ledger/echo",
            post(|body: String| async move { format!("wrote {body}") })
                .get(|| async { "ledger is readable" }),
        )
        .route(
            "/api/ledger/transfer",
            post(|axum::Json(v): axum::Json<Value>| async move { axum::Json(v) }),
        )
}

struct Server {
    port: u16,
    tx: watch::Sender<Arc<Published>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start_with(published: Published, write_token: Option<&str>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(Arc::new(published));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = App {
            published: rx,
            write_token: write_token.map(str::to_owned),
            stale_after: Duration::from_secs(30),
            extra: ledger_like_routes(),
        };
        let task = tokio::spawn(serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Server {
            port,
            tx,
            stop: Some(stop),
            task,
        }
    }

    async fn start() -> Server {
        Server::start_with(published_at(chrono::Utc::now()), Some(TOKEN)).await
    }

    async fn get(&self, path: &str) -> Reply {
        request(self.port, "GET", path, &[], b"").await
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "not JSON: {self:?}"
        );
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The error sentence of a JSON error body, checking the body's shape on the way.
    fn error(&self) -> String {
        let v = self.json();
        assert_eq!(v["status"], self.status, "{v}");
        v["error"].as_str().unwrap().to_owned()
    }
}

type Headers = Vec<(String, String)>;

/// Splits an HTTP/1.1 head from what follows it, once the head is complete.
fn split_head(buf: &[u8]) -> Option<(u16, Headers, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Some((status, headers, &buf[end + 4..]))
}

/// Decodes as much of a chunked body as has arrived; true once the last chunk is in.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_text = std::str::from_utf8(&raw[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (out, true);
        }
        let start = eol + 2;
        if raw.len() < start + size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

async fn send_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
}

/// One request on a fresh connection; the server closes it after the answer.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        send_request(&mut stream, method, path, headers, body).await;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let (status, headers, rest) = split_head(&raw).expect("incomplete answer");
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let body = if chunked {
            dechunk(rest).0
        } else {
            rest.to_vec()
        };
        Reply {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("no answer within 10 s")
}

/// An open `GET /api/events` stream, read event by event.
struct EventStream {
    stream: TcpStream,
    raw: Vec<u8>,
    seen: usize,
}

impl EventStream {
    async fn open(port: u16) -> EventStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        send_request(
            &mut stream,
            "GET",
            "/api/events",
            &[("Accept", "text/event-stream")],
            b"",
        )
        .await;
        EventStream {
            stream,
            raw: Vec::new(),
            seen: 0,
        }
    }

    fn head(&self) -> Option<(u16, Headers)> {
        split_head(&self.raw).map(|(s, h, _)| (s, h))
    }

    /// Events (blocks separated by a blank line) that arrived so far, and whether the stream ended.
    fn events(&self) -> (Vec<String>, bool) {
        let Some((_, _, rest)) = split_head(&self.raw) else {
            return (vec![], false);
        };
        let (body, done) = dechunk(rest);
        let text = String::from_utf8(body).unwrap();
        let mut blocks: Vec<String> = text.split("\n\n").map(str::to_owned).collect();
        blocks.pop(); // The part after the last blank line is incomplete.
        (blocks, done)
    }

    /// The next `state` event's JSON, skipping keep-alive comments; None if the stream ends.
    async fn next_state(&mut self) -> Option<Value> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (events, done) = self.events();
                while self.seen < events.len() {
                    let block = &events[self.seen];
                    self.seen += 1;
                    if block.lines().any(|l| l == "event: state") {
                        let data: String = block
                            .lines()
                            .filter_map(|l| l.strip_prefix("data: "))
                            .collect();
                        return Some(serde_json::from_str(&data).unwrap());
                    }
                }
                if done {
                    return None;
                }
                let mut buf = [0u8; 4096];
                let n = self.stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    return None;
                }
                self.raw.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("no event within 10 s")
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[tokio::test]
async fn state_answers_with_the_fields_named_in_the_contract() {
    let server = Server::start().await;
    let reply = server.get("/api/state").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let v = reply.json();
    for field in [
        "time",
        "available_watts",
        "pv_watts",
        "battery",
        "grid_state",
        "devices",
        "loads",
    ] {
        assert!(v.get(field).is_some(), "missing {field} in {v}");
    }
    assert!(chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).is_ok());
    assert_eq!(v["available_watts"], 2100.0);
    assert_eq!(v["pv_watts"], 2600.0);
    assert_eq!(v["battery"]["soc_percent"], 64.5);
    assert_eq!(v["battery"]["watts"], -700.0);
    assert_eq!(v["grid_state"], "scarcity");
    for device in v["devices"].as_array().unwrap() {
        for field in ["id", "online", "last_seen"] {
            assert!(
                device.get(field).is_some(),
                "device lacks {field}: {device}"
            );
        }
    }
    assert_eq!(v["devices"][1]["online"], false);
    assert_eq!(v["devices"][1]["last_seen"], Value::Null);
    let loads = v["loads"].as_array().unwrap();
    assert_eq!(loads.len(), 2);
    for l in loads {
        for field in [
            "id",
            "tier",
            "on",
            "allocated_watts",
            "measured_watts",
            "reason",
        ] {
            assert!(l.get(field).is_some(), "load lacks {field}: {l}");
        }
    }
    assert_eq!(loads[1]["id"], "workshop");
    assert_eq!(loads[1]["tier"], "workshop");
    assert_eq!(loads[1]["on"], false);
    assert_eq!(loads[1]["allocated_watts"], 0.0);
    assert!(loads[1]["reason"].as_str().unwrap().contains("tier 5"));
    // Nothing beyond what `StateView` says: the JSON is the struct, serialised.
    let expected = serde_json::to_value(&server.tx.borrow().state).unwrap();
    assert_eq!(v, expected);
}

#[tokio::test]
async fn plan_and_assembly_are_what_the_cycle_published() {
    let server = Server::start().await;
    let published = Arc::clone(&server.tx.borrow());
    let plan = server.get("/api/plan").await;
    assert_eq!(plan.status, 200);
    assert_eq!(plan.json(), serde_json::to_value(&published.plan).unwrap());
    assert_eq!(plan.json()["steps"][0]["loads"]["clinic_fridge"], 120.0);
    let assembly = server.get("/api/assembly").await;
    assert_eq!(assembly.status, 200);
    let v = assembly.json();
    assert_eq!(v, serde_json::to_value(&published.assembly).unwrap());
    assert_eq!(
        v["decision"]["reference"],
        "General assembly 2026-10, minutes item 4"
    );
    assert_eq!(keys(&v["decision"]).len(), 8);
}

#[tokio::test]
async fn answers_follow_the_latest_published_cycle() {
    let server = Server::start().await;
    let mut next = published_at(chrono::Utc::now());
    next.state.available_watts = 321.0;
    server.tx.send(Arc::new(next)).unwrap();
    assert_eq!(
        server.get("/api/state").await.json()["available_watts"],
        321.0
    );
}

#[tokio::test]
async fn healthz_is_ok_while_the_state_is_fresh() {
    let server = Server::start().await;
    let reply = server.get("/healthz").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["status"], "ok");
    assert!(v["age_seconds"].as_f64().unwrap() < 30.0);
    assert_eq!(v["stale_after_seconds"], 30.0);
    assert!(v.get("reason").is_none());
}

#[tokio::test]
async fn healthz_answers_503_with_the_reason_when_the_state_is_stale() {
    let old = chrono::Utc::now() - chrono::Duration::seconds(95);
    let server = Server::start_with(published_at(old), Some(TOKEN)).await;
    let reply = server.get("/healthz").await;
    assert_eq!(reply.status, 503);
    let v = reply.json();
    assert_eq!(v["status"], "stale");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("old") && reason.contains("limit 30 s"),
        "{reason}"
    );
    assert!(v["age_seconds"].as_f64().unwrap() >= 95.0);

    // A fresh cycle makes it healthy again.
    server
        .tx
        .send(Arc::new(published_at(chrono::Utc::now())))
        .unwrap();
    assert_eq!(server.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn healthz_answers_503_when_the_state_time_cannot_be_read() {
    let mut p = published_at(chrono::Utc::now());
    p.state.time = "yesterday".into();
    let server = Server::start_with(p, Some(TOKEN)).await;
    let reply = server.get("/healthz").await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.json()["reason"]
            .as_str()
            .unwrap()
            .contains("RFC 3339")
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_as_the_cycle_rendered_them() {
    let server = Server::start().await;
    let reply = server.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    assert_eq!(text, server.tx.borrow().metrics);
    assert!(text.contains("# TYPE "), "{text}");
    assert!(text.contains("workshop"), "{text}");
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let server = Server::start().await;
    let page = server.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().contains("/assets/app.js"));

    for (path, content_type) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
        assert_eq!(reply.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        // The browser's copy is confirmed with a 304 and no body.
        let etag = reply.header("etag").unwrap().to_owned();
        let again = request(server.port, "GET", path, &[("If-None-Match", &etag)], b"").await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        let changed = request(server.port, "GET", path, &[("If-None-Match", "\"0\"")], b"").await;
        assert_eq!(changed.status, 200, "{path}");
    }

    let missing = server.get("/assets/jquery.js").await;
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("jquery.js"));
}

#[tokio::test]
async fn events_send_the_state_at_once_and_again_after_each_cycle() {
    let server = Server::start().await;
    let mut events = EventStream::open(server.port).await;
    let first = events.next_state().await.unwrap();
    let (status, headers) = events.head().unwrap();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "text/event-stream")
    );
    assert_eq!(first["available_watts"], 2100.0);

    for watts in [1234.0, 99.0] {
        let mut next = published_at(chrono::Utc::now());
        next.state.available_watts = watts;
        server.tx.send(Arc::new(next)).unwrap();
        let update = events.next_state().await.unwrap();
        assert_eq!(update["available_watts"], watts);
    }
}

#[tokio::test]
async fn events_end_when_the_cycle_stops_publishing() {
    let Server {
        port,
        tx,
        stop: _stop,
        task: _task,
    } = Server::start().await;
    let mut events = EventStream::open(port).await;
    assert!(events.next_state().await.is_some());
    drop(tx);
    assert!(events.next_state().await.is_none());
}

#[tokio::test]
async fn writes_need_the_configured_bearer_token() {
    let server = Server::start().await;
    let port = server.port;
    // Reads stay open, merged routes included.
    let read = server.get("/api/ledger/echo").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.text(), "ledger is readable");

    let missing = request(port, "POST", "/api/ledger/echo", &[], b"hello").await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert!(missing.error().contains("Authorization: Bearer"));

    let wrong = request(
        port,
        "POST",
        "/api/ledger/echo",
        &[("Authorization", "Bearer correct-horse-battery-stapler")],
        b"hello",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.error().contains("not the one configured"));

    let basic = request(
        port,
        "POST",
        "/api/ledger/echo",
        &[("Authorization", "Basic YTpi")],
        b"x",
    )
    .await;
    assert_eq!(basic.status, 401);
    assert!(basic.error().contains("Bearer"));

    let bearer = format!("Bearer {TOKEN}");
    let right = request(
        port,
        "POST",
        "/api/ledger/echo",
        &[("Authorization", &bearer)],
        b"hello",
    )
    .await;
    assert_eq!(right.status, 200);
    assert_eq!(right.text(), "wrote hello");

    // The guard runs before routing: a write to an unknown path without the token is refused too.
    let unknown = request(port, "DELETE", "/api/anything", &[], b"").await;
    assert_eq!(unknown.status, 401);
}

#[tokio::test]
async fn writes_are_refused_when_no_token_is_configured() {
    for token in [None, Some("")] {
        let server = Server::start_with(published_at(chrono::Utc::now()), token).await;
        let reply = request(
            server.port,
            "POST",
            "/api/ledger/echo",
            &[("Authorization", "Bearer ")],
            b"hello",
        )
        .await;
        assert_eq!(reply.status, 403, "token {token:?}");
        assert!(reply.error().contains("no write token"));
        assert_eq!(server.get("/api/state").await.status, 200);
    }
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let server = Server::start().await;
    let reply = server.get("/api/stat").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error(), "no such page or endpoint: GET /api/stat");
}

#[tokio::test]
async fn wrong_methods_get_a_json_405_naming_the_allowed_ones() {
    let server = Server::start().await;
    let bearer = format!("Bearer {TOKEN}");
    let reply = request(
        server.port,
        "POST",
        "/api/state",
        &[("Authorization", &bearer)],
        b"{}",
    )
    .await;
    assert_eq!(reply.status, 405);
    let allow = reply.header("allow").unwrap().to_owned();
    assert!(allow.contains("GET"), "{allow}");
    let error = reply.error();
    assert!(
        error.starts_with("POST is not allowed on /api/state"),
        "{error}"
    );
    assert!(error.contains("GET"), "{error} {reply:?}");

    let on_merged = server.get("/api/ledger/transfer").await;
    assert_eq!(on_merged.status, 405);
    assert!(on_merged.error().contains("POST"));
}

#[tokio::test]
async fn a_bad_body_on_a_merged_route_gets_a_json_error_saying_what_is_wrong() {
    let server = Server::start().await;
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let json = ("Content-Type", "application/json");
    let broken = request(
        server.port,
        "POST",
        "/api/ledger/transfer",
        &[auth, json],
        b"{\"to\":",
    )
    .await;
    assert_eq!(broken.status / 100, 4, "{broken:?}");
    assert!(broken.error().to_lowercase().contains("json"));

    let untyped = request(server.port, "POST", "/api/ledger/transfer", &[auth], b"{}").await;
    assert_eq!(untyped.status, 415);
    assert!(
        untyped.error().contains("Content-Type"),
        "{}",
        untyped.error()
    );

    let fine = request(
        server.port,
        "POST",
        "/api/ledger/transfer",
        &[auth, json],
        b"{\"to\":\"amani\"}",
    )
    .await;
    assert_eq!(fine.status, 200);
    assert_eq!(fine.json()["to"], "amani");
}

#[tokio::test]
async fn shutdown_ends_event_streams_and_returns_promptly() {
    let mut server = Server::start().await;
    let mut events = EventStream::open(server.port).await;
    assert!(events.next_state().await.is_some());

    let asked = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();
    assert!(events.next_state().await.is_none(), "the stream should end");
    let served = tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("serve did not return")
        .unwrap();
    served.unwrap();
    // Well inside the 5 s grace: nothing held the shutdown open.
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        TcpStream::connect(("127.0.0.1", server.port))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_path_that_does_not_decode_gets_a_json_400() {
    let server = Server::start().await;
    let reply = server.get("/assets/%ff%fe.js").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let error = reply.error();
    // axum's own plain-text rejection, carried over into the JSON body.
    assert!(error.contains("Invalid UTF-8"), "{error}");
}

#[tokio::test]
async fn garbage_on_the_socket_gets_a_400_and_the_server_carries_on() {
    let server = Server::start().await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream
        .write_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&raw);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(server.get("/api/state").await.status, 200);
}

#[tokio::test]
async fn head_requests_get_the_headers_without_a_body() {
    let server = Server::start().await;
    let reply = request(server.port, "HEAD", "/api/state", &[], b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.body.is_empty());
}
