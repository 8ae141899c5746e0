//! Horizon plan: T steps (default 96 × 15 min) as one linear programme over loads, battery and
//! grid, with a greedy simulation as the fallback.
//!
//! Objective, lexicographic through well-separated weights: priority-weighted energy served
//! first (each rank weighs 3 times the next, health loads 3 times rank 1, the lowest rank more
//! than twice the dearest import after losses, so no energy is left unserved to save money),
//! then import cost, then battery wear (per kWh discharged), with a small value on the energy left
//! in the battery at the end so spare sun is stored rather than spilled. The health reserve holds
//! at every step through a single shortfall variable priced between health and every other load:
//! health loads may use the reserve, nobody else.
//!
//! On/off loads are planned as average power over a step (a duty cycle); the allocation now
//! turns that into on or off through [`crate::Load::planned_watts`].

use good_lp::{Expression, ProblemVariables, Solution, SolverModel, Variable, microlp, variable};
use serde::Serialize;

use crate::alloc::Diagnostic;
use crate::model::{Battery, Deadline, EnergyNeed, WattHours, Watts};
use crate::reason::kwh;

/// What a load asks over the horizon.
#[derive(Debug, Clone, PartialEq)]
pub enum HorizonDemand {
    /// Runs when it can, at this power per step (a shorter list repeats its last value).
    Steady {
        /// Power wanted per step.
        watts: Vec<Watts>,
    },
    /// Needs an amount of energy before a deadline, at up to `max_watts`.
    Deferrable {
        /// Highest power.
        max_watts: Watts,
        /// Energy and deadline.
        need: EnergyNeed,
    },
}

/// One load in the horizon plan.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonLoad {
    /// Load id.
    pub id: String,
    /// Tier rank, 1 = highest.
    pub rank: usize,
    /// A health load (may use the health reserve).
    pub health: bool,
    /// What it asks.
    pub demand: HorizonDemand,
}

impl HorizonLoad {
    /// A load wanting `watts` in every step.
    pub fn steady(id: impl Into<String>, rank: usize, watts: Watts) -> Self {
        Self {
            id: id.into(),
            rank,
            health: false,
            demand: HorizonDemand::Steady { watts: vec![watts] },
        }
    }

    /// A deferrable load with an energy need.
    pub fn deferrable(
        id: impl Into<String>,
        rank: usize,
        max_watts: Watts,
        need: EnergyNeed,
    ) -> Self {
        Self {
            id: id.into(),
            rank,
            health: false,
            demand: HorizonDemand::Deferrable { max_watts, need },
        }
    }
}

impl HorizonLoad {
    /// The loads of the assembly's tiers as horizon loads: a load with an energy need is
    /// deferrable (up to its demand), every other load steady at its demand.
    pub fn from_priorities(priorities: &crate::Priorities) -> Vec<HorizonLoad> {
        priorities
            .tiers
            .iter()
            .enumerate()
            .flat_map(|(t, tier)| {
                tier.loads.iter().map(move |l| {
                    let max_watts = match l.control {
                        crate::Control::OnOff => l.demand_watts,
                        crate::Control::Adjustable { max_watts, .. } => max_watts,
                    };
                    let mut h = match l.need {
                        Some(need) => HorizonLoad::deferrable(l.id.clone(), t + 1, max_watts, need),
                        None => HorizonLoad::steady(l.id.clone(), t + 1, l.demand_watts),
                    };
                    h.health = l.health;
                    h
                })
            })
            .collect()
    }
}

/// Optional grid or generator import.
#[derive(Debug, Clone, PartialEq)]
pub struct GridImport {
    /// Import limit.
    pub max_import_watts: Watts,
    /// Price per kWh for each step (empty: free; shorter: last value repeats).
    pub price_per_kwh: Vec<f64>,
}

