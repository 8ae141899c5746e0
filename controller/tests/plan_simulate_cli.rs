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
            18,
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
    // A person reads the file: the site's clock (UTC+3), from its midnight, with the offset.
    let text = std::fs::read_to_string(&csv).unwrap();
    let first = text.lines().nth(1).unwrap();
    assert!(first.starts_with("2026-03-02T00:00:00+03:00,"), "{first}");

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

/// A recorded day of the village (local 2026-03-02, UTC+3): no sun at all, the battery at
/// `soc` at midnight, the home of Amani drawing 100 W whenever it was on.
fn dark_day(dir: &std::path::Path, soc: f64) {
    let start: chrono::DateTime<chrono::Utc> = "2026-03-01T21:00:00Z".parse().unwrap();
    let mut text = String::from("time,pv_watts,soc_percent,consumption_watts,home_amani\n");
    for i in 0..288 {
        let at = start + chrono::Duration::minutes(5 * i);
        let soc = if i == 0 {
            format!("{soc}")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{},0,{soc},,100\n",
            at.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    std::fs::write(dir.join("2026-03-02.csv"), text).unwrap();
}

fn load<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["loads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap()
}

#[test]
fn simulate_replays_a_recorded_history_instead_of_the_weather() {
    let dir = tempfile::tempdir().unwrap();
    dark_day(dir.path(), 60.0);
    let history = dir.path().to_str().unwrap();
    let (ok, out, err) =
        communalia(&["simulate", "--config", SITE, "--history", history, "--json"]);
    assert!(ok, "{err}");
    let recorded: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = &recorded["in_force"];
    assert_eq!(a["days"], 1, "the days the history covers");
    assert_eq!(a["recorded_steps"], 288);
    assert_eq!(a["modelled_steps"], 0);
    // The same day under the sunny model.
    let (ok, out, err) = communalia(&[
        "simulate",
        "--config",
        SITE,
        "--start",
        "2026-03-02",
        "--days",
        "1",
        "--weather",
        "sunny",
        "--json",
    ]);
    assert!(ok, "{err}");
    let sunny: serde_json::Value = serde_json::from_str(&out).unwrap();
    let energy = |r: &serde_json::Value, id: &str| load(r, id)["energy_wh"].as_f64().unwrap();
    let delivered = |r: &serde_json::Value| {
        r["loads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["energy_wh"].as_f64().unwrap())
            .sum::<f64>()
    };
    assert!(
        delivered(a) < 0.7 * delivered(&sunny["in_force"]),
        "without sun the village gets much less: {} against {} Wh",
        delivered(a),
        delivered(&sunny["in_force"])
    );
    assert!(a["min_soc_percent"].as_f64().unwrap() < 60.0);
    // Amani's home draws what it was recorded drawing, not its nominal 350 W.
    let home = load(a, "home_amani");
    let (hours, wh) = (
        home["hours_served"].as_f64().unwrap(),
        energy(a, "home_amani"),
    );
    assert!(hours > 0.0);
    assert!((wh - hours * 100.0).abs() < 1e-6, "{wh} Wh in {hours} h");

    let (ok, table, _) = communalia(&["simulate", "--config", SITE, "--history", history]);
    assert!(ok);
    assert!(table.contains("as recorded in 288 of 288"), "{table}");
}

#[test]
fn simulate_rejects_a_damaged_history_with_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("2026-03-02.csv"),
        "time,pv_watts\n2026-03-02T00:00:00Z,12\n2026-03-02T00:05:00Z,lots\n",
    )
    .unwrap();
    let (ok, _, err) = communalia(&[
        "simulate",
        "--config",
        SITE,
        "--history",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("2026-03-02.csv:3:22: `lots` in column `pv_watts` is not a number"),
        "{err}"
    );
    assert!(err.contains("nothing was simulated"), "{err}");
}

#[test]
fn simulate_reports_per_tier_the_hours_cut_while_pv_alone_covered_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("days.csv");
    let (ok, out, err) = communalia(&[
        "simulate",
        "--config",
        SITE,
        "--days",
        "2",
        "--start",
        "2026-03-02",
        "--weather",
        "mixed",
        "--json",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tiers = v["in_force"]["cut_in_sun"].as_array().unwrap();
    let names: Vec<&str> = tiers.iter().map(|t| t["tier"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "health",
            "cold_storage",
            "water",
            "homes_and_school",
            "workshop",
            "comfort"
        ]
    );
    // Each tier is in the sun above a higher PV than the tier above it: it must cover them too.
    let covers: Vec<f64> = tiers
        .iter()
        .map(|t| t["pv_covers_watts"].as_f64().unwrap())
        .collect();
    assert!(covers.windows(2).all(|w| w[0] < w[1]), "{covers:?}");
    assert!(
        covers[0] > 300.0,
        "the clinic and the telecom mast: {covers:?}"
    );
    // The CSV says which steps counted, and they add up to the hours reported.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2 * 288);
    for (t, name) in tiers.iter().zip(&names) {
        let col = header
            .iter()
            .position(|h| *h == format!("cut_in_sun_{name}"))
            .unwrap_or_else(|| panic!("no column for {name}: {header:?}"));
        let pv = header.iter().position(|h| *h == "pv_watts").unwrap();
        let steps = rows.iter().filter(|r| r[col] == "1").count();
        let hours = t["cut_in_sun_hours"].as_f64().unwrap();
        assert!(
            (hours - steps as f64 / 12.0).abs() < 1e-9,
            "{name}: {hours} h, {steps} steps"
        );
        // Only in the sun: every counted step had PV above what the tier and those above ask.
        for r in rows.iter().filter(|r| r[col] == "1") {
            assert!(r[pv].parse::<f64>().unwrap() >= t["pv_covers_watts"].as_f64().unwrap() - 0.5);
        }
    }
    // The health tier is never cut, sun or not.
    assert_eq!(tiers[0]["cut_in_sun_hours"].as_f64(), Some(0.0));
    let (ok, table, _) = communalia(&[
        "simulate",
        "--config",
        SITE,
        "--days",
        "1",
        "--start",
        "2026-03-02",
    ]);
    assert!(ok);
    assert!(table.contains("cut in sun"), "{table}");
}

#[test]
fn simulate_csv_columns_carry_the_loads_they_name() {
    // Regression: the on/off values were written in the order of the load ids sorted
    // alphabetically under a header in the site file's order, so "school_freezer" showed the
    // e-bike charger. Each column's steps on must add up to the hours the report gives the load
    // of that name.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("days.csv");
    let (ok, out, err) = communalia(&[
        "simulate",
        "--config",
        SITE,
        "--days",
        "2",
        "--start",
        "2026-03-02",
        "--weather",
        "mixed",
        "--json",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let loads = v["in_force"]["loads"].as_array().unwrap();
    let mut differ = 0;
    for l in loads {
        let id = l["id"].as_str().unwrap();
        let col = header.iter().position(|h| *h == id).unwrap();
        let steps = rows.iter().filter(|r| r[col] == "1").count();
        let hours = l["hours_served"].as_f64().unwrap();
        assert!(
            (hours - steps as f64 / 12.0).abs() < 1e-6,
            "{id}: {hours} h served, {steps} steps on in its column"
        );
        differ += usize::from(steps > 0 && steps < rows.len());
    }
    assert!(
        differ >= 3,
        "too few loads switch in these days to tell columns apart"
    );
}
