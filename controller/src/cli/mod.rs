//! Subcommands of the `communalia` binary, one module each.

pub mod bench;
pub mod check;
pub mod demo;
pub mod ledger;
pub mod plan;
pub mod probe;
pub mod run;
pub mod simulate;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::http::Published;

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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

/// Serves the page and API on the site's HTTP address; returns the address bound.
pub async fn serve_http(
    _site: &communalia_config::Site,
    _published: watch::Receiver<Arc<Published>>,
) -> anyhow::Result<Option<SocketAddr>> {
    Ok(None)
}
