//! Shelly Gen2+ over MQTT, the pure part: topics, JSON-RPC requests (`Switch.Set`,
//! `Switch.SetConfig`), and parsing of `status/switch:N`, `NotifyStatus`, RPC replies,
//! `online`, and the energy meters' `em:0`/`emdata:0`/`em1:0`/`em1data:0`.

pub mod sim;

use serde_json::{Value, json};

use crate::tasmota::ParseError;
use crate::units::{WattHours, Watts};

/// Topic layout of one Shelly device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellyTopics {
    /// Topic prefix (default the device id, e.g. `shellyplusplugs-<mac>`).
    pub prefix: String,
    /// Switch component id.
    pub switch_id: u8,
}

impl ShellyTopics {
    /// Switch 0 under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            switch_id: 0,
        }
    }

    /// `<prefix>/rpc`, where requests go.
    pub fn rpc(&self) -> String {
        format!("{}/rpc", self.prefix)
    }

    /// `<prefix>/status/switch:N`.
    pub fn switch_status(&self) -> String {
        format!("{}/status/switch:{}", self.prefix, self.switch_id)
    }

    /// `<prefix>/online`.
    pub fn online(&self) -> String {
        format!("{}/online", self.prefix)
    }

    /// `<prefix>/events/rpc`, where `NotifyStatus` arrives.
    pub fn events(&self) -> String {
        format!("{}/events/rpc", self.prefix)
    }

    /// `<src>/rpc`, where replies to `src` arrive.
    pub fn reply_topic(src: &str) -> String {
        format!("{src}/rpc")
    }

    /// `Switch.Set` request.
    pub fn switch_set(&self, id: u64, src: &str, on: bool) -> String {
        json!({"id": id, "src": src, "method": "Switch.Set", "params": {"id": self.switch_id, "on": on}}).to_string()
    }

    /// `Switch.GetStatus` request.
    pub fn switch_get_status(&self, id: u64, src: &str) -> String {
        json!({"id": id, "src": src, "method": "Switch.GetStatus", "params": {"id": self.switch_id}}).to_string()
    }

    /// `Switch.SetConfig` setting the fail-safe `initial_state`: `on` for health loads, `off`
    /// otherwise.
    pub fn set_initial_state(&self, id: u64, src: &str, health: bool) -> String {
        json!({"id": id, "src": src, "method": "Switch.SetConfig",
               "params": {"id": self.switch_id, "config": {"initial_state": initial_state(health)}}})
        .to_string()
    }
}

/// The `initial_state` for a load.
pub fn initial_state(health: bool) -> &'static str {
    if health { "on" } else { "off" }
}

/// A switch status (from `status/switch:N`, `NotifyStatus` or `Switch.GetStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SwitchStatus {
    /// Relay state.
    pub output: Option<bool>,
    /// Active power.
    pub power: Option<Watts>,
    /// Total energy.
    pub energy: Option<WattHours>,
}

fn parse_object(payload: &[u8]) -> Result<Value, ParseError> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| ParseError(e.to_string()))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ParseError("not a JSON object".into()))
    }
}

fn finite(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|f| f.is_finite())
}

/// The switch fields of a status object (a `Switch.GetStatus` result, a `status/switch:N`
/// message, or the part of a `NotifyStatus` about one switch): each `None` when absent.
pub fn switch_fields(v: &Value) -> SwitchStatus {
    SwitchStatus {
        output: v.get("output").and_then(Value::as_bool),
        power: finite(v.get("apower")).map(Watts),
        energy: finite(v.pointer("/aenergy/total")).map(WattHours),
    }
}

/// Parses `status/switch:N`. An object without `output` is malformed.
pub fn parse_switch_status(payload: &[u8]) -> Result<SwitchStatus, ParseError> {
    let v = parse_object(payload)?;
    let s = switch_fields(&v);
    if s.output.is_none() {
        return Err(ParseError("no boolean output".into()));
    }
    Ok(s)
}

/// Parses a `NotifyStatus` event: the switch's partial status if the event carries it.
pub fn parse_notify(payload: &[u8], switch_id: u8) -> Result<Option<SwitchStatus>, ParseError> {
    let v = parse_object(payload)?;
    if v.get("method").and_then(Value::as_str) != Some("NotifyStatus") {
        return Ok(None);
    }
    Ok(v.pointer(&format!("/params/switch:{switch_id}"))
        .map(switch_fields))
}

/// An RPC reply.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcReply {
    /// Request id it answers.
    pub id: u64,
    /// Whom it is for: the `src` of the request (our client id).
    pub dst: Option<String>,
    /// `Ok(result)` or `Err((code, message))`.
    pub outcome: Result<Value, (i64, String)>,
}

/// Parses a reply on `<src>/rpc`.
pub fn parse_rpc_reply(payload: &[u8]) -> Result<RpcReply, ParseError> {
    let v = parse_object(payload)?;
    let id = v
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| ParseError("reply without id".into()))?;
    let outcome = if let Some(e) = v.get("error") {
        Err((
            e.get("code").and_then(Value::as_i64).unwrap_or(0),
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ))
    } else {
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    };
    let dst = v.get("dst").and_then(Value::as_str).map(str::to_owned);
    Ok(RpcReply { id, dst, outcome })
}

