//! The cycle, one step at a time (OpenEMS style): given these readings, after one cycle, these
//! commands and this state; advance time; again. Covers the fail-safe rules one by one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use communalia::control::core::{
    Action, Command, Core, DeviceInput, DeviceValue, LoadInput, ProcessImage,
};
use communalia::control::model::SiteModel;
use communalia::demo::{Ports, village_config};
use communalia::state::GridState;
use communalia_drivers::{BatteryState, Percent, Watts};

fn model() -> SiteModel {
    let ports = Ports {
        modbus_base: 5020,
        mqtt: 1883,
    };
    SiteModel::new(village_config(&ports, 1.0).unwrap())
}

/// 12:00 local time at Kalinzu (UTC+3).
fn noon() -> DateTime<Utc> {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

/// 21:00 local.
fn evening() -> DateTime<Utc> {
    "2026-03-02T18:00:00Z".parse().unwrap()
}

struct Site {
    pv: Option<f64>,
    soc: Option<f64>,
    consumption: Option<f64>,
    /// Reported relay state of every controlled load.
    on: BTreeMap<String, bool>,
    offline: Vec<String>,
}

impl Site {
    fn new(model: &SiteModel, pv: f64, soc: f64) -> Self {
        let on = model
            .site()
            .loads
            .iter()
            .filter(|l| l.control.is_controlled())
            .map(|l| (l.id.clone(), false))
            .collect();
        Self {
            pv: Some(pv),
            soc: Some(soc),
            consumption: Some(250.0),
            on,
            offline: Vec::new(),
        }
    }

    fn image(&self, at: DateTime<Utc>) -> ProcessImage {
        let dev = |id: &str, v: Option<DeviceValue>| DeviceInput {
            id: id.into(),
            last: v.map(|v| (at, v)),
            error: None,
        };
        ProcessImage {
            at,
            devices: vec![
                dev("inverter", self.pv.map(DeviceValue::Pv)),
                dev(
                    "battery",
                    self.soc.map(|s| {
                        DeviceValue::Battery(BatteryState {
                            soc: Some(Percent(s)),
                            power: Some(Watts(0.0)),
                            ..BatteryState::default()
                        })
                    }),
                ),
                dev("meter", self.consumption.map(DeviceValue::Meter)),
            ],
            loads: self
                .on
                .iter()
                .map(|(id, on)| {
                    let offline = self.offline.contains(id);
                    (
                        id.clone(),
                        LoadInput {
                            online: Some(!offline),
                            on: Some(*on),
                            power: Some(0.0),
                            fault: None,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The devices carry out the commands and report back.
    fn apply(&mut self, commands: &[Command]) {
        for c in commands {
            let on = match c.action {
                Action::Switch(on) => on,
                Action::Setpoint(w) => w > 0.0,
            };
            self.on.insert(c.load.clone(), on);
        }
    }
}

fn switched(commands: &[Command], load: &str) -> Option<bool> {
    commands
        .iter()
        .find(|c| c.load == load)
        .map(|c| match c.action {
            Action::Switch(on) => on,
            Action::Setpoint(w) => w > 0.0,
        })
}

/// A core that has run for ten minutes with every device answering: what follows is judged by
/// the running controller's rules, not the start's (where nothing is decided until every
/// device has answered or stayed silent for its staleness limit).
fn started_core(m: &SiteModel, at: DateTime<Utc>) -> Core {
    let mut core = Core::new(m.clone(), false);
    let site = Site::new(m, 0.0, 50.0);
    core.step(&site.image(at - Duration::minutes(10)));
    core
}

fn load_on(core_state: &communalia::state::StateView, id: &str) -> bool {
    core_state.loads.iter().find(|l| l.id == id).unwrap().on
}

#[test]
fn a_sunny_noon_switches_the_loads_on_once_and_then_leaves_them_alone() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 9000.0, 80.0);
    let out = core.step(&site.image(noon()));
    assert_eq!(switched(&out.commands, "clinic_fridge"), Some(true));
    assert_eq!(switched(&out.commands, "cold_room"), Some(true));
    assert!(out.faults.is_empty(), "{:?}", out.faults);
    assert_eq!(out.state.pv_watts, Some(9000.0));
    assert!(out.state.devices.iter().all(|d| d.online));
    site.apply(&out.commands);

    let out = core.step(&site.image(noon() + Duration::seconds(2)));
    assert!(
        out.commands.is_empty(),
        "nothing changed, nothing to send: {:?}",
        out.commands
    );
}

#[test]
fn in_the_evening_on_a_low_battery_the_top_tiers_keep_power_and_the_rest_is_cut_with_reasons() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 0.0, 25.0);
    for on in site.on.values_mut() {
        *on = true;
    }
    let out = core.step(&site.image(evening()));
    assert!(load_on(&out.state, "clinic_fridge"));
    assert!(load_on(&out.state, "clinic_lights"));
    assert_eq!(out.state.grid_state, GridState::Scarcity);
    let workshop = out.state.loads.iter().find(|l| l.id == "workshop").unwrap();
    assert!(!workshop.on);
    assert!(!workshop.reason.is_empty());
    assert_eq!(switched(&out.commands, "workshop"), Some(false));
    assert_eq!(switched(&out.commands, "clinic_fridge"), None);
    // Strict precedence: no load of a lower tier is on while a higher tier's load is cut
    // for lack of power (a higher load too big to fit may not block smaller ones).
    let tiers = &out.state.tiers;
    assert_eq!(tiers[0].served_watts, tiers[0].demanded_watts);
}

#[test]
fn a_silent_inverter_counts_as_no_pv_and_its_device_shows_offline() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 9000.0, 80.0);
    site.pv = None;
    let out = core.step(&site.image(noon()));
    assert_eq!(out.state.pv_watts, None);
    let inv = out
        .state
        .devices
        .iter()
        .find(|d| d.id == "inverter")
        .unwrap();
    assert!(!inv.online);
    assert!(out.faults.iter().any(|f| f.contains("inverter")));

    // A reading older than the staleness limit is as good as none.
    site.pv = Some(9000.0);
    let mut image = site.image(noon());
    let stale = m.site().device("inverter").unwrap().stale_after;
    image.devices[0].last = Some((
        noon() - Duration::from_std(stale).unwrap() - Duration::seconds(1),
        DeviceValue::Pv(9000.0),
    ));
    let out = core.step(&image);
    assert_eq!(out.state.pv_watts, None);
}

#[test]
fn health_loads_are_never_switched_off_while_inputs_are_unknown() {
    let m = model();
    let mut core = started_core(&m, evening());
    // The battery reads empty and the inverter is silent: counting the silent inverter as zero
    // would leave nothing for the clinic, but the sun may well be shining.
    let mut site = Site::new(&m, 0.0, 10.0);
    for on in site.on.values_mut() {
        *on = true;
    }
    site.pv = None;
    site.consumption = None;
    let out = core.step(&site.image(evening()));
    for id in ["clinic_fridge", "clinic_lights"] {
        assert!(load_on(&out.state, id), "{id} must stay on");
        assert_ne!(
            switched(&out.commands, id),
            Some(false),
            "{id} switched off"
        );
    }
    let fridge = out
        .state
        .loads
        .iter()
        .find(|l| l.id == "clinic_fridge")
        .unwrap();
    assert!(
        fridge.reason.contains("never switched off"),
        "{}",
        fridge.reason
    );
    // Lower tiers get nothing.
    assert!(!load_on(&out.state, "workshop"));
}

#[test]
fn a_silent_battery_is_assumed_at_its_health_reserve() {
    let m = model();
    let mut core = started_core(&m, evening());
    let mut site = Site::new(&m, 0.0, 90.0);
    site.soc = None;
    let out = core.step(&site.image(evening()));
    // Health loads run from the reserve; homes get nothing from a battery of unknown charge.
    assert!(load_on(&out.state, "clinic_fridge"));
    assert!(!load_on(&out.state, "home_amani"));
    assert!(out.state.battery.as_ref().unwrap().soc_percent.is_none());
}

#[test]
fn an_offline_plug_gets_no_command_and_shows_the_fault() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 9000.0, 80.0);
    site.offline.push("cold_room".into());
    let out = core.step(&site.image(noon()));
    assert_eq!(switched(&out.commands, "cold_room"), None);
    let l = out
        .state
        .loads
        .iter()
        .find(|l| l.id == "cold_room")
        .unwrap();
    assert_eq!(l.fault.as_deref(), Some("plug offline"));
    assert_eq!(switched(&out.commands, "clinic_fridge"), Some(true));
}

