//! `communalia ledger` as a user runs it, over a temporary directory: keys, init, admission by
//! quorum, a claim attested into posting, a transfer, balances, history, verify, demurrage; and
//! for stewards: revocation and key rotation, the community pool, parameter changes, balances and
//! parameters on a past day.
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

// ---------------------------------------------------------------- stewards

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Refused with exit code 1; returns stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = communalia(dir, args);
    assert_eq!(
        code, 1,
        "{args:?} should fail\nstdout: {out}\nstderr: {err}"
    );
    err
}

/// A village on 2026-04-01: founder and sam (stewards), ana, ben, cleo, dan (members); ana
/// has 100 C from an attested claim.
fn village(d: &Path) {
    for k in ["founder", "sam", "ana", "ben", "cleo", "dan", "ana2"] {
        ok(d, &["keygen", "--out", &format!("{k}.key")]);
    }
    let date = "2026-04-01";
    ok(
        d,
        &[
            "init",
            "--site",
            "more",
            "--name",
            "founder",
            "--key",
            "founder.key",
            "--date",
            date,
        ],
    );
    ok(
        d,
        &[
            "admit",
            "--public",
            "sam.key.pub",
            "--name",
            "sam",
            "--role",
            "steward",
            "--key",
            "founder.key",
            "--date",
            date,
        ],
    );
    for m in ["ana", "ben", "cleo", "dan"] {
        ok(
            d,
            &[
                "admit",
                "--public",
                &format!("{m}.key.pub"),
                "--name",
                m,
                "--key",
                "founder.key",
                "--cosign",
                "sam.key",
                "--date",
                date,
            ],
        );
    }
    let out = ok(
        d,
        &[
            "claim",
            "--key",
            "ana.key",
            "--minutes",
            "600",
            "--description",
            "rebuilt the inverter shed",
            "--date",
            date,
        ],
    );
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    for m in ["ben", "cleo", "dan"] {
        ok(
            d,
            &["attest", &id, "--key", &format!("{m}.key"), "--date", date],
        );
    }
}

#[test]
fn revocation_needs_a_quorum_and_stops_the_member_signing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    village(d);
    let revoke = |extra: &[&str]| -> Vec<String> {
        [
            "revoke",
            "dan",
            "--reason",
            "moved away",
            "--key",
            "founder.key",
        ]
        .iter()
        .chain(extra)
        .chain(["--date", "2026-04-02"].iter())
        .map(|s| s.to_string())
        .collect()
    };
    let alone = revoke(&[]);
    let err = refused(d, &args(&alone));
    // Said once, not repeated by the error chain.
    assert_eq!(
        err.matches("needs 2 steward signatures").count(),
        1,
        "{err}"
    );
    // A member's key does not make a quorum.
    let with_member = revoke(&["--cosign", "ana.key"]);
    let err = refused(d, &args(&with_member));
    assert!(err.contains("not an active steward"), "{err}");
    // An unknown member is named.
    let err = refused(
        d,
        &[
            "revoke",
            "nobody",
            "--reason",
            "x",
            "--key",
            "founder.key",
            "--cosign",
            "sam.key",
        ],
    );
    assert!(err.contains("no member named \"nobody\""), "{err}");
    let quorum = revoke(&["--cosign", "sam.key"]);
    let out = ok(d, &args(&quorum));
    assert!(out.contains("revoked #5 dan"), "{out}");
    let out = ok(d, &["balance", "--member", "dan"]);
    assert!(out.contains("(revoked)"), "{out}");
    // Dan can no longer sign, and nobody can pay him.
    let err = refused(
        d,
        &[
            "transfer",
            "1",
            "--to",
            "ana",
            "--key",
            "dan.key",
            "--date",
            "2026-04-02",
        ],
    );
    assert!(err.contains("revoked"), "{err}");
    let err = refused(
        d,
        &[
            "transfer",
            "1",
            "--to",
            "dan",
            "--key",
            "ana.key",
            "--date",
            "2026-04-02",
        ],
    );
    assert!(err.contains("member #5 has been revoked"), "{err}");
    // Revoking twice is refused with the reason.
    let err = refused(d, &args(&quorum));
    assert!(err.contains("has been revoked"), "{err}");
    assert!(ok(d, &["verify"]).starts_with("ok: "));
}

