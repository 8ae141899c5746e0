//! Meters over MQTT: Shelly Pro 3EM / EM, a Tasmota SML reader, and a generic JSON meter whose
//! value is picked by a JSON pointer with a unit and a sign. Stale or unparsable readings count
//! as missing, never as zero watts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::error::{DriverError, Result};
use crate::mqtt::{Handler, MqttBus};
use crate::shelly::EmKind;
use crate::tasmota::{self, ParseError, SensorKeys, TasmotaTopics};
use crate::traits::{DriverFuture, EnergyMeter, PowerMeter};
use crate::units::{WattHours, Watts};

/// The unit a generic JSON meter reports in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerUnit {
    /// Watts.
    Watts,
    /// Kilowatts.
    Kilowatts,
}

/// Where a meter's readings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterSource {
    /// Shelly Pro 3EM (`em:0`/`emdata:0`) or EM (`em1:0`/`em1data:0`) under `prefix`.
    ShellyEm {
        /// Topic prefix.
        prefix: String,
        /// Three-phase or single-phase.
        kind: EmKind,
    },
    /// A Tasmota SML reader's `tele/<topic>/SENSOR`, keys configurable.
    TasmotaSml {
        /// Topics.
        topics: TasmotaTopics,
        /// Where power and energy sit.
        keys: SensorKeys,
    },
    /// Any JSON message: the power at `pointer`, in `unit`, negated if `invert`.
    Json {
        /// Topic.
        topic: String,
        /// JSON pointer to the power (`""` for a bare number).
        pointer: String,
        /// Unit of the value.
        unit: PowerUnit,
        /// Negate (when the source counts export as positive).
        invert: bool,
    },
}

/// Parses a generic JSON meter message.
pub fn parse_json_power(
    payload: &[u8],
    pointer: &str,
    unit: PowerUnit,
    invert: bool,
) -> Result<Watts, ParseError> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| ParseError(e.to_string()))?;
    let at = v
        .pointer(pointer)
        .ok_or_else(|| ParseError(format!("nothing at {pointer:?}")))?;
    let n = match at {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
    .ok_or_else(|| ParseError(format!("{pointer:?} is not a number")))?;
    let w = match unit {
        PowerUnit::Watts => n,
        PowerUnit::Kilowatts => n * 1000.0,
    };
    if !w.is_finite() {
        return Err(ParseError(format!("{pointer:?} is out of range: {n}")));
    }
    Ok(Watts(if invert { -w } else { w }))
}

/// What the meter last reported.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MeterState {
    /// Last good power reading (cleared by an unparsable one).
    pub power: Option<Watts>,
    /// Last energy reading.
    pub energy: Option<WattHours>,
    /// Unparsable messages so far.
    pub malformed: u64,
    /// Availability, when the device publishes it.
    pub online: Option<bool>,
    /// When the power reading arrived.
    #[serde(skip)]
    pub power_at: Option<Instant>,
}

