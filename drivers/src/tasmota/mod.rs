//! Tasmota over MQTT, the pure part: topics from a configurable FullTopic, command payloads,
//! and parsing of `RESULT`, `POWER`, `STATE`, `SENSOR` and `LWT` messages.
//!
//! **Which key carries the relay.** Stock Tasmota names relay `n` in its replies by
//! `GetPowerDevice` (tasmota/tasmota_support/support_tasmota.ino): `POWER`, with the index
//! appended only when `devices_present + SetOption26 > 1`. So a single-relay plug answers
//! `cmnd/<t>/POWER1 ON` with `stat/<t>/RESULT {"POWER":"ON"}` and `stat/<t>/POWER ON`, and its
//! `tele/<t>/STATE` carries `"POWER"`; a multi-relay device, or one with `SetOption26 1`, says
//! `POWER1`..`POWER8`. Relay 1 is therefore recognised under both `POWER` and `POWER1`, relay
//! `n > 1` only under `POWERn` ([`TasmotaTopics::report_keys`]).
//!
//! **TelePeriod.** Tasmota's stock `TelePeriod` is 300 s (Tasmota docs, Commands: "TelePeriod
//! 0 = disable telemetry messages, 1 = reset to firmware default, 10..3600 = set telemetry
//! period in seconds (default = 300)"); sent with an empty payload it answers
//! `stat/<t>/RESULT {"TelePeriod":300}`. The driver does not change it (unless the site file
//! asks, see [`TasmotaTopics::tele_period_command`]); it reads it, and keeps power readings fresh
//! by asking `Status 10` (`stat/<t>/STATUS10 {"StatusSNS":{...}}`) whenever the last reading
//! is about to go stale, and once shortly after each confirmed switch (see `crate::plug`).

pub mod sim;

use serde_json::Value;

use crate::units::{WattHours, Watts};

/// A payload that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed payload: {0}")]
pub struct ParseError(pub String);

/// Topic layout of one Tasmota device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasmotaTopics {
    /// FullTopic pattern with `%prefix%` and `%topic%` (default `%prefix%/%topic%/`).
    pub full_topic: String,
    /// The device's `%topic%`.
    pub topic: String,
    /// Relay index: 0 for `POWER`, 1..=8 for `POWER1`..`POWER8`.
    pub relay: u8,
}

impl TasmotaTopics {
    /// Default FullTopic, relay `POWER`.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            full_topic: "%prefix%/%topic%/".into(),
            topic: topic.into(),
            relay: 0,
        }
    }

    /// With another FullTopic pattern.
    pub fn full_topic(mut self, pattern: impl Into<String>) -> Self {
        self.full_topic = pattern.into();
        self
    }

    /// With a relay index (1..=8 for multi-relay devices).
    pub fn relay(mut self, relay: u8) -> Self {
        self.relay = relay;
        self
    }

    /// The topic for `prefix` (`cmnd`, `stat`, `tele`) and `last` (command or message name).
    pub fn topic_for(&self, prefix: &str, last: &str) -> String {
        let mut base = self
            .full_topic
            .replace("%prefix%", prefix)
            .replace("%topic%", &self.topic);
        if !base.ends_with('/') {
            base.push('/');
        }
        base.push_str(last);
        base
    }

    /// `cmnd/<topic>/<command>`.
    pub fn cmnd(&self, command: &str) -> String {
        self.topic_for("cmnd", command)
    }

    /// `stat/<topic>/<name>`.
    pub fn stat(&self, name: &str) -> String {
        self.topic_for("stat", name)
    }

    /// `tele/<topic>/<name>`.
    pub fn tele(&self, name: &str) -> String {
        self.topic_for("tele", name)
    }

    /// The power key of this relay (`POWER` or `POWERn`).
    pub fn power_key(&self) -> String {
        if self.relay == 0 {
            "POWER".into()
        } else {
            format!("POWER{}", self.relay)
        }
    }

    /// The keys a stock device may name this relay by in `RESULT`, `STATE` and `stat/<t>/<key>`
    /// (see the module docs): relay 0 or 1 is `POWER` on a single-relay device and `POWER1` on a
    /// multi-relay one or with `SetOption26 1`; relay `n > 1` is always `POWERn`.
    pub fn report_keys(&self) -> Vec<String> {
        if self.relay <= 1 {
            vec!["POWER".into(), "POWER1".into()]
        } else {
            vec![self.power_key()]
        }
    }

    /// Topic and payload asking for the device's `TelePeriod` (empty) or setting it.
    pub fn tele_period_command(&self, secs: Option<u16>) -> (String, String) {
        (
            self.cmnd("TelePeriod"),
            secs.map(|s| s.to_string()).unwrap_or_default(),
        )
    }

    /// Topic and payload asking for the relay states now (`State`, answered on
    /// `stat/<t>/RESULT` with the `STATE` object): a query that is not a `Power` command.
    pub fn state_command(&self) -> (String, &'static str) {
        (self.cmnd("State"), "")
    }

    /// Topic and payload asking for the sensor readings now (`Status 10`, answered on
    /// `stat/<t>/STATUS10`).
    pub fn sensor_status_command(&self) -> (String, &'static str) {
        (self.cmnd("Status"), "10")
    }

    /// Topic and payload to switch the relay.
    pub fn power_command(&self, on: bool) -> (String, &'static str) {
        (self.cmnd(&self.power_key()), if on { "ON" } else { "OFF" })
    }

    /// Topic and payload setting the device's fail-safe `PowerOnState`.
    pub fn power_on_state_command(&self, health: bool) -> (String, String) {
        (
            self.cmnd("PowerOnState"),
            power_on_state(health).to_string(),
        )
    }
}

