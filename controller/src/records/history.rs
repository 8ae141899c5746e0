//! The site's recorded history, for the assembly's "what would the proposed file have done last
//! week": one CSV row per five minutes (site time) with what the controller saw, in one file per
//! local day, kept [`KEEP_DAYS`] days. `communalia run` writes it beside the site file
//! (`<site>-history/`); `communalia simulate --history` replays it.
//!
//! ```text
//! time,pv_watts,soc_percent,consumption_watts,clinic_fridge,cold_room,...
//! 2026-11-23T05:05:00Z,1830,54.2,912,118,,350
//! ```
//!
//! `time` (RFC 3339) starts the five-minute window; a number is the window's average; an empty
//! cell is "not known in that window": a silent device, or a load that was never on (a load's
//! column is what it drew while on). One header per file, no quoting (ids never hold commas).
//! The parser is pure and names the file, line and column of every error; the writer appends a
//! row when a window closes, starts a new file at local midnight (or when the site's loads
//! changed) and deletes files older than [`KEEP_DAYS`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use communalia_config as cfg;

use crate::state::StateView;

/// Length of one row's window.
pub const WINDOW: Duration = Duration::minutes(5);
/// Days of files kept.
pub const KEEP_DAYS: i64 = 35;
/// The columns before the loads'.
const FIXED: [&str; 4] = ["time", "pv_watts", "soc_percent", "consumption_watts"];

/// One window of recorded history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// Start of the window.
    pub at: DateTime<Utc>,
    pub pv_watts: Option<f64>,
    pub soc_percent: Option<f64>,
    pub consumption_watts: Option<f64>,
    /// What each load drew while on, where known.
    pub loads: BTreeMap<String, f64>,
}

/// A recorded history, rows in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub rows: Vec<HistoryRow>,
    /// Columns naming no load of the site (a load since removed), with where they were seen.
    pub ignored_columns: Vec<String>,
}

impl History {
    /// The row whose window holds `at`, or the last one before it if it is less than
    /// `hold` older (a missed write); `None` in a gap.
    pub fn at(&self, at: DateTime<Utc>, hold: Duration) -> Option<&HistoryRow> {
        let i = self.rows.partition_point(|r| r.at <= at);
        let row = self.rows.get(i.checked_sub(1)?)?;
        (at - row.at < hold.max(WINDOW)).then_some(row)
    }

    pub fn first(&self) -> Option<DateTime<Utc>> {
        self.rows.first().map(|r| r.at)
    }

    pub fn last(&self) -> Option<DateTime<Utc>> {
        self.rows.last().map(|r| r.at)
    }
}

