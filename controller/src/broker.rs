//! A small embedded MQTT 3.1.1 broker for `communalia demo`: one process, no install.
//!
//! It speaks the real protocol on a real socket (packets from rumqttc's codec), so the simulated
//! plugs, the controller and any `mosquitto_sub` a newcomer points at it behave as with a real
//! broker: QoS 0 and 1, retained messages, `+`/`#` wildcards, last wills on unclean disconnects,
//! keep-alive, session takeover by client id. It keeps no persistent sessions and redelivers
//! nothing: it is for the demo on loopback, not a production broker (sites run mosquitto).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{QoS, matches, valid_filter, valid_topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Largest packet accepted or sent.
const MAX_PACKET: usize = 256 * 1024;
/// Messages queued for one slow client before new ones are dropped for it.
const QUEUE: usize = 4096;

#[derive(Default)]
struct State {
    next_conn: u64,
    /// client id -> (connection number, sender, filters with granted QoS)
    sessions: HashMap<String, Session>,
    retained: HashMap<String, Publish>,
    dropped: u64,
}

struct Session {
    conn: u64,
    tx: mpsc::Sender<Packet>,
    filters: Vec<(String, QoS)>,
}

/// A running broker's shared state; cheap to clone.
#[derive(Clone, Default)]
pub struct Broker {
    state: Arc<Mutex<State>>,
}

