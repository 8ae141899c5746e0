//! Validation across references and lowering into `model` values.
//!
//! Every rule reports through `Doc::error` with the key path of the offending value and goes on,
//! so that one run of `communalia check` lists every mistake in both files.

use std::collections::HashMap;
use std::time::Duration;

use crate::doc::{At, Doc, KeyPath, suggestion};
use crate::model::*;
use crate::raw;

pub(crate) const SITE_TABLES: &[&str] = &[
    "site",
    "grid",
    "battery",
    "mqtt",
    "http",
    "influxdb",
    "forecast",
    "ledger",
    "devices",
    "pv_arrays",
    "loads",
];
pub(crate) const ASSEMBLY_TABLES: &[&str] = &["decision", "tiers", "health_reserve", "communs"];
pub(crate) const DEVICE_KINDS: &[&str] = &["sunspec", "sdm630", "victron"];
pub(crate) const CONTROL_KINDS: &[&str] = &["tasmota", "shelly", "setpoint", "measured_only"];

/// What the site file says, as far as it could be read, for the assembly checks.
pub(crate) struct SiteParts {
    pub site: Option<Site>,
    /// Every `[[loads]]` entry that has an id, valid or not, so that one mistake in a load does
    /// not also show up as "unknown load" in the assembly file.
    pub loads: Vec<KnownLoad>,
    pub battery: Option<Battery>,
    /// A `[battery]` table is present (it may have mistakes of its own).
    pub battery_table: bool,
}

/// What the assembly checks need to know of a load.
pub(crate) struct KnownLoad {
    pub id: String,
    /// False only when the entry says `kind = "measured_only"`.
    pub controlled: bool,
    pub path: KeyPath,
}

/// The `id` of each entry of an array of tables, read straight from the document.
fn entry_ids(doc: &Doc<'_>, list: &KeyPath) -> Vec<(String, KeyPath)> {
    let n = doc
        .get(list)
        .and_then(|v| v.get_ref().as_array())
        .map_or(0, |a| a.len());
    (0..n)
        .filter_map(|i| {
            let at = list.index(i);
            let id = doc.get(&at.key("id"))?.get_ref().as_str()?.to_owned();
            Some((id, at))
        })
        .collect()
}

fn p() -> KeyPath {
    KeyPath::root()
}

// ---------- small checks ----------

fn num(v: f64) -> String {
    format!("{v}")
}

fn positive(doc: &mut Doc<'_>, path: &KeyPath, v: f64, unit: &str) -> bool {
    if v.is_finite() && v > 0.0 {
        true
    } else {
        doc.error(
            path,
            format!("must be a positive number of {unit}, not {}", num(v)),
        );
        false
    }
}

fn non_negative(doc: &mut Doc<'_>, path: &KeyPath, v: f64, unit: &str) -> bool {
    if v.is_finite() && v >= 0.0 {
        true
    } else {
        doc.error(
            path,
            format!(
                "must be zero or a positive number of {unit}, not {}",
                num(v)
            ),
        );
        false
    }
}

fn within(doc: &mut Doc<'_>, path: &KeyPath, v: f64, lo: f64, hi: f64, unit: &str) -> bool {
    if v.is_finite() && v >= lo && v <= hi {
        true
    } else {
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        doc.error(
            path,
            format!(
                "{} is out of range: must be from {}{unit} to {}{unit}",
                num(v),
                num(lo),
                num(hi)
            ),
        );
        false
    }
}

fn within_u32(doc: &mut Doc<'_>, path: &KeyPath, v: u32, lo: u32, hi: u32, unit: &str) -> bool {
    within(doc, path, f64::from(v), f64::from(lo), f64::from(hi), unit)
}

fn non_empty(doc: &mut Doc<'_>, path: &KeyPath, s: &str) -> bool {
    if s.trim().is_empty() {
        doc.error(path, "must not be empty");
        false
    } else {
        true
    }
}

/// Ids name things across files: letters, digits, `_` and `-`, starting with a letter or digit.
fn valid_id(doc: &mut Doc<'_>, path: &KeyPath, id: &str) -> bool {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        doc.error(
            path,
            format!("\"{id}\" is not a valid id: use 1 to 64 letters, digits, '_' or '-', starting with a letter or digit"),
        );
    }
    ok
}

/// Remembers the first place each id was seen and reports later duplicates.
struct Seen(HashMap<String, (u32, KeyPath)>);

impl Seen {
    fn new() -> Self {
        Seen(HashMap::new())
    }

    fn first(&mut self, doc: &mut Doc<'_>, path: &KeyPath, id: &str, what: &str) -> bool {
        if let Some((line, _)) = self.0.get(id) {
            doc.error(
                path,
                format!("duplicate {what} \"{id}\" (first defined on line {line})"),
            );
            false
        } else {
            let line = line_of(doc, path);
            self.0.insert(id.to_owned(), (line, path.clone()));
            true
        }
    }
}

fn line_of(doc: &Doc<'_>, path: &KeyPath) -> u32 {
    doc.position(doc.span(path, At::Value).start).0
}

pub(crate) fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let example = "write it as host:port, for example 192.168.1.20:502";
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("\"{s}\" is not a socket address: missing ']'; {example}"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("\"{s}\" is not a socket address: missing port; {example}"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "\"{s}\" is not a socket address: \"{h}\" is not an IPv6 address"
            ));
        }
        (h, port)
    } else {
        let (h, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("\"{s}\" is not a socket address: missing port; {example}"))?;
        if h.contains(':') {
            return Err(format!(
                "\"{s}\" is not a socket address: put IPv6 addresses in brackets, as [::1]:502"
            ));
        }
        (h, port)
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
        format!("\"{s}\" is not a socket address: port \"{port}\" must be a number from 1 to 65535")
    })?;
    let all_numeric = host.chars().all(|c| c.is_ascii_digit() || c == '.');
    if host.is_empty() {
        return Err(format!(
            "\"{s}\" is not a socket address: the host is missing; {example}"
        ));
    }
    if all_numeric && host.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(format!(
            "\"{s}\" is not a socket address: \"{host}\" is not an IPv4 address"
        ));
    }
    let valid_name = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !all_numeric && !valid_name && host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "\"{s}\" is not a socket address: \"{host}\" is not a valid host name"
        ));
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

