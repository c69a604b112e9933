//! Explicit copies on the host: any strided layout to a fresh compact
//! row-major tensor (marked IS_COPIED), with a type conversion (`astype`) or
//! a byte swap on the way. Large copies use every core.
//!
//! One walk serves all of them: the source is visited row by row (its last
//! dimension after merging dimensions that are contiguous with each other),
//! and a row kernel, picked once per call, moves one row.

use dlpark::ffi::DLDeviceType;
use half::{bf16, f16};

use crate::device::Device;

use crate::dtype::DType;
use crate::error::{Result, bail};
use crate::tensor::{Flags, Tensor};

/// Outputs smaller than this are copied on the calling thread.
const PARALLEL_BYTES: u64 = 4 << 20;

/// A compact row-major copy of a host-accessible tensor, in new CPU memory,
/// writable, with IS_COPIED set (sub-byte padding is kept).
pub fn contiguous(src: &Tensor) -> Result<Tensor> {
    convert(src, src.dtype(), Kernel::Copy, Device::CPU)
}

/// A compact row-major copy of `src` where `src` is (what `copy=True`
/// means: a copy never changes device unless asked): on its own device when
/// dlbridge allocates there (CPU, pinned, CUDA), else, for host-accessible
/// memory dlbridge does not allocate (managed, ROCm host), in CPU memory.
pub fn duplicate(src: &Tensor) -> Result<Tensor> {
    let device = src.device();
    match device.kind() {
        DLDeviceType::CPU | DLDeviceType::CUDAHOST | DLDeviceType::CUDA => to_device(src, device),
        _ if device.is_host_accessible() => to_device(src, Device::CPU),
        _ => bail!(UnsupportedDevice, "copies of {device} memory are not supported"),
    }
}

/// A compact row-major copy of `src` on `device` (IS_COPIED set): host
/// memory (kDLCPU, kDLCUDAHost, kDLCUDAManaged) and CUDA devices, in every
/// direction. Strided CUDA sources are staged through host memory.
pub fn to_device(src: &Tensor, device: Device) -> Result<Tensor> {
    let to_host = matches!(device.kind(), DLDeviceType::CPU | DLDeviceType::CUDAHOST);
    let from_host = src.device().is_host_accessible();
    if to_host && from_host {
        return convert(src, src.dtype(), Kernel::Copy, device);
    }
    if device.kind() != DLDeviceType::CUDA && !to_host {
        bail!(UnsupportedDevice, "copies to {device} are not supported (CPU, CUDA and pinned host memory are)");
    }
    if !from_host && src.device().kind() != DLDeviceType::CUDA {
        bail!(UnsupportedDevice, "copies from {} memory are not supported", src.device());
    }
    cuda_transfer(src, device, to_host)
}

#[cfg(not(feature = "cuda"))]
fn cuda_transfer(_src: &Tensor, _device: Device, _to_host: bool) -> Result<Tensor> {
    bail!(CudaUnavailable, "dlbridge was built without the `cuda` feature")
}

#[cfg(feature = "cuda")]
fn cuda_transfer(src: &Tensor, device: Device, to_host: bool) -> Result<Tensor> {
    use crate::cuda;
    let padded = src.flags() & Flags::SUBBYTE_PADDED;
    let flags = padded | Flags::IS_COPIED;
    let bytes = src.nbytes() as usize;
    if src.device().is_host_accessible() {
        // Host -> CUDA: make the source compact on the host, then one copy.
        let compact = if src.is_contiguous() { src.clone() } else { contiguous(src)? };
        let dst = Tensor::uninit_with_flags(device, src.dtype(), src.shape(), flags)?;
        if bytes > 0 {
            // SAFETY: both hold `bytes` bytes (validated / fresh).
            unsafe { cuda::copy_htod(device.id(), dst.data(), compact.data(), bytes) }?;
        }
        return Ok(dst);
    }
    if !src.is_contiguous() {
        // A strided CUDA source: made compact on its own device with 2-D
        // copies (only its elements move), then sent on where it goes.
        if let Some(compact) = compact_on_device(src)? {
            return if device == src.device() { Ok(compact) } else { cuda_transfer(&compact, device, to_host) };
        }
        // Too many blocks for 2-D copies, or a dense layout of narrow rows:
        // bring its byte extent to the host, gather there, and send the
        // result on if it goes to a device.
        let host = gather_on_host(src)?;
        return if to_host {
            convert(&host, host.dtype(), Kernel::Copy, device)
        } else {
            cuda_transfer(&host, device, false)
        };
    }
    let dst = Tensor::uninit_with_flags(device, src.dtype(), src.shape(), flags)?;
    if bytes > 0 {
        // SAFETY: both hold `bytes` bytes (validated / fresh).
        unsafe {
            if to_host {
                cuda::copy_dtoh(src.device().id(), dst.data(), src.data(), bytes)
            } else {
                cuda::copy_dtod(device.id(), dst.data(), src.device().id(), src.data(), bytes)
            }
        }?;
    }
    Ok(dst)
}

/// Most 2-D copies a strided device gather issues; beyond, the byte extent
/// goes through the host.
#[cfg(feature = "cuda")]
const MAX_ROW_BLOCKS: usize = 4096;
/// The largest row pitch `cuMemcpy2D` takes (`CU_DEVICE_ATTRIBUTE_MAX_PITCH`
/// on current GPUs).
#[cfg(feature = "cuda")]
const MAX_PITCH: usize = i32::MAX as usize;

/// Rows at least this wide make 2-D copies efficient whatever the layout;
/// narrower rows (a transpose's single elements) move far slower through
/// the copy engine than a dense extent through the host.
#[cfg(feature = "cuda")]
const WIDE_ROW: usize = 512;

/// A compact copy of a strided CUDA tensor on its own device, through 2-D
/// copies of its rows; None when its extent through the host is the better
/// way: too many copies, or narrow rows of a dense layout (its byte extent
/// at most twice its size, e.g. a transpose).
#[cfg(feature = "cuda")]
fn compact_on_device(src: &Tensor) -> Result<Option<Tensor>> {
    let Some(itemsize) = src.itemsize() else { bail!(InvalidStrides, "packed sub-byte data is always contiguous") };
    let Some(rows) = crate::layout::Rows::plan(src.shape(), src.strides(), itemsize, MAX_PITCH, MAX_ROW_BLOCKS) else {
        return Ok(None);
    };
    let extent = crate::layout::byte_extent(src.shape(), src.strides(), itemsize, src.numel())?;
    if rows.width < WIDE_ROW && extent.len() <= 2 * src.nbytes() {
        return Ok(None);
    }
    let flags = (src.flags() & Flags::SUBBYTE_PADDED) | Flags::IS_COPIED;
    let dst = Tensor::uninit_with_flags(src.device(), src.dtype(), src.shape(), flags)?;
    // SAFETY: the rows lie in the validated extent of `src` on its device;
    // `dst` is fresh and compact, holding every block back to back.
    unsafe { crate::cuda::copy_rows(src.device().id(), dst.data(), src.data(), &rows) }?;
    Ok(Some(dst))
}

