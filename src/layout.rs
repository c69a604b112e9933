//! Shapes and strides: validation, contiguity and byte extents, with every
//! size computation checked for overflow.

use smallvec::SmallVec;

use crate::error::{Result, bail};

/// Most dimensions a tensor may have (NumPy 2's limit).
pub const MAX_NDIM: usize = 64;

/// Shape or strides; inline up to 6 dimensions.
pub type Dims = SmallVec<[i64; 6]>;

/// Dimensions kept inline in a [`Dims`].
pub const INLINE: usize = 6;

/// Copies dimensions into new [`Dims`]. Up to six are moved as a
/// constant-size copy per length: a call to `memcpy` for one or two values
/// would cost more than the copy (this is on every import's path).
#[inline]
pub fn dims(s: &[i64]) -> Dims {
    let mut buf = std::mem::MaybeUninit::<[i64; INLINE]>::uninit();
    let dst = buf.as_mut_ptr().cast::<i64>();
    if s.len() > INLINE {
        return Dims::from_slice(s);
    }
    // SAFETY: at most `INLINE` values are copied into the buffer, and the
    // vector reads only the first `s.len()`.
    unsafe {
        copy_dims(s, dst);
        Dims::from_buf_and_len_unchecked(buf, s.len())
    }
}

/// Copies `src` to `dst` as [`dims`] does (constant-size copies up to six).
///
/// # Safety
/// `dst` must be writable for `src.len()` values and not overlap `src`.
#[inline]
pub unsafe fn copy_dims(src: &[i64], dst: *mut i64) {
    let s = src.as_ptr();
    // SAFETY: `src.len()` values are read and written, by contract.
    unsafe {
        match src.len() {
            0 => {}
            1 => std::ptr::copy_nonoverlapping(s, dst, 1),
            2 => std::ptr::copy_nonoverlapping(s, dst, 2),
            3 => std::ptr::copy_nonoverlapping(s, dst, 3),
            4 => std::ptr::copy_nonoverlapping(s, dst, 4),
            5 => std::ptr::copy_nonoverlapping(s, dst, 5),
            6 => std::ptr::copy_nonoverlapping(s, dst, 6),
            n => std::ptr::copy_nonoverlapping(s, dst, n),
        }
    }
}

/// Checks a C `ndim`.
pub fn check_ndim(ndim: i32) -> Result<usize> {
    match usize::try_from(ndim) {
        Ok(n) if n <= MAX_NDIM => Ok(n),
        _ => bail!(InvalidNdim, "ndim is {ndim}: must be between 0 and {MAX_NDIM}"),
    }
}

/// Reads `ndim` values from a C array. `Ok(None)` when `ptr` is NULL and
/// `ndim > 0`; for `ndim == 0` the pointer is not read (it may be NULL).
///
/// # Safety
/// A non-NULL `ptr` with `ndim > 0` must point to `ndim` readable `i64`
/// that stay unchanged for `'a`.
pub unsafe fn dims_from_raw<'a>(ptr: *const i64, ndim: usize) -> Option<&'a [i64]> {
    if ndim == 0 {
        Some(&[])
    } else if ptr.is_null() {
        None
    } else {
        // SAFETY: non-NULL and `ndim` readable values, by this function's contract.
        Some(unsafe { std::slice::from_raw_parts(ptr, ndim) })
    }
}

/// Number of elements. Refuses negative dimensions, and shapes whose
/// non-zero dimensions multiply past `i64::MAX` (their row-major strides
/// could not be written down).
pub fn numel(shape: &[i64]) -> Result<u64> {
    sizes(shape).map(|(numel, _)| numel)
}

/// As [`numel`], also returning the product of the dimensions with zeros
/// counted as 1: the element count a compact layout spans (the scale of its
/// row-major strides). One pass over the shape for both.
pub fn sizes(shape: &[i64]) -> Result<(u64, u64)> {
    let mut nonzero: i64 = 1;
    let mut empty = false;
    for (i, &d) in shape.iter().enumerate() {
        if d < 0 {
            bail!(InvalidShape, "shape[{i}] is {d}: dimensions must be >= 0");
        }
        empty |= d == 0;
        match nonzero.checked_mul(d.max(1)) {
            Some(p) => nonzero = p,
            None => bail!(Overflow, "shape {shape:?}: element count overflows 64 bits"),
        }
    }
    Ok((if empty { 0 } else { nonzero as u64 }, nonzero as u64))
}

