//! The embedded demo broker against a real MQTT client (rumqttc) over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use communalia::broker::Broker;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

async fn start() -> (u16, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(Broker::new().serve(listener, async move {
        let _ = stopped.await;
    }));
    (port, stop)
}

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(opts, 64)
}

/// Polls until a publish arrives on `topic`, failing after a bound.
async fn next_publish(ev: &mut EventLoop) -> rumqttc::Publish {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = ev.poll().await.unwrap() {
                return p;
            }
        }
    })
    .await
    .expect("no publish within 5 s")
}

/// Polls until the SUBACK, so that later publishes are sure to be routed.
async fn until_suback(ev: &mut EventLoop) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = ev.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("no suback within 5 s")
}

/// Polls until the broker acknowledges a QoS 1 publish: by then it has routed and stored it.
async fn until_puback(ev: &mut EventLoop) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = ev.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("no puback within 5 s")
}

fn drive(mut ev: EventLoop) {
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
}

#[tokio::test]
async fn messages_reach_subscribers_through_wildcards() {
    let (port, _stop) = start().await;
    let (sub, mut sub_ev) = client("sub", port);
    sub.subscribe("stat/+/POWER", QoS::AtLeastOnce)
        .await
        .unwrap();
    sub.subscribe("tele/#", QoS::AtMostOnce).await.unwrap();
    until_suback(&mut sub_ev).await;
    until_suback(&mut sub_ev).await;
    let (publ, publ_ev) = client("pub", port);
    drive(publ_ev);
    publ.publish("stat/fridge/POWER", QoS::AtLeastOnce, false, "ON")
        .await
        .unwrap();
    let p = next_publish(&mut sub_ev).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("stat/fridge/POWER", &b"ON"[..])
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
    publ.publish("tele/fridge/SENSOR", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    let p = next_publish(&mut sub_ev).await;
    assert_eq!(p.topic, "tele/fridge/SENSOR");
    assert_eq!(
        p.qos,
        QoS::AtMostOnce,
        "delivered at the lower of the two QoS"
    );
}

#[tokio::test]
async fn a_retained_message_is_delivered_to_later_subscribers_and_cleared_by_an_empty_one() {
    let (port, _stop) = start().await;
    let (publ, mut publ_ev) = client("pub", port);
    publ.publish("tele/pump/LWT", QoS::AtLeastOnce, true, "Online")
        .await
        .unwrap();
    until_puback(&mut publ_ev).await;
    let (sub, mut sub_ev) = client("late", port);
    sub.subscribe("tele/+/LWT", QoS::AtLeastOnce).await.unwrap();
    let p = next_publish(&mut sub_ev).await;
    assert!(
        p.retain,
        "sent because of the new subscription, so flagged retained"
    );
    assert_eq!(&p.payload[..], b"Online");
    publ.publish("tele/pump/LWT", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    until_puback(&mut publ_ev).await;
    let cleared = next_publish(&mut sub_ev).await;
    assert!(cleared.payload.is_empty());
    let (sub2, mut sub2_ev) = client("later", port);
    sub2.subscribe("tele/+/LWT", QoS::AtLeastOnce)
        .await
        .unwrap();
    until_suback(&mut sub2_ev).await;
    let nothing = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = sub2_ev.poll().await.unwrap() {
                return p;
            }
        }
    })
    .await;
    assert!(nothing.is_err(), "the retained message was cleared");
}

#[tokio::test]
async fn the_last_will_is_published_when_a_client_vanishes_but_not_when_it_says_goodbye() {
    let (port, _stop) = start().await;
    let (sub, mut sub_ev) = client("watcher", port);
    sub.subscribe("tele/+/LWT", QoS::AtLeastOnce).await.unwrap();
    until_suback(&mut sub_ev).await;

    // A plug whose connection drops: its will goes out.
    let mut opts = MqttOptions::new("plug", "127.0.0.1", port);
    opts.set_last_will(LastWill::new(
        "tele/plug/LWT",
        "Offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (_plug, mut plug_ev) = AsyncClient::new(opts, 8);
    let task = tokio::spawn(async move {
        loop {
            if let Ok(Event::Incoming(Packet::ConnAck(_))) = plug_ev.poll().await {
                return plug_ev; // connected; dropping the event loop drops the socket
            }
        }
    });
    let plug_ev = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    drop(plug_ev);
    let p = next_publish(&mut sub_ev).await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("tele/plug/LWT", &b"Offline"[..])
    );

    // A client that disconnects cleanly: no will.
    let mut opts = MqttOptions::new("polite", "127.0.0.1", port);
    opts.set_last_will(LastWill::new(
        "tele/polite/LWT",
        "Offline",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, mut polite_ev) = AsyncClient::new(opts, 8);
    polite.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while polite_ev.poll().await.is_ok() {}
    })
    .await;
    let none = tokio::time::timeout(Duration::from_millis(300), next_publish(&mut sub_ev)).await;
    assert!(none.is_err(), "a clean disconnect publishes no will");
}

#[tokio::test]
async fn garbage_on_the_socket_closes_that_connection_only() {
    use tokio::io::AsyncWriteExt;
    let (port, _stop) = start().await;
    let (sub, mut sub_ev) = client("steady", port);
    sub.subscribe("a/b", QoS::AtMostOnce).await.unwrap();
    until_suback(&mut sub_ev).await;
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02])
        .await
        .unwrap();
    let (publ, publ_ev) = client("pub", port);
    drive(publ_ev);
    publ.publish("a/b", QoS::AtMostOnce, false, "still here")
        .await
        .unwrap();
    assert_eq!(&next_publish(&mut sub_ev).await.payload[..], b"still here");
}