/// A compact host copy of a strided CUDA tensor, via its byte extent.
#[cfg(feature = "cuda")]
fn gather_on_host(src: &Tensor) -> Result<Tensor> {
    let Some(itemsize) = src.itemsize() else { bail!(InvalidStrides, "packed sub-byte data is always contiguous") };
    let extent = crate::layout::byte_extent(src.shape(), src.strides(), itemsize, src.numel())?;
    let staging = crate::owner::HostBuffer::uninit(extent.len() as usize)?;
    // SAFETY: the validated extent of `src` is readable on its device; the
    // staging buffer holds `extent.len()` bytes.
    unsafe {
        let first = src.data().cast::<u8>().offset(extent.lo as isize);
        crate::cuda::copy_dtoh(src.device().id(), staging.data().cast(), first.cast(), extent.len() as usize)?;
    }
    let raw = crate::RawView {
        data: staging.data().wrapping_offset(-extent.lo as isize).cast(),
        device: Device::CPU.raw(),
        dtype: src.dtype().raw(),
        shape: src.shape(),
        strides: Some(src.strides()),
        byte_offset: 0,
        flags: 0,
    };
    let view = Tensor::with_owner(&raw, || crate::owner::Owner::Host(staging))?;
    contiguous(&view)
}

/// A compact row-major copy of sub-byte data (int2, int4, FP4, FP6, ...)
/// in the other storage form: `padded` (one element per byte, in its low
/// bits, the rest zero: how NumPy and ml_dtypes keep them; DLPack's
/// IS_SUBBYTE_TYPE_PADDED) or packed (DLPack's default: element `i` takes
/// bits `i * bits ..` of the buffer, little bit-endian, so with 4 bits
/// element 0 is the low half of byte 0). IS_COPIED set; the same form is a
/// plain compact copy. Host memory only.
pub fn repack(src: &Tensor, padded: bool) -> Result<Tensor> {
    let dtype = src.dtype();
    if !dtype.is_subbyte() || dtype.raw().lanes != 1 {
        bail!(UnsupportedDtype, "{dtype} is not a sub-byte scalar type: it has no packed or padded form");
    }
    let from_padded = src.flags().contains(Flags::SUBBYTE_PADDED);
    if from_padded == padded {
        let copy = contiguous(src)?;
        if padded && copy.numel() > 0 {
            // A padded element's other bits are not data: they come out zero.
            let mask = ((1u16 << dtype.element_bits()) - 1) as u8;
            // SAFETY: a fresh compact copy of `numel` bytes, ours alone.
            let bytes = unsafe { std::slice::from_raw_parts_mut(copy.data().cast::<u8>(), copy.numel() as usize) };
            bytes.iter_mut().for_each(|b| *b &= mask);
        }
        return Ok(copy);
    }
    if !src.device().is_host_accessible() {
        bail!(
            UnsupportedDevice,
            "repacking {} memory needs a device transfer; only host memory is repacked",
            src.device()
        );
    }
    let flags = Flags::IS_COPIED | if padded { Flags::SUBBYTE_PADDED } else { Flags::default() };
    // Packed output is assembled with OR: it starts zeroed.
    let dst = Tensor::zeros_with_flags(Device::CPU, dtype, src.shape(), flags)?;
    let n = src.numel() as usize;
    if n == 0 {
        return Ok(dst);
    }
    let bits = dtype.element_bits() as usize;
    // Padded elements in row-major order, one per byte.
    let compact = if from_padded && !src.is_contiguous() { contiguous(src)? } else { src.clone() };
    // SAFETY: each buffer holds the bytes its validated / fresh tensor says:
    // n bytes padded, ceil(n * bits / 8) packed; they do not overlap.
    unsafe {
        let (from, to) = (compact.data().cast::<u8>().cast_const(), dst.data().cast::<u8>());
        let packed_len = (n * bits).div_ceil(8);
        if padded {
            let packed = std::slice::from_raw_parts(from, packed_len);
            unpack_bits(packed, std::slice::from_raw_parts_mut(to, n), bits);
        } else {
            let one_per_byte = std::slice::from_raw_parts(from, n);
            pack_bits(one_per_byte, std::slice::from_raw_parts_mut(to, packed_len), bits);
        }
    }
    Ok(dst)
}

/// Element `i` of `out` = bits `i * bits ..` of `packed` (little bit-endian).
fn unpack_bits(packed: &[u8], out: &mut [u8], bits: usize) {
    let mask = (1u16 << bits) - 1;
    for (i, slot) in out.iter_mut().enumerate() {
        let (byte, shift) = ((i * bits) / 8, (i * bits) % 8);
        let window = u16::from(packed[byte]) | packed.get(byte + 1).map_or(0, |b| u16::from(*b) << 8);
        *slot = ((window >> shift) & mask) as u8;
    }
}

/// The inverse of [`unpack_bits`]: the low `bits` of each byte of
/// `one_per_byte`, packed into `out` (zeroed beforehand).
fn pack_bits(one_per_byte: &[u8], out: &mut [u8], bits: usize) {
    let mask = (1u16 << bits) - 1;
    for (i, value) in one_per_byte.iter().enumerate() {
        let (byte, shift) = ((i * bits) / 8, (i * bits) % 8);
        let placed = (u16::from(*value) & mask) << shift;
        out[byte] |= placed as u8;
        if placed > 0xff {
            out[byte + 1] |= (placed >> 8) as u8;
        }
    }
}

/// A compact row-major copy converted to `dtype`, as NumPy's `astype`:
/// integers wrap, floats round to nearest even (float16/bfloat16 through
/// the `half` crate), NaN and infinities are kept, complex to real keeps the
/// real part, anything to bool is "non-zero". Float to integer saturates
/// (NaN gives 0): NumPy leaves out-of-range values undefined.
pub fn astype(src: &Tensor, dtype: DType) -> Result<Tensor> {
    if src.dtype() == dtype {
        return contiguous(src);
    }
    let (Some(from), Some(to)) = (Scalar::of(src.dtype()), Scalar::of(dtype)) else {
        bail!(UnsupportedDtype, "astype converts between numeric types only, not {} to {dtype}", src.dtype());
    };
    convert(src, dtype, Kernel::Cast(row_kernel(from, to)), Device::CPU)
}

