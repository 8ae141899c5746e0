//! `communalia bench planner`: times the planner on this machine (allocation, horizon plan,
//! EMHASS-style self-consumption problem), or solves one instance file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use communalia_planner::{Rotation, allocate, fixtures, plan_horizon, selfcons};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Solve one self-consumption instance read from this JSON file and print
    /// its objective, solve time and feasibility.
    #[arg(long, value_name = "FILE")]
    instance: Option<PathBuf>,
    /// Write the self-consumption instances of the benchmark as JSON files into this
    /// directory (to hand them to other tools), then run as usual.
    #[arg(long, value_name = "DIR")]
    write_instances: Option<PathBuf>,
    /// Multiply the number of timed runs per case (e.g. 0.2 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    runs_scale: f64,
}

#[derive(Serialize)]
struct Timing {
    runs: usize,
    median_ms: f64,
    p99_ms: f64,
}

fn timing(mut ms: Vec<f64>) -> Timing {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let at = |q: f64| {
        let i = ((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
        ms.get(i).copied().unwrap_or(f64::NAN)
    };
    Timing {
        runs: n,
        median_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

#[derive(Serialize)]
struct AllocationCase {
    loads: usize,
    tiers: usize,
    #[serde(flatten)]
    timing: Timing,
    allocated_share: f64,
}

#[derive(Serialize)]
struct HorizonCase {
    loads: usize,
    steps: usize,
    #[serde(flatten)]
    timing: Timing,
    served_kwh: f64,
    import_cost: f64,
    method: String,
}

#[derive(Serialize)]
struct SelfConsumptionCase {
    deferrables: usize,
    steps: usize,
    #[serde(flatten)]
    timing: Timing,
    objective: f64,
    relaxation_bound: f64,
    feasible: bool,
}

#[derive(Serialize)]
struct Report {
    allocation: Vec<AllocationCase>,
    horizon: Vec<HorizonCase>,
    self_consumption: Vec<SelfConsumptionCase>,
}

#[derive(Serialize)]
struct InstanceResult {
    objective: Option<f64>,
    solve_ms: f64,
    feasible: bool,
}

fn runs(base: usize, scale: f64) -> usize {
    ((base as f64 * scale).round() as usize).max(1)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.instance {
        return solve_file(path, args.json);
    }
    let scale = if args.runs_scale.is_finite() && args.runs_scale > 0.0 {
        args.runs_scale
    } else {
        1.0
    };
    if let Some(dir) = &args.write_instances {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut report = Report {
        allocation: Vec::new(),
        horizon: Vec::new(),
        self_consumption: Vec::new(),
    };
    for (loads, base) in [(30, 2000), (300, 500), (3000, 60)] {
        let p = fixtures::synthetic_priorities(loads, 1);
        let mut rotation = Rotation::default();
        let (mut ms, mut share) = (Vec::new(), 0.0);
        let n = runs(base, scale);
        for i in 0..n {
            let snapshot = fixtures::synthetic_snapshot(&p, i as u64);
            let start = Instant::now();
            let a = allocate(&p, &snapshot, &rotation);
            ms.push(elapsed_ms(start));
            share += a.allocated_watts / a.available_watts.max(1.0) / n as f64;
            rotation = a.rotation;
        }
        report.allocation.push(AllocationCase {
            loads,
            tiers: p.tiers.len(),
            timing: timing(ms),
            allocated_share: share,
        });
    }
    for (loads, base) in [(8, 40), (32, 20), (100, 8)] {
        let input = fixtures::synthetic_horizon(loads, 96, 1);
        let mut ms = Vec::new();
        let mut last = None;
        for _ in 0..runs(base, scale) {
            let start = Instant::now();
            let plan = plan_horizon(&input);
            ms.push(elapsed_ms(start));
            last = Some(plan);
        }
        let (served_kwh, import_cost, method) = last.map_or((0.0, 0.0, String::new()), |p| {
            (
                p.served_wh_by_rank.iter().sum::<f64>() / 1000.0,
                p.import_cost,
                format!("{:?}", p.method),
            )
        });
        report.horizon.push(HorizonCase {
            loads,
            steps: 96,
            timing: timing(ms),
            served_kwh,
            import_cost,
            method,
        });
    }
    for deferrables in [2, 8, 32] {
        for steps in [48, 96, 288] {
            let instance = fixtures::emhass_instance(deferrables, steps, 7);
            if let Some(dir) = &args.write_instances {
                let path = dir.join(format!("emhass_n{deferrables}_t{steps}.json"));
                let text = serde_json::to_string_pretty(&instance)?;
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let base = if deferrables * steps >= 2000 { 3 } else { 10 };
            let mut ms = Vec::new();
            let mut last = None;
            for _ in 0..runs(base, scale) {
                let start = Instant::now();
                let solution = selfcons::solve(&instance)?;
                ms.push(elapsed_ms(start));
                last = Some(solution);
            }
            if let Some(s) = last {
                report.self_consumption.push(SelfConsumptionCase {
                    deferrables,
                    steps,
                    timing: timing(ms),
                    objective: s.objective,
                    relaxation_bound: s.relaxation_bound,
                    feasible: s.feasible,
                });
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &Report) {
    println!("allocation now (6 tiers, mixed on/off and adjustable, scarce)");
    println!(
        "  {:>6}  {:>6}  {:>10}  {:>10}",
        "loads", "runs", "median ms", "p99 ms"
    );
    for c in &r.allocation {
        println!(
            "  {:>6}  {:>6}  {:>10.3}  {:>10.3}",
            c.loads, c.timing.runs, c.timing.median_ms, c.timing.p99_ms
        );
    }
    println!("horizon plan (96 x 15 min, battery, deferrable needs, reserve, import price)");
    println!(
        "  {:>6}  {:>6}  {:>10}  {:>10}  {:>10}  {:>8}",
        "loads", "runs", "median ms", "p99 ms", "served kWh", "cost"
    );
    for c in &r.horizon {
        println!(
            "  {:>6}  {:>6}  {:>10.2}  {:>10.2}  {:>10.1}  {:>8.3}",
            c.loads,
            c.timing.runs,
            c.timing.median_ms,
            c.timing.p99_ms,
            c.served_kwh,
            c.import_cost
        );
    }
    println!("self-consumption, EMHASS-style (objective = import cost - export revenue)");
    println!(
        "  {:>4}  {:>5}  {:>5}  {:>10}  {:>10}  {:>10}  {:>10}",
        "N", "T", "runs", "median ms", "p99 ms", "objective", "LP bound"
    );
    for c in &r.self_consumption {
        println!(
            "  {:>4}  {:>5}  {:>5}  {:>10.2}  {:>10.2}  {:>10.4}  {:>10.4}{}",
            c.deferrables,
            c.steps,
            c.timing.runs,
            c.timing.median_ms,
            c.timing.p99_ms,
            c.objective,
            c.relaxation_bound,
            if c.feasible { "" } else { "  infeasible" }
        );
    }
}

fn solve_file(path: &PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let instance: selfcons::Instance =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let start = Instant::now();
    let solution =
        selfcons::solve(&instance).with_context(|| format!("checking {}", path.display()))?;
    let solve_ms = elapsed_ms(start);
    let result = InstanceResult {
        objective: solution.feasible.then_some(solution.objective),
        solve_ms,
        feasible: solution.feasible,
    };
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else if solution.feasible {
        println!(
            "objective {:.6} (import cost minus export revenue; LP bound {:.6}), \
             solved in {solve_ms:.2} ms with {} LP solves",
            solution.objective, solution.relaxation_bound, solution.lp_solves
        );
    } else {
        println!("infeasible (after {solve_ms:.2} ms)");
    }
    Ok(if solution.feasible {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
