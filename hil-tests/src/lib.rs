//! Hardware-in-the-loop scenario harness: a real mosquitto, the simulated village (SunSpec
//! inverter, battery and meter on Modbus TCP, Tasmota and Shelly plugs over MQTT) and the real
//! controller cycle, in accelerated time. A watcher checks the invariants every scenario shares
//! on every published state: the power balance, health loads never off because of a fault, the
//! controller still running.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use communalia::control::credits::Credits;
use communalia::control::io::Clock;
use communalia::control::model::SiteModel;
use communalia::control::runtime::{self, RunOptions};
use communalia::demo::{self, Ports, Village};
use communalia::http::Published;
use communalia::records::influx::{InfluxSettings, InfluxSink};
use communalia::records::schema;
use communalia::state::{LoadView, StateView};
use communalia_config as cfg;
use communalia_drivers::testkit::Mosquitto;
use tokio::sync::{oneshot, watch};

/// Cycle interval of every scenario (the smallest the site file allows).
pub const INTERVAL: Duration = Duration::from_millis(500);
/// A device silent this long (real time) counts as unknown.
pub const STALE_REAL: Duration = Duration::from_secs(5);
/// Per-request Modbus timeout (the site file's default: shorter ones time out spuriously on a
/// busy machine, and in accelerated time a few missed reads are hours of stale readings).
pub const MODBUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Kalinzu's offset from UTC, in hours.
const UTC_OFFSET_HOURS: i64 = 3;

/// `date` and local `hh:mm` at the site (UTC+3) as a UTC instant.
pub fn local(date: &str, hhmm: &str) -> DateTime<Utc> {
    let t: DateTime<Utc> = format!("{date}T{hhmm}:00Z")
        .parse()
        .unwrap_or_else(|e| panic!("bad time {date} {hhmm}: {e}"));
    t - chrono::Duration::hours(UTC_OFFSET_HOURS)
}

/// Local hour of the day (fractional) of a published state's time.
pub fn local_hour(state: &StateView) -> f64 {
    let t = state_time(state);
    let secs = (t.timestamp() + UTC_OFFSET_HOURS * 3600).rem_euclid(86_400);
    secs as f64 / 3600.0
}

/// The time of a published state.
pub fn state_time(state: &StateView) -> DateTime<Utc> {
    state
        .time
        .parse()
        .unwrap_or_else(|e| panic!("state time {:?}: {e}", state.time))
}

/// How a scenario starts.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Simulated start (UTC).
    pub start: DateTime<Utc>,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Battery state of charge at the start, percent.
    pub soc: f64,
    /// Watched assembly file, if the scenario changes it.
    pub assembly_path: Option<PathBuf>,
    /// What the controller is told the battery may give at most (the site's 5 kW otherwise).
    pub max_discharge_watts: Option<f64>,
    /// Where the controller writes its time series, if anywhere.
    pub influx: Option<InfluxSettings>,
}

impl Setup {
    pub fn new(start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            start,
            speed,
            soc: 70.0,
            assembly_path: None,
            max_discharge_watts: None,
            influx: None,
        }
    }

    pub fn influx(mut self, settings: InfluxSettings) -> Self {
        self.influx = Some(settings);
        self
    }

    pub fn soc(mut self, soc: f64) -> Self {
        self.soc = soc;
        self
    }

    pub fn max_discharge_watts(mut self, watts: f64) -> Self {
        self.max_discharge_watts = Some(watts);
        self
    }

    pub fn assembly_path(mut self, path: PathBuf) -> Self {
        self.assembly_path = Some(path);
        self
    }
}

/// Three consecutive free loopback ports for the inverter, battery and meter.
pub fn free_modbus_base() -> u16 {
    match communalia_drivers::testkit::free_ports(3) {
        Ok(base) => base,
        Err(e) => panic!("{e}"),
    }
}

