//! `Ledger`: the state machine over a store. Opening replays and checks the whole log; each
//! append is checked, then stored durably in one transaction, then acknowledged.

use ed25519_dalek::SigningKey;

use crate::amount::Millis;
use crate::batch::{BATCH, verify_batch};
use crate::codec::DecodeError;
use crate::day::Day;
use crate::entry::{Body, Entry, Hash, MemberId, MeterKind, Role, Unsigned};
use crate::params::Params;
use crate::reject::Reject;
use crate::state::{Books, Event, Member, State};
use crate::store::{Record, Snapshot, Store, StoreError, chain};

/// What can go wrong with a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The entry breaks a rule; nothing was stored. (Not marked as the error's source: the
    /// message already says it, and error chains would print it twice.)
    #[error("entry refused: {0}")]
    Rejected(Reject),
    /// The entry's bytes are not a valid entry.
    #[error("entry cannot be decoded: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored log is not a valid log; `index` counts from 1.
    #[error("log entry {index}{}: {what}", id.map(|h| format!(" ({h})")).unwrap_or_default())]
    Corrupt {
        index: u64,
        id: Option<Hash>,
        what: String,
    },
    /// The cached books do not match a replay of the log.
    #[error("cached balances do not match a replay of the log: {0}")]
    CacheMismatch(String),
    #[error("the ledger already has entries; it was initialised before")]
    AlreadyInitialised,
    #[error("the key is not the current key of any member")]
    UnknownKey,
    /// A store write failed after the entry was checked: reopen the ledger.
    #[error("the ledger stopped after a storage failure ({0}); reopen it")]
    Broken(String),
}

impl From<Reject> for LedgerError {
    fn from(r: Reject) -> LedgerError {
        LedgerError::Rejected(r)
    }
}

/// One entry of the log with what it caused.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub index: u64,
    pub id: Hash,
    pub entry: Entry,
    pub events: Vec<Event>,
}

/// An acknowledged append: durable when returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub id: Hash,
    pub events: Vec<Event>,
}

/// One row of the balances view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceRow {
    pub member: MemberId,
    pub name: String,
    pub role: Role,
    pub active: bool,
    pub balance: Millis,
}

/// Balances as of a day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balances {
    pub as_of: Day,
    pub rows: Vec<BalanceRow>,
    pub pool: Millis,
    pub issued: Millis,
    pub expired: Millis,
}

/// The outcome of re-checking a log from genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries that checked out, from the first.
    pub valid_entries: u64,
    /// Entries stored.
    pub stored_entries: u64,
    /// Every problem found, each saying where and what; empty when the log is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

type Replayed = (State, Vec<LogEntry>, Hash, Option<LedgerError>);

/// Replays records into a state, checking encoding, signatures, chains and every rule.
/// Signatures are first checked in batches; if anything at all fails, the replay starts again
/// with strict one-by-one verification, which names the first bad entry exactly.
fn replay(site: &str, records: &[Record]) -> Replayed {
    let fast = replay_with(site, records, true);
    if fast.3.is_none() {
        return fast;
    }
    replay_with(site, records, false)
}

/// Stops at the first bad record (what follows cannot be trusted).
fn replay_with(site: &str, records: &[Record], batched: bool) -> Replayed {
    let mut state = State::new(site);
    if batched {
        state.defer_signatures();
    }
    let mut log = Vec::with_capacity(records.len());
    let mut head = Hash::ZERO;
    for (i, r) in records.iter().enumerate() {
        let index = i as u64 + 1;
        let fail = |id, what: String| LedgerError::Corrupt { index, id, what };
        if r.index != index {
            let e = fail(
                None,
                format!("stored at position {}, expected {index}", r.index),
            );
            return (state, log, head, Some(e));
        }
        let entry = match Entry::decode(&r.bytes) {
            Ok(e) => e,
            Err(e) => {
                return (
                    state,
                    log,
                    head,
                    Some(fail(None, format!("cannot decode: {e}"))),
                );
            }
        };
        let applied = match state.apply(&entry) {
            Ok(a) => a,
            Err(e) => {
                let id = entry.id(site);
                return (state, log, head, Some(fail(Some(id), e.to_string())));
            }
        };
        let expected = chain(&head, &r.bytes);
        if r.log_hash != expected {
            let e = fail(
                Some(applied.id),
                format!(
                    "site log chain broken: stored link {}, expected {expected}",
                    r.log_hash
                ),
            );
            return (state, log, head, Some(e));
        }
        head = expected;
        log.push(LogEntry {
            index,
            id: applied.id,
            entry,
            events: applied.events,
        });
        if batched && (state.deferred_len() >= BATCH || index as usize == records.len()) {
            let batch = state.take_deferred();
            if !verify_batch(&batch) {
                let e = fail(None, "a batch of signatures did not verify".into());
                return (state, log, head, Some(e));
            }
        }
    }
    // Entries appended after the replay are verified one by one, strictly.
    state.verify_signatures_now();
    (state, log, head, None)
}