impl Broker {
    pub fn new() -> Self {
        Broker::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere never leaves the routing table half-written (every update is one
        // statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Messages dropped because a client did not keep up.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Serves clients on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let broker = self.clone();
                        tokio::spawn(async move { broker.connection(stream).await });
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "mqtt broker accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Routes a publish to every matching subscription and keeps it if retained.
    fn route(&self, publish: &Publish) {
        let mut st = self.lock();
        if publish.retain {
            if publish.payload.is_empty() {
                st.retained.remove(&publish.topic);
            } else {
                let mut kept = publish.clone();
                kept.dup = false;
                kept.pkid = 0;
                st.retained.insert(publish.topic.clone(), kept);
            }
        }
        let mut dropped = 0;
        for session in st.sessions.values() {
            let granted = session
                .filters
                .iter()
                .filter(|(f, _)| matches(&publish.topic, f))
                .map(|(_, q)| level(*q))
                .max();
            if let Some(q) = granted {
                let mut out = publish.clone();
                // Retain is kept only for messages sent because of a new subscription.
                out.retain = false;
                out.dup = false;
                out.qos = qos(q.min(level(publish.qos)).min(1));
                if session.tx.try_send(Packet::Publish(out)).is_err() {
                    dropped += 1;
                }
            }
        }
        st.dropped += dropped;
    }

    async fn connection(self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut buf = BytesMut::with_capacity(4096);
        // The first packet must be CONNECT, within a few seconds.
        let connect =
            match tokio::time::timeout(Duration::from_secs(10), read_packet(&mut stream, &mut buf))
                .await
            {
                Ok(Ok(Packet::Connect(c))) => c,
                _ => return,
            };
        let (tx, mut rx) = mpsc::channel::<Packet>(QUEUE);
        let client_id = if connect.client_id.is_empty() {
            format!("anonymous-{}", self.lock().next_conn)
        } else {
            connect.client_id.clone()
        };
        let conn = {
            let mut st = self.lock();
            st.next_conn += 1;
            let conn = st.next_conn;
            // A new connection with the same id takes the session over; the old one is closed.
            st.sessions.insert(
                client_id.clone(),
                Session {
                    conn,
                    tx: tx.clone(),
                    filters: Vec::new(),
                },
            );
            conn
        };
        if write_packet(
            &mut stream,
            &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
        )
        .await
        .is_err()
        {
            self.close(&client_id, conn, None);
            return;
        }
        let keep_alive = match connect.keep_alive {
            0 => Duration::from_secs(24 * 3600),
            s => Duration::from_millis(u64::from(s) * 1500),
        };
        let mut clean = false;
        let mut next_pkid: u16 = 0;
        loop {
            tokio::select! {
                incoming = tokio::time::timeout(keep_alive, read_packet(&mut stream, &mut buf)) => {
                    let packet = match incoming {
                        Ok(Ok(p)) => p,
                        _ => break, // closed, garbage or keep-alive expired: unclean
                    };
                    let reply = match packet {
                        Packet::Publish(p) => {
                            if !valid_topic(&p.topic) {
                                break;
                            }
                            let reply = match p.qos {
                                QoS::AtMostOnce => None,
                                QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                                QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(p.pkid))),
                            };
                            self.route(&p);
                            reply
                        }
                        Packet::PubRel(r) => Some(Packet::PubComp(PubComp::new(r.pkid))),
                        Packet::Subscribe(s) => {
                            let mut codes = Vec::with_capacity(s.filters.len());
                            let mut retained = Vec::new();
                            {
                                let mut st = self.lock();
                                for f in &s.filters {
                                    if !valid_filter(&f.path) {
                                        codes.push(SubscribeReasonCode::Failure);
                                        continue;
                                    }
                                    let q = qos(level(f.qos).min(1));
                                    codes.push(SubscribeReasonCode::Success(q));
                                    if let Some(session) = st.sessions.get_mut(&client_id).filter(|s| s.conn == conn) {
                                        session.filters.retain(|(path, _)| path != &f.path);
                                        session.filters.push((f.path.clone(), q));
                                    }
                                    retained.extend(
                                        st.retained.values().filter(|r| matches(&r.topic, &f.path)).map(|r| {
                                            let mut out = r.clone();
                                            out.qos = qos(level(q).min(level(r.qos)));
                                            out
                                        }),
                                    );
                                }
                            }
                            if write_packet(&mut stream, &Packet::SubAck(SubAck::new(s.pkid, codes))).await.is_err() {
                                break;
                            }
                            for r in retained {
                                let _ = tx.try_send(Packet::Publish(r));
                            }
                            None
                        }
                        Packet::Unsubscribe(u) => {
                            if let Some(session) = self.lock().sessions.get_mut(&client_id).filter(|s| s.conn == conn) {
                                session.filters.retain(|(path, _)| !u.topics.contains(path));
                            }
                            Some(Packet::UnsubAck(UnsubAck::new(u.pkid)))
                        }
                        Packet::PingReq => Some(Packet::PingResp),
                        Packet::Disconnect => {
                            clean = true;
                            break;
                        }
                        // Acknowledgements of what we sent: nothing is redelivered, nothing to do.
                        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => None,
                        // A second CONNECT, or a server-to-client packet: a protocol violation.
                        _ => break,
                    };
                    if let Some(reply) = reply
                        && write_packet(&mut stream, &reply).await.is_err()
                    {
                        break;
                    }
                }
                outgoing = rx.recv() => {
                    let Some(mut packet) = outgoing else { break };
                    if let Packet::Publish(p) = &mut packet
                        && p.qos != QoS::AtMostOnce
                    {
                        next_pkid = next_pkid % u16::MAX + 1;
                        p.pkid = next_pkid;
                    }
                    if write_packet(&mut stream, &packet).await.is_err() {
                        break;
                    }
                }
            }
            // Taken over by a newer connection with the same client id.
            if self
                .lock()
                .sessions
                .get(&client_id)
                .is_none_or(|s| s.conn != conn)
            {
                return;
            }
        }
        let will = if clean { None } else { connect.last_will };
        self.close(&client_id, conn, will);
    }

    fn close(&self, client_id: &str, conn: u64, will: Option<rumqttc::mqttbytes::v4::LastWill>) {
        {
            let mut st = self.lock();
            if st.sessions.get(client_id).is_some_and(|s| s.conn == conn) {
                st.sessions.remove(client_id);
            }
        }
        if let Some(w) = will {
            let mut p = Publish::from_bytes(w.topic, w.qos, w.message);
            p.retain = w.retain;
            self.route(&p);
        }
    }
}

fn level(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

async fn read_packet(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Packet> {
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Ok(p) => return Ok(p),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{e:?}"),
                ));
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn write_packet(stream: &mut TcpStream, packet: &Packet) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(packet.size() + 8);
    packet
        .write(&mut out, MAX_PACKET)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}")))?;
    stream.write_all(&out).await
}
