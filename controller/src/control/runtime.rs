//! The control loop: one task that waits for the next event (tick, assembly file changed,
//! shutdown), takes the process image, lets the core decide, hands the commands to actuation
//! tasks and publishes the result for the HTTP API, the page and the records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use communalia_config as cfg;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::core::{Action, Command, Core, Outcome, SolvedPlan};
use super::credits::Credits;
use super::io::{self, Clock, Loads};
use super::model::SiteModel;
use crate::forecast::external::ExternalForecast;
use crate::forecast::load::LoadProfile;
use crate::http::Published;
use crate::records::history::HistoryWriter;
use crate::records::influx::InfluxSink;
use crate::records::mqtt_state::MqttStatePublisher;
use crate::records::schema::{self, Counters, Sample};
use crate::state::StateView;
use communalia_ledger::SqliteStore;

/// Everything that wakes the loop.
#[derive(Debug)]
pub enum Event {
    Tick,
    /// The assembly file changed: the new assembly, or the located errors that reject it.
    Assembly(Result<cfg::Assembly, Vec<String>>),
    /// An external PV forecast arrived (file or MQTT topic), or why it was refused.
    Forecast(Result<ExternalForecast, String>),
    /// A horizon plan solved off the loop.
    Plan(Box<SolvedPlan>),
    Shutdown,
}

/// How to run.
pub struct RunOptions {
    pub dry_run: bool,
    pub clock: Clock,
    /// Watched for changes; `None` when the assembly is fixed (tests).
    pub assembly_path: Option<PathBuf>,
    /// Where each cycle's time series go, if anywhere; flushed (or left on disk) at shutdown.
    pub influx: Option<InfluxSink>,
    /// Publishes the state on MQTT (retained), with Home Assistant discovery if configured.
    pub mqtt_state: Option<MqttStatePublisher>,
    /// Where the learnt load profile is kept across restarts (`None`: not kept).
    pub profile_file: Option<PathBuf>,
    /// The external PV forecast file of `[forecast] pv_file`, resolved, watched for changes.
    pub forecast_file: Option<PathBuf>,
    /// Meter credits for shifted load, posted to the site's ledger.
    pub credits: Option<Credits<SqliteStore>>,
    /// The site's five-minute history, for `simulate --history`.
    pub history: Option<HistoryWriter>,
}

impl RunOptions {
    /// Real time, no records, switching for real.
    pub fn new(clock: Clock) -> Self {
        Self {
            dry_run: false,
            clock,
            assembly_path: None,
            influx: None,
            mqtt_state: None,
            profile_file: None,
            forecast_file: None,
            credits: None,
            history: None,
        }
    }
}

