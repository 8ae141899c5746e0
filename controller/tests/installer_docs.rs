//! config/README.md's "Bringing up a real site", held to what the controller does: its example
//! site and assembly files (a hybrid inverter, a meter at the grid connection, a stock Tasmota
//! and a stock Shelly) are read out of the page, pointed at simulated devices on loopback, checked
//! and run through the real binary; the `/api/state` fields it lists are the ones served, and the
//! files it says `run` writes beside the site file are the ones written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod records_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use communalia_drivers::shelly::sim::{ShellyModel, ShellyPlug};
use communalia_drivers::sunspec::sim::{HybridSim, Irradiance, SunSpecSim};
use communalia_drivers::tasmota::TasmotaTopics;
use communalia_drivers::tasmota::sim::TasmotaPlug;
use communalia_drivers::testkit::Mosquitto;
use records_support::{free_port, get_json};

fn readme() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/README.md");
    std::fs::read_to_string(path).unwrap()
}

/// The section of the page from `heading` to the next `## ` heading.
fn section<'a>(page: &'a str, heading: &str) -> &'a str {
    let start = page
        .find(heading)
        .expect("the section is in config/README.md");
    let rest = &page[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The first ```toml block after `marker`.
fn example<'a>(page: &'a str, marker: &str) -> &'a str {
    let at = page
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} missing"));
    let rest = &page[at..];
    let open = rest
        .find("```toml\n")
        .expect("a toml block after the marker")
        + 8;
    let close = rest[open..].find("```").unwrap();
    &rest[open..open + close]
}

/// Every `name` in backticks of the bullet list after `marker`, up to the next blank line after
/// the list.
fn listed_names(page: &str, marker: &str) -> BTreeSet<String> {
    let at = page.find(marker).unwrap();
    let rest = &page[at..];
    let list = rest
        .lines()
        .skip_while(|l| !l.starts_with("- "))
        .take_while(|l| l.starts_with("- ") || l.starts_with("  "))
        .collect::<Vec<_>>()
        .join("\n");
    list.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// Every key of a JSON value, nested objects and the objects of arrays included.
fn keys(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

fn state(port: u16) -> Option<serde_json::Value> {
    get_json(port, "/api/state")
}

#[test]
fn the_installer_section_runs_a_hybrid_a_grid_meter_and_two_stock_plugs() {
    let page = readme();
    let docs = section(&page, "## Bringing up a real site");
    let site_doc = example(docs, "<!-- installer-example: site.toml -->");
    let assembly_doc = example(docs, "<!-- installer-example: assembly.toml -->");

    // The devices, as the page describes them, on loopback.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Mosquitto::start().unwrap();
    let (hybrid, meter, fridge, heater) = rt.block_on(async {
        let mut hybrid = HybridSim::new(
            40000,
            6000.0,
            Irradiance::Fixed(0.5),
            10_000.0,
            5000.0,
            60.0,
        );
        hybrid.set_speed(1.0);
        let hybrid = hybrid
            .serve(1, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut meter = SunSpecSim::meter(40000);
        // Exporting 1.2 kW to the grid.
        meter.set_power(-1200.0);
        let meter = meter
            .serve(1, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        // Stock firmware: one relay, TelePeriod 300; a Plus 1PM with status notifications off.
        let fridge = TasmotaPlug::new(TasmotaTopics::new("dispensary-fridge"), 150.0)
            .start(&broker.config("tasmota"));
        let heater = ShellyPlug::new("shellyplus1pm-a8032ab12c34", 2000.0)
            .model(ShellyModel::Plus1Pm)
            .start(&broker.config("shelly"));
        (hybrid, meter, fridge, heater)
    });
    let http = free_port();
    let site = site_doc
        .replace(
            "192.168.1.10:1883",
            &format!("{}:{}", broker.host(), broker.port()),
        )
        .replace("192.168.1.20:502", &hybrid.address())
        .replace("192.168.1.21:502", &meter.address())
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{http}"));
    assert!(
        !site.contains("192.168.") && !site.contains("0.0.0.0"),
        "every address of the example is replaced by a loopback one:\n{site}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("site.toml"), &site).unwrap();
    std::fs::write(dir.path().join("assembly.toml"), assembly_doc).unwrap();
    let site_path = dir.path().join("site.toml");

    let check = Command::new(env!("CARGO_BIN_EXE_communalia"))
        .args(["check", "--config"])
        .arg(&site_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "check refuses the documented example:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // `run`, started from another folder: relative paths are the site file's.
    let log = dir.path().join("run.log");
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_communalia"))
        .args(["run", "--config"])
        .arg(&site_path)
        .current_dir(elsewhere.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        if let Some(s) = state(http)
            && s["devices"]
                .as_array()
                .is_some_and(|d| d.iter().all(|d| d["online"] == true))
            && s["loads"].as_array().is_some_and(|l| {
                l.iter()
                    .all(|l| !l["reported_on"].is_null() && l["fault"].is_null())
            })
            && s["loads"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|l| l["id"] == "dispensary_fridge" && l["on"] == true)
            })
        {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the documented site never settled: {}\n{}",
                state(http).map(|s| s.to_string()).unwrap_or_default(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The grid meter is import: 3 kW of PV, 1.2 kW exported, the battery idle: 1.8 kW used.
    let pv = s["pv_watts"].as_f64().unwrap();
    let battery = s["battery"]["watts"].as_f64().unwrap();
    let used = s["consumption_watts"].as_f64().unwrap();
    assert!(
        (used - (pv - 1200.0 + battery)).abs() < 1.0,
        "consumption {used} from pv {pv}, battery {battery} and -1200 at the meter"
    );
    assert!(s["battery"]["soc_percent"].as_f64().is_some(), "{s}");

    // The page's list of fields is what the API serves.
    let mut served = BTreeSet::new();
    keys(&s, &mut served);
    let documented = listed_names(docs, "<!-- installer-api-state -->");
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented
        .iter()
        .filter(|k| !["surplus", "tight", "scarcity"].contains(&k.as_str()))
        .filter(|k| !served.contains(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "/api/state serves {missing:?} that the page does not list, the page lists {extra:?} it does not serve"
    );

    // What the controller wrote to the plugs, as the page says: the health plug comes back on
    // after a power cut, the water heater stays off.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(fridge.with(|p| p.power_on_state) == 1
        && heater.with(|p| p.initial_state(0).to_owned()) == "off")
    {
        assert!(Instant::now() < deadline, "fail-safes not written");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stop as an init system does; the health plug is left on.
    let asked = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let stop_took = asked.elapsed();
    assert!(exit.success(), "{exit}");
    assert!(fridge.with(|p| p.relay(1)), "the health plug is left on");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("not confirmed"), "{log}");
    assert!(
        !log.contains("\u{1b}["),
        "no terminal colours in a log file"
    );
    eprintln!("stopped {stop_took:?} after SIGTERM");

    // The files beside the site file: the two the page names, and nothing else; none where
    // `run` was started.
    let written: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !["site.toml", "assembly.toml", "run.log"].contains(&n.as_str()))
        .collect();
    let listed: BTreeSet<String> = ["bukavu-history", "bukavu-load-profile.json"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(written, listed);
    let files = section(&page, "### 7. Files, paths, the ledger");
    for name in ["<site id>-history/", "<site id>-load-profile.json"] {
        assert!(files.contains(name), "the page lists {name}");
    }
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing is written where run was started"
    );
    drop((hybrid, meter));
}
