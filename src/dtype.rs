//! Element types: validation of a foreign `DLDataType`, sizes and names.

use std::fmt;

use dlpark::ffi::{DLDataType, DLDataTypeCode as Code};

use crate::error::{Result, bail};

/// A validated DLPack data type.
///
/// Built only through [`DType::new`] (or the constants), so every `DType`
/// has a known code, bits that the code allows, and `lanes >= 1`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DType(DLDataType);

const fn raw(code: Code, bits: u8) -> DType {
    DType(DLDataType { code, bits, lanes: 1 })
}

/// Names and codes of the FP8/FP6/FP4 types, in code order (7..=17).
const SMALL_FLOATS: [(&str, u8); 11] = [
    ("float8_e3m4", 8),
    ("float8_e4m3", 8),
    ("float8_e4m3b11fnuz", 8),
    ("float8_e4m3fn", 8),
    ("float8_e4m3fnuz", 8),
    ("float8_e5m2", 8),
    ("float8_e5m2fnuz", 8),
    ("float8_e8m0fnu", 8),
    ("float6_e2m3fn", 6),
    ("float6_e3m2fn", 6),
    ("float4_e2m1fn", 4),
];
const FIRST_SMALL_FLOAT: u8 = Code::FLOAT8_E3M4.0;

impl DType {
    /// bool, stored as one byte.
    pub const BOOL: DType = raw(Code::BOOL, 8);
    /// int8.
    pub const INT8: DType = raw(Code::INT, 8);
    /// int16.
    pub const INT16: DType = raw(Code::INT, 16);
    /// int32.
    pub const INT32: DType = raw(Code::INT, 32);
    /// int64.
    pub const INT64: DType = raw(Code::INT, 64);
    /// uint8.
    pub const UINT8: DType = raw(Code::UINT, 8);
    /// uint16.
    pub const UINT16: DType = raw(Code::UINT, 16);
    /// uint32.
    pub const UINT32: DType = raw(Code::UINT, 32);
    /// uint64.
    pub const UINT64: DType = raw(Code::UINT, 64);
    /// IEEE binary16.
    pub const FLOAT16: DType = raw(Code::FLOAT, 16);
    /// IEEE binary32.
    pub const FLOAT32: DType = raw(Code::FLOAT, 32);
    /// IEEE binary64.
    pub const FLOAT64: DType = raw(Code::FLOAT, 64);
    /// bfloat16.
    pub const BFLOAT16: DType = raw(Code::BFLOAT, 16);
    /// Two float32.
    pub const COMPLEX64: DType = raw(Code::COMPLEX, 64);
    /// Two float64.
    pub const COMPLEX128: DType = raw(Code::COMPLEX, 128);

    /// Validates a foreign data type.
    ///
    /// Accepted: int/uint of 2, 4, 8, 16, 32, 64 bits; float of 16, 32, 64;
    /// bfloat 16; complex 32, 64, 128; bool 8; the FP8 codes with 8 bits, the
    /// FP6 codes with 6 and FP4 with 4 (any other bits are refused, as the
    /// spec demands). `lanes >= 1`; a vector of sub-byte elements must fill
    /// whole bytes. Opaque handles (code 3) have no agreed meaning: refused.
    #[inline]
    pub fn new(dt: DLDataType) -> Result<DType> {
        match DType::common(dt) {
            Some(dtype) => Ok(dtype),
            None => DType::other(dt),
        }
    }

    /// The common scalar types (int, uint, float, bfloat, complex, bool of
    /// the power-of-two widths [`DType::new`] accepts, one lane) in a few
    /// instructions; None for every other type, valid or not.
    #[inline(always)]
    pub(crate) fn common(dt: DLDataType) -> Option<DType> {
        // For codes 0..=6, the allowed widths as a bit set over log2(bits).
        const SCALAR: [u8; 7] = [
            0b111_1110,  // int: 2, 4, 8, 16, 32, 64
            0b111_1110,  // uint
            0b111_0000,  // float: 16, 32, 64
            0,           // opaque handle: never
            0b001_0000,  // bfloat: 16
            0b1110_0000, // complex: 32, 64, 128
            0b000_1000,  // bool: 8
        ];
        let ok = dt.lanes == 1
            && dt.bits.is_power_of_two()
            && SCALAR.get(usize::from(dt.code.0)).is_some_and(|m| m & (1 << dt.bits.trailing_zeros()) != 0);
        ok.then_some(DType(dt))
    }

