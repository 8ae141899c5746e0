//! Finding plugs on an MQTT broker, sans IO: a state machine fed with messages and the time,
//! answering with subscriptions and publications, and the parsers of what stock firmware sends.
//!
//! - **Tasmota**: every device publishes a retained last will `Online`/`Offline` on
//!   `tele/<topic>/LWT` (with a custom FullTopic, `tele` and the topic sit elsewhere in the
//!   path, so any topic ending `/LWT` is looked at). `Status 0` makes stock firmware publish
//!   `stat/<topic>/STATUS` (`Status`: DeviceName, FriendlyName per relay, Topic),
//!   `STATUS1`..`STATUS11` (`StatusLOG.TelePeriod`, `StatusSNS` with the `ENERGY` sensor,
//!   `StatusSTS` with `POWER` for one relay or `POWER1`..`POWERn`), one message per section
//!   (Tasmota docs, "JSON Status Responses", https://tasmota.github.io/docs/JSON-Status-Responses/;
//!   the same sections in one object are accepted too). A device that does not answer
//!   `Status 0` is asked `Status 8`, `Status 11` and `Power` (no argument: a query, "every
//!   command used without a parameter returns the current setting", Tasmota docs, Commands).
//! - **Shelly Gen2+**: a retained `true` on `<prefix>/online`; JSON-RPC requests to
//!   `<prefix>/rpc` carry our `src`, and replies come on `<src>/rpc` with the request's `id`
//!   (Shelly API docs, "RPC over MQTT"). `Shelly.GetDeviceInfo` gives `id`, `model`, `gen`,
//!   `app`, `name`; `Shelly.GetStatus` has one `switch:N` object per relay (`output`, `apower`,
//!   `aenergy.total`); `Switch.GetConfig` gives each switch's `name`
//!   (https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Shelly/). A device that
//!   refuses `Shelly.GetStatus` is asked `Switch.GetStatus` for ids 0, 1, ... until it refuses.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::shelly::{parse_online, parse_rpc_reply};
use crate::tasmota::{parse_lwt, parse_power_word};

use super::slug;

/// Most plug channels the site file addresses on one Tasmota device (`relay` 1 to 8).
pub const MAX_RELAYS: u8 = 8;
/// Most switch components asked for on one Shelly.
pub const MAX_SWITCHES: u8 = 8;
/// Deepest topic (levels before `LWT` or `online`) the scan subscribes to.
pub const MAX_DEPTH: usize = 6;
/// Errors kept per device.
const MAX_ERRORS: usize = 5;

/// Something to do on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Subscribe to a filter.
    Subscribe(String),
    /// Publish (not retained).
    Publish {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
    },
}

fn publish(topic: String, payload: impl Into<Vec<u8>>) -> Action {
    Action::Publish {
        topic,
        payload: payload.into(),
    }
}

fn push_error(errors: &mut Vec<String>, e: String) {
    if errors.len() < MAX_ERRORS && !errors.contains(&e) {
        errors.push(e);
    }
}

/// Where a Tasmota device's topics are, learnt from its last-will topic: the levels of its
/// FullTopic with `%prefix%` at `prefix_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasmotaLayout {
    levels: Vec<String>,
    prefix_at: usize,
}

impl TasmotaLayout {
    /// From a topic ending `/LWT` with a `tele` level; `None` otherwise.
    pub fn from_lwt(topic: &str) -> Option<Self> {
        let base = topic.strip_suffix("/LWT")?;
        let levels: Vec<String> = base.split('/').map(str::to_owned).collect();
        let prefix_at = levels.iter().position(|l| l == "tele")?;
        if levels.iter().any(|l| l.is_empty() || l == "+" || l == "#") {
            return None;
        }
        Some(Self { levels, prefix_at })
    }

    /// The topic for `prefix` (`cmnd`, `stat`, `tele`) and the last level `last`.
    pub fn topic(&self, prefix: &str, last: &str) -> String {
        let mut levels = self.levels.clone();
        levels[self.prefix_at] = prefix.to_owned();
        format!("{}/{last}", levels.join("/"))
    }

    /// The level of the path that is `%topic%`: the one equal to `known` (the device's own
    /// `Topic`), else the level after `%prefix%` when the path is the default two levels, else
    /// the last level that is not `%prefix%`. The flag says whether it was guessed.
    pub fn topic_level(&self, known: Option<&str>) -> (Option<usize>, bool) {
        if let Some(k) = known {
            return (
                self.levels
                    .iter()
                    .enumerate()
                    .position(|(i, l)| i != self.prefix_at && l == k),
                false,
            );
        }
        let guess = (0..self.levels.len()).rev().find(|i| *i != self.prefix_at);
        (guess, self.levels.len() != 2 || self.prefix_at != 0)
    }

    /// The FullTopic pattern, with `%topic%` at `topic_at`.
    pub fn full_topic(&self, topic_at: Option<usize>) -> String {
        let mut levels = self.levels.clone();
        levels[self.prefix_at] = "%prefix%".into();
        if let Some(i) = topic_at.filter(|i| *i < levels.len()) {
            levels[i] = "%topic%".into();
        }
        format!("{}/", levels.join("/"))
    }
}

/// The relay index of a `POWER` key: 0 for `POWER`, n for `POWERn`.
pub fn power_index(key: &str) -> Option<u8> {
    let rest = key.strip_prefix("POWER")?;
    if rest.is_empty() {
        return Some(0);
    }
    if rest.len() > 2 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse::<u8>().ok().filter(|n| (1..=32).contains(n))
}

fn power_state(v: &Value) -> Option<bool> {
    match v {
        Value::String(s) => parse_power_word(s.as_bytes()),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        _ => None,
    }
}

