#![allow(dead_code)]
//! Shared by the fuzz targets: a cursor over the fuzzer's bytes and a
//! buffer that stands for the foreign memory.

pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |v, _| (v << 8) | u64::from(self.u8()))
    }
    pub fn i64(&mut self) -> i64 {
        self.u64() as i64
    }
    pub fn i32(&mut self) -> i32 {
        self.u64() as i32
    }
    /// A small signed value, usually in -4..8, sometimes any i64.
    pub fn dim(&mut self) -> i64 {
        match self.u8() {
            0..=200 => i64::from(self.u8() % 12) - 4,
            _ => self.i64(),
        }
    }
}

/// The "foreign" memory every target points into.
pub const BUFFER_BYTES: usize = 4096;

/// Whether `t`'s validated byte extent lies inside `[base, base + len)`, so
/// the target may read it (the library trusts the producer on this).
pub fn inside(t: &dlbridge::Tensor, base: *const u8, len: usize) -> bool {
    let Some(itemsize) = t.itemsize() else {
        let start = t.data() as usize;
        return start >= base as usize && start + t.nbytes() as usize <= base as usize + len;
    };
    match dlbridge::layout::byte_extent(t.shape(), t.strides(), itemsize, t.numel()) {
        Ok(e) => {
            let first = t.data() as i128;
            first + i128::from(e.lo) >= base as i128 && first + i128::from(e.hi) <= base as i128 + len as i128
        }
        Err(_) => false,
    }
}
