//! A clear morning after a night on the battery, against the real controller, a real mosquitto
//! and simulated devices in accelerated time. Regression test for the health reserve that counted
//! the coming night in full while the sun was up: with the battery near its minimum, the plan
//! took every watt of PV into the battery and the cold room (tier 2) stayed cut at 08:36 with
//! 3.5 kW of sun.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use communalia::state::StateView;
use communalia_hil_tests::{Harness, Setup, local, local_hour, state_time};

fn on(s: &StateView, id: &str) -> bool {
    s.loads.iter().any(|l| l.id == id && l.on)
}

fn soc(s: &StateView) -> Option<f64> {
    s.battery.as_ref().and_then(|b| b.soc_percent)
}

fn trace(states: &[Arc<StateView>]) {
    for s in states {
        let on: Vec<&str> = s
            .loads
            .iter()
            .filter(|l| l.on)
            .map(|l| l.id.as_str())
            .collect();
        eprintln!(
            "{:5.2} pv={:>6.0} use={:>6.0} soc={:>5.1} avail={:>6.0} {:?} on={}",
            local_hour(s),
            s.pv_watts.unwrap_or(-1.0),
            s.consumption_watts.unwrap_or(-1.0),
            soc(s).unwrap_or(-1.0),
            s.available_watts,
            s.grid_state,
            on.join(",")
        );
        if let Some(cold) = s.loads.iter().find(|l| l.id == "cold_room" && !l.on) {
            eprintln!("      cold room: {}", cold.reason);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunny_morning_after_a_night_on_battery_serves_the_cold_room_and_refills_for_the_night() {
    // 2026-03-02 is a clear day in the village's weather; the night left the battery at 12 %
    // (its minimum is 10 %). At 900x a cycle is 7.5 simulated minutes.
    let h = Harness::start(Setup::new(local("2026-03-02", "07:30"), 900.0).soc(12.0))
        .await
        .unwrap();
    h.wait_until(local("2026-03-02", "18:30")).await;
    let states = h.states();
    trace(&states);
    let health = communalia_hil_tests::health_loads(&h.config);
    for s in &states[1..] {
        for id in &health {
            assert!(on(s, id), "{}: health load {id} off", s.time);
        }
    }
    // The sun is well up by 08:30 (the site's clear-sky PV is over 2 kW). Once the battery
    // holds the assembly's minimum reserve again the cold room runs through the morning, on
    // the sun, while the battery fills beside it. (Before the fix it waited for the whole
    // night's reserve, until after 10:00.) At 7.5 simulated minutes a cycle, the battery
    // overshoots the floor now and then and a cycle or two is cut.
    let morning: Vec<_> = states
        .iter()
        .filter(|s| (8.5..12.0).contains(&local_hour(s)))
        .collect();
    assert!(morning.len() >= 10, "only {} morning states", morning.len());
    let first = morning
        .iter()
        .find(|s| on(s, "cold_room"))
        .map(|s| local_hour(s));
    assert!(
        first.is_some_and(|h| h < 9.25),
        "the cold room first ran at {first:?} (local hour)"
    );
    let served = morning.iter().filter(|s| on(s, "cold_room")).count();
    assert!(
        served * 4 >= morning.len() * 3,
        "the cold room ran in {served} of {} states between 08:30 and 12:00",
        morning.len()
    );
    // Other non-health loads get their turn in the morning too (the school freezer shares the
    // cold storage tier).
    assert!(
        morning.iter().any(|s| on(s, "school_freezer")),
        "the school freezer never ran in the morning"
    );
    // At sunset the battery holds at least the whole night's health reserve (stored energy:
    // the reserve is what the clinic gets out of it).
    let model = communalia::control::model::SiteModel::new(h.config.clone());
    let battery = h.config.site.battery.clone().unwrap();
    let evening = states
        .iter()
        .rev()
        .find(|s| local_hour(s) >= 18.0 && soc(s).is_some())
        .expect("a state with the battery after 18:00");
    let t = state_time(evening);
    let stored = model.health_reserve_wh(t) / battery.discharge_efficiency;
    let floor = battery.min_soc.0 + 100.0 * stored / battery.capacity.0;
    let last = soc(evening).unwrap();
    assert!(
        last >= floor,
        "{}: battery at {last:.1} %, under the night's health reserve ({floor:.1} %)",
        evening.time
    );
    h.finish().await;
}
