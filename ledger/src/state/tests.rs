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
