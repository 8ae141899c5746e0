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

/// New Communs planned for one member: the totals after the issue, checked but not written.
#[derive(Clone, Copy, Debug)]
struct Issue {
    member: MemberId,
    balance: i64,
    pool: i64,
    issued: i64,
    to_member: i64,
    to_pool: i64,
}

/// The books: everything a day change touches (cloned when an entry moves the day, so a
/// refused entry changes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Books {
    pub today: Day,
    pub params: Params,
    pub pending_params: Vec<(Day, Params)>,
    /// Indexed by member number.
    pub accounts: Vec<Account>,
    pub pool: i64,
    pub issued: i64,
    pub expired: i64,
    pub open_claims: BTreeMap<Hash, OpenClaim>,
    pub pending_credits: Vec<PendingCredit>,
    /// Meter credits per member on `today`.
    pub meter_today: HashMap<MemberId, i64>,
    /// Attestations per member on `today`.
    pub attest_today: HashMap<MemberId, u32>,
    /// Revoked members: Communs go only to admitted members, so anything issued to one of
    /// them (a meter credit maturing after the revocation) goes to the pool instead.
    pub revoked: BTreeSet<MemberId>,
}

impl Books {
    fn new(today: Day, params: Params) -> Books {
        Books {
            today,
            params,
            pending_params: Vec::new(),
            accounts: Vec::new(),
            pool: 0,
            issued: 0,
            expired: 0,
            open_claims: BTreeMap::new(),
            pending_credits: Vec::new(),
            meter_today: HashMap::new(),
            attest_today: HashMap::new(),
            revoked: BTreeSet::new(),
        }
    }

    /// Sum of balances plus pool, and issued minus expired: equal when the books balance.
    pub fn conservation(&self) -> (i128, i128) {
        let held: i128 = self
            .accounts
            .iter()
            .map(|a| i128::from(a.balance))
            .sum::<i128>()
            + i128::from(self.pool);
        (held, i128::from(self.issued) - i128::from(self.expired))
    }

    fn account(&self, m: MemberId) -> Account {
        self.accounts.get(m.0 as usize).copied().unwrap_or_default()
    }

    /// Sets a balance already checked to exist (see `Issue` and `Change::apply`).
    fn set_balance(&mut self, m: MemberId, balance: i64) {
        if let Some(acc) = self.accounts.get_mut(m.0 as usize) {
            acc.balance = balance;
        }
    }

    /// The balance of a known member, or why there is none.
    fn known_balance(&self, m: MemberId) -> Result<i64, Reject> {
        self.accounts
            .get(m.0 as usize)
            .map(|a| a.balance)
            .ok_or(Reject::UnknownMember(m))
    }

    /// Where new Communs for `m` go, computed without changing anything: up to the ceiling to
    /// the member, the rest to the pool; all of it to the pool when `m` has been revoked
    /// (Communs move only between admitted members).
    fn plan_issue(&self, m: MemberId, amount: i64) -> Result<Issue, Reject> {
        let ceiling = self.params.account_ceiling.0;
        let issued = self
            .issued
            .checked_add(amount)
            .ok_or(Reject::Overflow("issued total"))?;
        let balance = self.known_balance(m)?;
        let headroom = if self.revoked.contains(&m) {
            0
        } else {
            ceiling.saturating_sub(balance).max(0)
        };
        let to_member = amount.min(headroom);
        let to_pool = amount - to_member;
        let pool = self
            .pool
            .checked_add(to_pool)
            .ok_or(Reject::Overflow("pool"))?;
        let balance = balance
            .checked_add(to_member)
            .ok_or(Reject::Overflow("balance"))?;
        Ok(Issue {
            member: m,
            balance,
            pool,
            issued,
            to_member,
            to_pool,
        })
    }

    /// Writes a planned issue; cannot fail. Returns (to the member, to the pool).
    fn commit_issue(&mut self, i: Issue) -> (i64, i64) {
        self.set_balance(i.member, i.balance);
        self.pool = i.pool;
        self.issued = i.issued;
        (i.to_member, i.to_pool)
    }

