//! Smart plugs over MQTT (Tasmota and Shelly): switching confirmed from the device's own
//! report and retried with backoff, availability from the last will, the device-side
//! fail-safe, and energy telemetry. Malformed payloads are counted and logged, never fatal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::error::{DriverError, Result};
use crate::mqtt::{Handler, MqttBus};
use crate::shelly::{self, ShellyTopics};
use crate::tasmota::{self, SensorKeys, TasmotaTopics};
use crate::traits::{DriverFuture, EnergyMeter, LoadSwitch, PowerMeter};
use crate::units::{WattHours, Watts};

/// Which plug protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlugKind {
    /// Tasmota, with where its `SENSOR` readings sit.
    Tasmota(TasmotaTopics, SensorKeys),
    /// Shelly Gen2+.
    Shelly(ShellyTopics),
}

/// Timing of confirmation and retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlugOptions {
    /// How long to wait for the device's report after each command.
    pub confirm_timeout: Duration,
    /// Commands sent at most.
    pub attempts: u32,
    /// Pause before the second attempt, doubled after each further failure.
    pub backoff: Duration,
    /// Power readings older than this count as missing.
    pub stale_after: Duration,
}

impl Default for PlugOptions {
    fn default() -> Self {
        Self {
            confirm_timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(500),
            stale_after: Duration::from_secs(60),
        }
    }
}

/// The outcome of a Shelly RPC: its result, or its error code and message.
pub type RpcOutcome = std::result::Result<serde_json::Value, (i64, String)>;

/// What the plug last reported.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PlugStatus {
    /// Availability (last will): `None` until heard.
    pub online: Option<bool>,
    /// Relay state: `None` until reported.
    pub on: Option<bool>,
    /// Active power from the last telemetry.
    pub power: Option<Watts>,
    /// Energy counter from the last telemetry.
    pub energy: Option<WattHours>,
    /// Relay state reports received.
    pub reports: u64,
    /// Payloads that could not be parsed.
    pub malformed: u64,
    /// Fail-safe confirmed by the device (Tasmota `PowerOnState`, Shelly `initial_state`).
    pub fail_safe: Option<String>,
    /// When the power reading arrived.
    #[serde(skip)]
    pub power_at: Option<Instant>,
    /// When anything was last heard from the device.
    #[serde(skip)]
    pub last_seen: Option<Instant>,
    #[serde(skip)]
    rpc: Vec<(u64, RpcOutcome)>,
    /// Ids of this plug's RPC requests not answered yet: the replies it takes.
    #[serde(skip)]
    pending: VecDeque<u64>,
}

/// Unanswered requests remembered per plug; older ones are given up.
const MAX_PENDING: usize = 64;

