//! dlbridge's CUDA memory: device memory from its own stream-ordered pool
//! per device, and pinned host memory kept for reuse.
//!
//! No free waits on the host. Memory may still be in use by work queued
//! on the legacy default stream (where dlbridge orders its own work, and
//! which every blocking stream of the context, per-thread default streams
//! included, synchronises with) and on each stream it was handed to
//! (`used_on`: `__dlpack__(stream=S)`, `dlb_tensor_record_stream`). So a
//! free is ordered after all of them on the GPU: each device has a
//! non-blocking "free stream" that waits (events) for the legacy stream and
//! for each such stream, and the memory goes back to the pool on it
//! (`cuMemFreeAsync`). The pool hands it out again (on the legacy stream)
//! only after that point, and no other work waits for the free stream, so
//! a free adds no dependency between the framework's streams. Pinned
//! blocks go back to the cache with the events that mark the end of their
//! pending work, and are handed out again once those have completed.
//!
//! Streams capturing a CUDA graph are left out: their work runs when the
//! graph is launched, and whoever launches it keeps its memory alive.

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

/// Per-device objects made once per context generation: pools and free streams.
struct PerDevice(Mutex<Vec<(i32, u64, usize)>>);

impl PerDevice {
    const fn new() -> PerDevice {
        PerDevice(Mutex::new(Vec::new()))
    }

    /// The object of `device` at `generation`, made by `make` on first use
    /// (one of an older generation went with its context's reset: forgotten).
    fn get(&self, device: i32, generation: u64, make: impl FnOnce() -> Result<usize>) -> Result<usize> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(_, _, object)) = all.iter().find(|(d, g, _)| *d == device && *g == generation) {
            return Ok(object);
        }
        let object = make()?;
        all.retain(|(d, _, _)| *d != device);
        all.push((device, generation, object));
        Ok(object)
    }

    fn all(&self) -> Vec<(i32, u64, usize)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Each device's free stream (non-blocking, in its primary context).
static FREE_STREAMS: PerDevice = PerDevice::new();

/// The free stream of `device`, in its current context (of `generation`).
fn free_stream(device: i32, generation: u64) -> Result<sys::CUstream> {
    let stream = FREE_STREAMS.get(device, generation, || {
        let mut stream: sys::CUstream = std::ptr::null_mut();
        // SAFETY: one out value; a stream of the current context.
        unsafe { sys::cuStreamCreate(&raw mut stream, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32) }
            .result()
            .map_err(|e| driver_error("cuStreamCreate", e))?;
        Ok(stream as usize)
    })?;
    Ok(stream as sys::CUstream)
}

/// Makes `device`'s free stream wait for the work queued so far on the
/// legacy stream and on `users`, in the current context of `device`.
/// Capturing streams are left out (see the module's notes); a user stream
/// that cannot be ordered (destroyed by its owner) is waited for on the
/// host instead, or skipped if even that fails.
fn free_point(device: i32, generation: u64, users: &[usize]) -> Result<sys::CUstream> {
    let free = free_stream(device, generation)?;
    order_from(free as usize, driver::primary(device)?, LEGACY)?;
    for &stream in users.iter().filter(|&&s| !driver::is_capturing(s)) {
        let ordered = driver::stream_context(stream).and_then(|ctx| order_from(free as usize, ctx, stream));
        if ordered.is_err() {
            // SAFETY: a stream the consumer named; an error is ignored.
            let _ = unsafe { sys::cuStreamSynchronize(stream as sys::CUstream) };
        }
    }
    Ok(free)
}

/// Each device's pool.
static POOLS: PerDevice = PerDevice::new();

/// dlbridge's own stream-ordered memory pool on `device` (made on first use;
/// the device's default pool, which frameworks tune, is left alone). Every
/// device that can reach this one as a peer gets read-write access (as
/// `cuCtxEnablePeerAccess` gives for `cuMemAlloc` memory), and the pool is
/// made exportable as POSIX file descriptors where the system allows
/// (`cuMemPoolExportToShareableHandle`). In the current context of `device`.
fn pool(device: i32, generation: u64) -> Result<sys::CUmemoryPool> {
    POOLS.get(device, generation, || make_pool(device)).map(|p| p as sys::CUmemoryPool)
}

