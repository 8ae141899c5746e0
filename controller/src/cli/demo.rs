//! `communalia demo`: the simulated village, the controller and the web page in one process.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::control::credits::Credits;
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
    /// When simulated time starts, in site time (YYYY-MM-DDTHH:MM). Default: now at --speed 1;
    /// faster, the next clear morning (06:00) of the demo's weather, so the first day is seen
    /// from sunrise.
    #[arg(long, value_name = "LOCAL")]
    start: Option<String>,
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

/// The demo's ledger: the file, the controller's key, and each member's key by name.
struct DemoLedger {
    ledger: SharedLedger,
    controller: communalia_ledger::SigningKey,
    members: Vec<(String, communalia_ledger::SigningKey)>,
}

/// A fresh ledger for the demo in the temporary folder, under the assembly's Communs rules: a
/// founding steward, the members who own the village's loads, and the controller (which signs
/// the meter credits), from `day`. Demo keys only.
fn demo_ledger(
    config: &communalia_config::Config,
    day: communalia_ledger::Day,
) -> anyhow::Result<DemoLedger> {
    use communalia_ledger::{Body, Ledger, Role, SqliteStore, fixtures};
    let site = &config.site;
    let file = std::env::temp_dir().join(format!(
        "communalia-demo-ledger-{}.sqlite",
        std::process::id()
    ));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    let params = super::ledger::params_from_communs(&config.assembly.communs)?;
    let founder = fixtures::key("communalia-demo", 0);
    let mut ledger = Ledger::init(
        SqliteStore::open(&file)?,
        &site.id,
        params,
        &founder,
        "secretary",
        day,
    )?;
    let mut names: Vec<&str> = site
        .loads
        .iter()
        .filter_map(|l| match &l.owner {
            communalia_config::Owner::Member(m) => Some(m.as_str()),
            communalia_config::Owner::Service(_) => None,
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|m| seen.insert(*m));
    let mut members = Vec::new();
    for (i, name) in (1u32..).zip(names) {
        let key = fixtures::key("communalia-demo", i);
        let body = Body::Admit {
            key: key.verifying_key().to_bytes(),
            role: Role::Member,
            name: name.to_owned(),
        };
        ledger.quorum_append(&founder, &[], day, body)?;
        members.push((name.to_owned(), key));
    }
    let controller = fixtures::key("communalia-demo-controller", 0);
    let body = Body::Admit {
        key: controller.verifying_key().to_bytes(),
        role: Role::Controller,
        name: "controller".into(),
    };
    ledger.quorum_append(&founder, &[], day, body)?;
    Ok(DemoLedger {
        ledger: std::sync::Arc::new(std::sync::Mutex::new(ledger)),
        controller,
        members,
    })
}

/// When the demo's simulated time starts: `--start` (site time), else now at speed 1, else
/// the next 06:00 site time on a clear day of [`demo::clouds`].
fn start_time(
    start: Option<&str>,
    speed: f64,
    offset_minutes: i32,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let offset = chrono::Duration::minutes(i64::from(offset_minutes));
    if let Some(text) = start {
        let local =
            chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M").map_err(|e| {
                anyhow::anyhow!("--start {text:?}: expected YYYY-MM-DDTHH:MM in site time ({e})")
            })?;
        return Ok(local.and_utc() - offset);
    }
    if speed <= 1.0 {
        return Ok(now);
    }
    let today = (now + offset).date_naive();
    let six = chrono::NaiveTime::from_hms_opt(6, 0, 0).unwrap_or_default();
    let mut day = today;
    for _ in 0..4 {
        let at = day.and_time(six).and_utc() - offset;
        // Clear at noon: the demo's grey days let through about half as much.
        if at >= now && demo::clouds(at + chrono::Duration::hours(6)) > 0.6 {
            return Ok(at);
        }
        day = day.succ_opt().unwrap_or(day);
    }
    Ok(now)
}

/// Members' work the others vouch for, as the demo's members would file it through the
/// ledger's HTTP API, each entry signed with its author's key: early on the first morning one
/// member claims the cleaning of the school's roof panels and two others attest it; a third
/// attests at noon, and the claim posts when the assembly's `attestations_needed` is reached.
async fn members_work(
    page: std::net::SocketAddr,
    token: String,
    ledger: SharedLedger,
    members: Vec<(String, communalia_ledger::SigningKey)>,
    clock: Clock,
    offset_minutes: i32,
) {
    use communalia_ledger::{Body, Hash};
    let start = clock.now();
    let key = |name: &str| {
        members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.clone())
    };
    let (Some(claimant), Some(a), Some(b), Some(c)) =
        (key("dalila"), key("eliya"), key("faraji"), key("baraka"))
    else {
        tracing::warn!("the demo's members are not the village's; no claim filed");
        return;
    };
    let at = |minutes: i64| start + chrono::Duration::minutes(minutes);
    let claim = Body::Claim {
        beneficiary: communalia_ledger::MemberId(0),
        minutes: 120,
        description: "Cleaned the school roof panels".into(),
        evidence: Hash::ZERO,
    };
    let Some(claim_id) = post_signed(
        page,
        &token,
        &ledger,
        &claimant,
        clock,
        at(60),
        offset_minutes,
        claim,
        true,
    )
    .await
    else {
        return;
    };
    for (signer, minutes) in [(a, 90), (b, 120), (c, 360)] {
        post_signed(
            page,
            &token,
            &ledger,
            &signer,
            clock,
            at(minutes),
            offset_minutes,
            Body::Attest { claim: claim_id },
            false,
        )
        .await;
    }
}

