//! `dlb_tensor`: the opaque handle and the functions that act on it.

use std::ffi::c_void;

use dlpark::ffi::{DLDataType, DLDevice, DLManagedTensor, DLManagedTensorVersioned, DLTensor};

use super::guard::{self, non_null};
use super::status::dlb_status;
use crate::device::Device;
use crate::dlpack::{export, import};
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use crate::layout;
use crate::tensor::{RawView, Tensor, TensorRef};

/// A release callback: `release(ctx)` is called exactly once, when the
/// last holder of the memory is gone, on whichever thread drops it last.
#[allow(non_camel_case_types)]
pub type dlb_release_fn = Option<unsafe extern "C" fn(ctx: *mut c_void)>;

/// An opaque tensor handle: a view of memory (shape, strides, dtype,
/// device, flags) plus a shared hold on that memory. Handles are
/// independent: freeing one never invalidates another handle or an
/// exported DLPack tensor. A handle is immutable and may be read from
/// several threads at once; free it exactly once with `dlb_tensor_free`.
#[allow(non_camel_case_types)]
pub struct dlb_tensor {
    // A handle is a `Tensor` given up by `Tensor::into_raw`: no block of its own.
    _opaque: [u8; 0],
}

/// Hands a tensor out as a handle (a reference to its block; nothing is
/// allocated).
pub(crate) fn into_handle(tensor: Tensor) -> *mut dlb_tensor {
    tensor.into_raw().cast_mut().cast()
}

/// The tensor behind a handle argument.
///
/// # Safety
/// `t` must be NULL or a live handle, held for `'a`.
pub(crate) unsafe fn tensor_arg<'a>(t: *const dlb_tensor, name: &str) -> Result<TensorRef<'a>> {
    let t = non_null(t.cast_mut(), name)?;
    // SAFETY: a live handle is a pointer from `Tensor::into_raw`, by contract.
    Ok(unsafe { Tensor::borrow_raw(t.as_ptr().cast()) })
}

/// The tensor behind a handle that may be NULL.
///
/// # Safety
/// As for [`tensor_arg`].
unsafe fn tensor_opt<'a>(t: *const dlb_tensor) -> Option<TensorRef<'a>> {
    // SAFETY: a non-NULL `t` is a live handle, by contract (no error is
    // built for NULL: these accessors answer a default).
    (!t.is_null()).then(|| unsafe { Tensor::borrow_raw(t.cast()) })
}

/// Makes a tensor from `t`'s and hands it out as a new handle in `*out`
/// (written only on success).
///
/// # Safety
/// `t` must be NULL or a live handle; `out` must be NULL or writable.
unsafe fn derive(
    t: *const dlb_tensor,
    out: *mut *mut dlb_tensor,
    make: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> dlb_status {
    guard::status(|| {
        // SAFETY: `t` is a live handle by contract.
        let t = unsafe { tensor_arg(t, "t") }?;
        let out = non_null(out, "out")?;
        let made = make(&t)?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(into_handle(made)) };
        Ok(())
    })
}

/// Checks `ndim`, then reads a C array of `ndim` dimensions.
///
/// # Safety
/// A non-NULL `ptr` must point to `ndim` readable values.
pub(crate) unsafe fn dims<'a>(ptr: *const i64, ndim: i32) -> Result<Option<&'a [i64]>> {
    let n = layout::check_ndim(ndim)?;
    // SAFETY: forwarded contract, `n` checked.
    Ok(unsafe { layout::dims_from_raw(ptr, n) })
}

pub(crate) fn missing_shape(ndim: i32) -> Error {
    Error::new(ErrorKind::InvalidShape, format!("shape is NULL but ndim is {ndim}"))
}

