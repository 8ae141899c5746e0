//! The assembly file: the decision record, the tiers, the health reserve and the Communs
//! rules, checked against the site's loads and battery.

use super::*;

/// Lowers the assembly file; checks against the site's loads and battery where they were read.
/// Loads with no voted place are reported in the site document.
pub(crate) fn lower_assembly(
    doc: &mut Doc<'_>,
    site_doc: &mut Doc<'_>,
    site: &SiteParts,
) -> Option<Assembly> {
    if !doc.is_parsed() {
        return None;
    }
    doc.unknown_keys(&p(), ASSEMBLY_TABLES);
    let mut ok = true;

    let decision = if doc.get(&p().key("decision")).is_none() {
        doc.error(
            &p(),
            "missing table [decision]: the record of the vote (date, reference, quorum, votes)",
        );
        None
    } else {
        doc.read::<raw::Decision>(&p().key("decision"))
            .and_then(|d| lower_decision(doc, d))
    };
    ok &= decision.is_some();

    let (tiers, tiers_ok) = lower_tiers(doc, site_doc, site);
    ok &= tiers_ok;

    let reserve_raw = if doc.get(&p().key("health_reserve")).is_some() {
        doc.read::<raw::HealthReserve>(&p().key("health_reserve"))
    } else {
        Some(raw::HealthReserve::default())
    };
    let reserve = reserve_raw.and_then(|r| lower_reserve(doc, r, &tiers, site));
    ok &= reserve.is_some();

    let communs_raw = if doc.get(&p().key("communs")).is_some() {
        doc.read::<raw::Communs>(&p().key("communs"))
    } else {
        Some(raw::Communs::default())
    };
    let communs = communs_raw.and_then(|c| lower_communs(doc, c));
    ok &= communs.is_some();

    match (ok, decision, reserve, communs) {
        (true, Some(decision), Some(health_reserve), Some(communs)) => Some(Assembly {
            decision,
            tiers,
            health_reserve,
            communs,
        }),
        _ => None,
    }
}

fn lower_decision(doc: &mut Doc<'_>, d: raw::Decision) -> Option<Decision> {
    let at = |k: &str| p().key("decision").key(k);
    let date = parse_date(&d.date)
        .map_err(|e| doc.error(&at("date"), e))
        .ok();
    let mut ok = date.is_some();
    ok &= non_empty(doc, &at("reference"), &d.reference);
    if d.present < d.quorum {
        doc.error(
            &at("present"),
            format!(
                "{} members present is below the quorum of {}: the vote is not valid",
                d.present, d.quorum
            ),
        );
        ok = false;
    }
    let cast = u64::from(d.votes_for) + u64::from(d.votes_against) + u64::from(d.abstentions);
    if cast > u64::from(d.present) {
        doc.error(
            &at("votes_for"),
            format!(
                "{cast} votes and abstentions, but only {} members present",
                d.present
            ),
        );
        ok = false;
    }
    if d.votes_for <= d.votes_against {
        doc.error(
            &at("votes_for"),
            format!(
                "{} for and {} against: the record shows the motion was not carried",
                d.votes_for, d.votes_against
            ),
        );
        ok = false;
    }
    Some(Decision {
        date: date?,
        reference: d.reference,
        summary: d.summary,
        quorum: d.quorum,
        present: d.present,
        votes_for: d.votes_for,
        votes_against: d.votes_against,
        abstentions: d.abstentions,
    })
    .filter(|_| ok)
}

fn lower_tiers(doc: &mut Doc<'_>, site_doc: &mut Doc<'_>, site: &SiteParts) -> (Vec<Tier>, bool) {
    let list = p().key("tiers");
    let n = doc.array_len(&list);
    let mut ok = true;
    if n == 0 {
        doc.error(
            &p(),
            "no [[tiers]]: the assembly file must list at least one tier",
        );
        ok = false;
    }
    let known: Vec<&str> = site.loads.iter().map(|l| l.id.as_str()).collect();
    let mut names = Seen::new();
    // load id -> (tier name, tier position)
    let mut placed: HashMap<String, (String, usize)> = HashMap::new();
    let mut tiers = Vec::new();
    for i in 0..n {
        let at = list.index(i);
        let Some(t) = doc.read::<raw::Tier>(&at) else {
            ok = false;
            continue;
        };
        let mut t_ok = valid_id(doc, &at.key("name"), &t.name)
            && names.first(doc, &at.key("name"), &t.name, "tier name");
        let sharing = match t.sharing.as_str() {
            "fair_share" => Some(Sharing::FairShare),
            "in_order" => Some(Sharing::InOrder),
            other => {
                doc.error(
                    &at.key("sharing"),
                    format!(
                        "unknown sharing rule \"{other}\" (expected one of: fair_share, in_order)"
                    ),
                );
                None
            }
        };
        t_ok &= sharing.is_some();
        if t.loads.is_empty() {
            doc.error(
                &at.key("loads"),
                format!("tier \"{}\" is empty: list at least one load", t.name),
            );
            t_ok = false;
        }
        for (j, id) in t.loads.iter().enumerate() {
            let lp = at.key("loads").index(j);
            match site.loads.iter().find(|l| &l.id == id) {
                None => {
                    let hint = suggestion(id, &known)
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_default();
                    doc.error(&lp, format!("unknown load \"{id}\"{hint}"));
                    t_ok = false;
                    continue;
                }
                Some(l) if !l.controlled => {
                    doc.error(&lp, format!("load \"{id}\" is measured only: it cannot be switched, so it has no place in a tier"));
                    t_ok = false;
                    continue;
                }
                Some(_) => {}
            }
            if let Some((tier, pos)) = placed.get(id) {
                doc.error(&lp, format!("load \"{id}\" is already in tier \"{tier}\" (tiers[{}]); a load has one place", pos + 1));
                t_ok = false;
            } else {
                placed.insert(id.clone(), (t.name.clone(), i));
            }
        }
        match (t_ok, sharing) {
            (true, Some(sharing)) => tiers.push(Tier {
                name: t.name,
                sharing,
                loads: t.loads,
            }),
            _ => ok = false,
        }
    }
    if n > 0 {
        let file = doc.file_name().to_owned();
        for l in &site.loads {
            if l.controlled && !placed.contains_key(&l.id) {
                site_doc.error(
                    &l.path.key("id"),
                    format!("load \"{}\" has no tier in {file}; every controlled load needs a voted place", l.id),
                );
                ok = false;
            }
        }
    }
    (tiers, ok)
}

