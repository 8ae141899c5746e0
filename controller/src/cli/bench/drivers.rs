//! `communalia bench drivers`: 50 simulated SunSpec inverters read concurrently over loopback
//! Modbus TCP (time per round), and telemetry from 500 simulated Tasmota plugs through an MQTT
//! broker (does every plug's reading stay fresh at a 1 s tele period?).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use communalia_drivers::modbus::ModbusConfig;
use communalia_drivers::modbus_sim::ModbusSim;
use communalia_drivers::mqtt::{MqttBus, MqttConfig};
use communalia_drivers::plug::{MqttPlug, PlugKind, PlugOptions};
use communalia_drivers::sunspec::client::SunSpecDevice;
use communalia_drivers::sunspec::sim::{Irradiance, SunSpecSim};
use communalia_drivers::tasmota::sim::TasmotaPlug;
use communalia_drivers::tasmota::{SensorKeys, TasmotaTopics};
use communalia_drivers::testkit::{Mosquitto, free_port};
use tokio::task::JoinSet;

use super::percentile;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Simulated SunSpec inverters.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Rounds of reads to time.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Simulated plugs.
    #[arg(long, default_value_t = 500)]
    plugs: usize,
    /// Seconds to watch the plugs' telemetry.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Use this broker instead of starting mosquitto (or, without it, the built-in broker).
    #[arg(long, value_name = "HOST:PORT")]
    mqtt: Option<String>,
}

/// A broker for the bench: the one given, a fresh mosquitto (the test kit's, so the bench and
/// the tests start it the same way), or the built-in one.
struct Broker {
    addr: SocketAddr,
    kind: &'static str,
    /// Kills the mosquitto it started when dropped.
    _mosquitto: Option<Mosquitto>,
}

async fn broker(given: Option<&str>) -> anyhow::Result<Broker> {
    if let Some(g) = given {
        let addr = tokio::net::lookup_host(g)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{g} does not resolve"))?;
        return Ok(Broker {
            addr,
            kind: "given",
            _mosquitto: None,
        });
    }
    if Mosquitto::installed() {
        // 500 plugs and the bench's own clients: more connections than the default allows.
        let m = tokio::task::spawn_blocking(|| Mosquitto::start_local("max_connections -1\n"))
            .await??;
        return Ok(Broker {
            addr: SocketAddr::new(m.host().parse()?, m.port()),
            kind: "mosquitto",
            _mosquitto: Some(m),
        });
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()?)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(crate::broker::Broker::new().serve(listener, std::future::pending()));
    Ok(Broker {
        addr,
        kind: "built-in",
        _mosquitto: None,
    })
}

async fn modbus_rounds(args: &Args) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut sims: Vec<ModbusSim<SunSpecSim>> = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let sim = SunSpecSim::inverter(
            40000,
            5000.0,
            Irradiance::Fixed(0.1 + i as f64 * 0.01),
            false,
        );
        sims.push(sim.serve(1, ([127, 0, 0, 1], 0).into()).await?);
    }
    let devices: Vec<Arc<tokio::sync::Mutex<SunSpecDevice>>> = sims
        .iter()
        .map(|s| {
            let mut cfg = ModbusConfig::new(s.address());
            cfg.timeout = Duration::from_secs(1);
            Arc::new(tokio::sync::Mutex::new(SunSpecDevice::new(cfg)))
        })
        .collect();
    let mut times = Vec::with_capacity(args.rounds);
    let mut failures = 0;
    // The first round discovers every device; it is not timed.
    for round in 0..=args.rounds {
        let started = Instant::now();
        let mut set = JoinSet::new();
        for d in &devices {
            let d = Arc::clone(d);
            set.spawn(async move { d.lock().await.read_inverter().await.map(|r| r.ac_power) });
        }
        while let Some(r) = set.join_next().await {
            if !matches!(r, Ok(Ok(Some(_)))) && round > 0 {
                failures += 1;
            }
        }
        if round > 0 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((times, failures))
}

async fn plug_telemetry(args: &Args) -> anyhow::Result<serde_json::Value> {
    let broker = broker(args.mqtt.as_deref()).await?;
    let cfg = MqttConfig::new(broker.addr.ip().to_string(), broker.addr.port(), "bench");
    let tele = Duration::from_secs(1);
    let mut sims = Vec::with_capacity(args.plugs);
    for i in 0..args.plugs {
        let topics = TasmotaTopics::new(format!("bench-plug-{i:04}"));
        sims.push(
            TasmotaPlug::new(topics, 100.0 + i as f64)
                .tele_period(tele)
                .start(&cfg),
        );
    }
    let bus = MqttBus::start(&cfg.with_client_id("bench-controller"));
    bus.wait_connected(Duration::from_secs(10)).await?;
    let options = PlugOptions {
        stale_after: Duration::from_secs(3),
        ..PlugOptions::default()
    };
    let mut plugs = Vec::with_capacity(args.plugs);
    for i in 0..args.plugs {
        let kind = PlugKind::Tasmota(
            TasmotaTopics::new(format!("bench-plug-{i:04}")),
            SensorKeys::default(),
        );
        plugs.push(MqttPlug::attach(&bus, kind, options).await?);
    }
    // Warm-up: every simulator connected and reporting.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut ages = Vec::new();
    let mut missing = 0usize;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        for p in &plugs {
            match p.status().power_at {
                Some(at) => ages.push(now.saturating_duration_since(at).as_secs_f64()),
                None => missing += 1,
            }
        }
    }
    ages.sort_by(f64::total_cmp);
    drop(sims);
    Ok(serde_json::json!({
        "broker": broker.kind,
        "plugs": args.plugs,
        "tele_period_s": tele.as_secs_f64(),
        "reading_age_s": {
            "p50": percentile(&ages, 0.5),
            "p99": percentile(&ages, 0.99),
            "max": ages.last().copied().unwrap_or(f64::NAN),
        },
        "samples_without_reading": missing,
        "keeps_up": missing == 0 && ages.last().is_some_and(|m| *m < 2.0 * tele.as_secs_f64()),
    }))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let (times, failures) = modbus_rounds(&args).await?;
        let plugs = plug_telemetry(&args).await?;
        anyhow::Ok(serde_json::json!({
            "sunspec": {
                "devices": args.devices,
                "rounds": times.len(),
                "round_ms": {
                    "p50": percentile(&times, 0.5),
                    "p99": percentile(&times, 0.99),
                    "max": times.last().copied().unwrap_or(f64::NAN),
                },
                "failed_reads": failures,
            },
            "plugs": plugs,
        }))
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}
