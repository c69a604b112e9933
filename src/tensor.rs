//! The one internal type: a reference-counted tensor view.
//!
//! Every input (wrapped pointer, DLPack import, array interface) becomes a
//! `Tensor`; every output is made from one. A `Tensor` is one
//! reference-counted block holding the memory's `Owner` and the validated
//! metadata; clones share it.

use std::alloc::Layout;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use dlpark::ffi::{self, DLDataType, DLDevice, DLDeviceType, DLTensor};

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Result, bail};
use crate::layout::{self, Dims};
use crate::owner::{HostBuffer, Owner, ReleaseFn};

/// DLPack flag bits, as in `DLManagedTensorVersioned::flags`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Flags(pub u64);

impl Flags {
    /// Writes are not allowed.
    pub const READ_ONLY: Flags = Flags(ffi::DLPACK_FLAG_BITMASK_READ_ONLY as u64);
    /// The memory is a copy made for this exchange.
    pub const IS_COPIED: Flags = Flags(ffi::DLPACK_FLAG_BITMASK_IS_COPIED as u64);
    /// Sub-byte elements take one byte each instead of being packed.
    pub const SUBBYTE_PADDED: Flags = Flags(ffi::DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED as u64);
    /// Every DLPack bit this library understands.
    pub const KNOWN: Flags = Flags(Self::READ_ONLY.0 | Self::IS_COPIED.0 | Self::SUBBYTE_PADDED.0);
    /// Internal, never exported or accepted from outside: set (with
    /// READ_ONLY) on legacy imports, whose ABI cannot say whether the memory
    /// may be written. Such a tensor is read-only everywhere, except that it
    /// may leave again as a legacy tensor: legacy in, legacy out loses
    /// nothing the producer said.
    pub const WRITABILITY_UNKNOWN: Flags = Flags(1 << 63);

    /// DLPack flags from outside: unknown bits (and internal ones) refused.
    pub fn from_dlpack(bits: u64) -> Result<Flags> {
        if bits & !Flags::KNOWN.0 != 0 {
            bail!(UnsupportedFlags, "unknown DLPack flag bits {:#x}", bits & !Flags::KNOWN.0);
        }
        Ok(Flags(bits))
    }

    /// Whether all bits of `other` are set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitAnd for Flags {
    type Output = Flags;
    fn bitand(self, rhs: Flags) -> Flags {
        Flags(self.0 & rhs.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// A tensor description as it arrives from outside, not yet trusted.
#[derive(Clone, Copy, Debug)]
pub struct RawView<'a> {
    /// Data pointer (or device handle); NULL only for tensors without elements.
    pub data: *mut c_void,
    /// Device.
    pub device: DLDevice,
    /// Element type.
    pub dtype: DLDataType,
    /// Dimensions.
    pub shape: &'a [i64],
    /// Strides in elements; `None` = compact row-major.
    pub strides: Option<&'a [i64]>,
    /// Bytes from `data` to the first element.
    pub byte_offset: u64,
    /// DLPack flag bits.
    pub flags: u64,
}

/// Validated metadata of a view, but for its dimensions, which live in
/// the tensor's block right after its header (see [`Tensor`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    data: *mut c_void,
    byte_offset: u64,
    dtype: DType,
    device: Device,
    flags: Flags,
    numel: u64,
    ndim: usize,
}

impl RawView<'_> {
    /// Checks everything a consumer must check before touching foreign
    /// memory: device, dtype, flags, dimensions, element count, strides,
    /// byte extent and address arithmetic, NULL data. Returns the metadata
    /// and the shape followed by the strides.
    #[cfg(test)]
    pub(crate) fn validate(&self) -> Result<(Meta, Vec<i64>)> {
        let mut dims = vec![0; 2 * self.shape.len()];
        // SAFETY: room for the shape and the strides.
        let meta = unsafe { self.validate_into(dims.as_mut_ptr()) }?;
        Ok((meta, dims))
    }

    /// As `validate`, writing the shape and then the strides to `dims` (in
    /// the tensor's block, with no copy on the way). On failure `dims` may
    /// have been written in part.
    ///
    /// # Safety
    /// `dims` must be writable for `2 * self.shape.len()` values.
    #[inline(always)]
    unsafe fn validate_into(&self, dims: *mut i64) -> Result<Meta> {
        // SAFETY: forwarded contract.
        if let Some(meta) = unsafe { self.validate_common(dims) } {
            return Ok(meta);
        }
        // SAFETY: forwarded contract.
        unsafe { self.validate_general(dims) }
    }