fn finite(v: &Value) -> Option<f64> {
    v.as_f64().filter(|f| f.is_finite())
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// A Tasmota device found on the broker, and what it said about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TasmotaFinding {
    /// The last-will topic it was found on.
    pub lwt_topic: String,
    /// `Online` (or `Offline`) on it.
    pub online: bool,
    /// Its Topic (`Status.Topic`, or guessed from the path).
    pub topic: String,
    /// Whether `topic` was guessed from the path rather than told by the device.
    pub topic_guessed: bool,
    /// Its FullTopic pattern.
    pub full_topic: String,
    /// `Status.DeviceName`.
    pub device_name: Option<String>,
    /// `Status.FriendlyName`: one per relay.
    pub friendly_names: Vec<String>,
    /// `StatusFWR.Version`.
    pub version: Option<String>,
    /// Relays seen (0: `POWER` without index) and their state when readable.
    pub relays: BTreeMap<u8, Option<bool>>,
    /// `ENERGY.Power`: one value, or one per channel.
    pub power_watts: Vec<f64>,
    /// Whether the device reports an `ENERGY` sensor (`None`: never said).
    pub energy_sensor: Option<bool>,
    /// `StatusLOG.TelePeriod`.
    pub tele_period_secs: Option<u64>,
    /// Whether it answered a `Status` command at all.
    pub answered: bool,
    /// What was not understood or not answered.
    pub errors: Vec<String>,
    #[serde(skip)]
    layout: Option<TasmotaLayout>,
    #[serde(skip)]
    has_status: bool,
    #[serde(skip)]
    has_sns: bool,
    #[serde(skip)]
    asked_at: Option<Duration>,
    #[serde(skip)]
    fallback_sent: bool,
}

/// One draft channel of a Tasmota device.
#[derive(Debug, Clone, PartialEq)]
pub struct TasmotaChannel {
    /// Relay number for the site file (1..=8).
    pub relay: u8,
    /// Its last power reading, when the device measures per channel.
    pub watts: Option<f64>,
    /// Notes.
    pub comments: Vec<String>,
}

/// Tasmota's default friendly and device names say nothing about the load.
fn informative(name: &str) -> bool {
    let n = name.trim();
    !(n.is_empty()
        || n.eq_ignore_ascii_case("tasmota")
        || n.strip_prefix("Tasmota")
            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit())))
}

impl TasmotaFinding {
    fn new(lwt_topic: &str, layout: Option<TasmotaLayout>, online: bool) -> Self {
        let mut f = Self {
            lwt_topic: lwt_topic.to_owned(),
            online,
            topic: String::new(),
            topic_guessed: true,
            full_topic: String::new(),
            device_name: None,
            friendly_names: Vec::new(),
            version: None,
            relays: BTreeMap::new(),
            power_watts: Vec::new(),
            energy_sensor: None,
            tele_period_secs: None,
            answered: false,
            errors: Vec::new(),
            layout,
            has_status: false,
            has_sns: false,
            asked_at: None,
            fallback_sent: false,
        };
        f.set_topic(None);
        f
    }

    fn set_topic(&mut self, known: Option<&str>) {
        let Some(layout) = &self.layout else {
            return;
        };
        let (at, guessed) = layout.topic_level(known);
        self.full_topic = layout.full_topic(at);
        self.topic = match (known, at) {
            (Some(k), _) => k.to_owned(),
            (None, Some(i)) => layout.levels[i].clone(),
            (None, None) => String::new(),
        };
        self.topic_guessed = known.is_none() && guessed;
    }

    /// The FullTopic when it is not the default.
    pub fn custom_full_topic(&self) -> Option<String> {
        (self.full_topic != "%prefix%/%topic%/").then(|| self.full_topic.clone())
    }

    fn power_keys(&mut self, obj: &serde_json::Map<String, Value>) -> bool {
        let mut any = false;
        for (k, v) in obj {
            if let Some(i) = power_index(k) {
                self.relays.insert(i, power_state(v));
                any = true;
            }
        }
        any
    }

    fn energy(&mut self, sns: &Value) {
        self.has_sns = true;
        match sns.get("ENERGY") {
            Some(e) => {
                self.energy_sensor = Some(true);
                match e.get("Power") {
                    Some(Value::Array(items)) => {
                        let v: Option<Vec<f64>> = items.iter().map(finite).collect();
                        if let Some(v) = v {
                            self.power_watts = v;
                        }
                    }
                    Some(p) => {
                        if let Some(p) = finite(p) {
                            self.power_watts = vec![p];
                        }
                    }
                    None => {}
                }
            }
            None => {
                if self.energy_sensor.is_none() {
                    self.energy_sensor = Some(false);
                }
            }
        }
    }

    fn status_sections(&mut self, v: &serde_json::Map<String, Value>) {
        if let Some(s) = v.get("Status") {
            self.has_status = true;
            if let Some(n) = s.get("DeviceName").and_then(Value::as_str) {
                self.device_name = Some(n.to_owned());
            }
            if let Some(f) = s.get("FriendlyName") {
                self.friendly_names = strings(f);
            }
            if let Some(t) = s.get("Topic").and_then(Value::as_str).map(str::to_owned) {
                self.set_topic(Some(&t));
            }
        }
        if let Some(t) = v
            .get("StatusLOG")
            .and_then(|l| l.get("TelePeriod"))
            .and_then(Value::as_u64)
        {
            self.tele_period_secs = Some(t);
        }
        if let Some(ver) = v
            .get("StatusFWR")
            .and_then(|f| f.get("Version"))
            .and_then(Value::as_str)
        {
            self.version = Some(ver.to_owned());
        }
        if let Some(sns) = v.get("StatusSNS") {
            self.energy(sns);
        }
        if let Some(Value::Object(sts)) = v.get("StatusSTS") {
            self.power_keys(sts);
        }
    }

