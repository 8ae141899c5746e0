//! Horizon plan: reserve at every step, deadlines, priorities, prices, fallback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use communalia_planner::{
    Battery, Deadline, EnergyNeed, GridImport, HorizonInput, HorizonLoad, PlanMethod, plan_horizon,
    reason::kwh,
};
use proptest::prelude::*;

fn battery(capacity_wh: f64, soc: f64) -> Battery {
    Battery {
        capacity_wh,
        soc,
        soc_min: 0.1,
        soc_max: 0.95,
        max_charge_watts: 3000.0,
        max_discharge_watts: 3000.0,
        charge_efficiency: 0.95,
        discharge_efficiency: 0.95,
    }
}

fn balance_holds(input: &HorizonInput, plan: &communalia_planner::HorizonPlan) {
    for t in 0..input.steps() {
        let loads: f64 = plan.loads.iter().map(|l| l.watts[t]).sum();
        let unc = input.uncontrolled_watts.get(t).copied().unwrap_or(0.0);
        let supply = input.pv_watts[t] + plan.battery_watts[t] + plan.import_watts[t];
        assert!(
            loads + unc <= supply + 1e-3,
            "step {t}: {loads} + {unc} > {supply}"
        );
    }
}

#[test]
fn a_need_is_met_before_its_deadline_when_the_sun_allows() {
    let mut input = HorizonInput::new(15, 6 * 60, vec![2000.0; 96]);
    input.loads = vec![HorizonLoad::deferrable(
        "pump",
        3,
        1500.0,
        EnergyNeed {
            energy_wh: 6000.0,
            deadline: Deadline::MinuteOfDay(20 * 60),
        },
    )];
    let plan = plan_horizon(&input);
    assert_eq!(plan.method, PlanMethod::LinearProgram);
    let pump = &plan.loads[0];
    let before: f64 = pump.watts[..56].iter().sum::<f64>() * 0.25;
    assert!((before - 6000.0).abs() < 1.0, "{before}");
    assert!(pump.watts[56..].iter().all(|w| *w < 1e-6));
    assert!(plan.diagnostics.is_empty(), "{:?}", plan.diagnostics);
    balance_holds(&input, &plan);
}

#[test]
fn an_impossible_need_is_reported_with_its_shortfall() {
    // 2 hours at 1 kW before the deadline cannot give 3 kWh.
    let mut input = HorizonInput::new(15, 0, vec![5000.0; 16]);
    input.loads = vec![HorizonLoad::deferrable(
        "laundry",
        2,
        1000.0,
        EnergyNeed {
            energy_wh: 3000.0,
            deadline: Deadline::Step(8),
        },
    )];
    let plan = plan_horizon(&input);
    assert_eq!(plan.diagnostics.len(), 1);
    let d = &plan.diagnostics[0];
    assert_eq!(d.load.as_deref(), Some("laundry"));
    assert!(
        d.message.contains(&format!("({} short)", kwh(1000.0))),
        "{}",
        d.message
    );
}

#[test]
fn a_higher_tier_is_served_before_a_lower_one() {
    let mut input = HorizonInput::new(60, 0, vec![1000.0; 4]);
    input.loads = vec![
        HorizonLoad::steady("homes", 2, 800.0),
        HorizonLoad::steady("workshop", 3, 800.0),
    ];
    let plan = plan_horizon(&input);
    for t in 0..4 {
        assert!((plan.loads[0].watts[t] - 800.0).abs() < 1e-3);
        assert!((plan.loads[1].watts[t] - 200.0).abs() < 1e-3);
    }
}

#[test]
fn a_deferrable_load_runs_when_import_is_cheap() {
    let mut input = HorizonInput::new(60, 0, vec![0.0; 8]);
    input.import = Some(GridImport {
        max_import_watts: 5000.0,
        price_per_kwh: vec![0.30, 0.30, 0.30, 0.30, 0.10, 0.10, 0.30, 0.30],
    });
    input.loads = vec![HorizonLoad::deferrable(
        "boiler",
        4,
        2000.0,
        EnergyNeed {
            energy_wh: 4000.0,
            deadline: Deadline::Step(8),
        },
    )];
    let plan = plan_horizon(&input);
    assert!((plan.loads[0].watts[4] - 2000.0).abs() < 1e-3);
    assert!((plan.loads[0].watts[5] - 2000.0).abs() < 1e-3);
    assert!(
        (plan.import_cost - 0.4).abs() < 1e-6,
        "{}",
        plan.import_cost
    );
}

#[test]
fn the_greedy_fallback_keeps_the_balance_and_the_reserve() {
    let mut input = communalia_planner::fixtures::synthetic_horizon(8, 96, 3);
    input.max_lp_variables = 0;
    // Health loads and uncontrolled consumption may use the reserve; nothing else may.
    input.uncontrolled_watts.clear();
    for l in &mut input.loads {
        l.health = false;
    }
    let plan = plan_horizon(&input);
    assert_eq!(plan.method, PlanMethod::GreedyFallback);
    assert!(!plan.diagnostics.is_empty());
    balance_holds(&input, &plan);
    let b = input.battery.unwrap();
    for (t, soc) in plan.soc.iter().enumerate().skip(1) {
        let margin =
            (soc - b.soc_min) * b.capacity_wh * b.discharge_efficiency - input.reserve_wh[t - 1];
        assert!(margin > -1.0, "step {t}: {margin}");
    }
}

