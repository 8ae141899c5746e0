//! Device capabilities as small, separate traits with units in their types.
//!
//! Each trait has one job, so a controller can hold `Box<dyn PowerMeter>` for anything that
//! measures power and ask for more only where a device can do more. Futures are boxed so the
//! traits stay object safe.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::Result;
use crate::units::{Percent, WattHours, Watts};

/// A boxed, sendable future returned by capability methods.
pub type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Reads an active power.
///
/// Sign: for inverters, positive is power delivered to AC; for meters, positive is import
/// (consumption at the meter point); for loads, positive is consumption. A "not implemented"
/// value is an error, never a number.
pub trait PowerMeter: Send {
    /// Reads the present active power.
    fn read_power(&mut self) -> DriverFuture<'_, Watts>;
}

/// Reads an energy counter (lifetime total; for meters the imported energy).
pub trait EnergyMeter: Send {
    /// Reads the energy counter.
    fn read_energy(&mut self) -> DriverFuture<'_, WattHours>;
}

/// What a battery reports. Every field is `None` when the device does not implement it.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct BatteryState {
    /// State of charge.
    pub soc: Option<Percent>,
    /// Battery power, positive when discharging (delivering), negative when charging.
    pub power: Option<Watts>,
    /// Largest charge power the battery accepts now.
    pub max_charge: Option<Watts>,
    /// Largest discharge power the battery gives now.
    pub max_discharge: Option<Watts>,
    /// Reserve the battery keeps for itself.
    pub min_reserve: Option<Percent>,
}

/// Reads a battery's state.
pub trait BatteryReader: Send {
    /// Reads SoC, power and limits.
    fn read_battery(&mut self) -> DriverFuture<'_, BatteryState>;
}

/// Limits an inverter's output, with a reversion timeout as a fail-safe.
pub trait PowerLimiter: Send {
    /// Limits active power to `limit` percent of the rated power; the device drops the limit by
    /// itself if it is not rewritten within `reversion`. Call every cycle to keep it.
    fn set_power_limit(&mut self, limit: Percent, reversion: Duration) -> DriverFuture<'_, ()>;
    /// Removes the limit now.
    fn clear_power_limit(&mut self) -> DriverFuture<'_, ()>;
}

/// Charge and discharge setpoints for a battery, as limits in watts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatterySetpoint {
    /// Largest charge power allowed (`None`: no limit).
    pub max_charge: Option<Watts>,
    /// Largest discharge power allowed (`None`: no limit).
    pub max_discharge: Option<Watts>,
}

/// Sets battery charge/discharge limits, with a reversion timeout.
pub trait BatteryControl: Send {
    /// Applies the setpoint; the device reverts to its default after `reversion` without refresh.
    fn set_battery_setpoint(
        &mut self,
        setpoint: BatterySetpoint,
        reversion: Duration,
    ) -> DriverFuture<'_, ()>;
}

/// Switches a load on or off, confirmed from the device's own report.
pub trait LoadSwitch: Send {
    /// Switches and waits for the device to report the new state (retrying with backoff).
    fn switch(&mut self, on: bool) -> DriverFuture<'_, ()>;
    /// The last state the device reported, `None` when unknown.
    fn reported_on(&self) -> Option<bool>;
}

/// Sets an adjustable load's power setpoint.
pub trait LoadSetpoint: Send {
    /// Sets the setpoint.
    fn set_setpoint(&mut self, power: Watts) -> DriverFuture<'_, ()>;
}