/// A plug on a shared MQTT connection.
#[derive(Debug)]
pub struct MqttPlug {
    bus: MqttBus,
    kind: PlugKind,
    options: PlugOptions,
    state: watch::Receiver<PlugStatus>,
    tx: Arc<watch::Sender<PlugStatus>>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn malformed(tx: &watch::Sender<PlugStatus>, topic: &str, err: &dyn std::fmt::Display) {
    tx.send_modify(|s| {
        s.malformed += 1;
        if s.malformed == 1 || s.malformed.is_power_of_two() {
            tracing::warn!(topic, error = %err, count = s.malformed, "malformed plug payload ignored");
        }
    });
}

fn handler(f: impl Fn(&[u8]) + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

impl MqttPlug {
    /// Subscribes to the plug's topics on `bus`.
    pub async fn attach(bus: &MqttBus, kind: PlugKind, options: PlugOptions) -> Result<Self> {
        let (tx, rx) = watch::channel(PlugStatus::default());
        let tx = Arc::new(tx);
        let mut routes: Vec<(String, Handler)> = Vec::new();
        match &kind {
            PlugKind::Tasmota(t, keys) => {
                let key = t.power_key();
                for topic in [t.stat("RESULT"), t.tele("STATE")] {
                    let (tx, key, name) = (Arc::clone(&tx), key.clone(), topic.clone());
                    routes.push((
                        topic,
                        handler(move |p| match tasmota::parse_power_json(p, &key) {
                            Ok(state) => tx.send_modify(|s| {
                                s.last_seen = Some(now());
                                if let Some(on) = state {
                                    s.on = Some(on);
                                    s.reports += 1;
                                }
                                if let Ok(Some(n)) = tasmota::parse_power_on_state(p) {
                                    s.fail_safe = Some(format!("PowerOnState {n}"));
                                }
                            }),
                            Err(e) => malformed(&tx, &name, &e),
                        }),
                    ));
                }
                {
                    let (tx, name) = (Arc::clone(&tx), t.stat(&key));
                    routes.push((
                        name.clone(),
                        handler(move |p| match tasmota::parse_power_word(p) {
                            Some(on) => tx.send_modify(|s| {
                                s.on = Some(on);
                                s.reports += 1;
                                s.last_seen = Some(now());
                            }),
                            None => malformed(&tx, &name, &"not ON/OFF"),
                        }),
                    ));
                }
                for topic in [t.tele("SENSOR"), t.stat("STATUS8"), t.stat("STATUS10")] {
                    let (tx, keys, name) = (Arc::clone(&tx), keys.clone(), topic.clone());
                    routes.push((
                        topic,
                        handler(move |p| match tasmota::parse_sensor(p, &keys) {
                            Ok(r) => tx.send_modify(|s| {
                                let t = now();
                                s.last_seen = Some(t);
                                s.power = r.power;
                                s.power_at = r.power.map(|_| t);
                                if r.energy.is_some() {
                                    s.energy = r.energy;
                                }
                            }),
                            Err(e) => {
                                tx.send_modify(|s| s.power = None);
                                malformed(&tx, &name, &e);
                            }
                        }),
                    ));
                }
                {
                    let (tx, name) = (Arc::clone(&tx), t.tele("LWT"));
                    routes.push((
                        name.clone(),
                        handler(move |p| match tasmota::parse_lwt(p) {
                            Some(online) => tx.send_modify(|s| {
                                s.online = Some(online);
                                if online {
                                    s.last_seen = Some(now());
                                }
                            }),
                            None => malformed(&tx, &name, &"not Online/Offline"),
                        }),
                    ));
                }
            }
            PlugKind::Shelly(t) => {
                let apply = |s: &mut PlugStatus, st: shelly::SwitchStatus| {
                    let t = now();
                    s.last_seen = Some(t);
                    if let Some(on) = st.output {
                        s.on = Some(on);
                        s.reports += 1;
                    }
                    if st.power.is_some() {
                        s.power = st.power;
                        s.power_at = Some(t);
                    }
                    if st.energy.is_some() {
                        s.energy = st.energy;
                    }
                };
                {
                    let (tx, name) = (Arc::clone(&tx), t.switch_status());
                    routes.push((
                        name.clone(),
                        handler(move |p| match shelly::parse_switch_status(p) {
                            Ok(st) => tx.send_modify(|s| apply(s, st)),
                            Err(e) => malformed(&tx, &name, &e),
                        }),
                    ));
                }
                {
                    let (tx, name, id) = (Arc::clone(&tx), t.events(), t.switch_id);
                    routes.push((
                        name.clone(),
                        handler(move |p| match shelly::parse_notify(p, id) {
                            Ok(Some(st)) => tx.send_modify(|s| apply(s, st)),
                            Ok(None) => {}
                            Err(e) => malformed(&tx, &name, &e),
                        }),
                    ));
                }
                {
                    let (tx, name) = (Arc::clone(&tx), t.online());
                    routes.push((
                        name.clone(),
                        handler(move |p| match shelly::parse_online(p) {
                            Some(online) => tx.send_modify(|s| {
                                s.online = Some(online);
                                if online {
                                    s.last_seen = Some(now());
                                }
                            }),
                            None => malformed(&tx, &name, &"not true/false"),
                        }),
                    ));
                }
                {
                    // Replies to this bus's client id: several plugs share the topic, and each
                    // takes only the replies to its own requests, matched by id (unique on the
                    // connection). The reply's `src` is the device id, which need not be the
                    // topic prefix, so it says nothing about which plug asked.
                    let (tx, name) = (Arc::clone(&tx), ShellyTopics::reply_topic(bus.client_id()));
                    routes.push((
                        name.clone(),
                        handler(move |p| match shelly::parse_rpc_reply(p) {
                            Ok(reply) => {
                                tx.send_if_modified(|s| {
                                    let Some(at) = s.pending.iter().position(|i| *i == reply.id)
                                    else {
                                        return false;
                                    };
                                    s.pending.remove(at);
                                    if let Ok(result) = &reply.outcome {
                                        if let Some(on) = result
                                            .get("output")
                                            .and_then(serde_json::Value::as_bool)
                                        {
                                            s.on = Some(on);
                                            s.reports += 1;
                                        }
                                        if let Some(w) = result
                                            .get("apower")
                                            .and_then(serde_json::Value::as_f64)
                                            .filter(|f| f.is_finite())
                                        {
                                            s.power = Some(Watts(w));
                                            s.power_at = Some(now());
                                        }
                                    }
                                    s.last_seen = Some(now());
                                    s.rpc.push((reply.id, reply.outcome));
                                    if s.rpc.len() > 32 {
                                        s.rpc.drain(..1);
                                    }
                                    true
                                });
                            }
                            Err(e) => malformed(&tx, &name, &e),
                        }),
                    ));
                }
            }
        }
        for (topic, h) in routes {
            bus.subscribe(&topic, h).await?;
        }
        Ok(Self {
            bus: bus.clone(),
            kind,
            options,
            state: rx,
            tx,
        })
    }

    /// The last reported status.
    pub fn status(&self) -> PlugStatus {
        self.state.borrow().clone()
    }

    /// The protocol and topics.
    pub fn kind(&self) -> &PlugKind {
        &self.kind
    }

    /// A fresh request id, registered as this plug's before the request goes out.
    fn rpc_id(&self) -> u64 {
        let id = self.bus.next_request_id();
        self.tx.send_if_modified(|s| {
            s.pending.push_back(id);
            if s.pending.len() > MAX_PENDING {
                s.pending.pop_front();
            }
            false
        });
        id
    }

    /// Asks the device to report its relay state now.
    pub async fn query(&self) -> Result<()> {
        match &self.kind {
            PlugKind::Tasmota(t, _) => self.bus.publish(&t.cmnd(&t.power_key()), Vec::new()).await,
            PlugKind::Shelly(t) => {
                let id = self.rpc_id();
                self.bus
                    .publish(&t.rpc(), t.switch_get_status(id, self.bus.client_id()))
                    .await
            }
        }
    }

    /// Waits up to `timeout` for the first relay report (after [`Self::query`]).
    pub async fn wait_report(&self, timeout: Duration) -> Result<PlugStatus> {
        let mut rx = self.state.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|s| s.on.is_some())).await {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => Err(DriverError::Transport("plug state channel closed".into())),
            Err(_) => Err(DriverError::Timeout(timeout)),
        }
    }