/// The village example on these ports, with the scenario timing: a 0.5 s cycle, short Modbus
/// timeouts and a staleness limit of [`STALE_REAL`] of real time.
pub fn scenario_config(ports: &Ports, speed: f64) -> anyhow::Result<cfg::Config> {
    let mut config = demo::village_config(ports, speed)?;
    config.site.interval = INTERVAL;
    for d in &mut config.site.devices {
        d.timeout = MODBUS_TIMEOUT;
        d.stale_after = STALE_REAL.mul_f64(speed.max(1.0));
    }
    Ok(config)
}

/// What the watcher saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every published state (after the first cycle), in order.
    pub states: Vec<Arc<StateView>>,
    /// Invariant violations, in words.
    pub violations: Vec<String>,
    /// Health plugs seen on by the devices themselves (relay), by load id.
    pub health_relays_on: BTreeMap<String, bool>,
    /// Consecutive states in which the controller decided each health load on.
    pub health_decided_on: BTreeMap<String, u32>,
    /// While set, physical relay checks are suspended (a deliberate power cut).
    pub relay_checks_paused: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The ids of the health tier's loads.
pub fn health_loads(config: &cfg::Config) -> Vec<String> {
    let tier = config.assembly.health_reserve.tier;
    config
        .assembly
        .tiers
        .get(tier)
        .map(|t| t.loads.clone())
        .unwrap_or_default()
}

/// True when some input of this state is unknown or faulty.
pub fn degraded(state: &StateView) -> bool {
    state.devices.iter().any(|d| !d.online) || state.loads.iter().any(|l| l.fault.is_some())
}

/// Why a load is off, as far as precedence goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Served in full.
    No,
    /// Off or short for lack of power.
    ForLackOfPower,
    /// Off because it asks nothing or the plan runs it later.
    Waiting,
}

/// Classifies a load from the reason the planner gave.
pub fn cut(load: &LoadView) -> Cut {
    let r = &load.reason;
    // A flexible load the horizon plan runs later says when ("flexible, planned 13:00-14:30")
    // or why not ("flexible, not planned in the next 24 h: ..."); without a plan, "the plan
    // runs it later".
    if r.contains("asks nothing now")
        || r.contains("the plan runs it later")
        || r.contains(": flexible, planned ")
        || r.contains(": flexible, not planned ")
    {
        Cut::Waiting
    } else if r.contains(" takes turns")
        || r.contains(" is less than ")
        || r.contains(" goes in listed order")
        || r.contains(" asked (")
    {
        Cut::ForLackOfPower
    } else {
        Cut::No
    }
}

/// The invariants every scenario holds on every published state: the power balance (allocated
/// never more than available), health loads never off while an input is unknown or faulty, and
/// strict precedence (no lower tier holds power a cut higher-tier load could have had).
pub fn check_state(s: &StateView, config: &cfg::Config) -> Vec<String> {
    let mut v = Vec::new();
    let at = &s.time;
    // A health load the fail-safe rule keeps on while inputs are unknown is on whatever the
    // planner found available (a fault never switches it off); the balance is the planner's.
    let kept_on = |l: &&LoadView| degraded(s) && l.reason.contains(" kept on: ");
    let allocated: f64 = s
        .loads
        .iter()
        .filter(|l| !kept_on(l))
        .map(|l| l.allocated_watts)
        .sum();
    if allocated > s.available_watts + 1.0 {
        v.push(format!(
            "{at}: power balance broken: {allocated:.0} W allocated, {:.0} W available",
            s.available_watts
        ));
    }
    let health = health_loads(config);
    if degraded(s) {
        for l in s.loads.iter().filter(|l| health.contains(&l.id) && !l.on) {
            v.push(format!(
                "{at}: health load {} off while inputs are faulty: {}",
                l.id, l.reason
            ));
        }
    }
    for y in s.loads.iter().filter(|l| cut(l) == Cut::ForLackOfPower) {
        let demand = config.site.load(&y.id).map_or(0.0, |l| match &l.control {
            cfg::Control::Setpoint { min, .. } => min.0,
            _ => l.nominal.0,
        });
        let missing = if y.on {
            (demand - y.allocated_watts).max(1.0)
        } else {
            demand
        };
        let below: f64 = s
            .loads
            .iter()
            .filter(|x| x.rank > y.rank)
            .map(|x| x.allocated_watts)
            .sum();
        if y.on && below > 1.0 || !y.on && below >= missing {
            v.push(format!(
                "{at}: precedence broken: {} (tier {}) short of {missing:.0} W while lower tiers hold {below:.0} W: {}",
                y.id, y.rank, y.reason
            ));
        }
    }
    v
}

