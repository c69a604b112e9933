//! Entry points for the `dlbridge` Python package (loaded with
//! `ctypes.PyDLL`, so the GIL is held during every call). Not part of the
//! C header: they take and return `PyObject*` as `void*`, and report errors
//! as Python exceptions (NULL return).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::guard;
use super::status::dlb_status;
use super::tensor::{dlb_tensor, into_handle};
use crate::python::api::{self, Api, Exc, Obj};
use crate::python::{self as py, Raised};
use crate::tensor::{Tensor, TensorRef};

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
unsafe fn handle<'a>(api: &Api, capsule: *mut c_void) -> Result<TensorRef<'a>, Raised> {
    // SAFETY: GIL held; GetPointer checks the object and the name (NULL and
    // an exception otherwise, replaced by ours).
    let h = unsafe { (api.capsule_get_pointer)(capsule.cast(), HANDLE.as_ptr()) };
    if h.is_null() {
        // SAFETY: GIL held by contract.
        return Err(unsafe {
            (api.err_clear)();
            Raised::with(api, Exc::Value, "not a dlbridge tensor handle")
        });
    }
    // SAFETY: a capsule named HANDLE holds a live handle from `into_handle`,
    // held while the capsule lives.
    Ok(unsafe { Tensor::borrow_raw(h.cast()) })
}

/// A new Python object made by `body` from the tensor of handle capsule
/// `t`; NULL with the matching exception set on any failure.
///
/// # Safety
/// GIL held; `t` is a live object; `body` may call the CPython API.
unsafe fn object_of(t: *mut c_void, body: impl FnOnce(&Api, &Tensor) -> crate::Result<Obj>) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held, a live object (contract).
        let h = unsafe { handle(api, t) }?;
        // SAFETY: PyDLL entry points hold the GIL.
        body(api, &h).map(|o| o.cast()).map_err(|e| unsafe { Raised::from(api, &e) })
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

/// Resolves the CPython API by name from the running interpreter (see
/// `python::api`). DLB_OK, or a status whose message names the missing
/// symbol (the package raises ImportError with it).
///
/// # Safety
/// Called from the running interpreter, with the GIL (PyDLL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_init() -> dlb_status {
    // SAFETY: forwarded contract.
    guard::status(|| unsafe { api::register() })
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
    py_guard(std::ptr::null(), |api| unsafe { handle(api, capsule) }.map(|h| h.as_raw().cast::<dlb_tensor>()))
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
            // The copy runs without the GIL (held here; the copy touches no
            // Python object): other Python threads go on meanwhile.
            let tensor = if copy { api.without_gil(|| crate::copy::duplicate(h))? } else { h.clone() };
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
    unsafe { object_of(t, |api, h| py::array_interface_dict(api, h, h.byte_strides()?, t.cast())) }
}

/// The metadata tuple the Python `Tensor` caches (NULL + exception).
///
/// # Safety
/// GIL held; `t` is a live object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_info(t: *mut c_void) -> *mut c_void {
    // SAFETY: GIL held, a live object (contract); the body runs with the GIL.
    unsafe { object_of(t, |api, h| py::info_tuple(api, h)) }
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

/// Registers the callable that names NumPy types for raw-byte dtypes
/// (bfloat16, FP8, ...): `resolver(name)` returns ml_dtypes' type or None.
/// `__array_struct__` passes it on as `descr`, so `np.asarray` keeps the type.
///
/// # Safety
/// GIL held; `resolver` is a live callable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_set_void_resolver(resolver: *mut c_void) {
    if let Some(api) = api::try_get() {
        // SAFETY: forwarded contract.
        guard::value((), || unsafe { py::set_void_resolver(api, resolver.cast()) })
    }
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

/// Python objects kept for the life of the process (a reference held), used
/// only with the GIL held.
struct Kept<T>(T);

// SAFETY: the objects are only touched with the GIL held, which serialises
// every use; they are never freed.
unsafe impl<T> Send for Kept<T> {}
// SAFETY: as above; never mutated after they are made.
unsafe impl<T> Sync for Kept<T> {}

