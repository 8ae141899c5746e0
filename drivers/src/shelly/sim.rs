//! Simulated Shelly Gen2+ devices: a switch device (Plus Plug S, Plus 1PM, Pro 4PM: Switch
//! components, JSON-RPC over MQTT) and a Pro 3EM or EM energy meter.
//!
//! The switch device behaves as the stock firmware does (Shelly Gen2 API docs,
//! <https://shelly-api-docs.shelly.cloud/gen2/>):
//! - component Mqtt: requests arrive on `<topic_prefix>/rpc`; a reply goes to `<src>/rpc` with
//!   the request's `id`, `src` the device id and `dst` the request's `src`. The prefix defaults
//!   to the device id (`shellyplusplugs-<mac>`) but is configurable, the id is not. `rpc_ntf`
//!   (default true) sends notifications (`NotifyStatus`) to `<topic_prefix>/events/rpc`;
//!   `status_ntf` (default **false**) publishes a component's whole status on
//!   `<topic_prefix>/status/<component:id>`. So a stock device tells changes only as
//!   `NotifyStatus` on `events/rpc`.
//! - Notifications: `NotifyStatus` carries only what changed ("Some or all unchanged
//!   attributes of the status object may not be visible"), e.g. `{"switch:0":{"id":0,
//!   "output":true,"source":"MQTT"}}`.
//! - component Switch: `Switch.Set {id, on}` answers `{"was_on":..}`; `Switch.GetStatus {id}`
//!   gives `output`, `apower` (W), `aenergy.total` (Wh) and more; `Switch.SetConfig` takes
//!   `initial_state` (`off`, `on`, `restore_last`, `match_input`); an unknown `id` is refused
//!   with error -105. The energy counter is updated every minute (`aenergy.minute_ts`), which
//!   the device notifies; a steady `apower` is not notified again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mqtt::MqttConfig;
use crate::mqtt_sim::{MqttBehaviour, MqttSim, Outgoing};

use super::{EmKind, ShellyTopics};

/// Which device: how many Switch components it has and how it names itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShellyModel {
    /// Plus Plug S: `switch:0`.
    #[default]
    PlusPlugS,
    /// Plus 1PM: `switch:0`.
    Plus1Pm,
    /// Pro 4PM: `switch:0` to `switch:3`.
    Pro4Pm,
}

impl ShellyModel {
    /// Switch components.
    pub fn switches(self) -> usize {
        match self {
            ShellyModel::PlusPlugS | ShellyModel::Plus1Pm => 1,
            ShellyModel::Pro4Pm => 4,
        }
    }

    /// `app` in `Shelly.GetDeviceInfo`.
    pub fn app(self) -> &'static str {
        match self {
            ShellyModel::PlusPlugS => "PlusPlugS",
            ShellyModel::Plus1Pm => "Plus1PM",
            ShellyModel::Pro4Pm => "Pro4PM",
        }
    }

    /// The first part of its default device id (`<this>-<mac>`).
    pub fn id_prefix(self) -> &'static str {
        match self {
            ShellyModel::PlusPlugS => "shellyplusplugs",
            ShellyModel::Plus1Pm => "shellyplus1pm",
            ShellyModel::Pro4Pm => "shellypro4pm",
        }
    }
}

/// One Switch component of the simulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSwitch {
    /// Relay state.
    pub on: bool,
    /// Power drawn when on.
    pub nominal_watts: f64,
    /// `initial_state`: `off`, `on`, `restore_last` (default) or `match_input`.
    pub initial_state: String,
    /// Energy counter in Wh.
    pub total_wh: f64,
}

/// The state of a simulated Shelly switch device.
#[derive(Debug, Clone)]
pub struct ShellyPlug {
    prefix: String,
    /// Device id: the MQTT client id and the `src` of its replies and events. The same as the
    /// topic prefix unless changed with [`ShellyPlug::device_id`].
    device_id: String,
    model: ShellyModel,
    /// The Switch components, `switch:0` first.
    pub switches: Vec<SimSwitch>,
    /// Mqtt `rpc_ntf`: notifications on `<prefix>/events/rpc` (stock: on).
    pub rpc_ntf: bool,
    /// Mqtt `status_ntf`: whole statuses on `<prefix>/status/switch:N` (stock: off).
    pub status_ntf: bool,
    /// How often the energy counters are updated and notified (stock: every minute).
    pub period: Duration,
    last_energy: Instant,
    /// RPC requests received (any).
    pub requests: u64,
    /// `Switch.Set` and `Switch.Toggle` requests received.
    pub switch_requests: u64,
    /// `Switch.Set` requests that asked for the state the output was already in.
    pub redundant_switches: u64,
}

