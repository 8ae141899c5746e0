//! The Communs ledger: a local unit that recognises useful work and melts when hoarded.
//!
//! - Amounts are integer milli-Communs ([`Millis`]); arithmetic is checked, never wraps.
//! - Demurrage is exact, day by day, with a per-account remainder ([`demurrage`]).
//! - Every change is an [`Entry`] signed by a member's ed25519 key over a canonical,
//!   domain-separated encoding naming the site, with per-author sequence numbers and
//!   previous-entry hashes; the site log chains every stored entry.
//! - [`State`] is the pure state machine; [`Ledger`] runs it over a [`Store`]
//!   ([`MemStore`], [`SqliteStore`]). Dates are arguments: the crate never reads a clock.
//!
//! Communs move only between admitted members and the community pool; nothing here converts
//! them to anything else.

pub mod amount;
mod batch;
pub mod codec;
pub mod day;
pub mod demurrage;
pub mod entry;
pub mod fixtures;
pub mod ledger;
pub mod params;
pub mod reject;
pub mod sqlite;
pub mod state;
pub mod store;

pub use amount::Millis;
pub use codec::DecodeError;
pub use day::Day;
pub use demurrage::Rate;
pub use ed25519_dalek::SigningKey;
pub use entry::{Body, Entry, Hash, MemberId, MeterKind, Role, Unsigned};
pub use ledger::{
    Balances, Ledger, LedgerError, LogEntry, Receipt, VerifyReport, balances_on, verify,
};
pub use params::Params;
pub use reject::Reject;
pub use sqlite::SqliteStore;
pub use state::{Event, State};
pub use store::{MemStore, Record, Snapshot, Store, StoreError};