    async fn send_switch(&self, on: bool) -> Result<Option<u64>> {
        match &self.kind {
            PlugKind::Tasmota(t, _) => {
                let (topic, payload) = t.power_command(on);
                self.bus.publish(&topic, payload).await?;
                Ok(None)
            }
            PlugKind::Shelly(t) => {
                let id = self.rpc_id();
                self.bus
                    .publish(&t.rpc(), t.switch_set(id, self.bus.client_id(), on))
                    .await?;
                let get = self.rpc_id();
                self.bus
                    .publish(&t.rpc(), t.switch_get_status(get, self.bus.client_id()))
                    .await?;
                Ok(Some(id))
            }
        }
    }

    /// Switches and waits until the device reports the new state, retrying with backoff.
    ///
    /// A plug known to be offline fails at once with [`DriverError::Offline`]; a Shelly RPC
    /// error is [`DriverError::Invalid`] (the device refused); no confirmation after every
    /// attempt is [`DriverError::NotConfirmed`].
    pub async fn switch_confirmed(&self, on: bool) -> Result<()> {
        let mut pause = self.options.backoff;
        for attempt in 1..=self.options.attempts.max(1) {
            if self.state.borrow().online == Some(false) {
                return Err(DriverError::Offline);
            }
            let before = self.state.borrow().reports;
            let rpc = self.send_switch(on).await?;
            let mut rx = self.state.clone();
            let waited = tokio::time::timeout(
                self.options.confirm_timeout,
                rx.wait_for(|s| {
                    (s.reports > before && s.on == Some(on))
                        || rpc.is_some_and(|id| s.rpc.iter().any(|(i, r)| *i == id && r.is_err()))
                }),
            )
            .await
            .map(|r| {
                r.map(
                    |s| match rpc.and_then(|id| s.rpc.iter().find(|(i, _)| *i == id)) {
                        Some((_, Err((code, message)))) => Err(DriverError::Invalid(format!(
                            "device refused Switch.Set: {code} {message}"
                        ))),
                        _ => Ok(()),
                    },
                )
            });
            if let Ok(Ok(outcome)) = waited {
                return outcome;
            }
            tracing::debug!(attempt, on, "plug did not confirm, retrying");
            if attempt < self.options.attempts {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
            }
        }
        Err(DriverError::NotConfirmed {
            attempts: self.options.attempts.max(1),
        })
    }

