//! DLPack producer ([`export`]) and consumer ([`import`]), for both the
//! versioned (`DLManagedTensorVersioned`) and legacy (`DLManagedTensor`)
//! ABIs, written once over `ManagedAbi`.

pub mod export;
pub mod import;

use std::ffi::c_void;
use std::ptr::NonNull;

use dlpark::ffi::{
    DLManagedTensor, DLManagedTensorVersioned, DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION, DLPackVersion, DLTensor,
};

use crate::owner::Owner;

/// A DLPack deleter for the managed struct `M`.
pub(crate) type Deleter<M> = unsafe extern "C" fn(*mut M);

/// What import and export need to know of a managed-tensor ABI.
pub(crate) trait ManagedAbi: Sized + 'static {
    /// A managed struct for `dl` whose `manager_ctx` is `ctx`, freed by
    /// `deleter`.
    fn new(dl: DLTensor, flags: u64, ctx: *mut c_void, deleter: Deleter<Self>) -> Self;
    /// The deleter of our exports of this ABI in blocks of their own: one
    /// non-generic function per ABI, so its address is one symbol that
    /// imports can compare against.
    const EXPORT_DELETER: Deleter<Self>;
    /// The deleter of our exports of this ABI made in a view's slot.
    const SLOT_DELETER: Deleter<Self>;
    /// The producer's deleter.
    fn deleter(&self) -> Option<Deleter<Self>>;
    /// The producer's private context.
    fn manager_ctx(&self) -> *mut c_void;
    /// The version; legacy tensors have none.
    fn version(&self) -> Option<DLPackVersion>;
    /// DLPack flags (0 for legacy).
    fn flags(&self) -> u64;
    /// The tensor description.
    fn dl_tensor(&self) -> &DLTensor;
    /// An owner that runs the deleter of `mt` once.
    fn owner(mt: NonNull<Self>) -> Owner;
}

impl ManagedAbi for DLManagedTensorVersioned {
    const EXPORT_DELETER: Deleter<Self> = export::delete_versioned;
    const SLOT_DELETER: Deleter<Self> = export::vacate_versioned;
    fn new(dl_tensor: DLTensor, flags: u64, manager_ctx: *mut c_void, deleter: Deleter<Self>) -> Self {
        DLManagedTensorVersioned {
            version: DLPackVersion { major: DLPACK_MAJOR_VERSION, minor: DLPACK_MINOR_VERSION },
            manager_ctx,
            deleter: Some(deleter),
            flags: dlpark::DlpackFlags::from_bits_retain(flags),
            dl_tensor,
        }
    }
    fn deleter(&self) -> Option<Deleter<Self>> {
        self.deleter
    }
    fn manager_ctx(&self) -> *mut c_void {
        self.manager_ctx
    }
    fn version(&self) -> Option<DLPackVersion> {
        Some(self.version)
    }
    fn flags(&self) -> u64 {
        self.flags.bits()
    }
    fn dl_tensor(&self) -> &DLTensor {
        &self.dl_tensor
    }
    fn owner(mt: NonNull<Self>) -> Owner {
        Owner::Versioned(mt)
    }
}

impl ManagedAbi for DLManagedTensor {
    const EXPORT_DELETER: Deleter<Self> = export::delete_legacy;
    const SLOT_DELETER: Deleter<Self> = export::vacate_legacy;
    fn new(dl_tensor: DLTensor, _flags: u64, manager_ctx: *mut c_void, deleter: Deleter<Self>) -> Self {
        DLManagedTensor { dl_tensor, manager_ctx, deleter: Some(deleter) }
    }
    fn deleter(&self) -> Option<Deleter<Self>> {
        self.deleter
    }
    fn manager_ctx(&self) -> *mut c_void {
        self.manager_ctx
    }
    fn version(&self) -> Option<DLPackVersion> {
        None
    }
    fn flags(&self) -> u64 {
        0
    }
    fn dl_tensor(&self) -> &DLTensor {
        &self.dl_tensor
    }
    fn owner(mt: NonNull<Self>) -> Owner {
        Owner::Legacy(mt)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicU32, Ordering};

    use dlpark::ffi::{DLDataType, DLDevice, DLTensor};

    use super::*;
    use crate::error::ErrorKind;
    use crate::{DType, Device, Flags, Tensor};
    use dlpark::ffi::DLManagedTensor;

    /// A foreign producer: a boxed managed tensor over a boxed buffer whose
    /// deleter counts its calls.
    #[repr(C)]
    struct Foreign {
        managed: DLManagedTensorVersioned,
        shape: [i64; 2],
        strides: [i64; 2],
        data: [f32; 6],
        deletes: &'static AtomicU32,
    }

