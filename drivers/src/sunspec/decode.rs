//! Pure SunSpec decoding: raw registers to values, every "not implemented" sentinel to `None`.

use super::models::{ModelDef, PointDef, PointType, model_def};

/// A decoded point value, before scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any integer type (signed, unsigned, enum, bitfield, accumulator).
    Int(i128),
    /// A float32 point.
    Float(f32),
    /// A string point, NUL padding removed.
    Text(String),
}

/// Decodes a point of type `ty` from its registers; `None` when the registers are too few or
/// hold the type's "not implemented" value.
pub fn decode(ty: PointType, regs: &[u16]) -> Option<Value> {
    let need = usize::from(ty.registers());
    if regs.len() < need || regs.is_empty() {
        return None;
    }
    let u32v = || (u32::from(regs[0]) << 16) | u32::from(regs[1]);
    let u64v = || {
        regs[..4]
            .iter()
            .fold(0u64, |acc, r| (acc << 16) | u64::from(*r))
    };
    match ty {
        PointType::I16 | PointType::Sf => {
            let v = regs[0] as i16;
            (v != i16::MIN).then_some(Value::Int(v.into()))
        }
        PointType::U16 | PointType::Enum16 | PointType::Bitfield16 => {
            (regs[0] != u16::MAX).then_some(Value::Int(regs[0].into()))
        }
        PointType::Acc16 => (regs[0] != 0).then_some(Value::Int(regs[0].into())),
        PointType::I32 => {
            let v = u32v() as i32;
            (v != i32::MIN).then_some(Value::Int(v.into()))
        }
        PointType::U32 | PointType::Enum32 | PointType::Bitfield32 => {
            let v = u32v();
            (v != u32::MAX).then_some(Value::Int(v.into()))
        }
        PointType::Acc32 => {
            let v = u32v();
            (v != 0).then_some(Value::Int(v.into()))
        }
        PointType::I64 => {
            let v = u64v() as i64;
            (v != i64::MIN).then_some(Value::Int(v.into()))
        }
        PointType::U64 => {
            let v = u64v();
            (v != u64::MAX).then_some(Value::Int(v.into()))
        }
        PointType::Acc64 => {
            let v = u64v();
            (v != 0).then_some(Value::Int(v.into()))
        }
        PointType::F32 => {
            let v = f32::from_bits(u32v());
            // NaN is the sentinel; infinities are no reading either.
            v.is_finite().then_some(Value::Float(v))
        }
        PointType::Str => decode_string(regs),
        PointType::Pad => None,
    }
}

/// Decodes a string: two ASCII bytes per register, trailing NULs and spaces removed; all NUL
/// means not implemented. Non-ASCII bytes are replaced.
pub fn decode_string(regs: &[u16]) -> Option<Value> {
    let bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_be_bytes()).collect();
    if bytes.iter().all(|b| *b == 0) {
        return None;
    }
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let text: String = bytes[..end]
        .iter()
        .map(|b| {
            if b.is_ascii() && !b.is_ascii_control() {
                *b as char
            } else {
                '\u{FFFD}'
            }
        })
        .collect();
    Some(Value::Text(text.trim_end().to_owned()))
}

/// Decodes a scale factor: `None` for the sentinel or a value outside -10..=10.
pub fn decode_sf(raw: u16) -> Option<i32> {
    let v = raw as i16;
    (v != i16::MIN && (-10..=10).contains(&v)).then_some(i32::from(v))
}

/// Applies a scale factor: raw × 10^sf.
pub fn scale(raw: f64, sf: i32) -> f64 {
    raw * 10f64.powi(sf)
}

/// Encodes a value for writing: raw = value / 10^sf, rounded; `None` if it does not fit `ty`.
pub fn unscale(value: f64, sf: i32, ty: PointType) -> Option<u16> {
    let raw = (value / 10f64.powi(sf)).round();
    if !raw.is_finite() {
        return None;
    }
    match ty {
        PointType::I16 => {
            // Stay clear of the sentinel itself.
            (raw > f64::from(i16::MIN) && raw <= f64::from(i16::MAX)).then_some(raw as i16 as u16)
        }
        PointType::U16 | PointType::Enum16 => {
            (raw >= 0.0 && raw < f64::from(u16::MAX)).then_some(raw as u16)
        }
        _ => None,
    }
}

/// One model block read from a device: its id, where it starts, and its registers from the ID
/// register on (ID, L, then L registers, possibly fewer if only a prefix was read).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBlock {
    /// Model id.
    pub id: u16,
    /// PDU address of the ID register.
    pub address: u16,
    /// Registers from the ID register on.
    pub regs: Vec<u16>,
}

