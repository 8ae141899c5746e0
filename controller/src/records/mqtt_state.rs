//! The controller's own state on MQTT, retained, for Home Assistant, a display in the village hall
//! and anything else that reads the broker; with Home Assistant discovery when asked for.
//!
//! Topics (`<site>` is the site id, with `+`, `#`, `/` and spaces replaced by `_`):
//! - `communalia/<site>/state`: the `/api/state` JSON, retained;
//! - `communalia/<site>/grid_state`: `surplus`, `tight` or `scarcity`, retained;
//! - `communalia/<site>/availability`: `online`, retained, and `offline` as the last will (the
//!   broker sends it when the controller vanishes) and at a clean shutdown;
//! - with discovery, `<prefix>/sensor/communalia_<site>/<object>/config`, retained: PV power,
//!   battery state of charge (only when the site has a battery), available power and grid state,
//!   one device, each with the availability topic.
//!
//! Payloads are built by pure functions; [`MqttStatePublisher`] is the thin IO adapter. It
//! publishes availability, discovery and the last state again after every reconnection, so a
//! broker restarted without persistence gets them back.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use communalia_drivers::mqtt::{MqttConfig, drive_event_loop};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::{GridState, StateView};

/// The root of the controller's own topics.
pub const TOPIC_ROOT: &str = "communalia";
/// Home Assistant's default discovery prefix.
pub const HA_DISCOVERY_PREFIX: &str = "homeassistant";
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

/// A topic level or Home Assistant id made safe: only letters, digits, `_` and `-` are kept.
pub fn topic_safe(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "_".into() } else { out }
}

/// The topics of one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub state: String,
    pub grid_state: String,
    pub availability: String,
}

impl Topics {
    pub fn new(site_id: &str) -> Self {
        let base = format!("{TOPIC_ROOT}/{}", topic_safe(site_id));
        Self {
            state: format!("{base}/state"),
            grid_state: format!("{base}/grid_state"),
            availability: format!("{base}/availability"),
        }
    }
}

/// The `/api/state` JSON.
pub fn state_payload(state: &StateView) -> String {
    serde_json::to_string(state).unwrap_or_else(|e| {
        tracing::error!(error = %e, "state could not be serialised");
        "{}".into()
    })
}

/// `surplus`, `tight` or `scarcity`.
pub fn grid_state_payload(g: GridState) -> &'static str {
    match g {
        GridState::Surplus => "surplus",
        GridState::Tight => "tight",
        GridState::Scarcity => "scarcity",
    }
}

/// What the discovery configs describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySite {
    pub site_id: String,
    pub site_name: String,
    /// Announce the battery state of charge (only when the site has a battery).
    pub has_battery: bool,
}