fn snapshot_of(state: &State, head: Hash) -> Snapshot {
    match state.books() {
        Some(b) => Snapshot {
            entries: state.entries(),
            head,
            accounts: b.accounts.clone(),
            pool: b.pool,
            issued: b.issued,
            expired: b.expired,
        },
        None => Snapshot::default(),
    }
}

/// Differences between the cached books and a replay, one line each.
fn compare(cached: &Snapshot, replayed: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    if cached.entries != replayed.entries {
        out.push(format!(
            "cache counts {} entries, the log has {}",
            cached.entries, replayed.entries
        ));
    }
    if cached.head != replayed.head {
        out.push(format!(
            "cached log head {} differs from the replayed head {}",
            cached.head, replayed.head
        ));
    }
    let n = cached.accounts.len().max(replayed.accounts.len());
    for i in 0..n {
        let (c, r) = (cached.accounts.get(i), replayed.accounts.get(i));
        if c != r {
            let show = |a: Option<&crate::state::Account>| {
                a.map_or("no account".to_string(), |a| {
                    format!("{} C (carry {})", Millis(a.balance), a.carry)
                })
            };
            out.push(format!(
                "member #{i}: cached {}, replay gives {}",
                show(c),
                show(r)
            ));
        }
    }
    for (what, c, r) in [
        ("pool", cached.pool, replayed.pool),
        ("issued", cached.issued, replayed.issued),
        ("expired", cached.expired, replayed.expired),
    ] {
        if c != r {
            out.push(format!(
                "{what}: cached {} C, replay gives {} C",
                Millis(c),
                Millis(r)
            ));
        }
    }
    out
}

/// Re-checks a whole stored log from genesis: every encoding, signature, sequence number,
/// previous-entry hash, site chain link and rule, then conservation and the cached balances.
pub fn verify<S: Store>(store: &S, site: &str) -> Result<VerifyReport, StoreError> {
    let records = store.records()?;
    let cached = store.snapshot()?;
    let (state, log, head, err) = replay(site, &records);
    let mut problems = Vec::new();
    if let Some(e) = err {
        problems.push(e.to_string());
    }
    if let Some(b) = state.books() {
        let (held, net) = b.conservation();
        if held != net {
            problems.push(format!(
                "conservation broken: balances plus pool hold {held} m, issued minus expired is {net} m"
            ));
        }
    }
    if problems.is_empty() {
        let replayed = snapshot_of(&state, head);
        match cached {
            Some(c) => problems.extend(compare(&c, &replayed)),
            None if !records.is_empty() => {
                problems.push("entries are stored but no cached balances".into())
            }
            None => {}
        }
    }
    Ok(VerifyReport {
        valid_entries: log.len() as u64,
        stored_entries: records.len() as u64,
        problems,
    })
}

/// A site's Communs ledger over a store.
pub struct Ledger<S: Store> {
    store: S,
    state: State,
    log: Vec<LogEntry>,
    head: Hash,
    broken: Option<String>,
}

impl<S: Store> std::fmt::Debug for Ledger<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("site", &self.state.site())
            .field("entries", &self.log.len())
            .finish_non_exhaustive()
    }
}

