//! Smart plugs over MQTT (Tasmota and Shelly): switching confirmed from the device's own
//! report and retried with backoff, availability from the last will, the device-side
//! fail-safe, and energy telemetry. Malformed payloads are counted and logged, never fatal.
//!
//! **Stock devices.** The driver works with the devices' factory settings and changes none of
//! them except the fail-safe (and a Tasmota `TelePeriod` only when asked,
//! [`MqttPlug::set_tele_period`]):
//! - Tasmota: relay 1 is recognised as `POWER` (single relay) or `POWER1` (several relays or
//!   `SetOption26 1`), relay `n > 1` as `POWERn`, on `stat/<t>/RESULT`, `stat/<t>/<key>` and
//!   `tele/<t>/STATE` (see [`crate::tasmota`]).
//! - Shelly Gen2/Gen3: replies are taken by request `id` and `dst` (our client id), never by
//!   `src` (the device id, which need not be the topic prefix). A stock device has
//!   `status_ntf` off, so changes arrive as `NotifyStatus` on `<prefix>/events/rpc`;
//!   `<prefix>/status/switch:N` is read too when the installer enabled it.
//!
//! **Fresh readings without fast telemetry.** A stock Tasmota reports power every 300 s, a
//! stock Shelly notifies `apower` only when it changes. Each plug therefore has a small
//! refresher task: when the last power reading is about to go stale (older than
//! [`PlugOptions::stale_after`] less [`PlugOptions::confirm_timeout`], and at least half of
//! `stale_after`) it asks the device (Tasmota `Status 10`, Shelly `Switch.GetStatus`); it asks
//! too for the relay state while none is known, and once [`SETTLE`] after each confirmed switch
//! so the new power is seen at once. A device whose telemetry is faster than that is never asked.
//! The Tasmota `TelePeriod` is read once ([`PlugStatus::tele_period_secs`]) and logged; staleness
//! is judged from `stale_after` alone, so a reading 300 s old is never taken as current.

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
    /// Tasmota `TelePeriod` as the device reported it (0: telemetry disabled).
    pub tele_period_secs: Option<u64>,
    /// Readings asked for by the refresher (Tasmota `Status 10`, Shelly `Switch.GetStatus`).
    pub polls: u64,
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

/// How long after a confirmed switch the refresher asks for the new power reading (a metering
/// chip needs a moment to measure the new load).
pub const SETTLE: Duration = Duration::from_secs(1);

