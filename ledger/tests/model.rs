//! Invariants 1-7 and 10 of LEDGER.md as a property-based state machine: random operations run
//! against the ledger and against a plain, independent model of the rules; after every step the
//! accepted/refused outcome (and, for revoked authors and old keys, the reason), every balance,
//! the pool, the issued total, who is active, each member's key and the parameters must agree,
//! the books must balance exactly and stay within the ceiling and the credit limit; at the end
//! the log replays to the same state, and replaying it up to any past day gives the balances
//! and parameters the live ledger showed at the end of that day.
//!
//! Besides everyday traffic the operations revoke members (steward quorum), rotate keys, sign
//! with an old key, and change parameters from a future day (steward quorum); entries may be
//! dated a day or two ahead, so day changes happen inside any kind of entry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;

use communalia_ledger::fixtures::{Village, key};
use communalia_ledger::{
    Balances, Body, Day, Entry, Hash, Ledger, LedgerError, MemStore, MemberId, MeterKind, Millis,
    Params, Rate, Receipt, Reject, SigningKey, balances_on,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const N: usize = 6;
const SITE: &str = "model-village";
/// Stewards #1 and #2 can co-sign (the founder, #0, authors every quorum entry).
const COSIGNERS: usize = 2;

fn params() -> Params {
    Params {
        demurrage: Rate::from_ppb_per_day(2_000_000).unwrap(), // strong, to see it act
        account_ceiling: Millis(50_000),
        credit_limit: Millis(0),
        attestations_needed: 3,
        claim_expiry_days: 5,
        attester_daily_budget: 2,
        per_hour_maintenance: Millis(10_000),
        per_kwh_shifted: Millis(1_000),
        per_kwh_given: Millis(2_000),
        meter_daily_cap: Millis(5_000),
        contest_days: 2,
        steward_quorum: 2,
    }
}

/// New parameters for a change: every field the ledger lets an assembly vary, except the
/// credit limit (kept at 0: lowering it cannot pull a negative balance back up, so the bound
/// checked after every step would then not hold by design).
fn new_params() -> impl Strategy<Value = Params> {
    (
        prop_oneof![
            Just(0_u64),
            Just(169_507),
            Just(2_000_000),
            Just(30_000_000)
        ],
        prop_oneof![Just(1_000_i64), 1_000_i64..60_000],
        1_u32..=4,
        1_u32..=6,
        1_u32..=3,
        prop_oneof![Just(0_i64), Just(10_000), 1_i64..30_000],
        0_i64..=2_000,
        0_i64..=3_000,
        0_i64..=8_000,
        0_u32..=3,
        1_u32..=3,
    )
        .prop_map(
            |(ppb, ceiling, k, expiry, budget, hour, shifted, given, cap, contest, quorum)| {
                Params {
                    demurrage: Rate::from_ppb_per_day(ppb).unwrap(),
                    account_ceiling: Millis(ceiling),
                    credit_limit: Millis(0),
                    attestations_needed: k,
                    claim_expiry_days: expiry,
                    attester_daily_budget: budget,
                    per_hour_maintenance: Millis(hour),
                    per_kwh_shifted: Millis(shifted),
                    per_kwh_given: Millis(given),
                    meter_daily_cap: Millis(cap),
                    contest_days: contest,
                    steward_quorum: quorum,
                }
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u32),
    /// From `.0` to `.1`: `.2` milli-Communs, or with `.3`, `.2` percent of the balance.
    Transfer(usize, usize, i64, bool),
    Claim(usize, usize, u32),
    Attest(usize, usize),
    Contest(usize, usize),
    Meter(usize, bool, u64),
    ControllerTransfer(usize),
    Replay,
    /// Revoke member `.0` with `.1` co-signers; with `.2`, rather the member of the latest
    /// meter credit still in its contest window, if any (so that it matures after revocation).
    Revoke(usize, usize, bool),
    /// Member `.0` rotates to a fresh key.
    RotateKey(usize),
    /// Member `.0` tries to rotate to a key already used (their previous or current one).
    RotateToUsedKey(usize),
    /// Member `.0` signs a transfer to `.1` with the key they had before their last rotation.
    OldKey(usize, usize),
    /// New parameters effective `.1` days after the entry's date (0: refused), with `.2`
    /// co-signers; `.3`: the parameters break a rule.
    ParamChange(Box<Params>, u32, usize, bool),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Advance(_) => "advance",
            Op::Transfer(..) => "transfer",
            Op::Claim(..) => "claim",
            Op::Attest(..) => "attest",
            Op::Contest(..) => "contest",
            Op::Meter(..) => "meter",
            Op::ControllerTransfer(_) => "controller-transfer",
            Op::Replay => "replay",
            Op::Revoke(..) => "revoke",
            Op::RotateKey(_) => "rotate-key",
            Op::RotateToUsedKey(_) => "rotate-to-used-key",
            Op::OldKey(..) => "old-key",
            Op::ParamChange(..) => "param-change",
        }
    }
}

