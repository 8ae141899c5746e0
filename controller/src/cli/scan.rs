//! `communalia scan`: finds the SunSpec devices on Modbus TCP addresses and the Tasmota and
//! Shelly plugs on an MQTT broker, and writes a draft site file (and a draft assembly file)
//! that `communalia check` accepts, with comments saying what was found and what the installer
//! must still fill in. The finding is in `communalia_drivers::scan`; this is the rendering.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use communalia_drivers::mqtt::MqttConfig;
use communalia_drivers::scan::io::{ModbusScan, scan_address, scan_mqtt, with_default_port};
use communalia_drivers::scan::{
    COMMON_UNITS, Draft, DraftControl, DraftDeviceKind, ModbusFinding, Role, ScanReport, draft,
    slug,
};

/// Nominal power written for a load that drew nothing while scanned.
pub const PLACEHOLDER_WATTS: f64 = 100.0;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["modbus", "mqtt"])))]
pub struct Args {
    /// A Modbus TCP address to scan (port 502 if left out); repeat for several.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub modbus: Vec<String>,
    /// Unit ids to try on each Modbus address, e.g. `1-10,126`.
    #[arg(long, value_name = "LIST", default_value = "1,2,3,100,126,200,247")]
    pub units: String,
    /// The MQTT broker the plugs use.
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt: Option<String>,
    /// MQTT username.
    #[arg(long, requires = "mqtt")]
    pub mqtt_username: Option<String>,
    /// MQTT password.
    #[arg(long, requires = "mqtt_username")]
    pub mqtt_password: Option<String>,
    /// The whole scan ends within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout_secs: f64,
    /// Timeout of each Modbus request: a silent unit costs one.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub unit_timeout_ms: u64,
    /// Write the draft site file here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also write a draft assembly file (every load in one tier) that the site file names.
    #[arg(long, value_name = "FILE")]
    pub assembly_out: Option<PathBuf>,
    /// The draft site's id.
    #[arg(long, value_name = "ID", default_value = "site")]
    pub site_id: String,
    /// Print what was found as JSON instead of a draft.
    #[arg(long)]
    pub json: bool,
}

/// Parses `1-10,126`.
pub fn parse_units(list: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| -> anyhow::Result<u8> {
            s.trim()
                .parse::<u8>()
                .with_context(|| format!("--units: {s:?} is not a unit id (0 to 255)"))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if a > b {
            anyhow::bail!("--units: the range {part} runs backwards");
        }
        for u in a..=b {
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("--units lists no unit id");
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let total = Duration::try_from_secs_f64(args.timeout_secs)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(600))
        .context("--timeout-secs must be a number of seconds above 0 and at most 600")?;
    let units = parse_units(&args.units)?;
    if units == COMMON_UNITS {
        tracing::debug!("scanning the common unit ids");
    }
    let site_id = slug(&args.site_id, "site");
    let modbus = ModbusScan {
        units,
        unit_timeout: Duration::from_millis(args.unit_timeout_ms.clamp(20, 10_000)),
        register_maps: true,
    };
    let broker = match &args.mqtt {
        Some(url) => {
            let id = format!("communalia-scan-{}", std::process::id());
            let mut c = MqttConfig::from_url(url, id).context("--mqtt")?;
            if let Some(u) = &args.mqtt_username {
                c = c.credentials(u.clone(), args.mqtt_password.clone().unwrap_or_default());
            }
            Some(c)
        }
        None => None,
    };
    let addresses: Vec<String> = args
        .modbus
        .iter()
        .map(|a| with_default_port(a, 502))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + total;
        let mqtt = async {
            match &broker {
                Some(b) => Some(scan_mqtt(b, deadline).await),
                None => None,
            }
        };
        let modbus = futures_util::future::join_all(
            addresses.iter().map(|a| scan_address(a, &modbus, deadline)),
        );
        let (modbus, mqtt) = tokio::join!(modbus, mqtt);
        ScanReport { modbus, mqtt }
    });
    eprint!("{}", summary(&report));
    let complete = report.modbus.iter().all(|a| a.error.is_none())
        && report.mqtt.as_ref().is_none_or(|m| m.error.is_none());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(exit(complete));
    }
    let d = draft(&report);
    let assembly_name = assembly_reference(args.out.as_deref(), args.assembly_out.as_deref())?;
    let scanned = scanned_line(&addresses, args.mqtt.as_deref(), total);
    let site = render_site(&d, &site_id, &assembly_name, &scanned, &now_utc());
    match &args.out {
        Some(path) => std::fs::write(path, &site)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{site}"),
    }
    if let Some(path) = &args.assembly_out {
        let text = render_assembly(&d, &today());
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "draft: {} device{}, {} load{}{}{}",
        d.devices.len(),
        if d.devices.len() == 1 { "" } else { "s" },
        d.loads.len(),
        if d.loads.len() == 1 { "" } else { "s" },
        args.out
            .as_ref()
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_default(),
        args.assembly_out
            .as_ref()
            .map(|p| format!(", assembly draft in {}", p.display()))
            .unwrap_or_default()
    );
    if d.loads.is_empty() {
        eprintln!(
            "no plug found: the assembly needs at least one tier of loads before `check` passes"
        );
    }
    Ok(exit(complete))
}