/// One error in a history file, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct HistoryError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses history files (name, text) for `site`. Rows from all files are put in time order;
/// a window recorded twice keeps the later file's row. Every error is returned, located.
pub fn parse(files: &[(String, String)], site: &cfg::Site) -> Result<History, Vec<HistoryError>> {
    let mut errors = Vec::new();
    let mut rows: BTreeMap<DateTime<Utc>, HistoryRow> = BTreeMap::new();
    let mut ignored = Vec::new();
    for (name, text) in files {
        let err = |line: usize, column: usize, message: String| HistoryError {
            file: name.clone(),
            line,
            column,
            message,
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let Some((_, header)) = lines.next() else {
            errors.push(err(1, 1, "empty file: a header line was expected".into()));
            continue;
        };
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        if columns.len() < 2 || columns[..2] != FIXED[..2] {
            errors.push(err(
                1,
                1,
                format!(
                    "the header must start with `time,pv_watts` (found `{}`)",
                    header.chars().take(40).collect::<String>()
                ),
            ));
            continue;
        }
        // What each column holds: a fixed field, a load, or nothing (ignored).
        let mut kinds = Vec::with_capacity(columns.len());
        for (c, col) in columns.iter().enumerate() {
            if columns[..c].contains(col) {
                errors.push(err(1, c + 1, format!("column `{col}` appears twice")));
            }
            let kind = if let Some(i) = FIXED.iter().position(|f| f == col) {
                Column::Fixed(i)
            } else if site.load(col).is_some() {
                Column::Load
            } else {
                ignored.push(format!("{name}:1: `{col}`"));
                Column::Ignored
            };
            kinds.push(kind);
        }
        for (n, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != columns.len() {
                errors.push(err(
                    n,
                    1,
                    format!(
                        "{} cells where the header has {} columns",
                        cells.len(),
                        columns.len()
                    ),
                ));
                continue;
            }
            let mut row = HistoryRow {
                at: DateTime::<Utc>::MIN_UTC,
                pv_watts: None,
                soc_percent: None,
                consumption_watts: None,
                loads: BTreeMap::new(),
            };
            let mut ok = true;
            let mut col = 1;
            for ((cell, kind), name_of) in cells.iter().zip(&kinds).zip(&columns) {
                let cell = cell.trim();
                let number = || -> Result<Option<f64>, String> {
                    if cell.is_empty() {
                        return Ok(None);
                    }
                    match cell.parse::<f64>() {
                        Ok(v) if v.is_finite() => Ok(Some(v)),
                        _ => Err(format!("`{cell}` in column `{name_of}` is not a number")),
                    }
                };
                let result = match kind {
                    Column::Fixed(0) => DateTime::parse_from_rfc3339(cell)
                        .map(|t| row.at = t.with_timezone(&Utc))
                        .map_err(|e| format!("`{cell}` is not an RFC 3339 time: {e}")),
                    Column::Fixed(i) => number().and_then(|v| {
                        let bounds = match i {
                            1 => (0.0, 1e9),
                            2 => (0.0, 100.0),
                            _ => (-1e9, 1e9),
                        };
                        match v {
                            Some(v) if v < bounds.0 || v > bounds.1 => Err(format!(
                                "{v} in column `{name_of}` is outside {} to {}",
                                bounds.0, bounds.1
                            )),
                            _ => {
                                let slot = match i {
                                    1 => &mut row.pv_watts,
                                    2 => &mut row.soc_percent,
                                    _ => &mut row.consumption_watts,
                                };
                                *slot = v;
                                Ok(())
                            }
                        }
                    }),
                    Column::Load => number().and_then(|v| match v {
                        Some(v) if !(0.0..=1e7).contains(&v) => {
                            Err(format!("{v} W in column `{name_of}` is not a load's draw"))
                        }
                        Some(v) => {
                            row.loads.insert((*name_of).to_string(), v);
                            Ok(())
                        }
                        None => Ok(()),
                    }),
                    Column::Ignored => Ok(()),
                };
                if let Err(message) = result {
                    errors.push(err(n, col, message));
                    ok = false;
                }
                col += cell.len() + 1;
            }
            if ok {
                rows.insert(row.at, row);
            }
        }
    }
    if errors.is_empty() {
        Ok(History {
            rows: rows.into_values().collect(),
            ignored_columns: ignored,
        })
    } else {
        Err(errors)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    /// Index in [`FIXED`].
    Fixed(usize),
    Load,
    Ignored,
}

/// The header line for these loads.
pub fn header(loads: &[String]) -> String {
    let mut h = FIXED.join(",");
    for id in loads {
        h.push(',');
        h.push_str(id);
    }
    h
}

/// One row as a CSV line (without the line break), loads in `loads` order.
pub fn format_row(row: &HistoryRow, loads: &[String]) -> String {
    let num = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    let mut line = format!(
        "{},{},{},{}",
        row.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        num(row.pv_watts, 0),
        num(row.soc_percent, 1),
        num(row.consumption_watts, 0)
    );
    for id in loads {
        line.push(',');
        line.push_str(&num(row.loads.get(id).copied(), 0));
    }
    line
}

/// Averages the cycles of each window into a row. Pure.
#[derive(Debug, Default)]
pub struct Recorder {
    window: Option<DateTime<Utc>>,
    pv: Mean,
    soc_last: Option<f64>,
    consumption: Mean,
    loads: BTreeMap<String, Mean>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.sum += v;
            self.n += 1;
        }
    }

    fn get(self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

/// The start of the window holding `t`.
pub fn window_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = WINDOW.num_seconds();
    let start = t.timestamp() - t.timestamp().rem_euclid(secs);
    DateTime::from_timestamp(start, 0).unwrap_or(t)
}

impl Recorder {
    /// Counts one cycle's state seen at `at`; returns the previous window's row when `at`
    /// starts a new window.
    pub fn observe(&mut self, state: &StateView, at: DateTime<Utc>) -> Option<HistoryRow> {
        let window = window_of(at);
        let done = match self.window {
            Some(w) if w != window => self.take(),
            _ => None,
        };
        self.window = Some(window);
        self.pv.add(state.pv_watts);
        self.consumption.add(state.consumption_watts);
        if let Some(soc) = state.battery.as_ref().and_then(|b| b.soc_percent) {
            self.soc_last = Some(soc);
        }
        // What each load drew while it was drawing, as its device reports it: never the decision
        // (a dry run decides without switching, and a command may not have taken yet).
        for l in state.loads.iter().filter(|l| l.reported_on == Some(true)) {
            // Runs every cycle: an id is copied only the first time in a window.
            match self.loads.get_mut(&l.id) {
                Some(m) => m.add(l.measured_watts),
                None if l.measured_watts.is_some() => {
                    let mut m = Mean::default();
                    m.add(l.measured_watts);
                    self.loads.insert(l.id.clone(), m);
                }
                None => {}
            }
        }
        done
    }

    /// The current window's row so far (at shutdown), and a fresh start.
    pub fn take(&mut self) -> Option<HistoryRow> {
        let at = self.window.take()?;
        let row = HistoryRow {
            at,
            pv_watts: self.pv.get(),
            soc_percent: self.soc_last.take(),
            consumption_watts: self.consumption.get(),
            loads: std::mem::take(&mut self.loads)
                .into_iter()
                .filter_map(|(id, m)| Some((id, m.get()?)))
                .collect(),
        };
        self.pv = Mean::default();
        self.consumption = Mean::default();
        Some(row)
    }
}

/// Appends the recorded rows to the day files in a folder, off the control loop (a stalled SD
/// card must not stall the cycle, as the ledger's credits must not). Writing errors are logged
/// once (and again after a success); they never reach the control loop.
#[derive(Debug)]
pub struct HistoryWriter {
    recorder: Recorder,
    files: Arc<Mutex<DayFiles>>,
}

/// The day files and where the writing stands.
#[derive(Debug)]
struct DayFiles {
    dir: PathBuf,
    offset: Duration,
    loads: Vec<String>,
    /// The file rows go to, and the local day it is for.
    current: Option<(NaiveDate, PathBuf)>,
    /// The window of the last row in that file: a window already written (by an earlier run
    /// in the same five minutes, a dry run then a run) is not written twice.
    last_written: Option<DateTime<Utc>>,
    failing: bool,
}

impl HistoryWriter {
    /// A writer for `site`'s loads into `dir` (made when the first row is written).
    pub fn new(dir: impl Into<PathBuf>, site: &cfg::Site) -> Self {
        Self {
            recorder: Recorder::default(),
            files: Arc::new(Mutex::new(DayFiles {
                dir: dir.into(),
                offset: Duration::minutes(i64::from(site.utc_offset_minutes)),
                loads: site.loads.iter().map(|l| l.id.clone()).collect(),
                current: None,
                last_written: None,
                failing: false,
            })),
        }
    }

    /// Counts one cycle; when a window closed, its row is written on a blocking thread (here,
    /// outside a runtime).
    pub fn observe(&mut self, state: &StateView, at: DateTime<Utc>) {
        if let Some(row) = self.recorder.observe(state, at) {
            let files = Arc::clone(&self.files);
            let write = move || lock(&files).write(&row);
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(write)),
                Err(_) => write(),
            }
        }
    }

    /// Writes the window in progress, here (at shutdown).
    pub fn finish(&mut self) {
        if let Some(row) = self.recorder.take() {
            lock(&self.files).write(&row);
        }
    }
}