/// The running controller's outputs.
pub struct Running {
    pub published: watch::Receiver<Arc<Published>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn initial(core: &Core) -> Published {
    let site = core.model().site();
    Published {
        state: StateView {
            time: String::new(),
            site: crate::state::SiteView {
                id: site.id.clone(),
                name: site.name.clone(),
                utc_offset_minutes: site.utc_offset_minutes,
            },
            available_watts: 0.0,
            pv_watts: None,
            consumption_watts: None,
            battery: None,
            grid_state: crate::state::GridState::Tight,
            status: String::new(),
            dry_run: false,
            devices: Vec::new(),
            tiers: Vec::new(),
            loads: Vec::new(),
            assembly_errors: Vec::new(),
        },
        plan: core.plan_view(),
        assembly: core.assembly_view(),
        metrics: String::new(),
    }
}

/// Starts the controller; it runs until `shutdown` resolves, then leaves health plugs on.
pub async fn start(
    model: SiteModel,
    mut opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let site = model.site().clone();
    let mut tasks = JoinSet::new();
    let pollers = io::spawn_pollers(&site.devices, site.interval, opts.clock, &mut tasks);
    let controlled: Vec<cfg::Load> = site
        .loads
        .iter()
        .filter(|l| l.control.is_controlled())
        .cloned()
        .collect();
    let loads = match &site.mqtt {
        Some(mqtt) => {
            // Plug readings older than five cycles (in real time) count as missing.
            let stale = site.interval * 5 + Duration::from_secs(5);
            Some(Arc::new(Loads::attach(mqtt, &controlled, stale).await?))
        }
        None => None,
    };
    if let Some(loads) = loads.as_ref().filter(|_| !opts.dry_run) {
        let (loads, m) = (Arc::clone(loads), model.clone());
        // Health plugs come back on after a power cut, even with the controller dead.
        tokio::spawn(async move { loads.set_fail_safes(|id| m.is_health(id)).await });
    }
    // The horizon plan (an LP: tens of milliseconds, more on a small board) is solved on a
    // blocking thread, so a cycle never waits for it.
    let mut core = Core::new(model, opts.dry_run).with_deferred_planning();
    if let Some(path) = &opts.profile_file {
        match std::fs::read_to_string(path) {
            Ok(text) => match LoadProfile::from_json(&text) {
                Some(p) => core = core.with_profile(p),
                None => {
                    tracing::warn!(file = %path.display(), "load profile unreadable; learning anew")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "load profile not read"),
        }
    }
    let (tx, rx) = watch::channel(Arc::new(initial(&core)));
    let (events_tx, mut events) = mpsc::channel::<Event>(8);
    if let Some(path) = opts.assembly_path.clone() {
        let site = site.clone();
        let shown = path.display().to_string();
        tasks.spawn(watch_file(path, true, events_tx.clone(), move |bytes| {
            Event::Assembly(
                cfg::load_assembly(&site, &shown, bytes)
                    .map_err(|d| d.iter().map(|x| x.to_string()).collect()),
            )
        }));
    }
    if let Some(path) = opts.forecast_file.clone() {
        let shown = path.display().to_string();
        tasks.spawn(watch_file(path, false, events_tx.clone(), move |bytes| {
            Event::Forecast(ExternalForecast::parse(&bytes).map_err(|e| format!("{shown}: {e}")))
        }));
    }
    if let (Some(topic), Some(loads)) = (
        site.forecast.as_ref().and_then(|f| f.pv_topic.clone()),
        &loads,
    ) {
        let tx = events_tx.clone();
        let shown = topic.clone();
        loads
            .bus
            .subscribe(
                &topic,
                Arc::new(move |payload: &[u8]| {
                    let parsed =
                        ExternalForecast::parse(payload).map_err(|e| format!("{shown}: {e}"));
                    let _ = tx.try_send(Event::Forecast(parsed));
                }),
            )
            .await?;
    }
    {
        let events_tx = events_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = events_tx.send(Event::Shutdown).await;
        });
    }
    let plans_tx = events_tx.clone();
    let interval = site.interval;
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if events_tx.send(Event::Tick).await.is_err() {
                return;
            }
        }
    });

    let task = tokio::spawn(async move {
        let faults: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let in_flight: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let mut counters = Counters::default();
        let mut previous: BTreeMap<String, bool> = BTreeMap::new();
        // The plan view is rebuilt only when the core made a new plan, not every cycle.
        let mut plan_view = (core.plan_made_at(), core.plan_view());
        let mut saved = Instant::now();
        while let Some(event) = events.recv().await {
            match event {
                Event::Tick => {
                    let started = Instant::now();
                    let image =
                        io::snapshot(opts.clock.now(), &pollers, loads.as_deref(), &lock(&faults));
                    let mut outcome = core.step(&image);
                    if let Some(job) = core.take_plan_job() {
                        // On a thread of its own, not the runtime's blocking pool: a plan still
                        // being solved when the controller stops is of no use, and the runtime
                        // would wait for it before the process could exit.
                        let tx = plans_tx.clone();
                        let spawned = std::thread::Builder::new()
                            .name("horizon-plan".into())
                            .spawn(move || {
                                let _ = tx.blocking_send(Event::Plan(Box::new(job.solve())));
                            });
                        if let Err(e) = spawned {
                            tracing::warn!(error = %e, "no thread for the horizon plan; the plan in force stays");
                        }
                    }
                    log_changes(&outcome, &mut previous);
                    if let Some(loads) = &loads {
                        dispatch(&mut outcome, loads, &faults, &in_flight);
                        counters.mqtt_malformed_payloads = loads.malformed();
                    }
                    counters.cycles += 1;
                    if let Some(sink) = &opts.influx {
                        counters.influxdb_points_dropped = sink.stats().dropped;
                    }
                    if let Some(c) = opts.credits.as_mut().filter(|_| !opts.dry_run) {
                        c.observe(&outcome.state, image.at);
                        counters.communs_issued_millis = c.issued_millis();
                    }
                    let sample = Sample {
                        state: &outcome.state,
                        cycle_seconds: started.elapsed().as_secs_f64(),
                        counters,
                    };
                    let points = schema::points(&sample);
                    if let Some(sink) = &opts.influx {
                        let ns = image.at.timestamp_nanos_opt().unwrap_or(0);
                        sink.push(schema::line_protocol(&points, ns));
                    }
                    if let Some(mqtt) = &opts.mqtt_state {
                        mqtt.publish(&outcome.state);
                    }
                    if let Some(history) = opts.history.as_mut() {
                        history.observe(&outcome.state, image.at);
                    }
                    if core.plan_made_at() != plan_view.0 {
                        plan_view = (core.plan_made_at(), core.plan_view());
                    }
                    if saved.elapsed() >= PROFILE_SAVE_EVERY {
                        saved = Instant::now();
                        save_profile_off_loop(opts.profile_file.as_deref(), &core);
                    }
                    tx.send_replace(Arc::new(Published {
                        state: outcome.state,
                        plan: plan_view.1.clone(),
                        assembly: core.assembly_view(),
                        metrics: schema::prometheus_text(&points),
                    }));
                }
                Event::Assembly(Ok(assembly)) => {
                    let d = &assembly.decision;
                    tracing::info!(
                        date = %d.date,
                        reference = %d.reference,
                        votes_for = d.votes_for,
                        votes_against = d.votes_against,
                        abstentions = d.abstentions,
                        "new assembly decision in force from the next cycle"
                    );
                    core.set_assembly(assembly);
                }
                Event::Assembly(Err(errors)) => {
                    for e in &errors {
                        tracing::error!("{e}");
                    }
                    tracing::error!(
                        "assembly file rejected ({} errors); the last good one stays in force",
                        errors.len()
                    );
                    core.reject_assembly(errors);
                }
                Event::Forecast(Ok(f)) => {
                    tracing::info!(
                        start = %f.start,
                        steps = f.watts.len(),
                        "external PV forecast in use where it covers the plan"
                    );
                    core.set_external_pv(f);
                }
                Event::Forecast(Err(e)) => {
                    tracing::warn!("external PV forecast refused, local model kept: {e}");
                }
                Event::Plan(solved) => core.install_plan(*solved),
                Event::Shutdown => break,
            }
        }
        tasks.abort_all();
        save_profile(opts.profile_file.as_deref(), &core);
        if let Some(history) = opts.history.as_mut() {
            history.finish();
        }
        // A dry run has switched nothing and leaves everything as it found it.
        if let Some(loads) = loads.as_ref().filter(|_| !opts.dry_run) {
            // Commands still on their way are settled (confirmed or given up) first, briefly:
            // the health plugs' switch-on comes after them, so it is the last word.
            let deadline = Instant::now() + SETTLE_AT_SHUTDOWN;
            while !lock(&in_flight).is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let unsettled = lock(&in_flight).len();
            if unsettled > 0 {
                tracing::warn!(unsettled, "commands still unconfirmed at shutdown");
            }
            leave_safe(&core, loads).await;
        }
        if let Some(sink) = opts.influx.take() {
            let stats = sink.shutdown().await;
            tracing::info!(
                sent = stats.sent,
                left_on_disk = stats.buffered,
                dropped = stats.dropped,
                "time series flushed"
            );
        }
        if let Some(mqtt) = opts.mqtt_state.take() {
            mqtt.shutdown(Duration::from_secs(2)).await;
        }
        Ok(())
    });
    Ok(Running {
        published: rx,
        task,
    })
}

