//! The what-if replay for the assembly: N days of synthetic weather, or of the site's recorded
//! history, through the real decision core (the same `control::core` the controller runs), with a
//! simple physical site around it (PV from the clear-sky model under the chosen weather or as
//! recorded, a battery that covers the balance, loads that draw their nominal power when on, or
//! what they were recorded drawing while on). Pure: no IO, no clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use communalia_config as cfg;
use communalia_drivers::{BatteryState, Percent, Watts};

use crate::control::core::{Action, Core, DeviceInput, DeviceValue, LoadInput, ProcessImage};
use crate::control::model::SiteModel;
use crate::forecast::solar;
use crate::records::history::History;

/// A recorded row stands for the steps after it for at most this long; beyond, the history has
/// a gap and the weather model fills it (counted in [`Report::modelled_steps`]).
const HISTORY_HOLD: Duration = Duration::minutes(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Weather {
    Sunny,
    Cloudy,
    Mixed,
}

impl Weather {
    /// Share of clear-sky power that gets through.
    pub fn factor(self, t: DateTime<Utc>) -> f64 {
        match self {
            Weather::Sunny => 0.9,
            Weather::Cloudy => 0.3,
            Weather::Mixed => crate::demo::clouds(t),
        }
    }
}

/// What one load got over the replay.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LoadTotals {
    pub id: String,
    pub tier: String,
    pub rank: usize,
    pub hours_served: f64,
    pub energy_wh: f64,
    /// Energy asked for but not given: nominal power while off, or for a load with a daily need,
    /// what was missing from the need each day.
    pub cut_wh: f64,
}

/// Hours a tier was cut in the sun: some load of it asked and was off while PV alone covered it,
/// every tier above it and the loads nobody switches (each at its nominal power); a flexible load
/// waiting for its planned hours is not cut. What the
/// assembly reads to see what the battery reserve rule costs by day.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TierSun {
    pub rank: usize,
    pub tier: String,
    /// PV above which the tier counts as in the sun.
    pub pv_covers_watts: f64,
    pub cut_in_sun_hours: f64,
}

/// The replay's result.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub days: u32,
    pub loads: Vec<LoadTotals>,
    /// Per tier, in rank order.
    pub cut_in_sun: Vec<TierSun>,
    /// Energy the battery could not give when the site asked for it (a blackout in real life).
    pub unserved_wh: f64,
    pub min_soc_percent: f64,
    /// Steps whose PV came from the recorded history (0 without one).
    pub recorded_steps: u64,
    /// Steps whose PV came from the weather model: all of them without a history, the gaps of
    /// the history with one.
    pub modelled_steps: u64,
}

impl Report {
    /// Totals per tier name, in rank order: (rank, tier, hours served summed, energy, cut).
    pub fn tiers(&self) -> Vec<(usize, String, f64, f64)> {
        let mut by: BTreeMap<(usize, String), (f64, f64)> = BTreeMap::new();
        for l in &self.loads {
            let e = by.entry((l.rank, l.tier.clone())).or_default();
            e.0 += l.energy_wh;
            e.1 += l.cut_wh;
        }
        by.into_iter()
            .map(|((rank, tier), (e, c))| (rank, tier, e, c))
            .collect()
    }
}

/// One row per step for `--csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub at: DateTime<Utc>,
    pub pv_watts: f64,
    pub consumption_watts: f64,
    pub soc_percent: f64,
    /// Per controlled load, in the site file's order.
    pub on: Vec<bool>,
    /// Per tier, in rank order: cut while PV alone covered it (see [`TierSun`]).
    pub cut_in_sun: Vec<bool>,
}

pub const STEP: Duration = Duration::minutes(5);

