//! From the lowered configuration to the planner's types: which loads sit in which tier, how
//! each is controlled, which are health loads, and how much battery energy the health tier needs
//! until sunrise (less, in daylight, the assembly's share of the sun expected to refill the
//! battery before dark). Pure: the time and the forecast are arguments.

use chrono::{DateTime, Duration, Utc};
use communalia_config as cfg;
use communalia_planner as planner;

use crate::forecast::solar::{self, Array, Place};

/// The site and assembly as the cycle uses them.
#[derive(Debug, Clone)]
pub struct SiteModel {
    pub config: cfg::Config,
}

/// Share of clear-sky PV a grey day still gives (the replay's cloudy weather): the health
/// reserve carries the health tier from when the sun at this share no longer covers it in the
/// evening to when it covers it again in the morning, not only from sunset to sunrise (at dawn
/// the panels give next to nothing for an hour or more).
pub const GREY_SKY_SHARE: f64 = 0.3;

/// A forecast per step, as the core made it with its plan: PV and uncontrolled consumption.
#[derive(Debug, Clone, Copy)]
pub struct DayForecast<'a> {
    /// Start of the first step.
    pub start: DateTime<Utc>,
    pub step: Duration,
    /// Expected PV power per step, watts.
    pub pv_watts: &'a [f64],
    /// Expected consumption nobody controls per step, watts.
    pub uncontrolled_watts: &'a [f64],
}

/// Where a load stands in the assembly's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Tier index, 0 = highest.
    pub tier: usize,
    pub health: bool,
}

impl SiteModel {
    pub fn new(config: cfg::Config) -> Self {
        Self { config }
    }

    pub fn site(&self) -> &cfg::Site {
        &self.config.site
    }

    pub fn assembly(&self) -> &cfg::Assembly {
        &self.config.assembly
    }

    /// Index of the health tier (the one the health reserve protects).
    pub fn health_tier(&self) -> usize {
        self.config.assembly.health_reserve.tier
    }

    pub fn placement(&self, load: &str) -> Option<Placement> {
        let tier = self
            .config
            .assembly
            .tiers
            .iter()
            .position(|t| t.loads.iter().any(|l| l == load))?;
        Some(Placement {
            tier,
            health: tier == self.health_tier(),
        })
    }

    /// True for a load in the health tier.
    pub fn is_health(&self, load: &str) -> bool {
        self.placement(load).is_some_and(|p| p.health)
    }

