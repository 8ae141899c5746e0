//! Meters: SDM630 and Victron GX maps against their simulators over Modbus TCP, and MQTT
//! meters (Shelly EM, Tasmota SML, generic JSON) through a real mosquitto.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use communalia_drivers::modbus::ModbusConfig;
use communalia_drivers::modbus_sim::Fault;
use communalia_drivers::mqtt::MqttBus;
use communalia_drivers::mqtt_meter::{MeterSource, MqttMeter, PowerUnit};
use communalia_drivers::mqtt_sim::MqttSim;
use communalia_drivers::regmap::{RegisterMapDevice, RegisterMapSim, SDM630, VICTRON_GX};
use communalia_drivers::shelly::EmKind;
use communalia_drivers::shelly::sim::ShellyEm;
use communalia_drivers::tasmota::{SensorKeys, TasmotaTopics};
use communalia_drivers::testkit::{Mosquitto, unique, wait_until};
use communalia_drivers::{
    BatteryReader, DriverError, LoadSetpoint, Percent, PowerMeter, WattHours, Watts,
};

/// Deadline for what should happen at once; polls return as soon as it has.
const WAIT: Duration = Duration::from_secs(10);

fn cfg(addr: String, unit: u8) -> ModbusConfig {
    ModbusConfig::new(addr)
        .unit(unit)
        .timeout(Duration::from_millis(300))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
}