/// Compact row-major strides, in elements, for a shape that passed [`numel`].
pub fn row_major(shape: &[i64]) -> Dims {
    let mut strides: Dims = SmallVec::from_elem(0, shape.len());
    let mut step: i64 = 1;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = step;
        step = step.wrapping_mul(d.max(1));
    }
    strides
}

/// Whether the strides describe compact row-major (C) order. Strides of
/// size-1 dimensions are ignored, and a tensor with no elements is
/// contiguous whatever its strides.
pub fn is_row_major(shape: &[i64], strides: &[i64]) -> bool {
    if shape.contains(&0) {
        return true;
    }
    let mut expected: i64 = 1;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 {
            if s != expected {
                return false;
            }
            expected = expected.wrapping_mul(d);
        }
    }
    true
}

/// Bytes a strided view touches, relative to its first element: the lowest
/// offset (`<= 0`, negative strides reach below the first element) and one
/// past the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Lowest byte offset reached (<= 0).
    pub lo: i64,
    /// One past the highest byte offset reached.
    pub hi: i64,
}

impl Extent {
    /// Bytes spanned.
    pub fn len(&self) -> u64 {
        (self.hi - self.lo) as u64
    }

    /// True when nothing is touched.
    pub fn is_empty(&self) -> bool {
        self.hi == self.lo
    }
}

/// The byte extent of `numel` elements of `itemsize` bytes laid out by
/// `shape` and `strides` (elements). Also refuses any stride whose byte
/// value overflows 64 bits, so byte strides can always be derived later.
/// Every step is checked 64-bit arithmetic: any intermediate value past
/// `i64` would make the span overflow `isize` anyway.
#[inline]
pub fn byte_extent(shape: &[i64], strides: &[i64], itemsize: usize, numel: u64) -> Result<Extent> {
    let item = itemsize as i64;
    let (mut lo, mut hi) = (0i64, item);
    for (i, (&d, &s)) in shape.iter().zip(strides).enumerate() {
        // `i64::MIN` bytes has no positive counterpart: refused as well.
        let Some(step) = s.checked_mul(item).filter(|b| *b != i64::MIN) else {
            bail!(Overflow, "strides[{i}] = {s} elements of {itemsize} bytes overflows 64-bit byte strides");
        };
        if numel == 0 {
            continue; // nothing is touched: any stride is fine
        }
        // `d >= 1` here (no dimension is 0 when there are elements).
        let reach = (d - 1).checked_mul(step);
        let ok = match reach {
            Some(r) if r < 0 => lo.checked_add(r).map(|v| lo = v).is_some(),
            Some(r) => hi.checked_add(r).map(|v| hi = v).is_some(),
            None => false,
        };
        if !ok || hi.checked_sub(lo).is_none() {
            bail!(Overflow, "shape {shape:?} with strides {strides:?}: byte extent overflows");
        }
    }
    if numel == 0 {
        return Ok(Extent { lo: 0, hi: 0 });
    }
    Ok(Extent { lo, hi })
}

/// Bytes of `numel` packed sub-byte elements of `bits` each.
pub fn packed_bytes(numel: u64, bits: u32) -> Result<u64> {
    match numel.checked_mul(u64::from(bits)) {
        Some(b) if b.div_ceil(8) <= isize::MAX as u64 => Ok(b.div_ceil(8)),
        _ => bail!(Overflow, "{numel} elements of {bits} bits overflow the address space"),
    }
}

/// A strided layout as rows, for 2-D copies (`cuMemcpy2D`): blocks, one
/// per index of the outer dimensions (in row-major order, at `offsets`
/// bytes from the data pointer), each `height` rows of `width` contiguous
/// bytes, `pitch` bytes apart. Written back to back, the blocks are the
/// compact row-major layout of the same elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Contiguous bytes per row.
    pub width: usize,
    /// Rows per block.
    pub height: usize,
    /// Bytes from one row's start to the next (at least `width`).
    pub pitch: usize,
    /// Outer dimensions: (size, byte stride).
    outer: SmallVec<[(i64, i64); 6]>,
}