/// A copy of `src` whose elements had the other byte order: each scalar
/// (each half of a complex number) is byte-reversed into native order.
pub fn byteswapped(src: &Tensor) -> Result<Tensor> {
    let Some(scalar) = Scalar::of(src.dtype()) else {
        bail!(UnsupportedDtype, "byte-swapping {} is not supported", src.dtype());
    };
    convert(src, src.dtype(), Kernel::Swap(scalar.component_bytes()), Device::CPU)
}

#[derive(Clone, Copy)]
enum Kernel {
    Copy,
    Swap(usize),
    Cast(RowFn),
}

/// Converts `n` elements, `stride` bytes apart, from `src` to contiguous `dst`.
type RowFn = unsafe fn(src: *const u8, stride: isize, n: usize, dst: *mut u8);

/// Copies host memory `src` into a new compact tensor of `dtype` on the
/// host device `target` (kDLCPU or pinned kDLCUDAHost).
fn convert(src: &Tensor, dtype: DType, kernel: Kernel, target: Device) -> Result<Tensor> {
    if !src.device().is_host_accessible() {
        bail!(
            UnsupportedDevice,
            "copying {} memory needs a device transfer; only host memory is copied here",
            src.device()
        );
    }
    crate::cuda::host_ready(src.device())?;
    let padded = src.flags() & Flags::SUBBYTE_PADDED;
    // Every byte of the output is written below.
    let dst = Tensor::uninit_with_flags(target, dtype, src.shape(), padded | Flags::IS_COPIED)?;
    if src.numel() == 0 {
        return Ok(dst);
    }
    let Some(in_size) = src.itemsize() else {
        // Packed sub-byte data is always compact: copy the bytes.
        // SAFETY: both hold `nbytes` bytes and do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.data().cast::<u8>(), dst.data().cast::<u8>(), src.nbytes() as usize)
        };
        return Ok(dst);
    };
    let out_size = dst.itemsize().unwrap_or(1);
    let walk = Walk::new(src.shape(), src.strides(), in_size);
    let rows = walk.rows();
    let from = SendPtr(src.data().cast::<u8>());
    let to = SendPtr(dst.data().cast::<u8>());
    let run = |first: usize, last: usize| {
        // SAFETY: the walk visits only elements inside the validated source
        // extent, and rows first..last map to their own part of `dst`.
        unsafe { walk.run(from.get(), to.get(), out_size, first, last, kernel) }
    };
    let parts = if dst.nbytes() < PARALLEL_BYTES { 1 } else { crate::parallel::threads() };
    if parts < 2 {
        run(0, rows);
    } else if rows == 1 {
        // One long row (a compact source): split it into segments.
        let n = walk.row_len;
        crate::parallel::for_each(parts, |p| {
            let (start, end) = (n * p / parts, n * (p + 1) / parts);
            // SAFETY: elements start..end of the single row, and their own
            // slice of the output.
            unsafe {
                walk.apply(
                    kernel,
                    from.get().offset(start as isize * walk.row_stride),
                    to.get().add(start * out_size),
                    end - start,
                )
            }
        });
    } else {
        let parts = parts.min(rows);
        crate::parallel::for_each(parts, |p| run(rows * p / parts, rows * (p + 1) / parts));
    }
    Ok(dst)
}

#[derive(Clone, Copy)]
struct SendPtr(*mut u8);

impl SendPtr {
    // A method, so closures capture the whole (Send) wrapper, not the field.
    fn get(self) -> *mut u8 {
        self.0
    }
}
// SAFETY: threads write disjoint rows of a buffer that outlives the scope and
// only read the source.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// The source layout reduced to rows: dimensions of size 1 dropped, and a
/// dimension merged into the next when their strides make them contiguous.
struct Walk {
    outer_shape: Vec<i64>,
    /// Byte strides of the outer dimensions.
    outer_strides: Vec<isize>,
    row_len: usize,
    row_stride: isize,
    itemsize: usize,
}

impl Walk {
    fn new(shape: &[i64], strides: &[i64], itemsize: usize) -> Walk {
        // Left to right: an outer dimension merges into the one after it when
        // its stride is exactly the span of that one.
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(shape.len());
        for (&d, &s) in shape.iter().zip(strides).filter(|(d, _)| **d != 1) {
            match merged.last_mut() {
                Some((pd, ps)) if s.checked_mul(d) == Some(*ps) => {
                    *pd *= d;
                    *ps = s;
                }
                _ => merged.push((d, s)),
            }
        }
        let (row_len, row_stride) = merged.pop().unwrap_or((1, 1));
        Walk {
            outer_shape: merged.iter().map(|(d, _)| *d).collect(),
            outer_strides: merged.iter().map(|(_, s)| (*s * itemsize as i64) as isize).collect(),
            row_len: row_len as usize,
            row_stride: (row_stride * itemsize as i64) as isize,
            itemsize,
        }
    }

    /// Moves `n` elements of a row (`row_stride` apart) to compact `to`.
    ///
    /// # Safety
    /// `n` elements readable from `from`; room for them at `to`.
    unsafe fn apply(&self, kernel: Kernel, from: *const u8, to: *mut u8, n: usize) {
        // SAFETY: by contract.
        unsafe {
            match kernel {
                Kernel::Copy if self.row_stride == self.itemsize as isize => {
                    std::ptr::copy_nonoverlapping(from, to, n * self.itemsize)
                }
                Kernel::Copy => copy_row(from, self.row_stride, n, to, self.itemsize),
                Kernel::Swap(part) => swap_row(from, self.row_stride, n, to, self.itemsize, part),
                Kernel::Cast(f) => f(from, self.row_stride, n, to),
            }
        }
    }

    /// Rows lie next to each other in the source while each row is strided:
    /// a transpose, where row-at-a-time copying thrashes the cache.
    fn is_transposed(&self) -> bool {
        self.outer_strides.last() == Some(&(self.itemsize as isize))
            && self.row_stride.unsigned_abs() > 64
            && matches!(self.itemsize, 1 | 2 | 4 | 8)
    }

