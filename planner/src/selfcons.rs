//! The EMHASS-style self-consumption problem: PV and base-load forecasts, a battery, on/off
//! deferrable loads that must run a number of steps, import and export prices; minimise import
//! cost minus export revenue.
//!
//! Method (bounded, deterministic): the LP relaxation (good_lp, microlp), then an LP dive: the
//! most-decided fractional deferrable step is fixed on (or, if that is infeasible, off) and the LP
//! re-optimised from its previous basis, until every deferrable step is 0 or 1. The last LP is
//! then the exact battery and grid dispatch for that schedule, so the objective is that of a
//! feasible integer solution; the relaxation's value is a lower bound, reported with it. The
//! number of LP re-solves is bounded by [`Options::max_fixes`]; past it, the remaining steps are
//! rounded by largest value and the dispatch solved once more.

use std::collections::BTreeMap;

use good_lp::{Expression, ProblemVariables, SolverModel, microlp, variable};
use serde::{Deserialize, Serialize};

/// Battery of an [`Instance`]; SoC as fractions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatterySpec {
    /// Capacity.
    pub capacity_wh: f64,
    /// Charge limit.
    pub max_charge_watts: f64,
    /// Discharge limit.
    pub max_discharge_watts: f64,
    /// Stored / charged.
    pub charge_efficiency: f64,
    /// Delivered / taken out.
    pub discharge_efficiency: f64,
    /// Lowest SoC.
    pub soc_min: f64,
    /// Highest SoC.
    pub soc_max: f64,
    /// SoC at the start.
    pub soc_start: f64,
    /// Lowest SoC at the end.
    pub soc_end_min: f64,
}

/// Grid limits of an [`Instance`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    /// Import limit.
    pub max_import_watts: f64,
    /// Export limit.
    pub max_export_watts: f64,
}

/// One deferrable load: each step fully on at `nominal_watts` or off, on for exactly
/// `operating_steps` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deferrable {
    /// Power when on.
    pub nominal_watts: f64,
    /// Steps on over the horizon.
    pub operating_steps: usize,
}

/// One problem, as in the JSON instance format of `communalia bench planner --instance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Step length.
    pub step_minutes: u32,
    /// Number of steps.
    pub steps: usize,
    /// PV forecast per step.
    pub pv_watts: Vec<f64>,
    /// Base (non-deferrable) load per step.
    pub base_load_watts: Vec<f64>,
    /// Price per kWh imported, per step.
    pub import_price: Vec<f64>,
    /// Price per kWh exported, per step.
    pub export_price: Vec<f64>,
    /// The battery.
    pub battery: BatterySpec,
    /// Grid limits.
    pub grid: GridSpec,
    /// Deferrable loads.
    pub deferrables: Vec<Deferrable>,
}

/// Why an instance cannot be solved at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InstanceError {
    /// A per-step list has the wrong length.
    #[error("{field} has {found} values, expected steps = {steps}")]
    Length {
        /// Field name.
        field: &'static str,
        /// Its length.
        found: usize,
        /// `steps`.
        steps: usize,
    },
    /// A number is not finite or out of range.
    #[error("{field} is {value}, which is not allowed")]
    Value {
        /// Field name.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A number breaks a rule that names its range, e.g. a state of charge outside the battery's
    /// limits or a deferrable's negative power.
    #[error("{field} is {value}; it must be {rule}")]
    Rule {
        /// Field path; deferrables are counted from 1, as in configuration errors
        /// (`deferrables[1].nominal_watts` is the first one's).
        field: String,
        /// The value.
        value: f64,
        /// What it must be, with the numbers of the fields it is compared with.
        rule: String,
    },
}

/// Bounds on the work of [`solve_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Most LP re-solves in the dive; past it whole deferrables are rounded.
    pub max_fixes: usize,
    /// Work of the strong dive steps (each tries both sides of a fix), in steps × variables:
    /// the first `strong_work / variables` steps are strong, the rest fix on directly.
    pub strong_work: u64,
    /// At most this many strong steps.
    pub max_strong_steps: usize,
    /// Branch-and-bound work spent improving the best dive, in nodes × variables: the node
    /// budget is this divided by the model's size, skipped under 200 nodes.
    pub polish_work: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_fixes: 2000,
            strong_work: 3_000_000,
            max_strong_steps: 400,
            polish_work: 1_000_000,
        }
    }
}

