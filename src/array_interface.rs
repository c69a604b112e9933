//! NumPy's array interface (version 3) and the CUDA array interface: type
//! strings, byte strides, and building a tensor from their fields.

use std::ffi::c_void;

use dlpark::ffi::{DLDataType, DLDevice};

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Result, bail};
use crate::layout::{self, Dims};
use crate::owner::ReleaseFn;
use crate::tensor::{Flags, RawView, Tensor};

/// The array-interface version this module speaks.
pub const VERSION: i32 = 3;

#[cfg(target_endian = "little")]
const NATIVE: u8 = b'<';
#[cfg(target_endian = "big")]
const NATIVE: u8 = b'>';

/// The type string of `dtype` ("<f4", "|b1", "<c8").
///
/// NumPy has no type for bfloat16, FP8, complex32 or vector types: they
/// become raw bytes, "<V2" / "|V1" / ..., the way ml_dtypes' dtypes appear,
/// and keep their identity through the separate DLPack dtype field.
/// Packed sub-byte data has no array-interface form.
pub fn typestr(dtype: DType, padded: bool) -> Result<String> {
    let Some(size) = dtype.itemsize(padded) else {
        bail!(UnsupportedDtype, "packed {dtype} data has no array-interface form (elements are smaller than a byte)");
    };
    let raw = dtype.raw();
    let kind = match raw.code.0 {
        _ if !has_numpy_kind(dtype) => 'V',
        6 => 'b',
        0 => 'i',
        1 => 'u',
        2 => 'f',
        _ => 'c',
    };
    let order = if size == 1 { '|' } else { NATIVE as char };
    Ok(format!("{order}{kind}{size}"))
}

/// The DLPack type of an array-interface type string.
///
/// `hint` is the caller's DLPack type: required for raw-byte types ("V"),
/// which it names (bfloat16 as "<V2", FP8 as "|V1"); for other kinds it
/// must agree with the string. Non-native byte order is refused.
pub fn parse_typestr(typestr: &str, hint: Option<DLDataType>) -> Result<DType> {
    match parse_typestr_order(typestr, hint)? {
        (_, true) => bail!(ByteOrder, "typestr {typestr:?} is not in native byte order; byte-swap it first"),
        (dtype, false) => Ok(dtype),
    }
}

/// As [`parse_typestr`], but non-native byte order is allowed and reported
/// (`true`: the data must be byte-swapped).
pub fn parse_typestr_order(typestr: &str, hint: Option<DLDataType>) -> Result<(DType, bool)> {
    // The byte-order character is optional (NumPy reads "f8" as native).
    let (order, rest) = match typestr.as_bytes().first() {
        Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (c, &typestr[1..]),
        _ => (b'=', typestr),
    };
    let Some(&kind) = rest.as_bytes().first() else {
        bail!(InvalidTypestr, "malformed typestr {typestr:?}: expected byte order, kind and item size, e.g. \"<f4\"");
    };
    // Before the size: these kinds carry more than a size ("<M8[ns]", "|O").
    if matches!(kind, b'm' | b'M' | b'O' | b'S' | b'U' | b'a') {
        bail!(
            UnsupportedDtype,
            "typestr {typestr:?}: kind '{}' (datetime, timedelta, object or string) cannot be exchanged",
            kind as char
        );
    }
    let size = rest.get(1..).and_then(|s| {
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) { s.parse::<usize>().ok() } else { None }
    });
    let Some(size) = size else {
        bail!(InvalidTypestr, "malformed typestr {typestr:?}: expected byte order, kind and item size, e.g. \"<f4\"");
    };
    if size == 0 {
        bail!(InvalidTypestr, "malformed typestr {typestr:?}: item size 0");
    }
    let swapped = size > 1 && order != b'|' && order != b'=' && order != NATIVE;
    // Types NumPy lacks (bfloat16, FP8, ...) travel as raw bytes, or under
    // whatever kind their NumPy extension chose (ml_dtypes spells
    // float8_e5m2 "<f1"): the caller's DLPack type names them.
    if let Some(h) = hint {
        let named = DType::new(h)?;
        if !has_numpy_kind(named) && named.itemsize(true) == Some(size) {
            return Ok((named, swapped));
        }
    }
    let parsed = match (kind, size) {
        (b'b', 1) => DType::BOOL,
        (b'i', 1) => DType::INT8,
        (b'i', 2) => DType::INT16,
        (b'i', 4) => DType::INT32,
        (b'i', 8) => DType::INT64,
        (b'u', 1) => DType::UINT8,
        (b'u', 2) => DType::UINT16,
        (b'u', 4) => DType::UINT32,
        (b'u', 8) => DType::UINT64,
        (b'f', 2) => DType::FLOAT16,
        (b'f', 4) => DType::FLOAT32,
        (b'f', 8) => DType::FLOAT64,
        (b'c', 8) => DType::COMPLEX64,
        (b'c', 16) => DType::COMPLEX128,
        (b'V', _) => {
            let Some(hint) = hint else {
                bail!(
                    UnsupportedDtype,
                    "typestr {typestr:?} is raw bytes: say which DLPack dtype it holds (e.g. bfloat16 for \"<V2\")"
                );
            };
            let dtype = DType::new(hint)?;
            if dtype.itemsize(true) != Some(size) {
                bail!(InvalidArgument, "typestr {typestr:?} holds {size}-byte items but dtype {dtype} does not");
            }
            return Ok((dtype, swapped));
        }
        (b'b' | b'i' | b'u' | b'f' | b'c', _) => {
            bail!(UnsupportedDtype, "typestr {typestr:?}: no DLPack type of kind '{}' has {size} bytes", kind as char)
        }
        _ => bail!(InvalidTypestr, "malformed typestr {typestr:?}: unknown kind '{}'", kind as char),
    };
    if let Some(h) = hint
        && h != parsed.raw()
    {
        let named = DType::new(h).map_or_else(|_| format!("{h:?}"), |d| d.name());
        bail!(InvalidArgument, "typestr {typestr:?} is {parsed} but the dtype field says {named}");
    }
    Ok((parsed, swapped))
}