fn cosigners() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0_usize), 4 => Just(1), 2 => Just(2)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0_u32..4).prop_map(Op::Advance),
        2 => (0..N, 0..N, 1_i64..30_000).prop_map(|(a, b, m)| Op::Transfer(a, b, m, false)),
        2 => (0..N, 0..N, 1_i64..=100).prop_map(|(a, b, pct)| Op::Transfer(a, b, pct, true)),
        3 => (0..N, 0..N, 1_u32..200).prop_map(|(a, b, m)| Op::Claim(a, b, m)),
        6 => (0..N, 0_usize..50).prop_map(|(a, c)| Op::Attest(a, c)),
        1 => (0..N, 0_usize..50).prop_map(|(a, c)| Op::Contest(a, c)),
        4 => (0..N, any::<bool>(), 0_u64..4_000).prop_map(|(m, g, wh)| Op::Meter(m, g, wh)),
        1 => (0..N).prop_map(Op::ControllerTransfer),
        1 => Just(Op::Replay),
        1 => (0..N, cosigners(), any::<bool>()).prop_map(|(m, c, p)| Op::Revoke(m, c, p)),
        2 => (0..N).prop_map(Op::RotateKey),
        1 => (0..N).prop_map(Op::RotateToUsedKey),
        1 => (0..N, 0..N).prop_map(|(a, b)| Op::OldKey(a, b)),
        2 => (new_params(), prop_oneof![1 => Just(0_u32), 6 => 1_u32..4], cosigners(), prop::bool::weighted(0.1))
            .prop_map(|(p, e, c, bad)| Op::ParamChange(Box::new(p), e, c, bad)),
    ]
}

/// An operation and how many days after the log's current day its entry is dated (an
/// `Advance` moves the day itself).
fn step() -> impl Strategy<Value = (Op, u32)> {
    (
        op(),
        prop_oneof![8 => Just(0_u32), 1 => Just(1), 1 => Just(2)],
    )
}

#[derive(Clone, Debug, PartialEq)]
enum St {
    Open,
    Posted,
    Expired,
}

#[derive(Clone, Debug)]
struct MClaim {
    id: Hash,
    claimant: Option<usize>, // None: the controller (a contested meter credit)
    beneficiary: usize,
    amount: i64,
    needed: u32,
    attesters: Vec<usize>,
    contesters: Vec<usize>,
    expires: i32,
    state: St,
}

#[derive(Clone, Debug)]
struct MCredit {
    id: Hash,
    member: usize,
    amount: i64,
    matures: i32,
    state: St, // Open: pending; Posted; Expired: contested (became a claim)
}

/// Things worth seeing happen, counted by the model.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// Meter credits that matured after their member was revoked (all to the pool).
    credits_to_pool_after_revocation: u32,
    /// Parameter changes that took effect.
    params_effective: u32,
    /// Balances cut to a lowered ceiling.
    cut_to_ceiling: u32,
    /// Entries refused because their author was revoked.
    revoked_author_refused: u32,
    /// Entries refused because their recipient (or beneficiary) was revoked.
    revoked_recipient_refused: u32,
}