/// The retained discovery configs: (topic, JSON payload).
pub fn discovery_configs(prefix: &str, site: &DiscoverySite) -> Vec<(String, String)> {
    let topics = Topics::new(&site.site_id);
    let node = format!("communalia_{}", topic_safe(&site.site_id));
    let device = json!({
        "identifiers": [node],
        "name": format!("Communalia {}", site.site_name),
        "manufacturer": "Communalia",
        "model": "Microgrid controller",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let origin = json!({
        "name": "communalia",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let mut sensors: Vec<(&str, Value)> = vec![(
        "pv_power",
        json!({
            "name": "PV power",
            "state_topic": topics.state,
            "value_template": "{{ value_json.pv_watts }}",
            "device_class": "power",
            "state_class": "measurement",
            "unit_of_measurement": "W",
        }),
    )];
    if site.has_battery {
        sensors.push((
            "battery_soc",
            json!({
                "name": "Battery state of charge",
                "state_topic": topics.state,
                "value_template":
                    "{{ value_json.battery.soc_percent if value_json.battery else None }}",
                "device_class": "battery",
                "state_class": "measurement",
                "unit_of_measurement": "%",
            }),
        ));
    }
    sensors.push((
        "available_power",
        json!({
            "name": "Available power",
            "state_topic": topics.state,
            "value_template": "{{ value_json.available_watts }}",
            "device_class": "power",
            "state_class": "measurement",
            "unit_of_measurement": "W",
        }),
    ));
    sensors.push((
        "grid_state",
        json!({
            "name": "Grid state",
            "state_topic": topics.grid_state,
            "device_class": "enum",
            "options": ["surplus", "tight", "scarcity"],
            "icon": "mdi:transmission-tower",
        }),
    ));
    sensors
        .into_iter()
        .map(|(object, mut cfg)| {
            if let Some(map) = cfg.as_object_mut() {
                map.insert("unique_id".into(), json!(format!("{node}_{object}")));
                map.insert("availability_topic".into(), json!(topics.availability));
                map.insert("payload_available".into(), json!(ONLINE));
                map.insert("payload_not_available".into(), json!(OFFLINE));
                map.insert("device".into(), device.clone());
                map.insert("origin".into(), origin.clone());
            }
            (
                format!("{prefix}/sensor/{node}/{object}/config"),
                cfg.to_string(),
            )
        })
        .collect()
}

/// How to publish the state of one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttStateSettings {
    /// The broker. The publisher connects with `<client_id>-state`, so it never takes the
    /// devices' connection's place.
    pub mqtt: MqttConfig,
    pub site: DiscoverySite,
    /// `Some(prefix)` announces Home Assistant sensors under `<prefix>/sensor/...`
    /// ([`HA_DISCOVERY_PREFIX`] is Home Assistant's default).
    pub discovery_prefix: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The retained messages to (re)publish on every connection: availability, discovery, and the
/// last state.
#[derive(Default)]
struct Retained {
    last_state: Option<(String, &'static str)>,
}

/// Publishes the state; see the module documentation.
pub struct MqttStatePublisher {
    client: AsyncClient,
    topics: Topics,
    retained: Arc<Mutex<Retained>>,
    connected: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MqttStatePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttStatePublisher")
            .field("topics", &self.topics)
            .finish()
    }
}

impl Drop for MqttStatePublisher {
    fn drop(&mut self) {
        // Without a clean DISCONNECT the broker sends the last will (`offline`).
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl MqttStatePublisher {
    /// Connects in the background (and reconnects, with backoff) on the current tokio runtime.
    pub fn start(settings: MqttStateSettings) -> Self {
        let topics = Topics::new(&settings.site.site_id);
        let cfg = settings
            .mqtt
            .with_client_id(format!("{}-state", settings.mqtt.client_id));
        let mut options = cfg.options();
        options.set_last_will(LastWill::new(
            topics.availability.clone(),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
        let (client, eventloop) = AsyncClient::new(options, 64);
        let retained = Arc::new(Mutex::new(Retained::default()));
        let discovery = settings
            .discovery_prefix
            .as_deref()
            .map(|p| discovery_configs(p, &settings.site))
            .unwrap_or_default();
        let (tx, rx) = watch::channel(false);
        let task_client = client.clone();
        let task_retained = Arc::clone(&retained);
        let task_topics = topics.clone();
        let task = tokio::spawn(drive_event_loop(
            eventloop,
            tx,
            "mqtt state",
            move |event| {
                if !matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                    return;
                }
                let mut msgs: Vec<(String, String)> =
                    vec![(task_topics.availability.clone(), ONLINE.to_owned())];
                msgs.extend(discovery.iter().cloned());
                if let Some((state, grid)) = lock(&task_retained).last_state.clone() {
                    msgs.push((task_topics.state.clone(), state));
                    msgs.push((task_topics.grid_state.clone(), grid.to_owned()));
                }
                for (topic, payload) in msgs {
                    if let Err(e) = task_client.try_publish(topic, QoS::AtLeastOnce, true, payload)
                    {
                        tracing::warn!(error = %e, "mqtt state: publish on connect failed");
                    }
                }
            },
        ));
        Self {
            client,
            topics,
            retained,
            connected: rx,
            task: Some(task),
        }
    }

    /// The topics this publisher writes.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Waits until connected, at most `timeout`; false if not.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.connected.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await,
            Ok(Ok(_))
        )
    }

    /// Publishes the state and grid state, retained; never waits. When the broker is away, the
    /// latest state is published on the next connection.
    pub fn publish(&self, state: &StateView) {
        let payload = state_payload(state);
        let grid = grid_state_payload(state.grid_state);
        lock(&self.retained).last_state = Some((payload.clone(), grid));
        if !*self.connected.borrow() {
            return;
        }
        for (topic, p) in [
            (&self.topics.state, payload),
            (&self.topics.grid_state, grid.to_owned()),
        ] {
            if let Err(e) = self
                .client
                .try_publish(topic.clone(), QoS::AtLeastOnce, true, p)
            {
                tracing::debug!(error = %e, topic = %topic, "mqtt state: publish skipped");
            }
        }
    }

    /// Publishes `offline` and disconnects cleanly (waiting at most `timeout`).
    pub async fn shutdown(mut self, timeout: Duration) {
        let _ = self.client.try_publish(
            self.topics.availability.clone(),
            QoS::AtLeastOnce,
            true,
            OFFLINE,
        );
        let _ = self.client.try_disconnect();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(timeout, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> DiscoverySite {
        DiscoverySite {
            site_id: "kalinzu".into(),
            site_name: "Kalinzu".into(),
            has_battery: true,
        }
    }

    fn parse(configs: &[(String, String)]) -> Vec<(String, Value)> {
        configs
            .iter()
            .map(|(t, p)| (t.clone(), serde_json::from_str(p).unwrap()))
            .collect()
    }

    #[test]
    fn topics_are_under_the_site_and_wildcards_never_reach_them() {
        let t = Topics::new("kalinzu");
        assert_eq!(t.state, "communalia/kalinzu/state");
        assert_eq!(t.grid_state, "communalia/kalinzu/grid_state");
        assert_eq!(t.availability, "communalia/kalinzu/availability");
        assert_eq!(Topics::new("a/b+#c d").state, "communalia/a_b__c_d/state");
        assert_eq!(Topics::new("").state, "communalia/_/state");
    }

    #[test]
    fn discovery_announces_four_sensors_with_the_right_classes_and_units() {
        let cfgs = parse(&discovery_configs("homeassistant", &site()));
        let by_object = |o: &str| {
            cfgs.iter()
                .find(|(t, _)| *t == format!("homeassistant/sensor/communalia_kalinzu/{o}/config"))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{o} missing: {cfgs:?}"))
        };
        assert_eq!(cfgs.len(), 4);
        let pv = by_object("pv_power");
        assert_eq!(
            (
                &pv["device_class"],
                &pv["state_class"],
                &pv["unit_of_measurement"]
            ),
            (&json!("power"), &json!("measurement"), &json!("W"))
        );
        assert_eq!(pv["state_topic"], "communalia/kalinzu/state");
        assert_eq!(pv["value_template"], "{{ value_json.pv_watts }}");
        let soc = by_object("battery_soc");
        assert_eq!(
            (&soc["device_class"], &soc["unit_of_measurement"]),
            (&json!("battery"), &json!("%"))
        );
        let avail = by_object("available_power");
        assert_eq!(avail["device_class"], "power");
        assert_eq!(avail["value_template"], "{{ value_json.available_watts }}");
        let grid = by_object("grid_state");
        assert_eq!(grid["device_class"], "enum");
        assert_eq!(grid["options"], json!(["surplus", "tight", "scarcity"]));
        assert_eq!(grid["state_topic"], "communalia/kalinzu/grid_state");
        assert!(
            grid.get("state_class").is_none() && grid.get("unit_of_measurement").is_none(),
            "an enum sensor has neither state class nor unit"
        );
        let mut ids = Vec::new();
        for (_, c) in &cfgs {
            assert_eq!(c["availability_topic"], "communalia/kalinzu/availability");
            assert_eq!(
                (&c["payload_available"], &c["payload_not_available"]),
                (&json!("online"), &json!("offline"))
            );
            assert_eq!(c["device"], cfgs[0].1["device"], "one shared device");
            assert_eq!(c["device"]["identifiers"], json!(["communalia_kalinzu"]));
            ids.push(c["unique_id"].as_str().unwrap().to_owned());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "unique ids differ");
    }

    #[test]
    fn a_site_without_a_battery_announces_no_state_of_charge() {
        let mut s = site();
        s.has_battery = false;
        let cfgs = discovery_configs("ha", &s);
        assert_eq!(cfgs.len(), 3);
        assert!(cfgs.iter().all(|(t, _)| !t.contains("battery")));
        assert!(cfgs.iter().all(|(t, _)| t.starts_with("ha/sensor/")));
    }

    #[test]
    fn grid_state_payloads_match_the_api_names() {
        for g in [GridState::Surplus, GridState::Tight, GridState::Scarcity] {
            assert_eq!(
                json!(grid_state_payload(g)),
                serde_json::to_value(g).unwrap()
            );
        }
    }
}
