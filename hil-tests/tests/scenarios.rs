//! Scripted days of the simulated village against the real controller, a real mosquitto and
//! simulated devices over real sockets, in accelerated time. Every scenario also checks the
//! shared invariants on every published state (see `communalia_hil_tests::check_state`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use communalia::records::influx::InfluxSettings;
use communalia::records::schema;
use communalia::state::{GridState, StateView};
use communalia_hil_tests::{ChildRecords, Cut, Harness, Setup, local, local_hour, state_time};
use communalia_ledger::{Day, Ledger, SqliteStore};

/// A real victoria-metrics (the records tests' helper).
#[path = "../../controller/tests/records_support/mod.rs"]
mod records_support;
use records_support::Victoria;

/// One line per state, for the test log, with the reason of each load of `why` that is off.
fn trace(states: &[Arc<StateView>], why: &[&str]) {
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
        for l in s
            .loads
            .iter()
            .filter(|l| !l.on && why.contains(&l.id.as_str()))
        {
            eprintln!("      {}: {}", l.id, l.reason);
        }
    }
}

/// The battery's state of charge, if the battery was heard within its staleness limit (on a
/// busy machine a read now and then is late).
fn soc(s: &StateView) -> Option<f64> {
    s.battery.as_ref().and_then(|b| b.soc_percent)
}

