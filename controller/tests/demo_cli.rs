//! `communalia demo`, the README's main command, through the real binary: it starts the whole
//! village on the ports it is given, serves the page's API with every load decided and the
//! Communs ledger's members, records the history when asked, and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod records_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use records_support::{free_port, get_json, three_free_ports, try_get, wait_for_demo_banner};

#[test]
fn demo_runs_the_village_serves_the_page_and_stops_on_sigterm() {
    let history = tempfile::tempdir().unwrap();
    let (http, modbus, mqtt) = (free_port(), three_free_ports(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_communalia"))
        .args(["demo", "--speed", "600", "--http"])
        .arg(format!("127.0.0.1:{http}"))
        .args(["--modbus-port-base", &modbus.to_string()])
        .args(["--mqtt-port", &mqtt.to_string()])
        .arg("--history")
        .arg(history.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = wait_for_demo_banner(&mut child);
    assert!(
        banner.contains(&format!("http://127.0.0.1:{http}/")),
        "{banner}"
    );

    // Every load decided, with a reason, once every device has answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        if let Some(s) = get_json(http, "/api/state")
            && s["loads"].as_array().is_some_and(|l| {
                !l.is_empty()
                    && l.iter()
                        .all(|l| !l["reason"].as_str().unwrap_or("").is_empty())
            })
            && s["devices"]
                .as_array()
                .is_some_and(|d| d.iter().all(|d| d["online"] == true))
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo never decided every load"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(state["pv_watts"].is_number(), "{state}");
    let (status, page) = try_get(http, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("id=\"communs\""));
    // The Communs section has members to show: the owners of the village's homes.
    let books = get_json(http, "/api/ledger/balances").expect("the demo keeps a ledger");
    let names: Vec<&str> = books["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["role"] == "member")
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"amani") && names.len() == 6, "{names:?}");

    // At 600× a five-minute window passes every half second: rows are being written.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(history.path())
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "no history written");
        std::thread::sleep(Duration::from_millis(200));
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit}");
    // What it recorded replays.
    let files = communalia::records::history::read(history.path()).unwrap();
    let config = communalia::demo::village_config(
        &communalia::demo::Ports {
            modbus_base: modbus,
            mqtt,
        },
        600.0,
    )
    .unwrap();
    let h = communalia::records::history::parse(&files, &config.site).unwrap();
    assert!(h.rows.len() >= 2, "{} rows", h.rows.len());
    assert!(h.rows.iter().any(|r| r.pv_watts.is_some()));
}