impl Rows {
    /// The rows of a non-empty layout whose byte strides were validated (no
    /// overflow), with rows at most `max_pitch` apart (a dimension whose
    /// stride is negative, zero, below a row's width or past `max_pitch`
    /// becomes blocks of one row each: blocks may be anywhere, overlap or
    /// repeat, as a gather only reads them); None when there would be more
    /// than `max_blocks` blocks.
    pub fn plan(shape: &[i64], strides: &[i64], itemsize: usize, max_pitch: usize, max_blocks: usize) -> Option<Rows> {
        let item = itemsize as i64;
        let dims: SmallVec<[(i64, i64); 6]> =
            shape.iter().zip(strides).filter(|(d, _)| **d != 1).map(|(&d, &s)| (d, s * item)).collect();
        let (mut width, mut inner) = (item, dims.len());
        while inner > 0 && dims[inner - 1].1 == width {
            width *= dims[inner - 1].0;
            inner -= 1;
        }
        let (mut height, mut pitch) = (1, width);
        if inner > 0 && dims[inner - 1].1 >= width && dims[inner - 1].1 as u64 <= max_pitch as u64 {
            (height, pitch) = dims[inner - 1];
            inner -= 1;
        }
        let outer: SmallVec<[(i64, i64); 6]> = dims[..inner].iter().copied().collect();
        let blocks = outer.iter().try_fold(1usize, |n, &(d, _)| n.checked_mul(d as usize))?;
        if blocks > max_blocks {
            return None;
        }
        Some(Rows { width: width as usize, height: height as usize, pitch: pitch as usize, outer })
    }

    /// How many blocks (2-D copies) the layout takes.
    pub fn blocks(&self) -> usize {
        self.outer.iter().map(|&(d, _)| d as usize).product()
    }

