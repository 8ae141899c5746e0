//! The MQTT state publisher against a real mosquitto: retained state and grid state, the
//! availability topic and its last will, Home Assistant discovery, and a broker restart.

// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod records_support;

use std::time::Duration;

use communalia::records::mqtt_state::{
    DiscoverySite, HA_DISCOVERY_PREFIX, MqttStatePublisher, MqttStateSettings,
};
use communalia::state::GridState;
use communalia_drivers::testkit::Mosquitto;
use records_support::village;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: String,
    retain: bool,
}

/// A client that subscribes to `filters` and hands over every message.
struct Watcher {
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Messages received while waiting for another topic, oldest first.
    backlog: Vec<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    async fn start(broker: &Mosquitto, filters: &[&str]) -> Self {
        let (client, mut el) = AsyncClient::new(broker.config("watcher").options(), 64);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let _keep = client;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Msg {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Watcher {
            rx,
            backlog: Vec::new(),
            task,
        }
    }

    /// The next message on `topic` (others are kept for later), within 10 s.
    async fn next_on(&mut self, topic: &str) -> Msg {
        if let Some(i) = self.backlog.iter().position(|m| m.topic == topic) {
            return self.backlog.remove(i);
        }
        let (rx, backlog) = (&mut self.rx, &mut self.backlog);
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let m = rx.recv().await.expect("watcher ended");
                if m.topic == topic {
                    return m;
                }
                backlog.push(m);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing on {topic}"))
    }

    /// Messages until none arrives for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<Msg> {
        let mut out = std::mem::take(&mut self.backlog);
        while let Ok(Some(m)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            out.push(m);
        }
        out
    }
}

fn settings(broker: &Mosquitto, site: &str, discovery: bool) -> MqttStateSettings {
    MqttStateSettings {
        mqtt: broker.config("controller"),
        site: DiscoverySite {
            site_id: site.into(),
            site_name: "Kalinzu".into(),
            has_battery: true,
        },
        discovery_prefix: discovery.then(|| HA_DISCOVERY_PREFIX.to_owned()),
    }
}

#[tokio::test]
async fn state_and_grid_state_are_retained_for_a_client_that_comes_later() {
    let broker = Mosquitto::start().unwrap();
    let publisher = MqttStatePublisher::start(settings(&broker, "retained", false));
    assert!(publisher.wait_connected(Duration::from_secs(10)).await);
    let mut state = village("retained");
    state.grid_state = GridState::Scarcity;
    publisher.publish(&state);
    // A first watcher sees it live; it is then on the broker.
    let mut live = Watcher::start(&broker, &["communalia/retained/#"]).await;
    live.next_on("communalia/retained/grid_state").await;

    let mut late = Watcher::start(&broker, &["communalia/retained/#"]).await;
    let s = late.next_on("communalia/retained/state").await;
    assert!(s.retain, "state is retained");
    let got: Value = serde_json::from_str(&s.payload).unwrap();
    assert_eq!(got, serde_json::to_value(&state).unwrap());
    assert_eq!(got["grid_state"], "scarcity");
    assert_eq!(got["battery"]["soc_percent"], 55.5);
    let g = late.next_on("communalia/retained/grid_state").await;
    assert_eq!((g.payload.as_str(), g.retain), ("scarcity", true));
    let a = late.next_on("communalia/retained/availability").await;
    assert_eq!((a.payload.as_str(), a.retain), ("online", true));
    publisher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_vanished_controller_is_marked_offline_by_its_last_will_and_a_clean_stop_too() {
    let broker = Mosquitto::start().unwrap();
    let mut w = Watcher::start(&broker, &["communalia/will/availability"]).await;
    let publisher = MqttStatePublisher::start(settings(&broker, "will", false));
    assert_eq!(
        w.next_on("communalia/will/availability").await.payload,
        "online"
    );
    drop(publisher); // no DISCONNECT: the broker publishes the will
    let m = w.next_on("communalia/will/availability").await;
    assert_eq!(m.payload, "offline");

    let publisher = MqttStatePublisher::start(settings(&broker, "will", false));
    assert_eq!(
        w.next_on("communalia/will/availability").await.payload,
        "online"
    );
    publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        w.next_on("communalia/will/availability").await.payload,
        "offline"
    );
    let mut late = Watcher::start(&broker, &["communalia/will/availability"]).await;
    let m = late.next_on("communalia/will/availability").await;
    assert_eq!((m.payload.as_str(), m.retain), ("offline", true));
}

