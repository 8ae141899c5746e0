//! Thin Modbus TCP client adapter: per-request timeouts, reconnection with backoff, and
//! exceptions ("the device said no") kept apart from transport failures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::{Request, Response, Slave};

use crate::error::{DriverError, Result};
use crate::sunspec::discovery::RegisterReader;

/// Where and how to reach a Modbus TCP device.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusConfig {
    /// `host:port`.
    pub address: String,
    /// Unit id (1 for most SunSpec devices, 100 for a Victron GX system).
    pub unit: u8,
    /// Per-request timeout, also used for connecting.
    pub timeout: Duration,
    /// First reconnection delay after a failure.
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
}

impl ModbusConfig {
    /// A configuration with defaults: unit 1, 1 s timeout, backoff 0.5 s to 30 s.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            unit: 1,
            timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }

    /// Sets the unit id.
    pub fn unit(mut self, unit: u8) -> Self {
        self.unit = unit;
        self
    }

    /// Sets the per-request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the reconnection backoff range.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }
}

/// Exponential backoff state, pure: the caller passes `now`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    next_try: Option<Instant>,
}

impl Backoff {
    /// A backoff doubling from `min` up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failures: 0,
            next_try: None,
        }
    }

    /// The delay the next failure will impose.
    pub fn delay(&self) -> Duration {
        let factor = 1u32 << self.failures.min(16);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Records a failure at `now`.
    pub fn fail(&mut self, now: Instant) {
        self.next_try = Some(now + self.delay());
        self.failures = self.failures.saturating_add(1);
    }

    /// Records a success.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.next_try = None;
    }

    /// How long until a new attempt is allowed (`None`: now).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.next_try
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A Modbus TCP connection that reconnects by itself.
///
/// Each request has the configured timeout. A timeout or transport failure drops the
/// connection (a late answer must not be taken for the next one); the next request reconnects,
/// unless the backoff says to wait, in which case it fails at once with
/// [`DriverError::Backoff`] without touching the network.
pub struct ModbusTcp {
    config: ModbusConfig,
    ctx: Option<Context>,
    backoff: Backoff,
}

impl std::fmt::Debug for ModbusTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusTcp")
            .field("config", &self.config)
            .field("connected", &self.ctx.is_some())
            .finish()
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl ModbusTcp {
    /// A client; nothing is connected until the first request.
    pub fn new(config: ModbusConfig) -> Self {
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        Self {
            config,
            ctx: None,
            backoff,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ModbusConfig {
        &self.config
    }

    /// Drops the connection; the next request reconnects.
    pub fn disconnect(&mut self) {
        self.ctx = None;
    }

    async fn connect(&mut self) -> Result<()> {
        if let Some(wait) = self.backoff.remaining(now()) {
            return Err(DriverError::Backoff(wait));
        }
        let timeout = self.config.timeout;
        let attempt = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.config.address)
                .await
                .map_err(|e| {
                    DriverError::Transport(format!("resolve {}: {e}", self.config.address))
                })?
                .collect();
            let mut last =
                DriverError::Transport(format!("{} resolves to nothing", self.config.address));
            for addr in addrs {
                match tokio_modbus::client::tcp::connect_slave(addr, Slave(self.config.unit)).await
                {
                    Ok(ctx) => return Ok(ctx),
                    Err(e) => last = DriverError::Transport(format!("connect {addr}: {e}")),
                }
            }
            Err(last)
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::Timeout(timeout)),
        };
        match result {
            Ok(ctx) => {
                tracing::debug!(address = %self.config.address, "modbus connected");
                self.ctx = Some(ctx);
                Ok(())
            }
            Err(e) => {
                self.backoff.fail(now());
                Err(e)
            }
        }
    }

    /// Sends one request and returns the device's response.
    pub async fn request(&mut self, request: Request<'_>) -> Result<Response> {
        if self.ctx.is_none() {
            self.connect().await?;
        }
        let timeout = self.config.timeout;
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(DriverError::Transport("not connected".into()));
        };
        match tokio::time::timeout(timeout, ctx.call(request)).await {
            Err(_) => {
                self.ctx = None;
                self.backoff.fail(now());
                Err(DriverError::Timeout(timeout))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                // Reset or closed: reconnect at once on the next request (the device may
                // just have restarted); repeated failures back off in `connect`.
                self.ctx = None;
                Err(DriverError::Transport(e.to_string()))
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                self.ctx = None;
                Err(DriverError::Malformed(e.to_string()))
            }
            Ok(Ok(Err(code))) => {
                self.backoff.reset();
                Err(DriverError::Exception {
                    code: u8::from(code),
                })
            }
            Ok(Ok(Ok(response))) => {
                self.backoff.reset();
                Ok(response)
            }
        }
    }

    /// Reads holding registers (function 0x03), checking the count.
    pub async fn read_holding_registers(&mut self, address: u16, count: u16) -> Result<Vec<u16>> {
        match self
            .request(Request::ReadHoldingRegisters(address, count))
            .await?
        {
            Response::ReadHoldingRegisters(words) => check_count(words, count, address),
            other => Err(DriverError::Malformed(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    /// Reads input registers (function 0x04), checking the count.
    pub async fn read_input_registers(&mut self, address: u16, count: u16) -> Result<Vec<u16>> {
        match self
            .request(Request::ReadInputRegisters(address, count))
            .await?
        {
            Response::ReadInputRegisters(words) => check_count(words, count, address),
            other => Err(DriverError::Malformed(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    /// Writes one register (function 0x06).
    pub async fn write_register(&mut self, address: u16, word: u16) -> Result<()> {
        match self
            .request(Request::WriteSingleRegister(address, word))
            .await?
        {
            Response::WriteSingleRegister(..) => Ok(()),
            other => Err(DriverError::Malformed(format!(
                "unexpected response {other:?}"
            ))),
        }
    }

    /// Writes registers (function 0x10), at most 123.
    pub async fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<()> {
        if words.is_empty() || words.len() > 123 {
            return Err(DriverError::Invalid(format!(
                "cannot write {} registers at once",
                words.len()
            )));
        }
        match self
            .request(Request::WriteMultipleRegisters(address, words.into()))
            .await?
        {
            Response::WriteMultipleRegisters(..) => Ok(()),
            other => Err(DriverError::Malformed(format!(
                "unexpected response {other:?}"
            ))),
        }
    }
}

fn check_count(words: Vec<u16>, count: u16, address: u16) -> Result<Vec<u16>> {
    if words.len() == usize::from(count) {
        Ok(words)
    } else {
        Err(DriverError::Malformed(format!(
            "asked {count} registers at {address}, got {}",
            words.len()
        )))
    }
}

impl RegisterReader for ModbusTcp {
    async fn read_holding(&mut self, address: u16, count: u16) -> Result<Vec<u16>> {
        self.read_holding_registers(address, count).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets_on_success() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        b.fail(t0);
        assert_eq!(b.remaining(t0), Some(Duration::from_millis(100)));
        b.fail(t0);
        assert_eq!(b.remaining(t0), Some(Duration::from_millis(200)));
        b.fail(t0);
        assert_eq!(b.remaining(t0), Some(Duration::from_millis(350)));
        assert_eq!(b.remaining(t0 + Duration::from_secs(1)), None);
        b.reset();
        assert_eq!(b.remaining(t0), None);
        assert_eq!(b.failures(), 0);
    }
}
