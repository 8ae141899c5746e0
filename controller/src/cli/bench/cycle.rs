//! `communalia bench cycle`: the full control cycle for a village of 5 Modbus devices and 60
//! plugs, all simulated on loopback in a child process (so the numbers are the controller's
//! alone): cycle time (p50, p99, max), CPU share at a 2 s interval, resident memory.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use communalia_drivers::modbus_sim::ModbusSim;
use communalia_drivers::regmap::{RegisterMapSim, SDM630};
use communalia_drivers::sunspec::sim::{Irradiance, SunSpecSim};
use communalia_drivers::testkit;

use super::percentile;
use crate::control::io::Clock;
use crate::control::model::SiteModel;
use crate::control::runtime::{self, RunOptions};
use crate::demo::{self, Ports, Village};
use crate::records::schema::CYCLE_SECONDS;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Cycles to time (at a 200 ms interval).
    #[arg(long, default_value_t = 300)]
    cycles: usize,
    /// Seconds to measure CPU at the real 2 s interval.
    #[arg(long, default_value_t = 30)]
    cpu_seconds: u64,
    /// Internal: serve the simulated village on this Modbus base port.
    #[arg(long, hide = true)]
    village_child: Option<u16>,
    #[arg(long, hide = true)]
    mqtt_port: Option<u16>,
}

const EXTRA_PLUGS: usize = 42;