fn on(s: &StateView, id: &str) -> bool {
    s.loads.iter().any(|l| l.id == id && l.on)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunny_day_runs_deferrable_loads_in_surplus_and_fills_the_battery() {
    // 2026-03-02 is a clear day in the village's weather.
    let h = Harness::start(Setup::new(local("2026-03-02", "07:00"), 1800.0).soc(50.0))
        .await
        .unwrap();
    h.wait_until(local("2026-03-02", "16:00")).await;
    let p = h.state();
    let states = h.states();
    trace(&states, &[]);
    eprintln!("plan diagnostics: {:?}", p.plan.diagnostics);
    // The water pump (6 kWh before 20:00) runs in the sunny hours: never on the battery alone
    // in the early morning, and mostly around midday.
    let pump: Vec<_> = states.iter().filter(|s| on(s, "water_pump")).collect();
    assert!(
        pump.len() >= 5,
        "the pump ran in {} cycles only",
        pump.len()
    );
    for s in &pump {
        let pv = s.pv_watts.unwrap_or(0.0);
        assert!(pv >= 1500.0, "{}: pump on with {pv} W of PV", s.time);
    }
    let midday = pump
        .iter()
        .filter(|s| (10.0..16.0).contains(&local_hour(s)))
        .count();
    assert!(
        midday * 4 >= pump.len() * 3,
        "only {midday} of the pump's {} cycles between 10:00 and 16:00",
        pump.len()
    );
    // The battery charges through the day. (Not full: the homes draw it down to the daylight
    // floor in the morning, and a clear day refills some 60 points of it by mid-afternoon,
    // less what the members' own appliances (washing machine, e-bike, grain mill: some 3 kWh a
    // day, 15 points) take of the same sun: what they drew between the morning low and the
    // afternoon's high counts as charge the sun gave.)
    let (low_at, low) = states
        .iter()
        .filter(|s| local_hour(s) < 11.0)
        .filter_map(|s| Some((communalia_hil_tests::state_time(s), soc(s)?)))
        .fold((None, f64::INFINITY), |(at, low), (t, soc)| {
            if soc < low { (Some(t), soc) } else { (at, low) }
        });
    let (high_at, afternoon) = states
        .iter()
        .filter(|s| (14.0..16.0).contains(&local_hour(s)))
        .filter_map(|s| Some((communalia_hil_tests::state_time(s), soc(s)?)))
        .fold((None, 0.0), |(at, high), (t, soc)| {
            if soc > high {
                (Some(t), soc)
            } else {
                (at, high)
            }
        });
    let (low_at, high_at) = (
        low_at.expect("a state before 11:00 with a state of charge"),
        high_at.expect("a state between 14:00 and 16:00 with a state of charge"),
    );
    let members: Vec<String> = h
        .config
        .site
        .loads
        .iter()
        .filter(|l| {
            l.daily_need.is_some() && matches!(l.owner, communalia_config::Owner::Member(_))
        })
        .map(|l| l.id.clone())
        .collect();
    assert!(!members.is_empty(), "the village has members' appliances");
    let battery = h.config.site.battery.clone().unwrap();
    let mut members_wh = 0.0;
    for w in states.windows(2) {
        let (t0, t1) = (
            communalia_hil_tests::state_time(&w[0]),
            communalia_hil_tests::state_time(&w[1]),
        );
        if t0 < low_at || t1 > high_at {
            continue;
        }
        let hours = (t1 - t0).num_milliseconds() as f64 / 3_600_000.0;
        let watts: f64 = w[0]
            .loads
            .iter()
            .filter(|l| l.on && members.contains(&l.id))
            .map(|l| l.measured_watts.unwrap_or(l.allocated_watts))
            .sum();
        members_wh += watts * hours;
    }
    let members_points = 100.0 * members_wh * battery.charge_efficiency / battery.capacity.0;
    eprintln!("members' appliances drew {members_wh:.0} Wh ({members_points:.1} points)");
    assert!(
        afternoon >= 75.0 && afternoon + members_points >= low + 40.0,
        "battery at {afternoon:.1} % in the afternoon (morning low {low:.1} %, the members' \
         appliances took {members_points:.1} points of sun)"
    );
    h.finish().await;
}

fn health(h: &Harness) -> Vec<String> {
    communalia_hil_tests::health_loads(&h.config)
}

/// Loads of the tiers below the health tier that are on.
fn lower_on(s: &StateView, health: &[String]) -> Vec<String> {
    s.loads
        .iter()
        .filter(|l| l.on && !health.contains(&l.id))
        .map(|l| l.id.clone())
        .collect()
}

fn device_online(s: &StateView, id: &str) -> bool {
    s.devices.iter().any(|d| d.id == id && d.online)
}

/// A clear morning after a night on the battery. Regression scenario for the health reserve that
/// counted the coming night in full while the sun was up: with the battery near its minimum, the
/// plan took every watt of PV into the battery and the cold room (tier 2) stayed cut at 08:36 with
/// 3.5 kW of sun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunny_morning_after_a_night_on_battery_serves_the_cold_room_and_refills_for_the_night() {
    // 2026-03-02 is a clear day in the village's weather; the night left the battery at 12 %
    // (its minimum is 10 %). At 900x a cycle is 7.5 simulated minutes.
    let h = Harness::start(Setup::new(local("2026-03-02", "07:30"), 900.0).soc(12.0))
        .await
        .unwrap();
    h.wait_until(local("2026-03-02", "18:30")).await;
    let states = h.states();
    trace(&states, &["cold_room"]);
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
    // The state of charge is read up to a cycle (7.5 site minutes here) after the decision it
    // follows: that long of the health tier and the unswitchable loads is the tolerance.
    let cycle_h = communalia_hil_tests::INTERVAL.as_secs_f64() * 900.0 / 3600.0;
    let drawn = (model.health_watts() + model.unswitchable_watts()) * cycle_h;
    let stored = (model.health_reserve_wh(t) - drawn) / battery.discharge_efficiency;
    let floor = battery.min_soc.0 + 100.0 * stored / battery.capacity.0;
    let last = soc(evening).unwrap();
    assert!(
        last >= floor,
        "{}: battery at {last:.1} %, under the night's health reserve ({floor:.1} %)",
        evening.time
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "not met yet (issue 15 item 1): in the loop at 900x the lower tiers run the battery to its floor and the meter reads a cycle behind the plugs, so tier 2 is cut in 1 to 5 of 30 sunny states, sometimes the first"]
async fn sunny_morning_at_thirty_percent_keeps_tiers_one_and_two_on_from_sunrise() {
    // 2026-03-02 is a clear day; the night left the battery at 30 %. From the first state in
    // which the sun alone covers the clinic, the cold storage and the mast, both tiers run
    // through the morning: the plan's charge takes only the sun beyond them. At 7.5 simulated
    // minutes a cycle the meter reads loads the plugs switched on a cycle before, the
    // uncontrolled consumption looks kilowatts higher for that cycle and the lower tiers run
    // the battery past its floor now and then: 3 to 5 of 30 such cycles cut tier 2 (measured
    // 2026-12-03; the same tolerance as the 12 % scenario above).
    let h = Harness::start(Setup::new(local("2026-03-02", "06:30"), 900.0).soc(30.0))
        .await
        .unwrap();
    h.wait_until(local("2026-03-02", "12:00")).await;
    let states = h.states();
    trace(&states, &["cold_room", "school_freezer"]);
    let model = communalia::control::model::SiteModel::new(h.config.clone());
    let needs = model.sun_first_watts() + model.unswitchable_watts();
    for s in &states[1..] {
        for id in communalia_hil_tests::health_loads(&h.config) {
            assert!(on(s, &id), "{}: health load {id} off", s.time);
        }
    }
    let covered: Vec<_> = states[1..]
        .iter()
        .filter(|s| s.pv_watts.is_some_and(|pv| pv >= needs + 200.0))
        .collect();
    assert!(
        covered.len() >= 10,
        "the sun covered tiers 1-2 in {} states",
        covered.len()
    );
    let first = covered.first().expect("a state the sun covers");
    assert!(
        local_hour(first) < 8.5,
        "the sun first covered tiers 1-2 at {}",
        first.time
    );
    let tier2 = |s: &StateView| on(s, "cold_room") && on(s, "school_freezer");
    assert!(
        tier2(first),
        "{}: tier 2 not on when the sun first covered it",
        first.time
    );
    let served = covered.iter().filter(|s| tier2(s)).count();
    assert!(
        served * 4 >= covered.len() * 3,
        "tier 2 on in {served} of {} states the sun covered it",
        covered.len()
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudy_evening_keeps_strict_precedence_and_rotates_homes() {
    // 2026-03-04 is a grey day. The battery inverter gives at most 3 kW: after sunset the homes
    // and the school get what the health, cold-storage and water tiers leave, not enough for all.
    let h = Harness::start(
        Setup::new(local("2026-03-04", "17:30"), 1200.0)
            .soc(95.0)
            .max_discharge_watts(3000.0),
    )
    .await
    .unwrap();
    h.wait_until(local("2026-03-04", "21:30")).await;
    let states = h.states();
    trace(&states, &[]);
    let tier: Vec<String> = h
        .config
        .assembly
        .tiers
        .iter()
        .find(|t| t.name == "homes_and_school")
        .unwrap()
        .loads
        .iter()
        // The members' flexible appliances of the tier ran in the day's sun (their need is met,
        // their deadline past): they ask nothing in the evening, and take no turn.
        .filter(|id| h.config.site.load(id).is_some_and(|l| !l.flexible))
        .cloned()
        .collect();
    let short: Vec<_> = states
        .iter()
        .filter(|s| {
            s.loads.iter().any(|l| {
                tier.contains(&l.id) && communalia_hil_tests::cut(l) == Cut::ForLackOfPower
            })
        })
        .collect();
    assert!(
        short.len() >= 5,
        "only {} cycles short of power",
        short.len()
    );
    for s in &short {
        assert_eq!(s.grid_state, GridState::Scarcity, "{}", s.time);
        // Strict precedence (also checked on every state): what the tiers below hold could
        // not serve any home that is cut. (A remainder too small for any of them, say 100 W,
        // may go to the e-bike charger.)
        let smallest_cut = s
            .loads
            .iter()
            .filter(|l| tier.contains(&l.id) && !l.on)
            .filter_map(|l| h.config.site.load(&l.id))
            .map(|l| l.nominal.0)
            .fold(f64::INFINITY, f64::min);
        let below: f64 = s
            .loads
            .iter()
            .filter(|l| l.rank > 4)
            .map(|l| l.allocated_watts)
            .sum();
        assert!(
            below < smallest_cut,
            "{}: tiers below the homes hold {below:.0} W while a {smallest_cut:.0} W home is cut",
            s.time
        );
    }
    // Rotation: the homes take turns; every one is served in some short cycle, and the set of
    // homes served changes from cycle to cycle.
    let served = |s: &StateView| -> Vec<String> {
        s.loads
            .iter()
            .filter(|l| tier.contains(&l.id) && l.on)
            .map(|l| l.id.clone())
            .collect()
    };
    for id in &tier {
        assert!(
            short.iter().any(|s| served(s).contains(id)),
            "{id} never served while the tier was short"
        );
        assert!(
            short.iter().any(|s| !served(s).contains(id)),
            "{id} never cut while the tier was short: no rotation"
        );
    }
    // ...and a cut load gets its turn within one round of the tier: with the rotation
    // forgotten, the first-listed loads win every round and the last ones wait all evening.
    // A round counts against a load only if what the tier got would have fitted it: a 400 W
    // home cannot be served from 350 W whatever the rotation says (and a load too big to fit
    // must not block smaller ones).
    // A gap between two short states is a cycle with power enough for all (everyone served)
    // or a state the watcher missed (unknown): either way the count starts again.
    let cycle = chrono::Duration::from_std(communalia_hil_tests::INTERVAL).unwrap() * 1200;
    let mut previous: Option<chrono::DateTime<chrono::Utc>> = None;
    let fresh_round: Vec<bool> = short
        .iter()
        .map(|s| {
            let t = communalia_hil_tests::state_time(s);
            let gap = previous.is_none_or(|p| t - p > cycle * 3 / 2);
            previous = Some(t);
            gap
        })
        .collect();
    let tier_served = |s: &StateView| -> f64 {
        s.tiers
            .iter()
            .find(|t| t.name == "homes_and_school")
            .map_or(0.0, |t| t.served_watts)
    };
    for id in &tier {
        let nominal = h.config.site.load(id).unwrap().nominal.0;
        let mut streak = 0;
        for (s, fresh) in short.iter().zip(&fresh_round) {
            if *fresh {
                streak = 0;
            }
            streak = if served(s).contains(id) {
                0
            } else if tier_served(s) + 1e-6 < nominal {
                streak
            } else {
                streak + 1
            };
            // One round: the planner serves the load that has waited longest and fits first,
            // so each of the tier's N loads that fits is served at least once in any N cycles
            // (the planner's proptest `every_plug_that_fits_is_served_at_least_once_a_round`).
            assert!(
                streak < tier.len(),
                "{}: {id} cut {streak} short cycles in a row",
                s.time
            );
        }
    }
    let changes = short
        .windows(2)
        .filter(|w| served(w[0]) != served(w[1]))
        .count();
    assert!(
        changes * 2 >= short.len() - 1,
        "the served set changed in {changes} of {} short cycles",
        short.len()
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn night_on_battery_keeps_the_health_reserve_for_the_health_tier() {
    // At 900x a cycle is 7.5 simulated minutes: the battery can overshoot the reserve by one
    // cycle of lower-tier load (about 3 %), well inside the reserve's margin.
    let h = Harness::start(Setup::new(local("2026-03-02", "21:00"), 900.0).soc(50.0))
        .await
        .unwrap();
    h.wait_until(local("2026-03-03", "06:45")).await;
    let states = h.states();
    trace(&states, &[]);
    let health = health(&h);
    let model = communalia::control::model::SiteModel::new(h.config.clone());
    let battery = h.config.site.battery.clone().unwrap();
    // Lower tiers draw on the battery early in the night...
    assert!(
        states
            .iter()
            .take(6)
            .any(|s| !lower_on(s, &health).is_empty()),
        "nothing below health ran at the start of the night"
    );
    // ...but never once it is down to the health reserve.
    let mut reserve_bound = false;
    for s in &states[1..] {
        for id in &health {
            assert!(
                on(s, id),
                "{}: health load {id} off during the night",
                s.time
            );
        }
        let t = communalia_hil_tests::state_time(s);
        let floor = battery.min_soc.0 + 100.0 * model.health_reserve_wh(t) / battery.capacity.0;
        if let Some(soc) = soc(s)
            && soc < floor - 0.5
        {
            reserve_bound = true;
            assert!(
                lower_on(s, &health).is_empty(),
                "{}: SoC {soc:.1} % under the health reserve ({floor:.1} %) and {:?} on",
                s.time,
                lower_on(s, &health)
            );
        }
    }
    assert!(reserve_bound, "the health reserve never came into play");
    // The reserve carried the health tier to sunrise.
    let last = states.iter().rev().find_map(|s| soc(s)).unwrap();
    assert!(
        last >= battery.min_soc.0,
        "battery at {last:.1} % at sunrise"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_inverter_counts_as_zero_pv_and_recovers() {
    use communalia_drivers::modbus_sim::Fault;
    let h = Harness::start(Setup::new(local("2026-03-02", "11:30"), 60.0))
        .await
        .unwrap();
    let health = health(&h);
    let before = h
        .wait_for("PV read and lower tiers on", Duration::from_secs(20), |p| {
            p.state.pv_watts.is_some_and(|w| w > 3000.0) && lower_on(&p.state, &health).len() > 3
        })
        .await;
    let silenced = Instant::now();
    h.village.inverter.set_fault(Fault::Silent);
    let after = h
        .wait_for("inverter unknown", Duration::from_secs(15), |p| {
            p.state.pv_watts.is_none() && !device_online(&p.state, "inverter")
        })
        .await;
    let took = silenced.elapsed();
    // Within the staleness limit, plus the read timeout and two cycles.
    let bound = communalia_hil_tests::STALE_REAL
        + communalia_hil_tests::MODBUS_TIMEOUT * 2
        + communalia_hil_tests::INTERVAL * 3;
    assert!(
        took <= bound,
        "inverter counted unknown after {took:?} (> {bound:?})"
    );
    // No PV: only the battery's 5 kW is left, so lower tiers are shed.
    let shed = h
        .wait_for("lower tiers shed", Duration::from_secs(5), |p| {
            lower_on(&p.state, &health).len() < lower_on(&before.state, &health).len()
                && p.state.available_watts < before.state.available_watts
        })
        .await;
    assert!(
        shed.state.available_watts <= 5_000.0 + 1.0,
        "{}",
        shed.state.available_watts
    );
    assert!(health.iter().all(|id| on(&after.state, id)));
    h.village.inverter.set_fault(Fault::None);
    h.wait_for("PV back", Duration::from_secs(20), |p| {
        p.state.pv_watts.is_some_and(|w| w > 3000.0) && device_online(&p.state, "inverter")
    })
    .await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_sentinels_are_never_read_as_numbers() {
    let h = Harness::start(Setup::new(local("2026-03-02", "12:00"), 60.0))
        .await
        .unwrap();
    h.wait_for("consumption measured", Duration::from_secs(20), |p| {
        p.state.consumption_watts.is_some_and(|w| w > 0.0)
    })
    .await;
    h.village.meter.with_device(|m| m.set_sentinels(true));
    h.wait_for("meter unknown", Duration::from_secs(15), |p| {
        p.state.consumption_watts.is_none() && !device_online(&p.state, "meter")
    })
    .await;
    h.cycles(4).await;
    h.village.meter.with_device(|m| m.set_sentinels(false));
    h.wait_for("consumption back", Duration::from_secs(20), |p| {
        p.state.consumption_watts.is_some() && device_online(&p.state, "meter")
    })
    .await;
    // A sentinel (0x8000 = -32768, 0xFFFF) never shows up as a reading.
    for s in h.states() {
        if let Some(w) = s.consumption_watts {
            assert!((0.0..20_000.0).contains(&w), "{}: consumption {w}", s.time);
        }
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battery_answering_modbus_exceptions_is_unknown_and_held_at_its_reserve() {
    use communalia_drivers::modbus_sim::Fault;
    // Evening: no PV, so what the battery may give is all there is.
    let h = Harness::start(Setup::new(local("2026-03-02", "19:30"), 60.0).soc(80.0))
        .await
        .unwrap();
    let health = health(&h);
    h.wait_for(
        "battery read and lower tiers on",
        Duration::from_secs(20),
        |p| {
            p.state
                .battery
                .as_ref()
                .is_some_and(|b| b.soc_percent.is_some())
                && !lower_on(&p.state, &health).is_empty()
        },
    )
    .await;
    // Slave device failure on every request.
    h.village.battery.set_fault(Fault::Exception(4));
    let unknown = h
        .wait_for("battery unknown", Duration::from_secs(15), |p| {
            !device_online(&p.state, "battery")
                && p.state
                    .battery
                    .as_ref()
                    .is_some_and(|b| b.soc_percent.is_none())
        })
        .await;
    // A silent battery sits at its health reserve: only the health tier may draw on it.
    let cut = h
        .wait_for("only health served", Duration::from_secs(5), |p| {
            lower_on(&p.state, &health).is_empty()
        })
        .await;
    assert!(
        health.iter().all(|id| on(&cut.state, id)),
        "{:?}",
        unknown.state.loads
    );
    h.village.battery.set_fault(Fault::None);
    h.wait_for(
        "battery back, lower tiers served",
        Duration::from_secs(20),
        |p| device_online(&p.state, "battery") && !lower_on(&p.state, &health).is_empty(),
    )
    .await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_plugs_are_reconfirmed_within_a_few_cycles() {
    // A nearly full battery at noon: the plan stores no sun, so every home is served and one
    // can be switched off by hand while the broker is away.
    let mut h = Harness::start(Setup::new(local("2026-03-02", "12:00"), 60.0).soc(95.0))
        .await
        .unwrap();
    let p = h
        .wait_devices_follow("plugs follow the controller", Duration::from_secs(20))
        .await;
    let home = "home_amani";
    assert!(
        Harness::load(&p, home).on,
        "{home} should be on at noon: {:?}",
        p.state.loads
    );
    h.broker.stop();
    // While the broker is away, someone switches the home off at the plug.
    h.village
        .tasmota(home)
        .unwrap()
        .with(|p| p.set_relay(1, false));
    h.broker.restart().unwrap();
    let restarted = Instant::now();
    for l in &h.config.site.loads {
        if let Some(p) = h.village.tasmota(&l.id) {
            assert!(p.wait_connected(Duration::from_secs(10)).await, "{}", l.id);
        }
        if let Some(p) = h.village.shelly(&l.id) {
            assert!(p.wait_connected(Duration::from_secs(10)).await, "{}", l.id);
        }
    }
    let village = Arc::clone(&h.village);
    h.wait_for("home switched back on", Duration::from_secs(15), |p| {
        Harness::load(p, home).on && village.plug_on(home) == Some(true)
    })
    .await;
    h.wait_devices_follow("every plug follows again", Duration::from_secs(10))
        .await;
    let took = restarted.elapsed();
    let p = h
        .wait_for("no faults", Duration::from_secs(10), |p| {
            p.state.loads.iter().all(|l| l.fault.is_none())
        })
        .await;
    assert!(
        took <= Duration::from_secs(12),
        "plugs re-confirmed only after {took:?}: {:?}",
        p.state.loads
    );
    h.finish().await;
}

/// Every Tasmota power command published on the broker for `topic`, counted.
async fn spy_commands(h: &Harness, load: &str) -> Arc<std::sync::atomic::AtomicU64> {
    use communalia_drivers::mqtt::MqttBus;
    use communalia_drivers::tasmota::TasmotaTopics;
    use std::sync::atomic::{AtomicU64, Ordering};
    let bus = MqttBus::start(&h.broker.config("spy"));
    bus.wait_connected(Duration::from_secs(5)).await.unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&n);
    let Some(communalia_config::Control::Tasmota {
        topic,
        full_topic,
        relay,
        ..
    }) = h.config.site.load(load).map(|l| l.control.clone())
    else {
        panic!("{load} is not on a Tasmota plug");
    };
    let topics = TasmotaTopics::new(topic)
        .full_topic(full_topic)
        .relay(relay);
    let (command, _) = topics.power_command(true);
    bus.subscribe(
        &command,
        Arc::new(move |_: &[u8]| {
            count.fetch_add(1, Ordering::Relaxed);
        }),
    )
    .await
    .unwrap();
    // Keep the connection for the test's life.
    std::mem::forget(bus);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_plug_shows_a_fault_and_gets_no_commands() {
    use communalia_drivers::modbus_sim::Fault;
    use std::sync::atomic::Ordering;
    let h = Harness::start(Setup::new(local("2026-03-02", "12:00"), 60.0))
        .await
        .unwrap();
    let health = health(&h);
    let (home, other) = ("home_amani", "home_baraka");
    h.wait_devices_follow("plugs follow the controller", Duration::from_secs(20))
        .await;
    h.wait_for("homes on", Duration::from_secs(10), |p| {
        Harness::load(p, home).on && Harness::load(p, other).on
    })
    .await;
    let to_home = spy_commands(&h, home).await;
    let to_other = spy_commands(&h, other).await;
    h.village
        .tasmota(home)
        .unwrap()
        .set_faults(|f| f.offline = true);
    let p = h
        .wait_for("offline plug flagged", Duration::from_secs(10), |p| {
            Harness::load(p, home).fault.as_deref() == Some("plug offline")
        })
        .await;
    assert!(Harness::load(&p, other).fault.is_none());
    // Now everything below health must go off (no PV, battery at its reserve): the controller
    // commands the other homes but never the offline plug.
    h.village.inverter.set_fault(Fault::Silent);
    h.village.battery.set_fault(Fault::Silent);
    h.wait_for("lower tiers off", Duration::from_secs(20), |p| {
        lower_on(&p.state, &health).is_empty()
    })
    .await;
    let village = Arc::clone(&h.village);
    h.wait_for("online plugs switched off", Duration::from_secs(10), |_| {
        village.plug_on(other) == Some(false)
    })
    .await;
    h.cycles(4).await;
    assert!(
        to_other.load(Ordering::Relaxed) > 0,
        "the spy saw no command at all"
    );
    assert_eq!(
        to_home.load(Ordering::Relaxed),
        0,
        "a command went to the offline plug"
    );
    let p = h.state();
    assert_eq!(
        Harness::load(&p, home).fault.as_deref(),
        Some("plug offline")
    );
    // Back online: the fault clears and the plug is commanded again.
    h.village
        .tasmota(home)
        .unwrap()
        .set_faults(|f| f.offline = false);
    h.wait_for("fault cleared", Duration::from_secs(10), |p| {
        Harness::load(p, home).fault.is_none()
    })
    .await;
    h.wait_for(
        "offline plug switched off once back",
        Duration::from_secs(10),
        |_| village.plug_on(home) == Some(false),
    )
    .await;
    h.village.inverter.set_fault(Fault::None);
    h.village.battery.set_fault(Fault::None);
    h.finish().await;
}

fn malformed_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("communalia_counters_mqtt_malformed_payloads_total{"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_payloads_are_counted_and_nothing_crashes() {
    let h = Harness::start(Setup::new(local("2026-03-02", "12:00"), 60.0))
        .await
        .unwrap();
    h.wait_devices_follow("plugs follow the controller", Duration::from_secs(20))
        .await;
    let before = malformed_total(&h.state().metrics);
    for id in ["home_baraka", "school_freezer", "clinic_fridge"] {
        if let Some(p) = h.village.tasmota(id) {
            p.set_faults(|f| f.garbled = true);
        }
        if let Some(p) = h.village.shelly(id) {
            p.set_faults(|f| f.garbled = true);
        }
    }
    h.wait_for("malformed payloads counted", Duration::from_secs(20), |p| {
        malformed_total(&p.metrics) >= before + 3.0
    })
    .await;
    h.cycles(6).await;
    for id in ["home_baraka", "school_freezer", "clinic_fridge"] {
        if let Some(p) = h.village.tasmota(id) {
            p.set_faults(|f| f.garbled = false);
        }
        if let Some(p) = h.village.shelly(id) {
            p.set_faults(|f| f.garbled = false);
        }
    }
    h.wait_devices_follow("plugs follow again", Duration::from_secs(20))
        .await;
    h.finish().await;
}

/// A site folder with the village's site file and an assembly file.
fn site_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("site.toml"), communalia::demo::SITE_TOML).unwrap();
    std::fs::write(
        dir.path().join("assembly.toml"),
        communalia::demo::ASSEMBLY_TOML,
    )
    .unwrap();
    dir
}

fn rank(p: &communalia::http::Published, id: &str) -> usize {
    Harness::load(p, id).rank
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assembly_file_changes_take_effect_and_a_bad_one_is_rejected() {
    let dir = site_dir();
    let path = dir.path().join("assembly.toml");
    // The controller reads the files from the folder, as `communalia run` does.
    let from_disk = communalia::config_files::load(&dir.path().join("site.toml")).unwrap();
    let h =
        Harness::start(Setup::new(local("2026-03-02", "12:00"), 60.0).assembly_path(path.clone()))
            .await
            .unwrap();
    assert_eq!(from_disk.assembly, h.config.assembly);
    let p = h.cycles(2).await;
    assert_eq!(rank(&p, "workshop"), 5);
    assert_eq!(rank(&p, "water_pump"), 3);

    // A new vote: the workshop goes before the water pump.
    let voted = communalia::demo::ASSEMBLY_TOML
        .replace(
            "reference = \"General assembly 2026-10, minutes item 4\"",
            "reference = \"General assembly 2026-11, minutes item 2\"",
        )
        .replace(
            "[[tiers]]\nname = \"water\"\nloads = [\"water_pump\"]\n",
            "[[tiers]]\nname = \"workshop\"\nloads = [\"workshop\"]\n\n[[tiers]]\nname = \"water\"\nloads = [\"water_pump\"]\n",
        )
        .replacen(
            "[[tiers]]\nname = \"workshop\"\nloads = [\"workshop\"]\n\n[[tiers]]\nname = \"comfort\"",
            "[[tiers]]\nname = \"comfort\"",
            1,
        );
    assert_ne!(voted, communalia::demo::ASSEMBLY_TOML);
    std::fs::write(&path, &voted).unwrap();
    let p = h
        .wait_for("new assembly in force", Duration::from_secs(10), |p| {
            p.assembly.decision.reference.contains("2026-11") && rank(p, "workshop") == 3
        })
        .await;
    assert_eq!(rank(&p, "water_pump"), 4);
    assert!(p.state.assembly_errors.is_empty());

    // A bad file: an unknown load. Rejected with located errors; the last good one stays.
    let bad = voted.replace("loads = [\"water_pump\"]", "loads = [\"pump2\"]");
    std::fs::write(&path, bad).unwrap();
    let p = h
        .wait_for("bad assembly rejected", Duration::from_secs(10), |p| {
            !p.state.assembly_errors.is_empty()
        })
        .await;
    let errors = p.state.assembly_errors.join("\n");
    assert!(
        errors.contains("pump2") && errors.contains("assembly.toml:"),
        "{errors}"
    );
    assert!(p.assembly.decision.reference.contains("2026-11"));
    assert_eq!(rank(&p, "workshop"), 3);
    assert_eq!(rank(&p, "water_pump"), 4);
    let p = h.cycles(3).await;
    assert_eq!(
        rank(&p, "workshop"),
        3,
        "the rejected file must not take effect"
    );
    assert!(!p.state.assembly_errors.is_empty());
    h.finish().await;
}

/// Controller mode: when the scenario below re-executes this binary with the variable set, this
/// "test" is the controller process; otherwise it does nothing.
#[test]
fn controller_process() {
    if let Ok(spec) = std::env::var(communalia_hil_tests::CHILD_ENV) {
        communalia_hil_tests::run_child_controller(&spec).unwrap();
    }
}

fn report_load<'a>(r: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    r["state"]["loads"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["id"] == id))
        .unwrap_or_else(|| panic!("no load {id} in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_leaves_health_on_through_a_power_cut_and_takes_over_again() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::village(Setup::new(local("2026-03-02", "12:00"), 60.0))
        .await
        .unwrap();
    let health = health(&h);
    let village = Arc::clone(&h.village);
    // The controllers write their time series to a database that is down until the second
    // one runs (so everything the first one wrote waits in the disk buffer), and post meter
    // credits to the site's ledger.
    let vm_port = records_support::free_port();
    let buffer = dir.path().join("buffer");
    let ledger_file = dir.path().join("ledger.sqlite");
    let day = Day::from_ymd(2026, 3, 2).unwrap();
    communalia_hil_tests::found_ledger(&ledger_file, &h.config, day).unwrap();
    let records = ChildRecords {
        influx: Some((format!("http://127.0.0.1:{vm_port}"), buffer.clone())),
        ledger: Some(ledger_file.clone()),
    };
    let mut first = h
        .spawn_controller_process("controller_process", dir.path(), 1, &records)
        .unwrap();
    let follows = |r: &serde_json::Value| {
        r["state"]["loads"].as_array().is_some_and(|loads| {
            !loads.is_empty()
                && loads.iter().all(|l| {
                    let id = l["id"].as_str().unwrap_or_default();
                    village
                        .plug_on(id)
                        .is_none_or(|on| Some(on) == l["on"].as_bool())
                })
        })
    };
    let r = first
        .wait_for("first controller in charge", Duration::from_secs(30), |r| {
            follows(r)
                && r["state"]["loads"].as_array().is_some_and(|l| {
                    l.iter()
                        .any(|l| l["on"] == true && !health.iter().any(|h| l["id"] == h.as_str()))
                })
        })
        .await;
    // The device-side fail-safes are set: health plugs come back on after a power cut, the
    // others stay off.
    let village2 = Arc::clone(&h.village);
    communalia_hil_tests::eventually("fail-safes confirmed", Duration::from_secs(10), || {
        village2
            .plug_fail_safes()
            .iter()
            .all(|(id, safe)| *safe == Some(health.contains(id)))
    })
    .await;
    let lower: Vec<String> = r["state"]["loads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["on"] == true && !health.contains(&l["id"].as_str().unwrap().to_owned()))
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !lower.is_empty(),
        "some lower-tier load should be on at noon"
    );
    assert!(
        r["violations"].as_array().unwrap().is_empty(),
        "{}",
        r["violations"]
    );

    let issued = |r: &serde_json::Value| r["communs_issued_millis"].as_f64().unwrap_or(0.0);
    let r = first
        .wait_for("first meter credits posted", Duration::from_secs(30), |r| {
            issued(r) > 0.0
        })
        .await;
    let credited_before = issued(&r);
    let cycles_before = r["cycles"].as_u64().unwrap();

    first.kill();
    // The ledger opens (its cache checked against a replay of the log), verifies, and holds
    // every credit the controller reported before the kill.
    let (entries_first, credited_first) = ledger_intact(&ledger_file, &h, day);
    assert!(
        credited_first >= credited_before,
        "ledger has {credited_first} m credited, the controller reported {credited_before}"
    );
    // Every cycle the first controller wrote is in the disk buffer, in order, once; at most
    // the last flush interval (lines still in memory) is lost to a SIGKILL.
    let on_disk = buffered_cycles(&buffer);
    assert!(!on_disk.is_empty(), "nothing waits in the disk buffer");
    assert_eq!(runs(&on_disk), vec![on_disk.len()], "{on_disk:?}");
    let written = on_disk.len() as u64;
    assert!(
        written + 2 >= cycles_before,
        "{written} cycles on disk, {cycles_before} reported before the kill"
    );
    // SIGKILL runs no shutdown path: the health plugs are simply left as they were, on.
    for id in &health {
        assert_eq!(
            h.village.plug_on(id),
            Some(true),
            "health plug {id} off after the kill"
        );
    }
    // A power cut while no controller runs: every relay follows its own fail-safe.
    h.pause_relay_checks(true);
    h.village.power_cycle_plugs();
    for id in &health {
        assert_eq!(
            h.village.plug_on(id),
            Some(true),
            "health plug {id} off after the cut"
        );
    }
    for id in &lower {
        if h.village.tasmota(id).is_some() || h.village.shelly(id).is_some() {
            assert_eq!(h.village.plug_on(id), Some(false), "{id} on after the cut");
        }
    }
    h.pause_relay_checks(false);

    // A new controller takes over: health stays on, the others are switched on again.
    let vm = Victoria::start_with(vm_port, vec!["-retentionPeriod=100y".into()]);
    let mut second = h
        .spawn_controller_process("controller_process", dir.path(), 2, &records)
        .unwrap();
    let r = second
        .wait_for(
            "second controller in charge",
            Duration::from_secs(30),
            |r| follows(r) && lower.iter().any(|id| report_load(r, id)["on"] == true),
        )
        .await;
    for id in &health {
        assert_eq!(report_load(&r, id)["on"], true, "{id}");
    }
    let village3 = Arc::clone(&h.village);
    assert!(lower.iter().any(|id| village3.plug_on(id) == Some(true)));
    assert!(
        r["violations"].as_array().unwrap().is_empty(),
        "{}",
        r["violations"]
    );
    // The database is back: the second controller sends what the first left on disk, then
    // its own; every cycle arrives once, in order.
    let site = h.config.site.id.clone();
    communalia_hil_tests::eventually(
        "the buffered cycles and the new ones in the database",
        Duration::from_secs(30),
        || {
            let got = exported_cycles(&vm, &site);
            let r = runs(&got.iter().map(|(_, c)| *c).collect::<Vec<_>>());
            r.len() == 2 && r[0] as u64 >= written && r[1] >= 3
        },
    )
    .await;
    let got = exported_cycles(&vm, &site);
    let cycles: Vec<u64> = got.iter().map(|(_, c)| *c).collect();
    assert_eq!(
        runs(&cycles)[0] as u64,
        written,
        "exactly what was on disk: {cycles:?}"
    );
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{got:?}");
    second
        .wait_for(
            "second controller's meter credits",
            Duration::from_secs(30),
            |r| issued(r) > 0.0,
        )
        .await;
    second.kill();
    let (entries_second, credited_second) = ledger_intact(&ledger_file, &h, day);
    assert!(
        entries_second > entries_first && credited_second > credited_first,
        "the second controller posted credits after the first one's: {entries_first} → \
         {entries_second} entries, {credited_first} → {credited_second} m"
    );
}

/// Opens the ledger after a SIGKILL: it must open (the cache is checked against a replay),
/// verify in full, and tell the log's length and what the credited member got today.
fn ledger_intact(file: &std::path::Path, h: &Harness, day: Day) -> (usize, f64) {
    let store = SqliteStore::open(file).unwrap();
    let report = communalia_ledger::verify(&store, &h.config.site.id).unwrap();
    assert!(report.ok(), "{report:?}");
    let ledger = Ledger::open(store, &h.config.site.id).unwrap();
    let owner = ledger
        .state()
        .members()
        .iter()
        .find(|m| m.name == "amani")
        .map(|m| m.id)
        .unwrap();
    let cap = ledger.params_on(day).unwrap().meter_daily_cap;
    let credited = cap.0 - ledger.meter_headroom(owner, day).0;
    (ledger.log().len(), credited as f64)
}

/// The cycle counter of every counters line in a time-series disk buffer, oldest first.
fn buffered_cycles(dir: &std::path::Path) -> Vec<u64> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let field = format!("{}=", schema::CYCLES.field);
    let mut out = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            if !line.starts_with(&format!("{},", schema::CYCLES.measurement)) {
                continue;
            }
            let fields = line.split(' ').nth(1).unwrap_or_default();
            let v = fields
                .split(',')
                .find_map(|kv| kv.strip_prefix(&field))
                .unwrap_or_else(|| panic!("no {field} in {line}"));
            out.push(v.parse::<f64>().unwrap() as u64);
        }
    }
    out
}

/// Every sample of the site's cycle counter in the database: (time in ms, cycle), by time.
fn exported_cycles(vm: &Victoria, site: &str) -> Vec<(i64, u64)> {
    let mut got: Vec<(i64, u64)> = vm
        .export(&format!("{}{{site=\"{site}\"}}", schema::CYCLES.metric()))
        .into_iter()
        .flat_map(|e| e.timestamps.into_iter().zip(e.values))
        .map(|(t, v)| (t, v as u64))
        .collect();
    got.sort_unstable();
    got
}

/// Splits a sequence of cycle counters into the runs of successive controllers: each run
/// counts 1, 2, 3, ... without a gap or a repeat (asserted); returns each run's length.
fn runs(cycles: &[u64]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for (i, &c) in cycles.iter().enumerate() {
        match out.last_mut() {
            Some(n) if c == *n as u64 + 1 => *n += 1,
            _ if c == 1 => out.push(1),
            _ => panic!("cycle {c} at {i} follows neither its predecessor nor a start: {cycles:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plug_that_dropped_off_mid_command_is_not_faulty_once_back_in_the_wanted_state() {
    use communalia_drivers::modbus_sim::Fault;
    let h = Harness::start(Setup::new(local("2026-03-02", "12:00"), 60.0))
        .await
        .unwrap();
    let home = "home_amani";
    let village = Arc::clone(&h.village);
    let dark = |on: bool| {
        let f = if on { Fault::Silent } else { Fault::None };
        h.village.inverter.set_fault(f);
        h.village.battery.set_fault(f);
    };
    // No PV and a battery of unknown charge: the home goes off.
    dark(true);
    h.wait_for("home off at the plug", Duration::from_secs(20), |p| {
        !Harness::load(p, home).on && village.plug_on(home) == Some(false)
    })
    .await;
    // Power returns; the controller switches the home on, but the plug ignores the command and
    // drops off the network while the controller waits for its confirmation.
    let plug = h.village.tasmota(home).unwrap();
    plug.set_faults(|f| f.mute = true);
    dark(false);
    h.wait_for("home wanted on", Duration::from_secs(20), |p| {
        Harness::load(p, home).on
    })
    .await;
    plug.set_faults(|f| f.offline = true);
    h.wait_for(
        "command failed on the offline plug",
        Duration::from_secs(15),
        |p| Harness::load(p, home).fault.as_deref() == Some("plug offline"),
    )
    .await;
    h.cycles(8).await;
    // Dark again: the controller no longer wants the home on, which is how the plug still is.
    dark(true);
    h.wait_for("home wanted off", Duration::from_secs(20), |p| {
        !Harness::load(p, home).on
    })
    .await;
    plug.set_faults(|f| {
        f.offline = false;
        f.mute = false;
    });
    assert!(plug.wait_connected(Duration::from_secs(10)).await);
    let p = h
        .wait_for("fault cleared", Duration::from_secs(15), |p| {
            Harness::load(p, home).fault.is_none()
        })
        .await;
    assert_eq!(village.plug_on(home), Some(false));
    assert!(!Harness::load(&p, home).on);
    dark(false);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_series_database_down_for_an_hour_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let mut vm = Victoria::start_with(
        records_support::free_port(),
        vec!["-retentionPeriod=100y".into()],
    );
    // The writer's retry delay is capped at 1 s of real time (30 s on a site): in accelerated
    // time a whole site hour passes in 30 s.
    let mut influx = InfluxSettings::new(vm.url(), "hil", "hil", "", &buffer);
    influx.flush_interval = Duration::from_millis(200);
    influx.retry_max = Duration::from_secs(1);
    let h = Harness::start(Setup::new(local("2026-03-02", "10:00"), 120.0).influx(influx))
        .await
        .unwrap();
    let site = h.config.site.id.clone();
    communalia_hil_tests::eventually(
        "the first cycles in the database",
        Duration::from_secs(30),
        || exported_cycles(&vm, &site).len() >= 5,
    )
    .await;

    vm.stop();
    let down = state_time_now(&h);
    let up = down + chrono::Duration::hours(1);
    h.wait_until(up).await;
    // The controller went on for the hour, and what it wrote waits on disk.
    let on_disk = buffered_cycles(&buffer);
    assert!(
        on_disk.len() >= 30,
        "an hour of cycles (60 at this speed) should wait on disk: {}",
        on_disk.len()
    );
    vm.restart();
    let last_on_disk = *on_disk.last().unwrap();
    communalia_hil_tests::eventually(
        "the outage's cycles in the database and the buffer empty",
        Duration::from_secs(30),
        || {
            exported_cycles(&vm, &site)
                .last()
                .is_some_and(|(_, c)| *c > last_on_disk + 3)
                && buffered_cycles(&buffer).is_empty()
        },
    )
    .await;
    let seen: Vec<String> = h.states().iter().map(|s| s.time.clone()).collect();
    h.finish().await;

    // Every cycle once, in order, from the first to the last (the shutdown sent the rest).
    let got = exported_cycles(&vm, &site);
    let cycles: Vec<u64> = got.iter().map(|(_, c)| *c).collect();
    assert_eq!(runs(&cycles).len(), 1, "one controller, no gap: {cycles:?}");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{got:?}");
    let in_outage = got
        .iter()
        .filter(|(t, _)| (down.timestamp_millis()..up.timestamp_millis()).contains(t))
        .count();
    assert!(in_outage >= 30, "{in_outage} cycles of the outage hour");
    // Each state the controller published has its cycle in the database...
    // (The state tells the time to the second; the points carry milliseconds.)
    let times: std::collections::BTreeSet<i64> = got.iter().map(|(t, _)| t / 1000).collect();
    for t in &seen {
        let t: chrono::DateTime<chrono::Utc> = t.parse().unwrap();
        assert!(
            times.contains(&t.timestamp()),
            "published state at {t} missing from the database"
        );
    }
    // ...and not only the counters: every line of a cycle arrived (one per load here).
    let fridge = vm.export(&format!(
        "{}{{site=\"{site}\",load=\"clinic_fridge\"}}",
        schema::LOAD_ON.metric()
    ));
    assert_eq!(fridge.len(), 1);
    assert_eq!(fridge[0].timestamps.len(), got.len());
    assert!(
        fridge[0].values.iter().all(|v| *v == 1.0),
        "the clinic fridge stayed on"
    );
}

fn state_time_now(h: &Harness) -> chrono::DateTime<chrono::Utc> {
    communalia_hil_tests::state_time(&h.state().state)
}

/// Runs the village from `at` (speed 10) with one controller until it has settled, stops it as
/// SIGTERM would, starts another on the same site, and follows every relay for the new
/// controller's first simulated minute. Returns the loads switched off and on again in that
/// minute, with their relay sequences, and how long the stop took.
async fn restart_at(at: chrono::DateTime<chrono::Utc>, soc: f64) -> (Vec<String>, Duration) {
    const SPEED: f64 = 10.0;
    let mut h = Harness::start(Setup::new(at, SPEED).soc(soc))
        .await
        .unwrap();
    // Settled: the devices answered and a few cycles decided.
    h.wait_for(
        "the first controller deciding",
        Duration::from_secs(30),
        |p| p.state.devices.iter().all(|d| d.online),
    )
    .await;
    h.cycles(8).await;
    let stop_took = h.stop_controller().await;
    let ids: Vec<String> = h
        .config
        .site
        .loads
        .iter()
        .filter(|l| h.village.plug_on(&l.id).is_some())
        .map(|l| l.id.clone())
        .collect();
    let mut seq: std::collections::BTreeMap<String, Vec<bool>> = ids
        .iter()
        .map(|id| (id.clone(), vec![h.village.plug_on(id).unwrap()]))
        .collect();
    // The new controller's first battery reads fail (a device still busy, a bus still
    // settling): not yet a dead battery.
    h.village
        .battery
        .set_fault(communalia_drivers::modbus_sim::Fault::Exception(4));
    h.start_controller().await.unwrap();
    let started = Instant::now();
    let mut faulty = true;
    let until = Instant::now() + communalia_hil_tests::real(chrono::Duration::minutes(1), SPEED);
    while Instant::now() < until {
        for id in &ids {
            let now = h.village.plug_on(id).unwrap();
            let s = seq.get_mut(id).unwrap();
            if s.last() != Some(&now) {
                s.push(now);
            }
        }
        if faulty && started.elapsed() > Duration::from_millis(1500) {
            h.village
                .battery
                .set_fault(communalia_drivers::modbus_sim::Fault::None);
            faulty = false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.finish().await;
    let flapped = seq
        .into_iter()
        .filter(|(_, s)| s.windows(3).any(|w| w[0] && !w[1] && w[2]))
        .map(|(id, s)| format!("{id}: {s:?}"))
        .collect();
    (flapped, stop_took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_at_night_at_noon_or_at_dusk_clicks_no_relay_off_and_on() {
    // Three villages side by side: 02:00 on a half-full battery, a sunny noon, dusk on a
    // battery that cannot carry every home. None of the new controller's first decisions may
    // switch a load off that it switches on again within the minute.
    let (night, noon, dusk) = tokio::join!(
        restart_at(local("2026-03-02", "02:00"), 55.0),
        restart_at(local("2026-03-02", "12:00"), 60.0),
        restart_at(local("2026-03-02", "18:30"), 35.0),
    );
    for (when, (flapped, _)) in [("night", &night), ("noon", &noon), ("dusk", &dusk)] {
        assert!(
            flapped.is_empty(),
            "{when}: switched off and on again within a minute of the restart: {flapped:?}"
        );
    }
    eprintln!(
        "stop took: night {:?}, noon {:?}, dusk {:?}",
        night.1, noon.1, dusk.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_plugs_get_one_command_per_change_and_confirm_every_one() {
    // 75 minutes of a March afternoon at 90x: the sun fades, tiers are cut and served. The
    // village's workshop (Tasmota) and laundry (Shelly) keep factory settings (TelePeriod 300,
    // status notifications off); the others are set up as the installer section says.
    let mut h = Harness::start(Setup::new(local("2026-03-02", "15:45"), 90.0).soc(40.0))
        .await
        .unwrap();
    h.wait_until(local("2026-03-02", "17:00")).await;
    let stop_took = h.stop_controller().await;
    let states = h.states();
    let mut report = Vec::new();
    let mut switched = 0;
    for l in &h.config.site.loads {
        let (commands, redundant) = match (h.village.tasmota(&l.id), h.village.shelly(&l.id)) {
            (Some(p), _) => p.with(|p| (p.switch_commands, p.redundant_switches)),
            (_, Some(p)) => p.with(|p| (p.switch_requests, p.redundant_switches)),
            _ => continue,
        };
        switched += commands;
        report.push(format!(
            "{}: {commands} commands, {redundant} redundant",
            l.id
        ));
        // One command per change: at most one to a plug whose state was not known yet.
        assert!(
            redundant <= 1,
            "{}: {redundant} commands that changed nothing",
            l.id
        );
    }
    eprintln!("{}; stop took {stop_took:?}", report.join("; "));
    assert!(
        switched > 0,
        "nothing was switched: the scenario tests nothing"
    );
    for s in &states {
        for l in &s.loads {
            assert!(
                !l.fault.as_deref().unwrap_or("").contains("not confirmed"),
                "{}: {}: {:?}",
                s.time,
                l.id,
                l.fault
            );
        }
    }
    // The stock plugs were heard: their state is known once the controller has settled.
    let last = states.last().unwrap();
    for id in ["workshop", "laundry"] {
        let l = last.loads.iter().find(|l| l.id == id).unwrap();
        assert!(l.reported_on.is_some(), "{id}: {l:?}");
    }
    h.finish().await;
}
