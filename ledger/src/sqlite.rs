//! The SQLite store: WAL journal, `synchronous=FULL`, one transaction per append, and triggers
//! that refuse UPDATE and DELETE on the entries.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::entry::Hash;
use crate::state::Account;
use crate::store::{Record, Snapshot, Store, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    idx      INTEGER PRIMARY KEY,
    bytes    BLOB NOT NULL,
    log_hash BLOB NOT NULL UNIQUE
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: DELETE refused'); END;
CREATE TABLE IF NOT EXISTS accounts (
    member  INTEGER PRIMARY KEY,
    balance INTEGER NOT NULL,
    carry   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS totals (
    k       INTEGER PRIMARY KEY CHECK (k = 0),
    entries INTEGER NOT NULL,
    head    BLOB NOT NULL,
    pool    INTEGER NOT NULL,
    issued  INTEGER NOT NULL,
    expired INTEGER NOT NULL
);
";

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A ledger file.
pub struct SqliteStore {
    conn: Connection,
    /// What the cache tables hold, to write only changed accounts.
    written: Option<Snapshot>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) a ledger file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{}: could not switch to WAL journal (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let mut store = SqliteStore {
            conn,
            written: None,
        };
        store.written = store.snapshot()?;
        Ok(store)
    }

    /// The underlying connection (tests use it to try tampering).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn hash_from(v: Vec<u8>, what: &str) -> Result<Hash, StoreError> {
    <[u8; 32]>::try_from(v)
        .map(Hash)
        .map_err(|_| StoreError::Backend(format!("{what} is not 32 bytes")))
}

impl Store for SqliteStore {
    fn records(&self) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, bytes, log_hash FROM entries ORDER BY idx")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (idx, bytes, log_hash) = row.map_err(backend)?;
            out.push(Record {
                index: u64::try_from(idx).unwrap_or(0),
                bytes,
                log_hash: hash_from(log_hash, &format!("entry {idx}: log hash"))?,
            });
        }
        Ok(out)
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let totals = self
            .conn
            .query_row(
                "SELECT entries, head, pool, issued, expired FROM totals WHERE k = 0",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
        let Some((entries, head, pool, issued, expired)) = totals else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT member, balance, carry FROM accounts ORDER BY member")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(backend)?;
        let mut accounts = Vec::new();
        for row in rows {
            let (member, balance, carry) = row.map_err(backend)?;
            if member != accounts.len() as i64 {
                return Err(StoreError::Backend(format!(
                    "cached accounts skip from {} to {member}",
                    accounts.len()
                )));
            }
            accounts.push(Account {
                balance,
                carry: u32::try_from(carry).map_err(|_| {
                    StoreError::Backend(format!("account {member}: carry {carry} out of range"))
                })?,
            });
        }
        Ok(Some(Snapshot {
            entries: u64::try_from(entries).unwrap_or(0),
            head: hash_from(head, "cached head")?,
            accounts,
            pool,
            issued,
            expired,
        }))
    }

    fn append(&mut self, record: &Record, snapshot: &Snapshot) -> Result<(), StoreError> {
        let idx = i64::try_from(record.index)
            .map_err(|_| StoreError::Refused(format!("index {} too large", record.index)))?;
        let tx = self.conn.transaction().map_err(backend)?;
        let next: i64 = tx
            .query_row("SELECT COALESCE(MAX(idx), 0) + 1 FROM entries", [], |r| {
                r.get(0)
            })
            .map_err(backend)?;
        if next != idx {
            return Err(StoreError::Refused(format!(
                "record {idx} is not the next position {next}"
            )));
        }
        tx.prepare_cached("INSERT INTO entries (idx, bytes, log_hash) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![idx, record.bytes, &record.log_hash.0[..]]))
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO accounts (member, balance, carry) VALUES (?1, ?2, ?3)
                     ON CONFLICT(member) DO UPDATE SET balance = ?2, carry = ?3",
                )
                .map_err(backend)?;
            let old = self
                .written
                .as_ref()
                .map(|s| &s.accounts[..])
                .unwrap_or(&[]);
            for (i, acc) in snapshot.accounts.iter().enumerate() {
                if old.get(i) != Some(acc) {
                    upsert
                        .execute(params![i as i64, acc.balance, i64::from(acc.carry)])
                        .map_err(backend)?;
                }
            }
            tx.prepare_cached(
                "INSERT INTO totals (k, entries, head, pool, issued, expired)
                 VALUES (0, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(k) DO UPDATE SET entries = ?1, head = ?2, pool = ?3,
                 issued = ?4, expired = ?5",
            )
            .and_then(|mut s| {
                s.execute(params![
                    snapshot.entries as i64,
                    &snapshot.head.0[..],
                    snapshot.pool,
                    snapshot.issued,
                    snapshot.expired
                ])
            })
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        self.written = Some(snapshot.clone());
        Ok(())
    }
}