/// Whether NumPy has a builtin type for `dtype` (else it travels as "V").
fn has_numpy_kind(dtype: DType) -> bool {
    let raw = dtype.raw();
    raw.lanes == 1
        && match raw.code.0 {
            0 | 1 => raw.bits >= 8,
            2 | 6 => true,
            5 => raw.bits >= 64,
            _ => false,
        }
}

/// Byte strides of `tensor` (the array interface's unit).
pub fn byte_strides(tensor: &Tensor) -> Result<Dims> {
    let Some(size) = tensor.itemsize() else {
        bail!(UnsupportedDtype, "packed {} data has no byte strides", tensor.dtype());
    };
    // Cannot overflow: validation bounded every stride times the item size.
    Ok(tensor.strides().iter().map(|s| s * size as i64).collect())
}

/// Element strides from byte strides; refuses strides that are not a
/// multiple of the item size (DLPack cannot express them).
pub fn element_strides(byte_strides: &[i64], itemsize: usize) -> Result<Dims> {
    let size = itemsize as i64;
    byte_strides
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if b % size != 0 {
                bail!(InvalidStrides, "strides[{i}] = {b} bytes is not a multiple of the item size {itemsize}");
            }
            Ok(b / size)
        })
        .collect()
}

/// A tensor as an array interface shows it: the one description that every
/// output form translates (the C struct `dlb_array_interface`, the Python
/// dict, the `__array_struct__` capsule).
#[derive(Debug)]
pub struct Description<'a> {
    /// Type string: byte order, kind, item size ("<f4"; "<V2" for bfloat16).
    pub typestr: String,
    /// Dimensions.
    pub shape: &'a [i64],
    /// Strides in bytes (always given).
    pub byte_strides: &'a [i64],
    /// Address of the first element; NULL for a tensor without elements.
    pub data: *mut c_void,
    /// Whether the memory must not be written.
    pub readonly: bool,
    /// Bytes per element.
    pub itemsize: usize,
    /// Where the memory is.
    pub device: Device,
}

/// The array-interface description of `tensor`, zero copy. Refused: packed
/// sub-byte data (no byte-sized items) and devices whose data is an opaque
/// handle, not an address.
pub fn describe(tensor: &Tensor) -> Result<Description<'_>> {
    let device = tensor.device();
    if !device.has_addresses() {
        bail!(UnsupportedDevice, "the array interface needs addressable memory, not {device}");
    }
    let padded = tensor.flags().contains(Flags::SUBBYTE_PADDED);
    let typestr = typestr(tensor.dtype(), padded)?;
    let itemsize = tensor.dtype().itemsize(padded).unwrap_or(1);
    Ok(Description {
        typestr,
        shape: tensor.shape(),
        byte_strides: tensor.byte_strides()?,
        data: if tensor.numel() == 0 { std::ptr::null_mut() } else { tensor.data() },
        readonly: tensor.is_readonly(),
        itemsize,
        device,
    })
}