    /// New Communs for `m` (see `plan_issue`); on error nothing changes.
    fn issue(&mut self, m: MemberId, amount: i64) -> Result<(i64, i64), Reject> {
        let i = self.plan_issue(m, amount)?;
        Ok(self.commit_issue(i))
    }

    /// Advances the books to `date`, one day at a time.
    pub fn advance_to(&mut self, date: Day) -> Result<Vec<Event>, Reject> {
        let mut events = Vec::new();
        while self.today < date {
            self.end_of_day(&mut events)?;
        }
        Ok(events)
    }

    fn end_of_day(&mut self, events: &mut Vec<Event>) -> Result<(), Reject> {
        // Demurrage for the day that ends.
        let rate = self.params.demurrage;
        let mut total: i64 = 0;
        for acc in &mut self.accounts {
            let d = decay_one_day(acc.balance, acc.carry, rate);
            acc.balance = d.balance;
            acc.carry = d.carry;
            total = total
                .checked_add(d.decayed)
                .ok_or(Reject::Overflow("demurrage"))?;
        }
        self.pool = self
            .pool
            .checked_add(total)
            .ok_or(Reject::Overflow("pool"))?;
        if total > 0 {
            events.push(Event::Demurrage {
                day: self.today,
                total: Millis(total),
            });
        }
        let today = Day(self.today.0.saturating_add(1));
        self.today = today;
        self.meter_today.clear();
        self.attest_today.clear();
        // Parameter changes taking effect today (in log order).
        let mut i = 0;
        while i < self.pending_params.len() {
            if self.pending_params[i].0 <= today {
                let (_, p) = self.pending_params.remove(i);
                self.params = p;
                events.push(Event::ParamsEffective { day: today });
                // A lower ceiling sends what is above it to the pool.
                let ceiling = self.params.account_ceiling.0;
                for acc in &mut self.accounts {
                    if acc.balance > ceiling {
                        self.pool = self
                            .pool
                            .checked_add(acc.balance - ceiling)
                            .ok_or(Reject::Overflow("pool"))?;
                        acc.balance = ceiling;
                    }
                }
            } else {
                i += 1;
            }
        }
        // Meter credits whose contest window closed.
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_credits)
            .into_iter()
            .partition(|c| c.matures <= today);
        self.pending_credits = keep;
        for c in due {
            let (to_member, to_pool) = self.issue(c.member, c.amount)?;
            events.push(Event::CreditPosted {
                credit: c.id,
                member: c.member,
                to_member: Millis(to_member),
                to_pool: Millis(to_pool),
            });
        }
        // Claims expiring.
        let expired: Vec<Hash> = self
            .open_claims
            .iter()
            .filter(|(_, c)| c.expires <= today)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.open_claims.remove(&id);
            events.push(Event::ClaimExpired { claim: id });
        }
        Ok(())
    }
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

/// Quorum needed under `params`: the parameter, capped at the number of active stewards.
fn quorum_for(params: &Params, members: &[Member]) -> u32 {
    let stewards = members
        .iter()
        .filter(|m| m.active && m.role == Role::Steward)
        .count() as u32;
    params.steward_quorum.min(stewards).max(1)
}

fn check_cosigners(
    members: &[Member],
    needed: u32,
    deferred: &mut Option<Vec<Pending>>,
    e: &Entry,
    msg: &[u8],
) -> Result<(), Reject> {
    {
        let u = &e.unsigned;
        if !u.body.needs_quorum() {
            if e.cosigners.is_empty() {
                return Ok(());
            }
            return Err(Reject::UnexpectedCosigners {
                kind: u.body.kind_name(),
            });
        }
        let mut signers = vec![u.author];
        for (m, sig) in &e.cosigners {
            if signers.contains(m) {
                return Err(Reject::DuplicateCosigner(*m));
            }
            let member = members
                .get(m.0 as usize)
                .filter(|x| x.active && x.role == Role::Steward)
                .ok_or(Reject::CosignerNotSteward(*m))?;
            if !check_signature(deferred, &member.vk, msg, sig) {
                return Err(Reject::BadCosignature(*m));
            }
            signers.push(*m);
        }
        let got = signers.len() as u32;
        if got < needed {
            return Err(Reject::NoQuorum {
                kind: u.body.kind_name(),
                needed,
                got,
            });
        }
        Ok(())
    }
}