/// The result of [`solve`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Solution {
    /// Import cost minus export revenue, in the instance's price unit (lower is better).
    pub objective: f64,
    /// A schedule satisfying every constraint was found.
    pub feasible: bool,
    /// Objective of the LP relaxation: no integer schedule can do better.
    pub relaxation_bound: f64,
    /// On/off per deferrable and step.
    pub deferrable_on: Vec<Vec<bool>>,
    /// SoC (fraction) at the end of each step.
    pub soc: Vec<f64>,
    /// Battery power per step, positive when discharging.
    pub battery_watts: Vec<f64>,
    /// Import per step.
    pub import_watts: Vec<f64>,
    /// Export per step.
    pub export_watts: Vec<f64>,
    /// LP solves and re-solves used.
    pub lp_solves: usize,
    /// Whether the dive finished within its budget (otherwise the rest was rounded).
    pub dive_complete: bool,
}

fn check(inst: &Instance) -> Result<(), InstanceError> {
    let steps = inst.steps;
    for (field, v) in [
        ("pv_watts", &inst.pv_watts),
        ("base_load_watts", &inst.base_load_watts),
        ("import_price", &inst.import_price),
        ("export_price", &inst.export_price),
    ] {
        if v.len() != steps {
            return Err(InstanceError::Length {
                field,
                found: v.len(),
                steps,
            });
        }
        if let Some(&value) = v.iter().find(|x| !x.is_finite()) {
            return Err(InstanceError::Value { field, value });
        }
    }
    let b = &inst.battery;
    for (field, value) in [
        ("battery.capacity_wh", b.capacity_wh),
        ("battery.max_charge_watts", b.max_charge_watts),
        ("battery.max_discharge_watts", b.max_discharge_watts),
        ("grid.max_import_watts", inst.grid.max_import_watts),
        ("grid.max_export_watts", inst.grid.max_export_watts),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(InstanceError::Value { field, value });
        }
    }
    for (field, value) in [
        ("battery.charge_efficiency", b.charge_efficiency),
        ("battery.discharge_efficiency", b.discharge_efficiency),
    ] {
        if !(value.is_finite() && value > 0.0 && value <= 1.0) {
            return Err(InstanceError::Value { field, value });
        }
    }
    if inst.step_minutes == 0 {
        return Err(InstanceError::Value {
            field: "step_minutes",
            value: 0.0,
        });
    }
    check_soc(b)?;
    for (j, d) in inst.deferrables.iter().enumerate() {
        if !(d.nominal_watts.is_finite() && d.nominal_watts >= 0.0) {
            return Err(InstanceError::Rule {
                field: format!("deferrables[{}].nominal_watts", j + 1),
                value: d.nominal_watts,
                rule: "finite and at least 0 W".to_owned(),
            });
        }
    }
    Ok(())
}

/// States of charge are fractions of `capacity_wh`; the start lies within the limits and the
/// end target is reachable below the maximum.
fn check_soc(b: &BatterySpec) -> Result<(), InstanceError> {
    let rule = |field: &str, value: f64, rule: String| InstanceError::Rule {
        field: format!("battery.{field}"),
        value,
        rule,
    };
    for (field, value) in [
        ("soc_min", b.soc_min),
        ("soc_max", b.soc_max),
        ("soc_start", b.soc_start),
        ("soc_end_min", b.soc_end_min),
    ] {
        if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
            return Err(rule(
                field,
                value,
                "a fraction of capacity_wh in 0..=1 (not a percentage)".to_owned(),
            ));
        }
    }
    if b.soc_min > b.soc_max {
        return Err(rule(
            "soc_min",
            b.soc_min,
            format!("at most battery.soc_max ({})", b.soc_max),
        ));
    }
    if !(b.soc_min..=b.soc_max).contains(&b.soc_start) {
        return Err(rule(
            "soc_start",
            b.soc_start,
            format!(
                "within battery.soc_min..=battery.soc_max ({}..={})",
                b.soc_min, b.soc_max
            ),
        ));
    }
    if b.soc_end_min > b.soc_max {
        return Err(rule(
            "soc_end_min",
            b.soc_end_min,
            format!("at most battery.soc_max ({})", b.soc_max),
        ));
    }
    Ok(())
}

