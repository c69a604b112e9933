//! `dlb_array_interface`: NumPy's array interface (and the CUDA array
//! interface, through `device`) as a C struct.

use std::ffi::{CStr, c_char, c_void};

use dlpark::ffi::{DLDataType, DLDevice};

use super::guard::{self, arg, non_null};
use super::status::dlb_status;
use super::tensor::{dims, dlb_release_fn, dlb_tensor, into_handle, missing_shape, tensor_arg};
use crate::array_interface::{self, Fields, VERSION};
use crate::device::Device;
use crate::error::{Result, bail};
use crate::tensor::Tensor;

/// The fields of NumPy's `__array_interface__` (version 3), or of
/// `__cuda_array_interface__` when `device` is a CUDA device.
///
/// Output (`dlb_tensor_array_interface`): every field filled; `shape` and
/// `strides` point into the tensor handle and stay valid while it lives.
/// Input (`dlb_tensor_from_array_interface`): zero-initialise, then fill;
/// zeroed `dtype` and `device` mean "not given" and "CPU".
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct dlb_array_interface {
    /// Array-interface version: 3.
    pub version: i32,
    /// Number of dimensions (0..=64).
    pub ndim: i32,
    /// NUL-terminated type string: byte order (`<` `>` `|` `=`), kind,
    /// item size in bytes, e.g. "<f4", "|b1", "<c16". bfloat16 is "<V2" and
    /// the FP8 types "|V1": their identity travels in `dtype`.
    pub typestr: [c_char; 8],
    /// `ndim` dimensions (may be NULL when ndim is 0).
    pub shape: *const i64,
    /// `ndim` strides in BYTES; on input NULL means C-contiguous.
    pub strides: *const i64,
    /// Address of the first element (a device pointer for CUDA).
    pub data: *mut c_void,
    /// Nonzero when the memory must not be written (output: 1 or 0). A
    /// byte, not a `bool`: C may store any value here, and every value of
    /// a byte has a meaning.
    pub readonly: u8,
    /// The DLPack dtype. Output: always filled. Input: required for "V"
    /// typestrs (e.g. {kDLBfloat, 16, 1} with "<V2"), checked against the
    /// typestr otherwise; lanes == 0 means not given.
    pub dtype: DLDataType,
    /// Where the memory is. Input: device_type 0 means kDLCPU.
    pub device: DLDevice,
}

/// Fills `*out` with the array interface of `t`, zero copy: typestr,
/// shape, byte strides (always filled), data, readonly, dtype, device,
/// version 3. `out->shape`/`out->strides` stay valid while `t` lives.
/// Refused: packed sub-byte dtypes (DLB_ERR_UNSUPPORTED_DTYPE) and devices
/// whose data is an opaque handle (DLB_ERR_UNSUPPORTED_DEVICE). For
/// managed memory (kDLCUDAManaged) this first waits for the work queued on
/// its device's legacy default stream, so the CPU reads what the GPU wrote.
/// On failure `*out` is untouched.
///
/// # Safety
/// `t` must be NULL or a live handle; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_array_interface(t: *const dlb_tensor, out: *mut dlb_array_interface) -> dlb_status {
    guard::status(|| {
        // SAFETY: `t` is a live handle by contract.
        let tensor = unsafe { tensor_arg(t, "t") }?;
        let out = non_null(out, "out")?;
        crate::cuda::host_ready(tensor.device())?;
        let d = array_interface::describe(&tensor)?;
        let mut typestr = [0 as c_char; 8];
        for (dst, src) in typestr.iter_mut().zip(d.typestr.bytes()) {
            *dst = src as c_char;
        }
        let ai = dlb_array_interface {
            version: VERSION,
            ndim: d.shape.len() as i32,
            typestr,
            shape: d.shape.as_ptr(),
            strides: d.byte_strides.as_ptr(),
            data: d.data,
            readonly: u8::from(d.readonly),
            dtype: tensor.dtype().raw(),
            device: d.device.raw(),
        };
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(ai) };
        Ok(())
    })
}