#[test]
fn a_rotated_key_takes_over_and_the_old_one_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    village(d);
    let err = refused(
        d,
        &["rotate-key", "--new-public", "nope", "--key", "ana.key"],
    );
    assert!(
        err.contains("neither 64 hex digits nor a readable key file"),
        "{err}"
    );
    // Someone else's key cannot be taken over.
    let err = refused(
        d,
        &[
            "rotate-key",
            "--new-public",
            "ben.key.pub",
            "--key",
            "ana.key",
            "--date",
            "2026-04-02",
        ],
    );
    assert!(err.contains("already belongs to a member"), "{err}");
    let out = ok(
        d,
        &[
            "rotate-key",
            "--new-public",
            "ana2.key.pub",
            "--key",
            "ana.key",
            "--date",
            "2026-04-02",
        ],
    );
    assert!(out.contains("#2 ana now signs with key"), "{out}");
    let err = refused(
        d,
        &[
            "transfer",
            "1",
            "--to",
            "ben",
            "--key",
            "ana.key",
            "--date",
            "2026-04-02",
        ],
    );
    assert!(err.contains("not the current key of any member"), "{err}");
    let out = ok(
        d,
        &[
            "transfer",
            "1",
            "--to",
            "ben",
            "--key",
            "ana2.key",
            "--date",
            "2026-04-02",
        ],
    );
    assert!(out.contains("transferred 1.000 C to #3"), "{out}");
    assert!(ok(d, &["verify"]).starts_with("ok: "));
}

