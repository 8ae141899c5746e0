//! The one place that names every measurement, field, tag and metric the controller writes.
//!
//! Each series is an InfluxDB measurement and field; its Prometheus name is `measurement_field`,
//! which is also the name a Prometheus-compatible store (VictoriaMetrics) gives the InfluxDB
//! point, so one PromQL dashboard reads both the scraped `/metrics` and the written time series.
//! Dashboards may name only what `SERIES` lists; a test holds them to it.

use std::fmt::Write as _;

use crate::state::{GridState, StateView};

/// Gauge or counter, as Prometheus types them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub measurement: &'static str,
    pub field: &'static str,
    /// Tag keys (InfluxDB) and label names (Prometheus), the same.
    pub tags: &'static [&'static str],
    pub kind: Kind,
    pub help: &'static str,
}

impl Series {
    /// The Prometheus metric name: `measurement_field`.
    pub fn metric(&self) -> String {
        format!("{}_{}", self.measurement, self.field)
    }
}

pub const SITE: &str = "communalia_site";
pub const LOAD: &str = "communalia_load";
pub const TIER: &str = "communalia_tier";
pub const DEVICE: &str = "communalia_device";
pub const COUNTERS: &str = "communalia_counters";

const S: &[&str] = &["site"];
const L: &[&str] = &["site", "load", "tier"];
const T: &[&str] = &["site", "tier"];
const D: &[&str] = &["site", "device"];

const fn gauge(
    measurement: &'static str,
    field: &'static str,
    tags: &'static [&'static str],
    help: &'static str,
) -> Series {
    Series {
        measurement,
        field,
        tags,
        kind: Kind::Gauge,
        help,
    }
}

const fn counter(
    measurement: &'static str,
    field: &'static str,
    tags: &'static [&'static str],
    help: &'static str,
) -> Series {
    Series {
        measurement,
        field,
        tags,
        kind: Kind::Counter,
        help,
    }
}

pub const PV_WATTS: Series = gauge(SITE, "pv_watts", S, "PV production now, in watts");
pub const BATTERY_WATTS: Series = gauge(
    SITE,
    "battery_watts",
    S,
    "battery power, positive while discharging, in watts",
);
pub const BATTERY_SOC: Series = gauge(
    SITE,
    "battery_soc_percent",
    S,
    "battery state of charge, in percent",
);
pub const CONSUMPTION_WATTS: Series = gauge(
    SITE,
    "consumption_watts",
    S,
    "site consumption now, in watts",
);
pub const AVAILABLE_WATTS: Series = gauge(
    SITE,
    "available_watts",
    S,
    "power available to the controlled loads this cycle, in watts",
);
pub const GRID_STATE: Series = gauge(SITE, "grid_state", S, "0 surplus, 1 tight, 2 scarcity");
pub const CYCLE_SECONDS: Series = gauge(
    SITE,
    "cycle_duration_seconds",
    S,
    "duration of the last control cycle, in seconds",
);
pub const LOAD_ALLOCATED: Series = gauge(
    LOAD,
    "allocated_watts",
    L,
    "power the plan gives the load, in watts",
);
pub const LOAD_MEASURED: Series = gauge(
    LOAD,
    "measured_watts",
    L,
    "power the load's plug measures, in watts",
);
pub const LOAD_ON: Series = gauge(LOAD, "on", L, "1 when the load is switched on");
pub const LOAD_RANK: Series = gauge(
    LOAD,
    "rank",
    L,
    "the load's tier rank, 1 the highest priority",
);
pub const TIER_DEMANDED: Series = gauge(
    TIER,
    "demanded_watts",
    T,
    "power the tier's loads ask for, in watts",
);
pub const TIER_SERVED: Series = gauge(
    TIER,
    "served_watts",
    T,
    "power the tier's loads are given, in watts",
);
pub const DEVICE_ONLINE: Series = gauge(
    DEVICE,
    "online",
    D,
    "1 when the device answered within its staleness limit",
);
pub const COMMUNS_ISSUED: Series = counter(
    COUNTERS,
    "communs_issued_millis_total",
    S,
    "milli-Communs credited for measured contributions",
);
pub const POINTS_DROPPED: Series = counter(
    COUNTERS,
    "influxdb_points_dropped_total",
    S,
    "time-series points dropped because the outage buffer was full",
);
pub const MALFORMED_PAYLOADS: Series = counter(
    COUNTERS,
    "mqtt_malformed_payloads_total",
    S,
    "MQTT payloads that could not be understood",
);
pub const CYCLES: Series = counter(COUNTERS, "cycles_total", S, "control cycles run");

/// Every series, in the order `/metrics` lists them.
pub const SERIES: &[Series] = &[
    PV_WATTS,
    BATTERY_WATTS,
    BATTERY_SOC,
    CONSUMPTION_WATTS,
    AVAILABLE_WATTS,
    GRID_STATE,
    CYCLE_SECONDS,
    LOAD_ALLOCATED,
    LOAD_MEASURED,
    LOAD_ON,
    LOAD_RANK,
    TIER_DEMANDED,
    TIER_SERVED,
    DEVICE_ONLINE,
    COMMUNS_ISSUED,
    POINTS_DROPPED,
    MALFORMED_PAYLOADS,
    CYCLES,
];