#[test]
fn the_village_sized_plan_serves_more_with_the_lp_than_the_greedy_simulation() {
    let input = communalia_planner::fixtures::synthetic_horizon(32, 96, 5);
    let lp = plan_horizon(&input);
    let mut g = input.clone();
    g.max_lp_variables = 0;
    let greedy = plan_horizon(&g);
    assert_eq!(lp.method, PlanMethod::LinearProgram);
    // Weighted by priority, the LP is at least as good.
    let score = |p: &communalia_planner::HorizonPlan| -> f64 {
        p.served_wh_by_rank
            .iter()
            .enumerate()
            .map(|(r, wh)| wh * 3f64.powi(6 - r as i32))
            .sum()
    };
    assert!(score(&lp) >= score(&greedy) - 1.0);
    balance_holds(&input, &lp);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_health_reserve_holds_at_every_step(
        pv in prop::collection::vec(0.0f64..4000.0, 24),
        loads in prop::collection::vec((1usize..5, 100.0f64..2000.0, prop::bool::ANY), 1..6),
        soc in 0.5f64..0.95,
        reserve_frac in 0.0f64..1.0,
    ) {
        let mut input = HorizonInput::new(60, 18 * 60, pv);
        let b = battery(10_000.0, soc);
        // Keep at most what is stored now (after losses), so the reserve is feasible.
        let usable = (soc - b.soc_min) * b.capacity_wh * b.discharge_efficiency;
        input.battery = Some(b);
        input.reserve_wh = vec![usable * reserve_frac; 24];
        input.loads = loads.iter().enumerate().map(|(i, &(rank, w, deferrable))| {
            if deferrable {
                HorizonLoad::deferrable(format!("d{i}"), rank, w, EnergyNeed {
                    energy_wh: w * 4.0, deadline: Deadline::Step(20) })
            } else {
                HorizonLoad::steady(format!("s{i}"), rank, w)
            }
        }).collect();
        let plan = plan_horizon(&input);
        prop_assert_eq!(plan.method, PlanMethod::LinearProgram);
        for (t, s) in plan.soc.iter().enumerate().skip(1) {
            let margin = (s - b.soc_min) * b.capacity_wh * b.discharge_efficiency
                - input.reserve_wh[t - 1];
            prop_assert!(margin > -1.0, "step {}: margin {}", t, margin);
        }
        balance_holds(&input, &plan);
    }

    #[test]
    fn deadlines_are_met_when_feasible_and_reported_when_not(
        max_w in 200.0f64..3000.0,
        hours_needed in 0.5f64..12.0,
        deadline in 4usize..24,
    ) {
        // Plenty of sun: only the load's own power and the deadline limit it.
        let mut input = HorizonInput::new(60, 0, vec![10_000.0; 24]);
        input.loads = vec![HorizonLoad::deferrable("pump", 3, max_w, EnergyNeed {
            energy_wh: max_w * hours_needed, deadline: Deadline::Step(deadline) })];
        let plan = plan_horizon(&input);
        let possible = max_w * deadline as f64;
        let need = max_w * hours_needed;
        if need <= possible {
            prop_assert!((plan.loads[0].planned_wh - need).abs() < 1.0);
            prop_assert!(plan.diagnostics.is_empty());
        } else {
            prop_assert_eq!(plan.diagnostics.len(), 1);
            let short = kwh(need - possible);
            prop_assert!(plan.diagnostics[0].message.contains(&short),
                "{} lacks {}", plan.diagnostics[0].message, short);
        }
    }
}

#[test]
fn the_village_pump_is_planned_in_the_sun_and_the_allocation_follows() {
    use communalia_planner::{Rotation, Snapshot, allocate, fixtures};
    let mut village = fixtures::village();
    // A sunny day from 06:00: 6 kW at noon, nothing at night.
    let pv: Vec<f64> = (0..96)
        .map(|t| {
            let h = 6.0 + t as f64 / 4.0;
            (6000.0 * ((h - 6.0) / 14.0 * std::f64::consts::PI).sin()).max(0.0)
        })
        .collect();
    let mut input = HorizonInput::new(15, 6 * 60, pv);
    input.loads = HorizonLoad::from_priorities(&village);
    let pump = input.loads.iter().position(|l| l.id == "pump").unwrap();
    let plan = plan_horizon(&input);
    assert!((plan.loads[pump].planned_wh - 6000.0).abs() < 1.0);
    // At 06:00 the sun is weak and the plan keeps the pump off; the allocation follows.
    let at_six = plan.watts("pump", 0).unwrap();
    assert!(at_six < 750.0, "{at_six}");
    for tier in &mut village.tiers {
        for load in &mut tier.loads {
            load.planned_watts = plan.watts(&load.id, 0);
        }
    }
    let a = allocate(
        &village,
        &Snapshot::available(12_000.0),
        &Rotation::default(),
    );
    let pump = a.loads.iter().find(|l| l.id == "pump").unwrap();
    assert!(!pump.on);
    assert!(
        pump.reason.contains("plan runs it later"),
        "{}",
        pump.reason
    );
}

#[test]
fn a_battery_with_impossible_numbers_is_cleaned_not_a_panic() {
    let mut input = HorizonInput::new(60, 0, vec![1000.0; 24]);
    let mut b = battery(10_000.0, 0.5);
    b.capacity_wh = f64::NAN;
    b.charge_efficiency = f64::NAN;
    b.soc = -3.0;
    input.battery = Some(b);
    input.loads = vec![HorizonLoad::steady("s", 1, 500.0)];
    let plan = plan_horizon(&input);
    assert!(plan.soc.iter().all(|s| s.is_finite()), "{:?}", plan.soc);
    assert!(
        plan.diagnostics
            .iter()
            .any(|d| d.message.contains("cleaned"))
    );
}
