//! A deterministic village for tests, benchmarks and demos: keys derived from a seed, a founder,
//! two more stewards, a controller and members, and synthetic everyday traffic.

use ed25519_dalek::SigningKey;

use crate::amount::Millis;
use crate::day::Day;
use crate::entry::{Body, Hash, MemberId, MeterKind, Role};
use crate::ledger::{Ledger, LedgerError};
use crate::params::Params;
use crate::store::Store;

/// A key derived from a seed text and a number (never use for a real site).
pub fn key(seed: &str, i: u32) -> SigningKey {
    let mut buf = seed.as_bytes().to_vec();
    buf.extend_from_slice(&i.to_be_bytes());
    SigningKey::from_bytes(&Hash::of(&buf).0)
}

/// The village's keys; member numbers follow admission order.
#[derive(Debug)]
pub struct Village {
    pub site: String,
    /// Stewards #0 (founder), #1, #2.
    pub stewards: Vec<SigningKey>,
    /// The controller, #3.
    pub controller: SigningKey,
    /// Members #4 onwards.
    pub members: Vec<SigningKey>,
}

impl Village {
    pub const CONTROLLER: MemberId = MemberId(3);

    /// Member number of `members[i]`.
    pub fn member(i: usize) -> MemberId {
        MemberId(4 + i as u32)
    }

    /// Keys for a village with `members` ordinary members.
    pub fn keys(site: &str, members: usize) -> Village {
        Village {
            site: site.to_string(),
            stewards: (0..3).map(|i| key(site, i)).collect(),
            controller: key(site, 3),
            members: (0..members).map(|i| key(site, 4 + i as u32)).collect(),
        }
    }

    /// Starts a ledger on `store` and admits everyone on `day` (quorum 2).
    pub fn found<S: Store>(
        store: S,
        site: &str,
        members: usize,
        params: Params,
        day: Day,
    ) -> Result<(Ledger<S>, Village), LedgerError> {
        let v = Village::keys(site, members);
        let mut l = Ledger::init(store, site, params, &v.stewards[0], "founder", day)?;
        let admit = |l: &mut Ledger<S>, key: &SigningKey, role: Role, name: String| {
            let body = Body::Admit {
                key: key.verifying_key().to_bytes(),
                role,
                name,
            };
            let cosign: Vec<&SigningKey> = if l.state().quorum_needed() > 1 {
                vec![&v.stewards[1]]
            } else {
                vec![]
            };
            l.quorum_append(&v.stewards[0], &cosign, day, body)
        };
        admit(&mut l, &v.stewards[1], Role::Steward, "steward 1".into())?;
        admit(&mut l, &v.stewards[2], Role::Steward, "steward 2".into())?;
        admit(&mut l, &v.controller, Role::Controller, "controller".into())?;
        for (i, k) in v.members.iter().enumerate() {
            admit(&mut l, k, Role::Member, format!("member {i}"))?;
        }
        Ok((l, v))
    }

    /// Everyday traffic until the log holds `total` entries: each day a demurrage epoch,
    /// meter credits, a claim with its attestations, and transfers. Deterministic.
    pub fn traffic<S: Store>(
        &self,
        l: &mut Ledger<S>,
        total: u64,
        mut day: Day,
    ) -> Result<Day, LedgerError> {
        let n = self.members.len();
        if n < 4 {
            return Err(crate::reject::Reject::BadField {
                field: "members",
                why: "traffic needs at least 4 members".into(),
            }
            .into());
        }
        let mut round: usize = 0;
        let remaining = |l: &Ledger<S>| total.saturating_sub(l.log().len() as u64);
        while remaining(l) > 0 {
            day = day.plus(1).unwrap_or(day);
            l.sign_and_append(&self.controller, day, Body::DemurrageEpoch)?;
            for i in 0..n {
                if remaining(l) == 0 {
                    return Ok(day);
                }
                let m = (round * 7 + i) % n;
                let kind = if i % 2 == 0 {
                    MeterKind::Shifted
                } else {
                    MeterKind::Given
                };
                // Every other credit says what earned it (the two encodings of a credit).
                let source = if round.is_multiple_of(2) {
                    ""
                } else {
                    "washer 09:00-10:00"
                };
                l.credit_meter_for(&self.controller, Village::member(m), kind, 700, day, source)?;
            }
            // A claim by one member, attested by three others.
            let c = round % n;
            if remaining(l) < 4 {
                continue;
            }
            let r = l.sign_and_append(
                &self.members[c],
                day,
                Body::Claim {
                    beneficiary: Village::member(c),
                    minutes: 30,
                    description: "cleaned the panels".into(),
                    evidence: Hash::ZERO,
                },
            )?;
            for a in 1..=3 {
                l.sign_and_append(
                    &self.members[(c + a) % n],
                    day,
                    Body::Attest { claim: r.id },
                )?;
            }
            // Transfers from whoever has something.
            for i in 0..n {
                if remaining(l) == 0 {
                    return Ok(day);
                }
                let from = (round + i) % n;
                let to = (from + 1 + round % (n - 1)) % n;
                let bal = l.balance(Village::member(from), None)?;
                let to_bal = l.balance(Village::member(to), None)?;
                let ceiling = l.params_on(day).map_or(0, |p| p.account_ceiling.0);
                let amount = Millis(bal.0.min(1_500).min(ceiling - to_bal.0));
                if amount.0 <= 0 {
                    continue;
                }
                l.sign_and_append(
                    &self.members[from],
                    day,
                    Body::Transfer {
                        to: Village::member(to),
                        amount,
                        memo: String::new(),
                    },
                )?;
            }
            round += 1;
        }
        Ok(day)
    }
}