impl ShellyPlug {
    /// A stock Plus Plug S under `prefix`, whose device id is the prefix too (the default),
    /// drawing `nominal_watts` when on.
    pub fn new(prefix: impl Into<String>, nominal_watts: f64) -> Self {
        let prefix = prefix.into();
        let mut p = Self {
            device_id: prefix.clone(),
            prefix,
            model: ShellyModel::PlusPlugS,
            switches: Vec::new(),
            rpc_ntf: true,
            status_ntf: false,
            period: Duration::from_secs(60),
            last_energy: Instant::now(),
            requests: 0,
            switch_requests: 0,
            redundant_switches: 0,
        };
        p.set_switches(1, nominal_watts);
        p
    }

    fn set_switches(&mut self, n: usize, nominal_watts: f64) {
        self.switches = (0..n)
            .map(|_| SimSwitch {
                on: false,
                nominal_watts,
                initial_state: "restore_last".into(),
                total_wh: 100.0,
            })
            .collect();
    }

    /// Another model (its switches off, each drawing the same `nominal_watts` when on).
    pub fn model(mut self, model: ShellyModel) -> Self {
        let watts = self.switches.first().map_or(0.0, |s| s.nominal_watts);
        self.model = model;
        self.set_switches(model.switches(), watts);
        self
    }

    /// The same device with a device id other than its topic prefix.
    pub fn device_id(mut self, id: impl Into<String>) -> Self {
        self.device_id = id.into();
        self
    }

    /// With Mqtt `status_ntf` set (the installer enabled "generic status update over MQTT").
    pub fn status_ntf(mut self, on: bool) -> Self {
        self.status_ntf = on;
        self
    }

    /// With Mqtt `rpc_ntf` set or cleared.
    pub fn rpc_ntf(mut self, on: bool) -> Self {
        self.rpc_ntf = on;
        self
    }

    /// With another energy update period (tests shorten the minute).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Starts it on the broker (client id = the device id).
    pub fn start(self, broker: &MqttConfig) -> MqttSim<ShellyPlug> {
        let cfg = broker.with_client_id(self.device_id.clone());
        MqttSim::start(cfg, self)
    }

    /// Whether switch `id` is on (`false` for one the device does not have).
    pub fn output(&self, id: usize) -> bool {
        self.switches.get(id).is_some_and(|s| s.on)
    }

    /// Switch `id`'s `initial_state` (empty for one the device does not have).
    pub fn initial_state(&self, id: usize) -> &str {
        self.switches
            .get(id)
            .map_or("", |s| s.initial_state.as_str())
    }

    /// Sets switch `id` as its button would, without any MQTT message.
    pub fn set_output(&mut self, id: usize, on: bool) {
        self.integrate();
        if let Some(s) = self.switches.get_mut(id) {
            s.on = on;
        }
    }

    /// The power switch `id` draws now.
    pub fn power(&self, id: usize) -> f64 {
        self.switches
            .get(id)
            .map_or(0.0, |s| if s.on { s.nominal_watts } else { 0.0 })
    }

    /// The power the whole device draws now.
    pub fn total_power(&self) -> f64 {
        (0..self.switches.len()).map(|i| self.power(i)).sum()
    }

    /// Simulates a power cut and return: each relay follows its `initial_state`.
    pub fn power_cycle(&mut self) {
        for s in &mut self.switches {
            s.on = match s.initial_state.as_str() {
                "on" => true,
                "off" => false,
                _ => s.on,
            };
        }
    }

    fn integrate(&mut self) {
        let now = Instant::now();
        let hours = now.duration_since(self.last_energy).as_secs_f64() / 3600.0;
        for s in &mut self.switches {
            if s.on {
                s.total_wh += s.nominal_watts * hours;
            }
        }
        self.last_energy = now;
    }

    fn aenergy(&self, id: usize) -> Value {
        let total = self.switches.get(id).map_or(0.0, |s| s.total_wh);
        json!({"total": (total * 10.0).round() / 10.0, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1_780_000_000})
    }

    fn status(&mut self, id: usize) -> Value {
        self.integrate();
        let p = self.power(id);
        json!({"id": id, "source": "MQTT", "output": self.output(id), "apower": p,
               "voltage": 230.1, "freq": 50.0, "current": (p / 230.0 * 1000.0).round() / 1000.0,
               "aenergy": self.aenergy(id),
               "temperature": {"tC": 32.1, "tF": 89.8}})
    }