/// Interned names the C-level `__dlpack__` compares and looks up.
struct Names {
    handle: Obj,
    /// Where a Tensor keeps `_c` (its slot), found with a probe; None: read
    /// it as an attribute.
    handle_offset: Option<usize>,
    /// `(1, 0)`, what `__dlpack_device__` answers for host memory.
    cpu_device: Obj,
    slow: Obj,
    max_version: Obj,
    stream: Obj,
    dl_device: Obj,
    copy: Obj,
}

static NAMES: std::sync::OnceLock<Kept<Names>> = std::sync::OnceLock::new();

/// The interned names (made by `dlb_py_methods` when the package loads).
///
/// # Safety
/// GIL held.
unsafe fn names(api: &Api) -> Result<&'static Names, Raised> {
    match NAMES.get() {
        Some(Kept(names)) => Ok(names),
        // SAFETY: GIL held by contract.
        None => Err(unsafe { Raised::with(api, Exc::Runtime, "dlbridge's C methods are not initialised") }),
    }
}

/// `tp.__basicsize__`: the bytes of an instance.
///
/// # Safety
/// GIL held; `tp` is a type.
unsafe fn basic_size(api: &Api, tp: Obj) -> Result<usize, Raised> {
    // SAFETY: GIL held; the new references are released here.
    unsafe {
        let name = new_ref((api.intern)(c"__basicsize__".as_ptr()))?;
        let size = new_ref((api.get_attr)(tp, name));
        (api.decref)(name);
        let size = size?;
        let n = (api.long_as_long)(size);
        (api.decref)(size);
        if n < 0 { Err(Raised(())) } else { Ok(n as usize) }
    }
}

/// A new reference, or Raised when CPython returned NULL with an exception set.
fn new_ref(o: Obj) -> Result<Obj, Raised> {
    if o.is_null() { Err(Raised(())) } else { Ok(o) }
}

/// What `make` builds from the tensor of `this._c`, the Tensor's handle
/// capsule (read from its slot when the offset is known).
///
/// # Safety
/// GIL held; `this` is a live Tensor.
unsafe fn from_handle(
    api: &Api,
    this: Obj,
    make: impl FnOnce(&Api, &Tensor) -> Result<Obj, Raised>,
) -> Result<Obj, Raised> {
    // SAFETY: GIL held (contract).
    let names = unsafe { names(api) }?;
    // SAFETY: `this` is a Tensor (or a subclass: same slot offsets), whose
    // `_c` slot lies at `offset`; a filled slot gets a reference of ours.
    let slot = names.handle_offset.map_or(std::ptr::null_mut(), |offset| unsafe {
        let capsule = this.cast::<u8>().add(offset).cast::<Obj>().read();
        if !capsule.is_null() {
            (api.incref)(capsule);
        }
        capsule
    });
    let capsule = if slot.is_null() {
        // No slot offset, or an empty slot: the attribute (raises AttributeError).
        // SAFETY: GIL held and a live object (contract).
        new_ref(unsafe { (api.get_attr)(this, names.handle) })?
    } else {
        slot
    };
    // SAFETY: GIL held; a live object, kept by our reference until the end.
    let made = unsafe { handle(api, capsule.cast()) }.and_then(|h| make(api, &h));
    // SAFETY: the reference taken above.
    unsafe { (api.decref)(capsule) };
    made
}

static DLPACK_DEF: api::PyMethodDef = api::PyMethodDef {
    name: c"__dlpack__".as_ptr(),
    meth: dlpack_method as *const c_void,
    flags: api::METH_FASTCALL_KEYWORDS,
    doc: c"__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n\
A DLPack capsule of this tensor: versioned when max_version allows it, legacy \
otherwise. The common call is answered in C; the others by Tensor._dlpack_slow."
        .as_ptr(),
};

static DEVICE_DEF: api::PyMethodDef = api::PyMethodDef {
    name: c"__dlpack_device__".as_ptr(),
    meth: device_method as *const c_void,
    flags: api::METH_NOARGS,
    doc: c"__dlpack_device__()\n--\n\n(device_type, device_id) of this tensor, as DLPack numbers them.".as_ptr(),
};

