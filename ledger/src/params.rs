//! The site's ledger parameters (set at genesis, changed by quorum from a future day).

use crate::amount::Millis;
use crate::codec::{DecodeError, Reader, Writer};
use crate::demurrage::Rate;

/// Rates and rules; amounts in milli-Communs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Daily demurrage rate.
    pub demurrage: Rate,
    /// No balance may exceed this; issuance above it goes to the pool.
    pub account_ceiling: Millis,
    /// How far below zero a balance may go (0: no debt).
    pub credit_limit: Millis,
    /// Distinct eligible attestations a claim needs.
    pub attestations_needed: u32,
    /// Days after which an unposted claim expires.
    pub claim_expiry_days: u32,
    /// Attestations one member may give per day.
    pub attester_daily_budget: u32,
    /// Paid per hour of attested work.
    pub per_hour_maintenance: Millis,
    /// Paid per kWh of load shifted into surplus hours.
    pub per_kwh_shifted: Millis,
    /// Paid per kWh a member's battery or PV gave the commons.
    pub per_kwh_given: Millis,
    /// Most meter credits one member may get per day.
    pub meter_daily_cap: Millis,
    /// Days a meter credit stays open to contest before it posts.
    pub contest_days: u32,
    /// Stewards needed for quorum entries (capped at the number of active stewards).
    pub steward_quorum: u32,
}

impl Default for Params {
    /// The defaults of LEDGER.md: 6 %/yr, 500 C ceiling, no debt, k = 3, 14 days.
    fn default() -> Self {
        Params {
            demurrage: Rate::from_ppb_per_day(169_507).unwrap_or(Rate::ZERO),
            account_ceiling: Millis(500_000),
            credit_limit: Millis(0),
            attestations_needed: 3,
            claim_expiry_days: 14,
            attester_daily_budget: 5,
            per_hour_maintenance: Millis(10_000),
            per_kwh_shifted: Millis(1_000),
            per_kwh_given: Millis(1_000),
            meter_daily_cap: Millis(5_000),
            contest_days: 3,
            steward_quorum: 2,
        }
    }
}

/// Upper bound on amounts in parameters (1e12 C), so sums of them cannot overflow.
const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

impl Params {
    /// Every rule a parameter set breaks, as `field: message`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let amount = |p: &mut Vec<String>, name: &str, v: Millis, min: i64| {
            if v.0 < min || v.0 > MAX_AMOUNT {
                p.push(format!(
                    "{name}: {v} C is out of range ({} to {} C)",
                    Millis(min),
                    Millis(MAX_AMOUNT)
                ));
            }
        };
        amount(&mut p, "account_ceiling", self.account_ceiling, 1);
        amount(&mut p, "credit_limit", self.credit_limit, 0);
        amount(&mut p, "per_hour_maintenance", self.per_hour_maintenance, 0);
        amount(&mut p, "per_kwh_shifted", self.per_kwh_shifted, 0);
        amount(&mut p, "per_kwh_given", self.per_kwh_given, 0);
        amount(&mut p, "meter_daily_cap", self.meter_daily_cap, 0);
        if !(1..=64).contains(&self.attestations_needed) {
            p.push(format!(
                "attestations_needed: {} must be from 1 to 64",
                self.attestations_needed
            ));
        }
        if !(1..=3650).contains(&self.claim_expiry_days) {
            p.push(format!(
                "claim_expiry_days: {} must be from 1 to 3650",
                self.claim_expiry_days
            ));
        }
        if self.attester_daily_budget == 0 {
            p.push("attester_daily_budget: must be at least 1".into());
        }
        if self.contest_days > 365 {
            p.push(format!(
                "contest_days: {} must be at most 365",
                self.contest_days
            ));
        }
        if !(1..=64).contains(&self.steward_quorum) {
            p.push(format!(
                "steward_quorum: {} must be from 1 to 64",
                self.steward_quorum
            ));
        }
        p
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.demurrage.ppb_per_day());
        w.i64(self.account_ceiling.0);
        w.i64(self.credit_limit.0);
        w.u32(self.attestations_needed);
        w.u32(self.claim_expiry_days);
        w.u32(self.attester_daily_budget);
        w.i64(self.per_hour_maintenance.0);
        w.i64(self.per_kwh_shifted.0);
        w.i64(self.per_kwh_given.0);
        w.i64(self.meter_daily_cap.0);
        w.u32(self.contest_days);
        w.u32(self.steward_quorum);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Params, DecodeError> {
        let ppb = r.u32("demurrage rate")?;
        let demurrage = Rate::from_ppb_per_day(u64::from(ppb))
            .map_err(|e| r.err(format!("demurrage rate: {e}")))?;
        Ok(Params {
            demurrage,
            account_ceiling: Millis(r.i64("account ceiling")?),
            credit_limit: Millis(r.i64("credit limit")?),
            attestations_needed: r.u32("attestations needed")?,
            claim_expiry_days: r.u32("claim expiry days")?,
            attester_daily_budget: r.u32("attester daily budget")?,
            per_hour_maintenance: Millis(r.i64("per hour maintenance")?),
            per_kwh_shifted: Millis(r.i64("per kWh shifted")?),
            per_kwh_given: Millis(r.i64("per kWh given")?),
            meter_daily_cap: Millis(r.i64("meter daily cap")?),
            contest_days: r.u32("contest days")?,
            steward_quorum: r.u32("steward quorum")?,
        })
    }
}
