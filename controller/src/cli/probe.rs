//! `communalia probe`: read devices once and print what each reports, so an installer can
//! check wiring before going live. Ad hoc form: `--modbus HOST:PORT` or `--mqtt HOST:PORT`
//! with `--tasmota TOPIC` or `--shelly ID`; every read has a timeout, an unreachable device
//! is reported with exit code 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use communalia_drivers::modbus::ModbusConfig;
use communalia_drivers::mqtt::MqttConfig;
use communalia_drivers::plug::PlugKind;
use communalia_drivers::probe::{self, ProbeReport};
use communalia_drivers::regmap::{SDM630, VICTRON_GX};
use communalia_drivers::shelly::ShellyTopics;
use communalia_drivers::tasmota::{SensorKeys, TasmotaTopics};

/// Modbus device kinds for the ad hoc form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModbusKind {
    /// SunSpec discovery at 40000, 0 and 50000.
    Sunspec,
    /// Eastron SDM630 (input registers, float32).
    Sdm630,
    /// Victron GX system service (unit 100 by default).
    Victron,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["modbus", "mqtt", "config"])))]
pub struct Args {
    /// Probe the devices and plugs of this site file (all, or the one named by DEVICE).
    #[arg(long, value_name = "SITE", conflicts_with_all = ["modbus", "mqtt"])]
    pub config: Option<std::path::PathBuf>,
    /// With --config: only this device or load id.
    #[arg(value_name = "DEVICE", requires = "config")]
    pub device: Option<String>,
    /// Probe a Modbus TCP device at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "mqtt")]
    pub modbus: Option<String>,
    /// Modbus unit id (default 1; 100 for --kind victron).
    #[arg(long, value_name = "N", requires = "modbus")]
    pub unit: Option<u8>,
    /// What the Modbus device is.
    #[arg(long, value_enum, default_value_t = ModbusKind::Sunspec, requires = "modbus")]
    pub kind: ModbusKind,
    /// Probe a plug through the MQTT broker at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt: Option<String>,
    /// The Tasmota device's topic.
    #[arg(
        long,
        value_name = "TOPIC",
        requires = "mqtt",
        conflicts_with = "shelly"
    )]
    pub tasmota: Option<String>,
    /// The Tasmota FullTopic pattern, if not the default `%prefix%/%topic%/`.
    #[arg(long, value_name = "PATTERN", requires = "tasmota")]
    pub full_topic: Option<String>,
    /// The Shelly device's id (its MQTT topic prefix).
    #[arg(long, value_name = "ID", requires = "mqtt")]
    pub shelly: Option<String>,
    /// MQTT username.
    #[arg(long, requires = "mqtt")]
    pub mqtt_username: Option<String>,
    /// MQTT password.
    #[arg(long, requires = "mqtt_username")]
    pub mqtt_password: Option<String>,
    /// Timeout of each read, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub timeout_secs: f64,
    /// Print one JSON object per device.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let reports = match &args.config {
        Some(site) => rt.block_on(probe_site(site, args.device.as_deref(), timeout(&args)?))?,
        None => rt.block_on(probe_ad_hoc(&args))?,
    };
    print_reports(&reports, args.json)?;
    Ok(if reports.iter().all(|r| r.online) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn timeout(args: &Args) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(args.timeout_secs)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--timeout-secs must be a positive number of seconds")
}

async fn probe_ad_hoc(args: &Args) -> anyhow::Result<Vec<ProbeReport>> {
    let timeout = timeout(args)?;
    if let Some(address) = &args.modbus {
        let unit = args.unit.unwrap_or(match args.kind {
            ModbusKind::Victron => VICTRON_GX.default_unit,
            _ => 1,
        });
        let config = ModbusConfig::new(address.clone())
            .unit(unit)
            .timeout(timeout)
            .backoff(Duration::from_millis(100), Duration::from_secs(1));
        let report = match args.kind {
            ModbusKind::Sunspec => probe::probe_sunspec(config).await,
            ModbusKind::Sdm630 => probe::probe_register_map(config, &SDM630, "sdm630").await,
            ModbusKind::Victron => probe::probe_register_map(config, &VICTRON_GX, "victron").await,
        };
        return Ok(vec![report]);
    }
    let Some(broker) = &args.mqtt else {
        anyhow::bail!("give --modbus HOST:PORT or --mqtt HOST:PORT");
    };
    let client_id = format!("communalia-probe-{}", std::process::id());
    let mut config = MqttConfig::from_url(broker, client_id)
        .map_err(|e| anyhow::anyhow!("--mqtt {broker}: {e}"))?;
    if let Some(user) = &args.mqtt_username {
        config = config.credentials(user.clone(), args.mqtt_password.clone().unwrap_or_default());
    }
    let kind = match (&args.tasmota, &args.shelly) {
        (Some(topic), None) => {
            let mut topics = TasmotaTopics::new(topic.clone());
            if let Some(pattern) = &args.full_topic {
                topics = topics.full_topic(pattern.clone());
            }
            PlugKind::Tasmota(topics, SensorKeys::default())
        }
        (None, Some(id)) => PlugKind::Shelly(ShellyTopics::new(id.clone())),
        _ => anyhow::bail!("with --mqtt, give --tasmota TOPIC or --shelly ID"),
    };
    Ok(vec![probe::probe_plug(&config, kind, timeout).await])
}

