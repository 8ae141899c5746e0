//! The documented schema: every key of both files with its type, unit and default.
//!
//! `config/README.md` carries a table rendered from `KEYS`; a test regenerates it and fails when it
//! was out of date, and another checks `KEYS` against the keys the serde structs accept, so the
//! reference can never drift from what the parser does.

use serde::de::{self, Deserializer, Visitor};

/// Which file a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Site,
    Assembly,
}

/// One documented key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    pub file: FileKind,
    /// Table it lives in, e.g. `loads[]` or `devices[] (kind = "sunspec")`.
    pub table: &'static str,
    pub key: &'static str,
    pub ty: &'static str,
    pub unit: &'static str,
    /// The default, or `required`.
    pub default: &'static str,
    pub doc: &'static str,
}

const fn k(
    file: FileKind,
    table: &'static str,
    key: &'static str,
    ty: &'static str,
    unit: &'static str,
    default: &'static str,
    doc: &'static str,
) -> KeyDoc {
    KeyDoc {
        file,
        table,
        key,
        ty,
        unit,
        default,
        doc,
    }
}

use FileKind::{Assembly as A, Site as S};

const REQ: &str = "required";
const NONE: &str = "none";

#[rustfmt::skip]
pub const KEYS: &[KeyDoc] = &[
    k(S, "site", "id", "string", "", REQ, "short id of the site: letters, digits, `_`, `-`; used in MQTT topics and as the ledger's domain"),
    k(S, "site", "name", "string", "", REQ, "the site's name as members know it"),
    k(S, "site", "assembly", "string", "", REQ, "path of the assembly's priority file, relative to this file"),
    k(S, "site", "interval_secs", "number", "s", "2", "control cycle interval, 0.5 to 60"),
    k(S, "site", "min_switch_secs", "number", "s", "0", "least time a load of a `fair_share` tier stays on or off once rotation switched it (e.g. 300 for compressors), 0 to 3600; earlier only when it stops asking, or when a higher tier or less power leaves too little for the loads held on; see Turns below"),
    k(S, "site", "latitude", "number", "degrees", NONE, "for the local solar forecast and sunrise; -90 to 90, give with longitude"),
    k(S, "site", "longitude", "number", "degrees", NONE, "east positive; -180 to 180, give with latitude"),
    k(S, "site", "utc_offset_minutes", "integer", "minutes", "0", "local time minus UTC, for deadlines, the daily plan and every time shown to people (page, reasons, CLI); -720 to 840"),

    k(S, "grid", "kind", "string", "", "\"grid\"", "`grid` or `generator`; the table is optional (an island site has none)"),
    k(S, "grid", "max_import_watts", "number", "W", REQ, "most power the site may draw from it, positive"),
    k(S, "grid", "max_export_watts", "number", "W", "0", "most power the site may send to it"),
    k(S, "grid", "import_price_per_kwh", "number", "price/kWh", NONE, "cost of imported energy, in any price unit, for the horizon plan"),
    k(S, "grid", "export_price_per_kwh", "number", "price/kWh", "0", "revenue of exported energy, same unit"),

    k(S, "battery", "device", "string", "", REQ, "id of the device that reads and drives the battery (SunSpec role `battery`, or `victron`)"),
    k(S, "battery", "capacity_wh", "number", "Wh", REQ, "nominal capacity, positive"),
    k(S, "battery", "min_soc_percent", "number", "%", "10", "lowest state of charge the controller will use"),
    k(S, "battery", "max_soc_percent", "number", "%", "100", "highest state of charge it will charge to; above min_soc_percent"),
    k(S, "battery", "max_charge_watts", "number", "W", REQ, "charge power limit, positive"),
    k(S, "battery", "max_discharge_watts", "number", "W", REQ, "discharge power limit, positive"),
    k(S, "battery", "charge_efficiency", "number", "fraction", "0.95", "energy stored per energy charged, 0.5 to 1"),
    k(S, "battery", "discharge_efficiency", "number", "fraction", "0.95", "energy delivered per energy taken out, 0.5 to 1"),

    k(S, "mqtt", "broker", "string", "host:port", REQ, "the MQTT broker the plugs use; required as soon as a load is a tasmota, shelly or setpoint load"),
    k(S, "mqtt", "client_id", "string", "", "\"communalia-<site.id>\"", "MQTT client id"),
    k(S, "mqtt", "username", "string", "", NONE, "MQTT user name"),
    k(S, "mqtt", "password_file", "string", "path", NONE, "file holding the MQTT password (needs username)"),
    k(S, "mqtt", "tls", "boolean", "", "false", "connect with TLS"),
    k(S, "mqtt", "ca_file", "string", "path", NONE, "CA certificate (PEM) for TLS (needs tls = true)"),
    k(S, "mqtt", "keep_alive_secs", "integer", "s", "30", "MQTT keep-alive, 5 to 3600"),
    k(S, "mqtt", "home_assistant_discovery", "string", "topic prefix", NONE, "announce the site's sensors to Home Assistant under this prefix (usually \"homeassistant\")"),

    k(S, "http", "listen", "string", "host:port", "\"127.0.0.1:8080\"", "address of the web page and API"),
    k(S, "http", "allow_remote", "boolean", "", "false", "must be true for a listen address other machines can reach"),
    k(S, "http", "write_token_file", "string", "path", NONE, "file holding the bearer token for write endpoints; required when remote"),

    k(S, "forecast", "pv_file", "string", "path", NONE, "JSON PV forecast (`{\"start\": RFC 3339, \"step_minutes\": N, \"pv_watts\": [..]}`) that takes precedence over the local solar model; re-read when it changes"),
    k(S, "forecast", "pv_topic", "string", "MQTT topic", NONE, "MQTT topic carrying the same JSON (needs [mqtt])"),
    k(S, "influxdb", "url", "string", "URL", REQ, "InfluxDB 2 base URL, http:// (no TLS in this build); the table is optional"),
    k(S, "influxdb", "org", "string", "", REQ, "organisation"),
    k(S, "influxdb", "bucket", "string", "", REQ, "bucket"),
    k(S, "influxdb", "token_file", "string", "path", NONE, "file holding the API token (this or token_env)"),
    k(S, "influxdb", "token_env", "string", "", NONE, "environment variable holding the API token (this or token_file)"),
    k(S, "influxdb", "batch_points", "integer", "points", "500", "points per write, 1 to 5000"),
    k(S, "influxdb", "buffer_dir", "string", "path", "\"influxdb-buffer\"", "where points wait while the database is away"),
    k(S, "influxdb", "buffer_max_points", "integer", "points", "1000000", "bound of that buffer; beyond it the oldest are dropped and counted"),

    k(S, "ledger", "database", "string", "path", "\"ledger.sqlite\"", "the Communs ledger's SQLite file"),
    k(S, "ledger", "controller_key_file", "string", "path", "\"controller.key\"", "the controller's ed25519 key, which signs meter credits"),

    k(S, "devices[] (kind = \"sunspec\")", "kind", "string", "", REQ, "`sunspec`: a SunSpec device over Modbus TCP"),
    k(S, "devices[] (kind = \"sunspec\")", "id", "string", "", REQ, "unique device id"),
    k(S, "devices[] (kind = \"sunspec\")", "name", "string", "", "the id", "name shown on the page"),
    k(S, "devices[] (kind = \"sunspec\")", "address", "string", "host:port", REQ, "Modbus TCP address, e.g. 192.168.1.20:502"),
    k(S, "devices[] (kind = \"sunspec\")", "unit_id", "integer", "", "1", "Modbus unit id, 0 to 255"),
    k(S, "devices[] (kind = \"sunspec\")", "role", "string", "", REQ, "`pv_inverter`, `battery` or `meter`"),
    k(S, "devices[] (kind = \"sunspec\")", "measures", "string", "", "\"consumption\"", "for meters: `consumption`, `grid` or `pv`"),
    k(S, "devices[] (kind = \"sunspec\")", "base_address", "integer", "register", "discovered", "0, 40000 or 50000; by default tried in the order 40000, 0, 50000"),
    k(S, "devices[] (kind = \"sunspec\")", "timeout_ms", "integer", "ms", "1000", "per-request timeout, 50 to 60000"),
    k(S, "devices[] (kind = \"sunspec\")", "stale_after_secs", "number", "s", "10", "silent longer than this, the device counts as unknown; 1 to 3600"),

    k(S, "devices[] (kind = \"sdm630\")", "kind", "string", "", REQ, "`sdm630`: an Eastron SDM630 meter over Modbus TCP"),
    k(S, "devices[] (kind = \"sdm630\")", "id", "string", "", REQ, "unique device id"),
    k(S, "devices[] (kind = \"sdm630\")", "name", "string", "", "the id", "name shown on the page"),
    k(S, "devices[] (kind = \"sdm630\")", "address", "string", "host:port", REQ, "Modbus TCP address (of the meter or its gateway)"),
    k(S, "devices[] (kind = \"sdm630\")", "unit_id", "integer", "", "1", "Modbus unit id, 0 to 255"),
    k(S, "devices[] (kind = \"sdm630\")", "measures", "string", "", "\"consumption\"", "`consumption`, `grid` or `pv`"),
    k(S, "devices[] (kind = \"sdm630\")", "timeout_ms", "integer", "ms", "1000", "per-request timeout, 50 to 60000"),
    k(S, "devices[] (kind = \"sdm630\")", "stale_after_secs", "number", "s", "10", "silent longer than this, the device counts as unknown"),

    k(S, "devices[] (kind = \"victron\")", "kind", "string", "", REQ, "`victron`: a Victron GX (Venus OS) over Modbus TCP"),
    k(S, "devices[] (kind = \"victron\")", "id", "string", "", REQ, "unique device id"),
    k(S, "devices[] (kind = \"victron\")", "name", "string", "", "the id", "name shown on the page"),
    k(S, "devices[] (kind = \"victron\")", "address", "string", "host:port", REQ, "the GX's Modbus TCP address"),
    k(S, "devices[] (kind = \"victron\")", "unit_id", "integer", "", "100", "unit id of the system service"),
    k(S, "devices[] (kind = \"victron\")", "timeout_ms", "integer", "ms", "1000", "per-request timeout, 50 to 60000"),
    k(S, "devices[] (kind = \"victron\")", "stale_after_secs", "number", "s", "10", "silent longer than this, the device counts as unknown"),

    k(S, "pv_arrays[]", "inverter", "string", "", REQ, "id of the PV inverter the array feeds"),
    k(S, "pv_arrays[]", "kwp", "number", "kWp", REQ, "peak power, positive"),
    k(S, "pv_arrays[]", "tilt_degrees", "number", "degrees", REQ, "0 flat to 90 vertical"),
    k(S, "pv_arrays[]", "azimuth_degrees", "number", "degrees", "180", "0 north, 90 east, 180 south, 270 west"),

    k(S, "loads[]", "id", "string", "", REQ, "unique load id, used in the assembly file"),
    k(S, "loads[]", "name", "string", "", REQ, "name shown to members"),
    k(S, "loads[]", "member", "string", "", NONE, "the member the load belongs to (this or service)"),
    k(S, "loads[]", "service", "string", "", NONE, "the common service it belongs to (this or member)"),
    k(S, "loads[]", "nominal_watts", "number", "W", REQ, "power it draws when on, positive"),
    k(S, "loads[]", "flexible", "boolean", "", "false", "can wait for surplus hours (true whenever daily_energy_wh is set)"),
    k(S, "loads[]", "daily_energy_wh", "number", "Wh", NONE, "energy it needs each day, positive"),
    k(S, "loads[]", "deadline", "string", "HH:MM", "\"24:00\"", "local time by which the daily energy is due (needs daily_energy_wh)"),
    k(S, "loads[]", "control", "table", "", REQ, "how it is switched; see loads[].control below"),

    k(S, "loads[].control (kind = \"tasmota\")", "kind", "string", "", REQ, "`tasmota`: a Tasmota plug over MQTT"),
    k(S, "loads[].control (kind = \"tasmota\")", "topic", "string", "", REQ, "the plug's Topic"),
    k(S, "loads[].control (kind = \"tasmota\")", "full_topic", "string", "", "\"%prefix%/%topic%/\"", "the plug's FullTopic pattern"),
    k(S, "loads[].control (kind = \"tasmota\")", "relay", "integer", "", "1", "relay number, 1 to 8; relay 1 is understood whether the device calls it POWER (one relay) or POWER1 (several relays, or SetOption26 1)"),
    k(S, "loads[].control (kind = \"tasmota\")", "tele_period_secs", "integer", "s", NONE, "TelePeriod the controller sets on the device (0 off, or 10 to 3600); unset, the device's own is kept (stock 300) and power is asked for with Status 10 when telemetry is slower than the staleness limit"),
    k(S, "loads[].control (kind = \"shelly\")", "kind", "string", "", REQ, "`shelly`: a Shelly Gen2+ switch over MQTT"),
    k(S, "loads[].control (kind = \"shelly\")", "device_id", "string", "", REQ, "the device's MQTT topic prefix (stock: the device id, e.g. shellyplugsg3-a1b2c3); works with stock notification settings (RPC notifications on, status notifications off)"),
    k(S, "loads[].control (kind = \"shelly\")", "switch_id", "integer", "", "0", "switch component id: 0 on a Plus Plug S or Plus 1PM, 0 to 3 on a Pro 4PM"),
    k(S, "loads[].control (kind = \"setpoint\")", "kind", "string", "", REQ, "`setpoint`: an adjustable load (e.g. a charger) driven over MQTT"),
    k(S, "loads[].control (kind = \"setpoint\")", "command_topic", "string", "", REQ, "topic the controller publishes the setpoint (watts) to"),
    k(S, "loads[].control (kind = \"setpoint\")", "state_topic", "string", "", NONE, "topic the load reports its power on"),
    k(S, "loads[].control (kind = \"setpoint\")", "min_watts", "number", "W", "0", "lowest setpoint when on"),
    k(S, "loads[].control (kind = \"setpoint\")", "max_watts", "number", "W", REQ, "highest setpoint; at least min_watts and nominal_watts"),
    k(S, "loads[].control (kind = \"measured_only\")", "kind", "string", "", REQ, "`measured_only`: counted as uncontrolled consumption, never switched, in no tier"),

    k(A, "decision", "date", "date", "", REQ, "date of the vote, e.g. 2026-03-14"),
    k(A, "decision", "reference", "string", "", REQ, "reference of the minutes"),
    k(A, "decision", "summary", "string", "", NONE, "what was decided, in a sentence"),
    k(A, "decision", "quorum", "integer", "members", REQ, "members needed for a valid vote"),
    k(A, "decision", "present", "integer", "members", REQ, "members present; at least the quorum"),
    k(A, "decision", "votes_for", "integer", "votes", REQ, "votes for; more than votes against"),
    k(A, "decision", "votes_against", "integer", "votes", REQ, "votes against"),
    k(A, "decision", "abstentions", "integer", "votes", "0", "abstentions; votes and abstentions at most the members present"),

    k(A, "tiers[]", "name", "string", "", REQ, "unique tier name; the order of [[tiers]] blocks is the priority, highest first"),
    k(A, "tiers[]", "sharing", "string", "", "\"fair_share\"", "`fair_share` (loads take turns, longest-waiting first, adjustable ones at the same fraction of demand; each that fits alone is served within one round, see Turns below) or `in_order` (the listed order decides)"),
    k(A, "tiers[]", "loads", "list of strings", "", REQ, "load ids; every controlled load in exactly one tier"),

    k(A, "health_reserve", "tier", "string", "", "the first tier", "the tier the reserve keeps running until sunrise (by day: the coming night, less `forecast_share_percent` of the charge the sun is expected to bring before sunset)"),
    k(A, "health_reserve", "min_wh", "number", "Wh", "0", "battery energy never spent on other tiers, whatever the forecast; at most the battery's usable energy"),
    k(A, "health_reserve", "margin_percent", "number", "%", "20", "added to the energy the tier needs until sunrise; 0 to 200"),
    k(A, "health_reserve", "forecast_share_percent", "number", "%", "30", "share of the battery charge the forecast expects before sunset (PV beyond the tiers down to the health tier and the unswitched loads) that the daytime reserve counts on, the rest kept as the margin for a wrong forecast; 0 to 100, 0 = always the whole night. The whole night is kept anyway while the forecast is unknown (no coordinates, no external forecast) or the day is grey (under 35 % of clear sky measured). While the sun covers the tiers down to the one below the health tier and the battery holds the reserve (before its `min_wh` floor), the battery's planned charge never cuts them"),

    k(A, "communs", "per_kwh_shifted", "number", "C/kWh", "1", "Communs credited per kWh of consumption shifted into surplus hours"),
    k(A, "communs", "per_hour_maintenance", "number", "C/h", "2", "Communs per attested hour of maintenance or repair"),
    k(A, "communs", "demurrage_percent_per_year", "number", "%/year", "6", "yearly melt of positive balances, 0 to 50"),
    k(A, "communs", "account_ceiling", "number", "C", "500", "most Communs one account may hold, 1 to 1000000"),
    k(A, "communs", "attestations_needed", "integer", "", "3", "distinct attestations for a claim to post, 1 to 20"),
    k(A, "communs", "claim_expiry_days", "integer", "days", "14", "a claim not attested by then expires, 1 to 365"),
    k(A, "communs", "meter_credit_daily_cap", "number", "C", "5", "most metered credit per member per day; at most the ceiling"),
    k(A, "communs", "contest_days", "integer", "days", "3", "days a meter credit stays open to contest, 0 to 60"),
    k(A, "communs", "attester_daily_budget", "integer", "attestations", "5", "attestations one member may give per day, 1 to 100"),
];