impl<S: Store> Ledger<S> {
    /// Opens a ledger: replays the whole log (every signature and rule) and checks the
    /// cached balances against the replay. An empty store gives an empty ledger that accepts
    /// only a genesis entry for `site`.
    pub fn open(store: S, site: &str) -> Result<Ledger<S>, LedgerError> {
        let records = store.records()?;
        let (state, log, head, err) = replay(site, &records);
        if let Some(e) = err {
            return Err(e);
        }
        let replayed = snapshot_of(&state, head);
        match store.snapshot()? {
            Some(c) => {
                let diff = compare(&c, &replayed);
                if !diff.is_empty() {
                    return Err(LedgerError::CacheMismatch(diff.join("; ")));
                }
            }
            None if !records.is_empty() => {
                return Err(LedgerError::CacheMismatch(
                    "entries are stored but no cached balances".into(),
                ));
            }
            None => {}
        }
        Ok(Ledger {
            store,
            state,
            log,
            head,
            broken: None,
        })
    }

    /// Starts a new ledger: the genesis entry, signed by the founding steward (member #0).
    pub fn init(
        store: S,
        site: &str,
        params: Params,
        founder: &SigningKey,
        founder_name: &str,
        date: Day,
    ) -> Result<Ledger<S>, LedgerError> {
        let mut ledger = Ledger::open(store, site)?;
        if !ledger.log.is_empty() {
            return Err(LedgerError::AlreadyInitialised);
        }
        let genesis = Unsigned {
            author: MemberId(0),
            seq: 1,
            prev: Hash::ZERO,
            date,
            body: Body::Genesis {
                site: site.to_string(),
                params,
                founder_key: founder.verifying_key().to_bytes(),
                founder_name: founder_name.to_string(),
            },
        }
        .sign(site, founder);
        ledger.append(&genesis)?;
        Ok(ledger)
    }

    pub fn site(&self) -> &str {
        self.state.site()
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }

    /// The site log's chain hash after the last entry.
    pub fn head(&self) -> Hash {
        self.head
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The log's current day (the date of the latest entry); `None` before genesis.
    pub fn today(&self) -> Option<Day> {
        self.state.books().map(|b| b.today)
    }

    /// Checks `entry`, stores it durably in one transaction, and only then acknowledges it.
    pub fn append(&mut self, entry: &Entry) -> Result<Receipt, LedgerError> {
        if let Some(why) = &self.broken {
            return Err(LedgerError::Broken(why.clone()));
        }
        let bytes = entry.encode();
        // What is stored must decode to exactly this entry (sizes within limits).
        if Entry::decode(&bytes)? != *entry {
            return Err(Reject::BadField {
                field: "entry",
                why: "does not survive its canonical encoding".into(),
            }
            .into());
        }
        self.append_checked(entry.clone(), bytes)
    }

    /// Decodes canonical bytes and appends them (HTTP and CLI imports).
    pub fn append_bytes(&mut self, bytes: &[u8]) -> Result<Receipt, LedgerError> {
        if let Some(why) = &self.broken {
            return Err(LedgerError::Broken(why.clone()));
        }
        let entry = Entry::decode(bytes)?;
        self.append_checked(entry, bytes.to_vec())
    }

    fn append_checked(&mut self, entry: Entry, bytes: Vec<u8>) -> Result<Receipt, LedgerError> {
        let applied = self.state.apply(&entry)?;
        let index = self.log.len() as u64 + 1;
        let log_hash = chain(&self.head, &bytes);
        let record = Record {
            index,
            bytes,
            log_hash,
        };
        let snapshot = snapshot_of(&self.state, log_hash);
        if let Err(e) = self.store.append(&record, &snapshot) {
            // The state already holds the entry: refuse everything until reopened.
            self.broken = Some(e.to_string());
            return Err(e.into());
        }
        self.head = log_hash;
        self.log.push(LogEntry {
            index,
            id: applied.id,
            entry,
            events: applied.events.clone(),
        });
        Ok(Receipt {
            index,
            id: applied.id,
            events: applied.events,
        })
    }

    /// An unsigned entry for `author` with the right sequence number and previous hash.
    pub fn draft(&self, author: MemberId, date: Day, body: Body) -> Result<Unsigned, LedgerError> {
        let m = self
            .state
            .member(author)
            .ok_or(Reject::UnknownAuthor(author))?;
        Ok(Unsigned {
            author,
            seq: m.seq.saturating_add(1),
            prev: m.last,
            date,
            body,
        })
    }

    /// The member whose current key is `key`.
    pub fn member_for(&self, key: &SigningKey) -> Result<&Member, LedgerError> {
        self.state
            .member_by_key(&key.verifying_key().to_bytes())
            .ok_or(LedgerError::UnknownKey)
    }

    /// Drafts, signs with `key` (whose member is the author) and appends.
    pub fn sign_and_append(
        &mut self,
        key: &SigningKey,
        date: Day,
        body: Body,
    ) -> Result<Receipt, LedgerError> {
        let author = self.member_for(key)?.id;
        let entry = self.draft(author, date, body)?.sign(self.site(), key);
        self.append(&entry)
    }

    /// Drafts an entry needing a steward quorum, signed by `author_key` and co-signed by
    /// `cosigner_keys`, and appends it.
    pub fn quorum_append(
        &mut self,
        author_key: &SigningKey,
        cosigner_keys: &[&SigningKey],
        date: Day,
        body: Body,
    ) -> Result<Receipt, LedgerError> {
        let author = self.member_for(author_key)?.id;
        let site = self.site().to_string();
        let mut entry = self.draft(author, date, body)?.sign(&site, author_key);
        for k in cosigner_keys {
            let m = self.member_for(k)?.id;
            entry.cosign(&site, m, k);
        }
        self.append(&entry)
    }

    /// For the controller's cycle: credits `wh` watt-hours of a measured contribution to
    /// `member` on `date`, signed with the controller's key. Refused with
    /// `Reject::MeterCapExceeded` when it would pass the member's daily cap (nothing stored);
    /// see `meter_headroom` to credit what still fits.
    pub fn credit_meter(
        &mut self,
        controller: &SigningKey,
        member: MemberId,
        kind: MeterKind,
        wh: u64,
        date: Day,
    ) -> Result<Receipt, LedgerError> {
        self.credit_meter_for(controller, member, kind, wh, date, "")
    }

    /// As [`Self::credit_meter`], saying what earned it (`source`: the load and the hours,
    /// short words, no readings); it is signed with the rest and shown by the history.
    pub fn credit_meter_for(
        &mut self,
        controller: &SigningKey,
        member: MemberId,
        kind: MeterKind,
        wh: u64,
        date: Day,
        source: &str,
    ) -> Result<Receipt, LedgerError> {
        let body = Body::MeterCredit {
            member,
            kind,
            wh,
            source: source.to_owned(),
        };
        self.sign_and_append(controller, date, body)
    }

    /// What `member` may still receive in meter credits on `date`.
    pub fn meter_headroom(&self, member: MemberId, date: Day) -> Millis {
        let Some(b) = self.state.books() else {
            return Millis::ZERO;
        };
        let cap = self.params_on(date).map_or(0, |p| p.meter_daily_cap.0);
        let used = if date == b.today {
            b.meter_today.get(&member).copied().unwrap_or(0)
        } else {
            0
        };
        Millis((cap - used).max(0))
    }

    /// The parameters in effect on `date`: for a past day, those of that day (changes that
    /// took effect later do not count); for a later day, including the changes the log has
    /// scheduled by then. `None` before genesis.
    pub fn params_on(&self, date: Day) -> Option<Params> {
        self.books_as_of(date).ok().flatten().map(|b| b.params)
    }

    /// The books as they stood at the end of `date`: on or after the log's current day, the
    /// current books with demurrage caught up to `date`; before it, a replay of the log up to
    /// `date` (see `balances_on`). `None` before genesis.
    pub fn books_as_of(&self, date: Day) -> Result<Option<Books>, LedgerError> {
        match self.today() {
            Some(today) if date < today => {
                let entries = self.log.iter().map(|e| &e.entry);
                Ok(state_on(self.site(), entries, date)?.books_as_of(date)?)
            }
            _ => Ok(self.state.books_as_of(date)?),
        }
    }

    /// Every account's balance as of `date` (default: the log's current day). A date before
    /// the log's current day is answered by replaying the log up to it (see `balances_on`);
    /// before genesis there is nothing (`None`).
    pub fn balances(&self, as_of: Option<Day>) -> Result<Option<Balances>, LedgerError> {
        let Some(today) = self.today() else {
            return Ok(None);
        };
        let date = as_of.unwrap_or(today);
        if date < today {
            let entries = self.log.iter().map(|e| &e.entry);
            return Ok(balances_on(self.site(), entries, date)?);
        }
        Ok(balances_of(&self.state, date)?)
    }

    /// One member's balance as of `date`.
    pub fn balance(&self, member: MemberId, as_of: Option<Day>) -> Result<Millis, LedgerError> {
        let b = self.balances(as_of)?;
        b.and_then(|b| b.rows.into_iter().find(|r| r.member == member))
            .map(|r| r.balance)
            .ok_or(Reject::UnknownMember(member).into())
    }

    /// Entries involving `member` (as author, co-signer, recipient, beneficiary or in an
    /// event), or all entries when `None`.
    pub fn history(&self, member: Option<MemberId>) -> Vec<&LogEntry> {
        match member {
            None => self.log.iter().collect(),
            Some(m) => self.log.iter().filter(|e| involves(e, m)).collect(),
        }
    }
}

/// Balances as they stood on `date`: every entry of `entries` (a site's log, in order) dated
/// on or before `date` is replayed from genesis, then demurrage is caught up to `date`, the
/// same convention as a later `as_of` (the day's own demurrage is charged when it closes).
/// Members admitted later are not listed; revocations after `date` are not shown. `None` when
/// `date` is before genesis. Pure: every entry is re-checked, signatures included.
pub fn balances_on<'a>(
    site: &str,
    entries: impl IntoIterator<Item = &'a Entry>,
    date: Day,
) -> Result<Option<Balances>, Reject> {
    balances_of(&state_on(site, entries, date)?, date)
}