#[test]
fn nothing_is_decided_before_every_device_has_answered_or_stayed_silent_for_its_limit() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 0.0, 25.0);
    // The homes are on when the controller starts, on an evening battery that cannot carry them.
    for on in site.on.values_mut() {
        *on = true;
    }
    let mut image = site.image(evening());
    image.devices[1].last = None; // the battery has not been read yet
    let out = core.step(&image);
    assert!(out.commands.is_empty(), "{:?}", out.commands);
    assert!(out.starting);
    let home = out
        .state
        .loads
        .iter()
        .find(|l| l.id == "home_amani")
        .unwrap();
    assert!(home.on, "left as its plug reports it");
    assert!(
        home.reason.contains("waits for the first readings of"),
        "{}",
        home.reason
    );
    // A first read that failed is not yet a dead battery: it gets its staleness limit.
    image.devices[1].error = Some("no answer within 1s".into());
    image.at = evening() + Duration::seconds(2);
    let out = core.step(&image);
    assert!(out.commands.is_empty(), "{:?}", out.commands);
    let limit = m
        .site()
        .devices
        .iter()
        .find(|d| d.id == "battery")
        .unwrap()
        .stale_after;
    image.at = evening() + Duration::from_std(limit).unwrap();
    let out = core.step(&image);
    assert!(!out.starting);
    assert!(
        !out.commands.is_empty(),
        "silent for its whole limit, the battery is unknown: the fail-safes apply"
    );
    assert_eq!(switched(&out.commands, "home_amani"), Some(false));
}