    /// The common case in one pass (what every exchange of ordinary data
    /// takes): known flags, a byte-sized dtype, explicit strides, memory with addresses, every product and sum in range.
    /// It checks what [`RawView::validate_general`] checks, fused, copying
    /// each dimension as it goes; None for anything else, including every
    /// error, which the general path then reports.
    ///
    /// # Safety
    /// As for `validate_into`.
    #[inline(always)]
    unsafe fn validate_common(&self, dims: *mut i64) -> Option<Meta> {
        let device = Device::addressable(self.device)?;
        let dtype = DType::common(self.dtype)?;
        let flags = Flags(self.flags);
        let strides = self.strides?;
        let n = self.shape.len();
        if flags.0 & !(Flags::KNOWN.0 | Flags::WRITABILITY_UNKNOWN.0) != 0 || n > layout::MAX_NDIM || strides.len() != n
        {
            return None;
        }
        // Sub-byte types (packed or padded) take the general path.
        let item = i64::from(dtype.raw().bits / 8);
        if item == 0 {
            return None;
        }
        // numel (zero dimensions counted as 1 for the compact size), and the
        // byte extent [lo, hi) of the elements.
        let (mut span, mut empty, mut lo, mut hi) = (1i64, false, 0i64, item);
        for (i, (&d, &s)) in self.shape.iter().zip(strides).enumerate() {
            if d < 0 {
                return None;
            }
            empty |= d == 0;
            span = span.checked_mul(d.max(1))?;
            let step = s.checked_mul(item).filter(|b| *b != i64::MIN)?;
            if d > 0 {
                let reach = (d - 1).checked_mul(step)?;
                if reach < 0 {
                    lo = lo.checked_add(reach)?
                } else {
                    hi = hi.checked_add(reach)?
                }
                hi.checked_sub(lo)?;
            }
            // SAFETY: `i < n`; room for `2 * n` values by contract.
            unsafe { (dims.add(i).write(d), dims.add(n + i).write(s)) };
        }
        // A compact copy must fit in isize bytes.
        span.checked_mul(item).filter(|b| *b <= isize::MAX as i64)?;
        let numel = if empty { 0 } else { span as u64 };
        if numel > 0 {
            if self.data.is_null() {
                return None;
            }
            let first = self.data as usize as i128 + i128::from(self.byte_offset);
            if first + i128::from(lo) < 0 || first + i128::from(hi) > usize::MAX as i128 + 1 {
                return None;
            }
        }
        Some(Meta {
            data: self.data.wrapping_byte_add(self.byte_offset as usize),
            byte_offset: 0,
            dtype,
            device,
            flags,
            numel,
            ndim: n,
        })
    }

    /// Every case, one check at a time, with the error that says what is wrong.
    ///
    /// # Safety
    /// As for `validate_into`.
    unsafe fn validate_general(&self, dims: *mut i64) -> Result<Meta> {
        let device = Device::new(self.device)?;
        let dtype = DType::new(self.dtype)?;
        let flags = Flags(self.flags);
        let allowed = Flags::KNOWN.0 | Flags::WRITABILITY_UNKNOWN.0;
        if flags.0 & !allowed != 0 {
            bail!(UnsupportedFlags, "unknown DLPack flag bits {:#x}", flags.0 & !allowed);
        }
        check_ndim_of(self.shape)?;
        let (numel, span) = layout::sizes(self.shape)?;
        let itemsize = dtype.itemsize(flags.contains(Flags::SUBBYTE_PADDED));
        // A compact copy must be possible, as NumPy requires of every array:
        // the elements (strides of 0 can make the view itself tiny) and the
        // row-major strides (zero dimensions counted as 1) fit in isize bytes.
        let compact = match itemsize {
            Some(size) => span.checked_mul(size as u64).filter(|b| *b <= isize::MAX as u64),
            None => Some(0),
        };
        let Some(compact) = compact else {
            bail!(
                Overflow,
                "shape {:?} of {}-byte elements overflows the address space once compacted",
                self.shape,
                itemsize.unwrap_or(0)
            );
        };
        let (strides, extent) = match (self.strides, itemsize) {
            // Row-major: the compact size bounds every stride and the extent.
            (None, Some(_)) => (
                layout::row_major(self.shape),
                layout::Extent { lo: 0, hi: if numel == 0 { 0 } else { compact as i64 } },
            ),
            (Some(s), Some(size)) => (layout::dims(s), layout::byte_extent(self.shape, s, size, numel)?),
            (s, None) => {
                let strides = s.map_or_else(|| layout::row_major(self.shape), layout::dims);
                if !layout::is_row_major(self.shape, &strides) {
                    bail!(InvalidStrides, "packed {dtype} data must be compact row-major (strides {strides:?})");
                }
                let bytes = layout::packed_bytes(numel, dtype.element_bits())?;
                (strides, layout::Extent { lo: 0, hi: bytes as i64 })
            }
        };
        if numel > 0 && self.data.is_null() {
            bail!(NullData, "data is NULL but the tensor has {numel} elements");
        }
        let (data, byte_offset) = if device.has_addresses() {
            if numel > 0 {
                let first = self.data as usize as i128 + i128::from(self.byte_offset);
                if first + i128::from(extent.lo) < 0 || first + i128::from(extent.hi) > usize::MAX as i128 + 1 {
                    bail!(
                        Overflow,
                        "data {:p} + byte_offset {} + extent overflows the address space",
                        self.data,
                        self.byte_offset
                    );
                }
            }
            (self.data.wrapping_byte_add(self.byte_offset as usize), 0)
        } else {
            if i128::from(self.byte_offset) + i128::from(extent.hi) > u64::MAX as i128 {
                bail!(Overflow, "byte_offset {} + extent overflows 64 bits", self.byte_offset);
            }
            (self.data, self.byte_offset)
        };
        let n = self.shape.len();
        // SAFETY: room for `2 * n` values by contract; `strides` has `n`.
        unsafe {
            layout::copy_dims(self.shape, dims);
            layout::copy_dims(&strides, dims.add(n));
        }
        Ok(Meta { data, byte_offset, dtype, device, flags, numel, ndim: n })
    }
}

