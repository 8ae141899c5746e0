//! The banner: the site's energy situation in one word (`grid_state`) and one sentence, made
//! from the same decisions as the loads' reasons so the two never contradict. "Plenty"
//! (`surplus`) means every load that asks now is served or planned within the site's day.

use crate::state::{GridState, StateView};

/// Battery power above which it counts as giving (watts).
const GIVING_WATTS: f64 = 50.0;
/// Share of the available power in use above which there is little to spare.
const LITTLE_TO_SPARE: f64 = 0.8;

/// The site has energy to spare right now, whatever the plan holds for later: nothing is cut
/// for lack of power, the battery is not giving and less than [`LITTLE_TO_SPARE`] of what is
/// available is in use. Meter credits count the energy members' flexible loads draw then
/// ("Plenty" on the banner asks more: every waiting load planned today).
pub fn energy_to_spare(s: &StateView) -> bool {
    let allocated: f64 = s.loads.iter().map(|l| l.allocated_watts).sum();
    s.grid_state != GridState::Scarcity
        && !s
            .battery
            .as_ref()
            .and_then(|b| b.watts)
            .is_some_and(|w| w > GIVING_WATTS)
        && allocated <= LITTLE_TO_SPARE * s.available_watts
}

/// A flexible load that waits for the horizon plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    pub name: String,
    pub when: When,
}

/// When the plan runs a waiting load.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// From this local time ("13:45"); `today` when before the site's midnight.
    Planned { at: String, today: bool },
    /// Not within the horizon (its reason says why).
    NotPlanned,
}

/// What the banner is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// Names of the loads that ask now and are off for lack of power.
    pub cut: Vec<String>,
    /// Flexible loads that ask now and wait for the plan.
    pub waits: Vec<Wait>,
    pub available_watts: f64,
    pub allocated_watts: f64,
    /// Battery power, positive when it gives.
    pub battery_watts: Option<f64>,
    /// The controller has just started and decides nothing yet.
    pub starting: bool,
}

/// "a", "a and b", "a, b and c".
fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn kw(w: f64) -> String {
    communalia_planner::reason::kw(w)
}

