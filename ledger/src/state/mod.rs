//! The pure state machine: applies one verified entry at a time, day by day, exactly.
//!
//! Before an entry dated after the current day is applied, the books advance day by day:
//! demurrage on every positive balance (to the pool), then, on the new day, parameter changes
//! taking effect, meter credits whose contest window has closed, and claims expiring.
//! An entry is checked completely before anything changes: a refused entry leaves no trace.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ed25519_dalek::{Signature, VerifyingKey};

use crate::amount::Millis;
use crate::batch::Pending;
use crate::codec::MAX_BYTES;
use crate::day::Day;
use crate::demurrage::decay_one_day;
use crate::entry::{Body, Entry, Hash, MemberId, MeterKind, Role};
use crate::params::Params;
use crate::reject::Reject;

mod books;
mod change;
mod checks;
#[cfg(test)]
mod tests;

pub use books::Books;
use change::*;
use checks::*;

/// An entry may be dated at most this many days after the log's current day.
pub const MAX_DAYS_AHEAD: u32 = 3660;

/// A member as the log knows them.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: MemberId,
    pub name: String,
    pub role: Role,
    pub active: bool,
    pub key: [u8; 32],
    vk: VerifyingKey,
    /// Sequence number of the member's last entry (0: none yet).
    pub seq: u64,
    /// Id of the member's last entry.
    pub last: Hash,
}

/// One account: balance and demurrage remainder (parts per billion of a milli-Commun).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: i64,
    pub carry: u32,
}

/// A claim waiting for attestations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenClaim {
    pub claimant: MemberId,
    pub beneficiary: MemberId,
    pub amount: i64,
    pub needed: u32,
    pub attesters: Vec<MemberId>,
    pub contesters: Vec<MemberId>,
    /// Attestations are accepted on days before this one.
    pub expires: Day,
    /// A contested meter credit turned into a claim.
    pub from_meter: bool,
}

/// A meter credit inside its contest window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCredit {
    pub id: Hash,
    pub member: MemberId,
    pub kind: MeterKind,
    pub amount: i64,
    /// The controller that signed it.
    pub controller: MemberId,
    /// The day it posts unless contested.
    pub matures: Day,
}

/// What happened besides the entry itself (day changes and postings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Demurrage for `day` moved `total` from balances to the pool.
    Demurrage { day: Day, total: Millis },
    /// New parameters took effect.
    ParamsEffective { day: Day },
    /// A claim (or contested credit) posted: `to_member` to the beneficiary, the rest (above
    /// the ceiling) to the pool.
    ClaimPosted {
        claim: Hash,
        beneficiary: MemberId,
        to_member: Millis,
        to_pool: Millis,
    },
    /// A claim expired unposted.
    ClaimExpired { claim: Hash },
    /// A meter credit passed its contest window and posted.
    CreditPosted {
        credit: Hash,
        member: MemberId,
        to_member: Millis,
        to_pool: Millis,
    },
    /// A contested meter credit became a claim.
    CreditContested { credit: Hash },
}

/// How a claim or credit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    ClaimPosted,
    ClaimExpired,
    CreditPosted,
}

/// The whole state of a site's ledger after some prefix of its log.
#[derive(Clone, Debug)]
pub struct State {
    site: String,
    members: Vec<Member>,
    keys: HashSet<[u8; 32]>,
    seen: HashSet<Hash>,
    closed: HashMap<Hash, Closed>,
    books: Option<Books>,
    entries: u64,
    /// When set (replays of stored logs), signatures are collected here for a batch check
    /// instead of being verified one by one.
    deferred: Option<Vec<Pending>>,
}

