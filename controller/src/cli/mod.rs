//! Subcommands of the `communalia` binary, one module each.

pub mod bench;
pub mod check;
pub mod demo;
pub mod ledger;
pub mod plan;
pub mod probe;
pub mod run;
pub mod scan;
pub mod simulate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use communalia_drivers::mqtt::MqttConfig;
use tokio::sync::watch;

use crate::http::Published;
use crate::records::influx::{InfluxSettings, InfluxSink, resolve_token};
use crate::records::mqtt_state::{DiscoverySite, MqttStatePublisher, MqttStateSettings};

/// How the log lines on stderr look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event; coloured only when stderr is a terminal.
    #[default]
    Plain,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`), for log collectors.
    Json,
}

/// Logs to stderr as text; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    init_tracing_as(LogFormat::Plain);
}

/// Logs to stderr in `format`; `RUST_LOG` filters (default `info`). Terminal colour codes
/// only when stderr is a terminal, so a log file or journal gets plain text.
pub fn init_tracing_as(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stopping");
}

/// Serves the page and API on the site's HTTP address until the cycle stops publishing;
/// returns the address bound.
pub async fn serve_http(
    site: &communalia_config::Site,
    published: watch::Receiver<Arc<Published>>,
    base_dir: &std::path::Path,
    extra: axum::Router,
) -> anyhow::Result<SocketAddr> {
    let listen = site.http.listen.to_string();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {listen} (choose another address)"))?;
    let addr = listener.local_addr()?;
    let write_token = match &site.http.write_token_file {
        Some(file) => {
            let path = base_dir.join(file);
            let token = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the HTTP write token file {}", path.display()))?;
            Some(token.trim().to_owned()).filter(|t| !t.is_empty())
        }
        None => None,
    };
    let app = crate::http::App {
        published: published.clone(),
        write_token,
        // Five missed cycles and the page and /healthz say the data is stale.
        stale_after: site.interval * 5 + Duration::from_secs(5),
        extra,
    };
    let mut done = published;
    let stop = async move { while done.changed().await.is_ok() {} };
    tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, app, stop).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(addr)
}

/// The InfluxDB writer of the site file's `[influxdb]` section, if any.
pub fn influx_from_config(
    site: &communalia_config::Site,
    base_dir: &std::path::Path,
) -> anyhow::Result<Option<InfluxSink>> {
    let Some(cfg) = &site.influxdb else {
        return Ok(None);
    };
    let token = resolve_token(&cfg.token, base_dir)?;
    let settings = InfluxSettings::from_config(cfg, token, base_dir);
    Ok(Some(InfluxSink::spawn(settings)?))
}

/// The MQTT state publisher for the site's broker, if it has one, announcing the site to Home
/// Assistant when `[mqtt] home_assistant_discovery` says so.
pub fn mqtt_state_from_config(site: &communalia_config::Site) -> Option<MqttStatePublisher> {
    // No TLS in this build: the plugs' connection refuses to start, and so does this one.
    let m = site.mqtt.as_ref().filter(|m| !m.tls)?;
    let mut mqtt = MqttConfig::new(m.broker.host.clone(), m.broker.port, m.client_id.clone());
    // The same account as the plugs' connection (a broker with accounts refuses anonymous).
    if let (Some(user), Some(file)) = (&m.username, &m.password_file) {
        match std::fs::read_to_string(file) {
            Ok(password) => mqtt = mqtt.credentials(user.clone(), password.trim().to_owned()),
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "MQTT password not read; state not published");
                return None;
            }
        }
    }
    Some(MqttStatePublisher::start(MqttStateSettings {
        mqtt,
        site: DiscoverySite {
            site_id: site.id.clone(),
            site_name: site.name.clone(),
            has_battery: site.battery.is_some(),
        },
        discovery_prefix: m.home_assistant_discovery.clone(),
    }))
}

/// The site's ledger, opened once (its routes and the meter credits share it), when it has been
/// initialised.
pub fn open_ledger(
    site: &communalia_config::Site,
    base_dir: &std::path::Path,
) -> Option<Arc<std::sync::Mutex<communalia_ledger::Ledger<communalia_ledger::SqliteStore>>>> {
    let db = base_dir.join(&site.ledger.database);
    if !db.exists() {
        tracing::warn!(
            file = %db.display(),
            "no ledger yet (run `communalia ledger init`); no /api/ledger/, no meter credits"
        );
        return None;
    }
    match ledger::open(&db) {
        Ok(l) => Some(Arc::new(std::sync::Mutex::new(l))),
        Err(e) => {
            tracing::error!(file = %db.display(), error = %format!("{e:#}"), "ledger not opened");
            None
        }
    }
}

/// The ledger's `/api/ledger/` routes. "Today" is the site's local day by `clock`, the day
/// the controller dates its meter credits by (a UTC date would hide, for the hours the two
/// differ, the credits of the local day that has begun).
pub fn ledger_routes(
    ledger: Option<
        Arc<std::sync::Mutex<communalia_ledger::Ledger<communalia_ledger::SqliteStore>>>,
    >,
    clock: crate::control::io::Clock,
    utc_offset_minutes: i32,
) -> axum::Router {
    let Some(ledger) = ledger else {
        return axum::Router::new();
    };
    crate::ledger_http::router(crate::ledger_http::LedgerApi {
        ledger,
        today: Arc::new(move || local_day(clock.now(), utc_offset_minutes)),
    })
}

/// The site's local day at `t`, as the ledger counts days.
pub fn local_day(
    t: chrono::DateTime<chrono::Utc>,
    utc_offset_minutes: i32,
) -> communalia_ledger::Day {
    let local = t + chrono::Duration::minutes(i64::from(utc_offset_minutes));
    // Days since 1970-01-01, which is what a `Day` counts.
    communalia_ledger::Day(local.timestamp().div_euclid(86_400) as i32)
}
