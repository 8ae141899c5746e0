//! Tasmota and Shelly plug drivers against their simulators through a real mosquitto.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use communalia_drivers::mqtt::{MqttBus, MqttConfig};
use communalia_drivers::mqtt_sim::{MqttBehaviour, MqttSim};
use communalia_drivers::plug::{MqttPlug, PlugKind, PlugOptions};
use communalia_drivers::shelly::ShellyTopics;
use communalia_drivers::shelly::sim::ShellyPlug;
use communalia_drivers::tasmota::sim::TasmotaPlug;
use communalia_drivers::tasmota::{SensorKeys, TasmotaTopics};
use communalia_drivers::testkit::{Mosquitto, unique, wait_until};
use communalia_drivers::{DriverError, Watts};

/// Deadline for what should happen at once; polls return as soon as it has.
const WAIT: Duration = Duration::from_secs(10);

fn fast() -> PlugOptions {
    PlugOptions {
        confirm_timeout: Duration::from_millis(500),
        attempts: 3,
        backoff: Duration::from_millis(100),
        stale_after: Duration::from_secs(5),
    }
}

/// A broker, a simulated device connected to it, and the driver on its own connection.
struct Rig<B: MqttBehaviour> {
    broker: Mosquitto,
    sim: MqttSim<B>,
    bus: MqttBus,
    plug: MqttPlug,
}

async fn rig<B: MqttBehaviour>(
    kind: PlugKind,
    start: impl FnOnce(&MqttConfig) -> MqttSim<B>,
) -> Rig<B> {
    let broker = Mosquitto::start().unwrap();
    let sim = start(&broker.config("dev"));
    assert!(sim.wait_connected(WAIT).await);
    let bus = broker.connected_bus("controller", WAIT).await;
    let plug = MqttPlug::attach(&bus, kind, fast()).await.unwrap();
    Rig {
        broker,
        sim,
        bus,
        plug,
    }
}

/// A Tasmota plug drawing `watts` when on, sending telemetry every `period`.
async fn tasmota(watts: f64, period: Duration) -> Rig<TasmotaPlug> {
    let topics = TasmotaTopics::new(unique("tas"));
    let kind = PlugKind::Tasmota(topics.clone(), SensorKeys::default());
    rig(kind, |b| {
        TasmotaPlug::new(topics, watts).tele_period(period).start(b)
    })
    .await
}

/// The simulated Shelly `device`, and the driver for the plug under `prefix`.
async fn shelly(device: ShellyPlug, prefix: &str) -> Rig<ShellyPlug> {
    rig(PlugKind::Shelly(ShellyTopics::new(prefix)), |b| {
        device.start(b)
    })
    .await
}

async fn wait_online(plug: &MqttPlug, online: bool) {
    let what = if online { "online" } else { "offline" };
    wait_until(what, WAIT, async || plug.status().online == Some(online)).await;
}

#[tokio::test]
async fn a_tasmota_switch_is_confirmed_from_the_devices_report() {
    let Rig { sim, plug, .. } = &tasmota(150.0, Duration::from_millis(200)).await;
    wait_online(plug, true).await;
    plug.switch_confirmed(true).await.unwrap();
    assert!(sim.with(|d| d.on()));
    assert_eq!(plug.status().on, Some(true));
    wait_until("power telemetry", WAIT, async || {
        plug.power().ok() == Some(Watts(150.0))
    })
    .await;
    plug.switch_confirmed(false).await.unwrap();
    assert!(!sim.with(|d| d.on()));
}

#[tokio::test]
async fn a_silent_tasmota_is_retried_with_backoff_then_reported_unconfirmed() {
    let Rig { sim, plug, .. } = &tasmota(150.0, Duration::from_secs(60)).await;
    sim.set_faults(|f| f.mute = true);
    let err = plug.switch_confirmed(true).await.unwrap_err();
    assert_eq!(err, DriverError::NotConfirmed { attempts: 3 });
    assert!(!sim.with(|d| d.on()));
}

