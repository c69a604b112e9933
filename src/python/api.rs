//! The CPython C API, reached through function pointers resolved by name
//! from the running interpreter's symbols (what `ctypes.pythonapi` does:
//! `dlsym` in the process's global scope) when the package is imported. The
//! library never links libpython, so C users load it without Python.
//!
//! One declarative table (`python_api!` below) names every function with
//! its C signature and every builtin object: adding one is one line, and a
//! name the interpreter lacks is an ImportError that says which.

use std::ffi::{CStr, c_char, c_int, c_longlong, c_ulong, c_ulonglong, c_void};
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

/// CPython's `PyType_Slot` (stable ABI): a slot id from `typeslots.h`.
#[repr(C)]
pub struct PyTypeSlot {
    /// The slot id (`Py_tp_dealloc`, ...).
    pub slot: c_int,
    /// The function or table for it.
    pub pfunc: *mut c_void,
}

/// CPython's `PyType_Spec` (stable ABI).
#[repr(C)]
pub struct PyTypeSpec {
    /// "module.Name".
    pub name: *const c_char,
    /// Bytes of an instance.
    pub basicsize: c_int,
    /// Bytes per item (variable-size objects; 0 here).
    pub itemsize: c_int,
    /// `Py_TPFLAGS_*`.
    pub flags: std::ffi::c_uint,
    /// Slots, ending with a zeroed one.
    pub slots: *mut PyTypeSlot,
}

/// CPython's `PyMemberDef` (stable ABI).
#[repr(C)]
pub struct PyMemberDef {
    /// The member's name.
    pub name: *const c_char,
    /// `T_*` type code.
    pub kind: c_int,
    /// Offset in the instance.
    pub offset: isize,
    /// `READONLY` and friends.
    pub flags: c_int,
    /// The docstring.
    pub doc: *const c_char,
}

// SAFETY: static, immutable data (pointers to static strings).
unsafe impl Sync for PyMemberDef {}

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
    /// NotImplementedError (how some producers refuse a device).
    NotImplemented,
}