/// `PowerOnState` for a load: 1 (on after power returns) for health loads, 0 (off) otherwise.
pub fn power_on_state(health: bool) -> u8 {
    if health { 1 } else { 0 }
}

/// Parses `ON`/`OFF` (also `1`/`0`, `true`/`false`), any case.
pub fn parse_power_word(payload: &[u8]) -> Option<bool> {
    let s = std::str::from_utf8(payload).ok()?.trim();
    match s.to_ascii_uppercase().as_str() {
        "ON" | "1" | "TRUE" => Some(true),
        "OFF" | "0" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_json(payload: &[u8]) -> Result<Value, ParseError> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| ParseError(e.to_string()))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ParseError("not a JSON object".into()))
    }
}

/// The relay state in a `RESULT` or `STATE` JSON object: `Ok(None)` when the message is about
/// something else, `Err` when the payload is not a JSON object or the state is not a word.
pub fn parse_power_json(payload: &[u8], power_key: &str) -> Result<Option<bool>, ParseError> {
    let v = parse_json(payload)?;
    match v.get(power_key) {
        None => Ok(None),
        Some(Value::String(s)) => parse_power_word(s.as_bytes())
            .map(Some)
            .ok_or_else(|| ParseError(format!("{power_key} is {s:?}"))),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|v| Some(v != 0))
            .ok_or_else(|| ParseError(format!("{power_key} is {n}"))),
        Some(other) => Err(ParseError(format!("{power_key} is {other}"))),
    }
}

/// The relay state under the first of `keys` that a `RESULT` or `STATE` object carries (see
/// [`parse_power_json`]).
pub fn parse_power_json_keys(payload: &[u8], keys: &[String]) -> Result<Option<bool>, ParseError> {
    for key in keys {
        if let Some(state) = parse_power_json(payload, key)? {
            return Ok(Some(state));
        }
    }
    Ok(None)
}

/// `TelePeriod` confirmed in a `RESULT` message, in seconds (0: telemetry disabled).
pub fn parse_tele_period(payload: &[u8]) -> Result<Option<u64>, ParseError> {
    let v = parse_json(payload)?;
    Ok(v.get("TelePeriod").and_then(Value::as_u64))
}

/// `PowerOnState` confirmed in a `RESULT` message.
pub fn parse_power_on_state(payload: &[u8]) -> Result<Option<u8>, ParseError> {
    let v = parse_json(payload)?;
    Ok(v.get("PowerOnState")
        .and_then(Value::as_u64)
        .and_then(|n| u8::try_from(n).ok()))
}

/// `Online`/`Offline` from `tele/<topic>/LWT`.
pub fn parse_lwt(payload: &[u8]) -> Option<bool> {
    match std::str::from_utf8(payload).ok()?.trim() {
        "Online" => Some(true),
        "Offline" => Some(false),
        _ => None,
    }
}

/// Where power and energy sit in a `SENSOR` message, as JSON pointers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorKeys {
    /// Pointer to the active power in W (a number, or an array summed).
    pub power: String,
    /// Pointer to the total energy in kWh.
    pub energy_kwh: Option<String>,
}

