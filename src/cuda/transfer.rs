//! Copies and stream handoffs. Every copy here is synchronous: it is queued
//! on the legacy default stream of the device's context (so after the work
//! already queued there, and on every blocking stream) and the stream is
//! synchronised before the call returns, whatever the memory kinds (the
//! driver's own "synchronous" copies return early for pageable host to
//! device copies and device to device copies).

use std::ffi::c_void;

use cudarc::driver::{result, sys};

use super::LEGACY_STREAM as LEGACY;
use super::driver::{self, driver_error, on_device};
use crate::Device;
use crate::error::{Result, bail};
use crate::layout::Rows;

fn legacy() -> sys::CUstream {
    LEGACY as sys::CUstream
}

/// Waits for the legacy stream of the current context.
fn finish(what: &str) -> Result<()> {
    // SAFETY: the legacy stream of the current context.
    unsafe { result::stream::synchronize(legacy()) }.map_err(|e| driver_error(what, e))
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
    on_device(device, |_| {
        // SAFETY: by contract.
        let src = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), bytes) };
        // SAFETY: by contract; the stream is waited for before `src` goes.
        unsafe { result::memcpy_htod_async(dst as sys::CUdeviceptr, src, legacy()) }
            .map_err(|e| driver_error("cuMemcpyHtoDAsync", e))?;
        finish("host to device copy")
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
    on_device(device, |_| {
        // SAFETY: by contract.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), bytes) };
        // SAFETY: by contract; the stream is waited for before `dst` is used.
        unsafe { result::memcpy_dtoh_async(dst, src as sys::CUdeviceptr, legacy()) }
            .map_err(|e| driver_error("cuMemcpyDtoHAsync", e))?;
        finish("device to host copy")
    })
}

/// Device to device (same or another device), synchronous. A copy from
/// another device first waits (on the device) for the work queued on the
/// source device's legacy stream, which may still be writing the source.
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
    let (dst, src) = (dst as sys::CUdeviceptr, src as sys::CUdeviceptr);
    if dst_device == src_device {
        return on_device(dst_device, |_| {
            // SAFETY: by contract.
            unsafe { result::memcpy_dtod_async(dst, src, bytes, legacy()) }
                .map_err(|e| driver_error("cuMemcpyDtoDAsync", e))?;
            finish("device to device copy")
        });
    }
    let src_ctx = driver::primary(src_device)?;
    on_device(dst_device, |_| {
        let dst_ctx = driver::primary(dst_device)?;
        driver::order_from(LEGACY, src_ctx, LEGACY)?;
        // SAFETY: by contract; both contexts are retained primary contexts.
        unsafe { result::memcpy_peer_async(dst_ctx, dst, src_ctx, src, bytes, legacy()) }
            .map_err(|e| driver_error("cuMemcpyPeerAsync", e))?;
        finish("peer copy")
    })
}

/// Gathers strided device memory laid out as `rows` into compact memory
/// on the same device (one `cuMemcpy2DAsync` per block), synchronous.
///
/// # Safety
/// Every row of `rows` from `src` readable, and `dst` writable for the
/// compact size, on `device`.
pub(crate) unsafe fn copy_rows(device: i32, dst: *mut c_void, src: *const c_void, rows: &Rows) -> Result<()> {
    on_device(device, |_| {
        if rows.height == 1 {
            // Blocks of one row: plain copies (a row may be wider than the
            // largest pitch a 2-D copy takes).
            for (k, offset) in rows.offsets().enumerate() {
                let from = (src as sys::CUdeviceptr).wrapping_add_signed(offset);
                let to = dst as sys::CUdeviceptr + (k * rows.width) as u64;
                // SAFETY: as below, one row per block.
                unsafe { result::memcpy_dtod_async(to, from, rows.width, legacy()) }
                    .map_err(|e| driver_error("cuMemcpyDtoDAsync", e))?;
            }
            return finish("strided device copy");
        }
        for (k, offset) in rows.offsets().enumerate() {
            // SAFETY: plain-old-data; the fields that matter are set below.
            let mut copy: sys::CUDA_MEMCPY2D = unsafe { std::mem::zeroed() };
            copy.srcMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE;
            copy.srcDevice = (src as sys::CUdeviceptr).wrapping_add_signed(offset);
            copy.srcPitch = rows.pitch;
            copy.dstMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE;
            copy.dstDevice = dst as sys::CUdeviceptr + (k * rows.height * rows.width) as u64;
            copy.dstPitch = rows.width;
            copy.WidthInBytes = rows.width;
            copy.Height = rows.height;
            // SAFETY: the rows lie in the source's validated extent, the
            // destination holds every block back to back (by contract).
            unsafe { sys::cuMemcpy2DAsync_v2(&raw const copy, legacy()) }
                .result()
                .map_err(|e| driver_error("cuMemcpy2DAsync", e))?;
        }
        finish("strided device copy")
    })
}

