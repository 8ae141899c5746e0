//! The books: balances, the pool, pending credits and claims, and what a day change does to
//! them (demurrage, parameters taking effect, credits maturing, claims expiring).

use super::*;

/// New Communs planned for one member: the totals after the issue, checked but not written.
#[derive(Clone, Copy, Debug)]
pub(super) struct Issue {
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
    pub(super) fn new(today: Day, params: Params) -> Books {
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

    pub(super) fn account(&self, m: MemberId) -> Account {
        self.accounts.get(m.0 as usize).copied().unwrap_or_default()
    }

    /// Sets a balance already checked to exist (see `Issue` and `Change::apply`).
    pub(super) fn set_balance(&mut self, m: MemberId, balance: i64) {
        if let Some(acc) = self.accounts.get_mut(m.0 as usize) {
            acc.balance = balance;
        }
    }

    /// The balance of a known member, or why there is none.
    pub(super) fn known_balance(&self, m: MemberId) -> Result<i64, Reject> {
        self.accounts
            .get(m.0 as usize)
            .map(|a| a.balance)
            .ok_or(Reject::UnknownMember(m))
    }

    /// Where new Communs for `m` go, computed without changing anything: up to the ceiling to
    /// the member, the rest to the pool; all of it to the pool when `m` has been revoked
    /// (Communs move only between admitted members).
    pub(super) fn plan_issue(&self, m: MemberId, amount: i64) -> Result<Issue, Reject> {
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
    pub(super) fn commit_issue(&mut self, i: Issue) -> (i64, i64) {
        self.set_balance(i.member, i.balance);
        self.pool = i.pool;
        self.issued = i.issued;
        (i.to_member, i.to_pool)
    }

    /// New Communs for `m` (see `plan_issue`); on error nothing changes.
    pub(super) fn issue(&mut self, m: MemberId, amount: i64) -> Result<(i64, i64), Reject> {
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

    pub(super) fn end_of_day(&mut self, events: &mut Vec<Event>) -> Result<(), Reject> {
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
