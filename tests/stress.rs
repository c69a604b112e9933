//! Thread stress through the C ABI: 8 threads x 100k cycles of wrap /
//! export / import / retain / free, every handle freed on a thread other than
//! its creator's. At the end nothing is alive and every release callback ran
//! exactly once. (Its own test binary: the live count is process-wide.)

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use dlbridge::ffi::status::{dlb_live_tensor_count, dlb_status};
use dlbridge::ffi::tensor::*;
use dlpark::ffi::{DLDataType, DLDataTypeCode, DLDevice, DLDeviceType, DLManagedTensorVersioned};

const THREADS: usize = 8;

fn cycles() -> usize {
    std::env::var("DLB_STRESS_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

static RELEASED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn release(ctx: *mut c_void) {
    assert_eq!(ctx as usize, 0xfeed);
    RELEASED.fetch_add(1, Ordering::Relaxed);
}

struct Handle(*mut dlb_tensor);
// SAFETY: handles may be freed from any thread (the contract under test).
unsafe impl Send for Handle {}

#[test]
fn eight_threads_exchange_and_free_across_threads() {
    static DATA: [f32; 64] = [1.0; 64];
    let n = cycles();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Handle>()).unzip();
    std::thread::scope(|s| {
        for (me, rx) in receivers.into_iter().enumerate() {
            let next = senders[(me + 1) % THREADS].clone();
            s.spawn(move || {
                let cpu = DLDevice { device_type: DLDeviceType::CPU, device_id: 0 };
                let f32t = DLDataType { code: DLDataTypeCode::FLOAT, bits: 32, lanes: 1 };
                let shape = [8i64, 8];
                for i in 0..n {
                    let mut t = std::ptr::null_mut();
                    let mut mt: *mut DLManagedTensorVersioned = std::ptr::null_mut();
                    let mut back = std::ptr::null_mut();
                    // SAFETY: valid arguments; DATA is static.
                    unsafe {
                        let ok = dlb_tensor_wrap(
                            DATA.as_ptr().cast_mut().cast(),
                            cpu,
                            f32t,
                            2,
                            shape.as_ptr(),
                            std::ptr::null(),
                            0,
                            0,
                            Some(release),
                            0xfeed as *mut c_void,
                            &mut t,
                        );
                        assert_eq!(ok, dlb_status::DLB_OK);
                        assert_eq!(dlb_tensor_to_dlpack_versioned(t, &mut mt), dlb_status::DLB_OK);
                        assert_eq!(dlb_tensor_from_dlpack_versioned(mt, &mut back), dlb_status::DLB_OK);
                        let extra = dlb_tensor_retain(back);
                        assert_eq!((*dlb_tensor_dltensor(extra)).data, DATA.as_ptr().cast_mut().cast());
                        dlb_tensor_free(back);
                        // One handle is freed here, the other by the next thread.
                        if i % 2 == 0 {
                            dlb_tensor_free(t);
                            next.send(Handle(extra)).unwrap();
                        } else {
                            dlb_tensor_free(extra);
                            next.send(Handle(t)).unwrap();
                        }
                    }
                    while let Ok(h) = rx.try_recv() {
                        // SAFETY: a live handle made by another thread, freed once.
                        unsafe { dlb_tensor_free(h.0) };
                    }
                }
                drop(next);
                for h in rx {
                    // SAFETY: as above.
                    unsafe { dlb_tensor_free(h.0) };
                }
            });
        }
        drop(senders);
    });
    assert_eq!(dlb_live_tensor_count(), 0);
    assert_eq!(RELEASED.load(Ordering::Relaxed), THREADS * n);
}