fn usable_key(key: &[u8; 32]) -> Result<VerifyingKey, Reject> {
    let vk = VerifyingKey::from_bytes(key).map_err(|_| Reject::BadKey)?;
    if vk.is_weak() {
        return Err(Reject::BadKey);
    }
    Ok(vk)
}

fn check_role(role: Role, body: &Body) -> Result<(), Reject> {
    let ok = match body {
        Body::Genesis { .. } => false,
        Body::Admit { .. }
        | Body::Revoke { .. }
        | Body::PoolGrant { .. }
        | Body::PoolExpiry { .. }
        | Body::ParamChange { .. } => role == Role::Steward,
        Body::RotateKey { .. } => true,
        Body::Claim { .. } | Body::Attest { .. } | Body::Contest { .. } | Body::Transfer { .. } => {
            role != Role::Controller
        }
        Body::MeterCredit { .. } => role == Role::Controller,
        Body::DemurrageEpoch => role != Role::Member,
    };
    if ok {
        Ok(())
    } else {
        Err(Reject::RoleForbidden {
            role: role.name(),
            kind: body.kind_name(),
        })
    }
}

fn check_text(field: &'static str, text: &str) -> Result<(), Reject> {
    if text.len() > MAX_BYTES {
        return Err(Reject::BadField {
            field,
            why: format!("{} bytes is over the limit of {MAX_BYTES}", text.len()),
        });
    }
    Ok(())
}

fn check_name(field: &'static str, text: &str) -> Result<(), Reject> {
    check_text(field, text)?;
    if text.trim().is_empty() {
        return Err(Reject::BadField {
            field,
            why: "must not be empty".into(),
        });
    }
    Ok(())
}

fn check_sizes(body: &Body) -> Result<(), Reject> {
    match body {
        Body::Genesis {
            site, founder_name, ..
        } => {
            check_name("site", site)?;
            check_text("founder name", founder_name)
        }
        Body::Admit { name, .. } => check_name("name", name),
        Body::Revoke { reason, .. } => check_text("reason", reason),
        Body::Claim { description, .. } => check_name("description", description),
        Body::Contest { reason, .. } => check_text("reason", reason),
        Body::Transfer { memo, .. } => check_text("memo", memo),
        Body::PoolGrant { decision, .. }
        | Body::PoolExpiry { decision, .. }
        | Body::ParamChange { decision, .. } => check_name("decision", decision),
        Body::RotateKey { .. } | Body::Attest { .. } | Body::DemurrageEpoch => Ok(()),
        Body::MeterCredit { source, .. } => check_text("source", source),
    }
}

/// A receiving account: known, active, not the controller.
fn holder(members: &[Member], m: MemberId) -> Result<&Member, Reject> {
    let member = members.get(m.0 as usize).ok_or(Reject::UnknownMember(m))?;
    if !member.active {
        return Err(Reject::RevokedMember(m));
    }
    if member.role == Role::Controller {
        return Err(Reject::ControllerAccount(m));
    }
    Ok(member)
}

fn mul_div(a: i128, b: i128, div: i128, what: &'static str) -> Result<i64, Reject> {
    a.checked_mul(b)
        .map(|n| n / div)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or(Reject::Overflow(what))
}

