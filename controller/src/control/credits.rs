//! Meter credits: energy a member's flexible load drew while the site had energy to spare (see
//! `sun_to_spare`) is load shifted into surplus hours, which the community recognises in Communs. The cycle reports
//! each state (a few additions); once an hour (site time) the sums are posted to the ledger,
//! signed with the controller's key, within the per-member daily cap the ledger enforces. The
//! posting runs on a blocking thread, off the control loop: it fsyncs SQLite and waits for the
//! ledger's lock, which an HTTP `verify` may hold for seconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Utc};
use communalia_config as cfg;
use communalia_ledger::{Day, Ledger, LedgerError, MeterKind, Reject, SigningKey, Store};

use crate::state::StateView;

/// Posts a member's shifted energy at least this often (site time).
const FLUSH_EVERY: chrono::Duration = chrono::Duration::hours(1);

/// Whether the site has energy to spare in this state, so what a member's flexible load draws
/// now is use shifted into surplus hours: nothing is cut for lack of power, and either there is
/// energy to spare ([`super::status::energy_to_spare`]: the battery not giving, most of what is
/// available unused) or the battery is charging (the sun covers the whole village and more,
/// though most of the available power is allocated). Never while the battery gives power or a
/// load is cut.
fn sun_to_spare(state: &StateView) -> bool {
    let charging = state
        .battery
        .as_ref()
        .and_then(|b| b.watts)
        .is_some_and(|w| w < -50.0);
    state.grid_state != crate::state::GridState::Scarcity
        && (super::status::energy_to_spare(state) || charging)
}

/// One load's energy in surplus since the last posting, and when it ran (site time).
#[derive(Debug, Clone, Copy, Default)]
struct Shift {
    wh: f64,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

pub struct Credits<S: Store> {
    ledger: Arc<Mutex<Ledger<S>>>,
    key: SigningKey,
    /// Flexible loads owned by a member: load id → member name in the ledger.
    owners: BTreeMap<String, String>,
    /// Watt-hours drawn in surplus not yet posted, by load, with the site-time minutes of the
    /// day when the posting period's surplus draw began and last ran.
    pending_wh: BTreeMap<String, Shift>,
    last: Option<DateTime<Utc>>,
    flushed: Option<DateTime<Utc>>,
    /// How often (site time) the sums are posted; [`FLUSH_EVERY`] unless a test asks otherwise.
    every: chrono::Duration,
    /// The site's offset from UTC: credits are dated by the site's local day.
    offset: chrono::Duration,
    issued_millis: Arc<AtomicU64>,
}

impl<S: Store + Send + 'static> Credits<S> {
    /// Credits for the site's member-owned flexible loads.
    pub fn new(ledger: Arc<Mutex<Ledger<S>>>, key: SigningKey, site: &cfg::Site) -> Self {
        let owners = site
            .loads
            .iter()
            .filter(|l| l.flexible)
            .filter_map(|l| match &l.owner {
                cfg::Owner::Member(m) => Some((l.id.clone(), m.clone())),
                cfg::Owner::Service(_) => None,
            })
            .collect();
        Self {
            ledger,
            key,
            owners,
            pending_wh: BTreeMap::new(),
            last: None,
            flushed: None,
            every: FLUSH_EVERY,
            offset: chrono::Duration::minutes(i64::from(site.utc_offset_minutes)),
            issued_millis: Arc::default(),
        }
    }

    /// Posts every `every` of site time instead of hourly: a scenario in accelerated time
    /// cannot wait an hour to see the ledger written. At least one minute.
    pub fn posting_every(mut self, every: chrono::Duration) -> Self {
        self.every = every.max(chrono::Duration::minutes(1));
        self
    }

    /// Milli-Communs credited since start.
    pub fn issued_millis(&self) -> u64 {
        self.issued_millis.load(Ordering::Relaxed)
    }