/// The table of every series, for `dashboards/README.md` (a test keeps that file up to date).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| Measurement (InfluxDB) | Field | Prometheus metric | Tags / labels | Type | Meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for s in SERIES {
        let kind = match s.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let tags: Vec<String> = s.tags.iter().map(|t| format!("`{t}`")).collect();
        let _ = writeln!(
            out,
            "| `{}` | `{}` | `{}` | {} | {kind} | {} |",
            s.measurement,
            s.field,
            s.metric(),
            tags.join(", "),
            s.help
        );
    }
    out
}

/// Counters the controller keeps across cycles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub communs_issued_millis: u64,
    pub influxdb_points_dropped: u64,
    pub mqtt_malformed_payloads: u64,
    pub cycles: u64,
}

/// One value of one series, with its tag values in the series' tag order.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub series: Series,
    pub tags: Vec<String>,
    pub value: f64,
}

/// Everything one cycle records: the state, how long the cycle took, the counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub state: &'a StateView,
    pub cycle_seconds: f64,
    pub counters: Counters,
}

/// The points of one cycle. A value the controller does not know (a silent inverter) is left
/// out, never written as zero.
pub fn points(sample: &Sample<'_>) -> Vec<Point> {
    let st = sample.state;
    let site = st.site.id.clone();
    let mut out =
        Vec::with_capacity(16 + st.loads.len() * 4 + st.tiers.len() * 2 + st.devices.len());
    let mut push = |series: Series, tags: Vec<String>, value: Option<f64>| {
        if let Some(value) = value.filter(|v| v.is_finite()) {
            out.push(Point {
                series,
                tags,
                value,
            });
        }
    };
    let s = || vec![site.clone()];
    push(PV_WATTS, s(), st.pv_watts);
    push(
        BATTERY_WATTS,
        s(),
        st.battery.as_ref().and_then(|b| b.watts),
    );
    push(
        BATTERY_SOC,
        s(),
        st.battery.as_ref().and_then(|b| b.soc_percent),
    );
    push(CONSUMPTION_WATTS, s(), st.consumption_watts);
    push(AVAILABLE_WATTS, s(), Some(st.available_watts));
    push(GRID_STATE, s(), Some(grid_state_number(st.grid_state)));
    push(CYCLE_SECONDS, s(), Some(sample.cycle_seconds));
    for l in &st.loads {
        let tags = || vec![site.clone(), l.id.clone(), l.tier.clone()];
        push(LOAD_ALLOCATED, tags(), Some(l.allocated_watts));
        push(LOAD_MEASURED, tags(), l.measured_watts);
        push(LOAD_ON, tags(), Some(if l.on { 1.0 } else { 0.0 }));
        push(LOAD_RANK, tags(), Some(l.rank as f64));
    }
    for t in &st.tiers {
        let tags = || vec![site.clone(), t.name.clone()];
        push(TIER_DEMANDED, tags(), Some(t.demanded_watts));
        push(TIER_SERVED, tags(), Some(t.served_watts));
    }
    for d in &st.devices {
        push(
            DEVICE_ONLINE,
            vec![site.clone(), d.id.clone()],
            Some(if d.online { 1.0 } else { 0.0 }),
        );
    }
    let c = sample.counters;
    push(COMMUNS_ISSUED, s(), Some(c.communs_issued_millis as f64));
    push(POINTS_DROPPED, s(), Some(c.influxdb_points_dropped as f64));
    push(
        MALFORMED_PAYLOADS,
        s(),
        Some(c.mqtt_malformed_payloads as f64),
    );
    push(CYCLES, s(), Some(c.cycles as f64));
    out
}

/// The grid state as a number a time series can hold.
pub fn grid_state_number(g: GridState) -> f64 {
    match g {
        GridState::Surplus => 0.0,
        GridState::Tight => 1.0,
        GridState::Scarcity => 2.0,
    }
}

fn prom_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format 0.0.4.
pub fn prometheus_text(points: &[Point]) -> String {
    let mut out = String::new();
    for series in SERIES {
        let mine: Vec<&Point> = points.iter().filter(|p| p.series == *series).collect();
        if mine.is_empty() {
            continue;
        }
        let name = series.metric();
        let kind = match series.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {name} {}", series.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for p in mine {
            let labels: Vec<String> = series
                .tags
                .iter()
                .zip(&p.tags)
                .map(|(k, v)| format!("{k}=\"{}\"", prom_label_value(v)))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {}", labels.join(","), p.value);
        }
    }
    out
}

