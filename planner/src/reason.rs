//! Reason strings: one line per load, for people, with the numbers that decided.

use crate::model::Watts;

/// Formats watts for people: `0.2 kW`, `0.15 kW`, `1.75 kW`, `2.1 kW`, `12 kW` (to 10 W below
/// 10 kW, to 100 W above).
pub fn kw(watts: Watts) -> String {
    let w = if watts.is_finite() {
        watts.max(0.0)
    } else {
        0.0
    };
    if w >= 10_000.0 {
        let tenths = (w / 100.0).round();
        if tenths % 10.0 == 0.0 {
            format!("{} kW", tenths / 10.0)
        } else {
            format!("{:.1} kW", tenths / 10.0)
        }
    } else {
        let hundredths = (w / 10.0).round();
        if hundredths % 10.0 == 0.0 {
            format!("{:.1} kW", hundredths / 100.0)
        } else {
            format!("{:.2} kW", hundredths / 100.0)
        }
    }
}

/// Formats watt-hours as kWh with one decimal.
pub fn kwh(wh: f64) -> String {
    format!("{:.1} kWh", wh.max(0.0) / 1000.0)
}

/// "tiers 1-4" / "tier 1".
pub fn tiers_above(rank: usize) -> String {
    match rank {
        0 | 1 => String::new(),
        2 => "tier 1".to_owned(),
        r => format!("tiers 1-{}", r - 1),
    }
}

/// What the tiers above took: "2.1 kW available went to tiers 1-4, which asked 1.9 kW".
pub(crate) fn above(rank: usize, got_above: Watts, left: Watts, asked_above: Watts) -> String {
    let available = got_above + left;
    if rank <= 1 {
        return format!("{} available", kw(available));
    }
    let mut s = format!(
        "{} available went to {}, which asked {}",
        kw(available),
        tiers_above(rank),
        kw(asked_above)
    );
    if got_above + 0.5 < asked_above {
        s.push_str(&format!(" and got {}", kw(got_above)));
    }
    s
}

/// Why a load is off or short; built by the allocation, rendered by [`Why::render`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Why {
    /// Fully served.
    Served,
    /// Adjustable, served in part; `taken_before` is what the loads listed before it in an
    /// `in_order` tier took.
    Partial { fair: bool, taken_before: Watts },
    /// Asks nothing now.
    Idle,
    /// Flexible, and the plan runs it later.
    Deferred,
    /// Does not fit in what the tiers above left.
    TooBig,
    /// Fitted alone, but its tier took turns and others were served; `waiters_first` when loads
    /// of the tier had been waiting (and so went first).
    Rotation {
        served_in_tier: usize,
        loads_in_tier: usize,
        served: u64,
        cut: u64,
        waiters_first: bool,
    },
    /// Fitted in what the tiers above left, but the loads listed before it in its tier took it.
    InOrder { taken_before: Watts },
    /// Switched off by the planner `ago_secs` ago, less than the minimum switching time.
    HeldOff { ago_secs: f64, min_secs: f64 },
    /// Its turn, kept out by loads of its tier switched on less than the minimum time ago.
    TurnAfterHolds { min_secs: f64 },
}

/// Formats a duration for people: `40 s`, `5 min`, `2 h`.
pub fn duration(secs: f64) -> String {
    let s = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
    if s < 120.0 {
        format!("{} s", s.round())
    } else if s < 7200.0 {
        format!("{} min", (s / 60.0).round())
    } else {
        format!("{} h", (s / 3600.0).round())
    }
}

/// Numbers a reason may quote.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Facts {
    pub name: String,
    pub rank: usize,
    pub demand: Watts,
    pub minimum: Option<Watts>,
    pub allocated: Watts,
    /// Power given to tiers above (from the pool this load draws on).
    pub got_above: Watts,
    /// Power the tiers above asked for.
    pub asked_above: Watts,
    /// Pool left when this load's tier started.
    pub left: Watts,
    /// Why the battery did not help this load, when it did not.
    pub held_back: Option<HeldBack>,
}

/// Why the battery gives the loads below the health tier nothing in this cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum HeldBack {
    /// It holds this much above its minimum, all of it kept for the health tier (Wh).
    Reserve(f64),
    /// The plan charges it now with this much of the sun (W): the loads may have that sun,
    /// but the battery does not discharge for them.
    Charging(f64),
}

