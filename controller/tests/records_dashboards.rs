//! The Grafana dashboards: every query names only what the schema writes, the JSON has what
//! Grafana needs, every PromQL query returns data from a real server scraping `/metrics`, and
//! `dashboards/README.md` lists the schema as it is.
// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod records_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use communalia::records::schema::{self, Counters, SERIES, Sample};
use records_support::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dashboards")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(dashboards_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn panels(d: &Value) -> &Vec<Value> {
    d["panels"].as_array().expect("panels is an array")
}

/// (panel title, query) of every target, plus the template variables' queries.
fn queries(d: &Value, key: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let q = t[key]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no {key}", p["title"]));
            out.push((p["title"].as_str().unwrap_or("").to_owned(), q.to_owned()));
        }
    }
    out
}

// ---------------------------------------------------------------- InfluxQL

fn is_measurement(name: &str) -> bool {
    SERIES.iter().any(|s| s.measurement == name)
}

/// Problems with the names in one InfluxQL query: every double-quoted identifier must be the
/// measurement after FROM, one of its fields or one of its tags; a SELECT must name a field.
fn influxql_problems(q: &str) -> Vec<String> {
    let mut quoted = Vec::new();
    let mut rest = q;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(len) = after.find('"') else {
            return vec![format!("unbalanced quotes in {q}")];
        };
        quoted.push(after[..len].to_owned());
        rest = &after[len + 1..];
    }
    let Some(from) = q.find("FROM \"") else {
        return vec![format!("no FROM \"measurement\" in {q}")];
    };
    let m = &q[from + 6..];
    let measurement = &m[..m.find('"').unwrap_or(0)];
    if !is_measurement(measurement) {
        return vec![format!("unknown measurement {measurement:?} in {q}")];
    }
    let fields: BTreeSet<&str> = SERIES
        .iter()
        .filter(|s| s.measurement == measurement)
        .map(|s| s.field)
        .collect();
    let tags: BTreeSet<&str> = SERIES
        .iter()
        .filter(|s| s.measurement == measurement)
        .flat_map(|s| s.tags.iter().copied())
        .collect();
    let mut problems = Vec::new();
    let mut named_field = false;
    for id in &quoted {
        if id == measurement {
            continue;
        }
        if fields.contains(id.as_str()) {
            named_field = true;
        } else if !tags.contains(id.as_str()) {
            problems.push(format!(
                "{id:?} is neither a field nor a tag of {measurement}: {q}"
            ));
        }
    }
    if q.trim_start().starts_with("SELECT") && !named_field {
        problems.push(format!("the query selects no field: {q}"));
    }
    problems
}

