//! Communalia device drivers (crate doc completed below).

pub mod error;
pub mod modbus;
pub mod modbus_sim;
pub mod mqtt;
pub mod mqtt_meter;
pub mod mqtt_sim;
pub mod plug;
pub mod probe;
pub mod regmap;
pub mod scan;
pub mod shelly;
pub mod sunspec;
pub mod tasmota;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod traits;
pub mod units;

pub use error::{DriverError, Result};
pub use traits::*;
pub use units::{Percent, WattHours, Watts};
