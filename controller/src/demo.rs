//! The simulated village of `communalia demo`: an embedded MQTT broker, SunSpec inverter,
//! battery and meter on local Modbus TCP ports, a Tasmota or Shelly plug for every load of the
//! village example, and a small physics loop that ties them together (sunshine from the same
//! solar model the forecast uses, passing clouds, the battery covering the balance). Everything
//! speaks the real protocols, so the controller cannot tell it from a real site.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use communalia_config as cfg;
use communalia_drivers::modbus_sim::ModbusSim;
use communalia_drivers::mqtt::{MqttBus, MqttConfig};
use communalia_drivers::mqtt_sim::MqttSim;
use communalia_drivers::plug::PlugKind;
use communalia_drivers::shelly::sim::{ShellyModel, ShellyPlug};
use communalia_drivers::sunspec::sim::{Irradiance, SunSpecSim};
use communalia_drivers::tasmota::sim::TasmotaPlug;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::io::{Clock, plug_kind};
use crate::control::model::SiteModel;
use crate::forecast::solar;

/// The village example, built into the binary so the demo runs from any folder.
pub const SITE_TOML: &str = include_str!("../../config/examples/village/site.toml");
pub const ASSEMBLY_TOML: &str = include_str!("../../config/examples/village/assembly.toml");

/// Rated power of the simulated inverter (the example's arrays are 12 kWp).
const INVERTER_WATTS: f64 = 12_000.0;
const BATTERY_WH: f64 = 20_000.0;
const BATTERY_WATTS: f64 = 5_000.0;

/// Where the demo's parts listen.
#[derive(Debug, Clone)]
pub struct Ports {
    pub modbus_base: u16,
    pub mqtt: u16,
}

/// The village example's configuration, moved onto the demo's ports. Staleness limits are
/// stretched by `speed` since the devices' timestamps are in simulated time.
pub fn village_config(ports: &Ports, speed: f64) -> anyhow::Result<cfg::Config> {
    config_from(SITE_TOML, ASSEMBLY_TOML, ports, speed)
}

/// A site and assembly given as text, moved onto the demo's ports: device `i` (in file order)
/// listens on `modbus_base + i`.
pub fn config_from(
    site: &str,
    assembly: &str,
    ports: &Ports,
    speed: f64,
) -> anyhow::Result<cfg::Config> {
    let mut config = cfg::load(
        "village/site.toml",
        site.as_bytes().to_vec(),
        |name: &str| {
            if name == "assembly.toml" {
                Ok((
                    "village/assembly.toml".to_string(),
                    assembly.as_bytes().to_vec(),
                ))
            } else {
                Err(format!("{name} is not part of the demo"))
            }
        },
    )
    .map_err(|d| anyhow::anyhow!("the built-in village example is invalid:\n{d}"))?;
    for (i, d) in config.site.devices.iter_mut().enumerate() {
        let port = u16::try_from(i)
            .ok()
            .and_then(|i| ports.modbus_base.checked_add(i))
            .ok_or_else(|| anyhow::anyhow!("no Modbus port left above {}", ports.modbus_base))?;
        d.address = cfg::Endpoint {
            host: "127.0.0.1".into(),
            port,
        };
        d.stale_after = d.stale_after.mul_f64(speed.max(1.0));
    }
    if let Some(m) = config.site.mqtt.as_mut() {
        m.broker = cfg::Endpoint {
            host: "127.0.0.1".into(),
            port: ports.mqtt,
        };
    }
    Ok(config)
}

enum Plug {
    /// A Tasmota device and the relay (1-based) the load is on.
    Tasmota(MqttSim<TasmotaPlug>, usize),
    /// A Shelly device and the switch component the load is on.
    Shelly(MqttSim<ShellyPlug>, usize),
    Setpoint(watch::Receiver<f64>),
    /// Always on, not controllable (the telecom mast).
    Fixed(f64),
}

impl Plug {
    fn power(&self) -> f64 {
        match self {
            Plug::Tasmota(s, _) => s.with(|p| p.power()),
            Plug::Shelly(s, _) => s.with(|p| p.total_power()),
            Plug::Setpoint(w) => *w.borrow(),
            Plug::Fixed(w) => *w,
        }
    }
}