/// A fully checked change. Applying it is all or nothing as well: `Change::apply` checks
/// everything it needs before its first write, so even a caller that skipped planning never
/// sees a half-applied change.
enum Change {
    None,
    Admit {
        key: [u8; 32],
        vk: Box<VerifyingKey>,
        role: Role,
        name: String,
    },
    Revoke(MemberId),
    Rotate(MemberId, [u8; 32], Box<VerifyingKey>),
    OpenClaim(Hash, OpenClaim),
    Attest {
        claim: Hash,
        by: MemberId,
    },
    ContestClaim {
        claim: Hash,
        by: MemberId,
    },
    ContestCredit {
        credit: Hash,
        claim: OpenClaim,
    },
    Credit(PendingCredit),
    Move {
        from: MemberId,
        to: MemberId,
        amount: i64,
    },
    Grant {
        to: MemberId,
        amount: i64,
    },
    Expire(i64),
    Params(Day, Params),
}

fn plan_body(
    b: &Books,
    members: &[Member],
    keys: &HashSet<[u8; 32]>,
    closed: &Closes<'_>,
    e: &Entry,
    id: Hash,
) -> Result<Change, Reject> {
    let u = &e.unsigned;
    let author = u.author;
    let p = &b.params;
    Ok(match &u.body {
        Body::Genesis { .. } => return Err(Reject::LateGenesis),
        Body::DemurrageEpoch => Change::None,
        Body::Admit { key, role, name } => {
            check_name("name", name)?;
            if keys.contains(key) {
                return Err(Reject::KeyInUse);
            }
            Change::Admit {
                key: *key,
                vk: Box::new(usable_key(key)?),
                role: *role,
                name: name.clone(),
            }
        }
        Body::Revoke { member, .. } => {
            let m = members
                .get(member.0 as usize)
                .ok_or(Reject::UnknownMember(*member))?;
            if !m.active {
                return Err(Reject::RevokedMember(*member));
            }
            let stewards = members
                .iter()
                .filter(|x| x.active && x.role == Role::Steward)
                .count();
            if m.role == Role::Steward && stewards <= 1 {
                return Err(Reject::LastSteward);
            }
            Change::Revoke(*member)
        }
        Body::RotateKey { new_key } => {
            if keys.contains(new_key) {
                return Err(Reject::KeyInUse);
            }
            Change::Rotate(author, *new_key, Box::new(usable_key(new_key)?))
        }
        Body::Claim {
            beneficiary,
            minutes,
            ..
        } => {
            holder(members, *beneficiary)?;
            if *minutes == 0 || *minutes > 24 * 60 {
                return Err(Reject::BadField {
                    field: "minutes",
                    why: format!("{minutes} must be from 1 to 1440 (one day's work per claim)"),
                });
            }
            let amount = mul_div(
                i128::from(*minutes),
                i128::from(p.per_hour_maintenance.0),
                60,
                "claim amount",
            )?;
            if amount <= 0 {
                return Err(Reject::NotPositive(Millis(amount)));
            }
            let expires = b
                .today
                .plus(p.claim_expiry_days)
                .ok_or(Reject::Overflow("claim expiry"))?;
            Change::OpenClaim(
                id,
                OpenClaim {
                    claimant: author,
                    beneficiary: *beneficiary,
                    amount,
                    needed: p.attestations_needed,
                    attesters: Vec::new(),
                    contesters: Vec::new(),
                    expires,
                    from_meter: false,
                },
            )
        }
        Body::Attest { claim } => {
            let Some(c) = b.open_claims.get(claim) else {
                return Err(closed_or_unknown(closed, *claim));
            };
            if author == c.claimant || author == c.beneficiary {
                return Err(Reject::SelfAttestation(author));
            }
            // Communs go only to admitted members: a revoked beneficiary's claim cannot post.
            holder(members, c.beneficiary)?;
            if c.attesters.contains(&author) || c.contesters.contains(&author) {
                return Err(Reject::AlreadyAttested {
                    member: author,
                    claim: *claim,
                });
            }
            let used = b.attest_today.get(&author).copied().unwrap_or(0);
            if used >= p.attester_daily_budget {
                return Err(Reject::BudgetExhausted {
                    member: author,
                    budget: p.attester_daily_budget,
                });
            }
            if c.attesters.len() as u32 + 1 >= c.needed {
                // Posting: check the arithmetic now so applying cannot fail.
                b.issued
                    .checked_add(c.amount)
                    .ok_or(Reject::Overflow("issued total"))?;
                b.pool
                    .checked_add(c.amount)
                    .ok_or(Reject::Overflow("pool"))?;
            }
            Change::Attest {
                claim: *claim,
                by: author,
            }
        }
        Body::Contest { target, .. } => {
            if let Some(c) = b.open_claims.get(target) {
                if author == c.claimant || (c.from_meter && author == c.beneficiary) {
                    return Err(Reject::SelfContest { member: author });
                }
                if c.attesters.contains(&author) || c.contesters.contains(&author) {
                    return Err(Reject::AlreadyAttested {
                        member: author,
                        claim: *target,
                    });
                }
                c.needed
                    .checked_add(p.attestations_needed)
                    .ok_or(Reject::Overflow("attestations needed"))?;
                Change::ContestClaim {
                    claim: *target,
                    by: author,
                }
            } else if let Some(cr) = b.pending_credits.iter().find(|c| &c.id == target) {
                if author == cr.member {
                    return Err(Reject::SelfContest { member: author });
                }
                let expires = b
                    .today
                    .plus(p.claim_expiry_days)
                    .ok_or(Reject::Overflow("claim expiry"))?;
                Change::ContestCredit {
                    credit: *target,
                    claim: OpenClaim {
                        claimant: cr.controller,
                        beneficiary: cr.member,
                        amount: cr.amount,
                        needed: p.attestations_needed,
                        attesters: Vec::new(),
                        contesters: vec![author],
                        expires,
                        from_meter: true,
                    },
                }
            } else {
                return Err(closed_or_unknown(closed, *target));
            }
        }
        Body::MeterCredit {
            member, kind, wh, ..
        } => {
            holder(members, *member)?;
            let rate = match kind {
                MeterKind::Shifted => p.per_kwh_shifted.0,
                MeterKind::Given => p.per_kwh_given.0,
            };
            let amount = mul_div(i128::from(*wh), i128::from(rate), 1000, "meter credit")?;
            if amount <= 0 {
                return Err(Reject::TooSmall { wh: *wh });
            }
            let already = b.meter_today.get(member).copied().unwrap_or(0);
            let total = already
                .checked_add(amount)
                .ok_or(Reject::Overflow("meter credits"))?;
            if total > p.meter_daily_cap.0 {
                return Err(Reject::MeterCapExceeded {
                    member: *member,
                    day: b.today,
                    already: Millis(already),
                    requested: Millis(amount),
                    cap: p.meter_daily_cap,
                });
            }
            b.issued
                .checked_add(amount)
                .ok_or(Reject::Overflow("issued total"))?;
            b.pool.checked_add(amount).ok_or(Reject::Overflow("pool"))?;
            let matures = b
                .today
                .plus(p.contest_days)
                .ok_or(Reject::Overflow("contest window"))?;
            Change::Credit(PendingCredit {
                id,
                member: *member,
                kind: *kind,
                amount,
                controller: author,
                matures,
            })
        }
        Body::Transfer { to, amount, .. } => {
            if *to == author {
                return Err(Reject::SelfTransfer);
            }
            holder(members, *to)?;
            if amount.0 <= 0 {
                return Err(Reject::NotPositive(*amount));
            }
            let from = b.account(author);
            let floor = -p.credit_limit.0;
            let after = from.balance.checked_sub(amount.0);
            if after.is_none_or(|a| a < floor) {
                return Err(Reject::InsufficientBalance {
                    from: author,
                    balance: Millis(from.balance),
                    amount: *amount,
                    limit: p.credit_limit,
                });
            }
            let dest = b.account(*to);
            let after = dest.balance.checked_add(amount.0);
            if after.is_none_or(|a| a > p.account_ceiling.0) {
                return Err(Reject::CeilingExceeded {
                    to: *to,
                    balance: Millis(dest.balance),
                    amount: *amount,
                    ceiling: p.account_ceiling,
                });
            }
            Change::Move {
                from: author,
                to: *to,
                amount: amount.0,
            }
        }
        Body::PoolGrant { to, amount, .. } => {
            holder(members, *to)?;
            if amount.0 <= 0 {
                return Err(Reject::NotPositive(*amount));
            }
            if amount.0 > b.pool {
                return Err(Reject::PoolTooSmall {
                    pool: Millis(b.pool),
                    amount: *amount,
                });
            }
            let dest = b.account(*to);
            let after = dest.balance.checked_add(amount.0);
            if after.is_none_or(|a| a > p.account_ceiling.0) {
                return Err(Reject::CeilingExceeded {
                    to: *to,
                    balance: Millis(dest.balance),
                    amount: *amount,
                    ceiling: p.account_ceiling,
                });
            }
            Change::Grant {
                to: *to,
                amount: amount.0,
            }
        }
        Body::PoolExpiry { amount, .. } => {
            if amount.0 <= 0 {
                return Err(Reject::NotPositive(*amount));
            }
            if amount.0 > b.pool {
                return Err(Reject::PoolTooSmall {
                    pool: Millis(b.pool),
                    amount: *amount,
                });
            }
            b.expired
                .checked_add(amount.0)
                .ok_or(Reject::Overflow("expired total"))?;
            Change::Expire(amount.0)
        }
        Body::ParamChange {
            params, effective, ..
        } => {
            if *effective <= b.today {
                return Err(Reject::EffectiveNotFuture {
                    date: b.today,
                    effective: *effective,
                });
            }
            let problems = params.problems();
            if !problems.is_empty() {
                return Err(Reject::BadField {
                    field: "params",
                    why: problems.join("; "),
                });
            }
            Change::Params(*effective, params.clone())
        }
    })
}