    /// Copies rows `first..last` in blocks of up to 16 neighbouring rows:
    /// for each column, the 16 source elements are adjacent, and the 16
    /// output rows being filled stay in cache.
    ///
    /// # Safety
    /// As for [`Walk::run`]; `index`/`offset` locate row `first`.
    unsafe fn run_blocked(
        &self,
        src: *const u8,
        dst: *mut u8,
        first: usize,
        last: usize,
        index: Vec<i64>,
        offset: isize,
    ) {
        const BLOCK: usize = 16;
        let last_dim = self.outer_shape.len() - 1;
        let mut index = index;
        let mut offset = offset;
        let mut row = first;
        while row < last {
            // Rows up to the end of the innermost outer dimension are neighbours.
            let left_in_dim = (self.outer_shape[last_dim] - index[last_dim]) as usize;
            let block = BLOCK.min(last - row).min(left_in_dim);
            macro_rules! typed {
                ($t:ty) => {
                    for j in 0..self.row_len {
                        // SAFETY: rows row..row+block of the source start at
                        // `offset` + k * itemsize; output row r starts at
                        // r * row_len elements.
                        unsafe {
                            let from = src.offset(offset + j as isize * self.row_stride).cast::<$t>();
                            let to = dst.cast::<$t>().add(row * self.row_len + j);
                            for k in 0..block {
                                to.add(k * self.row_len).write_unaligned(from.add(k).read_unaligned());
                            }
                        }
                    }
                };
            }
            match self.itemsize {
                1 => typed!(u8),
                2 => typed!(u16),
                4 => typed!(u32),
                _ => typed!(u64),
            }
            row += block;
            // Advance the odometer by `block` rows.
            for _ in 0..block {
                for d in (0..=last_dim).rev() {
                    index[d] += 1;
                    offset += self.outer_strides[d];
                    if index[d] < self.outer_shape[d] {
                        break;
                    }
                    offset -= self.outer_strides[d] * self.outer_shape[d] as isize;
                    index[d] = 0;
                }
            }
        }
    }

    fn rows(&self) -> usize {
        self.outer_shape.iter().product::<i64>() as usize
    }

    /// Moves rows `first..last` (row-major order) of the source.
    ///
    /// # Safety
    /// `src` is the first element of the layout this walk was made from;
    /// `dst` has room for every row at `out_size` bytes per element.
    unsafe fn run(&self, src: *const u8, dst: *mut u8, out_size: usize, first: usize, last: usize, kernel: Kernel) {
        let ndim = self.outer_shape.len();
        let mut index = vec![0i64; ndim];
        let mut offset: isize = 0;
        let mut rest = first as i64;
        for d in (0..ndim).rev() {
            index[d] = rest % self.outer_shape[d];
            rest /= self.outer_shape[d];
            offset += index[d] as isize * self.outer_strides[d];
        }
        let row_bytes = self.row_len * out_size;
        if let Kernel::Copy = kernel
            && self.is_transposed()
        {
            // SAFETY: forwarded contract.
            return unsafe { self.run_blocked(src, dst, first, last, index, offset) };
        }
        for row in first..last {
            // SAFETY: `offset` addresses row `row` of the source (odometer below),
            // and row `row` of the output starts at `row * row_bytes`.
            unsafe { self.apply(kernel, src.offset(offset), dst.add(row * row_bytes), self.row_len) };
            for d in (0..ndim).rev() {
                index[d] += 1;
                offset += self.outer_strides[d];
                if index[d] < self.outer_shape[d] {
                    break;
                }
                offset -= self.outer_strides[d] * self.outer_shape[d] as isize;
                index[d] = 0;
            }
        }
    }
}

/// Strided row copy, one typed load/store per element.
///
/// # Safety
/// `n` elements of `size` bytes, `stride` apart, readable at `src`; room for
/// `n * size` bytes at `dst`.
unsafe fn copy_row(src: *const u8, stride: isize, n: usize, dst: *mut u8, size: usize) {
    macro_rules! typed {
        ($t:ty) => {
            for i in 0..n {
                // SAFETY: by contract; foreign data may be unaligned.
                unsafe {
                    let v = src.offset(i as isize * stride).cast::<$t>().read_unaligned();
                    dst.cast::<$t>().add(i).write_unaligned(v);
                }
            }
        };
    }
    match size {
        1 => typed!(u8),
        2 => typed!(u16),
        4 => typed!(u32),
        8 => typed!(u64),
        16 => typed!(u128),
        _ => {
            for i in 0..n {
                // SAFETY: by contract.
                unsafe { std::ptr::copy_nonoverlapping(src.offset(i as isize * stride), dst.add(i * size), size) };
            }
        }
    }
}

/// Unsigned integers whose bytes a swap reverses.
trait Swappable: Copy {
    fn swapped(self) -> Self;
}

macro_rules! swappable {
    ($($t:ty),*) => {$(impl Swappable for $t {
        #[inline(always)]
        fn swapped(self) -> Self {
            self.swap_bytes()
        }
    })*};
}
swappable!(u16, u32, u64);

/// `count` scalars from `src` to `dst` with their bytes reversed.
///
/// # Safety
/// `src` readable and `dst` writable for `count` scalars (any alignment).
#[inline(always)]
unsafe fn swap_loop<T: Swappable>(src: *const T, dst: *mut T, count: usize) {
    for i in 0..count {
        // SAFETY: by contract; unaligned-safe accesses.
        unsafe { dst.add(i).write_unaligned(src.add(i).read_unaligned().swapped()) };
    }
}

/// The same loop compiled for AVX2, where one shuffle swaps 32 bytes (the
/// baseline x86-64 target has no byte shuffle, so the plain loop swaps one
/// scalar at a time).
///
/// # Safety
/// As for [`swap_loop`]; the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn swap_loop_avx2<T: Swappable>(src: *const T, dst: *mut T, count: usize) {
    // SAFETY: forwarded contract.
    unsafe { swap_loop(src, dst, count) }
}

/// [`swap_loop`], on AVX2 when the CPU has it.
///
/// # Safety
/// As for [`swap_loop`].
unsafe fn swap_contiguous<T: Swappable>(src: *const T, dst: *mut T, count: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: forwarded contract; AVX2 is present (checked).
        return unsafe { swap_loop_avx2(src, dst, count) };
    }
    // SAFETY: forwarded contract.
    unsafe { swap_loop(src, dst, count) }
}

/// Strided row copy that reverses the bytes of each `part`-byte scalar.
///
/// # Safety
/// As for [`copy_row`]; `part` divides `size`.
unsafe fn swap_row(src: *const u8, stride: isize, n: usize, dst: *mut u8, size: usize, part: usize) {
    macro_rules! typed {
        ($t:ty) => {{
            let per = size / part;
            if stride == size as isize {
                // SAFETY: by contract (a contiguous row of `n * per` scalars).
                unsafe { swap_contiguous(src.cast::<$t>(), dst.cast::<$t>(), n * per) };
                return;
            }
            for i in 0..n {
                for p in 0..per {
                    // SAFETY: by contract; foreign data may be unaligned.
                    unsafe {
                        let v = src.offset(i as isize * stride).cast::<$t>().add(p).read_unaligned();
                        dst.cast::<$t>().add(i * per + p).write_unaligned(v.swap_bytes());
                    }
                }
            }
        }};
    }
    match part {
        // SAFETY: forwarded contract.
        1 => unsafe { copy_row(src, stride, n, dst, size) },
        2 => typed!(u16),
        4 => typed!(u32),
        _ => typed!(u64),
    }
}

