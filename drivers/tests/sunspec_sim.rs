//! SunSpec driver against the SunSpec simulators over real loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use communalia_drivers::modbus::ModbusConfig;
use communalia_drivers::modbus_sim::{Fault, ModbusSim};
use communalia_drivers::sunspec::SunSpecDevice;
use communalia_drivers::sunspec::sim::{Irradiance, SunSpecSim};
use communalia_drivers::testkit::wait_until;
use communalia_drivers::{
    BatteryReader, BatterySetpoint, DriverError, Percent, PowerLimiter, PowerMeter, Watts,
};

const LOOPBACK: &str = "127.0.0.1:0";
/// Deadline for what should happen soon; polls return as soon as it has.
const WAIT: Duration = Duration::from_secs(10);

async fn serve(sim: SunSpecSim) -> ModbusSim<SunSpecSim> {
    sim.serve(1, LOOPBACK.parse().unwrap()).await.unwrap()
}

/// A 3 kW inverter at base 40000 (models 103/120/123) producing `fraction` of its rating.
async fn inverter(fraction: f64) -> ModbusSim<SunSpecSim> {
    serve(SunSpecSim::inverter(
        40000,
        3000.0,
        Irradiance::Fixed(fraction),
        false,
    ))
    .await
}

/// The same with the DER models 701/120/704 instead.
async fn der_inverter(fraction: f64) -> ModbusSim<SunSpecSim> {
    serve(SunSpecSim::inverter(
        40000,
        3000.0,
        Irradiance::Fixed(fraction),
        true,
    ))
    .await
}

fn device(sim: &ModbusSim<SunSpecSim>) -> SunSpecDevice {
    SunSpecDevice::new(
        ModbusConfig::new(sim.address())
            .timeout(Duration::from_millis(300))
            .backoff(Duration::from_millis(50), Duration::from_millis(200)),
    )
}

#[tokio::test]
async fn the_inverter_is_discovered_with_its_models_in_chain_order_and_its_nameplate() {
    let sim = inverter(0.5).await;
    let mut dev = device(&sim);
    let map = dev.discover().await.unwrap();
    assert_eq!(map.base, 40000);
    assert_eq!(map.ids(), vec![1, 103, 120, 123]);
    let common = dev.read_common().await.unwrap();
    assert_eq!(common.manufacturer.as_deref(), Some("Communalia"));
    assert_eq!(common.serial.as_deref(), Some("INV-0001"));
}

#[tokio::test]
async fn raw_4321_with_scale_factor_minus_one_reads_as_432_point_1_watts() {
    let sim = inverter(432.1 / 3000.0).await;
    let mut dev = device(&sim);
    let w = dev.read_power().await.unwrap();
    let model = dev.read_model(&[103]).await.unwrap();
    assert_eq!(model.raw("W"), Some(&[4321u16][..]));
    assert_eq!(model.raw("W_SF"), Some(&[(-1i16) as u16][..]));
    assert!((w.get() - 432.1).abs() < 1e-9, "{w}");
}

#[tokio::test]
async fn an_inverter_reporting_sentinels_gives_absent_values_not_numbers() {
    let sim = inverter(0.5).await;
    sim.with_device(|d| d.set_sentinels(true));
    let mut dev = device(&sim);
    let reading = dev.read_inverter().await.unwrap();
    assert_eq!(reading.ac_power, None);
    assert_eq!(reading.energy_total, None);
    assert_eq!(
        dev.read_power().await,
        Err(DriverError::NotImplemented("W"))
    );
}

#[tokio::test]
async fn an_exception_is_kept_apart_from_a_timeout() {
    let sim = inverter(0.5).await;
    let mut dev = device(&sim);
    dev.discover().await.unwrap();
    sim.set_fault(Fault::Exception(0x04));
    let err = dev.read_power().await.unwrap_err();
    assert_eq!(err, DriverError::Exception { code: 0x04 });
    assert!(err.device_alive());

    sim.set_fault(Fault::Silent);
    let t0 = Instant::now();
    let err = dev.read_power().await.unwrap_err();
    assert_eq!(err, DriverError::Timeout(Duration::from_millis(300)));
    assert!(!err.device_alive() && err.is_retryable());
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a silent device must not stall the caller"
    );
}

#[tokio::test]
async fn a_garbled_answer_is_malformed_and_the_next_good_one_is_read() {
    let sim = inverter(0.5).await;
    let mut dev = device(&sim);
    dev.discover().await.unwrap();
    sim.set_fault(Fault::Garbage);
    assert!(matches!(
        dev.read_power().await,
        Err(DriverError::Malformed(_))
    ));
    sim.set_fault(Fault::None);
    wait_until("a good reading after the garbage", WAIT, async || {
        dev.read_power().await == Ok(Watts(1500.0))
    })
    .await;
}

#[tokio::test]
async fn the_driver_reconnects_after_the_device_restarts() {
    let mut sim = inverter(0.5).await;
    let mut dev = device(&sim);
    assert_eq!(dev.read_power().await.unwrap(), Watts(1500.0));
    sim.stop().await;
    let err = dev.read_power().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    sim.restart().await.unwrap();
    wait_until(
        "a reading from the restarted device",
        WAIT,
        async || match dev.read_power().await {
            Ok(w) => {
                assert_eq!(w, Watts(1500.0));
                true
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                false
            }
        },
    )
    .await;
}

