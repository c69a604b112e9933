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

/// The handle behind `t`; NULL raises ValueError.
///
/// # Safety
/// GIL held; `t` is NULL or a live handle.
unsafe fn handle<'a>(api: &Api, t: *const dlb_tensor) -> Result<&'a dlb_tensor, Raised> {
    // SAFETY: NULL or live, by contract.
    match unsafe { t.as_ref() } {
        Some(h) => Ok(h),
        // SAFETY: GIL held by contract.
        None => Err(unsafe { Raised::with(api, Exc::Value, "tensor handle is NULL") }),
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

/// Consumes a DLPack capsule into a new handle (NULL + exception on error).
///
/// # Safety
/// GIL held; `capsule` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_from_capsule(capsule: *mut c_void) -> *mut dlb_tensor {
    // SAFETY: GIL held and a live object, by contract.
    py_guard(std::ptr::null_mut(), |api| unsafe { py::from_capsule(api, capsule.cast()) }.map(into_handle))
}

/// A new handle over an object's buffer (NULL + exception on error).
///
/// # Safety
/// GIL held; `obj` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_from_buffer(obj: *mut c_void) -> *mut dlb_tensor {
    // SAFETY: GIL held and a live object, by contract.
    py_guard(std::ptr::null_mut(), |api| unsafe { py::from_buffer(api, obj.cast()) }.map(into_handle))
}

/// Exports `t` (or, with `copy`, a contiguous copy of it) in a new DLPack
/// capsule, versioned or legacy (NULL + exception on error).
///
/// # Safety
/// GIL held; `t` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_to_capsule(t: *const dlb_tensor, versioned: bool, copy: bool) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held, live handle (contract).
        let tensor = unsafe { handle(api, t) }?.tensor();
        let tensor = if copy { crate::copy::contiguous(tensor) } else { Ok(tensor.clone()) };
        // SAFETY: GIL held by contract.
        let capsule = tensor.and_then(|t| unsafe { py::to_capsule(api, t, versioned) });
        capsule.map(|c| c.cast()).map_err(|e| {
            // SAFETY: PyDLL entry points hold the GIL.
            unsafe { Raised::from(api, &e) }
        })
    })
}

/// The `__array_interface__` dict of `t` (NULL + exception on error).
///
/// # Safety
/// GIL held; `t` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_array_interface(t: *const dlb_tensor) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held, live handle (contract).
        let h = unsafe { handle(api, t) }?;
        // SAFETY: GIL held by contract.
        let dict = h.byte_strides().and_then(|s| unsafe { py::array_interface_dict(api, h.tensor(), s) });
        dict.map(|d| d.cast()).map_err(|e| {
            // SAFETY: PyDLL entry points hold the GIL.
            unsafe { Raised::from(api, &e) }
        })
    })
}

/// The metadata tuple the Python `Tensor` caches (NULL + exception on error).
///
/// # Safety
/// GIL held; `t` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_info(t: *const dlb_tensor) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held, live handle (contract).
        let h = unsafe { handle(api, t) }?;
        // SAFETY: GIL held by contract.
        unsafe { py::info_tuple(api, h.tensor()) }.map(|o| o.cast()).map_err(|e| {
            // SAFETY: PyDLL entry points hold the GIL.
            unsafe { Raised::from(api, &e) }
        })
    })
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
