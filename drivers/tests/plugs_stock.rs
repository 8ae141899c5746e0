//! The plug drivers against stock-behaving Tasmota and Shelly simulators through a real
//! mosquitto: every variant (relay count, SetOption26, TelePeriod; Shelly model and channel,
//! topic prefix, notification settings) × {switch on, switch off, query} confirms on the first
//! attempt with exactly one command per change, readings stay fresh without fast telemetry, and
//! the device's own fail-safe is confirmed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use communalia_drivers::mqtt::MqttConfig;
use communalia_drivers::mqtt_sim::{MqttBehaviour, MqttSim};
use communalia_drivers::plug::{MqttPlug, PlugKind, PlugOptions};
use communalia_drivers::shelly::ShellyTopics;
use communalia_drivers::shelly::sim::{ShellyModel, ShellyPlug};
use communalia_drivers::tasmota::sim::TasmotaPlug;
use communalia_drivers::tasmota::{SensorKeys, TasmotaTopics};
use communalia_drivers::testkit::{Mosquitto, unique, wait_until};
use communalia_drivers::{DriverError, Watts};

/// Deadline for what should happen at once; polls return as soon as it has.
const WAIT: Duration = Duration::from_secs(15);

/// One attempt only: a command the device does not confirm at once fails the test.
fn first_attempt_only() -> PlugOptions {
    PlugOptions {
        confirm_timeout: Duration::from_secs(2),
        attempts: 1,
        backoff: Duration::from_millis(100),
        stale_after: Duration::from_secs(3),
    }
}

/// How a test looks into the simulated device.
struct Look<B> {
    /// The controlled relay's state.
    on: fn(&B) -> bool,
    /// Switching commands received for any relay.
    commands: fn(&B) -> u64,
    /// Whether the controlled relay's fail-safe is "on after a power cut".
    fail_safe_on: fn(&B) -> bool,
    /// Sets the controlled relay by hand (as its button would).
    set: fn(&mut B, bool),
    /// Other relays of the device, which must never move.
    others_on: fn(&B) -> bool,
}

async fn matrix<B: MqttBehaviour>(
    kind: PlugKind,
    watts: f64,
    start: impl FnOnce(&MqttConfig) -> MqttSim<B>,
    look: Look<B>,
) -> (MqttSim<B>, MqttPlug, Mosquitto) {
    let broker = Mosquitto::start().unwrap();
    let sim = start(&broker.config("dev"));
    assert!(sim.wait_connected(WAIT).await);
    let bus = broker.connected_bus("controller", WAIT).await;
    let plug = MqttPlug::attach(&bus, kind, first_attempt_only())
        .await
        .unwrap();
    wait_until("online", WAIT, async || plug.status().online == Some(true)).await;

    // Query: the relay state is reported.
    plug.query().await.unwrap();
    let s = plug.wait_report(WAIT).await.unwrap();
    assert_eq!(s.on, Some(false));

    // Switch on: confirmed on the first attempt, one command.
    plug.switch_confirmed(true).await.unwrap();
    assert!(sim.with(|d| (look.on)(d)));
    assert_eq!(sim.with(|d| (look.commands)(d)), 1);
    wait_until("the new power reading", WAIT, async || {
        plug.power().ok() == Some(Watts(watts))
    })
    .await;
    wait_until("an energy reading", WAIT, async || {
        plug.status().energy.is_some()
    })
    .await;
    // The reading stays fresh across several staleness periods, whatever the device's own
    // telemetry period (stock Tasmota: 300 s).
    let polls = plug.status().polls;
    wait_until("three more refreshes", WAIT, async || {
        plug.status().polls >= polls + 3
    })
    .await;
    assert_eq!(plug.power(), Ok(Watts(watts)));

    // Switch off.
    plug.switch_confirmed(false).await.unwrap();
    assert!(!sim.with(|d| (look.on)(d)));
    assert_eq!(sim.with(|d| (look.commands)(d)), 2);
    wait_until("zero watts", WAIT, async || {
        plug.power().ok() == Some(Watts(0.0))
    })
    .await;

    // A change made at the device is seen by a query.
    sim.with(|d| (look.set)(d, true));
    let before = plug.status().reports;
    plug.query().await.unwrap();
    wait_until("the queried state", WAIT, async || {
        let s = plug.status();
        s.reports > before && s.on == Some(true)
    })
    .await;
    sim.with(|d| (look.set)(d, false));
    plug.query().await.unwrap();
    wait_until("the queried state", WAIT, async || {
        plug.status().on == Some(false)
    })
    .await;

    // The fail-safe: on after a power cut for a health load.
    plug.set_fail_safe(true).await.unwrap();
    assert!(sim.with(|d| (look.fail_safe_on)(d)));
    assert!(plug.status().fail_safe.is_some());

    // No command was repeated, no other relay moved.
    assert_eq!(sim.with(|d| (look.commands)(d)), 2);
    assert!(!sim.with(|d| (look.others_on)(d)));
    (sim, plug, broker)
}