/// Indices of the model's variables, in creation order.
struct Layout {
    /// `u[j][t]`: index of the on-fraction variable.
    u: Vec<Vec<usize>>,
    charge: Vec<usize>,
    discharge: Vec<usize>,
    soc: Vec<usize>,
    import: Vec<usize>,
    export: Vec<usize>,
}

/// Builds the LP with `fixed` deferrable steps and solves it.
fn build_and_solve(
    inst: &Instance,
    fixed: &BTreeMap<(usize, usize), f64>,
) -> Result<(microlp::Solution, Layout), good_lp::ResolutionError> {
    let (model, layout) = build(inst, fixed, false);
    Ok((model.solve()?.into_inner(), layout))
}

/// Builds the model (deferrable steps binary or relaxed) with `fixed` deferrable steps.
fn build(
    inst: &Instance,
    fixed: &BTreeMap<(usize, usize), f64>,
    binary: bool,
) -> (good_lp::solvers::microlp::MicroLpProblem, Layout) {
    let steps = inst.steps;
    let dh = inst.step_minutes as f64 / 60.0;
    // The model works in kW and kWh (coefficients near 1 help the simplex).
    let k = dh;
    let b = &inst.battery;
    let mut vars = ProblemVariables::new();
    let mut n = 0usize;
    let mut obj = Expression::with_capacity(4 * steps);
    let mut add = |vars: &mut ProblemVariables, lo: f64, hi: f64, int: bool| {
        let v = vars.add(if int {
            variable().binary()
        } else {
            variable().min(lo).max(hi)
        });
        n += 1;
        (v, n - 1)
    };
    let mut u = Vec::new();
    let mut uv = Vec::new();
    for (j, d) in inst.deferrables.iter().enumerate() {
        let (mut idx, mut vs) = (Vec::new(), Vec::new());
        for t in 0..steps {
            let (lo, hi) = match fixed.get(&(j, t)) {
                Some(&x) => (x, x),
                None => (0.0, if d.operating_steps > 0 { 1.0 } else { 0.0 }),
            };
            let (v, i) = add(&mut vars, lo, hi, binary && lo < hi);
            idx.push(i);
            vs.push(v);
        }
        u.push(idx);
        uv.push(vs);
    }
    let cap = b.capacity_wh / KW;
    let (mut charge, mut discharge, mut soc, mut import, mut export) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut cv, mut dv, mut sv, mut gv, mut xv) = (vec![], vec![], vec![], vec![], vec![]);
    let s0 = b.soc_start * cap;
    for t in 0..steps {
        let (c, ci) = add(&mut vars, 0.0, b.max_charge_watts / KW, false);
        let (d, di) = add(&mut vars, 0.0, b.max_discharge_watts / KW, false);
        let lo = (b.soc_min * cap).min(s0);
        let mut lo_t = lo;
        if t + 1 == steps {
            lo_t = lo.max(b.soc_end_min * cap);
        }
        let (s, si) = add(&mut vars, lo_t, (b.soc_max * cap).max(s0).max(lo_t), false);
        let (g, gi) = add(&mut vars, 0.0, inst.grid.max_import_watts / KW, false);
        let (x, xi) = add(&mut vars, 0.0, inst.grid.max_export_watts / KW, false);
        obj.add_mul(inst.import_price[t] * k, g);
        obj.add_mul(-inst.export_price[t] * k, x);
        charge.push(ci);
        discharge.push(di);
        soc.push(si);
        import.push(gi);
        export.push(xi);
        cv.push(c);
        dv.push(d);
        sv.push(s);
        gv.push(g);
        xv.push(x);
    }
    let mut model = vars.minimise(obj).using(microlp);
    for t in 0..steps {
        // pv + d + g = base + sum P u + c + x
        let mut e = Expression::with_capacity(inst.deferrables.len() + 4);
        e.add_mul(1.0, dv[t]);
        e.add_mul(1.0, gv[t]);
        e.add_mul(-1.0, cv[t]);
        e.add_mul(-1.0, xv[t]);
        for (j, d) in inst.deferrables.iter().enumerate() {
            e.add_mul(-d.nominal_watts / KW, uv[j][t]);
        }
        model.add_constraint(e.eq((inst.base_load_watts[t] - inst.pv_watts[t]) / KW));
        let mut s = Expression::with_capacity(4);
        s.add_mul(1.0, sv[t]);
        if t > 0 {
            s.add_mul(-1.0, sv[t - 1]);
        }
        s.add_mul(-b.charge_efficiency * dh, cv[t]);
        s.add_mul(dh / b.discharge_efficiency, dv[t]);
        model.add_constraint(s.eq(if t == 0 { s0 } else { 0.0 }));
    }
    for (j, d) in inst.deferrables.iter().enumerate() {
        let mut e = Expression::with_capacity(steps);
        for v in &uv[j] {
            e.add_mul(1.0, *v);
        }
        model.add_constraint(e.eq(d.operating_steps.min(steps) as f64));
    }
    (
        model,
        Layout {
            u,
            charge,
            discharge,
            soc,
            import,
            export,
        },
    )
}