/// Replays `days` days from `start` (local midnight, as [`local_midnight`] gives). With a
/// `history`, PV, the starting state of charge and what loads draw while on are taken from it
/// where it has them; `weather` fills its gaps.
pub fn replay(
    model: &SiteModel,
    days: u32,
    weather: Weather,
    start: DateTime<Utc>,
    history: Option<&History>,
    mut row: impl FnMut(Row),
) -> Report {
    let site = model.site().clone();
    let mut core = Core::new(model.clone(), false).with_plan_every(Duration::hours(3));
    let battery = site.battery.clone();
    let recorded_soc = history
        .and_then(|h| {
            h.rows
                .iter()
                .find(|r| r.at >= start && r.soc_percent.is_some())
        })
        .and_then(|r| r.soc_percent);
    let mut soc = battery.as_ref().map_or(0.0, |b| {
        // (Not `clamp`: it panics on a NaN or an inverted range.)
        recorded_soc
            .unwrap_or(b.max_soc.0 * 0.7)
            .max(b.min_soc.0)
            .min(b.max_soc.0)
    });
    let (mut recorded_steps, mut modelled_steps) = (0, 0);
    let mut min_soc = soc;
    let mut on: BTreeMap<String, bool> = site
        .loads
        .iter()
        .filter(|l| l.control.is_controlled())
        .map(|l| (l.id.clone(), false))
        .collect();
    let mut setpoints: BTreeMap<String, f64> = BTreeMap::new();
    let mut totals: BTreeMap<String, LoadTotals> = BTreeMap::new();
    let mut daily: BTreeMap<String, f64> = BTreeMap::new();
    let mut unserved = 0.0;
    let place = model.place();
    let arrays = model.arrays();
    let dt_h = STEP.num_seconds() as f64 / 3600.0;
    let steps = i64::from(days) * 86_400 / STEP.num_seconds();
    let offset = i64::from(site.utc_offset_minutes) * 60;
    // Per tier: its loads and the PV that covers it with every tier above it and the loads
    // nobody switches.
    let priorities = model.priorities();
    let mut covers: f64 = site
        .loads
        .iter()
        .filter(|l| !l.control.is_controlled())
        .map(|l| l.nominal.0)
        .sum();
    let mut sun: Vec<(TierSun, Vec<String>)> = priorities
        .tiers
        .iter()
        .enumerate()
        .map(|(k, t)| {
            covers += t.loads.iter().map(|l| l.demand_watts.max(0.0)).sum::<f64>();
            let tier = TierSun {
                rank: k + 1,
                tier: t.name.clone(),
                pv_covers_watts: covers,
                cut_in_sun_hours: 0.0,
            };
            (tier, t.loads.iter().map(|l| l.id.clone()).collect())
        })
        .collect();
    for i in 0..steps {
        let at = start + STEP * i32::try_from(i).unwrap_or(0);
        let recorded = history.and_then(|h| h.at(at, HISTORY_HOLD));
        let pv = match recorded.and_then(|r| r.pv_watts) {
            Some(pv) => {
                recorded_steps += 1;
                pv
            }
            None => {
                modelled_steps += 1;
                place.map_or(0.0, |p| solar::clear_sky_watts(p, &arrays, at)) * weather.factor(at)
            }
        };
        let drawn = recorded.map(|r| &r.loads);
        let power_of = |l: &cfg::Load, on: &BTreeMap<String, bool>| power(l, on, &setpoints, drawn);
        let consumption: f64 = site.loads.iter().map(|l| power_of(l, &on)).sum();
        let image = ProcessImage {
            at,
            devices: site
                .devices
                .iter()
                .map(|d| {
                    let v = match d.kind {
                        cfg::DeviceKind::Sunspec {
                            role: cfg::SunspecRole::PvInverter,
                            ..
                        } => DeviceValue::Pv(pv),
                        cfg::DeviceKind::Sunspec {
                            role: cfg::SunspecRole::Battery,
                            ..
                        }
                        | cfg::DeviceKind::Victron => DeviceValue::Battery(BatteryState {
                            soc: Some(Percent(soc)),
                            power: Some(Watts(consumption - pv)),
                            ..BatteryState::default()
                        }),
                        _ => DeviceValue::Meter(consumption),
                    };
                    DeviceInput {
                        id: d.id.clone(),
                        last: Some((at, v)),
                        error: None,
                    }
                })
                .collect(),
            loads: on
                .iter()
                .map(|(id, o)| {
                    let w = site.load(id).map_or(0.0, |l| power_of(l, &on));
                    let input = LoadInput {
                        online: Some(true),
                        on: Some(*o || w > 0.0),
                        power: Some(w),
                        fault: None,
                    };
                    (id.clone(), input)
                })
                .collect(),
        };
        let out = core.step(&image);
        drop(image);
        for c in &out.commands {
            match c.action {
                Action::Switch(s) => {
                    on.insert(c.load.clone(), s);
                }
                Action::Setpoint(w) => {
                    setpoints.insert(c.load.clone(), w);
                    on.insert(c.load.clone(), w > 0.0);
                }
            }
        }
        // The step's energy with the decided states.
        let power_of = |l: &cfg::Load, on: &BTreeMap<String, bool>| power(l, on, &setpoints, drawn);
        let consumption: f64 = site.loads.iter().map(|l| power_of(l, &on)).sum();
        if let Some(b) = &battery {
            let net = consumption - pv; // positive: the battery must give
            let wh = b.capacity.0.max(1.0);
            if net > 0.0 {
                let can = (b.max_discharge.0 * dt_h)
                    .min((soc - b.min_soc.0).max(0.0) / 100.0 * wh * b.discharge_efficiency);
                let want = net * dt_h;
                let give = want.min(can);
                unserved += want - give;
                soc -= give / b.discharge_efficiency / wh * 100.0;
            } else {
                let take = ((-net) * dt_h)
                    .min(b.max_charge.0 * dt_h)
                    .min((b.max_soc.0 - soc).max(0.0) / 100.0 * wh / b.charge_efficiency);
                soc += take * b.charge_efficiency / wh * 100.0;
            }
            min_soc = min_soc.min(soc);
        }
        for l in out.state.loads.iter() {
            let Some(cl) = site.load(&l.id) else { continue };
            let w = power_of(cl, &on);
            let t = totals.entry(l.id.clone()).or_insert_with(|| LoadTotals {
                id: l.id.clone(),
                tier: l.tier.clone(),
                rank: l.rank,
                ..LoadTotals::default()
            });
            if w > 0.0 {
                t.hours_served += dt_h;
                t.energy_wh += w * dt_h;
                *daily.entry(l.id.clone()).or_default() += w * dt_h;
            } else if cl.daily_need.is_none() {
                t.cut_wh += cl.nominal.0 * dt_h;
            }
        }
        // Cut in the sun: a load off that still asks (a load with a daily need: until it is met),
        // not a flexible one waiting for the hours the plan gives it (that is the plan's choice,
        // not a cut; what it misses of its need by the deadline counts in its cut energy).
        let deferred = |id: &str| {
            out.allocation
                .loads
                .iter()
                .any(|a| a.id == id && a.deferred)
        };
        let asks_and_off = |id: &str| {
            out.state.loads.iter().any(|l| l.id == id && !l.on)
                && !deferred(id)
                && site.load(id).is_some_and(|l| match l.daily_need {
                    Some(need) => daily.get(id).copied().unwrap_or(0.0) < need.energy.0,
                    None => true,
                })
        };
        let cut_in_sun: Vec<bool> = sun
            .iter_mut()
            .map(|(tier, ids)| {
                let cut = pv >= tier.pv_covers_watts && ids.iter().any(|id| asks_and_off(id));
                if cut {
                    tier.cut_in_sun_hours += dt_h;
                }
                cut
            })
            .collect();
        // At local midnight, what deferrable loads missed of their daily need.
        let next_local = (at + STEP).timestamp() + offset;
        if next_local.rem_euclid(86_400) < STEP.num_seconds() {
            for l in &site.loads {
                if let (Some(need), Some(t)) = (l.daily_need, totals.get_mut(&l.id)) {
                    let got = daily.get(&l.id).copied().unwrap_or(0.0);
                    t.cut_wh += (need.energy.0 - got).max(0.0);
                }
            }
            daily.clear();
        }
        row(Row {
            at,
            pv_watts: pv,
            consumption_watts: consumption,
            soc_percent: soc,
            // In the site file's order, as the CSV header names them (not the map's order).
            on: site
                .loads
                .iter()
                .filter(|l| l.control.is_controlled())
                .map(|l| on.get(&l.id).copied().unwrap_or(false))
                .collect(),
            cut_in_sun,
        });
    }
    let mut loads: Vec<LoadTotals> = totals.into_values().collect();
    loads.sort_by(|a, b| a.rank.cmp(&b.rank).then(a.id.cmp(&b.id)));
    Report {
        days,
        loads,
        cut_in_sun: sun.into_iter().map(|(t, _)| t).collect(),
        unserved_wh: unserved,
        min_soc_percent: min_soc,
        recorded_steps,
        modelled_steps,
    }
}

