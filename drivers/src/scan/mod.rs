//! `communalia scan`, the pure part: what a SunSpec model chain means (which roles a device can
//! take), what was found where, and the draft site it adds up to. The plug replies are parsed
//! in [`plugs`]; the network side (Modbus probing, one MQTT session) is in [`io`].

pub mod io;
pub mod plugs;

use serde::Serialize;

use crate::sunspec::CommonInfo;
use crate::sunspec::client::{BATTERY_MODELS, INVERTER_MODELS, METER_MODELS};

pub use plugs::{ShellyFinding, ShellySwitch, TasmotaFinding};

/// The unit ids tried when none are given: 1 (most SunSpec devices), 2 and 3 (SMA and
/// gateways with several devices), 100 (a Victron GX's system service), 126 (SMA's SunSpec
/// unit), 200 and 247 (the top of the range some gateways use).
pub const COMMON_UNITS: [u8; 7] = [1, 2, 3, 100, 126, 200, 247];

/// What a SunSpec model id is, in a few words; `None` for ids this scan does not name.
pub fn model_name(id: u16) -> Option<&'static str> {
    Some(match id {
        1 => "common",
        101 => "single-phase inverter",
        102 => "split-phase inverter",
        103 => "three-phase inverter",
        111 => "single-phase inverter (float)",
        112 => "split-phase inverter (float)",
        113 => "three-phase inverter (float)",
        120 => "nameplate",
        121 => "basic settings",
        122 => "status",
        123 => "immediate controls",
        124 => "storage",
        160 => "MPPT strings",
        201 => "single-phase meter",
        202 => "split-phase meter",
        203 => "three-phase wye meter",
        204 => "three-phase delta meter",
        211..=214 => "meter (float)",
        701 => "DER AC measurement",
        702 => "DER capacity",
        704 => "DER AC controls",
        802 => "battery",
        _ => return None,
    })
}

/// A role a SunSpec device takes in the site file (`devices[].role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An inverter model (101-103, 111-113 or 701).
    PvInverter,
    /// A storage model (124 or 802).
    Battery,
    /// A meter model (201-204).
    Meter,
}

impl Role {
    /// The site file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PvInverter => "pv_inverter",
            Role::Battery => "battery",
            Role::Meter => "meter",
        }
    }
}

/// What a model chain means for the site file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ChainMeaning {
    /// Roles the device can take, in the order PV inverter, battery, meter.
    pub roles: Vec<Role>,
    /// Whether the device can limit its output (123 or 704).
    pub controls: bool,
    /// How many meter models the chain carries (the driver reads the first).
    pub meters: usize,
    /// Float meter models (211-214), which the driver does not read.
    pub float_meters: bool,
}

impl ChainMeaning {
    /// PV and storage models at one address: a hybrid inverter (or a battery inverter whose
    /// AC side reports as an inverter; the installer tells them apart).
    pub fn is_hybrid(&self) -> bool {
        self.roles.contains(&Role::PvInverter) && self.roles.contains(&Role::Battery)
    }
}

/// Reads a model chain (ids in chain order): which roles, which controls.
pub fn chain_meaning(ids: &[u16]) -> ChainMeaning {
    let has = |set: &[u16]| ids.iter().any(|i| set.contains(i));
    let mut roles = Vec::new();
    if has(INVERTER_MODELS) {
        roles.push(Role::PvInverter);
    }
    if has(BATTERY_MODELS) {
        roles.push(Role::Battery);
    }
    if has(METER_MODELS) {
        roles.push(Role::Meter);
    }
    ChainMeaning {
        roles,
        controls: has(&[123, 704]),
        meters: ids.iter().filter(|i| METER_MODELS.contains(i)).count(),
        float_meters: has(&[211, 212, 213, 214]),
    }
}

/// A battery's nameplate as its storage models report it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct BatteryNameplate {
    /// Model 802 `WHRtg`.
    pub capacity_wh: Option<f64>,
    /// Model 802 `WChaRteMax` (or 124 `WChaMax`).
    pub max_charge_watts: Option<f64>,
    /// Model 802 `WDisChaRteMax` (or 124 `WChaMax`).
    pub max_discharge_watts: Option<f64>,
    /// State of charge now.
    pub soc_percent: Option<f64>,
}

