//! `communalia bench ledger`: durable appends per second on an SQLite file, and a full
//! verification (every signature, chain link and balance from genesis) of a large log.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use communalia_ledger::fixtures::Village;
use communalia_ledger::{Day, Ledger, MemStore, Params, SqliteStore, verify};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Entries in the log that is verified in full.
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Durable appends to time.
    #[arg(long, default_value_t = 500)]
    appends: u64,
    /// Members of the synthetic village.
    #[arg(long, default_value_t = 40)]
    members: usize,
}

#[derive(Serialize)]
struct Report {
    members: usize,
    durable_appends: u64,
    durable_appends_per_sec: f64,
    durable_append_ms_mean: f64,
    verify_entries: u64,
    verify_ms: f64,
    /// CPU time of the verifying thread (one core), when the OS reports it.
    verify_cpu_ms: Option<f64>,
    verify_entries_per_sec: f64,
    open_with_cache_check_ms: f64,
    build_log_ms: f64,
}

const SITE: &str = "bench-village";

/// CPU time this thread has run, from Linux's scheduler statistics (wall time misleads on a
/// shared machine); `None` where unavailable.
fn thread_cpu_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.members >= 4, "--members must be at least 4");
    let start_day = Day::from_ymd(2026, 1, 1).context("start day")?;

    // Durable appends on a real file, one transaction (fsync) each.
    let dir = std::env::temp_dir().join(format!("communalia-bench-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("ledger.sqlite");
    let result = (|| -> anyhow::Result<(u64, f64)> {
        let store = SqliteStore::open(&path)?;
        let (mut l, v) = Village::found(store, SITE, args.members, Params::default(), start_day)?;
        let before = l.log().len() as u64;
        let t = Instant::now();
        v.traffic(&mut l, before + args.appends, start_day)?;
        let secs = t.elapsed().as_secs_f64();
        Ok((l.log().len() as u64 - before, secs))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let (appended, append_secs) = result.context("durable appends")?;

    // A large log in memory, then a full verification of it.
    let t = Instant::now();
    let (mut l, v) = Village::found(
        MemStore::default(),
        SITE,
        args.members,
        Params::default(),
        start_day,
    )?;
    v.traffic(&mut l, args.entries, start_day)?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let store = l.store().clone();
    drop(l);
    let t = Instant::now();
    let cpu0 = thread_cpu_secs();
    let report = verify(&store, SITE)?;
    let verify_secs = t.elapsed().as_secs_f64();
    let verify_cpu_ms = cpu0.zip(thread_cpu_secs()).map(|(a, b)| (b - a) * 1e3);
    anyhow::ensure!(
        report.ok(),
        "the benchmark log did not verify: {:?}",
        report.problems
    );
    let t = Instant::now();
    let opened = Ledger::open(store, SITE)?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let n = opened.log().len() as u64;

    let r = Report {
        members: args.members,
        durable_appends: appended,
        durable_appends_per_sec: appended as f64 / append_secs.max(1e-9),
        durable_append_ms_mean: append_secs * 1e3 / appended.max(1) as f64,
        verify_entries: n,
        verify_ms: verify_secs * 1e3,
        verify_cpu_ms,
        verify_entries_per_sec: n as f64 / verify_secs.max(1e-9),
        open_with_cache_check_ms: open_ms,
        build_log_ms: build_ms,
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("ledger ({} members)", r.members);
        println!(
            "  durable appends (SQLite WAL, synchronous=FULL, one transaction each): {} in {:.0} ms = {:.0}/s ({:.2} ms each)",
            r.durable_appends,
            append_secs * 1e3,
            r.durable_appends_per_sec,
            r.durable_append_ms_mean
        );
        println!(
            "  full verification from genesis (signatures, chains, rules, balances): {} entries in {:.0} ms = {:.0} entries/s (target: 100000 under 3000 ms)",
            r.verify_entries, r.verify_ms, r.verify_entries_per_sec
        );
        if let Some(cpu) = r.verify_cpu_ms {
            println!("  of which CPU time on one core: {cpu:.0} ms");
        }
        println!(
            "  open with replay and cache check: {:.0} ms; building the log took {:.0} ms",
            r.open_with_cache_check_ms, r.build_log_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}