/// One scenario's world: broker, village, controller, watcher.
pub struct Harness {
    pub broker: Mosquitto,
    pub village: Arc<Village>,
    pub config: cfg::Config,
    pub ports: Ports,
    pub clock: Clock,
    pub setup: Setup,
    /// Wall-clock time of the simulated start (for a controller in another process).
    pub wall_start: std::time::SystemTime,
    pub seen: Arc<Mutex<Seen>>,
    controller: Option<Controller>,
}

struct Controller {
    published: watch::Receiver<Arc<Published>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Harness {
    /// Brings up mosquitto on a free port and the village; the controller is not started.
    pub async fn village(setup: Setup) -> anyhow::Result<Self> {
        if std::env::var_os("RUST_LOG").is_some() {
            communalia::cli::init_tracing();
        }
        let broker = Mosquitto::start().context("starting mosquitto")?;
        let broker_addr: SocketAddr = format!("{}:{}", broker.host(), broker.port()).parse()?;
        // The free ports are found by binding and releasing them; a test running beside this
        // one may take them first, so the village is started again on other ports then.
        let mut attempt = 0;
        let (ports, config, clock, wall_start, village) = loop {
            attempt += 1;
            let ports = Ports {
                modbus_base: free_modbus_base(),
                mqtt: broker.port(),
            };
            let mut config = scenario_config(&ports, setup.speed)?;
            if let (Some(w), Some(b)) = (setup.max_discharge_watts, config.site.battery.as_mut()) {
                b.max_discharge = cfg::Watts(w);
            }
            let wall_start = std::time::SystemTime::now();
            let clock = Clock::accelerated(setup.start, setup.speed);
            match Village::start_with_broker(&config, &ports, clock, Some(broker_addr)).await {
                Ok(v) => break (ports, config, clock, wall_start, v),
                Err(e) if attempt < 5 => eprintln!("village not started ({e:#}); other ports"),
                Err(e) => return Err(e),
            }
        };
        let soc = setup.soc;
        village.battery.with_device(|b| b.set_soc(soc));
        let h = Self {
            broker,
            village: Arc::new(village),
            config,
            ports,
            clock,
            setup,
            wall_start,
            seen: Arc::default(),
            controller: None,
        };
        h.wait_plugs_connected().await?;
        Ok(h)
    }

    /// Brings up everything and starts the controller in this process.
    pub async fn start(setup: Setup) -> anyhow::Result<Self> {
        let mut h = Self::village(setup).await?;
        h.start_controller().await?;
        Ok(h)
    }

    async fn wait_plugs_connected(&self) -> anyhow::Result<()> {
        for l in &self.config.site.loads {
            let ok = match (self.village.tasmota(&l.id), self.village.shelly(&l.id)) {
                (Some(p), _) => p.wait_connected(Duration::from_secs(10)).await,
                (_, Some(p)) => p.wait_connected(Duration::from_secs(10)).await,
                _ => true,
            };
            anyhow::ensure!(ok, "plug of {} did not connect to mosquitto", l.id);
        }
        Ok(())
    }

    /// Starts the controller (the real runtime) and the watcher.
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let mut opts = RunOptions::new(self.clock);
        opts.assembly_path = self.setup.assembly_path.clone();
        opts.influx = self
            .setup
            .influx
            .clone()
            .map(InfluxSink::spawn)
            .transpose()?;
        let running = runtime::start(SiteModel::new(self.config.clone()), opts, async move {
            let _ = stopped.await;
        })
        .await?;
        self.watch(running.published.clone());
        self.controller = Some(Controller {
            published: running.published,
            task: running.task,
            stop: Some(stop),
        });
        Ok(())
    }