/// Refuses more than [`layout::MAX_NDIM`] dimensions.
fn check_ndim_of(shape: &[i64]) -> Result<()> {
    if shape.len() > layout::MAX_NDIM {
        bail!(InvalidNdim, "ndim is {}: must be between 0 and {}", shape.len(), layout::MAX_NDIM);
    }
    Ok(())
}

impl Meta {
    /// The view as a `DLTensor` whose shape and strides are `dims`.
    fn dltensor(&self, dims: *mut i64) -> DLTensor {
        DLTensor {
            data: if self.numel == 0 { std::ptr::null_mut() } else { self.data },
            device: self.device.raw(),
            ndim: self.ndim as i32,
            dtype: self.dtype.raw(),
            shape: dims,
            // SAFETY (of the address): the strides follow the shape's `ndim` values.
            strides: dims.wrapping_add(self.ndim),
            byte_offset: self.byte_offset,
        }
    }
}

/// A view of memory kept alive by its owner: one reference-counted heap
/// block holding the owner, the validated metadata, the view as a
/// `DLTensor` and room for one DLPack export of the view, followed by the
/// shape and then the strides (`ndim` values each), and then the export's
/// own shape and strides. Clones share the block; a handle, an export and
/// a Python object each hold one reference. The count is hand-rolled (as
/// `std::sync::Arc`'s, without the weak count) so that the block is sized
/// for its dimensions and built in place (validation writes them straight
/// into it), comes from the spares of `crate::block`, and can lend its
/// export room (see `Tensor::claim_slot`).
pub struct Tensor(NonNull<Block>);

struct Block {
    /// References, plus [`SLOT_TAKEN`] while an export lives in `slot`.
    count: AtomicUsize,
    inner: Inner,
    slot: ExportSlot,
}

/// Room for one managed DLPack struct of either ABI, in every view's block:
/// the first export of a view is made there, without allocating (see
/// `crate::dlpack::export`).
#[repr(C, align(8))]
pub(crate) struct ExportSlot(MaybeUninit<[u8; SLOT_BYTES]>);

const SLOT_BYTES: usize = {
    let (v, l) = (size_of::<ffi::DLManagedTensorVersioned>(), size_of::<ffi::DLManagedTensor>());
    if v > l { v } else { l }
};

/// The bit of a block's count held by the export in its slot: one share of
/// the memory, as a reference is, taken and given back with the same one
/// atomic instruction a clone and a drop take.
const SLOT_TAKEN: usize = 1 << (usize::BITS - 1);

struct Inner {
    meta: Meta,
    /// The view as a `DLTensor` (`dlb_tensor_dltensor` returns it); it
    /// points into this block, which never moves.
    dl: DLTensor,
    owner: Owner,
    /// Strides in bytes (for the array interface), made on first use.
    byte_strides: OnceLock<Dims>,
}

/// The layout of a block of `ndim` (at most `MAX_NDIM`) dimensions: the
/// header, then the view's shape and strides, then the slot export's.
#[inline(always)]
fn block_layout(ndim: usize) -> Layout {
    debug_assert!(ndim <= layout::MAX_NDIM);
    // SAFETY: the alignment is a power of two, and with at most 64
    // dimensions the size is far below isize::MAX; the header's size is a
    // multiple of its alignment (8), which the values share.
    unsafe { Layout::from_size_align_unchecked(size_of::<Block>() + 4 * ndim * size_of::<i64>(), align_of::<Block>()) }
}

/// Where a block's dimensions start (right after its header).
fn dims_of(block: *mut Block) -> *mut i64 {
    block.cast::<u8>().wrapping_add(size_of::<Block>()).cast::<i64>()
}

// SAFETY: `data` is only an address; `Tensor` never reads or writes through
// it, the owner is Send + Sync, and the count is atomic.
unsafe impl Send for Tensor {}
// SAFETY: as above; the view is immutable and the cache is a `OnceLock`.
unsafe impl Sync for Tensor {}

/// A `Tensor` lent by a raw pointer from [`Tensor::into_raw`], for `'a`.
pub(crate) struct TensorRef<'a> {
    tensor: ManuallyDrop<Tensor>,
    _lent: PhantomData<&'a Tensor>,
}

impl std::ops::Deref for TensorRef<'_> {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.tensor
    }
}

impl Tensor {
    /// A tensor over `raw`'s layout on memory kept alive by the owner
    /// `owner` makes, called only once `raw` passes validation (so a
    /// borrowed memory's release is not called on failure, and an owner
    /// moved into the closure is dropped).
    #[inline]
    pub(crate) fn with_owner(raw: &RawView<'_>, owner: impl FnOnce() -> Owner) -> Result<Tensor> {
        check_ndim_of(raw.shape)?; // before sizing the block by it
        let layout = block_layout(raw.shape.len());
        let block = crate::block::allocate_view(layout).cast::<Block>();
        // SAFETY: the block is ours alone and sized for the dimensions; every
        // field is written before it is shared (on error it is given back
        // unread).
        unsafe {
            let dims = dims_of(block);
            let meta = match raw.validate_into(dims) {
                Ok(meta) => meta,
                Err(e) => {
                    crate::block::release_view(block.cast(), layout);
                    return Err(e);
                }
            };
            let inner = &raw mut (*block).inner;
            (&raw mut (*inner).dl).write(meta.dltensor(dims));
            (&raw mut (*inner).meta).write(meta);
            (&raw mut (*inner).owner).write(owner());
            (&raw mut (*inner).byte_strides).write(OnceLock::new());
            (&raw mut (*block).count).write(AtomicUsize::new(1));
            Ok(Tensor(NonNull::new_unchecked(block)))
        }
    }