fn endpoint(doc: &mut Doc<'_>, path: &KeyPath, s: &str) -> Option<Endpoint> {
    parse_endpoint(s).map_err(|e| doc.error(path, e)).ok()
}

pub(crate) fn parse_time_of_day(s: &str) -> Result<TimeOfDay, String> {
    let bad = || format!("\"{s}\" is not a time of day; write it as HH:MM, from 00:00 to 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty()
        || h.len() > 2
        || m.len() != 2
        || !h.chars().chain(m.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(TimeOfDay {
        minutes: h * 60 + m,
    })
}

fn parse_date(value: &toml::Value) -> Result<Date, String> {
    let text = match value {
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => dt.to_string(),
        toml::Value::String(s) => s.clone(),
        other => {
            return Err(format!(
                "expected a date such as 2026-03-14, not {}",
                other.type_str()
            ));
        }
    };
    let bad = || format!("\"{text}\" is not a date; write it as YYYY-MM-DD");
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    let day: u8 = d.parse().map_err(|_| bad())?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if day == 0 || day > days {
        return Err(bad());
    }
    Ok(Date { year, month, day })
}

/// Communs amounts are whole milli-Communs: at most three decimals.
fn millis(doc: &mut Doc<'_>, path: &KeyPath, communs: f64, lo: f64, hi: f64) -> Option<i64> {
    if !within(doc, path, communs, lo, hi, "C") {
        return None;
    }
    let m = (communs * 1000.0).round();
    if (communs * 1000.0 - m).abs() > 1e-6 {
        doc.error(
            path,
            format!(
                "{} has more than three decimals; Communs count in thousandths",
                num(communs)
            ),
        );
        return None;
    }
    // In range by the check above, so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    Some(m as i64)
}

// ---------- site file ----------

pub(crate) fn lower_site(doc: &mut Doc<'_>) -> SiteParts {
    let mut parts = SiteParts {
        site: None,
        loads: Vec::new(),
        battery: None,
        battery_table: false,
    };
    if !doc.is_parsed() {
        return parts;
    }
    doc.unknown_keys(&p(), SITE_TABLES);
    let mut ok = true;

    let section: Option<raw::SiteSection> = doc.read(&p().key("site"));
    if doc.get(&p().key("site")).is_none() {
        doc.error(&p(), "missing table [site] (with id, name and assembly)");
    }
    let site_head = section.and_then(|s| lower_site_section(doc, s));
    ok &= site_head.is_some();

    let devices = lower_devices(doc);
    ok &= devices.is_some();
    let devices = devices.unwrap_or_default();
    let device_ids: Vec<String> = entry_ids(doc, &p().key("devices"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();

    let mqtt = match doc.get(&p().key("mqtt")) {
        None => None,
        Some(_) => {
            let m: Option<raw::Mqtt> = doc.read(&p().key("mqtt"));
            let lowered =
                m.and_then(|m| lower_mqtt(doc, m, site_head.as_ref().map(|h| h.id.as_str())));
            ok &= lowered.is_some();
            lowered
        }
    };
    let has_mqtt = doc.get(&p().key("mqtt")).is_some();

    let (loads, loads_ok) = lower_loads(doc, has_mqtt);
    ok &= loads_ok;
    parts.loads = entry_ids(doc, &p().key("loads"))
        .into_iter()
        .map(|(id, path)| {
            let kind = doc
                .get(&path.key("control").key("kind"))
                .and_then(|v| v.get_ref().as_str());
            KnownLoad {
                id,
                controlled: kind != Some("measured_only"),
                path,
            }
        })
        .collect();

    let grid = optional_section(doc, "grid", &mut ok, lower_grid);
    let battery = match doc.get(&p().key("battery")) {
        None => None,
        Some(_) => {
            let b: Option<raw::Battery> = doc.read(&p().key("battery"));
            let lowered = b.and_then(|b| lower_battery(doc, b, &devices, &device_ids));
            ok &= lowered.is_some();
            lowered
        }
    };
    parts.battery = battery.clone();
    parts.battery_table = doc.get(&p().key("battery")).is_some();
    let pv_arrays = lower_pv_arrays(doc, &devices, &device_ids);
    ok &= pv_arrays.is_some();

    let http = match doc.get(&p().key("http")) {
        None => Some(Http {
            listen: Endpoint {
                host: "127.0.0.1".into(),
                port: 8080,
            },
            write_token_file: None,
        }),
        Some(_) => doc
            .read::<raw::Http>(&p().key("http"))
            .and_then(|h| lower_http(doc, h)),
    };
    ok &= http.is_some();
    let influxdb = optional_section(doc, "influxdb", &mut ok, lower_influxdb);
    let forecast = optional_section(doc, "forecast", &mut ok, lower_forecast);
    if let (Some(f), None) = (&forecast, &mqtt)
        && f.pv_topic.is_some()
    {
        doc.error(
            &p().key("forecast").key("pv_topic"),
            "a forecast topic needs an [mqtt] broker",
        );
        ok = false;
    }
    let ledger = match doc.get(&p().key("ledger")) {
        None => Some(raw::Ledger::default()),
        Some(_) => doc.read::<raw::Ledger>(&p().key("ledger")),
    }
    .and_then(|l| {
        let a = non_empty(doc, &p().key("ledger").key("database"), &l.database);
        let b = non_empty(
            doc,
            &p().key("ledger").key("controller_key_file"),
            &l.controller_key_file,
        );
        (a && b).then_some(Ledger {
            database: l.database,
            controller_key_file: l.controller_key_file,
        })
    });
    ok &= ledger.is_some();

    if let (true, Some(head), Some(http), Some(ledger), Some(pv_arrays)) =
        (ok, site_head, http, ledger, pv_arrays)
    {
        parts.site = Some(Site {
            id: head.id,
            name: head.name,
            assembly_file: head.assembly,
            interval: head.interval,
            min_switch: head.min_switch,
            location: head.location,
            utc_offset_minutes: head.utc_offset_minutes,
            grid,
            battery,
            mqtt,
            http,
            influxdb,
            forecast,
            ledger,
            devices,
            pv_arrays,
            loads: loads.into_iter().map(|(l, _)| l).collect(),
        });
    }
    parts
}

fn optional_section<R, T>(
    doc: &mut Doc<'_>,
    key: &str,
    ok: &mut bool,
    lower: fn(&mut Doc<'_>, R) -> Option<T>,
) -> Option<T>
where
    R: serde::de::DeserializeOwned,
{
    doc.get(&p().key(key))?;
    let lowered = doc.read::<R>(&p().key(key)).and_then(|r| lower(doc, r));
    *ok &= lowered.is_some();
    lowered
}

struct SiteHead {
    id: String,
    name: String,
    assembly: String,
    interval: Duration,
    min_switch: Duration,
    location: Option<Location>,
    utc_offset_minutes: i32,
}

fn lower_site_section(doc: &mut Doc<'_>, s: raw::SiteSection) -> Option<SiteHead> {
    let at = |k: &str| p().key("site").key(k);
    let mut ok = valid_id(doc, &at("id"), &s.id);
    ok &= non_empty(doc, &at("name"), &s.name);
    ok &= non_empty(doc, &at("assembly"), &s.assembly);
    ok &= within(doc, &at("interval_secs"), s.interval_secs, 0.5, 60.0, "s");
    ok &= within(
        doc,
        &at("min_switch_secs"),
        s.min_switch_secs,
        0.0,
        3600.0,
        "s",
    );
    ok &= within_u32_i(
        doc,
        &at("utc_offset_minutes"),
        s.utc_offset_minutes,
        -720,
        840,
    );
    let location = match (s.latitude, s.longitude) {
        (Some(lat), Some(lon)) => {
            let a = within(doc, &at("latitude"), lat, -90.0, 90.0, "degrees");
            let b = within(doc, &at("longitude"), lon, -180.0, 180.0, "degrees");
            ok &= a && b;
            Some(Location {
                latitude: lat,
                longitude: lon,
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            doc.error(
                &at("latitude"),
                "latitude is given without longitude; give both or neither",
            );
            ok = false;
            None
        }
        (None, Some(_)) => {
            doc.error(
                &at("longitude"),
                "longitude is given without latitude; give both or neither",
            );
            ok = false;
            None
        }
    };
    ok.then(|| SiteHead {
        id: s.id,
        name: s.name,
        assembly: s.assembly,
        interval: Duration::from_secs_f64(s.interval_secs),
        min_switch: Duration::from_secs_f64(s.min_switch_secs),
        location,
        utc_offset_minutes: s.utc_offset_minutes,
    })
}

fn within_u32_i(doc: &mut Doc<'_>, path: &KeyPath, v: i32, lo: i32, hi: i32) -> bool {
    within(
        doc,
        path,
        f64::from(v),
        f64::from(lo),
        f64::from(hi),
        "minutes",
    )
}

fn measures(doc: &mut Doc<'_>, path: &KeyPath, s: &str) -> Option<Measures> {
    match s {
        "consumption" => Some(Measures::Consumption),
        "grid" => Some(Measures::Grid),
        "pv" => Some(Measures::Pv),
        other => {
            doc.error(
                path,
                format!(
                    "unknown meter placement \"{other}\" (expected one of: consumption, grid, pv)"
                ),
            );
            None
        }
    }
}

struct ModbusCommon {
    id: String,
    name: Option<String>,
    address: String,
    unit_id: u8,
    timeout_ms: u32,
    stale_after_secs: f64,
}

fn lower_devices(doc: &mut Doc<'_>) -> Option<Vec<Device>> {
    let list = p().key("devices");
    let n = doc.array_len(&list);
    let mut seen = Seen::new();
    let mut out = Vec::new();
    let mut ok = true;
    for i in 0..n {
        let at = list.index(i);
        let Some(kind) = doc.kind(&at, "device", DEVICE_KINDS) else {
            ok = false;
            continue;
        };
        let lowered = match kind.as_str() {
            "sunspec" => doc.read::<raw::SunspecDevice>(&at).and_then(|d| {
                let role = match d.role.as_str() {
                    "pv_inverter" => Some(SunspecRole::PvInverter),
                    "battery" => Some(SunspecRole::Battery),
                    "meter" => measures(doc, &at.key("measures"), d.measures.as_deref().unwrap_or("consumption"))
                        .map(SunspecRole::Meter),
                    other => {
                        doc.error(
                            &at.key("role"),
                            format!("unknown SunSpec device role \"{other}\" (expected one of: pv_inverter, battery, meter)"),
                        );
                        None
                    }
                };
                if d.measures.is_some() && d.role != "meter" {
                    doc.error(&at.key("measures"), "`measures` applies only to role = \"meter\"");
                }
                if let Some(b) = d.base_address
                    && ![0, 40000, 50000].contains(&b)
                {
                    doc.error(&at.key("base_address"), format!("SunSpec maps start at 0, 40000 or 50000, not {b}"));
                }
                let kind = DeviceKind::Sunspec {
                    role: role?,
                    base_address: d.base_address,
                };
                Some((
                    kind,
                    ModbusCommon {
                        id: d.id,
                        name: d.name,
                        address: d.address,
                        unit_id: d.unit_id,
                        timeout_ms: d.timeout_ms,
                        stale_after_secs: d.stale_after_secs,
                    },
                ))
            }),
            "sdm630" => doc.read::<raw::Sdm630Device>(&at).and_then(|d| {
                let m = measures(doc, &at.key("measures"), &d.measures)?;
                Some((
                    DeviceKind::Sdm630 { measures: m },
                    ModbusCommon {
                        id: d.id,
                        name: d.name,
                        address: d.address,
                        unit_id: d.unit_id,
                        timeout_ms: d.timeout_ms,
                        stale_after_secs: d.stale_after_secs,
                    },
                ))
            }),
            _ => doc.read::<raw::VictronDevice>(&at).map(|d| {
                (
                    DeviceKind::Victron,
                    ModbusCommon {
                        id: d.id,
                        name: d.name,
                        address: d.address,
                        unit_id: d.unit_id,
                        timeout_ms: d.timeout_ms,
                        stale_after_secs: d.stale_after_secs,
                    },
                )
            }),
        };
        let Some((kind, c)) = lowered else {
            ok = false;
            continue;
        };
        let mut dev_ok = valid_id(doc, &at.key("id"), &c.id)
            && seen.first(doc, &at.key("id"), &c.id, "device id");
        let address = endpoint(doc, &at.key("address"), &c.address);
        dev_ok &= address.is_some();
        dev_ok &= within_u32(doc, &at.key("timeout_ms"), c.timeout_ms, 50, 60_000, "ms");
        dev_ok &= within(
            doc,
            &at.key("stale_after_secs"),
            c.stale_after_secs,
            1.0,
            3600.0,
            "s",
        );
        match (dev_ok, address) {
            (true, Some(address)) => out.push(Device {
                name: c.name.unwrap_or_else(|| c.id.clone()),
                id: c.id,
                kind,
                address,
                unit_id: c.unit_id,
                timeout: Duration::from_millis(u64::from(c.timeout_ms)),
                stale_after: Duration::from_secs_f64(c.stale_after_secs),
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn lower_mqtt(doc: &mut Doc<'_>, m: raw::Mqtt, site_id: Option<&str>) -> Option<Mqtt> {
    let at = |k: &str| p().key("mqtt").key(k);
    let broker = endpoint(doc, &at("broker"), &m.broker);
    let mut ok = broker.is_some();
    if m.password_file.is_some() && m.username.is_none() {
        doc.error(
            &at("password_file"),
            "a password needs a username; add `username`",
        );
        ok = false;
    }
    if m.ca_file.is_some() && !m.tls {
        doc.error(
            &at("ca_file"),
            "a CA file is only used with TLS; add `tls = true`",
        );
        ok = false;
    }
    ok &= within_u32(doc, &at("keep_alive_secs"), m.keep_alive_secs, 5, 3600, "s");
    if let Some(id) = &m.client_id {
        ok &= non_empty(doc, &at("client_id"), id);
    }
    if let Some(prefix) = &m.home_assistant_discovery {
        ok &= non_empty(doc, &at("home_assistant_discovery"), prefix);
        if prefix.contains(['#', '+']) {
            doc.error(
                &at("home_assistant_discovery"),
                "a topic prefix cannot hold the MQTT wildcards `#` or `+`",
            );
            ok = false;
        }
    }
    let client_id = m
        .client_id
        .unwrap_or_else(|| format!("communalia-{}", site_id.unwrap_or("site")));
    Some(Mqtt {
        broker: broker?,
        client_id,
        username: m.username,
        password_file: m.password_file,
        tls: m.tls,
        ca_file: m.ca_file,
        keep_alive: Duration::from_secs(u64::from(m.keep_alive_secs)),
        home_assistant_discovery: m.home_assistant_discovery,
    })
    .filter(|_| ok)
}

/// What makes a load's plug or setpoint one device channel, in words, and the key that names
/// it: a Tasmota topic and relay (under its FullTopic), a Shelly prefix and switch, a setpoint's
/// command topic. `None` for a load nobody switches.
fn plug_identity(control: &Control) -> Option<(String, &'static str)> {
    match control {
        Control::Tasmota {
            topic,
            full_topic,
            relay,
            ..
        } => Some((
            format!(
                "{} relay {relay}",
                full_topic
                    .replace("%topic%", topic)
                    .replace("%prefix%", "")
                    .trim_matches('/')
            ),
            "topic",
        )),
        Control::Shelly {
            device_id,
            switch_id,
        } => Some((format!("{device_id} switch:{switch_id}"), "device_id")),
        Control::Setpoint { command_topic, .. } => Some((command_topic.clone(), "command_topic")),
        _ => None,
    }
}

fn lower_loads(doc: &mut Doc<'_>, has_mqtt: bool) -> (Vec<(Load, KeyPath)>, bool) {
    let list = p().key("loads");
    let n = doc.array_len(&list);
    let mut seen = Seen::new();
    let mut plugs = Seen::new();
    let mut out = Vec::new();
    let mut ok = true;
    for i in 0..n {
        let at = list.index(i);
        let raw: Option<raw::Load> = doc.read(&at);
        let control = lower_control(doc, &at.key("control"), has_mqtt);
        let Some(l) = raw else {
            ok = false;
            continue;
        };
        let mut load_ok =
            valid_id(doc, &at.key("id"), &l.id) && seen.first(doc, &at.key("id"), &l.id, "load id");
        load_ok &= non_empty(doc, &at.key("name"), &l.name);
        let owner = match (l.member, l.service) {
            (Some(m), None) => non_empty(doc, &at.key("member"), &m).then_some(Owner::Member(m)),
            (None, Some(s)) => non_empty(doc, &at.key("service"), &s).then_some(Owner::Service(s)),
            (Some(_), Some(_)) => {
                doc.error(
                    &at.key("service"),
                    "give either `member` or `service`, not both",
                );
                None
            }
            (None, None) => {
                doc.error(
                    &at,
                    "missing `member` or `service`: say whom the load belongs to",
                );
                None
            }
        };
        load_ok &= owner.is_some();
        // Two loads on one plug would switch it against each other every cycle.
        if let Some((key, field)) = control.as_ref().and_then(plug_identity) {
            load_ok &= plugs.first(doc, &at.key("control").key(field), &key, "plug");
        }
        load_ok &= positive(doc, &at.key("nominal_watts"), l.nominal_watts, "watts");
        let deadline = match &l.deadline {
            Some(s) => match parse_time_of_day(s) {
                Ok(t) => Some(t),
                Err(e) => {
                    doc.error(&at.key("deadline"), e);
                    load_ok = false;
                    None
                }
            },
            None => None,
        };
        let daily_need = match (l.daily_energy_wh, deadline) {
            (Some(e), d) => {
                if positive(doc, &at.key("daily_energy_wh"), e, "watt-hours") {
                    Some(DailyNeed {
                        energy: WattHours(e),
                        deadline: d.unwrap_or(TimeOfDay { minutes: 24 * 60 }),
                    })
                } else {
                    load_ok = false;
                    None
                }
            }
            (None, Some(_)) => {
                doc.error(
                    &at.key("deadline"),
                    "a deadline needs a daily energy need; add `daily_energy_wh`",
                );
                load_ok = false;
                None
            }
            (None, None) => None,
        };
        if let Some(Control::Setpoint { max, .. }) = &control
            && l.nominal_watts > max.0
        {
            doc.error(
                &at.key("nominal_watts"),
                format!(
                    "{} W is more than the setpoint's max_watts of {} W",
                    num(l.nominal_watts),
                    num(max.0)
                ),
            );
            load_ok = false;
        }
        match (load_ok, owner, control) {
            (true, Some(owner), Some(control)) => out.push((
                Load {
                    id: l.id,
                    name: l.name,
                    owner,
                    nominal: Watts(l.nominal_watts),
                    // A daily need with a deadline can wait by definition.
                    flexible: l.flexible || daily_need.is_some(),
                    daily_need,
                    control,
                },
                at,
            )),
            _ => ok = false,
        }
    }
    (out, ok)
}

fn lower_control(doc: &mut Doc<'_>, at: &KeyPath, has_mqtt: bool) -> Option<Control> {
    doc.get(at)?;
    if doc
        .get(at)
        .is_some_and(|v| v.get_ref().as_table().is_none())
    {
        doc.error(
            at,
            "expected a table such as { kind = \"tasmota\", topic = \"...\" }",
        );
        return None;
    }
    let kind = doc.kind(at, "control", CONTROL_KINDS)?;
    let control = match kind.as_str() {
        "tasmota" => doc.read::<raw::TasmotaControl>(at).and_then(|c| {
            let a = non_empty(doc, &at.key("topic"), &c.topic);
            let b = within_u32(doc, &at.key("relay"), u32::from(c.relay), 1, 8, "");
            let full = if c.full_topic.contains("%prefix%") && c.full_topic.contains("%topic%") {
                true
            } else {
                doc.error(
                    &at.key("full_topic"),
                    "a Tasmota FullTopic must contain %prefix% and %topic%",
                );
                false
            };
            // Tasmota takes 0 (telemetry off) or 10 to 3600 s; 1 would mean "reset to 300".
            let tele = match c.tele_period_secs {
                None => Some(None),
                Some(0) => Some(Some(0)),
                Some(v) if (10..=3600).contains(&v) => u16::try_from(v).ok().map(Some),
                Some(v) => {
                    doc.error(
                        &at.key("tele_period_secs"),
                        format!("{v} is not a Tasmota TelePeriod: use 0 (telemetry off) or 10 to 3600 seconds"),
                    );
                    None
                }
            };
            match (a && b && full, tele) {
                (true, Some(tele_period_secs)) => Some(Control::Tasmota {
                    topic: c.topic,
                    full_topic: c.full_topic,
                    relay: c.relay,
                    tele_period_secs,
                }),
                _ => None,
            }
        }),
        "shelly" => doc.read::<raw::ShellyControl>(at).and_then(|c| {
            non_empty(doc, &at.key("device_id"), &c.device_id).then_some(Control::Shelly {
                device_id: c.device_id,
                switch_id: c.switch_id,
            })
        }),
        "setpoint" => doc.read::<raw::SetpointControl>(at).and_then(|c| {
            let mut ok = non_empty(doc, &at.key("command_topic"), &c.command_topic);
            ok &= non_negative(doc, &at.key("min_watts"), c.min_watts, "watts");
            ok &= positive(doc, &at.key("max_watts"), c.max_watts, "watts");
            if ok && c.max_watts < c.min_watts {
                doc.error(
                    &at.key("max_watts"),
                    format!(
                        "max_watts ({}) is below min_watts ({})",
                        num(c.max_watts),
                        num(c.min_watts)
                    ),
                );
                ok = false;
            }
            ok.then_some(Control::Setpoint {
                command_topic: c.command_topic,
                state_topic: c.state_topic,
                min: Watts(c.min_watts),
                max: Watts(c.max_watts),
            })
        }),
        _ => doc
            .read::<raw::MeasuredOnlyControl>(at)
            .map(|_| Control::MeasuredOnly),
    }?;
    if control.uses_mqtt() && !has_mqtt {
        doc.error(
            &at.key("kind"),
            format!("a {kind} load is driven over MQTT, but this site file has no [mqtt] table with a broker"),
        );
        return None;
    }
    Some(control)
}

fn lower_grid(doc: &mut Doc<'_>, g: raw::Grid) -> Option<Grid> {
    let at = |k: &str| p().key("grid").key(k);
    let kind = match g.kind.as_str() {
        "grid" => Some(GridKind::Grid),
        "generator" => Some(GridKind::Generator),
        other => {
            doc.error(
                &at("kind"),
                format!("unknown grid kind \"{other}\" (expected one of: grid, generator)"),
            );
            None
        }
    };
    let mut ok = positive(doc, &at("max_import_watts"), g.max_import_watts, "watts");
    ok &= non_negative(doc, &at("max_export_watts"), g.max_export_watts, "watts");
    if let Some(price) = g.import_price_per_kwh {
        ok &= non_negative(
            doc,
            &at("import_price_per_kwh"),
            price,
            "price units per kWh",
        );
    }
    ok &= non_negative(
        doc,
        &at("export_price_per_kwh"),
        g.export_price_per_kwh,
        "price units per kWh",
    );
    Some(Grid {
        kind: kind?,
        max_import: Watts(g.max_import_watts),
        max_export: Watts(g.max_export_watts),
        import_price_per_kwh: g.import_price_per_kwh,
        export_price_per_kwh: g.export_price_per_kwh,
    })
    .filter(|_| ok)
}

fn lower_battery(
    doc: &mut Doc<'_>,
    b: raw::Battery,
    devices: &[Device],
    device_ids: &[String],
) -> Option<Battery> {
    let at = |k: &str| p().key("battery").key(k);
    let mut ok = true;
    match devices.iter().find(|d| d.id == b.device) {
        Some(Device {
            kind:
                DeviceKind::Sunspec {
                    role: SunspecRole::Battery,
                    ..
                }
                | DeviceKind::Victron,
            ..
        }) => {}
        Some(_) => {
            doc.error(
                &at("device"),
                format!("device \"{}\" is not a battery (a SunSpec device with role = \"battery\", or a victron)", b.device),
            );
            ok = false;
        }
        // The device has mistakes of its own, reported where it is defined.
        None if device_ids.contains(&b.device) => ok = false,
        None => {
            let ids: Vec<&str> = device_ids.iter().map(String::as_str).collect();
            let hint = suggestion(&b.device, &ids)
                .map(|s| format!("; did you mean \"{s}\"?"))
                .unwrap_or_default();
            doc.error(
                &at("device"),
                format!("unknown device \"{}\"{hint}", b.device),
            );
            ok = false;
        }
    }
    ok &= positive(doc, &at("capacity_wh"), b.capacity_wh, "watt-hours");
    ok &= within(
        doc,
        &at("min_soc_percent"),
        b.min_soc_percent,
        0.0,
        100.0,
        "%",
    );
    ok &= within(
        doc,
        &at("max_soc_percent"),
        b.max_soc_percent,
        0.0,
        100.0,
        "%",
    );
    if ok && b.min_soc_percent >= b.max_soc_percent {
        doc.error(
            &at("max_soc_percent"),
            format!(
                "max_soc_percent ({}) must be above min_soc_percent ({})",
                num(b.max_soc_percent),
                num(b.min_soc_percent)
            ),
        );
        ok = false;
    }
    ok &= positive(doc, &at("max_charge_watts"), b.max_charge_watts, "watts");
    ok &= positive(
        doc,
        &at("max_discharge_watts"),
        b.max_discharge_watts,
        "watts",
    );
    ok &= within(
        doc,
        &at("charge_efficiency"),
        b.charge_efficiency,
        0.5,
        1.0,
        "",
    );
    ok &= within(
        doc,
        &at("discharge_efficiency"),
        b.discharge_efficiency,
        0.5,
        1.0,
        "",
    );
    ok.then_some(Battery {
        device: b.device,
        capacity: WattHours(b.capacity_wh),
        min_soc: Percent(b.min_soc_percent),
        max_soc: Percent(b.max_soc_percent),
        max_charge: Watts(b.max_charge_watts),
        max_discharge: Watts(b.max_discharge_watts),
        charge_efficiency: b.charge_efficiency,
        discharge_efficiency: b.discharge_efficiency,
    })
}

fn lower_pv_arrays(
    doc: &mut Doc<'_>,
    devices: &[Device],
    device_ids: &[String],
) -> Option<Vec<PvArray>> {
    let list = p().key("pv_arrays");
    let n = doc.array_len(&list);
    let mut out = Vec::new();
    let mut ok = true;
    for i in 0..n {
        let at = list.index(i);
        let Some(a) = doc.read::<raw::PvArray>(&at) else {
            ok = false;
            continue;
        };
        let mut a_ok = true;
        match devices.iter().find(|d| d.id == a.inverter) {
            Some(Device {
                kind:
                    DeviceKind::Sunspec {
                        role: SunspecRole::PvInverter,
                        ..
                    }
                    | DeviceKind::Victron,
                ..
            }) => {}
            Some(_) => {
                doc.error(
                    &at.key("inverter"),
                    format!("device \"{}\" is not a PV inverter", a.inverter),
                );
                a_ok = false;
            }
            None if device_ids.contains(&a.inverter) => a_ok = false,
            None => {
                doc.error(
                    &at.key("inverter"),
                    format!("unknown device \"{}\"", a.inverter),
                );
                a_ok = false;
            }
        }
        a_ok &= positive(doc, &at.key("kwp"), a.kwp, "kWp");
        a_ok &= within(
            doc,
            &at.key("tilt_degrees"),
            a.tilt_degrees,
            0.0,
            90.0,
            "degrees",
        );
        a_ok &= within(
            doc,
            &at.key("azimuth_degrees"),
            a.azimuth_degrees,
            0.0,
            360.0,
            "degrees",
        );
        if a_ok {
            out.push(PvArray {
                inverter: a.inverter,
                kwp: a.kwp,
                tilt_degrees: a.tilt_degrees,
                azimuth_degrees: a.azimuth_degrees,
            });
        } else {
            ok = false;
        }
    }
    ok.then_some(out)
}

fn lower_http(doc: &mut Doc<'_>, h: raw::Http) -> Option<Http> {
    let at = |k: &str| p().key("http").key(k);
    let listen = endpoint(doc, &at("listen"), &h.listen)?;
    if !listen.is_loopback() && !h.allow_remote {
        doc.error(
            &at("listen"),
            format!(
                "{listen} is reachable from other machines; set `allow_remote = true` to mean it"
            ),
        );
        return None;
    }
    if !listen.is_loopback() && h.write_token_file.is_none() {
        doc.error(
            &at("write_token_file"),
            "a page reachable from other machines needs `write_token_file` to protect its write endpoints",
        );
        return None;
    }
    Some(Http {
        listen,
        write_token_file: h.write_token_file,
    })
}

fn lower_forecast(doc: &mut Doc<'_>, f: raw::Forecast) -> Option<ForecastFeed> {
    let at = |k: &str| p().key("forecast").key(k);
    let mut ok = true;
    if let Some(file) = &f.pv_file {
        ok &= non_empty(doc, &at("pv_file"), file);
    }
    if let Some(topic) = &f.pv_topic {
        ok &= non_empty(doc, &at("pv_topic"), topic);
        if topic.contains(['#', '+']) {
            doc.error(
                &at("pv_topic"),
                "the forecast topic is one topic, without the MQTT wildcards `#` or `+`",
            );
            ok = false;
        }
    }
    if f.pv_file.is_none() && f.pv_topic.is_none() {
        doc.error(
            &p().key("forecast"),
            "[forecast] needs `pv_file` or `pv_topic` (or remove the table)",
        );
        ok = false;
    }
    ok.then_some(ForecastFeed {
        pv_file: f.pv_file,
        pv_topic: f.pv_topic,
    })
}

fn lower_influxdb(doc: &mut Doc<'_>, i: raw::Influxdb) -> Option<Influxdb> {
    let at = |k: &str| p().key("influxdb").key(k);
    let mut ok = true;
    if i.url.starts_with("https://") {
        // The InfluxDB client is built without TLS (it would bring a second HTTP and TLS
        // stack into the build); never fall back to plain text when the site asked for TLS.
        doc.error(
            &at("url"),
            format!(
                "\"{}\": this build writes to InfluxDB over plain http:// only; run InfluxDB on \
                 the controller or the site's network, or put a TLS-terminating proxy beside the \
                 controller",
                i.url
            ),
        );
        ok = false;
    } else if !i.url.starts_with("http://") || i.url.len() <= "http://".len() {
        doc.error(&at("url"), format!("\"{}\" is not an http:// URL", i.url));
        ok = false;
    }
    ok &= non_empty(doc, &at("org"), &i.org);
    ok &= non_empty(doc, &at("bucket"), &i.bucket);
    let token = match (i.token_file, i.token_env) {
        (Some(f), None) => Some(Token::File(f)),
        (None, Some(e)) => Some(Token::Env(e)),
        (Some(_), Some(_)) => {
            doc.error(
                &at("token_env"),
                "give either `token_file` or `token_env`, not both",
            );
            None
        }
        (None, None) => {
            doc.error(
                &p().key("influxdb"),
                "missing `token_file` or `token_env` for the InfluxDB API token",
            );
            None
        }
    };
    ok &= within_u32(doc, &at("batch_points"), i.batch_points, 1, 5000, "points");
    ok &= within(
        doc,
        &at("buffer_max_points"),
        i.buffer_max_points as f64,
        1000.0,
        100_000_000.0,
        "points",
    );
    ok &= non_empty(doc, &at("buffer_dir"), &i.buffer_dir);
    Some(Influxdb {
        url: i.url,
        org: i.org,
        bucket: i.bucket,
        token: token?,
        batch_points: i.batch_points,
        buffer_dir: i.buffer_dir,
        buffer_max_points: i.buffer_max_points,
    })
    .filter(|_| ok)
}

// ---------- assembly file ----------

/// Lowers the assembly file; checks against the site's loads and battery where they were read.
/// Loads with no voted place are reported in the site document.
pub(crate) fn lower_assembly(
    doc: &mut Doc<'_>,
    site_doc: &mut Doc<'_>,
    site: &SiteParts,
) -> Option<Assembly> {
    if !doc.is_parsed() {
        return None;
    }
    doc.unknown_keys(&p(), ASSEMBLY_TABLES);
    let mut ok = true;

    let decision = if doc.get(&p().key("decision")).is_none() {
        doc.error(
            &p(),
            "missing table [decision]: the record of the vote (date, reference, quorum, votes)",
        );
        None
    } else {
        doc.read::<raw::Decision>(&p().key("decision"))
            .and_then(|d| lower_decision(doc, d))
    };
    ok &= decision.is_some();

    let (tiers, tiers_ok) = lower_tiers(doc, site_doc, site);
    ok &= tiers_ok;

    let reserve_raw = if doc.get(&p().key("health_reserve")).is_some() {
        doc.read::<raw::HealthReserve>(&p().key("health_reserve"))
    } else {
        Some(raw::HealthReserve::default())
    };
    let reserve = reserve_raw.and_then(|r| lower_reserve(doc, r, &tiers, site));
    ok &= reserve.is_some();

    let communs_raw = if doc.get(&p().key("communs")).is_some() {
        doc.read::<raw::Communs>(&p().key("communs"))
    } else {
        Some(raw::Communs::default())
    };
    let communs = communs_raw.and_then(|c| lower_communs(doc, c));
    ok &= communs.is_some();

    match (ok, decision, reserve, communs) {
        (true, Some(decision), Some(health_reserve), Some(communs)) => Some(Assembly {
            decision,
            tiers,
            health_reserve,
            communs,
        }),
        _ => None,
    }
}

fn lower_decision(doc: &mut Doc<'_>, d: raw::Decision) -> Option<Decision> {
    let at = |k: &str| p().key("decision").key(k);
    let date = parse_date(&d.date)
        .map_err(|e| doc.error(&at("date"), e))
        .ok();
    let mut ok = date.is_some();
    ok &= non_empty(doc, &at("reference"), &d.reference);
    if d.present < d.quorum {
        doc.error(
            &at("present"),
            format!(
                "{} members present is below the quorum of {}: the vote is not valid",
                d.present, d.quorum
            ),
        );
        ok = false;
    }
    let cast = u64::from(d.votes_for) + u64::from(d.votes_against) + u64::from(d.abstentions);
    if cast > u64::from(d.present) {
        doc.error(
            &at("votes_for"),
            format!(
                "{cast} votes and abstentions, but only {} members present",
                d.present
            ),
        );
        ok = false;
    }
    if d.votes_for <= d.votes_against {
        doc.error(
            &at("votes_for"),
            format!(
                "{} for and {} against: the record shows the motion was not carried",
                d.votes_for, d.votes_against
            ),
        );
        ok = false;
    }
    Some(Decision {
        date: date?,
        reference: d.reference,
        summary: d.summary,
        quorum: d.quorum,
        present: d.present,
        votes_for: d.votes_for,
        votes_against: d.votes_against,
        abstentions: d.abstentions,
    })
    .filter(|_| ok)
}

fn lower_tiers(doc: &mut Doc<'_>, site_doc: &mut Doc<'_>, site: &SiteParts) -> (Vec<Tier>, bool) {
    let list = p().key("tiers");
    let n = doc.array_len(&list);
    let mut ok = true;
    if n == 0 {
        doc.error(
            &p(),
            "no [[tiers]]: the assembly file must list at least one tier",
        );
        ok = false;
    }
    let known: Vec<&str> = site.loads.iter().map(|l| l.id.as_str()).collect();
    let mut names = Seen::new();
    // load id -> (tier name, tier position)
    let mut placed: HashMap<String, (String, usize)> = HashMap::new();
    let mut tiers = Vec::new();
    for i in 0..n {
        let at = list.index(i);
        let Some(t) = doc.read::<raw::Tier>(&at) else {
            ok = false;
            continue;
        };
        let mut t_ok = valid_id(doc, &at.key("name"), &t.name)
            && names.first(doc, &at.key("name"), &t.name, "tier name");
        let sharing = match t.sharing.as_str() {
            "fair_share" => Some(Sharing::FairShare),
            "in_order" => Some(Sharing::InOrder),
            other => {
                doc.error(
                    &at.key("sharing"),
                    format!(
                        "unknown sharing rule \"{other}\" (expected one of: fair_share, in_order)"
                    ),
                );
                None
            }
        };
        t_ok &= sharing.is_some();
        if t.loads.is_empty() {
            doc.error(
                &at.key("loads"),
                format!("tier \"{}\" is empty: list at least one load", t.name),
            );
            t_ok = false;
        }
        for (j, id) in t.loads.iter().enumerate() {
            let lp = at.key("loads").index(j);
            match site.loads.iter().find(|l| &l.id == id) {
                None => {
                    let hint = suggestion(id, &known)
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_default();
                    doc.error(&lp, format!("unknown load \"{id}\"{hint}"));
                    t_ok = false;
                    continue;
                }
                Some(l) if !l.controlled => {
                    doc.error(&lp, format!("load \"{id}\" is measured only: it cannot be switched, so it has no place in a tier"));
                    t_ok = false;
                    continue;
                }
                Some(_) => {}
            }
            if let Some((tier, pos)) = placed.get(id) {
                doc.error(&lp, format!("load \"{id}\" is already in tier \"{tier}\" (tiers[{}]); a load has one place", pos + 1));
                t_ok = false;
            } else {
                placed.insert(id.clone(), (t.name.clone(), i));
            }
        }
        match (t_ok, sharing) {
            (true, Some(sharing)) => tiers.push(Tier {
                name: t.name,
                sharing,
                loads: t.loads,
            }),
            _ => ok = false,
        }
    }
    if n > 0 {
        let file = doc.file_name().to_owned();
        for l in &site.loads {
            if l.controlled && !placed.contains_key(&l.id) {
                site_doc.error(
                    &l.path.key("id"),
                    format!("load \"{}\" has no tier in {file}; every controlled load needs a voted place", l.id),
                );
                ok = false;
            }
        }
    }
    (tiers, ok)
}

fn lower_reserve(
    doc: &mut Doc<'_>,
    r: raw::HealthReserve,
    tiers: &[Tier],
    site: &SiteParts,
) -> Option<HealthReserve> {
    let at = |k: &str| p().key("health_reserve").key(k);
    let mut ok = non_negative(doc, &at("min_wh"), r.min_wh, "watt-hours");
    ok &= within(
        doc,
        &at("margin_percent"),
        r.margin_percent,
        0.0,
        200.0,
        "%",
    );
    ok &= within(
        doc,
        &at("forecast_share_percent"),
        r.forecast_share_percent,
        0.0,
        100.0,
        "%",
    );
    let tier = match &r.tier {
        Some(name) => match tiers.iter().position(|t| &t.name == name) {
            Some(i) => Some(i),
            None => {
                let names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
                let hint = suggestion(name, &names)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default();
                doc.error(&at("tier"), format!("unknown tier \"{name}\"{hint}"));
                None
            }
        },
        None => Some(0),
    };
    if ok {
        match site.battery.as_ref() {
            Some(b) if r.min_wh > b.usable().0 => {
                doc.error(
                    &at("min_wh"),
                    format!(
                        "a health reserve of {} Wh is larger than the battery's usable {} Wh (capacity_wh {} between {} % and {} %)",
                        num(r.min_wh),
                        num(b.usable().0),
                        num(b.capacity.0),
                        num(b.min_soc.0),
                        num(b.max_soc.0)
                    ),
                );
                ok = false;
            }
            None if r.min_wh > 0.0 && !site.battery_table => {
                doc.error(
                    &at("min_wh"),
                    format!(
                        "a health reserve of {} Wh needs a [battery] in the site file",
                        num(r.min_wh)
                    ),
                );
                ok = false;
            }
            _ => {}
        }
    }
    Some(HealthReserve {
        tier: tier?,
        min: WattHours(r.min_wh),
        margin: Percent(r.margin_percent),
        forecast_share: Percent(r.forecast_share_percent),
    })
    .filter(|_| ok)
}

fn lower_communs(doc: &mut Doc<'_>, c: raw::Communs) -> Option<Communs> {
    let at = |k: &str| p().key("communs").key(k);
    let per_kwh = millis(doc, &at("per_kwh_shifted"), c.per_kwh_shifted, 0.0, 1000.0);
    let per_hour = millis(
        doc,
        &at("per_hour_maintenance"),
        c.per_hour_maintenance,
        0.0,
        1000.0,
    );
    let mut ok = within(
        doc,
        &at("demurrage_percent_per_year"),
        c.demurrage_percent_per_year,
        0.0,
        50.0,
        "%",
    );
    let ceiling = millis(
        doc,
        &at("account_ceiling"),
        c.account_ceiling,
        1.0,
        1_000_000.0,
    );
    ok &= within_u32(
        doc,
        &at("attestations_needed"),
        c.attestations_needed,
        1,
        20,
        "",
    );
    ok &= within_u32(
        doc,
        &at("claim_expiry_days"),
        c.claim_expiry_days,
        1,
        365,
        "days",
    );
    let cap = millis(
        doc,
        &at("meter_credit_daily_cap"),
        c.meter_credit_daily_cap,
        0.0,
        1_000_000.0,
    );
    ok &= within_u32(doc, &at("contest_days"), c.contest_days, 0, 60, "days");
    ok &= within_u32(
        doc,
        &at("attester_daily_budget"),
        c.attester_daily_budget,
        1,
        100,
        "attestations",
    );
    if let (Some(cap), Some(ceiling)) = (cap, ceiling)
        && cap > ceiling
    {
        doc.error(
            &at("meter_credit_daily_cap"),
            "the daily meter-credit cap is above the account ceiling",
        );
        ok = false;
    }
    Some(Communs {
        per_kwh_shifted_millis: per_kwh?,
        per_hour_maintenance_millis: per_hour?,
        demurrage_percent_per_year: c.demurrage_percent_per_year,
        account_ceiling_millis: ceiling?,
        attestations_needed: c.attestations_needed,
        claim_expiry_days: c.claim_expiry_days,
        meter_credit_daily_cap_millis: cap?,
        contest_days: c.contest_days,
        attester_daily_budget: c.attester_daily_budget,
    })
    .filter(|_| ok)
}
