//! Invariants 1-7 and 10 of LEDGER.md as a property-based state machine: random operations run
//! against the ledger and against a plain, independent model of the rules; after every step the
//! accepted/refused outcome, every balance, the pool and the issued total must agree, the books
//! must balance exactly and stay within the ceiling and the credit limit; at the end the log
//! replays to the same state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use communalia_ledger::fixtures::Village;
use communalia_ledger::{
    Body, Day, Hash, Ledger, LedgerError, MemStore, MeterKind, Millis, Params, Rate, Receipt,
};
use proptest::prelude::*;

const N: usize = 6;
const SITE: &str = "model-village";

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

#[derive(Clone, Debug)]
enum Op {
    Advance(u32),
    Transfer(usize, usize, i64),
    Claim(usize, usize, u32),
    Attest(usize, usize),
    Contest(usize, usize),
    Meter(usize, bool, u64),
    ControllerTransfer(usize),
    Replay,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0_u32..4).prop_map(Op::Advance),
        4 => (0..N, 0..N, 1_i64..30_000).prop_map(|(a, b, m)| Op::Transfer(a, b, m)),
        3 => (0..N, 0..N, 1_u32..200).prop_map(|(a, b, m)| Op::Claim(a, b, m)),
        6 => (0..N, 0_usize..50).prop_map(|(a, c)| Op::Attest(a, c)),
        1 => (0..N, 0_usize..50).prop_map(|(a, c)| Op::Contest(a, c)),
        4 => (0..N, any::<bool>(), 0_u64..4_000).prop_map(|(m, g, wh)| Op::Meter(m, g, wh)),
        1 => (0..N).prop_map(Op::ControllerTransfer),
        1 => Just(Op::Replay),
    ]
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
    posted_times: u32,
}

#[derive(Clone, Debug)]
struct MCredit {
    id: Hash,
    member: usize,
    amount: i64,
    matures: i32,
    state: St, // Open: pending; Posted; Expired: contested (became a claim)
}

/// The model: the rules written as plainly as possible.
struct Model {
    p: Params,
    today: i32,
    bal: [i64; N],
    carry: [i64; N],
    pool: i64,
    issued: i64,
    claims: Vec<MClaim>,
    credits: Vec<MCredit>,
    meter_today: [i64; N],
    attest_today: [u32; N],
}

