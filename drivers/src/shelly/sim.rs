//! Simulated Shelly Gen2+ devices: a plug (Switch component, JSON-RPC over MQTT) and a Pro 3EM
//! or EM energy meter.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mqtt::MqttConfig;
use crate::mqtt_sim::{MqttBehaviour, MqttSim, Outgoing};

use super::{EmKind, ShellyTopics};

/// The state of a simulated Shelly plug.
#[derive(Debug, Clone)]
pub struct ShellyPlug {
    topics: ShellyTopics,
    /// Device id: the MQTT client id and the `src` of its replies and events. The same as the
    /// topic prefix unless changed with [`ShellyPlug::device_id`] (a real device's prefix is
    /// configurable, its id is not).
    device_id: String,
    /// Relay state.
    pub on: bool,
    /// Power drawn when on.
    pub nominal_watts: f64,
    /// `initial_state`: `off`, `on`, `restore_last` or `match_input`.
    pub initial_state: String,
    /// Status period.
    pub period: Duration,
    /// Energy counter in Wh.
    pub total_wh: f64,
    last_energy: Instant,
    /// RPC requests received.
    pub requests: u64,
}

impl ShellyPlug {
    /// A plug under `prefix`, whose device id is the prefix too (the device's default).
    pub fn new(prefix: impl Into<String>, nominal_watts: f64, period: Duration) -> Self {
        let prefix = prefix.into();
        Self {
            device_id: prefix.clone(),
            topics: ShellyTopics::new(prefix),
            on: false,
            nominal_watts,
            initial_state: "restore_last".into(),
            period,
            total_wh: 100.0,
            last_energy: Instant::now(),
            requests: 0,
        }
    }

    /// The same plug with a device id other than its topic prefix.
    pub fn device_id(mut self, id: impl Into<String>) -> Self {
        self.device_id = id.into();
        self
    }

    /// Starts it on the broker (client id = the device id).
    pub fn start(self, broker: &MqttConfig) -> MqttSim<ShellyPlug> {
        let cfg = broker.with_client_id(self.device_id.clone());
        MqttSim::start(cfg, self)
    }

    /// Simulates a power cut and return: the relay follows `initial_state`.
    pub fn power_cycle(&mut self) {
        self.on = match self.initial_state.as_str() {
            "on" => true,
            "off" => false,
            _ => self.on,
        };
    }

    fn power(&self) -> f64 {
        if self.on { self.nominal_watts } else { 0.0 }
    }

    fn integrate(&mut self) {
        let now = Instant::now();
        self.total_wh += self.power() * now.duration_since(self.last_energy).as_secs_f64() / 3600.0;
        self.last_energy = now;
    }

    fn status(&mut self) -> Value {
        self.integrate();
        let p = self.power();
        json!({"id": self.topics.switch_id, "source": "MQTT", "output": self.on, "apower": p,
               "voltage": 230.1, "freq": 50.0, "current": (p / 230.0 * 1000.0).round() / 1000.0,
               "aenergy": {"total": (self.total_wh * 10.0).round() / 10.0, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1_780_000_000},
               "temperature": {"tC": 32.1, "tF": 89.8}})
    }

    fn status_messages(&mut self) -> Vec<Outgoing> {
        let st = self.status();
        let notify = json!({"src": self.device_id, "dst": format!("{}/events", self.topics.prefix), "method": "NotifyStatus",
            "params": {"ts": 1_780_000_000.0, format!("switch:{}", self.topics.switch_id): {"id": self.topics.switch_id, "output": self.on}}});
        vec![
            (
                self.topics.switch_status(),
                st.to_string().into_bytes(),
                false,
            ),
            (self.topics.events(), notify.to_string().into_bytes(), false),
        ]
    }

