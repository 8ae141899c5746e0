//! `GET /api/events`: server-sent events, one `state` event with the state JSON on connect and
//! each time the cycle publishes, plus keep-alive comments so proxies and phones keep the stream.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::{Published, Shared};

/// How often a comment is sent on a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting a dropped stream.
const RETRY: Duration = Duration::from_secs(3);

/// Completes once the stop flag is true; never completes when there is no flag or its sender is
/// gone without having set it.
pub(super) async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = stop
        && rx.wait_for(|stop| *stop).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

struct Stream {
    published: watch::Receiver<Arc<Published>>,
    stop: Option<watch::Receiver<bool>>,
    first: bool,
}

fn state_event(p: &Published, first: bool) -> Result<Event, axum::Error> {
    let event = Event::default().event("state");
    let event = if first { event.retry(RETRY) } else { event };
    event.json_data(&p.state)
}

pub(super) async fn events(State(s): State<Arc<Shared>>) -> Response {
    let start = Stream {
        published: s.published.clone(),
        stop: s.stop.clone(),
        first: true,
    };
    let stream = futures_util::stream::unfold(start, |mut st| async move {
        if st.stop.as_ref().is_some_and(|rx| *rx.borrow()) {
            return None;
        }
        if !st.first {
            let changed = tokio::select! {
                changed = st.published.changed() => changed.is_ok(),
                () = stopped(&mut st.stop) => false,
            };
            if !changed {
                return None; // The cycle is gone or the server is stopping.
            }
        }
        let latest = Arc::clone(&st.published.borrow_and_update());
        let event = state_event(&latest, st.first);
        st.first = false;
        Some((event, st))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}
