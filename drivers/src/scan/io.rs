//! `communalia scan`, the network side: Modbus TCP addresses probed unit by unit with a short
//! timeout, and one MQTT session driving the [`PlugScan`] state machine. Everything is bounded
//! by a deadline; what did not finish is reported, never waited for.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::time::Instant;

use crate::error::DriverError;
use crate::modbus::{ModbusConfig, ModbusTcp};
use crate::mqtt::MqttConfig;
use crate::regmap::{SDM630, VICTRON_GX, decode};
use crate::sunspec::SunSpecDevice;

use super::plugs::{Action, PlugScan};
use super::{
    AddressReport, BatteryNameplate, ModbusFinding, MqttReport, SunSpecFinding, UnitMiss,
    chain_meaning,
};

/// How to probe Modbus addresses.
#[derive(Debug, Clone)]
pub struct ModbusScan {
    /// Unit ids to try, in order.
    pub units: Vec<u8>,
    /// Timeout of each request (a silent unit costs one).
    pub unit_timeout: Duration,
    /// Also recognise an Eastron SDM630 or a Victron GX where no SunSpec map is.
    pub register_maps: bool,
}

/// `host:port`, with 502 when the port is left out.
pub fn with_default_port(address: &str, port: u16) -> String {
    let a = address.trim();
    let has_port = match a.rsplit_once(':') {
        // An IPv6 literal without brackets has colons but no port.
        Some((h, p)) => {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        a.to_owned()
    } else {
        format!("{a}:{port}")
    }
}

fn config(address: &str, unit: u8, timeout: Duration) -> ModbusConfig {
    ModbusConfig::new(address)
        .unit(unit)
        .timeout(timeout)
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
}

/// Probes one address: a TCP connection first (an unreachable address is one error, not one
/// per unit), then every unit in turn. `deadline` bounds the whole; units not reached by then
/// are reported as such.
pub async fn scan_address(address: &str, scan: &ModbusScan, deadline: Instant) -> AddressReport {
    let mut report = AddressReport {
        address: address.to_owned(),
        error: None,
        found: Vec::new(),
        missed: Vec::new(),
    };
    let connect_timeout = scan
        .unit_timeout
        .max(Duration::from_millis(500))
        .min(deadline.saturating_duration_since(Instant::now()));
    match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(stream)) => drop(stream),
        Ok(Err(e)) => {
            report.error = Some(format!("cannot connect: {e}"));
            return report;
        }
        Err(_) => {
            report.error = Some(format!(
                "cannot connect: no answer within {} ms",
                connect_timeout.as_millis()
            ));
            return report;
        }
    }
    for (i, unit) in scan.units.iter().copied().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            report.error = Some(format!(
                "the scan ran out of time before units {:?}",
                &scan.units[i..]
            ));
            break;
        }
        match tokio::time::timeout(left, scan_unit(address, unit, scan)).await {
            Ok(Ok(found)) => {
                // A device that ignores the unit id answers the same on every unit.
                let same = report.found.iter_mut().find_map(|f| match (f, &found) {
                    (ModbusFinding::Sunspec(a), ModbusFinding::Sunspec(b))
                        if a.base == b.base && a.models == b.models && a.common == b.common =>
                    {
                        Some(a)
                    }
                    _ => None,
                });
                match same {
                    Some(first) => first.same_on_units.push(unit),
                    None => report.found.push(found),
                }
            }
            Ok(Err(miss)) => report.missed.push(miss),
            Err(_) => {
                report.error = Some(format!(
                    "the scan ran out of time at unit {unit} (units {:?} not tried)",
                    &scan.units[i + 1..]
                ));
                break;
            }
        }
    }
    report
}

async fn scan_unit(address: &str, unit: u8, scan: &ModbusScan) -> Result<ModbusFinding, UnitMiss> {
    let mut dev = SunSpecDevice::new(config(address, unit, scan.unit_timeout));
    let miss = |answered: bool, reason: String| UnitMiss {
        unit,
        answered,
        reason,
    };
    let map = match dev.discover().await {
        Ok(map) => map,
        Err(e) => {
            let answered = e.device_alive() || matches!(e, DriverError::Malformed(_));
            if answered
                && scan.register_maps
                && let Some(f) = register_map(address, unit, scan.unit_timeout).await
            {
                return Ok(f);
            }
            let reason = match &e {
                DriverError::Layout(m) => format!("answers, but {m}"),
                DriverError::Exception { code: 0x0A | 0x0B } => {
                    format!("no device: the gateway says {e}")
                }
                DriverError::Timeout(_) => format!("silent: {e}"),
                other => other.to_string(),
            };
            return Err(miss(answered, reason));
        }
    };
    let mut errors = Vec::new();
    let common = match dev.read_common().await {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(format!("common model: {e}"));
            None
        }
    };
    let meaning = chain_meaning(&map.ids());
    let battery = if meaning.roles.contains(&super::Role::Battery) {
        let mut plate = BatteryNameplate::default();
        if map.find(&[802]).is_some() {
            match dev.read_model(&[802]).await {
                Ok(b) => {
                    plate.capacity_wh = b.scaled("WHRtg");
                    plate.max_charge_watts = b.scaled("WChaRteMax");
                    plate.max_discharge_watts = b.scaled("WDisChaRteMax");
                    plate.soc_percent = b.scaled("SoC");
                }
                Err(e) => errors.push(format!("battery model 802: {e}")),
            }
        }
        if map.find(&[124]).is_some() {
            match dev.read_model(&[124]).await {
                Ok(b) => {
                    let max = b.scaled("WChaMax");
                    plate.max_charge_watts = plate.max_charge_watts.or(max);
                    plate.max_discharge_watts = plate.max_discharge_watts.or(max);
                    plate.soc_percent = plate.soc_percent.or(b.scaled("ChaState"));
                }
                Err(e) => errors.push(format!("storage model 124: {e}")),
            }
        }
        let finite_positive = |v: Option<f64>| v.filter(|v| v.is_finite() && *v > 0.0);
        plate.capacity_wh = finite_positive(plate.capacity_wh);
        plate.max_charge_watts = finite_positive(plate.max_charge_watts);
        plate.max_discharge_watts = finite_positive(plate.max_discharge_watts);
        plate.soc_percent = plate
            .soc_percent
            .filter(|v| v.is_finite() && (0.0..=100.0).contains(v));
        Some(plate)
    } else {
        None
    };
    Ok(ModbusFinding::Sunspec(Box::new(SunSpecFinding {
        unit,
        same_on_units: Vec::new(),
        base: map.base,
        models: map.ids(),
        common,
        battery,
        errors,
    })))
}

