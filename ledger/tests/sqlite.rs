//! The SQLite store: durability settings, append-only triggers, the balance cache checked
//! against a replay, and `verify` pointing at what is wrong where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use communalia_ledger::fixtures::Village;
use communalia_ledger::{Day, Ledger, LedgerError, Params, SqliteStore, verify};

const SITE: &str = "village-a";

fn day0() -> Day {
    Day::parse("2026-03-01").unwrap()
}

fn filled(path: &std::path::Path, entries: u64) -> Ledger<SqliteStore> {
    let store = SqliteStore::open(path).unwrap();
    let (mut l, v) = Village::found(store, SITE, 6, Params::default(), day0()).unwrap();
    v.traffic(&mut l, entries, day0()).unwrap();
    l
}

#[test]
fn the_file_uses_wal_and_full_synchronous_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("l.sqlite")).unwrap();
    let c = store.connection();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous=FULL");
}

#[test]
fn updates_and_deletes_of_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l = filled(&dir.path().join("l.sqlite"), 40);
    let c = l.store().connection();
    let e = c
        .execute("UPDATE entries SET bytes = x'00' WHERE idx = 3", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let e = c
        .execute("DELETE FROM entries WHERE idx = 40", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 40);
}

#[test]
fn reopening_replays_to_the_same_books() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let l = filled(&path, 300);
    let (head, balances) = (l.head(), l.balances(None).unwrap());
    drop(l);
    let again = Ledger::open(SqliteStore::open(&path).unwrap(), SITE).unwrap();
    assert_eq!(again.head(), head);
    assert_eq!(again.balances(None).unwrap(), balances);
    let report = verify(again.store(), SITE).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.valid_entries, 300);
}

#[test]
fn a_tampered_balance_cache_is_caught_at_open_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    drop(filled(&path, 120));
    let store = SqliteStore::open(&path).unwrap();
    store
        .connection()
        .execute(
            "UPDATE accounts SET balance = balance + 1000 WHERE member = 5",
            [],
        )
        .unwrap();
    let report = verify(&store, SITE).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("member #5: cached"),
        "{:?}",
        report.problems
    );
    let e = Ledger::open(store, SITE).unwrap_err();
    assert!(matches!(e, LedgerError::CacheMismatch(_)), "{e}");
}

#[test]
fn a_tampered_entry_is_located_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    drop(filled(&path, 120));
    let store = SqliteStore::open(&path).unwrap();
    let c = store.connection();
    // Someone with file access drops the trigger and edits an entry's amount byte.
    c.execute_batch("DROP TRIGGER entries_no_update").unwrap();
    let bytes: Vec<u8> = c
        .query_row("SELECT bytes FROM entries WHERE idx = 77", [], |r| r.get(0))
        .unwrap();
    let mut bad = bytes.clone();
    let at = bytes.len() - 70;
    bad[at] ^= 1;
    c.execute("UPDATE entries SET bytes = ?1 WHERE idx = 77", [&bad])
        .unwrap();
    let report = verify(&store, SITE).unwrap();
    assert_eq!(report.valid_entries, 76);
    assert!(
        report.problems[0].starts_with("log entry 77"),
        "{:?}",
        report.problems
    );
    assert!(Ledger::open(store, SITE).is_err());
}

#[test]
fn a_removed_chain_link_is_located_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    drop(filled(&path, 60));
    let store = SqliteStore::open(&path).unwrap();
    let c = store.connection();
    c.execute_batch("DROP TRIGGER entries_no_delete").unwrap();
    c.execute("DELETE FROM entries WHERE idx = 30", []).unwrap();
    let report = verify(&store, SITE).unwrap();
    assert_eq!(report.valid_entries, 29);
    assert!(
        report.problems[0].contains("log entry 30"),
        "{:?}",
        report.problems
    );
}
