//! SunSpec device over Modbus TCP: discovery once, then reads and writes by model and point.

use std::time::Duration;

use serde::Serialize;

use crate::error::{DriverError, Result};
use crate::modbus::{ModbusConfig, ModbusTcp};
use crate::traits::{
    BatteryControl, BatteryReader, BatterySetpoint, BatteryState, DriverFuture, EnergyMeter,
    PowerLimiter, PowerMeter,
};
use crate::units::{Percent, WattHours, Watts};

use super::decode::{ModelBlock, unscale};
use super::discovery::{self, SunSpecMap};
use super::models::PointType;

/// Inverter models, preferred first.
pub const INVERTER_MODELS: &[u16] = &[103, 102, 101, 113, 112, 111, 701];
/// Meter models.
pub const METER_MODELS: &[u16] = &[203, 204, 202, 201];
/// Battery models.
pub const BATTERY_MODELS: &[u16] = &[802, 124];

/// The nameplate of the common model.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CommonInfo {
    /// Manufacturer (`Mn`).
    pub manufacturer: Option<String>,
    /// Model (`Md`).
    pub model: Option<String>,
    /// Firmware version (`Vr`).
    pub version: Option<String>,
    /// Serial number (`SN`).
    pub serial: Option<String>,
}

/// What an inverter reports; `None` for every point the device does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct InverterReading {
    /// The model it came from.
    pub model: u16,
    /// AC power, positive when delivering.
    pub ac_power: Option<Watts>,
    /// Lifetime energy delivered.
    pub energy_total: Option<WattHours>,
    /// Operating state (`St`, model 101-113: 1 off ... 4 MPPT, 5 throttled, 7 fault).
    pub state: Option<i64>,
}

/// What a meter reports.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct MeterReading {
    /// Total active power, positive for import (consumption at the meter point).
    pub power: Option<Watts>,
    /// Per phase active power.
    pub phase_power: [Option<Watts>; 3],
    /// Total imported energy.
    pub energy_import: Option<WattHours>,
    /// Total exported energy.
    pub energy_export: Option<WattHours>,
}

/// Power limit state (models 123 or 704).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct PowerLimitState {
    /// Whether the limit is enabled.
    pub enabled: Option<bool>,
    /// The limit in percent of rated power.
    pub percent: Option<Percent>,
    /// The reversion timeout in seconds.
    pub reversion_secs: Option<u32>,
}

/// Sign conventions that vary between vendors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignConventions {
    /// Meter models 201-204: `true` if W is positive for import (the standard's reading).
    pub meter_import_positive: bool,
    /// Model 802: `true` if W is positive while discharging.
    pub battery_discharge_positive: bool,
}

impl Default for SignConventions {
    fn default() -> Self {
        Self {
            meter_import_positive: true,
            battery_discharge_positive: true,
        }
    }
}

/// A SunSpec device reached over Modbus TCP.
#[derive(Debug)]
pub struct SunSpecDevice {
    io: ModbusTcp,
    map: Option<SunSpecMap>,
    signs: SignConventions,
}

fn w(v: Option<f64>) -> Option<Watts> {
    v.map(Watts)
}

impl SunSpecDevice {
    /// A device; it is discovered on the first call.
    pub fn new(config: ModbusConfig) -> Self {
        Self {
            io: ModbusTcp::new(config),
            map: None,
            signs: SignConventions::default(),
        }
    }

    /// Sets the sign conventions.
    pub fn with_signs(mut self, signs: SignConventions) -> Self {
        self.signs = signs;
        self
    }

    /// The discovered map, if discovery ran.
    pub fn map(&self) -> Option<&SunSpecMap> {
        self.map.as_ref()
    }

    /// Discovers the map if not done yet and returns it.
    pub async fn discover(&mut self) -> Result<SunSpecMap> {
        if let Some(map) = &self.map {
            return Ok(map.clone());
        }
        let map = discovery::discover(&mut self.io).await?;
        tracing::debug!(base = map.base, models = ?map.ids(), "sunspec map discovered");
        self.map = Some(map.clone());
        Ok(map)
    }

