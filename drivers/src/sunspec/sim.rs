//! SunSpec simulators: a register image built from the model tables, and a PV inverter, a
//! battery and a meter with their own dynamics, served over Modbus TCP by [`ModbusSim`].
//!
//! [`ModbusSim`]: crate::modbus_sim::ModbusSim

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::modbus_sim::{ModbusSim, SimDevice, Table};

use super::discovery::{ModelEntry, SUNS_MARKER};
use super::models::{ModelDef, PointType, model_def};

/// Modbus exception: illegal data address.
const ILLEGAL_ADDRESS: u8 = 0x02;
/// Modbus exception: illegal data value.
const ILLEGAL_VALUE: u8 = 0x03;

/// The "not implemented" registers of a point type.
pub fn sentinel(ty: PointType, size: u16) -> Vec<u16> {
    use PointType::*;
    match ty {
        I16 | Sf => vec![0x8000],
        U16 | Enum16 | Bitfield16 => vec![0xFFFF],
        I32 => vec![0x8000, 0],
        U32 | Enum32 | Bitfield32 => vec![0xFFFF, 0xFFFF],
        I64 => vec![0x8000, 0, 0, 0],
        U64 => vec![0xFFFF; 4],
        F32 => vec![0x7FC0, 0],
        Acc16 | Acc32 | Acc64 | Pad | Str => vec![0; usize::from(size)],
    }
}

/// A SunSpec register map: marker, models back to back, end marker.
#[derive(Debug, Clone)]
pub struct SunSpecImage {
    base: u16,
    regs: Vec<u16>,
    models: Vec<ModelEntry>,
}

impl SunSpecImage {
    /// An image with the marker at `base` and no models yet.
    pub fn new(base: u16) -> Self {
        Self {
            base,
            regs: SUNS_MARKER.to_vec(),
            models: Vec::new(),
        }
    }

    /// Appends model `id` with its fixed length plus `extra` registers, every point "not
    /// implemented". Unknown ids are added as opaque zero-filled blocks of length `extra`.
    pub fn add_model(&mut self, id: u16, extra: u16) -> &mut Self {
        let def = model_def(id);
        let len = def.map_or(0, |d| d.fixed_len) + extra;
        let address = self.base + self.regs.len() as u16;
        let start = self.regs.len();
        self.regs.push(id);
        self.regs.push(len);
        self.regs.extend(std::iter::repeat_n(0, usize::from(len)));
        if let Some(def) = def {
            for pt in def.points {
                let s = sentinel(pt.ty, pt.size);
                let at = start + usize::from(pt.offset);
                self.regs[at..at + s.len()].copy_from_slice(&s);
            }
        }
        self.models.push(ModelEntry { id, address, len });
        self
    }

    /// Appends the end marker.
    pub fn end(&mut self) -> &mut Self {
        self.regs.extend([0xFFFF, 0]);
        self
    }

    /// The address just past the last model: where the end marker is, once [`Self::end`]ed.
    pub fn end_address(&self) -> u16 {
        self.base + u16::try_from(self.regs.len()).unwrap_or(u16::MAX)
            - if self.regs.ends_with(&[0xFFFF, 0]) {
                2
            } else {
                0
            }
    }

    /// The models in chain order.
    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    fn locate(&self, model: u16, point: &str) -> Option<(usize, &'static super::models::PointDef)> {
        let entry = self.models.iter().find(|m| m.id == model)?;
        let pt = model_def(model)?.point(point)?;
        Some((
            usize::from(entry.address - self.base) + usize::from(pt.offset),
            pt,
        ))
    }

    /// Sets a point's raw registers.
    pub fn set_raw(&mut self, model: u16, point: &str, words: &[u16]) {
        if let Some((at, pt)) = self.locate(model, point) {
            let n = words.len().min(usize::from(pt.size));
            self.regs[at..at + n].copy_from_slice(&words[..n]);
        }
    }

    /// A point's raw registers.
    pub fn raw(&self, model: u16, point: &str) -> Option<&[u16]> {
        let (at, pt) = self.locate(model, point)?;
        self.regs.get(at..at + usize::from(pt.size))
    }

    /// Marks a point "not implemented".
    pub fn set_absent(&mut self, model: u16, point: &str) {
        if let Some((_, pt)) = self.locate(model, point) {
            self.set_raw(model, point, &sentinel(pt.ty, pt.size));
        }
    }