fn lock(m: &Mutex<DayFiles>) -> std::sync::MutexGuard<'_, DayFiles> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl DayFiles {
    fn write(&mut self, row: &HistoryRow) {
        match self.append(row) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the site history; the control goes on");
            }
            Err(_) => {}
        }
    }

    fn append(&mut self, row: &HistoryRow) -> std::io::Result<()> {
        let local = row.at + self.offset;
        let day = local.date_naive();
        let header = header(&self.loads);
        if self.current.as_ref().is_none_or(|(d, _)| *d != day) {
            std::fs::create_dir_all(&self.dir)?;
            let mut path = self.dir.join(format!("{day}.csv"));
            // A file of the same day written for other loads (the site file changed): a new
            // file beside it, named for the time, so files still sort by time.
            if first_line(&path)?.is_some_and(|h| h != header) {
                path = self
                    .dir
                    .join(format!("{}.csv", local.format("%Y-%m-%dT%H%M")));
            }
            self.last_written = last_row_time(&path)?;
            self.current = Some((day, path));
            self.prune(day);
        }
        if self.last_written.is_some_and(|last| row.at <= last) {
            tracing::debug!(at = %row.at, "history window already written by an earlier run; kept");
            return Ok(());
        }
        let Some((_, path)) = &self.current else {
            return Ok(());
        };
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut text = String::new();
        if new {
            text.push_str(&header);
            text.push('\n');
        }
        text.push_str(&format_row(row, &self.loads));
        text.push('\n');
        f.write_all(text.as_bytes())?;
        self.last_written = Some(row.at);
        Ok(())
    }

    /// Deletes the day files older than [`KEEP_DAYS`] before `today`.
    fn prune(&self, today: NaiveDate) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let Some(date) = name
                .to_str()
                .and_then(|n| n.get(..10))
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            else {
                continue;
            };
            if (today - date).num_days() > KEEP_DAYS
                && let Err(err) = std::fs::remove_file(e.path())
            {
                tracing::warn!(file = %e.path().display(), error = %err, "cannot delete old history");
            }
        }
    }
}

