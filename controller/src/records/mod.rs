//! Records: the names of every series the controller writes (`schema`), their renderings for
//! Prometheus (`/metrics`) and InfluxDB (line protocol), the InfluxDB writer with its on-disk
//! outage buffer (`influx`, `buffer`), and the state published on MQTT (`mqtt_state`).

pub mod buffer;
pub mod influx;
pub mod mqtt_state;
pub mod schema;
