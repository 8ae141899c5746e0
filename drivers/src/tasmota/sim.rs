//! Simulated Tasmota device with energy monitoring, speaking Tasmota's MQTT protocol as the
//! stock firmware does. Defaults are stock: one relay, `SetOption26 0`, `TelePeriod 300`,
//! `PowerOnState 3`; [`TasmotaPlug::relays`], [`TasmotaPlug::set_option26`] and
//! [`TasmotaPlug::tele_period`] give the variants.
//!
//! Sources for the behaviour (Tasmota firmware and its docs, <https://tasmota.github.io/docs/Commands/>):
//! - relay `n` is named by `GetPowerDevice` (tasmota/tasmota_support/support_tasmota.ino):
//!   `POWER`, with `n` appended when `devices_present + SetOption26 > 1`; `MqttPublishPowerState`
//!   publishes `stat/<t>/RESULT {"<name>":"ON"}` then `stat/<t>/<name> ON`, and `MqttShowState`
//!   puts the same names into `tele/<t>/STATE`;
//! - `Power` without an index is relay 1; an index above the relays present is not a command;
//! - on connecting, `MqttConnected` publishes every relay's state (`MqttPublishAllPowerState`);
//! - `TelePeriod`: 0 disables telemetry, 1 resets to the default 300, 10..3600 seconds; an empty
//!   payload reports it as `{"TelePeriod":300}`;
//! - `State` answers on `stat/<t>/RESULT` with what `tele/<t>/STATE` carries;
//! - `Status 10` (and the older `Status 8`) answer on `stat/<t>/STATUS10` with `{"StatusSNS":{...}}`;
//! - `PowerOnState` 0 off, 1 on, 2 toggle, 3 last state (default), 4 on and locked, 5 on after
//!   `PulseTime` (treated as on here).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::mqtt::MqttConfig;
use crate::mqtt_sim::{MqttBehaviour, MqttSim, Outgoing};

use super::TasmotaTopics;

/// Tasmota's default `TelePeriod`.
pub const STOCK_TELE_PERIOD: Duration = Duration::from_secs(300);

/// The state of a simulated Tasmota device.
#[derive(Debug, Clone)]
pub struct TasmotaPlug {
    /// FullTopic and Topic (its `relay` is not used: a device has relays, not a relay).
    topics: TasmotaTopics,
    /// Relay states, `POWER1` first.
    pub relays: Vec<bool>,
    /// Power drawn by the load on each relay when that relay is on.
    pub nominal_watts: f64,
    /// Relay state after a power cut: 0 off, 1 on, 2 toggle, 3 last (default), 4 on and locked.
    pub power_on_state: u8,
    /// `SetOption26`: name relay 1 `POWER1` even on a single-relay device.
    pub set_option26: bool,
    /// Telemetry period (`TelePeriod`; zero: telemetry disabled).
    pub tele_period: Duration,
    /// Energy counter in kWh.
    pub total_kwh: f64,
    started: Instant,
    last_energy: Instant,
    /// Commands received (any).
    pub commands: u64,
    /// `Power` commands that asked for a state (`ON`, `OFF`, `TOGGLE`), not mere queries.
    pub switch_commands: u64,
    /// Switch commands that asked for the state the relay was already in.
    pub redundant_switches: u64,
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
    /// A stock single-relay plug with Topic `topics.topic`, `nominal_watts` when on.
    pub fn new(topics: TasmotaTopics, nominal_watts: f64) -> Self {
        let now = Instant::now();
        Self {
            topics,
            relays: vec![false],
            nominal_watts,
            power_on_state: 3,
            set_option26: false,
            tele_period: STOCK_TELE_PERIOD,
            total_kwh: 1.0,
            started: now,
            last_energy: now,
            commands: 0,
            switch_commands: 0,
            redundant_switches: 0,
        }
    }

    /// With `n` relays (1..=8), all off.
    pub fn relays(mut self, n: usize) -> Self {
        self.relays = vec![false; n.clamp(1, 8)];
        self
    }

    /// With `SetOption26` set (relay 1 named `POWER1` even when it is the only one).
    pub fn set_option26(mut self, on: bool) -> Self {
        self.set_option26 = on;
        self
    }

    /// With another `TelePeriod` (as an installer would set it; zero disables telemetry).
    pub fn tele_period(mut self, period: Duration) -> Self {
        self.tele_period = period;
        self
    }

    /// Starts it on the broker (client id = the topic).
    pub fn start(self, broker: &MqttConfig) -> MqttSim<TasmotaPlug> {
        let cfg = broker.with_client_id(format!("tasmota-{}", self.topics.topic));
        MqttSim::start(cfg, self)
    }

