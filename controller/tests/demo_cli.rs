//! `communalia demo`, the README's main command, through the real binary: it starts the whole
//! village on the ports it is given, serves the page's API with every load decided and the
//! Communs ledger's members, records the history when asked, and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod records_support;

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

use records_support::{free_port, get_json, start_demo, three_free_ports, try_get};

#[test]
fn demo_runs_the_village_serves_the_page_and_stops_on_sigterm() {
    let history = tempfile::tempdir().unwrap();
    let (http, modbus, mqtt) = (free_port(), three_free_ports(), free_port());
    let (mut demo, banner) = start_demo(
        env!("CARGO_BIN_EXE_communalia"),
        http,
        modbus,
        mqtt,
        &[
            OsStr::new("--speed"),
            OsStr::new("600"),
            OsStr::new("--history"),
            history.path().as_os_str(),
        ],
    );
    let child = &mut demo.0;
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

/// Issue 15: members earn Communs the demo can show. The village's members run their washing
/// machine, e-bike and grain mill when the plan puts them in the sunny hours; the controller
/// credits that shifted use under the assembly's rules, and the credits post once their
/// contest window has closed, within 30 simulated hours. A claim for cleaning the school's
/// panels, filed and attested by members through the ledger's HTTP API, posts too. The page's
/// API and `ledger history` say which load and hours earned what.
#[test]
fn demo_members_earn_communs_for_shifted_use_and_attested_work_within_thirty_hours() {
    let (http, modbus, mqtt) = (free_port(), three_free_ports(), free_port());
    // 2026-03-02 is a clear day in the demo's weather; 1800× runs 30 h in a minute.
    let (child, banner) = start_demo(
        env!("CARGO_BIN_EXE_communalia"),
        http,
        modbus,
        mqtt,
        &["--speed", "1800", "--start", "2026-03-02T06:00"],
    );
    let ledger_file =
        std::env::temp_dir().join(format!("communalia-demo-ledger-{}.sqlite", child.0.id()));
    assert!(banner.contains("starts 2026-03-02 06:00"), "{banner}");
    // 30 simulated hours after 06:00 site time (UTC+3): 2026-03-03 12:00 site time.
    let limit: chrono::DateTime<chrono::Utc> = "2026-03-03T09:00:00Z".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(85);
    let (books, history) = loop {
        let now = get_json(http, "/api/state")
            .and_then(|s| s["time"].as_str().map(str::to_owned))
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
        let books = get_json(http, "/api/ledger/balances");
        let history = get_json(http, "/api/ledger/history?limit=10000");
        if let (Some(now), Some(books), Some(history)) = (now, books, history) {
            let earned = credited_members(&books, &history);
            if earned.len() >= 2 {
                assert!(now <= limit, "credits posted only at {now}: {earned:?}");
                break (books, history);
            }
            assert!(
                now <= limit,
                "30 simulated hours passed with meter credits posted for {earned:?} only: {books}"
            );
        }
        assert!(Instant::now() < deadline, "the demo never got there");
        std::thread::sleep(Duration::from_millis(500));
    };
    // The attested claim posted to its claimant, at the assembly's 2 C an hour.
    let entries = history["entries"].as_array().unwrap();
    let posted = entries
        .iter()
        .flat_map(|e| e["events"].as_array().unwrap())
        .find(|ev| ev["event"] == "claim_posted")
        .unwrap_or_else(|| panic!("the panel cleaning claim did not post: {history}"));
    assert_eq!(posted["to_member"], "4.000", "{posted}");
    let attests = entries.iter().filter(|e| e["kind"] == "attest").count();
    assert!(attests >= 2, "{attests} attestations");
    // Every meter credit says which member's load and hours earned it.
    let loads = ["washer_amani", "ebike_baraka", "grain_mill"];
    for e in entries.iter().filter(|e| e["kind"] == "meter-credit") {
        let source = e["body"]["source"].as_str().unwrap();
        assert!(
            loads.iter().any(|l| source.starts_with(&format!("{l} "))),
            "{source}"
        );
    }
    // `ledger history` on the demo's ledger file says the same, in words.
    let text = Command::new(env!("CARGO_BIN_EXE_communalia"))
        .args(["ledger", "history", "--db"])
        .arg(&ledger_file)
        .output()
        .unwrap();
    drop(child);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8(text.stdout).unwrap();
    let credited: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("meter credit") && l.contains(" Wh shifted for "))
        .collect();
    assert!(
        credited
            .iter()
            .any(|l| loads.iter().any(|id| l.contains(&format!("({id} ")))),
        "{text}"
    );
    assert!(text.contains("Cleaned the school roof panels"), "{text}");
    // The page's API lists the accounts it shows.
    assert!(books["accounts"].as_array().unwrap().len() >= 6, "{books}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ledger_file.display()));
    }
}

/// Names of the members whose balance holds more than any claim paid them, who had meter
/// credits: their credits have posted (a credit's posting shows in the balances of the day it
/// matures; the log records it with the next entry that moves the day).
fn credited_members(books: &serde_json::Value, history: &serde_json::Value) -> Vec<String> {
    let entries: Vec<&serde_json::Value> = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let millis = |t: &str| (t.parse::<f64>().unwrap_or(0.0) * 1000.0).round() as i64;
    let mut out = Vec::new();
    for a in books["accounts"].as_array().into_iter().flatten() {
        let m = a["member"].as_u64();
        let credits = entries
            .iter()
            .any(|e| e["kind"] == "meter-credit" && e["body"]["member"].as_u64() == m);
        let from_claims: i64 = entries
            .iter()
            .flat_map(|e| e["events"].as_array().into_iter().flatten())
            .filter(|ev| ev["event"] == "claim_posted" && ev["beneficiary"].as_u64() == m)
            .map(|ev| millis(ev["to_member"].as_str().unwrap_or("0")))
            .sum();
        if credits && a["balance_millis"].as_i64().unwrap_or(0) > from_claims {
            out.push(a["name"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}