/// Solves with default options.
pub fn solve(inst: &Instance) -> Result<Solution, InstanceError> {
    solve_with(inst, &Options::default())
}

const EPS: f64 = 1e-6;
/// Watts per model unit.
const KW: f64 = 1000.0;

/// Solves an instance. An infeasible instance is not an error: `feasible` is false.
pub fn solve_with(inst: &Instance, opts: &Options) -> Result<Solution, InstanceError> {
    check(inst)?;
    let Ok((relaxed, layout)) = build_and_solve(inst, &BTreeMap::new()) else {
        return Ok(infeasible(inst, 1));
    };
    let bound = relaxed.objective();
    let vars: Vec<microlp::Variable> = relaxed.iter().map(|(v, _)| v).collect();
    let at_bound = |s: &Solution| s.objective <= bound + 1e-7 * (1.0 + bound.abs());
    let mut solves = 1;
    let mut best: Option<(Solution, microlp::Solution)> = None;
    let size = vars.len().max(1) as u64;
    let strong_steps = ((opts.strong_work / size) as usize).min(opts.max_strong_steps);
    if let Some(d) = dive(inst, relaxed, &vars, &layout, strong_steps, opts.max_fixes) {
        solves += d.solves;
        let s = extract(inst, &d.sol, &vars, &layout, bound, 0, d.complete);
        best = Some((s, d.sol));
    }
    if let Some((b, sol)) = &best
        && !at_bound(b)
        && opts.polish_work / size >= 200
        && let Some((p, nodes)) = polish(inst, sol, &layout, (opts.polish_work / size).min(5000))
    {
        solves += nodes;
        let s = extract(inst, &p, &vars, &layout, bound, 0, b.dive_complete);
        if s.objective < b.objective - 1e-9 {
            best = Some((s, p));
        }
    }
    Ok(match best {
        Some((mut b, _)) => {
            b.lp_solves = solves;
            b
        }
        None => infeasible(inst, solves),
    })
}

/// Branch and bound on the binary model from the dive's schedule, within `nodes` nodes.
fn polish(
    inst: &Instance,
    start: &microlp::Solution,
    layout: &Layout,
    nodes: u64,
) -> Option<(microlp::Solution, usize)> {
    let (model, _) = build(inst, &BTreeMap::new(), true);
    let mut warm: Vec<(microlp::Variable, f64)> = start.iter().collect();
    for row in &layout.u {
        for &i in row {
            if let Some(w) = warm.get_mut(i) {
                w.1 = w.1.round();
            }
        }
    }
    let mut o = microlp::SolveOptions::default();
    o.node_limit = Some(nodes);
    o.mip_gap = 1e-4;
    o.warm_start = Some(warm);
    let outcome = model.as_inner().solve_with(o).ok()?;
    let used = outcome.stats().nodes_solved as usize;
    outcome.into_solution().ok().map(|s| (s, used))
}

