//! What the controller shows the world: the JSON of `/api/state`, `/api/plan` and `/api/assembly`.
//!
//! The field names are the product's interface (MISSION.md, "The user-facing contract"); keep
//! them stable. The cycle builds one `StateView` per cycle and publishes it; the HTTP API, the web
//! page and the MQTT state topic all read that same value.

use serde::Serialize;

/// Energy situation right now, as members see it on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GridState {
    /// Every load that asks is served and energy is left over.
    Surplus,
    /// Every tier is served, but with little to spare.
    Tight,
    /// Some loads are cut.
    Scarcity,
}

/// `GET /api/state`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateView {
    /// RFC 3339 UTC time of the snapshot.
    pub time: String,
    pub site: SiteView,
    pub available_watts: f64,
    pub pv_watts: Option<f64>,
    pub consumption_watts: Option<f64>,
    pub battery: Option<BatteryView>,
    pub grid_state: GridState,
    /// The banner's sentence: why the grid state is what it is, in words and numbers, never
    /// contradicting the loads' reasons (empty when not known).
    pub status: String,
    /// True when the controller reads and plans but switches nothing.
    pub dry_run: bool,
    pub devices: Vec<DeviceView>,
    /// Highest tier first.
    pub tiers: Vec<TierView>,
    pub loads: Vec<LoadView>,
    /// Located errors of the last assembly file that was rejected; empty when the file in force is
    /// the newest one.
    pub assembly_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteView {
    pub id: String,
    pub name: String,
    /// Local time minus UTC, in minutes: the page shows times on the site's clock.
    pub utc_offset_minutes: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatteryView {
    pub soc_percent: Option<f64>,
    /// Positive while discharging (giving power), negative while charging.
    pub watts: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub online: bool,
    /// RFC 3339 UTC time of the last good reading, if any.
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierView {
    pub name: String,
    /// 1 is the highest priority.
    pub rank: usize,
    pub demanded_watts: f64,
    pub served_watts: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadView {
    pub id: String,
    pub name: String,
    /// The tier's name.
    pub tier: String,
    pub rank: usize,
    pub on: bool,
    pub allocated_watts: f64,
    pub measured_watts: Option<f64>,
    /// What the device reports: the plug's relay, or a setpoint above zero; `true` for a load
    /// nobody switches; `None` while unknown. May differ from `on` (the decision) in a dry run
    /// or while a command is on its way.
    pub reported_on: Option<bool>,
    /// One line a member can read: why the load is on or off.
    pub reason: String,
    /// The plug or setpoint did not confirm the last command, or reports itself offline.
    pub fault: Option<String>,
}

/// `GET /api/plan`: the horizon plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanView {
    pub generated_at: String,
    pub step_minutes: u32,
    pub steps: Vec<PlanStepView>,
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStepView {
    /// RFC 3339 UTC start of the step.
    pub start: String,
    pub pv_watts: f64,
    pub soc_percent: Option<f64>,
    /// Planned watts per load id (loads planned off are left out).
    pub loads: std::collections::BTreeMap<String, f64>,
}

/// `GET /api/assembly`: the priorities in force and the vote that made them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssemblyView {
    pub decision: DecisionView,
    pub tiers: Vec<AssemblyTierView>,
    pub health_reserve: HealthReserveView,
    pub communs: CommunsView,
    /// Errors of the last rejected file, as on `StateView`.
    pub rejected_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionView {
    pub date: String,
    pub reference: String,
    pub summary: Option<String>,
    pub quorum: u32,
    pub present: u32,
    pub votes_for: u32,
    pub votes_against: u32,
    pub abstentions: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssemblyTierView {
    pub name: String,
    pub rank: usize,
    /// `fair_share` or `in_order`.
    pub sharing: String,
    pub loads: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReserveView {
    pub tier: String,
    pub min_wh: f64,
    pub margin_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommunsView {
    pub per_kwh_shifted: f64,
    pub per_hour_maintenance: f64,
    pub demurrage_percent_per_year: f64,
    pub account_ceiling: f64,
    pub attestations_needed: u32,
}

impl AssemblyView {
    /// The assembly in force, as the page and the API show it.
    pub fn from_config(a: &communalia_config::Assembly, rejected_errors: Vec<String>) -> Self {
        let millis = |m: i64| m as f64 / 1000.0;
        AssemblyView {
            decision: DecisionView {
                date: a.decision.date.to_string(),
                reference: a.decision.reference.clone(),
                summary: a.decision.summary.clone(),
                quorum: a.decision.quorum,
                present: a.decision.present,
                votes_for: a.decision.votes_for,
                votes_against: a.decision.votes_against,
                abstentions: a.decision.abstentions,
            },
            tiers: a
                .tiers
                .iter()
                .enumerate()
                .map(|(i, t)| AssemblyTierView {
                    name: t.name.clone(),
                    rank: i + 1,
                    sharing: match t.sharing {
                        communalia_config::Sharing::FairShare => "fair_share".into(),
                        communalia_config::Sharing::InOrder => "in_order".into(),
                    },
                    loads: t.loads.clone(),
                })
                .collect(),
            health_reserve: HealthReserveView {
                tier: a
                    .tiers
                    .get(a.health_reserve.tier)
                    .map(|t| t.name.clone())
                    .unwrap_or_default(),
                min_wh: a.health_reserve.min.0,
                margin_percent: a.health_reserve.margin.0,
            },
            communs: CommunsView {
                per_kwh_shifted: millis(a.communs.per_kwh_shifted_millis),
                per_hour_maintenance: millis(a.communs.per_hour_maintenance_millis),
                demurrage_percent_per_year: a.communs.demurrage_percent_per_year,
                account_ceiling: millis(a.communs.account_ceiling_millis),
                attestations_needed: a.communs.attestations_needed,
            },
            rejected_errors,
        }
    }
}