/// The numeric element types `astype` converts between.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scalar {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    Bf16,
    F32,
    F64,
    C64,
    C128,
}

impl Scalar {
    fn of(dtype: DType) -> Option<Scalar> {
        Some(match dtype {
            DType::BOOL => Scalar::Bool,
            DType::INT8 => Scalar::I8,
            DType::INT16 => Scalar::I16,
            DType::INT32 => Scalar::I32,
            DType::INT64 => Scalar::I64,
            DType::UINT8 => Scalar::U8,
            DType::UINT16 => Scalar::U16,
            DType::UINT32 => Scalar::U32,
            DType::UINT64 => Scalar::U64,
            DType::FLOAT16 => Scalar::F16,
            DType::BFLOAT16 => Scalar::Bf16,
            DType::FLOAT32 => Scalar::F32,
            DType::FLOAT64 => Scalar::F64,
            DType::COMPLEX64 => Scalar::C64,
            DType::COMPLEX128 => Scalar::C128,
            _ => return None,
        })
    }

    /// Bytes of one real component (what a byte swap reverses).
    fn component_bytes(self) -> usize {
        match self {
            Scalar::Bool | Scalar::I8 | Scalar::U8 => 1,
            Scalar::I16 | Scalar::U16 | Scalar::F16 | Scalar::Bf16 => 2,
            Scalar::I32 | Scalar::U32 | Scalar::F32 | Scalar::C64 => 4,
            Scalar::I64 | Scalar::U64 | Scalar::F64 | Scalar::C128 => 8,
        }
    }
}

/// A value in transit, wide enough that every source converts exactly.
/// After inlining, each source yields one constant variant and the match in
/// the target folds away.
#[derive(Clone, Copy)]
enum Val {
    Bool(bool),
    Int(i128),
    F32(f32),
    F64(f64),
    C64(f32, f32),
    C128(f64, f64),
}

trait Elem: Copy {
    fn lift(self) -> Val;
    fn lower(v: Val) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline(always)]
            fn lift(self) -> Val {
                Val::Int(self as i128)
            }
            #[inline(always)]
            fn lower(v: Val) -> Self {
                match v {
                    Val::Bool(b) => b as $t,
                    Val::Int(i) => i as $t,
                    Val::F32(f) | Val::C64(f, _) => f as $t,
                    Val::F64(f) | Val::C128(f, _) => f as $t,
                }
            }
        }
    )*};
}
int_elem!(i8, i16, i32, i64, u8, u16, u32, u64);

/// bool as stored in DLPack / NumPy: one byte, 0 or 1.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Bool8(u8);

impl Elem for Bool8 {
    #[inline(always)]
    fn lift(self) -> Val {
        Val::Bool(self.0 != 0)
    }
    #[inline(always)]
    fn lower(v: Val) -> Self {
        Bool8(match v {
            Val::Bool(b) => b,
            Val::Int(i) => i != 0,
            Val::F32(f) => f != 0.0,
            Val::F64(f) => f != 0.0,
            Val::C64(re, im) => re != 0.0 || im != 0.0,
            Val::C128(re, im) => re != 0.0 || im != 0.0,
        } as u8)
    }
}

macro_rules! float_elem {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            #[inline(always)]
            fn lift(self) -> Val {
                Val::$variant(self)
            }
            #[inline(always)]
            fn lower(v: Val) -> Self {
                match v {
                    Val::Bool(b) => b as u8 as $t,
                    Val::Int(i) => i as $t,
                    Val::F32(f) | Val::C64(f, _) => f as $t,
                    Val::F64(f) | Val::C128(f, _) => f as $t,
                }
            }
        }
    };
}
float_elem!(f32, F32);
float_elem!(f64, F64);