/// Declares `Api` and `Api::resolve`, from one list: for each function its
/// field, its C name (then alternative spellings, tried in order) and its C
/// signature; for each object its field and the symbol of the object
/// itself (`_Py_NoneStruct`) or of a variable holding it (`PyExc_*`).
macro_rules! python_api {
    (
        functions { $( $field:ident: $name:literal $(| $alt:literal)* => fn($($arg:ty),*) $(-> $ret:ty)?; )* }
        objects { $( $object:ident: $symbol:literal; )* }
        pointers { $( $pointer:ident: $variable:literal; )* }
    ) => {
        /// The CPython API, resolved by name.
        #[allow(missing_docs)]
        pub struct Api {
            $( pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
            $( pub $object: Obj, )*
            $( pub $pointer: Obj, )*
        }

        impl Api {
            /// Every entry, looked up with `lookup` (NULL: absent); the error
            /// names the first one missing.
            ///
            /// # Safety
            /// `lookup` must return the addresses of the running
            /// interpreter's symbols of those names (or NULL).
            unsafe fn resolve(lookup: impl Fn(&CStr) -> *mut c_void) -> Result<Api> {
                let find = |names: &[&'static str]| -> Result<*mut c_void> {
                    names
                        .iter()
                        .map(|n| lookup(CStr::from_bytes_with_nul(n.as_bytes()).expect("NUL-terminated name")))
                        .find(|p| !p.is_null())
                        .ok_or_else(|| {
                            let spelled: Vec<&str> = names.iter().map(|n| n.trim_end_matches('\0')).collect();
                            Error::new(
                                ErrorKind::InvalidArgument,
                                format!("this Python has no {}, which dlbridge needs", spelled.join(" or ")),
                            )
                        })
                };
                // SAFETY: each address is the named CPython function (whose C
                // signature is the field's), object, or object variable.
                unsafe {
                    Ok(Api {
                        $( $field: fn_at(find(&[concat!($name, "\0") $(, concat!($alt, "\0"))*])?), )*
                        $( $object: find(&[concat!($symbol, "\0")])?.cast(), )*
                        $( $pointer: {
                            let object = *find(&[concat!($variable, "\0")])?.cast::<Obj>();
                            if object.is_null() {
                                bail!(InvalidArgument, "{} is NULL in this Python", $variable);
                            }
                            object
                        }, )*
                    })
                }
            }
        }
    };
}

python_api! {
    functions {
        capsule_new: "PyCapsule_New" => fn(*mut c_void, *const c_char, Option<Destructor>) -> Obj;
        capsule_get_pointer: "PyCapsule_GetPointer" => fn(Obj, *const c_char) -> *mut c_void;
        capsule_is_valid: "PyCapsule_IsValid" => fn(Obj, *const c_char) -> c_int;
        capsule_set_name: "PyCapsule_SetName" => fn(Obj, *const c_char) -> c_int;
        err_set_string: "PyErr_SetString" => fn(Obj, *const c_char);
        err_occurred: "PyErr_Occurred" => fn() -> Obj;
        err_matches: "PyErr_ExceptionMatches" => fn(Obj) -> c_int;
        err_clear: "PyErr_Clear" => fn();
        err_fetch: "PyErr_Fetch" => fn(*mut Obj, *mut Obj, *mut Obj);
        err_normalize: "PyErr_NormalizeException" => fn(*mut Obj, *mut Obj, *mut Obj);
        err_restore: "PyErr_Restore" => fn(Obj, Obj, Obj);
        str: "PyObject_Str" => fn(Obj) -> Obj;
        import_module: "PyImport_ImportModule" => fn(*const c_char) -> Obj;
        incref: "Py_IncRef" => fn(Obj);
        decref: "Py_DecRef" => fn(Obj);
        gil_ensure: "PyGILState_Ensure" => fn() -> c_int;
        gil_release: "PyGILState_Release" => fn(c_int);
        save_thread: "PyEval_SaveThread" => fn() -> *mut c_void;
        restore_thread: "PyEval_RestoreThread" => fn(*mut c_void);
        // 3.11 and 3.12 spell it with an underscore.
        is_finalizing: "Py_IsFinalizing" | "_Py_IsFinalizing" => fn() -> c_int;
        interpreter: "PyInterpreterState_Get" => fn() -> *mut c_void;
        main_interpreter: "PyInterpreterState_Main" => fn() -> *mut c_void;
        get_buffer: "PyObject_GetBuffer" => fn(Obj, *mut PyBuffer, c_int) -> c_int;
        buffer_release: "PyBuffer_Release" => fn(*mut PyBuffer);
        dict_new: "PyDict_New" => fn() -> Obj;
        dict_set_item_string: "PyDict_SetItemString" => fn(Obj, *const c_char, Obj) -> c_int;
        tuple_new: "PyTuple_New" => fn(isize) -> Obj;
        tuple_set_item: "PyTuple_SetItem" => fn(Obj, isize, Obj) -> c_int;
        tuple_size: "PyTuple_Size" => fn(Obj) -> isize;
        tuple_get_item: "PyTuple_GetItem" => fn(Obj, isize) -> Obj;
        sequence_tuple: "PySequence_Tuple" => fn(Obj) -> Obj;
        sequence_get_item: "PySequence_GetItem" => fn(Obj, isize) -> Obj;
        long_from_long_long: "PyLong_FromLongLong" => fn(c_longlong) -> Obj;
        long_from_unsigned_long_long: "PyLong_FromUnsignedLongLong" => fn(c_ulonglong) -> Obj;
        long_as_long_long_and_overflow: "PyLong_AsLongLongAndOverflow" => fn(Obj, *mut c_int) -> c_longlong;
        long_as_unsigned_long_long: "PyLong_AsUnsignedLongLong" => fn(Obj) -> c_ulonglong;
        number_index: "PyNumber_Index" => fn(Obj) -> Obj;
        is_true: "PyObject_IsTrue" => fn(Obj) -> c_int;
        unicode_from_string_and_size: "PyUnicode_FromStringAndSize" => fn(*const c_char, isize) -> Obj;
        unicode_as_utf8: "PyUnicode_AsUTF8AndSize" => fn(Obj, *mut isize) -> *const c_char;
        repr: "PyObject_Repr" => fn(Obj) -> Obj;
        get_attr: "PyObject_GetAttr" => fn(Obj, Obj) -> Obj;
        get_attr_string: "PyObject_GetAttrString" => fn(Obj, *const c_char) -> Obj;
        mapping_has_key_string: "PyMapping_HasKeyString" => fn(Obj, *const c_char) -> c_int;
        set_attr_string: "PyObject_SetAttrString" => fn(Obj, *const c_char, Obj) -> c_int;
        intern: "PyUnicode_InternFromString" => fn(*const c_char) -> Obj;
        vectorcall: "PyObject_Vectorcall" => fn(Obj, *const Obj, usize, Obj) -> Obj;
        vectorcall_method: "PyObject_VectorcallMethod" => fn(Obj, *const Obj, usize, Obj) -> Obj;
        cfunction_new: "PyCFunction_NewEx" => fn(*const PyMethodDef, Obj, Obj) -> Obj;
        type_from_spec: "PyType_FromSpec" => fn(*mut PyTypeSpec) -> Obj;
        type_get_slot: "PyType_GetSlot" => fn(Obj, c_int) -> *mut c_void;
        type_get_flags: "PyType_GetFlags" => fn(Obj) -> c_ulong;
        type_is_subtype: "PyType_IsSubtype" => fn(Obj, Obj) -> c_int;
        clear_weakrefs: "PyObject_ClearWeakRefs" => fn(Obj);
    }
    objects {
        none: "_Py_NoneStruct";
        true_: "_Py_TrueStruct";
        false_: "_Py_FalseStruct";
        int_type: "PyLong_Type";
        tuple_type: "PyTuple_Type";
        capsule_type: "PyCapsule_Type";
    }
    pointers {
        buffer_error: "PyExc_BufferError";
        type_error: "PyExc_TypeError";
        value_error: "PyExc_ValueError";
        memory_error: "PyExc_MemoryError";
        runtime_error: "PyExc_RuntimeError";
        attribute_error: "PyExc_AttributeError";
        not_implemented_error: "PyExc_NotImplementedError";
    }
}

// SAFETY: function pointers and immortal builtin objects; CPython serialises
// their use through the GIL, which every caller holds or takes.
unsafe impl Send for Api {}
// SAFETY: as above; the table is never mutated after registration.
unsafe impl Sync for Api {}

static API: OnceLock<Api> = OnceLock::new();

/// The Python exception the spec asks for, for an error: BufferError for
/// what cannot be exchanged (dtype, layout, device, read-only, byte order),
/// ValueError for bad values, MemoryError, RuntimeError for CUDA.
pub fn exception_kind(e: &Error) -> Exc {
    match e.kind() {
        ErrorKind::NullArgument
        | ErrorKind::InvalidArgument
        | ErrorKind::InvalidTypestr
        | ErrorKind::InvalidNdim
        | ErrorKind::InvalidShape => Exc::Value,
        ErrorKind::OutOfMemory => Exc::Memory,
        ErrorKind::Cuda | ErrorKind::CudaUnavailable => Exc::Runtime,
        _ => Exc::Buffer,
    }
}

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

/// Resolves the table from the running interpreter's symbols (the global
/// scope of the process, as `ctypes.pythonapi` sees it); later calls keep
/// the first one. Fails, naming the symbol, when one is missing, and in a
/// subinterpreter (each import asks).
///
/// # Safety
/// Called from the interpreter that will use the table (with the GIL).
pub unsafe fn register() -> Result<()> {
    if API.get().is_none() {
        // SAFETY: dlsym in the global scope finds the interpreter's own symbols.
        let api = unsafe { Api::resolve(|name| libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr())) }?;
        let _ = API.set(api);
    }
    let api = get()?;
    // The library keeps Python objects for the whole process (interned
    // names, the Tensor type, builtin objects): they belong to the main
    // interpreter, and a subinterpreter must not use them.
    // SAFETY: both calls need only a current thread state (the GIL is held).
    if unsafe { (api.interpreter)() != (api.main_interpreter)() } {
        bail!(InvalidArgument, "dlbridge supports the main interpreter only, not subinterpreters");
    }
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
        // SAFETY: GIL held by contract.
        unsafe { self.raise_as(exception_kind(e), e.message()) }
    }

    /// Sets the exception `exc` with `message`.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn raise_as(&self, exc: Exc, message: &str) {
        let exc = self.exception(exc);
        let text = std::ffi::CString::new(message.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: GIL held by contract; `exc` is a registered builtin.
        unsafe { (self.err_set_string)(exc, text.as_ptr()) }
    }

    /// The builtin exception class.
    pub fn exception(&self, exc: Exc) -> Obj {
        match exc {
            Exc::Buffer => self.buffer_error,
            Exc::Type => self.type_error,
            Exc::Value => self.value_error,
            Exc::Memory => self.memory_error,
            Exc::Runtime => self.runtime_error,
            Exc::Attribute => self.attribute_error,
            Exc::NotImplemented => self.not_implemented_error,
        }
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

    /// Runs `body` (which must not touch Python objects) with the GIL
    /// released, so other Python threads run during long work (copies);
    /// the GIL is taken back when it returns or unwinds.
    ///
    /// # Safety
    /// The GIL must be held by this thread.
    pub unsafe fn without_gil<T>(&self, body: impl FnOnce() -> T) -> T {
        struct Restore<'a>(&'a Api, *mut c_void);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                // SAFETY: the state PyEval_SaveThread returned, restored once.
                unsafe { (self.0.restore_thread)(self.1) }
            }
        }
        // SAFETY: the GIL is held (contract); released until `_restore` drops.
        let _restore = Restore(self, unsafe { (self.save_thread)() });
        body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in address for every symbol but `missing`; variables point
    /// at a non-NULL object pointer.
    fn lookup_without(missing: &'static [&'static str]) -> impl Fn(&CStr) -> *mut c_void {
        static OBJECT: u8 = 0;
        static VARIABLE: &u8 = &OBJECT;
        move |name| {
            let name = name.to_str().unwrap();
            if missing.contains(&name) {
                std::ptr::null_mut()
            } else if name.starts_with("PyExc_") {
                (&raw const VARIABLE).cast_mut().cast()
            } else {
                (&raw const OBJECT).cast_mut().cast()
            }
        }
    }

    #[test]
    fn every_entry_is_found_by_name_and_a_missing_one_is_named() {
        // SAFETY: the table is only inspected, never called.
        let api = unsafe { Api::resolve(lookup_without(&[])) }.unwrap();
        assert_eq!(api.none.cast::<u8>().cast_const(), api.true_.cast::<u8>().cast_const());
        let cases: [&'static [&'static str]; 3] = [&["PyTuple_New"], &["_Py_NoneStruct"], &["PyExc_BufferError"]];
        for missing in cases {
            // SAFETY: as above.
            let e = unsafe { Api::resolve(lookup_without(missing)) }.err().unwrap();
            assert_eq!(e.to_string(), format!("this Python has no {}, which dlbridge needs", missing[0]));
        }
        // An alternative spelling is taken when the first is absent (3.11, 3.12) ...
        // SAFETY: as above.
        assert!(unsafe { Api::resolve(lookup_without(&["Py_IsFinalizing"])) }.is_ok());
        // ... and both missing names the two.
        // SAFETY: as above.
        let e = unsafe { Api::resolve(lookup_without(&["Py_IsFinalizing", "_Py_IsFinalizing"])) }.err().unwrap();
        assert!(e.to_string().contains("Py_IsFinalizing or _Py_IsFinalizing"), "{e}");
    }
}
