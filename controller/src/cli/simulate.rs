//! `communalia simulate`: the what-if replay for the assembly, one priority file or two side by
//! side.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config_files::{self, LoadError};
use crate::control::model::SiteModel;
use crate::records::history;
use crate::simulate::{self, Weather};

#[derive(clap::Args)]
pub struct Args {
    /// The site file; it names the assembly file in force.
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// A proposed assembly file, replayed beside the one in force.
    #[arg(long, value_name = "PATH")]
    assembly: Option<PathBuf>,
    /// Days to replay (default 7, or all the history holds).
    #[arg(long, value_name = "N")]
    days: Option<u32>,
    /// Weather of the synthetic days (with a history: of its gaps).
    #[arg(long, value_enum, default_value = "mixed")]
    weather: Weather,
    /// The site's recorded history (the `<site>-history` folder `run` writes, or one of its
    /// files): PV, battery and what loads drew, instead of synthetic weather.
    #[arg(long, value_name = "PATH")]
    history: Option<PathBuf>,
    /// First day (YYYY-MM-DD, the site's local date); default today, or the history's first.
    #[arg(long, value_name = "DATE")]
    start: Option<chrono::NaiveDate>,
    /// Write one row per 5-minute step (the file in force) to this CSV file; times are the
    /// site's local time, RFC 3339 with its offset (`2026-03-02T12:00:00+03:00`).
    #[arg(long, value_name = "OUT")]
    csv: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

fn invalid(diags: &communalia_config::Diagnostics) -> ExitCode {
    for d in diags.iter() {
        eprintln!("{d}");
    }
    eprintln!("{} errors found; nothing was simulated", diags.len());
    ExitCode::FAILURE
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(days) = args.days.filter(|d| *d == 0 || *d > 366) {
        anyhow::bail!("--days must be between 1 and 366 (got {days})");
    }
    let config = match config_files::load(&args.config) {
        Ok(c) => c,
        Err(LoadError::Invalid(d)) => return Ok(invalid(&d)),
        Err(e) => return Err(e.into()),
    };
    let history = match &args.history {
        Some(path) => {
            let files = history::read(path)?;
            if files.is_empty() {
                anyhow::bail!("{}: no history files (*.csv) there", path.display());
            }
            match history::parse(&files, &config.site) {
                Ok(h) if h.rows.is_empty() => {
                    anyhow::bail!("{}: the history holds no rows", path.display())
                }
                Ok(h) => {
                    for c in &h.ignored_columns {
                        eprintln!("note: {c} names no load of this site; ignored");
                    }
                    Some(h)
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    eprintln!("{} errors found; nothing was simulated", errors.len());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        None => None,
    };
    let proposed = match &args.assembly {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let shown = path.display().to_string();
            match communalia_config::load_assembly(&config.site, &shown, bytes) {
                Ok(a) => Some(a),
                Err(d) => return Ok(invalid(&d)),
            }
        }
        None => None,
    };
    let model = SiteModel::new(config.clone());
    let offset = chrono::Duration::minutes(i64::from(config.site.utc_offset_minutes));
    let first_recorded = history
        .as_ref()
        .and_then(|h| h.first())
        .map(|t| (t + offset).date_naive());
    let day = args
        .start
        .or(first_recorded)
        .unwrap_or_else(|| chrono::Utc::now().date_naive())
        .and_hms_opt(12, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_else(chrono::Utc::now);
    let start = simulate::local_midnight(&model, day);
    // With a history and no --days: every day it covers from the start.
    let days = args
        .days
        .unwrap_or_else(|| match history.as_ref().and_then(|h| h.last()) {
            Some(last) if last >= start => {
                let d = (last - start).num_days() + 1;
                u32::try_from(d.clamp(1, 366)).unwrap_or(1)
            }
            _ => 7,
        });

    let mut csv = match &args.csv {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let ids: Vec<String> = config
        .site
        .loads
        .iter()
        .filter(|l| l.control.is_controlled())
        .map(|l| l.id.clone())
        .collect();
    let mut csv_error = None;
    // A person reads the file: the site's clock, with the offset so it stays unambiguous.
    let zone = chrono::FixedOffset::east_opt(config.site.utc_offset_minutes * 60)
        .unwrap_or_else(|| chrono::Offset::fix(&chrono::Utc));
    if let Some(w) = csv.as_mut() {
        // Then one column per tier: 1 when it was cut in the sun (see the table).
        let sun: Vec<String> = model
            .priorities()
            .tiers
            .iter()
            .map(|t| format!("cut_in_sun_{}", t.name))
            .collect();
        let header = format!(
            "time,pv_watts,consumption_watts,soc_percent,{},{}",
            ids.join(","),
            sun.join(",")
        );
        csv_error = writeln!(w, "{header}").err();
    }
    let a = simulate::replay(&model, days, args.weather, start, history.as_ref(), |row| {
        if let (Some(w), None) = (csv.as_mut(), &csv_error) {
            let flags = |v: &[bool]| -> String {
                v.iter()
                    .map(|o| if *o { "1" } else { "0" })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            csv_error = writeln!(
                w,
                "{},{:.0},{:.0},{:.1},{},{}",
                row.at
                    .with_timezone(&zone)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                row.pv_watts,
                row.consumption_watts,
                row.soc_percent,
                flags(&row.on),
                flags(&row.cut_in_sun)
            )
            .err();
        }
    });
    if history.is_some() && a.recorded_steps == 0 {
        eprintln!(
            "note: the history records nothing in the {days} days from {}; the weather model made them all",
            (start + offset).date_naive()
        );
    }
    if let Some(e) = csv_error {
        anyhow::bail!("writing the CSV file failed: {e}");
    }
    if let Some(mut w) = csv {
        w.flush()?;
    }
    let b = proposed.map(|assembly| {
        let mut other = config.clone();
        other.assembly = assembly;
        simulate::replay(
            &SiteModel::new(other),
            days,
            args.weather,
            start,
            history.as_ref(),
            |_| {},
        )
    });
    if args.json {
        let v = serde_json::json!({ "in_force": a, "proposed": b });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let shown = args
            .assembly
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        print!(
            "{}",
            simulate::render(&a, b.as_ref(), (&config.site.assembly_file, &shown))
        );
    }
    Ok(ExitCode::SUCCESS)
}