impl Elem for f16 {
    #[inline(always)]
    fn lift(self) -> Val {
        Val::F32(self.to_f32())
    }
    #[inline(always)]
    fn lower(v: Val) -> Self {
        match v {
            Val::Bool(b) => f16::from_f32(b as u8 as f32),
            Val::Int(i) => f64_to_f16(i as f64),
            Val::F32(f) | Val::C64(f, _) => f16::from_f32(f),
            Val::F64(f) | Val::C128(f, _) => f64_to_f16(f),
        }
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn lift(self) -> Val {
        Val::F32(self.to_f32())
    }
    /// Wider sources go through float32, as ml_dtypes (the reference
    /// bfloat16 for NumPy) converts them.
    #[inline(always)]
    fn lower(v: Val) -> Self {
        match v {
            Val::Bool(b) => bf16::from_f32(b as u8 as f32),
            Val::Int(i) => bf16::from_f32(i as f32),
            Val::F32(f) | Val::C64(f, _) => bf16::from_f32(f),
            Val::F64(f) | Val::C128(f, _) => bf16::from_f32(f as f32),
        }
    }
}

/// float64 to float16 with one rounding (to nearest, ties to even), as
/// NumPy does; `half::f16::from_f64` rounds twice (through float32).
fn f64_to_f16(x: f64) -> f16 {
    let bits = x.to_bits();
    let sign = ((bits >> 48) & 0x8000) as u16;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let man = bits & ((1u64 << 52) - 1);
    if exp == 0x7ff {
        // Infinity, or NaN with its top payload bits (kept non-zero).
        let payload = (man >> 42) as u16;
        return f16::from_bits(sign | 0x7c00 | if man == 0 { 0 } else { payload.max(1) | 0x200 });
    }
    let e = exp - 1023;
    if e > 15 {
        return f16::from_bits(sign | 0x7c00);
    }
    // Keep `keep` bits of the significand (implicit bit included for
    // subnormal results), rounding the rest; a carry rolls into the
    // exponent, up to infinity, as it should.
    let (base, significand, shift) = if e >= -14 {
        (((e + 15) as u64) << 10, man, 42u32)
    } else {
        let shift = 28 - e; // units of 2^-24, the smallest subnormal
        if shift >= 64 {
            return f16::from_bits(sign);
        }
        (0, man | (1u64 << 52), shift as u32)
    };
    let mut h = base | (significand >> shift);
    let rest = significand & ((1u64 << shift) - 1);
    let halfway = 1u64 << (shift - 1);
    if rest > halfway || (rest == halfway && h & 1 == 1) {
        h += 1;
    }
    f16::from_bits(sign | h as u16)
}

/// complex64 / complex128 as stored: real then imaginary.
#[derive(Clone, Copy)]
#[repr(C)]
struct Complex<T>(T, T);

impl Elem for Complex<f32> {
    #[inline(always)]
    fn lift(self) -> Val {
        Val::C64(self.0, self.1)
    }
    #[inline(always)]
    fn lower(v: Val) -> Self {
        match v {
            Val::C64(re, im) => Complex(re, im),
            Val::C128(re, im) => Complex(re as f32, im as f32),
            other => Complex(f32::lower(other), 0.0),
        }
    }
}

impl Elem for Complex<f64> {
    #[inline(always)]
    fn lift(self) -> Val {
        Val::C128(self.0, self.1)
    }
    #[inline(always)]
    fn lower(v: Val) -> Self {
        match v {
            Val::C64(re, im) => Complex(re as f64, im as f64),
            Val::C128(re, im) => Complex(re, im),
            other => Complex(f64::lower(other), 0.0),
        }
    }
}

/// Converts a row element by element.
///
/// # Safety
/// As for [`RowFn`], with `S`/`D` the source/target element types.
unsafe fn cast_row<S: Elem, D: Elem>(src: *const u8, stride: isize, n: usize, dst: *mut u8) {
    let dst = dst.cast::<D>();
    if stride == std::mem::size_of::<S>() as isize {
        let src = src.cast::<S>();
        for i in 0..n {
            // SAFETY: by contract; unaligned-safe.
            unsafe { dst.add(i).write_unaligned(D::lower(src.add(i).read_unaligned().lift())) };
        }
    } else {
        for i in 0..n {
            // SAFETY: by contract; unaligned-safe.
            unsafe {
                dst.add(i)
                    .write_unaligned(D::lower(src.offset(i as isize * stride).cast::<S>().read_unaligned().lift()))
            };
        }
    }
}

/// float32 <-> float16 / bfloat16 rows through `half`'s slice conversions
/// (F16C where the CPU has it) when the row is contiguous and aligned.
macro_rules! half_slice_rows {
    ($to_half:ident, $from_half:ident, $t:ty) => {
        unsafe fn $to_half(src: *const u8, stride: isize, n: usize, dst: *mut u8) {
            use half::slice::HalfFloatSliceExt;
            if stride == 4 && src.align_offset(4) == 0 && dst.align_offset(2) == 0 {
                // SAFETY: contiguous, aligned, `n` elements each side (contract).
                unsafe {
                    let from = std::slice::from_raw_parts(src.cast::<f32>(), n);
                    std::slice::from_raw_parts_mut(dst.cast::<$t>(), n).convert_from_f32_slice(from);
                }
            } else {
                // SAFETY: forwarded contract.
                unsafe { cast_row::<f32, $t>(src, stride, n, dst) }
            }
        }
        unsafe fn $from_half(src: *const u8, stride: isize, n: usize, dst: *mut u8) {
            use half::slice::HalfFloatSliceExt;
            if stride == 2 && src.align_offset(2) == 0 && dst.align_offset(4) == 0 {
                // SAFETY: contiguous, aligned, `n` elements each side (contract).
                unsafe {
                    let from = std::slice::from_raw_parts(src.cast::<$t>(), n);
                    from.convert_to_f32_slice(std::slice::from_raw_parts_mut(dst.cast::<f32>(), n));
                }
            } else {
                // SAFETY: forwarded contract.
                unsafe { cast_row::<$t, f32>(src, stride, n, dst) }
            }
        }
    };
}
half_slice_rows!(f32_to_f16, f16_to_f32, f16);

/// float32 to bfloat16, round to nearest even, NaN kept quiet: written as
/// plain integer arithmetic so the compiler vectorises it.
///
/// # Safety
/// As for [`RowFn`].
unsafe fn f32_to_bf16(src: *const u8, stride: isize, n: usize, dst: *mut u8) {
    #[inline(always)]
    fn round(b: u32) -> u16 {
        let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
        let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        if nan { ((b >> 16) as u16) | 0x40 } else { rounded }
    }
    let dst = dst.cast::<u16>();
    if stride == 4 {
        let src = src.cast::<u32>();
        for i in 0..n {
            // SAFETY: by contract (contiguous row); unaligned-safe.
            unsafe { dst.add(i).write_unaligned(round(src.add(i).read_unaligned())) };
        }
        return;
    }
    for i in 0..n {
        // SAFETY: by contract; unaligned-safe.
        unsafe { dst.add(i).write_unaligned(round(src.offset(i as isize * stride).cast::<u32>().read_unaligned())) };
    }
}

/// `n` contiguous bfloat16 bit patterns widened to float32 ones (a shift).
///
/// # Safety
/// `src` readable for `n` u16 and `dst` writable for `n` u32 (any alignment).
#[inline(always)]
unsafe fn widen_bf16(src: *const u16, dst: *mut u32, n: usize) {
    for i in 0..n {
        // SAFETY: by contract; unaligned-safe.
        unsafe { dst.add(i).write_unaligned(u32::from(src.add(i).read_unaligned()) << 16) };
    }
}

/// The same loop compiled for AVX2 (eight at a time instead of the
/// baseline's four: ml_dtypes' own loop is that wide).
///
/// # Safety
/// As for [`widen_bf16`]; the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen_bf16_avx2(src: *const u16, dst: *mut u32, n: usize) {
    // SAFETY: forwarded contract.
    unsafe { widen_bf16(src, dst, n) }
}

/// bfloat16 to float32: exact, a shift.
///
/// # Safety
/// As for [`RowFn`].
unsafe fn bf16_to_f32(src: *const u8, stride: isize, n: usize, dst: *mut u8) {
    let dst = dst.cast::<u32>();
    if stride == 2 {
        let src = src.cast::<u16>();
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: by contract (a contiguous row); AVX2 is present (checked).
            return unsafe { widen_bf16_avx2(src, dst, n) };
        }
        // SAFETY: by contract (a contiguous row).
        return unsafe { widen_bf16(src, dst, n) };
    }
    for i in 0..n {
        // SAFETY: by contract; unaligned-safe.
        unsafe {
            let b = src.offset(i as isize * stride).cast::<u16>().read_unaligned();
            dst.add(i).write_unaligned(u32::from(b) << 16);
        }
    }
}