    fn notify(&self, id: usize, changed: Value) -> Outgoing {
        let topics = ShellyTopics::new(self.prefix.clone());
        let notify = json!({"src": self.device_id, "dst": format!("{}/events", self.prefix), "method": "NotifyStatus",
            "params": {"ts": 1_780_000_000.0, format!("switch:{id}"): changed}});
        (topics.events(), notify.to_string().into_bytes(), false)
    }

    fn whole_status(&mut self, id: usize) -> Outgoing {
        let topic = format!("{}/status/switch:{id}", self.prefix);
        (topic, self.status(id).to_string().into_bytes(), false)
    }

    /// What the device publishes when switch `id` changed output (and so power).
    fn changed(&mut self, id: usize) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.rpc_ntf {
            let p = self.power(id);
            let changed = json!({"id": id, "output": self.output(id), "source": "MQTT",
                                 "apower": p, "current": (p / 230.0 * 1000.0).round() / 1000.0});
            out.push(self.notify(id, changed));
        }
        if self.status_ntf {
            out.push(self.whole_status(id));
        }
        out
    }

    fn switch_index(&self, params: &Value) -> Option<usize> {
        params
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < self.switches.len())
    }

    fn call(
        &mut self,
        method: &str,
        params: &Value,
    ) -> (Result<Value, (i64, String)>, Option<usize>) {
        let bad_id = || Err((-105, "Argument 'id', value not found!".to_owned()));
        match method {
            "Switch.Set" | "Switch.Toggle" => {
                self.switch_requests += 1;
                let Some(id) = self.switch_index(params) else {
                    return (bad_id(), None);
                };
                let was_on = self.output(id);
                let on = if method == "Switch.Toggle" {
                    !was_on
                } else {
                    match params.get("on").and_then(Value::as_bool) {
                        Some(on) => on,
                        None => {
                            return (Err((-103, "Missing required argument 'on'!".into())), None);
                        }
                    }
                };
                if was_on == on {
                    self.redundant_switches += 1;
                }
                self.set_output(id, on);
                (Ok(json!({"was_on": was_on})), (was_on != on).then_some(id))
            }
            "Switch.GetStatus" => match self.switch_index(params) {
                Some(id) => (Ok(self.status(id)), None),
                None => (bad_id(), None),
            },
            "Switch.SetConfig" => {
                let Some(id) = self.switch_index(params) else {
                    return (bad_id(), None);
                };
                if let Some(s) = params.pointer("/config/initial_state") {
                    match s.as_str() {
                        Some(v @ ("off" | "on" | "restore_last" | "match_input")) => {
                            self.switches[id].initial_state = v.to_owned()
                        }
                        _ => {
                            return (
                                Err((-103, "Invalid argument 'initial_state'!".into())),
                                None,
                            );
                        }
                    }
                }
                (Ok(json!({"restart_required": false})), None)
            }
            "Switch.GetConfig" => match self.switch_index(params) {
                Some(id) => (
                    Ok(
                        json!({"id": id, "name": null, "initial_state": self.switches[id].initial_state,
                              "auto_on": false, "auto_off": false}),
                    ),
                    None,
                ),
                None => (bad_id(), None),
            },
            "Mqtt.GetConfig" => (
                Ok(
                    json!({"enable": true, "server": null, "client_id": self.device_id, "user": null,
                          "topic_prefix": self.prefix, "rpc_ntf": self.rpc_ntf, "status_ntf": self.status_ntf,
                          "use_client_cert": false, "enable_rpc": true, "enable_control": true}),
                ),
                None,
            ),
            "Shelly.GetDeviceInfo" => (
                Ok(
                    json!({"id": self.device_id, "mac": "A8032AB1C2D3", "model": self.model.app(),
                          "gen": 2, "fw_id": "20240625-122917/1.3.3-gbdfd9b3", "ver": "1.3.3",
                          "app": self.model.app(), "auth_en": false}),
                ),
                None,
            ),
            other => (Err((404, format!("No handler for {other}"))), None),
        }
    }
}

impl MqttBehaviour for ShellyPlug {
    fn will(&self) -> (String, Vec<u8>) {
        (format!("{}/online", self.prefix), b"false".to_vec())
    }

    fn subscriptions(&self) -> Vec<String> {
        vec![format!("{}/rpc", self.prefix)]
    }

    fn on_connect(&mut self) -> Vec<Outgoing> {
        vec![(format!("{}/online", self.prefix), b"true".to_vec(), true)]
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
        if let Some(id) = changed {
            out.extend(self.changed(id));
        }
        out
    }

