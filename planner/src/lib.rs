//! Communalia planner: turns the assembly's priorities into watts. Pure: no IO, no clock, no
//! threads; time is always an argument and every solve has a size or iteration budget.
//!
//! # Public API
//! - [`allocate`] / [`allocate_with`]: allocation now. In: [`Priorities`] (tiers of [`Load`]s,
//!   rank 1 first, each with a [`Sharing`] rule), a [`Snapshot`] (PV, grid allowance,
//!   uncontrolled consumption, [`Battery`], [`HealthReserve`]) and the [`Rotation`] history
//!   returned by the previous call. Out: an [`Allocation`] (serde `Serialize`) with one
//!   [`LoadAllocation`] per load (`id`, `tier`, `rank`, `on`, `demand_watts`,
//!   `allocated_watts`, `reason`), [`Diagnostic`]s, the [`Method`] used and the next rotation.
//! - [`plan_horizon`]: the horizon plan (e.g. 96 × 15 min) as one linear programme (good_lp with
//!   microlp). In: a [`HorizonInput`] (PV forecast, uncontrolled consumption, battery, optional
//!   [`GridImport`] with prices, health reserve per step, [`HorizonLoad`]s, which
//!   [`HorizonLoad::from_priorities`] builds from the tiers). Out: a [`HorizonPlan`] with power
//!   per load and step, SoC trajectory, import, cost and diagnostics for needs that cannot be
//!   met. The allocation follows it: set [`Load::planned_watts`] to
//!   [`HorizonPlan::watts`]`(id, current_step)` and a flexible load waits when the plan says so.
//! - [`selfcons::solve`]: the EMHASS-style self-consumption problem ([`selfcons::Instance`] is
//!   also the JSON format of `communalia bench planner --instance`): LP relaxation, then a dive
//!   that fixes on/off steps one by one re-optimising from the previous basis, then a short
//!   branch and bound from the dive's schedule on small models. Returns the objective (import
//!   cost minus export revenue) with the relaxation's lower bound.
//! - [`fixtures`]: the mission's village and deterministic synthetic problems (tests, benches).
//! - [`outlook::outlook`]: for a flexible load the allocation defers ([`LoadAllocation::deferred`]),
//!   when the horizon plan runs it (a window in the plan's local clock, with the spare sun) or
//!   why not within the horizon (the shortfall of the tiers above, in numbers);
//!   [`outlook::deferred_reason`] writes it for people.
//! - [`reason::kw`]: how power is written for people.
//!
//! # Invariants
//! - Never allocates more than available: the sum of allocations is at most PV minus planned
//!   charge, plus grid allowance, minus uncontrolled consumption, plus the battery's discharge
//!   limit; non-health loads never use the battery while its stored energy is within the health
//!   reserve.
//! - Strict precedence: the power served per tier, from the top, is lexicographically maximal
//!   (an `in_order` tier counts each listed load as a tier of its own; inside a `fair_share`
//!   tier, its health loads come before its other loads). A higher-tier load that cannot fit
//!   does not block a smaller lower-tier load. Exact to 1 W (coarser only when a tier's budget
//!   exceeds 32768 W: budget / 32768, rounded so it never over-allocates). One exception, for
//!   turns: while on/off loads of a `fair_share` tier wait for their turn, the tier may serve less
//!   than its maximum, but what it leaves (to the tiers below) is always less than any load it
//!   cut needs: no load is cut while lower tiers hold power it could have had.
//! - Inside a `fair_share` tier, loads take turns: the one that has waited longest (cut in the
//!   most consecutive cycles, on/off or adjustable) and fits is served, the others that waited
//!   are favoured, longest first, while the tier stays within [`TURN_SLACK`] of its maximum,
//!   then the tier serves as much as it still can, adjustable loads first (same fraction of
//!   their demand, bounded below by their minimum), then on/off loads by fewest served scarce
//!   cycles, then most recent cut, then listed order. A load the planner switched stays in that
//!   state [`Priorities::min_switch_secs`] (measured on [`Snapshot::now_secs`]) unless it stops
//!   asking or, switched on, its group can no longer hold the loads held on (forced); while the
//!   longest waiter that fits alone is kept out by loads held on, no load of its group is
//!   switched on. Turn guarantee: while the `N` loads of a tier's group (health or not) ask and
//!   each fits alone in what the tiers above left, whatever that budget does from cycle to
//!   cycle, a load cut at time `s` is served again by `s + (N + 1) × min_switch_secs + N` cycle
//!   intervals; with no minimum, at least once in any `N` consecutive cycles (greedy fallback
//!   included). Exceptions to precedence with a minimum time: a load held off, and a tier
//!   waiting for its held loads, may leave power that one of its cut loads could use, for at
//!   most `min_switch_secs`.
//! - The horizon plan keeps the health reserve at every step except for health loads and
//!   uncontrolled consumption, which may use it; it prefers (by weights at least 3 apart) higher
//!   ranks, then lower import cost, then less battery discharge.
//! - Nothing panics on bad numbers: non-finite or negative inputs count as zero, with a
//!   diagnostic. A group too large for the exact method within its work budget is served by a
//!   greedy first-fit in priority order (never over-allocates, keeps tier order, may serve less
//!   than the exact method) and says so; a failed or oversized horizon LP gives a greedy
//!   simulation, also with a diagnostic.
//! - Power in watts (`f64`, [`Watts`]), energy in watt-hours ([`WattHours`]), SoC as fractions.

mod alloc;
pub mod model;
pub mod outlook;
pub mod reason;
mod subset;

pub use alloc::{
    Allocation, AllocationOptions, Diagnostic, LoadAllocation, Method, Severity, TURN_SLACK,
    allocate, allocate_with,
};
pub use model::{
    Battery, Control, Deadline, EnergyNeed, HealthReserve, Load, Priorities, Rotation,
    RotationEntry, Sharing, Snapshot, Tier, WattHours, Watts,
};

pub mod fixtures;
pub mod horizon;
pub mod selfcons;

pub use horizon::{
    GridImport, HorizonDemand, HorizonInput, HorizonLoad, HorizonPlan, PlanMethod, PlannedLoad,
    plan_horizon,
};