/// The time of a history file's last row (`None` for a missing or empty file, or a last line
/// that is not a row).
fn last_row_time(path: &Path) -> std::io::Result<Option<DateTime<Utc>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.split(',').next())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn first_line(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().next().map(str::to_owned)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a history file, or every `.csv` file of a folder (in name order, which is time order).
pub fn read(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display()))
            })?;
            Ok((p.display().to_string(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BatteryView, GridState, LoadView, SiteView};

    fn site() -> cfg::Site {
        let ports = crate::demo::Ports {
            modbus_base: 5020,
            mqtt: 1883,
        };
        crate::demo::village_config(&ports, 1.0).unwrap().site
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn rows_of_all_files_come_in_time_order_with_unknowns_empty() {
        let h = parse(
            &files(&[
                (
                    "b.csv",
                    "time,pv_watts,soc_percent,clinic_fridge,old_load\n\
                     2026-11-23T00:10:00Z,0,40.5,,7\n",
                ),
                (
                    "a.csv",
                    "time,pv_watts,cold_room\n\
                     2026-11-23T00:05:00Z,12.5,600\n\
                     2026-11-23T00:00:00Z,,\n",
                ),
            ]),
            &site(),
        )
        .unwrap();
        let at: Vec<_> = h.rows.iter().map(|r| r.at).collect();
        assert_eq!(
            at,
            [
                t("2026-11-23T00:00:00Z"),
                t("2026-11-23T00:05:00Z"),
                t("2026-11-23T00:10:00Z")
            ]
        );
        assert_eq!(h.rows[0].pv_watts, None);
        assert_eq!(h.rows[1].pv_watts, Some(12.5));
        assert_eq!(h.rows[1].loads["cold_room"], 600.0);
        assert_eq!(h.rows[2].soc_percent, Some(40.5));
        assert!(h.rows[2].loads.is_empty(), "{:?}", h.rows[2].loads);
        assert_eq!(h.ignored_columns, ["b.csv:1: `old_load`"]);
        // A row stands for its window and, when the next is missing, a little after.
        let hold = Duration::minutes(30);
        assert_eq!(
            h.at(t("2026-11-23T00:07:00Z"), hold).unwrap().at,
            h.rows[1].at
        );
        assert!(h.at(t("2026-11-22T23:59:00Z"), hold).is_none());
        assert!(h.at(t("2026-11-23T00:39:00Z"), hold).is_some());
        assert!(h.at(t("2026-11-23T00:41:00Z"), hold).is_none());
    }

    #[test]
    fn every_error_is_reported_with_its_file_line_and_column() {
        let text = "time,pv_watts,soc_percent,cold_room\n\
                    2026-11-23T00:00:00Z,abc,50,1\n\
                    2026-11-23T00:05:00Z,10,140,1\n\
                    yesterday,10,50,1\n\
                    2026-11-23T00:15:00Z,10\n\
                    2026-11-23T00:20:00Z,10,50,-3\n";
        let errors = parse(&files(&[("h.csv", text), ("x.csv", "pv,time\n")]), &site())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(
            errors[0].starts_with("h.csv:2:22: `abc` in column `pv_watts`"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("h.csv:3:25: 140 in column `soc_percent` is outside"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("h.csv:4:1: `yesterday` is not an RFC 3339 time"),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].starts_with("h.csv:5:1: 2 cells where the header has 4"),
            "{}",
            errors[3]
        );
        assert!(
            errors[4].starts_with("h.csv:6:28: -3 W in column `cold_room`"),
            "{}",
            errors[4]
        );
        assert!(
            errors[5].starts_with("x.csv:1:1: the header must start with `time,pv_watts`"),
            "{}",
            errors[5]
        );
        let twice = parse(
            &files(&[("d.csv", "time,pv_watts,cold_room,cold_room\n")]),
            &site(),
        )
        .unwrap_err();
        assert_eq!(
            twice[0].to_string(),
            "d.csv:1:4: column `cold_room` appears twice"
        );
    }

    fn state(pv: f64, soc: f64, fridge: Option<f64>) -> StateView {
        let load = |id: &str, on: bool, w: Option<f64>| LoadView {
            id: id.into(),
            name: id.into(),
            tier: "t".into(),
            rank: 1,
            on,
            allocated_watts: 0.0,
            measured_watts: w,
            reported_on: Some(on),
            reason: String::new(),
            fault: None,
        };
        StateView {
            time: String::new(),
            site: SiteView {
                id: "kalinzu".into(),
                name: "Kalinzu".into(),
                utc_offset_minutes: 180,
            },
            available_watts: 0.0,
            pv_watts: Some(pv),
            consumption_watts: Some(500.0),
            battery: Some(BatteryView {
                soc_percent: Some(soc),
                watts: None,
            }),
            grid_state: GridState::Tight,
            status: String::new(),
            dry_run: false,
            devices: vec![],
            tiers: vec![],
            loads: vec![
                load("clinic_fridge", fridge.is_some(), fridge.or(Some(0.0))),
                // Off: what it would draw is not known, whatever its plug says.
                load("cold_room", false, Some(3.0)),
            ],
            assembly_errors: vec![],
        }
    }

    #[test]
    fn a_window_averages_its_cycles_and_a_load_counts_only_while_on() {
        let mut r = Recorder::default();
        let t0 = t("2026-11-23T10:00:00Z");
        let mut rows = Vec::new();
        for (m, pv, fridge) in [
            (0, 100.0, Some(80.0)),
            (2, 200.0, None),
            (4, 300.0, Some(120.0)),
        ] {
            rows.extend(r.observe(
                &state(pv, 50.0 + m as f64, fridge),
                t0 + Duration::minutes(m),
            ));
        }
        assert!(rows.is_empty(), "the window is still open");
        rows.extend(r.observe(&state(1000.0, 60.0, None), t0 + Duration::minutes(5)));
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.at, t0);
        assert_eq!(row.pv_watts, Some(200.0));
        assert_eq!(row.soc_percent, Some(54.0), "the last state of charge");
        assert_eq!(row.loads.get("clinic_fridge"), Some(&100.0));
        assert_eq!(row.loads.get("cold_room"), None);
        let last = r.take().unwrap();
        assert_eq!(
            (last.at, last.pv_watts),
            (t0 + Duration::minutes(5), Some(1000.0))
        );
    }

    #[test]
    fn the_writer_keeps_a_file_per_local_day_that_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let site = site(); // UTC+3
        let mut w = HistoryWriter::new(dir.path(), &site);
        // 20:50 to 21:10 UTC: local midnight falls at 21:00.
        let t0 = t("2026-11-23T20:50:00Z");
        for m in 0..=20 {
            w.observe(
                &state(0.0, 80.0 - f64::from(m) / 10.0, Some(90.0)),
                t0 + Duration::minutes(i64::from(m)),
            );
        }
        w.finish();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["2026-11-23.csv", "2026-11-24.csv"]);
        let h = parse(&read(dir.path()).unwrap(), &site).unwrap();
        assert_eq!(h.rows.len(), 5);
        assert_eq!(h.rows[0].at, t0);
        assert_eq!(h.rows[2].at, t("2026-11-23T21:00:00Z"));
        assert_eq!(h.rows[0].soc_percent, Some(79.6));
        assert_eq!(h.rows[0].loads["clinic_fridge"], 90.0);
        assert!(h.ignored_columns.is_empty());

        // The site's loads changed: the same day goes on in a file of its own.
        let mut smaller = site.clone();
        smaller.loads.truncate(3);
        let mut w = HistoryWriter::new(dir.path(), &smaller);
        let t1 = t("2026-11-24T06:00:00Z");
        w.observe(&state(500.0, 60.0, None), t1);
        w.finish();
        assert!(dir.path().join("2026-11-24T0900.csv").exists());
        assert_eq!(
            parse(&read(dir.path()).unwrap(), &site).unwrap().rows.len(),
            6
        );

        // Files older than KEEP_DAYS go when a new day starts.
        std::fs::write(dir.path().join("2026-10-01.csv"), "time,pv_watts\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "kept").unwrap();
        let mut w = HistoryWriter::new(dir.path(), &site);
        w.observe(&state(500.0, 60.0, None), t("2026-11-25T06:00:00Z"));
        w.finish();
        assert!(!dir.path().join("2026-10-01.csv").exists());
        assert!(dir.path().join("notes.txt").exists());
        assert!(dir.path().join("2026-11-23.csv").exists());
    }

    #[test]
    fn a_dry_run_records_what_loads_drew_not_what_was_decided() {
        // A dry run decides the fridge off and the laundry on, and switches neither: the
        // fridge goes on drawing 90 W, the laundry stays off. The history says so.
        let mut r = Recorder::default();
        let t0 = t("2026-11-23T10:00:00Z");
        let mut s = state(500.0, 60.0, Some(90.0));
        for l in &mut s.loads {
            if l.id == "clinic_fridge" {
                l.on = false;
                l.reported_on = Some(true);
            }
        }
        s.loads.push(LoadView {
            id: "laundry".into(),
            name: "laundry".into(),
            tier: "t".into(),
            rank: 6,
            on: true,
            allocated_watts: 4500.0,
            measured_watts: Some(0.0),
            reported_on: Some(false),
            reason: String::new(),
            fault: None,
        });
        r.observe(&s, t0);
        let row = r.take().unwrap();
        assert_eq!(row.loads.get("clinic_fridge"), Some(&90.0));
        assert_eq!(row.loads.get("laundry"), None);
    }

    #[test]
    fn a_second_run_in_the_same_five_minutes_writes_no_second_row_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let site = site();
        let t0 = t("2026-11-23T10:01:00Z");
        // A dry run stopped at 10:01, then a run started at 10:03: one row for 10:00.
        let mut first = HistoryWriter::new(dir.path(), &site);
        first.observe(&state(500.0, 60.0, Some(90.0)), t0);
        first.finish();
        let mut second = HistoryWriter::new(dir.path(), &site);
        second.observe(&state(700.0, 61.0, Some(90.0)), t0 + Duration::minutes(2));
        second.observe(&state(800.0, 62.0, Some(90.0)), t0 + Duration::minutes(5));
        second.finish();
        let h = parse(&read(dir.path()).unwrap(), &site).unwrap();
        let times: Vec<_> = h.rows.iter().map(|r| r.at).collect();
        assert_eq!(
            times,
            vec![t("2026-11-23T10:00:00Z"), t("2026-11-23T10:05:00Z")]
        );
        assert_eq!(h.rows[0].pv_watts, Some(500.0));
    }

    #[test]
    fn a_folder_that_cannot_be_written_does_not_stop_the_recording() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("file-not-folder");
        std::fs::write(&blocked, "").unwrap();
        let mut w = HistoryWriter::new(&blocked, &site());
        let t0 = t("2026-11-23T10:00:00Z");
        for m in 0..12 {
            w.observe(&state(1.0, 50.0, None), t0 + Duration::minutes(m));
        }
        w.finish();
        assert!(lock(&w.files).failing);
    }
}
