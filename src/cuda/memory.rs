//! dlbridge's CUDA memory: device memory from its own stream-ordered pool
//! per device, and pinned host memory kept for reuse.
//!
//! No free waits on the host. Memory may still be in use by work queued
//! on the legacy default stream (where dlbridge orders its own work, and
//! which every blocking stream, per-thread default streams included,
//! synchronises with) and on each stream it was handed to (`used_on`:
//! `__dlpack__(stream=S)`, `dlb_tensor_record_stream`). So a free is
//! ordered after all of them on the device: events recorded on those
//! streams, the legacy stream made to wait for them, and the memory given
//! back to the pool on the legacy stream (`cuMemFreeAsync`), where the pool
//! hands it out again only in that order. Pinned blocks go back to the
//! cache with the events that mark the end of their pending work, and are
//! handed out again only once those have completed (`cuEventQuery`).

use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::driver::{result, sys};

use super::LEGACY_STREAM as LEGACY;
use super::driver::{self, driver_error, on_device, on_same_generation, order_from, quietly};
use crate::error::Result;

/// Freed device memory a device's pool keeps for reuse (beyond this, it
/// goes back to the driver at the next synchronisation).
const POOL_KEEPS: u64 = 2 << 30;
/// Freed pinned host memory kept for reuse, in all.
const PINNED_KEEPS: usize = 2 << 30;

/// Streams (other than the legacy stream) that work using a buffer was
/// queued on, as the consumers said.
#[derive(Default)]
struct Users(Mutex<Vec<usize>>);

impl Users {
    fn add(&self, stream: usize) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !all.contains(&stream) {
            all.push(stream);
        }
    }

    fn take(&self) -> Vec<usize> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Whether a stream needs its own ordering before a free: the legacy
/// stream already waits for blocking streams (the per-thread default
/// streams among them), so only non-blocking streams do.
fn needs_ordering(stream: usize) -> bool {
    if stream <= 2 {
        return false;
    }
    let mut flags = 0u32;
    // SAFETY: one out value for a stream the consumer said is live.
    let known = unsafe { sys::cuStreamGetFlags(stream as sys::CUstream, &raw mut flags) }.result().is_ok();
    // Unknown flags: order on it anyway.
    !known || flags & sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32 != 0
}

/// Pools by (device, generation of its context).
static POOLS: Mutex<Vec<(i32, u64, usize)>> = Mutex::new(Vec::new());

/// dlbridge's own stream-ordered memory pool on `device` (made on first use;
/// the device's default pool, which frameworks tune, is left alone). Every
/// device that can reach this one as a peer gets read-write access (as
/// `cuCtxEnablePeerAccess` gives for `cuMemAlloc` memory), and the pool is
/// made exportable as POSIX file descriptors where the system allows
/// (`cuMemPoolExportToShareableHandle`). In the current context of `device`.
fn pool(device: i32, generation: u64) -> Result<sys::CUmemoryPool> {
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, _, pool)) = pools.iter().find(|(d, g, _)| *d == device && *g == generation) {
        return Ok(pool as sys::CUmemoryPool);
    }
    let make = |handles| {
        // SAFETY: plain-old-data properties; zero is "none" for every field not set.
        let mut props: sys::CUmemPoolProps = unsafe { std::mem::zeroed() };
        props.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
        props.handleTypes = handles;
        props.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
        props.location.id = device;
        // SAFETY: valid properties for an existing device.
        unsafe { result::mem_pool::create(&props) }
    };
    let pool = make(sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        .or_else(|_| make(sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE))
        .map_err(|e| driver_error("cuMemPoolCreate", e))?;
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
    let peers: Vec<sys::CUmemAccessDesc> = (0..driver::device_count()? as i32)
        .filter(|&p| p != device)
        .filter(|&p| {
            let mut can = 0;
            // SAFETY: one out value; two valid ordinals.
            unsafe { sys::cuDeviceCanAccessPeer(&raw mut can, p, device) }.result().is_ok() && can != 0
        })
        .map(|p| {
            // SAFETY: plain-old-data; every field is set below.
            let mut desc: sys::CUmemAccessDesc = unsafe { std::mem::zeroed() };
            desc.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
            desc.location.id = p;
            desc.flags = sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
            desc
        })
        .collect();
    if !peers.is_empty() {
        // SAFETY: descriptors of peer devices that can access this one.
        // Peer access is an optimisation (peer copies work without it).
        let _ = unsafe { sys::cuMemPoolSetAccess(pool, peers.as_ptr(), peers.len()) };
    }
    // A pool of an older generation went with its context's reset: forgotten.
    pools.retain(|(d, _, _)| *d != device);
    pools.push((device, generation, pool as usize));
    Ok(pool)
}