/// How a dive fixes the largest fractional deferrable step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Fixed on.
    LargestUp,
    /// Fixed to whichever side keeps the better LP value.
    Strong,
}

struct Dive {
    sol: microlp::Solution,
    solves: usize,
    complete: bool,
}

/// Fixes fractional deferrable steps one at a time, re-solving from the previous basis, until
/// the schedule is integral; past `max_fixes` re-solves, rounds whole deferrables instead.
/// `None` when no integral schedule was found.
fn dive(
    inst: &Instance,
    mut sol: microlp::Solution,
    vars: &[microlp::Variable],
    layout: &Layout,
    strong_steps: usize,
    max_fixes: usize,
) -> Option<Dive> {
    let mut steps = 0;
    let mut fixed = BTreeMap::new();
    let mut solves = 0;
    let mut complete = true;
    loop {
        let mut pick: Option<(usize, usize, f64)> = None;
        for (j, row) in layout.u.iter().enumerate() {
            for (t, &i) in row.iter().enumerate() {
                let x = sol.var_value_raw(vars[i]);
                if x > EPS && x < 1.0 - EPS && pick.is_none_or(|p| x > p.2) {
                    pick = Some((j, t, x));
                }
            }
        }
        let Some((j, t, _)) = pick else { break };
        steps += 1;
        let rule = if steps <= strong_steps {
            Rule::Strong
        } else {
            Rule::LargestUp
        };
        if solves >= max_fixes {
            // Past the budget for single fixes: round the whole deferrable by largest value and
            // freeze it with two constraints (two re-solves), then go on with the next one.
            complete = false;
            let chosen = top_steps(inst, &sol, vars, &layout.u[j], j);
            let mut on = microlp::LinearExpr::empty();
            let mut off = microlp::LinearExpr::empty();
            let mut count = 0.0;
            for (t, &i) in layout.u[j].iter().enumerate() {
                fixed.insert((j, t), if chosen[t] { 1.0 } else { 0.0 });
                if chosen[t] {
                    on.add(vars[i], 1.0);
                    count += 1.0;
                } else {
                    off.add(vars[i], 1.0);
                }
            }
            solves += 2;
            let next = sol
                .add_constraint(on, microlp::ComparisonOp::Eq, count)
                .ok()
                .and_then(|o| o.into_solution().ok())
                .and_then(|s| s.add_constraint(off, microlp::ComparisonOp::Eq, 0.0).ok())
                .and_then(|o| o.into_solution().ok());
            sol = match next {
                Some(s) => s,
                None => build_and_solve(inst, &fixed).ok()?.0,
            };
            continue;
        }
        let value = match rule {
            Rule::LargestUp => 1.0,
            Rule::Strong => {
                // Fix on; if that costs anything, compare with off and keep the better.
                let var = vars[layout.u[j][t]];
                let parent = sol.objective();
                let tol = 1e-9 * (1.0 + parent.abs());
                solves += 1;
                let up = sol
                    .fix_var(var, 1.0)
                    .ok()
                    .and_then(|o| o.into_solution().ok());
                let Some(up) = up else {
                    fixed.insert((j, t), 0.0);
                    solves += 1;
                    sol = build_and_solve(inst, &fixed).ok()?.0;
                    continue;
                };
                if up.objective() <= parent + tol {
                    fixed.insert((j, t), 1.0);
                    sol = up;
                    continue;
                }
                let up_objective = up.objective();
                solves += 2;
                let down = up
                    .unfix_var(var)
                    .ok()
                    .and_then(|(o, _)| o.into_solution().ok())
                    .and_then(|s| s.fix_var(var, 0.0).ok())
                    .and_then(|o| o.into_solution().ok());
                match down {
                    Some(down) if down.objective() < up_objective - tol => {
                        fixed.insert((j, t), 0.0);
                        sol = down;
                        continue;
                    }
                    Some(down) => {
                        solves += 2;
                        let again = down
                            .unfix_var(var)
                            .ok()
                            .and_then(|(o, _)| o.into_solution().ok())
                            .and_then(|s| s.fix_var(var, 1.0).ok())
                            .and_then(|o| o.into_solution().ok());
                        fixed.insert((j, t), 1.0);
                        sol = match again {
                            Some(s) => s,
                            None => build_and_solve(inst, &fixed).ok()?.0,
                        };
                        continue;
                    }
                    None => {
                        fixed.insert((j, t), 1.0);
                        solves += 1;
                        sol = build_and_solve(inst, &fixed).ok()?.0;
                        continue;
                    }
                }
            }
        };
        solves += 1;
        if let Ok(Ok(s)) = sol
            .fix_var(vars[layout.u[j][t]], value)
            .map(|o| o.into_solution())
        {
            fixed.insert((j, t), value);
            sol = s;
            continue;
        }
        // That side is infeasible: fix the other, rebuilding from the decisions so far.
        fixed.insert((j, t), 1.0 - value);
        solves += 1;
        sol = build_and_solve(inst, &fixed).ok()?.0;
    }
    Some(Dive {
        sol,
        solves,
        complete,
    })
}