/// Everything the horizon plan needs. Build with [`HorizonInput::new`] and set the fields.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonInput {
    /// Step length.
    pub step_minutes: u32,
    /// Minutes since midnight at the start of step 0.
    pub start_minute: u32,
    /// PV forecast per step; its length is the number of steps.
    pub pv_watts: Vec<Watts>,
    /// Uncontrolled consumption per step (empty: none; shorter: last value repeats).
    pub uncontrolled_watts: Vec<Watts>,
    /// Battery now.
    pub battery: Option<Battery>,
    /// Grid import.
    pub import: Option<GridImport>,
    /// Energy (delivered to loads) the battery must still hold above its minimum at the end of
    /// each step for the health tier (empty: none; shorter: last value repeats).
    pub reserve_wh: Vec<WattHours>,
    /// Loads.
    pub loads: Vec<HorizonLoad>,
    /// Largest LP (variables) attempted; larger problems use the greedy fallback.
    pub max_lp_variables: usize,
}

impl HorizonInput {
    /// A problem with the PV forecast and nothing else.
    pub fn new(step_minutes: u32, start_minute: u32, pv_watts: Vec<Watts>) -> Self {
        Self {
            step_minutes: step_minutes.max(1),
            start_minute,
            pv_watts,
            uncontrolled_watts: Vec::new(),
            battery: None,
            import: None,
            reserve_wh: Vec::new(),
            loads: Vec::new(),
            max_lp_variables: 200_000,
        }
    }

    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.pv_watts.len()
    }

    /// First step too late for a deadline (the need must be met in `0..step`), at most `steps`.
    pub fn deadline_step(&self, deadline: Deadline) -> usize {
        match deadline {
            Deadline::Step(s) => s.min(self.steps()),
            Deadline::MinuteOfDay(m) => {
                let rel = (m % 1440 + 1440 - self.start_minute % 1440) % 1440;
                let rel = if rel == 0 { 1440 } else { rel };
                (rel / self.step_minutes.max(1)) as usize
            }
        }
        .min(self.steps())
    }
}

/// The plan of one load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedLoad {
    /// Load id.
    pub id: String,
    /// Tier rank.
    pub rank: usize,
    /// Planned average power per step.
    pub watts: Vec<Watts>,
    /// Energy planned over the horizon (before the deadline for a deferrable load).
    pub planned_wh: WattHours,
    /// Energy needed before the deadline, for a deferrable load.
    pub need_wh: Option<WattHours>,
}

/// How the plan was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanMethod {
    /// The linear programme.
    LinearProgram,
    /// The greedy simulation (LP failed or too large).
    GreedyFallback,
}

/// The result of [`plan_horizon`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HorizonPlan {
    /// Step length.
    pub step_minutes: u32,
    /// Minutes since midnight at the start of step 0.
    pub start_minute: u32,
    /// Per load.
    pub loads: Vec<PlannedLoad>,
    /// State of charge (fraction) at the start of each step and at the end: `steps + 1` values.
    pub soc: Vec<f64>,
    /// Battery power per step, positive when discharging.
    pub battery_watts: Vec<Watts>,
    /// Grid import per step.
    pub import_watts: Vec<Watts>,
    /// PV not used (curtailed or exported unpaid) per step.
    pub spill_watts: Vec<Watts>,
    /// Import cost over the horizon, in the price unit.
    pub import_cost: f64,
    /// Energy served per rank (index 0 = rank 1).
    pub served_wh_by_rank: Vec<WattHours>,
    /// Unmet needs, reserve shortfalls, fallbacks.
    pub diagnostics: Vec<Diagnostic>,
    /// LP or fallback.
    pub method: PlanMethod,
}

impl HorizonPlan {
    /// Planned power of a load in a step.
    pub fn watts(&self, id: &str, step: usize) -> Option<Watts> {
        self.loads
            .iter()
            .find(|l| l.id == id)
            .and_then(|l| l.watts.get(step).copied())
    }
}

fn at(v: &[f64], t: usize, default: f64) -> f64 {
    let x = v.get(t).or(v.last()).copied().unwrap_or(default);
    if x.is_finite() { x.max(0.0) } else { 0.0 }
}

/// Per-load cap per step, and for a deferrable its deadline step and need.
type Caps = Vec<(Vec<f64>, Option<(usize, f64)>)>;