    fn inner(&self) -> &Inner {
        // SAFETY: the block lives while this reference does.
        unsafe { &self.0.as_ref().inner }
    }

    /// Another view of the same memory, validated: it keeps this tensor's
    /// memory alive (through the tensor that owns it, so chains never grow).
    pub(crate) fn derive(&self, raw: &RawView<'_>) -> Result<Tensor> {
        let root = match &self.inner().owner {
            Owner::Parent(root) => root.clone(),
            _ => self.clone(),
        };
        Tensor::with_owner(raw, || Owner::Parent(root))
    }

    /// Says that work queued on CUDA `stream` (a `CUstream`; 1 and 2 need
    /// nothing, the legacy stream covers them) may use this tensor's memory:
    /// when the memory is dlbridge's own, its free is ordered after the work
    /// queued there by then. Foreign memory is its producer's business.
    #[cfg(feature = "cuda")]
    pub(crate) fn used_on_stream(&self, stream: usize) {
        let root = match &self.inner().owner {
            Owner::Parent(root) => root,
            _ => self,
        };
        match &root.inner().owner {
            Owner::Device(buffer) => buffer.used_on(stream),
            Owner::Pinned(buffer) => buffer.used_on(stream),
            _ => {}
        }
    }

    /// The tensor as one pointer (for handles), giving up this reference.
    pub(crate) fn into_raw(self) -> *const c_void {
        ManuallyDrop::new(self).0.as_ptr().cast_const().cast()
    }

    /// The pointer [`Tensor::into_raw`] gives, keeping the reference.
    pub(crate) fn as_raw(&self) -> *const c_void {
        self.0.as_ptr().cast_const().cast()
    }

    /// Takes back the reference [`Tensor::into_raw`] gave up.
    ///
    /// # Safety
    /// `p` must come from `into_raw`, and its reference not be taken back before.
    pub(crate) unsafe fn from_raw(p: *const c_void) -> Tensor {
        // SAFETY: by contract, a reference given up by `into_raw` (non-NULL).
        Tensor(unsafe { NonNull::new_unchecked(p.cast_mut().cast::<Block>()) })
    }

    /// Borrows the tensor behind a pointer from `into_raw` without taking
    /// its reference.
    ///
    /// # Safety
    /// `p` must come from `into_raw` and its reference stay held for `'a`.
    pub(crate) unsafe fn borrow_raw<'a>(p: *const c_void) -> TensorRef<'a> {
        // SAFETY: by contract; `ManuallyDrop` keeps the reference where it is.
        TensorRef { tensor: ManuallyDrop::new(unsafe { Tensor::from_raw(p) }), _lent: PhantomData }
    }

    /// Claims the export room in this view's block, and with it a share of
    /// the memory (as a clone would), in one atomic instruction: the slot,
    /// and room after the view's dimensions for `2 * ndim` values (the
    /// export's own shape and strides). None when an export already holds
    /// it. The claim lasts until [`Tensor::release_slot`] or
    /// [`Tensor::slot_into_tensor`].
    #[inline]
    pub(crate) fn claim_slot(&self) -> Option<(NonNull<ExportSlot>, *mut i64)> {
        let block = self.0.as_ptr();
        // SAFETY: the block is live. Acquire: the previous holder's uses of
        // the slot (ended by a Release) come before ours.
        let old = unsafe { (*block).count.fetch_or(SLOT_TAKEN, Ordering::Acquire) };
        if old & SLOT_TAKEN != 0 {
            return None;
        }
        // SAFETY: a field of the live block; the export's values follow the view's.
        unsafe { Some((NonNull::new_unchecked(&raw mut (*block).slot), dims_of(block).add(2 * self.ndim()))) }
    }

    /// The block whose slot `slot` is.
    fn slot_block(slot: NonNull<ExportSlot>) -> *mut Block {
        slot.as_ptr().wrapping_byte_sub(std::mem::offset_of!(Block, slot)).cast()
    }

