//! Thin MQTT adapter (rumqttc): connection options, and one shared connection that routes
//! incoming messages by exact topic to the devices that subscribed, resubscribing after every
//! reconnection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{DriverError, Result};

/// How to reach the MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id (also the Shelly RPC `src`).
    pub client_id: String,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// Password, with the username.
    pub password: Option<String>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
}

impl MqttConfig {
    /// A configuration for `host:port` with a client id.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: client_id.into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(10),
        }
    }

    /// Parses `mqtt://host:port`, `tcp://host:port` or `host:port` (port 1883 if omitted).
    /// TLS URLs (`mqtts://`) are refused: this build has no TLS transport.
    pub fn from_url(url: &str, client_id: impl Into<String>) -> Result<Self> {
        if url.starts_with("mqtts://") || url.starts_with("ssl://") {
            return Err(DriverError::Invalid(
                "TLS MQTT is not supported by this build".into(),
            ));
        }
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .unwrap_or(url);
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .map_err(|_| DriverError::Invalid(format!("bad port in {url}")))?,
            ),
            None => (hostport, 1883),
        };
        if host.is_empty() {
            return Err(DriverError::Invalid(format!("no host in {url}")));
        }
        let mut cfg = Self::new(host, port, client_id);
        if let Some(a) = auth {
            let (u, p) = a.split_once(':').unwrap_or((a, ""));
            cfg = cfg.credentials(u, p);
        }
        Ok(cfg)
    }

    /// Sets username and password.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// The same broker with another client id.
    pub fn with_client_id(&self, client_id: impl Into<String>) -> Self {
        let mut c = self.clone();
        c.client_id = client_id.into();
        c
    }

    /// rumqttc options for this configuration.
    pub fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive);
        o.set_clean_session(true);
        o.set_max_packet_size(256 * 1024, 256 * 1024);
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            o.set_credentials(u.clone(), p.clone());
        }
        o
    }
}

/// First pause before polling a failed connection again; it doubles up to [`RECONNECT_MAX`] and
/// starts again from here after each `ConnAck`.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two connection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Drives one rumqttc event loop until the client disconnects: hands every event to
/// `on_event` (`connected` turns true after a `ConnAck` has been handled, so whatever it
/// publishes or subscribes on connection is queued first); after a failure marks the
/// connection down, pauses ([`RECONNECT_MIN`] doubling to [`RECONNECT_MAX`]) and polls again,
/// which makes rumqttc reconnect. The one reconnect loop of every MQTT client (the plugs' bus,
/// the state publisher).
pub async fn drive_event_loop(
    mut eventloop: EventLoop,
    connected: watch::Sender<bool>,
    what: &'static str,
    mut on_event: impl FnMut(&Event) + Send,
) {
    let mut delay = RECONNECT_MIN;
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(event) => {
                let connack = matches!(event, Event::Incoming(Packet::ConnAck(_)));
                if connack {
                    delay = RECONNECT_MIN;
                }
                on_event(&event);
                if connack {
                    let _ = connected.send(true);
                }
            }
            Err(e) => {
                if *connected.borrow() {
                    tracing::warn!(error = %e, "{what}: connection lost");
                } else {
                    tracing::debug!(error = %e, "{what}: connection failed");
                }
                let _ = connected.send(false);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// A handler for the messages of one topic.
pub type Handler = Arc<dyn Fn(&[u8]) + Send + Sync>;

#[derive(Default)]
struct Routes {
    by_topic: HashMap<String, Vec<Handler>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One MQTT connection shared by many devices.
///
/// Cloning is cheap. The event loop runs in its own task, reconnects with backoff on failure,
/// and resubscribes every topic on each connection. Dropping the last clone stops it.
#[derive(Clone)]
pub struct MqttBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    client: AsyncClient,
    routes: Arc<Mutex<Routes>>,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
    client_id: String,
    next_request_id: AtomicU64,
}

impl Drop for BusInner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for MqttBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBus")
            .field("client_id", &self.inner.client_id)
            .finish()
    }
}

impl MqttBus {
    /// Starts the connection (in the background; see [`Self::wait_connected`]).
    pub fn start(config: &MqttConfig) -> Self {
        let (client, eventloop) = AsyncClient::new(config.options(), 1024);
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (tx, rx) = watch::channel(false);
        let task_routes = Arc::clone(&routes);
        let task_client = client.clone();
        let task = tokio::spawn(drive_event_loop(
            eventloop,
            tx,
            "mqtt",
            move |event| match event {
                Event::Incoming(Packet::Publish(p)) => {
                    let handlers = lock(&task_routes).by_topic.get(p.topic.as_str()).cloned();
                    for h in handlers.into_iter().flatten() {
                        h(&p.payload);
                    }
                }
                Event::Incoming(Packet::ConnAck(_)) => {
                    let topics: Vec<String> = lock(&task_routes).by_topic.keys().cloned().collect();
                    for chunk in topics.chunks(64) {
                        let filters = chunk
                            .iter()
                            .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                        if let Err(e) = task_client.try_subscribe_many(filters) {
                            tracing::warn!(error = %e, "mqtt resubscribe failed");
                        }
                    }
                }
                _ => {}
            },
        ));
        Self {
            inner: Arc::new(BusInner {
                client,
                routes,
                connected: rx,
                task,
                client_id: config.client_id.clone(),
                next_request_id: AtomicU64::new(1),
            }),
        }
    }

    /// The client id (the Shelly RPC `src`).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// A request id not given out before on this connection (Shelly RPC `id`): replies, which
    /// all arrive on `<client id>/rpc`, are told apart by it.
    pub fn next_request_id(&self) -> u64 {
        self.inner.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits until connected, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.inner.connected.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(DriverError::Transport("mqtt event loop ended".into())),
            Err(_) => Err(DriverError::Timeout(timeout)),
        }
    }

    /// Routes messages on `topic` (exact, no wildcards) to `handler` and subscribes.
    pub async fn subscribe(&self, topic: &str, handler: Handler) -> Result<()> {
        let first = {
            let mut routes = lock(&self.inner.routes);
            let list = routes.by_topic.entry(topic.to_owned()).or_default();
            list.push(handler);
            list.len() == 1
        };
        if first {
            self.inner
                .client
                .subscribe(topic, QoS::AtLeastOnce)
                .await
                .map_err(|e| DriverError::Transport(e.to_string()))?;
        }
        Ok(())
    }

    /// Publishes (never retained: retained commands replay after reconnects).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.inner
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .map_err(|e| DriverError::Transport(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_credentials() {
        let c = MqttConfig::from_url("mqtt://user:secret@broker.local:1884", "id").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("broker.local", 1884));
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("user"), Some("secret"))
        );
        let c = MqttConfig::from_url("127.0.0.1", "id").unwrap();
        assert_eq!(c.port, 1883);
        assert!(MqttConfig::from_url("mqtts://x:8883", "id").is_err());
        assert!(MqttConfig::from_url("mqtt://:1883", "id").is_err());
    }
}