/// Verifies one signature strictly, or queues it for the batch check.
fn check_signature(
    deferred: &mut Option<Vec<Pending>>,
    vk: &VerifyingKey,
    msg: &[u8],
    sig: &[u8; 64],
) -> bool {
    match deferred {
        Some(queue) => {
            queue.push(Pending {
                key: vk.to_edwards(),
                key_bytes: vk.to_bytes(),
                message: msg.to_vec(),
                signature: *sig,
            });
            true
        }
        None => vk.verify_strict(msg, &Signature::from_bytes(sig)).is_ok(),
    }
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub id: Hash,
    pub events: Vec<Event>,
}

impl State {
    /// An empty ledger for `site`: it accepts only a genesis entry naming that site.
    pub fn new(site: &str) -> State {
        State {
            site: site.to_string(),
            members: Vec::new(),
            keys: HashSet::new(),
            seen: HashSet::new(),
            closed: HashMap::new(),
            books: None,
            entries: 0,
            deferred: None,
        }
    }

    /// From now on, queue signatures for batch verification (see `take_deferred`).
    pub(crate) fn defer_signatures(&mut self) {
        self.deferred = Some(Vec::new());
    }

    /// Back to strict one-by-one verification (after a replay).
    pub(crate) fn verify_signatures_now(&mut self) {
        self.deferred = None;
    }