    /// Sets a string point, NUL padded.
    pub fn set_text(&mut self, model: u16, point: &str, text: &str) {
        if let Some((_, pt)) = self.locate(model, point) {
            let mut bytes = text.as_bytes().to_vec();
            bytes.resize(usize::from(pt.size) * 2, 0);
            let words: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            self.set_raw(model, point, &words);
        }
    }

    /// Sets a scale factor point.
    pub fn set_sf(&mut self, model: u16, point: &str, sf: i16) {
        self.set_raw(model, point, &[sf as u16]);
    }

    /// Sets a point to `value` in its units, using the scale factor already in the image
    /// (0 if the point is unscaled). Float points are written as float32.
    pub fn set(&mut self, model: u16, point: &str, value: f64) {
        let Some((_, pt)) = self.locate(model, point) else {
            return;
        };
        let sf = match pt.sf {
            Some(sf_name) => self
                .raw(model, sf_name)
                .and_then(|r| r.first())
                .map_or(0, |r| i32::from(*r as i16)),
            None => 0,
        };
        let raw = (value / 10f64.powi(sf)).round();
        let words: Vec<u16> = match pt.ty {
            PointType::F32 => {
                let b = (value as f32).to_bits();
                vec![(b >> 16) as u16, b as u16]
            }
            PointType::I16 | PointType::Sf => vec![(raw.clamp(-32767.0, 32767.0) as i16) as u16],
            PointType::U16 | PointType::Enum16 | PointType::Bitfield16 | PointType::Acc16 => {
                vec![raw.clamp(0.0, 65534.0) as u16]
            }
            PointType::I32 => {
                let v = raw.clamp(-2_147_483_647.0, 2_147_483_647.0) as i32 as u32;
                vec![(v >> 16) as u16, v as u16]
            }
            PointType::U32 | PointType::Enum32 | PointType::Bitfield32 | PointType::Acc32 => {
                let v = raw.clamp(0.0, 4_294_967_294.0) as u32;
                vec![(v >> 16) as u16, v as u16]
            }
            PointType::I64 | PointType::U64 | PointType::Acc64 => {
                let v = raw.max(0.0) as u64;
                vec![
                    (v >> 48) as u16,
                    (v >> 32) as u16,
                    (v >> 16) as u16,
                    v as u16,
                ]
            }
            PointType::Str | PointType::Pad => return,
        };
        self.set_raw(model, point, &words);
    }

    /// A point's value with its scale factor applied (as a driver would decode it).
    pub fn get(&self, model: u16, point: &str) -> Option<f64> {
        let entry = self.models.iter().find(|m| m.id == model)?;
        let start = usize::from(entry.address - self.base);
        let block = super::decode::ModelBlock {
            id: model,
            address: entry.address,
            regs: self
                .regs
                .get(start..start + usize::from(entry.len) + 2)?
                .to_vec(),
        };
        block.scaled(point)
    }

    /// Reads registers; addresses outside the map are an illegal-address exception.
    pub fn read(&self, address: u16, count: u16) -> Result<Vec<u16>, u8> {
        let start = usize::from(address.checked_sub(self.base).ok_or(ILLEGAL_ADDRESS)?);
        let end = start + usize::from(count);
        if count == 0 || count > 125 {
            return Err(ILLEGAL_VALUE);
        }
        self.regs
            .get(start..end)
            .map(<[u16]>::to_vec)
            .ok_or(ILLEGAL_ADDRESS)
    }

    /// Writes registers; every register must belong to a writable point of a known model.
    /// Returns the (model, point) pairs written.
    pub fn write(&mut self, address: u16, words: &[u16]) -> Result<Vec<(u16, &'static str)>, u8> {
        let mut touched = Vec::new();
        for (i, _) in words.iter().enumerate() {
            let a = address.checked_add(i as u16).ok_or(ILLEGAL_ADDRESS)?;
            let (model, def) = self.model_at(a).ok_or(ILLEGAL_ADDRESS)?;
            let off = a - model.address;
            let pt = def
                .points
                .iter()
                .find(|p| p.offset <= off && off < p.offset + p.size)
                .filter(|p| p.writable)
                .ok_or(ILLEGAL_ADDRESS)?;
            if !touched.contains(&(model.id, pt.name)) {
                touched.push((model.id, pt.name));
            }
        }
        let start = usize::from(address - self.base);
        self.regs[start..start + words.len()].copy_from_slice(words);
        Ok(touched)
    }