    /// Sets the device-side fail-safe from the load's tier (on after a power cut for health
    /// loads, off otherwise) and waits for the device to confirm it.
    pub async fn set_fail_safe(&self, health: bool) -> Result<()> {
        let mut pause = self.options.backoff;
        for attempt in 1..=self.options.attempts.max(1) {
            let mut rx = self.state.clone();
            match &self.kind {
                PlugKind::Tasmota(t, _) => {
                    let (topic, payload) = t.power_on_state_command(health);
                    let want = format!("PowerOnState {}", tasmota::power_on_state(health));
                    self.bus.publish(&topic, payload).await?;
                    let ok = tokio::time::timeout(
                        self.options.confirm_timeout,
                        rx.wait_for(|s| s.fail_safe.as_deref() == Some(want.as_str())),
                    )
                    .await
                    .map(|r| r.is_ok())
                    .unwrap_or(false);
                    if ok {
                        return Ok(());
                    }
                }
                PlugKind::Shelly(t) => {
                    let id = self.rpc_id();
                    self.bus
                        .publish(
                            &t.rpc(),
                            t.set_initial_state(id, self.bus.client_id(), health),
                        )
                        .await?;
                    let ok = tokio::time::timeout(
                        self.options.confirm_timeout,
                        rx.wait_for(|s| s.rpc.iter().any(|(i, _)| *i == id)),
                    )
                    .await
                    .map(|r| {
                        r.map(|s| match s.rpc.iter().find(|(i, _)| *i == id) {
                            Some((_, Err((code, message)))) => Err(DriverError::Invalid(format!(
                                "device refused Switch.SetConfig: {code} {message}"
                            ))),
                            _ => Ok(()),
                        })
                    });
                    if let Ok(Ok(outcome)) = ok {
                        if outcome.is_ok() {
                            let state = shelly::initial_state(health);
                            tracing::debug!(initial_state = state, "shelly fail-safe confirmed");
                            self.tx.send_modify(|s| {
                                s.fail_safe = Some(format!("initial_state {state}"));
                            });
                        }
                        return outcome;
                    }
                }
            }
            if attempt < self.options.attempts {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
            }
        }
        Err(DriverError::NotConfirmed {
            attempts: self.options.attempts.max(1),
        })
    }

    /// The last power reading, if fresh and the plug is not offline.
    pub fn power(&self) -> Result<Watts> {
        let s = self.state.borrow();
        if s.online == Some(false) {
            return Err(DriverError::Offline);
        }
        match (s.power, s.power_at) {
            (Some(w), Some(at))
                if now().saturating_duration_since(at) <= self.options.stale_after =>
            {
                Ok(w)
            }
            (Some(_), _) => Err(DriverError::Stale),
            (None, _) if s.last_seen.is_none() => Err(DriverError::Offline),
            (None, _) => Err(DriverError::NotImplemented("power")),
        }
    }
}

impl PowerMeter for MqttPlug {
    fn read_power(&mut self) -> DriverFuture<'_, Watts> {
        Box::pin(async move { self.power() })
    }
}

impl EnergyMeter for MqttPlug {
    fn read_energy(&mut self) -> DriverFuture<'_, WattHours> {
        Box::pin(async move {
            self.status()
                .energy
                .ok_or(DriverError::NotImplemented("energy"))
        })
    }
}

impl LoadSwitch for MqttPlug {
    fn switch(&mut self, on: bool) -> DriverFuture<'_, ()> {
        Box::pin(self.switch_confirmed(on))
    }

    fn reported_on(&self) -> Option<bool> {
        self.state.borrow().on
    }
}
