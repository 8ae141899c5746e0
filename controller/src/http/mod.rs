//! The HTTP API and the live web page: what the cycle publishes, served read-only to anyone on
//! the listener's network, with writes (the ledger's routes) behind a bearer token.
//!
//! The cycle owns a `watch::Sender<Arc<Published>>` and replaces the value once per cycle; every
//! handler reads the latest value and never holds the borrow across an `.await`. The server binds
//! wherever the caller's listener is; nothing here opens another address.

mod assets;
mod auth;
mod error;
mod events;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::state::{AssemblyView, PlanView, StateView};

pub use auth::constant_time_eq;

/// Everything one cycle shows the world, replaced as a whole each cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub state: StateView,
    pub plan: PlanView,
    pub assembly: AssemblyView,
    /// Prometheus text exposition (format 0.0.4), already rendered by the cycle.
    pub metrics: String,
}

/// What the server needs from the rest of the controller.
pub struct App {
    /// The latest published cycle.
    pub published: watch::Receiver<Arc<Published>>,
    /// Bearer token required for every request that is not GET or HEAD. `None` (or an empty
    /// token) refuses every write with 403.
    pub write_token: Option<String>,
    /// `/healthz` answers 503 when `state.time` is older than this.
    pub stale_after: Duration,
    /// More routes merged in (the ledger's `/api/ledger/...`). They must not repeat the routes
    /// served here (axum refuses overlapping routes when the router is built). Their non-GET
    /// requests go through the token check like any other.
    pub extra: Router,
}

/// How long `serve` waits for open connections after the shutdown signal before returning.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by the handlers.
struct Shared {
    published: watch::Receiver<Arc<Published>>,
    stale_after: Duration,
    /// Flips to true when `serve` is told to stop, so that event streams end and the graceful
    /// shutdown is not held open by them. `None` when the router is served by someone else.
    stop: Option<watch::Receiver<bool>>,
}

impl Shared {
    /// The latest published value; the borrow ends before this returns.
    fn latest(&self) -> Arc<Published> {
        Arc::clone(&self.published.borrow())
    }
}

/// The whole API and page as one router, for a caller that serves it itself. Its event streams
/// end only when the cycle's sender is dropped; `serve` also ends them on shutdown.
pub fn router(app: App) -> Router {
    build(app, None)
}

fn build(app: App, stop: Option<watch::Receiver<bool>>) -> Router {
    let App {
        published,
        write_token,
        stale_after,
        extra,
    } = app;
    let shared = Arc::new(Shared {
        published,
        stale_after,
        stop,
    });
    let token = Arc::new(write_token.filter(|t| !t.is_empty()));
    let routes = Router::new()
        .route("/", get(assets::index))
        .route("/assets/{name}", get(assets::asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/state", get(api_state))
        .route("/api/plan", get(api_plan))
        .route("/api/assembly", get(api_assembly))
        .route("/api/events", get(events::events))
        .with_state(shared)
        .merge(extra)
        .fallback(error::not_found);
    // The routes sit whole inside the outer router's fallback so that the error layer sees the
    // answers exactly as sent, `Allow` header of a 405 included.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(error::explain_errors))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ))
}

/// Serves the router on `listener` until `shutdown` completes, then lets open requests finish
/// (event streams end at once) for at most a few seconds.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let router = build(app, Some(stop_rx.clone()));
    let addr = listener.local_addr()?;
    info!(%addr, "http api listening");
    let signal = async move {
        shutdown.await;
        info!("http api stopping");
        let _ = stop_tx.send(true);
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    let grace_over = async move {
        events::stopped(&mut Some(stop_rx)).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served,
        () = grace_over => {
            warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "http connections still open after the grace period; stopping anyway");
            Ok(())
        }
    }
}

/// A JSON body that must not be cached: it changes every cycle.
fn fresh_json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(e) => error::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer as JSON: {e}"),
        ),
    }
}

async fn api_state(State(s): State<Arc<Shared>>) -> Response {
    fresh_json(&s.latest().state)
}

async fn api_plan(State(s): State<Arc<Shared>>) -> Response {
    fresh_json(&s.latest().plan)
}

async fn api_assembly(State(s): State<Arc<Shared>>) -> Response {
    fresh_json(&s.latest().assembly)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        s.latest().metrics.clone(),
    )
        .into_response()
}

/// `GET /healthz`.
#[derive(Debug, Serialize)]
struct Health {
    /// `ok` or `stale`.
    status: &'static str,
    /// The published state's time.
    time: String,
    age_seconds: Option<f64>,
    stale_after_seconds: f64,
    dry_run: bool,
    /// Errors of a rejected assembly file (the controller runs on the last good one).
    assembly_errors: usize,
    /// Why the answer is 503; absent when healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let p = s.latest();
    let limit = s.stale_after.as_secs_f64();
    let now = chrono::Utc::now();
    let age = chrono::DateTime::parse_from_rfc3339(&p.state.time)
        .map(|t| (now - t.to_utc()).num_milliseconds() as f64 / 1000.0);
    let (age_seconds, reason) = match age {
        Ok(age) if age > limit => (
            Some(age),
            Some(format!(
                "the last state is {age:.0} s old (limit {limit:.0} s): the control cycle has stopped or stalled"
            )),
        ),
        Ok(age) => (Some(age), None),
        Err(e) => (
            None,
            Some(format!(
                "the state's time {:?} is not an RFC 3339 time: {e}",
                p.state.time
            )),
        ),
    };
    let status = if reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = Health {
        status: if reason.is_some() { "stale" } else { "ok" },
        time: p.state.time.clone(),
        age_seconds,
        stale_after_seconds: limit,
        dry_run: p.state.dry_run,
        assembly_errors: p.state.assembly_errors.len(),
        reason,
    };
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}