#[test]
fn once_every_device_has_answered_the_first_cycle_decides_at_once() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let site = Site::new(&m, 0.0, 25.0);
    let out = core.step(&site.image(evening()));
    assert!(!out.starting);
    assert_eq!(switched(&out.commands, "clinic_fridge"), Some(true));
}

#[test]
fn dry_run_explains_but_switches_nothing() {
    let m = model();
    let mut core = Core::new(m.clone(), true);
    let site = Site::new(&m, 0.0, 25.0);
    let out = core.step(&site.image(evening()));
    assert!(out.commands.is_empty());
    assert!(out.state.dry_run);
    assert!(out.state.loads.iter().all(|l| !l.reason.is_empty()));
}

#[test]
fn a_new_assembly_takes_effect_at_the_next_cycle_and_a_rejected_one_changes_nothing() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 1500.0, 12.0);
    for on in site.on.values_mut() {
        *on = true;
    }
    let before = core.step(&site.image(noon()));

    // The assembly moves the homes above cold storage.
    let mut assembly = m.assembly().clone();
    let homes = assembly
        .tiers
        .iter()
        .position(|t| t.loads.iter().any(|l| l == "home_amani"))
        .unwrap();
    let cold = assembly
        .tiers
        .iter()
        .position(|t| t.loads.iter().any(|l| l == "cold_room"))
        .unwrap();
    assembly.tiers.swap(homes, cold);
    core.reject_assembly(vec!["assembly.toml:3:1: tiers: example error".into()]);
    let rejected = core.step(&site.image(noon() + Duration::seconds(2)));
    assert_eq!(rejected.state.assembly_errors.len(), 1);
    assert_eq!(
        core.assembly_view().rejected_errors,
        rejected.state.assembly_errors
    );
    let rank = |s: &communalia::state::StateView, id: &str| {
        s.loads.iter().find(|l| l.id == id).unwrap().rank
    };
    assert_eq!(
        rank(&rejected.state, "cold_room"),
        rank(&before.state, "cold_room")
    );

    core.set_assembly(assembly);
    let after = core.step(&site.image(noon() + Duration::seconds(4)));
    assert!(after.state.assembly_errors.is_empty());
    assert!(rank(&after.state, "home_amani") < rank(&after.state, "cold_room"));
}

#[test]
fn a_silent_meter_counts_every_measured_only_load_at_nominal_power() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 3000.0, 50.0);
    site.consumption = Some(0.0);
    let with_meter = core.step(&site.image(noon()));
    site.consumption = None;
    let without = core.step(&site.image(noon() + Duration::seconds(2)));
    let mast = m.site().load("telecom_mast").unwrap().nominal.0;
    let diff = with_meter.state.available_watts - without.state.available_watts;
    assert!((diff - mast).abs() < 1.0, "{diff} vs {mast}");
}

#[test]
fn a_daily_need_counts_what_the_load_already_got_today_and_starts_again_at_midnight() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 9000.0, 80.0);
    site.on.insert("water_pump".into(), true);
    let mut image = site.image(noon());
    image.loads.get_mut("water_pump").unwrap().power = Some(1100.0);
    // One hour of pumping at 1.1 kW, one cycle a minute.
    for i in 0..=60 {
        image.at = noon() + Duration::minutes(i);
        core.step(&image);
    }
    let got = core.delivered_today("water_pump");
    assert!((got - 1100.0).abs() < 1.0, "{got}");
    let plan = core.plan_view();
    let planned_wh: f64 = plan
        .steps
        .iter()
        .filter_map(|s| s.loads.get("water_pump"))
        .map(|w| w * f64::from(plan.step_minutes) / 60.0)
        .sum();
    assert!(
        planned_wh <= 6000.0 - 1000.0 + 1.0,
        "the plan asks for the rest only: {planned_wh} Wh"
    );
    // Local midnight (UTC+3) starts a new day.
    image.at = "2026-03-02T21:00:30Z".parse().unwrap();
    core.step(&image);
    assert!(core.delivered_today("water_pump") < 1100.0);
}

