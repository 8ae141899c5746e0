//! Exact daily demurrage in integer milli-Communs with a per-account remainder ("carry").
//!
//! For a balance `b > 0`, a rate `r` in parts per billion per day and the account's carry `c`:
//! `n = b * r + c; d = n / 1e9; c' = n % 1e9; b' = b - d`. The decayed `d` goes to the community
//! pool. The carry keeps small balances decaying too, and nothing drifts.

/// Parts per billion.
pub const PPB: u64 = 1_000_000_000;

/// A daily demurrage rate in parts per billion per day (`0 ..= 999_999_999`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u32);

/// Why a rate is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateError {
    #[error("demurrage rate {0} ppb per day must be below 1000000000")]
    PpbTooLarge(u64),
    #[error("demurrage rate {0} % per year must be a number from 0 to below 100")]
    PercentOutOfRange(f64),
}

/// One day of demurrage for one account: the new balance, the new carry, what decayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayDecay {
    pub balance: i64,
    pub carry: u32,
    pub decayed: i64,
}

impl Rate {
    pub const ZERO: Rate = Rate(0);

    pub fn from_ppb_per_day(ppb: u64) -> Result<Rate, RateError> {
        u32::try_from(ppb)
            .ok()
            .filter(|&p| u64::from(p) < PPB)
            .map(Rate)
            .ok_or(RateError::PpbTooLarge(ppb))
    }

    pub fn ppb_per_day(self) -> u32 {
        self.0
    }

    /// The daily rate that takes 100.000 C to `100 * (1 - pct/100)` C after 365 days, as
    /// closely as the exact integer rule allows (ties go to the smaller rate). Deterministic:
    /// the float is used only to state the target; the search itself is in integers.
    /// 6 %/yr gives 169 507 ppb per day.
    pub fn from_percent_per_year(pct: f64) -> Result<Rate, RateError> {
        if !pct.is_finite() || !(0.0..100.0).contains(&pct) {
            return Err(RateError::PercentOutOfRange(pct));
        }
        let start = 100_000_i64;
        let target = (start as f64 * (1.0 - pct / 100.0)).round() as i64;
        let after = |r: u32| decay_days(start, 365, Rate(r)).0;
        // after(r) is non-increasing in r: find the smallest r with after(r) <= target.
        let (mut lo, mut hi) = (0_u32, (PPB - 1) as u32);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if after(mid) <= target {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let below = lo;
        // Prefer the neighbour whose result is closer to the target.
        if below > 0 && (after(below - 1) - target).abs() < (after(below) - target).abs() {
            return Ok(Rate(below - 1));
        }
        Ok(Rate(below))
    }
}

/// One day of demurrage. Balances at or below zero do not decay (their carry is kept).
pub fn decay_one_day(balance: i64, carry: u32, rate: Rate) -> DayDecay {
    if balance <= 0 || rate.0 == 0 {
        return DayDecay {
            balance,
            carry,
            decayed: 0,
        };
    }
    // b < 2^63, r < 1e9, c < 1e9: n < 2^63 * 1e9 + 1e9 fits in i128 with room to spare.
    let n = i128::from(balance) * i128::from(rate.0) + i128::from(carry);
    let ppb = i128::from(PPB);
    // d <= b * r / 1e9 < b, so the new balance stays positive and the casts cannot truncate.
    let decayed = (n / ppb) as i64;
    let carry = (n % ppb) as u32;
    DayDecay {
        balance: balance - decayed,
        carry,
        decayed,
    }
}

/// `days` days of demurrage on `amount`, starting with no carry: (amount after, carry after).
pub fn decay_days(amount: i64, days: u32, rate: Rate) -> (i64, u32) {
    let (mut b, mut c) = (amount, 0_u32);
    for _ in 0..days {
        let d = decay_one_day(b, c, rate);
        b = d.balance;
        c = d.carry;
        if b <= 0 {
            break;
        }
    }
    (b, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_six_percent_a_year() {
        let r = Rate::from_ppb_per_day(169_507).unwrap();
        assert_eq!(decay_days(100_000, 365, r).0, 94_000);
        assert_eq!(decay_days(1_000, 365, r).0, 940);
        assert_eq!(Rate::from_percent_per_year(6.0).unwrap(), r);
    }

    #[test]
    fn small_balances_decay_thanks_to_the_carry() {
        let r = Rate::from_percent_per_year(6.0).unwrap();
        // Without a carry, 1 C would never lose a milli (1000 * 169507 / 1e9 < 1).
        assert!(decay_days(1_000, 365, r).0 < 1_000);
        // A single milli decays once 5900 days of carry add up to a whole milli.
        assert_eq!(decay_days(1, 5899, r).0, 1);
        assert_eq!(decay_days(1, 5900, r).0, 0);
    }

    #[test]
    fn zero_rate_and_non_positive_balances_do_not_move() {
        assert_eq!(decay_days(12_345, 1000, Rate::ZERO), (12_345, 0));
        let r = Rate::from_ppb_per_day(500_000_000).unwrap();
        assert_eq!(
            decay_one_day(-5, 7, r),
            DayDecay {
                balance: -5,
                carry: 7,
                decayed: 0
            }
        );
        assert_eq!(decay_one_day(0, 7, r).decayed, 0);
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        assert!(Rate::from_ppb_per_day(PPB).is_err());
        assert!(Rate::from_percent_per_year(100.0).is_err());
        assert!(Rate::from_percent_per_year(f64::NAN).is_err());
        assert!(Rate::from_percent_per_year(-1.0).is_err());
        assert_eq!(Rate::from_percent_per_year(0.0).unwrap(), Rate::ZERO);
    }

    #[test]
    fn huge_balances_do_not_overflow() {
        let r = Rate::from_ppb_per_day(999_999_999).unwrap();
        let d = decay_one_day(i64::MAX, 999_999_999, r);
        assert!(d.balance > 0 && d.carry < 1_000_000_000);
        assert_eq!(
            i128::from(d.balance) + i128::from(d.decayed),
            i128::from(i64::MAX)
        );
    }
}