fn closed_by(ev: &Event) -> Option<(Hash, Closed)> {
    match ev {
        Event::ClaimPosted { claim, .. } => Some((*claim, Closed::ClaimPosted)),
        Event::ClaimExpired { claim } => Some((*claim, Closed::ClaimExpired)),
        Event::CreditPosted { credit, .. } => Some((*credit, Closed::CreditPosted)),
        _ => None,
    }
}

/// Claims and credits closed before this entry, and by the day change it causes.
struct Closes<'a> {
    before: &'a HashMap<Hash, Closed>,
    now: &'a HashMap<Hash, Closed>,
}

fn closed_or_unknown(closed: &Closes<'_>, id: Hash) -> Reject {
    match closed.now.get(&id).or_else(|| closed.before.get(&id)) {
        Some(Closed::ClaimPosted) => Reject::ClaimPosted(id),
        Some(Closed::ClaimExpired) => Reject::ClaimExpired(id),
        Some(Closed::CreditPosted) => Reject::CreditPosted(id),
        None => Reject::UnknownClaim(id),
    }
}

impl Change {
    /// Applies the change, all or nothing: each arm first computes every new value (checked
    /// arithmetic, lookups) and only then writes, so an error leaves `b`, `members` and `keys`
    /// exactly as they were.
    fn apply(
        self,
        b: &mut Books,
        members: &mut Vec<Member>,
        keys: &mut HashSet<[u8; 32]>,
    ) -> Result<Vec<Event>, Reject> {
        let mut events = Vec::new();
        match self {
            Change::None => {}
            Change::Admit {
                key,
                vk,
                role,
                name,
            } => {
                let n = u32::try_from(members.len()).map_err(|_| Reject::Overflow("members"))?;
                let id = MemberId(n);
                members.push(Member {
                    id,
                    name,
                    role,
                    active: true,
                    key,
                    vk: *vk,
                    seq: 0,
                    last: Hash::ZERO,
                });
                keys.insert(key);
                b.accounts.push(Account::default());
            }
            Change::Revoke(m) => {
                let x = members
                    .get_mut(m.0 as usize)
                    .ok_or(Reject::UnknownMember(m))?;
                x.active = false;
                b.revoked.insert(m);
            }
            Change::Rotate(m, key, vk) => {
                let x = members
                    .get_mut(m.0 as usize)
                    .ok_or(Reject::UnknownMember(m))?;
                x.key = key;
                x.vk = *vk;
                keys.insert(key);
            }
            Change::OpenClaim(id, c) => {
                b.open_claims.insert(id, c);
            }
            Change::Attest { claim, by } => {
                let c = b
                    .open_claims
                    .get(&claim)
                    .ok_or(Reject::UnknownClaim(claim))?;
                let used = b
                    .attest_today
                    .get(&by)
                    .copied()
                    .unwrap_or(0)
                    .checked_add(1)
                    .ok_or(Reject::Overflow("attestations"))?;
                let posts = u32::try_from(c.attesters.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(1)
                    >= c.needed;
                let post = if posts {
                    Some((c.beneficiary, b.plan_issue(c.beneficiary, c.amount)?))
                } else {
                    None
                };
                // Checked: now write.
                b.attest_today.insert(by, used);
                match post {
                    Some((beneficiary, issue)) => {
                        b.open_claims.remove(&claim);
                        let (to_member, to_pool) = b.commit_issue(issue);
                        events.push(Event::ClaimPosted {
                            claim,
                            beneficiary,
                            to_member: Millis(to_member),
                            to_pool: Millis(to_pool),
                        });
                    }
                    None => {
                        if let Some(c) = b.open_claims.get_mut(&claim) {
                            c.attesters.push(by);
                        }
                    }
                }
            }
            Change::ContestClaim { claim, by } => {
                let k = b.params.attestations_needed;
                let c = b
                    .open_claims
                    .get_mut(&claim)
                    .ok_or(Reject::UnknownClaim(claim))?;
                c.contesters.push(by);
                c.needed = c.needed.saturating_add(k);
            }
            Change::ContestCredit { credit, claim } => {
                b.pending_credits.retain(|c| c.id != credit);
                b.open_claims.insert(credit, claim);
                events.push(Event::CreditContested { credit });
            }
            Change::Credit(c) => {
                let today_total = b
                    .meter_today
                    .get(&c.member)
                    .copied()
                    .unwrap_or(0)
                    .checked_add(c.amount)
                    .ok_or(Reject::Overflow("meter credits"))?;
                let now = if c.matures <= b.today {
                    Some(b.plan_issue(c.member, c.amount)?)
                } else {
                    None
                };
                // Checked: now write.
                b.meter_today.insert(c.member, today_total);
                match now {
                    Some(issue) => {
                        let (to_member, to_pool) = b.commit_issue(issue);
                        events.push(Event::CreditPosted {
                            credit: c.id,
                            member: c.member,
                            to_member: Millis(to_member),
                            to_pool: Millis(to_pool),
                        });
                    }
                    None => b.pending_credits.push(c),
                }
            }
            Change::Move { from, to, amount } => {
                if from == to {
                    return Err(Reject::SelfTransfer);
                }
                let from_balance = b
                    .known_balance(from)?
                    .checked_sub(amount)
                    .ok_or(Reject::Overflow("balance"))?;
                let to_balance = b
                    .known_balance(to)?
                    .checked_add(amount)
                    .ok_or(Reject::Overflow("balance"))?;
                b.set_balance(from, from_balance);
                b.set_balance(to, to_balance);
            }
            Change::Grant { to, amount } => {
                let pool = b.pool.checked_sub(amount).ok_or(Reject::Overflow("pool"))?;
                let balance = b
                    .known_balance(to)?
                    .checked_add(amount)
                    .ok_or(Reject::Overflow("balance"))?;
                b.pool = pool;
                b.set_balance(to, balance);
            }
            Change::Expire(amount) => {
                let pool = b.pool.checked_sub(amount).ok_or(Reject::Overflow("pool"))?;
                let expired = b
                    .expired
                    .checked_add(amount)
                    .ok_or(Reject::Overflow("expired total"))?;
                b.pool = pool;
                b.expired = expired;
            }
            Change::Params(day, p) => b.pending_params.push((day, p)),
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Books on day 10 with two members: #0 holds 10 C, #1 holds 2 C, the pool 5 C.
    fn books() -> Books {
        let mut b = Books::new(Day(10), Params::default());
        b.accounts = vec![
            Account {
                balance: 10_000,
                carry: 7,
            },
            Account {
                balance: 2_000,
                carry: 0,
            },
        ];
        b.pool = 5_000;
        b.issued = 17_000;
        b
    }

    /// Applies `change` to a copy of `b`; it must fail and leave the copy equal to `b`.
    fn fails_without_trace(b: &Books, change: Change) -> Reject {
        let mut after = b.clone();
        let mut members = Vec::new();
        let mut keys = HashSet::new();
        let err = match change.apply(&mut after, &mut members, &mut keys) {
            Ok(events) => panic!("expected a failure, got {events:?}"),
            Err(e) => e,
        };
        assert_eq!(&after, b, "a failed change left a trace ({err})");
        assert!(members.is_empty() && keys.is_empty());
        err
    }

    #[test]
    fn a_move_to_an_unknown_account_does_not_debit_the_sender() {
        let b = books();
        let err = fails_without_trace(
            &b,
            Change::Move {
                from: MemberId(0),
                to: MemberId(7),
                amount: 3_000,
            },
        );
        assert_eq!(err, Reject::UnknownMember(MemberId(7)));
    }

    #[test]
    fn a_move_that_would_overflow_the_receiver_changes_nothing() {
        let mut b = books();
        b.accounts[1].balance = i64::MAX;
        let err = fails_without_trace(
            &b,
            Change::Move {
                from: MemberId(0),
                to: MemberId(1),
                amount: 1,
            },
        );
        assert_eq!(err, Reject::Overflow("balance"));
    }

    #[test]
    fn a_grant_to_an_unknown_account_does_not_drain_the_pool() {
        let b = books();
        let err = fails_without_trace(
            &b,
            Change::Grant {
                to: MemberId(9),
                amount: 1_000,
            },
        );
        assert_eq!(err, Reject::UnknownMember(MemberId(9)));
    }

    #[test]
    fn an_attestation_whose_posting_overflows_records_neither_attestation_nor_posting() {
        let mut b = books();
        b.issued = i64::MAX;
        let claim = Hash::of(b"claim");
        b.open_claims.insert(
            claim,
            OpenClaim {
                claimant: MemberId(0),
                beneficiary: MemberId(0),
                amount: 1_000,
                needed: 1,
                attesters: Vec::new(),
                contesters: Vec::new(),
                expires: Day(20),
                from_meter: false,
            },
        );
        let err = fails_without_trace(
            &b,
            Change::Attest {
                claim,
                by: MemberId(1),
            },
        );
        assert_eq!(err, Reject::Overflow("issued total"));
    }

    #[test]
    fn a_credit_posting_at_once_that_overflows_does_not_count_towards_the_cap() {
        let mut b = books();
        b.pool = i64::MAX;
        b.accounts[0].balance = b.params.account_ceiling.0;
        let err = fails_without_trace(
            &b,
            Change::Credit(PendingCredit {
                id: Hash::of(b"credit"),
                member: MemberId(0),
                kind: MeterKind::Given,
                amount: 1_000,
                controller: MemberId(3),
                matures: Day(10),
            }),
        );
        assert_eq!(err, Reject::Overflow("pool"));
    }

    #[test]
    fn a_successful_move_still_moves() {
        let mut b = books();
        let events = Change::Move {
            from: MemberId(0),
            to: MemberId(1),
            amount: 3_000,
        }
        .apply(&mut b, &mut Vec::new(), &mut HashSet::new());
        assert_eq!(events, Ok(Vec::new()));
        assert_eq!(b.accounts[0].balance, 7_000);
        assert_eq!(b.accounts[1].balance, 5_000);
        let (held, net) = b.conservation();
        assert_eq!(held, net);
    }
}
