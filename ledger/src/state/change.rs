//! What an entry changes in the books, planned in full first (`plan_body`) and then applied
//! whole (`Change::apply`), so a refused entry leaves no trace.

use super::*;

/// A fully checked change. Applying it is all or nothing as well: `Change::apply` checks
/// everything it needs before its first write, so even a caller that skipped planning never
/// sees a half-applied change.
pub(super) enum Change {
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

pub(super) fn plan_body(
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

pub(super) fn closed_by(ev: &Event) -> Option<(Hash, Closed)> {
    match ev {
        Event::ClaimPosted { claim, .. } => Some((*claim, Closed::ClaimPosted)),
        Event::ClaimExpired { claim } => Some((*claim, Closed::ClaimExpired)),
        Event::CreditPosted { credit, .. } => Some((*credit, Closed::CreditPosted)),
        _ => None,
    }
}

/// Claims and credits closed before this entry, and by the day change it causes.
pub(super) struct Closes<'a> {
    pub(super) before: &'a HashMap<Hash, Closed>,
    pub(super) now: &'a HashMap<Hash, Closed>,
}

pub(super) fn closed_or_unknown(closed: &Closes<'_>, id: Hash) -> Reject {
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
    pub(super) fn apply(
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
