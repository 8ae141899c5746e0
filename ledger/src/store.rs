//! Storage behind a small trait: an append-only list of encoded entries plus a cache of the
//! books after the last one. `MemStore` keeps it in memory; `SqliteStore` on disk.

use crate::entry::Hash;
use crate::state::Account;

/// One stored entry: its position (from 1), its canonical bytes, and the site log's chain hash
/// after it: `sha256("communalia-log/v1" || previous chain hash || sha256(bytes))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub index: u64,
    pub bytes: Vec<u8>,
    pub log_hash: Hash,
}

/// The books after the last stored entry: a cache, checked against a full replay at open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: u64,
    pub head: Hash,
    pub accounts: Vec<Account>,
    pub pool: i64,
    pub issued: i64,
    pub expired: i64,
}

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Backend(String),
    #[error("storage refused the append: {0}")]
    Refused(String),
}

/// Where the log lives. `append` is atomic and durable when it returns `Ok`: the record and
/// the snapshot together, or neither.
pub trait Store {
    /// Every record, in order.
    fn records(&self) -> Result<Vec<Record>, StoreError>;
    /// The cached books, if any entry was stored.
    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError>;
    /// Appends one record and replaces the cached books.
    fn append(&mut self, record: &Record, snapshot: &Snapshot) -> Result<(), StoreError>;
}

/// The chain hash after `bytes`, given the previous one.
pub fn chain(prev: &Hash, bytes: &[u8]) -> Hash {
    let mut buf = Vec::with_capacity(18 + 64);
    buf.extend_from_slice(b"communalia-log/v1");
    buf.extend_from_slice(&prev.0);
    buf.extend_from_slice(&Hash::of(bytes).0);
    Hash::of(&buf)
}

/// An in-memory store (tests, simulations, the model checker).
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    pub records: Vec<Record>,
    pub snapshot: Option<Snapshot>,
}

impl Store for MemStore {
    fn records(&self) -> Result<Vec<Record>, StoreError> {
        Ok(self.records.clone())
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.snapshot.clone())
    }

    fn append(&mut self, record: &Record, snapshot: &Snapshot) -> Result<(), StoreError> {
        let expected = self.records.len() as u64 + 1;
        if record.index != expected {
            return Err(StoreError::Refused(format!(
                "record {} is not the next position {expected}",
                record.index
            )));
        }
        self.records.push(record.clone());
        self.snapshot = Some(snapshot.clone());
        Ok(())
    }
}