static ARRAY_STRUCT_DEF: api::PyGetSetDef = api::PyGetSetDef {
    name: c"__array_struct__".as_ptr(),
    get: array_struct_getter as *const c_void,
    set: std::ptr::null(),
    doc: c"NumPy's C-level array interface (a capsule): what np.asarray reads first, and fastest. \
CPU-accessible memory only (AttributeError otherwise)."
        .as_ptr(),
    closure: std::ptr::null_mut(),
};

/// `Tensor.__array_struct__` (see `dlb_py_methods`): AttributeError for
/// memory the host cannot read, so NumPy looks for its other protocols.
unsafe extern "C" fn array_struct_getter(this: Obj, _closure: *mut c_void) -> Obj {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: CPython calls getters with the GIL held, on a live Tensor (the
        // descriptor checks the type).
        unsafe {
            from_handle(api, this, |api, t| {
                if !t.device().is_host_accessible() {
                    let message =
                        format!("a {} tensor has no __array_struct__; call .to_device('cpu') first", t.device());
                    return Err(Raised::with(api, Exc::Attribute, &message));
                }
                t.byte_strides().and_then(|s| py::array_struct(api, t, s)).map_err(|e| Raised::from(api, &e))
            })
        }
    })
}

/// `Tensor.__dlpack_device__` (see `dlb_py_methods`).
unsafe extern "C" fn device_method(this: Obj, _unused: Obj) -> Obj {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: CPython calls methods with the GIL held, on a live Tensor (the
        // descriptor checks the type); the cached tuple lives for good.
        unsafe {
            let names = names(api)?;
            from_handle(api, this, |api, t| {
                if t.device() == crate::Device::CPU {
                    (api.incref)(names.cpu_device);
                    Ok(names.cpu_device)
                } else {
                    py::device_tuple(api, t.device()).map_err(|e| Raised::from(api, &e))
                }
            })
        }
    })
}

/// Descriptors for `type.__dlpack__`, `type.__dlpack_device__` and
/// `type.__array_struct__`, written in C (a tuple of the three). `__dlpack__`: the calls that
/// need nothing but a capsule (keywords absent or None, `max_version` a
/// tuple) are answered without running Python; any other call goes to the
/// type's `_dlpack_slow` method, which checks and honours the rest.
///
/// `probe` is a `tp` instance whose `_c` slot holds `mark`: the word that
/// holds it tells where every instance keeps its handle capsule, so the
/// methods read it without an attribute lookup (when exactly one word
/// matches; otherwise they look `_c` up).
///
/// # Safety
/// GIL held; `tp` is the `Tensor` class, whose instances keep their handle
/// capsule in `_c`; `probe` is an instance of it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_methods(tp: *mut c_void, probe: *mut c_void, mark: *mut c_void) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held (contract); static NUL-terminated names.
        let intern = |name: &std::ffi::CStr| unsafe { (api.intern)(name.as_ptr()) };
        // SAFETY: GIL held; `tp` is a type.
        let size = unsafe { basic_size(api, tp.cast()) }?;
        // SAFETY: `probe` is an object of `size` bytes, read word by word
        // after the object header.
        let matches: smallvec::SmallVec<[usize; 2]> = (2..size / 8)
            .map(|word| word * 8)
            .filter(|&offset| unsafe { probe.cast::<u8>().add(offset).cast::<*mut c_void>().read() } == mark)
            .collect();
        // SAFETY: GIL held (contract).
        let cpu_device =
            unsafe { py::device_tuple(api, crate::Device::CPU) }.map_err(|e| unsafe { Raised::from(api, &e) })?;
        let names = Names {
            cpu_device,
            handle_offset: if matches.len() == 1 { Some(matches[0]) } else { None },
            handle: intern(c"_c"),
            slow: intern(c"_dlpack_slow"),
            max_version: intern(c"max_version"),
            stream: intern(c"stream"),
            dl_device: intern(c"dl_device"),
            copy: intern(c"copy"),
        };
        let all = [names.handle, names.slow, names.max_version, names.stream, names.dl_device, names.copy];
        if all.iter().any(|n| n.is_null()) {
            return Err(Raised(()));
        }
        let _ = NAMES.set(Kept(names));
        // SAFETY: GIL held; a type object and static method definitions; the
        // new references go into the tuple (which steals them) or are dropped.
        unsafe {
            let all = (api.tuple_new)(3);
            if all.is_null() {
                return Err(Raised(()));
            }
            for i in 0..3 {
                let descr = match i {
                    0 => (api.descr_new_method)(tp.cast(), &DLPACK_DEF),
                    1 => (api.descr_new_method)(tp.cast(), &DEVICE_DEF),
                    _ => (api.descr_new_getset)(tp.cast(), &ARRAY_STRUCT_DEF),
                };
                if descr.is_null() || (api.tuple_set_item)(all, i, descr) != 0 {
                    (api.decref)(all);
                    return Err(Raised(()));
                }
            }
            Ok(all.cast())
        }
    })
}