/// The model: the rules written as plainly as possible.
#[derive(Clone)]
struct Model {
    p: Params,
    /// Parameter changes waiting for their day, in log order.
    pending: Vec<(i32, Params)>,
    today: i32,
    bal: [i64; N],
    carry: [i64; N],
    pool: i64,
    issued: i64,
    claims: Vec<MClaim>,
    credits: Vec<MCredit>,
    meter_today: [i64; N],
    attest_today: [u32; N],
    active: [bool; N],
    /// Every key each member has had, the current one last.
    keys: Vec<Vec<SigningKey>>,
    seen: Seen,
}

impl Model {
    fn issue(&mut self, m: usize, amount: i64) {
        // Communs go only to admitted members: a revoked member's share goes to the pool.
        let room = if self.active[m] {
            (self.p.account_ceiling.0 - self.bal[m]).max(0)
        } else {
            self.seen.credits_to_pool_after_revocation += 1;
            0
        };
        let to_m = amount.min(room);
        self.bal[m] += to_m;
        self.pool += amount - to_m;
        self.issued += amount;
    }

    fn next_day(&mut self) {
        let r = i128::from(self.p.demurrage.ppb_per_day());
        for i in 0..N {
            if self.bal[i] > 0 {
                let n = i128::from(self.bal[i]) * r + i128::from(self.carry[i]);
                let d = (n / 1_000_000_000) as i64;
                self.carry[i] = (n % 1_000_000_000) as i64;
                self.bal[i] -= d;
                self.pool += d;
            }
        }
        self.today += 1;
        self.meter_today = [0; N];
        self.attest_today = [0; N];
        let today = self.today;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(d, _)| *d <= today);
        self.pending = later;
        for (_, p) in now {
            self.p = p;
            self.seen.params_effective += 1;
            let ceiling = self.p.account_ceiling.0;
            for b in &mut self.bal {
                if *b > ceiling {
                    self.pool += *b - ceiling;
                    *b = ceiling;
                    self.seen.cut_to_ceiling += 1;
                }
            }
        }
        for k in 0..self.credits.len() {
            if self.credits[k].state == St::Open && self.credits[k].matures <= self.today {
                self.credits[k].state = St::Posted;
                let (m, a) = (self.credits[k].member, self.credits[k].amount);
                self.issue(m, a);
            }
        }
        for c in &mut self.claims {
            if c.state == St::Open && c.expires <= self.today {
                c.state = St::Expired;
            }
        }
    }

    /// Co-signed quorum entries need the quorum parameter, capped at the three stewards.
    fn quorum_met(&self, cosigners: usize) -> bool {
        1 + cosigners as u32 >= self.p.steward_quorum.min(3)
    }

    fn key(&self, i: usize) -> &SigningKey {
        self.keys[i].last().unwrap()
    }
}

/// Whether member `a` may sign; if not, an entry of theirs is refused for that reason first.
fn signer(n: &Model, a: usize, expect: &mut Option<Reject>) -> bool {
    if !n.active[a] {
        *expect = Some(Reject::RevokedAuthor(member(a)));
    }
    n.active[a]
}

/// Whether member `b` may receive Communs (only admitted members may); if not, that is the
/// reason (callers ask only once every earlier check has passed).
fn recipient(n: &Model, b: usize, expect: &mut Option<Reject>) -> bool {
    if !n.active[b] {
        *expect = Some(Reject::RevokedMember(member(b)));
    }
    n.active[b]
}

fn member(i: usize) -> MemberId {
    Village::member(i)
}

/// `body` by `author`, signed with `key` (not necessarily the author's current one).
fn signed(l: &Ledger<MemStore>, author: MemberId, k: &SigningKey, date: Day, body: Body) -> Entry {
    l.draft(author, date, body).unwrap().sign(SITE, k)
}

/// `body` by the founder, co-signed by the first `cosigners` other stewards.
fn quorum(l: &Ledger<MemStore>, v: &Village, cosigners: usize, date: Day, body: Body) -> Entry {
    let mut e = signed(l, MemberId(0), &v.stewards[0], date, body);
    for s in 1..=cosigners.min(COSIGNERS) {
        e.cosign(SITE, MemberId(s as u32), &v.stewards[s]);
    }
    e
}