impl Why {
    pub(crate) fn render(&self, f: &Facts) -> String {
        let r = f.rank;
        let mut s = match self {
            Why::Served => format!("{} on: tier {r}; asks {}, served", f.name, kw(f.demand)),
            Why::Partial { fair, taken_before } => {
                let pct = if f.demand > 0.0 {
                    (100.0 * f.allocated / f.demand).round()
                } else {
                    0.0
                };
                let how = if *fair {
                    format!("shared fairly in tier {r}")
                } else if *taken_before > 0.5 {
                    format!(
                        "taken first by the loads listed before it ({})",
                        kw(*taken_before)
                    )
                } else {
                    "all it gets".to_owned()
                };
                format!(
                    "{} at {} of {} asked ({pct} %): tier {r}; {}; the {} left is {how}",
                    f.name,
                    kw(f.allocated),
                    kw(f.demand),
                    above(r, f.got_above, f.left, f.asked_above),
                    kw(f.left)
                )
            }
            Why::Idle => format!("{} off: asks nothing now", f.name),
            Why::Deferred => format!(
                "{} off: flexible, the plan runs it later when energy is more plentiful",
                f.name
            ),
            Why::TooBig => {
                let need = match f.minimum {
                    Some(m) => format!("its {} minimum", kw(m)),
                    None => format!("its {}", kw(f.demand)),
                };
                if r <= 1 {
                    format!(
                        "{} off: tier 1; the {} available is less than {need}",
                        f.name,
                        kw(f.got_above + f.left)
                    )
                } else {
                    format!(
                        "{} off: tier {r}; {}; the {} left is less than {need}",
                        f.name,
                        above(r, f.got_above, f.left, f.asked_above),
                        kw(f.left)
                    )
                }
            }
            Why::Rotation {
                served_in_tier,
                loads_in_tier,
                served,
                cut,
                waiters_first,
            } => {
                let after = if r <= 1 {
                    String::new()
                } else {
                    format!(" after {}", tiers_above(r))
                };
                let turn = if served + cut == 0 && *waiters_first {
                    "loads that have waited go first".to_owned()
                } else if served + cut == 0 {
                    "first turns go in listed order".to_owned()
                } else {
                    format!(
                        "{} comes later in the rotation (served in {served} of {} short cycles)",
                        f.name,
                        served + cut
                    )
                };
                format!(
                    "{} off: tier {r} takes turns; the {} left{after} serves {served_in_tier} of \
                     its {loads_in_tier} loads; {turn}",
                    f.name,
                    kw(f.left),
                )
            }
            Why::InOrder { taken_before } => format!(
                "{} off: tier {r} goes in listed order; the loads before it took {} of the {} left, \
                 and the {} remaining is less than its {}",
                f.name,
                kw(*taken_before),
                kw(f.left),
                kw(f.left - taken_before),
                kw(f.minimum.unwrap_or(f.demand))
            ),
            Why::HeldOff { ago_secs, min_secs } => format!(
                "{} off: tier {r} rotation switched it off {} ago; it stays off at least {} \
                 between switches",
                f.name,
                duration(*ago_secs),
                duration(*min_secs)
            ),
            Why::TurnAfterHolds { min_secs } => format!(
                "{} off: next turn in tier {r}; its {} fits once the loads switched on less than \
                 {} ago have run that long",
                f.name,
                kw(f.minimum.unwrap_or(f.demand)),
                duration(*min_secs)
            ),
        };
        if let Some(held) = f.held_back
            && !matches!(self, Why::Served | Why::Idle | Why::Deferred)
        {
            s.push_str(&match held {
                HeldBack::Reserve(reserve) => format!(
                    "; the battery keeps its last {} for the health tier",
                    kwh(reserve)
                ),
                HeldBack::Charging(watts) => format!(
                    "; the plan charges the battery now ({} of the sun), so it gives nothing below the health tier beyond that sun",
                    kw(watts)
                ),
            });
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_is_written_in_kilowatts_with_sensible_precision() {
        assert_eq!(kw(200.0), "0.2 kW");
        assert_eq!(kw(150.0), "0.15 kW");
        assert_eq!(kw(2100.0), "2.1 kW");
        assert_eq!(kw(2149.0), "2.15 kW");
        assert_eq!(kw(1750.0), "1.75 kW");
        assert_eq!(kw(12340.0), "12.3 kW");
        assert_eq!(kw(12000.0), "12 kW");
        assert_eq!(kw(-3.0), "0.0 kW");
    }

    #[test]
    fn the_workshop_example_reads_as_in_the_issue() {
        let facts = Facts {
            name: "workshop".into(),
            rank: 5,
            demand: 800.0,
            minimum: None,
            allocated: 0.0,
            got_above: 1900.0,
            asked_above: 1900.0,
            left: 200.0,
            held_back: None,
        };
        assert_eq!(
            Why::TooBig.render(&facts),
            "workshop off: tier 5; 2.1 kW available went to tiers 1-4, which asked 1.9 kW; \
             the 0.2 kW left is less than its 0.8 kW"
        );
    }
}
