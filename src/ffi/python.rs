//! Entry points for the `dlbridge` Python package (loaded with
//! `ctypes.PyDLL`, so the GIL is held during every call). Not part of the
//! C header: they take and return `PyObject*` as `void*`, and report errors
//! as Python exceptions (NULL return).

use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::guard::{self, non_null};
use super::status::dlb_status;
use super::tensor::{dlb_tensor, into_handle};
use crate::python::api::{self, Api, Exc, Obj};
use crate::python::{self as py, Raised};

/// Runs a body that returns NULL with a Python exception set on failure;
/// a panic becomes a RuntimeError.
fn py_guard<T>(null: T, body: impl FnOnce(&'static Api) -> Result<T, Raised>) -> T {
    let Some(api) = api::try_get() else {
        return null;
    };
    match catch_unwind(AssertUnwindSafe(|| body(api))) {
        Ok(Ok(v)) => v,
        Ok(Err(Raised { .. })) => null,
        Err(_) => {
            // SAFETY: every caller is a PyDLL entry point: the GIL is held.
            unsafe { api.raise_as(Exc::Runtime, "internal error (panic) in dlbridge") };
            null
        }
    }
}

/// Name of the capsules that own a `dlb_tensor` handle for a Python
/// `Tensor`: freeing the capsule frees the handle (a C destructor, so the
/// Python class needs no `__del__`).
const HANDLE: &std::ffi::CStr = c"dlbridge.tensor";

/// The handle inside a handle capsule; anything else raises ValueError.
///
/// # Safety
/// GIL held; `capsule` is a live object.
unsafe fn handle<'a>(api: &Api, capsule: *mut c_void) -> Result<&'a dlb_tensor, Raised> {
    // SAFETY: GIL held; IsValid sets no error.
    if unsafe { (api.capsule_is_valid)(capsule.cast(), HANDLE.as_ptr()) } != 1 {
        // SAFETY: GIL held by contract.
        return Err(unsafe { Raised::with(api, Exc::Value, "not a dlbridge tensor handle") });
    }
    // SAFETY: valid under HANDLE, so it holds a live handle from `into_handle`.
    Ok(unsafe { &*(api.capsule_get_pointer)(capsule.cast(), HANDLE.as_ptr()).cast::<dlb_tensor>() })
}

/// A new Python object made by `body` from the tensor of handle capsule
/// `t`; NULL with the matching exception set on any failure.
///
/// # Safety
/// GIL held; `t` is a live object; `body` may call the CPython API.
unsafe fn object_of(t: *mut c_void, body: impl FnOnce(&Api, &dlb_tensor) -> crate::Result<Obj>) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held, a live object (contract).
        let h = unsafe { handle(api, t) }?;
        // SAFETY: PyDLL entry points hold the GIL.
        body(api, h).map(|o| o.cast()).map_err(|e| unsafe { Raised::from(api, &e) })
    })
}

/// Puts a new handle in a handle capsule (frees it if that fails).
///
/// # Safety
/// GIL held; `h` is a live handle whose ownership passes to the capsule.
unsafe fn own(api: &Api, h: *mut dlb_tensor) -> Result<*mut c_void, Raised> {
    // SAFETY: GIL held; the name is static.
    let capsule = unsafe { (api.capsule_new)(h.cast(), HANDLE.as_ptr(), Some(free_handle)) };
    if capsule.is_null() {
        // SAFETY: nobody else has `h`; Python has set MemoryError.
        unsafe { super::tensor::dlb_tensor_free(h) };
        return Err(Raised(()));
    }
    Ok(capsule.cast())
}

/// The destructor of handle capsules.
unsafe extern "C" fn free_handle(capsule: Obj) {
    let Some(api) = api::try_get() else { return };
    // SAFETY: Python calls this with the GIL on a live capsule made by `own`.
    unsafe {
        let h = (api.capsule_get_pointer)(capsule, HANDLE.as_ptr());
        super::tensor::dlb_tensor_free(h.cast());
    }
}

/// The comma-separated names of the API functions (`which` = 0) or builtin
/// objects (`which` = 1) that `dlb_py_init` takes, in order.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_py_api_names(which: c_int) -> *const c_char {
    if which == 0 { api::FUNCTION_NAMES.as_ptr() } else { api::OBJECT_NAMES.as_ptr() }
}

/// Registers the interpreter's API table (see `dlb_py_api_names`).
///
/// # Safety
/// The arrays hold `nfuncs` / `nobjects` addresses from the running
/// interpreter, in the advertised order.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_init(
    funcs: *const *const c_void,
    nfuncs: usize,
    objects: *const *mut c_void,
    nobjects: usize,
) -> dlb_status {
    guard::status(|| {
        let funcs = non_null(funcs.cast_mut(), "funcs")?;
        let objects = non_null(objects.cast_mut(), "objects")?;
        // SAFETY: arrays of the given lengths, by contract.
        unsafe {
            let funcs = std::slice::from_raw_parts(funcs.as_ptr().cast_const(), nfuncs);
            let objects = std::slice::from_raw_parts(objects.as_ptr().cast::<Obj>().cast_const(), nobjects);
            api::register(funcs, objects)
        }
    })
}