    /// Takes in one message under the device's `stat` or `tele` prefix (`last`: the topic's
    /// last level). Anything not understood is counted as an error, never a panic.
    pub fn absorb(&mut self, prefix: &str, last: &str, payload: &[u8]) {
        let upper = last.to_ascii_uppercase();
        let object = || -> Result<serde_json::Map<String, Value>, String> {
            match serde_json::from_slice::<Value>(payload) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err(format!("{prefix}/{last}: not a JSON object")),
                Err(e) => Err(format!("{prefix}/{last}: not JSON ({e})")),
            }
        };
        match (prefix, upper.as_str()) {
            ("stat", "RESULT") => match object() {
                Ok(m) => {
                    if m.get("Command").and_then(Value::as_str) == Some("Unknown") {
                        return;
                    }
                    self.power_keys(&m);
                    self.status_sections(&m);
                }
                Err(e) => push_error(&mut self.errors, e),
            },
            ("stat", s) if s.starts_with("STATUS") => match object() {
                Ok(m) => {
                    self.answered = true;
                    self.status_sections(&m);
                }
                Err(e) => push_error(&mut self.errors, e),
            },
            ("stat", s) if power_index(s).is_some() => {
                if let Some(i) = power_index(s) {
                    let state = parse_power_word(payload);
                    self.relays.insert(i, state);
                }
            }
            ("tele", "STATE") => match object() {
                Ok(m) => {
                    self.power_keys(&m);
                }
                Err(e) => push_error(&mut self.errors, e),
            },
            ("tele", "SENSOR") => match object() {
                Ok(m) => {
                    if m.contains_key("ENERGY") {
                        self.energy(&Value::Object(m));
                    }
                }
                Err(e) => push_error(&mut self.errors, e),
            },
            ("tele", "LWT") => {
                if let Some(online) = parse_lwt(payload) {
                    self.online = online;
                }
            }
            _ => {}
        }
    }

    /// Whether everything the draft needs has come (or the fallback has been answered).
    pub fn complete(&self) -> bool {
        // A layout not understood is asked nothing, so nothing more will come: done.
        !self.online
            || self.layout.is_none()
            || (!self.relays.is_empty() && self.has_sns && self.has_status)
            || (self.fallback_sent && !self.relays.is_empty() && self.has_sns)
    }

    /// The channels for the draft: one per relay seen (a `POWER` without index is relay 1),
    /// else one per friendly name, else one.
    pub fn channels(&self) -> Vec<TasmotaChannel> {
        let mut relays: Vec<u8> = self
            .relays
            .keys()
            .map(|k| if *k == 0 { 1 } else { *k })
            .collect();
        relays.dedup();
        let mut note = Vec::new();
        if relays.is_empty() {
            let n = self.friendly_names.len().clamp(1, usize::from(MAX_RELAYS));
            relays = (1..=n as u8).collect();
            note.push(if n > 1 {
                format!("no relay state seen: {n} relays assumed from the {n} friendly names")
            } else {
                "no relay state seen: one relay assumed".to_owned()
            });
        }
        if relays.iter().any(|r| *r > MAX_RELAYS) {
            note.push(format!(
                "relays above {MAX_RELAYS} are left out (the site file addresses 1 to {MAX_RELAYS})"
            ));
            relays.retain(|r| *r <= MAX_RELAYS);
        }
        let per_channel = self.power_watts.len() == relays.len();
        relays
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut comments = note.clone();
                let state = self
                    .relays
                    .get(r)
                    .or_else(|| (*r == 1).then(|| self.relays.get(&0)).flatten())
                    .copied()
                    .flatten();
                if let Some(on) = state {
                    comments.push(format!("relay {r} was {}", if on { "ON" } else { "OFF" }));
                }
                let watts = if per_channel {
                    self.power_watts.get(i).copied()
                } else {
                    if !self.power_watts.is_empty() {
                        comments.push(format!(
                            "one energy sensor for {} relays ({:.0} W in all): nominal power not read per relay",
                            relays.len(),
                            self.power_watts.iter().sum::<f64>()
                        ));
                    }
                    None
                };
                TasmotaChannel {
                    relay: *r,
                    watts,
                    comments,
                }
            })
            .collect()
    }

    /// Id and name of the load on `relay`: the relay's friendly name when it says something,
    /// else the device name, else the topic (with the relay number on a multi-relay device).
    pub fn load_name(&self, relay: u8) -> (String, String) {
        let multi = self.channels().len() > 1;
        let friendly = self
            .friendly_names
            .get(usize::from(relay.saturating_sub(1)))
            .filter(|n| informative(n));
        if let Some(f) = friendly {
            return (slug(f, "plug"), f.trim().to_owned());
        }
        let base = self
            .device_name
            .as_deref()
            .filter(|n| informative(n))
            .unwrap_or(&self.topic);
        if multi {
            (
                format!("{}_{relay}", slug(base, "plug")),
                format!("{} relay {relay}", base.trim()),
            )
        } else {
            (slug(base, "plug"), base.trim().to_owned())
        }
    }

    /// What was found, as comment lines.
    pub fn summary(&self) -> Vec<String> {
        let mut out = vec![format!(
            "found: Tasmota, last will on {}{}",
            self.lwt_topic,
            self.version
                .as_deref()
                .map(|v| format!(", firmware {v}"))
                .unwrap_or_default()
        )];
        if self.topic_guessed {
            out.push(format!(
                "CHECK topic: \"{}\" is guessed from the path (the device did not answer Status 0)",
                self.topic
            ));
        }
        match self.relays.keys().next() {
            Some(0) => out.push("answers POWER without index: one relay".into()),
            Some(_) if self.relays.len() == 1 => out.push(
                "answers POWER1 on one relay (SetOption26 on, or a multi-channel device)".into(),
            ),
            _ => {}
        }
        match self.energy_sensor {
            Some(true) => {}
            Some(false) => {
                out.push("no energy sensor: the plug switches but does not measure".into())
            }
            None => out.push("energy sensor not reported".into()),
        }
        match self.tele_period_secs {
            Some(t) => out.push(format!("TelePeriod {t} s: its readings come that often")),
            None => out.push("TelePeriod not reported".into()),
        }
        for e in &self.errors {
            out.push(format!("not understood: {e}"));
        }
        out
    }
}