/// The fields of an array interface (`__array_interface__` or
/// `__cuda_array_interface__`), not yet trusted.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    /// Type string, e.g. "<f4".
    pub typestr: &'a str,
    /// DLPack type for raw-byte ("V") type strings; checked against others.
    pub dtype: Option<DLDataType>,
    /// Dimensions.
    pub shape: &'a [i64],
    /// Strides in bytes; `None` = C-contiguous.
    pub strides: Option<&'a [i64]>,
    /// Address of the first element.
    pub data: *mut c_void,
    /// Whether the memory must not be written.
    pub readonly: bool,
    /// Where the memory is (CPU for `__array_interface__`).
    pub device: DLDevice,
}

/// A tensor over the memory an array interface describes. On success
/// `release(ctx)` runs once when the last holder is gone; on failure it is
/// not called.
///
/// # Safety
/// As for [`Tensor::wrap`].
pub unsafe fn import(fields: &Fields<'_>, release: Option<ReleaseFn>, ctx: *mut c_void) -> Result<Tensor> {
    let parsed = Parsed::new(fields)?;
    if parsed.swapped {
        bail!(ByteOrder, "typestr {:?} is not in native byte order; byte-swap it first (a copy)", fields.typestr);
    }
    // SAFETY: forwarded contract.
    unsafe { Tensor::wrap(&parsed.raw(fields), release, ctx) }
}

/// A compact, native-order copy of the memory an array interface
/// describes (byte-swapped when the typestr says the other order), with
/// IS_COPIED set. The source memory is only read during the call.
///
/// # Safety
/// The memory must be readable as described during the call.
pub unsafe fn import_copy(fields: &Fields<'_>) -> Result<Tensor> {
    let parsed = Parsed::new(fields)?;
    if !Device::new(fields.device)?.is_host_accessible() {
        bail!(UnsupportedDevice, "copying device memory needs a device transfer");
    }
    // SAFETY: readable for the call, by contract; no release to run.
    let view = unsafe { Tensor::wrap(&parsed.raw(fields), None, std::ptr::null_mut()) }?;
    if parsed.swapped { crate::copy::byteswapped(&view) } else { crate::copy::contiguous(&view) }
}

/// Array-interface fields, checked and converted to DLPack terms.
struct Parsed {
    device: Device,
    dtype: DType,
    strides: Option<Dims>,
    flags: Flags,
    swapped: bool,
}

impl Parsed {
    fn new(fields: &Fields<'_>) -> Result<Parsed> {
        let device = Device::new(fields.device)?;
        if !device.has_addresses() {
            bail!(UnsupportedDevice, "the array interface needs addressable memory, not {device}");
        }
        let (dtype, swapped) = parse_typestr_order(fields.typestr, fields.dtype)?;
        let padded = dtype.is_subbyte();
        let itemsize = dtype.itemsize(padded).unwrap_or(1);
        layout::check_ndim(i32::try_from(fields.shape.len()).unwrap_or(i32::MAX))?;
        let strides = fields.strides.map(|s| element_strides(s, itemsize)).transpose()?;
        let mut flags = Flags::default();
        if fields.readonly {
            flags = flags | Flags::READ_ONLY;
        }
        if padded {
            flags = flags | Flags::SUBBYTE_PADDED;
        }
        Ok(Parsed { device, dtype, strides, flags, swapped })
    }