    /// The assembly's tiers as planner input, every controlled load asking its nominal power
    /// (a setpoint load its maximum). Loads that are only measured are not in the priorities:
    /// the planner counts them as uncontrolled consumption.
    pub fn priorities(&self) -> planner::Priorities {
        let site = &self.config.site;
        let health_tier = self.health_tier();
        let tiers = self
            .config
            .assembly
            .tiers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let loads = t
                    .loads
                    .iter()
                    .filter_map(|id| site.load(id))
                    .filter(|l| l.control.is_controlled())
                    .map(|l| planner_load(l, i == health_tier))
                    .collect();
                planner::Tier::new(
                    t.name.clone(),
                    match t.sharing {
                        cfg::Sharing::FairShare => planner::Sharing::FairShare,
                        cfg::Sharing::InOrder => planner::Sharing::InOrder,
                    },
                    loads,
                )
            })
            .collect();
        planner::Priorities {
            tiers,
            min_switch_secs: site.min_switch.as_secs_f64(),
        }
    }

    /// The planner's battery at `soc` (fraction 0..=1), from the site file's limits.
    pub fn battery(&self, soc: f64) -> Option<planner::Battery> {
        self.config.site.battery.as_ref().map(|b| planner::Battery {
            capacity_wh: b.capacity.0,
            soc: soc.clamp(0.0, 1.0),
            soc_min: b.min_soc.fraction(),
            soc_max: b.max_soc.fraction(),
            max_charge_watts: b.max_charge.0,
            max_discharge_watts: b.max_discharge.0,
            charge_efficiency: b.charge_efficiency,
            discharge_efficiency: b.discharge_efficiency,
        })
    }

    /// Nominal power of the health tier's loads.
    pub fn health_watts(&self) -> f64 {
        let a = &self.config.assembly;
        a.tiers
            .get(self.health_tier())
            .map(|t| {
                t.loads
                    .iter()
                    .filter_map(|id| self.config.site.load(id))
                    .map(|l| l.nominal.0)
                    .sum()
            })
            .unwrap_or(0.0)
    }

    /// Nominal power of the loads nobody can switch (measured only): they draw on the battery
    /// through the night whatever the plan says.
    pub fn unswitchable_watts(&self) -> f64 {
        self.config
            .site
            .loads
            .iter()
            .filter(|l| !l.control.is_controlled())
            .map(|l| l.nominal.0)
            .sum()
    }

    /// Battery energy the health tier needs from `now` to the next sunrise, with the assembly's
    /// margin, and never less than its minimum. Loads that cannot be switched off count too:
    /// they drain the same battery. Without coordinates, 12 hours are assumed.
    pub fn health_reserve_wh(&self, now: DateTime<Utc>) -> f64 {
        let r = &self.config.assembly.health_reserve;
        let watts = self.health_watts() + self.unswitchable_watts();
        let hours = self.hours_without_sun(now, watts);
        let need = watts * hours * (1.0 + r.margin.fraction());
        need.max(r.min.0)
    }

    /// The health reserve the battery must hold at `at`, counting on the sun from `sun_from`
    /// (usually the same instant) to the coming sunset: [`Self::reserve_before_floor_wh`],
    /// never below the assembly's minimum. On a sunny morning the loads below the health tier
    /// may then use the sun (and the battery down to this floor) while the floor rises to the
    /// whole night by sunset; on a grey day, or at night, it is the whole night's need.
    pub fn health_reserve_with_sun_wh(
        &self,
        at: DateTime<Utc>,
        sun_from: DateTime<Utc>,
        forecast: &DayForecast<'_>,
    ) -> f64 {
        self.reserve_before_floor_wh(at, sun_from, forecast)
            .max(self.config.assembly.health_reserve.min.0)
    }

    /// The night's need ([`Self::health_reserve_wh`]) less the assembly's
    /// `forecast_share_percent` of the charge the forecast promises from `sun_from` to sunset
    /// once the sun has served the tiers down to the one below the health tier
    /// ([`Self::sun_first_watts`]; otherwise as [`Self::expected_sun_charge_wh`], the share
    /// taken before the battery's usable capacity caps it): what the battery must hold now for
    /// the night to be covered if only that share of the surplus comes. (Counting the surplus
    /// beyond the health tier alone, the lower tiers drew the battery down in the morning to a
    /// floor that counted on sun the cold room then took, and the cold room was cut at noon so
    /// the battery could catch up.) Below zero when the counted sun alone covers the night; the
    /// assembly's `min_wh` floor is not applied.
    pub fn reserve_before_floor_wh(
        &self,
        at: DateTime<Utc>,
        sun_from: DateTime<Utc>,
        forecast: &DayForecast<'_>,
    ) -> f64 {
        let night = self.health_reserve_wh(at);
        let (sun, cap) = self.sun_charge(sun_from, forecast, self.sun_first_watts());
        night - (self.forecast_share() * sun).min(cap)
    }

    /// The assembly's `forecast_share_percent` as a fraction, 0..=1.
    pub fn forecast_share(&self) -> f64 {
        (self
            .config
            .assembly
            .health_reserve
            .forecast_share
            .fraction())
        .clamp(0.0, 1.0)
    }

    /// Power the sun serves before the battery's planned charge may take any, while the
    /// battery holds the reserve: the controlled loads of the tiers from the top down to the
    /// one below the health tier, at their nominal power. A charge beyond the reserve is for
    /// loads of that tier or lower later on, and a watt stored comes back as less than a watt
    /// (both efficiencies): serving that tier now from the sun is never worse. (A lower tier
    /// may still yield to a charge that serves a tier above it tonight: the plan decides.)
    pub fn sun_first_watts(&self) -> f64 {
        let site = &self.config.site;
        self.config
            .assembly
            .tiers
            .iter()
            .take(self.health_tier() + 2)
            .flat_map(|t| &t.loads)
            .filter_map(|id| site.load(id))
            .filter(|l| l.control.is_controlled())
            .map(|l| l.nominal.0)
            .sum()
    }

    /// Power the health reserve is there for, and that the sun must cover before it can charge
    /// the battery: the controlled loads of the tiers from the top down to the health tier at
    /// their nominal power. (Uncontrolled consumption comes from the forecast.)
    pub fn protected_watts(&self) -> f64 {
        let site = &self.config.site;
        self.config
            .assembly
            .tiers
            .iter()
            .take(self.health_tier() + 1)
            .flat_map(|t| &t.loads)
            .filter_map(|id| site.load(id))
            .filter(|l| l.control.is_controlled())
            .map(|l| l.nominal.0)
            .sum()
    }

    /// Energy the sun is expected to put into the battery from `now` to the coming sunset,
    /// counted as the battery gives it back (watt-hours after both efficiencies): per step,
    /// the forecast PV beyond the protected loads ([`Self::protected_watts`]) and the
    /// uncontrolled consumption (the forecast, and never less than the unswitchable loads'
    /// nominal power), at most the battery's charge power, in total at most its usable
    /// capacity. Zero at night, without coordinates or without a battery; steps the forecast
    /// does not cover count nothing.
    pub fn expected_sun_charge_wh(&self, now: DateTime<Utc>, forecast: &DayForecast<'_>) -> f64 {
        let (sun, cap) = self.sun_charge(now, forecast, self.protected_watts());
        sun.min(cap)
    }

    /// [`Self::expected_sun_charge_wh`] with the sun serving `served` watts of controlled loads
    /// first, before the capacity cap, and the cap (the usable capacity as the battery gives it
    /// back), both in watt-hours.
    fn sun_charge(
        &self,
        now: DateTime<Utc>,
        forecast: &DayForecast<'_>,
        served: f64,
    ) -> (f64, f64) {
        let (Some(b), Some(sunset)) = (self.config.site.battery.as_ref(), self.coming_sunset(now))
        else {
            return (0.0, 0.0);
        };
        let protected = served;
        let unswitchable = self.unswitchable_watts();
        let charge_max = b.max_charge.0.max(0.0);
        let step_secs = forecast.step.num_seconds();
        if step_secs <= 0 {
            return (0.0, 0.0);
        }
        let mut wh = 0.0;
        for (i, pv) in forecast.pv_watts.iter().enumerate() {
            let Some(from) = i32::try_from(i)
                .ok()
                .and_then(|i| forecast.step.checked_mul(i))
                .and_then(|d| forecast.start.checked_add_signed(d))
            else {
                break;
            };
            if from >= sunset {
                break;
            }
            let to = from + forecast.step;
            let hours = (to.min(sunset) - from.max(now)).num_seconds().max(0) as f64 / 3600.0;
            let unc = forecast
                .uncontrolled_watts
                .get(i)
                .copied()
                .filter(|w| w.is_finite())
                .unwrap_or(0.0)
                .max(unswitchable);
            let pv = if pv.is_finite() { *pv } else { 0.0 };
            wh += (pv - protected - unc).clamp(0.0, charge_max) * hours;
        }
        let eff = b.charge_efficiency * b.discharge_efficiency;
        (wh * eff, b.usable().0.max(0.0) * b.discharge_efficiency)
    }

    /// Hours the battery must carry `watts` without the sun: from now (or, while a grey sky
    /// still covers them, from when it no longer does) to when it covers them again, a grey sky
    /// being [`GREY_SKY_SHARE`] of clear-sky PV. In daylight the coming night is counted, so
    /// lower tiers cannot drain the reserve in the late afternoon; in the early morning, before
    /// the sun covers them, the hours until it does and the coming night. Where the panels
    /// cannot cover `watts` even at noon, from sunset to sunrise; without coordinates, 12 hours.
    pub fn hours_without_sun(&self, now: DateTime<Utc>, watts: f64) -> f64 {
        let Some(place) = self.place() else {
            return 12.0;
        };
        let arrays = self.arrays();
        let covered =
            |t: DateTime<Utc>| solar::clear_sky_watts(place, &arrays, t) * GREY_SKY_SHARE >= watts;
        let step = Duration::minutes(10);
        let find = |from: DateTime<Utc>, want: bool| {
            (1..=2 * 144)
                .map(|i| from + step * i)
                .find(|t| covered(*t) == want)
        };
        let hours = |from: DateTime<Utc>, to: DateTime<Utc>| {
            (to - from).num_seconds().max(0) as f64 / 3600.0
        };
        // The night that follows a moment the sun covers the load.
        let night_after = |t: DateTime<Utc>| {
            let from = find(t, false)?;
            Some(hours(from, find(from, true)?))
        };
        let got = if covered(now) {
            night_after(now)
        } else {
            find(now, true).and_then(|cover| {
                let morning = self.coming_sunset(now).is_some_and(|sunset| cover < sunset);
                if morning {
                    Some(hours(now, cover) + night_after(cover)?)
                } else {
                    Some(hours(now, cover))
                }
            })
        };
        // Never covered within two days (or a polar day): from sunset to sunrise.
        got.unwrap_or_else(|| self.hours_to_sunrise(now))
    }

    /// Hours of darkness: from now (or from the coming sunset, in daylight) to the next
    /// sunrise. Without coordinates, 12 hours.
    pub fn hours_to_sunrise(&self, now: DateTime<Utc>) -> f64 {
        let Some(place) = self.place() else {
            return 12.0;
        };
        let dark_from = if sun_up(place, now) {
            match self.coming_sunset(now) {
                Some(t) => t,
                // A polar day: no night to carry.
                None => return 0.0,
            }
        } else {
            now
        };
        solar::next_sunrise(place, dark_from)
            .map(|t| (t - dark_from).num_seconds().max(0) as f64 / 3600.0)
            .unwrap_or(12.0)
    }

    /// The coming sunset, in ten-minute steps, when the sun is up at `now`; `None` at night,
    /// without coordinates, or when the sun does not set within a day.
    pub fn coming_sunset(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let place = self.place()?;
        if !sun_up(place, now) {
            return None;
        }
        let step = Duration::minutes(10);
        (1..=144)
            .map(|i| now + step * i)
            .find(|t| !sun_up(place, *t))
    }

    pub fn place(&self) -> Option<Place> {
        self.config.site.location.map(|l| Place {
            latitude: l.latitude,
            longitude: l.longitude,
        })
    }

    pub fn arrays(&self) -> Vec<Array> {
        self.config
            .site
            .pv_arrays
            .iter()
            .map(|a| Array {
                kwp: a.kwp,
                tilt_degrees: a.tilt_degrees,
                azimuth_degrees: a.azimuth_degrees,
            })
            .collect()
    }

    /// Peak PV power of all arrays, in watts.
    pub fn pv_peak_watts(&self) -> f64 {
        self.config
            .site
            .pv_arrays
            .iter()
            .map(|a| a.kwp * 1000.0)
            .sum()
    }

    /// Grid or generator import the allocation may count on now (0 without a connection).
    pub fn grid_allowance(&self) -> f64 {
        self.config
            .site
            .grid
            .as_ref()
            .map_or(0.0, |g| g.max_import.0)
    }

    /// Local minute of the day at `now`, from the site's UTC offset.
    pub fn local_minute(&self, now: DateTime<Utc>) -> u32 {
        let secs = now.timestamp() + i64::from(self.config.site.utc_offset_minutes) * 60;
        (secs.rem_euclid(86_400) / 60) as u32
    }
}