/// The keywords `__dlpack__` takes.
#[derive(Clone, Copy, PartialEq)]
enum Keyword {
    MaxVersion,
    Stream,
    DlDevice,
    Copy,
}

/// Which keyword of `table` (interned name, spelling, value) `name` is: by
/// identity with the interned names first (what CPython passes for
/// keywords spelled in code), then by spelling; None for any other.
///
/// # Safety
/// GIL held; `name` is a str.
unsafe fn keyword<K: Copy>(api: &Api, table: &[(Obj, &std::ffi::CStr, K)], name: Obj) -> Option<K> {
    if let Some(&(_, _, k)) = table.iter().find(|(interned, _, _)| *interned == name) {
        return Some(k);
    }
    // SAFETY: GIL held; the comparison never raises.
    let spelled = |ascii: &std::ffi::CStr| unsafe { (api.unicode_eq_ascii)(name, ascii.as_ptr()) } == 0;
    table.iter().find(|(_, ascii, _)| spelled(ascii)).map(|&(_, _, k)| k)
}

/// For a call the C path answers, whether the capsule is versioned; None
/// for any other call (positional arguments, a stream, a device, a copy
/// request, an unknown keyword, an odd `max_version`).
///
/// # Safety
/// GIL held; the vectorcall arguments as CPython passes them.
unsafe fn plain_request(api: &Api, names: &Names, args: *const Obj, nargs: isize, kwnames: Obj) -> Option<bool> {
    if nargs != 0 {
        return None;
    }
    // SAFETY: GIL held; `kwnames` is NULL or a tuple of str whose values
    // follow the positional arguments in `args` (the whole body).
    unsafe {
        let count = if kwnames.is_null() { 0 } else { (api.tuple_size)(kwnames) };
        let table = [
            (names.max_version, c"max_version", Keyword::MaxVersion),
            (names.stream, c"stream", Keyword::Stream),
            (names.dl_device, c"dl_device", Keyword::DlDevice),
            (names.copy, c"copy", Keyword::Copy),
        ];
        let mut versioned = false;
        for i in 0..count {
            let (name, value) = ((api.tuple_get_item)(kwnames, i), *args.offset(i));
            match keyword(api, &table, name) {
                Some(Keyword::MaxVersion) if value == api.none => versioned = false,
                Some(Keyword::MaxVersion) => {
                    if (api.tuple_size)(value) != 2 {
                        (api.err_clear)();
                        return None;
                    }
                    let major = (api.long_as_long)((api.tuple_get_item)(value, 0));
                    if major < 0 {
                        (api.err_clear)();
                        return None;
                    }
                    versioned = major >= 1;
                }
                Some(Keyword::Stream | Keyword::DlDevice | Keyword::Copy) if value == api.none => {}
                _ => return None,
            }
        }
        Some(versioned)
    }
}

