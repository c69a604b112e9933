//! The CPython C API, reached through function pointers the Python package
//! registers once at import (from `ctypes.pythonapi`). The library never
//! links libpython, so C users load it without Python.

use std::ffi::{CStr, c_char, c_int, c_longlong, c_ulonglong, c_void};
use std::sync::OnceLock;

use crate::error::{Error, ErrorKind, Result, bail};

/// An opaque CPython object.
#[repr(C)]
pub struct PyObject {
    _opaque: [u8; 0],
}

/// `PyObject*`.
pub type Obj = *mut PyObject;

/// CPython's `Py_buffer` (stable ABI since 3.11); fields as in CPython.
#[repr(C)]
#[allow(missing_docs)]
pub struct PyBuffer {
    pub buf: *mut c_void,
    pub obj: Obj,
    pub len: isize,
    pub itemsize: isize,
    pub readonly: c_int,
    pub ndim: c_int,
    pub format: *mut c_char,
    pub shape: *mut isize,
    pub strides: *mut isize,
    pub suboffsets: *mut isize,
    pub internal: *mut c_void,
}

/// The API functions, in registration order. An entry "A|B" takes the
/// first name the interpreter has (3.11 spells `_Py_IsFinalizing`).
pub const FUNCTION_NAMES: &CStr = c"PyCapsule_New,PyCapsule_GetPointer,PyCapsule_IsValid,PyCapsule_SetName,\
PyErr_SetString,Py_IncRef,Py_DecRef,PyGILState_Ensure,PyGILState_Release,Py_IsFinalizing|_Py_IsFinalizing,\
PyObject_GetBuffer,PyBuffer_Release,PyDict_New,PyDict_SetItemString,PyTuple_New,PyTuple_SetItem,\
PyLong_FromLongLong,PyLong_FromUnsignedLongLong,PyUnicode_FromString,PyDescr_NewMethod,PyObject_GetAttr,\
PyUnicode_InternFromString,PyObject_VectorcallMethod,PyTuple_Size,PyTuple_GetItem,PyLong_AsLong,\
PyUnicode_CompareWithASCIIString,PyErr_Clear,PyObject_Type,PyCFunction_NewEx,PyType_GenericAlloc,\
PyObject_SetAttr,PyObject_Vectorcall,PyDescr_NewGetSet";

/// The builtin objects, in registration order (their `id()`).
pub const OBJECT_NAMES: &CStr =
    c"None,True,False,BufferError,TypeError,ValueError,MemoryError,RuntimeError,AttributeError";

type Destructor = unsafe extern "C" fn(Obj);

/// CPython's `PyMethodDef` (stable ABI).
#[repr(C)]
pub struct PyMethodDef {
    /// The method's name.
    pub name: *const c_char,
    /// The C function (its signature follows `flags`).
    pub meth: *const c_void,
    /// `METH_*` flags.
    pub flags: c_int,
    /// The docstring.
    pub doc: *const c_char,
}

// SAFETY: static, immutable data (pointers to static strings and a function).
unsafe impl Sync for PyMethodDef {}

/// CPython's `PyGetSetDef` (stable ABI).
#[repr(C)]
pub struct PyGetSetDef {
    /// The attribute's name.
    pub name: *const c_char,
    /// `PyObject *get(PyObject *self, void *closure)`.
    pub get: *const c_void,
    /// The setter (NULL: read-only).
    pub set: *const c_void,
    /// The docstring.
    pub doc: *const c_char,
    /// Passed to `get` and `set`.
    pub closure: *mut c_void,
}

// SAFETY: static, immutable data (pointers to static strings and a function).
unsafe impl Sync for PyGetSetDef {}

/// `METH_FASTCALL | METH_KEYWORDS`.
pub const METH_FASTCALL_KEYWORDS: c_int = 0x0080 | 0x0002;
/// `METH_NOARGS`: `PyObject *(*)(PyObject *self, PyObject *unused)`.
pub const METH_NOARGS: c_int = 0x0004;

/// The Python exceptions dlbridge raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exc {
    /// BufferError: the data cannot be exchanged.
    Buffer,
    /// TypeError.
    Type,
    /// ValueError.
    Value,
    /// MemoryError.
    Memory,
    /// RuntimeError.
    Runtime,
    /// AttributeError (what a missing protocol attribute raises).
    Attribute,
}

