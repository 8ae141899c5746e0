//! The site file's devices (Modbus), MQTT broker and loads with the plug or setpoint that
//! controls each.

use super::*;

struct ModbusCommon {
    id: String,
    name: Option<String>,
    address: String,
    unit_id: u8,
    timeout_ms: u32,
    stale_after_secs: f64,
}

pub(super) fn lower_devices(doc: &mut Doc<'_>) -> Option<Vec<Device>> {
    let list = p().key("devices");
    let n = doc.array_len(&list);
    let mut seen = Seen::new();
    let mut out = Vec::new();
    let mut ok = true;
    for i in 0..n {
        let at = list.index(i);
        let Some(kind) = doc.kind(&at, "device", DEVICE_KINDS) else {
            ok = false;
            continue;
        };
        let lowered = match kind.as_str() {
            "sunspec" => doc.read::<raw::SunspecDevice>(&at).and_then(|d| {
                let role = match d.role.as_str() {
                    "pv_inverter" => Some(SunspecRole::PvInverter),
                    "battery" => Some(SunspecRole::Battery),
                    "meter" => measures(doc, &at.key("measures"), d.measures.as_deref().unwrap_or("consumption"))
                        .map(SunspecRole::Meter),
                    other => {
                        doc.error(
                            &at.key("role"),
                            format!("unknown SunSpec device role \"{other}\" (expected one of: pv_inverter, battery, meter)"),
                        );
                        None
                    }
                };
                if d.measures.is_some() && d.role != "meter" {
                    doc.error(&at.key("measures"), "`measures` applies only to role = \"meter\"");
                }
                if let Some(b) = d.base_address
                    && ![0, 40000, 50000].contains(&b)
                {
                    doc.error(&at.key("base_address"), format!("SunSpec maps start at 0, 40000 or 50000, not {b}"));
                }
                let kind = DeviceKind::Sunspec {
                    role: role?,
                    base_address: d.base_address,
                };
                Some((
                    kind,
                    ModbusCommon {
                        id: d.id,
                        name: d.name,
                        address: d.address,
                        unit_id: d.unit_id,
                        timeout_ms: d.timeout_ms,
                        stale_after_secs: d.stale_after_secs,
                    },
                ))
            }),
            "sdm630" => doc.read::<raw::Sdm630Device>(&at).and_then(|d| {
                let m = measures(doc, &at.key("measures"), &d.measures)?;
                Some((
                    DeviceKind::Sdm630 { measures: m },
                    ModbusCommon {
                        id: d.id,
                        name: d.name,
                        address: d.address,
                        unit_id: d.unit_id,
                        timeout_ms: d.timeout_ms,
                        stale_after_secs: d.stale_after_secs,
                    },
                ))
            }),
            _ => doc.read::<raw::VictronDevice>(&at).map(|d| {
                (
                    DeviceKind::Victron,
                    ModbusCommon {
                        id: d.id,
                        name: d.name,
                        address: d.address,
                        unit_id: d.unit_id,
                        timeout_ms: d.timeout_ms,
                        stale_after_secs: d.stale_after_secs,
                    },
                )
            }),
        };
        let Some((kind, c)) = lowered else {
            ok = false;
            continue;
        };
        let mut dev_ok = valid_id(doc, &at.key("id"), &c.id)
            && seen.first(doc, &at.key("id"), &c.id, "device id");
        let address = endpoint(doc, &at.key("address"), &c.address);
        dev_ok &= address.is_some();
        dev_ok &= within_u32(doc, &at.key("timeout_ms"), c.timeout_ms, 50, 60_000, "ms");
        dev_ok &= within(
            doc,
            &at.key("stale_after_secs"),
            c.stale_after_secs,
            1.0,
            3600.0,
            "s",
        );
        match (dev_ok, address) {
            (true, Some(address)) => out.push(Device {
                name: c.name.unwrap_or_else(|| c.id.clone()),
                id: c.id,
                kind,
                address,
                unit_id: c.unit_id,
                timeout: Duration::from_millis(u64::from(c.timeout_ms)),
                stale_after: Duration::from_secs_f64(c.stale_after_secs),
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

pub(super) fn lower_mqtt(doc: &mut Doc<'_>, m: raw::Mqtt, site_id: Option<&str>) -> Option<Mqtt> {
    let at = |k: &str| p().key("mqtt").key(k);
    let broker = endpoint(doc, &at("broker"), &m.broker);
    let mut ok = broker.is_some();
    if m.password_file.is_some() && m.username.is_none() {
        doc.error(
            &at("password_file"),
            "a password needs a username; add `username`",
        );
        ok = false;
    }
    if m.ca_file.is_some() && !m.tls {
        doc.error(
            &at("ca_file"),
            "a CA file is only used with TLS; add `tls = true`",
        );
        ok = false;
    }
    ok &= within_u32(doc, &at("keep_alive_secs"), m.keep_alive_secs, 5, 3600, "s");
    if let Some(id) = &m.client_id {
        ok &= non_empty(doc, &at("client_id"), id);
    }
    if let Some(prefix) = &m.home_assistant_discovery {
        ok &= non_empty(doc, &at("home_assistant_discovery"), prefix);
        if prefix.contains(['#', '+']) {
            doc.error(
                &at("home_assistant_discovery"),
                "a topic prefix cannot hold the MQTT wildcards `#` or `+`",
            );
            ok = false;
        }
    }
    let client_id = m
        .client_id
        .unwrap_or_else(|| format!("communalia-{}", site_id.unwrap_or("site")));
    Some(Mqtt {
        broker: broker?,
        client_id,
        username: m.username,
        password_file: m.password_file,
        tls: m.tls,
        ca_file: m.ca_file,
        keep_alive: Duration::from_secs(u64::from(m.keep_alive_secs)),
        home_assistant_discovery: m.home_assistant_discovery,
    })
    .filter(|_| ok)
}

/// What makes a load's plug or setpoint one device channel, in words, and the key that names
/// it: a Tasmota topic and relay (under its FullTopic), a Shelly prefix and switch, a setpoint's
/// command topic. `None` for a load nobody switches.
fn plug_identity(control: &Control) -> Option<(String, &'static str)> {
    match control {
        Control::Tasmota {
            topic,
            full_topic,
            relay,
            ..
        } => Some((
            format!(
                "{} relay {relay}",
                full_topic
                    .replace("%topic%", topic)
                    .replace("%prefix%", "")
                    .trim_matches('/')
            ),
            "topic",
        )),
        Control::Shelly {
            device_id,
            switch_id,
        } => Some((format!("{device_id} switch:{switch_id}"), "device_id")),
        Control::Setpoint { command_topic, .. } => Some((command_topic.clone(), "command_topic")),
        _ => None,
    }
}

pub(super) fn lower_loads(doc: &mut Doc<'_>, has_mqtt: bool) -> (Vec<(Load, KeyPath)>, bool) {
    let list = p().key("loads");
    let n = doc.array_len(&list);
    let mut seen = Seen::new();
    let mut plugs = Seen::new();
    let mut out = Vec::new();
    let mut ok = true;
    for i in 0..n {
        let at = list.index(i);
        let raw: Option<raw::Load> = doc.read(&at);
        let control = lower_control(doc, &at.key("control"), has_mqtt);
        let Some(l) = raw else {
            ok = false;
            continue;
        };
        let mut load_ok =
            valid_id(doc, &at.key("id"), &l.id) && seen.first(doc, &at.key("id"), &l.id, "load id");
        load_ok &= non_empty(doc, &at.key("name"), &l.name);
        let owner = match (l.member, l.service) {
            (Some(m), None) => non_empty(doc, &at.key("member"), &m).then_some(Owner::Member(m)),
            (None, Some(s)) => non_empty(doc, &at.key("service"), &s).then_some(Owner::Service(s)),
            (Some(_), Some(_)) => {
                doc.error(
                    &at.key("service"),
                    "give either `member` or `service`, not both",
                );
                None
            }
            (None, None) => {
                doc.error(
                    &at,
                    "missing `member` or `service`: say whom the load belongs to",
                );
                None
            }
        };
        load_ok &= owner.is_some();
        // Two loads on one plug would switch it against each other every cycle.
        if let Some((key, field)) = control.as_ref().and_then(plug_identity) {
            load_ok &= plugs.first(doc, &at.key("control").key(field), &key, "plug");
        }
        load_ok &= positive(doc, &at.key("nominal_watts"), l.nominal_watts, "watts");
        let deadline = match &l.deadline {
            Some(s) => match parse_time_of_day(s) {
                Ok(t) => Some(t),
                Err(e) => {
                    doc.error(&at.key("deadline"), e);
                    load_ok = false;
                    None
                }
            },
            None => None,
        };
        let daily_need = match (l.daily_energy_wh, deadline) {
            (Some(e), d) => {
                if positive(doc, &at.key("daily_energy_wh"), e, "watt-hours") {
                    Some(DailyNeed {
                        energy: WattHours(e),
                        deadline: d.unwrap_or(TimeOfDay { minutes: 24 * 60 }),
                    })
                } else {
                    load_ok = false;
                    None
                }
            }
            (None, Some(_)) => {
                doc.error(
                    &at.key("deadline"),
                    "a deadline needs a daily energy need; add `daily_energy_wh`",
                );
                load_ok = false;
                None
            }
            (None, None) => None,
        };
        if let Some(Control::Setpoint { max, .. }) = &control
            && l.nominal_watts > max.0
        {
            doc.error(
                &at.key("nominal_watts"),
                format!(
                    "{} W is more than the setpoint's max_watts of {} W",
                    num(l.nominal_watts),
                    num(max.0)
                ),
            );
            load_ok = false;
        }
        match (load_ok, owner, control) {
            (true, Some(owner), Some(control)) => out.push((
                Load {
                    id: l.id,
                    name: l.name,
                    owner,
                    nominal: Watts(l.nominal_watts),
                    // A daily need with a deadline can wait by definition.
                    flexible: l.flexible || daily_need.is_some(),
                    daily_need,
                    control,
                },
                at,
            )),
            _ => ok = false,
        }
    }
    (out, ok)
}

fn lower_control(doc: &mut Doc<'_>, at: &KeyPath, has_mqtt: bool) -> Option<Control> {
    doc.get(at)?;
    if doc
        .get(at)
        .is_some_and(|v| v.get_ref().as_table().is_none())
    {
        doc.error(
            at,
            "expected a table such as { kind = \"tasmota\", topic = \"...\" }",
        );
        return None;
    }
    let kind = doc.kind(at, "control", CONTROL_KINDS)?;
    let control = match kind.as_str() {
        "tasmota" => doc.read::<raw::TasmotaControl>(at).and_then(|c| {
            let a = non_empty(doc, &at.key("topic"), &c.topic);
            let b = within_u32(doc, &at.key("relay"), u32::from(c.relay), 1, 8, "");
            let full = if c.full_topic.contains("%prefix%") && c.full_topic.contains("%topic%") {
                true
            } else {
                doc.error(
                    &at.key("full_topic"),
                    "a Tasmota FullTopic must contain %prefix% and %topic%",
                );
                false
            };
            // Tasmota takes 0 (telemetry off) or 10 to 3600 s; 1 would mean "reset to 300".
            let tele = match c.tele_period_secs {
                None => Some(None),
                Some(0) => Some(Some(0)),
                Some(v) if (10..=3600).contains(&v) => u16::try_from(v).ok().map(Some),
                Some(v) => {
                    doc.error(
                        &at.key("tele_period_secs"),
                        format!("{v} is not a Tasmota TelePeriod: use 0 (telemetry off) or 10 to 3600 seconds"),
                    );
                    None
                }
            };
            match (a && b && full, tele) {
                (true, Some(tele_period_secs)) => Some(Control::Tasmota {
                    topic: c.topic,
                    full_topic: c.full_topic,
                    relay: c.relay,
                    tele_period_secs,
                }),
                _ => None,
            }
        }),
        "shelly" => doc.read::<raw::ShellyControl>(at).and_then(|c| {
            non_empty(doc, &at.key("device_id"), &c.device_id).then_some(Control::Shelly {
                device_id: c.device_id,
                switch_id: c.switch_id,
            })
        }),
        "setpoint" => doc.read::<raw::SetpointControl>(at).and_then(|c| {
            let mut ok = non_empty(doc, &at.key("command_topic"), &c.command_topic);
            ok &= non_negative(doc, &at.key("min_watts"), c.min_watts, "watts");
            ok &= positive(doc, &at.key("max_watts"), c.max_watts, "watts");
            if ok && c.max_watts < c.min_watts {
                doc.error(
                    &at.key("max_watts"),
                    format!(
                        "max_watts ({}) is below min_watts ({})",
                        num(c.max_watts),
                        num(c.min_watts)
                    ),
                );
                ok = false;
            }
            ok.then_some(Control::Setpoint {
                command_topic: c.command_topic,
                state_topic: c.state_topic,
                min: Watts(c.min_watts),
                max: Watts(c.max_watts),
            })
        }),
        _ => doc
            .read::<raw::MeasuredOnlyControl>(at)
            .map(|_| Control::MeasuredOnly),
    }?;
    if control.uses_mqtt() && !has_mqtt {
        doc.error(
            &at.key("kind"),
            format!("a {kind} load is driven over MQTT, but this site file has no [mqtt] table with a broker"),
        );
        return None;
    }
    Some(control)
}

fn measures(doc: &mut Doc<'_>, path: &KeyPath, s: &str) -> Option<Measures> {
    match s {
        "consumption" => Some(Measures::Consumption),
        "grid" => Some(Measures::Grid),
        "pv" => Some(Measures::Pv),
        other => {
            doc.error(
                path,
                format!(
                    "unknown meter placement \"{other}\" (expected one of: consumption, grid, pv)"
                ),
            );
            None
        }
    }
}
