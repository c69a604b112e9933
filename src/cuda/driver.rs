//! The CUDA driver, loaded at run time and initialised once; each device's
//! primary context retained lazily, the first time that device's memory is
//! touched (counting devices or asking where a pointer lives retains none).
//!
//! Every call that needs a context goes through [`on_device`], which makes
//! the device's primary context current, puts the thread in relaxed stream
//! capture mode (so dlbridge's calls are legal while a framework captures a
//! CUDA graph in global mode on another stream) and restores both on the
//! way out, also when the body panics.
//!
//! Two events invalidate what dlbridge caches, and both are checked for:
//! a `fork` (the child must not touch the parent's contexts, pools or pinned
//! blocks: every CUDA call there fails cleanly) and another library's
//! `cudaDeviceReset` (the primary context found inactive: the device's
//! generation moves on, and memory of the old generation is forgotten, never
//! freed twice).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::{result, sys};

use crate::error::{Error, ErrorKind, Result, bail};

pub(crate) fn driver_error(what: &str, e: result::DriverError) -> Error {
    match e.0 {
        sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::new(ErrorKind::OutOfMemory, format!("{what}: out of memory")),
        _ => Error::new(ErrorKind::Cuda, format!("CUDA {what} failed: {e:?}")),
    }
}

/// Runs `f`, turning a panic into `None`: for drops and deleters, which must
/// not unwind into C (cudarc panics when the driver lacks a symbol).
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// One device: its retained primary context (null until first use) and the
/// generation of that context.
struct Slot {
    ctx: AtomicPtr<c_void>,
    retaining: Mutex<()>,
    generation: AtomicU64,
}

struct Driver {
    devices: Box<[Slot]>,
}

/// Set once this process starts initialising CUDA (just before `cuInit`).
static STARTED: AtomicBool = AtomicBool::new(false);
/// Set in a child process forked after CUDA initialisation started here
/// (also in the middle of it: the child never waits on the parent's
/// half-finished initialisation).
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn forked_child() {
    // Only atomics: allowed in the child of a multithreaded fork.
    if STARTED.load(Ordering::Relaxed) {
        FORKED.store(true, Ordering::Relaxed);
    }
}

fn driver() -> Result<&'static Driver> {
    static DRIVER: OnceLock<std::result::Result<Driver, Error>> = OnceLock::new();
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a handler that only uses atomics, for the rest of
    // the process, before anything of CUDA's exists.
    AT_FORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forked_child));
    });
    if FORKED.load(Ordering::Relaxed) {
        bail!(
            CudaUnavailable,
            "CUDA was initialised before this process forked, and a forked child cannot use it \
             (start worker processes with the 'spawn' method)"
        );
    }
    match DRIVER.get_or_init(init) {
        Ok(d) => Ok(d),
        Err(e) => Err(e.clone()),
    }
}

fn init() -> Result<Driver> {
    // SAFETY: only tries to dlopen the driver; cudarc panics on any call
    // made without it, so this gate comes first.
    if !unsafe { sys::is_culib_present() } {
        bail!(CudaUnavailable, "no CUDA driver: libcuda.so could not be loaded");
    }
    STARTED.store(true, Ordering::Relaxed);
    let count = match result::init() {
        Ok(()) => result::device::get_count().map_err(|e| driver_error("cuDeviceGetCount", e))?,
        // A driver and no device: zero devices, not an error.
        Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE => 0,
        Err(e) => return Err(driver_error("cuInit", e)),
    };
    let devices = (0..count.max(0))
        .map(|_| Slot {
            ctx: AtomicPtr::new(std::ptr::null_mut()),
            retaining: Mutex::new(()),
            generation: AtomicU64::new(0),
        })
        .collect();
    Ok(Driver { devices })
}

/// Number of devices; creates no context.
pub(crate) fn device_count() -> Result<usize> {
    driver().map(|d| d.devices.len())
}

/// Whether the driver is loaded and initialised here (no context made).
pub(crate) fn initialised() -> Result<()> {
    driver().map(|_| ())
}

fn slot(device: i32) -> Result<&'static Slot> {
    let all = &driver()?.devices;
    match usize::try_from(device).ok().and_then(|d| all.get(d)) {
        Some(s) => Ok(s),
        None => bail!(UnsupportedDevice, "CUDA device {device} does not exist ({} device(s))", all.len()),
    }
}