/// Allocates a new zero-filled, 256-byte aligned, row-major tensor.
///
/// `device` is kDLCPU, kDLCUDA (device memory, freed on its device) or
/// kDLCUDAHost (pinned host memory); CUDA needs a driver
/// (DLB_ERR_CUDA_UNAVAILABLE otherwise). `shape` holds `ndim` dimensions (may be
/// NULL when `ndim` is 0). On success `*out` receives a new handle to free
/// with `dlb_tensor_free`; on failure `*out` is untouched.
///
/// # Safety
/// `shape` must be NULL or point to `ndim` int64_t; `out` must be NULL or
/// point to writable memory for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_new(
    device: DLDevice,
    dtype: DLDataType,
    ndim: i32,
    shape: *const i64,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    guard::status(|| {
        let out = non_null(out, "out")?;
        // SAFETY: `shape` has `ndim` values by contract.
        let shape = unsafe { dims(shape, ndim) }?.ok_or_else(|| missing_shape(ndim))?;
        let tensor = Tensor::zeros(Device::target(device)?, DType::new(dtype)?, shape)?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(into_handle(tensor)) };
        Ok(())
    })
}

/// Wraps memory the caller owns, zero copy.
///
/// `data` is the base address (or device pointer); the first element is at
/// `data + byte_offset`. `shape` holds `ndim` dimensions; `strides` holds
/// `ndim` strides in ELEMENTS, or is NULL for compact row-major. `flags`
/// takes DLPACK_FLAG_BITMASK_READ_ONLY, _IS_COPIED and
/// _IS_SUBBYTE_TYPE_PADDED. `data` may be NULL only when the tensor has no
/// elements.
///
/// Ownership: on success, `release(ctx)` (if not NULL) is called exactly
/// once, when the last handle and the last exported DLPack tensor of this
/// memory are gone, possibly on another thread. On failure it is NOT
/// called: the caller still owns the memory, and `*out` is untouched.
///
/// # Safety
/// The memory must stay valid until `release` runs (with no `release`, as
/// long as any handle or export of it lives). `shape`/`strides` must be NULL
/// or point to `ndim` int64_t (they are copied); `out` must be NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_wrap(
    data: *mut c_void,
    device: DLDevice,
    dtype: DLDataType,
    ndim: i32,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
    flags: u64,
    release: dlb_release_fn,
    ctx: *mut c_void,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    guard::status(|| {
        let out = non_null(out, "out")?;
        // SAFETY: `shape`/`strides` have `ndim` values by contract.
        let shape = unsafe { dims(shape, ndim) }?.ok_or_else(|| missing_shape(ndim))?;
        // SAFETY: as above.
        let strides = unsafe { dims(strides, ndim) }?;
        let raw = RawView { data, device, dtype, shape, strides, byte_offset, flags };
        // SAFETY: memory validity and `release` are the caller's contract.
        let tensor = unsafe { Tensor::wrap(&raw, release, ctx) }?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(into_handle(tensor)) };
        Ok(())
    })
}

/// Consumes a `DLManagedTensorVersioned`, zero copy.
///
/// Ownership of `mt` passes to dlbridge in EVERY case: on success the
/// handle holds it and its deleter runs exactly once when the last holder
/// is gone; on failure (bad version, invalid fields, NULL `out`) the
/// deleter has been called before this returns. Never use `mt` afterwards.
///
/// Validation before use: major version (another major: deleter called,
/// nothing else read, DLB_ERR_VERSION_MISMATCH), ndim in 0..=64, shape and
/// strides readable (NULL strides = row-major), dimensions >= 0, element
/// count and byte extent without overflow, known device and dtype (FP6 must
/// have bits 6, FP4 bits 4, lanes >= 1), known flags, NULL data only without
/// elements. READ_ONLY is kept.
///
/// # Safety
/// `mt` must be NULL or a valid managed tensor whose ownership the caller
/// gives up; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_from_dlpack_versioned(
    mt: *mut DLManagedTensorVersioned,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    guard::status(|| {
        let mt = non_null(mt, "mt")?;
        // SAFETY: ownership of a valid managed tensor, by contract.
        let tensor = unsafe { import::from_versioned(mt) }?;
        let out = non_null(out, "out")?; // dropping `tensor` on error runs the deleter
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(into_handle(tensor)) };
        Ok(())
    })
}