/// A switch component of a Shelly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShellySwitch {
    /// Component id (`switch:N`).
    pub id: u8,
    /// `Switch.GetConfig` name.
    pub name: Option<String>,
    /// Relay state.
    pub output: Option<bool>,
    /// `apower`.
    pub power_watts: Option<f64>,
    /// `aenergy.total`.
    pub energy_wh: Option<f64>,
}

/// Parses a switch status object (`Switch.GetStatus` result, or `switch:N` of `Shelly.GetStatus`).
pub fn parse_switch(id: u8, v: &Value) -> ShellySwitch {
    ShellySwitch {
        id,
        name: None,
        output: v.get("output").and_then(Value::as_bool),
        power_watts: v.get("apower").and_then(finite),
        energy_wh: v.pointer("/aenergy/total").and_then(finite),
    }
}

/// The `switch:N` components of a `Shelly.GetStatus` result, by id.
pub fn parse_switches(result: &Value) -> Vec<ShellySwitch> {
    let mut out: Vec<ShellySwitch> = result
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("switch:")?.parse::<u8>().ok()?;
            v.is_object().then(|| parse_switch(id, v))
        })
        .collect();
    out.sort_by_key(|s| s.id);
    out
}

/// What `Shelly.GetDeviceInfo` says.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ShellyInfo {
    /// Device id, e.g. `shellyplusplugs-a8032ab12345`.
    pub id: Option<String>,
    /// Model code, e.g. `SNPL-00112EU`.
    pub model: Option<String>,
    /// Generation (2, 3, ...).
    pub generation: Option<u64>,
    /// Application, e.g. `PlugS`.
    pub app: Option<String>,
    /// The name the owner gave it.
    pub name: Option<String>,
    /// Firmware version.
    pub version: Option<String>,
}

/// Parses a `Shelly.GetDeviceInfo` result.
pub fn parse_device_info(result: &Value) -> ShellyInfo {
    let s = |k: &str| result.get(k).and_then(Value::as_str).map(str::to_owned);
    ShellyInfo {
        id: s("id"),
        model: s("model"),
        generation: result.get("gen").and_then(Value::as_u64),
        app: s("app"),
        name: s("name").filter(|n| !n.trim().is_empty()),
        version: s("ver"),
    }
}

/// A Shelly Gen2+ found on the broker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShellyFinding {
    /// Topic prefix (`<prefix>/online`).
    pub prefix: String,
    /// `true` on the online topic.
    pub online: bool,
    /// `Shelly.GetDeviceInfo`, if it answered.
    pub info: Option<ShellyInfo>,
    /// Switch components.
    pub switches: Vec<ShellySwitch>,
    /// Whether it answered a status request at all (if not, its switches are unknown).
    pub status_answered: bool,
    /// What was refused, not understood or not answered.
    pub errors: Vec<String>,
}

impl ShellyFinding {
    /// Id and name of the load on `sw`: the switch's name, else the device's name, else its id
    /// or prefix (with the switch number on a device with several).
    pub fn load_name(&self, sw: &ShellySwitch) -> (String, String) {
        if let Some(n) = sw.name.as_deref().filter(|n| !n.trim().is_empty()) {
            return (slug(n, "plug"), n.trim().to_owned());
        }
        let info = self.info.clone().unwrap_or_default();
        let base = info
            .name
            .clone()
            .or(info.id.clone())
            .unwrap_or_else(|| self.prefix.clone());
        if self.switches.len() > 1 {
            (
                format!("{}_{}", slug(&base, "plug"), sw.id),
                format!("{} switch {}", base.trim(), sw.id),
            )
        } else {
            (slug(&base, "plug"), base.trim().to_owned())
        }
    }

    /// What was found, as comment lines.
    pub fn summary(&self, sw: &ShellySwitch) -> Vec<String> {
        let mut out = Vec::new();
        match &self.info {
            Some(i) => out.push(format!(
                "found: Shelly {}{}{}, id {}, prefix {}, switch:{}",
                i.model.as_deref().unwrap_or("(model not given)"),
                i.app
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default(),
                i.generation
                    .map(|g| format!(" gen {g}"))
                    .unwrap_or_default(),
                i.id.as_deref().unwrap_or("not given"),
                self.prefix,
                sw.id
            )),
            None => out.push(format!(
                "found: Shelly at prefix {}, switch:{} (it did not answer Shelly.GetDeviceInfo)",
                self.prefix, sw.id
            )),
        }
        if let Some(id) = self.info.as_ref().and_then(|i| i.id.as_deref())
            && id != self.prefix
        {
            out.push(format!(
                "its topic prefix differs from its device id {id}: device_id below is the prefix"
            ));
        }
        if let Some(on) = sw.output {
            out.push(format!("switch was {}", if on { "on" } else { "off" }));
        }
        if sw.power_watts.is_none() && self.status_answered {
            out.push("no apower in its status: it switches but does not measure".into());
        }
        for e in &self.errors {
            out.push(format!("not answered: {e}"));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    DeviceInfo,
    GetStatus,
    SwitchStatus(u8),
    SwitchConfig(u8),
}

impl Call {
    fn method(self) -> &'static str {
        match self {
            Call::DeviceInfo => "Shelly.GetDeviceInfo",
            Call::GetStatus => "Shelly.GetStatus",
            Call::SwitchStatus(_) => "Switch.GetStatus",
            Call::SwitchConfig(_) => "Switch.GetConfig",
        }
    }
}

/// The plug scan: feed it every message and the time since the start; do what it answers.
#[derive(Debug)]
pub struct PlugScan {
    src: String,
    fallback_after: Duration,
    tasmota: Vec<TasmotaFinding>,
    shelly: Vec<ShellyFinding>,
    next_id: u64,
    pending: HashMap<u64, (usize, Call)>,
}

impl PlugScan {
    /// A scan whose RPC replies come on `<src>/rpc`; a Tasmota that has not answered `Status 0`
    /// after `fallback_after` is asked the single sections.
    pub fn new(src: impl Into<String>, fallback_after: Duration) -> Self {
        Self {
            src: src.into(),
            fallback_after,
            tasmota: Vec::new(),
            shelly: Vec::new(),
            next_id: 1,
            pending: HashMap::new(),
        }
    }

