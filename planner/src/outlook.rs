//! When the horizon plan runs a flexible load that waits now, or why it does not run it within
//! the horizon: the numbers behind a deferred load's reason ("planned 12:30-14:00 at 2.0 kW,
//! when 3.1 kW of sun is spare"; "not planned in the next 24 h: the spare energy charges the
//! battery for tiers 1-4, which are 6.2 kWh short from 19:45"). Times are the plan's own clock:
//! [`HorizonPlan::start_minute`] is the local minute of its first step.

use crate::horizon::{HorizonPlan, PlannedLoad};
use crate::model::{Control, Priorities, WattHours, Watts};
use crate::reason::{kw, kwh, tiers_above};

/// Least energy counted as a shortfall (below it, the LP's rounding).
const SHORT_WH: WattHours = 50.0;

/// The plan a deferred load is judged by, and where in it we are.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    pub plan: &'a HorizonPlan,
    /// PV the plan was made with, per step.
    pub pv_watts: &'a [Watts],
    /// Uncontrolled consumption the plan was made with, per step.
    pub uncontrolled_watts: &'a [Watts],
    /// Minutes from the start of the plan to now (the step holding now follows).
    pub elapsed_minutes: u32,
}

impl PlanContext<'_> {
    /// The plan step holding now.
    pub fn step(&self) -> usize {
        usize::try_from(self.elapsed_minutes / self.plan.step_minutes.max(1)).unwrap_or(usize::MAX)
    }
}

/// What the plan holds for a flexible load that waits now.
#[derive(Debug, Clone, PartialEq)]
pub enum Outlook {
    /// The plan runs it in steps `from..to` (the first such run from now) at `watts` on
    /// average, while the sun leaves `spare_sun_watts` on average after the tiers above it;
    /// `today` when it starts before the site's midnight.
    Planned {
        from: usize,
        to: usize,
        watts: Watts,
        spare_sun_watts: Watts,
        today: bool,
    },
    /// Not in the rest of the horizon (`within_minutes` long).
    NotPlanned { within_minutes: u32, cause: Cause },
}

/// Why the plan does not run a flexible load within its horizon.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// Its daily energy need (`need_wh`) is already delivered.
    NeedMet { need_wh: WattHours },
    /// Loads of higher tiers that cannot wait are short in the horizon: `short_wh` in all, in
    /// tiers 1 to `last_rank`, the first from step `from`. `charging`: the plan puts the spare
    /// energy into the battery (for them).
    TiersAbove {
        last_rank: usize,
        short_wh: WattHours,
        from: Option<usize>,
        charging: bool,
    },
    /// The plan gives it some energy (`planned_wh`) but never the `least_watts` it needs to run
    /// in a step: at most `most_watts`.
    TooLittle {
        most_watts: Watts,
        planned_wh: WattHours,
        least_watts: Watts,
        on_off: bool,
    },
    /// No step leaves it enough: at most `spare_watts` is left unused in any step.
    NoRoom {
        spare_watts: Watts,
        least_watts: Watts,
        on_off: bool,
    },
}

fn finite(w: Option<&f64>) -> f64 {
    match w {
        Some(w) if w.is_finite() => w.max(0.0),
        _ => 0.0,
    }
}