/// The `operating_steps` steps of deferrable `j` with the largest values (earliest on a tie).
fn top_steps(
    inst: &Instance,
    sol: &microlp::Solution,
    vars: &[microlp::Variable],
    row: &[usize],
    j: usize,
) -> Vec<bool> {
    let mut vals: Vec<(usize, f64)> = row
        .iter()
        .enumerate()
        .map(|(t, &i)| (t, sol.var_value_raw(vars[i])))
        .collect();
    vals.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let on = inst.deferrables[j].operating_steps.min(inst.steps);
    let mut chosen = vec![false; row.len()];
    for (t, _) in vals.into_iter().take(on) {
        chosen[t] = true;
    }
    chosen
}
fn extract(
    inst: &Instance,
    sol: &microlp::Solution,
    vars: &[microlp::Variable],
    layout: &Layout,
    bound: f64,
    solves: usize,
    complete: bool,
) -> Solution {
    let val = |i: usize| sol.var_value_raw(vars[i]);
    let steps = inst.steps;
    let dh = inst.step_minutes as f64 / 60.0;
    let on: Vec<Vec<bool>> = layout
        .u
        .iter()
        .map(|row| row.iter().map(|&i| val(i) > 0.5).collect())
        .collect();
    let import: Vec<f64> = layout
        .import
        .iter()
        .map(|&i| KW * val(i).max(0.0))
        .collect();
    let export: Vec<f64> = layout
        .export
        .iter()
        .map(|&i| KW * val(i).max(0.0))
        .collect();
    let objective = (0..steps)
        .map(|t| {
            (inst.import_price[t] * import[t] - inst.export_price[t] * export[t]) * dh / 1000.0
        })
        .sum();
    let cap = inst.battery.capacity_wh / KW;
    Solution {
        objective,
        feasible: true,
        relaxation_bound: bound,
        deferrable_on: on,
        soc: layout
            .soc
            .iter()
            .map(|&i| if cap > 0.0 { val(i) / cap } else { 0.0 })
            .collect(),
        battery_watts: (0..steps)
            .map(|t| KW * (val(layout.discharge[t]) - val(layout.charge[t])))
            .collect(),
        import_watts: import,
        export_watts: export,
        lp_solves: solves,
        dive_complete: complete,
    }
}

fn infeasible(inst: &Instance, solves: usize) -> Solution {
    Solution {
        objective: f64::NAN,
        feasible: false,
        relaxation_bound: f64::NAN,
        deferrable_on: vec![vec![false; inst.steps]; inst.deferrables.len()],
        soc: Vec::new(),
        battery_watts: Vec::new(),
        import_watts: Vec::new(),
        export_watts: Vec::new(),
        lp_solves: solves,
        dive_complete: false,
    }
}
