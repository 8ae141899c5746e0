//! The `communalia` binary: a thin command-line layer over the workspace's libraries.
//!
//! Each subcommand lives in its own module under `cli/` with its `Args` and a `run` that returns
//! the process exit code. Errors are printed once, with their context chain, by `main`.

use communalia::cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An energy-governance controller for community microgrids.
#[derive(Parser)]
#[command(name = "communalia", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: a simulated village, an embedded MQTT broker, the controller
    /// and the web page.
    Demo(cli::demo::Args),
    /// Run the controller for a real site.
    Run(cli::run::Args),
    /// What-if replay of N days under the assembly file in force, or beside a proposed one.
    Simulate(cli::simulate::Args),
    /// Validate a site file and its assembly file; print every error, located.
    Check(cli::check::Args),
    /// One allocation without devices: who would get power at a given availability, and why.
    Plan(cli::plan::Args),
    /// Read devices once and print what each reports, to check wiring before going live.
    Probe(cli::probe::Args),
    /// Find SunSpec devices on Modbus TCP and Tasmota and Shelly plugs on MQTT; write a draft
    /// site file (and assembly file) that `check` accepts.
    Scan(cli::scan::Args),
    /// The Communs ledger: keys, members, claims, attestations, transfers, balances.
    Ledger(cli::ledger::Args),
    /// Benchmarks any installer can run on their own box.
    Bench(cli::bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Simulate(args) => cli::simulate::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Plan(args) => cli::plan::run(args),
        Command::Probe(args) => cli::probe::run(args),
        Command::Scan(args) => cli::scan::run(args),
        Command::Ledger(args) => cli::ledger::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
