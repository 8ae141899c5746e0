//! The site file: its `[site]` head and the tables of what is installed (grid, battery, PV
//! arrays, HTTP, forecast, InfluxDB); devices, MQTT and loads are in `devices`.

use super::*;

pub(crate) fn lower_site(doc: &mut Doc<'_>) -> SiteParts {
    let mut parts = SiteParts {
        site: None,
        loads: Vec::new(),
        battery: None,
        battery_table: false,
    };
    if !doc.is_parsed() {
        return parts;
    }
    doc.unknown_keys(&p(), SITE_TABLES);
    let mut ok = true;

    let section: Option<raw::SiteSection> = doc.read(&p().key("site"));
    if doc.get(&p().key("site")).is_none() {
        doc.error(&p(), "missing table [site] (with id, name and assembly)");
    }
    let site_head = section.and_then(|s| lower_site_section(doc, s));
    ok &= site_head.is_some();

    let devices = lower_devices(doc);
    ok &= devices.is_some();
    let devices = devices.unwrap_or_default();
    let device_ids: Vec<String> = entry_ids(doc, &p().key("devices"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();

    let mqtt = match doc.get(&p().key("mqtt")) {
        None => None,
        Some(_) => {
            let m: Option<raw::Mqtt> = doc.read(&p().key("mqtt"));
            let lowered =
                m.and_then(|m| lower_mqtt(doc, m, site_head.as_ref().map(|h| h.id.as_str())));
            ok &= lowered.is_some();
            lowered
        }
    };
    let has_mqtt = doc.get(&p().key("mqtt")).is_some();

    let (loads, loads_ok) = lower_loads(doc, has_mqtt);
    ok &= loads_ok;
    parts.loads = entry_ids(doc, &p().key("loads"))
        .into_iter()
        .map(|(id, path)| {
            let kind = doc
                .get(&path.key("control").key("kind"))
                .and_then(|v| v.get_ref().as_str());
            KnownLoad {
                id,
                controlled: kind != Some("measured_only"),
                path,
            }
        })
        .collect();

    let grid = optional_section(doc, "grid", &mut ok, lower_grid);
    let battery = match doc.get(&p().key("battery")) {
        None => None,
        Some(_) => {
            let b: Option<raw::Battery> = doc.read(&p().key("battery"));
            let lowered = b.and_then(|b| lower_battery(doc, b, &devices, &device_ids));
            ok &= lowered.is_some();
            lowered
        }
    };
    parts.battery = battery.clone();
    parts.battery_table = doc.get(&p().key("battery")).is_some();
    let pv_arrays = lower_pv_arrays(doc, &devices, &device_ids);
    ok &= pv_arrays.is_some();

    let http = match doc.get(&p().key("http")) {
        None => Some(Http {
            listen: Endpoint {
                host: "127.0.0.1".into(),
                port: 8080,
            },
            write_token_file: None,
        }),
        Some(_) => doc
            .read::<raw::Http>(&p().key("http"))
            .and_then(|h| lower_http(doc, h)),
    };
    ok &= http.is_some();
    let influxdb = optional_section(doc, "influxdb", &mut ok, lower_influxdb);
    let forecast = optional_section(doc, "forecast", &mut ok, lower_forecast);
    if let (Some(f), None) = (&forecast, &mqtt)
        && f.pv_topic.is_some()
    {
        doc.error(
            &p().key("forecast").key("pv_topic"),
            "a forecast topic needs an [mqtt] broker",
        );
        ok = false;
    }
    let ledger = match doc.get(&p().key("ledger")) {
        None => Some(raw::Ledger::default()),
        Some(_) => doc.read::<raw::Ledger>(&p().key("ledger")),
    }
    .and_then(|l| {
        let a = non_empty(doc, &p().key("ledger").key("database"), &l.database);
        let b = non_empty(
            doc,
            &p().key("ledger").key("controller_key_file"),
            &l.controller_key_file,
        );
        (a && b).then_some(Ledger {
            database: l.database,
            controller_key_file: l.controller_key_file,
        })
    });
    ok &= ledger.is_some();

    if let (true, Some(head), Some(http), Some(ledger), Some(pv_arrays)) =
        (ok, site_head, http, ledger, pv_arrays)
    {
        parts.site = Some(Site {
            id: head.id,
            name: head.name,
            assembly_file: head.assembly,
            interval: head.interval,
            min_switch: head.min_switch,
            location: head.location,
            utc_offset_minutes: head.utc_offset_minutes,
            grid,
            battery,
            mqtt,
            http,
            influxdb,
            forecast,
            ledger,
            devices,
            pv_arrays,
            loads: loads.into_iter().map(|(l, _)| l).collect(),
        });
    }
    parts
}

fn optional_section<R, T>(
    doc: &mut Doc<'_>,
    key: &str,
    ok: &mut bool,
    lower: fn(&mut Doc<'_>, R) -> Option<T>,
) -> Option<T>
where
    R: serde::de::DeserializeOwned,
{
    doc.get(&p().key(key))?;
    let lowered = doc.read::<R>(&p().key(key)).and_then(|r| lower(doc, r));
    *ok &= lowered.is_some();
    lowered
}

struct SiteHead {
    id: String,
    name: String,
    assembly: String,
    interval: Duration,
    min_switch: Duration,
    location: Option<Location>,
    utc_offset_minutes: i32,
}

fn lower_site_section(doc: &mut Doc<'_>, s: raw::SiteSection) -> Option<SiteHead> {
    let at = |k: &str| p().key("site").key(k);
    let mut ok = valid_id(doc, &at("id"), &s.id);
    ok &= non_empty(doc, &at("name"), &s.name);
    ok &= non_empty(doc, &at("assembly"), &s.assembly);
    ok &= within(doc, &at("interval_secs"), s.interval_secs, 0.5, 60.0, "s");
    ok &= within(
        doc,
        &at("min_switch_secs"),
        s.min_switch_secs,
        0.0,
        3600.0,
        "s",
    );
    ok &= within_u32_i(
        doc,
        &at("utc_offset_minutes"),
        s.utc_offset_minutes,
        -720,
        840,
    );
    let location = match (s.latitude, s.longitude) {
        (Some(lat), Some(lon)) => {
            let a = within(doc, &at("latitude"), lat, -90.0, 90.0, "degrees");
            let b = within(doc, &at("longitude"), lon, -180.0, 180.0, "degrees");
            ok &= a && b;
            Some(Location {
                latitude: lat,
                longitude: lon,
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            doc.error(
                &at("latitude"),
                "latitude is given without longitude; give both or neither",
            );
            ok = false;
            None
        }
        (None, Some(_)) => {
            doc.error(
                &at("longitude"),
                "longitude is given without latitude; give both or neither",
            );
            ok = false;
            None
        }
    };
    ok.then(|| SiteHead {
        id: s.id,
        name: s.name,
        assembly: s.assembly,
        interval: Duration::from_secs_f64(s.interval_secs),
        min_switch: Duration::from_secs_f64(s.min_switch_secs),
        location,
        utc_offset_minutes: s.utc_offset_minutes,
    })
}

fn within_u32_i(doc: &mut Doc<'_>, path: &KeyPath, v: i32, lo: i32, hi: i32) -> bool {
    within(
        doc,
        path,
        f64::from(v),
        f64::from(lo),
        f64::from(hi),
        "minutes",
    )
}

fn lower_grid(doc: &mut Doc<'_>, g: raw::Grid) -> Option<Grid> {
    let at = |k: &str| p().key("grid").key(k);
    let kind = match g.kind.as_str() {
        "grid" => Some(GridKind::Grid),
        "generator" => Some(GridKind::Generator),
        other => {
            doc.error(
                &at("kind"),
                format!("unknown grid kind \"{other}\" (expected one of: grid, generator)"),
            );
            None
        }
    };
    let mut ok = positive(doc, &at("max_import_watts"), g.max_import_watts, "watts");
    ok &= non_negative(doc, &at("max_export_watts"), g.max_export_watts, "watts");
    if let Some(price) = g.import_price_per_kwh {
        ok &= non_negative(
            doc,
            &at("import_price_per_kwh"),
            price,
            "price units per kWh",
        );
    }
    ok &= non_negative(
        doc,
        &at("export_price_per_kwh"),
        g.export_price_per_kwh,
        "price units per kWh",
    );
    Some(Grid {
        kind: kind?,
        max_import: Watts(g.max_import_watts),
        max_export: Watts(g.max_export_watts),
        import_price_per_kwh: g.import_price_per_kwh,
        export_price_per_kwh: g.export_price_per_kwh,
    })
    .filter(|_| ok)
}

fn lower_battery(
    doc: &mut Doc<'_>,
    b: raw::Battery,
    devices: &[Device],
    device_ids: &[String],
) -> Option<Battery> {
    let at = |k: &str| p().key("battery").key(k);
    let mut ok = true;
    match devices.iter().find(|d| d.id == b.device) {
        Some(Device {
            kind:
                DeviceKind::Sunspec {
                    role: SunspecRole::Battery,
                    ..
                }
                | DeviceKind::Victron,
            ..
        }) => {}
        Some(_) => {
            doc.error(
                &at("device"),
                format!("device \"{}\" is not a battery (a SunSpec device with role = \"battery\", or a victron)", b.device),
            );
            ok = false;
        }
        // The device has mistakes of its own, reported where it is defined.
        None if device_ids.contains(&b.device) => ok = false,
        None => {
            let ids: Vec<&str> = device_ids.iter().map(String::as_str).collect();
            let hint = suggestion(&b.device, &ids)
                .map(|s| format!("; did you mean \"{s}\"?"))
                .unwrap_or_default();
            doc.error(
                &at("device"),
                format!("unknown device \"{}\"{hint}", b.device),
            );
            ok = false;
        }
    }
    ok &= positive(doc, &at("capacity_wh"), b.capacity_wh, "watt-hours");
    ok &= within(
        doc,
        &at("min_soc_percent"),
        b.min_soc_percent,
        0.0,
        100.0,
        "%",
    );
    ok &= within(
        doc,
        &at("max_soc_percent"),
        b.max_soc_percent,
        0.0,
        100.0,
        "%",
    );
    if ok && b.min_soc_percent >= b.max_soc_percent {
        doc.error(
            &at("max_soc_percent"),
            format!(
                "max_soc_percent ({}) must be above min_soc_percent ({})",
                num(b.max_soc_percent),
                num(b.min_soc_percent)
            ),
        );
        ok = false;
    }
    ok &= positive(doc, &at("max_charge_watts"), b.max_charge_watts, "watts");
    ok &= positive(
        doc,
        &at("max_discharge_watts"),
        b.max_discharge_watts,
        "watts",
    );
    ok &= within(
        doc,
        &at("charge_efficiency"),
        b.charge_efficiency,
        0.5,
        1.0,
        "",
    );
    ok &= within(
        doc,
        &at("discharge_efficiency"),
        b.discharge_efficiency,
        0.5,
        1.0,
        "",
    );
    ok.then_some(Battery {
        device: b.device,
        capacity: WattHours(b.capacity_wh),
        min_soc: Percent(b.min_soc_percent),
        max_soc: Percent(b.max_soc_percent),
        max_charge: Watts(b.max_charge_watts),
        max_discharge: Watts(b.max_discharge_watts),
        charge_efficiency: b.charge_efficiency,
        discharge_efficiency: b.discharge_efficiency,
    })
}

fn lower_pv_arrays(
    doc: &mut Doc<'_>,
    devices: &[Device],
    device_ids: &[String],
) -> Option<Vec<PvArray>> {
    let list = p().key("pv_arrays");
    let n = doc.array_len(&list);
    let mut out = Vec::new();
    let mut ok = true;
    for i in 0..n {
        let at = list.index(i);
        let Some(a) = doc.read::<raw::PvArray>(&at) else {
            ok = false;
            continue;
        };
        let mut a_ok = true;
        match devices.iter().find(|d| d.id == a.inverter) {
            Some(Device {
                kind:
                    DeviceKind::Sunspec {
                        role: SunspecRole::PvInverter,
                        ..
                    }
                    | DeviceKind::Victron,
                ..
            }) => {}
            Some(_) => {
                doc.error(
                    &at.key("inverter"),
                    format!("device \"{}\" is not a PV inverter", a.inverter),
                );
                a_ok = false;
            }
            None if device_ids.contains(&a.inverter) => a_ok = false,
            None => {
                doc.error(
                    &at.key("inverter"),
                    format!("unknown device \"{}\"", a.inverter),
                );
                a_ok = false;
            }
        }
        a_ok &= positive(doc, &at.key("kwp"), a.kwp, "kWp");
        a_ok &= within(
            doc,
            &at.key("tilt_degrees"),
            a.tilt_degrees,
            0.0,
            90.0,
            "degrees",
        );
        a_ok &= within(
            doc,
            &at.key("azimuth_degrees"),
            a.azimuth_degrees,
            0.0,
            360.0,
            "degrees",
        );
        if a_ok {
            out.push(PvArray {
                inverter: a.inverter,
                kwp: a.kwp,
                tilt_degrees: a.tilt_degrees,
                azimuth_degrees: a.azimuth_degrees,
            });
        } else {
            ok = false;
        }
    }
    ok.then_some(out)
}

fn lower_http(doc: &mut Doc<'_>, h: raw::Http) -> Option<Http> {
    let at = |k: &str| p().key("http").key(k);
    let listen = endpoint(doc, &at("listen"), &h.listen)?;
    if !listen.is_loopback() && !h.allow_remote {
        doc.error(
            &at("listen"),
            format!(
                "{listen} is reachable from other machines; set `allow_remote = true` to mean it"
            ),
        );
        return None;
    }
    if !listen.is_loopback() && h.write_token_file.is_none() {
        doc.error(
            &at("write_token_file"),
            "a page reachable from other machines needs `write_token_file` to protect its write endpoints",
        );
        return None;
    }
    Some(Http {
        listen,
        write_token_file: h.write_token_file,
    })
}

fn lower_forecast(doc: &mut Doc<'_>, f: raw::Forecast) -> Option<ForecastFeed> {
    let at = |k: &str| p().key("forecast").key(k);
    let mut ok = true;
    if let Some(file) = &f.pv_file {
        ok &= non_empty(doc, &at("pv_file"), file);
    }
    if let Some(topic) = &f.pv_topic {
        ok &= non_empty(doc, &at("pv_topic"), topic);
        if topic.contains(['#', '+']) {
            doc.error(
                &at("pv_topic"),
                "the forecast topic is one topic, without the MQTT wildcards `#` or `+`",
            );
            ok = false;
        }
    }
    if f.pv_file.is_none() && f.pv_topic.is_none() {
        doc.error(
            &p().key("forecast"),
            "[forecast] needs `pv_file` or `pv_topic` (or remove the table)",
        );
        ok = false;
    }
    ok.then_some(ForecastFeed {
        pv_file: f.pv_file,
        pv_topic: f.pv_topic,
    })
}

fn lower_influxdb(doc: &mut Doc<'_>, i: raw::Influxdb) -> Option<Influxdb> {
    let at = |k: &str| p().key("influxdb").key(k);
    let mut ok = true;
    if i.url.starts_with("https://") {
        // The InfluxDB client is built without TLS (it would bring a second HTTP and TLS
        // stack into the build); never fall back to plain text when the site asked for TLS.
        doc.error(
            &at("url"),
            format!(
                "\"{}\": this build writes to InfluxDB over plain http:// only; run InfluxDB on \
                 the controller or the site's network, or put a TLS-terminating proxy beside the \
                 controller",
                i.url
            ),
        );
        ok = false;
    } else if !i.url.starts_with("http://") || i.url.len() <= "http://".len() {
        doc.error(&at("url"), format!("\"{}\" is not an http:// URL", i.url));
        ok = false;
    }
    ok &= non_empty(doc, &at("org"), &i.org);
    ok &= non_empty(doc, &at("bucket"), &i.bucket);
    let token = match (i.token_file, i.token_env) {
        (Some(f), None) => Some(Token::File(f)),
        (None, Some(e)) => Some(Token::Env(e)),
        (Some(_), Some(_)) => {
            doc.error(
                &at("token_env"),
                "give either `token_file` or `token_env`, not both",
            );
            None
        }
        (None, None) => {
            doc.error(
                &p().key("influxdb"),
                "missing `token_file` or `token_env` for the InfluxDB API token",
            );
            None
        }
    };
    ok &= within_u32(doc, &at("batch_points"), i.batch_points, 1, 5000, "points");
    ok &= within(
        doc,
        &at("buffer_max_points"),
        i.buffer_max_points as f64,
        1000.0,
        100_000_000.0,
        "points",
    );
    ok &= non_empty(doc, &at("buffer_dir"), &i.buffer_dir);
    Some(Influxdb {
        url: i.url,
        org: i.org,
        bucket: i.bucket,
        token: token?,
        batch_points: i.batch_points,
        buffer_dir: i.buffer_dir,
        buffer_max_points: i.buffer_max_points,
    })
    .filter(|_| ok)
}
