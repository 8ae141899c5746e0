//! SunSpec over Modbus TCP: model tables, pure decoding, discovery, the client and simulators.

pub mod client;
pub mod decode;
pub mod discovery;
pub mod models;
pub mod sim;

pub use client::{
    CommonInfo, InverterReading, MeterReading, PowerLimitState, SignConventions, SunSpecDevice,
};
pub use decode::{ModelBlock, Value};
pub use discovery::{ModelEntry, RegisterReader, SunSpecMap, discover};
