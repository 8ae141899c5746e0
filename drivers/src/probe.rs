//! One-shot reads for `communalia probe`: what a device at an address reports, as one
//! serialisable record. Fields a device kind does not have are left out; values the device
//! marks "not implemented" are `null`.

use std::time::Duration;

use serde::Serialize;

use crate::error::DriverError;
use crate::modbus::ModbusConfig;
use crate::mqtt::{MqttBus, MqttConfig};
use crate::plug::{MqttPlug, PlugKind, PlugOptions};
use crate::regmap::{RegisterMap, RegisterMapDevice, victron_battery};
use crate::sunspec::SunSpecDevice;
use crate::sunspec::client::{BATTERY_MODELS, INVERTER_MODELS, METER_MODELS};

/// A field that may be absent (not applicable: omitted) or not implemented (`null`).
pub type Field<T> = Option<Option<T>>;

/// What one device reported.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ProbeReport {
    /// Device kind: `sunspec`, `sdm630`, `victron`, `tasmota`, `shelly`.
    pub kind: String,
    /// Where it was probed.
    pub address: String,
    /// Whether the device answered at all (an exception counts as an answer).
    pub online: bool,
    /// Why something could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// SunSpec model ids in chain order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<u16>>,
    /// SunSpec base address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_address: Option<u16>,
    /// Manufacturer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Field<String>,
    /// Model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Field<String>,
    /// Serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Field<String>,
    /// Firmware version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Field<String>,
    /// AC power (inverter: delivered; meter: import positive; plug: consumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ac_power_watts: Field<f64>,
    /// Energy counter (inverter: delivered; meter: imported; plug: consumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_total_wh: Field<f64>,
    /// Battery state of charge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soc_percent: Field<f64>,
    /// Battery power, positive when discharging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_power_watts: Field<f64>,
    /// Inverter power limit setpoint (percent of rated power).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_limit_percent: Field<f64>,
    /// Whether the power limit is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_limit_enabled: Field<bool>,
    /// Plug relay state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_on: Field<bool>,
}

fn alive(e: &DriverError) -> bool {
    e.device_alive()
}

/// Probes a SunSpec device: discovery, common model, then inverter, meter, battery and
/// controls models where present.
pub async fn probe_sunspec(config: ModbusConfig) -> ProbeReport {
    let mut r = ProbeReport {
        kind: "sunspec".into(),
        address: config.address.clone(),
        ..Default::default()
    };
    let mut dev = SunSpecDevice::new(config);
    let map = match dev.discover().await {
        Ok(m) => m,
        Err(e) => {
            r.online = alive(&e);
            r.error = Some(e.to_string());
            return r;
        }
    };
    r.online = true;
    r.models = Some(map.ids());
    r.base_address = Some(map.base);
    let mut errors = Vec::new();
    match dev.read_common().await {
        Ok(c) => {
            r.manufacturer = Some(c.manufacturer);
            r.model = Some(c.model);
            r.serial = Some(c.serial);
            r.version = Some(c.version);
        }
        Err(e) => errors.push(format!("common: {e}")),
    }
    if map.find(INVERTER_MODELS).is_some() {
        match dev.read_inverter().await {
            Ok(i) => {
                r.ac_power_watts = Some(i.ac_power.map(|w| w.get()));
                r.energy_total_wh = Some(i.energy_total.map(|e| e.get()));
            }
            Err(e) => errors.push(format!("inverter: {e}")),
        }
    } else if map.find(METER_MODELS).is_some() {
        match dev.read_meter().await {
            Ok(m) => {
                r.ac_power_watts = Some(m.power.map(|w| w.get()));
                r.energy_total_wh = Some(m.energy_import.map(|e| e.get()));
            }
            Err(e) => errors.push(format!("meter: {e}")),
        }
    }
    if map.find(BATTERY_MODELS).is_some() {
        match dev.read_battery_state().await {
            Ok(b) => {
                r.soc_percent = Some(b.soc.map(|p| p.get()));
                r.battery_power_watts = Some(b.power.map(|w| w.get()));
            }
            Err(e) => errors.push(format!("battery: {e}")),
        }
    }
    if map.find(&[123, 704]).is_some() {
        match dev.read_power_limit().await {
            Ok(l) => {
                r.power_limit_percent = Some(l.percent.map(|p| p.get()));
                r.power_limit_enabled = Some(l.enabled);
            }
            Err(e) => errors.push(format!("controls: {e}")),
        }
    }
    if !errors.is_empty() {
        r.error = Some(errors.join("; "));
    }
    r
}

