//! The decision half of the cycle, pure: given the process image (what every device last said,
//! and when), decide each load's state, the commands that change it, and what to show. No IO and
//! no clock: the image carries the time. The runtime (`control::runtime`) feeds it and carries
//! out its commands; tests feed it hand-written images, OpenEMS style.
//!
//! Fail-safe rules, one place:
//! - A device not heard from within its staleness limit is unknown; the plan assumes the worst:
//!   no PV from a silent inverter, a silent battery sits at its health reserve (so only the
//!   health tier may draw on it), a silent meter means every measured-only load runs at nominal.
//! - While anything is unknown, health loads are kept on: a fault never switches them off.
//! - A plug that is offline or silent gets no command; the load shows the fault.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use communalia_config as cfg;
use communalia_drivers::BatteryState;
use communalia_planner as planner;

use super::model::{DayForecast, SiteModel};
use super::status;
use crate::forecast::external::ExternalForecast;
use crate::forecast::load::LoadProfile;
use crate::forecast::solar::{self, Calibration, Scaling, Steps};
use crate::state::{
    AssemblyView, BatteryView, DeviceView, LoadView, PlanStepView, PlanView, SiteView, StateView,
    TierView,
};

/// What a Modbus device last said.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceValue {
    /// Inverter AC power, watts.
    Pv(f64),
    Battery(BatteryState),
    /// Meter active power, watts (consumption positive).
    Meter(f64),
    /// A meter at the grid or generator connection, watts: positive when the site imports,
    /// negative when it exports (the metering convention at a connection point; see
    /// config/README.md). The site's consumption is then this plus PV plus what the battery
    /// gives.
    Grid(f64),
}

/// One device in the process image: its last good value and when it came.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInput {
    pub id: String,
    pub last: Option<(DateTime<Utc>, DeviceValue)>,
    /// The last error, if the last read failed.
    pub error: Option<String>,
}

/// One controlled load's plug or setpoint, as last reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadInput {
    /// Availability (last will); `None` until heard.
    pub online: Option<bool>,
    /// Relay state (or setpoint > 0); `None` when unknown.
    pub on: Option<bool>,
    /// Measured power, `None` when unknown or stale.
    pub power: Option<f64>,
    /// A command that was not confirmed, kept until the next confirmed report.
    pub fault: Option<String>,
}

/// Everything the cycle knows at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessImage {
    pub at: DateTime<Utc>,
    pub devices: Vec<DeviceInput>,
    pub loads: BTreeMap<String, LoadInput>,
}

/// A change to make on a device.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Switch(bool),
    Setpoint(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub load: String,
    pub action: Action,
}

/// What one cycle decided.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub state: StateView,
    pub allocation: planner::Allocation,
    /// Empty in dry-run mode.
    pub commands: Vec<Command>,
    /// Inputs that were unknown this cycle, in words.
    pub faults: Vec<String>,
    /// The controller has just started and still waits for a device's first reading: nothing
    /// was decided, every load was left as it is.
    pub starting: bool,
}

/// A reading that counts (the drivers refuse non-finite numbers; the core checks again).
fn value_is_finite(v: &DeviceValue) -> bool {
    match v {
        DeviceValue::Pv(w) | DeviceValue::Meter(w) | DeviceValue::Grid(w) => w.is_finite(),
        DeviceValue::Battery(_) => true,
    }
}

/// A meter at the grid or generator connection.
fn is_grid_meter(d: &cfg::Device) -> bool {
    matches!(
        d.kind,
        cfg::DeviceKind::Sunspec {
            role: cfg::SunspecRole::Meter(cfg::Measures::Grid),
            ..
        } | cfg::DeviceKind::Sdm630 {
            measures: cfg::Measures::Grid
        }
    )
}

/// What the devices say this cycle, each reading judged fresh or stale against the device's
/// `stale_after` on the site's clock.
struct Readings {
    /// Sum of the inverters heard; `None` when none was.
    pv: Option<f64>,
    battery: Option<BatteryState>,
    /// From a consumption meter, or from a grid meter once every source is known.
    consumption: Option<f64>,
    /// Inputs unknown this cycle, in words.
    faults: Vec<String>,
    devices: Vec<DeviceView>,
}

fn read_devices(site: &cfg::Site, image: &ProcessImage) -> Readings {
    let now = image.at;
    let mut faults = Vec::new();
    let mut pv = None;
    let mut battery: Option<BatteryState> = None;
    let mut consumption = None;
    let mut grid: Option<f64> = None;
    // A source not heard this cycle: the sums above are then partial.
    let (mut unheard_pv, mut unheard_grid) = (false, false);
    let mut devices = Vec::new();
    for d in &site.devices {
        let input = image.devices.iter().find(|i| i.id == d.id);
        let fresh = input.and_then(|i| i.last.as_ref()).filter(|(at, _)| {
            now.signed_duration_since(*at)
                <= Duration::from_std(d.stale_after).unwrap_or(Duration::MAX)
        });
        match fresh.map(|(_, v)| v) {
            Some(DeviceValue::Pv(w)) if w.is_finite() => *pv.get_or_insert(0.0) += w.max(0.0),
            Some(DeviceValue::Battery(b)) => battery = Some(*b),
            Some(DeviceValue::Meter(w)) if w.is_finite() => consumption = Some(*w),
            Some(DeviceValue::Grid(w)) if w.is_finite() => *grid.get_or_insert(0.0) += w,
            // The drivers refuse such values; should one slip through, it is no reading.
            Some(_) => faults.push(format!("{} reports a value that is not a number", d.id)),
            None => faults.push(match input.and_then(|i| i.error.as_deref()) {
                Some(e) => format!("{} silent: {e}", d.id),
                None => format!("{} silent", d.id),
            }),
        }
        if !matches!(fresh.map(|(_, v)| v), Some(v) if value_is_finite(v)) {
            unheard_pv |= d.gives_pv();
            unheard_grid |= is_grid_meter(d);
        }
        devices.push(DeviceView {
            id: d.id.clone(),
            name: d.name.clone(),
            online: fresh.is_some(),
            last_seen: input
                .and_then(|i| i.last.as_ref())
                .map(|(at, _)| rfc3339(*at)),
        });
    }
    // A grid meter gives the consumption only with every source known: what comes in from
    // the grid, plus the sun, plus the battery's discharge (negative while it charges).
    // (With several inverters or grid meters, every one of them must have been heard.)
    if consumption.is_none()
        && !unheard_grid
        && let Some(g) = grid
    {
        let pv_known = !unheard_pv;
        let battery_w = battery.and_then(|b| b.power).map(|w| w.0);
        let battery_known =
            battery_w.is_some_and(f64::is_finite) || !site.devices.iter().any(|d| d.is_battery());
        if pv_known && battery_known {
            consumption = Some((g + pv.unwrap_or(0.0) + battery_w.unwrap_or(0.0)).max(0.0));
        }
    }
    Readings {
        pv,
        battery,
        consumption,
        faults,
        devices,
    }
}

/// The consumption nobody controls: what the meter reads less what the controlled loads'
/// plugs measure (or their nominal power when on and not measuring); without a meter, the
/// nominal power of the loads nobody switches.
fn uncontrolled_watts(site: &cfg::Site, image: &ProcessImage, consumption: Option<f64>) -> f64 {
    let mut controlled_measured = 0.0;
    let mut measured_only_nominal = 0.0;
    for l in &site.loads {
        let input = image.loads.get(&l.id);
        if l.control.is_controlled() {
            match input {
                Some(i) if i.power.is_some() => {
                    controlled_measured += i.power.unwrap_or(0.0).max(0.0)
                }
                Some(i) if i.on == Some(true) => controlled_measured += l.nominal.0,
                _ => {}
            }
        } else {
            measured_only_nominal += l.nominal.0;
        }
    }
    match consumption {
        Some(c) => (c - controlled_measured).max(0.0),
        None => measured_only_nominal,
    }
}

