//! CUDA helpers of the C ABI: device count, stream handoff, pointer lookup.

use std::ffi::c_void;

use super::guard::{self, non_null};
use super::status::dlb_status;

/// Writes the number of CUDA devices to `*out`. Without a CUDA driver
/// this returns DLB_ERR_CUDA_UNAVAILABLE (never crashes), and `*out` is
/// left untouched.
///
/// # Safety
/// `out` must be NULL or point to writable memory for one int32_t.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_cuda_device_count(out: *mut i32) -> dlb_status {
    guard::status(|| {
        let out = non_null(out, "out")?;
        let n = crate::cuda::device_count()?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(i32::try_from(n).unwrap_or(i32::MAX)) };
        Ok(())
    })
}

/// Makes work later queued on stream `waiter` wait for the work already
/// queued on stream `signaller`, on CUDA device `device` (an event recorded
/// on one, waited on by the other; returns at once). Stream values as in the
/// DLPack spec: 1 = legacy default, 2 = per-thread default, other values a
/// `cudaStream_t`; 0 is refused (DLB_ERR_INVALID_ARGUMENT). dlbridge's own
/// CUDA work is ordered on the legacy default stream, so a producer hands a
/// tensor to a consumer's stream S with `dlb_cuda_stream_wait(dev, S, 1)`.
/// A negative `device` is refused (DLB_ERR_UNSUPPORTED_DEVICE).
#[unsafe(no_mangle)]
pub extern "C" fn dlb_cuda_stream_wait(device: i32, waiter: u64, signaller: u64) -> dlb_status {
    guard::status(|| crate::cuda::stream_wait(crate::Device::cuda(device)?, waiter as usize, signaller as usize))
}

/// Writes the CUDA device that owns the device pointer `ptr` to `*out`
/// (for `__cuda_array_interface__`, which does not say). Not CUDA memory:
/// DLB_ERR_INVALID_ARGUMENT; no driver: DLB_ERR_CUDA_UNAVAILABLE.
///
/// # Safety
/// `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_cuda_pointer_device(ptr: *const c_void, out: *mut i32) -> dlb_status {
    guard::status(|| {
        let out = non_null(out, "out")?;
        let device = crate::cuda::pointer_device(ptr)?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(device) };
        Ok(())
    })
}

/// Gives back to the driver the memory dlbridge keeps for reuse: freed
/// pinned host blocks (up to 2 GiB is kept) and the unused part of its
/// per-device memory pools (up to 2 GiB each is kept). Memory in use is
/// untouched. No driver: DLB_ERR_CUDA_UNAVAILABLE.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_cuda_empty_cache() -> dlb_status {
    guard::status(crate::cuda::empty_cache)
}
