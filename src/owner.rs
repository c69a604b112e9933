//! Who keeps a tensor's memory alive. Each `Owner` lives in the block of
//! one tensor view; other views of the same memory hold that view
//! (`Owner::Parent`). Dropping the last holder frees the buffer or runs the
//! foreign release exactly once.

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
    /// CUDA device memory of ours (freed by its Drop, on its device).
    /// Boxed, as is `Pinned`: their stream bookkeeping would otherwise make
    /// every owner (which each import moves into a view's block) three
    /// times as large.
    #[cfg(feature = "cuda")]
    Device(#[allow(dead_code)] Box<crate::cuda::DeviceBuffer>),
    /// Pinned host memory of ours (freed by its Drop).
    #[cfg(feature = "cuda")]
    Pinned(#[allow(dead_code)] Box<crate::cuda::PinnedBuffer>),
    /// Another view's memory: that tensor (which has an owner of its own
    /// kind) stays alive as long as this one.
    Parent(#[allow(dead_code)] crate::tensor::Tensor),
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
            Owner::Host(_) | Owner::Parent(_) => {}
            #[cfg(feature = "cuda")]
            Owner::Device(_) | Owner::Pinned(_) => {}
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

/// Buffers from this size on are mapped directly, aligned to 2 MiB and
/// marked for transparent huge pages (as NumPy does): one page fault per
/// 2 MiB instead of per 4 KiB when they are first written.
const HUGE_THRESHOLD: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// A host allocation aligned to [`ALIGNMENT`] (2 MiB when large).
pub(crate) struct HostBuffer {
    block: NonNull<c_void>,
    data: NonNull<u8>,
    /// Bytes mapped with mmap; 0 for a malloc/calloc block.
    mapped: usize,
}

impl HostBuffer {
    /// `len` zero bytes (at least one is allocated, so `data` is never NULL).
    /// Small buffers come from `calloc`, large ones from fresh zero pages.
    pub(crate) fn zeroed(len: usize) -> Result<HostBuffer> {
        HostBuffer::new(len, true)
    }

    /// `len` bytes of unspecified content, for outputs that are written in
    /// full (copies): no zeroing, and reused heap memory for small sizes.
    pub(crate) fn uninit(len: usize) -> Result<HostBuffer> {
        HostBuffer::new(len, false)
    }

    fn new(len: usize, zero: bool) -> Result<HostBuffer> {
        if len >= HUGE_THRESHOLD {
            return HostBuffer::mapped(len);
        }
        let total = len.max(1) + ALIGNMENT - 1;
        // SAFETY: calloc/malloc have no preconditions; NULL is handled below.
        let raw = unsafe { if zero { libc::calloc(total, 1) } else { libc::malloc(total) } };
        let Some(block) = NonNull::new(raw) else {
            bail!(OutOfMemory, "out of memory allocating {len} bytes");
        };
        let base = block.as_ptr().cast::<u8>();
        // SAFETY: the aligned start lies inside the block of `total` bytes.
        let data = unsafe { NonNull::new_unchecked(base.add(base.align_offset(ALIGNMENT))) };
        Ok(HostBuffer { block, data, mapped: 0 })
    }

    fn mapped(len: usize) -> Result<HostBuffer> {
        let Some(total) = len.checked_add(HUGE_PAGE) else {
            bail!(OutOfMemory, "cannot allocate {len} bytes");
        };
        // SAFETY: an anonymous private mapping; failure is checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            bail!(OutOfMemory, "out of memory mapping {len} bytes");
        }
        let base = raw.cast::<u8>();
        let start = base.align_offset(HUGE_PAGE);
        // SAFETY: `start + len <= total`: the range lies in the mapping. The
        // advice is only a hint; its failure (THP off) changes nothing.
        let data = unsafe {
            libc::madvise(base.add(start).cast(), len, libc::MADV_HUGEPAGE);
            NonNull::new_unchecked(base.add(start))
        };
        // SAFETY: mmap never returns NULL on success.
        let block = unsafe { NonNull::new_unchecked(raw) };
        Ok(HostBuffer { block, data, mapped: total })
    }

    /// The aligned start.
    pub(crate) fn data(&self) -> *mut u8 {
        self.data.as_ptr()
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: `block` came from mmap (of `mapped` bytes) or from
        // calloc/malloc, and is released only here.
        unsafe {
            if self.mapped > 0 {
                libc::munmap(self.block.as_ptr(), self.mapped);
            } else {
                libc::free(self.block.as_ptr());
            }
        }
    }
}
