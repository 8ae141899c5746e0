//! Input types of the allocation: the assembly's tiers of loads and the snapshot of one cycle.
//!
//! Units are spelled out in the field names and in the [`Watts`] / [`WattHours`] aliases; power is
//! always in watts, energy in watt-hours, state of charge as a fraction 0..=1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Power in watts.
pub type Watts = f64;
/// Energy in watt-hours.
pub type WattHours = f64;

/// How a controlled load is driven.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// A plug: fully on at the load's demand, or off.
    OnOff,
    /// A setpoint anywhere in `min_watts..=max_watts`, or off.
    Adjustable {
        /// Lowest setpoint at which the load can run.
        min_watts: Watts,
        /// Highest setpoint.
        max_watts: Watts,
    },
}

/// How scarcity is shared inside a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// Loads take turns: the one that has waited longest (on/off or adjustable) and fits alone is
    /// served, others that waited are favoured within a 5 % slack, then the tier serves as much
    /// as it can, adjustable loads first at the same fraction of their demand (max-min
    /// fairness), then the on/off loads served least often (and, on a tie, cut most recently).
    /// With no minimum switching time, each load that asks and fits alone is served at least
    /// once in any run of as many cycles as the group has loads asking; see
    /// [`Priorities::min_switch_secs`] for the guarantee with one.
    FairShare,
    /// The listed order decides: each load comes strictly before the next one, as if it were a tier
    /// of its own.
    InOrder,
}

/// A daily energy need, e.g. a water pump that must pump 6 kWh before 20:00.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnergyNeed {
    /// Energy still to deliver before the deadline.
    pub energy_wh: WattHours,
    /// When it must be delivered.
    pub deadline: Deadline,
}

/// The deadline of an [`EnergyNeed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    /// Minutes since local midnight (0..1440); a time earlier than the horizon's start means
    /// tomorrow.
    MinuteOfDay(u32),
    /// The first horizon step that is too late (the need must be met in steps `0..step`).
    Step(usize),
}

/// One controlled load as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Stable identifier (as in the site file).
    pub id: String,
    /// Name used in the reasons; usually the id or a short human name.
    pub name: String,
    /// On/off or adjustable.
    pub control: Control,
    /// What the load asks for now (its nominal power for a plug, the wanted setpoint otherwise).
    pub demand_watts: Watts,
    /// The load can wait (deferrable); only meaningful with a plan or an energy need.
    pub flexible: bool,
    /// The load belongs to the health reserve: it may use battery energy kept for the health tier.
    pub health: bool,
    /// Optional daily energy need, used by the horizon plan.
    pub need: Option<EnergyNeed>,
    /// What the horizon plan gives this load in the current step, when a plan exists. A flexible
    /// load follows it: an on/off load runs only if the plan gives it at least half its demand, an
    /// adjustable load asks at most the planned power.
    pub planned_watts: Option<Watts>,
}

impl Load {
    /// A plug asking `watts`, not flexible, not health, no need, no plan.
    pub fn on_off(id: impl Into<String>, watts: Watts) -> Self {
        let id = id.into();
        Self {
            name: id.clone(),
            id,
            control: Control::OnOff,
            demand_watts: watts,
            flexible: false,
            health: false,
            need: None,
            planned_watts: None,
        }
    }

    /// An adjustable load running between `min_watts` and `max_watts`, asking `max_watts`.
    pub fn adjustable(id: impl Into<String>, min_watts: Watts, max_watts: Watts) -> Self {
        let mut load = Self::on_off(id, max_watts);
        load.control = Control::Adjustable {
            min_watts,
            max_watts,
        };
        load
    }

    /// The least power the horizon plan must give this load in a step for a flexible load to
    /// run in it: half its demand for an on/off load, its minimum for an adjustable one (the
    /// allocation's rule, see [`Load::planned_watts`]).
    pub fn least_planned_watts(&self) -> Watts {
        let finite = |w: Watts| if w.is_finite() { w.max(0.0) } else { 0.0 };
        match self.control {
            Control::OnOff => finite(self.demand_watts) / 2.0,
            Control::Adjustable { min_watts, .. } => finite(min_watts),
        }
    }

    /// The same load with another display name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same load marked as a health load.
    pub fn health(mut self) -> Self {
        self.health = true;
        self
    }

    /// The same load asking `watts` now.
    pub fn demanding(mut self, watts: Watts) -> Self {
        self.demand_watts = watts;
        self
    }

    /// The same load, flexible, with a daily energy need.
    pub fn with_need(mut self, need: EnergyNeed) -> Self {
        self.flexible = true;
        self.need = Some(need);
        self
    }
}

/// One tier of the assembly's priority list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    /// Name as voted (`health`, `cold_storage`, ...).
    pub name: String,
    /// How scarcity is shared inside the tier.
    pub sharing: Sharing,
    /// The loads of the tier, in the listed order.
    pub loads: Vec<Load>,
}