    /// Counts one cycle; posts the sums when an hour has passed.
    pub fn observe(&mut self, state: &StateView, at: DateTime<Utc>) {
        let dt_h = self
            .last
            .map_or(0.0, |l| (at - l).num_milliseconds() as f64 / 3_600_000.0);
        self.last = Some(at);
        // Energy to spare now, not the banner's "Plenty" (which also asks that every waiting
        // load be planned today): a member's load that runs in the sun has shifted its use.
        if sun_to_spare(state) && dt_h > 0.0 && dt_h < 0.25 {
            for l in state.loads.iter().filter(|l| l.on) {
                if self.owners.contains_key(&l.id) {
                    let watts = l.measured_watts.unwrap_or(l.allocated_watts).max(0.0);
                    if watts > 0.0 {
                        let s = self.pending_wh.entry(l.id.clone()).or_default();
                        s.wh += watts * dt_h;
                        s.from.get_or_insert(
                            at - chrono::Duration::milliseconds((dt_h * 3_600_000.0) as i64),
                        );
                        s.to = Some(at);
                    }
                }
            }
        }
        let due = self.flushed.is_none_or(|f| at - f >= self.every || at < f);
        if due && !self.pending_wh.is_empty() {
            self.flushed = Some(at);
            // Whole watt-hours are posted, one entry per load saying which load and hours
            // earned it; the fractions wait for the next posting.
            let mut whole = Vec::new();
            for (load, shift) in self.pending_wh.iter_mut() {
                let w = shift.wh.floor();
                let Some(member) = self.owners.get(load) else {
                    continue;
                };
                if w >= 1.0 {
                    let local = |t: Option<DateTime<Utc>>| {
                        t.map_or_else(String::new, |t| {
                            (t + self.offset).format("%H:%M").to_string()
                        })
                    };
                    let source = format!("{load} {}-{}", local(shift.from), local(shift.to));
                    whole.push((member.clone(), w, source));
                    shift.wh -= w;
                    shift.from = None;
                    shift.to = None;
                }
            }
            if whole.is_empty() {
                return;
            }
            let job = Flush {
                ledger: Arc::clone(&self.ledger),
                key: self.key.clone(),
                pending: whole,
                issued: Arc::clone(&self.issued_millis),
                offset: self.offset,
            };
            // Outside a runtime (tests, the replay) the posting runs here.
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(move || job.run(at))),
                Err(_) => job.run(at),
            }
        } else if due {
            self.flushed = Some(at);
        }
    }
}

/// One hour's credits, posted together.
struct Flush<S: Store> {
    ledger: Arc<Mutex<Ledger<S>>>,
    key: SigningKey,
    /// Member, whole watt-hours, and what earned them.
    pending: Vec<(String, f64, String)>,
    issued: Arc<AtomicU64>,
    offset: chrono::Duration,
}