/// A meter on a shared MQTT connection.
#[derive(Debug)]
pub struct MqttMeter {
    state: watch::Receiver<MeterState>,
    stale_after: Duration,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Counts a payload that could not be read; the last good values stay as they were.
fn note_malformed(s: &mut MeterState, topic: &str, e: &ParseError) {
    s.malformed += 1;
    if s.malformed == 1 || s.malformed.is_power_of_two() {
        tracing::warn!(topic, error = %e, count = s.malformed, "malformed meter payload ignored");
    }
}

fn set_power(
    tx: &watch::Sender<MeterState>,
    topic: &str,
    r: std::result::Result<Option<Watts>, ParseError>,
) {
    tx.send_modify(|s| match r {
        Ok(Some(w)) => {
            s.power = Some(w);
            s.power_at = Some(now());
        }
        Ok(None) => {
            s.power = None;
        }
        Err(e) => {
            s.power = None;
            note_malformed(s, topic, &e);
        }
    });
}

impl MqttMeter {
    /// Subscribes to the meter's topics; readings older than `stale_after` count as missing.
    pub async fn attach(bus: &MqttBus, source: MeterSource, stale_after: Duration) -> Result<Self> {
        let (tx, rx) = watch::channel(MeterState::default());
        let tx = Arc::new(tx);
        let mut routes: Vec<(String, Handler)> = Vec::new();
        match source {
            MeterSource::ShellyEm { prefix, kind } => {
                let (t, topic) = (Arc::clone(&tx), kind.power_topic(&prefix));
                let name = topic.clone();
                routes.push((
                    topic,
                    Arc::new(move |p: &[u8]| set_power(&t, &name, kind.parse_power(p).map(Some))),
                ));
                let (t, topic) = (Arc::clone(&tx), kind.energy_topic(&prefix));
                let name = topic.clone();
                routes.push((
                    topic,
                    // A bad energy message is counted; the last good counter reading stays.
                    Arc::new(move |p: &[u8]| match kind.parse_energy(p) {
                        Ok(e) => t.send_modify(|s| s.energy = Some(e)),
                        Err(e) => t.send_modify(|s| note_malformed(s, &name, &e)),
                    }),
                ));
                let t = Arc::clone(&tx);
                routes.push((
                    format!("{prefix}/online"),
                    Arc::new(move |p: &[u8]| {
                        let o = crate::shelly::parse_online(p);
                        t.send_modify(|s| s.online = o);
                    }),
                ));
            }
            MeterSource::TasmotaSml { topics, keys } => {
                let (t, topic) = (Arc::clone(&tx), topics.tele("SENSOR"));
                let name = topic.clone();
                routes.push((
                    topic,
                    Arc::new(move |p: &[u8]| match tasmota::parse_sensor(p, &keys) {
                        Ok(r) => {
                            set_power(&t, &name, Ok(r.power));
                            if r.energy.is_some() {
                                t.send_modify(|s| s.energy = r.energy);
                            }
                        }
                        Err(e) => set_power(&t, &name, Err(e)),
                    }),
                ));
                let t = Arc::clone(&tx);
                routes.push((
                    topics.tele("LWT"),
                    Arc::new(move |p: &[u8]| {
                        let o = tasmota::parse_lwt(p);
                        t.send_modify(|s| s.online = o);
                    }),
                ));
            }
            MeterSource::Json {
                topic,
                pointer,
                unit,
                invert,
            } => {
                let t = Arc::clone(&tx);
                let name = topic.clone();
                routes.push((
                    topic,
                    Arc::new(move |p: &[u8]| {
                        set_power(
                            &t,
                            &name,
                            parse_json_power(p, &pointer, unit, invert).map(Some),
                        )
                    }),
                ));
            }
        }
        for (topic, h) in routes {
            bus.subscribe(&topic, h).await?;
        }
        Ok(Self {
            state: rx,
            stale_after,
        })
    }

    /// The last state.
    pub fn state(&self) -> MeterState {
        self.state.borrow().clone()
    }

    /// The power, if fresh: offline, stale, unparsable or never heard is an error, never 0 W.
    pub fn power(&self) -> Result<Watts> {
        let s = self.state.borrow();
        if s.online == Some(false) {
            return Err(DriverError::Offline);
        }
        match (s.power, s.power_at) {
            (Some(w), Some(at)) if now().saturating_duration_since(at) <= self.stale_after => Ok(w),
            (Some(_), _) => Err(DriverError::Stale),
            (None, None) => Err(DriverError::Offline),
            (None, Some(_)) => Err(DriverError::Malformed("last reading unparsable".into())),
        }
    }
}

impl PowerMeter for MqttMeter {
    fn read_power(&mut self) -> DriverFuture<'_, Watts> {
        Box::pin(async move { self.power() })
    }
}

impl EnergyMeter for MqttMeter {
    fn read_energy(&mut self) -> DriverFuture<'_, WattHours> {
        Box::pin(async move {
            self.state()
                .energy
                .ok_or(DriverError::NotImplemented("energy"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_finite_value_that_overflows_once_scaled_is_refused_not_infinite() {
        let r = parse_json_power(br#"{"p":1e306}"#, "/p", PowerUnit::Kilowatts, false);
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn a_json_pointer_picks_the_value_with_its_unit_and_sign() {
        let p = br#"{"grid":{"power":{"value":"1.5","unit":"kW"}}}"#;
        assert_eq!(
            parse_json_power(p, "/grid/power/value", PowerUnit::Kilowatts, false),
            Ok(Watts(1500.0))
        );
        assert_eq!(
            parse_json_power(br#"{"p":200}"#, "/p", PowerUnit::Watts, true),
            Ok(Watts(-200.0))
        );
        assert_eq!(
            parse_json_power(b"42", "", PowerUnit::Watts, false),
            Ok(Watts(42.0))
        );
    }

    #[test]
    fn a_missing_or_non_numeric_value_is_an_error_not_zero() {
        assert!(parse_json_power(br#"{"p":null}"#, "/p", PowerUnit::Watts, false).is_err());
        assert!(parse_json_power(br#"{"q":1}"#, "/p", PowerUnit::Watts, false).is_err());
        assert!(parse_json_power(b"not json", "/p", PowerUnit::Watts, false).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic_the_json_meter(payload in prop::collection::vec(any::<u8>(), 0..200), ptr in "(/[a-z0-9~]{0,4}){0,3}") {
            let _ = parse_json_power(&payload, &ptr, PowerUnit::Kilowatts, true);
        }
    }
}