/// How often the horizon plan is refreshed, and its shape.
pub const PLAN_EVERY: Duration = Duration::minutes(5);
pub const PLAN_STEP_MINUTES: u32 = 15;
pub const PLAN_STEPS: usize = 96;
/// Share of clear-sky power a day gives when nothing better is known (the plan's forecast fades
/// to it); the health reserve never counts on more.
const TYPICAL_CLEAR_SKY_SHARE: f64 = 0.8;
/// Under this share of clear sky measured (the calibration of the last two hours, or the
/// inverter now), the day is grey: the health reserve counts on no sun at all, whatever the
/// forecast (an external one included), and keeps the whole night. At 35 % the village's
/// 12 kWp give at most about 3.4 kW at noon, and beyond the clinic, the cold storage and the
/// mast (2 kW) a few kWh a day at best: less than one night, and no forecast of more is to be
/// trusted on such a day (the replay's cloudy weather is 30 %).
pub const GREY_DAY_SHARE: f64 = 0.35;

/// The cycle's memory between steps: rotation, the horizon plan, the PV calibration.
#[derive(Debug)]
pub struct Core {
    /// Shared so a cycle can hold the site while it updates the core's memory, without a copy.
    model: Arc<SiteModel>,
    rotation: planner::Rotation,
    plan: Option<planner::HorizonPlan>,
    plan_at: Option<DateTime<Utc>>,
    plan_pv: Vec<f64>,
    /// Uncontrolled consumption the plan expects, per step.
    plan_uncontrolled: Vec<f64>,
    /// PV the health reserve counts on, per plan step (see [`Core::sun_forecast`]), and the
    /// share of clear sky it was made with.
    reserve_pv: Vec<f64>,
    reserve_share: f64,
    calibration: Calibration,
    assembly_errors: Vec<String>,
    dry_run: bool,
    last_pv: Option<f64>,
    last_soc: Option<f64>,
    plan_every: Duration,
    profile: LoadProfile,
    last_at: Option<DateTime<Utc>>,
    /// The time of the first step: a device that fails at start is given its staleness limit
    /// before the cycle assumes the worst of it.
    started_at: Option<DateTime<Utc>>,
    /// Energy each load with a daily need got today (local day number, watt-hours by load).
    delivered: (i64, BTreeMap<String, f64>),
    external_pv: Option<ExternalForecast>,
    /// With deferred planning, the plan job waiting to be taken by the runtime, and when the
    /// one being solved was asked for (no new one is asked meanwhile).
    deferred: Option<Deferred>,
}

/// Deferred planning: the runtime solves the horizon plan off the control loop.
#[derive(Debug, Default)]
struct Deferred {
    job: Option<PlanJob>,
    asked_at: Option<DateTime<Utc>>,
    /// Bumped whenever what a plan is made from changes (assembly, external forecast), so a
    /// plan solved from older inputs is not installed.
    generation: u64,
    /// The plan in force was made from inputs that have changed since: a new one is due.
    stale: bool,
}

/// Everything the horizon plan is made from; [`PlanJob::solve`] is the heavy part (the LP),
/// pure, and may run on another thread.
#[derive(Debug, Clone)]
pub struct PlanJob {
    now: DateTime<Utc>,
    model: Arc<SiteModel>,
    input: planner::HorizonInput,
    pv: Vec<f64>,
    uncontrolled: Vec<f64>,
    reserve_pv: Vec<f64>,
    reserve_share: f64,
    generation: u64,
}

/// A solved [`PlanJob`], for [`Core::install_plan`].
#[derive(Debug)]
pub struct SolvedPlan {
    job: PlanJob,
    plan: planner::HorizonPlan,
}

impl PlanJob {
    /// Solves the horizon plan (tens of milliseconds to a few hundred on a small board).
    pub fn solve(mut self) -> SolvedPlan {
        self.input.reserve_wh = self.reserve_per_step();
        let plan = planner::plan_horizon(&self.input);
        SolvedPlan { job: self, plan }
    }

    /// The health reserve each plan step must hold: the night's need less the sun counted from
    /// the end of that step to sunset (see [`Core::refresh_plan`]).
    fn reserve_per_step(&self) -> Vec<f64> {
        let step = Duration::minutes(i64::from(PLAN_STEP_MINUTES));
        let forecast = DayForecast {
            start: self.now,
            step,
            pv_watts: &self.reserve_pv,
            uncontrolled_watts: &self.uncontrolled,
        };
        (0..PLAN_STEPS)
            .map(|i| {
                let at = self.now + step * i32::try_from(i).unwrap_or(0);
                self.model
                    .health_reserve_with_sun_wh(at, at + step, &forecast)
            })
            .collect()
    }
}

impl Core {
    pub fn new(model: SiteModel, dry_run: bool) -> Self {
        Self {
            model: Arc::new(model),
            rotation: planner::Rotation::default(),
            plan: None,
            plan_at: None,
            plan_pv: Vec::new(),
            plan_uncontrolled: Vec::new(),
            reserve_pv: Vec::new(),
            reserve_share: 0.0,
            calibration: Calibration::new(Duration::hours(2)),
            assembly_errors: Vec::new(),
            dry_run,
            last_pv: None,
            last_soc: None,
            plan_every: PLAN_EVERY,
            profile: LoadProfile::default(),
            last_at: None,
            started_at: None,
            delivered: (i64::MIN, BTreeMap::new()),
            external_pv: None,
            deferred: None,
        }
    }

    /// Plans off the control loop: when a plan is due, [`Core::step`] leaves a [`PlanJob`] for
    /// [`Core::take_plan_job`] instead of solving it, and the plan in force stays until the
    /// solved one is given back with [`Core::install_plan`]. (The what-if replay and the tests
    /// plan inline, in the step, so a replay is deterministic.)
    pub fn with_deferred_planning(mut self) -> Self {
        self.deferred = Some(Deferred::default());
        self
    }

    /// The plan job the last step asked for, if any (deferred planning).
    pub fn take_plan_job(&mut self) -> Option<PlanJob> {
        self.deferred.as_mut()?.job.take()
    }

    /// Puts a solved plan in force, unless what it was made from has changed since (then the
    /// next step asks for a new one).
    pub fn install_plan(&mut self, solved: SolvedPlan) {
        if let Some(d) = self.deferred.as_mut() {
            d.asked_at = None;
            if solved.job.generation != d.generation {
                return;
            }
            d.stale = false;
        }
        let SolvedPlan { job, plan } = solved;
        self.plan = Some(plan);
        self.plan_pv = job.pv;
        self.plan_uncontrolled = job.uncontrolled;
        self.reserve_pv = job.reserve_pv;
        self.reserve_share = job.reserve_share;
        self.plan_at = Some(job.now);
    }

    /// What a plan is made from changed: the plan is redone at the next step. Planning inline,
    /// the new one is in force in that step; deferred, the one in force stays until the new
    /// one is solved (a cycle without any plan would run every flexible load at once).
    fn invalidate_plan(&mut self) {
        match self.deferred.as_mut() {
            Some(d) => {
                d.generation += 1;
                d.job = None;
                d.asked_at = None;
                d.stale = true;
            }
            None => self.plan_at = None,
        }
    }