    /// Each block's start, in bytes from the data pointer, in row-major order.
    pub fn offsets(&self) -> impl Iterator<Item = i64> + '_ {
        let mut index: SmallVec<[i64; 6]> = SmallVec::from_elem(0, self.outer.len());
        let mut at = 0i64;
        (0..self.blocks()).map(move |k| {
            if k > 0 {
                for (i, &(d, s)) in self.outer.iter().enumerate().rev() {
                    index[i] += 1;
                    at += s;
                    if index[i] < d {
                        break;
                    }
                    at -= s * d;
                    index[i] = 0;
                }
            }
            at
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn ndim_limits() {
        assert_eq!(check_ndim(0).unwrap(), 0);
        assert_eq!(check_ndim(64).unwrap(), 64);
        for bad in [-1, 65, i32::MAX, i32::MIN] {
            assert_eq!(check_ndim(bad).unwrap_err().kind(), ErrorKind::InvalidNdim);
        }
    }

    #[test]
    fn numel_checks_sign_and_overflow() {
        assert_eq!(numel(&[]).unwrap(), 1);
        assert_eq!(numel(&[2, 3, 4]).unwrap(), 24);
        assert_eq!(numel(&[2, 0, 4]).unwrap(), 0);
        let e = numel(&[2, -1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidShape);
        assert_eq!(e.message(), "shape[1] is -1: dimensions must be >= 0");
        assert_eq!(numel(&[1 << 32, 1 << 32]).unwrap_err().kind(), ErrorKind::Overflow);
        assert_eq!(numel(&[0, 1 << 40, 1 << 40]).unwrap_err().kind(), ErrorKind::Overflow);
    }

    #[test]
    fn contiguity_ignores_size_one_and_size_zero_dims() {
        assert!(is_row_major(&[2, 3], &[3, 1]));
        assert!(!is_row_major(&[2, 3], &[1, 2]));
        assert!(is_row_major(&[2, 1, 3], &[3, 999, 1]));
        assert!(is_row_major(&[1, 1], &[-5, 7]));
        assert!(is_row_major(&[2, 0, 3], &[1, 1, 1]));
        assert!(is_row_major(&[], &[]));
        assert!(!is_row_major(&[3], &[-1]));
        assert_eq!(&row_major(&[2, 3, 4])[..], &[12, 4, 1]);
        assert_eq!(&row_major(&[2, 0, 4])[..], &[4, 4, 1]);
    }

    #[test]
    fn extents_cover_negative_strides_and_refuse_overflow() {
        let e = byte_extent(&[3, 4], &[4, 1], 4, 12).unwrap();
        assert_eq!((e.lo, e.hi), (0, 48));
        let e = byte_extent(&[3], &[-2], 8, 3).unwrap();
        assert_eq!((e.lo, e.hi), (-32, 8));
        assert_eq!(byte_extent(&[0, 5], &[1, 1 << 62], 1, 0).unwrap().len(), 0);
        assert_eq!(byte_extent(&[2], &[1 << 62], 4, 2).unwrap_err().kind(), ErrorKind::Overflow);
        assert_eq!(byte_extent(&[1], &[i64::MAX], 2, 1).unwrap_err().kind(), ErrorKind::Overflow);
        assert_eq!(
            byte_extent(&[1 << 31, 1 << 31], &[1 << 31, 1], 8, 1 << 62).unwrap_err().kind(),
            ErrorKind::Overflow
        );
        assert_eq!(packed_bytes(3, 4).unwrap(), 2);
        assert_eq!(packed_bytes(u64::MAX, 4).unwrap_err().kind(), ErrorKind::Overflow);
    }

    /// Gathers `shape`/`strides` (elements) of a byte array laid out from
    /// `base` through `Rows` and element by element; both must agree.
    fn gather_both_ways(shape: &[i64], strides: &[i64], item: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        let extent = byte_extent(shape, strides, item, numel(shape).unwrap()).unwrap();
        let memory: Vec<u8> = (0..extent.len()).map(|i| (i * 7 % 251) as u8).collect();
        let base = -extent.lo;
        let rows = Rows::plan(shape, strides, item, usize::MAX, 1 << 20)?;
        let mut fast = Vec::new();
        for offset in rows.offsets() {
            for r in 0..rows.height {
                let at = (base + offset) as usize + r * rows.pitch;
                fast.extend_from_slice(&memory[at..at + rows.width]);
            }
        }
        let mut slow = Vec::new();
        let n = numel(shape).unwrap();
        for flat in 0..n {
            let (mut rest, mut at) = (flat as i64, base);
            for (&d, &s) in shape.iter().zip(strides).rev() {
                at += (rest % d) * s * item as i64;
                rest /= d;
            }
            slow.extend_from_slice(&memory[at as usize..at as usize + item]);
        }
        Some((fast, slow))
    }

    #[test]
    fn rows_gather_what_an_element_walk_gathers() {
        // A column of a matrix: one block of single-element rows.
        let rows = Rows::plan(&[1000], &[4096], 4, usize::MAX, 16).unwrap();
        assert_eq!((rows.width, rows.height, rows.pitch, rows.blocks()), (4, 1000, 16384, 1));
        // Contiguous: one row.
        let rows = Rows::plan(&[3, 4], &[4, 1], 8, usize::MAX, 16).unwrap();
        assert_eq!((rows.width, rows.height, rows.blocks()), (96, 1, 1));
        let cases: &[(&[i64], &[i64])] = &[
            (&[5, 3], &[10, 1]),
            (&[5, 3], &[1, 5]),
            (&[2, 3, 4], &[40, 8, 2]),
            (&[2, 3, 4], &[-12, 4, 1]),
            (&[4, 1, 3], &[7, 99, 2]),
            (&[3, 2, 2, 5], &[60, 25, 10, 1]),
            (&[6], &[-3]),
            (&[2, 2], &[0, 1]),
            (&[2, 3], &[1, 1]),
        ];
        for &(shape, strides) in cases {
            for item in [1, 2, 8] {
                let (fast, slow) = gather_both_ways(shape, strides, item).unwrap();
                assert_eq!(fast, slow, "{shape:?} {strides:?} x{item}");
            }
        }
        // Too many blocks, or a pitch past the limit (then the rows become blocks).
        assert!(Rows::plan(&[100, 100, 2], &[400, 3, 1], 1, usize::MAX, 99).is_none());
        let rows = Rows::plan(&[3, 2], &[1 << 20, 1], 1, 1000, 16).unwrap();
        assert_eq!((rows.height, rows.blocks()), (1, 3));
    }
}