    fn call(&mut self, method: &str, params: &Value) -> (Result<Value, (i64, String)>, bool) {
        let id_ok =
            params.get("id").and_then(Value::as_u64) == Some(u64::from(self.topics.switch_id));
        let bad_id = || Err((-105, "Argument 'id', value not found!".to_owned()));
        match method {
            "Switch.Set" | "Switch.Toggle" => {
                if !id_ok {
                    return (bad_id(), false);
                }
                self.integrate();
                let was_on = self.on;
                if method == "Switch.Toggle" {
                    self.on = !self.on;
                } else {
                    match params.get("on").and_then(Value::as_bool) {
                        Some(on) => self.on = on,
                        None => {
                            return (Err((-103, "Missing required argument 'on'!".into())), false);
                        }
                    }
                }
                (Ok(json!({"was_on": was_on})), was_on != self.on)
            }
            "Switch.GetStatus" => {
                if !id_ok {
                    return (bad_id(), false);
                }
                (Ok(self.status()), false)
            }
            "Switch.SetConfig" => {
                if !id_ok {
                    return (bad_id(), false);
                }
                if let Some(s) = params.pointer("/config/initial_state") {
                    match s.as_str() {
                        Some(v @ ("off" | "on" | "restore_last" | "match_input")) => {
                            self.initial_state = v.to_owned()
                        }
                        _ => {
                            return (
                                Err((-103, "Invalid argument 'initial_state'!".into())),
                                false,
                            );
                        }
                    }
                }
                (Ok(json!({"restart_required": false})), false)
            }
            "Switch.GetConfig" => {
                if !id_ok {
                    return (bad_id(), false);
                }
                (
                    Ok(
                        json!({"id": self.topics.switch_id, "name": null, "initial_state": self.initial_state, "auto_on": false, "auto_off": false}),
                    ),
                    false,
                )
            }
            other => (Err((404, format!("No handler for {other}"))), false),
        }
    }
}

impl MqttBehaviour for ShellyPlug {
    fn will(&self) -> (String, Vec<u8>) {
        (self.topics.online(), b"false".to_vec())
    }

    fn subscriptions(&self) -> Vec<String> {
        vec![self.topics.rpc()]
    }

    fn on_connect(&mut self) -> Vec<Outgoing> {
        let mut out = vec![(self.topics.online(), b"true".to_vec(), true)];
        out.extend(self.status_messages());
        out
    }

    fn on_message(&mut self, _topic: &str, payload: &[u8]) -> Vec<Outgoing> {
        self.requests += 1;
        let Ok(req) = serde_json::from_slice::<Value>(payload) else {
            return Vec::new();
        };
        let (Some(src), Some(method)) = (
            req.get("src").and_then(Value::as_str),
            req.get("method").and_then(Value::as_str),
        ) else {
            return Vec::new();
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let params = req.get("params").cloned().unwrap_or(Value::Null);
        let (outcome, changed) = self.call(method, &params);
        let mut reply = json!({"id": id, "src": self.device_id, "dst": src});
        match outcome {
            Ok(result) => reply["result"] = result,
            Err((code, message)) => reply["error"] = json!({"code": code, "message": message}),
        }
        let mut out = vec![(
            ShellyTopics::reply_topic(src),
            reply.to_string().into_bytes(),
            false,
        )];
        if changed {
            out.extend(self.status_messages());
        }
        out
    }

    fn telemetry(&mut self) -> Vec<Outgoing> {
        let st = self.status();
        vec![(
            self.topics.switch_status(),
            st.to_string().into_bytes(),
            false,
        )]
    }

    fn period(&self) -> Duration {
        self.period
    }
}

/// A simulated Shelly energy meter (Pro 3EM or EM).
#[derive(Debug, Clone)]
pub struct ShellyEm {
    prefix: String,
    kind: EmKind,
    /// Measured power, positive for import.
    pub power_watts: f64,
    /// Imported energy in Wh.
    pub import_wh: f64,
    /// Period of its status messages.
    pub period: Duration,
}

impl ShellyEm {
    /// A meter under `prefix`.
    pub fn new(prefix: impl Into<String>, kind: EmKind, period: Duration) -> Self {
        Self {
            prefix: prefix.into(),
            kind,
            power_watts: 0.0,
            import_wh: 5000.0,
            period,
        }
    }

