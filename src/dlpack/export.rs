//! DLPack producer: a `Tensor` becomes a managed tensor, made in the export
//! room of the view's own block when it is free (the first export of a
//! view: no allocation; see `Tensor::claim_slot`), else in a heap block of
//! its own that holds the managed struct, a reference to the tensor (which
//! keeps the memory alive) and the shape and strides the struct points
//! at. Either way the shape and strides are the export's own copy.

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr::NonNull;

use dlpark::ffi::{DLManagedTensor, DLManagedTensorVersioned, DLTensor};

use super::ManagedAbi;
use crate::error::{Result, bail};
use crate::tensor::{ExportSlot, Flags, Tensor};

/// The block behind every managed tensor we produce: the managed struct
/// first (so a pointer to it is a pointer to the block), the tensor whose
/// memory it keeps alive, then `2 * ndim` values: the shape and strides the
/// managed struct points at. They are the export's own copy, so whatever a
/// holder writes there cannot reach the tensor, and an import that gets the
/// block back can tell whether anything changed.
#[repr(C)]
pub(crate) struct Exported<M> {
    managed: M,
    tensor: Tensor,
    /// Dimensions, as exported (the struct's `ndim` may be overwritten).
    ndim: usize,
}

#[inline(always)]
fn block_layout<M>(ndim: usize) -> Layout {
    debug_assert!(ndim <= crate::layout::MAX_NDIM);
    let size = size_of::<Exported<M>>() + 2 * ndim * size_of::<i64>();
    // SAFETY: a power-of-two alignment; a tensor has at most 64 dimensions,
    // so the size is far below isize::MAX.
    unsafe { Layout::from_size_align_unchecked(size, align_of::<Exported<M>>()) }
}

/// The shape and strides stored after the block's header.
///
/// # Safety
/// `block` must be a live block from [`export`].
unsafe fn dims<M>(block: *mut Exported<M>) -> *mut i64 {
    // SAFETY: the values start right after the header, inside the allocation
    // (the header's size is a multiple of its 8-byte alignment).
    unsafe { block.cast::<u8>().add(size_of::<Exported<M>>()).cast::<i64>() }
}

/// Whether `mt` is one of our exports coming back, so an import can take
/// its view instead of stacking another layer on each round trip. Our
/// exports point `manager_ctx` at themselves and carry one of our deleters
/// (which says where the export lives): a consumer that copies the struct
/// elsewhere (and perhaps puts in its own deleter, which DLPack allows:
/// `manager_ctx` is opaque) fails the address test, so its tensor is
/// treated as foreign and its deleter runs.
pub(crate) fn is_ours<M: ManagedAbi>(mt: NonNull<M>) -> bool {
    // SAFETY: the caller holds a live managed tensor.
    let m = unsafe { mt.as_ref() };
    m.manager_ctx() == mt.as_ptr().cast::<c_void>()
        && m.deleter()
            .is_some_and(|d| std::ptr::fn_addr_eq(d, M::EXPORT_DELETER) || std::ptr::fn_addr_eq(d, M::SLOT_DELETER))
}

/// Whether our export `mt` lives in its view's slot (not a block of its own).
fn in_slot<M: ManagedAbi>(m: &M) -> bool {
    m.deleter().is_some_and(|d| std::ptr::fn_addr_eq(d, M::SLOT_DELETER))
}

/// The deleter of our versioned exports (see [`delete`]).
///
/// # Safety
/// As for [`delete`].
pub(crate) unsafe extern "C" fn delete_versioned(mt: *mut DLManagedTensorVersioned) {
    // SAFETY: forwarded contract.
    unsafe { delete(mt) }
}

/// The deleter of our legacy exports (see [`delete`]).
///
/// # Safety
/// As for [`delete`].
pub(crate) unsafe extern "C" fn delete_legacy(mt: *mut DLManagedTensor) {
    // SAFETY: forwarded contract.
    unsafe { delete(mt) }
}

/// The deleter of our versioned exports made in a view's slot (see [`vacate`]).
///
/// # Safety
/// As for [`vacate`].
pub(crate) unsafe extern "C" fn vacate_versioned(mt: *mut DLManagedTensorVersioned) {
    // SAFETY: forwarded contract.
    unsafe { vacate(mt) }
}

/// The deleter of our legacy exports made in a view's slot (see [`vacate`]).
///
/// # Safety
/// As for [`vacate`].
pub(crate) unsafe extern "C" fn vacate_legacy(mt: *mut DLManagedTensor) {
    // SAFETY: forwarded contract.
    unsafe { vacate(mt) }
}

/// Ends an export made in its view's slot: the slot is free again, and the
/// view is freed if nothing else holds it.
///
/// # Safety
/// `mt` must be a slot export this module produced, not yet deleted.
/// Called from C: a panic while freeing is caught, as in [`delete`].
unsafe fn vacate<M>(mt: *mut M) {
    if let Some(slot) = NonNull::new(mt.cast::<ExportSlot>()) {
        // SAFETY: by contract, a claimed slot, given up once.
        let _ = std::panic::catch_unwind(|| unsafe { Tensor::release_slot(slot) });
    }
}

/// Frees an export's block, which drops the tensor's hold on its memory.
///
/// # Safety
/// `mt` must be a pointer this module produced, not yet deleted.
/// Called from C: a panic while dropping (none is expected; a CUDA driver
/// lacking a symbol would be one) is caught, never unwound into the caller,
/// and the block is freed all the same.
unsafe fn delete<M: ManagedAbi>(mt: *mut M) {
    if !mt.is_null() {
        let block = mt.cast::<Exported<M>>();
        // SAFETY: by contract, a live block; its tensor is dropped once, here
        // (a panic in the drop leaves it dropped as far as it got).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            std::ptr::drop_in_place(&raw mut (*block).tensor)
        }));
        // SAFETY: the block's layout is read from its header, freed once.
        unsafe { crate::block::release(block.cast(), block_layout::<M>((*block).ndim)) };
    }
}