/// The registered table.
#[allow(missing_docs)]
pub struct Api {
    pub capsule_new: unsafe extern "C" fn(*mut c_void, *const c_char, Option<Destructor>) -> Obj,
    pub capsule_get_pointer: unsafe extern "C" fn(Obj, *const c_char) -> *mut c_void,
    pub capsule_is_valid: unsafe extern "C" fn(Obj, *const c_char) -> c_int,
    pub capsule_set_name: unsafe extern "C" fn(Obj, *const c_char) -> c_int,
    pub err_set_string: unsafe extern "C" fn(Obj, *const c_char),
    pub incref: unsafe extern "C" fn(Obj),
    pub decref: unsafe extern "C" fn(Obj),
    pub gil_ensure: unsafe extern "C" fn() -> c_int,
    pub gil_release: unsafe extern "C" fn(c_int),
    pub is_finalizing: unsafe extern "C" fn() -> c_int,
    pub get_buffer: unsafe extern "C" fn(Obj, *mut PyBuffer, c_int) -> c_int,
    pub buffer_release: unsafe extern "C" fn(*mut PyBuffer),
    pub dict_new: unsafe extern "C" fn() -> Obj,
    pub dict_set_item_string: unsafe extern "C" fn(Obj, *const c_char, Obj) -> c_int,
    pub tuple_new: unsafe extern "C" fn(isize) -> Obj,
    pub tuple_set_item: unsafe extern "C" fn(Obj, isize, Obj) -> c_int,
    pub long_from_long_long: unsafe extern "C" fn(c_longlong) -> Obj,
    pub long_from_unsigned_long_long: unsafe extern "C" fn(c_ulonglong) -> Obj,
    pub unicode_from_string: unsafe extern "C" fn(*const c_char) -> Obj,
    pub descr_new_method: unsafe extern "C" fn(Obj, *const PyMethodDef) -> Obj,
    pub get_attr: unsafe extern "C" fn(Obj, Obj) -> Obj,
    pub intern: unsafe extern "C" fn(*const c_char) -> Obj,
    pub vectorcall_method: unsafe extern "C" fn(Obj, *const Obj, usize, Obj) -> Obj,
    pub tuple_size: unsafe extern "C" fn(Obj) -> isize,
    pub tuple_get_item: unsafe extern "C" fn(Obj, isize) -> Obj,
    pub long_as_long: unsafe extern "C" fn(Obj) -> std::ffi::c_long,
    pub unicode_eq_ascii: unsafe extern "C" fn(Obj, *const c_char) -> c_int,
    pub err_clear: unsafe extern "C" fn(),
    pub type_of: unsafe extern "C" fn(Obj) -> Obj,
    pub cfunction_new: unsafe extern "C" fn(*const PyMethodDef, Obj, Obj) -> Obj,
    pub generic_alloc: unsafe extern "C" fn(Obj, isize) -> Obj,
    pub set_attr: unsafe extern "C" fn(Obj, Obj, Obj) -> c_int,
    pub vectorcall: unsafe extern "C" fn(Obj, *const Obj, usize, Obj) -> Obj,
    pub descr_new_getset: unsafe extern "C" fn(Obj, *const PyGetSetDef) -> Obj,
    pub none: Obj,
    pub true_: Obj,
    pub false_: Obj,
    pub buffer_error: Obj,
    pub type_error: Obj,
    pub value_error: Obj,
    pub memory_error: Obj,
    pub runtime_error: Obj,
    pub attribute_error: Obj,
}

// SAFETY: function pointers and immortal builtin objects; CPython serialises
// their use through the GIL, which every caller holds or takes.
unsafe impl Send for Api {}
// SAFETY: as above; the table is never mutated after registration.
unsafe impl Sync for Api {}

static API: OnceLock<Api> = OnceLock::new();

/// The registered table, or an error before `register`.
pub fn get() -> Result<&'static Api> {
    match API.get() {
        Some(api) => Ok(api),
        None => bail!(InvalidArgument, "the Python API table is not registered (import dlbridge first)"),
    }
}

/// The table, only when registered (for destructors, which cannot fail).
pub fn try_get() -> Option<&'static Api> {
    API.get()
}