/// Consumes a legacy `DLManagedTensor`, zero copy; as
/// `dlb_tensor_from_dlpack_versioned` (ownership passes in every case), but
/// without version or flags. The legacy ABI cannot say whether the memory
/// may be written (JAX and TensorFlow export immutable arrays this way), so
/// the tensor is read-only: DLPACK_FLAG_BITMASK_READ_ONLY in
/// `dlb_tensor_flags` and in versioned exports. It may still be exported
/// legacy again (`dlb_tensor_to_dlpack`): legacy in, legacy out.
///
/// # Safety
/// As for `dlb_tensor_from_dlpack_versioned`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_from_dlpack(mt: *mut DLManagedTensor, out: *mut *mut dlb_tensor) -> dlb_status {
    guard::status(|| {
        let mt = non_null(mt, "mt")?;
        // SAFETY: ownership of a valid managed tensor, by contract.
        let tensor = unsafe { import::from_legacy(mt) }?;
        let out = non_null(out, "out")?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(into_handle(tensor)) };
        Ok(())
    })
}

/// Exports `t` as a new `DLManagedTensorVersioned`, zero copy. `t` stays
/// valid and independent: the export holds its own share of the memory.
/// Strides are always filled; the byte offset is folded into `data`
/// (`byte_offset` is 0) for devices with addresses; `data` is NULL for a
/// tensor without elements; READ_ONLY is set for a read-only tensor.
/// The receiver owns `*out` and must call its deleter exactly once.
///
/// # Safety
/// `t` must be NULL or a live handle; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_to_dlpack_versioned(
    t: *const dlb_tensor,
    out: *mut *mut DLManagedTensorVersioned,
) -> dlb_status {
    guard::status(|| {
        // SAFETY: `t` is a live handle by contract.
        let t = unsafe { tensor_arg(t, "t") }?;
        let out = non_null(out, "out")?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(export::to_versioned(&t)) };
        Ok(())
    })
}

/// Exports `t` as a new legacy `DLManagedTensor`, zero copy, as
/// `dlb_tensor_to_dlpack_versioned`. A read-only tensor is refused with
/// DLB_ERR_READ_ONLY (the legacy struct cannot say read-only), unless `t` is
/// itself a legacy import (read-only only because its producer could not say).
///
/// # Safety
/// As for `dlb_tensor_to_dlpack_versioned`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_to_dlpack(t: *const dlb_tensor, out: *mut *mut DLManagedTensor) -> dlb_status {
    guard::status(|| {
        // SAFETY: `t` is a live handle by contract.
        let t = unsafe { tensor_arg(t, "t") }?;
        let out = non_null(out, "out")?;
        let managed = export::to_legacy(&t)?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(managed) };
        Ok(())
    })
}

/// A borrowed `DLTensor` describing `t` (strides always filled,
/// `byte_offset` folded into `data`). Valid until `t` is freed; do not
/// modify it. NULL when `t` is NULL.
///
/// # Safety
/// `t` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_dltensor(t: *const dlb_tensor) -> *const DLTensor {
    // SAFETY: `t` is NULL or a live handle by contract.
    let t = unsafe { tensor_opt(t) };
    // The `DLTensor` lives in the tensor's block, which outlives the handle.
    guard::value(std::ptr::null(), || t.map_or(std::ptr::null(), |t| std::ptr::from_ref(t.dltensor_ref())))
}

/// The DLPack flag bits of `t` (DLPACK_FLAG_BITMASK_*); 0 when `t` is NULL.
///
/// # Safety
/// `t` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_flags(t: *const dlb_tensor) -> u64 {
    // SAFETY: `t` is NULL or a live handle by contract.
    let t = unsafe { tensor_opt(t) };
    guard::value(0, || t.map_or(0, |t| t.flags().0))
}

/// Whether `t` is compact row-major (size-1 and size-0 dimensions are
/// ignored); false when `t` is NULL.
///
/// # Safety
/// `t` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_is_contiguous(t: *const dlb_tensor) -> bool {
    // SAFETY: `t` is NULL or a live handle by contract.
    let t = unsafe { tensor_opt(t) };
    guard::value(false, || t.is_some_and(|t| t.is_contiguous()))
}

