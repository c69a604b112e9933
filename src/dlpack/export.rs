//! DLPack producer: a `Tensor` becomes a managed tensor in one heap block
//! that holds the managed struct and a clone of the tensor (so shape and
//! strides live inline with it and the memory's owner stays alive).

use std::ffi::c_void;

use dlpark::ffi::{DLManagedTensor, DLManagedTensorVersioned};

use super::ManagedAbi;
use crate::error::{Result, bail};
use crate::tensor::{Flags, Tensor};

/// The block behind every managed tensor we produce. `managed` comes first,
/// so a pointer to it is a pointer to the block.
#[repr(C)]
pub(crate) struct Exported<M> {
    pub(crate) managed: M,
    pub(crate) tensor: Tensor,
}

/// Our exports' `manager_ctx`: the address of a private static, so an
/// import can tell our own tensors coming back from foreign ones (and reuse
/// their owner instead of stacking another layer on each round trip).
static MARKER: u8 = 0;

pub(crate) fn marker() -> *mut c_void {
    (&raw const MARKER).cast_mut().cast()
}

/// The deleter of every tensor we export: frees the block, which drops the
/// tensor's hold on its memory.
///
/// # Safety
/// `mt` must be a pointer this module produced, not yet deleted.
pub(crate) unsafe extern "C" fn delete<M: ManagedAbi>(mt: *mut M) {
    if !mt.is_null() {
        // SAFETY: by contract `mt` is the first field of a live `Box<Exported<M>>`.
        drop(unsafe { Box::from_raw(mt.cast::<Exported<M>>()) });
    }
}

fn export<M: ManagedAbi>(tensor: Tensor) -> *mut M {
    let flags = tensor.flags().0;
    // Built in place: the tensor is moved once, into the heap block, and the
    // managed struct then points at its shape/strides there (the block never
    // moves again).
    let mut block = Box::<Exported<M>>::new_uninit();
    let raw = block.as_mut_ptr();
    // SAFETY: both fields are written before the block is assumed initialised.
    unsafe {
        (&raw mut (*raw).tensor).write(tensor);
        let dl = (*raw).tensor.dltensor();
        (&raw mut (*raw).managed).write(M::new(dl, flags, delete::<M>));
        Box::into_raw(block.assume_init()).cast::<M>()
    }
}

/// Exports as a `DLManagedTensorVersioned`, zero copy: strides always
/// filled, byte offset folded into `data` (for devices with addresses),
/// READ_ONLY / IS_COPIED / padding flags carried. The consumer owns the
/// result and must call its deleter once.
pub fn to_versioned(tensor: Tensor) -> *mut DLManagedTensorVersioned {
    export(tensor)
}

/// Exports as a legacy `DLManagedTensor`. A read-only tensor is refused:
/// the legacy ABI cannot say "read-only", and a consumer would write.
pub fn to_legacy(tensor: Tensor) -> Result<*mut DLManagedTensor> {
    if tensor.flags().contains(Flags::READ_ONLY) {
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