    /// Whether relay 1 is on.
    pub fn on(&self) -> bool {
        self.relay(1)
    }

    /// Whether relay `n` (1-based) is on; `false` for a relay the device does not have.
    pub fn relay(&self, n: usize) -> bool {
        n.checked_sub(1)
            .and_then(|i| self.relays.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// Sets relay `n` (1-based) as a button press would, without any MQTT message.
    pub fn set_relay(&mut self, n: usize, on: bool) {
        self.integrate();
        if let Some(r) = n.checked_sub(1).and_then(|i| self.relays.get_mut(i)) {
            *r = on;
        }
    }

    /// The power drawn now (every relay that is on draws `nominal_watts`).
    pub fn power(&self) -> f64 {
        self.relays.iter().filter(|on| **on).count() as f64 * self.nominal_watts
    }

    /// Simulates a power cut and return: the relays follow `PowerOnState`.
    pub fn power_cycle(&mut self) {
        let pos = self.power_on_state;
        for on in &mut self.relays {
            *on = match pos {
                0 => false,
                1 | 4 | 5 => true,
                2 => !*on,
                _ => *on,
            };
        }
    }

    fn integrate(&mut self) {
        let now = Instant::now();
        self.total_kwh +=
            self.power() * now.duration_since(self.last_energy).as_secs_f64() / 3_600_000.0;
        self.last_energy = now;
    }

    /// `GetPowerDevice`: `POWER`, or `POWERn` with several relays or `SetOption26 1`.
    fn power_device(&self, n: usize) -> String {
        if self.relays.len() + usize::from(self.set_option26) > 1 {
            format!("POWER{n}")
        } else {
            "POWER".into()
        }
    }

    fn word(on: bool) -> &'static str {
        if on { "ON" } else { "OFF" }
    }

    fn energy_json(&self) -> serde_json::Value {
        let p = self.power();
        json!({"TotalStartTime": "2026-01-01T00:00:00", "Total": (self.total_kwh * 1000.0).round() / 1000.0,
               "Yesterday": 0.5, "Today": 0.2, "Period": 0, "Power": p.round(), "ApparentPower": (p * 1.05).round(),
               "ReactivePower": (p * 0.3).round(), "Factor": if p > 0.0 { 0.95 } else { 0.0 }, "Voltage": 230,
               "Current": ((p / 230.0) * 1000.0).round() / 1000.0})
    }

    /// `MqttPublishPowerState(n)`: `stat/<t>/RESULT` then `stat/<t>/<name>`.
    fn power_state(&self, n: usize) -> Vec<Outgoing> {
        let key = self.power_device(n);
        let word = Self::word(self.relay(n));
        vec![
            (
                self.topics.stat("RESULT"),
                json!({ key.clone(): word }).to_string().into_bytes(),
                false,
            ),
            (self.topics.stat(&key), word.as_bytes().to_vec(), false),
        ]
    }

    /// The relay a `Power`/`PowerN` command addresses (`Power` is relay 1), if the device has it.
    fn power_index(&self, upper: &str) -> Option<usize> {
        let rest = upper.strip_prefix("POWER")?;
        let n = if rest.is_empty() {
            1
        } else {
            rest.parse::<usize>().ok()?
        };
        (1..=self.relays.len()).contains(&n).then_some(n)
    }

    fn command(&mut self, cmd: &str, arg: &str) -> Vec<Outgoing> {
        self.commands += 1;
        let upper = cmd.to_ascii_uppercase();
        let arg = arg.trim();
        if let Some(n) = self.power_index(&upper) {
            self.integrate();
            let locked = self.power_on_state == 4;
            let on = self.relay(n);
            let want = match arg.to_ascii_uppercase().as_str() {
                "" => None,
                "ON" | "1" | "TRUE" => Some(true),
                "OFF" | "0" | "FALSE" => Some(false),
                "TOGGLE" | "2" => Some(!on),
                _ => {
                    return vec![(
                        self.topics.stat("RESULT"),
                        br#"{"Command":"Error"}"#.to_vec(),
                        false,
                    )];
                }
            };
            if let Some(want) = want {
                self.switch_commands += 1;
                if self.relay(n) == want {
                    self.redundant_switches += 1;
                }
                // PowerOnState 4 locks the relays on.
                if want || !locked {
                    self.set_relay(n, want);
                }
            }
            return self.power_state(n);
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
                    let n = match n {
                        0 => 0,
                        1 => STOCK_TELE_PERIOD.as_secs(),
                        n => n.clamp(10, 3600),
                    };
                    self.tele_period = Duration::from_secs(n);
                }
                json!({"TelePeriod": self.tele_period.as_secs()})
            }
            "STATE" => self.state_json(),
            "SETOPTION26" => {
                match arg.to_ascii_uppercase().as_str() {
                    "1" | "ON" => self.set_option26 = true,
                    "0" | "OFF" => self.set_option26 = false,
                    _ => {}
                }
                json!({"SetOption26": Self::word(self.set_option26)})
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
        let mut out = vec![(self.topics.tele("LWT"), b"Online".to_vec(), true)];
        for n in 1..=self.relays.len() {
            out.extend(self.power_state(n));
        }
        out
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Vec<Outgoing> {
        let Some(cmd) = topic.rsplit('/').next() else {
            return Vec::new();
        };
        let arg = String::from_utf8_lossy(payload).into_owned();
        self.command(cmd, &arg)
    }

    fn telemetry(&mut self) -> Vec<Outgoing> {
        if self.tele_period.is_zero() {
            return Vec::new();
        }
        self.integrate();
        let sensor = json!({"Time": tasmota_time(SystemTime::now()), "ENERGY": self.energy_json()});
        vec![
            (
                self.topics.tele("STATE"),
                self.state_json().to_string().into_bytes(),
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
        // A disabled TelePeriod sends nothing (see `telemetry`); the runner still needs a tick.
        if self.tele_period.is_zero() {
            STOCK_TELE_PERIOD
        } else {
            self.tele_period
        }
    }
}

impl TasmotaPlug {
    /// `MqttShowState`: what `tele/<t>/STATE` and the `State` command carry.
    fn state_json(&mut self) -> serde_json::Value {
        self.integrate();
        let time = tasmota_time(SystemTime::now());
        let mut state = json!({"Time": time, "Uptime": format!("0T00:{:02}:00", self.started.elapsed().as_secs() / 60 % 60),
            "UptimeSec": self.started.elapsed().as_secs(), "Heap": 25, "SleepMode": "Dynamic", "Sleep": 50, "LoadAvg": 19,
            "MqttCount": 1,
            "Wifi": {"AP": 1, "SSId": "communalia", "RSSI": 80, "Signal": -60, "LinkCount": 1, "Downtime": "0T00:00:03"}});
        for n in 1..=self.relays.len() {
            state[self.power_device(n)] = json!(Self::word(self.relay(n)));
        }
        state
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
    fn a_stock_single_relay_plug_names_its_relay_power_without_index() {
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0);
        assert_eq!(p.tele_period, Duration::from_secs(300));
        let out = p.command("POWER1", "ON");
        assert!(p.on());
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
        assert!(!p.on());
        p.command("Power", "");
        assert_eq!(p.switch_commands, 2, "a query is not a switch command");
    }

    #[test]
    fn set_option26_or_several_relays_put_the_index_in_every_name() {
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0).set_option26(true);
        let out = p.command("POWER", "ON");
        assert_eq!(out[1], ("stat/t1/POWER1".into(), b"ON".to_vec(), false));
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0).relays(4);
        let out = p.command("POWER3", "ON");
        assert_eq!(out[0].1, br#"{"POWER3":"ON"}"#.to_vec());
        assert!(p.relay(3) && !p.relay(1));
        let state = p.telemetry();
        let v: serde_json::Value = serde_json::from_slice(&state[0].1).unwrap();
        assert_eq!(
            (v["POWER1"].as_str(), v["POWER3"].as_str()),
            (Some("OFF"), Some("ON"))
        );
        assert!(v.get("POWER").is_none());
        // A relay the device does not have is no command.
        let out = p.command("POWER5", "ON");
        assert_eq!(out[0].1, br#"{"Command":"Unknown"}"#.to_vec());
    }

    #[test]
    fn tele_period_is_reported_and_one_resets_it_to_300() {
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0);
        assert_eq!(
            p.command("TelePeriod", "")[0].1,
            br#"{"TelePeriod":300}"#.to_vec()
        );
        p.command("TelePeriod", "5");
        assert_eq!(p.tele_period, Duration::from_secs(10));
        p.command("TelePeriod", "1");
        assert_eq!(p.tele_period, Duration::from_secs(300));
        p.command("TelePeriod", "0");
        assert!(p.telemetry().is_empty());
    }

    #[test]
    fn power_on_state_four_locks_the_relay_on() {
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0);
        p.command("Backlog", "PowerOnState 4; Power ON");
        p.command("POWER", "OFF");
        assert!(p.on());
    }

    #[test]
    fn a_power_cycle_follows_power_on_state() {
        let mut p = TasmotaPlug::new(TasmotaTopics::new("t1"), 100.0);
        p.command("PowerOnState", "1");
        p.power_cycle();
        assert!(p.on());
        p.command("PowerOnState", "0");
        p.power_cycle();
        assert!(!p.on());
    }
}