    fn model_at(&self, address: u16) -> Option<(ModelEntry, &'static ModelDef)> {
        let m = self.models.iter().find(|m| {
            m.address <= address && u32::from(address) < u32::from(m.address) + 2 + u32::from(m.len)
        })?;
        Some((*m, model_def(m.id)?))
    }
}

/// Irradiance as a fraction of the inverter's rated power (0..=1).
#[derive(Clone)]
pub enum Irradiance {
    /// A fixed fraction.
    Fixed(f64),
    /// A function of the seconds since the simulator started.
    Curve(Arc<dyn Fn(f64) -> f64 + Send + Sync>),
}

impl std::fmt::Debug for Irradiance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Irradiance::Fixed(v) => write!(f, "Fixed({v})"),
            Irradiance::Curve(_) => write!(f, "Curve"),
        }
    }
}

/// A clear-sky day: 0 before 6:00 and after 18:00, a half sine in between (`hour` 0..24).
pub fn clear_sky(hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    if (6.0..18.0).contains(&h) {
        (std::f64::consts::PI * (h - 6.0) / 12.0).sin()
    } else {
        0.0
    }
}

#[derive(Debug, Clone)]
enum Behaviour {
    Inverter {
        rated: f64,
        irradiance: Irradiance,
        energy_wh: f64,
        der: bool,
    },
    Battery {
        capacity_wh: f64,
        max_w: f64,
        soc: f64,
        demand_w: f64,
    },
    Meter {
        power_w: f64,
        import_wh: f64,
        export_wh: f64,
    },
}

/// A simulated SunSpec device.
#[derive(Debug, Clone)]
pub struct SunSpecSim {
    image: SunSpecImage,
    behaviour: Behaviour,
    started: Option<Instant>,
    last: Option<Instant>,
    /// Deadline after which the written control reverts, per control model.
    revert_at: Option<Instant>,
    sentinels: bool,
    /// Simulated seconds per real second (energy and SoC integrate faster in an accelerated demo).
    speed: f64,
}

fn common(image: &mut SunSpecImage, model: &str, serial: &str) {
    image.add_model(1, 0);
    image.set_text(1, "Mn", "Communalia");
    image.set_text(1, "Md", model);
    image.set_text(1, "Vr", "1.0.0");
    image.set_text(1, "SN", serial);
    image.set_raw(1, "DA", &[1]);
}

/// A scale factor such that `max` fits a signed 16 bit register with the most precision.
fn fitting_sf(max: f64) -> i16 {
    let mut sf: i16 = -2;
    while max / 10f64.powi(i32::from(sf)) > 32000.0 && sf < 10 {
        sf += 1;
    }
    sf
}

impl SunSpecSim {
    /// A PV inverter of `rated_watts` at `base`: models 1, 103, 120, 123 (or with `der`,
    /// 1, 701, 120, 704).
    pub fn inverter(base: u16, rated_watts: f64, irradiance: Irradiance, der: bool) -> Self {
        let mut image = SunSpecImage::new(base);
        common(
            &mut image,
            if der {
                "SimInverter-DER"
            } else {
                "SimInverter"
            },
            "INV-0001",
        );
        let wsf = fitting_sf(rated_watts);
        if der {
            image.add_model(701, 0);
            image.set(701, "ACType", 2.0);
            for (sf, v) in [
                ("W_SF", wsf),
                ("V_SF", -1),
                ("Hz_SF", -2),
                ("TotWh_SF", 0),
                ("A_SF", -2),
            ] {
                image.set_sf(701, sf, v);
            }
            image.set(701, "LNV", 230.0);
            image.set(701, "Hz", 50.0);
        } else {
            image.add_model(103, 0);
            for (sf, v) in [
                ("W_SF", wsf),
                ("V_SF", -1),
                ("Hz_SF", -2),
                ("WH_SF", 0),
                ("A_SF", -2),
                ("Tmp_SF", -1),
            ] {
                image.set_sf(103, sf, v);
            }
            for ph in ["PhVphA", "PhVphB", "PhVphC"] {
                image.set(103, ph, 230.0);
            }
            image.set(103, "Hz", 50.0);
            image.set(103, "TmpCab", 35.0);
            image.set_raw(103, "Evt1", &[0, 0]);
            image.set_raw(103, "Evt2", &[0, 0]);
        }
        image.add_model(120, 0);
        image.set(120, "DERTyp", 4.0);
        image.set_sf(120, "WRtg_SF", wsf);
        image.set(120, "WRtg", rated_watts);
        if der {
            image.add_model(704, 0);
            image.set_sf(704, "WMaxLimPct_SF", -1);
            image.set(704, "WMaxLimPctEna", 0.0);
            image.set(704, "WMaxLimPct", 100.0);
            image.set(704, "WMaxLimPctRvrt", 100.0);
            image.set(704, "WMaxLimPctEnaRvrt", 0.0);
            image.set(704, "WMaxLimPctRvrtTms", 0.0);
            image.set(704, "WMaxLimPctRvrtRem", 0.0);
        } else {
            image.add_model(123, 0);
            image.set_sf(123, "WMaxLimPct_SF", -1);
            image.set_sf(123, "OutPFSet_SF", -3);
            image.set(123, "Conn", 1.0);
            image.set(123, "WMaxLimPct", 100.0);
            image.set(123, "WMaxLim_Ena", 0.0);
            image.set(123, "WMaxLimPct_RvrtTms", 0.0);
            image.set(123, "OutPFSet", 1.0);
            image.set(123, "OutPFSet_Ena", 0.0);
            image.set(123, "VArPct_Ena", 0.0);
        }
        image.end();
        Self::from_image(
            image,
            Behaviour::Inverter {
                rated: rated_watts,
                irradiance,
                energy_wh: 12_345.0,
                der,
            },
        )
    }