/// How long a stop waits for commands still being confirmed before the health plugs' switch-on.
const SETTLE_AT_SHUTDOWN: Duration = Duration::from_millis(500);

/// How often the learnt load profile is written to disk (and at shutdown).
const PROFILE_SAVE_EVERY: Duration = Duration::from_secs(900);

/// Writes the profile beside the old one and renames it over, so a crash never leaves half a
/// file.
fn save_profile(path: Option<&std::path::Path>, core: &Core) {
    let Some(path) = path else { return };
    write_profile(path, &core.profile().to_json());
}

/// The same, written on a blocking thread (from the control loop: a slow SD card must not
/// stall the cycle).
fn save_profile_off_loop(path: Option<&std::path::Path>, core: &Core) {
    let Some(path) = path.map(std::path::Path::to_path_buf) else {
        return;
    };
    let json = core.profile().to_json();
    tokio::task::spawn_blocking(move || write_profile(&path, &json));
}

/// Written beside the old file, synced, then renamed over it: a power cut leaves the old
/// profile or the new one, never an empty or half-written file.
fn write_profile(path: &std::path::Path, json: &str) {
    let tmp = path.with_extension("json.tmp");
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(json.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "load profile not saved");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends the cycle's commands to actuation tasks, skipping loads whose last command is still
/// being confirmed; records failures as faults the next cycles show.
fn dispatch(
    outcome: &mut Outcome,
    loads: &Arc<Loads>,
    faults: &Arc<Mutex<BTreeMap<String, String>>>,
    in_flight: &Arc<Mutex<BTreeSet<String>>>,
) {
    let commands: Vec<Command> = {
        let mut busy = lock(in_flight);
        outcome
            .commands
            .drain(..)
            .filter(|c| busy.insert(c.load.clone()))
            .collect()
    };
    if commands.is_empty() {
        return;
    }
    for c in &commands {
        tracing::debug!(load = %c.load, action = ?c.action, "command");
    }
    let (loads, faults, in_flight) = (Arc::clone(loads), Arc::clone(faults), Arc::clone(in_flight));
    tokio::spawn(async move {
        let failed = loads.actuate(&commands).await;
        let mut f = lock(&faults);
        for c in &commands {
            match failed.iter().find(|(id, _)| *id == c.load) {
                Some((id, e)) => {
                    tracing::warn!(load = %id, action = ?c.action, error = %e, "command not confirmed");
                    f.insert(id.clone(), format!("command not confirmed: {e}"));
                }
                None => {
                    f.remove(&c.load);
                }
            }
        }
        let mut busy = lock(&in_flight);
        for c in &commands {
            busy.remove(&c.load);
        }
    });
}

/// Logs every load whose state changed, with the reason a member would read (nothing while
/// the controller is starting: nothing is decided then).
fn log_changes(outcome: &Outcome, previous: &mut BTreeMap<String, bool>) {
    if outcome.starting {
        return;
    }
    for l in &outcome.state.loads {
        if previous.insert(l.id.clone(), l.on) != Some(l.on) {
            tracing::info!(load = %l.id, on = l.on, "{}", l.reason);
        }
    }
}

/// On the way out: health loads on, confirmed, so a stopped controller leaves them powered.
async fn leave_safe(core: &Core, loads: &Loads) {
    let commands: Vec<Command> = loads
        .links
        .keys()
        .filter(|id| core.model().is_health(id))
        .map(|id| Command {
            load: id.clone(),
            action: Action::Switch(true),
        })
        .collect();
    let failed = loads.actuate(&commands).await;
    for (id, e) in failed {
        tracing::error!(load = %id, error = %e, "health load not confirmed on at shutdown");
    }
    tracing::info!("controller stopped; health loads left on");
}

/// Polls a file's modification time; when its content changes, sends what `event` makes of it.
/// With `seen_at_start` (the assembly, already loaded) the content at start is not sent; a
/// forecast file present at start is read at once.
async fn watch_file(
    path: PathBuf,
    seen_at_start: bool,
    events: mpsc::Sender<Event>,
    event: impl Fn(Vec<u8>) -> Event + Send + 'static,
) {
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last: Option<(SystemTime, Vec<u8>)> = None;
    let read = |p: &PathBuf| crate::config_files::read_limited(p);
    if seen_at_start && let (Some(t), Ok(bytes)) = (modified(&path), read(&path)) {
        last = Some((t, bytes));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(t) = modified(&path) else { continue };
        if last.as_ref().is_some_and(|(lt, _)| *lt == t) {
            continue;
        }
        let Ok(bytes) = read(&path) else {
            continue;
        };
        if last.as_ref().is_some_and(|(_, b)| *b == bytes) {
            last = Some((t, bytes));
            continue;
        }
        last = Some((t, bytes.clone()));
        if events.send(event(bytes)).await.is_err() {
            return;
        }
    }
}