impl Default for SensorKeys {
    /// The energy-monitoring plug layout: `ENERGY.Power` and `ENERGY.Total`.
    fn default() -> Self {
        Self {
            power: "/ENERGY/Power".into(),
            energy_kwh: Some("/ENERGY/Total".into()),
        }
    }
}

impl SensorKeys {
    /// An SML reader: `/<meter>/<power key>` and `/<meter>/<energy key>`.
    pub fn sml(meter: &str, power_key: &str, energy_key: Option<&str>) -> Self {
        Self {
            power: format!("/{meter}/{power_key}"),
            energy_kwh: energy_key.map(|k| format!("/{meter}/{k}")),
        }
    }
}

/// Power and energy from a `SENSOR` (or `StatusSNS`) message. Missing keys are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SensorReading {
    /// Active power.
    pub power: Option<Watts>,
    /// Total energy.
    pub energy: Option<WattHours>,
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::Array(items) => items
            .iter()
            .map(number)
            .sum::<Option<f64>>()
            .filter(|f| f.is_finite()),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Parses a `SENSOR` message (or `STATUS8`/`STATUS10`, whose readings sit under `StatusSNS`).
pub fn parse_sensor(payload: &[u8], keys: &SensorKeys) -> Result<SensorReading, ParseError> {
    let v = parse_json(payload)?;
    let root = v.get("StatusSNS").unwrap_or(&v);
    Ok(SensorReading {
        power: root.pointer(&keys.power).and_then(number).map(Watts),
        energy: keys
            .energy_kwh
            .as_deref()
            .and_then(|p| root.pointer(p))
            .and_then(number)
            .map(WattHours::from_kwh)
            .filter(|e| e.0.is_finite()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn odd_numbers_are_malformed_never_a_silent_off_or_infinite_watts() {
        assert!(parse_power_json(br#"{"POWER":-1}"#, "POWER").is_err());
        assert!(parse_power_json(br#"{"POWER":1.0}"#, "POWER").is_err());
        assert_eq!(parse_power_json(br#"{"POWER":1}"#, "POWER"), Ok(Some(true)));
        let r = parse_sensor(
            br#"{"ENERGY":{"Power":[1e308,1e308],"Total":1e306}}"#,
            &SensorKeys::default(),
        )
        .unwrap();
        assert_eq!(r.power, None);
        assert_eq!(r.energy, None);
    }

    #[test]
    fn the_default_full_topic_puts_the_prefix_first() {
        let t = TasmotaTopics::new("plug_1");
        assert_eq!(t.power_command(true), ("cmnd/plug_1/POWER".into(), "ON"));
        assert_eq!(t.stat("RESULT"), "stat/plug_1/RESULT");
        assert_eq!(t.tele("LWT"), "tele/plug_1/LWT");
    }

    #[test]
    fn a_custom_full_topic_and_relay_are_honoured() {
        let t = TasmotaTopics::new("pump")
            .full_topic("site/%topic%/%prefix%")
            .relay(2);
        assert_eq!(
            t.power_command(false),
            ("site/pump/cmnd/POWER2".into(), "OFF")
        );
        assert_eq!(t.tele("SENSOR"), "site/pump/tele/SENSOR");
    }

    #[test]
    fn health_loads_come_back_on_after_a_power_cut() {
        let t = TasmotaTopics::new("fridge");
        assert_eq!(
            t.power_on_state_command(true),
            ("cmnd/fridge/PowerOnState".into(), "1".into())
        );
        assert_eq!(power_on_state(false), 0);
    }

    #[test]
    fn result_messages_give_the_relay_state_or_nothing() {
        assert_eq!(
            parse_power_json(br#"{"POWER":"ON"}"#, "POWER"),
            Ok(Some(true))
        );
        assert_eq!(
            parse_power_json(br#"{"POWER2":"OFF"}"#, "POWER2"),
            Ok(Some(false))
        );
        assert_eq!(
            parse_power_json(br#"{"PowerOnState":1}"#, "POWER"),
            Ok(None)
        );
        assert!(parse_power_json(b"{garbage", "POWER").is_err());
        assert!(parse_power_json(br#"{"POWER":"MAYBE"}"#, "POWER").is_err());
    }

    #[test]
    fn the_energy_sensor_message_gives_watts_and_watt_hours() {
        let p = br#"{"Time":"2026-06-01T12:00:00","ENERGY":{"TotalStartTime":"2026-01-01T00:00:00","Total":12.345,"Yesterday":0.512,"Today":0.210,"Period":5,"Power":120,"ApparentPower":130,"ReactivePower":50,"Factor":0.92,"Voltage":230,"Current":0.565}}"#;
        let r = parse_sensor(p, &SensorKeys::default()).unwrap();
        assert_eq!(r.power, Some(Watts(120.0)));
        assert!((r.energy.unwrap().get() - 12345.0).abs() < 1e-6);
    }

    #[test]
    fn a_sensor_message_without_power_gives_no_power_rather_than_zero() {
        let r = parse_sensor(br#"{"ENERGY":{"Total":1.0}}"#, &SensorKeys::default()).unwrap();
        assert_eq!(r.power, None);
    }

    #[test]
    fn sml_keys_are_configurable() {
        let keys = SensorKeys::sml("SML", "Power_curr", Some("Total_in"));
        let r = parse_sensor(br#"{"SML":{"Power_curr":-350,"Total_in":1234.5}}"#, &keys).unwrap();
        assert_eq!(r.power, Some(Watts(-350.0)));
        assert_eq!(r.energy, Some(WattHours(1_234_500.0)));
    }

    #[test]
    fn status_replies_carry_readings_under_status_sns() {
        let r = parse_sensor(
            br#"{"StatusSNS":{"ENERGY":{"Power":[10,20]}}}"#,
            &SensorKeys::default(),
        )
        .unwrap();
        assert_eq!(r.power, Some(Watts(30.0)));
    }

    #[test]
    fn relay_one_is_known_by_power_and_power1_and_relay_two_only_by_power2() {
        let one = TasmotaTopics::new("t").relay(1);
        assert_eq!(one.power_command(true), ("cmnd/t/POWER1".into(), "ON"));
        let keys = one.report_keys();
        assert_eq!(
            parse_power_json_keys(br#"{"POWER":"ON"}"#, &keys),
            Ok(Some(true))
        );
        assert_eq!(
            parse_power_json_keys(br#"{"POWER1":"OFF"}"#, &keys),
            Ok(Some(false))
        );
        let two = TasmotaTopics::new("t").relay(2).report_keys();
        assert_eq!(parse_power_json_keys(br#"{"POWER":"ON"}"#, &two), Ok(None));
        assert_eq!(
            parse_power_json_keys(br#"{"POWER1":"ON","POWER2":"OFF"}"#, &two),
            Ok(Some(false))
        );
    }

    #[test]
    fn the_tele_period_is_read_from_its_result() {
        assert_eq!(parse_tele_period(br#"{"TelePeriod":300}"#), Ok(Some(300)));
        assert_eq!(parse_tele_period(br#"{"POWER":"ON"}"#), Ok(None));
        let t = TasmotaTopics::new("t");
        assert_eq!(
            t.tele_period_command(None),
            ("cmnd/t/TelePeriod".into(), String::new())
        );
        assert_eq!(t.tele_period_command(Some(10)).1, "10");
        assert_eq!(t.sensor_status_command(), ("cmnd/t/Status".into(), "10"));
    }

    #[test]
    fn last_will_words_are_online_and_offline_only() {
        assert_eq!(parse_lwt(b"Online"), Some(true));
        assert_eq!(parse_lwt(b"Offline"), Some(false));
        assert_eq!(parse_lwt(b"online?"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic_the_parsers(payload in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_power_json(&payload, "POWER");
            let _ = parse_sensor(&payload, &SensorKeys::default());
            let _ = parse_power_word(&payload);
            let _ = parse_lwt(&payload);
            let _ = parse_power_on_state(&payload);
            let _ = parse_tele_period(&payload);
            let _ = parse_power_json_keys(&payload, &["POWER".into(), "POWER1".into()]);
        }

        #[test]
        fn arbitrary_json_numbers_in_sensor_messages_decode_finite_or_absent(p in any::<f64>()) {
            let payload = format!(r#"{{"ENERGY":{{"Power":{p}}}}}"#);
            if let Ok(r) = parse_sensor(payload.as_bytes(), &SensorKeys::default()) {
                prop_assert!(r.power.is_none_or(|w| w.get().is_finite()));
            }
        }
    }
}
