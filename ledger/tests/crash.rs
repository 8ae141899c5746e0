//! Kill -9 harness: a writer process (this test binary, re-executed in writer mode) appends
//! entries to an SQLite ledger and prints each acknowledged position; it is killed with SIGKILL
//! at random moments; every acknowledged entry must then be present, the log must verify, the
//! books must balance and the cache must equal a replay. Several rounds on the same file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use communalia_ledger::fixtures::Village;
use communalia_ledger::{Body, Day, Hash, Ledger, MeterKind, Params, SqliteStore, verify};

const SITE: &str = "crash-village";
const MEMBERS: usize = 6;
const WRITER_ENV: &str = "COMMUNALIA_LEDGER_CRASH_WRITER";

/// Writer mode: does nothing unless the environment names a file.
#[test]
fn crash_writer_mode() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let store = SqliteStore::open(&path).unwrap();
    let day0 = Day::parse("2026-01-01").unwrap();
    let (mut l, v) = if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > 0
        && Ledger::open(SqliteStore::open(&path).unwrap(), SITE)
            .map(|l| !l.log().is_empty())
            .unwrap_or(false)
    {
        (
            Ledger::open(store, SITE).unwrap(),
            Village::keys(SITE, MEMBERS),
        )
    } else {
        Village::found(store, SITE, MEMBERS, Params::default(), day0).unwrap()
    };
    let out = std::io::stdout();
    let ack = |r: communalia_ledger::Receipt| {
        let mut o = out.lock();
        writeln!(o, "ack {}", r.index).unwrap();
        o.flush().unwrap();
    };
    let mut day = l.today().unwrap();
    loop {
        day = day.plus(1).unwrap();
        ack(l
            .sign_and_append(&v.controller, day, Body::DemurrageEpoch)
            .unwrap());
        for i in 0..MEMBERS {
            ack(l
                .credit_meter(
                    &v.controller,
                    Village::member(i),
                    MeterKind::Shifted,
                    1_000,
                    day,
                )
                .unwrap());
        }
        let c = l
            .sign_and_append(
                &v.members[0],
                day,
                Body::Claim {
                    beneficiary: Village::member(0),
                    minutes: 15,
                    description: "swept the panels".into(),
                    evidence: Hash::ZERO,
                },
            )
            .unwrap();
        let claim = c.id;
        ack(c);
        for a in 1..=3 {
            ack(l
                .sign_and_append(&v.members[a], day, Body::Attest { claim })
                .unwrap());
        }
    }
}

/// A small deterministic generator for kill moments (no extra crates).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn acknowledged_entries_survive_sigkill_at_random_moments() {
    if std::env::var(WRITER_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7)
        | 1;
    let mut rng = XorShift(seed);
    let mut last_acked = 0_u64;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_writer_mode",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(Ok(n)) = line.strip_prefix("ack ").map(|n| n.trim().parse::<u64>()) {
                    let _ = tx.send(n);
                }
            }
        });
        // Wait until the writer is really writing, then kill it after a random delay.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("writer never acknowledged");
        assert!(
            first > last_acked,
            "round {round}: writer restarted below {last_acked}"
        );
        let delay = Duration::from_millis(50 + rng.next(400));
        let until = Instant::now() + delay;
        let mut acked = first;
        while let Ok(n) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            acked = acked.max(n);
            if Instant::now() >= until {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Acknowledgements printed before the kill but not yet read still count.
        while let Ok(n) = rx.try_recv() {
            acked = acked.max(n);
        }
        let store = SqliteStore::open(&path).unwrap();
        let report = verify(&store, SITE).unwrap();
        assert!(
            report.ok(),
            "round {round} (seed {seed}): {:?}",
            report.problems
        );
        let l = Ledger::open(store, SITE).unwrap();
        assert!(
            l.log().len() as u64 >= acked,
            "round {round} (seed {seed}): acknowledged {acked}, found {}",
            l.log().len()
        );
        let (held, net) = l.state().books().unwrap().conservation();
        assert_eq!(held, net, "round {round}: conservation");
        last_acked = acked;
    }
    // Founding the village takes 10 entries; every round then acknowledged more.
    assert!(
        last_acked > 10,
        "the writer hardly wrote ({last_acked} entries)"
    );
}
