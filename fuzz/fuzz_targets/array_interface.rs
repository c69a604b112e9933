//! Array-interface parsing: arbitrary typestr bytes, dtype hints, shapes,
//! byte strides and readonly flags. No crash; accepted input round-trips
//! through typestr / byte strides; a release callback never runs on failure.
#![no_main]

use dlbridge::array_interface::{self, Fields};
use dlpark::ffi::{DLDataType, DLDataTypeCode};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{BUFFER_BYTES, Bytes, inside};

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let buffer = vec![0u8; BUFFER_BYTES];
    let len = usize::from(b.u8() % 8);
    let raw: Vec<u8> = (0..len).map(|_| b.u8()).collect();
    let typestr = String::from_utf8_lossy(&raw).into_owned();
    let hint = (b.u8() % 2 == 0).then(|| DLDataType {
        code: DLDataTypeCode(b.u8() % 20),
        bits: b.u8(),
        lanes: u16::from(b.u8() % 3),
    });
    let ndim = usize::from(b.u8() % 5);
    let shape: Vec<i64> = (0..ndim).map(|_| b.dim()).collect();
    let strides: Vec<i64> = (0..ndim).map(|_| b.dim().wrapping_mul(i64::from(b.u8() % 9))).collect();
    let fields = Fields {
        typestr: &typestr,
        dtype: hint,
        shape: &shape,
        strides: (b.u8() % 2 == 0).then_some(&strides[..]),
        data: buffer.as_ptr().wrapping_add(2048).cast_mut().cast(),
        readonly: b.u8() % 2 == 0,
        device: dlbridge::Device::CPU.raw(),
    };
    // SAFETY: the buffer outlives the tensor; no release callback.
    if let Ok(t) = unsafe { array_interface::import(&fields, None, std::ptr::null_mut()) } {
        assert_eq!(t.is_readonly(), fields.readonly);
        let text = array_interface::typestr(t.dtype(), true).expect("an imported dtype has a typestr");
        assert_eq!(array_interface::parse_typestr(&text, Some(t.dtype().raw())).unwrap(), t.dtype());
        let bytes = array_interface::byte_strides(&t).unwrap();
        let back = array_interface::element_strides(&bytes, t.itemsize().unwrap()).unwrap();
        assert_eq!(&back[..], t.strides());
        if inside(&t, buffer.as_ptr(), BUFFER_BYTES) && t.nbytes() <= 1 << 26 {
            let _ = dlbridge::copy::contiguous(&t).unwrap();
        }
    }
    // The copying import reads the memory (byte-swapping other-order data):
    // only for layouts inside the buffer, checked with the same dtype in
    // native order.
    let native = array_interface::parse_typestr_order(&typestr, hint)
        .ok()
        .and_then(|(dtype, _)| Some((array_interface::typestr(dtype, true).ok()?, dtype)));
    let Some((native, dtype)) = native else { return };
    let same_layout = Fields { typestr: &native, dtype: Some(dtype.raw()), ..fields };
    // SAFETY: the buffer outlives the view; no release callback.
    if let Ok(view) = unsafe { array_interface::import(&same_layout, None, std::ptr::null_mut()) }
        && inside(&view, buffer.as_ptr(), BUFFER_BYTES)
        && view.nbytes() <= 1 << 26
    {
        // SAFETY: as above.
        let _ = unsafe { array_interface::import_copy(&fields) }.map(|c| assert!(c.is_contiguous()));
    }
});
