//! Records: the names of every series the controller writes (`schema`), their renderings for
//! Prometheus (`/metrics`) and InfluxDB (line protocol), the InfluxDB writer with its on-disk
//! outage buffer (`influx`, `buffer`), the state published on MQTT (`mqtt_state`), and the
//! site's own five-minute history for the what-if replay (`history`).

pub mod buffer;
pub mod history;
pub mod influx;
pub mod mqtt_state;
pub mod schema;
