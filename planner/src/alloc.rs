//! Allocation now: tier by tier, each tier served as much as fits, shared by its rule, with reasons.
//!
//! The tiers (and, in an `in_order` tier, each listed load) form groups processed from the top.
//! Each group gets the largest total that fits in what the groups above left (an exact bitset
//! programme over watts, see `subset`), so the served power per tier is lexicographically
//! maximal from the top (except while loads wait for their turn, below); among the subsets
//! reaching that total, adjustable loads come first and share by max-min fairness, and on/off
//! loads take turns by their rotation record.
//!
//! Turns in a `fair_share` group: when on/off loads are waiting (cut in the last cycles), the
//! one that has waited longest and fits alone is served even if that costs the group power, and
//! the other waiting loads are favoured, longest first, as long as the group stays within
//! [`TURN_SLACK`] of the most it could take; then it takes as much as it still can. Whatever
//! that costs, what the group leaves is less than any load it cut needs (the choice cannot be
//! extended), so it is less than the smallest of them. Maximising alone is not enough: with loads of unequal sizes a small load can
//! wait for ever (950 W and 100 W with 1 kW). Serving the longest waiter first bounds every wait:
//! a load cut at cycle `s` waits behind only loads also cut at `s` (those served then have waited
//! less from then on), each at most once, and at least one load is served each cycle; so, while
//! every on/off load of the group asks and fits alone, each is served at least once in any `N`
//! consecutive cycles, `N` being their number. What the group leaves goes to the groups below.
//!
//! When the programme would exceed its work budget the group falls back to a greedy first-fit in
//! the same order, which never over-allocates, keeps tier order and keeps the turn guarantee.
//! Adjustable loads wait and take turns like on/off ones (a turn: at least their minimum).
//!
//! With a minimum switching time `M` (`Priorities::min_switch_secs`), a group's loads held on
//! (switched on less than `M` ago) keep their power first, unless what the group has no longer
//! holds them all (then as many watts of them as fit: forced); loads held off (switched off
//! less than `M` ago while asking) stay off; the free loads share the rest as above. While the
//! first waiting free load that fits alone in the group's budget cannot fit beside the loads
//! held on, no free load is switched on (only those already on may stay): every switch-on
//! starts a new hold, and without this pause holds started one after another could keep it
//! out for ever. So holds only end while a turn is kept out, and it comes within `M` and a
//! cycle; a load cut at `s` is free by `s + M`, then waits behind at most the `N - 1` loads
//! that were already waiting at `s`, one turn each, after the holds of the turn in progress:
//! served by `s + (N + 1) M + N` cycle intervals.

use serde::Serialize;

use crate::model::{
    Control, HealthReserve, Load, Priorities, Rotation, RotationEntry, Sharing, Snapshot, Watts,
};
use crate::reason::{Facts, HeldBack, Why, kw};
use crate::subset::{self, Item};

/// How far below the most it could take a `fair_share` group may go to favour loads that have
/// waited, after the longest-waiting one has had its turn: 5 %.
pub const TURN_SLACK: f64 = 0.05;

/// Bounds on the work of one allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocationOptions {
    /// Most bitset word operations one group may use before the greedy fallback takes over.
    pub max_work_per_group: u64,
    /// Most cells the watt range of a group is divided into (resolution = budget / cells, at
    /// least 1 W); at most 2^24 are used, whatever is asked.
    pub max_cells: usize,
}

impl Default for AllocationOptions {
    fn default() -> Self {
        Self {
            max_work_per_group: 4_000_000,
            max_cells: 1 << 15,
        }
    }
}

/// How a group was solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every group was solved exactly.
    Exact,
    /// At least one group used the greedy fallback.
    GreedyFallback,
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Something was corrected or approximated.
    Warning,
}

/// Something the caller should know about a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    /// How serious.
    pub severity: Severity,
    /// The load concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<String>,
    /// One line for people.
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn warn(load: Option<&str>, message: String) -> Self {
        Self {
            severity: Severity::Warning,
            load: load.map(str::to_owned),
            message,
        }
    }
    pub(crate) fn info(load: Option<&str>, message: String) -> Self {
        Self {
            severity: Severity::Info,
            load: load.map(str::to_owned),
            message,
        }
    }
}