    /// Reads the first model among `ids` present on the device.
    pub async fn read_model(&mut self, ids: &[u16]) -> Result<ModelBlock> {
        let map = self.discover().await?;
        let entry = map
            .find(ids)
            .ok_or_else(|| DriverError::Layout(format!("none of models {ids:?} on the device")))?;
        // Read the fixed block only (points beyond it are repeating groups we do not use).
        let known = super::models::model_def(entry.id).map(|d| d.fixed_len);
        let result = discovery::read_model(&mut self.io, entry, known).await;
        if matches!(
            result,
            Err(DriverError::Malformed(_)) | Err(DriverError::Exception { code: 0x02 })
        ) {
            // The layout changed under us: rediscover next time.
            self.map = None;
        }
        result
    }

    /// Reads the common model.
    pub async fn read_common(&mut self) -> Result<CommonInfo> {
        let b = self.read_model(&[1]).await?;
        Ok(CommonInfo {
            manufacturer: b.text("Mn"),
            model: b.text("Md"),
            version: b.text("Vr"),
            serial: b.text("SN"),
        })
    }

    /// Reads the inverter model (101-103, 111-113 or 701).
    pub async fn read_inverter(&mut self) -> Result<InverterReading> {
        let b = self.read_model(INVERTER_MODELS).await?;
        Ok(inverter_reading(&b))
    }

    /// Reads the meter model (201-204).
    pub async fn read_meter(&mut self) -> Result<MeterReading> {
        let b = self.read_model(METER_MODELS).await?;
        Ok(meter_reading(&b, self.signs.meter_import_positive))
    }

    /// Reads the battery (802 preferred, 124 otherwise; 124 fills what 802 lacks).
    pub async fn read_battery_state(&mut self) -> Result<BatteryState> {
        let map = self.discover().await?;
        let mut state = BatteryState::default();
        let mut found = false;
        if map.find(&[802]).is_some() {
            let b = self.read_model(&[802]).await?;
            state = battery_802(&b, self.signs.battery_discharge_positive);
            found = true;
        }
        if map.find(&[124]).is_some() {
            let b = self.read_model(&[124]).await?;
            let s = storage_124(&b);
            state.soc = state.soc.or(s.soc);
            state.max_charge = state.max_charge.or(s.max_charge);
            state.max_discharge = state.max_discharge.or(s.max_discharge);
            state.min_reserve = state.min_reserve.or(s.min_reserve);
            found = true;
        }
        if found {
            Ok(state)
        } else {
            Err(DriverError::Layout("no battery model (124 or 802)".into()))
        }
    }

    /// Reads the power limit (model 123, else 704).
    pub async fn read_power_limit(&mut self) -> Result<PowerLimitState> {
        let b = self.read_model(&[123, 704]).await?;
        Ok(power_limit(&b))
    }

    /// Limits output to `limit` percent with a reversion timeout (model 123, else 704).
    ///
    /// The reversion makes the inverter drop the limit by itself if the controller stops
    /// refreshing it; a zero reversion is refused.
    pub async fn write_power_limit(&mut self, limit: Percent, reversion: Duration) -> Result<()> {
        let secs = reversion.as_secs();
        if secs == 0 {
            return Err(DriverError::Invalid(
                "a power limit needs a reversion timeout of at least 1 s".into(),
            ));
        }
        let pct = limit.clamped().get();
        let b = self.read_model(&[123, 704]).await?;
        let sf = b
            .sf_of("WMaxLimPct")
            .ok_or(DriverError::NotImplemented("WMaxLimPct_SF"))?;
        let raw = unscale(pct, sf, PointType::U16).ok_or_else(|| {
            DriverError::Invalid(format!("{pct} % does not fit with scale factor {sf}"))
        })?;
        let addr = |name: &'static str| b.address_of(name).ok_or(DriverError::NotImplemented(name));
        if b.id == 123 {
            let rvrt = u16::try_from(secs)
                .unwrap_or(u16::MAX - 1)
                .min(u16::MAX - 1);
            self.io
                .write_register(addr("WMaxLimPct_RvrtTms")?, rvrt)
                .await?;
            self.io.write_register(addr("WMaxLimPct")?, raw).await?;
            self.io.write_register(addr("WMaxLim_Ena")?, 1).await
        } else {
            let full = unscale(100.0, sf, PointType::U16)
                .ok_or(DriverError::NotImplemented("WMaxLimPctRvrt"))?;
            let rvrt = u32::try_from(secs)
                .unwrap_or(u32::MAX - 1)
                .min(u32::MAX - 1);
            // WMaxLimPctEna, WMaxLimPct, WMaxLimPctRvrt, WMaxLimPctEnaRvrt, WMaxLimPctRvrtTms.
            let words = [1, raw, full, 0, (rvrt >> 16) as u16, rvrt as u16];
            // The last word must be inside the model too, or the block spills into the next.
            addr("WMaxLimPctRvrtTms")?;
            self.io
                .write_registers(addr("WMaxLimPctEna")?, &words)
                .await
        }
    }

