//! CUDA through cudarc, loaded at run time: nothing here needs CUDA to
//! build, and without a driver every entry point returns an error.
//!
//! dlbridge's own CUDA work (allocation, memset, copies) is synchronous and
//! ordered on the legacy default stream. Producers are asked to make their
//! work visible there (stream None / 1), and consumers get it on their stream
//! through an event (see [`stream_wait`]). Every operation makes the device's
//! primary context current and restores the caller's context afterwards, so
//! a framework's idea of "the current device" on that thread is untouched.

use crate::error::{Result, bail};

#[cfg(feature = "cuda")]
pub(crate) use imp::*;

#[cfg(not(feature = "cuda"))]
pub(crate) use without_cuda::*;

#[cfg(not(feature = "cuda"))]
mod without_cuda {
    use super::*;

    pub(crate) fn stream_wait(_device: i32, _waiter: usize, _signaller: usize) -> Result<()> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }

    pub(crate) fn pointer_device(_ptr: *const std::ffi::c_void) -> Result<i32> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }
}

/// Number of CUDA devices. `CudaUnavailable` without a driver (or in a
/// build without the `cuda` feature), `Cuda` when the driver fails.
pub fn device_count() -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        imp::contexts().map(|c| c.len())
    }
    #[cfg(not(feature = "cuda"))]
    bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
}

#[cfg(feature = "cuda")]
mod imp {
    use std::ffi::c_void;
    use std::sync::OnceLock;

    use cudarc::driver::{result, sys};

    use super::*;
    use crate::error::{Error, ErrorKind};

    fn driver_error(what: &str, e: result::DriverError) -> Error {
        Error::new(ErrorKind::Cuda, format!("CUDA {what} failed: {e:?}"))
    }

    #[derive(Clone, Copy)]
    pub(super) struct Ctx(sys::CUcontext);
    // SAFETY: a CUcontext handle may be used from any thread.
    unsafe impl Send for Ctx {}
    // SAFETY: as above.
    unsafe impl Sync for Ctx {}