    /// A battery at `base`: models 1, 124, 802.
    pub fn battery(base: u16, capacity_wh: f64, max_watts: f64, soc_percent: f64) -> Self {
        Self::battery_models(base, capacity_wh, max_watts, soc_percent, true)
    }

    fn battery_models(
        base: u16,
        capacity_wh: f64,
        max_watts: f64,
        soc_percent: f64,
        with_common: bool,
    ) -> Self {
        let mut image = SunSpecImage::new(base);
        if with_common {
            common(&mut image, "SimBattery", "BAT-0001");
        }
        image.add_model(124, 0);
        for (sf, v) in [
            ("WChaMax_SF", fitting_sf(max_watts)),
            ("WChaDisChaGra_SF", 0),
            ("MinRsvPct_SF", 0),
            ("ChaState_SF", -1),
            ("InBatV_SF", -1),
            ("InOutWRte_SF", -2),
        ] {
            image.set_sf(124, sf, v);
        }
        image.set(124, "WChaMax", max_watts);
        image.set(124, "WChaGra", 100.0);
        image.set(124, "WDisChaGra", 100.0);
        image.set(124, "StorCtl_Mod", 0.0);
        image.set(124, "MinRsvPct", 10.0);
        image.set(124, "InBatV", 480.0);
        image.set(124, "OutWRte", 100.0);
        image.set(124, "InWRte", 100.0);
        image.set(124, "InOutWRte_RvrtTms", 0.0);
        image.set(124, "ChaGriSet", 0.0);
        image.add_model(802, 0);
        for (sf, v) in [
            ("AHRtg_SF", 0),
            ("WHRtg_SF", fitting_sf(capacity_wh)),
            ("WChaDisChaMax_SF", fitting_sf(max_watts)),
            ("SoC_SF", -1),
            ("SoH_SF", 0),
            ("V_SF", -1),
            ("A_SF", -1),
            ("W_SF", fitting_sf(max_watts)),
        ] {
            image.set_sf(802, sf, v);
        }
        image.set(802, "AHRtg", capacity_wh / 48.0);
        image.set(802, "WHRtg", capacity_wh);
        image.set(802, "WChaRteMax", max_watts);
        image.set(802, "WDisChaRteMax", max_watts);
        image.set(802, "SoCMax", 100.0);
        image.set(802, "SoCMin", 0.0);
        image.set(802, "SoCRsvMin", 10.0);
        image.set(802, "SocRsvMax", 100.0);
        image.set(802, "SoH", 100.0);
        image.set(802, "LocRemCtl", 0.0);
        image.set(802, "State", 3.0);
        image.set(802, "V", 48.0);
        image.set(802, "SetOp", 1.0);
        image.set(802, "SetInvState", 3.0);
        image.end();
        Self::from_image(
            image,
            Behaviour::Battery {
                capacity_wh,
                max_w: max_watts,
                soc: soc_percent,
                demand_w: 0.0,
            },
        )
    }