#[test]
fn the_pool_pays_out_by_quorum_citing_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    village(d);
    // A year of demurrage on ana's 100 C fills the pool with 6 C.
    let out = ok(d, &["pool", "show", "--as-of", "2027-04-01"]);
    assert!(
        out.contains("community pool as of 2027-04-01: 6.000 C"),
        "{out}"
    );
    let pay = |amount: &str, decision: &str, cosign: &[&str]| -> (i32, String, String) {
        let mut a = vec![
            "pool",
            "pay",
            amount,
            "--to",
            "ben",
            "--decision",
            decision,
            "--key",
            "founder.key",
            "--date",
            "2027-04-01",
        ];
        a.extend_from_slice(cosign);
        communalia(d, &a)
    };
    let (code, _, err) = pay("2", "assembly 2027-03-30 item 2", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("needs 2 steward signatures"), "{err}");
    let (code, _, err) = pay("7", "assembly 2027-03-30 item 2", &["--cosign", "sam.key"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the pool holds 6.000 C, less than 7.000 C"),
        "{err}"
    );
    let (code, _, err) = pay("2", " ", &["--cosign", "sam.key"]);
    assert_eq!(code, 1);
    assert!(err.contains("decision: must not be empty"), "{err}");
    let (code, _, err) = pay("two", "assembly", &["--cosign", "sam.key"]);
    assert_eq!(code, 1);
    assert!(err.contains("two"), "{err}");
    let (code, out, err) = pay("2", "assembly 2027-03-30 item 2", &["--cosign", "sam.key"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("paid 2.000 C from the pool to #3 ben; the pool holds 4.000 C"),
        "{out}"
    );
    let out = ok(
        d,
        &[
            "pool",
            "expire",
            "0.5",
            "--decision",
            "assembly 2027-03-30 item 3",
            "--key",
            "sam.key",
            "--cosign",
            "founder.key",
            "--date",
            "2027-04-01",
        ],
    );
    assert!(
        out.contains("retired 0.500 C from the pool for good; it holds 3.500 C"),
        "{out}"
    );
    let out = ok(d, &["pool", "show"]);
    assert!(
        out.contains("community pool as of 2027-04-01: 3.500 C"),
        "{out}"
    );
    assert!(out.contains("issued 100.000 C, expired 0.500 C"), "{out}");
    assert!(
        out.contains("paid 2.000 C to #3 ben (assembly 2027-03-30 item 2)"),
        "{out}"
    );
    assert!(
        out.contains("retired 0.500 C (assembly 2027-03-30 item 3)"),
        "{out}"
    );
    let out = ok(d, &["balance", "--member", "ben"]);
    assert!(out.contains("2.000 C"), "{out}");
    assert!(ok(d, &["verify"]).starts_with("ok: "));
}

#[test]
fn parameters_change_from_a_future_day_by_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    village(d);
    let out = ok(d, &["params", "show"]);
    assert!(out.contains("6.000 %/yr (169507 ppb a day)"), "{out}");
    assert!(out.contains("ceiling              500.000 C"), "{out}");
    let change = |extra: &[&str]| -> (i32, String, String) {
        let mut a = vec![
            "params",
            "change",
            "--decision",
            "assembly 2026-04-01 item 1",
            "--key",
            "founder.key",
            "--cosign",
            "sam.key",
            "--date",
            "2026-04-02",
        ];
        a.extend_from_slice(extra);
        communalia(d, &a)
    };
    let (code, _, err) = change(&["--effective", "2026-05-01"]);
    assert_eq!(code, 1);
    assert!(err.contains("no parameter would change"), "{err}");
    let (code, _, err) = change(&["--effective", "2026-04-02", "--ceiling", "400"]);
    assert_eq!(code, 1);
    assert!(err.contains("must take effect after its date"), "{err}");
    let (code, _, err) = change(&["--effective", "2026-05-01", "--attestations", "0"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("attestations_needed: 0 must be from 1 to 64"),
        "{err}"
    );
    let (code, _, err) = change(&["--effective", "2026-13-01", "--ceiling", "400"]);
    assert_eq!(code, 1);
    assert!(err.contains("--effective"), "{err}");
    let (code, out, err) = change(&[
        "--effective",
        "2026-05-01",
        "--ceiling",
        "80",
        "--rate",
        "5",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ceiling              500.000 C -> 80.000 C"),
        "{out}"
    );
    assert!(out.contains("-> 5.000 %/yr"), "{out}");
    let out = ok(d, &["params", "show"]);
    assert!(out.contains("changing from 2026-05-01:"), "{out}");
    let out = ok(d, &["params", "show", "--as-of", "2026-05-01"]);
    assert!(out.contains("ceiling              80.000 C"), "{out}");
    // The lower ceiling sends what ana holds above it to the pool on that day.
    let out = ok(d, &["balance", "--member", "ana", "--as-of", "2026-05-01"]);
    assert!(out.contains("80.000 C"), "{out}");
    assert!(ok(d, &["verify"]).starts_with("ok: "));
}

#[test]
fn balance_on_a_past_day_replays_the_log_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    village(d);
    ok(
        d,
        &[
            "transfer",
            "30",
            "--to",
            "ben",
            "--key",
            "ana.key",
            "--date",
            "2026-04-11",
        ],
    );
    // By hand: 100 C at 169 507 ppb a day with the carry loses 16 m on day 1 and 17 m on each
    // of the next nine: 99.831 C after ten days, then 30 C to ben.
    let out = ok(d, &["balance", "--as-of", "2026-04-11"]);
    assert!(out.contains("balances as of 2026-04-11"), "{out}");
    assert!(out.contains("69.831 C"), "{out}");
    assert!(out.contains("30.000 C"), "{out}");
    let out = ok(d, &["balance", "--member", "ana", "--as-of", "2026-04-06"]);
    assert!(out.contains("99.916 C"), "{out}");
    let err = refused(d, &["balance", "--as-of", "2026-03-31"]);
    assert!(
        err.contains("before the ledger began on 2026-04-01"),
        "{err}"
    );
}

#[test]
fn parameters_shown_for_a_past_day_are_those_in_effect_then() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    village(d);
    ok(
        d,
        &[
            "params",
            "change",
            "--effective",
            "2026-05-01",
            "--ceiling",
            "80",
            "--rate",
            "5",
            "--decision",
            "assembly 2026-04-01 item 2",
            "--key",
            "founder.key",
            "--cosign",
            "sam.key",
            "--date",
            "2026-04-02",
        ],
    );
    // The log moves past the change.
    ok(
        d,
        &[
            "transfer",
            "10",
            "--to",
            "ben",
            "--key",
            "ana.key",
            "--date",
            "2026-05-10",
        ],
    );
    let now = ok(d, &["params", "show"]);
    assert!(now.contains("ceiling              80.000 C"), "{now}");
    assert!(!now.contains("changing from"), "{now}");
    let out = ok(d, &["params", "show", "--as-of", "2026-04-15"]);
    assert!(out.contains("parameters in effect on 2026-04-15"), "{out}");
    assert!(out.contains("6.000 %/yr (169507 ppb a day)"), "{out}");
    assert!(out.contains("ceiling              500.000 C"), "{out}");
    assert!(out.contains("changing from 2026-05-01:"), "{out}");
    assert!(out.contains("500.000 C -> 80.000 C"), "{out}");
    let out = ok(d, &["params", "show", "--as-of", "2026-05-01"]);
    assert!(out.contains("ceiling              80.000 C"), "{out}");
    assert!(out.contains("5.000 %/yr"), "{out}");
    // Before the change was decided, nothing was to come.
    let out = ok(d, &["params", "show", "--as-of", "2026-04-01"]);
    assert!(out.contains("ceiling              500.000 C"), "{out}");
    assert!(!out.contains("changing from"), "{out}");
    let err = refused(d, &["params", "show", "--as-of", "2026-03-31"]);
    assert!(
        err.contains("before the ledger began on 2026-04-01"),
        "{err}"
    );
}