#[test]
fn every_influxql_query_names_only_measurements_fields_and_tags_the_schema_writes() {
    let d = load("communalia.json");
    let mut all = queries(&d, "query");
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        all.push(("variable".into(), v["query"].as_str().unwrap().to_owned()));
    }
    assert!(all.len() >= 10, "{all:?}");
    let problems: Vec<String> = all
        .iter()
        .flat_map(|(title, q)| {
            influxql_problems(q)
                .into_iter()
                .map(move |p| format!("{title}: {p}"))
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_influxql_checker_catches_a_misspelt_field_a_wrong_tag_and_a_wrong_measurement() {
    let ok = r#"SELECT mean("pv_watts") FROM "communalia_site" WHERE "site" =~ /^$site$/ AND $timeFilter GROUP BY time($__interval)"#;
    assert!(influxql_problems(ok).is_empty());
    assert!(!influxql_problems(&ok.replace("pv_watts", "pv_power")).is_empty());
    assert!(!influxql_problems(&ok.replace("\"site\" =~", "\"load\" =~")).is_empty());
    assert!(!influxql_problems(&ok.replace("communalia_site", "communalia_sites")).is_empty());
    // A field of another measurement is not a field of this one.
    assert!(!influxql_problems(&ok.replace("pv_watts", "served_watts")).is_empty());
}

// ---------------------------------------------------------------- PromQL

/// Keywords, and aggregation operators (which may be followed by `by (...)` instead of `(`).
const PROMQL_WORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// The metric names and label names one PromQL expression uses.
fn promql_names(expr: &str) -> (Vec<String>, Vec<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let mut metrics = Vec::new();
    let mut labels = Vec::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
        } else if c == '{' || (c == '(' && label_list_next) {
            // Label matchers or a `by (...)` list: the identifiers are label names.
            let close = if c == '{' { '}' } else { ')' };
            label_list_next = false;
            i += 1;
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                } else if ident_start(chars[i]) {
                    let s = i;
                    while i < chars.len() && ident(chars[i]) {
                        i += 1;
                    }
                    labels.push(chars[s..i].iter().collect());
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let s = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[s..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&word.as_str())
            {
                label_list_next = true;
            } else if next == Some('(') || PROMQL_WORDS.contains(&word.to_lowercase().as_str()) {
                // A function or aggregation, or a keyword.
            } else {
                metrics.push(word);
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

fn promql_problems(expr: &str) -> Vec<String> {
    let (metrics, labels) = promql_names(expr);
    let mut problems = Vec::new();
    if metrics.is_empty() {
        problems.push(format!("names no metric: {expr}"));
    }
    for m in &metrics {
        let Some(series) = SERIES.iter().find(|s| s.metric() == *m) else {
            problems.push(format!("unknown metric {m:?}: {expr}"));
            continue;
        };
        for l in &labels {
            if !series.tags.contains(&l.as_str()) {
                problems.push(format!("{m} has no label {l:?}: {expr}"));
            }
        }
    }
    problems
}

#[test]
fn every_promql_query_names_only_metrics_and_labels_the_schema_writes() {
    let d = load("communalia-prometheus.json");
    let mut all = queries(&d, "expr");
    assert!(all.len() >= 10, "{all:?}");
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        // label_values(metric, label)
        let q = v["query"]["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("unexpected variable query {q}"));
        let (metric, label) = inner.split_once(',').unwrap();
        all.push((
            "variable".into(),
            format!("{}{{{}=\"x\"}}", metric.trim(), label.trim()),
        ));
    }
    let problems: Vec<String> = all
        .iter()
        .flat_map(|(title, q)| {
            promql_problems(q)
                .into_iter()
                .map(move |p| format!("{title}: {p}"))
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_promql_checker_catches_unknown_metrics_and_labels() {
    let ok = r#"sum by (tier) (increase(communalia_tier_served_watts{site=~"$site"}[$__rate_interval])) / 1000"#;
    assert_eq!(
        promql_names(ok),
        (
            vec!["communalia_tier_served_watts".to_owned()],
            vec!["tier".to_owned(), "site".to_owned()]
        )
    );
    assert!(promql_problems(ok).is_empty(), "{:?}", promql_problems(ok));
    assert!(!promql_problems(&ok.replace("served_watts", "serve_watts")).is_empty());
    assert!(!promql_problems(&ok.replace("by (tier)", "by (load)")).is_empty());
    assert!(!promql_problems(r#"communalia_site_pv_watts{device="x"}"#).is_empty());
    assert!(!promql_problems("up").is_empty());
}

// ---------------------------------------------------------------- Grafana's keys

#[test]
fn both_dashboards_have_the_keys_grafana_requires_and_the_same_panels() {
    let provisioned =
        std::fs::read_to_string(dashboards_dir().join("provisioning/datasources/communalia.yaml"))
            .unwrap();
    let mut titles = Vec::new();
    for (name, ds_type, ds_uid) in [
        ("communalia.json", "influxdb", "communalia-influxdb"),
        (
            "communalia-prometheus.json",
            "prometheus",
            "communalia-prometheus",
        ),
    ] {
        assert!(
            provisioned.contains(&format!("uid: {ds_uid}\n    type: {ds_type}\n")),
            "the data source {ds_uid} is provisioned"
        );
        let d = load(name);
        for key in ["uid", "title"] {
            assert!(
                d[key].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {key}"
            );
        }
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{name}: schemaVersion"
        );
        let ps = panels(&d);
        assert!(!ps.is_empty(), "{name}: panels");
        let mut ids = BTreeSet::new();
        for p in ps {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: {title}: id unique"
            );
            assert!(p["type"].as_str().is_some(), "{name}: {title}: type");
            assert_eq!(
                p["datasource"]["type"], ds_type,
                "{name}: {title}: datasource"
            );
            assert_eq!(
                p["datasource"]["uid"], ds_uid,
                "{name}: {title}: datasource"
            );
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: {title}: targets"));
            assert!(!targets.is_empty(), "{name}: {title}: targets");
            for t in targets {
                assert!(t["refId"].as_str().is_some(), "{name}: {title}: refId");
                assert_eq!(
                    t["datasource"]["uid"], ds_uid,
                    "{name}: {title}: target datasource"
                );
            }
            let g = &p["gridPos"];
            for k in ["x", "y", "w", "h"] {
                assert!(g[k].as_u64().is_some(), "{name}: {title}: gridPos.{k}");
            }
            let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && w > 0,
                "{name}: {title}: gridPos inside 24 columns"
            );
        }
        titles.push(ps.iter().map(|p| p["title"].clone()).collect::<Vec<_>>());
    }
    assert_eq!(
        titles[0], titles[1],
        "the two dashboards show the same panels"
    );
    let wanted = [
        "Power flows",
        "Battery state of charge",
        "Served vs demanded per tier",
        "Loads on / off",
        "Grid state",
        "Device health",
        "Cycle time",
        "Communs issued",
    ];
    for w in wanted {
        assert!(titles[0].iter().any(|t| t == w), "panel {w:?} missing");
    }
}

// ---------------------------------------------------------------- PromQL against a real server

/// Serves `schema::prometheus_text` of the village, counters growing on every scrape.
async fn serve_metrics(listener: tokio::net::TcpListener, scrapes: Arc<AtomicU64>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            let st = village("kalinzu");
            let body = schema::prometheus_text(&schema::points(&Sample {
                state: &st,
                cycle_seconds: 0.003 + n as f64 * 0.0001,
                counters: Counters {
                    communs_issued_millis: 1500 * n,
                    influxdb_points_dropped: 0,
                    mqtt_malformed_payloads: n / 3,
                    cycles: n,
                },
            }));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promql_panel_query_returns_data_from_a_server_scraping_the_metrics() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_port = listener.local_addr().unwrap().port();
    let scrapes = Arc::new(AtomicU64::new(0));
    tokio::spawn(serve_metrics(listener, Arc::clone(&scrapes)));

    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("scrape.yaml");
    std::fs::write(
        &conf,
        format!(
            "scrape_configs:\n  - job_name: communalia\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"127.0.0.1:{metrics_port}\"]\n"
        ),
    )
    .unwrap();
    let vm = Victoria::start_with(
        free_port(),
        vec![
            format!("-promscrape.config={}", conf.display()),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
        ],
    );
    let ready = eventually(Duration::from_secs(30), || {
        vm.force_flush();
        vm.query("count_over_time(communalia_counters_cycles_total[5m])")
            .first()
            .and_then(|r| r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()))
            .is_some_and(|n| n >= 4.0)
    })
    .await;
    assert!(
        ready,
        "victoria-metrics scraped fewer than 4 times ({} requests)",
        scrapes.load(Ordering::Relaxed)
    );
    vm.force_flush();

    let d = load("communalia-prometheus.json");
    let mut checked = 0;
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let q = expr
                .replace("$__rate_interval", "1m")
                .replace("$site", "kalinzu");
            let result = vm.query(&q);
            assert!(!result.is_empty(), "{}: no data for {q}", p["title"]);
            let legend = t["legendFormat"].as_str().unwrap_or("");
            for r in &result {
                let v: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
                assert!(v.is_finite(), "{}: {q} gave {v}", p["title"]);
                // Every label the legend shows is on the result.
                for part in legend.split("{{").skip(1) {
                    let label = part.split("}}").next().unwrap().trim();
                    assert!(
                        r["metric"][label].is_string(),
                        "{}: {q}: no {label} in {r}",
                        p["title"]
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
    // Spot checks of values the village has.
    let served = vm.query(r#"sum by (tier) (communalia_tier_served_watts{site=~"kalinzu"})"#);
    let workshop = served
        .iter()
        .find(|r| r["metric"]["tier"] == "workshop")
        .unwrap();
    assert_eq!(workshop["value"][1], "1800");
    let communs = vm.query(
        r#"sum(increase(communalia_counters_communs_issued_millis_total{site=~"kalinzu"}[1m])) / 1000"#,
    );
    let issued: f64 = communs[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        issued > 0.0,
        "communs issued grow with every scrape: {issued}"
    );
}

// ---------------------------------------------------------------- README

#[test]
fn dashboards_readme_lists_the_schema_as_it_is() {
    let path = dashboards_dir().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = (
        "<!-- schema:begin (generated from controller/src/records/schema.rs) -->\n",
        "<!-- schema:end -->",
    );
    let start = readme
        .find(begin)
        .expect("README.md lacks the schema:begin marker")
        + begin.len();
    let stop = readme
        .find(end)
        .expect("README.md lacks the schema:end marker");
    let fresh = schema::markdown_table();
    if readme[start..stop] != fresh {
        let updated = format!("{}{}{}", &readme[..start], fresh, &readme[stop..]);
        std::fs::write(&path, updated).unwrap();
        panic!(
            "dashboards/README.md was out of date with schema.rs; it has been regenerated: review and commit it"
        );
    }
    for s in SERIES {
        assert!(
            readme.contains(&format!("`{}`", s.metric())),
            "{}",
            s.metric()
        );
    }
}