/// Probes a register-map device (`sdm630` or `victron`).
pub async fn probe_register_map(
    config: ModbusConfig,
    map: &'static RegisterMap,
    kind: &str,
) -> ProbeReport {
    let mut r = ProbeReport {
        kind: kind.into(),
        address: config.address.clone(),
        ..Default::default()
    };
    let mut dev = RegisterMapDevice::new(config, map);
    match dev.read_all().await {
        Ok(v) => {
            r.online = true;
            if map.name == "victron_gx" {
                r.ac_power_watts = Some(v.sum(&[
                    "pv_ac_out_l1",
                    "pv_ac_out_l2",
                    "pv_ac_out_l3",
                    "pv_ac_in_l1",
                    "pv_ac_in_l2",
                    "pv_ac_in_l3",
                    "pv_dc",
                ]));
                let b = victron_battery(&v);
                r.soc_percent = Some(b.soc.map(|p| p.get()));
                r.battery_power_watts = Some(b.power.map(|w| w.get()));
            } else {
                r.ac_power_watts = Some(v.get("power_total"));
                r.energy_total_wh = Some(v.get("energy_import"));
            }
        }
        Err(e) => {
            r.online = alive(&e);
            r.error = Some(e.to_string());
        }
    }
    r
}

/// Probes a plug over MQTT: waits for its availability and relay report, asks for a reading.
pub async fn probe_plug(broker: &MqttConfig, kind: PlugKind, timeout: Duration) -> ProbeReport {
    let (name, address) = match &kind {
        PlugKind::Tasmota(t, _) => ("tasmota", t.topic.clone()),
        PlugKind::Shelly(t) => ("shelly", t.prefix.clone()),
    };
    let mut r = ProbeReport {
        kind: name.into(),
        address: format!("mqtt://{}:{}/{address}", broker.host, broker.port),
        ..Default::default()
    };
    let bus = MqttBus::start(broker);
    if let Err(e) = bus.wait_connected(timeout).await {
        r.error = Some(format!("broker: {e}"));
        return r;
    }
    let options = PlugOptions {
        confirm_timeout: timeout,
        attempts: 1,
        ..PlugOptions::default()
    };
    let plug = match MqttPlug::attach(&bus, kind.clone(), options).await {
        Ok(p) => p,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    if let PlugKind::Tasmota(t, _) = &kind {
        let _ = bus.publish(&t.cmnd("STATUS"), "10").await;
    }
    let _ = plug.query().await;
    let report = plug.wait_report(timeout).await;
    // Give a telemetry reading a moment to follow the relay report.
    let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_millis(500));
    while plug.status().power.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = plug.status();
    r.online = report.is_ok() && s.online != Some(false);
    if let Err(e) = report {
        r.error = Some(if s.online == Some(false) {
            "device is offline (last will)".into()
        } else {
            format!("no report: {e}")
        });
    }
    r.switch_on = Some(s.on);
    r.ac_power_watts = Some(s.power.map(|w| w.get()));
    r.energy_total_wh = Some(s.energy.map(|e| e.get()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_implemented_is_null_and_not_applicable_is_left_out() {
        let r = ProbeReport {
            kind: "sunspec".into(),
            ac_power_watts: Some(None),
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["ac_power_watts"].is_null());
        assert!(v.as_object().unwrap().contains_key("ac_power_watts"));
        assert!(!v.as_object().unwrap().contains_key("soc_percent"));
    }
}
