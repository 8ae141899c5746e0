//! `communalia demo`: the simulated village, the controller and the web page in one process.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::control::io::Clock;
use crate::control::model::SiteModel;
use crate::control::runtime::{self, RunOptions};
use crate::demo::{self, Ports, Village};
use crate::records::history::HistoryWriter;
use crate::records::influx::{InfluxSettings, InfluxSink};

#[derive(clap::Args)]
pub struct Args {
    /// Where the web page and API listen.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Simulated seconds per real second: 60 runs a day in 24 minutes.
    #[arg(long, value_name = "N", default_value_t = 1.0)]
    speed: f64,
    /// First of the three Modbus TCP ports (inverter, battery, meter).
    #[arg(long, value_name = "P", default_value_t = 5020)]
    modbus_port_base: u16,
    /// Port of the embedded MQTT broker.
    #[arg(long, value_name = "Q", default_value_t = 1883)]
    mqtt_port: u16,
    /// Read, plan and explain, but switch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Send the village's time series to your own InfluxDB 2 (e.g. http://localhost:8086).
    #[arg(long, value_name = "URL")]
    influxdb_url: Option<String>,
    #[arg(long, value_name = "O", default_value = "communalia")]
    influxdb_org: String,
    #[arg(long, value_name = "B", default_value = "communalia")]
    influxdb_bucket: String,
    /// A file holding the API token (else the INFLUXDB_TOKEN environment variable).
    #[arg(long, value_name = "F")]
    influxdb_token_file: Option<std::path::PathBuf>,
    /// Record the village's five-minute history in this folder, as `run` does for a site, to
    /// replay it with `simulate --history`.
    #[arg(long, value_name = "DIR")]
    history: Option<std::path::PathBuf>,
}

type SharedLedger =
    std::sync::Arc<std::sync::Mutex<communalia_ledger::Ledger<communalia_ledger::SqliteStore>>>;

/// A fresh ledger for the demo in the temporary folder: a founding steward and the members who
/// own the village's loads, so the page shows the Communs section. Demo keys only.
fn demo_ledger(site: &communalia_config::Site) -> anyhow::Result<SharedLedger> {
    use chrono::Datelike;
    use communalia_ledger::{Body, Day, Ledger, Params, Role, SqliteStore, fixtures};
    let file = std::env::temp_dir().join(format!(
        "communalia-demo-ledger-{}.sqlite",
        std::process::id()
    ));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    let d = chrono::Utc::now().date_naive();
    let day =
        Day::from_ymd(d.year(), d.month(), d.day()).ok_or_else(|| anyhow::anyhow!("date {d}"))?;
    let founder = fixtures::key("communalia-demo", 0);
    let mut ledger = Ledger::init(
        SqliteStore::open(&file)?,
        &site.id,
        Params::default(),
        &founder,
        "secretary",
        day,
    )?;
    let mut members: Vec<&str> = site
        .loads
        .iter()
        .filter_map(|l| match &l.owner {
            communalia_config::Owner::Member(m) => Some(m.as_str()),
            communalia_config::Owner::Service(_) => None,
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    members.retain(|m| seen.insert(*m));
    for (i, name) in (1u32..).zip(members) {
        let key = fixtures::key("communalia-demo", i);
        let body = Body::Admit {
            key: key.verifying_key().to_bytes(),
            role: Role::Member,
            name: name.to_owned(),
        };
        ledger.quorum_append(&founder, &[], day, body)?;
    }
    Ok(std::sync::Arc::new(std::sync::Mutex::new(ledger)))
}

fn influx(args: &Args) -> anyhow::Result<Option<InfluxSink>> {
    let Some(url) = &args.influxdb_url else {
        return Ok(None);
    };
    let token = match &args.influxdb_token_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", f.display()))?
            .trim()
            .to_owned(),
        None => std::env::var("INFLUXDB_TOKEN").map_err(|_| {
            anyhow::anyhow!("--influxdb-url needs --influxdb-token-file or INFLUXDB_TOKEN")
        })?,
    };
    let buffer = std::env::temp_dir().join("communalia-demo-influx");
    let settings = InfluxSettings::new(
        url.clone(),
        args.influxdb_org.clone(),
        args.influxdb_bucket.clone(),
        token,
        buffer,
    );
    Ok(Some(InfluxSink::spawn(settings)?))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    if !(args.speed.is_finite() && (0.1..=3600.0).contains(&args.speed)) {
        anyhow::bail!("--speed must be between 0.1 and 3600 (got {})", args.speed);
    }
    if args.modbus_port_base > u16::MAX - 2 {
        anyhow::bail!("--modbus-port-base leaves no room for three ports");
    }
    let ports = Ports {
        modbus_base: args.modbus_port_base,
        mqtt: args.mqtt_port,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut config = demo::village_config(&ports, args.speed)?;
        config.site.http.listen = communalia_config::Endpoint {
            host: args.http.ip().to_string(),
            port: args.http.port(),
        };
        let clock = Clock::accelerated(chrono::Utc::now(), args.speed);
        let village = Village::start(&config, &ports, clock).await?;
        let site = config.site.clone();
        let opts = RunOptions {
            dry_run: args.dry_run,
            influx: influx(&args)?,
            mqtt_state: super::mqtt_state_from_config(&site),
            history: args.history.as_ref().map(|d| HistoryWriter::new(d, &site)),
            ..RunOptions::new(clock)
        };
        let influx_url = args.influxdb_url.clone();
        let running = runtime::start(SiteModel::new(config), opts, super::shutdown_signal()).await?;
        let ledger = demo_ledger(&site)
            .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "demo ledger not made; no Communs on the page"))
            .ok();
        let page = super::serve_http(
            &site,
            running.published.clone(),
            std::path::Path::new("."),
            super::ledger_routes(ledger),
        )
            .await?;
        println!("Communalia demo: {} ({}x speed)", site.name, args.speed);
        println!("  web page      http://{page}/   (API: /api/state, /api/plan, /api/assembly, /api/ledger/balances, /metrics)");
        if let Some(url) = influx_url {
            println!("  time series   {url} (org {}, bucket {})", args.influxdb_org, args.influxdb_bucket);
        }
        println!(
            "  MQTT broker   {}   (state on communalia/{}/state; watch: mosquitto_sub -h {} -p {} -t '#' -v)",
            village.broker,
            site.id,
            village.broker.ip(),
            village.broker.port()
        );
        for (what, sim) in [
            ("inverter", &village.inverter),
            ("battery", &village.battery),
            ("meter", &village.meter),
        ] {
            println!("  {what:<13} modbus tcp {}  unit 1  (SunSpec at 40000)", sim.addr());
        }
        println!("  Ctrl-C stops; health loads are left on.");
        running.task.await??;
        drop(village);
        Ok(ExitCode::SUCCESS)
    })
}