/// Every configured device (Modbus) and controlled plug (MQTT) of a site, or the one named.
async fn probe_site(
    path: &std::path::Path,
    only: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Vec<ProbeReport>> {
    use communalia_config::DeviceKind;
    let config = crate::config_files::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let site = &config.site;
    let wanted = |id: &str| only.is_none_or(|o| o == id);
    let mut reports = Vec::new();
    for d in site.devices.iter().filter(|d| wanted(&d.id)) {
        let cfg = ModbusConfig::new(d.address.to_string())
            .unit(d.unit_id)
            .timeout(timeout.min(d.timeout.max(Duration::from_millis(100))))
            .backoff(Duration::from_millis(100), Duration::from_secs(1));
        reports.push(match d.kind {
            DeviceKind::Sunspec { .. } => probe::probe_sunspec(cfg).await,
            DeviceKind::Sdm630 { .. } => probe::probe_register_map(cfg, &SDM630, "sdm630").await,
            DeviceKind::Victron => probe::probe_register_map(cfg, &VICTRON_GX, "victron").await,
        });
    }
    if let Some(m) = &site.mqtt {
        let client_id = format!("communalia-probe-{}", std::process::id());
        let mqtt = MqttConfig::new(m.broker.host.clone(), m.broker.port, client_id);
        for l in site.loads.iter().filter(|l| wanted(&l.id)) {
            let Some(kind) = crate::control::io::plug_kind(&l.control) else {
                continue;
            };
            reports.push(probe::probe_plug(&mqtt, kind, timeout).await);
        }
    }
    if reports.is_empty() {
        anyhow::bail!(
            "{} has no device or plug {}",
            path.display(),
            only.map(|o| format!("named {o:?}")).unwrap_or_default()
        );
    }
    Ok(reports)
}

fn opt<T: std::fmt::Display>(field: &Option<Option<T>>, unit: &str) -> Option<String> {
    field.as_ref().map(|v| match v {
        Some(v) => format!("{v}{unit}"),
        None => "not implemented".to_owned(),
    })
}

fn print_reports(reports: &[ProbeReport], json: bool) -> anyhow::Result<()> {
    for r in reports {
        if json {
            println!(
                "{}",
                serde_json::to_string(r).context("encoding the report")?
            );
            continue;
        }
        println!(
            "{} at {}: {}",
            r.kind,
            r.address,
            if r.online { "online" } else { "OFFLINE" }
        );
        let mut lines: Vec<(&str, Option<String>)> = vec![
            ("models", r.models.as_ref().map(|m| format!("{m:?}"))),
            ("base address", r.base_address.map(|b| b.to_string())),
            ("manufacturer", opt(&r.manufacturer, "")),
            ("model", opt(&r.model, "")),
            ("serial", opt(&r.serial, "")),
            ("version", opt(&r.version, "")),
            ("ac power", opt(&r.ac_power_watts, " W")),
            ("energy total", opt(&r.energy_total_wh, " Wh")),
            ("state of charge", opt(&r.soc_percent, " %")),
            (
                "battery power",
                opt(&r.battery_power_watts, " W (discharge +)"),
            ),
            ("power limit", opt(&r.power_limit_percent, " %")),
            ("power limit enabled", opt(&r.power_limit_enabled, "")),
            ("switch on", opt(&r.switch_on, "")),
        ];
        lines.push(("error", r.error.clone()));
        for (name, value) in lines {
            if let Some(v) = value {
                println!("  {name:<20} {v}");
            }
        }
    }
    Ok(())
}