/// `Tensor.__dlpack__` (see `dlb_py_methods`).
unsafe extern "C" fn dlpack_method(this: Obj, args: *const Obj, nargs: isize, kwnames: Obj) -> Obj {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: CPython calls methods with the GIL held.
        let names = unsafe { names(api) }?;
        // SAFETY: CPython calls methods with the GIL held and its own arguments.
        match unsafe { plain_request(api, names, args, nargs, kwnames) } {
            // SAFETY: GIL held, a live Tensor (the descriptor checks the type).
            Some(versioned) => unsafe {
                from_handle(api, this, |api, t| {
                    py::to_capsule(api, t.clone(), versioned).map_err(|e| Raised::from(api, &e))
                })
            },
            None => {
                // Everything else: `this._dlpack_slow(*args, **kwargs)`, same arguments.
                // SAFETY: GIL held; `kwnames` is NULL or a tuple.
                let count = if kwnames.is_null() { 0 } else { unsafe { (api.tuple_size)(kwnames) } };
                let mut all: smallvec::SmallVec<[Obj; 8]> = smallvec::smallvec![this];
                if nargs + count > 0 {
                    // SAFETY: `args` holds `nargs` positional values and one per keyword.
                    all.extend_from_slice(unsafe { std::slice::from_raw_parts(args, (nargs + count) as usize) });
                }
                // SAFETY: GIL held; method name, self first, then the caller's arguments.
                new_ref(unsafe { (api.vectorcall_method)(names.slow, all.as_ptr(), (nargs + 1) as usize, kwnames) })
            }
        }
    })
}

/// What the C-level `from_dlpack` needs: the `Tensor` class, the Python
/// function it falls back to, prebuilt call arguments, the host types.
struct FromDlpack {
    tensor_type: Obj,
    slow: Obj,
    dlpack: Obj,
    dlpack_device: Obj,
    module: Obj,
    kwnames: Obj,
    max_version: Obj,
    device: Obj,
    copy: Obj,
}

static FROM_DLPACK: std::sync::OnceLock<Kept<FromDlpack>> = std::sync::OnceLock::new();

/// Types whose instances are always in host memory (NumPy's arrays), told by
/// the package once it has seen one: they are not asked for their device.
static HOST_TYPES: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

static FROM_DLPACK_DEF: api::PyMethodDef = api::PyMethodDef {
    name: c"from_dlpack".as_ptr(),
    meth: from_dlpack_function as *const c_void,
    flags: api::METH_FASTCALL_KEYWORDS,
    doc: c"from_dlpack(x, *, device=None, copy=None)\n--\n\n\
A Tensor over the memory of any DLPack producer (NumPy, PyTorch, JAX, CuPy, ...) or of a raw \
DLPack capsule, zero copy. Asks for a versioned capsule (max_version=(1, 3)) and falls back to a \
keyword-less __dlpack__() for older producers; CUDA producers are asked for stream=1. device asks \
the producer for a copy on that device; copy=True / False is passed on. A capsule can be consumed once."
        .as_ptr(),
};

/// The builtin `dlbridge.from_dlpack`: a raw capsule, or a producer of a
/// host type, with no `device` / `copy` request, is imported in C; every
/// other call goes to `slow` (the Python function) with the same arguments.
///
/// # Safety
/// GIL held; `tensor_type` is the `Tensor` class (instances hold their
/// handle capsule in `_c`), `slow` a callable; both stay referenced here.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_from_dlpack_function(tensor_type: *mut c_void, slow: *mut c_void) -> *mut c_void {
    py_guard(std::ptr::null_mut(), |api| {
        // SAFETY: GIL held (whole body); new references are kept for the process.
        unsafe {
            let max_version = (api.tuple_new)(2);
            let kwnames = (api.tuple_new)(1);
            let (one, three) = ((api.long_from_long_long)(1), (api.long_from_long_long)(3));
            let made = [max_version, kwnames, one, three];
            if made.iter().any(|o| o.is_null()) {
                return Err(Raised(()));
            }
            (api.tuple_set_item)(max_version, 0, one);
            (api.tuple_set_item)(max_version, 1, three);
            (api.tuple_set_item)(kwnames, 0, (api.intern)(c"max_version".as_ptr()));
            (api.incref)(tensor_type.cast());
            (api.incref)(slow.cast());
            let _ = FROM_DLPACK.set(Kept(FromDlpack {
                tensor_type: tensor_type.cast(),
                slow: slow.cast(),
                dlpack: (api.intern)(c"__dlpack__".as_ptr()),
                dlpack_device: (api.intern)(c"__dlpack_device__".as_ptr()),
                module: (api.intern)(c"__module__".as_ptr()),
                kwnames,
                max_version,
                device: (api.intern)(c"device".as_ptr()),
                copy: (api.intern)(c"copy".as_ptr()),
            }));
            new_ref((api.cfunction_new)(&FROM_DLPACK_DEF, std::ptr::null_mut(), std::ptr::null_mut())).map(|f| f.cast())
        }
    })
}

