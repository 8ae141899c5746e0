//! EMHASS-style self-consumption solver: feasibility of every answer, optimality where an
//! independent solver (HiGHS) proved the relaxation's value optimal, the JSON format, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use communalia_planner::fixtures::emhass_instance;
use communalia_planner::selfcons::{Instance, InstanceError, Solution, solve};

/// Checks every constraint of the instance on the solution and recomputes the objective.
fn check_feasible(inst: &Instance, s: &Solution) {
    assert!(s.feasible);
    let dh = f64::from(inst.step_minutes) / 60.0;
    let b = &inst.battery;
    let tol = 1e-3;
    for (j, d) in inst.deferrables.iter().enumerate() {
        let on = s.deferrable_on[j].iter().filter(|x| **x).count();
        assert_eq!(on, d.operating_steps, "deferrable {j}");
    }
    let mut soc = b.soc_start * b.capacity_wh;
    let mut objective = 0.0;
    for t in 0..inst.steps {
        let deferred: f64 = inst
            .deferrables
            .iter()
            .enumerate()
            .filter(|(j, _)| s.deferrable_on[*j][t])
            .map(|(_, d)| d.nominal_watts)
            .sum();
        let (g, x, bat) = (s.import_watts[t], s.export_watts[t], s.battery_watts[t]);
        assert!(
            g >= -tol && g <= inst.grid.max_import_watts + tol,
            "import at {t}"
        );
        assert!(
            x >= -tol && x <= inst.grid.max_export_watts + tol,
            "export at {t}"
        );
        assert!(bat <= b.max_discharge_watts + tol && -bat <= b.max_charge_watts + tol);
        let balance = inst.pv_watts[t] + bat + g - inst.base_load_watts[t] - deferred - x;
        assert!(balance.abs() < 1e-2, "balance at {t}: {balance}");
        // Net battery power is what the solver reports; SoC moves at least as the net flow
        // with losses allows, and at most as a lossless one.
        let (charge, discharge) = if bat >= 0.0 { (0.0, bat) } else { (-bat, 0.0) };
        let expected =
            soc + (charge * b.charge_efficiency - discharge / b.discharge_efficiency) * dh;
        let reported = s.soc[t] * b.capacity_wh;
        assert!(
            reported <= soc + (charge - discharge) * dh + 1.0,
            "soc at {t}"
        );
        assert!(
            reported >= expected - 1.0 - 0.1 * (charge + discharge) * dh,
            "soc at {t}"
        );
        soc = reported;
        assert!(
            s.soc[t] >= b.soc_min - 1e-6 && s.soc[t] <= b.soc_max + 1e-6,
            "soc bounds {t}"
        );
        objective += (inst.import_price[t] * g - inst.export_price[t] * x) * dh / 1000.0;
    }
    assert!(s.soc[inst.steps - 1] >= b.soc_end_min - 1e-6);
    assert!((objective - s.objective).abs() < 1e-6);
    assert!(s.objective >= s.relaxation_bound - 1e-6);
}

#[test]
fn every_benchmark_answer_satisfies_every_constraint() {
    for (n, steps) in [(2, 48), (2, 96), (8, 48), (8, 96), (32, 48)] {
        let inst = emhass_instance(n, steps, 7);
        let s = solve(&inst).unwrap();
        check_feasible(&inst, &s);
    }
}

#[test]
fn small_instances_reach_the_optimum_highs_proves() {
    // HiGHS 1.16 (exact MIP) proved these optima equal to the LP relaxation's value.
    for (n, steps) in [(2, 48), (8, 48), (8, 96)] {
        let s = solve(&emhass_instance(n, steps, 7)).unwrap();
        let gap = s.objective - s.relaxation_bound;
        assert!(
            gap < 1e-6 * (1.0 + s.objective.abs()),
            "n {n} T {steps}: gap {gap}"
        );
    }
}

#[test]
fn the_instance_file_format_reads_as_documented() {
    let json = r#"{
        "step_minutes": 60, "steps": 3,
        "pv_watts": [0, 3000, 0], "base_load_watts": [200, 200, 200],
        "import_price": [0.3, 0.1, 0.3], "export_price": [0.05, 0.05, 0.05],
        "battery": {"capacity_wh": 0, "max_charge_watts": 0, "max_discharge_watts": 0,
                    "charge_efficiency": 0.95, "discharge_efficiency": 0.95,
                    "soc_min": 0, "soc_max": 1, "soc_start": 0, "soc_end_min": 0},
        "grid": {"max_import_watts": 5000, "max_export_watts": 5000},
        "deferrables": [{"nominal_watts": 1000, "operating_steps": 1}]
    }"#;
    let inst: Instance = serde_json::from_str(json).unwrap();
    let s = solve(&inst).unwrap();
    // The deferrable runs in the sunny hour: 0.2 kWh bought at 0.3 twice, 1.8 kWh sold at 0.05.
    assert_eq!(s.deferrable_on[0], [false, true, false]);
    assert!(
        (s.objective - (0.12 - 0.09)).abs() < 1e-9,
        "{}",
        s.objective
    );
    assert!(serde_json::from_str::<Instance>(&json.replace("\"steps\"", "\"stepz\"")).is_err());
}

