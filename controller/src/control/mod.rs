//! The control cycle: read every device into one process image, decide, actuate, record.
//!
//! - [`model`]: the configuration as planner input (tiers, health loads, the health reserve).
//! - [`core`]: the pure decision step with every fail-safe rule; tested OpenEMS style, one cycle
//!   at a time with hand-written images.
//! - [`io`]: device pollers, plugs and setpoints over MQTT, actuation confirmed by the devices.
//! - [`status`]: the banner (grid state and sentence), made from the loads' decisions.
//! - [`runtime`]: the loop over a closed set of events, publishing for the API, page and records.

pub mod core;
pub mod credits;
pub mod io;
pub mod model;
pub mod runtime;
pub mod status;