impl Model {
    fn issue(&mut self, m: usize, amount: i64) {
        let room = (self.p.account_ceiling.0 - self.bal[m]).max(0);
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
}

fn member(i: usize) -> communalia_ledger::MemberId {
    Village::member(i)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let day0 = Day::parse("2026-06-01").unwrap();
    let (mut l, v) = Village::found(MemStore::default(), SITE, N, params(), day0).unwrap();
    let mut m = Model {
        p: params(),
        today: day0.0,
        bal: [0; N],
        carry: [0; N],
        pool: 0,
        issued: 0,
        claims: Vec::new(),
        credits: Vec::new(),
        meter_today: [0; N],
        attest_today: [0; N],
    };
    let mut last_entry = None;
    for (step, op) in ops.into_iter().enumerate() {
        let today = Day(m.today);
        let (expected_ok, result): (bool, Result<Receipt, LedgerError>) = match &op {
            Op::Advance(d) => {
                let date = Day(m.today + *d as i32);
                for _ in 0..*d {
                    m.next_day();
                }
                (
                    true,
                    l.sign_and_append(&v.controller, date, Body::DemurrageEpoch),
                )
            }
            Op::Transfer(a, b, amount) => {
                let ok = a != b
                    && m.bal[*a] - amount >= 0
                    && m.bal[*b] + amount <= m.p.account_ceiling.0;
                let r = l.sign_and_append(
                    &v.members[*a],
                    today,
                    Body::Transfer {
                        to: member(*b),
                        amount: Millis(*amount),
                        memo: String::new(),
                    },
                );
                if ok {
                    m.bal[*a] -= amount;
                    m.bal[*b] += amount;
                }
                (ok, r)
            }
            Op::Claim(a, b, minutes) => {
                let amount = i64::from(*minutes) * m.p.per_hour_maintenance.0 / 60;
                let r = l.sign_and_append(
                    &v.members[*a],
                    today,
                    Body::Claim {
                        beneficiary: member(*b),
                        minutes: *minutes,
                        description: "work".into(),
                        evidence: Hash::ZERO,
                    },
                );
                if let Ok(rec) = &r {
                    m.claims.push(MClaim {
                        id: rec.id,
                        claimant: Some(*a),
                        beneficiary: *b,
                        amount,
                        needed: 3,
                        attesters: vec![],
                        contesters: vec![],
                        expires: m.today + 5,
                        state: St::Open,
                        posted_times: 0,
                    });
                }
                (true, r)
            }
            Op::Attest(a, c) => {
                if m.claims.is_empty() {
                    continue;
                }
                let k = c % m.claims.len();
                let cl = m.claims[k].clone();
                let ok = cl.state == St::Open
                    && cl.claimant != Some(*a)
                    && cl.beneficiary != *a
                    && !cl.attesters.contains(a)
                    && !cl.contesters.contains(a)
                    && m.attest_today[*a] < m.p.attester_daily_budget;
                let r = l.sign_and_append(&v.members[*a], today, Body::Attest { claim: cl.id });
                if ok {
                    m.attest_today[*a] += 1;
                    m.claims[k].attesters.push(*a);
                    if m.claims[k].attesters.len() as u32 >= cl.needed {
                        m.claims[k].state = St::Posted;
                        m.claims[k].posted_times += 1;
                        m.issue(cl.beneficiary, cl.amount);
                    }
                }
                (ok, r)
            }
            Op::Contest(a, t) => {
                let total = m.claims.len() + m.credits.len();
                if total == 0 {
                    continue;
                }
                let t = t % total;
                // A contested credit lives on as a claim with the same id.
                let id = if t < m.claims.len() {
                    m.claims[t].id
                } else {
                    m.credits[t - m.claims.len()].id
                };
                if let Some(k) = m.claims.iter().position(|c| c.id == id) {
                    let cl = m.claims[k].clone();
                    let ok = cl.state == St::Open
                        && cl.claimant != Some(*a)
                        && !(cl.claimant.is_none() && cl.beneficiary == *a)
                        && !cl.attesters.contains(a)
                        && !cl.contesters.contains(a);
                    let r = l.sign_and_append(
                        &v.members[*a],
                        today,
                        Body::Contest {
                            target: cl.id,
                            reason: "doubt".into(),
                        },
                    );
                    if ok {
                        m.claims[k].contesters.push(*a);
                        m.claims[k].needed += 3;
                    }
                    (ok, r)
                } else {
                    let k = t - m.claims.len();
                    let cr = m.credits[k].clone();
                    let ok = cr.state == St::Open && cr.member != *a;
                    let r = l.sign_and_append(
                        &v.members[*a],
                        today,
                        Body::Contest {
                            target: cr.id,
                            reason: "doubt".into(),
                        },
                    );
                    if ok {
                        m.credits[k].state = St::Expired;
                        m.claims.push(MClaim {
                            id: cr.id,
                            claimant: None,
                            beneficiary: cr.member,
                            amount: cr.amount,
                            needed: 3,
                            attesters: vec![],
                            contesters: vec![*a],
                            expires: m.today + 5,
                            state: St::Open,
                            posted_times: 0,
                        });
                    }
                    (ok, r)
                }
            }
            Op::Meter(i, given, wh) => {
                let rate = if *given { 2_000 } else { 1_000 };
                let amount = (*wh as i64) * rate / 1000;
                let ok = amount > 0 && m.meter_today[*i] + amount <= m.p.meter_daily_cap.0;
                let kind = if *given {
                    MeterKind::Given
                } else {
                    MeterKind::Shifted
                };
                let r = l.credit_meter(&v.controller, member(*i), kind, *wh, today);
                if ok {
                    m.meter_today[*i] += amount;
                    let id = r.as_ref().map(|r| r.id).unwrap_or_default();
                    m.credits.push(MCredit {
                        id,
                        member: *i,
                        amount,
                        matures: m.today + 2,
                        state: St::Open,
                    });
                }
                (ok, r)
            }
            Op::ControllerTransfer(i) => (
                false,
                l.sign_and_append(
                    &v.controller,
                    today,
                    Body::Transfer {
                        to: member(*i),
                        amount: Millis(1),
                        memo: String::new(),
                    },
                ),
            ),
            Op::Replay => {
                let Some(e) = &last_entry else { continue };
                (false, l.append(e))
            }
        };
        prop_assert_eq!(
            result.is_ok(),
            expected_ok,
            "step {}: {:?} gave {:?}",
            step,
            op,
            result
        );
        if result.is_ok() {
            last_entry = l.log().last().map(|e| e.entry.clone());
        }
        // Compare everything after every step.
        let b = l.state().books().unwrap();
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
        }
        prop_assert_eq!(b.pool, m.pool, "step {}: pool", step);
        prop_assert_eq!(b.issued, m.issued, "step {}: issued", step);
        let (held, net) = b.conservation();
        prop_assert_eq!(held, net, "step {}: conservation", step);
        prop_assert!(m.claims.iter().all(|c| c.posted_times <= 1));
    }
    // Replay of the log (another machine) gives the same state.
    let again = Ledger::open(l.store().clone(), SITE).unwrap();
    prop_assert_eq!(again.balances(None).unwrap(), l.balances(None).unwrap());
    prop_assert_eq!(again.head(), l.head());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_ledger_agrees_with_a_plain_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