/// Consumes a DLPack capsule into a new handle capsule (NULL + exception).
///
/// # Safety
/// GIL held; `capsule` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_from_capsule(capsule: *mut c_void) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held and a live object, by contract.
        let tensor = unsafe { py::from_capsule(api, capsule.cast()) }?;
        // SAFETY: GIL held; a fresh handle.
        unsafe { own(api, into_handle(tensor)) }
    })
}

/// A new handle capsule over an object's buffer (NULL + exception).
///
/// # Safety
/// GIL held; `obj` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_from_buffer(obj: *mut c_void) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held and a live object, by contract.
        let tensor = unsafe { py::from_buffer(api, obj.cast()) }?;
        // SAFETY: GIL held; a fresh handle.
        unsafe { own(api, into_handle(tensor)) }
    })
}

/// Takes ownership of a handle from the C API (`dlb_tensor_copy`, ...) in
/// a new handle capsule (NULL + exception; the handle is freed then).
///
/// # Safety
/// GIL held; `t` is a live handle nobody else will free.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_own(t: *mut dlb_tensor) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        if t.is_null() {
            // SAFETY: GIL held by contract.
            return Err(unsafe { Raised::with(api, Exc::Value, "tensor handle is NULL") });
        }
        // SAFETY: GIL held; ownership passes by contract.
        unsafe { own(api, t) }
    })
}

/// The handle inside a handle capsule, for the C API (borrowed: valid while
/// the capsule lives). NULL + exception for anything else.
///
/// # Safety
/// GIL held; `capsule` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_handle(capsule: *mut c_void) -> *const dlb_tensor {
    // SAFETY: GIL held and a live object, by contract.
    py_guard(std::ptr::null(), |api| unsafe { handle(api, capsule) }.map(|h| h as *const dlb_tensor))
}

/// Exports the tensor of handle capsule `t` (or, with `copy`, a contiguous
/// copy of it) in a new DLPack capsule, versioned or legacy (NULL +
/// exception on error).
///
/// # Safety
/// GIL held; `t` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_to_capsule(t: *mut c_void, versioned: bool, copy: bool) -> *mut c_void {
    // SAFETY: GIL held, a live object (contract); the body runs with the GIL.
    unsafe {
        object_of(t, |api, h| {
            let tensor = if copy { crate::copy::contiguous(h.tensor())? } else { h.tensor().clone() };
            py::to_capsule(api, tensor, versioned)
        })
    }
}

/// The `__array_interface__` dict of handle capsule `t` (NULL + exception).
///
/// # Safety
/// GIL held; `t` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_array_interface(t: *mut c_void) -> *mut c_void {
    // SAFETY: GIL held, a live object (contract); the body runs with the GIL.
    unsafe { object_of(t, |api, h| py::array_interface_dict(api, h.tensor(), h.byte_strides()?)) }
}

/// The `__array_struct__` capsule of handle capsule `t` (NULL + exception).
///
/// # Safety
/// GIL held; `t` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_array_struct(t: *mut c_void) -> *mut c_void {
    // SAFETY: GIL held, a live object (contract); the body runs with the GIL.
    unsafe { object_of(t, |api, h| py::array_struct(api, h.tensor(), h.byte_strides()?)) }
}

/// `(device_type, device_id)` of handle capsule `t` (NULL + exception).
///
/// # Safety
/// GIL held; `t` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_device(t: *mut c_void) -> *mut c_void {
    // SAFETY: GIL held, a live object (contract); the body runs with the GIL.
    unsafe { object_of(t, |api, h| py::device_tuple(api, h.tensor())) }
}

/// The metadata tuple the Python `Tensor` caches (NULL + exception).
///
/// # Safety
/// GIL held; `t` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_info(t: *mut c_void) -> *mut c_void {
    // SAFETY: GIL held, a live object (contract); the body runs with the GIL.
    unsafe { object_of(t, |api, h| py::info_tuple(api, h.tensor())) }
}

/// A release callback (for `dlb_tensor_wrap` and friends) that drops one
/// reference to the Python object `ctx`, taking the GIL; it does nothing
/// once the interpreter is finalizing.
///
/// # Safety
/// `ctx` is an object whose reference was taken for this release.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_decref(ctx: *mut c_void) {
    // SAFETY: forwarded contract.
    guard::value((), || unsafe { py::release_object(ctx) })
}

/// Raises the Python exception for the calling thread's last failed
/// dlbridge call (same mapping as every other entry point); returns NULL.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_py_raise_last() -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        let e = guard::last_error_value()
            .unwrap_or_else(|| crate::Error::new(crate::ErrorKind::InvalidArgument, "internal error in dlbridge"));
        // SAFETY: PyDLL entry points hold the GIL.
        Err(unsafe { Raised::from(api, &e) })
    })
}