    /// A three-phase meter at `base`: models 1, 203. Power is positive for import.
    pub fn meter(base: u16) -> Self {
        let mut image = SunSpecImage::new(base);
        common(&mut image, "SimMeter", "MTR-0001");
        image.add_model(203, 0);
        for (sf, v) in [
            ("A_SF", -2),
            ("V_SF", -1),
            ("Hz_SF", -2),
            ("W_SF", 0),
            ("TotWh_SF", 0),
        ] {
            image.set_sf(203, sf, v);
        }
        image.set(203, "PhVphA", 230.0);
        image.set(203, "Hz", 50.0);
        image.end();
        Self::from_image(
            image,
            Behaviour::Meter {
                power_w: 0.0,
                import_wh: 1000.0,
                export_wh: 500.0,
            },
        )
    }

    fn from_image(image: SunSpecImage, behaviour: Behaviour) -> Self {
        Self {
            image,
            behaviour,
            started: None,
            last: None,
            revert_at: None,
            sentinels: false,
            speed: 1.0,
        }
    }

    /// The register image (to inspect or edit).
    pub fn image(&mut self) -> &mut SunSpecImage {
        &mut self.image
    }

    /// Runs simulated time `speed` times faster than the wall clock (1 by default).
    pub fn set_speed(&mut self, speed: f64) {
        if speed.is_finite() && speed > 0.0 {
            self.speed = speed;
        }
    }

    /// Makes every measured point report "not implemented" (or stop doing so).
    pub fn set_sentinels(&mut self, on: bool) {
        self.sentinels = on;
    }

    /// Sets a fixed irradiance (inverters).
    pub fn set_irradiance(&mut self, fraction: f64) {
        if let Behaviour::Inverter { irradiance, .. } = &mut self.behaviour {
            *irradiance = Irradiance::Fixed(fraction.clamp(0.0, 1.0));
        }
    }

    /// Sets the power the site asks of the battery, positive to discharge (batteries).
    pub fn set_demand(&mut self, watts: f64) {
        if let Behaviour::Battery { demand_w, .. } = &mut self.behaviour {
            *demand_w = watts;
        }
    }

    /// Sets the measured power, positive for import (meters).
    pub fn set_power(&mut self, watts: f64) {
        if let Behaviour::Meter { power_w, .. } = &mut self.behaviour {
            *power_w = watts;
        }
    }

    /// Sets the battery's state of charge in percent (batteries; for scenarios that start
    /// at a chosen charge).
    pub fn set_soc(&mut self, percent: f64) {
        if let Behaviour::Battery { soc, .. } = &mut self.behaviour {
            *soc = percent.clamp(0.0, 100.0);
        }
    }

    /// The battery's state of charge in percent.
    pub fn soc(&self) -> Option<f64> {
        match &self.behaviour {
            Behaviour::Battery { soc, .. } => Some(*soc),
            _ => None,
        }
    }

    fn limit_fraction(&self, der: bool) -> f64 {
        let (ena, pct) = if der {
            ("WMaxLimPctEna", 704)
        } else {
            ("WMaxLim_Ena", 123)
        };
        if self.image.get(pct, ena) == Some(1.0) {
            self.image
                .get(pct, "WMaxLimPct")
                .map_or(1.0, |p| (p / 100.0).clamp(0.0, 1.0))
        } else {
            1.0
        }
    }

    fn revert(&mut self, now: Instant) {
        let Some(deadline) = self.revert_at else {
            return;
        };
        let remaining = deadline.saturating_duration_since(now).as_secs_f64().ceil();
        if let Behaviour::Inverter { der: true, .. } = self.behaviour {
            self.image.set(704, "WMaxLimPctRvrtRem", remaining);
        }
        if now < deadline {
            return;
        }
        self.revert_at = None;
        match &self.behaviour {
            Behaviour::Inverter { der: false, .. } => self.image.set(123, "WMaxLim_Ena", 0.0),
            Behaviour::Inverter { der: true, .. } => {
                let pct = self.image.get(704, "WMaxLimPctRvrt").unwrap_or(100.0);
                let ena = self.image.get(704, "WMaxLimPctEnaRvrt").unwrap_or(0.0);
                self.image.set(704, "WMaxLimPct", pct);
                self.image.set(704, "WMaxLimPctEna", ena);
            }
            Behaviour::Battery { .. } => {
                self.image.set(124, "StorCtl_Mod", 0.0);
                self.image.set(124, "InWRte", 100.0);
                self.image.set(124, "OutWRte", 100.0);
            }
            Behaviour::Meter { .. } => {}
        }
    }