    /// Starts it on the broker.
    pub fn start(self, broker: &MqttConfig) -> MqttSim<ShellyEm> {
        let cfg = broker.with_client_id(self.prefix.clone());
        MqttSim::start(cfg, self)
    }
}

impl MqttBehaviour for ShellyEm {
    fn will(&self) -> (String, Vec<u8>) {
        (format!("{}/online", self.prefix), b"false".to_vec())
    }

    fn subscriptions(&self) -> Vec<String> {
        vec![format!("{}/rpc", self.prefix)]
    }

    fn on_connect(&mut self) -> Vec<Outgoing> {
        vec![(format!("{}/online", self.prefix), b"true".to_vec(), true)]
    }

    fn on_message(&mut self, _topic: &str, _payload: &[u8]) -> Vec<Outgoing> {
        Vec::new()
    }

    fn telemetry(&mut self) -> Vec<Outgoing> {
        let p = self.power_watts;
        if p > 0.0 {
            self.import_wh += p * self.period.as_secs_f64() / 3600.0;
        }
        let (power, energy) = match self.kind {
            EmKind::ThreePhase => (
                json!({"id": 0, "a_act_power": p / 3.0, "b_act_power": p / 3.0, "c_act_power": p / 3.0, "total_act_power": p,
                       "a_voltage": 230.0, "a_current": p / 3.0 / 230.0}),
                json!({"id": 0, "total_act": self.import_wh, "total_act_ret": 0.0}),
            ),
            EmKind::SinglePhase => (
                json!({"id": 0, "act_power": p, "voltage": 230.0, "current": p / 230.0}),
                json!({"id": 0, "total_act_energy": self.import_wh, "total_act_ret_energy": 0.0}),
            ),
        };
        vec![
            (
                self.kind.power_topic(&self.prefix),
                power.to_string().into_bytes(),
                false,
            ),
            (
                self.kind.energy_topic(&self.prefix),
                energy.to_string().into_bytes(),
                false,
            ),
        ]
    }

    fn period(&self) -> Duration {
        self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_set_replies_to_the_caller_and_publishes_the_new_status() {
        let mut p = ShellyPlug::new("sp1", 60.0, Duration::from_secs(10));
        let req = ShellyTopics::new("sp1").switch_set(5, "ctl", true);
        let out = p.on_message("sp1/rpc", req.as_bytes());
        assert!(p.on);
        assert_eq!(out[0].0, "ctl/rpc");
        let reply: Value = serde_json::from_slice(&out[0].1).unwrap();
        assert_eq!(reply["result"]["was_on"], false);
        assert_eq!(reply["id"], 5);
        assert_eq!(out[1].0, "sp1/status/switch:0");
    }

    #[test]
    fn a_device_id_other_than_the_prefix_is_the_src_of_replies_and_events() {
        let mut p =
            ShellyPlug::new("site/kitchen", 60.0, Duration::from_secs(10)).device_id("shelly-a1");
        let req = ShellyTopics::new("site/kitchen").switch_set(5, "ctl", true);
        let out = p.on_message("site/kitchen/rpc", req.as_bytes());
        let reply: Value = serde_json::from_slice(&out[0].1).unwrap();
        assert_eq!(
            (reply["src"].as_str(), reply["dst"].as_str()),
            (Some("shelly-a1"), Some("ctl"))
        );
        let (topic, event, _) = &out[2];
        assert_eq!(topic, "site/kitchen/events/rpc");
        let event: Value = serde_json::from_slice(event).unwrap();
        assert_eq!(event["src"], "shelly-a1");
    }

    #[test]
    fn an_unknown_initial_state_is_refused_with_an_rpc_error() {
        let mut p = ShellyPlug::new("sp1", 60.0, Duration::from_secs(10));
        let req = json!({"id": 1, "src": "c", "method": "Switch.SetConfig", "params": {"id": 0, "config": {"initial_state": "maybe"}}});
        let out = p.on_message("sp1/rpc", req.to_string().as_bytes());
        let reply: Value = serde_json::from_slice(&out[0].1).unwrap();
        assert_eq!(reply["error"]["code"], -103);
        assert_eq!(p.initial_state, "restore_last");
    }
}