/// Per-load cap per step and the deadline step (deferrables).
fn caps(input: &HorizonInput) -> Caps {
    let steps = input.steps();
    let dh = input.step_minutes as f64 / 60.0;
    input
        .loads
        .iter()
        .map(|l| match &l.demand {
            HorizonDemand::Steady { watts } => {
                ((0..steps).map(|t| at(watts, t, 0.0)).collect(), None)
            }
            HorizonDemand::Deferrable { max_watts, need } => {
                let dl = input.deadline_step(need.deadline);
                let max = at(&[*max_watts], 0, 0.0);
                let need_wh = at(&[need.energy_wh], 0, 0.0);
                // No step can take more than the whole need.
                let cap = max.min(need_wh / dh);
                (
                    (0..steps).map(|t| if t < dl { cap } else { 0.0 }).collect(),
                    Some((dl, need_wh)),
                )
            }
        })
        .collect()
}

struct Weights {
    load: Vec<f64>,
    reserve: f64,
    shortfall: f64,
    wear: f64,
    end_value: f64,
}

fn weights(input: &HorizonInput) -> Weights {
    let max_rank = input.loads.iter().map(|l| l.rank.max(1)).max().unwrap_or(1);
    let (ec, ed) = input
        .battery
        .map(|b| (b.charge_efficiency, b.discharge_efficiency))
        .unwrap_or((1.0, 1.0));
    let eff = (ec * ed).clamp(0.1, 1.0);
    let prices: Vec<f64> = input
        .import
        .as_ref()
        .map(|g| {
            (0..input.steps())
                .map(|t| at(&g.price_per_kwh, t, 0.0))
                .collect()
        })
        .unwrap_or_default();
    let max_price = prices.iter().copied().fold(0.0, f64::max);
    let min_price = prices
        .iter()
        .copied()
        .filter(|p| *p > 0.0)
        .fold(f64::INFINITY, f64::min);
    let base = 2.0 * max_price / eff + 1.0;
    let w = |rank: usize| base * 3f64.powi((max_rank - rank.clamp(1, max_rank)) as i32);
    let top = w(1);
    let small = if min_price.is_finite() {
        0.05 * min_price
    } else {
        0.01
    };
    Weights {
        load: input
            .loads
            .iter()
            .map(|l| if l.health { 3.0 * top } else { w(l.rank) })
            .collect(),
        // Between what a non-health load could gain by dipping into the reserve and what a
        // health load gains from it. Dipping x Wh serves x Wh now and, by making room for sun
        // that would otherwise spill, at most x·ηc·ηd later: under 2x at top weight; a health
        // load (3 × top) may still use the reserve. 1.7 let the plan dip into the reserve to make
        // room for the afternoon's sun (proptest, CI 2026-11-30).
        reserve: 2.5 * top,
        shortfall: 30.0 * top,
        wear: small,
        end_value: small * 0.5,
    }
}

/// Plans the horizon. Never panics: an LP failure or an oversized problem gives the greedy
/// simulation, with a diagnostic.
pub fn plan_horizon(input: &HorizonInput) -> HorizonPlan {
    // A battery with impossible numbers (NaN, negative capacity, efficiencies out of 0..1)
    // would make `clamp` panic or NaN reach the solver: clean it once, with a diagnostic.
    let cleaned;
    let mut cleaning = Vec::new();
    let input = match input.battery.map(clean_battery) {
        Some((b, false)) => {
            cleaning.push(Diagnostic::warn(
                None,
                "battery numbers out of range (NaN, negative or efficiency beyond 0..1); cleaned"
                    .into(),
            ));
            cleaned = HorizonInput {
                battery: Some(b),
                ..input.clone()
            };
            &cleaned
        }
        _ => input,
    };
    let mut plan = plan_checked(input);
    cleaning.append(&mut plan.diagnostics);
    plan.diagnostics = cleaning;
    plan
}