    fn raw<'a>(&'a self, fields: &Fields<'a>) -> RawView<'a> {
        RawView {
            data: fields.data,
            device: self.device.raw(),
            dtype: self.dtype.raw(),
            shape: fields.shape,
            strides: self.strides.as_deref(),
            byte_offset: 0,
            flags: self.flags.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use dlpark::ffi::DLDataTypeCode as Code;

    #[test]
    fn typestrs_for_every_numpy_type() {
        let table = [
            (DType::BOOL, "|b1"),
            (DType::INT8, "|i1"),
            (DType::INT16, "<i2"),
            (DType::INT32, "<i4"),
            (DType::INT64, "<i8"),
            (DType::UINT8, "|u1"),
            (DType::UINT16, "<u2"),
            (DType::UINT32, "<u4"),
            (DType::UINT64, "<u8"),
            (DType::FLOAT16, "<f2"),
            (DType::FLOAT32, "<f4"),
            (DType::FLOAT64, "<f8"),
            (DType::COMPLEX64, "<c8"),
            (DType::COMPLEX128, "<c16"),
        ];
        for (dtype, s) in table {
            assert_eq!(typestr(dtype, false).unwrap(), s);
            assert_eq!(parse_typestr(s, None).unwrap(), dtype);
            assert_eq!(parse_typestr(&s.replace('<', "="), None).unwrap(), dtype);
        }
    }

    #[test]
    fn raw_byte_types_keep_their_dlpack_type_when_told() {
        let fp8 = DType::new(DLDataType { code: Code::FLOAT8_E4M3FN, bits: 8, lanes: 1 }).unwrap();
        assert_eq!(typestr(DType::BFLOAT16, false).unwrap(), "<V2");
        assert_eq!(typestr(fp8, false).unwrap(), "|V1");
        assert_eq!(parse_typestr("<V2", Some(DType::BFLOAT16.raw())).unwrap(), DType::BFLOAT16);
        assert_eq!(parse_typestr("|V1", Some(fp8.raw())).unwrap(), fp8);
        let e5m2 = DType::new(DLDataType { code: Code::FLOAT8_E5M2, bits: 8, lanes: 1 }).unwrap();
        assert_eq!(parse_typestr("<f1", Some(e5m2.raw())).unwrap(), e5m2);
        assert_eq!(parse_typestr("<f1", None).unwrap_err().kind(), ErrorKind::UnsupportedDtype);
        assert_eq!(parse_typestr("<V2", None).unwrap_err().kind(), ErrorKind::UnsupportedDtype);
        assert_eq!(parse_typestr("<V4", Some(DType::BFLOAT16.raw())).unwrap_err().kind(), ErrorKind::InvalidArgument);
        let fp4 = DType::new(DLDataType { code: Code::FLOAT4_E2M1FN, bits: 4, lanes: 1 }).unwrap();
        assert_eq!(typestr(fp4, true).unwrap(), "|V1");
        assert_eq!(typestr(fp4, false).unwrap_err().kind(), ErrorKind::UnsupportedDtype);
    }

    #[test]
    fn bad_typestrs_get_clear_errors() {
        for (s, kind) in [
            ("", ErrorKind::InvalidTypestr),
            ("<", ErrorKind::InvalidTypestr),
            ("<f", ErrorKind::InvalidTypestr),
            ("f", ErrorKind::InvalidTypestr),
            ("<f4x", ErrorKind::InvalidTypestr),
            ("<q4", ErrorKind::InvalidTypestr),
            ("<f0", ErrorKind::InvalidTypestr),
            ("<f-4", ErrorKind::InvalidTypestr),
            (">f4", ErrorKind::ByteOrder),
            (">c16", ErrorKind::ByteOrder),
            ("<f16", ErrorKind::UnsupportedDtype),
            ("<M8", ErrorKind::UnsupportedDtype),
            ("<M8[D]", ErrorKind::UnsupportedDtype),
            ("<m8[ns]", ErrorKind::UnsupportedDtype),
            ("|O", ErrorKind::UnsupportedDtype),
            ("|O8", ErrorKind::UnsupportedDtype),
            ("<U4", ErrorKind::UnsupportedDtype),
            ("|b2", ErrorKind::UnsupportedDtype),
        ] {
            assert_eq!(parse_typestr(s, None).unwrap_err().kind(), kind, "{s:?}");
        }
        assert_eq!(parse_typestr(">i1", None).unwrap(), DType::INT8);
        // No byte-order character: native, as NumPy reads it.
        assert_eq!(parse_typestr("f8", None).unwrap(), DType::FLOAT64);
        assert_eq!(parse_typestr("b1", None).unwrap(), DType::BOOL);
        assert_eq!(parse_typestr("<f4", Some(DType::INT32.raw())).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn byte_strides_must_be_item_multiples() {
        assert_eq!(&element_strides(&[16, 4], 4).unwrap()[..], &[4, 1]);
        assert_eq!(&element_strides(&[-8], 4).unwrap()[..], &[-2]);
        let e = element_strides(&[6, 4], 4).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidStrides);
        assert!(e.message().contains("strides[0] = 6 bytes"), "{e}");
    }

    #[test]
    fn import_round_trips_through_byte_strides() {
        let mut buf = [0f64; 6];
        let f = Fields {
            typestr: "<f8",
            dtype: None,
            shape: &[2, 3],
            strides: Some(&[8, 16]),
            data: buf.as_mut_ptr().cast(),
            readonly: true,
            device: Device::CPU.raw(),
        };
        // SAFETY: `buf` outlives the tensor; no release.
        let t = unsafe { import(&f, None, std::ptr::null_mut()) }.unwrap();
        assert_eq!(t.strides(), &[1, 2]);
        assert!(t.is_readonly());
        assert_eq!(&byte_strides(&t).unwrap()[..], &[8, 16]);
    }
}
