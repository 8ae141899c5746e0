//! `ledger pool` and `ledger params`, and the assembly's Communs rules as ledger parameters.

use super::*;

pub(super) fn pool(db: &Path, command: PoolCommand) -> anyhow::Result<ExitCode> {
    let mut l = open(db)?;
    match command {
        PoolCommand::Show { as_of } => {
            let as_of = as_of.as_deref().map(Day::parse).transpose()?;
            let b = match as_of {
                Some(d) => l
                    .balances(Some(d))?
                    .with_context(|| before_genesis(&l, d))?,
                None => l.balances(None)?.context("the ledger is empty")?,
            };
            println!("community pool as of {}: {} C", b.as_of, b.pool);
            println!("  issued {} C, expired {} C", b.issued, b.expired);
            for e in l.log().iter().filter(|e| e.entry.unsigned.date <= b.as_of) {
                let u = &e.entry.unsigned;
                match &u.body {
                    Body::PoolGrant {
                        to,
                        amount,
                        decision,
                    } => println!(
                        "  {}  paid {amount} C to {} ({decision}) [entry {}]",
                        u.date,
                        name_of(&l, *to),
                        e.index
                    ),
                    Body::PoolExpiry { amount, decision } => println!(
                        "  {}  retired {amount} C ({decision}) [entry {}]",
                        u.date, e.index
                    ),
                    _ => {}
                }
            }
        }
        PoolCommand::Pay {
            amount,
            to,
            decision,
            cosign,
            signer,
        } => {
            let to = member_ref(&l, &to)?;
            let amount = Millis::parse(&amount)?;
            let r = append_by_quorum(
                &mut l,
                &signer,
                &cosign,
                Body::PoolGrant {
                    to,
                    amount,
                    decision,
                },
            )?;
            let left = l.balances(None)?.map_or(Millis::ZERO, |b| b.pool);
            println!(
                "paid {amount} C from the pool to {}; the pool holds {left} C (entry {}, {})",
                name_of(&l, to),
                r.index,
                r.id
            );
        }
        PoolCommand::Expire {
            amount,
            decision,
            cosign,
            signer,
        } => {
            let amount = Millis::parse(&amount)?;
            let r = append_by_quorum(
                &mut l,
                &signer,
                &cosign,
                Body::PoolExpiry { amount, decision },
            )?;
            let left = l.balances(None)?.map_or(Millis::ZERO, |b| b.pool);
            println!(
                "retired {amount} C from the pool for good; it holds {left} C (entry {}, {})",
                r.index, r.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn params(db: &Path, command: ParamsCommand) -> anyhow::Result<ExitCode> {
    let mut l = open(db)?;
    match command {
        ParamsCommand::Show { as_of } => {
            let today = l.today().context("the ledger is empty")?;
            let date = match as_of.as_deref() {
                Some(d) => Day::parse(d)?,
                None => today,
            };
            let books = l
                .books_as_of(date)?
                .with_context(|| before_genesis(&l, date))?;
            println!("parameters in effect on {}", books.today.max(date));
            for (name, value) in param_rows(&books.params) {
                println!("  {name:<20} {value}");
            }
            // Each pending change against the one before it (or those in effect).
            let mut before = &books.params;
            for (day, p) in books.pending_params.iter() {
                println!("changing from {day}:");
                for ((name, old), (_, new)) in param_rows(before).into_iter().zip(param_rows(p)) {
                    if old != new {
                        println!("  {name:<20} {old} -> {new}");
                    }
                }
                before = p;
            }
        }
        ParamsCommand::Change {
            effective,
            decision,
            changes,
            cosign,
            signer,
        } => {
            let effective = Day::parse(&effective).context("--effective")?;
            let base = l
                .books_as_of(effective)?
                .context("the ledger is empty")?
                .params;
            let params = changed_params(&base, &changes)?;
            let r = append_by_quorum(
                &mut l,
                &signer,
                &cosign,
                Body::ParamChange {
                    params: params.clone(),
                    effective,
                    decision,
                },
            )?;
            println!(
                "parameters change from {effective} (entry {}, {}):",
                r.index, r.id
            );
            for ((name, old), (_, new)) in param_rows(&base).into_iter().zip(param_rows(&params)) {
                if old != new {
                    println!("  {name:<20} {old} -> {new}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Each parameter by the name of the option that sets it, with its value and unit.
pub(super) fn param_rows(p: &Params) -> Vec<(&'static str, String)> {
    vec![
        (
            "rate",
            format!(
                "{} %/yr ({} ppb a day)",
                Millis(100_000 - decay_days(100_000, 365, p.demurrage).0),
                p.demurrage.ppb_per_day()
            ),
        ),
        ("ceiling", format!("{} C", p.account_ceiling)),
        ("credit-limit", format!("{} C", p.credit_limit)),
        ("attestations", p.attestations_needed.to_string()),
        ("claim-expiry-days", p.claim_expiry_days.to_string()),
        ("attester-budget", p.attester_daily_budget.to_string()),
        ("per-hour", format!("{} C", p.per_hour_maintenance)),
        ("per-kwh-shifted", format!("{} C", p.per_kwh_shifted)),
        ("per-kwh-given", format!("{} C", p.per_kwh_given)),
        ("meter-cap", format!("{} C", p.meter_daily_cap)),
        ("contest-days", p.contest_days.to_string()),
        ("quorum", p.steward_quorum.to_string()),
    ]
}

/// `base` with the named changes; refused when nothing is named, a value does not parse, or
/// the result breaks a rule (every broken rule is listed).
pub(super) fn changed_params(base: &Params, c: &ParamChanges) -> anyhow::Result<Params> {
    let amount = |flag: &str, v: &Option<String>, old: Millis| -> anyhow::Result<Millis> {
        match v {
            Some(t) => Millis::parse(t).with_context(|| format!("--{flag}")),
            None => Ok(old),
        }
    };
    let p = Params {
        demurrage: match c.rate {
            Some(pct) => Rate::from_percent_per_year(pct).context("--rate")?,
            None => base.demurrage,
        },
        account_ceiling: amount("ceiling", &c.ceiling, base.account_ceiling)?,
        credit_limit: amount("credit-limit", &c.credit_limit, base.credit_limit)?,
        attestations_needed: c.attestations.unwrap_or(base.attestations_needed),
        claim_expiry_days: c.claim_expiry_days.unwrap_or(base.claim_expiry_days),
        attester_daily_budget: c.attester_budget.unwrap_or(base.attester_daily_budget),
        per_hour_maintenance: amount("per-hour", &c.per_hour, base.per_hour_maintenance)?,
        per_kwh_shifted: amount("per-kwh-shifted", &c.per_kwh_shifted, base.per_kwh_shifted)?,
        per_kwh_given: amount("per-kwh-given", &c.per_kwh_given, base.per_kwh_given)?,
        meter_daily_cap: amount("meter-cap", &c.meter_cap, base.meter_daily_cap)?,
        contest_days: c.contest_days.unwrap_or(base.contest_days),
        steward_quorum: c.quorum.unwrap_or(base.steward_quorum),
    };
    if &p == base {
        bail!(
            "no parameter would change: name at least one new value (--rate, --ceiling, ...; see --help)"
        );
    }
    let problems = p.problems();
    if !problems.is_empty() {
        bail!("bad parameters: {}", problems.join("; "));
    }
    Ok(p)
}