#[tokio::test]
async fn a_tasmota_that_drops_off_is_seen_offline_through_its_last_will_and_back_online() {
    let Rig { sim, plug, .. } = &tasmota(150.0, Duration::from_secs(60)).await;
    wait_online(plug, true).await;
    sim.set_faults(|f| f.offline = true);
    wait_online(plug, false).await;
    assert_eq!(plug.switch_confirmed(true).await, Err(DriverError::Offline));
    assert_eq!(plug.power(), Err(DriverError::Offline));
    sim.set_faults(|f| f.offline = false);
    wait_online(plug, true).await;
    plug.switch_confirmed(true).await.unwrap();
}

#[tokio::test]
async fn the_tasmota_fail_safe_leaves_a_health_load_on_after_a_power_cut() {
    let Rig { sim, plug, .. } = &tasmota(80.0, Duration::from_secs(60)).await;
    plug.set_fail_safe(true).await.unwrap();
    assert_eq!(sim.with(|d| d.power_on_state), 1);
    assert_eq!(plug.status().fail_safe.as_deref(), Some("PowerOnState 1"));
    sim.with(|d| {
        d.set_relay(1, false);
        d.power_cycle();
    });
    assert!(sim.with(|d| d.on()));
    plug.set_fail_safe(false).await.unwrap();
    assert_eq!(sim.with(|d| d.power_on_state), 0);
}

#[tokio::test]
async fn garbled_tasmota_payloads_are_counted_and_never_read_as_zero_watts() {
    let Rig { sim, plug, .. } = &tasmota(150.0, Duration::from_millis(100)).await;
    plug.switch_confirmed(true).await.unwrap();
    wait_until("power", WAIT, async || plug.power().is_ok()).await;
    sim.set_faults(|f| f.garbled = true);
    wait_until("malformed counted", WAIT, async || {
        plug.status().malformed >= 2
    })
    .await;
    assert!(
        plug.power().is_err(),
        "a garbled reading must not stand as a number"
    );
    sim.set_faults(|f| f.garbled = false);
    wait_until("power again", WAIT, async || {
        plug.power().ok() == Some(Watts(150.0))
    })
    .await;
}

#[tokio::test]
async fn a_custom_full_topic_and_relay_reach_the_device() {
    let topics = TasmotaTopics::new(unique("multi"))
        .full_topic("site/%topic%/%prefix%/")
        .relay(2);
    let kind = PlugKind::Tasmota(topics.clone(), SensorKeys::default());
    let Rig { sim, plug, .. } =
        &rig(kind, |b| TasmotaPlug::new(topics, 10.0).relays(2).start(b)).await;
    plug.switch_confirmed(true).await.unwrap();
    assert!(sim.with(|d| d.relay(2)));
}

#[tokio::test]
async fn a_shelly_switch_is_confirmed_and_its_fail_safe_set_by_rpc() {
    let prefix = unique("shellyplusplugs");
    let device = ShellyPlug::new(&prefix, 60.0).period(Duration::from_millis(200));
    let Rig { sim, plug, .. } = &shelly(device, &prefix).await;
    plug.switch_confirmed(true).await.unwrap();
    assert!(sim.with(|d| d.output(0)));
    wait_until("power", WAIT, async || {
        plug.power().ok() == Some(Watts(60.0))
    })
    .await;
    plug.set_fail_safe(true).await.unwrap();
    assert_eq!(sim.with(|d| d.initial_state(0).to_owned()), "on");
    sim.with(|d| {
        d.set_output(0, false);
        d.power_cycle();
    });
    assert!(sim.with(|d| d.output(0)));
}

