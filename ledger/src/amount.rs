//! Amounts in integer milli-Communs (1 C = 1000 m): parsing, display, checked arithmetic.

use std::fmt;

/// Milli-Communs per Commun.
pub const MILLIS_PER_COMMUN: i64 = 1000;

/// An amount of Communs, counted exactly in milli-Communs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

/// Why a text is not an amount of Communs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not an amount of Communs: {why} (write e.g. 12.5 or 0.125, at most 3 decimals)"
)]
pub struct ParseAmountError {
    pub text: String,
    pub why: &'static str,
}

impl Millis {
    pub const ZERO: Millis = Millis(0);

    /// Whole Communs.
    pub fn communs(c: i64) -> Option<Millis> {
        c.checked_mul(MILLIS_PER_COMMUN).map(Millis)
    }

    pub fn checked_add(self, other: Millis) -> Option<Millis> {
        self.0.checked_add(other.0).map(Millis)
    }

    pub fn checked_sub(self, other: Millis) -> Option<Millis> {
        self.0.checked_sub(other.0).map(Millis)
    }

    /// Parses `12`, `12.5`, `-0.125` into milli-Communs, exactly (no floating point).
    pub fn parse(text: &str) -> Result<Millis, ParseAmountError> {
        let err = |why| ParseAmountError {
            text: text.to_string(),
            why,
        };
        let t = text.trim();
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (whole, frac) = match t.split_once('.') {
            Some((w, f)) => (w, f),
            None => (t, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(err("no digits"));
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("only digits and one decimal point are allowed"));
        }
        if frac.len() > 3 {
            return Err(err("more than 3 decimals (the smallest unit is 0.001 C)"));
        }
        let mut millis: i64 = 0;
        for b in whole.bytes() {
            millis = millis
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(|| err("too large"))?;
        }
        millis = millis
            .checked_mul(MILLIS_PER_COMMUN)
            .ok_or_else(|| err("too large"))?;
        let mut scale = 100;
        for b in frac.bytes() {
            millis = millis
                .checked_add(i64::from(b - b'0') * scale)
                .ok_or_else(|| err("too large"))?;
            scale /= 10;
        }
        Ok(Millis(if negative { -millis } else { millis }))
    }
}

impl fmt::Display for Millis {
    /// `94.000`, `-0.005`: always three decimals, exact.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = i128::from(self.0);
        let sign = if v < 0 { "-" } else { "" };
        let a = v.abs();
        let text = format!(
            "{sign}{}.{:03}",
            a / i128::from(MILLIS_PER_COMMUN),
            a % i128::from(MILLIS_PER_COMMUN)
        );
        f.pad(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_exactly() {
        for (text, millis, shown) in [
            ("100", 100_000, "100.000"),
            ("0.94", 940, "0.940"),
            ("1.5", 1500, "1.500"),
            ("-0.005", -5, "-0.005"),
            (".25", 250, "0.250"),
            ("7.", 7000, "7.000"),
        ] {
            let m = Millis::parse(text).unwrap();
            assert_eq!(m, Millis(millis), "{text}");
            assert_eq!(m.to_string(), shown);
        }
        assert_eq!(Millis(i64::MIN).to_string(), "-9223372036854775.808");
    }

    #[test]
    fn rejects_bad_amounts_with_a_reason() {
        for bad in [
            "",
            ".",
            "1.2345",
            "1,5",
            "abc",
            "99999999999999999999",
            "1e3",
        ] {
            let e = Millis::parse(bad).unwrap_err();
            assert!(e.to_string().contains("not an amount"), "{e}");
        }
    }
}