/// The village example grown to 5 Modbus devices and 60 plugs.
pub fn bench_config(ports: &Ports) -> anyhow::Result<communalia_config::Config> {
    let mut site = demo::SITE_TOML.to_string();
    site.push_str(
        r#"
[[devices]]
kind = "sunspec"
id = "inverter2"
name = "Second PV inverter"
address = "127.0.0.1:1"
unit_id = 1
role = "pv_inverter"

[[devices]]
kind = "sdm630"
id = "pv_meter"
name = "PV sub-meter"
address = "127.0.0.1:1"
unit_id = 1
measures = "pv"
"#,
    );
    let mut ids = Vec::new();
    for i in 0..EXTRA_PLUGS {
        let id = format!("home_x{i:02}");
        let control = if i % 2 == 0 {
            format!(r#"{{ kind = "tasmota", topic = "home-x{i:02}" }}"#)
        } else {
            format!(r#"{{ kind = "shelly", device_id = "shellyplusplugs-x{i:02}" }}"#)
        };
        site.push_str(&format!(
            "\n[[loads]]\nid = \"{id}\"\nname = \"Home {i}\"\nmember = \"m{i:02}\"\nnominal_watts = {}\ncontrol = {control}\n",
            200 + 10 * i
        ));
        ids.push(format!("\"{id}\""));
    }
    let assembly = with_homes(demo::ASSEMBLY_TOML, &ids)
        .context("the village assembly file has no homes_and_school tier with a one-line list")?;
    demo::config_from(&site, &assembly, ports, 1.0)
}

/// The assembly file with `ids` appended to the `homes_and_school` tier's `loads = [...]`
/// line. (Matching the tier's last load by name broke when the village's list grew.)
fn with_homes(assembly: &str, ids: &[String]) -> Option<String> {
    let tier = assembly.find("name = \"homes_and_school\"")?;
    let list = tier + assembly[tier..].find("loads = [")?;
    let close = list + assembly[list..].find(']')?;
    if assembly[list..close].contains('\n') {
        return None;
    }
    Some(format!(
        "{}, {}{}",
        &assembly[..close],
        ids.join(", "),
        &assembly[close..]
    ))
}

/// Five consecutive free ports.
fn free_base() -> anyhow::Result<u16> {
    Ok(testkit::free_ports(5)?)
}

fn serve_village(base: u16, mqtt: u16) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let ports = Ports {
            modbus_base: base,
            mqtt,
        };
        let config = bench_config(&ports)?;
        let _village = Village::start(&config, &ports, Clock::real()).await?;
        let _inv2 = SunSpecSim::inverter(40000, 5000.0, Irradiance::Fixed(0.4), false)
            .serve(1, ([127, 0, 0, 1], base + 3).into())
            .await?;
        let mut sdm = RegisterMapSim::new(&SDM630);
        sdm.set("power_total", 1500.0);
        let _sdm: ModbusSim<RegisterMapSim> =
            sdm.serve(1, ([127, 0, 0, 1], base + 4).into()).await?;
        println!("ready");
        std::io::stdout().flush()?;
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// CPU time (user + system) of this process, from /proc (Linux; clock ticks of 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A `Vm*` line of /proc/self/status, in MB.
fn vm_mb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let (Some(base), Some(mqtt)) = (args.village_child, args.mqtt_port) {
        return serve_village(base, mqtt);
    }
    let ports = Ports {
        modbus_base: free_base()?,
        mqtt: testkit::free_port()?,
    };
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["bench", "cycle", "--village-child"])
        .arg(ports.modbus_base.to_string())
        .arg("--mqtt-port")
        .arg(ports.mqtt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the simulated village")?;
    let mut ready = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut ready)?;
    }
    if ready.trim() != "ready" {
        let _ = child.kill();
        anyhow::bail!("the simulated village did not start");
    }
    let result = measure(&args, &ports);
    drop(child.stdin.take());
    let _ = child.wait();
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn measure(args: &Args, ports: &Ports) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut config = bench_config(ports)?;
        let devices = config.site.devices.len();
        let plugs = config
            .site
            .loads
            .iter()
            .filter(|l| l.control.uses_mqtt())
            .count();

        // Cycle time: a fast interval, every cycle's own measurement from /metrics.
        config.site.interval = Duration::from_millis(200);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = runtime::start(
            SiteModel::new(config.clone()),
            RunOptions::new(Clock::real()),
            async move {
                let _ = stopped.await;
            },
        )
        .await?;
        let mut rx = running.published.clone();
        // Warm-up: devices discovered, plugs reported, fail-safes set.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut samples = Vec::with_capacity(args.cycles);
        let deadline = Instant::now() + Duration::from_secs(args.cycles as u64 / 2 + 30);
        let mut last_devices = String::new();
        while samples.len() < args.cycles && Instant::now() < deadline {
            if rx.changed().await.is_err() {
                break;
            }
            let p = rx.borrow_and_update().clone();
            let online = p.state.devices.iter().filter(|d| d.online).count();
            last_devices = p
                .state
                .devices
                .iter()
                .map(|d| format!("{} {}", d.id, if d.online { "online" } else { "silent" }))
                .collect::<Vec<_>>()
                .join(", ");
            if let Some(v) = p
                .metrics
                .lines()
                .find(|l| l.starts_with(&format!("{}{{", CYCLE_SECONDS.metric())))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                && online == devices
            {
                samples.push(v * 1000.0);
            }
        }
        let _ = stop.send(());
        running.task.await??;
        anyhow::ensure!(
            !samples.is_empty(),
            "no cycle saw every device online (last: {last_devices})"
        );
        samples.sort_by(f64::total_cmp);

        // CPU at the real interval.
        config.site.interval = Duration::from_secs(2);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = runtime::start(
            SiteModel::new(config),
            RunOptions::new(Clock::real()),
            async move {
                let _ = stopped.await;
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(args.cpu_seconds.max(4))).await;
        let (cpu1, wall) = (cpu_seconds(), t0.elapsed().as_secs_f64());
        let _ = stop.send(());
        running.task.await??;
        let cpu = cpu0.zip(cpu1).map(|(a, b)| (b - a) / wall * 100.0);
        Ok(serde_json::json!({
            "devices": devices,
            "plugs": plugs,
            "cycles_timed": samples.len(),
            "cycle_ms": {
                "p50": percentile(&samples, 0.5),
                "p99": percentile(&samples, 0.99),
                "max": samples.last().copied().unwrap_or(f64::NAN),
            },
            "cpu_percent_of_one_core_at_2s": cpu,
            "rss_mb": vm_mb("VmRSS:"),
            "rss_peak_mb": vm_mb("VmHWM:"),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_village_has_five_modbus_devices_and_sixty_plugs_the_homes_tier_shares() {
        let ports = Ports {
            modbus_base: 15020,
            mqtt: 11883,
        };
        let config = bench_config(&ports).unwrap();
        assert_eq!(config.site.devices.len(), 5);
        let plugs = config
            .site
            .loads
            .iter()
            .filter(|l| l.control.is_controlled())
            .count();
        assert_eq!(plugs, 60);
        let homes = config
            .assembly
            .tiers
            .iter()
            .find(|t| t.name == "homes_and_school")
            .unwrap();
        assert!(
            homes.loads.iter().any(|id| id == "home_x41"),
            "{:?}",
            homes.loads
        );
        assert!(
            homes.loads.iter().any(|id| id == "grain_mill"),
            "{:?}",
            homes.loads
        );
    }
}
