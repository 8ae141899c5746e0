//! `communalia plan`: one allocation without devices, every controlled load asking its nominal
//! power, with the reason for each load. For the assembly to see what its file does.

use std::path::PathBuf;
use std::process::ExitCode;

use communalia_planner as planner;

use crate::config_files::{self, LoadError};
use crate::control::model::SiteModel;

#[derive(clap::Args)]
pub struct Args {
    /// The site file; it names its assembly file.
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// Power available to the loads, in watts.
    #[arg(long, value_name = "W")]
    available_watts: f64,
    /// Battery state of charge in percent; the health reserve is then kept in the battery.
    #[arg(long, value_name = "PCT")]
    soc: Option<f64>,
    /// Print the reason for every load (default: only loads that are off).
    #[arg(long)]
    explain: bool,
    /// Print JSON: {"available_watts", "loads": [{"id","tier","rank","on","demand_watts","allocated_watts","reason"}], "diagnostics"}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.available_watts.is_finite() || args.available_watts < 0.0 {
        anyhow::bail!(
            "--available-watts must be a number of watts, 0 or more (got {})",
            args.available_watts
        );
    }
    if let Some(soc) = args.soc
        && !(0.0..=100.0).contains(&soc)
    {
        anyhow::bail!("--soc must be between 0 and 100 percent (got {soc})");
    }
    let config = match config_files::load(&args.config) {
        Ok(c) => c,
        Err(LoadError::Invalid(diags)) => {
            for d in diags.iter() {
                eprintln!("{d}");
            }
            eprintln!("{} errors found; nothing was planned", diags.len());
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let allocation = allocate(&SiteModel::new(config), args.available_watts, args.soc);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&allocation)?);
    } else {
        print!("{}", render(&allocation, args.explain));
    }
    Ok(ExitCode::SUCCESS)
}

/// The allocation at `available` watts, with the battery (when `soc` is given) only as a store
/// of the health reserve: power beyond `available` never comes from it.
pub fn allocate(model: &SiteModel, available: f64, soc: Option<f64>) -> planner::Allocation {
    let priorities = model.priorities();
    let battery = soc.and_then(|s| {
        model.battery(s / 100.0).map(|mut b| {
            b.max_discharge_watts = 0.0;
            b
        })
    });
    let snapshot = planner::Snapshot {
        pv_watts: available,
        battery,
        ..planner::Snapshot::default()
    };
    planner::allocate(&priorities, &snapshot, &planner::Rotation::default())
}

/// A table a person reads: tier by tier, each load on or off with its watts.
pub fn render(a: &planner::Allocation, explain: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} available, {} allocated",
        planner::reason::kw(a.available_watts),
        planner::reason::kw(a.allocated_watts)
    );
    let mut tier = None;
    for l in &a.loads {
        if tier != Some(l.rank) {
            tier = Some(l.rank);
            let _ = writeln!(out, "tier {} {}", l.rank, l.tier);
        }
        let _ = write!(
            out,
            "  {:<4} {:<18} {:>8} of {:>8}",
            if l.on { "on" } else { "off" },
            l.id,
            planner::reason::kw(l.allocated_watts),
            planner::reason::kw(l.demand_watts)
        );
        if explain || !l.on {
            let _ = write!(out, "  {}", l.reason);
        }
        out.push('\n');
    }
    for d in &a.diagnostics {
        let _ = writeln!(out, "note: {}", d.message);
    }
    out
}