/// Whether `device`'s primary context exists (made by anyone), without making it.
pub(crate) fn is_active(device: i32) -> bool {
    let (mut flags, mut active) = (0u32, 0i32);
    // SAFETY: two out values; an invalid ordinal is an error, not UB.
    let ok = unsafe { sys::cuDevicePrimaryCtxGetState(device, &raw mut flags, &raw mut active) }.result().is_ok();
    ok && active != 0
}

/// Notices a reset: a context that was retained but is no longer active
/// was reset by someone else (`cudaDeviceReset`). Its generation moves on
/// (caches compare generations and forget what went with it) and it is
/// retained again on next use. Returns the current generation.
fn refresh(slot: &Slot, device: i32) -> u64 {
    if !slot.ctx.load(Ordering::Acquire).is_null() && !is_active(device) {
        let _one = slot.retaining.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.ctx.load(Ordering::Acquire).is_null() && !is_active(device) {
            slot.generation.fetch_add(1, Ordering::AcqRel);
            slot.ctx.store(std::ptr::null_mut(), Ordering::Release);
        }
    }
    slot.generation.load(Ordering::Acquire)
}

/// `device`'s retained primary context and its generation, retaining it on
/// first use (and again after a reset).
fn context(device: i32) -> Result<(sys::CUcontext, u64)> {
    let slot = slot(device)?;
    let generation = refresh(slot, device);
    let ctx = slot.ctx.load(Ordering::Acquire);
    if !ctx.is_null() {
        return Ok((ctx.cast(), generation));
    }
    let _one = slot.retaining.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = slot.ctx.load(Ordering::Acquire);
    if !ctx.is_null() {
        return Ok((ctx.cast(), slot.generation.load(Ordering::Acquire)));
    }
    let dev = result::device::get(device).map_err(|e| driver_error("cuDeviceGet", e))?;
    // SAFETY: a valid device; the retain is kept for the process.
    // A failure (a device busy in exclusive mode) is not remembered: the
    // next use of this device tries again, and other devices are unaffected.
    let ctx = unsafe { result::primary_ctx::retain(dev) }
        .map_err(|e| driver_error(&format!("cuDevicePrimaryCtxRetain (device {device})"), e))?;
    slot.ctx.store(ctx.cast(), Ordering::Release);
    Ok((ctx, slot.generation.load(Ordering::Acquire)))
}

/// The generation of `device`'s context (0 before any reset), checking
/// for a reset first; retains nothing.
pub(crate) fn generation(device: i32) -> u64 {
    slot(device).map_or(u64::MAX, |s| refresh(s, device))
}

/// Whether dlbridge has retained `device`'s primary context (used it).
pub(crate) fn retained(device: i32) -> bool {
    slot(device).is_ok_and(|s| !s.ctx.load(Ordering::Acquire).is_null())
}

/// Whether `stream` (a `CUstream`, not 1 or 2) is capturing a CUDA graph:
/// work queued there runs when the graph is launched, not now.
pub(crate) fn is_capturing(stream: usize) -> bool {
    let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // SAFETY: one out value for a stream the caller says is live.
    let ok = unsafe { sys::cuStreamIsCapturing(stream as sys::CUstream, &raw mut status) }.result().is_ok();
    ok && status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
}

/// The caller's current context and capture mode, put back on drop.
/// (None: the mode was not changed.)
struct Restore {
    previous: sys::CUcontext,
    mode: Option<sys::CUstreamCaptureMode>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        quietly(|| {
            // SAFETY: the thread's own mode and context as they were.
            unsafe {
                if let Some(mode) = self.mode.as_mut() {
                    let _ = sys::cuThreadExchangeStreamCaptureMode(mode);
                }
                let _ = result::ctx::set_current(self.previous);
            }
        });
    }
}