/// The battery with every number in range, and whether it already was.
fn clean_battery(b: Battery) -> (Battery, bool) {
    let unit = |x: f64, default: f64| {
        if x.is_finite() {
            x.clamp(0.0, 1.0)
        } else {
            default
        }
    };
    let eff = |x: f64| {
        if x.is_finite() && x > 0.0 && x <= 1.0 {
            x
        } else {
            1.0
        }
    };
    let watts = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
    let soc_min = unit(b.soc_min, 0.0);
    let c = Battery {
        capacity_wh: watts(b.capacity_wh),
        soc: unit(b.soc, soc_min),
        soc_min,
        soc_max: unit(b.soc_max, 1.0).max(soc_min),
        max_charge_watts: watts(b.max_charge_watts),
        max_discharge_watts: watts(b.max_discharge_watts),
        charge_efficiency: eff(b.charge_efficiency),
        discharge_efficiency: eff(b.discharge_efficiency),
    };
    let same = c == b;
    (c, same)
}

fn plan_checked(input: &HorizonInput) -> HorizonPlan {
    let steps = input.steps();
    let nvars = steps.saturating_mul(input.loads.len().saturating_add(7));
    let mut diagnostics = Vec::new();
    let plan = if nvars > input.max_lp_variables {
        diagnostics.push(Diagnostic::warn(
            None,
            format!(
                "horizon problem has {nvars} variables, over the budget of {}; greedy plan used",
                input.max_lp_variables
            ),
        ));
        None
    } else {
        match solve_lp(input) {
            Ok(p) => Some(p),
            Err(e) => {
                diagnostics.push(Diagnostic::warn(
                    None,
                    format!("horizon linear programme failed ({e}); greedy plan used"),
                ));
                None
            }
        }
    };
    let (method, raw) = match plan {
        Some(raw) => (PlanMethod::LinearProgram, raw),
        None => (PlanMethod::GreedyFallback, greedy(input)),
    };
    finish(input, raw, method, diagnostics)
}

/// Raw per-step decisions.
struct Raw {
    load_watts: Vec<Vec<f64>>,
    charge: Vec<f64>,
    discharge: Vec<f64>,
    import: Vec<f64>,
}