/// The decision for one load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadAllocation {
    /// Load id.
    pub id: String,
    /// Tier name.
    pub tier: String,
    /// Tier rank, 1 = highest.
    pub rank: usize,
    /// Switched on (any power above zero).
    pub on: bool,
    /// What the load asked for.
    pub demand_watts: Watts,
    /// What it gets: its demand for an on/off load that is on, a setpoint for an adjustable one.
    pub allocated_watts: Watts,
    /// One line for people.
    pub reason: String,
    /// Off because it is flexible and the horizon plan gives it less than it needs to run now:
    /// it waits for the plan, not for power ([`crate::outlook`] says when it runs).
    pub deferred: bool,
}

/// The result of [`allocate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Allocation {
    /// Power available to the controlled loads (health loads may use all of it).
    pub available_watts: Watts,
    /// Part of `available_watts` only the health loads may use (battery power under the reserve).
    pub health_only_watts: Watts,
    /// Sum of the allocations.
    pub allocated_watts: Watts,
    /// One entry per load, tiers from the top, loads in listed order.
    pub loads: Vec<LoadAllocation>,
    /// Corrections, fallbacks, anything unusual.
    pub diagnostics: Vec<Diagnostic>,
    /// Exact or greedy.
    pub method: Method,
    /// Rotation history to pass to the next call.
    #[serde(skip)]
    pub rotation: Rotation,
}

/// Which power pools the allocation starts with.
struct Pools {
    free: Watts,
    reserved: Watts,
    /// Why the battery gives nothing to the loads below the health tier, when it does not.
    held_back: Option<HeldBack>,
}

fn clean(value: f64, what: &str, id: Option<&str>, diags: &mut Vec<Diagnostic>) -> f64 {
    if value.is_finite() && value >= 0.0 {
        value
    } else {
        diags.push(Diagnostic::warn(
            id,
            format!("{what} is {value}, counted as 0"),
        ));
        0.0
    }
}

fn pools(p: &Priorities, s: &Snapshot, diags: &mut Vec<Diagnostic>) -> Pools {
    let pv = clean(s.pv_watts, "pv_watts", None, diags);
    let grid = clean(s.grid_allowance_watts, "grid_allowance_watts", None, diags);
    let unc = clean(s.uncontrolled_watts, "uncontrolled_watts", None, diags);
    let charge = clean(s.planned_charge_watts, "planned_charge_watts", None, diags);
    let net = (pv - charge).max(0.0) + grid - unc;
    let Some(b) = s.battery.as_ref() else {
        return Pools {
            free: net.max(0.0),
            reserved: 0.0,
            held_back: None,
        };
    };
    let usable = b.usable_wh();
    let discharge = if usable > 0.0 {
        clean(b.max_discharge_watts, "max_discharge_watts", None, diags)
    } else {
        0.0
    };
    let eff = if b.discharge_efficiency > 0.0 && b.discharge_efficiency <= 1.0 {
        b.discharge_efficiency
    } else {
        1.0
    };
    let delivered_reserve = match s.health_reserve {
        HealthReserve::None => 0.0,
        HealthReserve::EnergyWh(e) => clean(e, "health reserve", None, diags),
        HealthReserve::Hours(h) => {
            let health: f64 = p
                .tiers
                .iter()
                .flat_map(|t| &t.loads)
                .filter(|l| l.health)
                .map(|l| l.demand_watts.max(0.0))
                .sum();
            clean(h, "health reserve hours", None, diags) * health
        }
    };
    let stored_reserve = delivered_reserve / eff;
    if usable > stored_reserve && charge > 0.0 {
        // The plan charges the battery now: the loads may take the sun it would store, but
        // the battery gives them nothing beyond it (only the health tier may draw on it).
        // (Drawn down by the lower tiers while the plan charged, the battery fell under its
        // rising daytime reserve, and the next cycles cut the tier below the health tier in
        // full sun to catch up.)
        let lent = discharge.min(charge);
        Pools {
            free: (net + lent).max(0.0),
            reserved: (discharge - lent + (net + lent).min(0.0)).max(0.0),
            held_back: (discharge > lent).then_some(HeldBack::Charging(charge)),
        }
    } else if usable > stored_reserve {
        Pools {
            free: (net + discharge).max(0.0),
            reserved: 0.0,
            held_back: None,
        }
    } else {
        let reserved = (discharge + net.min(0.0)).max(0.0);
        if stored_reserve > 0.0 {
            diags.push(Diagnostic::info(
                None,
                format!(
                    "battery holds {} above its minimum, within the {} health reserve: \
                     only health loads may use it",
                    crate::reason::kwh(usable),
                    crate::reason::kwh(stored_reserve)
                ),
            ));
        }
        Pools {
            free: net.max(0.0),
            reserved,
            held_back: (stored_reserve > 0.0 && discharge > 0.0)
                .then_some(HeldBack::Reserve(usable)),
        }
    }
}

