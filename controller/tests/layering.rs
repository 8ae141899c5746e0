//! The layering ARCHITECTURE.md promises, checked against what the crates declare and contain:
//! which crate may reach files, sockets, the clock and the other crates. (A crate that gains a
//! dependency or a call that breaks a rule fails here, with the file and the rule.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| panic!("the controller sits in the workspace"))
        .to_path_buf()
}

/// The names of a crate's normal dependencies (also target-specific ones), as its Cargo.toml
/// lists them.
fn dependencies(krate: &str) -> BTreeSet<String> {
    let path = workspace().join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = BTreeSet::new();
    let mut add = |t: Option<&toml::Value>| {
        if let Some(t) = t.and_then(toml::Value::as_table) {
            names.extend(t.keys().cloned());
        }
    };
    add(doc.get("dependencies"));
    add(doc.get("build-dependencies"));
    if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
        for t in targets.values() {
            add(t.get("dependencies"));
        }
    }
    names
}

/// Every `.rs` file under a crate's `src/`, with its text.
fn sources(krate: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .path()
            })
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text =
                    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                out.push((p, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace().join(krate).join("src"), &mut out);
    assert!(!out.is_empty(), "{krate}/src has no sources");
    out
}

/// Crates that reach the outside world: sockets, files, processes, the async runtime, the wall
/// clock's calendar.
const IO_CRATES: &[&str] = &[
    "tokio",
    "tokio-modbus",
    "rumqttc",
    "axum",
    "influxdb2",
    "reqwest",
    "hyper",
    "rusqlite",
    "tempfile",
    "chrono",
    "url",
];
const WORKSPACE_CRATES: &[&str] = &[
    "communalia",
    "communalia-config",
    "communalia-planner",
    "communalia-drivers",
    "communalia-ledger",
];

/// Calls that reach files, sockets, processes, the environment or the clock.
const IO_CALLS: &[&str] = &[
    "std::fs",
    "tokio::fs",
    "File::open",
    "File::create",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "std::process",
    "std::env::var",
    "::now()",
    "SystemTime",
];

fn violations(krate: &str, allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for dep in dependencies(krate) {
        if IO_CRATES.contains(&dep.as_str()) && !allowed.contains(&dep.as_str()) {
            found.push(format!("{krate}/Cargo.toml: depends on `{dep}`"));
        }
        if WORKSPACE_CRATES.contains(&dep.as_str()) {
            found.push(format!(
                "{krate}/Cargo.toml: depends on the workspace crate `{dep}`"
            ));
        }
    }
    found
}

fn io_calls(krate: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in sources(krate) {
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            // A crate's inline unit tests sit at the end of their file (`#[cfg(test)] mod tests
            // {`); they may read fixtures (the schema's test regenerates config/README.md).
            if line.trim() == "#[cfg(test)]"
                && lines.get(n + 1).is_some_and(|l| l.trim() == "mod tests {")
            {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            for call in IO_CALLS {
                if code.contains(call) {
                    found.push(format!("{}:{}: `{call}`", path.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn the_planner_and_the_config_are_pure_and_stand_alone() {
    for krate in ["planner", "config"] {
        let mut found = violations(krate, &[]);
        found.extend(io_calls(krate));
        assert!(
            found.is_empty(),
            "{krate} must do no IO:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_ledger_touches_nothing_but_its_sqlite_file() {
    let mut found = violations("ledger", &["rusqlite"]);
    found.extend(io_calls("ledger"));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_drivers_open_sockets_but_no_database_web_server_or_calendar() {
    // Sockets and the monotonic clock (timeouts, the simulators' energy counters) are theirs;
    // what they read is judged on the site's clock by the controller.
    let found = violations("drivers", &["tokio", "tokio-modbus", "rumqttc", "tempfile"]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn only_the_controller_wires_the_crates_and_serves_http() {
    let deps = dependencies("controller");
    for krate in [
        "communalia-config",
        "communalia-planner",
        "communalia-drivers",
        "communalia-ledger",
    ] {
        assert!(
            deps.contains(krate),
            "the controller no longer wires {krate}"
        );
    }
    for krate in ["planner", "config", "ledger", "drivers"] {
        let deps = dependencies(krate);
        for server in ["axum", "influxdb2", "tracing-subscriber", "clap"] {
            assert!(!deps.contains(server), "{krate} depends on {server}");
        }
    }
}

#[test]
fn the_rules_catch_what_they_are_meant_to_catch() {
    // A check that cannot fail proves nothing: the same rules, on the controller, find its IO.
    assert!(!violations("controller", &[]).is_empty());
    assert!(io_calls("controller").iter().any(|v| v.contains("std::fs")));
}