fn solve_lp(input: &HorizonInput) -> Result<Raw, good_lp::ResolutionError> {
    let steps = input.steps();
    let dh = input.step_minutes as f64 / 60.0;
    let k = dh / 1000.0; // W per step -> kWh
    let caps = caps(input);
    let w = weights(input);
    let mut vars = ProblemVariables::new();
    let mut obj = Expression::with_capacity(steps * (input.loads.len() + 7));
    let load_vars: Vec<Vec<Option<Variable>>> = caps
        .iter()
        .enumerate()
        .map(|(l, (cap, _))| {
            cap.iter()
                .map(|&c| {
                    (c > 0.0).then(|| {
                        let v = vars.add(variable().min(0).max(c));
                        obj.add_mul(w.load[l] * k, v);
                        v
                    })
                })
                .collect()
        })
        .collect();
    let prices: Vec<f64> = (0..steps)
        .map(|t| {
            input
                .import
                .as_ref()
                .map_or(0.0, |g| at(&g.price_per_kwh, t, 0.0))
        })
        .collect();
    let import: Vec<Option<Variable>> = (0..steps)
        .map(|t| {
            input.import.as_ref().and_then(|g| {
                let max = at(&[g.max_import_watts], 0, 0.0);
                (max > 0.0).then(|| {
                    let v = vars.add(variable().min(0).max(max));
                    obj.add_mul(-prices[t] * k, v);
                    v
                })
            })
        })
        .collect();
    let short: Vec<Variable> = (0..steps)
        .map(|t| {
            let v = vars.add(variable().min(0).max(at(&input.uncontrolled_watts, t, 0.0)));
            obj.add_mul(-w.shortfall * k, v);
            v
        })
        .collect();
    let spill: Vec<Variable> = (0..steps).map(|_| vars.add(variable().min(0))).collect();
    struct Bat {
        c: Vec<Variable>,
        d: Vec<Variable>,
        s: Vec<Variable>,
        /// Shortfall below the health reserve, per step: each step below it is paid for, so
        /// one dip cannot be reused over several steps for the price of one.
        sigma: Vec<Variable>,
        b: Battery,
        s0: f64,
    }
    let bat = input.battery.map(|b| {
        let cap = b.capacity_wh.max(0.0);
        let s0 = (b.soc * cap).clamp(0.0, cap);
        let lo = (b.soc_min * cap).min(s0);
        let hi = (b.soc_max * cap).max(s0);
        let c: Vec<Variable> = (0..steps)
            .map(|_| vars.add(variable().min(0).max(b.max_charge_watts.max(0.0))))
            .collect();
        let d: Vec<Variable> = (0..steps)
            .map(|_| {
                let v = vars.add(variable().min(0).max(b.max_discharge_watts.max(0.0)));
                obj.add_mul(-w.wear * k, v);
                v
            })
            .collect();
        let s: Vec<Variable> = (0..steps)
            .map(|_| vars.add(variable().min(lo).max(hi)))
            .collect();
        if let Some(last) = s.last() {
            obj.add_mul(w.end_value / 1000.0, *last);
        }
        let sigma: Vec<Variable> = (0..steps)
            .map(|_| {
                let v = vars.add(variable().min(0));
                obj.add_mul(-w.reserve / 1000.0, v);
                v
            })
            .collect();
        Bat {
            c,
            d,
            s,
            sigma,
            b,
            s0,
        }
    });
    let mut model = vars.maximise(obj).using(microlp);
    for t in 0..steps {
        let mut bal = Expression::with_capacity(input.loads.len() + 6);
        bal.add_mul(1.0, short[t]);
        bal.add_mul(-1.0, spill[t]);
        if let Some(g) = import[t] {
            bal.add_mul(1.0, g);
        }
        for lv in &load_vars {
            if let Some(v) = lv[t] {
                bal.add_mul(-1.0, v);
            }
        }
        if let Some(bat) = &bat {
            bal.add_mul(1.0, bat.d[t]);
            bal.add_mul(-1.0, bat.c[t]);
        }
        let rhs = at(&input.uncontrolled_watts, t, 0.0) - at(&input.pv_watts, t, 0.0);
        model.add_constraint(bal.eq(rhs));
    }
    if let Some(bat) = &bat {
        let ec = bat.b.charge_efficiency.clamp(0.01, 1.0);
        let ed = bat.b.discharge_efficiency.clamp(0.01, 1.0);
        let min_wh = bat.b.soc_min * bat.b.capacity_wh;
        for t in 0..steps {
            let mut e = Expression::with_capacity(4);
            e.add_mul(1.0, bat.s[t]);
            if t > 0 {
                e.add_mul(-1.0, bat.s[t - 1]);
            }
            e.add_mul(-ec * dh, bat.c[t]);
            e.add_mul(dh / ed, bat.d[t]);
            let rhs = if t == 0 { bat.s0 } else { 0.0 };
            model.add_constraint(e.eq(rhs));
            let reserve = at(&input.reserve_wh, t, 0.0);
            if reserve > 0.0 {
                let mut r = Expression::with_capacity(2);
                r.add_mul(ed, bat.s[t]);
                r.add_mul(1.0, bat.sigma[t]);
                model.add_constraint(r.geq(reserve + min_wh * ed));
            }
        }
    }
    for (l, (_, dl)) in caps.iter().enumerate() {
        if let Some((dl, need)) = dl {
            let mut e = Expression::with_capacity(*dl);
            for v in load_vars[l].iter().take(*dl).flatten() {
                e.add_mul(dh, *v);
            }
            model.add_constraint(e.leq(*need));
        }
    }
    let sol = model.solve()?;
    let val = |v: Variable| sol.value(v).max(0.0);
    Ok(Raw {
        load_watts: load_vars
            .iter()
            .map(|lv| lv.iter().map(|v| v.map_or(0.0, val)).collect())
            .collect(),
        charge: bat
            .as_ref()
            .map_or(vec![0.0; steps], |b| b.c.iter().map(|&v| val(v)).collect()),
        discharge: bat
            .as_ref()
            .map_or(vec![0.0; steps], |b| b.d.iter().map(|&v| val(v)).collect()),
        import: import.iter().map(|v| v.map_or(0.0, val)).collect(),
    })
}

