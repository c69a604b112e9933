//! Foreign DLManagedTensorVersioned / DLManagedTensor validation: arbitrary
//! version, ndim, shape, strides, dtype, device, byte_offset, flags, NULL
//! pointers. Whatever the input: no crash, the deleter runs exactly once,
//! and an accepted tensor can be exported, copied and described. Its
//! exports (the first made in the view's own block, the second beside it)
//! come back through an import after a holder changed their fields (within
//! their own arrays): each is either the same view, or a new view validated
//! like any foreign tensor, or refused; every export ends exactly once.
#![no_main]

use std::cell::Cell;
use std::ffi::c_void;

use dlbridge::dlpack::{export, import};
use dlpark::ffi::*;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{BUFFER_BYTES, Bytes, inside};

thread_local! { static DELETES: Cell<u32> = const { Cell::new(0) }; }

unsafe extern "C" fn versioned_deleter(_: *mut DLManagedTensorVersioned) {
    DELETES.with(|d| d.set(d.get() + 1));
}
unsafe extern "C" fn legacy_deleter(_: *mut DLManagedTensor) {
    DELETES.with(|d| d.set(d.get() + 1));
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let buffer = vec![0u8; BUFFER_BYTES];
    // 64 slots, so any ndim the library accepts stays inside our arrays.
    let mut shape = [0i64; 64];
    let mut strides = [0i64; 64];
    for s in shape.iter_mut() {
        *s = b.dim();
    }
    for s in strides.iter_mut() {
        *s = b.dim();
    }
    let choice = b.u8();
    let ndim = if choice & 1 == 0 { i32::from(b.u8() % 8) } else { b.i32() };
    let dl = DLTensor {
        data: match b.u8() % 8 {
            0 => std::ptr::null_mut(),
            1 => b.u64() as *mut c_void,
            n => buffer.as_ptr().wrapping_add(usize::from(n) * 64).cast_mut().cast(),
        },
        device: DLDevice { device_type: DLDeviceType(u32::from(b.u8() % 20)), device_id: i32::from(b.u8() as i8) },
        ndim,
        dtype: DLDataType { code: DLDataTypeCode(b.u8() % 20), bits: b.u8(), lanes: u16::from(b.u8() % 4) },
        shape: if choice & 2 == 0 { shape.as_mut_ptr() } else { std::ptr::null_mut() },
        strides: if choice & 4 == 0 { strides.as_mut_ptr() } else { std::ptr::null_mut() },
        byte_offset: if choice & 8 == 0 { u64::from(b.u8()) } else { b.u64() },
    };
    DELETES.with(|d| d.set(0));
    // The producer's structs outlive the tensor (until the deleter has run).
    let mut versioned = DLManagedTensorVersioned {
        version: DLPackVersion { major: u32::from(b.u8() % 3), minor: u32::from(b.u8()) },
        manager_ctx: std::ptr::null_mut(),
        deleter: Some(versioned_deleter),
        flags: dlpark::DlpackFlags::from_bits_retain(b.u64() & 0x3f),
        dl_tensor: dl,
    };
    let mut legacy =
        DLManagedTensor { dl_tensor: dl, manager_ctx: std::ptr::null_mut(), deleter: Some(legacy_deleter) };
    let imported = if choice & 16 == 0 {
        // SAFETY: a live struct whose arrays hold 64 values; ownership passes.
        unsafe { import::from_versioned(std::ptr::NonNull::from(&mut versioned)) }
    } else {
        // SAFETY: as above.
        unsafe { import::from_legacy(std::ptr::NonNull::from(&mut legacy)) }
    };
    if let Ok(t) = imported {
        assert_eq!(DELETES.with(Cell::get), 0);
        let v = export::to_versioned(&t);
        // SAFETY: our own export, deleted once.
        unsafe { ((*v).deleter.unwrap())(v) };
        let in_slot = export::to_versioned(&t);
        let beside = export::to_versioned(&t);
        for mt in [in_slot, beside] {
            // SAFETY: our live export; the holder edits its own fields and
            // arrays (never more dimensions than exported), then gives it back.
            let back = unsafe {
                let dl = &mut (*mt).dl_tensor;
                let n = dl.ndim as usize;
                match b.u8() % 8 {
                    0 if n > 0 => *dl.shape.add(usize::from(b.u8()) % n) = b.dim(),
                    1 if n > 0 => *dl.strides.add(usize::from(b.u8()) % n) = b.dim(),
                    2 => dl.ndim = i32::from(b.u8()) % (dl.ndim + 1),
                    3 => dl.byte_offset = b.u64(),
                    4 => (*mt).flags = dlpark::DlpackFlags::from_bits_retain(b.u64() & 0xff),
                    5 => dl.data = dl.data.wrapping_byte_add(b.u64() as usize),
                    6 => dl.strides = std::ptr::null_mut(),
                    _ => {}
                }
                import::from_versioned(std::ptr::NonNull::new(mt).unwrap())
            };
            if let Ok(back) = back {
                let _ = back.nbytes();
            }
        }
        let _ = dlbridge::array_interface::typestr(t.dtype(), t.flags().contains(dlbridge::Flags::SUBBYTE_PADDED));
        // Stride-0 (broadcast) views may be petabytes once compacted: those get
        // OutOfMemory; copy only what fits in memory here.
        if t.device().is_host_accessible() && inside(&t, buffer.as_ptr(), BUFFER_BYTES) && t.nbytes() <= 1 << 26 {
            let c = dlbridge::copy::contiguous(&t).expect("a readable host tensor copies");
            assert!(c.is_contiguous());
            assert_eq!(c.nbytes(), t.nbytes());
        }
        drop(t);
    }
    assert_eq!(DELETES.with(Cell::get), 1, "the deleter must run exactly once");
});
