//! The IO half of the cycle: a poller task per Modbus device, the plugs on one MQTT connection,
//! and actuation. Each device is read by its own task with its own timeout and publishes its last
//! good value into a `watch`; the cycle only takes a snapshot of those, so a slow or dead device
//! never delays it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use communalia_config as cfg;
use communalia_drivers::modbus::ModbusConfig;
use communalia_drivers::mqtt::{MqttBus, MqttConfig};
use communalia_drivers::plug::{MqttPlug, PlugKind, PlugOptions};
use communalia_drivers::regmap::{self, RegisterMapDevice};
use communalia_drivers::shelly::ShellyTopics;
use communalia_drivers::sunspec::client::SunSpecDevice;
use communalia_drivers::tasmota::{SensorKeys, TasmotaTopics};
use communalia_drivers::{BatteryReader, DriverError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::core::{Action, Command, DeviceInput, DeviceValue, LoadInput, ProcessImage};

/// The controller's time: real, or the demo's accelerated day.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    real_start: Instant,
    start: DateTime<Utc>,
    speed: f64,
}

impl Clock {
    pub fn real() -> Self {
        Self::accelerated(Utc::now(), 1.0)
    }

    /// Time that starts at `start` and runs `speed` times faster than the wall clock.
    pub fn accelerated(start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            real_start: Instant::now(),
            start,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let secs = self.real_start.elapsed().as_secs_f64() * self.speed;
        self.start + chrono::Duration::milliseconds((secs * 1000.0) as i64)
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }
}

enum Reader {
    SunSpec(SunSpecDevice),
    Map(RegisterMapDevice),
}

/// Reads one device by its role.
async fn read(reader: &mut Reader, kind: &cfg::DeviceKind) -> Result<DeviceValue, DriverError> {
    use cfg::{DeviceKind as K, Measures, SunspecRole as R};
    let measured = |m: Measures, w: f64| match m {
        Measures::Pv => DeviceValue::Pv(w),
        Measures::Consumption => DeviceValue::Meter(w),
        Measures::Grid => DeviceValue::Grid(w),
    };
    match (reader, kind) {
        (Reader::SunSpec(d), K::Sunspec { role, .. }) => match role {
            R::PvInverter => {
                let r = d.read_inverter().await?;
                r.ac_power
                    .map(|w| DeviceValue::Pv(w.0))
                    .ok_or(DriverError::NotImplemented("inverter AC power"))
            }
            R::Battery => d.read_battery().await.map(DeviceValue::Battery),
            R::Meter(m) => {
                let r = d.read_meter().await?;
                r.power
                    .map(|w| measured(*m, w.0))
                    .ok_or(DriverError::NotImplemented("meter power"))
            }
        },
        (Reader::Map(d), K::Sdm630 { measures }) => Ok(measured(*measures, d.power().await?.0)),
        (Reader::Map(d), _) => {
            let r = d.read_all().await?;
            Ok(DeviceValue::Battery(regmap::victron_battery(&r)))
        }
        (Reader::SunSpec(_), _) => Err(DriverError::Layout("not a SunSpec device".into())),
    }
}

/// Starts a poller per device; returns the watches the cycle snapshots.
pub fn spawn_pollers(
    devices: &[cfg::Device],
    interval: Duration,
    clock: Clock,
    tasks: &mut JoinSet<()>,
) -> Vec<watch::Receiver<DeviceInput>> {
    devices
        .iter()
        .map(|d| {
            let (tx, rx) = watch::channel(DeviceInput {
                id: d.id.clone(),
                last: None,
                error: None,
            });
            let mut modbus = ModbusConfig::new(d.address.to_string());
            modbus.unit = d.unit_id;
            modbus.timeout = d.timeout;
            modbus.backoff_max = Duration::from_secs(10);
            let mut reader = match d.kind {
                cfg::DeviceKind::Sunspec { .. } => Reader::SunSpec(SunSpecDevice::new(modbus)),
                cfg::DeviceKind::Sdm630 { .. } => {
                    Reader::Map(RegisterMapDevice::new(modbus, &regmap::SDM630))
                }
                cfg::DeviceKind::Victron => {
                    Reader::Map(RegisterMapDevice::new(modbus, &regmap::VICTRON_GX))
                }
            };
            let d = d.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // A reading may take several requests; the whole read gets twice the
                    // per-request timeout.
                    let result = tokio::time::timeout(d.timeout * 2, read(&mut reader, &d.kind))
                        .await
                        .unwrap_or(Err(DriverError::Timeout(d.timeout * 2)));
                    let stop = tx.is_closed();
                    tx.send_modify(|input| match result {
                        Ok(v) => {
                            input.last = Some((clock.now(), v));
                            input.error = None;
                        }
                        Err(e) => {
                            tracing::debug!(device = %d.id, error = %e, "device read failed");
                            input.error = Some(e.to_string());
                        }
                    });
                    if stop {
                        return;
                    }
                }
            });
            rx
        })
        .collect()
}

