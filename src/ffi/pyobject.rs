//! For CPython extensions written in C or C++: any Python object to a
//! handle, and a handle to a `dlbridge.Tensor`, without writing a protocol.
//! The objects are `PyObject *` passed as `void *` (the header does not
//! include Python.h).

use std::ffi::c_void;

use super::guard::{self, non_null};
use super::status::dlb_status;
use super::tensor::{dlb_tensor, into_handle, tensor_arg};
use crate::error::{Error, ErrorKind, Result, bail};
use crate::python::object::{Py, Raised, Ref};
use crate::python::{api, module};

/// `dlb_tensor_from_pyobject` flag: a copy is allowed where sharing is
/// impossible (data in the other byte order, an `__array__` result);
/// without it such objects are refused (DLB_ERR_PYTHON, BufferError).
pub const DLB_PY_ALLOW_COPY: u32 = 1;

/// The GIL token of a Python entry point, the CPython API bound first (a
/// process that never imported dlbridge binds it here).
///
/// # Safety
/// The calling thread holds the GIL.
unsafe fn python<'py>() -> Result<Py<'py>> {
    if api::try_get().is_none() {
        // SAFETY: the GIL is held (contract).
        unsafe { api::register() }
            .map_err(|e| Error::new(ErrorKind::Python, format!("no usable Python interpreter: {}", e.message())))?;
    }
    // SAFETY: the GIL is held (contract); the table is registered.
    Ok(unsafe { Py::assume() }.expect("registered"))
}

/// A core error for a Python failure: DLB_ERR_PYTHON, the exception's text
/// as the message (the exception stays set).
fn python_error(py: Py<'_>, _raised: Raised) -> Error {
    let text = py.error_text().unwrap_or_else(|| "a Python call failed".into());
    Error::new(ErrorKind::Python, text)
}

/// A new handle over the memory of any Python object that shares it: a
/// `dlbridge.Tensor`, a DLPack capsule, an object whose type publishes
/// DLPack 1.3's C exchange API (PyTorch), or anything `dlbridge.asarray`
/// takes (`__dlpack__`, `__cuda_array_interface__`, `__array_interface__`,
/// the buffer protocol, `__array__`); the fastest protocol the object has
/// is used. Zero copy; `flags` may allow copies (`DLB_PY_ALLOW_COPY`). The
/// handle keeps the memory alive (and the object, where that is what owns
/// it), on any thread, until `dlb_tensor_free`.
///
/// For CPython extension modules: call with the GIL held, from the process
/// whose interpreter imported (or can import) the `dlbridge` package, and
/// link the library that package loads (`dlbridge.capi.path`), so both use
/// one copy of dlbridge. On failure `*out` is untouched, the status is
/// DLB_ERR_PYTHON (or another for bad arguments) and a Python exception is
/// set as well, so the extension can return NULL.
///
/// # Safety
/// The GIL is held; `obj` is NULL or a live `PyObject *`; `out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_from_pyobject(
    obj: *mut c_void,
    flags: u32,
    out: *mut *mut dlb_tensor,
) -> dlb_status {
    guard::status(|| {
        // SAFETY: GIL held (contract).
        let py = unsafe { python() }?;
        let made = (|| {
            let out = non_null(out, "out")?;
            // SAFETY: a live object (contract).
            let Some(obj) = (unsafe { Ref::from_ptr(obj.cast()) }) else {
                bail!(NullArgument, "obj is NULL");
            };
            if flags & !DLB_PY_ALLOW_COPY != 0 {
                bail!(UnsupportedFlags, "unknown flags {:#x} (DLB_PY_ALLOW_COPY is {DLB_PY_ALLOW_COPY})", flags);
            }
            let tensor = module::tensor_from_object(py, obj, flags & DLB_PY_ALLOW_COPY != 0)
                .map_err(|raised| python_error(py, raised))?;
            // SAFETY: non-NULL and writable (contract).
            unsafe { out.write(into_handle(tensor)) };
            Ok(())
        })();
        raise_too(py, made)
    })
}

/// A new reference to a `dlbridge.Tensor` holding the tensor of `t` (the
/// handle stays the caller's: free it as usual). For returning results
/// from a CPython extension; the `dlbridge` package is imported if it was
/// not. Same rules as `dlb_tensor_from_pyobject` (GIL, one library copy,
/// DLB_ERR_PYTHON with the exception set on failure).
///
/// # Safety
/// The GIL is held; `t` is NULL or a live handle; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_tensor_to_pyobject(t: *const dlb_tensor, out: *mut *mut c_void) -> dlb_status {
    guard::status(|| {
        // SAFETY: GIL held (contract).
        let py = unsafe { python() }?;
        let made = (|| {
            // SAFETY: a live handle (contract).
            let tensor = unsafe { tensor_arg(t, "t") }?;
            let out = non_null(out, "out")?;
            let object = module::tensor_to_object(py, &tensor).map_err(|raised| python_error(py, raised))?;
            // SAFETY: non-NULL and writable (contract); the reference passes to the caller.
            unsafe { out.write(object.into_ptr().cast()) };
            Ok(())
        })();
        raise_too(py, made)
    })
}

/// Sets a Python exception for a failure that has none yet (bad
/// arguments), so every failure comes with one.
fn raise_too(py: Py<'_>, made: Result<()>) -> Result<()> {
    if let Err(e) = &made
        && e.kind() != ErrorKind::Python
    {
        py.error(e);
    }
    made
}
