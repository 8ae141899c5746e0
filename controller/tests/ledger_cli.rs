//! `communalia ledger` as a user runs it, over a temporary directory: keys, init, admission by
//! quorum, a claim attested into posting, a transfer, balances, history, verify, demurrage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn communalia(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_communalia"))
        .current_dir(dir)
        .arg("ledger")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = communalia(dir, args);
    assert_eq!(code, 0, "{args:?}\nstdout: {out}\nstderr: {err}");
    out
}

#[test]
fn demurrage_prints_the_golden_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["demurrage", "100", "--days", "365"]);
    assert!(out.contains(": 94.000 C"), "{out}");
    let out = ok(
        dir.path(),
        &["demurrage", "1", "--days", "365", "--rate", "6"],
    );
    assert!(out.contains(": 0.940 C"), "{out}");
    let (code, _, err) = communalia(dir.path(), &["demurrage", "1.2345", "--days", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("at most 3 decimals"), "{err}");
}

#[test]
fn a_village_runs_from_keygen_to_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["founder", "steward", "ana", "ben", "cleo", "dan"] {
        ok(d, &["keygen", "--out", &format!("{k}.key")]);
    }
    // Keygen refuses to overwrite a key.
    assert_eq!(communalia(d, &["keygen", "--out", "ana.key"]).0, 1);
    let date = ["--date", "2026-04-01"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(date.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>| ok(d, &args.iter().map(String::as_str).collect::<Vec<_>>());
    run(with(&[
        "init",
        "--site",
        "cli-village",
        "--name",
        "founder",
        "--key",
        "founder.key",
    ]));
    // Alone, the founder is the quorum.
    run(with(&[
        "admit",
        "--public",
        "steward.key.pub",
        "--name",
        "sam",
        "--role",
        "steward",
        "--key",
        "founder.key",
    ]));
    // Now two stewards are needed.
    let (code, _, err) = communalia(
        d,
        &with(&[
            "admit",
            "--public",
            "ana.key.pub",
            "--name",
            "ana",
            "--key",
            "founder.key",
        ])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("needs 2 steward signatures"), "{err}");
    for m in ["ana", "ben", "cleo", "dan"] {
        run(with(&[
            "admit",
            "--public",
            &format!("{m}.key.pub"),
            "--name",
            m,
            "--key",
            "founder.key",
            "--cosign",
            "steward.key",
        ]));
    }
    let out = run(with(&[
        "claim",
        "--key",
        "ana.key",
        "--minutes",
        "120",
        "--description",
        "repaired the pump",
    ]));
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(id.len(), 64, "{out}");
    // Self-attestation is refused with the reason.
    let (code, _, err) = communalia(
        d,
        &with(&["attest", &id, "--key", "ana.key"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("self-attestation"), "{err}");
    run(with(&["attest", &id, "--key", "ben.key"]));
    run(with(&["attest", &id, "--key", "cleo.key"]));
    let out = run(with(&["attest", &id, "--key", "dan.key"]));
    assert!(out.contains("posted: 20.000 C"), "{out}");
    run(with(&[
        "transfer", "5.5", "--to", "ben", "--key", "ana.key", "--memo", "thanks",
    ]));
    let out = ok(d, &["balance", "--member", "ana"]);
    assert!(out.contains("14.500 C"), "{out}");
    let out = ok(d, &["balance", "--as-of", "2027-04-01"]);
    assert!(out.contains("as of 2027-04-01"), "{out}");
    assert!(out.contains("13.630 C"), "ana's 14.5 C a year later: {out}");
    let out = ok(d, &["history", "--member", "ben"]);
    assert!(out.contains("transfer 5.500 C to #3 ben"), "{out}");
    let out = ok(d, &["verify"]);
    assert!(out.starts_with("ok: 11 entries"), "{out}");
    // Overdrawing is refused and says why.
    let (code, _, err) = communalia(
        d,
        &with(&["transfer", "100", "--to", "ben", "--key", "ana.key"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("credit limit"), "{err}");
    // Someone edits ana's cached balance behind the ledger's back: verify says where.
    let store = communalia_ledger::SqliteStore::open(&d.join("ledger.sqlite")).unwrap();
    store
        .connection()
        .execute("UPDATE accounts SET balance = 99000 WHERE member = 2", [])
        .unwrap();
    drop(store);
    let (code, out, _) = communalia(d, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("member #2: cached 99.000 C"), "{out}");
    let (code, _, err) = communalia(d, &["balance"]);
    assert_eq!(code, 1);
    assert!(err.contains("cached balances do not match"), "{err}");
}

#[test]
fn verify_on_a_missing_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = communalia(dir.path(), &["balance"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
}