/// Runs `body` with `device`'s primary context current and the thread in
/// relaxed capture mode, then restores the caller's context and mode (also
/// on a panic). `body` gets the generation of the context.
pub(crate) fn on_device<T>(device: i32, body: impl FnOnce(u64) -> Result<T>) -> Result<T> {
    let (ctx, generation) = context(device)?;
    let previous = result::ctx::get_current().map_err(|e| driver_error("cuCtxGetCurrent", e))?;
    let mut mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
    // SAFETY: exchanges the calling thread's mode; restored by `Restore`.
    unsafe { sys::cuThreadExchangeStreamCaptureMode(&raw mut mode) }
        .result()
        .map_err(|e| driver_error("cuThreadExchangeStreamCaptureMode", e))?;
    let _restore = Restore { previous: previous.unwrap_or(std::ptr::null_mut()), mode: Some(mode) };
    // SAFETY: a retained primary context.
    unsafe { result::ctx::set_current(ctx) }.map_err(|e| driver_error("cuCtxSetCurrent", e))?;
    body(generation)
}

/// Runs `body` on `device` only while its context is still of `generation`
/// (memory of an older generation went with a reset). Never panics.
pub(crate) fn on_same_generation(device: i32, generation: u64, body: impl FnOnce() -> Result<()>) {
    quietly(|| {
        let _ = on_device(device, |now| if now == generation { body() } else { Ok(()) });
    });
}

/// The device (ordinal) of the calling thread's current context, if any.
pub(crate) fn current_device() -> Option<i32> {
    let mut dev: sys::CUdevice = 0;
    // SAFETY: one out value, for the current context.
    unsafe { sys::cuCtxGetDevice(&raw mut dev) }.result().ok()?;
    Some(dev)
}

/// The context a stream belongs to (not for the special handles 1 and 2,
/// which mean the current context's).
pub(crate) fn stream_context(stream: usize) -> Result<sys::CUcontext> {
    let mut ctx: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: one out value; the stream is the caller's, alive by its word.
    unsafe { sys::cuStreamGetCtx(stream as sys::CUstream, &raw mut ctx) }
        .result()
        .map_err(|e| driver_error("cuStreamGetCtx", e))?;
    Ok(ctx)
}

/// Runs `body` with `ctx` current (when it is not already), then goes back.
pub(crate) fn with_context<T>(ctx: sys::CUcontext, body: impl FnOnce() -> Result<T>) -> Result<T> {
    let previous = result::ctx::get_current().map_err(|e| driver_error("cuCtxGetCurrent", e))?;
    let previous = previous.unwrap_or(std::ptr::null_mut());
    if previous == ctx {
        return body();
    }
    let _restore = Restore { previous, mode: None };
    // SAFETY: a context the driver gave for a live stream.
    unsafe { result::ctx::set_current(ctx) }.map_err(|e| driver_error("cuCtxSetCurrent", e))?;
    body()
}

/// A new event without timing, in the current context.
pub(crate) fn event() -> Result<sys::CUevent> {
    result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).map_err(|e| driver_error("cuEventCreate", e))
}

/// `device`'s primary context (retained on first use).
pub(crate) fn primary(device: i32) -> Result<sys::CUcontext> {
    context(device).map(|(ctx, _)| ctx)
}

/// Makes `waiter` (a stream of the current context, or any explicit
/// stream) wait for the work queued so far on `signaller`, a stream of
/// context `ctx`, which records the event. Returns at once.
pub(crate) fn order_from(waiter: usize, ctx: sys::CUcontext, signaller: usize) -> Result<()> {
    let event = with_context(ctx, || {
        let event = event()?;
        // SAFETY: a fresh event of `ctx`; the stream is live by the caller's word.
        match unsafe { result::event::record(event, signaller as sys::CUstream) } {
            Ok(()) => Ok(event),
            Err(e) => {
                // SAFETY: created above, used by nothing.
                unsafe { result::event::destroy(event) }.ok();
                Err(driver_error("cuEventRecord", e))
            }
        }
    })?;
    // SAFETY: an event just recorded; the waiter is live by the caller's
    // word (an event of another context may be waited on).
    let waited = unsafe {
        result::stream::wait_event(waiter as sys::CUstream, event, sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT)
    };
    // SAFETY: destroying after the wait is queued is allowed (released when done).
    unsafe { result::event::destroy(event) }.ok();
    waited.map_err(|e| driver_error("cuStreamWaitEvent", e))
}