    /// The view whose slot `slot` is, and the slot export's dimensions.
    ///
    /// # Safety
    /// `slot` comes from [`Tensor::claim_slot`] and is claimed for `'a`.
    pub(crate) unsafe fn slot_view<'a>(slot: NonNull<ExportSlot>) -> (TensorRef<'a>, *mut i64) {
        let block = Tensor::slot_block(slot);
        // SAFETY: the claim keeps the block alive; it is not a reference, so
        // the borrowed tensor must not be dropped (`TensorRef` is not).
        unsafe {
            let view = Tensor::borrow_raw(block.cast_const().cast());
            let dims = dims_of(block).add(2 * view.ndim());
            (view, dims)
        }
    }

    /// Gives up a claim: the view is freed if nothing else holds it.
    ///
    /// # Safety
    /// `slot` comes from [`Tensor::claim_slot`], claimed, given up once.
    pub(crate) unsafe fn release_slot(slot: NonNull<ExportSlot>) {
        let block = Tensor::slot_block(slot);
        // SAFETY: the claim keeps the block alive until here; as in `drop`.
        unsafe {
            let count = &(*block).count;
            if count.load(Ordering::Acquire) != SLOT_TAKEN {
                if count.fetch_sub(SLOT_TAKEN, Ordering::Release) != SLOT_TAKEN {
                    return;
                }
                std::sync::atomic::fence(Ordering::Acquire);
            }
            free_block(block);
        }
    }

    /// Turns a claim into a reference (the slot is free again), in one
    /// atomic instruction.
    ///
    /// # Safety
    /// As for [`Tensor::release_slot`]; the slot is not used afterwards.
    pub(crate) unsafe fn slot_into_tensor(slot: NonNull<ExportSlot>) -> Tensor {
        let block = Tensor::slot_block(slot);
        // SAFETY: the claim keeps the block alive. Adding 1 - SLOT_TAKEN
        // (wrapping) clears the bit, which is set, and adds a reference;
        // Release: our uses of the slot come before the next claim.
        unsafe {
            (*block).count.fetch_add(1usize.wrapping_sub(SLOT_TAKEN), Ordering::Release);
            Tensor(NonNull::new_unchecked(block))
        }
    }

    /// Whether both are the same view (not merely the same memory).
    #[cfg(test)]
    pub(crate) fn same_view(&self, other: &Tensor) -> bool {
        self.0 == other.0
    }

    /// References held on this view (handles, exports, clones).
    #[cfg(test)]
    pub(crate) fn references(&self) -> usize {
        // SAFETY: the block is live.
        let count = unsafe { self.0.as_ref() }.count.load(Ordering::Relaxed);
        (count & !SLOT_TAKEN) + usize::from(count & SLOT_TAKEN != 0)
    }

    /// A new zero-filled, 256-byte aligned, row-major tensor on the CPU, a
    /// CUDA device, or in pinned host memory (kDLCUDAHost).
    pub fn zeros(device: Device, dtype: DType, shape: &[i64]) -> Result<Tensor> {
        Tensor::zeros_with_flags(device, dtype, shape, Flags::default())
    }

    /// As [`Tensor::zeros`], with DLPack flags (padding changes the size).
    pub(crate) fn zeros_with_flags(device: Device, dtype: DType, shape: &[i64], flags: Flags) -> Result<Tensor> {
        Tensor::allocate(device, dtype, shape, flags, true)
    }

    /// A new tensor whose contents are unspecified: only for outputs that
    /// are written in full before anyone sees them.
    pub(crate) fn uninit_with_flags(device: Device, dtype: DType, shape: &[i64], flags: Flags) -> Result<Tensor> {
        Tensor::allocate(device, dtype, shape, flags, false)
    }

    fn allocate(device: Device, dtype: DType, shape: &[i64], flags: Flags, zero: bool) -> Result<Tensor> {
        let numel = layout::numel(shape)?;
        let bytes = match dtype.itemsize(flags.contains(Flags::SUBBYTE_PADDED)) {
            Some(size) => numel.checked_mul(size as u64).filter(|b| *b <= isize::MAX as u64),
            None => layout::packed_bytes(numel, dtype.element_bits()).ok(),
        };
        let Some(bytes) = bytes else { bail!(Overflow, "{numel} elements of {dtype} overflow the address space") };
        let bytes = bytes as usize;
        let (owner, data): (Owner, *mut c_void) = match device.kind() {
            DLDeviceType::CPU => {
                let buffer = if zero { HostBuffer::zeroed(bytes) } else { HostBuffer::uninit(bytes) }?;
                let data = buffer.data().cast();
                (Owner::Host(buffer), data)
            }
            #[cfg(feature = "cuda")]
            DLDeviceType::CUDA => {
                let buffer = crate::cuda::DeviceBuffer::new(device.id(), bytes, zero)?;
                let data = buffer.ptr();
                (Owner::Device(Box::new(buffer)), data)
            }
            #[cfg(feature = "cuda")]
            DLDeviceType::CUDAHOST => {
                let buffer = crate::cuda::PinnedBuffer::new(bytes, None)?;
                if zero {
                    // SAFETY: the fresh pinned buffer holds `bytes` bytes.
                    unsafe { std::ptr::write_bytes(buffer.ptr().cast::<u8>(), 0, bytes) };
                }
                let data = buffer.ptr();
                (Owner::Pinned(Box::new(buffer)), data)
            }
            _ => bail!(UnsupportedDevice, "cannot allocate on {device} (CPU, CUDA and pinned CUDA host memory can be)"),
        };
        let raw = RawView {
            data,
            device: device.raw(),
            dtype: dtype.raw(),
            shape,
            strides: None,
            byte_offset: 0,
            flags: flags.0,
        };
        Tensor::with_owner(&raw, || owner)
    }

    /// Wraps memory the caller lends. On success `release(ctx)` runs once,
    /// when the last holder is gone; on failure it is not called and the
    /// caller keeps the memory.
    ///
    /// # Safety
    /// `raw` must describe memory that stays valid until `release` runs (or,
    /// with no `release`, for as long as any view of it lives), and
    /// `release(ctx)` must be safe to call once from any thread.
    pub unsafe fn wrap(raw: &RawView<'_>, release: Option<ReleaseFn>, ctx: *mut c_void) -> Result<Tensor> {
        Flags::from_dlpack(raw.flags)?;
        Tensor::with_owner(raw, || Owner::Borrowed { release, ctx })
    }

    /// Address of the first element (byte offset folded in for devices with
    /// addresses). May be NULL or dangling when the tensor has no elements.
    pub fn data(&self) -> *mut c_void {
        self.inner().meta.data
    }

    /// Byte offset kept apart from `data`: nonzero only for devices whose
    /// `data` is an opaque handle (OpenCL, Vulkan, Metal, ...).
    pub fn byte_offset(&self) -> u64 {
        self.inner().meta.byte_offset
    }

    /// Dimensions.
    pub fn shape(&self) -> &[i64] {
        // SAFETY: `ndim` values after the header, for the block's life.
        unsafe { std::slice::from_raw_parts(self.inner().dl.shape, self.inner().meta.ndim) }
    }

    /// Strides in elements (always present).
    pub fn strides(&self) -> &[i64] {
        // SAFETY: `ndim` values after the shape, for the block's life.
        unsafe { std::slice::from_raw_parts(self.inner().dl.strides, self.inner().meta.ndim) }
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.inner().meta.ndim
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.inner().meta.dtype
    }

    /// Device.
    pub fn device(&self) -> Device {
        self.inner().meta.device
    }

    /// DLPack flags (internal bits masked out: what exports carry).
    pub fn flags(&self) -> Flags {
        self.inner().meta.flags & Flags::KNOWN
    }

    /// Whether writes are forbidden (also when the producer could not say:
    /// see [`Flags::WRITABILITY_UNKNOWN`]).
    pub fn is_readonly(&self) -> bool {
        self.inner().meta.flags.contains(Flags::READ_ONLY)
    }

    /// Whether this is a legacy import, read-only because its producer
    /// could not say (see [`Flags::WRITABILITY_UNKNOWN`]).
    pub fn is_writability_unknown(&self) -> bool {
        self.inner().meta.flags.contains(Flags::WRITABILITY_UNKNOWN)
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.inner().meta.numel
    }

    /// Bytes per element, `None` for packed sub-byte types.
    pub fn itemsize(&self) -> Option<usize> {
        self.inner().meta.dtype.itemsize(self.inner().meta.flags.contains(Flags::SUBBYTE_PADDED))
    }

    /// Bytes of the elements (not of the strided span), packed sub-byte
    /// elements rounded up to whole bytes.
    pub fn nbytes(&self) -> u64 {
        match self.itemsize() {
            Some(size) => self.inner().meta.numel * size as u64,
            None => (self.inner().meta.numel * u64::from(self.inner().meta.dtype.element_bits())).div_ceil(8),
        }
    }

    /// Compact row-major (size-1 and size-0 dimensions ignored).
    pub fn is_contiguous(&self) -> bool {
        layout::is_row_major(self.shape(), self.strides())
    }

    /// The same view with other flags (e.g. marked read-only).
    pub fn with_flags(&self, flags: Flags) -> Result<Tensor> {
        Flags::from_dlpack(flags.0)?;
        if flags.contains(Flags::SUBBYTE_PADDED) != self.inner().meta.flags.contains(Flags::SUBBYTE_PADDED) {
            bail!(InvalidArgument, "the sub-byte padding flag describes the memory and cannot be changed");
        }
        let v = &self.inner().meta;
        self.derive(&RawView {
            data: v.data,
            device: v.device.raw(),
            dtype: v.dtype.raw(),
            shape: self.shape(),
            strides: Some(self.strides()),
            byte_offset: v.byte_offset,
            flags: flags.0,
        })
    }

    /// A `DLTensor` describing this view: strides always filled, NULL data
    /// for a tensor without elements. Its `shape`/`strides` point into the
    /// shared block, so it is valid while any clone of `self` lives.
    pub fn dltensor(&self) -> DLTensor {
        self.inner().dl
    }

    /// [`Tensor::dltensor`], kept in the shared block.
    pub fn dltensor_ref(&self) -> &DLTensor {
        &self.inner().dl
    }

    /// Strides in bytes (the array interface's), made once and kept with
    /// the view.
    pub fn byte_strides(&self) -> Result<&[i64]> {
        if let Some(s) = self.inner().byte_strides.get() {
            return Ok(s);
        }
        let s = crate::array_interface::byte_strides(self)?;
        Ok(self.inner().byte_strides.get_or_init(|| s))
    }

    /// Views alive in this process (each held by handles, exported DLPack
    /// tensors not yet deleted, Python objects, or internal work). For leak
    /// tests: 0 once everything is released.
    pub fn live_count() -> usize {
        crate::block::live_views()
    }
}