/// Greedy simulation: each step, serve ranks from the top from PV, then the battery (non-health
/// loads only above the reserve), then the grid; deferrables earliest deadline first; spare PV
/// charges the battery.
fn greedy(input: &HorizonInput) -> Raw {
    let steps = input.steps();
    let dh = input.step_minutes as f64 / 60.0;
    let caps = caps(input);
    let mut order: Vec<usize> = (0..input.loads.len()).collect();
    order.sort_by_key(|&l| {
        let dl = caps[l].1.map_or(usize::MAX, |d| d.0);
        (!input.loads[l].health, input.loads[l].rank, dl, l)
    });
    let mut remaining: Vec<f64> = caps
        .iter()
        .map(|c| c.1.map_or(f64::INFINITY, |d| d.1))
        .collect();
    let mut s = input
        .battery
        .map_or(0.0, |b| (b.soc * b.capacity_wh).clamp(0.0, b.capacity_wh));
    let mut raw = Raw {
        load_watts: vec![vec![0.0; steps]; input.loads.len()],
        charge: vec![0.0; steps],
        discharge: vec![0.0; steps],
        import: vec![0.0; steps],
    };
    for t in 0..steps {
        let mut pv = at(&input.pv_watts, t, 0.0);
        let unc = at(&input.uncontrolled_watts, t, 0.0);
        let mut grid = input
            .import
            .as_ref()
            .map_or(0.0, |g| at(&[g.max_import_watts], 0, 0.0));
        let (mut bat_all, mut bat_health) = (0.0, 0.0);
        if let Some(b) = input.battery {
            let ed = b.discharge_efficiency.clamp(0.01, 1.0);
            let min_wh = b.soc_min * b.capacity_wh;
            let power = b.max_discharge_watts.max(0.0);
            let total = ((s - min_wh).max(0.0) * ed / dh).min(power);
            let reserve = at(&input.reserve_wh, t, 0.0);
            let free = ((s - min_wh - reserve / ed).max(0.0) * ed / dh).min(power);
            bat_all = free;
            bat_health = total - free;
        }
        let mut take = |want: f64, health: bool, pv: &mut f64, grid: &mut f64| -> (f64, f64, f64) {
            let a = want.min(*pv);
            *pv -= a;
            let mut rest = want - a;
            let b1 = rest.min(bat_all);
            bat_all -= b1;
            rest -= b1;
            let b2 = if health { rest.min(bat_health) } else { 0.0 };
            bat_health -= b2;
            rest -= b2;
            let g = rest.min(*grid);
            *grid -= g;
            rest -= g;
            (want - rest, b1 + b2, g)
        };
        let (_, b, g) = take(unc, true, &mut pv, &mut grid);
        let (mut used_bat, mut used_grid) = (b, g);
        for &l in &order {
            let want = caps[l].0[t].min(remaining[l] / dh);
            if want <= 0.0 {
                continue;
            }
            let (got, b, g) = take(want, input.loads[l].health, &mut pv, &mut grid);
            used_bat += b;
            used_grid += g;
            raw.load_watts[l][t] = got;
            remaining[l] -= got * dh;
        }
        if let Some(bat) = input.battery {
            let ed = bat.discharge_efficiency.clamp(0.01, 1.0);
            let ec = bat.charge_efficiency.clamp(0.01, 1.0);
            let room = ((bat.soc_max * bat.capacity_wh - s).max(0.0) / (ec * dh))
                .min(bat.max_charge_watts.max(0.0));
            let charge = pv.min(room).max(0.0);
            raw.charge[t] = charge;
            raw.discharge[t] = used_bat;
            s += (charge * ec - used_bat / ed) * dh;
        }
        raw.import[t] = used_grid;
    }
    raw
}