#[tokio::test]
async fn the_sdm630_reads_power_and_energy_over_the_wire() {
    let mut sim = RegisterMapSim::new(&SDM630);
    sim.set("power_total", 1234.5);
    sim.set("energy_import", 321_250.0);
    let sim = sim.serve(1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut dev = RegisterMapDevice::new(cfg(sim.address(), 1), &SDM630);
    assert_eq!(dev.read_power().await.unwrap(), Watts(1234.5));
    let r = dev.read_all().await.unwrap();
    assert!((r.get("energy_import").unwrap() - 321_250.0).abs() < 1.0);
    assert_eq!(r.get("voltage_l1"), Some(230.0));
    assert_eq!(r.get("frequency"), Some(50.0));
}

#[tokio::test]
async fn an_sdm630_reporting_nan_gives_no_power_rather_than_a_number() {
    let mut sim = RegisterMapSim::new(&SDM630);
    sim.set("power_total", f64::NAN);
    let sim = sim.serve(1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut dev = RegisterMapDevice::new(cfg(sim.address(), 1), &SDM630);
    assert_eq!(
        dev.read_power().await,
        Err(DriverError::NotImplemented("power"))
    );
}

#[tokio::test]
async fn a_register_map_device_keeps_exceptions_apart_from_silence() {
    let sim = RegisterMapSim::new(&SDM630)
        .serve(1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut dev = RegisterMapDevice::new(cfg(sim.address(), 1), &SDM630);
    sim.set_fault(Fault::Exception(0x06));
    assert_eq!(
        dev.read_power().await,
        Err(DriverError::Exception { code: 0x06 })
    );
    sim.set_fault(Fault::Silent);
    assert!(matches!(
        dev.read_power().await,
        Err(DriverError::Timeout(_))
    ));
}

#[tokio::test]
async fn the_victron_gx_reports_pv_and_battery_and_takes_a_grid_setpoint() {
    let mut sim = RegisterMapSim::new(&VICTRON_GX);
    sim.set("pv_ac_out_l1", 1000.0);
    sim.set("pv_dc", 500.0);
    sim.set("battery_soc", 64.0);
    sim.set("battery_power", -800.0);
    let sim = sim
        .serve(100, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut dev = RegisterMapDevice::new(cfg(sim.address(), 100), &VICTRON_GX);
    assert_eq!(dev.read_power().await.unwrap(), Watts(1500.0));
    let b = dev.read_battery().await.unwrap();
    assert_eq!(b.soc.map(|p: Percent| p.get().round()), Some(64.0));
    assert_eq!(
        b.power,
        Some(Watts(800.0)),
        "victron's charging-positive is turned into discharging-positive"
    );
    dev.set_setpoint(Watts(-250.0)).await.unwrap();
    assert_eq!(
        sim.with_device(|d| d.value("ess_grid_setpoint")),
        Some(-250.0)
    );
}

async fn bus(broker: &Mosquitto) -> MqttBus {
    broker.connected_bus("controller", WAIT).await
}

/// A simulated Pro 3EM sending every 100 ms, and a meter on it that calls readings older than
/// `STALE_AFTER` stale.
async fn pro_3em(broker: &Mosquitto, bus: &MqttBus) -> (MqttSim<ShellyEm>, MqttMeter) {
    let prefix = unique("pro3em");
    let mut em = ShellyEm::new(&prefix, EmKind::ThreePhase, Duration::from_millis(100));
    em.power_watts = -900.0;
    let sim = em.start(&broker.config("dev"));
    assert!(sim.wait_connected(WAIT).await);
    let meter = MqttMeter::attach(
        bus,
        MeterSource::ShellyEm {
            prefix,
            kind: EmKind::ThreePhase,
        },
        STALE_AFTER,
    )
    .await
    .unwrap();
    (sim, meter)
}

/// Waits for the meter's first power reading, then gives what the driver makes of it.
async fn first_reading(meter: &MqttMeter) -> Result<Watts, DriverError> {
    wait_until("a first power reading", WAIT, async || {
        meter.state().power.is_some()
    })
    .await;
    meter.power()
}

const STALE_AFTER: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_shelly_pro_3em_gives_power_and_energy() {
    let broker = Mosquitto::start().unwrap();
    let bus = bus(&broker).await;
    let (_sim, meter) = pro_3em(&broker, &bus).await;
    assert_eq!(first_reading(&meter).await, Ok(Watts(-900.0)));
    wait_until("an energy reading", WAIT, async || {
        meter.state().energy.is_some()
    })
    .await;
    assert!(
        meter
            .state()
            .energy
            .is_some_and(|e: WattHours| e.get() >= 5000.0)
    );
}

#[tokio::test]
async fn a_meter_whose_last_will_arrives_is_offline_not_its_last_value() {
    let broker = Mosquitto::start().unwrap();
    let bus = bus(&broker).await;
    let (sim, meter) = pro_3em(&broker, &bus).await;
    assert_eq!(first_reading(&meter).await, Ok(Watts(-900.0)));
    sim.set_faults(|f| f.offline = true);
    wait_until("the meter to be offline", WAIT, async || {
        meter.power() == Err(DriverError::Offline)
    })
    .await;
}

/// Regression: only the last will was tested, so a meter that stays connected but stops
/// sending could have kept its last value for ever.
#[tokio::test]
async fn a_meter_that_stays_online_but_stops_sending_goes_stale() {
    let broker = Mosquitto::start().unwrap();
    let bus = bus(&broker).await;
    let (sim, meter) = pro_3em(&broker, &bus).await;
    assert_eq!(first_reading(&meter).await, Ok(Watts(-900.0)));
    sim.set_faults(|f| f.telemetry_stopped = true);
    wait_until("the silent meter's reading to go stale", WAIT, async || {
        meter.power() == Err(DriverError::Stale)
    })
    .await;
    assert_eq!(
        meter.state().online,
        Some(true),
        "the device never went offline"
    );
    sim.set_faults(|f| f.telemetry_stopped = false);
    wait_until("a fresh reading once it sends again", WAIT, async || {
        meter.power() == Ok(Watts(-900.0))
    })
    .await;
}

#[tokio::test]
async fn a_tasmota_sml_reader_and_a_generic_json_meter_read_their_configured_keys() {
    let broker = Mosquitto::start().unwrap();
    let bus = bus(&broker).await;
    let topic = unique("sml");
    let topics = TasmotaTopics::new(&topic);
    let sml = MqttMeter::attach(
        &bus,
        MeterSource::TasmotaSml {
            topics: topics.clone(),
            keys: SensorKeys::sml("SML", "Power_curr", Some("Total_in")),
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let json_topic = unique("site/grid");
    let generic = MqttMeter::attach(
        &bus,
        MeterSource::Json {
            topic: json_topic.clone(),
            pointer: "/grid/p".into(),
            unit: PowerUnit::Kilowatts,
            invert: true,
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let publisher = broker.connected_bus("publisher", WAIT).await;
    publisher
        .publish(
            &topics.tele("SENSOR"),
            r#"{"Time":"2026-06-01T12:00:00","SML":{"Power_curr":420,"Total_in":1000.5}}"#,
        )
        .await
        .unwrap();
    publisher
        .publish(&json_topic, r#"{"grid":{"p":1.25}}"#)
        .await
        .unwrap();
    assert_eq!(first_reading(&sml).await, Ok(Watts(420.0)));
    assert_eq!(sml.state().energy, Some(WattHours(1_000_500.0)));
    assert_eq!(first_reading(&generic).await, Ok(Watts(-1250.0)));
    publisher
        .publish(&json_topic, r#"{"grid":{"p":"n/a"}}"#)
        .await
        .unwrap();
    wait_until("the unparsable reading to be counted", WAIT, async || {
        generic.state().malformed > 0
    })
    .await;
    assert!(
        generic.power().is_err(),
        "an unparsable reading counts as missing, not as 0 W"
    );
}
