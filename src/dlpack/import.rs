//! DLPack consumer. Ownership passes on every call: on success the tensor
//! holds the producer's deleter and runs it once when the last holder goes;
//! on any failure the deleter has run before the function returns.

use std::ptr::NonNull;

use dlpark::ffi::{DLManagedTensor, DLManagedTensorVersioned, DLPACK_MAJOR_VERSION};

use super::ManagedAbi;
use super::export;
use crate::error::{Result, bail};
use crate::layout;
use crate::tensor::{Flags, RawView, Tensor};

/// Consumes a `DLManagedTensorVersioned`.
///
/// A major version other than ours: the deleter is called and nothing else
/// is read. Otherwise the tensor is validated (see `RawView::validate`)
/// before anything uses it; NULL strides are read as row-major.
///
/// # Safety
/// `mt` must point to a managed tensor whose ownership the caller gives up;
/// its `shape`/`strides` arrays must be readable for `ndim` values.
pub unsafe fn from_versioned(mt: NonNull<DLManagedTensorVersioned>) -> Result<Tensor> {
    // SAFETY: forwarded contract.
    unsafe { consume(mt) }
}

/// Consumes a legacy `DLManagedTensor`. The legacy ABI cannot say whether
/// the memory may be written (JAX and TensorFlow export immutable arrays
/// this way), so the tensor is read-only, except that it may be exported
/// legacy again (see [`Flags::WRITABILITY_UNKNOWN`]).
///
/// # Safety
/// As for [`from_versioned`].
pub unsafe fn from_legacy(mt: NonNull<DLManagedTensor>) -> Result<Tensor> {
    // SAFETY: forwarded contract.
    unsafe { consume(mt) }
}

unsafe fn consume<M: ManagedAbi>(mt: NonNull<M>) -> Result<Tensor> {
    // SAFETY: the caller gives us a live managed tensor.
    let m = unsafe { mt.as_ref() };
    if let Some(version) = m.version()
        && version.major != DLPACK_MAJOR_VERSION
    {
        drop(M::owner(mt)); // runs the deleter, the one field we may still use
        bail!(
            VersionMismatch,
            "DLPack major version {}.{} is not {DLPACK_MAJOR_VERSION}: the tensor was released unread",
            version.major,
            version.minor
        );
    }
    if export::is_ours(mt) {
        // SAFETY: `mt` is one of our blocks (see `is_ours`), and its
        // ownership is ours now.
        return unsafe { export::reclaim(mt) };
    }
    let owner = M::owner(mt); // from here, any early return runs the deleter
    // SAFETY: `m` stays valid while `owner` lives.
    let raw = unsafe { raw_view(m) }?;
    Tensor::with_owner(&raw, || owner)
}

/// Reads a managed tensor's fields, checking `ndim` before the arrays.
///
/// # Safety
/// Non-NULL `shape`/`strides` must be readable for `ndim` values while `m` lives.
#[inline(always)]
pub(crate) unsafe fn raw_view<M: ManagedAbi>(m: &M) -> Result<RawView<'_>> {
    let dl = m.dl_tensor();
    let ndim = layout::check_ndim(dl.ndim)?;
    // SAFETY: `ndim` is checked; the arrays are readable by contract.
    let Some(shape) = (unsafe { layout::dims_from_raw(dl.shape, ndim) }) else {
        bail!(InvalidShape, "shape is NULL but ndim is {ndim}");
    };
    // SAFETY: as above; NULL strides (pre-1.2 producers) mean row-major.
    let strides = unsafe { layout::dims_from_raw(dl.strides, ndim) };
    Ok(RawView {
        data: dl.data,
        device: dl.device,
        dtype: dl.dtype,
        shape,
        strides,
        byte_offset: dl.byte_offset,
        // A legacy producer cannot say whether the memory may be written.
        flags: match m.version() {
            Some(_) => Flags::from_dlpack(m.flags())?.0,
            None => (Flags::READ_ONLY | Flags::WRITABILITY_UNKNOWN).0,
        },
    })
}