    fn update(&mut self, now: Instant) {
        let started = *self.started.get_or_insert(now);
        let dt_h = self.last.map_or(0.0, |l| {
            now.saturating_duration_since(l).as_secs_f64() * self.speed / 3600.0
        });
        self.last = Some(now);
        self.revert(now);
        let sentinels = self.sentinels;
        match self.behaviour.clone() {
            Behaviour::Inverter {
                rated,
                irradiance,
                mut energy_wh,
                der,
            } => {
                let sun = match &irradiance {
                    Irradiance::Fixed(f) => *f,
                    Irradiance::Curve(c) => c(now.saturating_duration_since(started).as_secs_f64()),
                }
                .clamp(0.0, 1.0);
                let limit = self.limit_fraction(der);
                let power = rated * sun.min(limit);
                energy_wh += power * dt_h;
                let state = if power <= 0.0 {
                    2.0
                } else if sun > limit {
                    5.0
                } else {
                    4.0
                };
                let m = if der { 701 } else { 103 };
                if sentinels {
                    self.image.set_absent(m, "W");
                    self.image
                        .set_absent(m, if der { "TotWhInj" } else { "WH" });
                } else {
                    self.image.set(m, "W", power);
                    if der {
                        self.image.set(701, "TotWhInj", energy_wh);
                        self.image.set(
                            701,
                            "InvSt",
                            if state == 5.0 {
                                4.0
                            } else if state == 4.0 {
                                3.0
                            } else {
                                1.0
                            },
                        );
                        self.image.set(701, "A", power / 230.0 / 3.0);
                    } else {
                        self.image.set(103, "WH", energy_wh);
                        self.image.set(103, "St", state);
                        let amps = power / 230.0 / 3.0;
                        self.image.set(103, "A", amps * 3.0);
                        for ph in ["AphA", "AphB", "AphC"] {
                            self.image.set(103, ph, amps);
                        }
                    }
                }
                self.behaviour = Behaviour::Inverter {
                    rated,
                    irradiance,
                    energy_wh,
                    der,
                };
            }
            Behaviour::Battery {
                capacity_wh,
                max_w,
                mut soc,
                demand_w,
            } => {
                let mode = self.image.get(124, "StorCtl_Mod").unwrap_or(0.0) as u16;
                let wchamax = self.image.get(124, "WChaMax").unwrap_or(max_w);
                let out_lim = if mode & 2 != 0 {
                    self.image.get(124, "OutWRte").unwrap_or(100.0) / 100.0 * wchamax
                } else {
                    max_w
                };
                let in_lim = if mode & 1 != 0 {
                    self.image.get(124, "InWRte").unwrap_or(100.0) / 100.0 * wchamax
                } else {
                    max_w
                };
                let mut power =
                    demand_w.clamp(-in_lim.min(max_w).max(0.0), out_lim.min(max_w).max(0.0));
                if (power > 0.0 && soc <= 0.0) || (power < 0.0 && soc >= 100.0) {
                    power = 0.0;
                }
                soc = (soc - power * dt_h / capacity_wh * 100.0).clamp(0.0, 100.0);
                if sentinels {
                    self.image.set_absent(802, "SoC");
                    self.image.set_absent(802, "W");
                    self.image.set_absent(124, "ChaState");
                } else {
                    self.image.set(802, "SoC", soc);
                    self.image.set(802, "W", power);
                    self.image.set(802, "A", power / 48.0);
                    self.image.set(124, "ChaState", soc);
                    let st = if power > 0.0 {
                        3.0
                    } else if power < 0.0 {
                        4.0
                    } else if soc >= 100.0 {
                        5.0
                    } else {
                        6.0
                    };
                    self.image.set(802, "ChaSt", st);
                    self.image.set(124, "ChaSt", st);
                }
                self.behaviour = Behaviour::Battery {
                    capacity_wh,
                    max_w,
                    soc,
                    demand_w,
                };
            }
            Behaviour::Meter {
                power_w,
                mut import_wh,
                mut export_wh,
            } => {
                if power_w.is_nan() {
                    return;
                }
                if power_w > 0.0 {
                    import_wh += power_w * dt_h
                } else {
                    export_wh -= power_w * dt_h
                }
                if sentinels {
                    self.image.set_absent(203, "W");
                    self.image.set_absent(203, "TotWhImp");
                } else {
                    self.image.set(203, "W", power_w);
                    for ph in ["WphA", "WphB", "WphC"] {
                        self.image.set(203, ph, power_w / 3.0);
                    }
                    self.image.set(203, "TotWhImp", import_wh);
                    self.image.set(203, "TotWhExp", export_wh);
                    self.image.set(203, "A", power_w.abs() / 230.0);
                }
                self.behaviour = Behaviour::Meter {
                    power_w,
                    import_wh,
                    export_wh,
                };
            }
        }
    }

