//! From the lowered configuration to the planner's types: which loads sit in which tier, how
//! each is controlled, which are health loads, and how much battery energy the health tier needs
//! until sunrise. Pure: the time is an argument.

use chrono::{DateTime, Utc};
use communalia_config as cfg;
use communalia_planner as planner;

use crate::forecast::solar::{self, Array, Place};

/// The site and assembly as the cycle uses them.
#[derive(Debug, Clone)]
pub struct SiteModel {
    pub config: cfg::Config,
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
        planner::Priorities { tiers }
    }

    /// The planner's battery at `soc` (fraction 0..=1), from the site file's limits.
    pub fn battery(&self, soc: f64) -> Option<planner::Battery> {
        self.config.site.battery.as_ref().map(|b| planner::Battery {
            capacity_wh: b.capacity.0,
            soc: soc.clamp(0.0, 1.0),
            soc_min: b.min_soc.0 / 100.0,
            soc_max: b.max_soc.0 / 100.0,
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
        let hours = self.hours_to_sunrise(now);
        let watts = self.health_watts() + self.unswitchable_watts();
        let need = watts * hours * (1.0 + r.margin.0 / 100.0);
        need.max(r.min.0)
    }

    /// Hours of darkness the battery must carry the health tier through: from now (or from
    /// the coming sunset, in daylight) to the next sunrise. In daylight the coming night is
    /// counted, so lower tiers cannot drain the reserve in the late afternoon. Without
    /// coordinates, 12 hours are assumed.
    pub fn hours_to_sunrise(&self, now: DateTime<Utc>) -> f64 {
        let Some(place) = self.place() else {
            return 12.0;
        };
        let up = |t: DateTime<Utc>| solar::sun_position(place, t).elevation_degrees > 0.0;
        // The coming sunset, in ten-minute steps (at most a day ahead; polar days count none).
        let step = chrono::Duration::minutes(10);
        let mut dark_from = now;
        if up(now) {
            match (1..=144).map(|i| now + step * i).find(|t| !up(*t)) {
                Some(t) => dark_from = t,
                None => return 0.0,
            }
        }
        solar::next_sunrise(place, dark_from)
            .map(|t| (t - dark_from).num_seconds().max(0) as f64 / 3600.0)
            .unwrap_or(12.0)
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
        let hours = m.hours_to_sunrise(night);
        assert!((8.0..9.5).contains(&hours), "{hours}");
        // The telecom mast (measured only, 250 W) drains the battery all night too.
        assert_eq!(m.unswitchable_watts(), 250.0);
        let expected = (m.health_watts() + m.unswitchable_watts())
            * hours
            * (1.0 + m.assembly().health_reserve.margin.0 / 100.0);
        let got = m.health_reserve_wh(night);
        assert!((got - expected.max(m.assembly().health_reserve.min.0)).abs() < 1e-6);
        // At noon the coming night is counted: close to twelve hours at the equator.
        let noon = "2026-03-01T09:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let night = m.hours_to_sunrise(noon);
        assert!((11.0..13.0).contains(&night), "{night}");
        assert!(m.health_reserve_wh(noon) > m.assembly().health_reserve.min.0);
    }
}