fn exit(complete: bool) -> ExitCode {
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn now_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// What the site file's `site.assembly` says: the assembly draft's file name when both files
/// share a folder, else its absolute path; `assembly.toml` when no assembly draft is written.
pub fn assembly_reference(out: Option<&Path>, assembly: Option<&Path>) -> anyhow::Result<String> {
    let Some(a) = assembly else {
        return Ok("assembly.toml".into());
    };
    let folder = |p: &Path| -> anyhow::Result<PathBuf> {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        std::path::absolute(parent.unwrap_or(Path::new(".")))
            .with_context(|| format!("cannot resolve the folder of {}", p.display()))
    };
    if let Some(o) = out
        && folder(o)? == folder(a)?
        && let Some(name) = a.file_name()
    {
        return Ok(name.to_string_lossy().into_owned());
    }
    Ok(std::path::absolute(a)
        .with_context(|| format!("cannot resolve {}", a.display()))?
        .display()
        .to_string())
}

fn scanned_line(addresses: &[String], mqtt: Option<&str>, total: Duration) -> String {
    let mut parts = Vec::new();
    if !addresses.is_empty() {
        parts.push(format!("Modbus TCP {}", addresses.join(", ")));
    }
    if let Some(m) = mqtt {
        parts.push(format!("MQTT broker {m}"));
    }
    format!("{} (within {} s)", parts.join("; "), total.as_secs_f64())
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A comment line (`# ...`), whatever the device sent.
fn comment(out: &mut String, text: &str) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let _ = writeln!(out, "# {}", clean.trim_end());
}

fn number(w: f64) -> String {
    if w.fract() == 0.0 && w.abs() < 1e15 {
        format!("{}", w as i64)
    } else {
        format!("{w}")
    }
}

/// The draft site file.
pub fn render_site(d: &Draft, site_id: &str, assembly: &str, scanned: &str, when: &str) -> String {
    let mut s = String::new();
    comment(
        &mut s,
        &format!("Draft site file written by `communalia scan` on {when}."),
    );
    comment(&mut s, &format!("Scanned: {scanned}."));
    comment(
        &mut s,
        "What follows is what the devices said about themselves. Before going live:",
    );
    comment(
        &mut s,
        "  - name the site, its loads and their owners (lines marked TODO);",
    );
    comment(
        &mut s,
        "  - set every nominal_watts marked PLACEHOLDER, check the lines marked CHECK;",
    );
    comment(
        &mut s,
        "  - have the assembly vote its tiers (the assembly draft puts every load in one).",
    );
    comment(
        &mut s,
        "Every key: config/README.md. Validate: communalia check --config <this file>.",
    );
    s.push('\n');
    s.push_str("[site]\n");
    let _ = writeln!(s, "id = {}  # TODO: the site's short id", toml_str(site_id));
    let _ = writeln!(
        s,
        "name = {}  # TODO: the site's name as members know it",
        toml_str("New site (drafted by communalia scan)")
    );
    let _ = writeln!(s, "assembly = {}", toml_str(assembly));
    comment(
        &mut s,
        "latitude = 0.0        # TODO: for the solar forecast and sunrise (the health reserve)",
    );
    comment(&mut s, "longitude = 0.0");
    comment(&mut s, "utc_offset_minutes = 0");
    s.push('\n');
    comment(
        &mut s,
        "A grid or generator the site may draw from (none found by the scan):",
    );
    comment(&mut s, "[grid]");
    comment(&mut s, "kind = \"grid\"");
    comment(&mut s, "max_import_watts = 0");
    s.push('\n');
    render_battery(&mut s, d);
    if let Some(b) = &d.broker {
        s.push_str("[mqtt]\n");
        let _ = writeln!(s, "broker = {}", toml_str(b));
        s.push('\n');
    }
    comment(&mut s, "The page and API (default 127.0.0.1:8080):");
    comment(&mut s, "[http]");
    comment(&mut s, "listen = \"127.0.0.1:8080\"");
    s.push('\n');
    if !d.devices.is_empty() {
        comment(&mut s, "--- Devices found on Modbus TCP ---");
        s.push('\n');
    }
    for dev in &d.devices {
        for c in &dev.comments {
            comment(&mut s, c);
        }
        s.push_str("[[devices]]\n");
        let kind = match dev.kind {
            DraftDeviceKind::Sunspec { .. } => "sunspec",
            DraftDeviceKind::Sdm630 => "sdm630",
            DraftDeviceKind::Victron => "victron",
        };
        let _ = writeln!(s, "kind = {}", toml_str(kind));
        let _ = writeln!(s, "id = {}", toml_str(&dev.id));
        let _ = writeln!(s, "name = {}", toml_str(&dev.name));
        let _ = writeln!(s, "address = {}", toml_str(&dev.address));
        let _ = writeln!(s, "unit_id = {}", dev.unit_id);
        match dev.kind {
            DraftDeviceKind::Sunspec { role, base_address } => {
                let _ = writeln!(s, "role = {}", toml_str(role.as_str()));
                let _ = writeln!(s, "base_address = {base_address}");
                if role == Role::Meter {
                    s.push_str("measures = \"consumption\"  # CHECK: consumption, grid or pv\n");
                }
            }
            DraftDeviceKind::Sdm630 => {
                s.push_str("measures = \"consumption\"  # CHECK: consumption, grid or pv\n");
            }
            DraftDeviceKind::Victron => {}
        }
        s.push('\n');
    }
    if !d.loads.is_empty() {
        comment(&mut s, "--- Loads: one per plug channel found ---");
        s.push('\n');
    }
    for l in &d.loads {
        for c in &l.comments {
            comment(&mut s, c);
        }
        s.push_str("[[loads]]\n");
        let _ = writeln!(s, "id = {}", toml_str(&l.id));
        let _ = writeln!(
            s,
            "name = {}  # TODO: the name members know",
            toml_str(&l.name)
        );
        s.push_str("service = \"unassigned\"  # TODO: member = \"...\" or service = \"...\"\n");
        match l.nominal_watts {
            Some(w) => {
                let _ = writeln!(
                    s,
                    "nominal_watts = {}  # CHECK: read from the plug while scanned",
                    number(w)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "nominal_watts = {}  # PLACEHOLDER: it drew nothing while scanned; the load's power when on",
                    number(PLACEHOLDER_WATTS)
                );
            }
        }
        let control = match &l.control {
            DraftControl::Tasmota {
                topic,
                full_topic,
                relay,
            } => {
                let mut c = format!("{{ kind = \"tasmota\", topic = {}", toml_str(topic));
                if let Some(f) = full_topic {
                    let _ = write!(c, ", full_topic = {}", toml_str(f));
                }
                if *relay != 1 {
                    let _ = write!(c, ", relay = {relay}");
                }
                c.push_str(" }");
                c
            }
            DraftControl::Shelly {
                device_id,
                switch_id,
            } => {
                let mut c = format!("{{ kind = \"shelly\", device_id = {}", toml_str(device_id));
                if *switch_id != 0 {
                    let _ = write!(c, ", switch_id = {switch_id}");
                }
                c.push_str(" }");
                c
            }
        };
        let _ = writeln!(s, "control = {control}");
        s.push('\n');
    }
    if !d.notes.is_empty() {
        comment(&mut s, "--- Looked at and not used ---");
        for n in &d.notes {
            comment(&mut s, n);
        }
    }
    s
}

fn render_battery(s: &mut String, d: &Draft) {
    let Some(b) = &d.battery else {
        return;
    };
    let p = &b.nameplate;
    let soc = p
        .soc_percent
        .map(|v| format!(", at {v:.0} % when scanned"))
        .unwrap_or_default();
    match (p.capacity_wh, p.max_charge_watts, p.max_discharge_watts) {
        (Some(cap), Some(ch), Some(dis)) => {
            comment(
                s,
                &format!(
                    "The battery's nameplate as device \"{}\" reports it{soc}. CHECK min_soc_percent.",
                    b.device
                ),
            );
            s.push_str("[battery]\n");
            let _ = writeln!(s, "device = {}", toml_str(&b.device));
            let _ = writeln!(s, "capacity_wh = {}", number(cap.round()));
            let _ = writeln!(s, "max_charge_watts = {}", number(ch.round()));
            let _ = writeln!(s, "max_discharge_watts = {}", number(dis.round()));
        }
        _ => {
            comment(
                s,
                &format!(
                    "TODO: device \"{}\" is a battery{soc}, but did not give its capacity and power limits;",
                    b.device
                ),
            );
            comment(
                s,
                "fill them in and remove the # to plan with it (without [battery] it is read, not planned).",
            );
            comment(s, "[battery]");
            comment(s, &format!("device = {}", toml_str(&b.device)));
            let v = |x: Option<f64>| x.map_or("0  # TODO".to_owned(), |v| number(v.round()));
            comment(s, &format!("capacity_wh = {}", v(p.capacity_wh)));
            comment(s, &format!("max_charge_watts = {}", v(p.max_charge_watts)));
            comment(
                s,
                &format!("max_discharge_watts = {}", v(p.max_discharge_watts)),
            );
        }
    }
    for c in &b.comments {
        comment(s, c);
    }
    s.push('\n');
}

/// The draft assembly file: every controlled load in one tier, and a decision record whose
/// numbers are placeholders (said so at the top), so that `check` accepts the pair.
pub fn render_assembly(d: &Draft, date: &str) -> String {
    let mut s = String::new();
    comment(
        &mut s,
        "Draft assembly file written by `communalia scan`. THIS IS NOT A DECISION.",
    );
    comment(
        &mut s,
        "The vote below is a placeholder so that `communalia check` accepts the site; the",
    );
    comment(
        &mut s,
        "assembly's secretary replaces it with the real vote, and the single tier with the",
    );
    comment(
        &mut s,
        "tiers the assembly decides (the first tier is served first and holds the health reserve).",
    );
    s.push('\n');
    s.push_str("[decision]\n");
    let _ = writeln!(s, "date = {date}  # TODO: the date of the vote");
    s.push_str("reference = \"DRAFT: not voted\"  # TODO: the minutes' reference\n");
    s.push_str(
        "summary = \"Draft from communalia scan: every load in one tier, sharing alike.\"\n",
    );
    s.push_str("quorum = 1  # TODO\npresent = 1  # TODO\nvotes_for = 1  # TODO\nvotes_against = 0  # TODO\n");
    s.push('\n');
    if d.loads.is_empty() {
        comment(
            &mut s,
            "No plug was found: list the loads of the first tier here.",
        );
        comment(&mut s, "[[tiers]]");
        comment(&mut s, "name = \"all\"");
        comment(&mut s, "loads = []");
        return s;
    }
    comment(
        &mut s,
        "TODO: split into the tiers the assembly votes, health first.",
    );
    s.push_str("[[tiers]]\nname = \"all\"\nsharing = \"fair_share\"\nloads = [");
    let ids: Vec<String> = d.loads.iter().map(|l| toml_str(&l.id)).collect();
    s.push_str(&ids.join(", "));
    s.push_str("]\n");
    s
}

/// What was found, for the installer, on standard error.
pub fn summary(r: &ScanReport) -> String {
    let mut s = String::new();
    for a in &r.modbus {
        if let Some(e) = &a.error
            && a.found.is_empty()
        {
            let _ = writeln!(s, "modbus {}: {e}", a.address);
            continue;
        }
        for f in &a.found {
            match f {
                ModbusFinding::Sunspec(x) => {
                    let c = x.common.clone().unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "modbus {} unit {}: SunSpec at {}, models {:?}{}{}",
                        a.address,
                        x.unit,
                        x.base,
                        x.models,
                        c.manufacturer.map(|m| format!(", {m}")).unwrap_or_default(),
                        c.model.map(|m| format!(" {m}")).unwrap_or_default(),
                    );
                }
                ModbusFinding::Sdm630 { unit, .. } => {
                    let _ = writeln!(
                        s,
                        "modbus {} unit {unit}: reads like an Eastron SDM630",
                        a.address
                    );
                }
                ModbusFinding::Victron { unit, .. } => {
                    let _ = writeln!(
                        s,
                        "modbus {} unit {unit}: reads like a Victron GX",
                        a.address
                    );
                }
            }
        }
        for m in a.missed.iter().filter(|m| m.answered) {
            let _ = writeln!(s, "modbus {} unit {}: {}", a.address, m.unit, m.reason);
        }
        let silent: Vec<String> = a
            .missed
            .iter()
            .filter(|m| !m.answered)
            .map(|m| m.unit.to_string())
            .collect();
        if !silent.is_empty() {
            let _ = writeln!(
                s,
                "modbus {}: no device on unit{} {}",
                a.address,
                if silent.len() == 1 { "" } else { "s" },
                silent.join(", ")
            );
        }
        if let Some(e) = &a.error
            && !a.found.is_empty()
        {
            let _ = writeln!(s, "modbus {}: {e}", a.address);
        }
    }
    if let Some(m) = &r.mqtt {
        if let Some(e) = &m.error {
            let _ = writeln!(s, "mqtt {}: {e}", m.broker);
        }
        for t in &m.tasmota {
            let _ = writeln!(
                s,
                "mqtt {}: tasmota {} ({}){}",
                m.broker,
                t.topic,
                if t.online { "online" } else { "offline" },
                if t.online {
                    format!(", {} relay(s)", t.channels().len())
                } else {
                    String::new()
                }
            );
        }
        for x in &m.shelly {
            let _ = writeln!(
                s,
                "mqtt {}: shelly {} ({}), {} switch(es)",
                m.broker,
                x.prefix,
                if x.online { "online" } else { "offline" },
                x.switches.len()
            );
        }
        if m.error.is_none() && m.tasmota.is_empty() && m.shelly.is_empty() {
            let _ = writeln!(
                s,
                "mqtt {}: no Tasmota last will and no Shelly online topic",
                m.broker
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_lists_take_ranges_and_single_ids() {
        assert_eq!(parse_units("1-3,126").unwrap(), vec![1, 2, 3, 126]);
        assert_eq!(parse_units(" 7 ").unwrap(), vec![7]);
        assert_eq!(parse_units("1,1,2").unwrap(), vec![1, 2]);
        assert!(parse_units("3-1").is_err());
        assert!(parse_units("300").is_err());
        assert!(parse_units("").is_err());
    }

    #[test]
    fn toml_strings_escape_what_a_device_may_send() {
        assert_eq!(toml_str(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(toml_str("x\ny\u{1}"), r#""x\ny\u0001""#);
    }

    #[test]
    fn the_assembly_is_named_by_file_name_beside_the_site_file() {
        let dir = std::env::temp_dir();
        let site = dir.join("site.toml");
        let asm = dir.join("assembly-draft.toml");
        assert_eq!(
            assembly_reference(Some(&site), Some(&asm)).unwrap(),
            "assembly-draft.toml"
        );
        assert_eq!(
            assembly_reference(Some(&site), None).unwrap(),
            "assembly.toml"
        );
        let elsewhere = dir.join("sub").join("a.toml");
        assert!(
            Path::new(&assembly_reference(Some(&site), Some(&elsewhere)).unwrap()).is_absolute()
        );
    }
}