fn finish(
    input: &HorizonInput,
    raw: Raw,
    method: PlanMethod,
    mut diagnostics: Vec<Diagnostic>,
) -> HorizonPlan {
    let steps = input.steps();
    let dh = input.step_minutes as f64 / 60.0;
    let caps = caps(input);
    let mut soc = Vec::with_capacity(steps + 1);
    let mut spill = Vec::with_capacity(steps);
    let mut s = input
        .battery
        .map_or(0.0, |b| (b.soc * b.capacity_wh).clamp(0.0, b.capacity_wh));
    let cap = input.battery.map_or(0.0, |b| b.capacity_wh.max(0.0));
    soc.push(if cap > 0.0 { s / cap } else { 0.0 });
    let mut import_cost = 0.0;
    let mut min_margin = f64::INFINITY;
    let mut worst_unserved: (f64, usize) = (0.0, 0);
    for t in 0..steps {
        if let Some(b) = input.battery {
            let ec = b.charge_efficiency.clamp(0.01, 1.0);
            let ed = b.discharge_efficiency.clamp(0.01, 1.0);
            s += (raw.charge[t] * ec - raw.discharge[t] / ed) * dh;
            let reserve = at(&input.reserve_wh, t, 0.0);
            if reserve > 0.0 {
                min_margin = min_margin.min((s - b.soc_min * b.capacity_wh) * ed - reserve);
            }
        }
        soc.push(if cap > 0.0 { s / cap } else { 0.0 });
        let used: f64 = raw.load_watts.iter().map(|l| l[t]).sum::<f64>()
            + at(&input.uncontrolled_watts, t, 0.0)
            + raw.charge[t];
        let supply = at(&input.pv_watts, t, 0.0) + raw.discharge[t] + raw.import[t];
        spill.push((supply - used).max(0.0));
        if used - supply > worst_unserved.0 {
            worst_unserved = (used - supply, t);
        }
        import_cost += raw.import[t] * dh / 1000.0
            * input
                .import
                .as_ref()
                .map_or(0.0, |g| at(&g.price_per_kwh, t, 0.0));
    }
    if min_margin < -1.0 {
        diagnostics.push(Diagnostic::warn(
            None,
            format!(
                "the battery cannot keep the whole health reserve: {} short at the worst step",
                kwh(-min_margin)
            ),
        ));
    }
    if worst_unserved.0 > 1.0 {
        diagnostics.push(Diagnostic::warn(
            None,
            format!(
                "uncontrolled consumption cannot be covered: up to {} short (step {})",
                crate::reason::kw(worst_unserved.0),
                worst_unserved.1
            ),
        ));
    }
    let max_rank = input.loads.iter().map(|l| l.rank.max(1)).max().unwrap_or(0);
    let mut served = vec![0.0; max_rank];
    let mut loads = Vec::with_capacity(input.loads.len());
    for (l, load) in input.loads.iter().enumerate() {
        let watts = raw.load_watts[l].clone();
        let (planned_wh, need_wh) = match caps[l].1 {
            Some((dl, need)) => {
                let got: f64 = watts.iter().take(dl).sum::<f64>() * dh;
                if got + 1.0 < need {
                    let when = match &load.demand {
                        HorizonDemand::Deferrable { need: n, .. } => match n.deadline {
                            Deadline::MinuteOfDay(m) => format!("{:02}:{:02}", m / 60 % 24, m % 60),
                            Deadline::Step(s) => format!("step {s}"),
                        },
                        HorizonDemand::Steady { .. } => String::new(),
                    };
                    diagnostics.push(Diagnostic::warn(
                        Some(&load.id),
                        format!(
                            "{}: {} needed before {when}, the plan gives {} ({} short)",
                            load.id,
                            kwh(need),
                            kwh(got),
                            kwh(need - got)
                        ),
                    ));
                }
                (got, Some(need))
            }
            None => (watts.iter().sum::<f64>() * dh, None),
        };
        if let Some(x) = served.get_mut(load.rank.max(1) - 1) {
            *x += planned_wh;
        }
        loads.push(PlannedLoad {
            id: load.id.clone(),
            rank: load.rank,
            watts,
            planned_wh,
            need_wh,
        });
    }
    HorizonPlan {
        step_minutes: input.step_minutes,
        start_minute: input.start_minute,
        loads,
        soc,
        battery_watts: (0..steps)
            .map(|t| raw.discharge[t] - raw.charge[t])
            .collect(),
        import_watts: raw.import,
        spill_watts: spill,
        import_cost,
        served_wh_by_rank: served,
        diagnostics,
        method,
    }
}