/// The state after every entry of `entries` (a site's log, in order) dated on or before `date`.
fn state_on<'a>(
    site: &str,
    entries: impl IntoIterator<Item = &'a Entry>,
    date: Day,
) -> Result<State, Reject> {
    let mut state = State::new(site);
    for e in entries {
        // Dates never go back in a log, so the first later entry ends the replay.
        if e.unsigned.date > date {
            break;
        }
        state.apply(e)?;
    }
    Ok(state)
}

/// The balances view of `state` with its books advanced to `date` (or as of its last entry,
/// if `date` is earlier).
fn balances_of(state: &State, date: Day) -> Result<Option<Balances>, Reject> {
    let Some(b) = state.books_as_of(date)? else {
        return Ok(None);
    };
    let rows = state
        .members()
        .iter()
        .map(|m| BalanceRow {
            member: m.id,
            name: m.name.clone(),
            role: m.role,
            active: m.active,
            balance: Millis(b.accounts.get(m.id.0 as usize).map_or(0, |a| a.balance)),
        })
        .collect();
    Ok(Some(Balances {
        as_of: b.today,
        rows,
        pool: Millis(b.pool),
        issued: Millis(b.issued),
        expired: Millis(b.expired),
    }))
}

fn involves(e: &LogEntry, m: MemberId) -> bool {
    let u = &e.entry.unsigned;
    if u.author == m || e.entry.cosigners.iter().any(|(c, _)| *c == m) {
        return true;
    }
    let in_body = match &u.body {
        Body::Revoke { member, .. } | Body::MeterCredit { member, .. } => *member == m,
        Body::Claim { beneficiary, .. } => *beneficiary == m,
        Body::Transfer { to, .. } | Body::PoolGrant { to, .. } => *to == m,
        _ => false,
    };
    in_body
        || e.events.iter().any(|ev| match ev {
            Event::ClaimPosted { beneficiary, .. } => *beneficiary == m,
            Event::CreditPosted { member, .. } => *member == m,
            _ => false,
        })
}