/// The grid state and the banner's sentence.
pub fn banner(f: &Facts) -> (GridState, String) {
    let planned: Vec<String> = f
        .waits
        .iter()
        .filter_map(|w| match &w.when {
            When::Planned { at, today } => Some(format!(
                "{} at {at}{}",
                w.name,
                if *today { "" } else { " tomorrow" }
            )),
            When::NotPlanned => None,
        })
        .collect();
    let unplanned: Vec<&str> = f
        .waits
        .iter()
        .filter(|w| w.when == When::NotPlanned)
        .map(|w| w.name.as_str())
        .collect();
    let later_than_today = f
        .waits
        .iter()
        .any(|w| matches!(w.when, When::Planned { today: false, .. }));
    let mut plans = String::new();
    if !planned.is_empty() {
        let p: Vec<&str> = planned.iter().map(String::as_str).collect();
        plans.push_str(&format!(" The plan runs {}.", list(&p)));
    }
    if !unplanned.is_empty() {
        plans.push_str(&format!(
            " The plan finds no time in the next 24 h for {}; each says why below.",
            list(&unplanned)
        ));
    }
    if f.starting {
        return (
            GridState::Tight,
            "The controller has just started: it waits for the first readings of every device \
             before deciding, and leaves every load as it is meanwhile."
                .to_owned(),
        );
    }
    if !f.cut.is_empty() {
        let names: Vec<&str> = f.cut.iter().map(String::as_str).collect();
        let (n, verb) = if names.len() == 1 {
            ("1 load".to_owned(), "is")
        } else {
            (format!("{} loads", names.len()), "are")
        };
        return (
            GridState::Scarcity,
            format!(
                "Not everything can run: {n} {verb} off for lack of power ({}). Energy goes to \
                 the tiers in the order the assembly voted; each load that is off says why \
                 below.{plans}",
                list(&names)
            ),
        );
    }
    let spare = (f.available_watts - f.allocated_watts).max(0.0);
    let giving = f.battery_watts.filter(|w| *w > GIVING_WATTS);
    let little = giving.is_some() || f.allocated_watts > LITTLE_TO_SPARE * f.available_watts;
    if !unplanned.is_empty() || later_than_today {
        return (
            GridState::Tight,
            format!(
                "Every load that cannot wait is served, but not every flexible load gets its \
                 turn today.{plans} Please wait before starting big flexible loads."
            ),
        );
    }
    if little {
        let battery = giving.map_or(String::new(), |w| format!(", the battery gives {}", kw(w)));
        return (
            GridState::Tight,
            format!(
                "Every load that asks is served, but with little to spare: {} of {} in \
                 use{battery}.{plans} Please wait before starting big flexible loads.",
                kw(f.allocated_watts),
                kw(f.available_watts)
            ),
        );
    }
    (
        GridState::Surplus,
        format!(
            "Enough energy for every load that asks now, with {} to spare: a good time for \
             flexible use.{plans}",
            kw(spare)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BatteryView, LoadView, SiteView};

    fn facts() -> Facts {
        Facts {
            available_watts: 8900.0,
            allocated_watts: 5800.0,
            ..Facts::default()
        }
    }

    fn wait(name: &str, when: When) -> Wait {
        Wait {
            name: name.into(),
            when,
        }
    }

    #[test]
    fn plenty_only_when_every_waiting_load_is_planned_today() {
        let mut f = facts();
        f.waits = vec![wait(
            "Shared laundry",
            When::Planned {
                at: "13:30".into(),
                today: true,
            },
        )];
        assert_eq!(
            banner(&f),
            (
                GridState::Surplus,
                "Enough energy for every load that asks now, with 3.1 kW to spare: a good time \
                 for flexible use. The plan runs Shared laundry at 13:30."
                    .to_owned()
            )
        );
        // The noon of issue 15: sun to spare now, but the plan has no time for two loads.
        f.waits
            .push(wait("E-bike charging station", When::NotPlanned));
        f.waits.push(wait("Carpentry workshop", When::NotPlanned));
        let (state, sentence) = banner(&f);
        assert_eq!(state, GridState::Tight);
        assert_eq!(
            sentence,
            "Every load that cannot wait is served, but not every flexible load gets its turn \
             today. The plan runs Shared laundry at 13:30. The plan finds no time in the next \
             24 h for E-bike charging station and Carpentry workshop; each says why below. \
             Please wait before starting big flexible loads."
        );
        // Planned only tomorrow is not today either.
        f.waits = vec![wait(
            "Shared laundry",
            When::Planned {
                at: "10:15".into(),
                today: false,
            },
        )];
        let (state, sentence) = banner(&f);
        assert_eq!(state, GridState::Tight);
        assert!(
            sentence.contains("Shared laundry at 10:15 tomorrow"),
            "{sentence}"
        );
    }

    #[test]
    fn a_load_cut_for_lack_of_power_makes_it_scarce_whatever_waits() {
        let mut f = facts();
        f.cut = vec!["Carpentry workshop".into()];
        f.waits = vec![wait(
            "Shared laundry",
            When::Planned {
                at: "13:30".into(),
                today: true,
            },
        )];
        let (state, sentence) = banner(&f);
        assert_eq!(state, GridState::Scarcity);
        assert!(
            sentence.starts_with(
                "Not everything can run: 1 load is off for lack of power (Carpentry workshop)."
            ),
            "{sentence}"
        );
    }

    #[test]
    fn little_to_spare_or_the_battery_giving_is_tight() {
        let mut f = facts();
        f.battery_watts = Some(1200.0);
        let (state, sentence) = banner(&f);
        assert_eq!(state, GridState::Tight);
        assert!(
            sentence.contains("5.8 kW of 8.9 kW in use, the battery gives 1.2 kW"),
            "{sentence}"
        );
        let f = Facts {
            allocated_watts: 7200.0,
            ..facts()
        };
        assert_eq!(banner(&f).0, GridState::Tight);
        assert_eq!(banner(&facts()).0, GridState::Surplus);
    }

    fn state(grid: GridState, battery_watts: f64, allocated: f64) -> StateView {
        StateView {
            time: String::new(),
            site: SiteView {
                id: "t".into(),
                name: "t".into(),
                utc_offset_minutes: 180,
            },
            available_watts: 8900.0,
            pv_watts: Some(7400.0),
            consumption_watts: None,
            battery: Some(BatteryView {
                soc_percent: Some(60.0),
                watts: Some(battery_watts),
            }),
            grid_state: grid,
            status: String::new(),
            dry_run: false,
            devices: vec![],
            tiers: vec![],
            loads: vec![LoadView {
                id: "ebike".into(),
                name: "E-bike".into(),
                tier: "comfort".into(),
                rank: 6,
                on: true,
                allocated_watts: allocated,
                measured_watts: None,
                reported_on: Some(true),
                reason: String::new(),
                fault: None,
            }],
            assembly_errors: vec![],
        }
    }

    #[test]
    fn sun_to_spare_now_counts_even_while_the_plan_has_no_time_for_a_flexible_load() {
        // "Tight" because the laundry is not planned today; the battery charges from the sun.
        assert!(energy_to_spare(&state(GridState::Tight, -3000.0, 5800.0)));
        assert!(energy_to_spare(&state(GridState::Surplus, 0.0, 5800.0)));
        assert!(!energy_to_spare(&state(
            GridState::Scarcity,
            -3000.0,
            5800.0
        )));
        assert!(!energy_to_spare(&state(GridState::Tight, 1200.0, 5800.0)));
        assert!(!energy_to_spare(&state(GridState::Tight, 0.0, 7200.0)));
    }
}