    /// The first subscriptions: last wills and online topics at every depth up to
    /// [`MAX_DEPTH`], and our RPC reply topic.
    pub fn start(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for depth in 1..=MAX_DEPTH {
            let levels = vec!["+"; depth].join("/");
            out.push(Action::Subscribe(format!("{levels}/LWT")));
            out.push(Action::Subscribe(format!("{levels}/online")));
        }
        out.push(Action::Subscribe(format!("{}/rpc", self.src)));
        out
    }

    fn rpc(&mut self, index: usize, call: Call) -> Action {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, (index, call));
        let params = match call {
            Call::DeviceInfo | Call::GetStatus => json!({}),
            Call::SwitchStatus(n) | Call::SwitchConfig(n) => json!({ "id": n }),
        };
        let body = json!({"id": id, "src": self.src, "method": call.method(), "params": params});
        publish(
            format!("{}/rpc", self.shelly[index].prefix),
            body.to_string(),
        )
    }

    /// Handles one message.
    pub fn on_message(&mut self, topic: &str, payload: &[u8], now: Duration) -> Vec<Action> {
        if topic == format!("{}/rpc", self.src) {
            return self.on_reply(payload);
        }
        if topic.ends_with("/LWT")
            && let Some(online) = parse_lwt(payload)
            && !self.tasmota.iter().any(|t| t.lwt_topic == topic)
        {
            return self.on_tasmota(topic, online, now);
        }
        if let Some(prefix) = topic.strip_suffix("/online")
            && let Some(online) = parse_online(payload)
        {
            if let Some(s) = self.shelly.iter_mut().find(|s| s.prefix == prefix) {
                s.online = online;
                return Vec::new();
            }
            return self.on_shelly(prefix, online);
        }
        for t in &mut self.tasmota {
            let Some(layout) = &t.layout else { continue };
            for prefix in ["stat", "tele"] {
                if let Some(last) = topic
                    .strip_prefix(&layout.topic(prefix, ""))
                    .filter(|l| !l.contains('/'))
                {
                    t.absorb(prefix, last, payload);
                    return Vec::new();
                }
            }
        }
        Vec::new()
    }

    fn on_tasmota(&mut self, lwt_topic: &str, online: bool, now: Duration) -> Vec<Action> {
        let layout = TasmotaLayout::from_lwt(lwt_topic);
        let mut t = TasmotaFinding::new(lwt_topic, layout.clone(), online);
        let mut out = Vec::new();
        match &layout {
            None => t.errors.push(
                "its last-will topic has no `tele` level (custom prefixes are not supported)"
                    .into(),
            ),
            Some(l) if online => {
                out.push(Action::Subscribe(l.topic("stat", "+")));
                out.push(Action::Subscribe(l.topic("tele", "STATE")));
                out.push(Action::Subscribe(l.topic("tele", "SENSOR")));
                out.push(publish(l.topic("cmnd", "Status"), "0"));
                t.asked_at = Some(now);
            }
            Some(_) => {}
        }
        self.tasmota.push(t);
        out
    }

    fn on_shelly(&mut self, prefix: &str, online: bool) -> Vec<Action> {
        if prefix.is_empty() || prefix.contains(['+', '#']) {
            return Vec::new();
        }
        self.shelly.push(ShellyFinding {
            prefix: prefix.to_owned(),
            online,
            info: None,
            switches: Vec::new(),
            status_answered: false,
            errors: Vec::new(),
        });
        if !online {
            return Vec::new();
        }
        let i = self.shelly.len() - 1;
        vec![self.rpc(i, Call::DeviceInfo), self.rpc(i, Call::GetStatus)]
    }

