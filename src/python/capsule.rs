//! DLPack capsules, both ways: exports that free themselves when nobody
//! consumes them, and imports that rename the capsule before taking it.

use std::ffi::{CStr, c_void};
use std::ptr::NonNull;

use dlpark::ffi::{DLManagedTensor, DLManagedTensorVersioned};

use super::api::{self, Exc, Obj};
use super::object::{Owned, Py, PyResult, Ref};
use crate::dlpack::{export, import};
use crate::tensor::Tensor;

/// Capsule names (static for the process lifetime, as the spec requires).
pub const VERSIONED: &CStr = c"dltensor_versioned";
/// Legacy capsule name.
pub const LEGACY: &CStr = c"dltensor";
const USED_VERSIONED: &CStr = c"used_dltensor_versioned";
const USED_LEGACY: &CStr = c"used_dltensor";

/// Exports `tensor` in a new capsule: "dltensor_versioned" or, when the
/// consumer cannot take versioned capsules, "dltensor" (refused for
/// read-only data). The capsule frees the tensor if nobody consumes it.
pub fn export(py: Py<'_>, tensor: Tensor, versioned: bool) -> PyResult<Owned> {
    let (ptr, name): (*mut c_void, &CStr) = if versioned {
        (export::to_versioned(&tensor).cast(), VERSIONED)
    } else {
        (py.ok(export::to_legacy(&tensor))?.cast(), LEGACY)
    };
    // SAFETY: GIL held (token); the name is static.
    let capsule = py.owned(unsafe { (py.api().capsule_new)(ptr, name.as_ptr(), Some(destructor)) });
    if capsule.is_err() {
        // SAFETY: nobody else has seen `ptr`: free it through its own deleter.
        unsafe { delete_managed(ptr, versioned) };
    }
    capsule
}

/// Whether `o` is a DLPack capsule not yet consumed (for tests: the entry
/// points import any capsule, and `import` says what is wrong with it).
#[cfg(test)]
pub fn is_dlpack(py: Py<'_>, o: Ref<'_>) -> bool {
    if !py.is_exactly(o, py.api().capsule_type) {
        return false;
    }
    // SAFETY: GIL held; IsValid sets no error.
    let is = |name: &CStr| unsafe { (py.api().capsule_is_valid)(o.as_ptr(), name.as_ptr()) == 1 };
    is(VERSIONED) || is(LEGACY)
}

/// Consumes a DLPack capsule: renames it "used_..." first (so its destructor
/// will not free it and a second consume is refused), then imports it.
/// A capsule already consumed (ValueError) or not a DLPack capsule
/// (TypeError) is refused with a clear message, never a crash.
pub fn import(py: Py<'_>, capsule: Ref<'_>) -> PyResult<Tensor> {
    let api = py.api();
    // SAFETY: GIL held; IsValid sets no error.
    let is = |name: &CStr| unsafe { (api.capsule_is_valid)(capsule.as_ptr(), name.as_ptr()) == 1 };
    let (name, used, versioned) = if is(VERSIONED) {
        (VERSIONED, USED_VERSIONED, true)
    } else if is(LEGACY) {
        (LEGACY, USED_LEGACY, false)
    } else if is(USED_VERSIONED) || is(USED_LEGACY) {
        return Err(py.raise(Exc::Value, "this DLPack capsule was already consumed (a capsule can be consumed once)"));
    } else {
        return Err(py.raise(Exc::Type, "expected a DLPack capsule named \"dltensor_versioned\" or \"dltensor\""));
    };
    // SAFETY: the capsule is valid under `name`; renaming a valid capsule
    // cannot fail.
    let ptr = unsafe {
        let ptr = (api.capsule_get_pointer)(capsule.as_ptr(), name.as_ptr());
        (api.capsule_set_name)(capsule.as_ptr(), used.as_ptr());
        ptr
    };
    // From here we own the managed tensor; the import frees it on failure.
    let Some(ptr) = NonNull::new(ptr) else {
        return Err(py.raise(Exc::Value, "the DLPack capsule holds a NULL pointer"));
    };
    // SAFETY: a producer's managed tensor whose ownership the rename took.
    let imported =
        unsafe { if versioned { import::from_versioned(ptr.cast()) } else { import::from_legacy(ptr.cast()) } };
    py.ok(imported)
}

/// Frees the managed tensor of a capsule nobody consumed (our own export).
/// Freeing device memory may wait for the device: the GIL is released then.
unsafe extern "C" fn destructor(capsule: Obj) {
    let Some(api) = api::try_get() else { return };
    let _ = std::panic::catch_unwind(|| {
        for (name, versioned) in [(VERSIONED, true), (LEGACY, false)] {
            // SAFETY: Python calls this with the GIL, on a live capsule.
            unsafe {
                if (api.capsule_is_valid)(capsule, name.as_ptr()) == 1 {
                    let ptr = (api.capsule_get_pointer)(capsule, name.as_ptr());
                    let dl = if versioned {
                        &(*ptr.cast::<DLManagedTensorVersioned>()).dl_tensor
                    } else {
                        &(*ptr.cast::<DLManagedTensor>()).dl_tensor
                    };
                    if dl.device.device_type == dlpark::ffi::DLDeviceType::CPU {
                        delete_managed(ptr, versioned);
                    } else {
                        let ptr = ptr as usize; // an address: the closure is Send
                        api.without_gil(|| delete_managed(ptr as *mut c_void, versioned));
                    }
                }
            }
        }
    });
}

/// Calls a managed tensor's own deleter.
///
/// # Safety
/// `ptr` is an unconsumed managed tensor of the given ABI.
unsafe fn delete_managed(ptr: *mut c_void, versioned: bool) {
    // SAFETY: by contract.
    unsafe {
        if versioned {
            let mt = ptr.cast::<DLManagedTensorVersioned>();
            if let Some(deleter) = (*mt).deleter {
                deleter(mt)
            }
        } else {
            let mt = ptr.cast::<DLManagedTensor>();
            if let Some(deleter) = (*mt).deleter {
                deleter(mt)
            }
        }
    }
}