fn tasmota_look_relay_1() -> Look<TasmotaPlug> {
    Look {
        on: |d| d.relay(1),
        commands: |d| d.switch_commands,
        fail_safe_on: |d| d.power_on_state == 1,
        set: |d, on| d.set_relay(1, on),
        others_on: |d| d.relays.iter().skip(1).any(|r| *r),
    }
}

fn tasmota_look_relay_3() -> Look<TasmotaPlug> {
    Look {
        on: |d| d.relay(3),
        commands: |d| d.switch_commands,
        fail_safe_on: |d| d.power_on_state == 1,
        set: |d, on| d.set_relay(3, on),
        others_on: |d| d.relay(1) || d.relay(2) || d.relay(4),
    }
}

/// A Tasmota of `device`'s making under a fresh topic, driven on `relay` (as the site file says).
async fn tasmota(
    relay: u8,
    device: impl FnOnce(TasmotaPlug) -> TasmotaPlug,
    look: Look<TasmotaPlug>,
) -> (MqttSim<TasmotaPlug>, MqttPlug, Mosquitto) {
    let topics = TasmotaTopics::new(unique("tasmota"));
    let kind = PlugKind::Tasmota(topics.clone().relay(relay), SensorKeys::default());
    let sim = device(TasmotaPlug::new(topics, 120.0));
    matrix(kind, 120.0, |b| sim.start(b), look).await
}

#[tokio::test]
async fn a_stock_single_relay_tasmota_answering_power_without_index_confirms_at_once() {
    let (sim, plug, _b) = tasmota(1, |d| d, tasmota_look_relay_1()).await;
    assert_eq!(plug.status().tele_period_secs, Some(300));
    // The driver leaves the device's TelePeriod alone.
    assert_eq!(sim.with(|d| d.tele_period), Duration::from_secs(300));
}

#[tokio::test]
async fn a_single_relay_tasmota_with_set_option_26_confirms_at_once() {
    tasmota(1, |d| d.set_option26(true), tasmota_look_relay_1()).await;
}

#[tokio::test]
async fn relay_1_of_a_four_relay_tasmota_confirms_at_once() {
    tasmota(1, |d| d.relays(4), tasmota_look_relay_1()).await;
}

#[tokio::test]
async fn relay_3_of_a_four_relay_tasmota_confirms_at_once_and_leaves_the_others() {
    tasmota(3, |d| d.relays(4), tasmota_look_relay_3()).await;
}

#[tokio::test]
async fn a_tasmota_with_a_ten_second_tele_period_confirms_at_once() {
    let (_sim, plug, _b) = tasmota(
        1,
        |d| d.tele_period(Duration::from_secs(10)),
        tasmota_look_relay_1(),
    )
    .await;
    assert_eq!(plug.status().tele_period_secs, Some(10));
}