impl<S: Store> Flush<S> {
    fn run(self, at: DateTime<Utc>) {
        let local = at + self.offset;
        let Some(day) = Day::from_ymd(local.year(), local.month(), local.day()) else {
            return;
        };
        let pending = self.pending;
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        for (member, wh, source) in pending {
            let wh = wh.floor() as u64;
            if wh == 0 {
                continue;
            }
            let Some(id) = ledger
                .state()
                .members()
                .iter()
                .find(|m| m.active && m.name == member)
                .map(|m| m.id)
            else {
                tracing::warn!(
                    member,
                    wh,
                    "no active ledger member of that name; not credited"
                );
                continue;
            };
            let before = ledger.meter_headroom(id, day).0;
            match ledger.credit_meter_for(&self.key, id, MeterKind::Shifted, wh, day, &source) {
                Ok(_) => {
                    let credited = (before - ledger.meter_headroom(id, day).0).max(0);
                    self.issued.fetch_add(credited as u64, Ordering::Relaxed);
                    tracing::info!(
                        member,
                        wh,
                        source,
                        millis = credited,
                        "meter credit for shifted load"
                    );
                }
                Err(LedgerError::Rejected(Reject::MeterCapExceeded { .. })) => {
                    tracing::info!(
                        member,
                        wh,
                        source,
                        "daily meter-credit cap reached; not credited"
                    );
                }
                Err(e) => tracing::warn!(member, wh, source, error = %e, "meter credit refused"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::GridState;
    use communalia_ledger::fixtures::Village;
    use communalia_ledger::{MemStore, Params};

    fn state(grid: GridState, on: bool) -> StateView {
        StateView {
            time: String::new(),
            site: crate::state::SiteView {
                id: "t".into(),
                name: "t".into(),
                utc_offset_minutes: 0,
            },
            // Energy to spare is judged on the numbers too: the e-bike's 0.6 kW of 5 kW.
            available_watts: 5000.0,
            pv_watts: None,
            consumption_watts: None,
            battery: None,
            grid_state: grid,
            status: String::new(),
            dry_run: false,
            devices: vec![],
            tiers: vec![],
            loads: vec![crate::state::LoadView {
                id: "ebike_amani".into(),
                name: "E-bike".into(),
                tier: "comfort".into(),
                rank: 6,
                on,
                allocated_watts: 600.0,
                measured_watts: Some(600.0),
                reported_on: Some(on),
                reason: String::new(),
                fault: None,
            }],
            assembly_errors: vec![],
        }
    }

    #[test]
    fn energy_is_spare_in_surplus_or_while_the_battery_charges_and_nothing_is_cut() {
        let with_battery = |grid, watts| {
            let mut s = state(grid, true);
            s.battery = Some(crate::state::BatteryView {
                soc_percent: Some(60.0),
                watts,
            });
            s
        };
        assert!(sun_to_spare(&state(GridState::Surplus, true)));
        assert!(sun_to_spare(&with_battery(GridState::Tight, Some(-1200.0))));
        assert!(!sun_to_spare(&with_battery(GridState::Tight, Some(300.0))));
        // Tight for lack of margin (0.6 of 0.7 kW in use) and no battery known to charge.
        let mut tight = with_battery(GridState::Tight, None);
        tight.available_watts = 700.0;
        assert!(!sun_to_spare(&tight));
        // Tight only because a waiting load is not planned today, with the sun to spare: the
        // e-bike drawing now is use in surplus.
        assert!(sun_to_spare(&with_battery(GridState::Tight, None)));
        assert!(!sun_to_spare(&with_battery(
            GridState::Scarcity,
            Some(-1200.0)
        )));
    }

    #[test]
    fn credits_are_dated_by_the_sites_local_day_and_fractions_are_kept() {
        let day = Day::from_ymd(2026, 3, 2).unwrap();
        let (ledger, village) =
            Village::found(MemStore::default(), "t", 1, Params::default(), day).unwrap();
        let ledger = Arc::new(Mutex::new(ledger));
        let mut site = crate::demo::village_config(
            &crate::demo::Ports {
                modbus_base: 1,
                mqtt: 1,
            },
            1.0,
        )
        .unwrap()
        .site;
        assert_eq!(site.utc_offset_minutes, 180);
        let mut l = site.loads[0].clone();
        l.id = "ebike_amani".into();
        l.flexible = true;
        l.owner = cfg::Owner::Member("member 0".into());
        site.loads = vec![l];
        let mut credits = Credits::new(Arc::clone(&ledger), village.controller.clone(), &site);
        // 21:30 to 22:40 UTC is 00:30 to 01:40 on 2026-03-03 at the site.
        let t0: DateTime<Utc> = "2026-03-02T21:30:00Z".parse().unwrap();
        for m in 0..=70 {
            credits.observe(
                &state(GridState::Surplus, true),
                t0 + chrono::Duration::minutes(m),
            );
        }
        let cap = Params::default().meter_daily_cap;
        let member = Village::member(0);
        let next = Day::from_ymd(2026, 3, 3).unwrap();
        let l = ledger.lock().unwrap();
        assert_eq!(
            l.meter_headroom(member, day),
            cap,
            "nothing on the UTC date"
        );
        assert!(
            l.meter_headroom(member, next).0 < cap.0,
            "credited on the local day"
        );
        drop(l);
        // 600 W for 60 minutes is 600 Wh posted; the 10 minutes since wait, not lost.
        let left: f64 = credits.pending_wh.values().map(|s| s.wh).sum();
        assert!((left - 100.0).abs() < 1e-6, "{left} Wh waiting");
    }

    #[test]
    fn shifted_energy_in_surplus_is_credited_once_an_hour_and_nothing_otherwise() {
        let day = Day::from_ymd(2026, 3, 2).unwrap();
        let (ledger, village) =
            Village::found(MemStore::default(), "t", 2, Params::default(), day).unwrap();
        let ledger = Arc::new(Mutex::new(ledger));
        let mut site = crate::demo::village_config(
            &crate::demo::Ports {
                modbus_base: 1,
                mqtt: 1,
            },
            1.0,
        )
        .unwrap()
        .site;
        let mut l = site.loads[0].clone();
        l.id = "ebike_amani".into();
        l.flexible = true;
        l.owner = cfg::Owner::Member("member 0".into());
        site.loads = vec![l];
        let mut credits = Credits::new(Arc::clone(&ledger), village.controller.clone(), &site);
        let t0: DateTime<Utc> = "2026-03-02T09:00:00Z".parse().unwrap();
        // Two hours: the first in surplus, the second in scarcity; one cycle a minute.
        for m in 0..=120 {
            let grid = if m <= 60 {
                GridState::Surplus
            } else {
                GridState::Scarcity
            };
            credits.observe(&state(grid, true), t0 + chrono::Duration::minutes(m));
        }
        let member = Village::member(0);
        let headroom = ledger.lock().unwrap().meter_headroom(member, day);
        let cap = Params::default().meter_daily_cap;
        assert!(
            credits.issued_millis() > 0,
            "600 W for an hour of surplus is credited"
        );
        assert_eq!(cap.0 - headroom.0, credits.issued_millis() as i64);
        // The entry says which load earned it and in which hours (site time, UTC+3).
        let sources: Vec<String> = ledger
            .lock()
            .unwrap()
            .log()
            .iter()
            .filter_map(|e| match &e.entry.unsigned.body {
                communalia_ledger::Body::MeterCredit { wh, source, .. } => {
                    Some(format!("{wh} Wh {source}"))
                }
                _ => None,
            })
            .collect();
        assert_eq!(sources, ["600 Wh ebike_amani 12:00-13:00"]);
        // Nothing for the scarce hour, and nothing for a member who owns no flexible load.
        let issued = credits.issued_millis();
        credits.observe(
            &state(GridState::Scarcity, true),
            t0 + chrono::Duration::minutes(200),
        );
        assert_eq!(credits.issued_millis(), issued);
        assert_eq!(
            ledger
                .lock()
                .unwrap()
                .meter_headroom(Village::member(1), day),
            cap
        );
    }
}