    /// Stops the controller cleanly (as SIGTERM does), leaving the village and the broker
    /// running, so another can be started on the same site; returns how long the stop took.
    pub async fn stop_controller(&mut self) -> Duration {
        let Some(mut c) = self.controller.take() else {
            return Duration::ZERO;
        };
        let asked = std::time::Instant::now();
        if let Some(stop) = c.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(20), &mut c.task).await {
            Ok(Ok(Ok(()))) => asked.elapsed(),
            Ok(Ok(Err(e))) => panic!("controller failed: {e:#}"),
            Ok(Err(e)) => panic!("controller panicked: {e}"),
            Err(_) => panic!("controller did not stop within 20 s"),
        }
    }

    /// Checks every state coming out of `published`.
    pub fn watch(&self, mut published: watch::Receiver<Arc<Published>>) {
        let (seen, config, village) = (
            Arc::clone(&self.seen),
            self.config.clone(),
            Arc::clone(&self.village),
        );
        tokio::spawn(async move {
            while published.changed().await.is_ok() {
                let state = Arc::new(published.borrow_and_update().state.clone());
                observe(&seen, &config, &village, state);
            }
        });
    }

    /// Records a state seen elsewhere (a controller in another process).
    pub fn observe(&self, state: StateView) {
        observe(&self.seen, &self.config, &self.village, Arc::new(state));
    }

    fn published(&self) -> &watch::Receiver<Arc<Published>> {
        &self
            .controller
            .as_ref()
            .unwrap_or_else(|| panic!("the controller is not running in this process"))
            .published
    }

    /// The latest published state.
    pub fn state(&self) -> Arc<Published> {
        Arc::clone(&self.published().borrow())
    }

    /// Waits (real time) until a published state satisfies `cond`; panics with `what` and the
    /// last state after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Published) -> bool,
    ) -> Arc<Published> {
        let mut rx = self.published().clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let p = rx.borrow_and_update();
                if !p.state.time.is_empty() && cond(&p) {
                    return Arc::clone(&p);
                }
            }
            self.assert_running();
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("controller stopped while waiting for: {what}"),
                Err(_) => {
                    let p = rx.borrow();
                    panic!(
                        "timed out after {timeout:?} waiting for: {what}\nlast state: {}",
                        serde_json::to_string_pretty(&p.state).unwrap_or_default()
                    );
                }
            }
        }
    }

    /// Waits until simulated time reaches `t`, returning the first state at or after it.
    pub async fn wait_until(&self, t: DateTime<Utc>) -> Arc<Published> {
        let real = (t - self.clock.now()).num_milliseconds().max(0) as f64 / self.setup.speed;
        let timeout = Duration::from_secs_f64(real / 1000.0) + Duration::from_secs(20);
        self.wait_for(&format!("simulated time {t}"), timeout, |p| {
            state_time(&p.state) >= t
        })
        .await
    }

    /// Waits for `n` more cycles.
    pub async fn cycles(&self, n: usize) -> Arc<Published> {
        let mut left = n + 1;
        let mut last = String::new();
        self.wait_for(
            &format!("{n} cycles"),
            INTERVAL * 4 * u32::try_from(n).unwrap_or(1000) + Duration::from_secs(10),
            |p| {
                if p.state.time != last {
                    last = p.state.time.clone();
                    left -= 1;
                }
                left == 0
            },
        )
        .await
    }

    /// Panics if the controller task ended (returned or panicked).
    pub fn assert_running(&self) {
        if let Some(c) = &self.controller {
            assert!(
                !c.task.is_finished(),
                "the controller task ended on its own"
            );
        }
    }

    /// The states seen so far.
    pub fn states(&self) -> Vec<Arc<StateView>> {
        lock(&self.seen).states.clone()
    }

    /// Suspends or resumes the physical health relay check (around a deliberate power cut).
    pub fn pause_relay_checks(&self, paused: bool) {
        let mut s = lock(&self.seen);
        s.relay_checks_paused = paused;
        if !paused {
            s.health_relays_on.clear();
        }
    }

    /// Stops the controller cleanly, then asserts the shared invariants held all along and the
    /// controller neither panicked nor failed.
    pub async fn finish(mut self) {
        if let Some(mut c) = self.controller.take() {
            assert!(
                !c.task.is_finished(),
                "the controller task ended on its own"
            );
            if let Some(stop) = c.stop.take() {
                let _ = stop.send(());
            }
            match tokio::time::timeout(Duration::from_secs(20), &mut c.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("controller failed: {e:#}"),
                Ok(Err(e)) => panic!("controller panicked: {e}"),
                Err(_) => panic!("controller did not stop within 20 s"),
            }
        }
        self.assert_invariants();
    }

    /// Asserts the shared invariants held on every state seen so far.
    pub fn assert_invariants(&self) {
        let seen = lock(&self.seen);
        assert!(
            !seen.states.is_empty(),
            "the controller published no state at all"
        );
        assert!(
            seen.violations.is_empty(),
            "{} invariant violations, first ones:\n{}",
            seen.violations.len(),
            seen.violations
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// The controller's state for load `id` in `p`.
    pub fn load<'a>(p: &'a Published, id: &str) -> &'a LoadView {
        p.state
            .loads
            .iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("no load {id} in the state"))
    }

    /// Waits until every plug's relay agrees with the controller's decision (the controller is
    /// in charge of the devices again).
    pub async fn wait_devices_follow(&self, what: &str, timeout: Duration) -> Arc<Published> {
        let village = Arc::clone(&self.village);
        self.wait_for(what, timeout, |p| {
            p.state
                .loads
                .iter()
                .all(|l| village.plug_on(&l.id).is_none_or(|on| on == l.on))
        })
        .await
    }
}