/// Bytes of the elements of `t` (element count x item size; packed
/// sub-byte types rounded up); 0 when `t` is NULL.
///
/// # Safety
/// `t` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_nbytes(t: *const dlb_tensor) -> usize {
    // SAFETY: `t` is NULL or a live handle by contract.
    let t = unsafe { tensor_opt(t) };
    guard::value(0, || t.map_or(0, |t| t.nbytes() as usize))
}

/// One more reference to handle `t`: returns `t` itself (handles are
/// reference counted), to be freed once more with `dlb_tensor_free`.
/// NULL when `t` is NULL.
///
/// # Safety
/// `t` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_retain(t: *const dlb_tensor) -> *mut dlb_tensor {
    // SAFETY: `t` is NULL or a live handle by contract.
    let t = unsafe { tensor_opt(t) };
    guard::value(std::ptr::null_mut(), || t.map_or(std::ptr::null_mut(), |t| into_handle(Tensor::clone(&t))))
}

/// Frees a handle (one reference to it, see `dlb_tensor_retain`). The
/// memory is released when its last holder (handle or exported DLPack
/// tensor) is gone. `dlb_tensor_free(NULL)` does nothing.
///
/// # Safety
/// `t` must be NULL or a live handle, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_free(t: *mut dlb_tensor) {
    guard::value((), || {
        if !t.is_null() {
            // SAFETY: `t` came from `into_handle` and is freed once, by contract.
            drop(unsafe { Tensor::from_raw(t.cast_const().cast()) });
        }
    })
}

/// A compact row-major copy of `t` on `device`, in new memory, writable,
/// with DLPACK_FLAG_BITMASK_IS_COPIED set: the explicit transfer between
/// kDLCPU, kDLCUDA (any device id; peer copies between GPUs) and pinned
/// kDLCUDAHost memory, in every direction, strided sources included (a
/// strided CUDA source is gathered on its device with 2-D copies of its
/// rows, not through its whole byte extent). CUDA copies are synchronous:
/// queued on the legacy default stream of the device (after the work
/// already there and on every blocking stream), and complete when this
/// returns, whatever the kinds of memory. Without a CUDA
/// driver, CUDA targets give DLB_ERR_CUDA_UNAVAILABLE. On failure `*out` is
/// untouched.
///
/// # Safety
/// `t` must be NULL or a live handle; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_copy(
    t: *const dlb_tensor,
    device: DLDevice,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract.
    unsafe { derive(t, out, |src| crate::copy::to_device(src, Device::target(device)?)) }
}

/// A compact row-major copy of `t` converted to `dtype`, in new CPU memory,
/// writable, with DLPACK_FLAG_BITMASK_IS_COPIED set. Converts between bool,
/// int8..int64, uint8..uint64, float16, bfloat16, float32, float64,
/// complex64 and complex128 as NumPy's `astype` does (integers wrap, floats
/// round to nearest even, NaN/inf kept, complex to real keeps the real
/// part); float to integer saturates where NumPy is undefined (out of
/// range, NaN gives 0). Host memory only. On failure `*out` is untouched.
///
/// # Safety
/// `t` must be NULL or a live handle; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_astype(
    t: *const dlb_tensor,
    dtype: DLDataType,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract.
    unsafe { derive(t, out, |src| crate::copy::astype(src, DType::new(dtype)?)) }
}

/// A compact row-major copy of sub-byte data (int2/uint2, int4/uint4,
/// float4_e2m1fn, float6_e2m3fn, float6_e3m2fn) in new CPU memory, stored
/// `padded` (one element per byte, in its low bits, the rest zero:
/// DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED, how NumPy / ml_dtypes keep
/// them) or packed (DLPack's default: element i takes bits i * bits of the
/// buffer, little bit-endian: with 4 bits element 0 is the low nibble of
/// byte 0). DLPACK_FLAG_BITMASK_IS_COPIED is set. Other dtypes:
/// DLB_ERR_UNSUPPORTED_DTYPE. Host memory only. On failure `*out` is
/// untouched.
///
/// # Safety
/// `t` must be NULL or a live handle; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_repack(
    t: *const dlb_tensor,
    padded: bool,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    // SAFETY: forwarded contract.
    unsafe { derive(t, out, |src| crate::copy::repack(src, padded)) }
}
