//! `communalia scan`, the installer's path, through the real binary: on the demo's village (its
//! SunSpec devices on Modbus TCP, its Tasmota and Shelly plugs on its broker) it writes a draft
//! site file and assembly file that `check` accepts and that `run --dry-run` reads with every
//! device online and every plug heard; unreachable addresses are reported; garbage replies on
//! Modbus and MQTT end in a report, within the timeout, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod records_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use records_support::{KillOnDrop, free_port, get_json, start_demo, three_free_ports};

fn communalia(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_communalia"))
        .args(args)
        .output()
        .unwrap()
}

fn village_plugs() -> Vec<(String, String)> {
    let site = communalia::demo::village_config(
        &communalia::demo::Ports {
            modbus_base: 5020,
            mqtt: 1883,
        },
        1.0,
    )
    .unwrap()
    .site;
    site.loads
        .iter()
        .filter_map(|l| match &l.control {
            communalia_config::Control::Tasmota { topic, .. } => {
                Some(("tasmota".into(), topic.clone()))
            }
            communalia_config::Control::Shelly { device_id, .. } => {
                Some(("shelly".into(), device_id.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn scan_of_the_demo_village_drafts_a_site_that_check_accepts_and_a_dry_run_reads() {
    let (http, modbus, mqtt) = (free_port(), three_free_ports(), free_port());
    let _demo = start_demo::<&str>(env!("CARGO_BIN_EXE_communalia"), http, modbus, mqtt, &[]);
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    let assembly = dir.path().join("assembly.toml");
    let nobody = free_port();

    let started = Instant::now();
    let mut args = vec!["scan".to_owned()];
    for port in [modbus, modbus + 1, modbus + 2, nobody] {
        args.push("--modbus".into());
        args.push(format!("127.0.0.1:{port}"));
    }
    args.extend(
        [
            "--mqtt",
            &format!("127.0.0.1:{mqtt}"),
            "--timeout-secs",
            "5",
            "--site-id",
            "scanned",
            "--out",
            site.to_str().unwrap(),
            "--assembly-out",
            assembly.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = communalia(&args);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The address nobody listens on is reported, and makes the exit code say "incomplete".
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("modbus 127.0.0.1:{nobody}: cannot connect")),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(7), "the scan took {took:?}");

    let text = std::fs::read_to_string(&site).unwrap();
    // Every SunSpec device with its role, the battery's nameplate, the broker.
    for (port, role) in [
        (modbus, "pv_inverter"),
        (modbus + 1, "battery"),
        (modbus + 2, "meter"),
    ] {
        let block = text
            .split("[[devices]]")
            .find(|b| b.contains(&format!("address = \"127.0.0.1:{port}\"")))
            .unwrap_or_else(|| panic!("no device at {port}:\n{text}"));
        assert!(block.contains(&format!("role = \"{role}\"")), "{block}");
        assert!(block.contains("base_address = 40000"), "{block}");
    }
    assert!(text.contains("capacity_wh = 20000"), "{text}");
    assert!(
        text.contains(&format!("broker = \"127.0.0.1:{mqtt}\"")),
        "{text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{nobody}: cannot connect")));
    // One load per plug of the village, each on its own topic or device id.
    let plugs = village_plugs();
    assert_eq!(text.matches("[[loads]]").count(), plugs.len(), "{text}");
    for (kind, topic) in &plugs {
        let needle = match kind.as_str() {
            "tasmota" => format!("kind = \"tasmota\", topic = \"{topic}\""),
            _ => format!("kind = \"shelly\", device_id = \"{topic}\""),
        };
        assert!(text.contains(&needle), "{needle} missing:\n{text}");
    }
    assert!(
        std::fs::read_to_string(&assembly)
            .unwrap()
            .contains("THIS IS NOT A DECISION")
    );

    let check = communalia(&["check", "--config", site.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "check refused the draft:\n{}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(
        summary.contains(&format!("3 devices, {} loads", plugs.len())),
        "{summary}"
    );

    // The draft runs: a dry run reads every device and hears every plug, without a fault.
    let run_http = free_port();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&site)
        .unwrap()
        .write_all(format!("\n[http]\nlisten = \"127.0.0.1:{run_http}\"\n").as_bytes())
        .unwrap();
    let _run = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_communalia"))
            .args(["run", "--dry-run", "--config", site.to_str().unwrap()])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        if let Some(s) = get_json(run_http, "/api/state") {
            let devices_online = s["devices"]
                .as_array()
                .is_some_and(|d| d.len() == 3 && d.iter().all(|d| d["online"] == true));
            let plugs_heard = s["loads"].as_array().is_some_and(|l| {
                l.len() == plugs.len()
                    && l.iter()
                        .all(|l| l["measured_watts"].is_number() && l["fault"].is_null())
            });
            if devices_online && plugs_heard {
                assert_eq!(s["dry_run"], true);
                break;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "the dry run never read every device and plug: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Modbus "device" that answers every connection with bytes that are not Modbus.
fn garbage_modbus_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(b"\x00\x01\xff\xffgarbage\x03\x02\x00");
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_replies_end_in_a_report_within_the_timeout_never_a_panic() {
    use communalia_drivers::shelly::sim::ShellyPlug;
    use communalia_drivers::tasmota::TasmotaTopics;
    use communalia_drivers::tasmota::sim::TasmotaPlug;
    use communalia_drivers::testkit::{Mosquitto, unique};

    let broker = Mosquitto::start().unwrap();
    let cfg = broker.config(&unique("scan-garbage"));
    let (tasmota_topic, shelly_prefix) = (unique("garbled-t"), unique("garbled-s"));
    let tasmota = TasmotaPlug::new(TasmotaTopics::new(tasmota_topic.clone()), 100.0)
        .tele_period(Duration::from_secs(5))
        .start(&cfg);
    let shelly = ShellyPlug::new(shelly_prefix.clone(), 100.0)
        .period(Duration::from_secs(5))
        .start(&cfg);
    tasmota.set_faults(|f| f.garbled = true);
    shelly.set_faults(|f| f.garbled = true);
    assert!(tasmota.wait_connected(Duration::from_secs(5)).await);
    assert!(shelly.wait_connected(Duration::from_secs(5)).await);
    let modbus = garbage_modbus_server();

    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    let assembly = dir.path().join("assembly.toml");
    let mqtt = format!("{}:{}", broker.host(), broker.port());
    let args = [
        "scan".to_owned(),
        "--modbus".into(),
        format!("127.0.0.1:{modbus}"),
        "--units".into(),
        "1,2".into(),
        "--mqtt".into(),
        mqtt,
        "--timeout-secs".into(),
        "2".into(),
        "--out".into(),
        site.display().to_string(),
        "--assembly-out".into(),
        assembly.display().to_string(),
    ];
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        communalia(&args)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(101), "panicked: {stderr}");
    assert!(out.status.code().is_some(), "killed: {stderr}");
    assert!(took < Duration::from_secs(4), "the scan took {took:?}");
    // Nothing usable on the Modbus address, said so per unit.
    assert!(stderr.contains(&format!("127.0.0.1:{modbus}")), "{stderr}");
    assert!(!stderr.contains("SunSpec at"), "{stderr}");
    // The plugs were found by their (never garbled) availability, and drafted with what the
    // installer must fill in; the garbage was not taken for readings.
    let text = std::fs::read_to_string(&site).unwrap();
    assert!(
        text.contains(&format!("topic = \"{tasmota_topic}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("device_id = \"{shelly_prefix}\"")),
        "{text}"
    );
    assert_eq!(
        text.matches("PLACEHOLDER: it drew nothing").count(),
        2,
        "{text}"
    );
    assert!(text.contains("not understood"), "{text}");
    assert!(text.contains("no reply to Shelly.GetDeviceInfo"), "{text}");
    let check = communalia(&["check", "--config", site.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
