//! `communalia plan` and `communalia simulate` through the real binary on the village example.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const SITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/examples/village/site.toml"
);

fn communalia(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_communalia"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn plan_json(watts: &str) -> serde_json::Value {
    let (ok, out, err) = communalia(&[
        "plan",
        "--config",
        SITE,
        "--available-watts",
        watts,
        "--json",
    ]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn plan_json_has_the_documented_fields_and_respects_the_available_power() {
    for watts in ["500", "2000", "5000", "12000"] {
        let v = plan_json(watts);
        let available: f64 = watts.parse().unwrap();
        assert_eq!(v["available_watts"].as_f64(), Some(available));
        assert!(v["diagnostics"].is_array());
        let loads = v["loads"].as_array().unwrap();
        assert_eq!(
            loads.len(),
            15,
            "every controlled load, measured-only ones left out"
        );
        let mut total = 0.0;
        for l in loads {
            for key in [
                "id",
                "tier",
                "rank",
                "on",
                "demand_watts",
                "allocated_watts",
                "reason",
            ] {
                assert!(l.get(key).is_some(), "{key} missing in {l}");
            }
            total += l["allocated_watts"].as_f64().unwrap();
            assert!(!l["reason"].as_str().unwrap().is_empty());
        }
        assert!(
            total <= available + 1e-6,
            "{total} allocated of {available}"
        );
    }
}

#[test]
fn plan_at_half_a_kilowatt_serves_the_clinic_first() {
    let v = plan_json("500");
    let loads = v["loads"].as_array().unwrap();
    let on = |id: &str| {
        loads.iter().find(|l| l["id"] == id).unwrap()["on"]
            .as_bool()
            .unwrap()
    };
    assert!(on("clinic_fridge") && on("clinic_lights"));
    assert!(!on("cold_room") && !on("workshop"));
    let workshop = loads.iter().find(|l| l["id"] == "workshop").unwrap();
    assert!(
        workshop["reason"].as_str().unwrap().contains("tier 5"),
        "{workshop}"
    );
}

#[test]
fn plan_rejects_a_negative_power_with_a_clear_message() {
    let (ok, _, err) = communalia(&["plan", "--config", SITE, "--available-watts=-5"]);
    assert!(!ok);
    assert!(err.contains("--available-watts"), "{err}");
}

#[test]
fn simulate_compares_two_priority_files_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let assembly =
        std::fs::read_to_string(std::path::Path::new(SITE).with_file_name("assembly.toml"))
            .unwrap();
    // The proposal: the workshop moves above the homes.
    let proposed = assembly.replace(
        "[[tiers]]\nname = \"workshop\"\nloads = [\"workshop\"]\n",
        "",
    );
    assert_ne!(proposed, assembly, "the workshop tier was not found");
    let proposed = proposed.replace(
        "[[tiers]]\nname = \"homes_and_school\"",
        "[[tiers]]\nname = \"workshop\"\nloads = [\"workshop\"]\n\n[[tiers]]\nname = \"homes_and_school\"",
    );
    let path = dir.path().join("proposal.toml");
    std::fs::write(&path, proposed).unwrap();
    let csv = dir.path().join("days.csv");
    let (ok, out, err) = communalia(&[
        "simulate",
        "--config",
        SITE,
        "--assembly",
        path.to_str().unwrap(),
        "--days",
        "2",
        "--start",
        "2026-03-02",
        "--weather",
        "sunny",
        "--json",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let energy = |which: &str, id: &str| {
        v[which]["loads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .unwrap()["energy_wh"]
            .as_f64()
            .unwrap()
    };
    assert!(
        energy("proposed", "workshop") > energy("in_force", "workshop"),
        "moving the workshop up gives it more energy"
    );
    assert!(energy("in_force", "clinic_fridge") > 0.0);
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count();
    assert_eq!(rows, 1 + 2 * 288, "a header and one row per 5 minutes");

    let (ok, table, _) = communalia(&[
        "simulate",
        "--config",
        SITE,
        "--assembly",
        path.to_str().unwrap(),
        "--days",
        "1",
    ]);
    assert!(ok);
    assert!(
        table.contains("per tier") && table.contains(" | "),
        "{table}"
    );
}

#[test]
fn simulate_rejects_an_invalid_proposal_with_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[decision]\ndate = \"yesterday\"\n").unwrap();
    let (ok, _, err) = communalia(&[
        "simulate",
        "--config",
        SITE,
        "--assembly",
        path.to_str().unwrap(),
        "--days",
        "1",
    ]);
    assert!(!ok);
    assert!(err.contains("bad.toml:"), "{err}");
    assert!(err.contains("nothing was simulated"), "{err}");
}
