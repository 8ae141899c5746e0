//! The shipped examples stay valid, and mean what their comments say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use communalia_config::{Config, Control, DeviceKind, SunspecRole};

fn load_example(name: &str) -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let site = std::fs::read(dir.join("site.toml")).unwrap();
    communalia_config::load(&format!("{name}/site.toml"), site, |file: &str| {
        let path = dir.join(file);
        std::fs::read(&path)
            .map(|b| (format!("{name}/{file}"), b))
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|d| panic!("example {name} is invalid:\n{d}"))
}

#[test]
fn the_village_example_is_valid_and_describes_the_village() {
    let c = load_example("village");
    let site = &c.site;
    let kwp: f64 = site.pv_arrays.iter().map(|a| a.kwp).sum();
    assert_eq!(kwp, 12.0);
    assert_eq!(site.battery.as_ref().unwrap().capacity.0, 20_000.0);
    assert!(site.devices.iter().any(|d| matches!(
        d.kind,
        DeviceKind::Sunspec {
            role: SunspecRole::Meter(_),
            ..
        }
    )));
    let homes = site
        .loads
        .iter()
        .filter(|l| l.id.starts_with("home_"))
        .count();
    assert_eq!(homes, 6);
    let pump = site.load("water_pump").unwrap();
    assert_eq!(pump.daily_need.unwrap().energy.0, 6000.0);
    assert_eq!(pump.daily_need.unwrap().deadline.to_string(), "20:00");
    let names: Vec<&str> = c.assembly.tiers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "health",
            "cold_storage",
            "water",
            "homes_and_school",
            "workshop",
            "comfort"
        ]
    );
    assert_eq!(c.assembly.rank_of("clinic_fridge"), Some(1));
    assert!(
        site.loads
            .iter()
            .any(|l| matches!(l.control, Control::MeasuredOnly))
    );
}

#[test]
fn the_minimal_example_is_valid() {
    let c = load_example("minimal");
    assert_eq!(c.site.loads.len(), 1);
    assert_eq!(c.assembly.tiers.len(), 1);
}