    /// Disables the power limit now.
    pub async fn disable_power_limit(&mut self) -> Result<()> {
        let b = self.read_model(&[123, 704]).await?;
        let name = if b.id == 123 {
            "WMaxLim_Ena"
        } else {
            "WMaxLimPctEna"
        };
        let a = b
            .address_of(name)
            .ok_or(DriverError::NotImplemented("WMaxLim_Ena"))?;
        self.io.write_register(a, 0).await
    }

    /// Sets charge and discharge limits through model 124 (`InWRte`/`OutWRte` in percent of
    /// `WChaMax`, with `InOutWRte_RvrtTms`, then `StorCtl_Mod`).
    pub async fn write_battery_setpoint(
        &mut self,
        setpoint: BatterySetpoint,
        reversion: Duration,
    ) -> Result<()> {
        let b = self.read_model(&[124]).await?;
        let wchamax = b
            .scaled("WChaMax")
            .filter(|v| *v > 0.0)
            .ok_or(DriverError::NotImplemented("WChaMax"))?;
        let sf = b
            .sf_of("InWRte")
            .ok_or(DriverError::NotImplemented("InOutWRte_SF"))?;
        let pct = |w: Option<Watts>| -> Result<u16> {
            let p = w.map_or(100.0, |w| (w.get().max(0.0) / wchamax * 100.0).min(100.0));
            unscale(p, sf, PointType::I16)
                .ok_or_else(|| DriverError::Invalid(format!("{p} % does not fit")))
        };
        let out_raw = pct(setpoint.max_discharge)?;
        let in_raw = pct(setpoint.max_charge)?;
        let rvrt = u16::try_from(reversion.as_secs())
            .unwrap_or(u16::MAX - 1)
            .min(u16::MAX - 1);
        let start = b
            .address_of("OutWRte")
            .ok_or(DriverError::NotImplemented("OutWRte"))?;
        // OutWRte, InWRte, InOutWRte_WinTms, InOutWRte_RvrtTms are contiguous; the last must be
        // inside the model the device reported, or the block spills into the next.
        b.address_of("InOutWRte_RvrtTms")
            .ok_or(DriverError::NotImplemented("InOutWRte_RvrtTms"))?;
        self.io
            .write_registers(start, &[out_raw, in_raw, 0, rvrt])
            .await?;
        let mode = u16::from(setpoint.max_charge.is_some())
            | (u16::from(setpoint.max_discharge.is_some()) << 1);
        let a = b
            .address_of("StorCtl_Mod")
            .ok_or(DriverError::NotImplemented("StorCtl_Mod"))?;
        self.io.write_register(a, mode).await
    }
}

/// Decodes an inverter block (101-103, 111-113, 701).
pub fn inverter_reading(b: &ModelBlock) -> InverterReading {
    if b.id == 701 {
        return InverterReading {
            model: 701,
            ac_power: w(b.scaled("W")),
            energy_total: b.scaled("TotWhInj").map(WattHours),
            state: b.int("InvSt").and_then(|v| i64::try_from(v).ok()),
        };
    }
    InverterReading {
        model: b.id,
        ac_power: w(b.scaled("W")),
        energy_total: b.scaled("WH").map(WattHours),
        state: b.int("St").and_then(|v| i64::try_from(v).ok()),
    }
}

