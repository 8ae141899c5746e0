//! Calendar days as plain integers (days since 1970-01-01), so the ledger never reads a clock.

use std::fmt;

/// A calendar day: days since 1970-01-01 (proleptic Gregorian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

/// Why a text is not a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a date: {why} (write YYYY-MM-DD)")]
pub struct ParseDayError {
    pub text: String,
    pub why: &'static str,
}

impl Day {
    /// The day for a year, month (1-12) and day of month, if it exists.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        if !(-100_000..=100_000).contains(&year) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = i64::from(year) - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        i32::try_from(era * 146_097 + doe - 719_468).ok().map(Day)
    }

    /// Year, month and day of month.
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// `n` days later, if representable.
    pub fn plus(self, n: u32) -> Option<Day> {
        i32::try_from(n)
            .ok()
            .and_then(|n| self.0.checked_add(n))
            .map(Day)
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Day, ParseDayError> {
        let err = |why| ParseDayError {
            text: text.to_string(),
            why,
        };
        let mut parts = text.trim().splitn(3, '-');
        let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected three parts separated by '-'"));
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(err("expected 4-digit year, 2-digit month and day"));
        }
        let num = |s: &str| -> Result<u32, ParseDayError> {
            if s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().map_err(|_| err("not a number"))
            } else {
                Err(err("not a number"))
            }
        };
        let (y, m, d) = (num(y)?, num(m)?, num(d)?);
        let y = i32::try_from(y).map_err(|_| err("year out of range"))?;
        Day::from_ymd(y, m, d).ok_or_else(|| err("no such day"))
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        f.pad(&format!("{y:04}-{m:02}-{d:02}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days_round_trip() {
        assert_eq!(Day::parse("1970-01-01").unwrap(), Day(0));
        assert_eq!(Day::parse("2000-03-01").unwrap(), Day(11_017));
        assert_eq!(Day::parse("2026-11-30").unwrap().to_string(), "2026-11-30");
        for n in (-800_000..800_000).step_by(997) {
            let day = Day(n);
            let (y, m, d) = day.ymd();
            assert_eq!(Day::from_ymd(y as i32, m, d), Some(day));
        }
    }

    #[test]
    fn bad_dates_say_why() {
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "26-01-01",
            "2026/01/01",
            "",
            "2026-1-01",
        ] {
            assert!(Day::parse(bad).is_err(), "{bad}");
        }
        assert!(Day::parse("2024-02-29").is_ok());
    }
}