/// The row kernel for a conversion.
fn row_kernel(from: Scalar, to: Scalar) -> RowFn {
    match (from, to) {
        (Scalar::F32, Scalar::F16) => return f32_to_f16,
        (Scalar::F16, Scalar::F32) => return f16_to_f32,
        (Scalar::F32, Scalar::Bf16) => return f32_to_bf16,
        (Scalar::Bf16, Scalar::F32) => return bf16_to_f32,
        _ => {}
    }
    macro_rules! to {
        ($s:ty) => {
            match to {
                Scalar::Bool => cast_row::<$s, Bool8> as RowFn,
                Scalar::I8 => cast_row::<$s, i8>,
                Scalar::I16 => cast_row::<$s, i16>,
                Scalar::I32 => cast_row::<$s, i32>,
                Scalar::I64 => cast_row::<$s, i64>,
                Scalar::U8 => cast_row::<$s, u8>,
                Scalar::U16 => cast_row::<$s, u16>,
                Scalar::U32 => cast_row::<$s, u32>,
                Scalar::U64 => cast_row::<$s, u64>,
                Scalar::F16 => cast_row::<$s, f16>,
                Scalar::Bf16 => cast_row::<$s, bf16>,
                Scalar::F32 => cast_row::<$s, f32>,
                Scalar::F64 => cast_row::<$s, f64>,
                Scalar::C64 => cast_row::<$s, Complex<f32>>,
                Scalar::C128 => cast_row::<$s, Complex<f64>>,
            }
        };
    }
    match from {
        Scalar::Bool => to!(Bool8),
        Scalar::I8 => to!(i8),
        Scalar::I16 => to!(i16),
        Scalar::I32 => to!(i32),
        Scalar::I64 => to!(i64),
        Scalar::U8 => to!(u8),
        Scalar::U16 => to!(u16),
        Scalar::U32 => to!(u32),
        Scalar::U64 => to!(u64),
        Scalar::F16 => to!(f16),
        Scalar::Bf16 => to!(bf16),
        Scalar::F32 => to!(f32),
        Scalar::F64 => to!(f64),
        Scalar::C64 => to!(Complex<f32>),
        Scalar::C128 => to!(Complex<f64>),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_byte_data_packs_little_bit_endian_and_back() {
        // int4: element 0 in the low half of byte 0.
        let mut packed = [0u8; 2];
        pack_bits(&[0x1, 0x2, 0xF, 0x7], &mut packed, 4);
        assert_eq!(packed, [0x21, 0x7F]);
        let mut back = [0u8; 4];
        unpack_bits(&packed, &mut back, 4);
        assert_eq!(back, [0x1, 0x2, 0xF, 0x7]);
        // 6 bits: elements cross byte boundaries; against a naive bit loop.
        let values: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(29) & 0x3f).collect();
        let mut packed = vec![0u8; (37 * 6usize).div_ceil(8)];
        pack_bits(&values, &mut packed, 6);
        let mut naive = vec![0u8; packed.len()];
        for (i, v) in values.iter().enumerate() {
            for b in 0..6 {
                if v >> b & 1 == 1 {
                    naive[(i * 6 + b) / 8] |= 1 << ((i * 6 + b) % 8);
                }
            }
        }
        assert_eq!(packed, naive);
        let mut back = vec![0u8; 37];
        unpack_bits(&packed, &mut back, 6);
        assert_eq!(back, values);
        // Upper bits of a padded byte are not data: they are dropped.
        let mut packed = [0u8; 1];
        pack_bits(&[0xF3, 0x11, 0x02, 0xFF], &mut packed, 2);
        assert_eq!(packed, [0b11_10_01_11]);
    }
    use crate::tensor::tests::raw;
    use dlpark::ffi::DLDataType;

    fn wrap<T>(data: *mut T, dtype: DType, shape: &[i64], strides: &[i64]) -> Tensor {
        let r = crate::RawView { dtype: dtype.raw(), ..raw(data.cast(), shape, Some(strides)) };
        // SAFETY: the tests keep the buffers alive longer than the views.
        unsafe { Tensor::wrap(&r, None, std::ptr::null_mut()) }.unwrap()
    }

    fn values<T: Copy>(t: &Tensor) -> Vec<T> {
        // SAFETY: a fresh contiguous copy of `numel` elements of T.
        unsafe { std::slice::from_raw_parts(t.data().cast::<T>(), t.numel() as usize) }.to_vec()
    }

    #[test]
    fn strided_views_copy_in_row_major_order() {
        let mut buf: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let p = buf.as_mut_ptr();
        let c = contiguous(&wrap(p, DType::FLOAT32, &[4, 3], &[1, 4])).unwrap();
        assert!(c.is_contiguous() && c.flags().contains(Flags::IS_COPIED));
        assert_eq!(values::<f32>(&c), [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
        let reversed = wrap(p.wrapping_add(11), DType::FLOAT32, &[6], &[-2]);
        assert_eq!(values::<f32>(&contiguous(&reversed).unwrap()), [11., 9., 7., 5., 3., 1.]);
        let stepped = wrap(p, DType::FLOAT32, &[2, 1, 2], &[6, 99, 2]);
        assert_eq!(values::<f32>(&contiguous(&stepped).unwrap()), [0., 2., 6., 8.]);
        let same = wrap(p, DType::FLOAT32, &[3, 4], &[4, 1]);
        let copy = contiguous(&same).unwrap();
        assert_ne!(copy.data(), same.data());
        assert_eq!(values::<f32>(&copy), buf);
        assert_eq!(contiguous(&wrap(p, DType::FLOAT32, &[0, 3], &[3, 1])).unwrap().numel(), 0);
        assert_eq!(values::<f32>(&contiguous(&wrap(p.wrapping_add(5), DType::FLOAT32, &[], &[])).unwrap()), [5.]);
    }

    #[test]
    fn duplicates_stay_where_dlbridge_can_allocate_else_go_to_the_cpu() {
        let mut buf: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let p = buf.as_mut_ptr();
        let cpu = duplicate(&wrap(p, DType::FLOAT32, &[2, 3], &[1, 2])).unwrap();
        assert_eq!((cpu.device(), cpu.data() != p.cast()), (Device::CPU, true));
        assert_eq!(values::<f32>(&cpu), [0., 2., 4., 1., 3., 5.]);
        // Host memory labelled managed / ROCm host: dlbridge does not allocate
        // there, so the copy lands in CPU memory (not an error).
        for kind in [DLDeviceType::CUDAMANAGED, DLDeviceType::ROCMHOST] {
            let device = dlpark::ffi::DLDevice { device_type: kind, device_id: 0 };
            let r = crate::RawView { device, ..raw(p.cast(), &[6], Some(&[1])) };
            // SAFETY: `buf` outlives the view.
            let labelled = unsafe { Tensor::wrap(&r, None, std::ptr::null_mut()) }.unwrap();
            let c = duplicate(&labelled).unwrap();
            assert_eq!(c.device(), Device::CPU);
            assert_eq!(values::<f32>(&c), buf);
        }
    }

    #[test]
    fn merging_leaves_one_row_for_contiguous_blocks() {
        let w = Walk::new(&[2, 3, 4], &[12, 4, 1], 4);
        assert_eq!((w.rows(), w.row_len, w.row_stride), (1, 24, 4));
        let w = Walk::new(&[2, 3, 4], &[24, 4, 1], 2); // a slice of a wider array
        assert_eq!((w.rows(), w.row_len), (2, 12));
        let w = Walk::new(&[3, 1, 4], &[1, 7, 3], 8); // transposed
        assert_eq!((w.rows(), w.row_len, w.row_stride), (3, 4, 24));
    }

    #[test]
    fn large_transposes_split_across_threads_match_a_naive_copy() {
        let (n, m) = (700usize, 900usize); // 2.5 MB of u32: above the parallel threshold
        let mut buf: Vec<u32> = (0..(n * m) as u32).collect();
        let t = wrap(buf.as_mut_ptr(), DType::UINT32, &[m as i64, n as i64], &[1, m as i64]);
        let got = values::<u32>(&contiguous(&t).unwrap());
        for (k, v) in got.iter().enumerate() {
            let (i, j) = (k / n, k % n);
            assert_eq!(*v, (j * m + i) as u32);
        }
        let half = values::<u16>(&astype(&t, DType::UINT16).unwrap());
        assert_eq!(half[n + 1], ((m + 1) as u32 & 0xffff) as u16);
    }

    #[test]
    fn astype_follows_numpy_rules() {
        let mut f = [1.5f32, -2.7, 0.0, f32::NAN, f32::INFINITY, 65520.0, 1e-8, 300.0];
        let t = wrap(f.as_mut_ptr(), DType::FLOAT32, &[8], &[1]);
        assert_eq!(values::<i32>(&astype(&t, DType::INT32).unwrap())[..3], [1, -2, 0]);
        assert_eq!(values::<u8>(&astype(&t, DType::BOOL).unwrap()), [1, 1, 0, 1, 1, 1, 1, 1]);
        let h: Vec<f16> = values(&astype(&t, DType::FLOAT16).unwrap());
        assert_eq!(h[0], f16::from_f32(1.5));
        assert!(h[3].is_nan() && h[4].is_infinite() && h[5].is_infinite()); // 65520 rounds up to inf
        assert_eq!(h[6].to_bits(), 0); // below half the smallest subnormal
        let b: Vec<bf16> = values(&astype(&t, DType::BFLOAT16).unwrap());
        assert_eq!(b[7], bf16::from_f32(300.0));
        let c: Vec<Complex<f64>> = values(&astype(&t, DType::COMPLEX128).unwrap());
        assert_eq!((c[1].0, c[1].1), (-2.700000047683716, 0.0));
        let mut ints = [-1i64, 256, i64::MAX, 3];
        let t = wrap(ints.as_mut_ptr(), DType::INT64, &[4], &[1]);
        assert_eq!(values::<u8>(&astype(&t, DType::UINT8).unwrap()), [255, 0, 255, 3]); // wraps
        assert_eq!(values::<f64>(&astype(&t, DType::FLOAT64).unwrap())[2], 9.223372036854776e18);
        assert_eq!(values::<u64>(&astype(&t, DType::UINT64).unwrap())[0], u64::MAX);
        let mut z = [Complex(3.5f32, -1.0), Complex(0.0, 2.0)];
        let t = wrap(z.as_mut_ptr(), DType::COMPLEX64, &[2], &[1]);
        assert_eq!(values::<f32>(&astype(&t, DType::FLOAT32).unwrap()), [3.5, 0.0]);
        assert_eq!(values::<u8>(&astype(&t, DType::BOOL).unwrap()), [1, 1]);
        let fp8 = DType::new(DLDataType { code: dlpark::ffi::DLDataTypeCode::FLOAT8_E5M2, bits: 8, lanes: 1 }).unwrap();
        assert_eq!(astype(&t, fp8).unwrap_err().kind(), crate::ErrorKind::UnsupportedDtype);
    }

    #[test]
    fn float64_to_float16_rounds_once() {
        // Just below a tie: float32 would round it onto the tie, then up.
        assert_eq!(f64_to_f16(530.7499882417525).to_bits(), 0x6025);
        assert_eq!(f64_to_f16(19.039063102256144).to_bits(), 0x4cc3);
        assert_eq!(f64_to_f16(65519.99).to_bits(), 0x7bff);
        assert_eq!(f64_to_f16(65520.0).to_bits(), 0x7c00);
        assert_eq!(f64_to_f16(-1e300).to_bits(), 0xfc00);
        assert_eq!(f64_to_f16(2f64.powi(-24)).to_bits(), 0x0001);
        assert_eq!(f64_to_f16(2f64.powi(-25)).to_bits(), 0x0000); // tie to even
        assert_eq!(f64_to_f16(2f64.powi(-25) * 1.0001).to_bits(), 0x0001);
        assert_eq!(f64_to_f16(6.097555160522461e-5).to_bits(), 0x03ff); // largest subnormal
        assert_eq!(f64_to_f16(2f64.powi(-14)).to_bits(), 0x0400);
        assert_eq!(f64_to_f16(-0.0).to_bits(), 0x8000);
        assert!(f64_to_f16(f64::NAN).is_nan());
        for i in 0..=0x7bffu16 {
            let h = f16::from_bits(i);
            assert_eq!(f64_to_f16(h.to_f64()), h, "{i:#x}");
        }
    }

    #[test]
    fn byteswap_reverses_each_component() {
        let mut v = [0x0102_0304u32, 0x0a0b_0c0d];
        let t = wrap(v.as_mut_ptr(), DType::UINT32, &[2], &[1]);
        assert_eq!(values::<u32>(&byteswapped(&t).unwrap()), [0x0403_0201, 0x0d0c_0b0a]);
        let mut z = [1.0f32.to_be_bytes(), 2.0f32.to_be_bytes()];
        let t = wrap(z.as_mut_ptr(), DType::COMPLEX64, &[1], &[1]);
        let c: Vec<Complex<f32>> = values(&byteswapped(&t).unwrap());
        assert_eq!((c[0].0, c[0].1), (1.0, 2.0));
    }
}
