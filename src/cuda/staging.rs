//! Large copies between pageable host memory and a device, through
//! dlbridge's own pinned buffers.
//!
//! The driver copies pageable memory by staging it itself, one thread and
//! one small buffer at a time. Here two pinned chunks take turns: while the
//! DMA engine moves one (asynchronously, on the legacy default stream), the
//! CPU fills or drains the other with every core. The chunks come from the
//! pinned cache, so only the first large copy pays for pinning them.
//!
//! A copy is cut in at least four steps (so that filling and moving overlap)
//! of at most the chunk size. `DLBRIDGE_STAGING_MIB` sets that size in MiB
//! (default 32, the best of 2, 8 and 32 on an H100, see docs/gpu-results.md);
//! `0` turns staging off and leaves every copy to the driver (read once).

use std::ffi::c_void;
use std::sync::OnceLock;

use cudarc::driver::{result, sys};

use super::LEGACY_STREAM as LEGACY;
use super::driver::{driver_error, on_device};
use super::memory::PinnedBuffer;
use super::transfer::is_pageable;
use crate::error::Result;

/// Copies smaller than this go straight to the driver.
const MIN_BYTES: usize = 4 << 20;
const DEFAULT_CHUNK: usize = 32 << 20;
/// The CPU side of a chunk is split in pieces of this size across cores.
const PIECE: usize = 1 << 20;