/// A plug on a shared MQTT connection.
#[derive(Debug)]
pub struct MqttPlug {
    bus: MqttBus,
    kind: PlugKind,
    options: PlugOptions,
    state: watch::Receiver<PlugStatus>,
    tx: Arc<watch::Sender<PlugStatus>>,
    /// Wakes the refresher after a confirmed switch.
    switched: Arc<tokio::sync::Notify>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for MqttPlug {
    fn drop(&mut self) {
        self.refresher.abort();
    }
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
                let report_keys = t.report_keys();
                for topic in [t.stat("RESULT"), t.tele("STATE")] {
                    let (tx, keys, name) = (Arc::clone(&tx), report_keys.clone(), topic.clone());
                    routes.push((
                        topic,
                        handler(move |p| match tasmota::parse_power_json_keys(p, &keys) {
                            Ok(state) => tx.send_modify(|s| {
                                s.last_seen = Some(now());
                                if let Some(on) = state {
                                    s.on = Some(on);
                                    s.reports += 1;
                                }
                                if let Ok(Some(n)) = tasmota::parse_power_on_state(p) {
                                    s.fail_safe = Some(format!("PowerOnState {n}"));
                                }
                                if let Ok(Some(secs)) = tasmota::parse_tele_period(p) {
                                    s.tele_period_secs = Some(secs);
                                }
                            }),
                            Err(e) => malformed(&tx, &name, &e),
                        }),
                    ));
                }
                for key in &report_keys {
                    let (tx, name) = (Arc::clone(&tx), t.stat(key));
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
                    // connection) and dst (our client id: another client subscribed to a topic
                    // that overlaps ours gets its own replies there too). The reply's `src` is
                    // the device id, which need not be the topic prefix, so it says nothing
                    // about which plug asked.
                    let client_id = bus.client_id().to_owned();
                    let (tx, name) = (Arc::clone(&tx), ShellyTopics::reply_topic(&client_id));
                    routes.push((
                        name.clone(),
                        handler(move |p| match shelly::parse_rpc_reply(p) {
                            Ok(reply) if reply.dst.as_deref() != Some(client_id.as_str()) => {
                                tracing::debug!(topic = %name, dst = ?reply.dst, "rpc reply for another client ignored");
                            }
                            Ok(reply) => {
                                tx.send_if_modified(|s| {
                                    let Some(at) = s.pending.iter().position(|i| *i == reply.id)
                                    else {
                                        return false;
                                    };
                                    s.pending.remove(at);
                                    if let Ok(result) = &reply.outcome {
                                        // Switch.GetStatus: output, apower, aenergy.total. Other
                                        // results (`was_on`, `restart_required`) carry none.
                                        apply(s, shelly::switch_fields(result));
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
        let switched = Arc::new(tokio::sync::Notify::new());
        let refresher = tokio::spawn(refresh(Refresher {
            bus: bus.clone(),
            kind: kind.clone(),
            every: refresh_after(&options),
            state: rx.clone(),
            tx: Arc::clone(&tx),
            switched: Arc::clone(&switched),
        }));
        Ok(Self {
            bus: bus.clone(),
            kind,
            options,
            state: rx,
            tx,
            switched,
            refresher,
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
        register_rpc(&self.bus, &self.tx)
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
                if outcome.is_ok() {
                    self.switched.notify_one();
                }
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

impl MqttPlug {
    /// Sets a Tasmota's `TelePeriod` (10 to 3600 s, 0 disables telemetry) and waits for the
    /// device to confirm it. Only for a site that asks: the driver works with any period.
    pub async fn set_tele_period(&self, secs: u16) -> Result<()> {
        let PlugKind::Tasmota(t, _) = &self.kind else {
            return Err(DriverError::Invalid(
                "only a Tasmota plug has a TelePeriod".into(),
            ));
        };
        let mut pause = self.options.backoff;
        for attempt in 1..=self.options.attempts.max(1) {
            let mut rx = self.state.clone();
            let (topic, payload) = t.tele_period_command(Some(secs));
            self.bus.publish(&topic, payload).await?;
            let ok = tokio::time::timeout(
                self.options.confirm_timeout,
                rx.wait_for(|s| s.tele_period_secs == Some(u64::from(secs))),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if ok {
                return Ok(());
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
}

/// How old a power reading may grow before the refresher asks for a new one: early enough for
/// the answer to come before [`PlugOptions::stale_after`], and not more often than every half
/// of it.
pub fn refresh_after(options: &PlugOptions) -> Duration {
    options
        .stale_after
        .saturating_sub(options.confirm_timeout)
        .max(options.stale_after / 2)
        .max(Duration::from_millis(100))
}

/// A fresh request id on `bus`, registered in the plug's status as one of its own before the
/// request goes out (replies are matched by it; older unanswered ones are given up).
fn register_rpc(bus: &MqttBus, tx: &watch::Sender<PlugStatus>) -> u64 {
    let id = bus.next_request_id();
    tx.send_if_modified(|s| {
        s.pending.push_back(id);
        if s.pending.len() > MAX_PENDING {
            s.pending.pop_front();
        }
        false
    });
    id
}

struct Refresher {
    bus: MqttBus,
    kind: PlugKind,
    every: Duration,
    state: watch::Receiver<PlugStatus>,
    tx: Arc<watch::Sender<PlugStatus>>,
    switched: Arc<tokio::sync::Notify>,
}

impl Refresher {
    /// Asks for a reading (and for the relay state while it is unknown: Tasmota `State`, never a
    /// `Power` command, so nothing that watches the power topic takes it for a switch).
    async fn poll(&self, ask_state: bool) {
        let sent = match &self.kind {
            PlugKind::Tasmota(t, _) => {
                let mut r = Ok(());
                if ask_state {
                    let (topic, payload) = t.state_command();
                    r = self.bus.publish(&topic, payload).await;
                }
                let (topic, payload) = t.sensor_status_command();
                r.and(self.bus.publish(&topic, payload).await)
            }
            PlugKind::Shelly(t) => {
                let id = register_rpc(&self.bus, &self.tx);
                self.bus
                    .publish(&t.rpc(), t.switch_get_status(id, self.bus.client_id()))
                    .await
            }
        };
        match sent {
            Ok(()) => self.tx.send_if_modified(|s| {
                s.polls += 1;
                false
            }),
            Err(e) => {
                tracing::debug!(error = %e, "plug reading not asked for");
                false
            }
        };
    }
}

/// The refresher task of one plug (see the module docs).
async fn refresh(r: Refresher) {
    if let PlugKind::Tasmota(t, _) = &r.kind {
        let (topic, payload) = t.tele_period_command(None);
        if let Err(e) = r.bus.publish(&topic, payload).await {
            tracing::debug!(error = %e, "tasmota TelePeriod not asked for");
        }
    }
    let mut rx = r.state.clone();
    let mut told_period = false;
    loop {
        let (online, on_known, power_at, tele) = {
            let s = rx.borrow_and_update();
            (s.online, s.on.is_some(), s.power_at, s.tele_period_secs)
        };
        if let (false, Some(secs), PlugKind::Tasmota(t, _)) = (told_period, tele, &r.kind) {
            told_period = true;
            tracing::info!(
                topic = %t.topic,
                tele_period_secs = secs,
                refresh_secs = r.every.as_secs_f64(),
                "tasmota TelePeriod read; power asked for with Status 10 when telemetry is slower"
            );
        }
        let t = now();
        let due = power_at.is_none_or(|at| t.saturating_duration_since(at) >= r.every);
        if online != Some(false) && (due || !on_known) {
            r.poll(!on_known).await;
        }
        // Next look: when the present reading comes due; after a question, one period from now
        // (one question per period at most, answered or not).
        let wake = match power_at {
            Some(at) if at + r.every > t => at + r.every,
            _ => t + r.every,
        };
        let was_online = online == Some(true);
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            () = r.switched.notified() => {
                tokio::time::sleep(SETTLE.min(r.every)).await;
                r.poll(false).await;
            }
            back = async { rx.wait_for(|s| !was_online && s.online == Some(true)).await.map(|_| ()) } => {
                if back.is_err() {
                    return;
                }
            }
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