/// An SDM630's phase 1 voltage and frequency (input registers 0 and 70, float32), or a Victron
/// GX system service's battery registers (holding 840-843) on unit 100: values in range, not an
/// identity, so the draft says "reads like".
async fn register_map(address: &str, unit: u8, timeout: Duration) -> Option<ModbusFinding> {
    let mut io = ModbusTcp::new(config(address, unit, timeout));
    if unit == VICTRON_GX.default_unit {
        let words = io.read_holding_registers(840, 4).await.ok()?;
        let volts = VICTRON_GX
            .get("battery_voltage")
            .and_then(|d| decode(d, &words[0..1]))?;
        let soc = VICTRON_GX
            .get("battery_soc")
            .and_then(|d| decode(d, &words[3..4]))?;
        return ((5.0..=1000.0).contains(&volts) && (0.0..=100.0).contains(&soc)).then_some(
            ModbusFinding::Victron {
                unit,
                soc_percent: soc,
            },
        );
    }
    let v = io.read_input_registers(0, 2).await.ok()?;
    let f = io.read_input_registers(70, 2).await.ok()?;
    let voltage = SDM630.get("voltage_l1").and_then(|d| decode(d, &v))?;
    let frequency = SDM630.get("frequency").and_then(|d| decode(d, &f))?;
    ((80.0..=300.0).contains(&voltage) && (45.0..=65.0).contains(&frequency)).then_some(
        ModbusFinding::Sdm630 {
            unit,
            voltage,
            frequency,
        },
    )
}

/// How long the plug scan listens at least, for retained last wills to arrive.
pub const MIN_LISTEN: Duration = Duration::from_millis(500);

/// Finds the plugs on a broker: one connection, the [`PlugScan`] driven until every device has
/// answered (after at least [`MIN_LISTEN`]) or `deadline`.
pub async fn scan_mqtt(broker: &MqttConfig, deadline: Instant) -> MqttReport {
    let mut report = MqttReport {
        broker: format!("{}:{}", broker.host, broker.port),
        ..MqttReport::default()
    };
    let (client, mut events) = AsyncClient::new(broker.options(), 1024);
    let started = Instant::now();
    let left = || deadline.saturating_duration_since(Instant::now());
    // Connect.
    let connected = tokio::time::timeout(left(), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            report.error = Some(format!("cannot connect: {e}"));
            return report;
        }
        Err(_) => {
            report.error = Some(format!(
                "no connection within {} ms",
                deadline.saturating_duration_since(started).as_millis()
            ));
            return report;
        }
    }
    let mut scan = PlugScan::new(broker.client_id.clone(), Duration::from_millis(600));
    let mut failed = None;
    let act = |actions: Vec<Action>, failed: &mut Option<String>| {
        for a in actions {
            let r = match a {
                Action::Subscribe(f) => client.try_subscribe(f, QoS::AtMostOnce),
                Action::Publish { topic, payload } => {
                    client.try_publish(topic, QoS::AtMostOnce, false, payload)
                }
            };
            if let Err(e) = r {
                failed.get_or_insert_with(|| format!("request not sent: {e}"));
            }
        }
    };
    act(scan.start(), &mut failed);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let now = started.elapsed();
        if now >= MIN_LISTEN && scan.complete() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {
                let out = scan.on_tick(started.elapsed());
                act(out, &mut failed);
            }
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let out = scan.on_message(&p.topic, &p.payload, started.elapsed());
                    act(out, &mut failed);
                }
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert_with(|| format!("connection lost: {e}"));
                    break;
                }
            },
        }
    }
    let _ = client.try_disconnect();
    // Let the DISCONNECT go out (bounded: the deadline has priority over politeness).
    let _ = tokio::time::timeout(Duration::from_millis(50), events.poll()).await;
    report.error = failed;
    let (tasmota, shelly) = scan.finish();
    report.tasmota = tasmota;
    report.shelly = shelly;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modbus_port_defaults_to_502() {
        assert_eq!(with_default_port("10.0.0.5", 502), "10.0.0.5:502");
        assert_eq!(with_default_port("10.0.0.5:1502", 502), "10.0.0.5:1502");
        assert_eq!(
            with_default_port("inverter.local", 502),
            "inverter.local:502"
        );
        assert_eq!(with_default_port("[::1]:5020", 502), "[::1]:5020");
    }
}
