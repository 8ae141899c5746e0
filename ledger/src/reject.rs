//! Why an entry is refused: one variant per rule, each message saying what and where.

use crate::amount::Millis;
use crate::day::Day;
use crate::entry::{Hash, MemberId};

/// An entry the ledger refuses. Nothing is changed when an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error(
        "the log is empty: its first entry must be a genesis entry by member #0 with sequence number 1 and a zero previous hash"
    )]
    NotGenesis,
    #[error("genesis names site {found:?}, but this ledger is for site {expected:?}")]
    WrongSite { found: String, expected: String },
    #[error("a genesis entry is only valid as the first entry of the log")]
    LateGenesis,
    #[error("entry {0} is already in the log (replay)")]
    Duplicate(Hash),
    #[error("unknown author {0}")]
    UnknownAuthor(MemberId),
    #[error("author {0} has been revoked and can no longer sign")]
    RevokedAuthor(MemberId),
    #[error(
        "sequence number {found} of author {author} is not previous + 1 (expected {expected}; a replay or a gap)"
    )]
    BadSequence {
        author: MemberId,
        found: u64,
        expected: u64,
    },
    #[error("previous-entry hash of author {author} is {found}, expected {expected}")]
    BadPrevious {
        author: MemberId,
        found: Hash,
        expected: Hash,
    },
    #[error(
        "signature of author {0} does not verify for this site (forged, altered, or signed for another site)"
    )]
    BadSignature(MemberId),
    #[error("co-signature of {0} does not verify for this site")]
    BadCosignature(MemberId),
    #[error("co-signer {0} is not an active steward")]
    CosignerNotSteward(MemberId),
    #[error("co-signer {0} signs twice or is the author")]
    DuplicateCosigner(MemberId),
    #[error("a {kind} entry takes no co-signatures")]
    UnexpectedCosigners { kind: &'static str },
    #[error("a {kind} entry needs {needed} steward signatures, it has {got}")]
    NoQuorum {
        kind: &'static str,
        needed: u32,
        got: u32,
    },
    #[error("a {role} may not sign a {kind} entry")]
    RoleForbidden {
        role: &'static str,
        kind: &'static str,
    },
    #[error("date {date} is before the log's current day {today}")]
    DateInPast { date: Day, today: Day },
    #[error("date {date} is more than {max_days} days after the log's current day {today}")]
    DateTooFar {
        date: Day,
        today: Day,
        max_days: u32,
    },
    #[error("unknown member {0}")]
    UnknownMember(MemberId),
    #[error("member {0} has been revoked")]
    RevokedMember(MemberId),
    #[error("{0} is a controller and holds no Communs")]
    ControllerAccount(MemberId),
    #[error("this key already belongs to a member (keys are never reused)")]
    KeyInUse,
    #[error("the key is not a usable ed25519 public key")]
    BadKey,
    #[error("{field}: {why}")]
    BadField { field: &'static str, why: String },
    #[error("amount must be positive, got {0} C")]
    NotPositive(Millis),
    #[error(
        "{from} has {balance} C; sending {amount} C would go below the credit limit of {limit} C below zero"
    )]
    InsufficientBalance {
        from: MemberId,
        balance: Millis,
        amount: Millis,
        limit: Millis,
    },
    #[error(
        "{to} has {balance} C; receiving {amount} C would exceed the account ceiling of {ceiling} C"
    )]
    CeilingExceeded {
        to: MemberId,
        balance: Millis,
        amount: Millis,
        ceiling: Millis,
    },
    #[error("a transfer must go to another member")]
    SelfTransfer,
    #[error("no open claim or contestable meter credit with id {0}")]
    UnknownClaim(Hash),
    #[error("claim {0} has already posted")]
    ClaimPosted(Hash),
    #[error("claim {0} has expired unposted")]
    ClaimExpired(Hash),
    #[error("meter credit {0} has already posted; its contest window is closed")]
    CreditPosted(Hash),
    #[error("{0} may not attest a claim they made or benefit from (self-attestation)")]
    SelfAttestation(MemberId),
    #[error("{member} has already attested or contested {claim}")]
    AlreadyAttested { member: MemberId, claim: Hash },
    #[error("{member} has used today's budget of {budget} attestations")]
    BudgetExhausted { member: MemberId, budget: u32 },
    #[error("{member} may not contest their own claim or credit")]
    SelfContest { member: MemberId },
    #[error(
        "meter credit cap: {member} already has {already} C of meter credits on {day}; {requested} C more would exceed the daily cap of {cap} C"
    )]
    MeterCapExceeded {
        member: MemberId,
        day: Day,
        already: Millis,
        requested: Millis,
        cap: Millis,
    },
    #[error("{wh} Wh earns less than 0.001 C at this rate")]
    TooSmall { wh: u64 },
    #[error("the pool holds {pool} C, less than {amount} C")]
    PoolTooSmall { pool: Millis, amount: Millis },
    #[error("cannot revoke the last active steward")]
    LastSteward,
    #[error("a parameter change must take effect after its date {date}, not on {effective}")]
    EffectiveNotFuture { date: Day, effective: Day },
    #[error("amount overflows in {0}")]
    Overflow(&'static str),
}