fn shelly_look(channel: usize) -> Look<ShellyPlug> {
    // A plain fn cannot capture the channel: pick one per channel.
    fn on0(d: &ShellyPlug) -> bool {
        d.output(0)
    }
    fn on2(d: &ShellyPlug) -> bool {
        d.output(2)
    }
    fn safe0(d: &ShellyPlug) -> bool {
        d.initial_state(0) == "on"
    }
    fn safe2(d: &ShellyPlug) -> bool {
        d.initial_state(2) == "on"
    }
    fn set0(d: &mut ShellyPlug, on: bool) {
        d.set_output(0, on);
    }
    fn set2(d: &mut ShellyPlug, on: bool) {
        d.set_output(2, on);
    }
    fn others0(d: &ShellyPlug) -> bool {
        (1..d.switches.len()).any(|i| d.output(i))
    }
    fn others2(d: &ShellyPlug) -> bool {
        d.output(0) || d.output(1) || d.output(3)
    }
    let commands = |d: &ShellyPlug| d.switch_requests;
    match channel {
        2 => Look {
            on: on2,
            commands,
            fail_safe_on: safe2,
            set: set2,
            others_on: others2,
        },
        _ => Look {
            on: on0,
            commands,
            fail_safe_on: safe0,
            set: set0,
            others_on: others0,
        },
    }
}

/// A Shelly made by `device` under `prefix`, driven on `channel`.
async fn shelly(
    prefix: &str,
    channel: u8,
    device: ShellyPlug,
) -> (MqttSim<ShellyPlug>, MqttPlug, Mosquitto) {
    let mut topics = ShellyTopics::new(prefix);
    topics.switch_id = channel;
    matrix(
        PlugKind::Shelly(topics),
        60.0,
        |b| device.start(b),
        shelly_look(usize::from(channel)),
    )
    .await
}

#[tokio::test]
async fn a_stock_shelly_plus_plug_s_notifying_only_on_events_rpc_confirms_at_once() {
    let prefix = unique("shellyplusplugs-a8032ab1c2d3");
    let (sim, _plug, _b) = shelly(&prefix, 0, ShellyPlug::new(&prefix, 60.0)).await;
    assert!(sim.with(|d| d.rpc_ntf && !d.status_ntf));
}

#[tokio::test]
async fn a_stock_shelly_plus_1pm_confirms_at_once() {
    let prefix = unique("shellyplus1pm-a8032ab1c2d3");
    let device = ShellyPlug::new(&prefix, 60.0).model(ShellyModel::Plus1Pm);
    shelly(&prefix, 0, device).await;
}

#[tokio::test]
async fn channel_2_of_a_stock_shelly_pro_4pm_confirms_at_once_and_leaves_the_others() {
    let prefix = unique("shellypro4pm-a8032ab1c2d3");
    let device = ShellyPlug::new(&prefix, 60.0).model(ShellyModel::Pro4Pm);
    shelly(&prefix, 2, device).await;
}

#[tokio::test]
async fn a_shelly_whose_topic_prefix_is_not_its_device_id_confirms_at_once() {
    let prefix = unique("site/kitchen");
    let device = ShellyPlug::new(&prefix, 60.0).device_id(unique("shellyplusplugs-a8032ab1c2d3"));
    shelly(&prefix, 0, device).await;
}

#[tokio::test]
async fn a_shelly_with_status_notifications_on_confirms_at_once() {
    let prefix = unique("shellyplusplugs-b1");
    let device = ShellyPlug::new(&prefix, 60.0).status_ntf(true);
    shelly(&prefix, 0, device).await;
}

#[tokio::test]
async fn a_shelly_with_status_notifications_but_no_rpc_notifications_confirms_at_once() {
    let prefix = unique("shellyplusplugs-b2");
    let device = ShellyPlug::new(&prefix, 60.0)
        .status_ntf(true)
        .rpc_ntf(false);
    shelly(&prefix, 0, device).await;
}