/// What one load asks in this cycle, after cleaning, plan and limits.
#[derive(Clone, Copy)]
struct Ask {
    lo: Watts,
    hi: Watts,
    adjustable: bool,
    why_zero: Option<Why0>,
}

#[derive(Clone, Copy)]
enum Why0 {
    Idle,
    Deferred,
}

fn ask(load: &Load, diags: &mut Vec<Diagnostic>) -> Ask {
    let demand = clean(load.demand_watts, "demand_watts", Some(&load.id), diags);
    let (mut lo, mut hi, adjustable) = match load.control {
        Control::OnOff => (demand, demand, false),
        Control::Adjustable {
            min_watts,
            max_watts,
        } => {
            let min = clean(min_watts, "min_watts", Some(&load.id), diags);
            let max = clean(max_watts, "max_watts", Some(&load.id), diags).max(min);
            (min, demand.clamp(min, max), true)
        }
    };
    if demand <= 0.0 {
        return Ask {
            lo: 0.0,
            hi: 0.0,
            adjustable,
            why_zero: Some(Why0::Idle),
        };
    }
    if load.flexible
        && let Some(planned) = load.planned_watts
    {
        let planned = planned.max(0.0);
        let defer = if adjustable {
            hi = hi.min(planned);
            hi < lo
        } else {
            planned < demand / 2.0
        };
        if defer {
            (lo, hi) = (0.0, 0.0);
            return Ask {
                lo,
                hi,
                adjustable,
                why_zero: Some(Why0::Deferred),
            };
        }
    }
    Ask {
        lo,
        hi,
        adjustable,
        why_zero: None,
    }
}

/// Shares `budget` among adjustable loads `(lo, hi)` by max-min fairness of the fraction of `hi`,
/// never below `lo`: returns each setpoint. Requires `sum(lo) <= budget`.
pub(crate) fn water_fill(items: &[(Watts, Watts)], budget: Watts) -> Vec<Watts> {
    let total_hi: f64 = items.iter().map(|i| i.1).sum();
    if total_hi <= budget {
        return items.iter().map(|i| i.1).collect();
    }
    let at = |f: f64| -> Vec<f64> {
        items
            .iter()
            .map(|&(lo, hi)| (f * hi).clamp(lo, hi))
            .collect()
    };
    let (mut a, mut b) = (0.0f64, 1.0f64);
    for _ in 0..60 {
        let m = 0.5 * (a + b);
        if at(m).iter().sum::<f64>() <= budget {
            a = m;
        } else {
            b = m;
        }
    }
    at(a)
}