#[tokio::test]
async fn a_shelly_that_drops_off_is_seen_offline() {
    let prefix = unique("shelly");
    let device = ShellyPlug::new(&prefix, 60.0);
    let Rig { sim, plug, .. } = &shelly(device, &prefix).await;
    wait_online(plug, true).await;
    sim.set_faults(|f| f.offline = true);
    wait_online(plug, false).await;
    assert_eq!(
        plug.switch_confirmed(false).await,
        Err(DriverError::Offline)
    );
}

#[tokio::test]
async fn plugs_work_again_after_the_broker_restarts() {
    let Rig {
        broker,
        sim,
        bus,
        plug,
    } = &mut tasmota(150.0, Duration::from_secs(60)).await;
    if !broker.owns_broker() {
        return; // An external broker cannot be restarted by the test.
    }
    plug.switch_confirmed(true).await.unwrap();
    broker.restart().unwrap();
    wait_until("the bus to see the broker gone", WAIT, async || {
        !bus.is_connected()
    })
    .await;
    bus.wait_connected(Duration::from_secs(15)).await.unwrap();
    assert!(sim.wait_connected(Duration::from_secs(15)).await);
    wait_until(
        "switching to work again after the broker restart",
        Duration::from_secs(30),
        async || plug.switch_confirmed(false).await.is_ok(),
    )
    .await;
    assert!(!sim.with(|d| d.on()));
}

/// Regression: replies were matched by their `src`, which a Shelly sets to its device id, not
/// to its (configurable) topic prefix, so such a plug never confirmed its fail-safe.
#[tokio::test]
async fn a_shelly_whose_topic_prefix_is_not_its_device_id_confirms_its_fail_safe_and_refusals() {
    let prefix = unique("site/kitchen-plug");
    let device = ShellyPlug::new(&prefix, 60.0).device_id(unique("shellyplusplugs-a8032ab1c2d3"));
    let Rig { sim, bus, plug, .. } = &shelly(device, &prefix).await;
    plug.set_fail_safe(true).await.unwrap();
    assert_eq!(sim.with(|d| d.initial_state(0).to_owned()), "on");
    assert_eq!(plug.status().fail_safe.as_deref(), Some("initial_state on"));
    plug.switch_confirmed(true).await.unwrap();
    assert!(sim.with(|d| d.output(0)));

    // The device has no switch 1: its refusal must come back as such, not as silence.
    let mut topics = ShellyTopics::new(&prefix);
    topics.switch_id = 1;
    let wrong = MqttPlug::attach(bus, PlugKind::Shelly(topics), fast())
        .await
        .unwrap();
    let err = wrong.switch_confirmed(false).await.unwrap_err();
    assert!(matches!(err, DriverError::Invalid(_)), "{err:?}");
    assert!(sim.with(|d| d.output(0)));
}

#[tokio::test]
async fn shelly_plugs_sharing_a_connection_take_only_the_replies_to_their_own_requests() {
    let a = unique("shelly-a");
    let device_a = ShellyPlug::new(&a, 60.0);
    let Rig {
        broker,
        sim: sim_a,
        bus,
        plug: plug_a,
    } = &shelly(device_a, &a).await;
    let b = unique("shelly-b");
    let sim_b = ShellyPlug::new(&b, 90.0).start(&broker.config("dev"));
    assert!(sim_b.wait_connected(WAIT).await);
    let plug_b = MqttPlug::attach(bus, PlugKind::Shelly(ShellyTopics::new(&b)), fast())
        .await
        .unwrap();
    plug_b.switch_confirmed(true).await.unwrap();
    plug_b.set_fail_safe(true).await.unwrap();
    // Plug a's device is off and draws nothing: b's "on, 90 W" in a's state came from b's replies.
    let seen_by_a = plug_a.status();
    assert_ne!(seen_by_a.on, Some(true), "{seen_by_a:?}");
    assert_ne!(seen_by_a.power, Some(Watts(90.0)), "{seen_by_a:?}");
    assert_eq!(seen_by_a.fail_safe, None);
    assert!(!sim_a.with(|d| d.output(0)));
}