/// Waits until a 3 kW inverter limited at `written` with a 1 s reversion timeout is back at full
/// power, and checks it did not revert before the timeout.
async fn wait_for_reversion(dev: &mut SunSpecDevice, written: Instant) {
    wait_until("the unrefreshed limit to revert", WAIT, async || {
        dev.read_power().await == Ok(Watts(3000.0))
    })
    .await;
    assert!(
        written.elapsed() >= Duration::from_secs(1),
        "reverted after {:?}, before its 1 s timeout",
        written.elapsed()
    );
}

#[tokio::test]
async fn a_power_limit_is_honoured_and_reverts_when_not_refreshed() {
    let sim = inverter(1.0).await;
    let mut dev = device(&sim);
    let written = Instant::now();
    dev.set_power_limit(Percent(40.0), Duration::from_secs(1))
        .await
        .unwrap();
    let limit = dev.read_power_limit().await.unwrap();
    assert_eq!(limit.enabled, Some(true));
    assert_eq!(limit.percent, Some(Percent(40.0)));
    assert_eq!(limit.reversion_secs, Some(1));
    assert_eq!(dev.read_power().await.unwrap(), Watts(1200.0));
    wait_for_reversion(&mut dev, written).await;
    assert_eq!(dev.read_power_limit().await.unwrap().enabled, Some(false));
}

#[tokio::test]
async fn a_power_limit_without_reversion_timeout_is_refused_before_anything_is_written() {
    let sim = inverter(1.0).await;
    let mut dev = device(&sim);
    let err = dev
        .set_power_limit(Percent(40.0), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Invalid(_)));
    assert_eq!(dev.read_power().await.unwrap(), Watts(3000.0));
}

#[tokio::test]
async fn the_der_models_701_and_704_read_power_and_take_a_reverting_limit() {
    let sim = der_inverter(1.0).await;
    let mut dev = device(&sim);
    assert_eq!(dev.discover().await.unwrap().ids(), vec![1, 701, 120, 704]);
    assert_eq!(dev.read_power().await.unwrap(), Watts(3000.0));
    let written = Instant::now();
    dev.set_power_limit(Percent(25.0), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(dev.read_power().await.unwrap(), Watts(750.0));
    wait_for_reversion(&mut dev, written).await;
}

#[tokio::test]
async fn the_battery_reports_its_state_and_obeys_a_discharge_limit() {
    let sim = serve(SunSpecSim::battery(40000, 10_000.0, 5000.0, 80.0)).await;
    sim.with_device(|d| d.set_demand(4000.0));
    let mut dev = device(&sim);
    assert_eq!(dev.discover().await.unwrap().ids(), vec![1, 124, 802]);
    let st = dev.read_battery().await.unwrap();
    assert!((st.soc.unwrap().get() - 80.0).abs() < 0.2);
    assert_eq!(st.max_discharge, Some(Watts(5000.0)));
    assert_eq!(st.min_reserve, Some(Percent(10.0)));
    dev.read_battery().await.unwrap();
    assert_eq!(dev.read_battery().await.unwrap().power, Some(Watts(4000.0)));
    let sp = BatterySetpoint {
        max_charge: None,
        max_discharge: Some(Watts(1000.0)),
    };
    communalia_drivers::BatteryControl::set_battery_setpoint(&mut dev, sp, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(dev.read_battery().await.unwrap().power, Some(Watts(1000.0)));
}

#[tokio::test]
async fn a_battery_reporting_sentinels_has_no_state_of_charge() {
    let sim = serve(SunSpecSim::battery(40000, 10_000.0, 5000.0, 80.0)).await;
    sim.with_device(|d| d.set_sentinels(true));
    let mut dev = device(&sim);
    let st = dev.read_battery().await.unwrap();
    assert_eq!((st.soc, st.power), (None, None));
}

#[tokio::test]
async fn the_meter_reads_import_positive_and_its_energy_counters() {
    let sim = serve(SunSpecSim::meter(40000)).await;
    sim.with_device(|d| d.set_power(-1200.0));
    let mut dev = device(&sim);
    let m = dev.read_meter().await.unwrap();
    assert_eq!(m.power, Some(Watts(-1200.0)));
    assert_eq!(m.phase_power[0], Some(Watts(-400.0)));
    assert!(m.energy_import.is_some() && m.energy_export.is_some());
}

#[tokio::test]
async fn maps_at_base_zero_and_fifty_thousand_are_found_over_the_wire() {
    for base in [0u16, 50000] {
        let sim = serve(SunSpecSim::meter(base)).await;
        let mut dev = device(&sim);
        assert_eq!(dev.discover().await.unwrap().base, base);
    }
}

#[tokio::test]
async fn a_wrong_unit_id_is_a_gateway_exception_not_a_hang() {
    let sim = serve(SunSpecSim::meter(40000)).await;
    let mut dev = SunSpecDevice::new(
        ModbusConfig::new(sim.address())
            .unit(7)
            .timeout(Duration::from_millis(300)),
    );
    let err = dev.discover().await.unwrap_err();
    assert_eq!(err, DriverError::Exception { code: 0x0B });
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind(LOOPBACK).unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut dev =
        SunSpecDevice::new(ModbusConfig::new(addr.to_string()).timeout(Duration::from_millis(300)));
    let err = dev.read_power().await.unwrap_err();
    assert!(matches!(err, DriverError::Transport(_)), "{err:?}");
    // The next attempt waits for the backoff instead of hammering the address.
    assert!(matches!(
        dev.read_power().await.unwrap_err(),
        DriverError::Backoff(_)
    ));
}