#[test]
fn an_impossible_schedule_is_reported_infeasible() {
    let mut inst = emhass_instance(2, 48, 1);
    inst.grid.max_import_watts = 0.0;
    inst.battery.capacity_wh = 0.0;
    inst.pv_watts = vec![0.0; 48];
    let s = solve(&inst).unwrap();
    assert!(!s.feasible);
}

#[test]
fn a_list_of_the_wrong_length_is_an_error() {
    let mut inst = emhass_instance(2, 48, 1);
    inst.import_price.pop();
    assert!(matches!(
        solve(&inst),
        Err(InstanceError::Length {
            field: "import_price",
            found: 47,
            steps: 48
        })
    ));
}

/// The field and message of the rule `inst` breaks.
fn rule_error(inst: &Instance) -> (String, String) {
    match solve(inst) {
        Err(e) => match &e {
            InstanceError::Rule { field, .. } => (field.clone(), e.to_string()),
            other => panic!("expected a rule error, got {other:?}"),
        },
        Ok(_) => panic!("expected a rule error, the instance was solved"),
    }
}

#[test]
fn states_of_charge_outside_zero_to_one_are_refused_by_name() {
    for field in ["soc_min", "soc_max", "soc_start", "soc_end_min"] {
        for value in [f64::NAN, f64::INFINITY, -0.1, 1.5, 80.0] {
            let mut inst = emhass_instance(2, 8, 1);
            let b = &mut inst.battery;
            *match field {
                "soc_min" => &mut b.soc_min,
                "soc_max" => &mut b.soc_max,
                "soc_start" => &mut b.soc_start,
                _ => &mut b.soc_end_min,
            } = value;
            let (got, message) = rule_error(&inst);
            assert_eq!(got, format!("battery.{field}"), "{value}");
            assert!(
                message
                    .ends_with("it must be a fraction of capacity_wh in 0..=1 (not a percentage)"),
                "{message}"
            );
        }
    }
}

#[test]
fn a_minimum_state_of_charge_above_the_maximum_is_refused() {
    let mut inst = emhass_instance(2, 8, 1);
    inst.battery.soc_min = 0.95;
    assert_eq!(
        rule_error(&inst).1,
        "battery.soc_min is 0.95; it must be at most battery.soc_max (0.9)"
    );
}

#[test]
fn a_starting_state_of_charge_outside_the_limits_is_refused() {
    for start in [0.05, 0.95] {
        let mut inst = emhass_instance(2, 8, 1);
        inst.battery.soc_start = start;
        assert_eq!(
            rule_error(&inst).1,
            format!(
                "battery.soc_start is {start}; it must be within \
                 battery.soc_min..=battery.soc_max (0.1..=0.9)"
            )
        );
    }
    // The limits themselves are fine.
    for start in [0.1, 0.9] {
        let mut inst = emhass_instance(2, 8, 1);
        inst.battery.soc_start = start;
        inst.battery.soc_end_min = 0.1;
        assert!(solve(&inst).is_ok(), "{start}");
    }
}

#[test]
fn an_end_target_above_the_maximum_is_refused() {
    let mut inst = emhass_instance(2, 8, 1);
    inst.battery.soc_end_min = 0.92;
    assert_eq!(
        rule_error(&inst).1,
        "battery.soc_end_min is 0.92; it must be at most battery.soc_max (0.9)"
    );
}

#[test]
fn a_deferrable_with_a_bad_power_is_refused_by_its_position() {
    for value in [f64::NAN, f64::NEG_INFINITY, f64::INFINITY, -1.0] {
        let mut inst = emhass_instance(3, 8, 1);
        inst.deferrables[1].nominal_watts = value;
        let (field, message) = rule_error(&inst);
        assert_eq!(field, "deferrables[2].nominal_watts");
        assert_eq!(
            message,
            format!("deferrables[2].nominal_watts is {value}; it must be finite and at least 0 W")
        );
    }
    let mut inst = emhass_instance(3, 8, 1);
    inst.deferrables[1].nominal_watts = 0.0;
    assert!(solve(&inst).is_ok());
}