/// Gives the memory dlbridge keeps for reuse (pinned host blocks, the
/// unused part of its device pools) back to the driver; waits for the
/// pending work of pinned blocks first. Creates no context.
pub(crate) fn empty_cache() -> Result<()> {
    driver::initialised()?;
    let cached = std::mem::take(&mut *PINNED.lock().unwrap_or_else(|e| e.into_inner()));
    for mut block in cached.into_iter().filter(|b| !b.stale()) {
        block.wait();
        free_pinned(&block);
    }
    let pools = POOLS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (device, generation, pool) in pools {
        on_device(device, |now| {
            if now != generation {
                return Ok(());
            }
            // SAFETY: a pool of this device; whatever is in use stays.
            unsafe { sys::cuMemPoolTrimTo(pool as sys::CUmemoryPool, 0) }
                .result()
                .map_err(|e| driver_error("cuMemPoolTrimTo", e))
        })?;
    }
    Ok(())
}

/// Device memory from dlbridge's pool on the device (256-byte aligned),
/// allocated (and zero-filled) in order on the legacy default stream.
/// Dropping it orders the free after its users' work without waiting.
pub(crate) struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    device: i32,
    generation: u64,
    users: Users,
}

impl DeviceBuffer {
    /// `bytes` (at least 1) on `device`, zero-filled when `zero`.
    pub(crate) fn new(device: i32, bytes: usize, zero: bool) -> Result<DeviceBuffer> {
        on_device(device, |generation| {
            let pool = pool(device, generation)?;
            let legacy = LEGACY as sys::CUstream;
            let mut ptr: sys::CUdeviceptr = 0;
            // SAFETY: a pool of this device, the legacy stream of its context.
            unsafe { sys::cuMemAllocFromPoolAsync(&raw mut ptr, bytes.max(1), pool, legacy) }
                .result()
                .map_err(|e| driver_error(&format!("allocating {bytes} bytes on CUDA device {device}"), e))?;
            let buffer = DeviceBuffer { ptr, device, generation, users: Users::default() };
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

    /// Work on `stream` (of this device) may use the memory: the free
    /// waits for the work queued there by then.
    pub(crate) fn used_on(&self, stream: usize) {
        if stream > 2 {
            self.users.add(stream);
        }
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if driver::initialised().is_err() {
            return; // a forked child: the parent's memory is not ours to touch
        }
        let (ptr, users) = (self.ptr, self.users.take());
        on_same_generation(self.device, self.generation, || {
            for stream in users.into_iter().filter(|s| needs_ordering(*s)) {
                // A stream the consumer destroyed since is an error here: its
                // work is complete or will be before its resources go.
                if let Ok(ctx) = driver::stream_context(stream) {
                    let _ = order_from(LEGACY, ctx, stream);
                }
            }
            // SAFETY: allocated from this device's pool, freed once here, in
            // order after every user's work on the legacy stream.
            unsafe { result::free_async(ptr, LEGACY as sys::CUstream) }.map_err(|e| driver_error("cuMemFreeAsync", e))
        });
    }
}

/// A freed pinned block kept for reuse, with the events (context, event)
/// that mark the end of the work that was queued on it when it was freed.
struct Kept {
    ptr: usize,
    len: usize,
    device: i32,
    generation: u64,
    pending: Vec<(usize, usize)>,
}

impl Kept {
    /// Whether the block went with its context's reset (then it is forgotten).
    fn stale(&self) -> bool {
        driver::generation(self.device) != self.generation
    }

    /// Whether every pending event has completed (destroying those that have).
    fn idle(&mut self) -> bool {
        self.pending.retain(|&(ctx, event)| {
            let done = driver::with_context(ctx as sys::CUcontext, || {
                // SAFETY: an event recorded by `PinnedBuffer::drop`, live until destroyed here.
                let state = unsafe { sys::cuEventQuery(event as sys::CUevent) };
                if state == sys::CUresult::CUDA_ERROR_NOT_READY {
                    return Ok(false);
                }
                // SAFETY: completed (or failed), destroyed once.
                unsafe { result::event::destroy(event as sys::CUevent) }.ok();
                Ok(true)
            });
            !matches!(done, Ok(true))
        });
        self.pending.is_empty()
    }

    /// Waits for every pending event (for frees of the whole cache).
    fn wait(&mut self) {
        for (ctx, event) in std::mem::take(&mut self.pending) {
            let _ = driver::with_context(ctx as sys::CUcontext, || {
                // SAFETY: as in `idle`; waited for, then destroyed once.
                unsafe {
                    let _ = result::event::synchronize(event as sys::CUevent);
                    result::event::destroy(event as sys::CUevent).ok();
                }
                Ok(())
            });
        }
    }
}

/// Freed pinned blocks kept for reuse.
static PINNED: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

fn free_pinned(block: &Kept) {
    let ptr = block.ptr;
    on_same_generation(block.device, block.generation, || {
        // SAFETY: from cuMemHostAlloc in this device's context, owned here, freed once.
        unsafe { result::free_host(ptr as *mut c_void) }.map_err(|e| driver_error("cuMemFreeHost", e))
    });
}

/// Page-locked host memory (`cuMemHostAlloc`, portable to every context).
/// Freed blocks are kept (up to 2 GiB in all) and handed out again once the
/// work queued on them has completed, since pinning pages costs far more
/// than copying them. Allocated through the primary context of the device
/// it is for: the staging device, the caller's current device, a device
/// whose context is already active, or device 0, in that order (never
/// making a context on a device nobody uses when one is in use).
pub(crate) struct PinnedBuffer {
    ptr: *mut c_void,
    len: usize,
    device: i32,
    generation: u64,
    users: Users,
}

// SAFETY: plain host memory; freeing it is allowed from any thread.
unsafe impl Send for PinnedBuffer {}
// SAFETY: the users list is behind a mutex.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// At least `bytes` bytes (a kept idle block at most twice as large, or
    /// a new one), for use with `device` (None: see the type's notes).
    pub(crate) fn new(bytes: usize, device: Option<i32>) -> Result<PinnedBuffer> {
        if driver::device_count()? == 0 {
            crate::error::bail!(CudaUnavailable, "pinned host memory needs a CUDA device; the driver found none");
        }
        let bytes = bytes.max(1);
        if let Some(Kept { ptr, len, device, generation, .. }) = reuse(bytes) {
            return Ok(PinnedBuffer { ptr: ptr as *mut c_void, len, device, generation, users: Users::default() });
        }
        let device = match device.or_else(driver::current_device) {
            Some(d) => d,
            None => (0..driver::device_count()? as i32).find(|&d| driver::is_active(d)).unwrap_or(0),
        };
        on_device(device, |generation| {
            // SAFETY: an allocation in the current context.
            let ptr = unsafe { result::malloc_host(bytes, sys::CU_MEMHOSTALLOC_PORTABLE) }
                .map_err(|e| driver_error(&format!("pinning {bytes} bytes of host memory"), e))?;
            Ok(PinnedBuffer { ptr, len: bytes, device, generation, users: Users::default() })
        })
    }

    pub(crate) fn ptr(&self) -> *mut c_void {
        self.ptr
    }

    /// Work on `stream` (of any device) may use the block.
    pub(crate) fn used_on(&self, stream: usize) {
        if stream > 2 {
            self.users.add(stream);
        }
    }

    /// Hands the block back for reuse at once: for callers that know no
    /// work uses it any more.
    pub(super) fn recycle_idle(self) {
        let this = std::mem::ManuallyDrop::new(self);
        keep(this.kept(Vec::new()));
    }

    fn kept(&self, pending: Vec<(usize, usize)>) -> Kept {
        Kept { ptr: self.ptr as usize, len: self.len, device: self.device, generation: self.generation, pending }
    }
}

/// How long a request waits for a kept block whose pending work is about to
/// complete (an event recorded on an idle stream completes within
/// microseconds), rather than pinning a new one, which takes far longer.
const REUSE_PATIENCE: std::time::Duration = std::time::Duration::from_micros(200);

/// The smallest idle kept block of at least `bytes` (at most twice as
/// large), taken out of the cache; polled for a moment while only blocks
/// with pending work fit.
fn reuse(bytes: usize) -> Option<Kept> {
    let fits = |len: usize| len >= bytes && len / 2 <= bytes;
    let deadline = std::time::Instant::now() + REUSE_PATIENCE;
    loop {
        let mut cache = PINNED.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|b| !b.stale());
        let mut best: Option<usize> = None;
        let mut pending = false;
        for i in 0..cache.len() {
            let len = cache[i].len;
            if fits(len) && best.is_none_or(|b| cache[b].len > len) {
                if cache[i].idle() {
                    best = Some(i);
                } else {
                    pending = true;
                }
            }
        }
        if let Some(i) = best {
            return Some(cache.swap_remove(i));
        }
        drop(cache);
        if !pending || std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Keeps a block for reuse; idle blocks beyond the cache's size are freed
/// (pending ones stay until they are idle), stale ones forgotten.
fn keep(block: Kept) {
    let mut cache = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    cache.push(block);
    cache.retain(|b| !b.stale());
    let mut total: usize = cache.iter().map(|b| b.len).sum();
    let (mut i, mut freed) = (0, Vec::new());
    while total > PINNED_KEEPS && i < cache.len() {
        if cache[i].idle() {
            let b = cache.swap_remove(i);
            total -= b.len;
            freed.push(b);
        } else {
            i += 1;
        }
    }
    drop(cache);
    freed.iter().for_each(free_pinned);
}

/// An event recorded now on `stream` in context `ctx`: (context, event).
fn mark(ctx: sys::CUcontext, stream: usize) -> Option<(usize, usize)> {
    driver::with_context(ctx, || {
        let event = driver::event()?;
        // SAFETY: a fresh event of this context; the stream is live by the consumer's word.
        match unsafe { result::event::record(event, stream as sys::CUstream) } {
            Ok(()) => Ok((ctx as usize, event as usize)),
            Err(e) => {
                // SAFETY: created above, used by nothing.
                unsafe { result::event::destroy(event) }.ok();
                Err(driver_error("cuEventRecord", e))
            }
        }
    })
    .ok()
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        if driver::initialised().is_err() {
            return; // a forked child: the parent's block is not ours to touch
        }
        // Work queued on the legacy stream of every device whose context is
        // in use, and on the streams the block was handed to, may still
        // read or write it: an event after each marks when it may be reused.
        let users = self.users.take();
        let kept = quietly(|| {
            let mut pending = Vec::new();
            let devices = driver::device_count().unwrap_or(0) as i32;
            for device in (0..devices).filter(|&d| driver::is_active(d)) {
                let _ = on_device(device, |_| {
                    let ctx = result::ctx::get_current().ok().flatten().unwrap_or(std::ptr::null_mut());
                    pending.extend(mark(ctx, LEGACY));
                    Ok(())
                });
            }
            for &stream in &users {
                if let Ok(ctx) = driver::stream_context(stream) {
                    pending.extend(mark(ctx, stream));
                }
            }
            keep(self.kept(pending));
        });
        let _ = kept;
    }
}
