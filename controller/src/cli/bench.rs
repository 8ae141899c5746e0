//! `communalia bench`: benchmarks any installer can run on their own box.
//!
//! Each target lives in its own module; this one only dispatches.

use std::process::ExitCode;

mod cycle;
mod drivers;
mod ledger;
mod planner;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum Target {
    /// The full control cycle for a village of 5 Modbus devices and 60 plugs on loopback.
    Cycle(cycle::Args),
    /// Allocation, horizon and self-consumption (EMHASS-style) problems.
    Planner(planner::Args),
    /// Concurrent Modbus reads and MQTT plug telemetry on loopback.
    Drivers(drivers::Args),
    /// Durable appends and full verification.
    Ledger(ledger::Args),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.target {
        Target::Cycle(a) => cycle::run(a),
        Target::Planner(a) => planner::run(a),
        Target::Drivers(a) => drivers::run(a),
        Target::Ledger(a) => ledger::run(a),
    }
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank; NaN when there are none.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
