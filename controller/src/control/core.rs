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

use super::model::SiteModel;
use crate::forecast::external::ExternalForecast;
use crate::forecast::load::LoadProfile;
use crate::forecast::solar::{self, Calibration, Scaling, Steps};
use crate::state::{
    AssemblyView, BatteryView, DeviceView, GridState, LoadView, PlanStepView, PlanView, SiteView,
    StateView, TierView,
};

/// What a Modbus device last said.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceValue {
    /// Inverter AC power, watts.
    Pv(f64),
    Battery(BatteryState),
    /// Meter active power, watts (consumption positive).
    Meter(f64),
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
}

/// How often the horizon plan is refreshed, and its shape.
pub const PLAN_EVERY: Duration = Duration::minutes(5);
pub const PLAN_STEP_MINUTES: u32 = 15;
pub const PLAN_STEPS: usize = 96;

/// The cycle's memory between steps: rotation, the horizon plan, the PV calibration.
#[derive(Debug)]
pub struct Core {
    /// Shared so a cycle can hold the site while it updates the core's memory, without a copy.
    model: Arc<SiteModel>,
    rotation: planner::Rotation,
    plan: Option<planner::HorizonPlan>,
    plan_at: Option<DateTime<Utc>>,
    plan_pv: Vec<f64>,
    calibration: Calibration,
    assembly_errors: Vec<String>,
    dry_run: bool,
    last_pv: Option<f64>,
    last_soc: Option<f64>,
    plan_every: Duration,
    profile: LoadProfile,
    last_at: Option<DateTime<Utc>>,
    /// Energy each load with a daily need got today (local day number, watt-hours by load).
    delivered: (i64, BTreeMap<String, f64>),
    external_pv: Option<ExternalForecast>,
}

