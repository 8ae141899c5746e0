//! Simulated Tasmota plug with energy monitoring, speaking Tasmota's MQTT protocol.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::mqtt::MqttConfig;
use crate::mqtt_sim::{MqttBehaviour, MqttSim, Outgoing};

use super::TasmotaTopics;

/// The state of a simulated Tasmota plug.
#[derive(Debug, Clone)]
pub struct TasmotaPlug {
    topics: TasmotaTopics,
    /// Relay state.
    pub on: bool,
    /// Power drawn when on.
    pub nominal_watts: f64,
    /// Relay state after a power cut: 0 off, 1 on, 2 toggle, 3 last (default), 4 on and locked.
    pub power_on_state: u8,
    /// Telemetry period.
    pub tele_period: Duration,
    /// Energy counter in kWh.
    pub total_kwh: f64,
    started: Instant,
    last_energy: Instant,
    /// Commands received.
    pub commands: u64,
}

/// Local time in Tasmota's format (`2026-06-01T12:00:00`, UTC here).
pub fn tasmota_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl TasmotaPlug {
    /// A plug with topic `topic`, `nominal_watts` when on, telemetry every `tele_period`.
    pub fn new(topics: TasmotaTopics, nominal_watts: f64, tele_period: Duration) -> Self {
        let now = Instant::now();
        Self {
            topics,
            on: false,
            nominal_watts,
            power_on_state: 3,
            tele_period,
            total_kwh: 1.0,
            started: now,
            last_energy: now,
            commands: 0,
        }
    }

    /// Starts it on the broker (client id = the topic).
    pub fn start(self, broker: &MqttConfig) -> MqttSim<TasmotaPlug> {
        let cfg = broker.with_client_id(format!("tasmota-{}", self.topics.topic));
        MqttSim::start(cfg, self)
    }

    /// The power drawn now.
    pub fn power(&self) -> f64 {
        if self.on { self.nominal_watts } else { 0.0 }
    }

    /// Simulates a power cut and return: the relay follows `PowerOnState`.
    pub fn power_cycle(&mut self) {
        self.on = match self.power_on_state {
            0 => false,
            1 | 4 | 5 => true,
            2 => !self.on,
            _ => self.on,
        };
    }

    fn integrate(&mut self) {
        let now = Instant::now();
        self.total_kwh +=
            self.power() * now.duration_since(self.last_energy).as_secs_f64() / 3_600_000.0;
        self.last_energy = now;
    }

    fn power_word(&self) -> &'static str {
        if self.on { "ON" } else { "OFF" }
    }

    fn energy_json(&self) -> serde_json::Value {
        let p = self.power();
        json!({"TotalStartTime": "2026-01-01T00:00:00", "Total": (self.total_kwh * 1000.0).round() / 1000.0,
               "Yesterday": 0.5, "Today": 0.2, "Period": 0, "Power": p.round(), "ApparentPower": (p * 1.05).round(),
               "ReactivePower": (p * 0.3).round(), "Factor": if p > 0.0 { 0.95 } else { 0.0 }, "Voltage": 230,
               "Current": ((p / 230.0) * 1000.0).round() / 1000.0})
    }

    fn power_reply(&self) -> Vec<Outgoing> {
        let key = self.topics.power_key();
        vec![
            (
                self.topics.stat("RESULT"),
                json!({ key.clone(): self.power_word() })
                    .to_string()
                    .into_bytes(),
                false,
            ),
            (
                self.topics.stat(&key),
                self.power_word().as_bytes().to_vec(),
                false,
            ),
        ]
    }

    fn command(&mut self, cmd: &str, arg: &str) -> Vec<Outgoing> {
        self.commands += 1;
        let key = self.topics.power_key();
        let upper = cmd.to_ascii_uppercase();
        let arg = arg.trim();
        if upper == key || (self.topics.relay == 1 && upper == "POWER") {
            self.integrate();
            let locked = self.power_on_state == 4;
            match arg.to_ascii_uppercase().as_str() {
                "" => {}
                "ON" | "1" | "TRUE" => self.on = true,
                "OFF" | "0" | "FALSE" if !locked => self.on = false,
                "TOGGLE" | "2" if !locked => self.on = !self.on,
                "OFF" | "0" | "FALSE" | "TOGGLE" | "2" => {}
                _ => {
                    return vec![(
                        self.topics.stat("RESULT"),
                        br#"{"Command":"Error"}"#.to_vec(),
                        false,
                    )];
                }
            }
            return self.power_reply();
        }
        let result = match upper.as_str() {
            "POWERONSTATE" => {
                if let Some(n) = arg.parse::<u8>().ok().filter(|n| *n <= 5) {
                    self.power_on_state = n;
                }
                json!({"PowerOnState": self.power_on_state})
            }
            "TELEPERIOD" => {
                if let Ok(n) = arg.parse::<u64>() {
                    let n = if n == 1 { 300 } else { n.clamp(10, 3600) };
                    self.tele_period = Duration::from_secs(n);
                }
                json!({"TelePeriod": self.tele_period.as_secs()})
            }
            "STATUS" if arg == "8" || arg == "10" => {
                self.integrate();
                let body = json!({"StatusSNS": {"Time": tasmota_time(SystemTime::now()), "ENERGY": self.energy_json()}});
                return vec![(
                    self.topics.stat(&format!("STATUS{arg}")),
                    body.to_string().into_bytes(),
                    false,
                )];
            }
            "BACKLOG" => {
                let mut out = Vec::new();
                for part in arg.split(';') {
                    let part = part.trim();
                    if part.is_empty() {
                        continue;
                    }
                    let (c, a) = part.split_once(' ').unwrap_or((part, ""));
                    out.extend(self.command(c, a));
                }
                return out;
            }
            _ => json!({"Command": "Unknown"}),
        };
        vec![(
            self.topics.stat("RESULT"),
            result.to_string().into_bytes(),
            false,
        )]
    }
}

