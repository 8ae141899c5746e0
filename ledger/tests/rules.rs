//! The ledger's rules, one behaviour per test, over the in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use communalia_ledger::fixtures::{Village, key};
use communalia_ledger::{
    Body, Day, Entry, Event, Hash, Ledger, LedgerError, MemStore, MemberId, MeterKind, Millis,
    Params, Reject, Role, SigningKey,
};

const SITE: &str = "village-a";

fn day0() -> Day {
    Day::parse("2026-03-01").unwrap()
}

fn village(members: usize) -> (Ledger<MemStore>, Village) {
    Village::found(
        MemStore::default(),
        SITE,
        members,
        Params::default(),
        day0(),
    )
    .unwrap()
}

fn rejected(r: Result<communalia_ledger::Receipt, LedgerError>) -> Reject {
    match r {
        Err(LedgerError::Rejected(e)) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn claim(l: &mut Ledger<MemStore>, k: &SigningKey, beneficiary: MemberId, minutes: u32) -> Hash {
    l.sign_and_append(
        k,
        l.today().unwrap(),
        Body::Claim {
            beneficiary,
            minutes,
            description: "repaired the pump".into(),
            evidence: Hash::of(b"photo"),
        },
    )
    .unwrap()
    .id
}

fn attest(
    l: &mut Ledger<MemStore>,
    k: &SigningKey,
    claim: Hash,
) -> Result<communalia_ledger::Receipt, LedgerError> {
    let d = l.today().unwrap();
    l.sign_and_append(k, d, Body::Attest { claim })
}

fn conserved(l: &Ledger<MemStore>) {
    let (held, net) = l.state().books().unwrap().conservation();
    assert_eq!(held, net, "conservation");
}

#[test]
fn a_claim_posts_exactly_at_the_third_distinct_attestation() {
    let (mut l, v) = village(6);
    let me = Village::member(0);
    let c = claim(&mut l, &v.members[0], me, 90);
    attest(&mut l, &v.members[1], c).unwrap();
    attest(&mut l, &v.members[2], c).unwrap();
    assert_eq!(l.balance(me, None).unwrap(), Millis(0));
    let r = attest(&mut l, &v.members[3], c).unwrap();
    assert!(matches!(r.events[..], [Event::ClaimPosted { .. }]));
    // 90 minutes at 10 C an hour.
    assert_eq!(l.balance(me, None).unwrap(), Millis(15_000));
    // Posts at most once.
    assert_eq!(
        rejected(attest(&mut l, &v.members[4], c)),
        Reject::ClaimPosted(c)
    );
    conserved(&l);
}

#[test]
fn self_attestation_and_double_attestation_are_refused() {
    let (mut l, v) = village(6);
    // Member 0 claims for member 1: neither may attest.
    let c = claim(&mut l, &v.members[0], Village::member(1), 60);
    assert_eq!(
        rejected(attest(&mut l, &v.members[0], c)),
        Reject::SelfAttestation(Village::member(0))
    );
    assert_eq!(
        rejected(attest(&mut l, &v.members[1], c)),
        Reject::SelfAttestation(Village::member(1))
    );
    attest(&mut l, &v.members[2], c).unwrap();
    assert!(matches!(
        rejected(attest(&mut l, &v.members[2], c)),
        Reject::AlreadyAttested { .. }
    ));
}

#[test]
fn a_claim_expires_unposted_after_its_days() {
    let (mut l, v) = village(6);
    let c = claim(&mut l, &v.members[0], Village::member(0), 60);
    attest(&mut l, &v.members[1], c).unwrap();
    attest(&mut l, &v.members[2], c).unwrap();
    let later = day0().plus(14).unwrap();
    let r = l.sign_and_append(&v.members[3], later, Body::Attest { claim: c });
    assert_eq!(rejected(r), Reject::ClaimExpired(c));
    assert_eq!(l.balance(Village::member(0), None).unwrap(), Millis(0));
    // The day before expiry it still posts.
    let c2 = claim(&mut l, &v.members[0], Village::member(0), 60);
    let d = l.today().unwrap().plus(13).unwrap();
    for k in 1..=3 {
        l.sign_and_append(&v.members[k], d, Body::Attest { claim: c2 })
            .unwrap();
    }
    assert_eq!(l.balance(Village::member(0), None).unwrap(), Millis(10_000));
}

#[test]
fn attesters_have_a_daily_budget() {
    let (mut l, v) = village(8);
    let budget = Params::default().attester_daily_budget as usize;
    let claims: Vec<Hash> = (0..=budget)
        .map(|i| {
            claim(
                &mut l,
                &v.members[1 + i % 6],
                Village::member(1 + i % 6),
                10,
            )
        })
        .collect();
    for c in &claims[..budget] {
        attest(&mut l, &v.members[7], *c).unwrap();
    }
    assert!(matches!(
        rejected(attest(&mut l, &v.members[7], claims[budget])),
        Reject::BudgetExhausted { .. }
    ));
    // The next day the budget is back.
    let d = l.today().unwrap().plus(1).unwrap();
    l.sign_and_append(
        &v.members[7],
        d,
        Body::Attest {
            claim: claims[budget],
        },
    )
    .unwrap();
}

#[test]
fn a_contested_claim_needs_k_more_attestations() {
    let (mut l, v) = village(8);
    let c = claim(&mut l, &v.members[0], Village::member(0), 60);
    let d = l.today().unwrap();
    l.sign_and_append(
        &v.members[7],
        d,
        Body::Contest {
            target: c,
            reason: "not done".into(),
        },
    )
    .unwrap();
    for k in 1..=5 {
        let r = attest(&mut l, &v.members[k], c).unwrap();
        assert!(r.events.is_empty(), "posted after {k} attestations");
    }
    let r = attest(&mut l, &v.members[6], c).unwrap();
    assert!(matches!(r.events[..], [Event::ClaimPosted { .. }]));
}

#[test]
fn meter_credits_post_after_the_contest_window_within_the_daily_cap() {
    let (mut l, v) = village(4);
    let m = Village::member(0);
    let d = day0();
    // 1 C per kWh, cap 5 C a day.
    l.credit_meter(&v.controller, m, MeterKind::Shifted, 3_000, d)
        .unwrap();
    assert_eq!(l.meter_headroom(m, d), Millis(2_000));
    let err = rejected(l.credit_meter(&v.controller, m, MeterKind::Given, 2_500, d));
    assert!(
        matches!(
            err,
            Reject::MeterCapExceeded {
                requested: Millis(2_500),
                cap: Millis(5_000),
                ..
            }
        ),
        "{err}"
    );
    l.credit_meter(&v.controller, m, MeterKind::Given, 2_000, d)
        .unwrap();
    // Not spendable during the window.
    assert_eq!(l.balance(m, None).unwrap(), Millis(0));
    assert_eq!(
        l.balance(m, Some(d.plus(3).unwrap())).unwrap(),
        Millis(5_000)
    );
    // The cap is per day.
    l.credit_meter(
        &v.controller,
        m,
        MeterKind::Given,
        1_000,
        d.plus(1).unwrap(),
    )
    .unwrap();
    conserved(&l);
}

#[test]
fn a_contested_meter_credit_becomes_a_claim() {
    let (mut l, v) = village(5);
    let m = Village::member(0);
    let d = day0();
    let credit = l
        .credit_meter(&v.controller, m, MeterKind::Shifted, 4_000, d)
        .unwrap()
        .id;
    l.sign_and_append(
        &v.members[1],
        d.plus(1).unwrap(),
        Body::Contest {
            target: credit,
            reason: "plug was off".into(),
        },
    )
    .unwrap();
    // The window passes: nothing posts.
    assert_eq!(l.balance(m, Some(d.plus(10).unwrap())).unwrap(), Millis(0));
    // The credited member may not attest it; three others make it post.
    assert_eq!(
        rejected(attest(&mut l, &v.members[0], credit)),
        Reject::SelfAttestation(m)
    );
    for k in 2..=4 {
        attest(&mut l, &v.members[k], credit).unwrap();
    }
    assert_eq!(l.balance(m, None).unwrap(), Millis(4_000));
    // After posting, a meter credit can no longer be contested.
    let c2 = l
        .credit_meter(
            &v.controller,
            m,
            MeterKind::Shifted,
            1_000,
            d.plus(1).unwrap(),
        )
        .unwrap()
        .id;
    let late = d.plus(4).unwrap();
    let r = l.sign_and_append(
        &v.members[1],
        late,
        Body::Contest {
            target: c2,
            reason: "late".into(),
        },
    );
    assert_eq!(rejected(r), Reject::CreditPosted(c2));
}

#[test]
fn the_controller_can_neither_transfer_nor_attest_nor_claim() {
    let (mut l, v) = village(5);
    let c = claim(&mut l, &v.members[0], Village::member(0), 60);
    let d = l.today().unwrap();
    for body in [
        Body::Attest { claim: c },
        Body::Transfer {
            to: Village::member(1),
            amount: Millis(1),
            memo: String::new(),
        },
        Body::Claim {
            beneficiary: Village::member(1),
            minutes: 5,
            description: "x".into(),
            evidence: Hash::ZERO,
        },
    ] {
        let kind = body.kind_name();
        assert_eq!(
            rejected(l.sign_and_append(&v.controller, d, body)),
            Reject::RoleForbidden {
                role: "controller",
                kind
            }
        );
    }
    // And members cannot credit meters.
    let r = l.sign_and_append(
        &v.members[0],
        d,
        Body::MeterCredit {
            member: Village::member(0),
            kind: MeterKind::Given,
            wh: 1000,
            source: String::new(),
        },
    );
    assert!(matches!(
        rejected(r),
        Reject::RoleForbidden { role: "member", .. }
    ));
    // Nobody may send Communs to the controller.
    let r = l.sign_and_append(
        &v.members[0],
        d,
        Body::Transfer {
            to: Village::CONTROLLER,
            amount: Millis(1),
            memo: String::new(),
        },
    );
    assert_eq!(rejected(r), Reject::ControllerAccount(Village::CONTROLLER));
}

fn fund(l: &mut Ledger<MemStore>, v: &Village, i: usize, minutes: u32) {
    let c = claim(l, &v.members[i], Village::member(i), minutes);
    for k in 1..=3 {
        attest(l, &v.members[(i + k) % v.members.len()], c).unwrap();
    }
}

#[test]
fn transfers_respect_no_debt_and_the_ceiling() {
    let (mut l, v) = village(5);
    fund(&mut l, &v, 0, 600); // 100 C
    let d = l.today().unwrap();
    let send = |l: &mut Ledger<MemStore>, from: usize, to: usize, amount: i64| {
        l.sign_and_append(
            &v.members[from],
            d,
            Body::Transfer {
                to: Village::member(to),
                amount: Millis(amount),
                memo: "thanks".into(),
            },
        )
    };
    assert!(matches!(
        rejected(send(&mut l, 0, 1, 100_001)),
        Reject::InsufficientBalance { .. }
    ));
    assert!(matches!(
        rejected(send(&mut l, 1, 0, 1)),
        Reject::InsufficientBalance { .. }
    ));
    assert_eq!(rejected(send(&mut l, 0, 0, 1)), Reject::SelfTransfer);
    assert_eq!(
        rejected(send(&mut l, 0, 1, 0)),
        Reject::NotPositive(Millis(0))
    );
    send(&mut l, 0, 1, 100_000).unwrap();
    assert_eq!(
        l.balance(Village::member(1), None).unwrap(),
        Millis(100_000)
    );
    assert_eq!(l.balance(Village::member(0), None).unwrap(), Millis(0));
    // Fill member 2 to the ceiling: 5 claims of 24 h = 1200 C, 500 C to them, the rest to the pool.
    for _ in 0..3 {
        fund(&mut l, &v, 2, 1440);
    }
    assert_eq!(
        l.balance(Village::member(2), None).unwrap(),
        Millis(500_000)
    );
    assert_eq!(l.balances(None).unwrap().unwrap().pool, Millis(220_000));
    assert!(matches!(
        rejected(send(&mut l, 1, 2, 1)),
        Reject::CeilingExceeded { .. }
    ));
    conserved(&l);
}

#[test]
fn demurrage_catches_up_day_by_day_into_the_pool() {
    let (mut l, v) = village(5);
    fund(&mut l, &v, 0, 600); // 100 C
    let m = Village::member(0);
    let year = l.today().unwrap().plus(365).unwrap();
    assert_eq!(l.balance(m, Some(year)).unwrap(), Millis(94_000));
    // The controller was down for a year; its next epoch catches up exactly.
    let r = l
        .sign_and_append(&v.controller, year, Body::DemurrageEpoch)
        .unwrap();
    let total: i64 = r
        .events
        .iter()
        .map(|e| match e {
            Event::Demurrage { total, .. } => total.0,
            _ => 0,
        })
        .sum();
    assert_eq!(total, 6_000);
    assert_eq!(l.balance(m, None).unwrap(), Millis(94_000));
    assert_eq!(l.balances(None).unwrap().unwrap().pool, Millis(6_000));
    conserved(&l);
}

#[test]
fn the_pool_pays_out_only_with_a_steward_quorum_citing_a_decision() {
    let (mut l, v) = village(5);
    fund(&mut l, &v, 0, 600);
    let d = l.today().unwrap().plus(365).unwrap();
    let grant = |amount| Body::PoolGrant {
        to: Village::member(1),
        amount: Millis(amount),
        decision: "assembly 2027-02-01 item 4".into(),
    };
    let r = l.quorum_append(&v.stewards[0], &[], d, grant(1_000));
    assert_eq!(
        rejected(r),
        Reject::NoQuorum {
            kind: "pool-grant",
            needed: 2,
            got: 1
        }
    );
    let r = l.quorum_append(&v.stewards[0], &[&v.stewards[1]], d, grant(7_000));
    assert!(matches!(rejected(r), Reject::PoolTooSmall { .. }));
    // A member cannot co-sign as a steward.
    let r = l.quorum_append(&v.stewards[0], &[&v.members[2]], d, grant(1_000));
    assert_eq!(rejected(r), Reject::CosignerNotSteward(Village::member(2)));
    let r = l.quorum_append(
        &v.stewards[0],
        &[&v.stewards[1]],
        d,
        Body::PoolGrant {
            to: Village::member(1),
            amount: Millis(1_000),
            decision: " ".into(),
        },
    );
    assert!(matches!(
        rejected(r),
        Reject::BadField {
            field: "decision",
            ..
        }
    ));
    l.quorum_append(&v.stewards[0], &[&v.stewards[2]], d, grant(6_000))
        .unwrap();
    assert_eq!(l.balance(Village::member(1), None).unwrap(), Millis(6_000));
    conserved(&l);
}

#[test]
fn replays_forgeries_and_other_sites_signatures_are_refused() {
    let (mut l, v) = village(5);
    fund(&mut l, &v, 0, 60);
    let d = l.today().unwrap();
    let body = Body::Transfer {
        to: Village::member(1),
        amount: Millis(1_000),
        memo: String::new(),
    };
    let e = l
        .draft(Village::member(0), d, body.clone())
        .unwrap()
        .sign(SITE, &v.members[0]);
    l.append(&e).unwrap();
    // Replay of the very same entry.
    assert!(matches!(rejected(l.append(&e)), Reject::Duplicate(_)));
    // A stale sequence number.
    let mut stale = e.unsigned.clone();
    stale.body = Body::Transfer {
        to: Village::member(2),
        amount: Millis(1),
        memo: String::new(),
    };
    let r = l.append(&stale.sign(SITE, &v.members[0]));
    assert!(matches!(
        rejected(r),
        Reject::BadSequence {
            found: 2,
            expected: 3,
            ..
        }
    ));
    // Wrong previous hash.
    let mut bad_prev = l.draft(Village::member(0), d, body.clone()).unwrap();
    bad_prev.prev = Hash::ZERO;
    assert!(matches!(
        rejected(l.append(&bad_prev.sign(SITE, &v.members[0]))),
        Reject::BadPrevious { .. }
    ));
    // Signed by someone else's key.
    let forged = l
        .draft(Village::member(0), d, body.clone())
        .unwrap()
        .sign(SITE, &v.members[1]);
    assert_eq!(
        rejected(l.append(&forged)),
        Reject::BadSignature(Village::member(0))
    );
    // A signature for another site.
    let other = l
        .draft(Village::member(0), d, body.clone())
        .unwrap()
        .sign("village-b", &v.members[0]);
    assert_eq!(
        rejected(l.append(&other)),
        Reject::BadSignature(Village::member(0))
    );
    // An altered amount after signing.
    let mut altered = l
        .draft(Village::member(0), d, body)
        .unwrap()
        .sign(SITE, &v.members[0]);
    altered.unsigned.body = Body::Transfer {
        to: Village::member(1),
        amount: Millis(9),
        memo: String::new(),
    };
    assert_eq!(
        rejected(l.append(&altered)),
        Reject::BadSignature(Village::member(0))
    );
    // A non-canonical (high-S) signature: s + L does not pass strict verification.
    let mut high_s = l
        .draft(Village::member(0), d, Body::DemurrageEpoch)
        .unwrap()
        .sign(SITE, &v.members[0]);
    high_s.signature[63] |= 0xf0;
    assert_eq!(
        rejected(l.append(&high_s)),
        Reject::BadSignature(Village::member(0))
    );
    conserved(&l);
}

#[test]
fn rotated_keys_take_over_and_old_keys_stop_working() {
    let (mut l, v) = village(5);
    let new = key("fresh", 1);
    let d = l.today().unwrap();
    l.sign_and_append(
        &v.members[0],
        d,
        Body::RotateKey {
            new_key: new.verifying_key().to_bytes(),
        },
    )
    .unwrap();
    let r = l.sign_and_append(&v.members[0], d, Body::DemurrageEpoch);
    assert!(matches!(r, Err(LedgerError::UnknownKey)));
    let old = l
        .draft(
            Village::member(0),
            d,
            Body::Claim {
                beneficiary: Village::member(0),
                minutes: 5,
                description: "x".into(),
                evidence: Hash::ZERO,
            },
        )
        .unwrap()
        .sign(SITE, &v.members[0]);
    assert_eq!(
        rejected(l.append(&old)),
        Reject::BadSignature(Village::member(0))
    );
    claim(&mut l, &new, Village::member(0), 5);
    // Keys are never reused.
    let r = l.sign_and_append(
        &v.members[1],
        d,
        Body::RotateKey {
            new_key: v.members[0].verifying_key().to_bytes(),
        },
    );
    assert_eq!(rejected(r), Reject::KeyInUse);
}

#[test]
fn admission_and_revocation_need_a_steward_quorum() {
    let (mut l, v) = village(4);
    let d = l.today().unwrap();
    let newcomer = key("newcomer", 0);
    let admit = Body::Admit {
        key: newcomer.verifying_key().to_bytes(),
        role: Role::Member,
        name: "ana".into(),
    };
    assert!(matches!(
        rejected(l.quorum_append(&v.stewards[0], &[], d, admit.clone())),
        Reject::NoQuorum { .. }
    ));
    assert!(matches!(
        rejected(l.quorum_append(&v.members[0], &[&v.stewards[1]], d, admit.clone())),
        Reject::RoleForbidden { .. }
    ));
    let ana = MemberId(l.state().members().len() as u32);
    l.quorum_append(&v.stewards[1], &[&v.stewards[2]], d, admit)
        .unwrap();
    let open_claim = claim(&mut l, &newcomer, ana, 5);
    let revoke = Body::Revoke {
        member: ana,
        reason: "left the village".into(),
    };
    l.quorum_append(&v.stewards[0], &[&v.stewards[2]], d, revoke)
        .unwrap();
    assert!(matches!(
        rejected(l.sign_and_append(&newcomer, d, Body::DemurrageEpoch)),
        Reject::RevokedAuthor(_)
    ));
    let r = l.sign_and_append(
        &v.members[0],
        d,
        Body::Claim {
            beneficiary: ana,
            minutes: 5,
            description: "x".into(),
            evidence: Hash::ZERO,
        },
    );
    assert_eq!(rejected(r), Reject::RevokedMember(ana));
    // Their open claim can no longer post.
    assert_eq!(
        rejected(attest(&mut l, &v.members[0], open_claim)),
        Reject::RevokedMember(ana)
    );
}

#[test]
fn parameter_changes_take_effect_from_a_future_day() {
    let (mut l, v) = village(5);
    let d = l.today().unwrap();
    let params = Params {
        per_hour_maintenance: Millis(20_000),
        ..Params::default()
    };
    let change = |effective| Body::ParamChange {
        params: params.clone(),
        effective,
        decision: "assembly 12".into(),
    };
    assert!(matches!(
        rejected(l.quorum_append(&v.stewards[0], &[&v.stewards[1]], d, change(d))),
        Reject::EffectiveNotFuture { .. }
    ));
    l.quorum_append(
        &v.stewards[0],
        &[&v.stewards[1]],
        d,
        change(d.plus(2).unwrap()),
    )
    .unwrap();
    fund(&mut l, &v, 0, 60);
    assert_eq!(l.balance(Village::member(0), None).unwrap(), Millis(10_000));
    let later = d.plus(2).unwrap();
    let c = l
        .sign_and_append(
            &v.members[1],
            later,
            Body::Claim {
                beneficiary: Village::member(1),
                minutes: 60,
                description: "x".into(),
                evidence: Hash::ZERO,
            },
        )
        .unwrap()
        .id;
    for k in 2..=4 {
        attest(&mut l, &v.members[k], c).unwrap();
    }
    assert_eq!(l.balance(Village::member(1), None).unwrap(), Millis(20_000));
}

#[test]
fn entries_dated_in_the_past_are_refused() {
    let (mut l, v) = village(4);
    let d = l.today().unwrap().plus(5).unwrap();
    l.sign_and_append(&v.controller, d, Body::DemurrageEpoch)
        .unwrap();
    let r = l.sign_and_append(&v.controller, day0(), Body::DemurrageEpoch);
    assert!(matches!(rejected(r), Reject::DateInPast { .. }));
}

#[test]
fn a_second_genesis_or_a_genesis_for_another_site_is_refused() {
    let (mut l, v) = village(4);
    let g = communalia_ledger::Unsigned {
        author: MemberId(0),
        seq: 1,
        prev: Hash::ZERO,
        date: day0(),
        body: Body::Genesis {
            site: SITE.into(),
            params: Params::default(),
            founder_key: v.stewards[0].verifying_key().to_bytes(),
            founder_name: "x".into(),
        },
    };
    assert_eq!(
        rejected(l.append(&g.clone().sign(SITE, &v.stewards[0]))),
        Reject::LateGenesis
    );
    let mut other = g.clone();
    other.body = Body::Genesis {
        site: "village-b".into(),
        params: Params::default(),
        founder_key: v.stewards[0].verifying_key().to_bytes(),
        founder_name: "x".into(),
    };
    let mut empty = Ledger::open(MemStore::default(), SITE).unwrap();
    assert!(matches!(
        rejected(empty.append(&other.sign("village-b", &v.stewards[0]))),
        Reject::WrongSite { .. }
    ));
}

#[test]
fn a_refused_entry_leaves_no_trace() {
    let (mut l, v) = village(4);
    let before = l.state().books().unwrap().clone();
    let far = l.today().unwrap().plus(30).unwrap();
    // Valid signature, future date, but breaks a rule: the day must not move.
    let r = l.sign_and_append(
        &v.members[0],
        far,
        Body::Transfer {
            to: Village::member(1),
            amount: Millis(5),
            memo: String::new(),
        },
    );
    assert!(
        matches!(rejected(r), Reject::InsufficientBalance { .. }),
        "refused for the rule it breaks, not for its date"
    );
    assert_eq!(l.today(), Some(before.today));
    assert_eq!(l.state().books().unwrap().accounts, before.accounts);
    // The author's sequence did not advance.
    l.sign_and_append(
        &v.members[0],
        day0(),
        Body::Claim {
            beneficiary: Village::member(0),
            minutes: 1,
            description: "x".into(),
            evidence: Hash::ZERO,
        },
    )
    .unwrap();
}

#[test]
fn replaying_the_log_gives_the_same_state() {
    let (mut l, v) = village(6);
    v.traffic(&mut l, 600, day0()).unwrap();
    let store = l.store().clone();
    let again = Ledger::open(store, SITE).unwrap();
    assert_eq!(again.head(), l.head());
    assert_eq!(again.balances(None).unwrap(), l.balances(None).unwrap());
    // A different site name cannot open it: every signature names the site.
    let e = Ledger::open(l.store().clone(), "village-b").unwrap_err();
    assert!(e.to_string().contains("log entry 1"), "{e}");
    let _ = Entry::decode(&l.store().records[5].bytes).unwrap();
}

#[test]
fn after_a_batched_replay_new_entries_are_verified_one_by_one() {
    let (mut l, v) = village(6);
    v.traffic(&mut l, 300, day0()).unwrap();
    let mut again = Ledger::open(l.store().clone(), SITE).unwrap();
    let d = again.today().unwrap();
    let forged = again
        .draft(Village::member(0), d, Body::DemurrageEpoch)
        .unwrap()
        .sign(SITE, &v.members[1]);
    assert!(again.append(&forged).is_err());
    let forged = again
        .draft(Village::CONTROLLER, d, Body::DemurrageEpoch)
        .unwrap()
        .sign(SITE, &v.members[1]);
    assert_eq!(
        rejected(again.append(&forged)),
        Reject::BadSignature(Village::CONTROLLER)
    );
}

#[test]
fn a_bad_signature_deep_in_a_stored_log_is_named_exactly() {
    let (mut l, v) = village(6);
    v.traffic(&mut l, 300, day0()).unwrap();
    let mut store = l.store().clone();
    // Flip one bit of the signature of entry 200 (the last 68 bytes are signature + count).
    let bytes = &mut store.records[199].bytes;
    let at = bytes.len() - 30;
    bytes[at] ^= 0x01;
    let e = Ledger::open(store.clone(), SITE).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("log entry 200 ("), "{text}");
    assert!(text.contains("signature of author"), "{text}");
    let report = communalia_ledger::verify(&store, SITE).unwrap();
    assert_eq!(report.valid_entries, 199);
}

#[test]
fn pool_expiry_removes_communs_for_good_and_the_books_still_balance() {
    let (mut l, v) = village(5);
    fund(&mut l, &v, 0, 600);
    let d = l.today().unwrap().plus(365).unwrap();
    let expire = |amount| Body::PoolExpiry {
        amount: Millis(amount),
        decision: "assembly 2027-03-01 item 2".into(),
    };
    let r = l.quorum_append(&v.stewards[0], &[&v.stewards[1]], d, expire(6_001));
    assert!(matches!(rejected(r), Reject::PoolTooSmall { .. }));
    l.quorum_append(&v.stewards[0], &[&v.stewards[1]], d, expire(2_500))
        .unwrap();
    let b = l.balances(None).unwrap().unwrap();
    assert_eq!(
        (b.pool, b.expired, b.issued),
        (Millis(3_500), Millis(2_500), Millis(100_000))
    );
    conserved(&l);
    // Only the controller or a steward records demurrage epochs.
    let r = l.sign_and_append(&v.members[0], d, Body::DemurrageEpoch);
    assert!(matches!(
        rejected(r),
        Reject::RoleForbidden { role: "member", .. }
    ));
}

#[test]
fn books_asked_for_a_far_date_are_refused_not_walked_day_by_day() {
    let (l, _) = village(2);
    let far = Day::parse("9999-12-31").unwrap();
    assert!(matches!(
        l.state().books_as_of(far),
        Err(Reject::DateTooFar { .. })
    ));
    assert!(l.state().books_as_of(day0().plus(30).unwrap()).is_ok());
}

#[test]
fn a_meter_credit_maturing_after_its_member_was_revoked_goes_to_the_pool() {
    // Regression: the credit used to post to the revoked member's account.
    let (mut l, v) = village(4);
    let m = Village::member(0);
    let d = day0();
    let credit = l
        .credit_meter(&v.controller, m, MeterKind::Shifted, 4_000, d)
        .unwrap()
        .id;
    let pool_before = l.balances(None).unwrap().unwrap().pool;
    // Revoked inside the contest window.
    l.quorum_append(
        &v.stewards[0],
        &[&v.stewards[1]],
        d.plus(1).unwrap(),
        Body::Revoke {
            member: m,
            reason: "left the village".into(),
        },
    )
    .unwrap();
    // The window closes: the books as of then already show the credit in the pool.
    let matured = d.plus(3).unwrap();
    assert_eq!(l.balance(m, Some(matured)).unwrap(), Millis(0));
    let r = l
        .sign_and_append(&v.controller, matured, Body::DemurrageEpoch)
        .unwrap();
    assert!(
        r.events.contains(&Event::CreditPosted {
            credit,
            member: m,
            to_member: Millis(0),
            to_pool: Millis(4_000),
        }),
        "{:?}",
        r.events
    );
    assert_eq!(l.balance(m, None).unwrap(), Millis(0));
    assert_eq!(
        l.balances(None).unwrap().unwrap().pool,
        Millis(pool_before.0 + 4_000)
    );
    conserved(&l);
    // A replay of the log agrees.
    let replayed = Ledger::open(l.store().clone(), SITE).unwrap();
    assert_eq!(replayed.balance(m, None).unwrap(), Millis(0));
}

#[test]
fn balances_for_a_past_date_replay_the_log_up_to_that_date() {
    // Regression: a date before the log's current day used to show today's balances.
    let (mut l, v) = village(4);
    fund(&mut l, &v, 0, 600); // 100 C to member 0 on day 0
    let (a, b) = (Village::member(0), Village::member(1));
    let d10 = day0().plus(10).unwrap();
    l.sign_and_append(
        &v.members[0],
        d10,
        Body::Transfer {
            to: b,
            amount: Millis(40_000),
            memo: String::new(),
        },
    )
    .unwrap();
    l.sign_and_append(
        &v.controller,
        day0().plus(30).unwrap(),
        Body::DemurrageEpoch,
    )
    .unwrap();
    // 100.000 C at 169 507 ppb a day with the carry, by hand: day 1 n = 100000 * 169507 =
    // 16_950_700_000, so 16 m decay and 950_700_000 carries; day 2 n = 99984 * 169507 +
    // 950_700_000 = 17_898_687_888, 17 m; and so on, 17 m a day: 99.916 C after 5 days and
    // 99.831 C after 10 (169 m in the pool).
    let d5 = l.balances(Some(day0().plus(5).unwrap())).unwrap().unwrap();
    assert_eq!(d5.as_of, day0().plus(5).unwrap());
    let row = |bs: &communalia_ledger::Balances, m: MemberId| {
        bs.rows.iter().find(|r| r.member == m).unwrap().balance
    };
    assert_eq!(row(&d5, a), Millis(99_916));
    assert_eq!(row(&d5, b), Millis(0));
    assert_eq!(d5.pool, Millis(84));
    // On the day of the transfer: ten days of demurrage, then the transfer.
    let at10 = l.balances(Some(d10)).unwrap().unwrap();
    assert_eq!(row(&at10, a), Millis(59_831));
    assert_eq!(row(&at10, b), Millis(40_000));
    assert_eq!(at10.pool, Millis(169));
    assert_eq!(l.balance(a, Some(d10)).unwrap(), Millis(59_831));
    // Today's answer is unchanged, and the past one is not it.
    let now = l.balances(None).unwrap().unwrap();
    assert!(row(&now, a) < Millis(59_831), "{now:?}");
    // Before genesis there is nothing; members admitted later are not listed.
    assert_eq!(l.balances(Some(Day(day0().0 - 1))).unwrap(), None);
    assert_eq!(
        communalia_ledger::balances_on(SITE, l.log().iter().map(|e| &e.entry).take(2), d10)
            .unwrap()
            .unwrap()
            .rows
            .len(),
        2
    );
}

#[test]
fn parameters_asked_for_a_past_day_are_those_of_that_day_not_of_a_later_change() {
    let (mut l, v) = village(4);
    let d = l.today().unwrap();
    let effective = d.plus(5).unwrap();
    let new = Params {
        account_ceiling: Millis(80_000),
        meter_daily_cap: Millis(9_000),
        ..Params::default()
    };
    l.quorum_append(
        &v.stewards[0],
        &[&v.stewards[1]],
        d,
        Body::ParamChange {
            params: new.clone(),
            effective,
            decision: "assembly 13".into(),
        },
    )
    .unwrap();
    l.sign_and_append(&v.controller, d.plus(8).unwrap(), Body::DemurrageEpoch)
        .unwrap();
    // Today, and a day after the change took effect: the new parameters.
    assert_eq!(l.params_on(l.today().unwrap()), Some(new.clone()));
    assert_eq!(l.params_on(effective), Some(new.clone()));
    // The day before it, and the day the change was decided: the old ones, with the change
    // still to come.
    let before = Day(effective.0 - 1);
    assert_eq!(l.params_on(before), Some(Params::default()));
    assert_eq!(l.params_on(d), Some(Params::default()));
    let books = l.books_as_of(before).unwrap().unwrap();
    assert_eq!(books.today, before);
    assert_eq!(books.pending_params, vec![(effective, new)]);
    assert_eq!(l.meter_headroom(Village::member(0), before), Millis(5_000));
    // Before genesis there are none.
    assert_eq!(l.params_on(Day(d.0 - 1)), None);
}

#[test]
fn a_quorum_entry_dated_the_day_a_quorum_change_takes_effect_needs_the_new_quorum() {
    let (mut l, v) = village(4);
    let d = l.today().unwrap();
    let effective = d.plus(2).unwrap();
    let change = |quorum| Body::ParamChange {
        params: Params {
            steward_quorum: quorum,
            ..Params::default()
        },
        effective,
        decision: "assembly 14".into(),
    };
    l.quorum_append(&v.stewards[0], &[&v.stewards[1]], d, change(3))
        .unwrap();
    // Dated the effective day while the log is still on `d`: two signers are no longer enough.
    let revoke = Body::Revoke {
        member: Village::member(3),
        reason: "moved away".into(),
    };
    let two = l.quorum_append(&v.stewards[0], &[&v.stewards[1]], effective, revoke.clone());
    assert_eq!(
        rejected(two),
        Reject::NoQuorum {
            kind: "revoke",
            needed: 3,
            got: 2
        }
    );
    assert_eq!(
        l.today(),
        Some(d),
        "a refused entry leaves the day as it was"
    );
    l.quorum_append(
        &v.stewards[0],
        &[&v.stewards[1], &v.stewards[2]],
        effective,
        revoke,
    )
    .unwrap();
    // And the other way: lowered to one from a later day, the founder alone suffices on it.
    let later = effective.plus(2).unwrap();
    l.quorum_append(
        &v.stewards[0],
        &[&v.stewards[1], &v.stewards[2]],
        effective,
        Body::ParamChange {
            params: Params {
                steward_quorum: 1,
                ..Params::default()
            },
            effective: later,
            decision: "assembly 15".into(),
        },
    )
    .unwrap();
    l.quorum_append(
        &v.stewards[0],
        &[],
        later,
        Body::Revoke {
            member: Village::member(2),
            reason: "moved away".into(),
        },
    )
    .unwrap();
    conserved(&l);
}