    fn on_write(&mut self, touched: &[(u16, &'static str)], now: Instant) -> Result<(), u8> {
        for (model, point) in touched {
            match (*model, *point) {
                (123, "WMaxLimPct") | (123, "WMaxLim_Ena") | (123, "WMaxLimPct_RvrtTms") => {
                    if self
                        .image
                        .get(123, "WMaxLimPct")
                        .is_some_and(|p| !(0.0..=100.0).contains(&p))
                    {
                        return Err(ILLEGAL_VALUE);
                    }
                    let secs = self.image.get(123, "WMaxLimPct_RvrtTms").unwrap_or(0.0);
                    self.revert_at = (secs > 0.0).then(|| now + Duration::from_secs_f64(secs));
                }
                (704, "WMaxLimPct") | (704, "WMaxLimPctEna") | (704, "WMaxLimPctRvrtTms") => {
                    let secs = self.image.get(704, "WMaxLimPctRvrtTms").unwrap_or(0.0);
                    self.revert_at = (secs > 0.0).then(|| now + Duration::from_secs_f64(secs));
                }
                (124, "InWRte")
                | (124, "OutWRte")
                | (124, "StorCtl_Mod")
                | (124, "InOutWRte_RvrtTms") => {
                    let secs = self.image.get(124, "InOutWRte_RvrtTms").unwrap_or(0.0);
                    self.revert_at = (secs > 0.0).then(|| now + Duration::from_secs_f64(secs));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Starts serving this device for unit `unit` on `addr` (port 0: a free port).
    pub async fn serve(self, unit: u8, addr: SocketAddr) -> std::io::Result<ModbusSim<SunSpecSim>> {
        ModbusSim::start(self, unit, addr).await
    }
}

/// A hybrid inverter: PV and storage in one SunSpec chain at one address and unit id, as hybrid
/// inverters present them (one common model, then the inverter's models 103, 120, 123, then
/// the storage models 124 and 802). The site file names it twice, once per role, with the same
/// `address` and `unit_id`.
#[derive(Debug, Clone)]
pub struct HybridSim {
    /// The PV half: models 1, 103, 120, 123.
    pub pv: SunSpecSim,
    /// The storage half: models 124, 802, right after the PV half's last model.
    pub battery: SunSpecSim,
    /// The first address of the storage half.
    split: u16,
}

impl HybridSim {
    /// A hybrid of `rated_watts` of PV and a battery of `capacity_wh`, `max_watts` each way.
    pub fn new(
        base: u16,
        rated_watts: f64,
        irradiance: Irradiance,
        capacity_wh: f64,
        max_watts: f64,
        soc_percent: f64,
    ) -> Self {
        let pv = SunSpecSim::inverter(base, rated_watts, irradiance, false);
        let split = pv.image.end_address();
        // The storage image's own marker sits just before `split`, hidden by the PV half, so
        // its models continue the PV chain.
        let battery =
            SunSpecSim::battery_models(split - 2, capacity_wh, max_watts, soc_percent, false);
        Self { pv, battery, split }
    }

    /// Both halves run `speed` times faster than the wall clock.
    pub fn set_speed(&mut self, speed: f64) {
        self.pv.set_speed(speed);
        self.battery.set_speed(speed);
    }

    /// Starts serving it for unit `unit` on `addr` (port 0: a free port).
    pub async fn serve(self, unit: u8, addr: SocketAddr) -> std::io::Result<ModbusSim<HybridSim>> {
        ModbusSim::start(self, unit, addr).await
    }
}

impl SimDevice for HybridSim {
    fn tick(&mut self, now: Instant) {
        self.pv.update(now);
        self.battery.update(now);
    }

    fn read(&mut self, table: Table, address: u16, count: u16) -> Result<Vec<u16>, u8> {
        if table != Table::Holding {
            return Err(0x01);
        }
        if count == 0 || count > 125 {
            return Err(ILLEGAL_VALUE);
        }
        let end = u32::from(address) + u32::from(count);
        let mut out = Vec::with_capacity(usize::from(count));
        if address < self.split {
            let n = (u32::from(self.split).min(end) - u32::from(address)) as u16;
            out.extend(self.pv.image.read(address, n)?);
        }
        if end > u32::from(self.split) {
            let from = address.max(self.split);
            let n = (end - u32::from(from)) as u16;
            out.extend(self.battery.image.read(from, n)?);
        }
        Ok(out)
    }

    fn write(&mut self, address: u16, words: &[u16], now: Instant) -> Result<(), u8> {
        if address < self.split {
            SimDevice::write(&mut self.pv, address, words, now)
        } else {
            SimDevice::write(&mut self.battery, address, words, now)
        }
    }
}

impl SimDevice for SunSpecSim {
    fn tick(&mut self, now: Instant) {
        self.update(now);
    }

    fn read(&mut self, table: Table, address: u16, count: u16) -> Result<Vec<u16>, u8> {
        match table {
            Table::Holding => self.image.read(address, count),
            Table::Input => Err(0x01),
        }
    }

    fn write(&mut self, address: u16, words: &[u16], now: Instant) -> Result<(), u8> {
        let backup = self.image.clone();
        let touched = self.image.write(address, words)?;
        if let Err(code) = self.on_write(&touched, now) {
            self.image = backup;
            return Err(code);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_model_reads_not_implemented_everywhere() {
        let mut img = SunSpecImage::new(40000);
        img.add_model(103, 0).end();
        assert_eq!(img.get(103, "W"), None);
        assert_eq!(img.get(103, "WH"), None);
        assert_eq!(img.raw(103, "W"), Some(&[0x8000u16][..]));
    }

    #[test]
    fn writes_to_read_only_points_are_refused_with_illegal_address() {
        let mut sim = SunSpecSim::inverter(40000, 3000.0, Irradiance::Fixed(0.5), false);
        let w_addr = sim.image().models()[1].address + 14;
        assert_eq!(
            SimDevice::write(&mut sim, w_addr, &[1], Instant::now()),
            Err(0x02)
        );
    }

    #[test]
    fn the_inverter_limit_reverts_after_its_timeout() {
        let mut sim = SunSpecSim::inverter(40000, 3000.0, Irradiance::Fixed(1.0), false);
        let t0 = Instant::now();
        let ctl = sim.image().models()[3];
        assert_eq!(ctl.id, 123);
        // WMaxLimPct = 50.0 % (sf -1), WinTms 0, RvrtTms 10 s, RmpTms 0, WMaxLim_Ena 1.
        SimDevice::write(&mut sim, ctl.address + 5, &[500, 0, 10, 0, 1], t0).unwrap();
        sim.tick(t0 + Duration::from_secs(1));
        assert_eq!(sim.image().get(103, "W"), Some(1500.0));
        sim.tick(t0 + Duration::from_secs(11));
        assert_eq!(sim.image().get(123, "WMaxLim_Ena"), Some(0.0));
        assert_eq!(sim.image().get(103, "W"), Some(3000.0));
    }

    #[test]
    fn the_battery_integrates_its_state_of_charge() {
        let mut sim = SunSpecSim::battery(40000, 10_000.0, 5000.0, 50.0);
        let t0 = Instant::now();
        sim.set_demand(5000.0);
        sim.tick(t0);
        sim.tick(t0 + Duration::from_secs(360));
        // 5 kW for 0.1 h from 10 kWh: 5 % less.
        assert!((sim.soc().unwrap() - 45.0).abs() < 1e-6);
    }

    #[test]
    fn clear_sky_is_dark_at_night_and_brightest_at_noon() {
        assert_eq!(clear_sky(3.0), 0.0);
        assert!((clear_sky(12.0) - 1.0).abs() < 1e-9);
        assert!(clear_sky(9.0) > 0.5 && clear_sky(9.0) < 1.0);
    }
}