fn observe(seen: &Mutex<Seen>, config: &cfg::Config, village: &Village, state: Arc<StateView>) {
    if state.time.is_empty() {
        return;
    }
    let mut v = check_state(&state, config);
    let mut s = lock(seen);
    if !s.relay_checks_paused {
        for id in health_loads(config) {
            let on = village.plug_on(&id);
            let was = s.health_relays_on.get(&id).copied();
            let decided_on = state.loads.iter().any(|l| l.id == id && l.on);
            let streak = s.health_decided_on.entry(id.clone()).or_insert(0);
            *streak = if decided_on { *streak + 1 } else { 0 };
            // Three cycles after the controller decided "on", the relay must be on.
            if was == Some(true) && on == Some(false) && *streak >= 3 {
                v.push(format!(
                    "{}: health plug {id} off at the device while the controller keeps it on",
                    state.time
                ));
            }
            if let Some(on) = on {
                s.health_relays_on.insert(id, was.unwrap_or(false) || on);
            }
        }
    }
    s.violations.extend(v);
    s.states.push(state);
}

/// Real time a scenario lasts at `speed` to cover `sim` of simulated time.
pub fn real(sim: chrono::Duration, speed: f64) -> Duration {
    Duration::from_secs_f64(sim.num_milliseconds().max(0) as f64 / 1000.0 / speed)
}

/// A deadline helper for polling something other than the published state.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The environment variable that turns a re-executed test binary into a controller process.
pub const CHILD_ENV: &str = "COMMUNALIA_HIL_CONTROLLER";

