//! The one internal type: a reference-counted tensor view.
//!
//! Every input (wrapped pointer, DLPack import, array interface) becomes a
//! `Tensor`; every output is made from one. A `Tensor` is an `Arc` on the
//! memory's `Owner` plus validated metadata; clones share the owner.

use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dlpark::ffi::{self, DLDataType, DLDevice, DLDeviceType, DLTensor};

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Result, bail};
use crate::layout::{self, Dims};
use crate::owner::{HostBuffer, Owner, ReleaseFn};

/// DLPack flag bits, as in `DLManagedTensorVersioned::flags`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u64);

impl Flags {
    /// Writes are not allowed.
    pub const READ_ONLY: Flags = Flags(ffi::DLPACK_FLAG_BITMASK_READ_ONLY as u64);
    /// The memory is a copy made for this exchange.
    pub const IS_COPIED: Flags = Flags(ffi::DLPACK_FLAG_BITMASK_IS_COPIED as u64);
    /// Sub-byte elements take one byte each instead of being packed.
    pub const SUBBYTE_PADDED: Flags = Flags(ffi::DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED as u64);
    /// Every bit this library understands.
    pub const KNOWN: Flags = Flags(Self::READ_ONLY.0 | Self::IS_COPIED.0 | Self::SUBBYTE_PADDED.0);

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

/// Validated metadata of a view (no owner).
#[derive(Clone)]
pub(crate) struct View {
    data: *mut c_void,
    byte_offset: u64,
    shape: Dims,
    strides: Dims,
    dtype: DType,
    device: Device,
    flags: Flags,
    numel: u64,
}

impl RawView<'_> {
    /// Checks everything a consumer must check before touching foreign
    /// memory: device, dtype, flags, dimensions, element count, strides,
    /// byte extent and address arithmetic, NULL data.
    pub(crate) fn validate(&self) -> Result<View> {
        let device = Device::new(self.device)?;
        let dtype = DType::new(self.dtype)?;
        let flags = Flags(self.flags);
        if flags.0 & !Flags::KNOWN.0 != 0 {
            bail!(UnsupportedFlags, "unknown DLPack flag bits {:#x}", flags.0 & !Flags::KNOWN.0);
        }
        let _ = layout::check_ndim(i32::try_from(self.shape.len()).unwrap_or(i32::MAX))?;
        let (numel, span) = layout::sizes(self.shape)?;
        let strides: Dims = match self.strides {
            Some(s) => Dims::from_slice(s),
            None => layout::row_major(self.shape),
        };
        // A compact copy must be possible, as NumPy requires of every array:
        // the elements (strides of 0 can make the view itself tiny) and the
        // row-major strides (zero dimensions counted as 1) fit in isize bytes.
        if let Some(itemsize) = dtype.itemsize(flags.contains(Flags::SUBBYTE_PADDED))
            && span.checked_mul(itemsize as u64).is_none_or(|b| b > isize::MAX as u64)
        {
            bail!(
                Overflow,
                "shape {:?} of {itemsize}-byte elements overflows the address space once compacted",
                self.shape
            );
        }
        let extent = match dtype.itemsize(flags.contains(Flags::SUBBYTE_PADDED)) {
            Some(itemsize) => layout::byte_extent(self.shape, &strides, itemsize, numel)?,
            None => {
                if !layout::is_row_major(self.shape, &strides) {
                    bail!(InvalidStrides, "packed {dtype} data must be compact row-major (strides {strides:?})");
                }
                let bytes = layout::packed_bytes(numel, dtype.element_bits())?;
                layout::Extent { lo: 0, hi: bytes as i64 }
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
        Ok(View { data, byte_offset, shape: Dims::from_slice(self.shape), strides, dtype, device, flags, numel })
    }
}

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A view of memory kept alive by a shared owner.
pub struct Tensor {
    owner: Arc<Owner>,
    view: View,
}

// SAFETY: `data` is only an address; `Tensor` never reads or writes through
// it, and the owner is Send + Sync.
unsafe impl Send for Tensor {}
// SAFETY: as above; `Tensor` is immutable.
unsafe impl Sync for Tensor {}

impl Tensor {
    pub(crate) fn assemble(owner: Arc<Owner>, view: View) -> Tensor {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Tensor { owner, view }
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
                (Owner::Device(buffer), data)
            }
            #[cfg(feature = "cuda")]
            DLDeviceType::CUDAHOST => {
                let buffer = crate::cuda::PinnedBuffer::new(bytes)?;
                if zero {
                    // SAFETY: the fresh pinned buffer holds `bytes` bytes.
                    unsafe { std::ptr::write_bytes(buffer.ptr().cast::<u8>(), 0, bytes) };
                }
                let data = buffer.ptr();
                (Owner::Pinned(buffer), data)
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
        let view = raw.validate()?;
        Ok(Tensor::assemble(Arc::new(owner), view))
    }

    /// A tensor over `view`'s layout on memory kept alive by `owner`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn with_owner(owner: Owner, raw: &RawView<'_>) -> Result<Tensor> {
        let view = raw.validate()?;
        Ok(Tensor::assemble(Arc::new(owner), view))
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
        let view = raw.validate()?;
        Ok(Tensor::assemble(Arc::new(Owner::Borrowed { release, ctx }), view))
    }

    pub(crate) fn owner(&self) -> &Arc<Owner> {
        &self.owner
    }

    /// Address of the first element (byte offset folded in for devices with
    /// addresses). May be NULL or dangling when the tensor has no elements.
    pub fn data(&self) -> *mut c_void {
        self.view.data
    }

    /// Byte offset kept apart from `data`: nonzero only for devices whose
    /// `data` is an opaque handle (OpenCL, Vulkan, Metal, ...).
    pub fn byte_offset(&self) -> u64 {
        self.view.byte_offset
    }

    /// Dimensions.
    pub fn shape(&self) -> &[i64] {
        &self.view.shape
    }

    /// Strides in elements (always present).
    pub fn strides(&self) -> &[i64] {
        &self.view.strides
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.view.shape.len()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.view.dtype
    }

    /// Device.
    pub fn device(&self) -> Device {
        self.view.device
    }

    /// DLPack flags.
    pub fn flags(&self) -> Flags {
        self.view.flags
    }

    /// Whether writes are forbidden.
    pub fn is_readonly(&self) -> bool {
        self.view.flags.contains(Flags::READ_ONLY)
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.view.numel
    }

    /// Bytes per element, `None` for packed sub-byte types.
    pub fn itemsize(&self) -> Option<usize> {
        self.view.dtype.itemsize(self.view.flags.contains(Flags::SUBBYTE_PADDED))
    }

    /// Bytes of the elements (not of the strided span), packed sub-byte
    /// elements rounded up to whole bytes.
    pub fn nbytes(&self) -> u64 {
        match self.itemsize() {
            Some(size) => self.view.numel * size as u64,
            None => (self.view.numel * u64::from(self.view.dtype.element_bits())).div_ceil(8),
        }
    }

    /// Compact row-major (size-1 and size-0 dimensions ignored).
    pub fn is_contiguous(&self) -> bool {
        layout::is_row_major(&self.view.shape, &self.view.strides)
    }

    /// The same view with other flags (e.g. marked read-only).
    pub fn with_flags(&self, flags: Flags) -> Result<Tensor> {
        if flags.0 & !Flags::KNOWN.0 != 0 {
            bail!(UnsupportedFlags, "unknown DLPack flag bits {:#x}", flags.0 & !Flags::KNOWN.0);
        }
        if flags.contains(Flags::SUBBYTE_PADDED) != self.view.flags.contains(Flags::SUBBYTE_PADDED) {
            bail!(InvalidArgument, "the sub-byte padding flag describes the memory and cannot be changed");
        }
        let mut t = self.clone();
        t.view.flags = flags;
        Ok(t)
    }

    /// A `DLTensor` describing this view: strides always filled, NULL data
    /// for a tensor without elements. Its `shape`/`strides` point into
    /// `self`, so it is valid while `self` is neither moved nor dropped.
    pub fn dltensor(&self) -> DLTensor {
        let v = &self.view;
        DLTensor {
            data: if v.numel == 0 { std::ptr::null_mut() } else { v.data },
            device: v.device.raw(),
            ndim: v.shape.len() as i32,
            dtype: v.dtype.raw(),
            shape: v.shape.as_ptr().cast_mut(),
            strides: v.strides.as_ptr().cast_mut(),
            byte_offset: v.byte_offset,
        }
    }

    /// Tensors alive in this process: handles, exported DLPack tensors not
    /// yet deleted, and internal views. For leak tests.
    pub fn live_count() -> usize {
        LIVE.load(Ordering::Relaxed)
    }
}

impl Clone for Tensor {
    fn clone(&self) -> Tensor {
        Tensor::assemble(self.owner.clone(), self.view.clone())
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("data", &self.view.data)
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
        let v = raw(p.wrapping_byte_add(28), &[8], Some(&[-1])).validate().unwrap();
        assert_eq!(v.data, p.wrapping_byte_add(28));
        let v = RawView { byte_offset: 8, ..raw(p, &[2], None) }.validate().unwrap();
        assert_eq!((v.data, v.byte_offset), (p.wrapping_byte_add(8), 0));
        let opencl = RawView {
            device: DLDevice { device_type: DLDeviceType::OPENCL, device_id: 0 },
            byte_offset: 8,
            ..raw(p, &[2], None)
        };
        let v = opencl.validate().unwrap();
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