#[test]
fn an_external_pv_forecast_replaces_the_local_model_where_it_covers_the_plan() {
    let m = model();
    let mut core = Core::new(m.clone(), false);
    let site = Site::new(&m, 9000.0, 80.0);
    core.step(&site.image(noon()));
    let local = core.plan_view();
    // Two hours of a forecast starting at noon: 1234 W.
    let f = communalia::forecast::external::ExternalForecast::parse(
        br#"{"start": "2026-03-02T09:00:00Z", "step_minutes": 60, "pv_watts": [1234, 1234]}"#,
    )
    .unwrap();
    core.set_external_pv(f);
    core.step(&site.image(noon() + Duration::seconds(2)));
    let plan = core.plan_view();
    assert_eq!(plan.steps[0].pv_watts, 1234.0);
    assert_eq!(plan.steps[7].pv_watts, 1234.0);
    assert_ne!(
        plan.steps[8].pv_watts, 1234.0,
        "beyond the forecast, the local model"
    );
    assert!((plan.steps[20].pv_watts - local.steps[20].pv_watts).abs() < 50.0);
}

/// The village with its meter moved to the grid connection (`measures = "grid"`).
fn model_with_grid_meter() -> SiteModel {
    let ports = Ports {
        modbus_base: 5020,
        mqtt: 1883,
    };
    let mut config = village_config(&ports, 1.0).unwrap();
    for d in &mut config.site.devices {
        if let communalia_config::DeviceKind::Sunspec { role, .. } = &mut d.kind
            && matches!(role, communalia_config::SunspecRole::Meter(_))
        {
            *role = communalia_config::SunspecRole::Meter(communalia_config::Measures::Grid);
        }
    }
    SiteModel::new(config)
}

/// One image of `site` with the meter reading `meter` and the battery giving `battery_w`.
fn image_with(
    site: &Site,
    at: DateTime<Utc>,
    meter: Option<DeviceValue>,
    battery_w: f64,
) -> ProcessImage {
    let mut image = site.image(at);
    for d in &mut image.devices {
        match d.id.as_str() {
            "meter" => d.last = meter.clone().map(|v| (at, v)),
            "battery" => {
                if let Some((_, DeviceValue::Battery(b))) = d.last.as_mut() {
                    b.power = Some(Watts(battery_w));
                }
            }
            _ => {}
        }
    }
    image
}

#[test]
fn a_grid_meter_reading_is_import_not_consumption() {
    // Noon: 3 kW of sun, the battery charging at 500 W, 1 kW going out to the grid. The site
    // consumes 3000 - 500 - 1000 = 1500 W: what a consumption meter would read.
    let grid_model = model_with_grid_meter();
    let consumption_model = model();
    let site = Site::new(&grid_model, 3000.0, 60.0);
    let mut grid_core = Core::new(grid_model, false);
    let mut consumption_core = Core::new(consumption_model, false);
    let by_grid = grid_core.step(&image_with(
        &site,
        noon(),
        Some(DeviceValue::Grid(-1000.0)),
        -500.0,
    ));
    let by_consumption = consumption_core.step(&image_with(
        &site,
        noon(),
        Some(DeviceValue::Meter(1500.0)),
        -500.0,
    ));
    assert_eq!(by_grid.state.consumption_watts, Some(1500.0));
    assert_eq!(
        by_grid.state.available_watts,
        by_consumption.state.available_watts
    );
    // Importing 200 W at night while the battery gives 800 W: 1000 W consumed.
    let mut night = Site::new(&model_with_grid_meter(), 0.0, 60.0);
    night.pv = Some(0.0);
    let out = grid_core.step(&image_with(
        &night,
        evening(),
        Some(DeviceValue::Grid(200.0)),
        800.0,
    ));
    assert_eq!(out.state.consumption_watts, Some(1000.0));
}

#[test]
fn a_grid_meter_without_the_inverter_gives_no_consumption() {
    // The inverter is silent: what the site consumes is not known from the grid meter alone,
    // so the cycle falls back to every measured-only load at nominal, as with no meter.
    let m = model_with_grid_meter();
    let mut core = Core::new(m.clone(), false);
    let mut site = Site::new(&m, 3000.0, 60.0);
    site.pv = None;
    let out = core.step(&image_with(
        &site,
        noon(),
        Some(DeviceValue::Grid(-1000.0)),
        0.0,
    ));
    assert_eq!(out.state.consumption_watts, None);
}
