//! Driver errors: the device said no, the transport failed, or the data made no sense.

use std::time::Duration;

/// A Modbus exception code as the device sent it.
pub type ExceptionCode = u8;

/// Everything a driver call can fail with.
///
/// [`DriverError::Exception`] means the device is alive and refused; the transport variants mean
/// nothing usable came back. [`DriverError::is_retryable`] says whether trying again may help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriverError {
    /// The device answered with a Modbus exception (it is alive).
    #[error("device refused the request: modbus exception 0x{code:02x} ({})", exception_name(*.code))]
    Exception {
        /// The exception code (0x01 illegal function, 0x02 illegal address, ...).
        code: ExceptionCode,
    },
    /// No answer within the per-request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made, was refused, reset or closed.
    #[error("transport failed: {0}")]
    Transport(String),
    /// A reconnection is not due yet (backoff after a failure); nothing was sent.
    #[error("reconnecting after a failure, next attempt in {0:?}")]
    Backoff(Duration),
    /// The device answered something malformed (wrong length, bad JSON, header mismatch).
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The device does not have the expected layout (no SunSpec marker, missing model).
    #[error("unsupported device layout: {0}")]
    Layout(String),
    /// The device marks the point "not implemented", or its scale factor is missing.
    #[error("{0} is not implemented by the device")]
    NotImplemented(&'static str),
    /// The device is known to be offline (MQTT last will, or never seen).
    #[error("device is offline")]
    Offline,
    /// The last report is older than the staleness limit.
    #[error("reading is stale")]
    Stale,
    /// A command was sent but the device's report never confirmed it.
    #[error("command not confirmed after {attempts} attempts")]
    NotConfirmed {
        /// How many times the command was sent.
        attempts: u32,
    },
    /// The driver cannot do this at all (capability missing, value out of range).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl DriverError {
    /// Whether trying again later may succeed (timeouts, transport failures, busy devices).
    pub fn is_retryable(&self) -> bool {
        match self {
            DriverError::Exception { code } => matches!(code, 0x04 | 0x05 | 0x06 | 0x0B),
            DriverError::Timeout(_)
            | DriverError::Transport(_)
            | DriverError::Backoff(_)
            | DriverError::Malformed(_)
            | DriverError::Offline
            | DriverError::Stale
            | DriverError::NotConfirmed { .. } => true,
            DriverError::Layout(_) | DriverError::NotImplemented(_) | DriverError::Invalid(_) => {
                false
            }
        }
    }

    /// Whether the device showed it is alive (it answered, even if with a refusal).
    pub fn device_alive(&self) -> bool {
        match self {
            // 0x0B: the gateway answered but the device behind it is silent.
            DriverError::Exception { code } => *code != 0x0B && *code != 0x0A,
            DriverError::NotImplemented(_) | DriverError::Layout(_) => true,
            _ => false,
        }
    }
}

/// The name of a Modbus exception code.
pub fn exception_name(code: ExceptionCode) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target failed to respond",
        _ => "unknown",
    }
}

/// Results of driver calls.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_devices_are_worth_retrying_but_illegal_addresses_are_not() {
        assert!(DriverError::Exception { code: 0x06 }.is_retryable());
        assert!(!DriverError::Exception { code: 0x02 }.is_retryable());
        assert!(DriverError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!DriverError::NotImplemented("W").is_retryable());
    }

    #[test]
    fn an_exception_shows_the_device_is_alive_but_a_timeout_does_not() {
        assert!(DriverError::Exception { code: 0x02 }.device_alive());
        assert!(!DriverError::Exception { code: 0x0B }.device_alive());
        assert!(!DriverError::Timeout(Duration::from_secs(1)).device_alive());
    }
}
