//! `communalia bench`: benchmarks any installer can run on their own box.
//!
//! Each target lives in its own module; this one only dispatches.

use std::process::ExitCode;

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
    /// Allocation, horizon and self-consumption (EMHASS-style) problems.
    Planner(planner::Args),
    /// Concurrent Modbus reads and MQTT plug telemetry on loopback.
    Drivers(drivers::Args),
    /// Durable appends and full verification.
    Ledger(ledger::Args),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.target {
        Target::Planner(a) => planner::run(a),
        Target::Drivers(a) => drivers::run(a),
        Target::Ledger(a) => ledger::run(a),
    }
}