impl Tier {
    /// A tier with the given sharing rule and loads.
    pub fn new(name: impl Into<String>, sharing: Sharing, loads: Vec<Load>) -> Self {
        Self {
            name: name.into(),
            sharing,
            loads,
        }
    }
}

/// The lowered priority file: tiers from the highest (rank 1) to the lowest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Priorities {
    /// Tiers, highest first; a tier's rank is its position plus one.
    pub tiers: Vec<Tier>,
    /// Minimum time a load of a `fair_share` tier stays in the state the planner switched it to
    /// (on or off), measured on [`Snapshot::now_secs`]; 0 lets rotation switch every cycle.
    ///
    /// A load switched on stays on that long unless what its group has can no longer hold it
    /// beside the other loads held on (a higher tier, less sun, the battery reserve: forced);
    /// a load switched off stays off that long while it asks (it may be switched on earlier
    /// only after it stopped asking, which ends the hold). While the longest-waiting load that
    /// fits alone is kept out by loads held on, no other load of its group is switched on, so
    /// its turn comes when those holds end. Guarantee: while the `N` loads of a group ask and
    /// each fits alone in what the tiers above leave, a load cut at time `s` is served again by
    /// `s + (N + 1) × min_switch_secs + N` cycle intervals (with 0: within `N` cycles).
    #[serde(default)]
    pub min_switch_secs: f64,
}

/// Battery state and limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Battery {
    /// Usable capacity at 100 % state of charge.
    pub capacity_wh: WattHours,
    /// State of charge now, 0..=1.
    pub soc: f64,
    /// Lowest allowed state of charge, 0..=1.
    pub soc_min: f64,
    /// Highest allowed state of charge, 0..=1.
    pub soc_max: f64,
    /// Charge power limit.
    pub max_charge_watts: Watts,
    /// Discharge power limit.
    pub max_discharge_watts: Watts,
    /// Fraction of the charging power that ends up stored, 0..=1.
    pub charge_efficiency: f64,
    /// Fraction of the stored energy taken out that reaches the loads, 0..=1.
    pub discharge_efficiency: f64,
}

impl Battery {
    /// Energy stored above the minimum state of charge.
    pub fn usable_wh(&self) -> WattHours {
        ((self.soc - self.soc_min) * self.capacity_wh).max(0.0)
    }
}

/// The battery energy kept back for the health tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthReserve {
    /// No reserve.
    #[default]
    None,
    /// This much energy, delivered to the loads, is kept (e.g. computed by the caller until sunrise).
    EnergyWh(WattHours),
    /// Enough to run the health loads at their current demand for this many hours (until sunrise).
    Hours(f64),
}

/// Rotation record of one load: how often it was served or cut in scarce cycles of its tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RotationEntry {
    /// Scarce cycles in which the load was served.
    pub served: u64,
    /// Scarce cycles in which the load was cut.
    pub cut: u64,
    /// Cycle number of the last cut.
    pub last_cut: Option<u64>,
    /// Consecutive cycles in which the load asked and was cut, in a `fair_share` tier (0 once it
    /// is served; unchanged while it asks nothing). The longest-waiting load that fits is served
    /// first. Absent in records written before it existed.
    #[serde(default)]
    pub waiting: u64,
    /// Served in the last allocation, in a `fair_share` tier, while asking.
    #[serde(default)]
    pub on: bool,
    /// When ([`Snapshot::now_secs`]) the planner last switched it on or off while it asked; none
    /// once it stops asking. Holds it in that state for [`Priorities::min_switch_secs`].
    #[serde(default)]
    pub switched_secs: Option<f64>,
}

/// Rotation history, fed back each cycle from the previous [`crate::Allocation::rotation`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rotation {
    /// Number of allocations made so far.
    pub cycle: u64,
    /// Per load id.
    pub loads: BTreeMap<String, RotationEntry>,
}

/// Everything measured in one cycle that the allocation needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// PV production now.
    pub pv_watts: Watts,
    /// Grid or generator import allowed now (0 when islanded).
    pub grid_allowance_watts: Watts,
    /// Measured consumption of loads the controller does not switch.
    pub uncontrolled_watts: Watts,
    /// Battery, when there is one.
    pub battery: Option<Battery>,
    /// Battery power the horizon plan wants to charge now, taken off the PV before allocation.
    pub planned_charge_watts: Watts,
    /// Energy kept for the health tier.
    pub health_reserve: HealthReserve,
    /// When the snapshot was taken, in seconds from any fixed origin (e.g. Unix time); the
    /// minimum switching time is measured on it.
    pub now_secs: f64,
}

/// A fixed power with no battery: `watts` available now, nothing else (for `communalia plan`).
impl Snapshot {
    /// A snapshot where exactly `watts` are available (as PV) and nothing is uncontrolled.
    pub fn available(watts: Watts) -> Self {
        Self {
            pv_watts: watts,
            ..Self::default()
        }
    }
}
