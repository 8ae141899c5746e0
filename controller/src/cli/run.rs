//! `communalia run`: the controller for a real site.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config_files::{self, LoadError};
use crate::control::credits::Credits;
use crate::control::io::Clock;
use crate::control::model::SiteModel;
use crate::control::runtime::{self, RunOptions};
use crate::records::history::HistoryWriter;

#[derive(clap::Args)]
#[command(after_long_help = RUN_HELP)]
pub struct Args {
    /// The site file; it names its assembly file (relative paths in it are taken from the
    /// site file's folder).
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// Read, plan and explain, but switch nothing (no commands, no fail-safe settings, no
    /// switch-on at exit).
    #[arg(long)]
    dry_run: bool,
    /// How log lines look on stderr: `plain` text (coloured only on a terminal) or `json`,
    /// one object per line.
    #[arg(long, value_enum, default_value_t = super::LogFormat::Plain)]
    log_format: super::LogFormat,
}

const RUN_HELP: &str = "\
Web page and API: on the site file's [http] listen address (default 127.0.0.1:8080): / the page,
/api/state, /api/plan, /api/assembly, /metrics, /healthz.

Logs: on stderr; RUST_LOG filters them (default info, e.g. RUST_LOG=communalia=debug).
Each load's switch is logged with its reason; device faults as warnings.

Reload: the assembly file is checked twice a second; a changed, valid file takes effect at the
next cycle and is logged with its decision record; an invalid one is logged with every error
located, shown as assembly_errors in /api/state, and the last good file stays in force. A change
to the site file needs a restart.

Stop: SIGTERM or Ctrl-C switches the health loads on, waits for their plugs to confirm, and
exits.

Files written beside the site file: <site id>-history/ (five-minute history, 35 days),
<site id>-load-profile.json (learnt consumption), the ledger and time-series buffer where the
site file names them. See config/README.md, \"Bringing up a real site\".";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing_as(args.log_format);
    let config = match config_files::load(&args.config) {
        Ok(c) => c,
        Err(LoadError::Invalid(diags)) => {
            for d in diags.iter() {
                tracing::error!("{d}");
            }
            tracing::error!("{} errors found; not starting", diags.len());
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let assembly_path = config_files::resolve(&args.config, &config.site.assembly_file);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let site = config.site.clone();
        let base_dir = args
            .config
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        let ledger = super::open_ledger(&site, &base_dir);
        let credits = ledger.as_ref().and_then(|l| {
            let key_file = base_dir.join(&site.ledger.controller_key_file);
            match super::ledger::read_key(&key_file) {
                Ok(key) => Some(Credits::new(std::sync::Arc::clone(l), key, &site)),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "no controller key; no meter credits");
                    None
                }
            }
        });
        let opts = RunOptions {
            credits,
            dry_run: args.dry_run,
            assembly_path: Some(assembly_path),
            profile_file: Some(base_dir.join(format!("{}-load-profile.json", site.id))),
            forecast_file: site
                .forecast
                .as_ref()
                .and_then(|f| f.pv_file.as_ref())
                .map(|f| base_dir.join(f)),
            influx: super::influx_from_config(&site, &base_dir)?,
            mqtt_state: super::mqtt_state_from_config(&site),
            history: Some(HistoryWriter::new(
                base_dir.join(format!("{}-history", site.id)),
                &site,
            )),
            ..RunOptions::new(Clock::real())
        };
        let running =
            runtime::start(SiteModel::new(config), opts, super::shutdown_signal()).await?;
        let routes = super::ledger_routes(ledger, Clock::real(), site.utc_offset_minutes);
        let addr = super::serve_http(&site, running.published.clone(), &base_dir, routes).await?;
        tracing::info!(site = %site.id, dry_run = args.dry_run, http = %addr, "controller running");
        running.task.await??;
        Ok(ExitCode::SUCCESS)
    })
}