    /// Starts from a load profile learnt before (kept across restarts by the runtime).
    pub fn with_profile(mut self, profile: LoadProfile) -> Self {
        self.profile = profile;
        self
    }

    /// What the site has learnt of its uncontrolled consumption per quarter hour.
    pub fn profile(&self) -> &LoadProfile {
        &self.profile
    }

    /// Refreshes the horizon plan every `every` instead of [`PLAN_EVERY`] (the what-if replay
    /// plans every few hours to run a week in seconds).
    pub fn with_plan_every(mut self, every: Duration) -> Self {
        self.plan_every = every;
        self
    }

    pub fn model(&self) -> &SiteModel {
        &self.model
    }

    /// A new, validated assembly takes effect from the next step; the plan is redone.
    pub fn set_assembly(&mut self, assembly: cfg::Assembly) {
        Arc::make_mut(&mut self.model).config.assembly = assembly;
        self.assembly_errors.clear();
        self.invalidate_plan();
    }

    /// An external PV forecast: where it covers the plan it replaces the local solar model.
    /// The plan is redone at the next step.
    pub fn set_external_pv(&mut self, forecast: ExternalForecast) {
        self.external_pv = Some(forecast);
        self.invalidate_plan();
    }

    /// A rejected assembly file: the one in force stays, its errors are shown.
    pub fn reject_assembly(&mut self, errors: Vec<String>) {
        self.assembly_errors = errors;
    }

    pub fn assembly_view(&self) -> AssemblyView {
        AssemblyView::from_config(self.model.assembly(), self.assembly_errors.clone())
    }

    /// One cycle, in phases: read the devices (and judge each reading's staleness on the site's
    /// clock), wait while the controller has just started, learn from what was measured, plan,
    /// allocate, decide each load's command and reason, and record the state.
    pub fn step(&mut self, image: &ProcessImage) -> Outcome {
        let now = image.at;
        let model = Arc::clone(&self.model);
        let site = model.site();

        let readings = read_devices(site, image);
        let waiting_for = self.waiting_for(site, image, now);
        let starting = !waiting_for.is_empty();
        let soc = readings
            .battery
            .and_then(|b| b.soc)
            .map(communalia_drivers::units::Percent::fraction)
            .filter(|s| s.is_finite());
        let uncontrolled = uncontrolled_watts(site, image, readings.consumption);
        self.learn(image, &readings, uncontrolled, starting);
        self.last_pv = readings.pv;
        self.last_soc = soc;

        // The plan for now (none from half-known inputs: the first is made once they are in).
        if !starting && self.plan_due(now) {
            self.refresh_plan(now, soc, uncontrolled);
        }
        let (priorities, snapshot) = self.allocation_inputs(now, readings.pv, soc, uncontrolled);
        // The first decision after a start: the loads found on are taken as the ones whose turn
        // it is in their tier, so a restart carries on with them instead of cutting them for the
        // first-listed ones (and giving them back a few cycles later).
        if !starting && self.rotation.cycle == 0 {
            for (id, input) in &image.loads {
                if input.on == Some(false) {
                    self.rotation.loads.entry(id.clone()).or_default().served = 1;
                }
            }
        }
        let allocation = planner::allocate(&priorities, &snapshot, &self.rotation);
        if !starting {
            self.rotation = allocation.rotation.clone();
        }

        let mut banner = status::Facts {
            available_watts: allocation.available_watts,
            allocated_watts: allocation.allocated_watts,
            battery_watts: readings.battery.and_then(|b| b.power).map(|w| w.0),
            starting,
            ..status::Facts::default()
        };
        let (commands, loads) = self.decide_loads(
            image,
            &priorities,
            &allocation,
            &readings.faults,
            &waiting_for,
            &mut banner,
        );
        let state = self.state_view(
            now,
            &readings,
            soc,
            &allocation,
            &priorities,
            loads,
            &banner,
        );
        Outcome {
            state,
            allocation,
            commands,
            faults: readings.faults,
            starting,
        }
    }

