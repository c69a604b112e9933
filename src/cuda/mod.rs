//! CUDA through cudarc, loaded at run time: nothing here needs CUDA to
//! build, and without a driver every entry point returns an error.
//!
//! dlbridge's own CUDA work (allocation, memset, copies) is synchronous and
//! ordered on the legacy default stream. Producers are asked to make their
//! work visible there (stream None / 1), and consumers get it on their stream
//! through an event (see `stream_wait`). Every operation makes the device's
//! primary context current and restores the caller's context afterwards, so
//! a framework's idea of "the current device" on that thread is untouched.

use crate::error::{Result, bail};

/// The legacy default stream's handle value (`CU_STREAM_LEGACY`), where
/// dlbridge orders its CUDA work.
pub(crate) const LEGACY_STREAM: usize = 1;

#[cfg(feature = "cuda")]
pub(crate) use imp::*;

#[cfg(feature = "cuda")]
mod staging;

#[cfg(not(feature = "cuda"))]
pub(crate) use without_cuda::*;

#[cfg(not(feature = "cuda"))]
mod without_cuda {
    use super::*;

    pub(crate) fn stream_wait(_device: crate::Device, _waiter: usize, _signaller: usize) -> Result<()> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }

    pub(crate) fn pointer_device(_ptr: *const std::ffi::c_void) -> Result<i32> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }

    pub(crate) fn empty_cache() -> Result<()> {
        bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
    }

    pub(crate) fn synchronize(_device: i32) -> Result<()> {
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
    use std::sync::{Mutex, OnceLock};

    use cudarc::driver::{result, sys};

    use super::*;
    use crate::error::{Error, ErrorKind};

    pub(super) fn driver_error(what: &str, e: result::DriverError) -> Error {
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

    /// Freed device memory a device's pool keeps for reuse (beyond this, it
    /// goes back to the driver at the next synchronisation).
    const POOL_KEEPS: u64 = 2 << 30;
    /// Freed pinned host memory kept for reuse, in all.
    const PINNED_KEEPS: usize = 2 << 30;

    /// dlbridge's own stream-ordered memory pool on `device` (made on first
    /// use; the device's default pool, which frameworks tune, is left alone).
    fn pool(device: i32) -> Result<sys::CUmemoryPool> {
        static POOLS: Mutex<Vec<(i32, usize)>> = Mutex::new(Vec::new());
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(_, pool)) = pools.iter().find(|(d, _)| *d == device) {
            return Ok(pool as sys::CUmemoryPool);
        }
        // SAFETY: plain-old-data properties; zero is "none" for every field not set.
        let mut props: sys::CUmemPoolProps = unsafe { std::mem::zeroed() };
        props.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
        props.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
        props.location.id = device;
        // SAFETY: valid properties for an existing device (checked by the caller's context).
        let pool = unsafe { result::mem_pool::create(&props) }.map_err(|e| driver_error("cuMemPoolCreate", e))?;
        let mut keep = POOL_KEEPS;
        // SAFETY: a u64 attribute of the new pool.
        unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&raw mut keep).cast(),
            )
        }
        .result()
        .map_err(|e| driver_error("cuMemPoolSetAttribute", e))?;
        pools.push((device, pool as usize));
        Ok(pool)
    }

    /// Waits until all work queued on `device` (every stream) is done: for
    /// memory a producer handed over without saying which stream to wait for.
    pub(crate) fn synchronize(device: i32) -> Result<()> {
        on_device(device, || result::ctx::synchronize().map_err(|e| driver_error("cuCtxSynchronize", e)))
    }

    /// Gives the memory that dlbridge keeps for reuse (pinned host blocks,
    /// the unused part of its device pools) back to the driver.
    pub(crate) fn empty_cache() -> Result<()> {
        let devices = contexts()?.len() as i32;
        let cached = std::mem::take(&mut *PINNED_CACHE.lock().unwrap_or_else(|e| e.into_inner()));
        for block in cached {
            free_pinned(block.0 as *mut c_void);
        }
        for device in 0..devices {
            on_device(device, || {
                let pool = pool(device)?;
                // SAFETY: a pool of this device; whatever is in use stays.
                unsafe { sys::cuMemPoolTrimTo(pool, 0) }.result().map_err(|e| driver_error("cuMemPoolTrimTo", e))
            })?;
        }
        Ok(())
    }

    /// Device memory from dlbridge's pool on the device (256-byte aligned),
    /// ordered on the legacy default stream like all of dlbridge's CUDA work.
    /// Freeing waits for the device to be idle first, as cuMemFree does, so
    /// no work still queued on any stream can touch memory handed out again.
    pub(crate) struct DeviceBuffer {
        ptr: sys::CUdeviceptr,
        device: i32,
    }

    impl DeviceBuffer {
        /// `bytes` (at least 1) on `device`, zero-filled when `zero`.
        pub(crate) fn new(device: i32, bytes: usize, zero: bool) -> Result<DeviceBuffer> {
            on_device(device, || {
                let pool = pool(device)?;
                let legacy = LEGACY as sys::CUstream;
                let mut ptr: sys::CUdeviceptr = 0;
                // SAFETY: a pool of this device, the legacy stream of its context.
                unsafe { sys::cuMemAllocFromPoolAsync(&raw mut ptr, bytes.max(1), pool, legacy) }.result().map_err(
                    |e| match e.0 {
                        sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                            Error::new(ErrorKind::OutOfMemory, format!("out of CUDA memory allocating {bytes} bytes"))
                        }
                        _ => driver_error("cuMemAllocFromPoolAsync", e),
                    },
                )?;
                let buffer = DeviceBuffer { ptr, device };
                if zero {
                    // SAFETY: `bytes` fit the new allocation; ordered after it on the same stream.
                    unsafe { result::memset_d8_async(ptr, 0, bytes, legacy) }
                        .map_err(|e| driver_error("cuMemsetD8Async", e))?;
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
                // SAFETY: allocated from this device's pool, freed once here,
                // after every stream of the context has drained.
                unsafe {
                    sys::cuCtxSynchronize()
                        .result()
                        .and_then(|()| result::free_async(self.ptr, LEGACY as sys::CUstream))
                }
                .map_err(|e| driver_error("cuMemFreeAsync", e))
            });
        }
    }

    /// Freed pinned blocks kept for reuse: (address, length).
    static PINNED_CACHE: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

    fn free_pinned(ptr: *mut c_void) {
        // SAFETY: from cuMemHostAlloc, owned by the caller, freed once.
        let _ = on_device(0, || unsafe { result::free_host(ptr) }.map_err(|e| driver_error("cuMemFreeHost", e)));
    }

    /// Page-locked host memory (cuMemHostAlloc, portable to every context).
    /// Freed blocks are kept (up to 2 GiB in all) and handed out again, since
    /// pinning pages costs far more than copying them.
    pub(crate) struct PinnedBuffer {
        ptr: *mut c_void,
        len: usize,
    }

    // SAFETY: plain host memory; freeing it is allowed from any thread.
    unsafe impl Send for PinnedBuffer {}
    // SAFETY: no interior mutability.
    unsafe impl Sync for PinnedBuffer {}

    impl PinnedBuffer {
        /// At least `bytes` bytes (a kept block at most twice as large, or a new one).
        pub(crate) fn new(bytes: usize) -> Result<PinnedBuffer> {
            let bytes = bytes.max(1);
            {
                let mut cache = PINNED_CACHE.lock().unwrap_or_else(|e| e.into_inner());
                let fits = |len: usize| len >= bytes && len / 2 <= bytes;
                let best = (0..cache.len()).filter(|&i| fits(cache[i].1)).min_by_key(|&i| cache[i].1);
                if let Some(i) = best {
                    let (ptr, len) = cache.swap_remove(i);
                    return Ok(PinnedBuffer { ptr: ptr as *mut c_void, len });
                }
            }
            on_device(0, || {
                // SAFETY: an allocation in the current context.
                let ptr = unsafe { result::malloc_host(bytes, sys::CU_MEMHOSTALLOC_PORTABLE) }
                    .map_err(|e| driver_error("cuMemHostAlloc", e))?;
                Ok(PinnedBuffer { ptr, len: bytes })
            })
        }

        pub(crate) fn ptr(&self) -> *mut c_void {
            self.ptr
        }

        /// Hands the block back for reuse without waiting for the devices:
        /// for callers that know no copy still uses it.
        pub(super) fn recycle_idle(self) {
            let this = std::mem::ManuallyDrop::new(self);
            recycle_pinned(this.ptr, this.len);
        }
    }

    /// Keeps a pinned block for reuse, or frees it when the cache is full.
    fn recycle_pinned(ptr: *mut c_void, len: usize) {
        let mut cache = PINNED_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if cache.iter().map(|b| b.1).sum::<usize>() + len <= PINNED_KEEPS {
            cache.push((ptr as usize, len));
        } else {
            drop(cache);
            free_pinned(ptr);
        }
    }

    impl Drop for PinnedBuffer {
        fn drop(&mut self) {
            // A copy queued by someone else may still read or write the block:
            // wait for every device, as cuMemFreeHost would, then keep it.
            let idle = contexts().is_ok_and(|all| {
                (0..all.len() as i32).all(|d| {
                    // SAFETY: synchronising a primary context.
                    on_device(d, || unsafe { sys::cuCtxSynchronize() }.result().map_err(|e| driver_error("sync", e)))
                        .is_ok()
                })
            });
            if idle { recycle_pinned(self.ptr, self.len) } else { free_pinned(self.ptr) }
        }
    }

    /// Host to device, `bytes` bytes, synchronous. Large copies from pageable
    /// memory go through dlbridge's pinned staging buffers (see `staging`).
    ///
    /// # Safety
    /// `src` readable and `dst` (on `device`) writable for `bytes` bytes.
    pub(crate) unsafe fn copy_htod(device: i32, dst: *mut c_void, src: *const c_void, bytes: usize) -> Result<()> {
        if super::staging::wanted(src, bytes) {
            // SAFETY: by contract.
            return unsafe { super::staging::htod(device, dst, src, bytes) };
        }
        on_device(device, || {
            // SAFETY: by contract.
            let src = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), bytes) };
            // SAFETY: by contract.
            unsafe { result::memcpy_htod_sync(dst as sys::CUdeviceptr, src) }
                .map_err(|e| driver_error("cuMemcpyHtoD", e))
        })
    }

    /// Device to host, synchronous; large copies into pageable memory are
    /// staged as above.
    ///
    /// # Safety
    /// `src` (on `device`) readable and `dst` writable for `bytes` bytes.
    pub(crate) unsafe fn copy_dtoh(device: i32, dst: *mut c_void, src: *const c_void, bytes: usize) -> Result<()> {
        if super::staging::wanted(dst, bytes) {
            // SAFETY: by contract.
            return unsafe { super::staging::dtoh(device, dst, src, bytes) };
        }
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
    pub(crate) const LEGACY: usize = super::LEGACY_STREAM;

    /// Makes work queued on `waiter` wait for the work already queued on
    /// `signaller` (an event recorded on one, waited on by the other), on
    /// `device`. Stream values as in the DLPack spec: 1 legacy default, 2
    /// per-thread default, others a `CUstream`. Returns at once.
    pub(crate) fn stream_wait(device: crate::Device, waiter: usize, signaller: usize) -> Result<()> {
        let device = device.id();
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

    /// What the driver knows of an address: its memory type
    /// (`CU_MEMORYTYPE_*`, 0 for memory CUDA does not know: pageable host
    /// memory) and device ordinal. Never an error for unknown addresses.
    fn pointer_info(ptr: *const c_void) -> Result<(u32, i32)> {
        contexts()?;
        let (mut kind, mut ordinal): (u32, i32) = (0, -1);
        let mut attributes = [
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
        ];
        let mut data = [(&raw mut kind).cast::<c_void>(), (&raw mut ordinal).cast::<c_void>()];
        // SAFETY: two attributes, each with a pointer to a 4-byte out value;
        // cuPointerGetAttributes leaves unknown addresses' values at zero.
        unsafe { sys::cuPointerGetAttributes(2, attributes.as_mut_ptr(), data.as_mut_ptr(), ptr as sys::CUdeviceptr) }
            .result()
            .map_err(|e| driver_error("cuPointerGetAttributes", e))?;
        Ok((kind, ordinal))
    }

    /// The device that owns a CUDA pointer (device, managed or pinned host
    /// memory); InvalidArgument for memory CUDA does not know.
    pub(crate) fn pointer_device(ptr: *const c_void) -> Result<i32> {
        match pointer_info(ptr)? {
            (0, _) => bail!(InvalidArgument, "{ptr:p} is not CUDA memory (the driver does not know it)"),
            (_, ordinal) => Ok(ordinal),
        }
    }

    /// Whether host memory at `ptr` is plain pageable memory (not pinned,
    /// registered or managed).
    pub(super) fn is_pageable(ptr: *const c_void) -> bool {
        matches!(pointer_info(ptr), Ok((0, _)))
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
