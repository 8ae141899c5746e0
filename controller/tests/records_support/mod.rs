//! Shared by the controller's integration tests: a real victoria-metrics on a free port (killed
//! on drop), free ports, a minimal HTTP GET (and its JSON), the demo's banner, and a synthetic
//! village state.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use communalia::state::*;

pub const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

pub fn free_port() -> u16 {
    communalia_drivers::testkit::free_port().expect("a free loopback port")
}

/// The first of three consecutive free ports (the demo's inverter, battery, meter).
pub fn three_free_ports() -> u16 {
    communalia_drivers::testkit::free_ports(3).expect("three consecutive free ports")
}

/// `GET path` on loopback `port`, as JSON, when it answers 200 with JSON.
pub fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    match try_get(port, path) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// A child process killed (and reaped) on drop, so a failing assertion leaves none behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `communalia demo` (the binary at `bin`: `env!("CARGO_BIN_EXE_communalia")`, which only
/// the controller's own tests know) with its page on loopback `http`, its devices from `modbus`
/// and its broker on `mqtt`, with `extra` arguments, and waits for its banner.
pub fn start_demo<S: AsRef<std::ffi::OsStr>>(
    bin: &str,
    http: u16,
    modbus: u16,
    mqtt: u16,
    extra: &[S],
) -> (KillOnDrop, String) {
    let mut child = Command::new(bin)
        .arg("demo")
        .args(extra)
        .arg("--http")
        .arg(format!("127.0.0.1:{http}"))
        .args(["--modbus-port-base", &modbus.to_string()])
        .args(["--mqtt-port", &mqtt.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = wait_for_demo_banner(&mut child);
    (KillOnDrop(child), banner)
}

/// Reads a started `communalia demo`'s stdout up to its last banner line ("Ctrl-C ..."); kills
/// it and panics if it stops first. Returns the banner.
pub fn wait_for_demo_banner(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().expect("the demo's stdout piped"));
    let mut banner = String::new();
    while !banner.contains("Ctrl-C") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("the demo stopped before it was ready:\n{banner}");
        }
        banner.push_str(&line);
    }
    banner
}

/// A victoria-metrics process with its own data folder.
pub struct Victoria {
    pub port: u16,
    data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Victoria {
    pub fn start() -> Self {
        Self::start_with(free_port(), Vec::new())
    }

    pub fn start_with(port: u16, extra: Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Victoria {
            port,
            data: dir.path().join("data"),
            _dir: Some(dir),
            extra,
            child: None,
        };
        v.spawn();
        v
    }

    fn spawn(&mut self) {
        let child = Command::new(VICTORIA_METRICS)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data.display()))
            .arg("-loggerLevel=ERROR")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics runs (install it: .ci/test)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = try_get(self.port, "/health")
                && body.trim() == "OK"
            {
                return;
            }
            assert!(Instant::now() < deadline, "victoria-metrics did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stops the server gracefully (SIGTERM), so what it acknowledged is on its disk: a
    /// SIGKILL loses the last second of acknowledged samples, which is not what this tests.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and data folder.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn get(&self, path: &str) -> String {
        let (status, body) = try_get(self.port, path).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Makes freshly written samples visible to queries and exports.
    pub fn force_flush(&self) {
        self.get("/internal/force_flush");
    }

    /// Every raw sample of the series matching `selector`: (labels, values, timestamps in ms).
    pub fn export(&self, selector: &str) -> Vec<Exported> {
        self.force_flush();
        let body = self.get(&format!("/api/v1/export?match[]={}&start=0", enc(selector)));
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Exported>(l).unwrap())
            .collect()
    }

    /// A PromQL instant query; the `result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let body = self.get(&format!("/api/v1/query?query={}", enc(promql)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct Exported {
    pub metric: std::collections::BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET path` over HTTP/1.0; (status, body).
pub fn try_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Waits for `cond`, at most `timeout`; false if it never held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small village: PV, a battery, two tiers, three loads, two devices.
pub fn village(site: &str) -> StateView {
    StateView {
        time: "2026-11-24T12:00:00Z".into(),
        site: SiteView {
            id: site.into(),
            name: "Kalinzu".into(),
            utc_offset_minutes: 180,
        },
        available_watts: 2100.0,
        pv_watts: Some(3200.5),
        consumption_watts: Some(1900.0),
        battery: Some(BatteryView {
            soc_percent: Some(55.5),
            watts: Some(-300.0),
        }),
        grid_state: GridState::Tight,
        status: String::new(),
        dry_run: false,
        devices: vec![
            DeviceView {
                id: "inverter".into(),
                name: "Inverter".into(),
                online: true,
                last_seen: Some("2026-11-24T12:00:00Z".into()),
            },
            DeviceView {
                id: "meter".into(),
                name: "Meter".into(),
                online: false,
                last_seen: None,
            },
        ],
        tiers: vec![
            TierView {
                name: "health".into(),
                rank: 1,
                demanded_watts: 300.0,
                served_watts: 300.0,
            },
            TierView {
                name: "workshop".into(),
                rank: 2,
                demanded_watts: 2500.0,
                served_watts: 1800.0,
            },
        ],
        loads: vec![
            LoadView {
                id: "clinic_fridge".into(),
                name: "Clinic fridge".into(),
                tier: "health".into(),
                rank: 1,
                on: true,
                allocated_watts: 120.0,
                measured_watts: Some(118.0),
                reported_on: Some(true),
                reason: "on".into(),
                fault: None,
            },
            LoadView {
                id: "welder".into(),
                name: "Welder".into(),
                tier: "workshop".into(),
                rank: 2,
                on: false,
                allocated_watts: 0.0,
                measured_watts: Some(0.0),
                reported_on: Some(false),
                reason: "off: tier 2".into(),
                fault: None,
            },
            LoadView {
                id: "saw".into(),
                name: "Saw".into(),
                tier: "workshop".into(),
                rank: 2,
                on: true,
                allocated_watts: 1800.0,
                measured_watts: Some(1750.0),
                reported_on: Some(true),
                reason: "on".into(),
                fault: None,
            },
        ],
        assembly_errors: vec![],
    }
}