    /// The devices not heard yet since the controller started, while their staleness limit has
    /// not passed. Until every device has answered, or has stayed silent for its whole
    /// staleness limit since the controller started, nothing is decided: a controller that just
    /// started knows too little to cut anyone, and a restart must not click relays off and on (a
    /// first read that times out is not yet a dead inverter; a device that was just heard is
    /// trusted for as long). Loads stay as their plugs report them meanwhile.
    fn waiting_for<'s>(
        &mut self,
        site: &'s cfg::Site,
        image: &ProcessImage,
        now: DateTime<Utc>,
    ) -> Vec<&'s str> {
        let started = *self.started_at.get_or_insert(now);
        site.devices
            .iter()
            .filter(|d| {
                let heard = image
                    .devices
                    .iter()
                    .any(|i| i.id == d.id && i.last.is_some());
                !heard
                    && now.signed_duration_since(started)
                        < Duration::from_std(d.stale_after).unwrap_or(Duration::MAX)
            })
            .map(|d| d.name.as_str())
            .collect()
    }

    /// Learns from what was measured: the PV calibration against clear sky, the day's shape of
    /// the uncontrolled consumption (from measurements only, never from the worst-case
    /// fallback), and what the loads with a daily need got today (so the plan asks only for the
    /// rest).
    fn learn(
        &mut self,
        image: &ProcessImage,
        readings: &Readings,
        uncontrolled: f64,
        starting: bool,
    ) {
        let now = image.at;
        let model = Arc::clone(&self.model);
        let site = model.site();
        let has_inverter = site.devices.iter().any(|d| {
            matches!(
                d.kind,
                cfg::DeviceKind::Sunspec {
                    role: cfg::SunspecRole::PvInverter,
                    ..
                }
            )
        });
        if has_inverter && !starting {
            let clear = model
                .place()
                .map(|p| solar::clear_sky_watts(p, &model.arrays(), now))
                .unwrap_or(0.0);
            self.calibration.record(now, readings.pv, clear);
        }
        let dt = self
            .last_at
            .map_or(0.0, |l| (now - l).num_milliseconds() as f64 / 1000.0);
        self.last_at = Some(now);
        if readings.consumption.is_some() && dt > 0.0 && dt < 600.0 {
            self.profile
                .record(model.local_minute(now), uncontrolled, dt);
        }
        let day = self.local_day(now);
        if self.delivered.0 != day {
            self.delivered = (day, BTreeMap::new());
        }
        if dt > 0.0 && dt < 600.0 {
            for l in site.loads.iter().filter(|l| l.daily_need.is_some()) {
                let watts = match image.loads.get(&l.id) {
                    Some(LoadInput { power: Some(p), .. }) if p.is_finite() => p.max(0.0),
                    Some(LoadInput { on: Some(true), .. }) => l.nominal.0,
                    _ => 0.0,
                };
                *self.delivered.1.entry(l.id.clone()).or_default() += watts * dt / 3600.0;
            }
        }
    }

    /// What the allocation decides from: the tiers with the plan's share for each flexible
    /// load now, and the snapshot (sun, battery, the plan's charge within its limits, the
    /// health reserve).
    fn allocation_inputs(
        &self,
        now: DateTime<Utc>,
        pv: Option<f64>,
        soc: Option<f64>,
        uncontrolled: f64,
    ) -> (planner::Priorities, planner::Snapshot) {
        let site = self.model.site();
        let reserve_wh = self.health_reserve_now_wh(now);
        let model_battery = self.model.battery(match soc {
            Some(s) => s,
            // Worst case: just the health reserve left.
            None => site.battery.as_ref().map_or(0.0, |b| {
                b.min_soc.fraction() + reserve_wh / b.capacity.0.max(1.0)
            }),
        });
        let step = self.plan_step(now);
        let planned_charge = self
            .plan
            .as_ref()
            .zip(step)
            .and_then(|(p, s)| p.battery_watts.get(s).copied())
            .map_or(0.0, |w| (-w).max(0.0));
        // The plan's charge never leaves the health tier short: what the sun and the battery
        // can give beyond the uncontrolled consumption covers the loads down to the health tier
        // first. (With the battery at its floor, a charge planned on a lower forecast of
        // consumption, e.g. a meter reading a cycle behind the plugs, left it nothing.)
        let discharge = model_battery
            .as_ref()
            .filter(|b| b.usable_wh() > 0.0)
            .map_or(0.0, |b| b.max_discharge_watts.max(0.0));
        let planned_charge = planned_charge.min(
            (pv.unwrap_or(0.0) + discharge - uncontrolled - self.model.protected_watts()).max(0.0),
        );
        // Nor does it cut the tiers down to the one below the health tier while the sun alone
        // covers them and the battery holds the reserve (before its `min_wh` floor: serving
        // them from the sun spends nothing from the battery). See `SiteModel::sun_first_watts`.
        let planned_charge = match (pv, model_battery.as_ref()) {
            (Some(pv), Some(b)) => {
                let spare = pv - uncontrolled - self.model.sun_first_watts();
                let held = b.usable_wh() * b.discharge_efficiency;
                if spare >= 0.0 && held >= self.reserve_before_floor_now_wh(now) {
                    planned_charge.min(spare)
                } else {
                    planned_charge
                }
            }
            _ => planned_charge,
        };
        let mut priorities = self.model.priorities();
        if let (Some(plan), Some(s)) = (&self.plan, step) {
            for load in priorities.tiers.iter_mut().flat_map(|t| &mut t.loads) {
                if load.flexible || load.need.is_some() {
                    load.planned_watts = plan.watts(&load.id, s);
                }
            }
        }
        let snapshot = planner::Snapshot {
            pv_watts: pv.unwrap_or(0.0),
            grid_allowance_watts: match site.grid.as_ref() {
                Some(g) if g.kind == cfg::GridKind::Grid => g.max_import.0,
                _ => 0.0,
            },
            uncontrolled_watts: uncontrolled,
            battery: model_battery,
            planned_charge_watts: planned_charge,
            health_reserve: planner::HealthReserve::EnergyWh(reserve_wh),
            now_secs: now.timestamp_millis() as f64 / 1000.0,
        };
        (priorities, snapshot)
    }

    /// Each load's decision as a person reads it, and the command that carries it out: the
    /// allocation's, but a health load is kept on while the controller has just started or an
    /// input is unknown, and nothing else is switched while it has just started. Fills the
    /// banner's cut and waiting loads.
    fn decide_loads(
        &self,
        image: &ProcessImage,
        priorities: &planner::Priorities,
        allocation: &planner::Allocation,
        faults: &[String],
        waiting_for: &[&str],
        banner: &mut status::Facts,
    ) -> (Vec<Command>, Vec<LoadView>) {
        let site = self.model.site();
        let starting = !waiting_for.is_empty();
        let degraded = !faults.is_empty();
        // A flexible load that waits for the plan says when the plan runs it, or why not.
        let outlooks = self.outlooks(priorities, allocation, image.at);
        let mut commands = Vec::new();
        let mut loads = Vec::new();
        for a in &allocation.loads {
            let Some(l) = site.load(&a.id) else { continue };
            let input = image.loads.get(&a.id).cloned().unwrap_or_default();
            let health = self.model.is_health(&a.id);
            let mut on = a.on;
            let mut watts = a.allocated_watts;
            let mut reason = a.reason.clone();
            let outlook = outlooks.get(&a.id).filter(|_| a.deferred);
            if let (Some(o), Some(plan)) = (outlook, self.plan.as_ref()) {
                reason = planner::outlook::deferred_reason(&l.name, o, plan);
            }
            if starting && health {
                // Switching a health load on is never wrong: it is served first, and may draw
                // on the reserve.
                on = true;
                watts = a.demand_watts;
                reason = format!(
                    "{} kept on: a health load is served while the controller, just started, waits for the first readings of {}",
                    l.name,
                    waiting_for.join(", ")
                );
            } else if starting {
                // Left as it is: on as its plug reports it (a load nobody switches is on).
                on = if l.control.is_controlled() {
                    input.on.unwrap_or(false)
                } else {
                    a.on
                };
                // Nothing is allocated: what it draws meanwhile is what its plug measures.
                watts = 0.0;
                reason = format!(
                    "{} left {}: the controller has just started and waits for the first readings of {} before deciding",
                    l.name,
                    if on { "on" } else { "off" },
                    waiting_for.join(", ")
                );
            } else if health && !on && degraded {
                on = true;
                watts = a.demand_watts;
                reason = format!(
                    "{} kept on: a health load is never switched off while inputs are unknown ({})",
                    l.name,
                    faults.join("; ")
                );
            }
            // Off because the plan runs it later: waiting, not cut, and the banner says when.
            let waiting = !on && a.deferred;
            if !on && a.demand_watts > 0.0 && !starting {
                if !waiting {
                    banner.cut.push(l.name.clone());
                } else if let Some(when) = outlook.and_then(|o| self.when(o)) {
                    banner.waits.push(status::Wait {
                        name: l.name.clone(),
                        when,
                    });
                }
            }
            let mut fault = input.fault.clone();
            let reachable = input.online != Some(false);
            if !reachable {
                fault = Some("plug offline".into());
            }
            let action = match l.control {
                cfg::Control::Setpoint { .. } => {
                    let w = if on { watts } else { 0.0 };
                    (input.on != Some(w > 0.0) || input.power.is_none_or(|p| (p - w).abs() > 1.0))
                        .then_some(Action::Setpoint(w))
                }
                _ => (input.on != Some(on)).then_some(Action::Switch(on)),
            };
            // The device reports the state decided: a command it did not confirm earlier is
            // moot. (The runtime clears a fault only when a later command is confirmed, and
            // a plug already in the wanted state gets none, so the fault stayed forever.)
            if reachable && action.is_none() && input.on.is_some() {
                fault = None;
            }
            // While starting, only a health load is switched (on).
            if let (Some(action), false, false, true) =
                (action, self.dry_run, starting && !health, reachable)
            {
                commands.push(Command {
                    load: a.id.clone(),
                    action,
                });
            }
            loads.push(LoadView {
                id: a.id.clone(),
                name: l.name.clone(),
                tier: a.tier.clone(),
                rank: a.rank,
                on,
                allocated_watts: if on { watts } else { 0.0 },
                measured_watts: input.power,
                reported_on: if l.control.is_controlled() {
                    input.on
                } else {
                    Some(true)
                },
                reason,
                fault,
            });
        }
        (commands, loads)
    }

    /// The state the API, the page and the records show for this cycle.
    #[allow(clippy::too_many_arguments)]
    fn state_view(
        &self,
        now: DateTime<Utc>,
        readings: &Readings,
        soc: Option<f64>,
        allocation: &planner::Allocation,
        priorities: &planner::Priorities,
        loads: Vec<LoadView>,
        banner: &status::Facts,
    ) -> StateView {
        let site = self.model.site();
        let tiers = priorities
            .tiers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mine = loads.iter().filter(|l| l.rank == i + 1);
                TierView {
                    name: t.name.clone(),
                    rank: i + 1,
                    demanded_watts: t.loads.iter().map(|l| l.demand_watts).sum(),
                    served_watts: mine.map(|l| l.allocated_watts).sum(),
                }
            })
            .collect();
        let (grid_state, status) = status::banner(banner);
        StateView {
            time: rfc3339(now),
            site: SiteView {
                id: site.id.clone(),
                name: site.name.clone(),
                utc_offset_minutes: site.utc_offset_minutes,
            },
            available_watts: allocation.available_watts,
            pv_watts: readings.pv,
            consumption_watts: readings.consumption,
            battery: site.battery.as_ref().map(|_| BatteryView {
                soc_percent: soc.map(|s| s * 100.0),
                watts: readings.battery.and_then(|b| b.power).map(|w| w.0),
            }),
            grid_state,
            status,
            dry_run: self.dry_run,
            devices: readings.devices.clone(),
            tiers,
            loads,
            assembly_errors: self.assembly_errors.clone(),
        }
    }

    /// What the plan in force holds for each load the allocation defers (see
    /// [`planner::outlook`]).
    fn outlooks(
        &self,
        priorities: &planner::Priorities,
        allocation: &planner::Allocation,
        now: DateTime<Utc>,
    ) -> BTreeMap<String, planner::outlook::Outlook> {
        let (Some(plan), Some(at)) = (self.plan.as_ref(), self.plan_at) else {
            return BTreeMap::new();
        };
        let Ok(elapsed_minutes) = u32::try_from((now - at).num_minutes()) else {
            return BTreeMap::new();
        };
        let ctx = planner::outlook::PlanContext {
            plan,
            pv_watts: &self.plan_pv,
            uncontrolled_watts: &self.plan_uncontrolled,
            elapsed_minutes,
        };
        allocation
            .loads
            .iter()
            .filter(|a| a.deferred)
            .filter_map(|a| {
                Some((
                    a.id.clone(),
                    planner::outlook::outlook(&ctx, priorities, &a.id)?,
                ))
            })
            .collect()
    }

    /// When a waiting load runs, for the banner; `None` when it asks nothing more today (its
    /// daily need is delivered).
    fn when(&self, outlook: &planner::outlook::Outlook) -> Option<status::When> {
        use planner::outlook::{Cause, Outlook};
        match outlook {
            Outlook::Planned { from, today, .. } => Some(status::When::Planned {
                at: planner::outlook::clock(self.plan.as_ref()?, *from),
                today: *today,
            }),
            Outlook::NotPlanned {
                cause: Cause::NeedMet { .. },
                ..
            } => None,
            Outlook::NotPlanned { .. } => Some(status::When::NotPlanned),
        }
    }

    /// A plan is due every `plan_every`, and sooner when the sun turned out otherwise than
    /// the health reserve counted (its share of clear sky moved by a tenth or more, or across
    /// [`GREY_DAY_SHARE`]): the
    /// per-step reserve and the charging it asks depend on it (at most once a minute then).
    fn plan_due(&self, now: DateTime<Utc>) -> bool {
        // A plan being solved off the loop: not again meanwhile (unless it was lost: a minute).
        if let Some(asked) = self.deferred.as_ref().and_then(|d| d.asked_at)
            && now >= asked
            && now - asked < Duration::minutes(1)
        {
            return false;
        }
        if self.deferred.as_ref().is_some_and(|d| d.stale) {
            return true;
        }
        self.plan_at.is_none_or(|at| {
            now - at >= self.plan_every
                || now < at
                || (now - at >= Duration::minutes(1)
                    && ((self.sun_share(now) - self.reserve_share).abs() >= 0.1
                        || (self.sun_share(now) < GREY_DAY_SHARE)
                            != (self.reserve_share < GREY_DAY_SHARE)))
        })
    }

    /// The index of the plan step holding `now`, if a plan exists and covers it.
    fn plan_step(&self, now: DateTime<Utc>) -> Option<usize> {
        let at = self.plan_at?;
        let s = (now - at).num_seconds() / (i64::from(PLAN_STEP_MINUTES) * 60);
        usize::try_from(s).ok().filter(|s| *s < PLAN_STEPS)
    }

    /// The health reserve the battery must hold at `now`: the coming night's need less part of
    /// what the sun is expected to put into the battery before sunset, by the forecast made
    /// with the plan in force (the whole night's need before the first plan).
    pub fn health_reserve_now_wh(&self, now: DateTime<Utc>) -> f64 {
        self.reserve_before_floor_now_wh(now)
            .max(self.model.assembly().health_reserve.min.0)
    }

    /// [`Core::health_reserve_now_wh`] before the assembly's `min_wh` floor (see
    /// [`SiteModel::reserve_before_floor_wh`]).
    pub fn reserve_before_floor_now_wh(&self, now: DateTime<Utc>) -> f64 {
        match self.plan_at {
            Some(start) => self.model.reserve_before_floor_wh(
                now,
                now,
                &DayForecast {
                    start,
                    step: Duration::minutes(i64::from(PLAN_STEP_MINUTES)),
                    pv_watts: &self.reserve_pv,
                    uncontrolled_watts: &self.plan_uncontrolled,
                },
            ),
            None => self.model.health_reserve_wh(now),
        }
    }

    /// PV the health reserve counts on, per step from `now`: the external forecast where it
    /// covers a step; elsewhere the clear-sky model scaled by `share` ([`Core::sun_share`]).
    /// Nothing at all on a grey day (under [`GREY_DAY_SHARE`] of clear sky measured), whatever
    /// the forecast says.
    fn sun_forecast(&self, now: DateTime<Utc>, step: Duration, share: f64) -> Vec<f64> {
        if self.measured_share(now).is_some_and(|s| s < GREY_DAY_SHARE) {
            return vec![0.0; PLAN_STEPS];
        }
        let arrays = self.model.arrays();
        let place = self.model.place();
        let clear = |t: DateTime<Utc>| place.map_or(0.0, |p| solar::clear_sky_watts(p, &arrays, t));
        (0..PLAN_STEPS)
            .map(|i| {
                let mid = now + step * i32::try_from(i).unwrap_or(0) + step / 2;
                self.external_pv
                    .as_ref()
                    .and_then(|ext| ext.at(mid))
                    .unwrap_or_else(|| clear(mid) * share)
            })
            .collect()
    }

    /// The share of clear sky the health reserve counts on at `now`: what the sun gave of late
    /// (the calibration, or before it can tell, the share the inverter gives now once the sun
    /// is above a tenth of the peak), never more than [`TYPICAL_CLEAR_SKY_SHARE`]. Unlike the
    /// plan's forecast it does not fade to the typical share: a grey morning is assumed to
    /// stay grey, and before the sun has shown what it gives, nothing is counted.
    fn sun_share(&self, now: DateTime<Utc>) -> f64 {
        self.measured_share(now)
            .map_or(0.0, |f| f.clamp(0.0, TYPICAL_CLEAR_SKY_SHARE))
    }

    /// The share of clear sky the sun gave of late, as [`Core::sun_share`] reads it before
    /// capping it; `None` until the sun has shown what it gives (at night, early in the
    /// morning, without coordinates).
    fn measured_share(&self, now: DateTime<Utc>) -> Option<f64> {
        let peak = self.model.pv_peak_watts();
        let now_clear = self.model.place().map_or(0.0, |p| {
            solar::clear_sky_watts(p, &self.model.arrays(), now)
        });
        self.calibration
            .factor(peak)
            .or_else(|| {
                let pv = self.last_pv?;
                (peak > 0.0 && now_clear >= 0.1 * peak).then(|| pv / now_clear)
            })
            .filter(|f| f.is_finite() && *f >= 0.0)
    }

    /// Redoes the horizon plan from `now`: PV from the clear-sky model scaled by recent
    /// production, uncontrolled consumption from the learnt daily profile (as now where it has
    /// not learnt yet), the health reserve per step.
    ///
    /// The per-step reserve counts on the sun too, as the allocation does: each step must hold
    /// the night's need less the counted sun charge from the end of that step to sunset. The
    /// plan pays for every step under its reserve, so with the whole night required at every
    /// daylight step a morning after a night on the battery put all the sun into the battery
    /// before any load below the health tier; with the sun counted, the floor rises through
    /// the day to the whole night at sunset, and the plan charges enough to follow it while the
    /// rest of the sun serves the loads. At night the reserve is as before.
    ///
    /// With deferred planning the solve is left as a [`PlanJob`] for the runtime.
    pub fn refresh_plan(&mut self, now: DateTime<Utc>, soc: Option<f64>, uncontrolled: f64) {
        let step = Duration::minutes(i64::from(PLAN_STEP_MINUTES));
        let peak = self.model.pv_peak_watts();
        let pv = match self.model.place() {
            Some(place) => solar::pv_forecast(
                place,
                &self.model.arrays(),
                Steps {
                    start: now,
                    step,
                    steps: PLAN_STEPS,
                },
                Scaling {
                    recent: self.calibration.factor(peak),
                    typical: TYPICAL_CLEAR_SKY_SHARE,
                    fade: Duration::hours(4),
                },
            ),
            None => vec![self.last_pv.unwrap_or(0.0); PLAN_STEPS],
        };
        // An external forecast takes precedence wherever it covers a step (at its middle).
        let pv: Vec<f64> = match &self.external_pv {
            Some(ext) => pv
                .iter()
                .enumerate()
                .map(|(i, local)| {
                    let mid = now + step * i32::try_from(i).unwrap_or(0) + step / 2;
                    ext.at(mid).unwrap_or(*local)
                })
                .collect(),
            None => pv,
        };
        let uncontrolled_forecast =
            self.profile
                .forecast(self.model.local_minute(now), PLAN_STEPS, uncontrolled);
        let share = self.sun_share(now);
        let reserve_pv = self.sun_forecast(now, step, share);
        let mut priorities = self.model.priorities();
        if self.delivered.0 == self.local_day(now) {
            for load in priorities.tiers.iter_mut().flat_map(|t| &mut t.loads) {
                if let (Some(need), Some(got)) =
                    (load.need.as_mut(), self.delivered.1.get(&load.id))
                {
                    need.energy_wh = (need.energy_wh - got).max(0.0);
                }
            }
        }
        let soc = soc.or(self.last_soc).unwrap_or_else(|| {
            self.model
                .site()
                .battery
                .as_ref()
                .map_or(0.0, |b| b.min_soc.fraction())
        });
        let input = planner::HorizonInput {
            step_minutes: PLAN_STEP_MINUTES,
            start_minute: self.model.local_minute(now),
            pv_watts: pv.clone(),
            uncontrolled_watts: uncontrolled_forecast.clone(),
            battery: self.model.battery(soc),
            import: self.model.site().grid.as_ref().and_then(|g| {
                (g.kind == cfg::GridKind::Grid).then(|| planner::GridImport {
                    max_import_watts: g.max_import.0,
                    price_per_kwh: vec![g.import_price_per_kwh.unwrap_or(0.0)],
                })
            }),
            // Filled in by `PlanJob::solve`: the per-step reserve scans the sun (milliseconds),
            // which belongs with the solve, off the control loop.
            reserve_wh: Vec::new(),
            loads: planner::HorizonLoad::from_priorities(&priorities),
            max_lp_variables: 20_000,
        };
        let job = PlanJob {
            now,
            model: Arc::clone(&self.model),
            input,
            pv,
            uncontrolled: uncontrolled_forecast,
            reserve_pv,
            reserve_share: share,
            generation: self.deferred.as_ref().map_or(0, |d| d.generation),
        };
        // The very first plan is solved here even when deferred: until a plan exists, every
        // flexible load would run at once.
        match self.deferred.as_mut().filter(|_| self.plan.is_some()) {
            Some(d) => {
                d.asked_at = Some(now);
                d.job = Some(job);
            }
            None => {
                let solved = job.solve();
                self.install_plan(solved);
            }
        }
    }

    /// The site's local day number (days since 1970-01-01 at the site's UTC offset).
    fn local_day(&self, now: DateTime<Utc>) -> i64 {
        let offset = i64::from(self.model.site().utc_offset_minutes) * 60;
        (now.timestamp() + offset).div_euclid(86_400)
    }

    /// Energy a load with a daily need has had today, in watt-hours.
    pub fn delivered_today(&self, load: &str) -> f64 {
        self.delivered.1.get(load).copied().unwrap_or(0.0)
    }

    /// When the horizon plan in force was made (`None` before the first).
    pub fn plan_made_at(&self) -> Option<DateTime<Utc>> {
        self.plan_at
    }

    /// The horizon plan as `/api/plan` shows it.
    pub fn plan_view(&self) -> PlanView {
        let Some((plan, at)) = self.plan.as_ref().zip(self.plan_at) else {
            return PlanView {
                generated_at: String::new(),
                step_minutes: PLAN_STEP_MINUTES,
                steps: Vec::new(),
                diagnostics: vec!["no plan yet".into()],
            };
        };
        let step = Duration::minutes(i64::from(plan.step_minutes));
        let steps = (0..self.plan_pv.len())
            .map(|i| PlanStepView {
                start: rfc3339(at + step * i32::try_from(i).unwrap_or(0)),
                pv_watts: self.plan_pv[i],
                soc_percent: plan.soc.get(i + 1).map(|s| s * 100.0),
                loads: plan
                    .loads
                    .iter()
                    .filter_map(|l| {
                        let w = l.watts.get(i).copied().unwrap_or(0.0);
                        (w > 0.5).then(|| (l.id.clone(), w))
                    })
                    .collect(),
            })
            .collect();
        PlanView {
            generated_at: rfc3339(at),
            step_minutes: plan.step_minutes,
            steps,
            diagnostics: plan.diagnostics.iter().map(|d| d.message.clone()).collect(),
        }
    }
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn village() -> SiteModel {
        let ports = crate::demo::Ports {
            modbus_base: 5020,
            mqtt: 1883,
        };
        SiteModel::new(crate::demo::village_config(&ports, 1.0).unwrap())
    }

    /// 2026-03-02 (a clear day in the demo's weather) at `hhmm` local in Kalinzu (UTC+3).
    fn local(hhmm: &str) -> DateTime<Utc> {
        let t: DateTime<Utc> = format!("2026-03-02T{hhmm}:00Z").parse().unwrap();
        t - Duration::hours(3)
    }

    /// The village as its devices report it: PV, battery at `soc` percent, every controlled
    /// load drawing its nominal power when on, the telecom mast always.
    fn image(m: &SiteModel, at: DateTime<Utc>, pv: f64, soc: f64, on: &[String]) -> ProcessImage {
        let dev = |id: &str, v: DeviceValue| DeviceInput {
            id: id.into(),
            last: Some((at, v)),
            error: None,
        };
        let mut loads = BTreeMap::new();
        let mut consumption = 0.0;
        for l in &m.site().loads {
            let running = !l.control.is_controlled() || on.contains(&l.id);
            if running {
                consumption += l.nominal.0;
            }
            if l.control.is_controlled() {
                loads.insert(
                    l.id.clone(),
                    LoadInput {
                        online: Some(true),
                        on: Some(running),
                        power: Some(if running { l.nominal.0 } else { 0.0 }),
                        fault: None,
                    },
                );
            }
        }
        ProcessImage {
            at,
            devices: vec![
                dev("inverter", DeviceValue::Pv(pv)),
                dev(
                    "battery",
                    DeviceValue::Battery(BatteryState {
                        soc: Some(communalia_drivers::Percent(soc)),
                        ..BatteryState::default()
                    }),
                ),
                dev("meter", DeviceValue::Meter(consumption)),
            ],
            loads,
        }
    }

    /// Steps the core from `from` every `every` for `n` steps with PV at `share` of clear sky
    /// and the battery at `soc`, the devices following every command; the last outcome.
    fn run(
        core: &mut Core,
        from: DateTime<Utc>,
        every: Duration,
        n: i32,
        share: f64,
        soc: f64,
    ) -> Outcome {
        let m = core.model().clone();
        let place = m.place().unwrap();
        let mut on: Vec<String> = Vec::new();
        let mut last = None;
        for i in 0..n {
            let at = from + every * i;
            let pv = solar::clear_sky_watts(place, &m.arrays(), at) * share;
            let out = core.step(&image(&m, at, pv, soc, &on));
            on = out
                .state
                .loads
                .iter()
                .filter(|l| l.on)
                .map(|l| l.id.clone())
                .collect();
            last = Some(out);
        }
        last.unwrap()
    }

    fn is_on(out: &Outcome, id: &str) -> bool {
        out.state.loads.iter().any(|l| l.id == id && l.on)
    }

    #[test]
    fn a_deferred_plan_is_the_inline_plan_and_only_the_latest_inputs_take_effect() {
        let m = village();
        let img = |t: DateTime<Utc>| image(&m, t, 4000.0, 50.0, &[]);
        let at = local("09:00");
        let mut deferred = Core::new(m.clone(), false).with_deferred_planning();
        deferred.step(&img(at));
        assert_eq!(
            deferred.plan_made_at(),
            Some(at),
            "the first plan is made at once: no cycle runs without one"
        );
        assert!(deferred.take_plan_job().is_none());

        // Five minutes on, the next one is left for the runtime; the old one stays in force.
        let t = at + Duration::minutes(5);
        deferred.step(&img(t));
        assert_eq!(deferred.plan_made_at(), Some(at));
        let job = deferred.take_plan_job().expect("a plan job");
        // While it is being solved, the next cycles do not ask again.
        deferred.step(&img(t + Duration::seconds(2)));
        assert!(deferred.take_plan_job().is_none());
        deferred.install_plan(job.solve());
        assert_eq!(deferred.plan_made_at(), Some(t));
        // The same plan as one made in the step.
        let mut inline = Core::new(m.clone(), false);
        inline.step(&img(at));
        inline.step(&img(t));
        assert_eq!(deferred.plan_view(), inline.plan_view());

        // A plan solved from the assembly before a new one is dropped, the one in force stays,
        // and a new one is asked for at once.
        let t2 = t + Duration::minutes(5);
        deferred.step(&img(t2));
        let stale = deferred
            .take_plan_job()
            .expect("due again after five minutes");
        deferred.set_assembly(m.assembly().clone());
        deferred.install_plan(stale.solve());
        assert_eq!(
            deferred.plan_made_at(),
            Some(t),
            "a plan from before the new assembly"
        );
        let t3 = t2 + Duration::seconds(2);
        deferred.step(&img(t3));
        let fresh = deferred
            .take_plan_job()
            .expect("asked again with the new assembly");
        deferred.install_plan(fresh.solve());
        assert_eq!(deferred.plan_made_at(), Some(t3));
        deferred.step(&img(t3 + Duration::seconds(2)));
        assert!(deferred.take_plan_job().is_none(), "nothing due any more");
    }

    #[test]
    fn a_sunny_morning_on_a_nearly_empty_battery_serves_the_cold_room_from_the_sun() {
        // Regression: the reserve counted the coming night in full while the sun was up, so
        // after a night on the battery the plan put every watt of sun into the battery and the
        // cold room (tier 2) was cut at 08:36 with 3.5 kW of PV.
        // The night ended with the battery near the assembly's minimum reserve (2 kWh over the
        // 10 % floor of 20 kWh).
        let m = village();
        let mut core = Core::new(m.clone(), false);
        let out = run(
            &mut core,
            local("08:00"),
            Duration::minutes(3),
            13,
            0.85,
            22.0,
        );
        let now = local("08:36");
        let pv = out.state.pv_watts.unwrap();
        assert!(pv > 2500.0, "{pv} W of sun at 08:36");
        let night = m.health_reserve_wh(now);
        let reserve = core.health_reserve_now_wh(now);
        assert!(reserve <= 0.5 * night, "{reserve} Wh of a {night} Wh night");
        assert!(reserve >= m.assembly().health_reserve.min.0);
        assert!(is_on(&out, "clinic_fridge") && is_on(&out, "clinic_lights"));
        assert!(
            is_on(&out, "cold_room"),
            "cold room cut with {pv} W of sun: {:?}",
            out.state.loads.iter().find(|l| l.id == "cold_room")
        );
        // The plan still fills the battery for the night: by sunset it holds the whole night.
        let plan = core.plan.as_ref().unwrap();
        let at = core.plan_made_at().unwrap();
        let sunset = m.coming_sunset(now).unwrap();
        // (The end of the step that holds the sunset.)
        let s = usize::try_from((sunset - at).num_minutes() / 15).unwrap() + 1;
        let b = m.site().battery.clone().unwrap();
        let held = (plan.soc[s] - b.min_soc.fraction()) * b.capacity.0 * b.discharge_efficiency;
        assert!(
            held >= 0.99 * m.health_reserve_wh(sunset),
            "the plan holds {held} Wh at sunset for a night of {} Wh",
            m.health_reserve_wh(sunset)
        );
    }

    #[test]
    fn a_grey_morning_keeps_the_whole_night_in_reserve() {
        let m = village();
        let mut core = Core::new(m.clone(), false);
        let out = run(
            &mut core,
            local("08:00"),
            Duration::minutes(3),
            13,
            0.05,
            12.0,
        );
        let now = local("08:36");
        assert_eq!(core.health_reserve_now_wh(now), m.health_reserve_wh(now));
        assert!(is_on(&out, "clinic_fridge") && is_on(&out, "clinic_lights"));
    }

    #[test]
    fn in_the_evening_the_reserve_is_the_whole_night() {
        let m = village();
        let mut core = Core::new(m.clone(), false);
        run(
            &mut core,
            local("19:40"),
            Duration::minutes(3),
            3,
            0.85,
            40.0,
        );
        let now = local("19:46");
        assert!(m.coming_sunset(now).is_none(), "the sun is down");
        assert_eq!(core.health_reserve_now_wh(now), m.health_reserve_wh(now));
    }

    #[test]
    fn the_plans_charge_never_leaves_the_health_tier_short_when_consumption_jumps() {
        // A nearly empty battery on a sunny morning: the plan charges from the sun. A cycle
        // later the meter reads 6 kW more than the plugs (it lags them): the charge planned
        // on the lower consumption must not take what the health tier needs.
        let m = village();
        let mut core = Core::new(m.clone(), false);
        let out = run(
            &mut core,
            local("08:00"),
            Duration::minutes(3),
            13,
            0.85,
            12.0,
        );
        let at = local("08:36") + Duration::seconds(2);
        let on: Vec<String> = out
            .state
            .loads
            .iter()
            .filter(|l| l.on)
            .map(|l| l.id.clone())
            .collect();
        let pv = out.state.pv_watts.unwrap();
        let mut img = image(&m, at, pv, 12.0, &on);
        for d in &mut img.devices {
            if let Some((_, DeviceValue::Meter(w))) = d.last.as_mut() {
                *w += 6000.0;
            }
        }
        let out = core.step(&img);
        assert!(
            is_on(&out, "clinic_fridge") && is_on(&out, "clinic_lights"),
            "health cut: {:?}",
            out.state.loads.iter().find(|l| l.id == "clinic_fridge")
        );
    }

    #[test]
    fn at_its_daylight_floor_the_plan_charges_only_to_follow_it_and_the_cold_room_runs() {
        // The battery a hair under its morning floor (the assembly's 2 kWh minimum, 20.5 %):
        // only the health tier may draw on it, and the sun is shared between the plan's charge
        // and the loads. With the whole night as the reserve of every daylight plan step the
        // plan took all the sun to charge and the cold room stayed cut; with the sun counted it
        // charges to follow the floor as it rises.
        let m = village();
        let mut core = Core::new(m.clone(), false);
        let out = run(
            &mut core,
            local("08:00"),
            Duration::minutes(3),
            13,
            0.85,
            20.4,
        );
        let b = m.site().battery.clone().unwrap();
        let usable = (0.204 - b.min_soc.fraction()) * b.capacity.0;
        let now = local("08:36");
        assert!(usable < core.health_reserve_now_wh(now) / b.discharge_efficiency);
        assert!(is_on(&out, "clinic_fridge") && is_on(&out, "clinic_lights"));
        assert!(
            is_on(&out, "cold_room"),
            "cold room cut at the floor: {:?}",
            out.state.loads.iter().find(|l| l.id == "cold_room")
        );
    }

    #[test]
    fn at_noon_a_waiting_flexible_load_says_when_it_runs_or_why_not_and_the_banner_agrees() {
        // Issue 15: at noon with sun to spare the page said "Plenty" while the laundry and the
        // e-bike station were off "until energy is more plentiful", and the plan ran them at no
        // time in the next 24 h.
        let m = village();
        let mut core = Core::new(m.clone(), false);
        let out = run(
            &mut core,
            local("06:00"),
            Duration::minutes(6),
            61,
            0.85,
            40.0,
        );
        assert_eq!(out.state.time, rfc3339(local("12:00")));
        let waiting: Vec<_> = out.state.loads.iter().filter(|l| !l.on).collect();
        let allocation = |id: &str| out.allocation.loads.iter().find(|a| a.id == id).unwrap();
        let mut unplanned = 0;
        for l in &waiting {
            assert!(allocation(&l.id).deferred, "{}", l.reason);
            let (name, rest) = l.reason.split_once(" off: flexible, ").unwrap();
            assert_eq!(name, m.site().load(&l.id).unwrap().name);
            if let Some(why) = rest.strip_prefix("not planned in the next 24 h: ") {
                unplanned += 1;
                assert!(why.contains(" kWh short from "), "{why}");
            } else {
                assert!(rest.starts_with("planned "), "{rest}");
                assert!(rest.contains(" kW, when ") || rest.contains(" from the battery"));
            }
        }
        assert!(unplanned > 0, "{waiting:#?}");
        assert_eq!(out.state.grid_state, crate::state::GridState::Tight);
        assert!(
            out.state
                .status
                .contains("The plan finds no time in the next 24 h for "),
            "{}",
            out.state.status
        );
        for l in waiting.iter().filter(|l| l.reason.contains("not planned")) {
            assert!(out.state.status.contains(&l.name), "{}", out.state.status);
        }
    }

    #[test]
    fn tier_two_is_never_cut_while_the_sun_covers_tiers_one_and_two_above_the_reserve() {
        // A clear morning after a night that left the battery at 15 %, under the assembly's
        // 2 kWh floor but with the day's counted sun filling the night: from the first cycle
        // the sun covers the clinic, the cold storage and the mast, the cold storage tier runs,
        // whatever charge the plan wants. (Before, the plan's charge took the sun until the
        // battery was back over its floor; tier 2 waited an hour.)
        let m = village();
        let mut core = Core::new(m.clone(), false);
        let place = m.place().unwrap();
        let from = local("06:30");
        let mut on: Vec<String> = Vec::new();
        let mut covered = 0;
        for i in 0..60 {
            let at = from + Duration::minutes(3) * i;
            let pv = solar::clear_sky_watts(place, &m.arrays(), at) * 0.85;
            let out = core.step(&image(&m, at, pv, 15.0, &on));
            on = out
                .state
                .loads
                .iter()
                .filter(|l| l.on)
                .map(|l| l.id.clone())
                .collect();
            let needs = m.sun_first_watts() + m.unswitchable_watts();
            let b = m.site().battery.clone().unwrap();
            let held = (0.15 - b.min_soc.fraction()) * b.capacity.0 * b.discharge_efficiency;
            if pv >= needs && held >= core.reserve_before_floor_now_wh(at) {
                covered += 1;
                for id in [
                    "clinic_fridge",
                    "clinic_lights",
                    "cold_room",
                    "school_freezer",
                ] {
                    assert!(
                        is_on(&out, id),
                        "{at}: {id} off with {pv:.0} W of sun for {needs:.0} W: {:?}",
                        out.state.loads.iter().find(|l| l.id == id)
                    );
                }
            }
        }
        assert!(
            covered >= 20,
            "the sun covered tiers 1-2 in only {covered} cycles"
        );
    }

    #[test]
    fn a_grey_day_keeps_the_whole_night_whatever_the_forecast_says() {
        // An external forecast promises a clear day; the sun gives 30 % of clear sky (the
        // forecast is wrong by 70 %). Once the inverter has shown it, the reserve is the whole
        // night again and the clinic keeps it.
        let m = village();
        let mut core = Core::new(m.clone(), false);
        let place = m.place().unwrap();
        let start = local("06:00");
        let step = Duration::minutes(15);
        let clear: Vec<f64> = (0..96)
            .map(|i| solar::clear_sky_watts(place, &m.arrays(), start + step * i + step / 2))
            .collect();
        let forecast = ExternalForecast {
            start,
            step,
            watts: clear,
        };
        core.set_external_pv(forecast.clone());
        let out = run(
            &mut core,
            local("09:00"),
            Duration::minutes(3),
            40,
            0.3,
            40.0,
        );
        let now = local("09:00") + Duration::minutes(3 * 39);
        // The same forecast on a day that turns out as it says counts the sun.
        let mut right = Core::new(m.clone(), false);
        right.set_external_pv(forecast);
        run(
            &mut right,
            local("09:00"),
            Duration::minutes(3),
            40,
            0.85,
            40.0,
        );
        assert!(right.health_reserve_now_wh(now) < 0.8 * m.health_reserve_wh(now));
        assert_eq!(core.health_reserve_now_wh(now), m.health_reserve_wh(now));
        assert!(is_on(&out, "clinic_fridge") && is_on(&out, "clinic_lights"));
    }
}