    /// The primary context of every device, retained once for the process.
    pub(super) fn contexts() -> Result<&'static [Ctx]> {
        static CONTEXTS: OnceLock<std::result::Result<Vec<Ctx>, Error>> = OnceLock::new();
        let made = CONTEXTS.get_or_init(|| {
            // SAFETY: only tries to dlopen the driver; cudarc panics on any call
            // made without it, so this gate comes first.
            if !unsafe { sys::is_culib_present() } {
                bail!(CudaUnavailable, "no CUDA driver: libcuda.so could not be loaded");
            }
            result::init().map_err(|e| driver_error("cuInit", e))?;
            let count = result::device::get_count().map_err(|e| driver_error("cuDeviceGetCount", e))?;
            (0..count)
                .map(|i| {
                    let dev = result::device::get(i).map_err(|e| driver_error("cuDeviceGet", e))?;
                    // SAFETY: a valid device; the retain is kept for the process.
                    unsafe { result::primary_ctx::retain(dev) }
                        .map(Ctx)
                        .map_err(|e| driver_error("cuDevicePrimaryCtxRetain", e))
                })
                .collect()
        });
        match made {
            Ok(v) => Ok(v.as_slice()),
            Err(e) => Err(e.clone()),
        }
    }

    fn context(device: i32) -> Result<Ctx> {
        let all = contexts()?;
        match usize::try_from(device).ok().and_then(|d| all.get(d)) {
            Some(c) => Ok(*c),
            None => bail!(UnsupportedDevice, "CUDA device {device} does not exist ({} device(s))", all.len()),
        }
    }

    /// Runs `body` with `device`'s primary context current, then restores
    /// the caller's context.
    pub(crate) fn on_device<T>(device: i32, body: impl FnOnce() -> Result<T>) -> Result<T> {
        let ctx = context(device)?;
        let previous = result::ctx::get_current().map_err(|e| driver_error("cuCtxGetCurrent", e))?;
        // SAFETY: a retained primary context.
        unsafe { result::ctx::set_current(ctx.0) }.map_err(|e| driver_error("cuCtxSetCurrent", e))?;
        let out = body();
        // SAFETY: the caller's context (or none) as it was.
        let _ = unsafe { result::ctx::set_current(previous.unwrap_or(std::ptr::null_mut())) };
        out
    }

    /// Device memory from cuMemAlloc (256-byte aligned), freed on its device.
    pub(crate) struct DeviceBuffer {
        ptr: sys::CUdeviceptr,
        device: i32,
    }

    impl DeviceBuffer {
        /// `bytes` (at least 1) on `device`, zero-filled when `zero`.
        pub(crate) fn new(device: i32, bytes: usize, zero: bool) -> Result<DeviceBuffer> {
            on_device(device, || {
                // SAFETY: a plain allocation in the current context.
                let ptr = unsafe { result::malloc_sync(bytes.max(1)) }.map_err(|e| match e.0 {
                    sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                        Error::new(ErrorKind::OutOfMemory, format!("out of CUDA memory allocating {bytes} bytes"))
                    }
                    _ => driver_error("cuMemAlloc", e),
                })?;
                let buffer = DeviceBuffer { ptr, device };
                if zero {
                    // SAFETY: `bytes` fit the new allocation.
                    unsafe { result::memset_d8_sync(ptr, 0, bytes) }.map_err(|e| driver_error("cuMemsetD8", e))?;
                }
                Ok(buffer)
            })
        }

        pub(crate) fn ptr(&self) -> *mut c_void {
            self.ptr as *mut c_void
        }
    }

    impl Drop for DeviceBuffer {
        fn drop(&mut self) {
            let _ = on_device(self.device, || {
                // SAFETY: allocated by cuMemAlloc on this device, freed once here.
                unsafe { result::free_sync(self.ptr) }.map_err(|e| driver_error("cuMemFree", e))
            });
        }
    }

    /// Page-locked host memory (cuMemHostAlloc, portable to every context).
    pub(crate) struct PinnedBuffer {
        ptr: *mut c_void,
    }

    // SAFETY: plain host memory; freeing it is allowed from any thread.
    unsafe impl Send for PinnedBuffer {}
    // SAFETY: no interior mutability.
    unsafe impl Sync for PinnedBuffer {}

    impl PinnedBuffer {
        pub(crate) fn new(bytes: usize) -> Result<PinnedBuffer> {
            on_device(0, || {
                // SAFETY: an allocation in the current context.
                let ptr = unsafe { result::malloc_host(bytes.max(1), sys::CU_MEMHOSTALLOC_PORTABLE) }
                    .map_err(|e| driver_error("cuMemHostAlloc", e))?;
                Ok(PinnedBuffer { ptr })
            })
        }

        pub(crate) fn ptr(&self) -> *mut c_void {
            self.ptr
        }
    }

    impl Drop for PinnedBuffer {
        fn drop(&mut self) {
            // SAFETY: from cuMemHostAlloc, freed once here.
            let _ =
                on_device(0, || unsafe { result::free_host(self.ptr) }.map_err(|e| driver_error("cuMemFreeHost", e)));
        }
    }

    /// Host to device, `bytes` bytes, synchronous.
    ///
    /// # Safety
    /// `src` readable and `dst` (on `device`) writable for `bytes` bytes.
    pub(crate) unsafe fn copy_htod(device: i32, dst: *mut c_void, src: *const c_void, bytes: usize) -> Result<()> {
        on_device(device, || {
            // SAFETY: by contract.
            let src = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), bytes) };
            // SAFETY: by contract.
            unsafe { result::memcpy_htod_sync(dst as sys::CUdeviceptr, src) }
                .map_err(|e| driver_error("cuMemcpyHtoD", e))
        })
    }

    /// Device to host, synchronous.
    ///
    /// # Safety
    /// `src` (on `device`) readable and `dst` writable for `bytes` bytes.
    pub(crate) unsafe fn copy_dtoh(device: i32, dst: *mut c_void, src: *const c_void, bytes: usize) -> Result<()> {
        on_device(device, || {
            // SAFETY: by contract.
            let dst = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), bytes) };
            // SAFETY: by contract.
            unsafe { result::memcpy_dtoh_sync(dst, src as sys::CUdeviceptr) }
                .map_err(|e| driver_error("cuMemcpyDtoH", e))
        })
    }

    /// Device to device (same or another device), synchronous.
    ///
    /// # Safety
    /// `src` readable on `src_device`, `dst` writable on `dst_device`, for `bytes`.
    pub(crate) unsafe fn copy_dtod(
        dst_device: i32,
        dst: *mut c_void,
        src_device: i32,
        src: *const c_void,
        bytes: usize,
    ) -> Result<()> {
        let (dst_ctx, src_ctx) = (context(dst_device)?, context(src_device)?);
        on_device(dst_device, || {
            // SAFETY: by contract; the legacy stream is then synchronised.
            unsafe {
                if dst_device == src_device {
                    result::memcpy_dtod_sync(dst as sys::CUdeviceptr, src as sys::CUdeviceptr, bytes)
                        .map_err(|e| driver_error("cuMemcpyDtoD", e))
                } else {
                    let legacy = LEGACY as sys::CUstream;
                    result::memcpy_peer_async(
                        dst_ctx.0,
                        dst as sys::CUdeviceptr,
                        src_ctx.0,
                        src as sys::CUdeviceptr,
                        bytes,
                        legacy,
                    )
                    .and_then(|()| result::stream::synchronize(legacy))
                    .map_err(|e| driver_error("cuMemcpyPeer", e))
                }
            }
        })
    }

    /// The legacy default stream's handle value (`CU_STREAM_LEGACY`).
    pub(crate) const LEGACY: usize = 1;

    /// Makes work queued on `waiter` wait for the work already queued on
    /// `signaller` (an event recorded on one, waited on by the other), on
    /// `device`. Stream values as in the DLPack spec: 1 legacy default, 2
    /// per-thread default, others a `CUstream`. Returns at once.
    pub(crate) fn stream_wait(device: i32, waiter: usize, signaller: usize) -> Result<()> {
        if waiter == 0 || signaller == 0 {
            bail!(InvalidArgument, "stream 0 is ambiguous: use 1 (legacy default) or 2 (per-thread default)");
        }
        if waiter == signaller {
            return Ok(());
        }
        on_device(device, || {
            let event = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                .map_err(|e| driver_error("cuEventCreate", e))?;
            // SAFETY: a fresh event and streams of this context (by the
            // caller's word); the event is destroyed after the wait is queued.
            let queued = unsafe {
                result::event::record(event, signaller as sys::CUstream).and_then(|()| {
                    result::stream::wait_event(
                        waiter as sys::CUstream,
                        event,
                        sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    )
                })
            };
            // SAFETY: destroying after queueing is allowed (resources are freed
            // when the work completes).
            unsafe { result::event::destroy(event) }.ok();
            queued.map_err(|e| driver_error("stream handoff (cuEventRecord / cuStreamWaitEvent)", e))
        })
    }

    /// The device that owns a CUDA pointer.
    pub(crate) fn pointer_device(ptr: *const c_void) -> Result<i32> {
        contexts()?;
        let mut ordinal: i32 = -1;
        // SAFETY: the out-pointer is a valid i32; the driver checks `ptr`.
        unsafe {
            sys::cuPointerGetAttribute(
                (&raw mut ordinal).cast(),
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr as sys::CUdeviceptr,
            )
        }
        .result()
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("{ptr:p} is not CUDA memory ({e:?})")))?;
        Ok(ordinal)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorKind;

    #[test]
    fn device_count_is_a_number_or_an_error_never_a_crash() {
        match super::device_count() {
            Ok(n) => println!("{n} CUDA device(s)"),
            Err(e) => assert!(matches!(e.kind(), ErrorKind::CudaUnavailable | ErrorKind::Cuda), "{e}"),
        }
    }
}