/// Makes work queued on `waiter` wait for the work already queued on
/// `signaller` (an event recorded on one, waited on by the other), on
/// `device`. Stream values as in the DLPack spec: 1 legacy default, 2
/// per-thread default (both of `device`'s context), others a `CUstream`,
/// which may belong to another device (its own context records the
/// event). Returns at once.
pub(crate) fn stream_wait(device: Device, waiter: usize, signaller: usize) -> Result<()> {
    if waiter == 0 || signaller == 0 {
        bail!(InvalidArgument, "stream 0 is ambiguous: use 1 (legacy default) or 2 (per-thread default)");
    }
    if waiter == signaller {
        return Ok(());
    }
    if signaller > 2 && driver::is_capturing(signaller) {
        bail!(
            InvalidArgument,
            "stream {signaller:#x} is capturing a CUDA graph: its work has not run, nothing can wait for it"
        );
    }
    on_device(device.id(), |_| {
        if waiter > 2 && driver::is_capturing(waiter) {
            // A capture cannot wait on an event recorded outside it: the
            // signaller's work is waited for here, before the capture goes on.
            // SAFETY: the signaller is live by the caller's word.
            return unsafe { result::stream::synchronize(signaller as sys::CUstream) }
                .map_err(|e| driver_error("cuStreamSynchronize (for a capturing consumer)", e));
        }
        let ctx = if signaller <= 2 { driver::primary(device.id())? } else { driver::stream_context(signaller)? };
        driver::order_from(waiter, ctx, signaller)
    })
}

/// Waits until all work queued on `device` (every stream) is done: for
/// memory a producer handed over without saying which stream to wait for.
pub(crate) fn synchronize(device: i32) -> Result<()> {
    on_device(device, |_| result::ctx::synchronize().map_err(|e| driver_error("cuCtxSynchronize", e)))
}

/// Before the CPU reads or writes memory on `device`: managed memory waits
/// for the work ordered on its device's legacy stream (where producers
/// were asked to put theirs), or for the whole device where the CPU may
/// not access managed memory while kernels run; other memory needs nothing. Where this
/// process cannot use CUDA (no driver, a forked child) it has no GPU work
/// to wait for: nothing is done.
pub(crate) fn host_ready(device: Device) -> Result<()> {
    if device.kind() != dlpark::ffi::DLDeviceType::CUDAMANAGED {
        return Ok(());
    }
    let waited = on_device(device.id(), |_| {
        let mut concurrent = 0;
        // SAFETY: one out value for a valid ordinal.
        let known = unsafe {
            sys::cuDeviceGetAttribute(
                &raw mut concurrent,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS,
                device.id(),
            )
        }
        .result()
        .is_ok();
        if known && concurrent != 0 {
            return finish("waiting for managed memory's producer");
        }
        // Without concurrent access (Tegra, Windows, pre-Pascal), the CPU
        // may not touch managed memory while any kernel runs.
        result::ctx::synchronize().map_err(|e| driver_error("cuCtxSynchronize (managed memory)", e))
    });
    match waited {
        Err(e) if e.kind() == crate::error::ErrorKind::CudaUnavailable => Ok(()),
        done => done,
    }
}

/// What the driver knows of an address: its memory type
/// (`CU_MEMORYTYPE_*`, 0 for memory CUDA does not know: pageable host
/// memory) and device ordinal. Never an error for unknown addresses; makes
/// no context.
fn pointer_info(ptr: *const c_void) -> Result<(u32, i32)> {
    if driver::device_count()? == 0 {
        bail!(CudaUnavailable, "no CUDA device (the driver found none): {ptr:p} cannot be CUDA memory");
    }
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