/// Renders the key reference as Markdown tables, one per table of each file.
pub fn render_markdown() -> String {
    let mut out = String::new();
    for (file, title) in [
        (FileKind::Site, "Site file (`site.toml`)"),
        (FileKind::Assembly, "Assembly file (`assembly.toml`)"),
    ] {
        out.push_str(&format!("### {title}\n"));
        let mut last_table = "";
        for key in KEYS.iter().filter(|key| key.file == file) {
            if key.table != last_table {
                out.push_str(&format!("\n#### `{}`\n\n", key.table));
                out.push_str("| key | type | unit | default | meaning |\n|---|---|---|---|---|\n");
                last_table = key.table;
            }
            let unit = if key.unit.is_empty() { "" } else { key.unit };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                key.key, key.ty, unit, key.default, key.doc
            ));
        }
        out.push('\n');
    }
    out
}

/// The field names a derived `Deserialize` struct accepts (empty for anything else).
pub(crate) fn fields_of<T: de::DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldGrabber(&mut fields));
    fields.unwrap_or(&[])
}

struct FieldGrabber<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct Grabbed;

impl std::fmt::Display for Grabbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names grabbed")
    }
}

impl std::error::Error for Grabbed {}

impl de::Error for Grabbed {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Grabbed
    }
}

