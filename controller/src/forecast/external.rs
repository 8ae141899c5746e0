//! An external PV forecast (for example written by Home Assistant from a weather service while
//! the site has internet), which takes precedence over the local solar model where it covers the
//! plan. Format: `{"start": "2026-03-02T06:00:00Z", "step_minutes": 15, "pv_watts": [0, 120, ...]}`.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub struct ExternalForecast {
    pub start: DateTime<Utc>,
    pub step: Duration,
    pub watts: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    start: String,
    step_minutes: u32,
    pv_watts: Vec<f64>,
}

impl ExternalForecast {
    /// Parses and checks a forecast; the error says what is wrong and where.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not a forecast: {e}"))?;
        let start = DateTime::parse_from_rfc3339(&raw.start)
            .map_err(|e| format!("start: {:?} is not an RFC 3339 time ({e})", raw.start))?
            .with_timezone(&Utc);
        if !(1..=1440).contains(&raw.step_minutes) {
            return Err(format!(
                "step_minutes: {} is not between 1 and 1440",
                raw.step_minutes
            ));
        }
        if raw.pv_watts.is_empty() || raw.pv_watts.len() > 10_000 {
            return Err(format!(
                "pv_watts: {} values; give 1 to 10000",
                raw.pv_watts.len()
            ));
        }
        if let Some((i, w)) = raw
            .pv_watts
            .iter()
            .enumerate()
            .find(|(_, w)| !w.is_finite() || **w < 0.0)
        {
            return Err(format!("pv_watts[{i}]: {w} is not a power of 0 W or more"));
        }
        Ok(Self {
            start,
            step: Duration::minutes(i64::from(raw.step_minutes)),
            watts: raw.pv_watts,
        })
    }

    /// The forecast power at `t`, if the forecast covers it.
    pub fn at(&self, t: DateTime<Utc>) -> Option<f64> {
        if t < self.start {
            return None;
        }
        let i = (t - self.start).num_seconds() / self.step.num_seconds().max(1);
        self.watts.get(usize::try_from(i).ok()?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_forecast_and_answers_only_inside_it() {
        let f = ExternalForecast::parse(
            br#"{"start": "2026-03-02T06:00:00Z", "step_minutes": 60, "pv_watts": [100, 2000]}"#,
        )
        .unwrap();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(f.at(t("2026-03-02T05:59:00Z")), None);
        assert_eq!(f.at(t("2026-03-02T06:30:00Z")), Some(100.0));
        assert_eq!(f.at(t("2026-03-02T07:59:59Z")), Some(2000.0));
        assert_eq!(f.at(t("2026-03-02T08:00:00Z")), None);
    }

    #[test]
    fn bad_forecasts_say_what_is_wrong() {
        let err = |s: &str| ExternalForecast::parse(s.as_bytes()).unwrap_err();
        assert!(err("[1,2]").starts_with("not a forecast"));
        assert!(err(r#"{"start":"noon","step_minutes":15,"pv_watts":[1]}"#).starts_with("start:"));
        assert!(
            err(r#"{"start":"2026-03-02T06:00:00Z","step_minutes":0,"pv_watts":[1]}"#)
                .starts_with("step_minutes:")
        );
        assert_eq!(
            err(r#"{"start":"2026-03-02T06:00:00Z","step_minutes":15,"pv_watts":[1,-4]}"#),
            "pv_watts[1]: -4 is not a power of 0 W or more"
        );
    }
}
