//! Differential: copies, byte swaps and astype on random layouts (negative,
//! zero and stepped strides, 0-d, size-0) against a naive element-by-element
//! reference, and the strided kernels against the contiguous ones.
#![no_main]

use dlbridge::{DType, RawView, Tensor, copy};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{BUFFER_BYTES, Bytes};

const TYPES: [&str; 15] = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
];

/// Whether an element of `dtype` (its bytes, native order) is a NaN.
fn is_nan(x: &[u8], dtype: DType) -> bool {
    let bits = |n: usize| x[..n].iter().rev().fold(0u64, |v, b| (v << 8) | u64::from(*b));
    match dtype.name().as_str() {
        "float16" => bits(2) & 0x7c00 == 0x7c00 && bits(2) & 0x03ff != 0,
        "bfloat16" => bits(2) & 0x7f80 == 0x7f80 && bits(2) & 0x007f != 0,
        "float32" | "complex64" => f32::from_bits(bits(4) as u32).is_nan(),
        "float64" | "complex128" => f64::from_bits(bits(8)).is_nan(),
        _ => false,
    }
}

fn bytes(t: &Tensor) -> &[u8] {
    // SAFETY: a compact copy of `nbytes` bytes that `t` keeps alive.
    unsafe { std::slice::from_raw_parts(t.data().cast::<u8>(), t.nbytes() as usize) }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut buffer: Vec<u8> = (0..BUFFER_BYTES).map(|i| (i * 7 + 3) as u8).collect();
    for x in buffer.iter_mut().take(256) {
        *x = b.u8(); // some fuzzer-chosen bit patterns (NaNs, subnormals...)
    }
    let dtype = DType::from_name(TYPES[usize::from(b.u8()) % TYPES.len()]).unwrap();
    let target = DType::from_name(TYPES[usize::from(b.u8()) % TYPES.len()]).unwrap();
    let itemsize = dtype.itemsize(false).unwrap() as i64;
    let ndim = usize::from(b.u8() % 5);
    let shape: Vec<i64> = (0..ndim).map(|_| i64::from(b.u8() % 5)).collect();
    let strides: Vec<i64> = (0..ndim).map(|_| i64::from(b.u8() as i8 % 7)).collect();
    // Start in the middle so negative strides stay inside the buffer.
    let start = (BUFFER_BYTES as i64 / 2 / itemsize) * itemsize;
    let reach: i64 = shape.iter().zip(&strides).map(|(d, s)| (d - 1).max(0) * s.abs() * itemsize).sum();
    if reach + itemsize > BUFFER_BYTES as i64 / 2 {
        return;
    }
    let raw = RawView {
        data: buffer.as_mut_ptr().wrapping_add(start as usize).cast(),
        device: dlbridge::Device::CPU.raw(),
        dtype: dtype.raw(),
        shape: &shape,
        strides: Some(&strides),
        byte_offset: 0,
        flags: 0,
    };
    // SAFETY: every element lies inside `buffer`, which outlives the views.
    let t = unsafe { Tensor::wrap(&raw, None, std::ptr::null_mut()) }.unwrap();
    let c = copy::contiguous(&t).unwrap();
    // Naive reference: visit indices in row-major order.
    let mut naive = Vec::new();
    let numel: i64 = shape.iter().product();
    for flat in 0..numel {
        let (mut rest, mut offset) = (flat, start);
        for d in (0..ndim).rev() {
            offset += (rest % shape[d]) * strides[d] * itemsize;
            rest /= shape[d];
        }
        naive.extend_from_slice(&buffer[offset as usize..(offset + itemsize) as usize]);
    }
    assert_eq!(bytes(&c), &naive[..]);
    let swapped_twice = copy::byteswapped(&copy::byteswapped(&t).unwrap()).unwrap();
    assert_eq!(bytes(&swapped_twice), &naive[..]);
    let strided = copy::astype(&t, target).unwrap();
    let compact = copy::astype(&c, target).unwrap();
    // Bit for bit, except that two NaNs are equal: the vectorised (compact)
    // and scalar (strided) float16 paths may pick different NaN payloads.
    let w = strided.itemsize().unwrap();
    for (x, y) in bytes(&strided).chunks(w).zip(bytes(&compact).chunks(w)) {
        assert!(x == y || (is_nan(x, target) && is_nan(y, target)), "astype {dtype} -> {target}: {x:?} vs {y:?}");
    }
});