/// The running village.
pub struct Village {
    pub broker: SocketAddr,
    pub inverter: ModbusSim<SunSpecSim>,
    pub battery: ModbusSim<SunSpecSim>,
    pub meter: ModbusSim<SunSpecSim>,
    plugs: Arc<Vec<(String, Plug)>>,
    _setpoint_bus: Option<MqttBus>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Village {
    /// Starts the broker, the Modbus devices and the plugs of `config`, and the physics loop.
    pub async fn start(config: &cfg::Config, ports: &Ports, clock: Clock) -> anyhow::Result<Self> {
        Self::start_with_broker(config, ports, clock, None).await
    }

    /// As [`Self::start`], but with `broker` given the plugs use that MQTT broker (e.g. a real
    /// mosquitto in the scenario tests) and no embedded broker is started.
    pub async fn start_with_broker(
        config: &cfg::Config,
        ports: &Ports,
        clock: Clock,
        broker: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let mut tasks = Vec::new();
        let broker_addr = match broker {
            Some(addr) => addr,
            None => {
                let broker_addr: SocketAddr = ([127, 0, 0, 1], ports.mqtt).into();
                let listener = TcpListener::bind(broker_addr).await.with_context(|| {
                    format!("cannot start the demo's MQTT broker on {broker_addr} (is another broker running? choose another with --mqtt-port)")
                })?;
                let broker_addr = listener.local_addr()?;
                tasks.push(tokio::spawn(
                    crate::broker::Broker::new().serve(listener, std::future::pending()),
                ));
                broker_addr
            }
        };

        let speed = clock.speed();
        let modbus =
            |i: u16| -> SocketAddr { ([127, 0, 0, 1], ports.modbus_base.saturating_add(i)).into() };
        let mut inv = SunSpecSim::inverter(40000, INVERTER_WATTS, Irradiance::Fixed(0.0), false);
        inv.set_speed(speed);
        let mut bat = SunSpecSim::battery(40000, BATTERY_WH, BATTERY_WATTS, 70.0);
        bat.set_speed(speed);
        let mut met = SunSpecSim::meter(40000);
        met.set_speed(speed);
        let bind_err = |what: &str, a: SocketAddr| {
            format!(
                "cannot serve the simulated {what} on {a} (choose other ports with --modbus-port-base)"
            )
        };
        let inverter = inv
            .serve(1, modbus(0))
            .await
            .with_context(|| bind_err("inverter", modbus(0)))?;
        let battery = bat
            .serve(1, modbus(1))
            .await
            .with_context(|| bind_err("battery", modbus(1)))?;
        let meter = met
            .serve(1, modbus(2))
            .await
            .with_context(|| bind_err("meter", modbus(2)))?;

        let mqtt = MqttConfig::new(broker_addr.ip().to_string(), broker_addr.port(), "demo");
        // The plugs are set up as the installer docs recommend (Tasmota TelePeriod 10, Shelly
        // status notifications on), except the last Tasmota and the last Shelly of the file,
        // which keep their factory settings (TelePeriod 300; status_ntf off, so only
        // NotifyStatus on events/rpc): the controller must work with both.
        let kinds: Vec<Option<PlugKind>> = config
            .site
            .loads
            .iter()
            .map(|l| plug_kind(&l.control))
            .collect();
        let last_tasmota = kinds
            .iter()
            .rposition(|k| matches!(k, Some(PlugKind::Tasmota(..))));
        let last_shelly = kinds
            .iter()
            .rposition(|k| matches!(k, Some(PlugKind::Shelly(..))));
        let mut plugs = Vec::new();
        let mut setpoint_bus = None;
        for (i, l) in config.site.loads.iter().enumerate() {
            let stock = Some(i) == last_tasmota || Some(i) == last_shelly;
            let plug = match (plug_kind(&l.control), &l.control) {
                (Some(PlugKind::Tasmota(topics, _)), _) => {
                    let relay = usize::from(topics.relay.max(1));
                    let mut device = TasmotaPlug::new(topics, l.nominal.0).relays(relay);
                    if !stock {
                        device = device.tele_period(Duration::from_secs(10));
                    }
                    Plug::Tasmota(device.start(&mqtt), relay)
                }
                (Some(PlugKind::Shelly(topics)), _) => {
                    let channel = usize::from(topics.switch_id);
                    let model = if channel > 0 {
                        ShellyModel::Pro4Pm
                    } else {
                        ShellyModel::PlusPlugS
                    };
                    let mut device = ShellyPlug::new(topics.prefix, 0.0).model(model);
                    if let Some(s) = device.switches.get_mut(channel) {
                        s.nominal_watts = l.nominal.0;
                    }
                    if !stock {
                        device = device.status_ntf(true);
                    }
                    Plug::Shelly(device.start(&mqtt), channel)
                }
                (
                    _,
                    cfg::Control::Setpoint {
                        command_topic,
                        state_topic,
                        max,
                        ..
                    },
                ) => {
                    let bus = setpoint_bus.get_or_insert_with(|| {
                        MqttBus::start(&mqtt.with_client_id("demo-setpoints"))
                    });
                    let (tx, rx) = watch::channel(0.0);
                    let tx = Arc::new(tx);
                    let (max, state_topic) = (max.0, state_topic.clone());
                    let (echo_bus, sink) = (bus.clone(), Arc::clone(&tx));
                    bus.subscribe(
                        command_topic,
                        Arc::new(move |payload: &[u8]| {
                            let w = std::str::from_utf8(payload)
                                .ok()
                                .and_then(|s| s.trim().parse::<f64>().ok())
                                .filter(|w| w.is_finite())
                                .map(|w| w.clamp(0.0, max));
                            if let Some(w) = w {
                                sink.send_replace(w);
                                if let Some(t) = state_topic.clone() {
                                    let b = echo_bus.clone();
                                    tokio::spawn(async move {
                                        let _ = b.publish(&t, format!("{w:.0}")).await;
                                    });
                                }
                            }
                        }),
                    )
                    .await?;
                    Plug::Setpoint(rx)
                }
                // Measured only: always on, not controllable (the telecom mast).
                _ => Plug::Fixed(l.nominal.0),
            };
            plugs.push((l.id.clone(), plug));
        }
        let mut village = Self {
            broker: broker_addr,
            inverter,
            battery,
            meter,
            plugs: Arc::new(plugs),
            _setpoint_bus: setpoint_bus,
            _tasks: tasks,
        };
        village.physics(SiteModel::new(config.clone()), clock);
        Ok(village)
    }

    /// Every (real) half second: sunshine from the clear-sky model under passing clouds, the
    /// village's consumption from its plugs, the battery covering the difference.
    fn physics(&mut self, model: SiteModel, clock: Clock) {
        let inverter = self.inverter.device_handle();
        let battery = self.battery.device_handle();
        let meter = self.meter.device_handle();
        let plugs = Arc::clone(&self.plugs);
        let place = model.place();
        let arrays = model.arrays();
        self._tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = clock.now();
                let clear = place.map_or(0.0, |p| solar::clear_sky_watts(p, &arrays, now));
                let pv = (clear * clouds(now)).min(INVERTER_WATTS);
                inverter.with_device(|s| s.set_irradiance(pv / INVERTER_WATTS));
                let consumption: f64 = plugs.iter().map(|(_, p)| p.power()).sum();
                meter.with_device(|s| s.set_power(consumption));
                battery.with_device(|s| s.set_demand(consumption - pv));
            }
        }));
    }

    /// The simulated Tasmota plug of load `id`, to inspect it or inject faults.
    pub fn tasmota(&self, id: &str) -> Option<&MqttSim<TasmotaPlug>> {
        self.plugs.iter().find_map(|(i, p)| match p {
            Plug::Tasmota(s, _) if i == id => Some(s),
            _ => None,
        })
    }

    /// The simulated Shelly plug of load `id`, to inspect it or inject faults.
    pub fn shelly(&self, id: &str) -> Option<&MqttSim<ShellyPlug>> {
        self.plugs.iter().find_map(|(i, p)| match p {
            Plug::Shelly(s, _) if i == id => Some(s),
            _ => None,
        })
    }

    /// The relay of load `id`'s plug (or a setpoint above zero); `None` for a load without one.
    pub fn plug_on(&self, id: &str) -> Option<bool> {
        self.plugs.iter().find_map(|(i, p)| match p {
            _ if i != id => None,
            Plug::Tasmota(s, relay) => Some(s.with(|p| p.relay(*relay))),
            Plug::Shelly(s, channel) => Some(s.with(|p| p.output(*channel))),
            Plug::Setpoint(w) => Some(*w.borrow() > 0.0),
            Plug::Fixed(_) => None,
        })
    }

    /// The fail-safe each plug holds, by load id: on after a power cut (`Some(true)`), off
    /// (`Some(false)`), or "restore the last state" (`None`).
    pub fn plug_fail_safes(&self) -> Vec<(String, Option<bool>)> {
        self.plugs
            .iter()
            .filter_map(|(id, p)| {
                let safe = match p {
                    Plug::Tasmota(s, _) => s.with(|p| match p.power_on_state {
                        0 => Some(false),
                        1 | 4 | 5 => Some(true),
                        _ => None,
                    }),
                    Plug::Shelly(s, channel) => s.with(|p| match p.initial_state(*channel) {
                        "on" => Some(true),
                        "off" => Some(false),
                        _ => None,
                    }),
                    Plug::Setpoint(_) | Plug::Fixed(_) => return None,
                };
                Some((id.clone(), safe))
            })
            .collect()
    }

    /// A power cut and return for every plug: each relay follows its own fail-safe.
    pub fn power_cycle_plugs(&self) {
        for (_, p) in self.plugs.iter() {
            match p {
                Plug::Tasmota(s, _) => s.with(TasmotaPlug::power_cycle),
                Plug::Shelly(s, _) => s.with(ShellyPlug::power_cycle),
                Plug::Setpoint(_) | Plug::Fixed(_) => {}
            }
        }
    }

    /// The power each plug draws now, by load id.
    pub fn plug_watts(&self) -> Vec<(String, f64)> {
        self.plugs
            .iter()
            .map(|(id, p)| (id.clone(), p.power()))
            .collect()
    }
}

/// Cloud cover as the share of clear-sky power that gets through: a clear morning, clouds
/// building in the afternoon, and one grey day in three, so evening scarcity shows.
pub fn clouds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    let day = t.timestamp().div_euclid(86_400);
    let hour = t.timestamp().rem_euclid(86_400) as f64 / 3600.0;
    let base = if day % 3 == 2 { 0.45 } else { 0.85 };
    let afternoon = if hour > 11.0 {
        0.25 * ((hour - 11.0) / 4.0).min(1.0)
    } else {
        0.0
    };
    let passing = 0.1 * (hour * 2.7).sin();
    (base - afternoon + passing).clamp(0.05, 1.0)
}