fn chunk_bytes() -> usize {
    static CHUNK: OnceLock<usize> = OnceLock::new();
    *CHUNK.get_or_init(|| {
        std::env::var("DLBRIDGE_STAGING_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(DEFAULT_CHUNK, |m| m << 20)
    })
}

/// Whether a copy of `bytes` to or from host memory at `host` is staged.
pub(super) fn wanted(host: *const c_void, bytes: usize) -> bool {
    bytes >= MIN_BYTES && chunk_bytes() > 0 && is_pageable(host)
}

/// Two pinned chunks and an event for each, marking when the DMA that uses
/// the chunk is done. Dropping it waits for DMA still in flight, then hands
/// the chunks back to the pinned cache.
struct Pipeline {
    chunks: [Option<PinnedBuffer>; 2],
    events: [sys::CUevent; 2],
    busy: [bool; 2],
    size: usize,
}

impl Pipeline {
    /// For a copy of `bytes`, in the current context (the events belong to it).
    fn new(device: i32, bytes: usize) -> Result<Pipeline> {
        let size = chunk_bytes().min((bytes / 4).next_multiple_of(PIECE).max(2 * PIECE));
        let chunk = || PinnedBuffer::new(size, Some(device));
        let chunks = [Some(chunk()?), Some(chunk()?)];
        let event = || {
            result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                .map_err(|e| driver_error("cuEventCreate", e))
        };
        let first = event()?;
        let second = match event() {
            Ok(e) => e,
            Err(err) => {
                // SAFETY: created above, used by nothing.
                unsafe { result::event::destroy(first) }.ok();
                return Err(err);
            }
        };
        Ok(Pipeline { chunks, events: [first, second], busy: [false; 2], size })
    }

    fn chunk(&self, which: usize) -> *mut u8 {
        self.chunks[which].as_ref().map_or(std::ptr::null_mut(), |b| b.ptr().cast())
    }

    /// Waits until the DMA using chunk `which` is done.
    fn wait(&mut self, which: usize) -> Result<()> {
        if self.busy[which] {
            // SAFETY: an event of this pipeline, recorded on the stream.
            unsafe { result::event::synchronize(self.events[which]) }
                .map_err(|e| driver_error("cuEventSynchronize", e))?;
            self.busy[which] = false;
        }
        Ok(())
    }

    /// Marks chunk `which` as in use by the DMA just queued.
    fn queued(&mut self, which: usize) -> Result<()> {
        // SAFETY: an event of this pipeline, on the legacy stream of the
        // current context.
        unsafe { result::event::record(self.events[which], LEGACY as sys::CUstream) }
            .map_err(|e| driver_error("cuEventRecord", e))?;
        self.busy[which] = true;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.wait(0)?;
        self.wait(1)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let mut idle = true;
        for which in 0..2 {
            // A failed copy may leave DMA in flight: the chunk must not be reused before it ends.
            idle &= self.wait(which).is_ok();
            // SAFETY: created by `new`, destroyed once here.
            unsafe { result::event::destroy(self.events[which]) }.ok();
        }
        for chunk in self.chunks.iter_mut().filter_map(Option::take) {
            if idle {
                chunk.recycle_idle(); // waited for above: no copy uses it
            } else {
                std::mem::forget(chunk); // DMA may still use it: never reused, never freed
            }
        }
    }
}

/// `len` bytes from `src` to `dst`, spread over the thread pool.
///
/// # Safety
/// `src` readable and `dst` writable for `len` bytes, not overlapping.
unsafe fn spread_copy(dst: *mut u8, src: *const u8, len: usize) {
    if len <= PIECE {
        // SAFETY: by contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    }
    let (dst, src) = (dst as usize, src as usize);
    crate::parallel::for_each(len.div_ceil(PIECE), |piece| {
        let at = piece * PIECE;
        // SAFETY: each piece is a disjoint part of the ranges of the contract.
        unsafe { std::ptr::copy_nonoverlapping((src + at) as *const u8, (dst + at) as *mut u8, PIECE.min(len - at)) };
    });
}

/// Pageable host memory to `device`, synchronous.
///
/// # Safety
/// `src` readable and `dst` (on `device`) writable for `bytes` bytes.
pub(super) unsafe fn htod(device: i32, dst: *mut c_void, src: *const c_void, bytes: usize) -> Result<()> {
    on_device(device, |_| {
        let mut p = Pipeline::new(device, bytes)?;
        for (k, at) in (0..bytes).step_by(p.size).enumerate() {
            let (which, len) = (k % 2, p.size.min(bytes - at));
            p.wait(which)?;
            // SAFETY: `at + len <= bytes`; the chunk holds `size >= len` bytes
            // and no DMA uses it (waited above).
            let staged = unsafe {
                spread_copy(p.chunk(which), src.cast::<u8>().add(at), len);
                std::slice::from_raw_parts(p.chunk(which), len)
            };
            // SAFETY: `dst + at` is writable for `len` bytes by contract; the
            // chunk stays untouched until its event has fired.
            unsafe { result::memcpy_htod_async(dst as sys::CUdeviceptr + at as u64, staged, LEGACY as sys::CUstream) }
                .map_err(|e| driver_error("cuMemcpyHtoDAsync", e))?;
            p.queued(which)?;
        }
        p.finish()
    })
}

/// `device` to pageable host memory, synchronous.
///
/// # Safety
/// `src` (on `device`) readable and `dst` writable for `bytes` bytes.
pub(super) unsafe fn dtoh(device: i32, dst: *mut c_void, src: *const c_void, bytes: usize) -> Result<()> {
    on_device(device, |_| {
        let mut p = Pipeline::new(device, bytes)?;
        let size = p.size;
        let count = bytes.div_ceil(size);
        let fetch = |p: &mut Pipeline, k: usize| -> Result<()> {
            let (at, which) = (k * size, k % 2);
            // SAFETY: the chunk holds `size` bytes and is idle (its previous
            // DMA was waited for and drained); `src + at` is readable for
            // the length by contract.
            unsafe {
                let staged = std::slice::from_raw_parts_mut(p.chunk(which), size.min(bytes - at));
                result::memcpy_dtoh_async(staged, src as sys::CUdeviceptr + at as u64, LEGACY as sys::CUstream)
            }
            .map_err(|e| driver_error("cuMemcpyDtoHAsync", e))?;
            p.queued(which)
        };
        for k in 0..count.min(2) {
            fetch(&mut p, k)?;
        }
        for k in 0..count {
            let (at, which) = (k * size, k % 2);
            p.wait(which)?;
            // SAFETY: the chunk holds this part, landed (waited above); `dst +
            // at` is writable for it by contract.
            unsafe { spread_copy(dst.cast::<u8>().add(at), p.chunk(which), size.min(bytes - at)) };
            if k + 2 < count {
                fetch(&mut p, k + 2)?;
            }
        }
        p.finish()
    })
}