/// The plug a load's control names (its protocol and topics), `None` for setpoint and
/// measured-only loads.
pub fn plug_kind(control: &cfg::Control) -> Option<PlugKind> {
    match control {
        cfg::Control::Tasmota {
            topic,
            full_topic,
            relay,
            ..
        } => Some(PlugKind::Tasmota(
            TasmotaTopics::new(topic.clone())
                .full_topic(full_topic.clone())
                .relay(*relay),
            SensorKeys::default(),
        )),
        cfg::Control::Shelly {
            device_id,
            switch_id,
        } => {
            let mut topics = ShellyTopics::new(device_id.clone());
            topics.switch_id = *switch_id;
            Some(PlugKind::Shelly(topics))
        }
        cfg::Control::Setpoint { .. } | cfg::Control::MeasuredOnly => None,
    }
}

/// A setpoint's last reported watts and when they came.
pub type SetpointReport = Option<(f64, Instant)>;

/// How a controlled load is reached.
pub enum LoadLink {
    Plug(Arc<MqttPlug>),
    Setpoint {
        command_topic: String,
        /// Last reported watts and when (from the state topic, or our own command without one).
        state: watch::Receiver<SetpointReport>,
        echo: Option<Arc<watch::Sender<SetpointReport>>>,
    },
}

/// The plugs and setpoints of the site, on one MQTT connection.
pub struct Loads {
    pub bus: MqttBus,
    pub links: BTreeMap<String, LoadLink>,
    stale_after: Duration,
    /// Tasmota `TelePeriod`s the site file sets, by load id (others keep the device's own).
    tele_periods: BTreeMap<String, u16>,
}