impl Clone for Tensor {
    fn clone(&self) -> Tensor {
        // SAFETY: the block is live. Relaxed as in `Arc::clone`: the new
        // reference comes from an existing one.
        let old = unsafe { self.0.as_ref() }.count.fetch_add(1, Ordering::Relaxed);
        if old & !SLOT_TAKEN >= SLOT_TAKEN >> 1 {
            std::process::abort(); // a leak of references, as `Arc` guards
        }
        Tensor(self.0)
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: the block is live until its last reference goes, here.
        unsafe {
            let count = &self.0.as_ref().count;
            // The only reference (no other can appear: a clone needs one) is
            // dropped without a locked instruction; its Acquire load orders
            // every other reference's uses (each dropped with Release) before
            // the block is dropped. Otherwise as `Arc`.
            if count.load(Ordering::Acquire) != 1 {
                if count.fetch_sub(1, Ordering::Release) != 1 {
                    return;
                }
                std::sync::atomic::fence(Ordering::Acquire);
            }
            free_block(self.0.as_ptr());
        }
    }
}

/// Drops a block's contents and gives it back.
///
/// # Safety
/// `block` is live and nothing refers to it any more.
unsafe fn free_block(block: *mut Block) {
    // SAFETY: by contract; the layout is read before the drop.
    unsafe {
        let layout = block_layout((*block).inner.meta.ndim);
        std::ptr::drop_in_place(block);
        crate::block::release_view(block.cast(), layout);
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("data", &self.inner().meta.data)
            .field("shape", &self.shape())
            .field("strides", &self.strides())
            .field("dtype", &self.dtype())
            .field("device", &self.device())
            .field("flags", &self.flags().0)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use dlpark::ffi::{DLDataTypeCode, DLDeviceType};

    /// The one-pass validation must accept exactly what the general path
    /// accepts, with the same view: compared over many random and extreme
    /// shapes, strides, offsets, addresses, dtypes and flags.
    #[test]
    fn the_common_path_agrees_with_the_general_one() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let extremes =
            [0, 1, 2, 3, -1, -2, 7, 1 << 20, -(1 << 20), 1 << 40, i64::MAX / 3, i64::MIN / 3, i64::MAX, i64::MIN];
        let pick = |r: u64| extremes[(r % extremes.len() as u64) as usize];
        let int4 = DType::new(DLDataType { code: DLDataTypeCode::INT, bits: 4, lanes: 1 }).unwrap();
        let dtypes = [DType::FLOAT32, DType::INT8, DType::COMPLEX128, DType::BOOL, int4];
        let (mut fast, mut agreed) = (0, 0);
        for _ in 0..200_000 {
            let ndim = (next() % 9) as usize;
            let small = next() % 3 != 0;
            let value = |r: u64| if small { (r % 9) as i64 - 2 } else { pick(r) };
            let shape: Vec<i64> = (0..ndim).map(|_| value(next()).max(if next() % 4 == 0 { -1 } else { 0 })).collect();
            let strides: Vec<i64> = (0..ndim).map(|_| value(next())).collect();
            let data = match next() % 4 {
                0 => std::ptr::null_mut(),
                1 => usize::MAX as *mut c_void,
                _ => (0x1000 + (next() % 64) as usize * 8) as *mut c_void,
            };
            let devices =
                [(DLDeviceType::CPU, 0), (DLDeviceType::CPU, 3), (DLDeviceType::CUDA, 1), (DLDeviceType::CUDA, -1)];
            let (device_type, device_id) = devices[(next() % 4) as usize];
            let device_type = if next() % 8 == 0 { DLDeviceType::OPENCL } else { device_type };
            let raw = RawView {
                data,
                device: DLDevice { device_type, device_id },
                dtype: dtypes[(next() % dtypes.len() as u64) as usize].raw(),
                shape: &shape,
                strides: Some(&strides),
                byte_offset: if next() % 5 == 0 { u64::MAX - (next() % 16) } else { next() % 64 },
                // READ_ONLY, IS_COPIED, SUBBYTE_PADDED, WRITABILITY_UNKNOWN, unknown.
                flags: match next() % 10 {
                    0 => 1 << 40,
                    1 => Flags::WRITABILITY_UNKNOWN.0 | Flags::READ_ONLY.0,
                    _ => next() % 8,
                },
            };
            let n = shape.len();
            let (mut general, mut common) = (vec![0; 2 * n], vec![0; 2 * n]);
            // SAFETY: room for shape and strides in each.
            let (verdict, fused) =
                unsafe { (raw.validate_general(general.as_mut_ptr()), raw.validate_common(common.as_mut_ptr())) };
            if let Some(view) = fused {
                fast += 1;
                let Ok(g) = verdict else {
                    panic!("the common path took what the general one refuses: {raw:?}: {verdict:?}")
                };
                assert_eq!(
                    (view.data, view.byte_offset, view.dtype, view.device, view.flags, view.numel, view.ndim, &common),
                    (g.data, g.byte_offset, g.dtype, g.device, g.flags, g.numel, g.ndim, &general),
                    "{raw:?}"
                );
                agreed += 1;
            }
        }
        assert!(fast > 20_000 && agreed == fast, "common path taken {fast} times");
    }

    pub(crate) fn raw<'a>(data: *mut c_void, shape: &'a [i64], strides: Option<&'a [i64]>) -> RawView<'a> {
        RawView {
            data,
            device: Device::CPU.raw(),
            dtype: DType::FLOAT32.raw(),
            shape,
            strides,
            byte_offset: 0,
            flags: 0,
        }
    }

    #[test]
    fn zeros_is_aligned_zero_filled_and_row_major() {
        let t = Tensor::zeros(Device::CPU, DType::FLOAT64, &[3, 5]).unwrap();
        assert_eq!(t.data() as usize % 256, 0);
        assert_eq!(t.strides(), &[5, 1]);
        assert_eq!(t.nbytes(), 120);
        // SAFETY: the buffer has 120 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(t.data().cast::<u8>(), 120) };
        assert!(bytes.iter().all(|b| *b == 0));
        assert!(t.is_contiguous());
        let empty = Tensor::zeros(Device::CPU, DType::INT8, &[0, 4]).unwrap();
        assert!(empty.dltensor().data.is_null());
        assert_eq!(Tensor::zeros(Device::CPU, DType::INT8, &[-1]).unwrap_err().kind(), ErrorKind::InvalidShape);
        assert_eq!(Tensor::zeros(Device::CPU, DType::INT64, &[1 << 61, 8]).unwrap_err().kind(), ErrorKind::Overflow);
    }

    #[test]
    fn validation_rejects_bad_views() {
        let mut buf = [0f32; 8];
        let p = buf.as_mut_ptr().cast();
        let cases: Vec<(RawView, ErrorKind)> = vec![
            (raw(std::ptr::null_mut(), &[2], None), ErrorKind::NullData),
            (raw(p, &[2, -3], None), ErrorKind::InvalidShape),
            (raw(p, &[i64::MAX, 2], None), ErrorKind::Overflow),
            (raw(p, &[2, 2], Some(&[i64::MAX / 2, 1])), ErrorKind::Overflow),
            // Found by fuzzing: a broadcast (stride 0) view whose elements
            // would not fit in memory once compacted.
            (raw(p, &[1 << 31, 1 << 31], Some(&[0, 0])), ErrorKind::Overflow),
            // Also found by fuzzing: empty, but its compact strides overflow.
            (raw(std::ptr::null_mut(), &[0, 1 << 62], Some(&[1, 0])), ErrorKind::Overflow),
            (RawView { flags: 1 << 9, ..raw(p, &[2], None) }, ErrorKind::UnsupportedFlags),
            (
                RawView { dtype: DLDataType { code: DLDataTypeCode(99), bits: 8, lanes: 1 }, ..raw(p, &[2], None) },
                ErrorKind::UnsupportedDtype,
            ),
            (
                RawView { device: DLDevice { device_type: DLDeviceType(42), device_id: 0 }, ..raw(p, &[2], None) },
                ErrorKind::UnsupportedDevice,
            ),
            (RawView { byte_offset: u64::MAX - 2, ..raw(p, &[2], None) }, ErrorKind::Overflow),
            (raw(8usize as *mut c_void, &[4], Some(&[-4])), ErrorKind::Overflow),
        ];
        for (r, kind) in cases {
            assert_eq!(r.validate().err().map(|e| e.kind()), Some(kind), "{r:?}");
        }
        let packed = RawView {
            dtype: DLDataType { code: DLDataTypeCode::FLOAT4_E2M1FN, bits: 4, lanes: 1 },
            ..raw(p, &[2, 3], Some(&[1, 2]))
        };
        assert_eq!(packed.validate().err().map(|e| e.kind()), Some(ErrorKind::InvalidStrides));
    }

    #[test]
    fn validation_accepts_edge_cases() {
        let mut buf = [0f32; 8];
        let p = buf.as_mut_ptr().cast::<c_void>();
        // NULL data without elements, NULL strides, 0-d, negative strides, offset folding.
        assert!(raw(std::ptr::null_mut(), &[0, 3], None).validate().is_ok());
        assert!(raw(p, &[], None).validate().is_ok());
        let (v, dims) = raw(p.wrapping_byte_add(28), &[8], Some(&[-1])).validate().unwrap();
        assert_eq!((v.data, dims), (p.wrapping_byte_add(28), vec![8, -1]));
        let (v, _) = RawView { byte_offset: 8, ..raw(p, &[2], None) }.validate().unwrap();
        assert_eq!((v.data, v.byte_offset), (p.wrapping_byte_add(8), 0));
        let opencl = RawView {
            device: DLDevice { device_type: DLDeviceType::OPENCL, device_id: 0 },
            byte_offset: 8,
            ..raw(p, &[2], None)
        };
        let (v, dims) = opencl.validate().unwrap();
        assert_eq!(dims, [2, 1], "row-major strides filled in");
        assert_eq!((v.data, v.byte_offset), (p, 8));
    }

    #[test]
    fn wrap_releases_once_when_the_last_clone_goes_and_never_on_failure() {
        use std::sync::atomic::AtomicU32;
        static RELEASED: AtomicU32 = AtomicU32::new(0);
        unsafe extern "C" fn release(ctx: *mut c_void) {
            assert_eq!(ctx as usize, 7);
            RELEASED.fetch_add(1, Ordering::SeqCst);
        }
        let mut buf = [1f32; 4];
        let r = raw(buf.as_mut_ptr().cast(), &[4], None);
        // SAFETY: `buf` outlives every view below.
        let t = unsafe { Tensor::wrap(&r, Some(release), 7usize as *mut c_void) }.unwrap();
        let c = t.clone();
        let ro = t.with_flags(Flags::READ_ONLY).unwrap();
        assert!(ro.is_readonly() && !t.is_readonly());
        drop(t);
        drop(ro);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 0);
        drop(c);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
        let bad = raw(buf.as_mut_ptr().cast(), &[-1], None);
        // SAFETY: as above.
        assert!(unsafe { Tensor::wrap(&bad, Some(release), 7usize as *mut c_void) }.is_err());
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
    }
}
