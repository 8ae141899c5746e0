//! `communalia check` as a user runs it: exit codes, the summary, located errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn communalia(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_communalia"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/examples")
        .join(name)
        .join("site.toml")
        .display()
        .to_string()
}

#[test]
fn check_passes_on_both_examples_with_a_one_line_summary() {
    let (code, out, err) = communalia(&["check", "--config", &example("village")]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.lines().count(), 1);
    assert!(out.starts_with("ok: site \"kalinzu\" (Kalinzu village microgrid): 3 devices, 19 loads (18 controlled, 1 measured only), 6 tiers; decision of 2026-10-03"), "{out}");
    let (code, out, _) = communalia(&["check", "--config", &example("minimal")]);
    assert_eq!(code, 0);
    assert!(out.contains("1 device, 1 load"), "{out}");
}

#[test]
fn check_prints_every_located_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let village = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/village");
    let site = std::fs::read_to_string(village.join("site.toml")).unwrap();
    let assembly = std::fs::read_to_string(village.join("assembly.toml")).unwrap();
    let site = site
        .replacen("nominal_watts = 1200", "nominal_watts = -1200", 1)
        .replacen("interval_secs = 2", "interval_sec = 2", 1);
    let assembly = assembly.replacen(
        "\"home_faraji\", \"washer_amani\"",
        "\"home_farji\", \"washer_amani\"",
        1,
    );
    std::fs::write(dir.path().join("site.toml"), site).unwrap();
    std::fs::write(dir.path().join("assembly.toml"), assembly).unwrap();
    let path = dir.path().join("site.toml").display().to_string();
    let (code, out, err) = communalia(&["check", "--config", &path]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(lines[0].ends_with("assembly.toml:35:95: tiers[4].loads[7]: unknown load \"home_farji\"; did you mean \"home_faraji\"?"), "{err}");
    assert!(lines[1].ends_with("site.toml:9:1: site.interval_sec: unknown key `interval_sec`; did you mean `interval_secs`?"), "{err}");
    assert!(lines[2].ends_with("site.toml:102:17: loads[3].nominal_watts: must be a positive number of watts, not -1200"), "{err}");
    assert!(
        lines[3].contains("site.toml:164:6: loads[12].id: ")
            && lines[3].contains("load \"home_faraji\" has no tier"),
        "{err}"
    );
    assert_eq!(lines[4], "4 errors found; nothing was changed");
}

#[test]
fn check_of_a_missing_file_says_which_and_exits_1() {
    let (code, _, err) = communalia(&["check", "--config", "/nonexistent/site.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/site.toml"), "{err}");
}

#[test]
fn check_refuses_a_device_a_fifo_or_a_huge_file_at_once_without_reading_it() {
    // Issue 20: /dev/zero as the assembly file grew to 24 GB; a FIFO hung for ever.
    let (code, _, err) = communalia(&["check", "--config", "/dev/zero"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read /dev/zero: not a regular file"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("site.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (code, _, err) = communalia(&["check", "--config", &fifo.display().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("not a regular file"), "{err}");

    // A site file naming a huge assembly file: located, refused, not read.
    let site = std::fs::read_to_string(example("village"))
        .unwrap()
        .replace("assembly = \"assembly.toml\"", "assembly = \"huge.toml\"");
    std::fs::write(dir.path().join("village.toml"), site).unwrap();
    let huge = std::fs::File::create(dir.path().join("huge.toml")).unwrap();
    huge.set_len(64 * 1024 * 1024).unwrap();
    let (code, _, err) = communalia(&[
        "check",
        "--config",
        &dir.path().join("village.toml").display().to_string(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("huge.toml") && err.contains("more than a configuration file may have"),
        "{err}"
    );
}

#[test]
fn check_of_binary_garbage_exits_1_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.toml");
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x12, b'[', b'\n']).unwrap();
    let (code, _, err) = communalia(&["check", "--config", &path.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("site.toml:1:1: the file is not valid UTF-8 text"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn probe_reads_a_configured_device_and_reports_it_offline_when_nothing_answers() {
    // Nothing listens on a port we just freed: the device is reported, not waited for.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let village = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/village");
    let site = std::fs::read_to_string(village.join("site.toml"))
        .unwrap()
        .replacen("127.0.0.1:5020", &format!("127.0.0.1:{port}"), 1);
    std::fs::write(dir.path().join("site.toml"), site).unwrap();
    std::fs::copy(
        village.join("assembly.toml"),
        dir.path().join("assembly.toml"),
    )
    .unwrap();
    let path = dir.path().join("site.toml").display().to_string();
    let (code, out, err) = communalia(&[
        "probe",
        "--config",
        &path,
        "inverter",
        "--timeout-secs",
        "0.5",
        "--json",
    ]);
    assert_eq!(code, 1, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["kind"], "sunspec");
    assert_eq!(report["online"], false);
    assert!(
        report["address"]
            .as_str()
            .unwrap()
            .ends_with(&port.to_string())
    );
    let (code, _, err) = communalia(&["probe", "--config", &path, "no_such_device"]);
    assert_eq!(code, 1);
    assert!(err.contains("no device or plug"), "{err}");
}