    /// [`DType::new`] for what [`DType::common`] leaves: the rest of the
    /// valid types, and every refusal with its reason.
    #[cold]
    fn other(dt: DLDataType) -> Result<DType> {
        let DLDataType { code, bits, lanes } = dt;
        let allowed: &[u8] = match code {
            Code::INT | Code::UINT => &[2, 4, 8, 16, 32, 64],
            Code::FLOAT => &[16, 32, 64],
            Code::BFLOAT => &[16],
            Code::COMPLEX => &[32, 64, 128],
            Code::BOOL => &[8],
            Code::OPAQUEHANDLE => {
                bail!(UnsupportedDtype, "dtype code 3 (kDLOpaqueHandle) has no agreed meaning and cannot be exchanged")
            }
            c if (FIRST_SMALL_FLOAT..FIRST_SMALL_FLOAT + SMALL_FLOATS.len() as u8).contains(&c.0) => {
                let (name, want) = SMALL_FLOATS[(c.0 - FIRST_SMALL_FLOAT) as usize];
                if bits != want {
                    bail!(UnsupportedDtype, "dtype {name} (code {}) must have bits={want}, got bits={bits}", c.0);
                }
                &[]
            }
            c => bail!(UnsupportedDtype, "unknown dtype code {} (bits={bits}, lanes={lanes})", c.0),
        };
        if !allowed.is_empty() && !allowed.contains(&bits) {
            bail!(UnsupportedDtype, "dtype code {} does not allow bits={bits} (allowed: {allowed:?})", code.0);
        }
        if lanes == 0 {
            bail!(UnsupportedDtype, "dtype lanes is 0: must be >= 1");
        }
        if lanes > 1 && (u32::from(bits) * u32::from(lanes)) % 8 != 0 {
            bail!(UnsupportedDtype, "a vector of {lanes} x {bits}-bit elements does not fill whole bytes");
        }
        Ok(DType(dt))
    }

    /// The DLPack value.
    pub fn raw(self) -> DLDataType {
        self.0
    }

    /// Bits of one element, all lanes together.
    pub fn element_bits(self) -> u32 {
        u32::from(self.0.bits) * u32::from(self.0.lanes)
    }

    /// True for 4- and 6-bit scalar types, which DLPack packs unless the
    /// tensor says IS_SUBBYTE_TYPE_PADDED.
    pub fn is_subbyte(self) -> bool {
        !self.element_bits().is_multiple_of(8)
    }

    /// Bytes per element when elements are byte addressable: for sub-byte
    /// types only when `padded` (one element per byte), else `None`.
    pub fn itemsize(self, padded: bool) -> Option<usize> {
        match (self.is_subbyte(), padded) {
            (false, _) => Some((self.element_bits() / 8) as usize),
            (true, true) => Some(1),
            (true, false) => None,
        }
    }

    /// The name as NumPy / ml_dtypes spell it ("float32", "bfloat16",
    /// "float8_e4m3fn"); a vector type gets "x{lanes}" ("float32x4").
    pub fn name(self) -> String {
        self.to_string()
    }

    /// The names of the types NumPy lacks (bfloat16, FP8, FP6, FP4, the 2-
    /// and 4-bit integers): they reach NumPy through ml_dtypes, under the
    /// same names, one element per byte.
    pub fn ml_dtypes_names() -> impl Iterator<Item = &'static str> {
        ["bfloat16", "int4", "uint4", "int2", "uint2"].into_iter().chain(SMALL_FLOATS.iter().map(|(n, _)| *n))
    }

    /// The type a name stands for: a name from [`DType::name`] ("float32",
    /// "bfloat16", "float32x4"), or NumPy's spellings of its own types: a
    /// type string in native byte order ("f4", "<i8", "|b1") or a one-letter
    /// code ("f", "d", "?", ...).
    pub fn from_name(name: &str) -> Result<DType> {
        if let Some(t) = scalar_from_name(name).or_else(|| numpy_spelling(name)) {
            return Ok(t);
        }
        let vector = name.rsplit_once('x').and_then(|(base, lanes)| {
            let lanes = lanes.parse::<u16>().ok().filter(|l| *l >= 1 && lanes.bytes().all(|c| c.is_ascii_digit()))?;
            Some((scalar_from_name(base)?, lanes))
        });
        match vector {
            Some((t, lanes)) => DType::new(DLDataType { lanes, ..t.0 }),
            None => bail!(InvalidArgument, "unknown dtype name {name:?}"),
        }
    }
}

/// NumPy's spellings of its types (typestrs and one-letter codes, on a
/// 64-bit little- or big-endian host: `l` is 64 bits).
fn numpy_spelling(name: &str) -> Option<DType> {
    let letter = match name {
        "?" => Some(DType::BOOL),
        "b" => Some(DType::INT8),
        "B" => Some(DType::UINT8),
        "h" => Some(DType::INT16),
        "H" => Some(DType::UINT16),
        "i" => Some(DType::INT32),
        "I" => Some(DType::UINT32),
        "l" | "q" => Some(DType::INT64),
        "L" | "Q" => Some(DType::UINT64),
        "e" => Some(DType::FLOAT16),
        "f" => Some(DType::FLOAT32),
        "d" => Some(DType::FLOAT64),
        "F" => Some(DType::COMPLEX64),
        "D" => Some(DType::COMPLEX128),
        _ => None,
    };
    // A typestr has a kind and a size; "V" (raw bytes) names no type alone.
    letter.or_else(|| crate::array_interface::parse_typestr(name, None).ok())
}

