//! Physical quantities with their unit in the type: watts, watt-hours, percent.

use serde::{Deserialize, Serialize};

/// Active power in watts. Sign conventions are stated where a value is produced.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Watts(pub f64);

/// Energy in watt-hours.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct WattHours(pub f64);

/// A percentage, 0 to 100 for states of charge and limits.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
pub struct Percent(pub f64);

impl Percent {
    /// The same share as a fraction (50 % is 0.5), as the planner counts a state of charge.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl Watts {
    /// The value in watts.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl WattHours {
    /// The value in watt-hours.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Builds a value from kilowatt-hours.
    pub fn from_kwh(kwh: f64) -> Self {
        Self(kwh * 1000.0)
    }
}

impl Percent {
    /// The value in percent.
    pub fn get(self) -> f64 {
        self.0
    }

    /// The value clamped into 0..=100 (NaN becomes 0).
    pub fn clamped(self) -> Self {
        if self.0.is_nan() {
            Self(0.0)
        } else {
            Self(self.0.clamp(0.0, 100.0))
        }
    }
}

impl std::fmt::Display for Watts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} W", self.0)
    }
}

impl std::fmt::Display for WattHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} Wh", self.0)
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} %", self.0)
    }
}