    /// The minute's energy update: `aenergy` notified for every switch (and the whole status
    /// with `status_ntf`).
    fn telemetry(&mut self) -> Vec<Outgoing> {
        self.integrate();
        let mut out = Vec::new();
        for id in 0..self.switches.len() {
            if self.rpc_ntf {
                out.push(self.notify(id, json!({"id": id, "aenergy": self.aenergy(id)})));
            }
            if self.status_ntf {
                out.push(self.whole_status(id));
            }
        }
        out
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

    fn request(p: &mut ShellyPlug, req: &str) -> Vec<Outgoing> {
        let topic = format!("{}/rpc", p.prefix);
        p.on_message(&topic, req.as_bytes())
    }

    #[test]
    fn a_stock_device_notifies_a_switch_only_on_events_rpc() {
        let mut p = ShellyPlug::new("sp1", 60.0);
        assert!(p.rpc_ntf && !p.status_ntf);
        let out = request(&mut p, &ShellyTopics::new("sp1").switch_set(5, "ctl", true));
        assert!(p.output(0));
        assert_eq!(p.switch_requests, 1);
        assert_eq!(out[0].0, "ctl/rpc");
        let reply: Value = serde_json::from_slice(&out[0].1).unwrap();
        assert_eq!(reply["result"]["was_on"], false);
        assert_eq!(
            (reply["id"].as_u64(), reply["dst"].as_str()),
            (Some(5), Some("ctl"))
        );
        let topics: Vec<&str> = out.iter().map(|o| o.0.as_str()).collect();
        assert_eq!(topics, ["ctl/rpc", "sp1/events/rpc"]);
        let event: Value = serde_json::from_slice(&out[1].1).unwrap();
        assert_eq!(event["params"]["switch:0"]["output"], true);
        // The minute's update carries the energy, not the output.
        let minute = p.telemetry();
        assert_eq!(minute.len(), 1);
        let event: Value = serde_json::from_slice(&minute[0].1).unwrap();
        assert!(event["params"]["switch:0"]["aenergy"]["total"].is_number());
        assert!(event["params"]["switch:0"].get("output").is_none());
    }

    #[test]
    fn status_notifications_publish_the_whole_status_when_enabled() {
        let mut p = ShellyPlug::new("sp1", 60.0).status_ntf(true).rpc_ntf(false);
        let out = request(&mut p, &ShellyTopics::new("sp1").switch_set(5, "ctl", true));
        let topics: Vec<&str> = out.iter().map(|o| o.0.as_str()).collect();
        assert_eq!(topics, ["ctl/rpc", "sp1/status/switch:0"]);
    }

    #[test]
    fn a_pro_4pm_switches_each_channel_alone_and_refuses_a_fifth() {
        let mut p = ShellyPlug::new("shellypro4pm-x", 100.0).model(ShellyModel::Pro4Pm);
        let mut t = ShellyTopics::new("shellypro4pm-x");
        t.switch_id = 2;
        let out = request(&mut p, &t.switch_set(1, "ctl", true));
        assert_eq!(
            (0..4).map(|i| p.output(i)).collect::<Vec<_>>(),
            [false, false, true, false]
        );
        let event: Value = serde_json::from_slice(&out[1].1).unwrap();
        assert_eq!(event["params"]["switch:2"]["output"], true);
        t.switch_id = 4;
        let out = request(&mut p, &t.switch_set(2, "ctl", true));
        let reply: Value = serde_json::from_slice(&out[0].1).unwrap();
        assert_eq!(reply["error"]["code"], -105);
    }

    #[test]
    fn a_device_id_other_than_the_prefix_is_the_src_of_replies_and_events() {
        let mut p = ShellyPlug::new("site/kitchen", 60.0).device_id("shelly-a1");
        let req = ShellyTopics::new("site/kitchen").switch_set(5, "ctl", true);
        let out = request(&mut p, &req);
        let reply: Value = serde_json::from_slice(&out[0].1).unwrap();
        assert_eq!(
            (reply["src"].as_str(), reply["dst"].as_str()),
            (Some("shelly-a1"), Some("ctl"))
        );
        let (topic, event, _) = &out[1];
        assert_eq!(topic, "site/kitchen/events/rpc");
        let event: Value = serde_json::from_slice(event).unwrap();
        assert_eq!(event["src"], "shelly-a1");
    }

    #[test]
    fn an_unknown_initial_state_is_refused_with_an_rpc_error() {
        let mut p = ShellyPlug::new("sp1", 60.0);
        let req = json!({"id": 1, "src": "c", "method": "Switch.SetConfig", "params": {"id": 0, "config": {"initial_state": "maybe"}}});
        let out = request(&mut p, &req.to_string());
        let reply: Value = serde_json::from_slice(&out[0].1).unwrap();
        assert_eq!(reply["error"]["code"], -103);
        assert_eq!(p.initial_state(0), "restore_last");
    }
}
