//! Records: the names of every series the controller writes, and their renderings for
//! Prometheus (`/metrics`) and InfluxDB (line protocol).

pub mod buffer;
pub mod influx;
pub mod schema;