fn make_pool(device: i32) -> Result<usize> {
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
    Ok(pool as usize)
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
    for (device, generation, pool) in POOLS.all() {
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
        let (ptr, users, device, generation) = (self.ptr, self.users.take(), self.device, self.generation);
        on_same_generation(device, generation, || {
            // If the free cannot be ordered, the memory is left allocated:
            // a leak, never a reuse under pending work.
            let free = free_point(device, generation, &users)?;
            // SAFETY: allocated from this device's pool, freed once here, in
            // order after its users' work.
            unsafe { result::free_async(ptr, free) }.map_err(|e| driver_error("cuMemFreeAsync", e))
        });
    }
}

/// An event marking the end of work that may use a freed pinned block,
/// recorded in context `ctx` of `device` at `generation`.
#[derive(Clone, Copy)]
struct Pending {
    device: i32,
    generation: u64,
    ctx: usize,
    event: usize,
}

impl Pending {
    /// Whether the work is done (the event is then destroyed). An event
    /// whose context went with a reset, or that the driver no longer knows,
    /// is forgotten (counted as done: nothing can be waited for any more).
    fn done(self, wait: bool) -> bool {
        if driver::generation(self.device) != self.generation {
            return true;
        }
        let finished = driver::with_context(self.ctx as sys::CUcontext, || {
            let event = self.event as sys::CUevent;
            // SAFETY: an event recorded by `PinnedBuffer::drop`, live until destroyed here.
            let state = unsafe { if wait { sys::cuEventSynchronize(event) } else { sys::cuEventQuery(event) } };
            if state == sys::CUresult::CUDA_ERROR_NOT_READY {
                return Ok(false);
            }
            // SAFETY: completed (or unknown to the driver), destroyed once.
            unsafe { result::event::destroy(event) }.ok();
            Ok(true)
        });
        finished.unwrap_or(true)
    }
}

/// A freed pinned block kept for reuse, with the events that mark the end
/// of the work that was queued on it when it was freed.
struct Kept {
    ptr: usize,
    len: usize,
    device: i32,
    generation: u64,
    pending: Vec<Pending>,
}

impl Kept {
    /// Whether the block went with its context's reset (then it is forgotten).
    fn stale(&self) -> bool {
        driver::generation(self.device) != self.generation
    }

    /// Whether every pending event has completed.
    fn idle(&mut self) -> bool {
        self.pending.retain(|p| !p.done(false));
        self.pending.is_empty()
    }

    /// Waits for every pending event (for frees of the whole cache).
    fn wait(&mut self) {
        self.pending.retain(|p| !p.done(true));
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

    fn kept(&self, pending: Vec<Pending>) -> Kept {
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

/// An event recorded now on `stream` in context `ctx` of `device`.
fn mark(device: i32, ctx: sys::CUcontext, stream: usize) -> Option<Pending> {
    let generation = driver::generation(device);
    driver::with_context(ctx, || {
        let event = driver::event()?;
        // SAFETY: a fresh event of this context; the stream is live by the consumer's word.
        match unsafe { result::event::record(event, stream as sys::CUstream) } {
            Ok(()) => Ok(Pending { device, generation, ctx: ctx as usize, event: event as usize }),
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
        // Work queued on the legacy stream of every device dlbridge uses,
        // and on the streams the block was handed to, may still read or
        // write it: an event after each marks when it may be reused.
        let users = self.users.take();
        let kept = quietly(|| {
            let mut pending = Vec::new();
            let devices = driver::device_count().unwrap_or(0) as i32;
            for device in (0..devices).filter(|&d| driver::retained(d)) {
                if let Ok(ctx) = driver::primary(device) {
                    pending.extend(mark(device, ctx, LEGACY));
                }
            }
            for &stream in users.iter().filter(|&&s| !driver::is_capturing(s)) {
                let Ok(ctx) = driver::stream_context(stream) else { continue };
                let device = driver::with_context(ctx, || Ok(driver::current_device())).ok().flatten();
                if let Some(device) = device {
                    pending.extend(mark(device, ctx, stream));
                }
            }
            keep(self.kept(pending));
        });
        let _ = kept;
    }
}