/// A tensor over the memory an array interface describes, zero copy.
///
/// Checked: version 3, typestr (native byte order, else
/// DLB_ERR_BYTE_ORDER; "V" types need `dtype`), byte strides that are a
/// multiple of the item size (else DLB_ERR_INVALID_STRIDES), and everything
/// `dlb_tensor_wrap` checks. Ownership as for `dlb_tensor_wrap`: on success
/// `release(ctx)` runs once when the last holder is gone; on failure it is
/// not called and `*out` is untouched.
///
/// # Safety
/// `ai` must be NULL or point to a filled struct whose arrays have `ndim`
/// values; the memory must stay valid until `release` runs; `out` must be
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_from_array_interface(
    ai: *const dlb_array_interface,
    release: dlb_release_fn,
    ctx: *mut c_void,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract; memory validity and `release` are the caller's.
    unsafe { from_fields(ai, out, |fields| array_interface::import(fields, release, ctx)) }
}

/// The shared body of the array-interface entry points: checks `ai` and
/// `out`, translates the struct, and hands `*out` the tensor `make` builds.
///
/// # Safety
/// `ai` NULL or a filled struct whose arrays have `ndim` values; `out` NULL
/// or writable.
unsafe fn from_fields(
    ai: *const dlb_array_interface,
    out: *mut *mut dlb_tensor,
    make: impl FnOnce(&Fields<'_>) -> Result<Tensor>,
) -> dlb_status {
    guard::status(|| {
        // SAFETY: `ai` is NULL or valid by contract.
        let ai = unsafe { arg(ai, "ai") }?;
        let out = non_null(out, "out")?;
        // SAFETY: the arrays have `ndim` values by contract.
        let fields = unsafe { fields_of(ai) }?;
        let tensor = make(&fields)?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(into_handle(tensor)) };
        Ok(())
    })
}

/// Checks and translates a `dlb_array_interface`.
///
/// # Safety
/// `shape`/`strides` must be NULL or hold `ndim` values.
unsafe fn fields_of(ai: &dlb_array_interface) -> Result<Fields<'_>> {
    if ai.version != VERSION {
        bail!(InvalidArgument, "array interface version {} is not {VERSION}", ai.version);
    }
    let typestr = typestr_of(&ai.typestr)?;
    // SAFETY: `shape`/`strides` have `ndim` values by contract.
    let shape = unsafe { dims(ai.shape, ai.ndim) }?.ok_or_else(|| missing_shape(ai.ndim))?;
    // SAFETY: as above.
    let strides = unsafe { dims(ai.strides, ai.ndim) }?;
    let device = match ai.device.device_type.0 {
        0 => Device::CPU.raw(),
        _ => ai.device,
    };
    let fields = Fields {
        typestr,
        dtype: (ai.dtype.lanes != 0).then_some(ai.dtype),
        shape,
        strides,
        data: ai.data,
        readonly: ai.readonly != 0,
        device,
    };
    Ok(fields)
}

/// A compact, native-byte-order copy of the memory `ai` describes, with
/// DLPACK_FLAG_BITMASK_IS_COPIED set: the way in for data in the other byte
/// order (e.g. NumPy's ">f4"), which is byte-swapped on the way. Host
/// memory only; it is read during the call and not kept. On failure `*out`
/// is untouched.
///
/// # Safety
/// `ai` must be NULL or a filled struct whose arrays have `ndim` values and
/// whose memory is readable during the call; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_copy_from_array_interface(
    ai: *const dlb_array_interface,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract; the memory is readable during the call.
    unsafe { from_fields(ai, out, |fields| array_interface::import_copy(fields)) }
}

fn typestr_of(raw: &[c_char; 8]) -> Result<&str> {
    // SAFETY: reinterpreting c_char as u8 over the same 8 bytes.
    let bytes: &[u8; 8] = unsafe { &*raw.as_ptr().cast::<[u8; 8]>() };
    let Ok(text) = CStr::from_bytes_until_nul(bytes) else {
        bail!(InvalidTypestr, "typestr is not NUL-terminated within its 8 bytes");
    };
    match text.to_str() {
        Ok(s) => Ok(s),
        Err(_) => bail!(InvalidTypestr, "typestr is not ASCII"),
    }
}