/// Decodes a meter block (201-204).
pub fn meter_reading(b: &ModelBlock, import_positive: bool) -> MeterReading {
    let sign = if import_positive { 1.0 } else { -1.0 };
    let p = |n| b.scaled(n).map(|v| Watts(v * sign));
    MeterReading {
        power: p("W"),
        phase_power: [p("WphA"), p("WphB"), p("WphC")],
        energy_import: b.scaled("TotWhImp").map(WattHours),
        energy_export: b.scaled("TotWhExp").map(WattHours),
    }
}

/// Decodes a battery block (802).
pub fn battery_802(b: &ModelBlock, discharge_positive: bool) -> BatteryState {
    let sign = if discharge_positive { 1.0 } else { -1.0 };
    BatteryState {
        soc: b.scaled("SoC").map(Percent),
        power: b.scaled("W").map(|v| Watts(v * sign)),
        max_charge: w(b.scaled("WChaRteMax")),
        max_discharge: w(b.scaled("WDisChaRteMax")),
        min_reserve: b.scaled("SoCRsvMin").map(Percent),
    }
}

/// Decodes a storage block (124).
pub fn storage_124(b: &ModelBlock) -> BatteryState {
    let max = b.scaled("WChaMax");
    BatteryState {
        soc: b.scaled("ChaState").map(Percent),
        power: None,
        max_charge: w(max),
        max_discharge: w(max),
        min_reserve: b.scaled("MinRsvPct").map(Percent),
    }
}

/// Decodes a controls block (123 or 704).
pub fn power_limit(b: &ModelBlock) -> PowerLimitState {
    let enabled = |n| b.int(n).map(|v| v == 1);
    if b.id == 704 {
        PowerLimitState {
            enabled: enabled("WMaxLimPctEna"),
            percent: b.scaled("WMaxLimPct").map(Percent),
            reversion_secs: b
                .int("WMaxLimPctRvrtTms")
                .and_then(|v| u32::try_from(v).ok()),
        }
    } else {
        PowerLimitState {
            enabled: enabled("WMaxLim_Ena"),
            percent: b.scaled("WMaxLimPct").map(Percent),
            reversion_secs: b
                .int("WMaxLimPct_RvrtTms")
                .and_then(|v| u32::try_from(v).ok()),
        }
    }
}

impl PowerMeter for SunSpecDevice {
    fn read_power(&mut self) -> DriverFuture<'_, Watts> {
        Box::pin(async move {
            let map = self.discover().await?;
            if map.find(INVERTER_MODELS).is_some() {
                self.read_inverter()
                    .await?
                    .ac_power
                    .ok_or(DriverError::NotImplemented("W"))
            } else if map.find(METER_MODELS).is_some() {
                self.read_meter()
                    .await?
                    .power
                    .ok_or(DriverError::NotImplemented("W"))
            } else {
                self.read_battery_state()
                    .await?
                    .power
                    .ok_or(DriverError::NotImplemented("W"))
            }
        })
    }
}

impl EnergyMeter for SunSpecDevice {
    fn read_energy(&mut self) -> DriverFuture<'_, WattHours> {
        Box::pin(async move {
            let map = self.discover().await?;
            if map.find(INVERTER_MODELS).is_some() {
                self.read_inverter()
                    .await?
                    .energy_total
                    .ok_or(DriverError::NotImplemented("WH"))
            } else {
                self.read_meter()
                    .await?
                    .energy_import
                    .ok_or(DriverError::NotImplemented("TotWhImp"))
            }
        })
    }
}

impl BatteryReader for SunSpecDevice {
    fn read_battery(&mut self) -> DriverFuture<'_, BatteryState> {
        Box::pin(self.read_battery_state())
    }
}

impl PowerLimiter for SunSpecDevice {
    fn set_power_limit(&mut self, limit: Percent, reversion: Duration) -> DriverFuture<'_, ()> {
        Box::pin(self.write_power_limit(limit, reversion))
    }

    fn clear_power_limit(&mut self) -> DriverFuture<'_, ()> {
        Box::pin(self.disable_power_limit())
    }
}

impl BatteryControl for SunSpecDevice {
    fn set_battery_setpoint(
        &mut self,
        setpoint: BatterySetpoint,
        reversion: Duration,
    ) -> DriverFuture<'_, ()> {
        Box::pin(self.write_battery_setpoint(setpoint, reversion))
    }
}
