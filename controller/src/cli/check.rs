//! `communalia check`: validates a site file and its assembly file without running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use communalia_config::{Config, Control};

use crate::config_files::{self, LoadError};

#[derive(clap::Args)]
pub struct Args {
    /// The site file; it names its assembly file.
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match config_files::load(&args.config) {
        Ok(config) => {
            println!("{}", summary(&config));
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Invalid(diags)) => {
            for d in diags.iter() {
                eprintln!("{d}");
            }
            let n = diags.len();
            eprintln!(
                "{n} error{} found; nothing was changed",
                if n == 1 { "" } else { "s" }
            );
            Ok(ExitCode::FAILURE)
        }
        Err(err @ LoadError::Io { .. }) => Err(err.into()),
    }
}

/// One line that says what the controller would run with.
pub fn summary(config: &Config) -> String {
    let site = &config.site;
    let controlled = site
        .loads
        .iter()
        .filter(|l| l.control.is_controlled())
        .count();
    let measured = site
        .loads
        .iter()
        .filter(|l| matches!(l.control, Control::MeasuredOnly))
        .count();
    let d = &config.assembly.decision;
    format!(
        "ok: site \"{}\" ({}): {}, {} ({controlled} controlled, {measured} measured only), {}; decision of {} \"{}\" ({} for, {} against, {} abstaining)",
        site.id,
        site.name,
        plural(site.devices.len(), "device"),
        plural(site.loads.len(), "load"),
        plural(config.assembly.tiers.len(), "tier"),
        d.date,
        d.reference,
        d.votes_for,
        d.votes_against,
        d.abstentions
    )
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