#[tokio::test]
async fn home_assistant_discovery_announces_the_sensors_retained() {
    let broker = Mosquitto::start().unwrap();
    let publisher = MqttStatePublisher::start(settings(&broker, "ha", true));
    assert!(publisher.wait_connected(Duration::from_secs(10)).await);
    let prefix = "homeassistant/sensor/communalia_ha";
    let mut w = Watcher::start(&broker, &["homeassistant/#"]).await;
    let mut seen = std::collections::BTreeMap::new();
    for object in ["pv_power", "battery_soc", "available_power", "grid_state"] {
        let m = w.next_on(&format!("{prefix}/{object}/config")).await;
        seen.insert(object, serde_json::from_str::<Value>(&m.payload).unwrap());
    }
    // Retained: a subscriber arriving later gets them from the broker (a subscriber that was
    // there first sees them live, with the retain flag cleared, so it cannot tell).
    let mut late = Watcher::start(&broker, &["homeassistant/#"]).await;
    for object in seen.keys() {
        let m = late.next_on(&format!("{prefix}/{object}/config")).await;
        assert!(m.retain, "{object} config is retained");
    }
    assert_eq!(seen["pv_power"]["device_class"], "power");
    assert_eq!(seen["pv_power"]["unit_of_measurement"], "W");
    assert_eq!(seen["battery_soc"]["device_class"], "battery");
    assert_eq!(seen["battery_soc"]["state_class"], "measurement");
    assert_eq!(seen["grid_state"]["device_class"], "enum");
    for cfg in seen.values() {
        assert_eq!(cfg["availability_topic"], "communalia/ha/availability");
        assert_eq!(cfg["device"]["identifiers"][0], "communalia_ha");
    }
    publisher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn without_discovery_nothing_is_announced_to_home_assistant() {
    let broker = Mosquitto::start().unwrap();
    let publisher = MqttStatePublisher::start(settings(&broker, "quiet", false));
    assert!(publisher.wait_connected(Duration::from_secs(10)).await);
    publisher.publish(&village("quiet"));
    let mut w = Watcher::start(&broker, &["homeassistant/#", "communalia/quiet/state"]).await;
    w.next_on("communalia/quiet/state").await;
    let rest = w.drain(Duration::from_millis(300)).await;
    assert!(
        rest.iter().all(|m| !m.topic.starts_with("homeassistant/")),
        "{rest:?}"
    );
    publisher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn after_a_broker_restart_without_persistence_everything_is_published_again() {
    let mut broker = Mosquitto::start().unwrap();
    if !broker.owns_broker() {
        return; // an external broker cannot be restarted
    }
    let publisher = MqttStatePublisher::start(settings(&broker, "restart", true));
    assert!(publisher.wait_connected(Duration::from_secs(10)).await);
    let state = village("restart");
    publisher.publish(&state);
    broker.restart().unwrap(); // retained messages are gone with the old process
    let mut w = Watcher::start(
        &broker,
        &[
            "communalia/restart/#",
            "homeassistant/sensor/communalia_restart/#",
        ],
    )
    .await;
    let s = w.next_on("communalia/restart/state").await;
    assert_eq!(
        serde_json::from_str::<Value>(&s.payload).unwrap(),
        serde_json::to_value(&state).unwrap()
    );
    w.next_on("homeassistant/sensor/communalia_restart/pv_power/config")
        .await;
    publisher.shutdown(Duration::from_secs(5)).await;
}
