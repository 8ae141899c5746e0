use super::*;

#[test]
fn assembly_rates_map_onto_ledger_parameters() {
    let c = communalia_config::model::Communs {
        per_kwh_shifted_millis: 800,
        per_hour_maintenance_millis: 12_000,
        demurrage_percent_per_year: 6.0,
        account_ceiling_millis: 500_000,
        attestations_needed: 3,
        claim_expiry_days: 14,
        meter_credit_daily_cap_millis: 4_000,
        contest_days: 3,
        attester_daily_budget: 5,
    };
    let p = params_from_communs(&c).unwrap();
    assert_eq!(p.demurrage.ppb_per_day(), 169_507);
    assert_eq!(p.per_kwh_given, Millis(800));
    assert_eq!(p.meter_daily_cap, Millis(4_000));
    let bad = communalia_config::model::Communs {
        attestations_needed: 0,
        ..c
    };
    let e = params_from_communs(&bad).unwrap_err().to_string();
    assert!(e.contains("attestations_needed"), "{e}");
}

#[test]
fn a_parameter_change_keeps_what_it_does_not_name() {
    let base = Params::default();
    let c = ParamChanges {
        ceiling: Some("400".into()),
        quorum: Some(3),
        ..ParamChanges::default()
    };
    let p = changed_params(&base, &c).unwrap();
    assert_eq!(p.account_ceiling, Millis(400_000));
    assert_eq!(p.steward_quorum, 3);
    assert_eq!(p.demurrage, base.demurrage);
    assert_eq!(p.per_kwh_given, base.per_kwh_given);
}

#[test]
fn a_parameter_change_that_changes_nothing_or_breaks_a_rule_is_refused() {
    let base = Params::default();
    let e = changed_params(&base, &ParamChanges::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no parameter would change"), "{e}");
    let same = ParamChanges {
        attestations: Some(base.attestations_needed),
        ..ParamChanges::default()
    };
    assert!(changed_params(&base, &same).is_err());
    let bad = ParamChanges {
        attestations: Some(0),
        contest_days: Some(400),
        ..ParamChanges::default()
    };
    let e = changed_params(&base, &bad).unwrap_err().to_string();
    assert!(
        e.contains("attestations_needed") && e.contains("contest_days"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        changed_params(
            &base,
            &ParamChanges {
                ceiling: Some("1.2345".into()),
                ..ParamChanges::default()
            }
        )
        .unwrap_err()
    );
    assert!(e.starts_with("--ceiling: "), "{e}");
    let e = format!(
        "{:#}",
        changed_params(
            &base,
            &ParamChanges {
                rate: Some(120.0),
                ..ParamChanges::default()
            }
        )
        .unwrap_err()
    );
    assert!(e.starts_with("--rate: "), "{e}");
}

#[test]
fn parameters_show_the_yearly_rate_exactly() {
    let rows = param_rows(&Params::default());
    assert_eq!(rows[0].1, "6.000 %/yr (169507 ppb a day)");
}