impl<'de> Deserializer<'de> for FieldGrabber<'_> {
    type Error = Grabbed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Grabbed> {
        Err(Grabbed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Grabbed> {
        *self.0 = Some(fields);
        Err(Grabbed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Every documented table with the keys its serde struct accepts, for the consistency test.
#[cfg(test)]
pub(crate) fn accepted_keys() -> Vec<(FileKind, &'static str, &'static [&'static str])> {
    use crate::raw;
    fn f<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
        fields_of::<T>()
    }
    vec![
        (S, "site", f::<raw::SiteSection>()),
        (S, "grid", f::<raw::Grid>()),
        (S, "battery", f::<raw::Battery>()),
        (S, "mqtt", f::<raw::Mqtt>()),
        (S, "http", f::<raw::Http>()),
        (S, "influxdb", f::<raw::Influxdb>()),
        (S, "forecast", f::<raw::Forecast>()),
        (S, "ledger", f::<raw::Ledger>()),
        (
            S,
            "devices[] (kind = \"sunspec\")",
            f::<raw::SunspecDevice>(),
        ),
        (S, "devices[] (kind = \"sdm630\")", f::<raw::Sdm630Device>()),
        (
            S,
            "devices[] (kind = \"victron\")",
            f::<raw::VictronDevice>(),
        ),
        (S, "pv_arrays[]", f::<raw::PvArray>()),
        (S, "loads[]", f::<raw::Load>()),
        (
            S,
            "loads[].control (kind = \"tasmota\")",
            f::<raw::TasmotaControl>(),
        ),
        (
            S,
            "loads[].control (kind = \"shelly\")",
            f::<raw::ShellyControl>(),
        ),
        (
            S,
            "loads[].control (kind = \"setpoint\")",
            f::<raw::SetpointControl>(),
        ),
        (
            S,
            "loads[].control (kind = \"measured_only\")",
            f::<raw::MeasuredOnlyControl>(),
        ),
        (A, "decision", f::<raw::Decision>()),
        (A, "tiers[]", f::<raw::Tier>()),
        (A, "health_reserve", f::<raw::HealthReserve>()),
        (A, "communs", f::<raw::Communs>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_key_is_accepted_and_every_accepted_key_is_documented() {
        let tables = accepted_keys();
        for (file, table, fields) in &tables {
            let mut documented: Vec<&str> = KEYS
                .iter()
                .filter(|k| k.file == *file && k.table == *table)
                .map(|k| k.key)
                .collect();
            let mut accepted: Vec<&str> = fields.to_vec();
            documented.sort_unstable();
            accepted.sort_unstable();
            assert_eq!(
                documented, accepted,
                "keys of table `{table}`: documented (left) vs parsed (right)"
            );
        }
        for key in KEYS {
            assert!(
                tables
                    .iter()
                    .any(|(f, t, _)| *f == key.file && *t == key.table),
                "documented table `{}` has no serde struct",
                key.table
            );
        }
        let site_tables: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.file == FileKind::Site)
            .map(|k| k.table.split(['[', ' ', '.']).next().unwrap_or(""))
            .collect();
        for top in crate::lower::SITE_TABLES {
            assert!(
                site_tables.contains(top),
                "top-level table `{top}` is undocumented"
            );
        }
    }

    #[test]
    fn config_readme_is_up_to_date_with_the_schema() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = (
            "<!-- keys:begin (generated from config/src/schema.rs) -->\n",
            "<!-- keys:end -->",
        );
        let start = readme
            .find(begin)
            .expect("README.md lacks the keys:begin marker")
            + begin.len();
        let stop = readme
            .find(end)
            .expect("README.md lacks the keys:end marker");
        let fresh = render_markdown();
        if readme[start..stop] != fresh {
            let updated = format!("{}{}{}", &readme[..start], fresh, &readme[stop..]);
            std::fs::write(&path, updated).unwrap();
            panic!(
                "config/README.md was out of date with schema.rs; it has been regenerated: review and commit it"
            );
        }
    }
}