fn scalar_from_name(name: &str) -> Option<DType> {
    match name {
        "bool" => return Some(DType::BOOL),
        "bfloat16" => return Some(DType::BFLOAT16),
        _ => {}
    }
    if let Some(i) = SMALL_FLOATS.iter().position(|(n, _)| *n == name) {
        return Some(raw(Code(FIRST_SMALL_FLOAT + i as u8), SMALL_FLOATS[i].1));
    }
    let split = name.find(|c: char| c.is_ascii_digit())?;
    let (kind, bits) = name.split_at(split);
    let code = match kind {
        "int" => Code::INT,
        "uint" => Code::UINT,
        "float" => Code::FLOAT,
        "complex" => Code::COMPLEX,
        _ => return None,
    };
    if !bits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    DType::new(raw(code, bits.parse().ok()?).0).ok()
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let DLDataType { code, bits, lanes } = self.0;
        match code {
            Code::BOOL => f.write_str("bool")?,
            Code::BFLOAT => f.write_str("bfloat16")?,
            Code::INT => write!(f, "int{bits}")?,
            Code::UINT => write!(f, "uint{bits}")?,
            Code::FLOAT => write!(f, "float{bits}")?,
            Code::COMPLEX => write!(f, "complex{bits}")?,
            c => f.write_str(SMALL_FLOATS[(c.0 - FIRST_SMALL_FLOAT) as usize].0)?,
        }
        if lanes > 1 {
            write!(f, "x{lanes}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn dt(code: u8, bits: u8, lanes: u16) -> DLDataType {
        DLDataType { code: Code(code), bits, lanes }
    }

    #[test]
    fn every_known_code_has_a_valid_form_and_a_name_that_round_trips() {
        let valid = [
            (0, 8),
            (0, 64),
            (0, 4),
            (0, 2),
            (1, 2),
            (1, 4),
            (1, 8),
            (1, 64),
            (2, 16),
            (2, 32),
            (2, 64),
            (4, 16),
            (5, 32),
            (5, 64),
            (5, 128),
            (6, 8),
            (7, 8),
            (8, 8),
            (9, 8),
            (10, 8),
            (11, 8),
            (12, 8),
            (13, 8),
            (14, 8),
            (15, 6),
            (16, 6),
            (17, 4),
        ];
        for (code, bits) in valid {
            let t = DType::new(dt(code, bits, 1)).unwrap();
            assert_eq!(DType::from_name(&t.name()).unwrap(), t, "{}", t.name());
        }
        assert_eq!(DType::from_name("float32x4").unwrap().raw().lanes, 4);
        assert_eq!(DType::COMPLEX64.name(), "complex64");
        assert_eq!(DType::BFLOAT16.name(), "bfloat16");
    }

    #[test]
    fn refuses_bad_codes_bits_and_lanes() {
        for (code, bits, lanes) in [
            (3, 64, 1),  // opaque handle
            (18, 8, 1),  // unknown code
            (200, 8, 1), // unknown code
            (2, 8, 1),   // float8 must use its own code
            (6, 1, 1),   // bool is 8 bits
            (0, 1, 1),   // no 1-bit integers
            (1, 3, 1),   // nor 3-bit ones
            (15, 8, 1),  // FP6 with 8 bits
            (16, 4, 1),  // FP6 with 4 bits
            (17, 8, 1),  // FP4 with 8 bits
            (10, 16, 1), // FP8 with 16 bits
            (2, 32, 0),  // lanes 0
            (17, 4, 3),  // 12-bit vector
        ] {
            let e = DType::new(dt(code, bits, lanes)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnsupportedDtype, "{code},{bits},{lanes}: {e}");
        }
        assert!(DType::from_name("float31").is_err());
        assert!(DType::from_name("quaternion").is_err());
        assert!(DType::from_name("float32x0").is_err());
    }

    #[test]
    fn itemsize_of_sub_byte_types_depends_on_padding() {
        let fp4 = DType::new(dt(17, 4, 1)).unwrap();
        assert_eq!(fp4.itemsize(false), None);
        assert_eq!(fp4.itemsize(true), Some(1));
        assert_eq!(DType::COMPLEX128.itemsize(false), Some(16));
        assert_eq!(DType::new(dt(17, 4, 2)).unwrap().itemsize(false), Some(1));
    }
}