/// `true`/`false` from `<prefix>/online`.
pub fn parse_online(payload: &[u8]) -> Option<bool> {
    match std::str::from_utf8(payload).ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Which Shelly energy meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmKind {
    /// Pro 3EM: `em:0` (`total_act_power`) and `emdata:0` (`total_act`, `total_act_ret`).
    ThreePhase,
    /// EM Gen2+: `em1:0` (`act_power`) and `em1data:0` (`total_act_energy`).
    SinglePhase,
}

impl EmKind {
    /// Status topic for power.
    pub fn power_topic(self, prefix: &str) -> String {
        match self {
            EmKind::ThreePhase => format!("{prefix}/status/em:0"),
            EmKind::SinglePhase => format!("{prefix}/status/em1:0"),
        }
    }

    /// Status topic for energy.
    pub fn energy_topic(self, prefix: &str) -> String {
        match self {
            EmKind::ThreePhase => format!("{prefix}/status/emdata:0"),
            EmKind::SinglePhase => format!("{prefix}/status/em1data:0"),
        }
    }

    /// Parses the power message (W, positive for import).
    pub fn parse_power(self, payload: &[u8]) -> Result<Watts, ParseError> {
        let v = parse_object(payload)?;
        let key = match self {
            EmKind::ThreePhase => "total_act_power",
            EmKind::SinglePhase => "act_power",
        };
        finite(v.get(key))
            .map(Watts)
            .ok_or_else(|| ParseError(format!("no number {key}")))
    }

    /// Parses the energy message (imported Wh).
    pub fn parse_energy(self, payload: &[u8]) -> Result<WattHours, ParseError> {
        let v = parse_object(payload)?;
        let key = match self {
            EmKind::ThreePhase => "total_act",
            EmKind::SinglePhase => "total_act_energy",
        };
        finite(v.get(key))
            .map(WattHours)
            .ok_or_else(|| ParseError(format!("no number {key}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn switch_set_is_a_json_rpc_request_to_the_device_rpc_topic() {
        let t = ShellyTopics::new("shellyplusplugs-a1");
        assert_eq!(t.rpc(), "shellyplusplugs-a1/rpc");
        let v: Value = serde_json::from_str(&t.switch_set(7, "communalia-site", true)).unwrap();
        assert_eq!(v["method"], "Switch.Set");
        assert_eq!(v["params"], json!({"id": 0, "on": true}));
        assert_eq!(v["src"], "communalia-site");
        assert_eq!(v["id"], 7);
    }

    #[test]
    fn the_fail_safe_initial_state_is_on_for_health_loads() {
        let t = ShellyTopics::new("p");
        let v: Value = serde_json::from_str(&t.set_initial_state(1, "c", true)).unwrap();
        assert_eq!(v["params"]["config"]["initial_state"], "on");
        assert_eq!(initial_state(false), "off");
    }

    #[test]
    fn the_switch_status_gives_output_power_and_energy() {
        let p = br#"{"id":0,"source":"MQTT","output":true,"apower":120.3,"voltage":229.8,"freq":50.0,"current":0.55,"aenergy":{"total":6532.1,"by_minute":[45.2,47.1,88.4],"minute_ts":1780000000},"temperature":{"tC":32.1,"tF":89.8}}"#;
        let s = parse_switch_status(p).unwrap();
        assert_eq!(s.output, Some(true));
        assert_eq!(s.power, Some(Watts(120.3)));
        assert_eq!(s.energy, Some(WattHours(6532.1)));
        assert!(parse_switch_status(br#"{"apower":1}"#).is_err());
    }

    #[test]
    fn notify_status_events_carry_partial_switch_status() {
        let p = br#"{"src":"x","dst":"x/events","method":"NotifyStatus","params":{"ts":1,"switch:0":{"id":0,"output":false}}}"#;
        assert_eq!(parse_notify(p, 0).unwrap().unwrap().output, Some(false));
        assert_eq!(parse_notify(p, 1).unwrap(), None);
    }

    #[test]
    fn rpc_replies_are_results_or_errors() {
        let ok =
            parse_rpc_reply(br#"{"id":7,"src":"p","dst":"c","result":{"was_on":false}}"#).unwrap();
        assert_eq!((ok.id, ok.dst.as_deref()), (7, Some("c")));
        assert_eq!(ok.outcome, Ok(json!({"was_on": false})));
        let err = parse_rpc_reply(
            br#"{"id":8,"src":"p","dst":"c","error":{"code":-103,"message":"bad id"}}"#,
        )
        .unwrap();
        assert_eq!(err.outcome, Err((-103, "bad id".into())));
    }

    #[test]
    fn energy_meters_parse_power_and_energy_by_kind() {
        let three = EmKind::ThreePhase;
        assert_eq!(three.power_topic("pro3em"), "pro3em/status/em:0");
        assert_eq!(
            three
                .parse_power(br#"{"id":0,"a_act_power":100,"total_act_power":-250.5}"#)
                .unwrap(),
            Watts(-250.5)
        );
        assert_eq!(
            three
                .parse_energy(br#"{"id":0,"total_act":1000.5,"total_act_ret":20}"#)
                .unwrap(),
            WattHours(1000.5)
        );
        assert!(three.parse_power(br#"{"total_act_power":"x"}"#).is_err());
        let one = EmKind::SinglePhase;
        assert_eq!(
            one.parse_power(br#"{"act_power":42}"#).unwrap(),
            Watts(42.0)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic_the_parsers(payload in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_switch_status(&payload);
            let _ = parse_notify(&payload, 0);
            let _ = parse_rpc_reply(&payload);
            let _ = parse_online(&payload);
            let _ = EmKind::ThreePhase.parse_power(&payload);
            let _ = EmKind::SinglePhase.parse_energy(&payload);
        }
    }
}