fn sun_up(place: Place, t: DateTime<Utc>) -> bool {
    solar::sun_position(place, t).elevation_degrees > 0.0
}

fn planner_load(l: &cfg::Load, health: bool) -> planner::Load {
    let mut load = match &l.control {
        cfg::Control::Setpoint { min, max, .. } => {
            planner::Load::adjustable(l.id.clone(), min.0, max.0)
        }
        _ => planner::Load::on_off(l.id.clone(), l.nominal.0),
    }
    .named(l.name.clone());
    load.flexible = l.flexible;
    if let Some(need) = l.daily_need {
        load = load.with_need(planner::EnergyNeed {
            energy_wh: need.energy.0,
            deadline: planner::Deadline::MinuteOfDay(u32::from(need.deadline.minutes)),
        });
    }
    if health {
        load = load.health();
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn village() -> SiteModel {
        let ports = crate::demo::Ports {
            modbus_base: 5020,
            mqtt: 1883,
        };
        SiteModel::new(crate::demo::village_config(&ports, 1.0).unwrap())
    }

    #[test]
    fn village_tiers_map_to_the_planner_with_health_first() {
        let m = village();
        let p = m.priorities();
        assert_eq!(p.tiers.len(), m.assembly().tiers.len());
        assert!(p.tiers[0].loads.iter().all(|l| l.health));
        assert!(
            p.tiers[1..]
                .iter()
                .flat_map(|t| &t.loads)
                .all(|l| !l.health)
        );
        let all: Vec<_> = p.tiers.iter().flat_map(|t| &t.loads).collect();
        assert!(all.iter().all(|l| l.id != "telecom_mast"), "measured only");
        let ebike = all.iter().find(|l| l.id == "ebike_charger").unwrap();
        assert!(matches!(
            ebike.control,
            planner::Control::Adjustable {
                min_watts: 100.0,
                max_watts: 600.0
            }
        ));
        let pump = all.iter().find(|l| l.id == "water_pump").unwrap();
        assert_eq!(pump.need.unwrap().energy_wh, 6000.0);
    }

    #[test]
    fn health_reserve_covers_the_night_and_never_less_than_the_minimum() {
        let m = village();
        // Kalinzu is near the equator, UTC+3: 22:00 local is 19:00 UTC; sunrise near 06:40 local.
        let night = "2026-03-01T19:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let dark = m.hours_to_sunrise(night);
        assert!((8.0..9.5).contains(&dark), "{dark}");
        // The telecom mast (measured only, 250 W) drains the battery all night too.
        assert_eq!(m.unswitchable_watts(), 250.0);
        let watts = m.health_watts() + m.unswitchable_watts();
        // Until a grey sky covers the clinic and the mast: well after sunrise, not hours after.
        let hours = m.hours_without_sun(night, watts);
        assert!(
            hours > dark + 0.3 && hours < dark + 2.5,
            "{hours} h without sun, {dark} h of darkness"
        );
        let expected = watts * hours * (1.0 + m.assembly().health_reserve.margin.fraction());
        let got = m.health_reserve_wh(night);
        assert!((got - expected.max(m.assembly().health_reserve.min.0)).abs() < 1e-6);
        // At noon the coming night is counted: close to twelve hours of darkness at the
        // equator, and the dusk and dawn hours the grey sky does not cover.
        let noon = "2026-03-01T09:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let night = m.hours_without_sun(noon, watts);
        assert!((12.5..16.0).contains(&night), "{night}");
        // Panels that never cover the load: darkness only.
        assert_eq!(m.hours_without_sun(noon, 1e9), m.hours_to_sunrise(noon));
        assert!(m.health_reserve_wh(noon) > m.assembly().health_reserve.min.0);
    }

    /// 2026-03-02 at `hhmm` local in Kalinzu (UTC+3).
    fn local(hhmm: &str) -> DateTime<Utc> {
        let t: DateTime<Utc> = format!("2026-03-02T{hhmm}:00Z").parse().unwrap();
        t - Duration::hours(3)
    }

    /// A day's forecast from `start` in quarter hours: the clear-sky model scaled by `share`,
    /// and the telecom mast as the only uncontrolled consumption.
    fn forecast(m: &SiteModel, start: DateTime<Utc>, share: f64) -> (Vec<f64>, Vec<f64>) {
        let step = Duration::minutes(15);
        let place = m.place().unwrap();
        let pv = (0..96)
            .map(|i| {
                solar::clear_sky_watts(place, &m.arrays(), start + step * i + step / 2) * share
            })
            .collect();
        (pv, vec![250.0; 96])
    }

    fn reserve_at(m: &SiteModel, at: DateTime<Utc>, share: f64) -> f64 {
        let (pv, unc) = forecast(m, at, share);
        let f = DayForecast {
            start: at,
            step: Duration::minutes(15),
            pv_watts: &pv,
            uncontrolled_watts: &unc,
        };
        m.health_reserve_with_sun_wh(at, at, &f)
    }

    #[test]
    fn a_sunny_morning_counts_the_sun_and_keeps_well_under_the_whole_night() {
        let m = village();
        let at = local("07:30");
        let night = m.health_reserve_wh(at);
        let got = reserve_at(&m, at, 0.8);
        assert!(got <= 0.5 * night, "{got} of a night of {night}");
        assert!(got >= m.assembly().health_reserve.min.0, "{got}");
        // A clear day puts far more than the night's need into the battery: the floor is the
        // assembly's minimum.
        assert!(
            (got - m.assembly().health_reserve.min.0).abs() < 1e-6,
            "{got}"
        );
    }

    #[test]
    fn a_grey_morning_keeps_the_whole_night() {
        let m = village();
        let at = local("07:30");
        // A twentieth of clear sky never beats the clinic and the mast.
        let got = reserve_at(&m, at, 0.05);
        assert_eq!(got, m.health_reserve_wh(at));
        // A dull day (a fifth of clear sky) still puts some kilowatt-hours in: part of them
        // counts, not a sunny day's worth.
        let dull = reserve_at(&m, at, 0.2);
        let min = m.assembly().health_reserve.min.0;
        assert!(dull < got && dull > min + 1000.0, "{dull} of {got}");
    }

    #[test]
    fn the_reserve_rises_through_the_day_to_the_whole_night_at_dusk() {
        let m = village();
        // One forecast made at 07:30, the reserve read at later times from it.
        let start = local("07:30");
        let (pv, unc) = forecast(&m, start, 0.8);
        let f = DayForecast {
            start,
            step: Duration::minutes(15),
            pv_watts: &pv,
            uncontrolled_watts: &unc,
        };
        let mut last = 0.0;
        // (Until the grey sky stops covering the clinic and the mast, late in the afternoon:
        // from then on the night is under way and what is left of it shrinks.)
        for hhmm in ["07:30", "10:00", "13:00", "15:00", "16:30", "17:15"] {
            let at = local(hhmm);
            let r = m.health_reserve_with_sun_wh(at, at, &f);
            assert!(r >= last - 1e-6, "{hhmm}: {r} under {last}");
            last = r;
        }
        // An hour before sunset little sun is left to count.
        let late = local("17:45");
        assert!(m.health_reserve_with_sun_wh(late, late, &f) >= 0.85 * m.health_reserve_wh(late));
        let (dusk, later) = (local("18:15"), local("18:45"));
        assert!(
            m.health_reserve_with_sun_wh(later, later, &f)
                < m.health_reserve_with_sun_wh(dusk, dusk, &f)
        );
        // After sunset: the night, as before.
        let dark = local("19:45");
        assert!(m.coming_sunset(dark).is_none());
        assert_eq!(
            m.health_reserve_with_sun_wh(dark, dark, &f),
            m.health_reserve_wh(dark)
        );
    }

    #[test]
    fn the_sun_counted_is_held_to_the_charge_power_and_the_usable_capacity() {
        let m = village();
        let b = m.site().battery.clone().unwrap();
        let eff = b.charge_efficiency * b.discharge_efficiency;
        let start = local("07:30");
        fn f<'a>(pv: &'a [f64], unc: &'a [f64]) -> DayForecast<'a> {
            DayForecast {
                start: local("07:30"),
                step: Duration::minutes(15),
                pv_watts: pv,
                uncontrolled_watts: unc,
            }
        }
        let (huge, unc) = (vec![1e6; 96], vec![250.0; 96]);
        // A whole day of sun beyond any charge power: capped by the usable capacity.
        let all = m.expected_sun_charge_wh(start, &f(&huge, &unc));
        assert!(
            (all - b.usable().0 * b.discharge_efficiency).abs() < 1e-6,
            "{all}"
        );
        // Less than an hour left: at most the charge power for that long.
        let late = local("18:00");
        let sunset = m.coming_sunset(late).unwrap();
        let hours = (sunset - late).num_seconds() as f64 / 3600.0;
        assert!(hours < 1.5, "{hours}");
        let got = m.expected_sun_charge_wh(late, &f(&huge, &unc));
        assert!(
            (got - b.max_charge.0 * hours * eff).abs() < 1e-6,
            "{got} for {hours} h"
        );
        // Consumption nobody controls comes off the sun first, and the mast at least its nominal.
        let pv = vec![m.protected_watts() + 250.0 + 1000.0; 96];
        let a = m.expected_sun_charge_wh(late, &f(&pv, &vec![0.0; 96]));
        let b2 = m.expected_sun_charge_wh(late, &f(&pv, &vec![750.0; 96]));
        assert!((a - 1000.0 * hours * eff).abs() < 1e-6, "{a}");
        assert!((b2 - 500.0 * hours * eff).abs() < 1e-6, "{b2}");
        // Steps the forecast does not cover, or bad numbers, count nothing.
        assert_eq!(m.expected_sun_charge_wh(late, &f(&[], &[])), 0.0);
        let nan = vec![f64::NAN; 96];
        assert_eq!(m.expected_sun_charge_wh(late, &f(&nan, &nan)), 0.0);
    }
}
