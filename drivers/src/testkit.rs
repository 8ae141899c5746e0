//! Test harness: a real mosquitto broker for MQTT tests, from `COMMUNALIA_MQTT_URL` when set,
//! otherwise started on a free loopback port and killed on drop; a connected bus on it; and
//! [`wait_until`], the one way tests wait for something to happen (a deadline, never a fixed
//! sleep).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::mqtt::{MqttBus, MqttConfig};

/// The mosquitto binary used when no broker URL is given.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A broker for tests.
#[derive(Debug)]
pub struct Mosquitto {
    host: String,
    port: u16,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    /// Lines appended to the broker's configuration.
    extra: String,
}

impl Mosquitto {
    /// Uses `COMMUNALIA_MQTT_URL` if set, otherwise starts mosquitto on a free port and waits
    /// until it accepts connections.
    pub fn start() -> std::io::Result<Self> {
        if let Ok(url) = std::env::var("COMMUNALIA_MQTT_URL") {
            let cfg = MqttConfig::from_url(&url, "probe").map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?;
            let m = Self {
                host: cfg.host,
                port: cfg.port,
                child: None,
                dir: None,
                extra: String::new(),
            };
            m.wait_ready(Duration::from_secs(10))?;
            return Ok(m);
        }
        Self::start_local("")
    }

    /// Starts mosquitto on a free loopback port whatever the environment says, with `extra`
    /// appended to its configuration (e.g. `max_connections -1\n`), and waits until it accepts
    /// connections.
    pub fn start_local(extra: &str) -> std::io::Result<Self> {
        let mut m = Self {
            host: "127.0.0.1".into(),
            port: free_port()?,
            child: None,
            dir: Some(tempfile::tempdir()?),
            extra: extra.to_owned(),
        };
        m.spawn()?;
        Ok(m)
    }

    /// Whether the mosquitto binary is installed.
    pub fn installed() -> bool {
        std::path::Path::new(MOSQUITTO).exists()
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| std::io::Error::other("external broker cannot be restarted"))?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\n{}",
                self.port, self.extra
            ),
        )?;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    /// Waits until the broker accepts a TCP connection.
    pub fn wait_ready(&self, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match TcpStream::connect((self.host.as_str(), self.port)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Broker host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Broker port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://host:port`.
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host, self.port)
    }

    /// A client configuration with a unique client id built from `name`.
    pub fn config(&self, name: &str) -> MqttConfig {
        MqttConfig::new(self.host.clone(), self.port, unique(name))
    }

    /// A bus with a unique client id built from `name`, connected (panics after `timeout`).
    pub async fn connected_bus(&self, name: &str, timeout: Duration) -> MqttBus {
        let bus = MqttBus::start(&self.config(name));
        if let Err(e) = bus.wait_connected(timeout).await {
            panic!(
                "bus {name} could not connect to the test broker at {}: {e}",
                self.url()
            );
        }
        bus
    }

    /// Whether this harness owns the broker process (and can stop and restart it).
    pub fn owns_broker(&self) -> bool {
        self.dir.is_some()
    }

    /// Kills the broker (only when this harness started it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on (just bound and released: another process may take it
/// before the caller binds it, which tests accept).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first of `n` consecutive free loopback ports (the demo's Modbus devices take consecutive
/// ports from one base).
pub fn free_ports(n: u16) -> std::io::Result<u16> {
    for _ in 0..50 {
        let base = free_port()?;
        if base.checked_add(n).is_none() {
            continue;
        }
        if (1..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no {n} consecutive free loopback ports"),
    ))
}

/// A name unique to this process and call, so tests sharing one broker do not collide.
pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{name}-{}-{n}-{nanos:x}", std::process::id())
}

/// How often [`wait_until`] checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `condition` every [`POLL_INTERVAL`] until it holds; panics naming `what` if it still
/// does not after `timeout`. Returns as soon as it holds, so a generous timeout costs nothing
/// when things work and spares a loaded machine a spurious failure.
///
/// The condition is an async closure, so it may read a device (`async || dev.read().await.is_ok()`)
/// or only look at state (`async || plug.status().online == Some(true)`).
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_returns_once_the_condition_holds() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        wait_until("the third call", Duration::from_secs(10), async || {
            calls += 1;
            calls == 3
        })
        .await;
        assert_eq!(calls, 3);
        assert!(start.elapsed() >= POLL_INTERVAL * 2);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 100ms waiting for the impossible")]
    async fn wait_until_panics_naming_what_it_waited_for_after_the_timeout() {
        wait_until("the impossible", Duration::from_millis(100), async || false).await;
    }
}
