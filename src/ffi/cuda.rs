//! CUDA helpers of the C ABI: device count, stream handoff, pointer lookup.

use std::ffi::c_void;

use super::guard::{self, non_null};
use super::status::dlb_status;
use super::tensor::{dlb_tensor, tensor_arg};

/// Writes the number of CUDA devices to `*out` (0 when the driver finds no
/// device). Makes no CUDA context on any device: dlbridge retains a
/// device's primary context only when that device's memory is first
/// touched. Without a CUDA driver, or in a child process forked after CUDA
/// was initialised, this returns DLB_ERR_CUDA_UNAVAILABLE (never crashes),
/// and `*out` is left untouched.
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
/// `cudaStream_t`; 0 is refused (DLB_ERR_INVALID_ARGUMENT). 1 and 2 are
/// the streams of `device`'s primary context; a `cudaStream_t` signaller
/// may belong to another device (its own context records the event).
/// dlbridge's own CUDA work is ordered on the legacy default stream, so a
/// producer hands a tensor to a consumer's stream S with
/// `dlb_cuda_stream_wait(dev, S, 1)` (and `dlb_tensor_record_stream(t, S)`
/// if S is not a blocking stream, so that freeing waits for S).
/// A negative `device` is refused (DLB_ERR_UNSUPPORTED_DEVICE).
#[unsafe(no_mangle)]
pub extern "C" fn dlb_cuda_stream_wait(device: i32, waiter: u64, signaller: u64) -> dlb_status {
    guard::status(|| crate::cuda::stream_wait(crate::Device::cuda(device)?, waiter as usize, signaller as usize))
}

/// Says that work queued on CUDA stream `stream` (a `cudaStream_t`) uses
/// the memory of `t` (as PyTorch's `record_stream`): when that memory is
/// dlbridge's own (device or pinned), freeing it is ordered after the work
/// queued on `stream` by then, without waiting on the host. Needed only for
/// non-blocking streams: frees are always ordered after the legacy default
/// stream, which waits for every blocking stream (per-thread default
/// streams included), so 1 and 2 need nothing and are accepted. `stream`
/// must still exist when the memory is freed. Other memory (host, or a
/// foreign producer's) is left to its owner: accepted, nothing recorded.
/// 0 is refused (DLB_ERR_INVALID_ARGUMENT).
///
/// # Safety
/// `t` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_record_stream(t: *const dlb_tensor, stream: u64) -> dlb_status {
    guard::status(|| {
        // SAFETY: `t` is NULL or a live handle by contract.
        let tensor = unsafe { tensor_arg(t, "t") }?;
        if stream == 0 {
            crate::error::bail!(
                InvalidArgument,
                "stream 0 is ambiguous: use 1 (legacy default) or 2 (per-thread default)"
            );
        }
        #[cfg(feature = "cuda")]
        tensor.used_on_stream(stream as usize);
        #[cfg(not(feature = "cuda"))]
        let _ = tensor;
        Ok(())
    })
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
/// pinned host blocks (up to 2 GiB is kept; this waits for the work still
/// queued on them) and the unused part of its per-device memory pools (up
/// to 2 GiB each is kept). Memory in use is untouched; no context is made.
/// No driver: DLB_ERR_CUDA_UNAVAILABLE.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_cuda_empty_cache() -> dlb_status {
    guard::status(crate::cuda::empty_cache)
}