fn lower_reserve(
    doc: &mut Doc<'_>,
    r: raw::HealthReserve,
    tiers: &[Tier],
    site: &SiteParts,
) -> Option<HealthReserve> {
    let at = |k: &str| p().key("health_reserve").key(k);
    let mut ok = non_negative(doc, &at("min_wh"), r.min_wh, "watt-hours");
    ok &= within(
        doc,
        &at("margin_percent"),
        r.margin_percent,
        0.0,
        200.0,
        "%",
    );
    ok &= within(
        doc,
        &at("forecast_share_percent"),
        r.forecast_share_percent,
        0.0,
        100.0,
        "%",
    );
    let tier = match &r.tier {
        Some(name) => match tiers.iter().position(|t| &t.name == name) {
            Some(i) => Some(i),
            None => {
                let names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
                let hint = suggestion(name, &names)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default();
                doc.error(&at("tier"), format!("unknown tier \"{name}\"{hint}"));
                None
            }
        },
        None => Some(0),
    };
    if ok {
        match site.battery.as_ref() {
            Some(b) if r.min_wh > b.usable().0 => {
                doc.error(
                    &at("min_wh"),
                    format!(
                        "a health reserve of {} Wh is larger than the battery's usable {} Wh (capacity_wh {} between {} % and {} %)",
                        num(r.min_wh),
                        num(b.usable().0),
                        num(b.capacity.0),
                        num(b.min_soc.0),
                        num(b.max_soc.0)
                    ),
                );
                ok = false;
            }
            None if r.min_wh > 0.0 && !site.battery_table => {
                doc.error(
                    &at("min_wh"),
                    format!(
                        "a health reserve of {} Wh needs a [battery] in the site file",
                        num(r.min_wh)
                    ),
                );
                ok = false;
            }
            _ => {}
        }
    }
    Some(HealthReserve {
        tier: tier?,
        min: WattHours(r.min_wh),
        margin: Percent(r.margin_percent),
        forecast_share: Percent(r.forecast_share_percent),
    })
    .filter(|_| ok)
}

fn lower_communs(doc: &mut Doc<'_>, c: raw::Communs) -> Option<Communs> {
    let at = |k: &str| p().key("communs").key(k);
    let per_kwh = millis(doc, &at("per_kwh_shifted"), c.per_kwh_shifted, 0.0, 1000.0);
    let per_hour = millis(
        doc,
        &at("per_hour_maintenance"),
        c.per_hour_maintenance,
        0.0,
        1000.0,
    );
    let mut ok = within(
        doc,
        &at("demurrage_percent_per_year"),
        c.demurrage_percent_per_year,
        0.0,
        50.0,
        "%",
    );
    let ceiling = millis(
        doc,
        &at("account_ceiling"),
        c.account_ceiling,
        1.0,
        1_000_000.0,
    );
    ok &= within_u32(
        doc,
        &at("attestations_needed"),
        c.attestations_needed,
        1,
        20,
        "",
    );
    ok &= within_u32(
        doc,
        &at("claim_expiry_days"),
        c.claim_expiry_days,
        1,
        365,
        "days",
    );
    let cap = millis(
        doc,
        &at("meter_credit_daily_cap"),
        c.meter_credit_daily_cap,
        0.0,
        1_000_000.0,
    );
    ok &= within_u32(doc, &at("contest_days"), c.contest_days, 0, 60, "days");
    ok &= within_u32(
        doc,
        &at("attester_daily_budget"),
        c.attester_daily_budget,
        1,
        100,
        "attestations",
    );
    if let (Some(cap), Some(ceiling)) = (cap, ceiling)
        && cap > ceiling
    {
        doc.error(
            &at("meter_credit_daily_cap"),
            "the daily meter-credit cap is above the account ceiling",
        );
        ok = false;
    }
    Some(Communs {
        per_kwh_shifted_millis: per_kwh?,
        per_hour_maintenance_millis: per_hour?,
        demurrage_percent_per_year: c.demurrage_percent_per_year,
        account_ceiling_millis: ceiling?,
        attestations_needed: c.attestations_needed,
        claim_expiry_days: c.claim_expiry_days,
        meter_credit_daily_cap_millis: cap?,
        contest_days: c.contest_days,
        attester_daily_budget: c.attester_daily_budget,
    })
    .filter(|_| ok)
}