/// Takes one of our exports back: its tensor when the managed struct and
/// its shape/strides are exactly as exported (then nothing needs checking
/// again), or, when a holder changed them, a new view of the same memory
/// made from the fields as they are now, validated like any foreign tensor.
/// The block is freed either way.
///
/// # Safety
/// `mt` must be a live block from this module whose ownership passes here.
pub(crate) unsafe fn reclaim<M: ManagedAbi>(mt: NonNull<M>) -> Result<Tensor> {
    // SAFETY: the block is live.
    let managed = unsafe { mt.as_ref() };
    let slot = in_slot(managed).then(|| mt.cast::<ExportSlot>());
    let block = mt.as_ptr().cast::<Exported<M>>();
    // SAFETY: a live export (the caller's contract): a claimed slot, or a
    // block of `ndim` dimensions; `2 * ndim` values follow either.
    let (tensor, dims) = unsafe {
        match slot {
            Some(slot) => Tensor::slot_view(slot),
            None => (Tensor::borrow_raw((*block).tensor.as_raw()), dims(block)),
        }
    };
    let ndim = tensor.ndim();
    // SAFETY: `2 * ndim` values, as exported.
    let (shape, strides) = unsafe { std::slice::from_raw_parts(dims, 2 * ndim).split_at(ndim) };
    let (now, then) = (managed.dl_tensor(), tensor.dltensor());
    let unchanged = now.data == then.data
        && now.device == then.device
        && now.dtype == then.dtype
        && now.ndim == then.ndim
        && now.byte_offset == then.byte_offset
        && std::ptr::eq(now.shape, shape.as_ptr())
        && std::ptr::eq(now.strides, strides.as_ptr())
        && managed.flags() == managed.version().map_or(0, |_| tensor.flags().0)
        && shape == tensor.shape()
        && strides == tensor.strides();
    if unchanged {
        // SAFETY: the export's share of the memory becomes the tensor
        // returned, once; the export is not used again.
        unsafe {
            return Ok(match slot {
                Some(slot) => Tensor::slot_into_tensor(slot),
                None => {
                    let tensor = std::ptr::read(&raw const (*block).tensor);
                    crate::block::release(block.cast(), block_layout::<M>(ndim));
                    tensor
                }
            });
        }
    }
    // SAFETY: the fields point into the export or to memory the holder vouches for.
    let made = unsafe { super::import::raw_view(managed) }.and_then(|raw| tensor.derive(&raw));
    // SAFETY: the export is ours to end, once.
    unsafe {
        match slot {
            Some(_) => vacate(mt.as_ptr()),
            None => delete(mt.as_ptr()),
        }
    }
    made
}

fn export<M: ManagedAbi>(tensor: &Tensor) -> *mut M {
    const { assert!(size_of::<M>() <= size_of::<ExportSlot>() && align_of::<M>() <= align_of::<ExportSlot>()) };
    let ndim = tensor.ndim();
    let (mt, dims, deleter) = match tensor.claim_slot() {
        Some((slot, dims)) => (slot.as_ptr().cast::<M>(), dims, M::SLOT_DELETER),
        None => {
            let block = crate::block::allocate(block_layout::<M>(ndim)).cast::<Exported<M>>();
            // SAFETY: a fresh block of the right size; the managed struct is
            // written below.
            unsafe {
                (&raw mut (*block).ndim).write(ndim);
                (&raw mut (*block).tensor).write(tensor.clone());
                (block.cast::<M>(), dims(block), M::EXPORT_DELETER)
            }
        }
    };
    // SAFETY: `mt` has room for an `M` and `dims` for `2 * ndim` values, all
    // written before the export is handed out; the struct points at them.
    unsafe {
        crate::layout::copy_dims(tensor.shape(), dims);
        crate::layout::copy_dims(tensor.strides(), dims.add(ndim));
        let dl = DLTensor { shape: dims, strides: dims.add(ndim), ..tensor.dltensor() };
        mt.write(M::new(dl, tensor.flags().0, mt.cast(), deleter));
    }
    mt
}

/// Exports as a `DLManagedTensorVersioned`, zero copy: strides always
/// filled, byte offset folded into `data` (for devices with addresses),
/// READ_ONLY / IS_COPIED / padding flags carried. The consumer owns the
/// result and must call its deleter once; it holds a share of the memory.
pub fn to_versioned(tensor: &Tensor) -> *mut DLManagedTensorVersioned {
    export(tensor)
}

/// Exports as a legacy `DLManagedTensor`. A read-only tensor is refused:
/// the legacy ABI cannot say "read-only", and a consumer would write. A
/// legacy import (read-only only because its producer could not say) may
/// leave this way again.
pub fn to_legacy(tensor: &Tensor) -> Result<*mut DLManagedTensor> {
    if tensor.is_readonly() && !tensor.is_writability_unknown() {
        bail!(
            ReadOnly,
            "a read-only tensor cannot be exported as a legacy DLManagedTensor (it has no read-only flag); use the versioned export"
        );
    }
    if tensor.flags().contains(Flags::SUBBYTE_PADDED) {
        bail!(
            UnsupportedFlags,
            "padded sub-byte data cannot be exported as a legacy DLManagedTensor (it has no flags)"
        );
    }
    Ok(export(tensor))
}