impl MqttBehaviour for TasmotaPlug {
    fn will(&self) -> (String, Vec<u8>) {
        (self.topics.tele("LWT"), b"Offline".to_vec())
    }

    fn subscriptions(&self) -> Vec<String> {
        vec![self.topics.cmnd("#"), "cmnd/tasmotas/#".into()]
    }

    fn on_connect(&mut self) -> Vec<Outgoing> {
        vec![(self.topics.tele("LWT"), b"Online".to_vec(), true)]
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Vec<Outgoing> {
        let Some(cmd) = topic.rsplit('/').next() else {
            return Vec::new();
        };
        let arg = String::from_utf8_lossy(payload).into_owned();
        self.command(cmd, &arg)
    }

    fn telemetry(&mut self) -> Vec<Outgoing> {
        self.integrate();
        let time = tasmota_time(SystemTime::now());
        let state = json!({"Time": time, "Uptime": format!("0T00:{:02}:00", self.started.elapsed().as_secs() / 60 % 60),
            "UptimeSec": self.started.elapsed().as_secs(), "Heap": 25, "SleepMode": "Dynamic", "Sleep": 50, "LoadAvg": 19,
            "MqttCount": 1, self.topics.power_key(): self.power_word(),
            "Wifi": {"AP": 1, "SSId": "communalia", "RSSI": 80, "Signal": -60, "LinkCount": 1, "Downtime": "0T00:00:03"}});
        let sensor = json!({"Time": time, "ENERGY": self.energy_json()});
        vec![
            (
                self.topics.tele("STATE"),
                state.to_string().into_bytes(),
                false,
            ),
            (
                self.topics.tele("SENSOR"),
                sensor.to_string().into_bytes(),
                false,
            ),
        ]
    }

    fn period(&self) -> Duration {
        self.tele_period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasmota_time_is_a_local_iso_timestamp() {
        let t = UNIX_EPOCH + Duration::from_secs(1_780_315_200);
        assert_eq!(tasmota_time(t), "2026-06-01T12:00:00");
    }

    #[test]
    fn power_commands_switch_and_reply_on_result_and_power() {
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0, Duration::from_secs(10));
        let out = p.command("POWER", "ON");
        assert!(p.on);
        assert_eq!(
            out[0],
            (
                "stat/t1/RESULT".into(),
                br#"{"POWER":"ON"}"#.to_vec(),
                false
            )
        );
        assert_eq!(out[1], ("stat/t1/POWER".into(), b"ON".to_vec(), false));
        p.command("Power", "toggle");
        assert!(!p.on);
    }

    #[test]
    fn power_on_state_four_locks_the_relay_on() {
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0, Duration::from_secs(10));
        p.command("Backlog", "PowerOnState 4; Power ON");
        p.command("POWER", "OFF");
        assert!(p.on);
    }

    #[test]
    fn a_power_cycle_follows_power_on_state() {
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0, Duration::from_secs(10));
        p.command("PowerOnState", "1");
        p.power_cycle();
        assert!(p.on);
        p.command("PowerOnState", "0");
        p.power_cycle();
        assert!(!p.on);
    }
}