/// A SunSpec device found at one address and unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SunSpecFinding {
    /// Unit id it answered on.
    pub unit: u8,
    /// Other unit ids that answered with the same map (a device that ignores the unit id).
    pub same_on_units: Vec<u8>,
    /// Base address of the map.
    pub base: u16,
    /// Model ids in chain order.
    pub models: Vec<u16>,
    /// The common model, if it could be read.
    pub common: Option<CommonInfo>,
    /// The storage nameplate, when the chain has a storage model.
    pub battery: Option<BatteryNameplate>,
    /// What could not be read beyond the chain.
    pub errors: Vec<String>,
}

/// Something found on a Modbus TCP address.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModbusFinding {
    /// A SunSpec map.
    Sunspec(Box<SunSpecFinding>),
    /// No SunSpec map, but input registers that read like an Eastron SDM630 (a line voltage
    /// and a mains frequency where the SDM630 keeps them).
    Sdm630 {
        /// Unit id.
        unit: u8,
        /// Phase 1 voltage read (V).
        voltage: f64,
        /// Frequency read (Hz).
        frequency: f64,
    },
    /// No SunSpec map, but holding registers that read like a Victron GX system service
    /// (battery voltage and a state of charge at 840-843).
    Victron {
        /// Unit id.
        unit: u8,
        /// State of charge read (%).
        soc_percent: f64,
    },
}

impl ModbusFinding {
    /// The unit id of the finding.
    pub fn unit(&self) -> u8 {
        match self {
            ModbusFinding::Sunspec(s) => s.unit,
            ModbusFinding::Sdm630 { unit, .. } | ModbusFinding::Victron { unit, .. } => *unit,
        }
    }
}

/// A unit that gave nothing usable, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitMiss {
    /// Unit id.
    pub unit: u8,
    /// Whether something answered for it (an exception or an unknown register layout) as
    /// opposed to silence or a gateway saying the device does not respond.
    pub answered: bool,
    /// What happened.
    pub reason: String,
}

/// What one Modbus TCP address gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddressReport {
    /// `host:port`.
    pub address: String,
    /// Why the address could not be scanned at all (unreachable, or the scan ran out of time).
    pub error: Option<String>,
    /// Devices found, by unit.
    pub found: Vec<ModbusFinding>,
    /// Units tried that gave nothing usable.
    pub missed: Vec<UnitMiss>,
}

/// What the MQTT broker gave.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MqttReport {
    /// `host:port`.
    pub broker: String,
    /// Why the broker could not be scanned.
    pub error: Option<String>,
    /// Tasmota devices, from their last wills.
    pub tasmota: Vec<TasmotaFinding>,
    /// Shelly Gen2+ devices, from their `online` topics.
    pub shelly: Vec<ShellyFinding>,
}

/// Everything a scan found.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ScanReport {
    /// One entry per `--modbus` address.
    pub modbus: Vec<AddressReport>,
    /// The broker, when one was given.
    pub mqtt: Option<MqttReport>,
}

/// The device kind of a draft entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftDeviceKind {
    /// `kind = "sunspec"` with a role (and `measures` for a meter).
    Sunspec {
        /// The role.
        role: Role,
        /// Base address found.
        base_address: u16,
    },
    /// `kind = "sdm630"`.
    Sdm630,
    /// `kind = "victron"`.
    Victron,
}

/// One `[[devices]]` entry of the draft.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftDevice {
    /// Device id.
    pub id: String,
    /// Name shown on the page.
    pub name: String,
    /// Kind.
    pub kind: DraftDeviceKind,
    /// `host:port`.
    pub address: String,
    /// Unit id.
    pub unit_id: u8,
    /// What was found, and what the installer must check.
    pub comments: Vec<String>,
}

/// The draft's `[battery]` table. `None` values must be filled in by the installer.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftBattery {
    /// Device id.
    pub device: String,
    /// Nameplate as read.
    pub nameplate: BatteryNameplate,
    /// Notes.
    pub comments: Vec<String>,
}

/// How a draft load is switched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftControl {
    /// `kind = "tasmota"`.
    Tasmota {
        /// The device's Topic.
        topic: String,
        /// The FullTopic, `None` for the default.
        full_topic: Option<String>,
        /// Relay number (1..=8).
        relay: u8,
    },
    /// `kind = "shelly"`.
    Shelly {
        /// Topic prefix.
        device_id: String,
        /// Switch component id.
        switch_id: u8,
    },
}

/// One `[[loads]]` entry of the draft.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftLoad {
    /// Load id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The power it drew when scanned, if it drew any (else the installer fills it in).
    pub nominal_watts: Option<f64>,
    /// How it is switched.
    pub control: DraftControl,
    /// Notes.
    pub comments: Vec<String>,
}