/// Serves a group exactly (or greedily past the work budget); returns setpoints in `order`.
/// `order[..waiting]` are on/off loads waiting for their turn, longest first; the first of them
/// that fits alone is moved to the front and served.
fn solve_group(
    asks: &[Ask],
    order: &mut [usize],
    waiting: usize,
    budget: Watts,
    opts: &AllocationOptions,
    greedy: &mut bool,
) -> Vec<Watts> {
    let total_hi: f64 = order.iter().map(|&i| asks[i].hi).sum();
    let mut chosen = vec![false; order.len()];
    if total_hi <= budget + 1e-9 {
        chosen.iter_mut().for_each(|c| *c = true);
    } else {
        let cells = opts.max_cells.clamp(1, subset::MAX_CELLS);
        let res = (budget / cells as f64).ceil().max(1.0);
        let cap = (budget / res + 1e-9).floor().max(0.0) as usize;
        let mut items: Vec<Item> = order
            .iter()
            .map(|&i| {
                let lo = (asks[i].lo / res - 1e-9).ceil().max(0.0) as usize;
                let hi = ((asks[i].hi / res + 1e-9).floor().max(0.0) as usize).max(lo);
                Item { lo, hi }
            })
            .collect();
        let waiting = waiting.min(order.len());
        if let Some(h) = items[..waiting].iter().position(|it| it.lo <= cap) {
            order[..=h].rotate_right(1);
            items[..=h].rotate_right(1);
        }
        if subset::work(&items, cap) <= opts.max_work_per_group {
            chosen = subset::choose(&items, cap, waiting, TURN_SLACK).1;
        } else {
            *greedy = true;
            let mut left = budget;
            for (k, &i) in order.iter().enumerate() {
                let need = asks[i].lo;
                if need <= left + 1e-9 {
                    chosen[k] = true;
                    left -= need;
                }
            }
        }
    }
    let mut out = vec![0.0; order.len()];
    let mut left = budget;
    let mut adj = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if chosen[k] {
            if asks[i].adjustable {
                adj.push(k);
            } else {
                out[k] = asks[i].hi;
                left -= asks[i].hi;
            }
        }
    }
    let ranges: Vec<(Watts, Watts)> = adj
        .iter()
        .map(|&k| (asks[order[k]].lo, asks[order[k]].hi))
        .collect();
    for (&k, w) in adj.iter().zip(water_fill(&ranges, left.max(0.0))) {
        out[k] = w;
    }
    out
}

/// What holds a load of a `fair_share` group in its state this cycle.
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    /// Switched off this long ago (seconds), less than the minimum switching time.
    Off(f64),
    /// The longest-waiting load that fits alone, kept out by loads held on.
    Blocked,
}

/// Serves a `fair_share` group some of whose loads are held by the minimum switching time:
/// the loads held on (`held_on`) keep their power if it holds them all, else as many as fit
/// (forced); the loads held off stay off; the free loads (`free`, ordered, `free[..waiting]`
/// waiting) share the rest as in [`solve_group`], except that while the first waiting one
/// that fits alone in `budget` cannot fit beside the loads held on, only free loads already on
/// may stay on (none is switched on: each would be held in turn and delay that load's turn).
/// Returns the watts of every load given and, when it is kept out, that first waiting load.
#[allow(clippy::too_many_arguments)]
fn solve_held(
    asks: &[Ask],
    free: &mut Vec<usize>,
    waiting: usize,
    held_on: &mut [usize],
    was_on: impl Fn(usize) -> bool,
    budget: Watts,
    opts: &AllocationOptions,
    greedy: &mut bool,
) -> (Vec<(usize, Watts)>, Option<usize>) {
    let mut out: Vec<(usize, Watts)> = Vec::with_capacity(free.len() + held_on.len());
    let held_lo: f64 = held_on.iter().map(|&i| asks[i].lo).sum();
    let kept: Vec<usize> = if held_lo <= budget + 1e-9 {
        held_on.to_vec()
    } else {
        // Forced: what the group has no longer holds them all; keep as many watts as fit.
        let w = solve_group(asks, held_on, 0, budget, opts, greedy);
        held_on
            .iter()
            .zip(w)
            .filter_map(|(&i, w)| (w > 0.0).then_some(i))
            .collect()
    };
    let kept_lo: f64 = kept.iter().map(|&i| asks[i].lo).sum();
    let left = (budget - kept_lo).max(0.0);
    let waiting = waiting.min(free.len());
    let head = free[..waiting]
        .iter()
        .copied()
        .find(|&i| asks[i].lo <= budget + 1e-9);
    let blocked = head.filter(|&h| asks[h].lo > left + 1e-9);
    let waiting = if blocked.is_some() {
        for &i in free.iter().filter(|&&i| !was_on(i)) {
            out.push((i, 0.0));
        }
        free.retain(|&i| was_on(i));
        0
    } else {
        waiting
    };
    let w = solve_group(asks, free, waiting, left, opts, greedy);
    let mut chosen: Vec<usize> = kept.clone();
    chosen.extend(
        free.iter()
            .zip(&w)
            .filter_map(|(&i, &w)| (w > 0.0).then_some(i)),
    );
    for (&i, &w) in free.iter().zip(&w) {
        if w <= 0.0 {
            out.push((i, 0.0));
        }
    }
    for &i in held_on.iter().filter(|i| !kept.contains(i)) {
        out.push((i, 0.0));
    }
    let fixed: f64 = chosen
        .iter()
        .filter(|&&i| !asks[i].adjustable)
        .map(|&i| asks[i].hi)
        .sum();
    let adjustable: Vec<usize> = chosen
        .iter()
        .copied()
        .filter(|&i| asks[i].adjustable)
        .collect();
    let ranges: Vec<(Watts, Watts)> = adjustable
        .iter()
        .map(|&i| (asks[i].lo, asks[i].hi))
        .collect();
    for &i in chosen.iter().filter(|&&i| !asks[i].adjustable) {
        out.push((i, asks[i].hi));
    }
    for (&i, w) in adjustable
        .iter()
        .zip(water_fill(&ranges, (budget - fixed).max(0.0)))
    {
        out.push((i, w));
    }
    (out, blocked)
}