/// Marks `tp` as a type whose instances are in host memory (see `HOST_TYPES`).
///
/// # Safety
/// GIL held; `tp` is a type object that lives as long as the process (a
/// reference is kept).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_add_host_type(tp: *mut c_void) {
    let Some(api) = api::try_get() else { return };
    let mut types = HOST_TYPES.lock().unwrap_or_else(|e| e.into_inner());
    if !types.contains(&(tp as usize)) {
        // SAFETY: GIL held; the reference is kept with the entry.
        unsafe { (api.incref)(tp.cast()) };
        types.push(tp as usize);
    }
}

/// The capsule to import for a plain call (no positional argument but `x`,
/// keywords absent or None): `x` itself if it is a DLPack capsule, or
/// `x.__dlpack__(max_version=(1, 3))` for a host type; Ok(None) when the
/// Python function must answer.
///
/// # Safety
/// GIL held; the vectorcall arguments as CPython passes them.
unsafe fn plain_capsule(
    api: &Api,
    st: &FromDlpack,
    args: *const Obj,
    nargs: isize,
    kwnames: Obj,
) -> Result<Option<(Obj, bool)>, Raised> {
    if nargs != 1 {
        return Ok(None);
    }
    // SAFETY: GIL held; `args` holds `x` then one value per keyword (whole body).
    unsafe {
        let count = if kwnames.is_null() { 0 } else { (api.tuple_size)(kwnames) };
        for i in 0..count {
            let (name, value) = ((api.tuple_get_item)(kwnames, i), *args.offset(1 + i));
            let known = keyword(api, &[(st.device, c"device", ()), (st.copy, c"copy", ())], name).is_some();
            if !known || value != api.none {
                return Ok(None);
            }
        }
        let x = *args;
        if (api.capsule_is_valid)(x, c"dltensor_versioned".as_ptr()) == 1
            || (api.capsule_is_valid)(x, c"dltensor".as_ptr()) == 1
        {
            return Ok(Some((x, false)));
        }
        let tp = (api.type_of)(x);
        (api.decref)(tp); // the type outlives this call: `x` holds it
        let call = [x, st.max_version];
        if HOST_TYPES.lock().unwrap_or_else(|e| e.into_inner()).contains(&(tp as usize)) {
            let capsule = (api.vectorcall_method)(st.dlpack, call.as_ptr(), 1, st.kwnames);
            return new_ref(capsule).map(|c| Some((c, true)));
        }
        // Any other producer whose memory needs no stream (not CUDA, managed
        // or ROCm): asked here too. Anything unusual (no __dlpack_device__,
        // an odd answer, an error from __dlpack__, which may be an old
        // signature to retry without keywords) goes to the Python function,
        // which asks again and says what is wrong.
        if !needs_no_stream(api, st, x) {
            return Ok(None);
        }
        if is_numpy_type(api, st, tp) {
            dlb_py_add_host_type(tp.cast()); // NumPy's arrays: not asked for their device again
        }
        let capsule = (api.vectorcall_method)(st.dlpack, call.as_ptr(), 1, st.kwnames);
        if capsule.is_null() {
            (api.err_clear)();
            return Ok(None);
        }
        Ok(Some((capsule, true)))
    }
}