/// Registers the table; later calls keep the first one.
///
/// # Safety
/// `funcs` must hold the addresses of the functions in [`FUNCTION_NAMES`]
/// order, `objects` those of [`OBJECT_NAMES`], from the running interpreter.
pub unsafe fn register(funcs: &[*const c_void], objects: &[Obj]) -> Result<()> {
    let count = |names: &CStr| names.to_bytes().split(|c| *c == b',').count();
    let (nf, no) = (count(FUNCTION_NAMES), count(OBJECT_NAMES));
    if funcs.len() != nf || objects.len() != no {
        bail!(InvalidArgument, "expected {nf} functions and {no} objects, got {} and {}", funcs.len(), objects.len());
    }
    if funcs.iter().any(|f| f.is_null()) || objects.iter().any(|o| o.is_null()) {
        return Err(Error::new(ErrorKind::NullArgument, "a Python API entry is NULL"));
    }
    // SAFETY: each address is the named CPython function, whose C signature
    // is the field's type (by this function's contract).
    let api = unsafe {
        Api {
            capsule_new: fn_at(funcs[0]),
            capsule_get_pointer: fn_at(funcs[1]),
            capsule_is_valid: fn_at(funcs[2]),
            capsule_set_name: fn_at(funcs[3]),
            err_set_string: fn_at(funcs[4]),
            incref: fn_at(funcs[5]),
            decref: fn_at(funcs[6]),
            gil_ensure: fn_at(funcs[7]),
            gil_release: fn_at(funcs[8]),
            is_finalizing: fn_at(funcs[9]),
            get_buffer: fn_at(funcs[10]),
            buffer_release: fn_at(funcs[11]),
            dict_new: fn_at(funcs[12]),
            dict_set_item_string: fn_at(funcs[13]),
            tuple_new: fn_at(funcs[14]),
            tuple_set_item: fn_at(funcs[15]),
            long_from_long_long: fn_at(funcs[16]),
            long_from_unsigned_long_long: fn_at(funcs[17]),
            unicode_from_string: fn_at(funcs[18]),
            descr_new_method: fn_at(funcs[19]),
            get_attr: fn_at(funcs[20]),
            intern: fn_at(funcs[21]),
            vectorcall_method: fn_at(funcs[22]),
            tuple_size: fn_at(funcs[23]),
            tuple_get_item: fn_at(funcs[24]),
            long_as_long: fn_at(funcs[25]),
            unicode_eq_ascii: fn_at(funcs[26]),
            err_clear: fn_at(funcs[27]),
            type_of: fn_at(funcs[28]),
            cfunction_new: fn_at(funcs[29]),
            generic_alloc: fn_at(funcs[30]),
            set_attr: fn_at(funcs[31]),
            vectorcall: fn_at(funcs[32]),
            descr_new_getset: fn_at(funcs[33]),
            none: objects[0],
            true_: objects[1],
            false_: objects[2],
            buffer_error: objects[3],
            type_error: objects[4],
            value_error: objects[5],
            memory_error: objects[6],
            runtime_error: objects[7],
            attribute_error: objects[8],
        }
    };
    let _ = API.set(api);
    Ok(())
}

/// A function pointer of type `F` from its address.
///
/// # Safety
/// `address` must be a function whose C signature is `F`.
unsafe fn fn_at<F: Copy>(address: *const c_void) -> F {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*const c_void>()) };
    // SAFETY: same size (checked above); the signature is the caller's contract.
    unsafe { std::mem::transmute_copy(&address) }
}

impl Api {
    /// Sets the Python exception the spec asks for: BufferError for what
    /// cannot be exchanged (dtype, layout, device, read-only, byte order),
    /// ValueError for bad values, MemoryError, RuntimeError for CUDA.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn raise(&self, e: &Error) {
        let exc = match e.kind() {
            ErrorKind::NullArgument
            | ErrorKind::InvalidArgument
            | ErrorKind::InvalidTypestr
            | ErrorKind::InvalidNdim
            | ErrorKind::InvalidShape => Exc::Value,
            ErrorKind::OutOfMemory => Exc::Memory,
            ErrorKind::Cuda | ErrorKind::CudaUnavailable => Exc::Runtime,
            _ => Exc::Buffer,
        };
        // SAFETY: GIL held by contract.
        unsafe { self.raise_as(exc, e.message()) }
    }

    /// Sets the exception `exc` with `message`.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn raise_as(&self, exc: Exc, message: &str) {
        let exc = match exc {
            Exc::Buffer => self.buffer_error,
            Exc::Type => self.type_error,
            Exc::Value => self.value_error,
            Exc::Memory => self.memory_error,
            Exc::Runtime => self.runtime_error,
            Exc::Attribute => self.attribute_error,
        };
        let text = std::ffi::CString::new(message.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: GIL held by contract; `exc` is a registered builtin.
        unsafe { (self.err_set_string)(exc, text.as_ptr()) }
    }

    /// Runs `body` with the GIL held, unless the interpreter is finalizing
    /// (then nothing runs: touching Python then would crash).
    pub fn with_gil(&self, body: impl FnOnce()) {
        // SAFETY: both calls are safe from any thread while the interpreter
        // is not finalizing; the check comes first.
        unsafe {
            if (self.is_finalizing)() != 0 {
                return;
            }
            let state = (self.gil_ensure)();
            body();
            (self.gil_release)(state);
        }
    }
}