/// The outlook of load `id` of `priorities` in the plan from now; `None` when the plan or the
/// tiers do not know it.
pub fn outlook(ctx: &PlanContext<'_>, priorities: &Priorities, id: &str) -> Option<Outlook> {
    let plan = ctx.plan;
    let (rank, load) = priorities
        .tiers
        .iter()
        .enumerate()
        .find_map(|(t, tier)| tier.loads.iter().find(|l| l.id == id).map(|l| (t + 1, l)))?;
    let planned = plan.loads.iter().find(|l| l.id == id)?;
    let steps = planned.watts.len();
    let from = ctx.step().min(steps);
    let dh = f64::from(plan.step_minutes) / 60.0;
    let least = load.least_planned_watts();
    let on_off = matches!(load.control, Control::OnOff);
    let w = |t: usize| finite(planned.watts.get(t));
    let runs = |t: usize| w(t) > 0.5 && w(t) + 1e-6 >= least;
    let above: Vec<&PlannedLoad> = plan.loads.iter().filter(|l| l.rank < rank).collect();

    if let Some(t0) = (from..steps).find(|&t| runs(t)) {
        let t1 = (t0..steps).find(|&t| !runs(t)).unwrap_or(steps);
        let n = (t1 - t0) as f64;
        let watts = (t0..t1).map(w).sum::<f64>() / n;
        let spare = (t0..t1)
            .map(|t| {
                let used: f64 = above.iter().map(|l| finite(l.watts.get(t))).sum();
                (finite(ctx.pv_watts.get(t)) - finite(ctx.uncontrolled_watts.get(t)) - used)
                    .max(0.0)
            })
            .sum::<f64>()
            / n;
        let day = |minutes: u64| (u64::from(plan.start_minute) + minutes) / 1440;
        let starts = u64::try_from(t0)
            .unwrap_or(u64::MAX / 2)
            .saturating_mul(u64::from(plan.step_minutes));
        return Some(Outlook::Planned {
            from: t0,
            to: t1,
            watts,
            spare_sun_watts: spare,
            today: day(starts) == day(u64::from(ctx.elapsed_minutes)),
        });
    }
    let within_minutes = u32::try_from(steps - from)
        .unwrap_or(u32::MAX)
        .saturating_mul(plan.step_minutes);
    let not = |cause| {
        Some(Outlook::NotPlanned {
            within_minutes,
            cause,
        })
    };
    if let (Some(need), Some(left)) = (load.need, planned.need_wh)
        && left < 1.0
    {
        return not(Cause::NeedMet {
            need_wh: need.energy_wh,
        });
    }

    // What the loads above that cannot wait (and the needs above) go without.
    let mut short = 0.0;
    let mut first: Option<usize> = None;
    let mut last_rank = 0;
    for (t, tier) in priorities.tiers.iter().enumerate().take(rank - 1) {
        for l in &tier.loads {
            let Some(p) = plan.loads.iter().find(|p| p.id == l.id) else {
                continue;
            };
            if let Some(need) = p.need_wh {
                let s = need - p.planned_wh;
                if s > 1.0 {
                    short += s;
                    last_rank = last_rank.max(t + 1);
                }
                continue;
            }
            if l.flexible {
                continue;
            }
            let ask = if l.demand_watts.is_finite() {
                l.demand_watts.max(0.0)
            } else {
                0.0
            };
            for s in from..steps {
                let gap = ask - finite(p.watts.get(s));
                if gap > 1.0 {
                    short += gap * dh;
                    first = Some(first.map_or(s, |f| f.min(s)));
                    last_rank = last_rank.max(t + 1);
                }
            }
        }
    }
    if short >= SHORT_WH {
        let charged: f64 = (from..steps)
            .map(|t| (-finite_signed(plan.battery_watts.get(t))).max(0.0))
            .sum::<f64>()
            * dh;
        return not(Cause::TiersAbove {
            last_rank,
            short_wh: short,
            from: first,
            charging: charged >= SHORT_WH,
        });
    }
    let planned_wh = (from..steps).map(w).sum::<f64>() * dh;
    if planned_wh >= 1.0 {
        return not(Cause::TooLittle {
            most_watts: (from..steps).map(w).fold(0.0, f64::max),
            planned_wh,
            least_watts: least,
            on_off,
        });
    }
    not(Cause::NoRoom {
        spare_watts: (from..steps)
            .map(|t| finite(plan.spill_watts.get(t)))
            .fold(0.0, f64::max),
        least_watts: least,
        on_off,
    })
}

fn finite_signed(w: Option<&f64>) -> f64 {
    match w {
        Some(w) if w.is_finite() => *w,
        _ => 0.0,
    }
}