    fn on_reply(&mut self, payload: &[u8]) -> Vec<Action> {
        let Ok(reply) = parse_rpc_reply(payload) else {
            tracing::debug!("scan: an RPC reply not understood");
            return Vec::new();
        };
        let Some((i, call)) = self.pending.remove(&reply.id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if matches!(call, Call::GetStatus | Call::SwitchStatus(_)) {
            self.shelly[i].status_answered = true;
        }
        match (call, reply.outcome) {
            (Call::DeviceInfo, Ok(v)) => self.shelly[i].info = Some(parse_device_info(&v)),
            (Call::GetStatus, Ok(v)) => {
                let switches = parse_switches(&v);
                for s in &switches {
                    out.push(self.rpc(i, Call::SwitchConfig(s.id)));
                }
                self.shelly[i].switches = switches;
            }
            // Refused: ask the switches one by one.
            (Call::GetStatus, Err(_)) => out.push(self.rpc(i, Call::SwitchStatus(0))),
            (Call::SwitchStatus(n), Ok(v)) => {
                if !self.shelly[i].switches.iter().any(|s| s.id == n) {
                    self.shelly[i].switches.push(parse_switch(n, &v));
                }
                out.push(self.rpc(i, Call::SwitchConfig(n)));
                if n + 1 < MAX_SWITCHES {
                    out.push(self.rpc(i, Call::SwitchStatus(n + 1)));
                }
            }
            // The first id refused ends the list.
            (Call::SwitchStatus(_), Err(_)) => {}
            (Call::SwitchConfig(n), Ok(v)) => {
                let name = v
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .filter(|n| !n.trim().is_empty());
                if let Some(s) = self.shelly[i].switches.iter_mut().find(|s| s.id == n) {
                    s.name = name;
                }
            }
            (c, Err((code, message))) => push_error(
                &mut self.shelly[i].errors,
                format!("{} refused: {code} {message}", c.method()),
            ),
        }
        out
    }

    /// Handles the passing of time: the fallback questions to Tasmota devices that have not
    /// answered `Status 0`.
    pub fn on_tick(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        for t in &mut self.tasmota {
            let Some(layout) = &t.layout else { continue };
            let due = t
                .asked_at
                .is_some_and(|at| now.saturating_sub(at) >= self.fallback_after);
            if due && !t.fallback_sent && !t.complete() {
                t.fallback_sent = true;
                out.push(publish(layout.topic("cmnd", "Status"), "8"));
                out.push(publish(layout.topic("cmnd", "Status"), "11"));
                out.push(publish(layout.topic("cmnd", "Power"), ""));
            }
        }
        out
    }

    /// Whether every online device has said what the draft needs.
    pub fn complete(&self) -> bool {
        self.pending.is_empty() && self.tasmota.iter().all(TasmotaFinding::complete)
    }

    /// The devices found, with what was never answered noted on each.
    pub fn finish(mut self) -> (Vec<TasmotaFinding>, Vec<ShellyFinding>) {
        for (i, call) in self.pending.values().copied() {
            match call {
                // An id past the last switch may just not be answered.
                Call::SwitchStatus(n) if n > 0 => {}
                c => push_error(
                    &mut self.shelly[i].errors,
                    format!("no reply to {} within the scan", c.method()),
                ),
            }
        }
        for t in &mut self.tasmota {
            if t.online && t.layout.is_some() && !t.answered && t.relays.is_empty() {
                push_error(
                    &mut t.errors,
                    "no reply to Status 0, Status 8 or Power within the scan".into(),
                );
            }
        }
        self.tasmota.sort_by(|a, b| a.lwt_topic.cmp(&b.lwt_topic));
        self.shelly.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        (self.tasmota, self.shelly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn published(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish { topic, payload } => {
                    Some((topic.clone(), String::from_utf8_lossy(payload).into_owned()))
                }
                Action::Subscribe(_) => None,
            })
            .collect()
    }

    #[test]
    fn last_will_topics_give_the_layout_with_default_and_custom_full_topics() {
        let l = TasmotaLayout::from_lwt("tele/tasmota_1A2B3C/LWT").unwrap();
        assert_eq!(l.topic("cmnd", "Status"), "cmnd/tasmota_1A2B3C/Status");
        assert_eq!(l.topic_level(None), (Some(1), false));
        assert_eq!(l.full_topic(Some(1)), "%prefix%/%topic%/");
        let l = TasmotaLayout::from_lwt("site/pump/tele/LWT").unwrap();
        assert_eq!(l.topic("stat", "+"), "site/pump/stat/+");
        assert_eq!(l.topic_level(Some("pump")), (Some(1), false));
        assert_eq!(l.full_topic(Some(1)), "site/%topic%/%prefix%/");
        // Tasmota's own "tasmota/ikea-1/stat/STATUS" layout (FullTopic tasmota/%topic%/%prefix%/).
        let l = TasmotaLayout::from_lwt("tasmota/ikea-1/tele/LWT").unwrap();
        assert_eq!(l.topic_level(None), (Some(1), true));
        assert!(TasmotaLayout::from_lwt("home/pump/LWT").is_none());
        assert!(TasmotaLayout::from_lwt("tele/x/online").is_none());
    }

    #[test]
    fn power_keys_are_power_without_index_or_power_one_to_32() {
        assert_eq!(power_index("POWER"), Some(0));
        assert_eq!(power_index("POWER3"), Some(3));
        assert_eq!(power_index("POWER0"), None);
        assert_eq!(power_index("POWER33"), None);
        assert_eq!(power_index("POWERONSTATE"), None);
        assert_eq!(power_index("POWER+1"), None);
    }

    /// Stock replies to `Status 0` from a single-relay plug with energy monitoring (the
    /// sections and fields of Tasmota's "JSON Status Responses"; values from a Tasmota 12.5
    /// log in arendst/Tasmota#18782).
    fn stock_status0(t: &mut TasmotaFinding) {
        t.absorb(
            "stat",
            "STATUS",
            br#"{"Status":{"Module":1,"DeviceName":"Clinic fridge","FriendlyName":["Clinic fridge"],"Topic":"clinic-fridge","ButtonTopic":"0","Power":1,"PowerOnState":3,"LedState":1,"LedMask":"FFFF","SaveData":1,"SaveState":1,"SwitchTopic":"0","SwitchMode":[0,0,0,0,0,0,0,0],"ButtonRetain":0,"SwitchRetain":0,"SensorRetain":0,"PowerRetain":0,"InfoRetain":0,"StateRetain":0}}"#,
        );
        t.absorb("stat", "STATUS2", br#"{"StatusFWR":{"Version":"12.5.0(tasmota)","BuildDateTime":"2023-04-17T08:03:57","Boot":7,"Core":"2_7_4_9","SDK":"2.2.2-dev(38a443e)","CpuFrequency":80,"Hardware":"ESP8285N08","CR":"464/699"}}"#);
        t.absorb("stat", "STATUS3", br#"{"StatusLOG":{"SerialLog":1,"WebLog":2,"MqttLog":0,"SysLog":0,"LogHost":"","LogPort":514,"SSId":["village",""],"TelePeriod":300,"Resolution":"558180C0","SetOption":["00008009","2805C80001000600003C5A0A192800000000","00000080","00006000","00004000","00000000"]}}"#);
        t.absorb("stat", "STATUS10", br#"{"StatusSNS":{"Time":"2026-06-01T12:00:00","ENERGY":{"TotalStartTime":"2026-01-01T00:00:00","Total":12.345,"Yesterday":0.512,"Today":0.210,"Power":118,"ApparentPower":124,"ReactivePower":38,"Factor":0.95,"Voltage":231,"Current":0.537}}}"#);
        t.absorb("stat", "STATUS11", br#"{"StatusSTS":{"Time":"2026-06-01T12:00:00","Uptime":"0T00:22:45","UptimeSec":1365,"Heap":25,"SleepMode":"Dynamic","Sleep":50,"LoadAvg":19,"MqttCount":1,"POWER":"ON","Wifi":{"AP":1,"SSId":"village","RSSI":80,"Signal":-60,"LinkCount":1,"Downtime":"0T00:00:03"}}}"#);
    }

    #[test]
    fn a_stock_single_relay_plug_is_one_channel_named_after_its_friendly_name() {
        let mut scan = PlugScan::new("scan-1", 600 * MS);
        let out = scan.on_message("tele/clinic-fridge/LWT", b"Online", Duration::ZERO);
        assert!(out.contains(&Action::Subscribe("stat/clinic-fridge/+".into())));
        assert_eq!(
            published(&out),
            vec![("cmnd/clinic-fridge/Status".into(), "0".into())]
        );
        assert!(!scan.complete());
        let t = &mut scan.tasmota[0];
        stock_status0(t);
        assert!(scan.complete());
        // A complete device is not asked again.
        assert!(scan.on_tick(Duration::from_secs(1)).is_empty());
        let (tasmota, _) = scan.finish();
        let t = &tasmota[0];
        assert_eq!(
            (t.topic.as_str(), t.topic_guessed),
            ("clinic-fridge", false)
        );
        assert_eq!(t.custom_full_topic(), None);
        assert_eq!(t.tele_period_secs, Some(300));
        let ch = t.channels();
        assert_eq!(ch.len(), 1);
        assert_eq!((ch[0].relay, ch[0].watts), (1, Some(118.0)));
        assert_eq!(
            t.load_name(1),
            ("clinic_fridge".into(), "Clinic fridge".into())
        );
        assert!(t.summary().iter().any(|c| c.contains("without index")));
    }

    #[test]
    fn a_multi_relay_device_gives_one_channel_per_power_key() {
        let mut t = TasmotaFinding::new(
            "tele/pow4/LWT",
            TasmotaLayout::from_lwt("tele/pow4/LWT"),
            true,
        );
        t.absorb("stat", "STATUS", br#"{"Status":{"Module":23,"DeviceName":"Tasmota","FriendlyName":["Pump","Tasmota2","Tasmota3","Tasmota4"],"Topic":"pow4"}}"#);
        t.absorb(
            "stat",
            "STATUS11",
            br#"{"StatusSTS":{"POWER1":"ON","POWER2":"OFF","POWER3":"OFF","POWER4":"ON"}}"#,
        );
        t.absorb(
            "stat",
            "STATUS10",
            br#"{"StatusSNS":{"Time":"2026-06-01T12:00:00"}}"#,
        );
        let ch = t.channels();
        assert_eq!(ch.iter().map(|c| c.relay).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(t.load_name(1), ("pump".into(), "Pump".into()));
        assert_eq!(t.load_name(2), ("pow4_2".into(), "pow4 relay 2".into()));
        assert_eq!(t.energy_sensor, Some(false));
        assert!(ch.iter().all(|c| c.watts.is_none()));
    }

    #[test]
    fn a_device_that_does_not_know_status_0_is_asked_the_sections_and_power() {
        let mut scan = PlugScan::new("scan-1", 600 * MS);
        scan.on_message("tele/cold-room/LWT", b"Online", Duration::ZERO);
        scan.on_message(
            "stat/cold-room/RESULT",
            br#"{"Command":"Unknown"}"#,
            100 * MS,
        );
        assert!(scan.on_tick(500 * MS).is_empty());
        let asked = published(&scan.on_tick(700 * MS));
        assert_eq!(
            asked,
            vec![
                ("cmnd/cold-room/Status".into(), "8".into()),
                ("cmnd/cold-room/Status".into(), "11".into()),
                ("cmnd/cold-room/Power".into(), String::new()),
            ]
        );
        assert!(scan.on_tick(900 * MS).is_empty(), "asked once");
        scan.on_message(
            "stat/cold-room/STATUS8",
            br#"{"StatusSNS":{"Time":"2026-06-01T12:00:00","ENERGY":{"Total":1.0,"Power":0}}}"#,
            800 * MS,
        );
        scan.on_message("stat/cold-room/RESULT", br#"{"POWER1":"OFF"}"#, 800 * MS);
        assert!(scan.complete());
        let (tasmota, _) = scan.finish();
        let ch = tasmota[0].channels();
        assert_eq!(ch.len(), 1);
        // It read 0 W (off): no nominal power from it.
        assert_eq!(ch[0].watts, Some(0.0));
        assert_eq!(tasmota[0].load_name(1).0, "cold-room");
    }

    #[test]
    fn offline_last_wills_and_other_lwt_words_ask_nothing() {
        let mut scan = PlugScan::new("scan-1", 600 * MS);
        assert!(
            scan.on_message("tele/old/LWT", b"Offline", Duration::ZERO)
                .is_empty()
        );
        assert!(
            scan.on_message("zigbee/bridge/LWT", b"online", Duration::ZERO)
                .is_empty()
        );
        assert!(scan.complete());
        let (tasmota, _) = scan.finish();
        assert_eq!(tasmota.len(), 1);
        assert!(!tasmota[0].online);
    }

    /// A stock Shelly Plus Plug S: `Shelly.GetDeviceInfo` and `Shelly.GetStatus` results in
    /// the shapes of the Gen2 API docs (values from the homebridge-shelly-ng wiki's example).
    #[test]
    fn a_stock_shelly_answers_device_info_and_status_and_is_one_load_per_switch() {
        let mut scan = PlugScan::new("scan-7", 600 * MS);
        let out = scan.on_message("shellyplusplugs-a8032ab1/online", b"true", Duration::ZERO);
        let asked = published(&out);
        assert_eq!(asked.len(), 2);
        assert!(
            asked
                .iter()
                .all(|(t, _)| t == "shellyplusplugs-a8032ab1/rpc")
        );
        let req: Value = serde_json::from_str(&asked[0].1).unwrap();
        assert_eq!(req["method"], "Shelly.GetDeviceInfo");
        assert_eq!(req["src"], "scan-7");
        let (id_info, id_status) = (
            req["id"].as_u64().unwrap(),
            serde_json::from_str::<Value>(&asked[1].1).unwrap()["id"]
                .as_u64()
                .unwrap(),
        );
        let reply = |id: u64, result: Value| {
            json!({"id": id, "src": "shellyplusplugs-a8032ab1", "dst": "scan-7", "result": result})
                .to_string()
        };
        scan.on_message(
            "scan-7/rpc",
            reply(id_info, json!({"name": null, "id": "shellyplusplugs-a8032ab1", "mac": "A8032AB1", "model": "SNPL-00112EU", "gen": 2, "fw_id": "20231107-164738/1.0.8-gb7e2e0c", "ver": "1.0.8", "app": "PlugS", "auth_en": false, "auth_domain": null})).as_bytes(),
            10 * MS,
        );
        let more = scan.on_message(
            "scan-7/rpc",
            reply(id_status, json!({"ble": {}, "sys": {"mac": "A8032AB1"}, "switch:0": {"id": 0, "source": "init", "output": true, "apower": 61.4, "voltage": 229.8, "current": 0.3, "aenergy": {"total": 1043.2, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1780000000}, "temperature": {"tC": 31.2, "tF": 88.2}}})).as_bytes(),
            20 * MS,
        );
        let cfg: Value = serde_json::from_str(&published(&more)[0].1).unwrap();
        assert_eq!(cfg["method"], "Switch.GetConfig");
        assert!(!scan.complete());
        scan.on_message(
            "scan-7/rpc",
            reply(
                cfg["id"].as_u64().unwrap(),
                json!({"id": 0, "name": "School freezer", "initial_state": "restore_last"}),
            )
            .as_bytes(),
            30 * MS,
        );
        assert!(scan.complete());
        let (_, shelly) = scan.finish();
        let s = &shelly[0];
        assert_eq!(
            s.info.as_ref().unwrap().model.as_deref(),
            Some("SNPL-00112EU")
        );
        assert_eq!(s.switches.len(), 1);
        assert_eq!(s.switches[0].power_watts, Some(61.4));
        assert_eq!(
            s.load_name(&s.switches[0]),
            ("school_freezer".into(), "School freezer".into())
        );
        assert!(s.errors.is_empty());
    }

    #[test]
    fn a_shelly_refusing_get_status_is_asked_its_switches_one_by_one() {
        let mut scan = PlugScan::new("c", 600 * MS);
        scan.on_message("pro4pm/online", b"true", Duration::ZERO);
        let refuse = |id: u64| {
            json!({"id": id, "src": "pro4pm", "dst": "c", "error": {"code": 404, "message": "No handler for Shelly.GetStatus"}}).to_string()
        };
        let out = scan.on_message("c/rpc", refuse(2).as_bytes(), MS);
        let next: Value = serde_json::from_str(&published(&out)[0].1).unwrap();
        assert_eq!(next["method"], "Switch.GetStatus");
        assert_eq!(next["params"]["id"], 0);
        let ok = |id: u64, n: u8| {
            json!({"id": id, "src": "pro4pm", "dst": "c", "result": {"id": n, "output": false, "apower": 0.0}}).to_string()
        };
        let out = scan.on_message("c/rpc", ok(3, 0).as_bytes(), MS);
        let asked: Vec<Value> = published(&out)
            .iter()
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect();
        assert_eq!(asked[1]["method"], "Switch.GetStatus");
        assert_eq!(asked[1]["params"]["id"], 1);
        let bad = json!({"id": asked[1]["id"], "src": "pro4pm", "dst": "c", "error": {"code": -105, "message": "Argument 'id', value not found!"}});
        scan.on_message("c/rpc", bad.to_string().as_bytes(), MS);
        let (_, shelly) = scan.finish();
        assert_eq!(shelly[0].switches.len(), 1);
        // GetDeviceInfo and the switch's config were never answered: said so, not hidden.
        assert!(
            shelly[0]
                .errors
                .iter()
                .any(|e| e.contains("Shelly.GetDeviceInfo"))
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_on_every_topic_never_panics_and_is_never_taken_for_a_reading(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            last in "(RESULT|STATUS|STATUS8|STATUS11|POWER|POWER2|STATE|SENSOR|LWT)",
        ) {
            let mut scan = PlugScan::new("g", 600 * MS);
            scan.on_message("tele/plug/LWT", b"Online", Duration::ZERO);
            scan.on_message("shelly1/online", b"true", Duration::ZERO);
            scan.on_message(&format!("stat/plug/{last}"), &payload, MS);
            scan.on_message(&format!("tele/plug/{last}"), &payload, MS);
            scan.on_message("g/rpc", &payload, MS);
            scan.on_message("x/y/LWT", &payload, MS);
            scan.on_message("x/online", &payload, MS);
            let _ = scan.on_tick(Duration::from_secs(1));
            let (tasmota, shelly) = scan.finish();
            for t in &tasmota {
                for c in t.channels() {
                    proptest::prop_assert!(c.watts.is_none_or(f64::is_finite));
                    let _ = t.load_name(c.relay);
                }
                let _ = t.summary();
            }
            for s in &shelly {
                for sw in &s.switches {
                    let _ = s.load_name(sw);
                }
            }
        }
    }

    #[test]
    fn garbled_replies_are_reported_not_read() {
        let mut t = TasmotaFinding::new("tele/p/LWT", TasmotaLayout::from_lwt("tele/p/LWT"), true);
        t.absorb("stat", "STATUS", b"{\"POWER\":\"O\xff\xfe");
        t.absorb("tele", "SENSOR", b"[1,2,3]");
        t.absorb(
            "stat",
            "STATUS10",
            br#"{"StatusSNS":{"ENERGY":{"Power":"lots"}}}"#,
        );
        assert_eq!(t.errors.len(), 2, "{:?}", t.errors);
        assert!(t.power_watts.is_empty());
        assert!(!t.has_status);
    }
}