impl Loads {
    /// Connects to the broker and attaches every controlled load.
    pub async fn attach(
        mqtt: &cfg::Mqtt,
        loads: &[cfg::Load],
        stale_after: Duration,
    ) -> anyhow::Result<Self> {
        if mqtt.tls {
            // Never fall back to plain text when the site asked for TLS.
            anyhow::bail!(
                "[mqtt] tls = true, but this build speaks MQTT without TLS; use a broker on the \
                 local network without TLS, or a TLS-terminating proxy on the controller"
            );
        }
        let mut config = MqttConfig::new(
            mqtt.broker.host.clone(),
            mqtt.broker.port,
            mqtt.client_id.clone(),
        );
        if let (Some(user), Some(file)) = (&mqtt.username, &mqtt.password_file) {
            let password = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("reading MQTT password file {file}: {e}"))?;
            config = config.credentials(user.clone(), password.trim().to_owned());
        }
        let bus = MqttBus::start(&config);
        let options = PlugOptions {
            stale_after,
            ..PlugOptions::default()
        };
        let mut links = BTreeMap::new();
        let tele_periods = loads
            .iter()
            .filter_map(|l| match &l.control {
                cfg::Control::Tasmota {
                    tele_period_secs: Some(secs),
                    ..
                } => Some((l.id.clone(), *secs)),
                _ => None,
            })
            .collect();
        for l in loads {
            if let Some(kind) = plug_kind(&l.control) {
                let plug = MqttPlug::attach(&bus, kind, options).await?;
                links.insert(l.id.clone(), LoadLink::Plug(Arc::new(plug)));
                continue;
            }
            let link = match &l.control {
                cfg::Control::Setpoint {
                    command_topic,
                    state_topic,
                    ..
                } => {
                    let (tx, rx) = watch::channel(None);
                    let tx = Arc::new(tx);
                    let echo = match state_topic {
                        Some(topic) => {
                            let tx = Arc::clone(&tx);
                            let id = l.id.clone();
                            bus.subscribe(
                                topic,
                                Arc::new(move |payload: &[u8]| {
                                    match std::str::from_utf8(payload)
                                        .ok()
                                        .and_then(|s| s.trim().parse::<f64>().ok())
                                        .filter(|w| w.is_finite())
                                    {
                                        Some(w) => {
                                            tx.send_replace(Some((w, Instant::now())));
                                        }
                                        None => tracing::warn!(
                                            load = %id,
                                            payload = %String::from_utf8_lossy(payload),
                                            "setpoint state is not a number of watts; ignored"
                                        ),
                                    }
                                }),
                            )
                            .await?;
                            None
                        }
                        None => Some(tx),
                    };
                    LoadLink::Setpoint {
                        command_topic: command_topic.clone(),
                        state: rx,
                        echo,
                    }
                }
                _ => continue,
            };
            links.insert(l.id.clone(), link);
        }
        Ok(Self {
            bus,
            links,
            stale_after,
            tele_periods,
        })
    }

    /// What every load last reported.
    pub fn snapshot(&self, faults: &BTreeMap<String, String>) -> BTreeMap<String, LoadInput> {
        self.links
            .iter()
            .map(|(id, link)| {
                let input = match link {
                    LoadLink::Plug(p) => {
                        let s = p.status();
                        LoadInput {
                            online: s.online,
                            on: s.on,
                            power: p.power().ok().map(|w| w.0),
                            fault: faults.get(id).cloned(),
                        }
                    }
                    LoadLink::Setpoint { state, .. } => {
                        let fresh = (*state.borrow())
                            .filter(|(_, at)| at.elapsed() <= self.stale_after)
                            .map(|(w, _)| w);
                        LoadInput {
                            online: None,
                            on: fresh.map(|w| w > 0.0),
                            power: fresh,
                            fault: faults.get(id).cloned(),
                        }
                    }
                };
                (id.clone(), input)
            })
            .collect()
    }

    /// Sets each plug's own fail-safe (health loads come back on after a power cut, others off),
    /// and the Tasmota `TelePeriod` where the site file sets one (nothing else of the device's
    /// settings is changed).
    pub async fn set_fail_safes(&self, is_health: impl Fn(&str) -> bool) {
        let mut set = JoinSet::new();
        for (id, link) in &self.links {
            if let LoadLink::Plug(p) = link {
                let (p, id, health) = (Arc::clone(p), id.clone(), is_health(id));
                let tele = self.tele_periods.get(&id).copied();
                set.spawn(async move {
                    if let Err(e) = p.set_fail_safe(health).await {
                        tracing::warn!(load = %id, error = %e, "device-side fail-safe not confirmed");
                    }
                    if let Some(secs) = tele
                        && let Err(e) = p.set_tele_period(secs).await
                    {
                        tracing::warn!(load = %id, tele_period_secs = secs, error = %e, "tasmota TelePeriod not confirmed");
                    }
                });
            }
        }
        while set.join_next().await.is_some() {}
    }

    /// Carries out commands concurrently; returns the loads whose command failed, with why.
    pub async fn actuate(&self, commands: &[Command]) -> Vec<(String, String)> {
        let mut set = JoinSet::new();
        for c in commands {
            let Some(link) = self.links.get(&c.load) else {
                continue;
            };
            let id = c.load.clone();
            match (link, &c.action) {
                (LoadLink::Plug(p), Action::Switch(on)) => {
                    let (p, on) = (Arc::clone(p), *on);
                    set.spawn(async move {
                        (id, p.switch_confirmed(on).await.map_err(|e| e.to_string()))
                    });
                }
                (
                    LoadLink::Setpoint {
                        command_topic,
                        echo,
                        ..
                    },
                    Action::Setpoint(w),
                ) => {
                    let result = self.bus.publish(command_topic, format!("{w:.0}")).await;
                    if let (Ok(()), Some(echo)) = (&result, echo) {
                        echo.send_replace(Some((*w, Instant::now())));
                    }
                    if let Err(e) = result {
                        set.spawn(async move { (id, Err(e.to_string())) });
                    }
                }
                _ => {
                    set.spawn(async move {
                        (id, Err("command does not fit the load's control".into()))
                    });
                }
            }
        }
        let mut failed = Vec::new();
        while let Some(done) = set.join_next().await {
            if let Ok((id, Err(e))) = done {
                failed.push((id, e));
            }
        }
        failed
    }

    /// Malformed payloads counted by all plugs.
    pub fn malformed(&self) -> u64 {
        self.links
            .values()
            .map(|l| match l {
                LoadLink::Plug(p) => p.status().malformed,
                LoadLink::Setpoint { .. } => 0,
            })
            .sum()
    }
}

/// Takes the process image: every device's and load's last report, at `now`.
pub fn snapshot(
    now: DateTime<Utc>,
    devices: &[watch::Receiver<DeviceInput>],
    loads: Option<&Loads>,
    faults: &BTreeMap<String, String>,
) -> ProcessImage {
    ProcessImage {
        at: now,
        devices: devices.iter().map(|d| d.borrow().clone()).collect(),
        loads: loads.map(|l| l.snapshot(faults)).unwrap_or_default(),
    }
}