/// What a load draws with the decided states: its nominal power when on, or what the history
/// recorded it drawing while on (`drawn`). A setpoint load draws its setpoint.
fn power(
    l: &cfg::Load,
    on: &BTreeMap<String, bool>,
    setpoints: &BTreeMap<String, f64>,
    drawn: Option<&BTreeMap<String, f64>>,
) -> f64 {
    let when_on = || {
        drawn
            .and_then(|d| d.get(&l.id).copied())
            .unwrap_or(l.nominal.0)
    };
    match &l.control {
        cfg::Control::MeasuredOnly => when_on(),
        cfg::Control::Setpoint { .. } => setpoints.get(&l.id).copied().unwrap_or(0.0),
        _ if on.get(&l.id).copied().unwrap_or(false) => when_on(),
        _ => 0.0,
    }
}

/// Local midnight of the site on the UTC date of `t`.
pub fn local_midnight(model: &SiteModel, t: DateTime<Utc>) -> DateTime<Utc> {
    let offset = i64::from(model.site().utc_offset_minutes) * 60;
    let local = t.timestamp() + offset;
    let midnight = local - local.rem_euclid(86_400) - offset;
    DateTime::from_timestamp(midnight, 0).unwrap_or(t)
}

/// The side-by-side table a person reads; `b` is the proposed file's result, if any.
pub fn render(a: &Report, b: Option<&Report>, names: (&str, &str)) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let kwh = |wh: f64| format!("{:.1}", wh / 1000.0);
    let _ = writeln!(out, "{} days replayed", a.days);
    if a.recorded_steps > 0 {
        let _ = writeln!(
            out,
            "PV and load draws as recorded in {} of {} five-minute steps; the weather model filled the other {}",
            a.recorded_steps,
            a.recorded_steps + a.modelled_steps,
            a.modelled_steps
        );
    }
    let _ = writeln!(
        out,
        "\nper tier (energy delivered / cut, kWh; cut in sun: hours a load of it was off while PV \
         alone covered it, the tiers above and the unswitched loads)"
    );
    let sun_hours = |r: &Report, rank: usize| {
        r.cut_in_sun
            .iter()
            .find(|t| t.rank == rank)
            .map_or(0.0, |t| t.cut_in_sun_hours)
    };
    let tb = b.map(Report::tiers);
    for (i, (rank, tier, e, c)) in a.tiers().iter().enumerate() {
        let _ = write!(
            out,
            "  {rank} {tier:<22} {:>7} / {:>7}  cut in sun {:>5.1} h",
            kwh(*e),
            kwh(*c),
            sun_hours(a, *rank)
        );
        if let (Some(tb), Some(b)) = (&tb, b) {
            // Tiers are matched by rank: a proposal may rename or reorder them.
            if let Some((rank_b, tier_b, eb, cb)) = tb.get(i) {
                let _ = write!(
                    out,
                    "   | {tier_b:<22} {:>7} / {:>7}  cut in sun {:>5.1} h",
                    kwh(*eb),
                    kwh(*cb),
                    sun_hours(b, *rank_b)
                );
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nper load: hours served, energy delivered (kWh), energy cut (kWh){}",
        if b.is_some() {
            format!("   [{} | {}]", names.0, names.1)
        } else {
            String::new()
        }
    );
    for l in &a.loads {
        let _ = write!(
            out,
            "  {:<16} tier {} {:>6.1} h {:>7} {:>7}",
            l.id,
            l.rank,
            l.hours_served,
            kwh(l.energy_wh),
            kwh(l.cut_wh)
        );
        if let Some(lb) = b.and_then(|b| b.loads.iter().find(|x| x.id == l.id)) {
            let _ = write!(
                out,
                "   | tier {} {:>6.1} h {:>7} {:>7}",
                lb.rank,
                lb.hours_served,
                kwh(lb.energy_wh),
                kwh(lb.cut_wh)
            );
        }
        out.push('\n');
    }
    let _ = write!(
        out,
        "\nbattery lowest {:.0} %, energy the battery could not give {} kWh",
        a.min_soc_percent,
        kwh(a.unserved_wh)
    );
    if let Some(b) = b {
        let _ = write!(
            out,
            "   | lowest {:.0} %, {} kWh",
            b.min_soc_percent,
            kwh(b.unserved_wh)
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flexible_load_waiting_for_its_planned_hours_is_not_cut_in_sun() {
        // The village's water pump needs 6 kWh a day and waits for the hours the plan gives it:
        // counted as cut whenever it was off with its need unmet, it made the water tier look cut
        // in the sun some 17 h a week on clear days.
        let ports = crate::demo::Ports {
            modbus_base: 5020,
            mqtt: 1883,
        };
        let model = SiteModel::new(crate::demo::village_config(&ports, 1.0).unwrap());
        let start = local_midnight(&model, "2026-06-01T12:00:00Z".parse().unwrap());
        let site = model.site();
        let pump = site.load("water_pump").unwrap();
        let need = pump.daily_need.unwrap().energy.0;
        let column = site
            .loads
            .iter()
            .filter(|l| l.control.is_controlled())
            .position(|l| l.id == "water_pump")
            .unwrap();
        let mut rows = Vec::new();
        let report = replay(&model, 1, Weather::Sunny, start, None, |r| rows.push(r));
        let water = report
            .cut_in_sun
            .iter()
            .find(|t| t.tier == "water")
            .unwrap();
        // It did wait in the sun with its need unmet...
        let (mut got, mut waited) = (0.0, 0);
        for r in &rows {
            if r.on[column] {
                got += pump.nominal.0 * STEP.num_seconds() as f64 / 3600.0;
            } else if r.pv_watts >= water.pv_covers_watts && got < need {
                waited += 1;
            }
        }
        assert!(waited > 0, "the pump never waited in the sun");
        // ...and was given its need that day, so nothing of it was cut.
        let totals = report.loads.iter().find(|l| l.id == "water_pump").unwrap();
        assert!(totals.cut_wh < 1.0, "{} Wh cut", totals.cut_wh);
        assert_eq!(water.cut_in_sun_hours, 0.0);
    }
}