    unsafe extern "C" fn foreign_delete(mt: *mut DLManagedTensorVersioned) {
        // SAFETY: `mt` is the first field of a leaked `Box<Foreign>`.
        let f = unsafe { Box::from_raw(mt.cast::<Foreign>()) };
        f.deletes.fetch_add(1, Ordering::SeqCst);
    }

    fn foreign(
        deletes: &'static AtomicU32,
        edit: impl FnOnce(&mut DLManagedTensorVersioned),
    ) -> NonNull<DLManagedTensorVersioned> {
        let dl = DLTensor {
            data: std::ptr::null_mut(),
            device: Device::CPU.raw(),
            ndim: 2,
            dtype: DType::FLOAT32.raw(),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        };
        let mut f = Box::new(Foreign {
            managed: DLManagedTensorVersioned::new(dl, 0, std::ptr::null_mut(), foreign_delete),
            shape: [2, 3],
            strides: [3, 1],
            data: [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            deletes,
        });
        f.managed.deleter = Some(foreign_delete);
        f.managed.dl_tensor.data = f.data.as_mut_ptr().cast::<c_void>();
        f.managed.dl_tensor.shape = f.shape.as_mut_ptr();
        f.managed.dl_tensor.strides = f.strides.as_mut_ptr();
        edit(&mut f.managed);
        NonNull::from(Box::leak(f)).cast()
    }

    #[test]
    fn foreign_deleter_runs_once_after_the_last_holder() {
        static DELETES: AtomicU32 = AtomicU32::new(0);
        // SAFETY: a valid foreign tensor whose ownership we give up.
        let t = unsafe { import::from_versioned(foreign(&DELETES, |_| {})) }.unwrap();
        let exported = export::to_versioned(&t);
        drop(t);
        assert_eq!(DELETES.load(Ordering::SeqCst), 0);
        // SAFETY: our own export; its deleter frees it.
        unsafe {
            assert_eq!((*exported).dl_tensor.strides.read(), 3);
            ((*exported).deleter.unwrap())(exported);
        }
        assert_eq!(DELETES.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn every_failure_runs_the_deleter_exactly_once() {
        static DELETES: AtomicU32 = AtomicU32::new(0);
        type Edit = fn(&mut DLManagedTensorVersioned);
        let edits: Vec<(Edit, ErrorKind)> = vec![
            (|m| m.version.major = 2, ErrorKind::VersionMismatch),
            (|m| m.dl_tensor.ndim = -1, ErrorKind::InvalidNdim),
            (|m| m.dl_tensor.ndim = 65, ErrorKind::InvalidNdim),
            (|m| m.dl_tensor.shape = std::ptr::null_mut(), ErrorKind::InvalidShape),
            (|m| m.dl_tensor.data = std::ptr::null_mut(), ErrorKind::NullData),
            (|m| m.dl_tensor.dtype = DLDataType { lanes: 0, ..m.dl_tensor.dtype }, ErrorKind::UnsupportedDtype),
            (
                |m| m.dl_tensor.device = DLDevice { device_type: dlpark::ffi::DLDeviceType(99), device_id: 0 },
                ErrorKind::UnsupportedDevice,
            ),
            (|m| m.flags = dlpark::DlpackFlags::from_bits_retain(1 << 20), ErrorKind::UnsupportedFlags),
        ];
        for (i, (edit, kind)) in edits.into_iter().enumerate() {
            // SAFETY: ownership given up; the import frees it on failure.
            let e = unsafe { import::from_versioned(foreign(&DELETES, edit)) }.unwrap_err();
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(DELETES.load(Ordering::SeqCst), i as u32 + 1, "{e}");
        }
    }

    #[test]
    fn null_strides_read_as_row_major_and_read_only_survives() {
        static DELETES: AtomicU32 = AtomicU32::new(0);
        let mt = foreign(&DELETES, |m| {
            m.dl_tensor.strides = std::ptr::null_mut();
            m.flags = dlpark::DlpackFlags::READ_ONLY;
        });
        // SAFETY: ownership given up.
        let t = unsafe { import::from_versioned(mt) }.unwrap();
        assert_eq!(t.strides(), &[3, 1]);
        assert!(t.is_readonly());
        assert_eq!(export::to_legacy(&t).unwrap_err().kind(), ErrorKind::ReadOnly);
        let v = export::to_versioned(&t);
        // SAFETY: our export.
        unsafe {
            assert_eq!((*v).flags.bits() & Flags::READ_ONLY.0, Flags::READ_ONLY.0);
            ((*v).deleter.unwrap())(v);
        }
        assert_eq!(DELETES.load(Ordering::SeqCst), 0, "the tensor still holds the memory");
        drop(t);
        assert_eq!(DELETES.load(Ordering::SeqCst), 1);
    }

    /// The first export of a view is made in the view's own block, a
    /// second one while the first lives in a block of its own; each holds
    /// the memory, whatever order the view and the exports go in.
    #[test]
    fn exports_in_the_slot_and_beside_it_hold_the_memory_in_any_order() {
        static DELETES: AtomicU32 = AtomicU32::new(0);
        type Order = fn(Tensor, *mut DLManagedTensorVersioned, *mut DLManagedTensor);
        // Each deletes both exports once and drops the view, in its order.
        let orders: [Order; 3] = [
            |t, v, l| {
                drop(t);
                // SAFETY: our exports, each deleted once.
                unsafe { (((*v).deleter.unwrap())(v), ((*l).deleter.unwrap())(l)) };
            },
            |t, v, l| {
                // SAFETY: as above.
                unsafe { ((*l).deleter.unwrap())(l) };
                drop(t);
                // SAFETY: as above.
                unsafe { ((*v).deleter.unwrap())(v) };
            },
            |t, v, l| {
                // SAFETY: as above.
                unsafe { (((*v).deleter.unwrap())(v), ((*l).deleter.unwrap())(l)) };
                drop(t);
            },
        ];
        for (i, order) in orders.into_iter().enumerate() {
            // SAFETY: ownership given up.
            let t = unsafe { import::from_versioned(foreign(&DELETES, |_| {})) }.unwrap();
            let v = export::to_versioned(&t);
            let l = export::to_legacy(&t).unwrap();
            // SAFETY: live exports.
            unsafe {
                assert!(std::ptr::fn_addr_eq((*v).deleter.unwrap(), DLManagedTensorVersioned::SLOT_DELETER));
                assert!(std::ptr::fn_addr_eq((*l).deleter.unwrap(), DLManagedTensor::EXPORT_DELETER));
                assert_eq!(((*v).dl_tensor.data, (*l).dl_tensor.data), (t.data(), t.data()));
                assert_ne!((*v).dl_tensor.shape, t.shape().as_ptr().cast_mut(), "the export's own shape");
            }
            assert_eq!(t.references(), 3);
            order(t, v, l);
            assert_eq!(DELETES.load(Ordering::SeqCst), i as u32 + 1, "order {i}: the memory is released once");
        }
    }

    #[test]
    fn the_slot_is_free_again_after_its_export_goes() {
        let t = Tensor::zeros(Device::CPU, DType::FLOAT32, &[2, 2]).unwrap();
        for _ in 0..3 {
            let v = export::to_versioned(&t);
            // SAFETY: our export, deleted once.
            unsafe {
                assert!(std::ptr::fn_addr_eq((*v).deleter.unwrap(), DLManagedTensorVersioned::SLOT_DELETER));
                ((*v).deleter.unwrap())(v);
            }
            assert_eq!(t.references(), 1);
        }
        // Back through an import, unchanged: the slot's share becomes the
        // tensor, and the slot is free for the next export.
        let v = export::to_versioned(&t);
        // SAFETY: our export, ownership given up.
        let back = unsafe { import::from_versioned(NonNull::new(v).unwrap()) }.unwrap();
        assert!(back.same_view(&t));
        assert_eq!(t.references(), 2);
        let again = export::to_versioned(&back);
        // SAFETY: as above.
        unsafe {
            assert!(std::ptr::fn_addr_eq((*again).deleter.unwrap(), DLManagedTensorVersioned::SLOT_DELETER));
            ((*again).deleter.unwrap())(again);
        }
    }

    #[test]
    fn threads_exporting_one_view_share_its_slot_safely() {
        let t = Tensor::zeros(Device::CPU, DType::INT32, &[3, 4]).unwrap();
        let (data, shape) = (t.data() as usize, t.shape().to_vec());
        // Exports made on one thread are deleted on another.
        let (send, receive) = std::sync::mpsc::channel::<usize>();
        let deleter = std::thread::spawn(move || {
            for v in receive {
                let v = v as *mut DLManagedTensorVersioned;
                // SAFETY: our export, deleted once, here.
                unsafe { ((*v).deleter.unwrap())(v) };
            }
        });
        std::thread::scope(|s| {
            for _ in 0..4 {
                let send = send.clone();
                let t = &t;
                let shape = &shape;
                s.spawn(move || {
                    for i in 0..20_000 {
                        let v = export::to_versioned(t);
                        // SAFETY: a live export.
                        unsafe {
                            assert_eq!((*v).dl_tensor.data as usize, data);
                            assert_eq!(std::slice::from_raw_parts((*v).dl_tensor.shape, 2), &shape[..]);
                            if i % 2 == 0 {
                                ((*v).deleter.unwrap())(v);
                            } else {
                                send.send(v as usize).unwrap();
                            }
                        }
                    }
                });
            }
        });
        drop(send);
        deleter.join().unwrap();
        assert_eq!(t.references(), 1);
    }

    #[test]
    fn our_own_export_comes_back_without_a_new_layer() {
        let t = Tensor::zeros(Device::CPU, DType::INT16, &[4, 5]).unwrap();
        let mut current = t.clone();
        for _ in 0..1000 {
            let legacy = export::to_legacy(&current).unwrap();
            // SAFETY: our own export, ownership given up.
            let back = unsafe { import::from_legacy(NonNull::new(legacy).unwrap()) }.unwrap();
            let v = export::to_versioned(&back);
            // SAFETY: as above.
            current = unsafe { import::from_versioned(NonNull::new(v).unwrap()) }.unwrap();
        }
        assert_eq!(current.data(), t.data());
        assert!(current.same_view(&t));
        assert_eq!(t.references(), 2);
    }

    /// A consumer's wrapper around one of our exports: a copy of the
    /// struct, its own deleter (which calls ours on the original).
    #[repr(C)]
    struct Rewrapped {
        managed: DLManagedTensorVersioned,
        inner: *mut DLManagedTensorVersioned,
        deletes: &'static AtomicU32,
    }

    unsafe extern "C" fn rewrapped_delete(mt: *mut DLManagedTensorVersioned) {
        // SAFETY: `mt` is the first field of a leaked `Box<Rewrapped>`.
        let r = unsafe { Box::from_raw(mt.cast::<Rewrapped>()) };
        r.deletes.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the wrapped export, deleted once.
        unsafe { ((*r.inner).deleter.unwrap())(r.inner) };
    }

    #[test]
    fn a_copied_export_is_foreign_even_with_our_manager_ctx_or_deleter() {
        static DELETES: AtomicU32 = AtomicU32::new(0);
        let t = Tensor::zeros(Device::CPU, DType::FLOAT32, &[3, 2]).unwrap();
        for keep_our_deleter in [false, true] {
            let inner = export::to_versioned(&t);
            // SAFETY: `inner` is live; the copy keeps its manager_ctx (and, in
            // the second round, even its deleter, though ours is still called
            // only through the wrapper's).
            let mut copy = unsafe { std::ptr::read(inner) };
            copy.deleter = Some(rewrapped_delete);
            let wrapper = Box::leak(Box::new(Rewrapped { managed: copy, inner, deletes: &DELETES }));
            let mt = NonNull::from(&mut wrapper.managed);
            assert!(!export::is_ours(mt));
            if keep_our_deleter {
                wrapper.managed.deleter = Some(DLManagedTensorVersioned::EXPORT_DELETER);
                assert!(!export::is_ours(mt), "the address test alone refuses a copy");
                wrapper.managed.deleter = Some(rewrapped_delete);
            }
            // SAFETY: ownership of the wrapper passes to the import.
            let back = unsafe { import::from_versioned(mt) }.unwrap();
            assert!(!back.same_view(&t));
            assert_eq!((back.data(), back.shape()), (t.data(), t.shape()));
            drop(back);
        }
        assert_eq!(DELETES.load(Ordering::SeqCst), 2, "the wrapper's deleter ran once per import");
        assert_eq!(t.references(), 1);
    }

    #[test]
    fn an_export_changed_by_its_holder_comes_back_as_a_checked_new_view() {
        let t = Tensor::zeros(Device::CPU, DType::INT16, &[4, 5]).unwrap();
        // The holder narrows the shape in the export's own arrays: a new
        // view of the same memory; the tensor itself is untouched.
        let v = export::to_versioned(&t);
        // SAFETY: our export, fields edited as a holder may, then given back.
        let narrowed = unsafe {
            *(*v).dl_tensor.shape.add(1) = 2;
            import::from_versioned(NonNull::new(v).unwrap()).unwrap()
        };
        assert!(!narrowed.same_view(&t));
        assert_eq!((narrowed.shape(), narrowed.strides(), narrowed.data()), (&[4, 2][..], &[5, 1][..], t.data()));
        assert_eq!(t.shape(), &[4, 5]);
        // A view of a view keeps only the memory's first view alive (no chain).
        drop(t);
        let again = export::to_versioned(&narrowed);
        // SAFETY: as above.
        let flagged = unsafe {
            (*again).flags = dlpark::DlpackFlags::READ_ONLY;
            import::from_versioned(NonNull::new(again).unwrap()).unwrap()
        };
        assert!(flagged.is_readonly() && !narrowed.is_readonly());
        // A change that does not validate is refused, and the block freed.
        let bad = export::to_versioned(&narrowed);
        // SAFETY: as above.
        let e = unsafe {
            *(*bad).dl_tensor.strides = i64::MAX;
            import::from_versioned(NonNull::new(bad).unwrap()).unwrap_err()
        };
        assert_eq!(e.kind(), ErrorKind::Overflow);
        assert_eq!(narrowed.references(), 1);
    }
}