/// The plan's local clock at the start of step `t`: "13:45".
pub fn clock(plan: &HorizonPlan, t: usize) -> String {
    let minutes = u64::from(plan.start_minute)
        + u64::try_from(t)
            .unwrap_or(0)
            .saturating_mul(u64::from(plan.step_minutes));
    let m = minutes % 1440;
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl Outlook {
    /// What follows "flexible, " in a deferred load's reason.
    pub fn describe(&self, plan: &HorizonPlan) -> String {
        match self {
            Outlook::Planned {
                from,
                to,
                watts,
                spare_sun_watts,
                today,
            } => {
                let source = if *spare_sun_watts + 1.0 >= 0.5 * watts {
                    format!("when {} of sun is spare", kw(*spare_sun_watts))
                } else {
                    "from the battery".to_owned()
                };
                format!(
                    "planned {}{}-{} at {}, {source}",
                    if *today { "" } else { "tomorrow " },
                    clock(plan, *from),
                    clock(plan, *to),
                    kw(*watts)
                )
            }
            Outlook::NotPlanned {
                within_minutes,
                cause,
            } => {
                let within = if *within_minutes < 120 {
                    format!("{within_minutes} min")
                } else {
                    format!("{} h", (f64::from(*within_minutes) / 60.0).round())
                };
                let why = match cause {
                    Cause::NeedMet { need_wh } => {
                        format!("its {} of the day is delivered", kwh(*need_wh))
                    }
                    Cause::TiersAbove {
                        last_rank,
                        short_wh,
                        from,
                        charging,
                    } => {
                        let tiers = tiers_above(last_rank + 1);
                        let when =
                            from.map_or(String::new(), |t| format!(" from {}", clock(plan, t)));
                        let (are, take) = if *last_rank > 1 {
                            ("are", "take")
                        } else {
                            ("is", "takes")
                        };
                        if *charging {
                            format!(
                                "the spare energy charges the battery for {tiers}, which {are} {} \
                                 short{when}",
                                kwh(*short_wh)
                            )
                        } else {
                            format!(
                                "{tiers} {take} all the energy and {are} still {} short{when}",
                                kwh(*short_wh)
                            )
                        }
                    }
                    Cause::TooLittle {
                        most_watts,
                        planned_wh,
                        least_watts,
                        on_off,
                    } => format!(
                        "the plan gives it at most {} at a time ({} in all), {}",
                        kw(*most_watts),
                        kwh(*planned_wh),
                        needs(*least_watts, *on_off)
                    ),
                    Cause::NoRoom {
                        spare_watts,
                        least_watts,
                        on_off,
                    } => format!(
                        "at most {} is left unused at any time, {}",
                        kw(*spare_watts),
                        needs(*least_watts, *on_off)
                    ),
                };
                format!("not planned in the next {within}: {why}")
            }
        }
    }
}

fn needs(least: Watts, on_off: bool) -> String {
    if on_off {
        format!("less than half its {}", kw(2.0 * least))
    } else {
        format!("less than its {} minimum", kw(least))
    }
}

/// The reason of a flexible load that waits for the plan: "laundry off: flexible, planned
/// 12:30-14:00 at 2.0 kW, when 3.1 kW of sun is spare".
pub fn deferred_reason(name: &str, outlook: &Outlook, plan: &HorizonPlan) -> String {
    format!("{name} off: flexible, {}", outlook.describe(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::horizon::{HorizonInput, HorizonLoad, plan_horizon};
    use crate::model::{Battery, Deadline, EnergyNeed, Load, Sharing, Tier};

    /// A rank-1 load that cannot wait and a flexible 2 kW one below it, planned over
    /// quarter hours from 12:00 under `pv`.
    fn two_tiers(fridge: Watts, flexible: Load) -> Priorities {
        Priorities {
            tiers: vec![
                Tier::new(
                    "health",
                    Sharing::InOrder,
                    vec![Load::on_off("fridge", fridge)],
                ),
                Tier::new("comfort", Sharing::FairShare, vec![flexible]),
            ],
            ..Priorities::default()
        }
    }

    fn laundry() -> Load {
        let mut l = Load::on_off("laundry", 2000.0).named("Shared laundry");
        l.flexible = true;
        l
    }

    fn plan(p: &Priorities, pv: Vec<Watts>, battery: Option<Battery>) -> HorizonPlan {
        let mut input = HorizonInput::new(15, 12 * 60, pv);
        input.battery = battery;
        input.loads = HorizonLoad::from_priorities(p);
        plan_horizon(&input)
    }

    fn reason(p: &Priorities, plan: &HorizonPlan, pv: &[Watts], step: usize) -> String {
        let ctx = PlanContext {
            plan,
            pv_watts: pv,
            uncontrolled_watts: &[],
            elapsed_minutes: u32::try_from(step).unwrap() * 15,
        };
        let o = outlook(&ctx, p, "laundry").expect("the laundry is in the plan");
        deferred_reason("Shared laundry", &o, plan)
    }

    #[test]
    fn a_planned_load_says_when_it_runs_and_how_much_sun_is_spare_then() {
        let p = two_tiers(500.0, laundry());
        let pv = vec![
            0.0, 0.0, 3100.0, 3100.0, 3100.0, 3100.0, 3100.0, 3100.0, 0.0, 0.0,
        ];
        let plan = plan(&p, pv.clone(), None);
        assert_eq!(
            reason(&p, &plan, &pv, 0),
            "Shared laundry off: flexible, planned 12:30-14:00 at 2.0 kW, when 2.6 kW of sun \
             is spare"
        );
        // Later in the run the window starts now; past the run, nothing is planned any more.
        assert!(reason(&p, &plan, &pv, 3).contains("planned 12:45-14:00"));
        assert_eq!(
            reason(&p, &plan, &pv, 8),
            "Shared laundry off: flexible, not planned in the next 30 min: tier 1 takes all the \
             energy and is still 0.2 kWh short from 14:00"
        );
    }

    #[test]
    fn a_window_past_the_sites_midnight_is_tomorrow() {
        let p = two_tiers(500.0, laundry());
        let pv = vec![0.0, 0.0, 3100.0, 3100.0];
        let mut input = HorizonInput::new(15, 23 * 60 + 30, pv.clone());
        input.loads = HorizonLoad::from_priorities(&p);
        let plan = plan_horizon(&input);
        let r = reason(&p, &plan, &pv, 0);
        assert_eq!(
            r,
            "Shared laundry off: flexible, planned tomorrow 00:00-00:30 at 2.0 kW, when 2.6 kW \
             of sun is spare"
        );
    }

    #[test]
    fn an_unplanned_load_gives_the_shortfall_of_the_tiers_above_the_battery_charges_for() {
        // Two hours of 4 kW sun, then a night the battery cannot carry the 1 kW fridge through:
        // every spare watt goes into the battery, and the fridge is still short.
        let p = two_tiers(1000.0, laundry());
        let mut pv = vec![4000.0; 8];
        pv.extend(vec![0.0; 88]);
        let battery = Battery {
            capacity_wh: 10_000.0,
            soc: 0.1,
            soc_min: 0.1,
            soc_max: 0.9,
            max_charge_watts: 3000.0,
            max_discharge_watts: 3000.0,
            charge_efficiency: 1.0,
            discharge_efficiency: 1.0,
        };
        let plan = plan(&p, pv.clone(), Some(battery));
        // The fridge needs 22 kWh at night; the sun leaves 3 kW for two hours to charge.
        let fridge = plan.loads.iter().find(|l| l.id == "fridge").unwrap();
        let short = 24_000.0 - fridge.planned_wh;
        assert!((short - 16_000.0).abs() < 60.0, "{short}");
        let r = reason(&p, &plan, &pv, 0);
        assert!(
            r.starts_with(
                "Shared laundry off: flexible, not planned in the next 24 h: the spare energy \
                 charges the battery for tier 1, which is 16.0 kWh short from "
            ),
            "{r}"
        );
        // The first step the fridge goes short, on the plan's clock: the battery empties 8 h
        // into the night.
        let first = (0..96)
            .find(|&t| fridge.watts[t] < 999.0)
            .expect("a short step");
        assert!(r.ends_with(&clock(&plan, first)), "{r}");
        assert!(first >= 8, "short from step {first}, in the sun");
    }

    #[test]
    fn a_load_whose_daily_need_is_done_says_so() {
        let laundry = laundry().with_need(EnergyNeed {
            energy_wh: 3000.0,
            deadline: Deadline::MinuteOfDay(18 * 60),
        });
        let p = two_tiers(500.0, laundry);
        // The controller plans only what is left of the need: none.
        let mut input = HorizonInput::new(15, 12 * 60, vec![5000.0; 96]);
        input.loads = HorizonLoad::from_priorities(&p);
        for l in &mut input.loads {
            if let crate::horizon::HorizonDemand::Deferrable { need, .. } = &mut l.demand {
                need.energy_wh = 0.0;
            }
        }
        let plan = plan_horizon(&input);
        assert_eq!(
            reason(&p, &plan, &[5000.0; 96], 0),
            "Shared laundry off: flexible, not planned in the next 24 h: its 3.0 kWh of the day \
             is delivered"
        );
    }

    #[test]
    fn a_load_the_plan_never_gives_enough_to_run_says_how_much_it_gets() {
        // 1.9 kW of sun for a 0.5 kW fridge and a 3 kW workshop: the 1.4 kW spare would run
        // it half the time in the plan's average, never at the half of its power it needs.
        let mut workshop = Load::on_off("laundry", 3000.0).named("Workshop");
        workshop.flexible = true;
        let p = two_tiers(500.0, workshop);
        let pv = vec![1900.0; 8];
        let plan = plan(&p, pv.clone(), None);
        assert_eq!(
            reason(&p, &plan, &pv, 0),
            "Shared laundry off: flexible, not planned in the next 2 h: the plan gives it at \
             most 1.4 kW at a time (2.8 kWh in all), less than half its 3.0 kW"
        );
    }
}