    /// The queued signatures (empty when not deferring).
    pub(crate) fn take_deferred(&mut self) -> Vec<Pending> {
        self.deferred
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// How many signatures are queued.
    pub(crate) fn deferred_len(&self) -> usize {
        self.deferred.as_ref().map_or(0, Vec::len)
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, m: MemberId) -> Option<&Member> {
        self.members.get(m.0 as usize)
    }

    /// The member owning `key`, if it is their current key.
    pub fn member_by_key(&self, key: &[u8; 32]) -> Option<&Member> {
        self.members.iter().find(|m| &m.key == key)
    }

    /// Books as of the last entry; `None` before genesis.
    pub fn books(&self) -> Option<&Books> {
        self.books.as_ref()
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Whether `id` is an entry of the log.
    pub fn contains(&self, id: &Hash) -> bool {
        self.seen.contains(id)
    }

    /// The books advanced to `date` (no change to the state); `None` before genesis.
    pub fn books_as_of(&self, date: Day) -> Result<Option<Books>, Reject> {
        let Some(b) = &self.books else {
            return Ok(None);
        };
        if date <= b.today {
            return Ok(Some(b.clone()));
        }
        // Asked from outside (an HTTP `as_of`): a far date would walk millions of days.
        if i64::from(date.0) - i64::from(b.today.0) > i64::from(MAX_DAYS_AHEAD) {
            return Err(Reject::DateTooFar {
                date,
                today: b.today,
                max_days: MAX_DAYS_AHEAD,
            });
        }
        let mut b = b.clone();
        b.advance_to(date)?;
        Ok(Some(b))
    }

    /// Checks and applies one entry. On error nothing changes.
    pub fn apply(&mut self, e: &Entry) -> Result<Applied, Reject> {
        let u = &e.unsigned;
        let msg = u.message(&self.site);
        let id = Hash::of(&msg);
        if self.seen.contains(&id) {
            return Err(Reject::Duplicate(id));
        }
        if self.books.is_none() {
            return self.apply_genesis(e, &msg, id);
        }
        if matches!(u.body, Body::Genesis { .. }) {
            return Err(Reject::LateGenesis);
        }
        let author = self
            .members
            .get(u.author.0 as usize)
            .ok_or(Reject::UnknownAuthor(u.author))?;
        if !author.active {
            return Err(Reject::RevokedAuthor(u.author));
        }
        let expected = author.seq.saturating_add(1);
        if u.seq != expected {
            return Err(Reject::BadSequence {
                author: u.author,
                found: u.seq,
                expected,
            });
        }
        if u.prev != author.last {
            return Err(Reject::BadPrevious {
                author: u.author,
                found: u.prev,
                expected: author.last,
            });
        }
        if !check_signature(&mut self.deferred, &author.vk, &msg, &e.signature) {
            return Err(Reject::BadSignature(u.author));
        }
        check_role(author.role, &u.body)?;
        check_sizes(&u.body)?;

        let today = self.books.as_ref().map_or(u.date, |b| b.today);
        if u.date < today {
            return Err(Reject::DateInPast {
                date: u.date,
                today,
            });
        }
        if i64::from(u.date.0) - i64::from(today.0) > i64::from(MAX_DAYS_AHEAD) {
            return Err(Reject::DateTooFar {
                date: u.date,
                today,
                max_days: MAX_DAYS_AHEAD,
            });
        }
        let mut moved: Option<Books> = None;
        let mut events = Vec::new();
        if u.date > today {
            let mut b = self.books.clone().ok_or(Reject::NotGenesis)?;
            events = b.advance_to(u.date)?;
            moved = Some(b);
        }
        let books = match (&mut moved, &mut self.books) {
            (Some(b), _) => b,
            (None, Some(b)) => b,
            (None, None) => return Err(Reject::NotGenesis),
        };
        // The quorum of the entry's own day: a change of `steward_quorum` taking effect on it
        // (applied by the advance above) counts.
        let needed = quorum_for(&books.params, &self.members);
        check_cosigners(&self.members, needed, &mut self.deferred, e, &msg)?;
        let just_closed: HashMap<Hash, Closed> = events.iter().filter_map(closed_by).collect();
        let closed = Closes {
            before: &self.closed,
            now: &just_closed,
        };
        let change = plan_body(books, &self.members, &self.keys, &closed, e, id)?;
        events.extend(change.apply(books, &mut self.members, &mut self.keys)?);
        if let Some(b) = moved {
            self.books = Some(b);
        }
        // Commit the log position.
        if let Some(a) = self.members.get_mut(u.author.0 as usize) {
            a.seq = u.seq;
            a.last = id;
        }
        self.seen.insert(id);
        self.entries += 1;
        self.closed.extend(events.iter().filter_map(closed_by));
        Ok(Applied { id, events })
    }

    fn apply_genesis(&mut self, e: &Entry, msg: &[u8], id: Hash) -> Result<Applied, Reject> {
        let u = &e.unsigned;
        let Body::Genesis {
            site,
            params,
            founder_key,
            founder_name,
        } = &u.body
        else {
            return Err(Reject::NotGenesis);
        };
        if u.author != MemberId(0) || u.seq != 1 || u.prev != Hash::ZERO {
            return Err(Reject::NotGenesis);
        }
        if site != &self.site {
            return Err(Reject::WrongSite {
                found: site.clone(),
                expected: self.site.clone(),
            });
        }
        if !e.cosigners.is_empty() {
            return Err(Reject::UnexpectedCosigners { kind: "genesis" });
        }
        check_sizes(&u.body)?;
        let problems = params.problems();
        if !problems.is_empty() {
            return Err(Reject::BadField {
                field: "params",
                why: problems.join("; "),
            });
        }
        check_name("founder name", founder_name)?;
        let vk = usable_key(founder_key)?;
        if !check_signature(&mut self.deferred, &vk, msg, &e.signature) {
            return Err(Reject::BadSignature(MemberId(0)));
        }
        let mut books = Books::new(u.date, params.clone());
        books.accounts.push(Account::default());
        self.books = Some(books);
        self.members.push(Member {
            id: MemberId(0),
            name: founder_name.clone(),
            role: Role::Steward,
            active: true,
            key: *founder_key,
            vk,
            seq: 1,
            last: id,
        });
        self.keys.insert(*founder_key);
        self.seen.insert(id);
        self.entries = 1;
        Ok(Applied {
            id,
            events: Vec::new(),
        })
    }

    /// Quorum needed now (for an entry dated the log's current day): the parameter, capped at
    /// the number of active stewards.
    pub fn quorum_needed(&self) -> u32 {
        self.books
            .as_ref()
            .map_or(1, |b| quorum_for(&b.params, &self.members))
    }
}
