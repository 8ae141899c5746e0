//! Runner for simulated MQTT devices: each connects to the broker with its own client and last
//! will, and can be told to go offline (connection dropped, so the broker publishes the will),
//! stop its telemetry while staying online, ignore commands, or send garbled payloads.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::mqtt::MqttConfig;

/// A message to publish: topic, payload, retained.
pub type Outgoing = (String, Vec<u8>, bool);

/// The protocol side of a simulated MQTT device.
pub trait MqttBehaviour: Send + 'static {
    /// The last will (topic, payload), published retained by the broker when the device drops.
    fn will(&self) -> (String, Vec<u8>);
    /// Topics to subscribe to.
    fn subscriptions(&self) -> Vec<String>;
    /// Messages sent on every (re)connection, e.g. the retained `Online`.
    fn on_connect(&mut self) -> Vec<Outgoing>;
    /// Handles an incoming message, returning the replies.
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Vec<Outgoing>;
    /// Periodic telemetry.
    fn telemetry(&mut self) -> Vec<Outgoing>;
    /// Telemetry period.
    fn period(&self) -> Duration;
}

/// Misbehaviour switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimFaults {
    /// Connection dropped without DISCONNECT (the broker publishes the last will).
    pub offline: bool,
    /// Still connected (no last will) but the periodic telemetry stops: a hung sensor.
    pub telemetry_stopped: bool,
    /// Commands are received and ignored.
    pub mute: bool,
    /// Every published payload is replaced by garbage.
    pub garbled: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running simulated MQTT device.
pub struct MqttSim<B: MqttBehaviour> {
    behaviour: Arc<Mutex<B>>,
    faults: watch::Sender<SimFaults>,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl<B: MqttBehaviour> std::fmt::Debug for MqttSim<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSim")
            .field("faults", &*self.faults.borrow())
            .finish()
    }
}

/// The garbage a garbled device sends.
pub const GARBAGE: &[u8] = b"{\"POWER\":\"O\xff\xfe";

impl<B: MqttBehaviour> MqttSim<B> {
    /// Connects the device to the broker in `config` (its client id is the device's).
    pub fn start(config: MqttConfig, behaviour: B) -> Self {
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (faults, faults_rx) = watch::channel(SimFaults::default());
        let (conn_tx, connected) = watch::channel(false);
        let task = tokio::spawn(run(config, Arc::clone(&behaviour), faults_rx, conn_tx));
        Self {
            behaviour,
            faults,
            connected,
            task,
        }
    }

    /// Runs `f` on the behaviour (to read or change the device's state).
    pub fn with<R>(&self, f: impl FnOnce(&mut B) -> R) -> R {
        f(&mut lock(&self.behaviour))
    }

    /// Changes the fault switches.
    pub fn set_faults(&self, f: impl FnOnce(&mut SimFaults)) {
        self.faults.send_modify(f);
    }

    /// Waits until the device is connected (or `timeout`); `false` on timeout.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.connected.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await,
            Ok(Ok(_))
        )
    }
}

impl<B: MqttBehaviour> Drop for MqttSim<B> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<B: MqttBehaviour>(
    config: MqttConfig,
    behaviour: Arc<Mutex<B>>,
    mut faults: watch::Receiver<SimFaults>,
    connected: watch::Sender<bool>,
) {
    loop {
        if faults.borrow_and_update().offline {
            let _ = connected.send(false);
            if faults.wait_for(|f| !f.offline).await.is_err() {
                return;
            }
        }
        let mut options = config.options();
        let (will_topic, will_payload) = lock(&behaviour).will();
        options.set_last_will(LastWill::new(
            will_topic,
            will_payload,
            QoS::AtLeastOnce,
            true,
        ));
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let period = lock(&behaviour).period();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut up = false;
        let send = |out: Vec<Outgoing>, garbled: bool| {
            for (topic, payload, retain) in out {
                let payload = if garbled { GARBAGE.to_vec() } else { payload };
                if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
                    tracing::debug!(error = %e, "simulated device could not publish");
                }
            }
        };
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let topics = lock(&behaviour).subscriptions();
                        for t in topics {
                            let _ = client.try_subscribe(t, QoS::AtLeastOnce);
                        }
                        let out = lock(&behaviour).on_connect();
                        // The availability message is never garbled: the broker's will is not either.
                        send(out, false);
                        up = true;
                        let _ = connected.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let f = *faults.borrow();
                        if !f.mute {
                            let out = lock(&behaviour).on_message(&p.topic, &p.payload);
                            send(out, f.garbled);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        up = false;
                        let _ = connected.send(false);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = tick.tick() => {
                    let f = *faults.borrow();
                    if up && !f.telemetry_stopped {
                        let out = lock(&behaviour).telemetry();
                        send(out, f.garbled);
                    }
                }
                changed = faults.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if faults.borrow().offline {
                        // Drop the connection without DISCONNECT: the broker sends the will.
                        break;
                    }
                }
            }
        }
        drop(eventloop);
        let _ = connected.send(false);
    }
}