impl ModelBlock {
    /// The model definition, if this crate knows the model.
    pub fn def(&self) -> Option<&'static ModelDef> {
        model_def(self.id)
    }

    fn point_def(&self, name: &str) -> Option<&'static PointDef> {
        self.def().and_then(|d| d.point(name))
    }

    /// The raw registers of a point, if present in what was read.
    pub fn raw(&self, name: &str) -> Option<&[u16]> {
        let pt = self.point_def(name)?;
        let start = usize::from(pt.offset);
        self.regs.get(start..start + usize::from(pt.size))
    }

    /// The decoded value of a point, `None` if unknown, not read or not implemented.
    pub fn value(&self, name: &str) -> Option<Value> {
        let pt = self.point_def(name)?;
        decode(pt.ty, self.raw(name)?)
    }

    /// The point's value as a number with its scale factor applied; `None` if the point or its
    /// scale factor is not implemented.
    pub fn scaled(&self, name: &str) -> Option<f64> {
        let pt = self.point_def(name)?;
        let v = match self.value(name)? {
            Value::Int(i) => i as f64,
            Value::Float(f) => f64::from(f),
            Value::Text(_) => return None,
        };
        match pt.sf {
            None => Some(v),
            Some(sf_name) => {
                let sf = decode_sf(*self.raw(sf_name)?.first()?)?;
                Some(scale(v, sf))
            }
        }
    }

    /// The scale factor a point uses (0 for unscaled points), `None` if not implemented.
    pub fn sf_of(&self, name: &str) -> Option<i32> {
        let pt = self.point_def(name)?;
        match pt.sf {
            None => Some(0),
            Some(sf_name) => decode_sf(*self.raw(sf_name)?.first()?),
        }
    }

    /// The point as an integer (enums, bitfields), `None` if not implemented.
    pub fn int(&self, name: &str) -> Option<i128> {
        match self.value(name)? {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The point as text, `None` if not implemented.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.value(name)? {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// PDU address of a point (for writes), `None` when the point lies beyond the model length
    /// the device reported: a write there would land in the next model.
    pub fn address_of(&self, name: &str) -> Option<u16> {
        self.raw(name)?;
        let pt = self.point_def(name)?;
        self.address.checked_add(pt.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(id: u16, set: &[(u16, u16)]) -> ModelBlock {
        let def = model_def(id).unwrap();
        let mut regs = vec![0u16; usize::from(def.fixed_len) + 2];
        regs[0] = id;
        regs[1] = def.fixed_len;
        for (off, v) in set {
            regs[usize::from(*off)] = *v;
        }
        ModelBlock {
            id,
            address: 40070,
            regs,
        }
    }

    #[test]
    fn a_point_beyond_the_reported_model_length_has_no_address_to_write() {
        let mut b = block(123, &[]);
        let ena = b.address_of("WMaxLim_Ena").unwrap();
        assert_eq!(ena, 40070 + b.point_def("WMaxLim_Ena").unwrap().offset);
        // The device reports a shorter model: the point would be in the next model.
        b.regs
            .truncate(usize::from(b.point_def("WMaxLim_Ena").unwrap().offset));
        assert_eq!(b.address_of("WMaxLim_Ena"), None);
        assert!(b.address_of("WMaxLimPct").is_some() || b.raw("WMaxLimPct").is_none());
    }

    #[test]
    fn raw_4321_with_scale_factor_minus_one_is_432_point_1_watts() {
        let b = block(103, &[(14, 4321), (15, (-1i16) as u16)]);
        let w = b.scaled("W").unwrap();
        assert!((w - 432.1).abs() < 1e-9, "{w}");
    }

    #[test]
    fn a_not_implemented_value_is_absent_never_65535_watts() {
        let b = block(103, &[(14, 0x8000), (15, 0)]);
        assert_eq!(b.scaled("W"), None);
        let b = block(103, &[(2, 0xFFFF), (6, 0)]);
        assert_eq!(b.scaled("A"), None);
    }

    #[test]
    fn a_value_whose_scale_factor_is_not_implemented_is_absent() {
        let b = block(103, &[(14, 1000), (15, 0x8000)]);
        assert_eq!(b.scaled("W"), None);
        let b = block(103, &[(14, 1000), (15, 11)]);
        assert_eq!(
            b.scaled("W"),
            None,
            "scale factors outside -10..=10 are invalid"
        );
    }

    #[test]
    fn every_integer_sentinel_decodes_as_absent() {
        use PointType::*;
        assert_eq!(decode(I16, &[0x8000]), None);
        assert_eq!(decode(U16, &[0xFFFF]), None);
        assert_eq!(decode(Enum16, &[0xFFFF]), None);
        assert_eq!(decode(Bitfield16, &[0xFFFF]), None);
        assert_eq!(decode(Acc16, &[0]), None);
        assert_eq!(decode(I32, &[0x8000, 0]), None);
        assert_eq!(decode(U32, &[0xFFFF, 0xFFFF]), None);
        assert_eq!(decode(Enum32, &[0xFFFF, 0xFFFF]), None);
        assert_eq!(decode(Bitfield32, &[0xFFFF, 0xFFFF]), None);
        assert_eq!(decode(Acc32, &[0, 0]), None);
        assert_eq!(decode(I64, &[0x8000, 0, 0, 0]), None);
        assert_eq!(decode(U64, &[0xFFFF; 4]), None);
        assert_eq!(decode(Acc64, &[0; 4]), None);
        assert_eq!(decode(F32, &[0x7FC0, 0]), None);
        assert_eq!(decode(Str, &[0; 8]), None);
        assert_eq!(decode(Sf, &[0x8000]), None);
        assert_eq!(decode(Pad, &[0]), None);
    }

    #[test]
    fn multi_register_values_are_most_significant_word_first() {
        use PointType::*;
        assert_eq!(decode(Acc32, &[0x0001, 0x0002]), Some(Value::Int(65538)));
        assert_eq!(decode(I32, &[0xFFFF, 0xFFFE]), Some(Value::Int(-2)));
        assert_eq!(decode(U64, &[0, 0, 1, 0]), Some(Value::Int(65536)));
        assert_eq!(decode(F32, &[0x4348, 0x0000]), Some(Value::Float(200.0)));
        assert_eq!(decode(I16, &[0xFFFF]), Some(Value::Int(-1)));
    }

    #[test]
    fn strings_drop_their_nul_padding() {
        let regs = [
            u16::from_be_bytes(*b"Fr"),
            u16::from_be_bytes(*b"on"),
            u16::from_be_bytes(*b"i\0"),
            0,
        ];
        assert_eq!(decode_string(&regs), Some(Value::Text("Froni".into())));
    }

    #[test]
    fn the_float_inverter_reads_watts_without_a_scale_factor() {
        let bits = 1234.5f32.to_bits();
        let b = block(111, &[(22, (bits >> 16) as u16), (23, bits as u16)]);
        assert_eq!(b.scaled("W"), Some(1234.5));
    }

    #[test]
    fn a_point_beyond_what_was_read_is_absent_not_a_panic() {
        let b = ModelBlock {
            id: 103,
            address: 0,
            regs: vec![103, 50, 1],
        };
        assert_eq!(b.scaled("W"), None);
    }

    #[test]
    fn unscaling_rounds_and_refuses_values_that_do_not_fit() {
        assert_eq!(unscale(50.0, -2, PointType::U16), Some(5000));
        assert_eq!(unscale(1000.0, -2, PointType::U16), None);
        assert_eq!(unscale(-1.0, 0, PointType::U16), None);
        assert_eq!(unscale(-12.34, -1, PointType::I16), Some((-123i16) as u16));
    }

    proptest! {
        #[test]
        fn arbitrary_registers_never_panic_any_known_model(
            id in prop::sample::select(super::super::models::MODELS.iter().map(|m| m.id).collect::<Vec<_>>()),
            regs in prop::collection::vec(any::<u16>(), 0..200),
        ) {
            let b = ModelBlock { id, address: 40000, regs };
            for pt in b.def().unwrap().points {
                let _ = b.scaled(pt.name);
                let _ = b.value(pt.name);
                if let Some(v) = b.scaled(pt.name) {
                    prop_assert!(v.is_finite());
                }
            }
        }

        #[test]
        fn every_type_decodes_arbitrary_registers_without_panicking(regs in prop::collection::vec(any::<u16>(), 0..6)) {
            use PointType::*;
            for ty in [I16, U16, Enum16, Bitfield16, Acc16, I32, U32, Enum32, Bitfield32, Acc32, I64, U64, Acc64, F32, Str, Sf, Pad] {
                let _ = decode(ty, &regs);
            }
        }

        #[test]
        fn scaling_round_trips_through_unscale(raw in 0u16..60000, sf in -3i32..=2) {
            let v = scale(f64::from(raw), sf);
            prop_assert_eq!(unscale(v, sf, PointType::U16), Some(raw));
        }
    }
}
