//! Load forecast from the site's own history: the consumption nobody controls, learnt per
//! quarter hour of the local day, so the plan expects the evening peak before it comes.
//! Pure; the runtime saves and loads it (JSON) so it survives restarts.

use serde::{Deserialize, Serialize};

/// Quarter hours in a day.
pub const SLOTS: usize = 96;
const SLOT_SECONDS: f64 = 900.0;
/// A slot's value follows what was measured in it with a time constant of about three days'
/// worth of that slot: a single odd evening moves it a little, a new habit within a week.
const DAYS: f64 = 3.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadProfile {
    /// Watts per quarter hour of the local day; `None` until measured.
    slots: Vec<Option<f64>>,
}

impl Default for LoadProfile {
    fn default() -> Self {
        Self {
            slots: vec![None; SLOTS],
        }
    }
}

impl LoadProfile {
    /// Records `watts` measured at `local_minute` (0..1440), `dt_seconds` after the last sample.
    pub fn record(&mut self, local_minute: u32, watts: f64, dt_seconds: f64) {
        if !watts.is_finite() || watts < 0.0 || !dt_seconds.is_finite() || dt_seconds <= 0.0 {
            return;
        }
        let i = (local_minute as usize / 15) % SLOTS;
        let k = (dt_seconds / (DAYS * SLOT_SECONDS)).min(1.0);
        let slot = &mut self.slots[i];
        *slot = Some(match *slot {
            Some(v) => v + (watts - v) * k,
            None => watts,
        });
    }

    /// Expected watts for `steps` quarter hours from `start_minute`, `fallback` where the
    /// profile has not learnt the slot yet.
    pub fn forecast(&self, start_minute: u32, steps: usize, fallback: f64) -> Vec<f64> {
        (0..steps)
            .map(|s| {
                let i = (start_minute as usize / 15 + s) % SLOTS;
                self.slots.get(i).copied().flatten().unwrap_or(fallback)
            })
            .collect()
    }

    /// Reads a saved profile; anything malformed gives an empty one, never an error that
    /// stops the controller (the profile is only a forecast).
    pub fn from_json(text: &str) -> Option<Self> {
        let p: Self = serde_json::from_str(text).ok()?;
        let ok =
            p.slots.len() == SLOTS && p.slots.iter().flatten().all(|w| w.is_finite() && *w >= 0.0);
        ok.then_some(p)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_evening_peak_and_falls_back_elsewhere() {
        let mut p = LoadProfile::default();
        // Three evenings at 19:00-19:15 drawing 900 W, sampled every 2 s.
        for _ in 0..3 {
            for s in 0..450 {
                p.record(19 * 60 + s * 2 / 60, 900.0, 2.0);
            }
        }
        let f = p.forecast(18 * 60 + 45, 3, 250.0);
        assert_eq!(f[0], 250.0, "18:45 never measured");
        assert!((f[1] - 900.0).abs() < 1e-6, "{f:?}");
        assert_eq!(f[2], 250.0);
    }

    #[test]
    fn one_odd_evening_moves_the_slot_only_a_little() {
        let mut p = LoadProfile::default();
        for s in 0..450 {
            p.record(19 * 60 + s * 2 / 60, 300.0, 2.0);
        }
        for s in 0..450 {
            p.record(19 * 60 + s * 2 / 60, 3000.0, 2.0);
        }
        let v = p.forecast(19 * 60, 1, 0.0)[0];
        assert!(v > 300.0 && v < 1500.0, "{v}");
    }

    #[test]
    fn survives_a_round_trip_and_rejects_garbage() {
        let mut p = LoadProfile::default();
        p.record(600, 420.0, 2.0);
        assert_eq!(LoadProfile::from_json(&p.to_json()), Some(p.clone()));
        assert_eq!(LoadProfile::from_json("{\"slots\":[1,2]}"), None);
        assert_eq!(LoadProfile::from_json("not json"), None);
        p.record(600, f64::NAN, 2.0);
        p.record(600, -5.0, 2.0);
        assert!((p.forecast(600, 1, 0.0)[0] - 420.0).abs() < 1e-9);
    }
}
