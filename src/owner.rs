//! Who keeps a tensor's memory alive. One `Owner` is shared (through an
//! `Arc`) by every view, handle and export of the same memory; dropping the
//! last one frees the buffer or runs the foreign release exactly once.

use std::ffi::c_void;
use std::ptr::NonNull;

use dlpark::ffi::{DLManagedTensor, DLManagedTensorVersioned};

use crate::error::{Result, bail};

/// Alignment of buffers this library allocates (DLPack asks for 256).
pub const ALIGNMENT: usize = 256;

/// A release callback for borrowed memory: called once with its context.
pub type ReleaseFn = unsafe extern "C" fn(ctx: *mut c_void);

/// The keeper of one block of memory.
pub(crate) enum Owner {
    /// A zero-filled, 256-byte aligned host buffer of ours (freed by its Drop).
    Host(#[allow(dead_code)] HostBuffer),
    /// Memory lent by the caller; `release(ctx)` runs when the last holder
    /// is gone.
    Borrowed { release: Option<ReleaseFn>, ctx: *mut c_void },
    /// A foreign DLPack tensor; its deleter runs when the last holder is gone.
    Versioned(NonNull<DLManagedTensorVersioned>),
    /// A foreign legacy DLPack tensor.
    Legacy(NonNull<DLManagedTensor>),
}

// SAFETY: the data pointers are never dereferenced through `Owner`; it only
// frees. DLPack lets a deleter run on any thread, and `dlb_tensor_wrap`
// documents that `release` may too. `HostBuffer` is plain heap memory.
unsafe impl Send for Owner {}
// SAFETY: `Owner` has no interior mutability; shared references do nothing.
unsafe impl Sync for Owner {}

impl Drop for Owner {
    fn drop(&mut self) {
        match self {
            Owner::Host(_) => {}
            Owner::Borrowed { release, ctx } => {
                if let Some(release) = release {
                    // SAFETY: the caller of `wrap` handed us this pair to call once;
                    // `drop` runs once.
                    unsafe { release(*ctx) }
                }
            }
            Owner::Versioned(mt) => {
                // SAFETY: ownership of `mt` passed to us on import; the deleter is
                // read from the struct it frees and called exactly once, here.
                unsafe {
                    if let Some(deleter) = mt.as_ref().deleter {
                        deleter(mt.as_ptr())
                    }
                }
            }
            Owner::Legacy(mt) => {
                // SAFETY: as for `Versioned`.
                unsafe {
                    if let Some(deleter) = mt.as_ref().deleter {
                        deleter(mt.as_ptr())
                    }
                }
            }
        }
    }
}

/// A zero-filled host allocation aligned to [`ALIGNMENT`].
///
/// Made with `calloc`, so large buffers come straight from fresh zero pages
/// (no memset), then aligned up inside the block.
pub(crate) struct HostBuffer {
    block: NonNull<c_void>,
    data: NonNull<u8>,
}

impl HostBuffer {
    /// `len` zero bytes (at least one is allocated, so `data` is never NULL).
    pub(crate) fn zeroed(len: usize) -> Result<HostBuffer> {
        let Some(total) = len.max(1).checked_add(ALIGNMENT - 1) else {
            bail!(OutOfMemory, "cannot allocate {len} bytes");
        };
        // SAFETY: calloc has no preconditions; NULL is handled below.
        let Some(block) = NonNull::new(unsafe { libc::calloc(total, 1) }) else {
            bail!(OutOfMemory, "out of memory allocating {len} bytes");
        };
        let base = block.as_ptr().cast::<u8>();
        let data = base.wrapping_add(base.align_offset(ALIGNMENT));
        // SAFETY: `data` lies inside the block of `total` bytes, so it is non-NULL.
        let data = unsafe { NonNull::new_unchecked(data) };
        Ok(HostBuffer { block, data })
    }

    /// The aligned start.
    pub(crate) fn data(&self) -> *mut u8 {
        self.data.as_ptr()
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: `block` came from calloc and is freed only here.
        unsafe { libc::free(self.block.as_ptr()) }
    }
}
