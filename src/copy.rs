//! Explicit copies on the host: any strided layout to a fresh compact
//! row-major tensor, marked IS_COPIED.

use crate::device::Device;
use crate::error::{Result, bail};
use crate::tensor::{Flags, Tensor};

/// A compact row-major copy of a host-accessible tensor, in new CPU memory,
/// writable, with IS_COPIED set (sub-byte padding is kept).
pub fn contiguous(src: &Tensor) -> Result<Tensor> {
    if !src.device().is_host_accessible() {
        bail!(
            UnsupportedDevice,
            "copying {} memory needs CUDA transfers; only host memory can be copied here",
            src.device()
        );
    }
    let padded = src.flags() & Flags::SUBBYTE_PADDED;
    let dst = Tensor::zeros_with_flags(Device::CPU, src.dtype(), src.shape(), padded | Flags::IS_COPIED)?;
    if src.numel() == 0 {
        return Ok(dst);
    }
    let out = dst.data().cast::<u8>();
    let from = src.data().cast::<u8>();
    match src.itemsize() {
        _ if src.is_contiguous() => {
            // SAFETY: both spans hold `nbytes` bytes (validated source, fresh
            // destination) and do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(from, out, src.nbytes() as usize) }
        }
        Some(itemsize) => {
            // SAFETY: every offset visited lies inside the validated extent of
            // `src`; `out` advances over exactly `numel` items of fresh memory.
            unsafe { copy_strided(from, out, src.shape(), src.strides(), itemsize) };
        }
        None => bail!(InvalidStrides, "packed sub-byte data is always contiguous"),
    }
    Ok(dst)
}

/// Copies the elements of a strided view, in row-major order, to `out`.
///
/// # Safety
/// `from` with `shape`/`strides` (elements of `itemsize` bytes) must be
/// readable; `out` must have room for all elements.
unsafe fn copy_strided(from: *const u8, out: *mut u8, shape: &[i64], strides: &[i64], itemsize: usize) {
    let ndim = shape.len();
    let mut index = vec![0i64; ndim];
    let mut offset: isize = 0; // bytes from `from` to the current element
    let inner_len = shape[ndim - 1];
    let inner_step = (strides[ndim - 1] * itemsize as i64) as isize;
    let mut written = 0usize;
    loop {
        let mut p = offset;
        for _ in 0..inner_len {
            // SAFETY: by contract, `p` stays inside the source and `written`
            // inside the destination.
            unsafe { std::ptr::copy_nonoverlapping(from.offset(p), out.add(written), itemsize) };
            p += inner_step;
            written += itemsize;
        }
        // Advance the outer index like an odometer.
        let mut d = ndim - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            offset += (strides[d] * itemsize as i64) as isize;
            if index[d] < shape[d] {
                break;
            }
            offset -= (strides[d] * shape[d] * itemsize as i64) as isize;
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::tests::raw;

    fn values(t: &Tensor) -> Vec<f32> {
        // SAFETY: a fresh contiguous float32 copy.
        unsafe { std::slice::from_raw_parts(t.data().cast::<f32>(), t.numel() as usize) }.to_vec()
    }

    #[test]
    fn strided_views_copy_in_row_major_order() {
        let mut buf: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let p = buf.as_mut_ptr();
        // SAFETY: `buf` outlives each view; no release.
        let wrap = |data: *mut f32, shape: &[i64], strides: &[i64]| unsafe {
            Tensor::wrap(&raw(data.cast(), shape, Some(strides)), None, std::ptr::null_mut()).unwrap()
        };
        let transposed = wrap(p, &[4, 3], &[1, 4]);
        let c = contiguous(&transposed).unwrap();
        assert!(c.is_contiguous() && c.flags().contains(Flags::IS_COPIED));
        assert_eq!(values(&c), [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
        let reversed = wrap(p.wrapping_add(11), &[6], &[-2]);
        assert_eq!(values(&contiguous(&reversed).unwrap()), [11., 9., 7., 5., 3., 1.]);
        let stepped = wrap(p, &[2, 2], &[6, 2]);
        assert_eq!(values(&contiguous(&stepped).unwrap()), [0., 2., 6., 8.]);
        let same = wrap(p, &[12], &[1]);
        let copy = contiguous(&same).unwrap();
        assert_ne!(copy.data(), same.data());
        assert_eq!(values(&copy), buf);
        let empty = wrap(p, &[0, 3], &[3, 1]);
        assert_eq!(contiguous(&empty).unwrap().numel(), 0);
        let scalar = wrap(p.wrapping_add(5), &[], &[]);
        assert_eq!(values(&contiguous(&scalar).unwrap()), [5.]);
    }
}
