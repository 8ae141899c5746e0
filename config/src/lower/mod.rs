//! Validation across references and lowering into `model` values.
//!
//! Every rule reports through `Doc::error` with the key path of the offending value and goes on,
//! so that one run of `communalia check` lists every mistake in both files.

use std::collections::HashMap;
use std::time::Duration;

use crate::doc::{At, Doc, KeyPath, suggestion};
use crate::model::*;
use crate::raw;

mod assembly;
mod devices;
mod site;

pub(crate) use assembly::lower_assembly;
use devices::*;
pub(crate) use site::lower_site;

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