/// Waits until `when` (simulated), signs `body` by `key` as its next entry and posts it to the
/// page's `/api/ledger/entries`; the entry's id when the ledger took it. A claim is for its
/// own author (`for_author`).
#[allow(clippy::too_many_arguments)]
async fn post_signed(
    page: std::net::SocketAddr,
    token: &str,
    ledger: &SharedLedger,
    key: &communalia_ledger::SigningKey,
    clock: Clock,
    when: chrono::DateTime<chrono::Utc>,
    offset_minutes: i32,
    mut body: communalia_ledger::Body,
    for_author: bool,
) -> Option<communalia_ledger::Hash> {
    loop {
        let left = (when - clock.now()).num_milliseconds() as f64 / clock.speed();
        if left <= 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            left.clamp(1.0, 1000.0) as u64
        ))
        .await;
    }
    let day = super::local_day(clock.now(), offset_minutes);
    let entry = {
        let l = ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let me = match l.member_for(key) {
            Ok(m) => m.id,
            Err(e) => {
                tracing::warn!(error = %e, "demo member unknown to the ledger");
                return None;
            }
        };
        if let (true, communalia_ledger::Body::Claim { beneficiary, .. }) = (for_author, &mut body)
        {
            *beneficiary = me;
        }
        match l.draft(me, day, body) {
            Ok(u) => u.sign(l.site(), key),
            Err(e) => {
                tracing::warn!(error = %e, "demo entry not drafted");
                return None;
            }
        }
    };
    match http_post(page, token, "/api/ledger/entries", &entry.encode()).await {
        Ok((200, reply)) => {
            tracing::info!(
                kind = entry.unsigned.body.kind_name(),
                reply,
                "demo member's entry recorded"
            );
            serde_json::from_str::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v["id"].as_str().and_then(communalia_ledger::Hash::from_hex))
        }
        Ok((status, reply)) => {
            tracing::warn!(status, reply, "demo member's entry refused");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "demo member's entry not sent");
            None
        }
    }
}

/// A random write token for this run, in a file of the temporary folder only we can read.
fn write_token() -> anyhow::Result<(std::path::PathBuf, String)> {
    use std::io::{Read, Write};
    let mut secret = [0_u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| anyhow::anyhow!("reading randomness from /dev/urandom: {e}"))?;
    let token = communalia_ledger::entry::hex(&secret);
    let path = std::env::temp_dir().join(format!("communalia-demo-token-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    writeln!(f, "{token}").map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok((path, token))
}

/// A minimal HTTP/1.1 POST to our own page (the binary has no HTTP client): status and body.
async fn http_post(
    addr: std::net::SocketAddr,
    token: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        s.read_to_end(&mut reply),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply in 30 s"))??;
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
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
        // At most ten simulated minutes between cycles (at least a quarter second real), so a
        // fast demo decides and measures as finely as a site would.
        let finest = std::time::Duration::from_secs_f64((600.0 / args.speed).max(0.25));
        config.site.interval = config.site.interval.min(finest);
        // The members' entries go through the page's write guard like anyone's: a token for
        // this run, in the temporary folder.
        let token = write_token()?;
        config.site.http.write_token_file = Some(token.0.display().to_string());
        let offset = config.site.utc_offset_minutes;
        let start = start_time(args.start.as_deref(), args.speed, offset, chrono::Utc::now())?;
        let clock = Clock::accelerated(start, args.speed);
        let village = Village::start(&config, &ports, clock).await?;
        let site = config.site.clone();
        let ledger = demo_ledger(&config, super::local_day(start, offset))
            .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "demo ledger not made; no Communs on the page"))
            .ok();
        let credits = ledger.as_ref().map(|l| {
            Credits::new(std::sync::Arc::clone(&l.ledger), l.controller.clone(), &site)
        });
        let opts = RunOptions {
            credits,
            dry_run: args.dry_run,
            influx: influx(&args)?,
            mqtt_state: super::mqtt_state_from_config(&site),
            history: args.history.as_ref().map(|d| HistoryWriter::new(d, &site)),
            ..RunOptions::new(clock)
        };
        let influx_url = args.influxdb_url.clone();
        let running = runtime::start(SiteModel::new(config), opts, super::shutdown_signal()).await?;
        let page = super::serve_http(
            &site,
            running.published.clone(),
            std::path::Path::new("."),
            super::ledger_routes(ledger.as_ref().map(|l| std::sync::Arc::clone(&l.ledger)), clock, offset),
        )
            .await?;
        if let Some(l) = ledger.filter(|_| !args.dry_run) {
            tokio::spawn(members_work(page, token.1, l.ledger, l.members, clock, offset));
        }
        println!("Communalia demo: {} ({}x speed)", site.name, args.speed);
        println!(
            "  site time     starts {}",
            (start + chrono::Duration::minutes(i64::from(offset))).format("%Y-%m-%d %H:%M")
        );
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