/// A draft site: what the scan found, in the site file's terms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Draft {
    /// Devices, in scan order.
    pub devices: Vec<DraftDevice>,
    /// The battery table, when a storage device was found.
    pub battery: Option<DraftBattery>,
    /// The broker the plugs were found on.
    pub broker: Option<String>,
    /// One load per plug channel.
    pub loads: Vec<DraftLoad>,
    /// What was looked at and not used: unreachable addresses, offline or silent plugs.
    pub notes: Vec<String>,
}

/// An id the site file accepts (letters, digits, `_`, `-`), from any name: lower case, other
/// characters become `_`, runs collapse; `fallback` when nothing is left.
pub fn slug(name: &str, fallback: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_owned();
    if out.is_empty() {
        fallback.to_owned()
    } else {
        out
    }
}

/// Hands out unique ids: the second `x` becomes `x_2`.
#[derive(Debug, Default)]
struct Ids(std::collections::BTreeSet<String>);

impl Ids {
    fn take(&mut self, wanted: &str) -> String {
        let mut id = wanted.to_owned();
        let mut n = 2;
        while self.0.contains(&id) {
            id = format!("{wanted}_{n}");
            n += 1;
        }
        self.0.insert(id.clone());
        id
    }
}

fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn sunspec_devices(address: &str, f: &SunSpecFinding, ids: &mut Ids, draft: &mut Draft) {
    let meaning = chain_meaning(&f.models);
    let common = f.common.clone().unwrap_or_default();
    let label = [text(&common.manufacturer), text(&common.model)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let chain = f
        .models
        .iter()
        .map(|m| match model_name(*m) {
            Some(n) => format!("{m} ({n})"),
            None => m.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut found = vec![format!(
        "found: SunSpec at {} unit {}, base {}: {}{}",
        address,
        f.unit,
        f.base,
        if label.is_empty() {
            "no manufacturer or model given".to_owned()
        } else {
            label.clone()
        },
        text(&common.serial)
            .map(|s| format!(", serial {s}"))
            .unwrap_or_default()
    )];
    found.push(format!("models: {chain}"));
    if !f.same_on_units.is_empty() {
        found.push(format!(
            "the same map answers on units {:?} too: the device ignores the unit id",
            f.same_on_units
        ));
    }
    for e in &f.errors {
        found.push(format!("not read: {e}"));
    }
    if meaning.roles.is_empty() {
        draft.notes.push(format!(
            "{address} unit {}: a SunSpec map without inverter, storage or meter model ({chain}); not used",
            f.unit
        ));
        return;
    }
    if meaning.float_meters {
        found.push("the chain has a float meter model (211-214), which is not read".into());
    }
    let hybrid = meaning.is_hybrid();
    for role in &meaning.roles {
        let base_id = match role {
            Role::PvInverter => "inverter",
            Role::Battery => "battery",
            Role::Meter => "meter",
        };
        let id = ids.take(base_id);
        let what = match role {
            Role::PvInverter => "PV inverter",
            Role::Battery => "battery",
            Role::Meter => "meter",
        };
        let name = if label.is_empty() {
            format!("{what} at {address}")
        } else {
            format!("{label} ({what})")
        };
        let mut comments = found.clone();
        match role {
            Role::PvInverter if hybrid => comments.push(
                "PV and storage models at one address: a hybrid inverter, written as a PV inverter and a battery on the same address and unit; if it is a battery inverter without PV, delete this entry".into(),
            ),
            Role::PvInverter if !meaning.controls => comments
                .push("no controls model (123 or 704): its output cannot be limited".into()),
            Role::Battery if hybrid => {
                comments.push("the storage side of the hybrid inverter above".into())
            }
            Role::Meter => {
                comments.push(
                    "CHECK `measures`: where the meter sits (consumption, grid or pv); the scan cannot tell"
                        .into(),
                );
                if meaning.meters > 1 {
                    comments.push(format!(
                        "the chain has {} meter models; the first is read",
                        meaning.meters
                    ));
                }
            }
            _ => {}
        }
        if *role == Role::Battery && draft.battery.is_none() {
            draft.battery = Some(DraftBattery {
                device: id.clone(),
                nameplate: f.battery.unwrap_or_default(),
                comments: Vec::new(),
            });
        } else if *role == Role::Battery {
            comments.push(
                "a second battery: the site file's [battery] names one device; this one is read but not planned with"
                    .into(),
            );
        }
        draft.devices.push(DraftDevice {
            id,
            name,
            kind: DraftDeviceKind::Sunspec {
                role: *role,
                base_address: f.base,
            },
            address: address.to_owned(),
            unit_id: f.unit,
            comments,
        });
    }
}

fn round_watts(w: Option<f64>) -> Option<f64> {
    w.filter(|w| w.is_finite() && *w >= 1.0).map(f64::round)
}

/// The draft site a scan adds up to: every device found, one load per plug channel (ids from
/// what each device calls itself), the battery's nameplate where the device gave it, and a note
/// for everything looked at and not used.
pub fn draft(report: &ScanReport) -> Draft {
    let mut d = Draft::default();
    let mut device_ids = Ids::default();
    for a in &report.modbus {
        if let Some(e) = &a.error {
            d.notes.push(format!("{}: {e}", a.address));
        }
        for f in &a.found {
            match f {
                ModbusFinding::Sunspec(s) => sunspec_devices(&a.address, s, &mut device_ids, &mut d),
                ModbusFinding::Sdm630 {
                    unit,
                    voltage,
                    frequency,
                } => d.devices.push(DraftDevice {
                    id: device_ids.take("meter"),
                    name: format!("SDM630 meter at {}", a.address),
                    kind: DraftDeviceKind::Sdm630,
                    address: a.address.clone(),
                    unit_id: *unit,
                    comments: vec![
                        format!(
                            "found: no SunSpec map at unit {unit}, but input registers that read like an Eastron SDM630 ({voltage:.0} V, {frequency:.1} Hz): recognised by its values, not by an id; check the meter's model"
                        ),
                        "CHECK `measures`: where the meter sits (consumption, grid or pv)".into(),
                    ],
                }),
                ModbusFinding::Victron { unit, soc_percent } => {
                    let id = device_ids.take("victron");
                    if d.battery.is_none() {
                        d.battery = Some(DraftBattery {
                            device: id.clone(),
                            nameplate: BatteryNameplate {
                                soc_percent: Some(*soc_percent),
                                ..BatteryNameplate::default()
                            },
                            comments: Vec::new(),
                        });
                    }
                    d.devices.push(DraftDevice {
                        id,
                        name: format!("Victron GX at {}", a.address),
                        kind: DraftDeviceKind::Victron,
                        address: a.address.clone(),
                        unit_id: *unit,
                        comments: vec![format!(
                            "found: no SunSpec map at unit {unit}, but holding registers 840-843 that read like a Victron GX system service (state of charge {soc_percent:.0} %)"
                        )],
                    });
                }
            }
        }
    }
    let Some(m) = &report.mqtt else {
        return d;
    };
    if let Some(e) = &m.error {
        d.notes.push(format!("MQTT broker {}: {e}", m.broker));
        if m.tasmota.is_empty() && m.shelly.is_empty() {
            return d;
        }
    }
    d.broker = Some(m.broker.clone());
    let mut load_ids = Ids::default();
    for t in &m.tasmota {
        if !t.online {
            d.notes.push(format!(
                "Tasmota {} is offline (its last will says so); not drafted",
                t.topic
            ));
            continue;
        }
        for ch in t.channels() {
            let (id, name) = t.load_name(ch.relay);
            let mut comments = t.summary();
            comments.extend(ch.comments.iter().cloned());
            d.loads.push(DraftLoad {
                id: load_ids.take(&id),
                name,
                nominal_watts: round_watts(ch.watts),
                control: DraftControl::Tasmota {
                    topic: t.topic.clone(),
                    full_topic: t.custom_full_topic(),
                    relay: ch.relay,
                },
                comments,
            });
        }
    }
    for s in &m.shelly {
        if !s.online {
            d.notes.push(format!(
                "Shelly {} is offline (its online topic says false); not drafted",
                s.prefix
            ));
            continue;
        }
        if s.switches.is_empty() && !s.status_answered {
            // Silent or garbled: the common case, one switch, is assumed and said so.
            let sw = ShellySwitch {
                id: 0,
                name: None,
                output: None,
                power_watts: None,
                energy_wh: None,
            };
            let (id, name) = s.load_name(&sw);
            let mut comments = s.summary(&sw);
            comments.push(
                "CHECK: it never answered a status request; one switch (switch:0) is assumed"
                    .into(),
            );
            d.loads.push(DraftLoad {
                id: load_ids.take(&id),
                name,
                nominal_watts: None,
                control: DraftControl::Shelly {
                    device_id: s.prefix.clone(),
                    switch_id: 0,
                },
                comments,
            });
            continue;
        }
        if s.switches.is_empty() {
            d.notes.push(format!(
                "Shelly {}: no switch component found{}; not drafted",
                s.prefix,
                if s.errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.errors.join("; "))
                }
            ));
            continue;
        }
        for sw in &s.switches {
            let (id, name) = s.load_name(sw);
            d.loads.push(DraftLoad {
                id: load_ids.take(&id),
                name,
                nominal_watts: round_watts(sw.power_watts),
                control: DraftControl::Shelly {
                    device_id: s.prefix.clone(),
                    switch_id: sw.id,
                },
                comments: s.summary(sw),
            });
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverter_storage_and_meter_models_give_their_roles() {
        assert_eq!(
            chain_meaning(&[1, 103, 120, 123]).roles,
            vec![Role::PvInverter]
        );
        assert!(chain_meaning(&[1, 103, 120, 123]).controls);
        assert_eq!(chain_meaning(&[1, 124, 802]).roles, vec![Role::Battery]);
        assert_eq!(chain_meaning(&[1, 203]).roles, vec![Role::Meter]);
        assert_eq!(
            chain_meaning(&[1, 701, 702, 704]).roles,
            vec![Role::PvInverter]
        );
        assert!(chain_meaning(&[1, 120, 160]).roles.is_empty());
    }

    #[test]
    fn pv_and_storage_models_at_one_address_are_a_hybrid_written_as_two_devices() {
        let m = chain_meaning(&[1, 103, 120, 123, 160, 124, 802]);
        assert!(m.is_hybrid());
        let report = ScanReport {
            modbus: vec![AddressReport {
                address: "10.0.0.5:502".into(),
                error: None,
                found: vec![ModbusFinding::Sunspec(Box::new(SunSpecFinding {
                    unit: 1,
                    same_on_units: vec![],
                    base: 40000,
                    models: vec![1, 103, 120, 123, 160, 124, 802],
                    common: Some(CommonInfo {
                        manufacturer: Some("Acme".into()),
                        model: Some("Hybrid 10".into()),
                        version: None,
                        serial: Some("H1".into()),
                    }),
                    battery: Some(BatteryNameplate {
                        capacity_wh: Some(10_000.0),
                        ..Default::default()
                    }),
                    errors: vec![],
                }))],
                missed: vec![],
            }],
            mqtt: None,
        };
        let d = draft(&report);
        let roles: Vec<_> = d
            .devices
            .iter()
            .map(|x| (x.id.as_str(), x.address.as_str(), x.unit_id, x.kind.clone()))
            .collect();
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0].0, "inverter");
        assert_eq!(roles[1].0, "battery");
        assert_eq!((roles[0].1, roles[0].2), (roles[1].1, roles[1].2));
        assert!(d.devices[0].comments.iter().any(|c| c.contains("hybrid")));
        let b = d.battery.unwrap();
        assert_eq!(b.device, "battery");
        assert_eq!(b.nameplate.capacity_wh, Some(10_000.0));
    }

    #[test]
    fn ids_are_slugs_made_unique() {
        assert_eq!(slug("Clinic Fridge #2", "x"), "clinic_fridge_2");
        assert_eq!(slug("  ", "load"), "load");
        assert_eq!(slug("shellyplusplugs-A1B2", "x"), "shellyplusplugs-a1b2");
        assert_eq!(slug("Küche", "x"), "k_che");
        let mut ids = Ids::default();
        assert_eq!(ids.take("meter"), "meter");
        assert_eq!(ids.take("meter"), "meter_2");
        assert_eq!(ids.take("meter"), "meter_3");
    }

    #[test]
    fn unreachable_addresses_and_a_silent_broker_become_notes() {
        let report = ScanReport {
            modbus: vec![AddressReport {
                address: "10.0.0.9:502".into(),
                error: Some("cannot connect: connection refused".into()),
                found: vec![],
                missed: vec![],
            }],
            mqtt: Some(MqttReport {
                broker: "10.0.0.2:1883".into(),
                error: Some("no connection within 5s".into()),
                ..Default::default()
            }),
        };
        let d = draft(&report);
        assert!(d.devices.is_empty() && d.loads.is_empty() && d.broker.is_none());
        assert_eq!(d.notes.len(), 2);
        assert!(d.notes[0].contains("10.0.0.9:502") && d.notes[1].contains("10.0.0.2:1883"));
    }
}