/// Whether `tp.__module__` is "numpy" (its arrays are always in host memory).
///
/// # Safety
/// GIL held; `tp` is a live type.
unsafe fn is_numpy_type(api: &Api, st: &FromDlpack, tp: Obj) -> bool {
    // SAFETY: GIL held (contract); the new reference is released here.
    unsafe {
        let module = (api.get_attr)(tp, st.module);
        if module.is_null() {
            (api.err_clear)();
            return false;
        }
        // Any object may stand there: AsUTF8AndSize checks it is a str.
        let mut len = 0isize;
        let text = (api.unicode_as_utf8)(module, &mut len);
        let numpy = !text.is_null() && std::slice::from_raw_parts(text.cast::<u8>(), len as usize) == b"numpy";
        (api.decref)(module);
        (api.err_clear)(); // a non-str __module__ raised TypeError: not NumPy
        numpy
    }
}

/// Whether `x.__dlpack_device__()` names a device type for which from_dlpack
/// passes no stream (any error is cleared: then false).
///
/// # Safety
/// GIL held; `x` is a live object.
unsafe fn needs_no_stream(api: &Api, st: &FromDlpack, x: Obj) -> bool {
    // SAFETY: GIL held (contract); every new reference is released here.
    unsafe {
        let device = (api.vectorcall_method)(st.dlpack_device, &x, 1, std::ptr::null_mut());
        if device.is_null() {
            (api.err_clear)();
            return false;
        }
        let kind = if (api.tuple_size)(device) == 2 { (api.long_as_long)((api.tuple_get_item)(device, 0)) } else { -1 };
        (api.decref)(device);
        (api.err_clear)(); // a non-tuple or a non-int first item: no fast path
        // kDLCUDA, kDLROCM and kDLCUDAManaged take a stream (see _STREAM_TO_ASK).
        kind > 0 && !matches!(kind, 2 | 10 | 13)
    }
}

/// `dlbridge.from_dlpack` (see `dlb_py_from_dlpack_function`).
unsafe extern "C" fn from_dlpack_function(_module: Obj, args: *const Obj, nargsf: usize, kwnames: Obj) -> Obj {
    const ARGUMENTS_OFFSET: usize = 1 << (usize::BITS - 1);
    let nargs = (nargsf & !ARGUMENTS_OFFSET) as isize;
    py_guard(std::ptr::null_mut(), |api| {
        let Some(Kept(st)) = FROM_DLPACK.get() else {
            // SAFETY: CPython calls functions with the GIL held.
            return Err(unsafe { Raised::with(api, Exc::Runtime, "dlbridge.from_dlpack is not initialised") });
        };
        // SAFETY: CPython calls functions with the GIL held.
        let names = unsafe { names(api) }?;
        // SAFETY: CPython calls functions with the GIL held and its own arguments.
        let Some((capsule, owned)) = (unsafe { plain_capsule(api, st, args, nargs, kwnames) })? else {
            // SAFETY: GIL held; the caller's arguments, passed on as they came.
            return new_ref(unsafe { (api.vectorcall)(st.slow, args, nargsf, kwnames) });
        };
        // SAFETY: GIL held; a live capsule (released below if it is ours).
        let handle = unsafe { dlb_py_from_capsule(capsule.cast()) }.cast::<api::PyObject>();
        if owned {
            // SAFETY: the reference __dlpack__ returned.
            unsafe { (api.decref)(capsule) };
        }
        let handle = new_ref(handle)?;
        // SAFETY: GIL held; a new instance of the Tensor class (what
        // object.__new__ makes), given its handle capsule (whose reference
        // this function drops either way).
        unsafe {
            let t = (api.generic_alloc)(st.tensor_type, 0);
            let ok = !t.is_null() && (api.set_attr)(t, names.handle, handle) == 0;
            (api.decref)(handle);
            if !ok && !t.is_null() {
                (api.decref)(t);
            }
            if ok { Ok(t) } else { Err(Raised(())) }
        }
    })
}