impl Core {
    pub fn new(model: SiteModel, dry_run: bool) -> Self {
        Self {
            model: Arc::new(model),
            rotation: planner::Rotation::default(),
            plan: None,
            plan_at: None,
            plan_pv: Vec::new(),
            calibration: Calibration::new(Duration::hours(2)),
            assembly_errors: Vec::new(),
            dry_run,
            last_pv: None,
            last_soc: None,
            plan_every: PLAN_EVERY,
            profile: LoadProfile::default(),
            last_at: None,
            delivered: (i64::MIN, BTreeMap::new()),
            external_pv: None,
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
        self.plan_at = None;
    }

    /// An external PV forecast: where it covers the plan it replaces the local solar model.
    /// The plan is redone at the next step.
    pub fn set_external_pv(&mut self, forecast: ExternalForecast) {
        self.external_pv = Some(forecast);
        self.plan_at = None;
    }

    /// A rejected assembly file: the one in force stays, its errors are shown.
    pub fn reject_assembly(&mut self, errors: Vec<String>) {
        self.assembly_errors = errors;
    }

    pub fn assembly_view(&self) -> AssemblyView {
        AssemblyView::from_config(self.model.assembly(), self.assembly_errors.clone())
    }

    /// One cycle: read the image, allocate, decide commands, describe.
    pub fn step(&mut self, image: &ProcessImage) -> Outcome {
        let now = image.at;
        let model = Arc::clone(&self.model);
        let site = model.site();
        let mut faults = Vec::new();

        // What the devices say, fresh or not.
        let mut pv = None;
        let mut battery: Option<BatteryState> = None;
        let mut consumption = None;
        let mut devices = Vec::new();
        for d in &site.devices {
            let input = image.devices.iter().find(|i| i.id == d.id);
            let fresh = input.and_then(|i| i.last.as_ref()).filter(|(at, _)| {
                now.signed_duration_since(*at)
                    <= Duration::from_std(d.stale_after).unwrap_or(Duration::MAX)
            });
            match fresh.map(|(_, v)| v) {
                Some(DeviceValue::Pv(w)) => *pv.get_or_insert(0.0) += w.max(0.0),
                Some(DeviceValue::Battery(b)) => battery = Some(*b),
                Some(DeviceValue::Meter(w)) => consumption = Some(*w),
                None => faults.push(match input.and_then(|i| i.error.as_deref()) {
                    Some(e) => format!("{} silent: {e}", d.id),
                    None => format!("{} silent", d.id),
                }),
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
        // Until every device has answered or failed once, nothing is switched: a controller that
        // just started knows too little to cut anyone.
        let starting = site.devices.iter().any(|d| {
            image
                .devices
                .iter()
                .find(|i| i.id == d.id)
                .is_none_or(|i| i.last.is_none() && i.error.is_none())
        });
        let has_inverter = site.devices.iter().any(|d| {
            matches!(
                d.kind,
                cfg::DeviceKind::Sunspec {
                    role: cfg::SunspecRole::PvInverter,
                    ..
                }
            )
        });
        if has_inverter {
            let clear = self
                .model
                .place()
                .map(|p| solar::clear_sky_watts(p, &self.model.arrays(), now))
                .unwrap_or(0.0);
            self.calibration.record(now, pv, clear);
        }
        self.last_pv = pv;
        let degraded = !faults.is_empty();

        // Loads: measured power, and how much of the consumption nobody controls.
        let reserve_wh = self.model.health_reserve_wh(now);
        let soc = battery
            .and_then(|b| b.soc)
            .map(|p| p.0 / 100.0)
            .filter(|s| s.is_finite());
        self.last_soc = soc;
        let model_battery = self.model.battery(match soc {
            Some(s) => s,
            // Worst case: just the health reserve left.
            None => self.model.site().battery.as_ref().map_or(0.0, |b| {
                b.min_soc.0 / 100.0 + reserve_wh / b.capacity.0.max(1.0)
            }),
        });
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
        let uncontrolled = match consumption {
            Some(c) => (c - controlled_measured).max(0.0),
            None => measured_only_nominal,
        };
        // Learn the day's shape from measurements only, never from the worst-case fallback.
        let dt = self
            .last_at
            .map_or(0.0, |l| (now - l).num_milliseconds() as f64 / 1000.0);
        self.last_at = Some(now);
        if consumption.is_some() && dt > 0.0 && dt < 600.0 {
            self.profile
                .record(self.model.local_minute(now), uncontrolled, dt);
        }
        // What the loads with a daily need got today, so the plan asks only for the rest.
        let day = self.local_day(now);
        if self.delivered.0 != day {
            self.delivered = (day, BTreeMap::new());
        }
        if dt > 0.0 && dt < 600.0 {
            for l in site.loads.iter().filter(|l| l.daily_need.is_some()) {
                let input = image.loads.get(&l.id);
                let watts = match input {
                    Some(LoadInput { power: Some(p), .. }) => p.max(0.0),
                    Some(LoadInput { on: Some(true), .. }) => l.nominal.0,
                    _ => 0.0,
                };
                *self.delivered.1.entry(l.id.clone()).or_default() += watts * dt / 3600.0;
            }
        }

        // The plan for now.
        if self.plan_due(now) {
            self.refresh_plan(now, soc, uncontrolled);
        }
        let step = self.plan_step(now);
        let planned_charge = self
            .plan
            .as_ref()
            .zip(step)
            .and_then(|(p, s)| p.battery_watts.get(s).copied())
            .map_or(0.0, |w| (-w).max(0.0));

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
        };
        let allocation = planner::allocate(&priorities, &snapshot, &self.rotation);
        self.rotation = allocation.rotation.clone();

        // Commands and views.
        let mut commands = Vec::new();
        let mut loads = Vec::new();
        let mut cut = false;
        for a in &allocation.loads {
            let Some(l) = site.load(&a.id) else { continue };
            let input = image.loads.get(&a.id).cloned().unwrap_or_default();
            let health = self.model.is_health(&a.id);
            let mut on = a.on;
            let mut watts = a.allocated_watts;
            let mut reason = a.reason.clone();
            if health && !on && degraded {
                on = true;
                watts = a.demand_watts;
                reason = format!(
                    "{} kept on: a health load is never switched off while inputs are unknown ({})",
                    l.name,
                    faults.join("; ")
                );
            }
            let waiting = !on
                && priorities
                    .tiers
                    .iter()
                    .flat_map(|t| &t.loads)
                    .any(|p| p.id == a.id && p.planned_watts == Some(0.0));
            if !on && a.demand_watts > 0.0 && !waiting {
                cut = true;
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
            if let (Some(action), false, false, true) = (action, self.dry_run, starting, reachable)
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
                reason,
                fault,
            });
        }
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
        let battery_w = battery.and_then(|b| b.power).map(|w| w.0);
        let grid_state = if cut {
            GridState::Scarcity
        } else if battery_w.is_some_and(|w| w > 50.0)
            || allocation.allocated_watts > 0.8 * allocation.available_watts
        {
            GridState::Tight
        } else {
            GridState::Surplus
        };
        let state = StateView {
            time: rfc3339(now),
            site: SiteView {
                id: site.id.clone(),
                name: site.name.clone(),
            },
            available_watts: allocation.available_watts,
            pv_watts: pv,
            consumption_watts: consumption,
            battery: site.battery.as_ref().map(|_| BatteryView {
                soc_percent: soc.map(|s| s * 100.0),
                watts: battery_w,
            }),
            grid_state,
            dry_run: self.dry_run,
            devices,
            tiers,
            loads,
            assembly_errors: self.assembly_errors.clone(),
        };
        Outcome {
            state,
            allocation,
            commands,
            faults,
        }
    }

    fn plan_due(&self, now: DateTime<Utc>) -> bool {
        self.plan_at
            .is_none_or(|at| now - at >= self.plan_every || now < at)
    }

    /// The index of the plan step holding `now`, if a plan exists and covers it.
    fn plan_step(&self, now: DateTime<Utc>) -> Option<usize> {
        let at = self.plan_at?;
        let s = (now - at).num_seconds() / (i64::from(PLAN_STEP_MINUTES) * 60);
        usize::try_from(s).ok().filter(|s| *s < PLAN_STEPS)
    }

    /// Redoes the horizon plan from `now`: PV from the clear-sky model scaled by recent
    /// production, uncontrolled consumption from the learnt daily profile (as now where it has
    /// not learnt yet), the health reserve per step.
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
                    typical: 0.8,
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
        let reserve = (0..PLAN_STEPS)
            .map(|i| {
                self.model
                    .health_reserve_wh(now + step * i32::try_from(i).unwrap_or(0))
            })
            .collect();
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
                .map_or(0.0, |b| b.min_soc.0 / 100.0)
        });
        let input = planner::HorizonInput {
            step_minutes: PLAN_STEP_MINUTES,
            start_minute: self.model.local_minute(now),
            pv_watts: pv.clone(),
            uncontrolled_watts: self.profile.forecast(
                self.model.local_minute(now),
                PLAN_STEPS,
                uncontrolled,
            ),
            battery: self.model.battery(soc),
            import: self.model.site().grid.as_ref().and_then(|g| {
                (g.kind == cfg::GridKind::Grid).then(|| planner::GridImport {
                    max_import_watts: g.max_import.0,
                    price_per_kwh: vec![g.import_price_per_kwh.unwrap_or(0.0)],
                })
            }),
            reserve_wh: reserve,
            loads: planner::HorizonLoad::from_priorities(&priorities),
            max_lp_variables: 20_000,
        };
        self.plan = Some(planner::plan_horizon(&input));
        self.plan_pv = pv;
        self.plan_at = Some(now);
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
