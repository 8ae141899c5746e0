//! The controller's plug wiring (control/io.rs) against stock-behaving simulators through a
//! real mosquitto: a site file's plugs are attached, their device settings written as the site
//! file says and no more, and a switch command is carried out with one command per change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use communalia::control::core::{Action, Command};
use communalia::control::io::Loads;
use communalia_drivers::shelly::sim::ShellyPlug;
use communalia_drivers::tasmota::TasmotaTopics;
use communalia_drivers::tasmota::sim::TasmotaPlug;
use communalia_drivers::testkit::{Mosquitto, unique, wait_until};

const WAIT: Duration = Duration::from_secs(15);

fn site(port: u16, stock: &str, tuned: &str, shelly: &str) -> String {
    format!(
        r#"[site]
id = "t"
name = "Test site"
assembly = "assembly.toml"

[mqtt]
broker = "127.0.0.1:{port}"

[[loads]]
id = "fridge"
name = "Fridge"
service = "clinic"
nominal_watts = 100
control = {{ kind = "tasmota", topic = "{stock}" }}

[[loads]]
id = "pump"
name = "Pump"
service = "water"
nominal_watts = 400
control = {{ kind = "tasmota", topic = "{tuned}", tele_period_secs = 10 }}

[[loads]]
id = "lamp"
name = "Lamp"
member = "ana"
nominal_watts = 20
control = {{ kind = "shelly", device_id = "{shelly}" }}
"#
    )
}

const ASSEMBLY: &str = r#"[decision]
date = 2026-01-01
reference = "minutes 1"
quorum = 3
present = 4
votes_for = 3
votes_against = 1

[[tiers]]
name = "health"
loads = ["fridge"]

[[tiers]]
name = "homes"
loads = ["pump", "lamp"]
"#;

#[tokio::test]
async fn stock_plugs_keep_their_tele_period_unless_the_site_sets_it_and_switch_once() {
    let broker = Mosquitto::start().unwrap();
    let (stock, tuned, shelly) = (unique("fridge"), unique("pump"), unique("shellyplusplugs"));
    let text = site(broker.port(), &stock, &tuned, &shelly);
    let config = communalia_config::load("site.toml", text.into_bytes(), |_: &str| {
        Ok(("assembly.toml".to_owned(), ASSEMBLY.as_bytes().to_vec()))
    })
    .unwrap();
    let sims = [
        TasmotaPlug::new(TasmotaTopics::new(&stock), 100.0).start(&broker.config("dev")),
        TasmotaPlug::new(TasmotaTopics::new(&tuned), 400.0).start(&broker.config("dev")),
    ];
    let lamp = ShellyPlug::new(&shelly, 20.0).start(&broker.config("dev"));
    for s in &sims {
        assert!(s.wait_connected(WAIT).await);
    }
    assert!(lamp.wait_connected(WAIT).await);
    let mqtt = config.site.mqtt.as_ref().unwrap();
    let loads = Loads::attach(mqtt, &config.site.loads, Duration::from_secs(15))
        .await
        .unwrap();
    loads.bus.wait_connected(WAIT).await.unwrap();
    loads.set_fail_safes(|id| id == "fridge").await;
    assert_eq!(sims[0].with(|d| d.power_on_state), 1);
    assert_eq!(sims[1].with(|d| d.power_on_state), 0);
    assert_eq!(lamp.with(|d| d.initial_state(0).to_owned()), "off");
    assert_eq!(
        sims[0].with(|d| d.tele_period),
        Duration::from_secs(300),
        "the device's own TelePeriod is kept"
    );
    assert_eq!(sims[1].with(|d| d.tele_period), Duration::from_secs(10));

    let on = |load: &str| Command {
        load: load.into(),
        action: Action::Switch(true),
    };
    let failed = loads.actuate(&[on("fridge"), on("pump"), on("lamp")]).await;
    assert!(failed.is_empty(), "{failed:?}");
    for s in &sims {
        assert_eq!(s.with(|d| (d.on(), d.switch_commands)), (true, 1));
    }
    assert_eq!(lamp.with(|d| (d.output(0), d.switch_requests)), (true, 1));
    wait_until("every plug's power", WAIT, async || {
        let snap = loads.snapshot(&Default::default());
        ["fridge", "pump", "lamp"]
            .iter()
            .all(|id| snap[*id].power.is_some_and(|w| w > 0.0))
    })
    .await;
}