/// Accepted and refused operations of each kind, plus what the models saw, over a whole run.
#[derive(Debug, Default)]
struct Counts {
    ops: BTreeMap<&'static str, (u32, u32)>,
    seen: Seen,
    past_days_checked: u32,
}

fn run(steps: Vec<(Op, u32)>, counts: &RefCell<Counts>) -> Result<(), TestCaseError> {
    let day0 = Day::parse("2026-06-01").unwrap();
    let (mut l, v) = Village::found(MemStore::default(), SITE, N, params(), day0).unwrap();
    let mut m = Model {
        p: params(),
        pending: Vec::new(),
        today: day0.0,
        bal: [0; N],
        carry: [0; N],
        pool: 0,
        issued: 0,
        claims: Vec::new(),
        credits: Vec::new(),
        meter_today: [0; N],
        attest_today: [0; N],
        active: [true; N],
        keys: v.members.iter().map(|k| vec![k.clone()]).collect(),
        seen: Seen::default(),
    };
    // What the live ledger showed at the end of each day, recorded when the log moved on.
    let mut shown: Vec<(Balances, Params)> = Vec::new();
    let mut last_entry = None;
    for (step, (op, ahead)) in steps.into_iter().enumerate() {
        // The model as of the entry's date; kept only if the entry is accepted (a refused
        // entry leaves the ledger on its day).
        let mut n = m.clone();
        let ahead = if matches!(op, Op::Advance(_)) {
            0
        } else {
            ahead
        };
        for _ in 0..ahead {
            n.next_day();
        }
        let date = Day(n.today);
        let mut expect: Option<Reject> = None;
        let (expected_ok, entry): (bool, Entry) = match &op {
            Op::Advance(d) => {
                for _ in 0..*d {
                    n.next_day();
                }
                let date = Day(n.today);
                let e = signed(
                    &l,
                    Village::CONTROLLER,
                    &v.controller,
                    date,
                    Body::DemurrageEpoch,
                );
                (true, e)
            }
            Op::Transfer(a, b, amount, share) => {
                let amount = &if *share {
                    (n.bal[*a] * amount / 100).max(1)
                } else {
                    *amount
                };
                let ok = signer(&n, *a, &mut expect)
                    && a != b
                    && recipient(&n, *b, &mut expect)
                    && n.bal[*a] - amount >= -n.p.credit_limit.0
                    && n.bal[*b] + amount <= n.p.account_ceiling.0;
                let e = signed(
                    &l,
                    member(*a),
                    n.key(*a),
                    date,
                    Body::Transfer {
                        to: member(*b),
                        amount: Millis(*amount),
                        memo: String::new(),
                    },
                );
                if ok {
                    n.bal[*a] -= amount;
                    n.bal[*b] += amount;
                }
                (ok, e)
            }
            Op::Claim(a, b, minutes) => {
                let amount = i64::from(*minutes) * n.p.per_hour_maintenance.0 / 60;
                let ok =
                    signer(&n, *a, &mut expect) && recipient(&n, *b, &mut expect) && amount > 0;
                let e = signed(
                    &l,
                    member(*a),
                    n.key(*a),
                    date,
                    Body::Claim {
                        beneficiary: member(*b),
                        minutes: *minutes,
                        description: "work".into(),
                        evidence: Hash::ZERO,
                    },
                );
                if ok {
                    n.claims.push(MClaim {
                        id: e.id(SITE),
                        claimant: Some(*a),
                        beneficiary: *b,
                        amount,
                        needed: n.p.attestations_needed,
                        attesters: vec![],
                        contesters: vec![],
                        expires: n.today + n.p.claim_expiry_days as i32,
                        state: St::Open,
                    });
                }
                (ok, e)
            }
            Op::Attest(a, c) => {
                if n.claims.is_empty() {
                    continue;
                }
                let k = c % n.claims.len();
                let cl = n.claims[k].clone();
                let ok = signer(&n, *a, &mut expect)
                    && cl.state == St::Open
                    && cl.claimant != Some(*a)
                    && cl.beneficiary != *a
                    && n.active[cl.beneficiary]
                    && !cl.attesters.contains(a)
                    && !cl.contesters.contains(a)
                    && n.attest_today[*a] < n.p.attester_daily_budget;
                let e = signed(
                    &l,
                    member(*a),
                    n.key(*a),
                    date,
                    Body::Attest { claim: cl.id },
                );
                if ok {
                    n.attest_today[*a] += 1;
                    n.claims[k].attesters.push(*a);
                    if n.claims[k].attesters.len() as u32 >= cl.needed {
                        n.claims[k].state = St::Posted;
                        n.issue(cl.beneficiary, cl.amount);
                    }
                }
                (ok, e)
            }
            Op::Contest(a, t) => {
                let total = n.claims.len() + n.credits.len();
                if total == 0 {
                    continue;
                }
                let t = t % total;
                // A contested credit lives on as a claim with the same id.
                let id = if t < n.claims.len() {
                    n.claims[t].id
                } else {
                    n.credits[t - n.claims.len()].id
                };
                let e = signed(
                    &l,
                    member(*a),
                    n.key(*a),
                    date,
                    Body::Contest {
                        target: id,
                        reason: "doubt".into(),
                    },
                );
                let active = signer(&n, *a, &mut expect);
                if let Some(k) = n.claims.iter().position(|c| c.id == id) {
                    let cl = n.claims[k].clone();
                    let ok = active
                        && cl.state == St::Open
                        && cl.claimant != Some(*a)
                        && !(cl.claimant.is_none() && cl.beneficiary == *a)
                        && !cl.attesters.contains(a)
                        && !cl.contesters.contains(a);
                    if ok {
                        n.claims[k].contesters.push(*a);
                        n.claims[k].needed += n.p.attestations_needed;
                    }
                    (ok, e)
                } else {
                    let k = t - n.claims.len();
                    let cr = n.credits[k].clone();
                    let ok = active && cr.state == St::Open && cr.member != *a;
                    if ok {
                        n.credits[k].state = St::Expired;
                        n.claims.push(MClaim {
                            id: cr.id,
                            claimant: None,
                            beneficiary: cr.member,
                            amount: cr.amount,
                            needed: n.p.attestations_needed,
                            attesters: vec![],
                            contesters: vec![*a],
                            expires: n.today + n.p.claim_expiry_days as i32,
                            state: St::Open,
                        });
                    }
                    (ok, e)
                }
            }
            Op::Meter(i, given, wh) => {
                let rate = if *given {
                    n.p.per_kwh_given.0
                } else {
                    n.p.per_kwh_shifted.0
                };
                let amount = (*wh as i64) * rate / 1000;
                let ok = recipient(&n, *i, &mut expect)
                    && amount > 0
                    && n.meter_today[*i] + amount <= n.p.meter_daily_cap.0;
                let kind = if *given {
                    MeterKind::Given
                } else {
                    MeterKind::Shifted
                };
                let e = signed(
                    &l,
                    Village::CONTROLLER,
                    &v.controller,
                    date,
                    Body::MeterCredit {
                        member: member(*i),
                        kind,
                        wh: *wh,
                        source: String::new(),
                    },
                );
                if ok {
                    n.meter_today[*i] += amount;
                    let matures = n.today + n.p.contest_days as i32;
                    n.credits.push(MCredit {
                        id: e.id(SITE),
                        member: *i,
                        amount,
                        matures,
                        state: St::Open,
                    });
                    // Without a contest window it posts at once.
                    if matures <= n.today {
                        n.credits.last_mut().unwrap().state = St::Posted;
                        n.issue(*i, amount);
                    }
                }
                (ok, e)
            }
            Op::ControllerTransfer(i) => (
                false,
                signed(
                    &l,
                    Village::CONTROLLER,
                    &v.controller,
                    date,
                    Body::Transfer {
                        to: member(*i),
                        amount: Millis(1),
                        memo: String::new(),
                    },
                ),
            ),
            Op::Replay => {
                let Some(e) = &last_entry else { continue };
                (false, Entry::clone(e))
            }
            Op::Revoke(t, c, pending) => {
                let open = n.credits.iter().rev().find(|c| c.state == St::Open);
                let t = &match open {
                    Some(cr) if *pending => cr.member,
                    _ => *t,
                };
                let ok = n.active[*t] && n.quorum_met(*c);
                let e = quorum(
                    &l,
                    &v,
                    *c,
                    date,
                    Body::Revoke {
                        member: member(*t),
                        reason: "left the village".into(),
                    },
                );
                if ok {
                    n.active[*t] = false;
                }
                (ok, e)
            }
            Op::RotateKey(i) => {
                let ok = signer(&n, *i, &mut expect);
                let fresh = key("model-rotated", (*i * 1000 + n.keys[*i].len()) as u32);
                let e = signed(
                    &l,
                    member(*i),
                    n.key(*i),
                    date,
                    Body::RotateKey {
                        new_key: fresh.verifying_key().to_bytes(),
                    },
                );
                if ok {
                    n.keys[*i].push(fresh);
                }
                (ok, e)
            }
            Op::RotateToUsedKey(i) => {
                let used = &n.keys[*i][n.keys[*i].len().saturating_sub(2)];
                let e = signed(
                    &l,
                    member(*i),
                    n.key(*i),
                    date,
                    Body::RotateKey {
                        new_key: used.verifying_key().to_bytes(),
                    },
                );
                if signer(&n, *i, &mut expect) {
                    expect = Some(Reject::KeyInUse);
                }
                (false, e)
            }
            Op::OldKey(i, to) => {
                let ks = &n.keys[*i];
                if ks.len() < 2 {
                    continue;
                }
                let e = signed(
                    &l,
                    member(*i),
                    &ks[ks.len() - 2],
                    date,
                    Body::Transfer {
                        to: member(*to),
                        amount: Millis(1),
                        memo: String::new(),
                    },
                );
                if signer(&n, *i, &mut expect) {
                    expect = Some(Reject::BadSignature(member(*i)));
                }
                (false, e)
            }
            Op::ParamChange(p, days, c, bad) => {
                let mut p = (**p).clone();
                if *bad {
                    p.attestations_needed = 0;
                }
                let effective = n.today + *days as i32;
                let ok = !*bad && *days > 0 && n.quorum_met(*c);
                let e = quorum(
                    &l,
                    &v,
                    *c,
                    date,
                    Body::ParamChange {
                        params: p.clone(),
                        effective: Day(effective),
                        decision: "assembly".into(),
                    },
                );
                if ok {
                    n.pending.push((effective, p));
                }
                (ok, e)
            }
        };
        // The live ledger's view of each day the entry would close.
        let before = l.today().unwrap();
        let closing: Vec<(Balances, Params)> = (before.0..entry.unsigned.date.0)
            .map(|d| {
                (
                    l.balances(Some(Day(d))).unwrap().unwrap(),
                    l.params_on(Day(d)).unwrap(),
                )
            })
            .collect();
        let result: Result<Receipt, LedgerError> = l.append(&entry);
        prop_assert_eq!(
            result.is_ok(),
            expected_ok,
            "step {}: {:?} dated {} gave {:?}",
            step,
            op,
            entry.unsigned.date,
            result
        );
        if let Some(why) = &expect {
            prop_assert_eq!(
                result.as_ref().err(),
                Some(&LedgerError::Rejected(why.clone())),
                "step {}: {:?}",
                step,
                op
            );
            match why {
                Reject::RevokedAuthor(_) => counts.borrow_mut().seen.revoked_author_refused += 1,
                Reject::RevokedMember(_) => counts.borrow_mut().seen.revoked_recipient_refused += 1,
                _ => {}
            }
        }
        {
            let mut c = counts.borrow_mut();
            let e = c.ops.entry(op.kind()).or_default();
            if result.is_ok() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        if result.is_ok() {
            m = n;
            shown.extend(closing);
            last_entry = l.log().last().map(|e| e.entry.clone());
        }
        // Compare everything after every step.
        let b = l.state().books().unwrap();
        prop_assert_eq!(b.today, Day(m.today), "step {}: day", step);
        for i in 0..N {
            let acc = b.accounts[member(i).0 as usize];
            prop_assert_eq!(
                acc.balance,
                m.bal[i],
                "step {}: balance of member {}",
                step,
                i
            );
            prop_assert_eq!(
                i64::from(acc.carry),
                m.carry[i],
                "step {}: carry of member {}",
                step,
                i
            );
            prop_assert!(
                acc.balance >= -m.p.credit_limit.0 && acc.balance <= m.p.account_ceiling.0
            );
            prop_assert!(i64::from(acc.carry) < 1_000_000_000);
            let who = l.state().member(member(i)).unwrap();
            prop_assert_eq!(
                who.active,
                m.active[i],
                "step {}: member {} active",
                step,
                i
            );
            prop_assert_eq!(
                who.key,
                m.key(i).verifying_key().to_bytes(),
                "step {}: key of member {}",
                step,
                i
            );
        }
        prop_assert_eq!(b.pool, m.pool, "step {}: pool", step);
        prop_assert_eq!(b.issued, m.issued, "step {}: issued", step);
        prop_assert_eq!(&b.params, &m.p, "step {}: parameters", step);
        let pending: Vec<(Day, Params)> = m
            .pending
            .iter()
            .map(|(d, p)| (Day(*d), p.clone()))
            .collect();
        prop_assert_eq!(&b.pending_params, &pending, "step {}: pending", step);
        let (held, net) = b.conservation();
        prop_assert_eq!(held, net, "step {}: conservation", step);
    }
    // Replay of the log (another machine) gives the same state.
    let again = Ledger::open(l.store().clone(), SITE).unwrap();
    prop_assert_eq!(again.balances(None).unwrap(), l.balances(None).unwrap());
    prop_assert_eq!(again.head(), l.head());
    // Replaying the log up to any past day gives what the live ledger showed at its end.
    shown.push((l.balances(None).unwrap().unwrap(), m.p.clone()));
    let entries: Vec<&Entry> = l.log().iter().map(|e| &e.entry).collect();
    for (b, p) in &shown {
        let d = b.as_of;
        let replayed = balances_on(SITE, entries.iter().copied(), d).unwrap();
        prop_assert_eq!(replayed.as_ref(), Some(b), "balances on {}", d);
        let params = l.params_on(d);
        prop_assert_eq!(params.as_ref(), Some(p), "parameters on {}", d);
    }
    let mut c = counts.borrow_mut();
    c.past_days_checked += shown.len() as u32;
    let s = &mut c.seen;
    s.credits_to_pool_after_revocation += m.seen.credits_to_pool_after_revocation;
    s.params_effective += m.seen.params_effective;
    s.cut_to_ceiling += m.seen.cut_to_ceiling;
    Ok(())
}

#[test]
fn the_ledger_agrees_with_a_plain_model() {
    let config = Config {
        source_file: Some(file!()),
        ..Config::with_cases(64)
    };
    let mut runner = TestRunner::new(config);
    let counts = RefCell::new(Counts::default());
    let outcome = runner.run(&proptest::collection::vec(step(), 1..120), |steps| {
        run(steps, &counts)
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let c = counts.into_inner();
    eprintln!("operations (accepted, refused): {:?}", c.ops);
    eprintln!("{:?}; past days checked: {}", c.seen, c.past_days_checked);
    // Every kind of operation must be exercised, accepted and refused, often enough to matter.
    for (kind, min_ok, min_refused) in [
        ("transfer", 20, 50),
        ("claim", 50, 10),
        ("attest", 50, 50),
        ("meter", 50, 50),
        ("revoke", 40, 10),
        ("rotate-key", 40, 10),
        ("param-change", 40, 10),
        ("rotate-to-used-key", 0, 20),
        ("old-key", 0, 20),
    ] {
        let (ok, refused) = c.ops.get(kind).copied().unwrap_or_default();
        assert!(
            ok >= min_ok && refused >= min_refused,
            "{kind}: {ok} accepted (want {min_ok}), {refused} refused (want {min_refused})"
        );
    }
    assert!(c.seen.credits_to_pool_after_revocation >= 5, "{:?}", c.seen);
    assert!(c.seen.params_effective >= 20, "{:?}", c.seen);
    assert!(c.seen.cut_to_ceiling >= 10, "{:?}", c.seen);
    assert!(c.seen.revoked_author_refused >= 50, "{:?}", c.seen);
    assert!(c.seen.revoked_recipient_refused >= 20, "{:?}", c.seen);
}