/// Regression: a reply carrying our request id but addressed to another client (`dst`) must
/// not be taken as the device's answer.
#[tokio::test]
async fn a_shelly_reply_for_another_client_is_not_taken_even_with_our_request_id() {
    let broker = Mosquitto::start().unwrap();
    let bus = broker.connected_bus("controller", WAIT).await;
    let topics = ShellyTopics::new(unique("shelly-absent"));
    let plug = MqttPlug::attach(&bus, PlugKind::Shelly(topics), first_attempt_only())
        .await
        .unwrap();
    let next = bus.next_request_id() + 1;
    plug.query().await.unwrap();
    let reply_topic = ShellyTopics::reply_topic(bus.client_id());
    let other = broker.connected_bus("other", WAIT).await;
    // The two replies say different things: had the misaddressed one been taken, it would
    // have used up our request id and the plug would read on, not off.
    let reply = |dst: &str, output: bool| {
        serde_json::json!({"id": next, "src": "x", "dst": dst, "result": {"id": 0, "output": output}})
            .to_string()
    };
    other
        .publish(&reply_topic, reply("someone-else", true))
        .await
        .unwrap();
    other
        .publish(&reply_topic, reply(bus.client_id(), false))
        .await
        .unwrap();
    wait_until("the reply addressed to us", WAIT, async || {
        plug.status().reports > 0
    })
    .await;
    assert_eq!(
        plug.status().on,
        Some(false),
        "the misaddressed reply was taken"
    );
    assert_eq!(plug.status().reports, 1);
}

#[tokio::test]
async fn a_tasmota_tele_period_is_changed_only_when_asked_and_confirmed() {
    let broker = Mosquitto::start().unwrap();
    let topics = TasmotaTopics::new(unique("tasmota"));
    let sim = TasmotaPlug::new(topics.clone(), 50.0).start(&broker.config("dev"));
    assert!(sim.wait_connected(WAIT).await);
    let bus = broker.connected_bus("controller", WAIT).await;
    let plug = MqttPlug::attach(
        &bus,
        PlugKind::Tasmota(topics.relay(1), SensorKeys::default()),
        first_attempt_only(),
    )
    .await
    .unwrap();
    wait_until("the TelePeriod read", WAIT, async || {
        plug.status().tele_period_secs == Some(300)
    })
    .await;
    plug.set_tele_period(10).await.unwrap();
    assert_eq!(sim.with(|d| d.tele_period), Duration::from_secs(10));
    let shelly = MqttPlug::attach(
        &bus,
        PlugKind::Shelly(ShellyTopics::new("x")),
        first_attempt_only(),
    )
    .await
    .unwrap();
    assert!(matches!(
        shelly.set_tele_period(10).await,
        Err(DriverError::Invalid(_))
    ));
}

/// Regression: `probe --shelly` reported the energy total "not implemented" although
/// `Switch.GetStatus` carries `aenergy.total`.
#[tokio::test]
async fn probing_a_stock_shelly_reports_its_energy_total_and_a_stock_tasmota_its_power() {
    use communalia_drivers::probe::probe_plug;
    let broker = Mosquitto::start().unwrap();
    let prefix = unique("shellyplusplugs-c3");
    let shelly = ShellyPlug::new(&prefix, 60.0).start(&broker.config("dev"));
    assert!(shelly.wait_connected(WAIT).await);
    let r = probe_plug(
        &broker.config("probe"),
        PlugKind::Shelly(ShellyTopics::new(&prefix)),
        Duration::from_secs(5),
    )
    .await;
    assert!(r.online, "{r:?}");
    assert_eq!(r.energy_total_wh, Some(Some(100.0)), "{r:?}");
    assert_eq!(r.ac_power_watts, Some(Some(0.0)), "{r:?}");

    let topics = TasmotaTopics::new(unique("tasmota"));
    let tasmota = TasmotaPlug::new(topics.clone(), 50.0).start(&broker.config("dev"));
    assert!(tasmota.wait_connected(WAIT).await);
    let r = probe_plug(
        &broker.config("probe"),
        PlugKind::Tasmota(topics.relay(1), SensorKeys::default()),
        Duration::from_secs(5),
    )
    .await;
    assert!(r.online, "{r:?}");
    assert_eq!(r.switch_on, Some(Some(false)), "{r:?}");
    assert_eq!(r.energy_total_wh, Some(Some(1000.0)), "{r:?}");
}