/// A controller running in a child process (the test binary re-executed in controller mode),
/// so it can be killed with SIGKILL.
pub struct ChildController {
    child: std::process::Child,
    state_file: PathBuf,
}

impl ChildController {
    /// What the child last wrote: `{"state": ..., "violations": [...], "cycles": n}`.
    pub fn report(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(&self.state_file).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Waits until the child's report satisfies `cond`; panics after `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.report()
                && cond(&r)
            {
                return r;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("controller process exited ({status}) while waiting for: {what}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for: {what}\nlast report: {}",
                self.report().map(|r| r.to_string()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildController {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a child controller keeps beyond its life: its time series and its ledger.
#[derive(Debug, Clone, Default)]
pub struct ChildRecords {
    /// The time-series database the child writes to (it may be down) and the folder of the
    /// child's disk buffer (shared by successive children).
    pub influx: Option<(String, PathBuf)>,
    /// The site's ledger (made with [`found_ledger`]): the child posts meter credits for
    /// [`CREDITED_LOAD`], made flexible, every [`CREDIT_EVERY`] of site time.
    pub ledger: Option<PathBuf>,
}

/// The member-owned load a child controller credits for shifted load.
pub const CREDITED_LOAD: &str = "home_amani";
/// How often a child controller posts meter credits (site time; hourly on a real site).
pub const CREDIT_EVERY: chrono::Duration = chrono::Duration::minutes(5);

/// The scenario controller's ledger key.
pub fn controller_key() -> communalia_ledger::SigningKey {
    communalia_ledger::fixtures::key("hil", 3)
}

/// A new ledger at `path` for the village on `day`: a founding steward, the scenario's
/// controller (role controller) and the owner of [`CREDITED_LOAD`].
pub fn found_ledger(
    path: &std::path::Path,
    config: &cfg::Config,
    day: communalia_ledger::Day,
) -> anyhow::Result<()> {
    use communalia_ledger::{Body, Ledger, Params, Role, SqliteStore};
    let owner = config
        .site
        .loads
        .iter()
        .find(|l| l.id == CREDITED_LOAD)
        .and_then(|l| match &l.owner {
            cfg::Owner::Member(m) => Some(m.clone()),
            cfg::Owner::Service(_) => None,
        })
        .with_context(|| format!("{CREDITED_LOAD} is not a member's load"))?;
    let founder = communalia_ledger::fixtures::key("hil", 0);
    let member = communalia_ledger::fixtures::key("hil", 4);
    let mut l = Ledger::init(
        SqliteStore::open(path)?,
        &config.site.id,
        Params::default(),
        &founder,
        "founder",
        day,
    )?;
    for (key, role, name) in [
        (controller_key(), Role::Controller, "controller".to_string()),
        (member, Role::Member, owner),
    ] {
        let body = Body::Admit {
            key: key.verifying_key().to_bytes(),
            role,
            name,
        };
        l.quorum_append(&founder, &[], day, body)?;
    }
    Ok(())
}

/// The milli-Communs the controller has credited since it started, from its metrics.
pub fn communs_issued(published: &Published) -> Option<f64> {
    let name = schema::COMMUNS_ISSUED.metric();
    published
        .metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

impl Harness {
    /// Starts the controller in a child process: this test binary again, running only the test
    /// `test_name` with [`CHILD_ENV`] set, which calls [`run_child_controller`].
    pub fn spawn_controller_process(
        &self,
        test_name: &str,
        dir: &std::path::Path,
        n: usize,
        records: &ChildRecords,
    ) -> anyhow::Result<ChildController> {
        let state_file = dir.join(format!("state-{n}.json"));
        let wall_ms = self
            .wall_start
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        let spec = serde_json::json!({
            "modbus_base": self.ports.modbus_base,
            "mqtt": self.ports.mqtt,
            "speed": self.setup.speed,
            "start": self.setup.start.to_rfc3339(),
            "wall_start_ms": wall_ms as u64,
            "state_file": state_file,
            "influx_url": records.influx.as_ref().map(|(url, _)| url),
            "buffer_dir": records.influx.as_ref().map(|(_, dir)| dir),
            "ledger": records.ledger,
        });
        let child = std::process::Command::new(std::env::current_exe()?)
            .args([test_name, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, spec.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        Ok(ChildController { child, state_file })
    }
}

/// Controller mode of a re-executed test binary: runs the real controller against the parent's
/// village (same ports, same simulated clock) and writes each published state, with the
/// invariant violations seen so far and the Communs it credited, to the state file. With
/// [`ChildRecords`] it also writes time series (buffered on disk while the database is away)
/// and posts meter credits to the ledger. Runs until killed.
pub fn run_child_controller(spec: &str) -> anyhow::Result<()> {
    let spec: serde_json::Value = serde_json::from_str(spec)?;
    let num = |k: &str| {
        spec[k]
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("controller spec lacks {k}"))
    };
    let ports = Ports {
        modbus_base: num("modbus_base")? as u16,
        mqtt: num("mqtt")? as u16,
    };
    let speed = num("speed")?;
    let start: DateTime<Utc> = spec["start"].as_str().unwrap_or_default().parse()?;
    let wall_start = std::time::UNIX_EPOCH + Duration::from_millis(num("wall_start_ms")? as u64);
    let state_file = PathBuf::from(spec["state_file"].as_str().unwrap_or_default());
    let elapsed = std::time::SystemTime::now()
        .duration_since(wall_start)
        .unwrap_or_default();
    let now =
        start + chrono::Duration::milliseconds((elapsed.as_secs_f64() * speed * 1000.0) as i64);
    let clock = Clock::accelerated(now, speed);
    let mut config = scenario_config(&ports, speed)?;
    let path = |k: &str| spec[k].as_str().map(PathBuf::from);
    let ledger = match path("ledger") {
        Some(file) => {
            for l in config
                .site
                .loads
                .iter_mut()
                .filter(|l| l.id == CREDITED_LOAD)
            {
                l.flexible = true;
            }
            let store = communalia_ledger::SqliteStore::open(&file)?;
            let ledger = communalia_ledger::Ledger::open(store, &config.site.id)?;
            Some(Arc::new(Mutex::new(ledger)))
        }
        None => None,
    };
    let influx = match (spec["influx_url"].as_str(), path("buffer_dir")) {
        (Some(url), Some(dir)) => {
            let mut s = InfluxSettings::new(url, "hil", "hil", "", dir);
            s.flush_interval = Duration::from_millis(200);
            s.retry_max = Duration::from_secs(1);
            Some(s)
        }
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut opts = RunOptions::new(clock);
        opts.influx = influx.map(InfluxSink::spawn).transpose()?;
        opts.credits = ledger
            .map(|l| Credits::new(l, controller_key(), &config.site).posting_every(CREDIT_EVERY));
        let running =
            runtime::start(SiteModel::new(config.clone()), opts, std::future::pending()).await?;
        let mut published = running.published;
        let mut violations: Vec<String> = Vec::new();
        let mut cycles = 0u64;
        let tmp = state_file.with_extension("tmp");
        while published.changed().await.is_ok() {
            let p = published.borrow_and_update().clone();
            let state = &p.state;
            if state.time.is_empty() {
                continue;
            }
            cycles += 1;
            violations.extend(check_state(state, &config));
            let report = serde_json::json!({
                "state": state,
                "violations": violations,
                "cycles": cycles,
                "communs_issued_millis": communs_issued(&p),
            });
            std::fs::write(&tmp, report.to_string())?;
            std::fs::rename(&tmp, &state_file)?;
        }
        anyhow::Ok(())
    })
}