fn lp_escape(v: &str, extra: &[char]) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        // Line protocol has no escape for a line break: it becomes an (escaped) space.
        let c = if c == '\n' || c == '\r' { ' ' } else { c };
        if c == '\\' || c == ',' || c == ' ' || extra.contains(&c) {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// InfluxDB line protocol, one line per measurement and tag set, fields together, at
/// `timestamp_ns`. Lines are in a stable order.
pub fn line_protocol(points: &[Point], timestamp_ns: i64) -> Vec<String> {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for p in points {
        let mut key = lp_escape(p.series.measurement, &[]);
        for (k, v) in p.series.tags.iter().zip(&p.tags) {
            if v.is_empty() {
                continue; // InfluxDB refuses empty tag values.
            }
            let _ = write!(key, ",{}={}", lp_escape(k, &['=']), lp_escape(v, &['=']));
        }
        let field = format!(
            "{}={}",
            lp_escape(p.series.field, &['=']),
            float_field(p.value)
        );
        match lines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, fields)) => fields.push(field),
            None => lines.push((key, vec![field])),
        }
    }
    lines
        .into_iter()
        .map(|(key, fields)| format!("{key} {} {timestamp_ns}", fields.join(",")))
        .collect()
}

/// Floats always carry a decimal point so InfluxDB never types a field as an integer.
fn float_field(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::*;

    fn state() -> StateView {
        StateView {
            time: "2026-11-24T12:00:00Z".into(),
            site: SiteView {
                id: "kalinzu".into(),
                name: "Kalinzu".into(),
                utc_offset_minutes: 180,
            },
            available_watts: 2100.0,
            pv_watts: None,
            consumption_watts: Some(1900.0),
            battery: Some(BatteryView {
                soc_percent: Some(55.5),
                watts: Some(-300.0),
            }),
            grid_state: GridState::Scarcity,
            status: String::new(),
            dry_run: false,
            devices: vec![DeviceView {
                id: "inverter".into(),
                name: "Inverter".into(),
                online: false,
                last_seen: None,
            }],
            tiers: vec![TierView {
                name: "health".into(),
                rank: 1,
                demanded_watts: 300.0,
                served_watts: 300.0,
            }],
            loads: vec![LoadView {
                id: "clinic fridge".into(),
                name: "Clinic \"vaccine\" fridge".into(),
                tier: "health".into(),
                rank: 1,
                on: true,
                allocated_watts: 120.0,
                measured_watts: Some(118.0),
                reported_on: Some(true),
                reason: "on".into(),
                fault: None,
            }],
            assembly_errors: vec![],
        }
    }

    #[test]
    fn every_metric_name_is_unique_and_prometheus_legal() {
        let mut names: Vec<String> = SERIES.iter().map(Series::metric).collect();
        for n in &names {
            assert!(
                n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{n}"
            );
            assert!(n.starts_with("communalia_"), "{n}");
        }
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate metric names");
    }

    #[test]
    fn an_unknown_value_is_left_out_not_written_as_zero() {
        let st = state();
        let pts = points(&Sample {
            state: &st,
            cycle_seconds: 0.004,
            counters: Counters::default(),
        });
        assert!(
            !pts.iter().any(|p| p.series == PV_WATTS),
            "silent inverter: no pv point"
        );
        let soc = pts.iter().find(|p| p.series == BATTERY_SOC).unwrap();
        assert_eq!(soc.value, 55.5);
    }

    #[test]
    fn prometheus_text_has_help_type_and_escaped_labels() {
        let st = state();
        let text = prometheus_text(&points(&Sample {
            state: &st,
            cycle_seconds: 0.004,
            counters: Counters {
                cycles: 7,
                ..Counters::default()
            },
        }));
        assert!(text.contains("# TYPE communalia_site_grid_state gauge\ncommunalia_site_grid_state{site=\"kalinzu\"} 2\n"), "{text}");
        assert!(text.contains("communalia_load_measured_watts{site=\"kalinzu\",load=\"clinic fridge\",tier=\"health\"} 118\n"), "{text}");
        assert!(text.contains("# TYPE communalia_counters_cycles_total counter\ncommunalia_counters_cycles_total{site=\"kalinzu\"} 7\n"), "{text}");
        assert!(!text.contains("communalia_site_pv_watts"), "{text}");
        assert!(
            text.contains("communalia_device_online{site=\"kalinzu\",device=\"inverter\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn a_line_break_in_a_tag_becomes_an_escaped_space_not_a_broken_line() {
        assert_eq!(lp_escape("a\nb\rc d", &['=']), "a\\ b\\ c\\ d");
    }

    #[test]
    fn line_protocol_groups_fields_and_escapes_tags() {
        let st = state();
        let lines = line_protocol(
            &points(&Sample {
                state: &st,
                cycle_seconds: 0.5,
                counters: Counters::default(),
            }),
            1_700_000_000_000_000_000,
        );
        let load = lines
            .iter()
            .find(|l| l.starts_with("communalia_load,"))
            .unwrap();
        assert_eq!(
            load,
            "communalia_load,site=kalinzu,load=clinic\\ fridge,tier=health allocated_watts=120.0,measured_watts=118.0,on=1.0,rank=1.0 1700000000000000000"
        );
        let site = lines
            .iter()
            .find(|l| l.starts_with("communalia_site,"))
            .unwrap();
        assert!(site.contains("battery_soc_percent=55.5,"), "{site}");
        assert!(site.contains("cycle_duration_seconds=0.5"), "{site}");
        assert!(!site.contains("pv_watts"), "{site}");
    }
}