/// How long ago the load was switched, when that is less than `min_switch` (it is held).
fn held_for(e: &RotationEntry, now: f64, min_switch: f64) -> Option<f64> {
    let ago = now - e.switched_secs?;
    (ago >= 0.0 && ago < min_switch).then_some(ago)
}

/// Allocates the power of `snapshot` to the loads of `priorities`, with default options.
pub fn allocate(priorities: &Priorities, snapshot: &Snapshot, rotation: &Rotation) -> Allocation {
    allocate_with(
        priorities,
        snapshot,
        rotation,
        &AllocationOptions::default(),
    )
}

struct Group {
    tier: usize,
    loads: Vec<usize>,
    health: bool,
    fair: bool,
}

/// Allocates with explicit work bounds. Never panics; never allocates more than available.
pub fn allocate_with(
    priorities: &Priorities,
    snapshot: &Snapshot,
    rotation: &Rotation,
    opts: &AllocationOptions,
) -> Allocation {
    let mut diags = Vec::new();
    let pools = pools(priorities, snapshot, &mut diags);
    let (mut free, mut reserved) = (pools.free, pools.reserved);
    let available = free + reserved;

    let mut seen = std::collections::BTreeSet::new();
    for l in priorities.tiers.iter().flat_map(|t| &t.loads) {
        if !seen.insert(l.id.as_str()) {
            diags.push(Diagnostic::warn(
                Some(&l.id),
                format!("load {} is listed twice; rotation counts are shared", l.id),
            ));
        }
    }

    // Groups from the top.
    let mut groups = Vec::new();
    for (t, tier) in priorities.tiers.iter().enumerate() {
        match tier.sharing {
            Sharing::FairShare => {
                for health in [true, false] {
                    let loads: Vec<usize> = (0..tier.loads.len())
                        .filter(|&i| tier.loads[i].health == health)
                        .collect();
                    if !loads.is_empty() {
                        groups.push(Group {
                            tier: t,
                            loads,
                            health,
                            fair: true,
                        });
                    }
                }
            }
            Sharing::InOrder => {
                for i in 0..tier.loads.len() {
                    groups.push(Group {
                        tier: t,
                        loads: vec![i],
                        health: tier.loads[i].health,
                        fair: false,
                    });
                }
            }
        }
    }

    let asks: Vec<Vec<Ask>> = priorities
        .tiers
        .iter()
        .map(|t| t.loads.iter().map(|l| ask(l, &mut diags)).collect())
        .collect();
    let mut alloc: Vec<Vec<Watts>> = priorities
        .tiers
        .iter()
        .map(|t| vec![0.0; t.loads.len()])
        .collect();
    let mut greedy = false;
    let entry = |id: &str| rotation.loads.get(id).copied().unwrap_or_default();
    // The minimum switching time, and the clock it is measured on.
    let min_switch = clean(
        priorities.min_switch_secs,
        "min_switch_secs",
        None,
        &mut diags,
    );
    let now = if !snapshot.now_secs.is_finite() {
        diags.push(Diagnostic::warn(
            None,
            format!(
                "now_secs is {}; no load is held by the minimum switching time",
                snapshot.now_secs
            ),
        ));
        None
    } else {
        (min_switch > 0.0).then_some(snapshot.now_secs)
    };
    let mut holds: Vec<Vec<Option<Hold>>> = priorities
        .tiers
        .iter()
        .map(|t| vec![None; t.loads.len()])
        .collect();

    // Per tier: pools at its start (free, reserved) and what the tiers above asked / got.
    let mut tier_start: Vec<Option<(Watts, Watts, Watts, Watts)>> =
        vec![None; priorities.tiers.len()];
    let (mut asked_above, mut got_above) = (0.0, 0.0);
    let mut current_tier = usize::MAX;
    for g in &groups {
        let tier = &priorities.tiers[g.tier];
        if g.tier != current_tier {
            if current_tier != usize::MAX {
                asked_above += asks[current_tier].iter().map(|a| a.hi).sum::<f64>();
                got_above += alloc[current_tier].iter().sum::<f64>();
            }
            current_tier = g.tier;
            tier_start[g.tier] = Some((free, reserved, asked_above, got_above));
        }
        let a = &asks[g.tier];
        let mut order: Vec<usize> = g.loads.iter().copied().filter(|&i| a[i].hi > 0.0).collect();
        let mut waiting = 0;
        let mut held_on = Vec::new();
        if g.fair {
            if let Some(now) = now {
                order.retain(|&i| {
                    let e = entry(&tier.loads[i].id);
                    match held_for(&e, now, min_switch) {
                        Some(_) if e.on => held_on.push(i),
                        Some(secs) => holds[g.tier][i] = Some(Hold::Off(secs)),
                        None => return true,
                    }
                    false
                });
            }
            // Loads waiting for their turn (longest first), then adjustable loads, then the
            // other on/off loads (served least often, then cut most recently, first).
            // One rotation look-up per load, not per comparison.
            let key = |i: usize| {
                let e = entry(&tier.loads[i].id);
                let class = match (e.waiting > 0, a[i].adjustable) {
                    (true, _) => 0u8,
                    (false, true) => 1,
                    (false, false) => 2,
                };
                (
                    class,
                    std::cmp::Reverse(e.waiting),
                    e.served,
                    std::cmp::Reverse(e.last_cut),
                    i,
                )
            };
            order.sort_by_cached_key(|&i| key(i));
            waiting = order
                .iter()
                .filter(|&&i| entry(&tier.loads[i].id).waiting > 0)
                .count();
        }
        let budget = if g.health { free + reserved } else { free };
        let watts: Vec<(usize, Watts)> =
            if held_on.is_empty() && !g.loads.iter().any(|&i| holds[g.tier][i].is_some()) {
                let w = solve_group(a, &mut order, waiting, budget.max(0.0), opts, &mut greedy);
                order.iter().copied().zip(w).collect()
            } else {
                let was_on = |i: usize| entry(&tier.loads[i].id).on;
                let (w, blocked) = solve_held(
                    a,
                    &mut order,
                    waiting,
                    &mut held_on,
                    was_on,
                    budget.max(0.0),
                    opts,
                    &mut greedy,
                );
                if let Some(b) = blocked {
                    holds[g.tier][b] = Some(Hold::Blocked);
                }
                w
            };
        let used: f64 = watts.iter().map(|p| p.1).sum();
        if g.health {
            let from_reserved = used.min(reserved);
            reserved -= from_reserved;
            free = (free - (used - from_reserved)).max(0.0);
        } else {
            free = (free - used).max(0.0);
        }
        for (i, w) in watts {
            alloc[g.tier][i] = w;
        }
    }
    if greedy {
        diags.push(Diagnostic::warn(
            None,
            "a group was too large for the exact method within its work budget; \
             it was served greedily in priority order"
                .to_owned(),
        ));
    }

    // Rotation and reasons.
    let mut next = rotation.clone();
    next.cycle = rotation.cycle.saturating_add(1);
    let mut loads = Vec::new();
    let mut allocated = 0.0;
    for (t, tier) in priorities.tiers.iter().enumerate() {
        let rank = t + 1;
        let (free0, reserved0, asked0, got0) = tier_start[t].unwrap_or((0.0, 0.0, 0.0, 0.0));
        let a = &asks[t];
        let scarce = tier.sharing == Sharing::FairShare
            && tier
                .loads
                .iter()
                .enumerate()
                .any(|(i, _)| a[i].hi > 0.0 && alloc[t][i] <= 0.0);
        let active: Vec<usize> = (0..tier.loads.len()).filter(|&i| a[i].hi > 0.0).collect();
        let served_in_tier = active.iter().filter(|&&i| alloc[t][i] > 0.0).count();
        // Loads that waited went first, so a load without history was not cut by listed order.
        let waiters_first = active.iter().any(|&i| entry(&tier.loads[i].id).waiting > 0);
        let mut taken_before = 0.0;
        for (i, load) in tier.loads.iter().enumerate() {
            let w = alloc[t][i];
            let ask = a[i];
            let left = if load.health {
                free0 + reserved0
            } else {
                free0
            };
            let e = entry(&load.id);
            let why = if let Some(z) = ask.why_zero {
                match z {
                    Why0::Idle => Why::Idle,
                    Why0::Deferred => Why::Deferred,
                }
            } else if w >= ask.hi - 1e-6 {
                Why::Served
            } else if w > 0.0 {
                Why::Partial {
                    fair: tier.sharing == Sharing::FairShare,
                    taken_before,
                }
            } else if ask.lo > left + 1e-6 {
                Why::TooBig
            } else if let Some(Hold::Off(ago)) = holds[t][i] {
                Why::HeldOff {
                    ago_secs: ago,
                    min_secs: min_switch,
                }
            } else if holds[t][i] == Some(Hold::Blocked) {
                Why::TurnAfterHolds {
                    min_secs: min_switch,
                }
            } else if tier.sharing == Sharing::InOrder {
                Why::InOrder { taken_before }
            } else {
                Why::Rotation {
                    served_in_tier,
                    loads_in_tier: active.len(),
                    served: e.served,
                    cut: e.cut,
                    waiters_first,
                }
            };
            let facts = Facts {
                name: load.name.clone(),
                rank,
                demand: ask.hi.max(load.demand_watts.max(0.0)),
                minimum: ask.adjustable.then_some(ask.lo),
                allocated: w,
                got_above: got0,
                asked_above: asked0,
                left,
                held_back: if load.health { None } else { pools.held_back },
            };
            taken_before += w;
            if tier.sharing == Sharing::FairShare && ask.hi > 0.0 {
                if w > 0.0 {
                    if let Some(rec) = next.loads.get_mut(&load.id) {
                        rec.waiting = 0;
                    }
                } else {
                    let rec = next.loads.entry(load.id.clone()).or_default();
                    rec.waiting = rec.waiting.saturating_add(1);
                }
            }
            if tier.sharing == Sharing::FairShare && now.is_some() {
                // The state the load is held in, from the planner's last switch while it asked.
                let on = w > 0.0;
                if ask.hi > 0.0 {
                    if next.loads.get(&load.id).is_none_or(|r| r.on != on) {
                        let rec = next.loads.entry(load.id.clone()).or_default();
                        if rec.on != on {
                            rec.on = on;
                            rec.switched_secs = now;
                        }
                    }
                } else if let Some(rec) = next.loads.get_mut(&load.id) {
                    rec.on = false;
                    rec.switched_secs = None;
                }
            }
            if scarce && ask.hi > 0.0 {
                let rec = next.loads.entry(load.id.clone()).or_default();
                if w > 0.0 {
                    rec.served = rec.served.saturating_add(1);
                } else {
                    rec.cut = rec.cut.saturating_add(1);
                    rec.last_cut = Some(rotation.cycle);
                }
            }
            allocated += w;
            loads.push(LoadAllocation {
                id: load.id.clone(),
                tier: tier.name.clone(),
                rank,
                on: w > 0.0,
                demand_watts: load.demand_watts.max(0.0),
                allocated_watts: w,
                reason: why.render(&facts),
                deferred: why == Why::Deferred,
            });
        }
    }
    if allocated > available + 1e-6 {
        // Cannot happen by construction; keep the promise anyway.
        diags.push(Diagnostic::warn(
            None,
            format!(
                "internal: allocated {} of {}; everything switched off",
                kw(allocated),
                kw(available)
            ),
        ));
        for l in &mut loads {
            l.on = false;
            l.allocated_watts = 0.0;
        }
        allocated = 0.0;
    }
    Allocation {
        available_watts: available,
        health_only_watts: pools.reserved,
        allocated_watts: allocated,
        loads,
        diagnostics: diags,
        method: if greedy {
            Method::GreedyFallback
        } else {
            Method::Exact
        },
        rotation: next,
    }
}
