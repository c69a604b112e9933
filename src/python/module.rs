//! The `dlbridge._native` namespace the package imports: the Tensor base
//! type, `from_dlpack`, and the rules and tables the package uses, all
//! answered here (the package keeps no copy of them). Two C symbols reach
//! it: `dlb_py_init` (resolves the CPython API, refuses what it cannot
//! serve) and `dlb_py_module` (the namespace, as a dict).

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

use dlpark::ffi::{DLDevice, DLDeviceType};

use super::api::{self, Exc, Obj, PyMethodDef};
use super::args::{self, Call, Signature};
use super::capsule;
use super::exchange;
use super::interface;
use super::object::{Kept, Owned, Py, PyResult, Ref, entry_object};
use super::producers;
use super::tensor_type::{self, moved, pair, same_device};
use crate::copy;
use crate::device::Device;
use crate::dtype::DType;
use crate::tensor::Tensor;

/// Objects made once: interned names and prebuilt call arguments.
struct Constants {
    dlpack: Kept,
    dlpack_device: Kept,
    /// `("max_version",)`, the keyword of the plain `__dlpack__` call.
    max_version_name: Kept,
    /// `(1, 3)`: the newest DLPack this library speaks.
    max_version: Kept,
}

static CONSTANTS: OnceLock<Constants> = OnceLock::new();

fn constants(py: Py<'_>) -> PyResult<&'static Constants> {
    if let Some(c) = CONSTANTS.get() {
        return Ok(c);
    }
    let name = py.interned(c"max_version")?;
    let made = Constants {
        dlpack: Kept::new(py.interned(c"__dlpack__")?),
        dlpack_device: Kept::new(py.interned(c"__dlpack_device__")?),
        max_version_name: Kept::new(py.tuple([Ok(name)])?),
        max_version: Kept::new(py.tuple([py.int(1), py.int(3)])?),
    };
    Ok(CONSTANTS.get_or_init(|| made))
}

/// The stream to pass to `x.__dlpack__`: dlbridge orders its CUDA work on
/// the legacy default stream, so a CUDA producer is asked to make its
/// pending work visible there (the spec's stream=1); None where streams do
/// not apply, or for an old producer without `__dlpack_device__`.
fn consumer_stream(py: Py<'_>, c: &Constants, x: Ref<'_>) -> PyResult<(Option<DLDeviceType>, Option<i64>)> {
    let device = match py.call_method(c.dlpack_device.get(py), &[x], None) {
        Ok(d) => d,
        Err(_) if py.error_matches(Exc::Attribute) => {
            py.clear_error();
            return Ok((None, None));
        }
        Err(raised) => return Err(raised),
    };
    let kind = py.item(device.as_ref(), 0)?;
    let kind = u32::try_from(py.index(kind.as_ref())?).ok().map(DLDeviceType);
    Ok((kind, kind.and_then(args::stream_to_ask)))
}

/// A tensor from a producer that was not asked for its device (its tensors
/// had all been in host memory): if this one is not, the type is asked
/// from now on, and where the memory takes a stream the device is
/// synchronised (the producer's pending work may be on any stream).
fn unasked(py: Py<'_>, x: Ref<'_>, t: Tensor) -> PyResult<Tensor> {
    let kind = t.device().kind();
    if kind != DLDeviceType::CPU {
        producers::saw_host(x.type_of(), false);
        if args::takes_stream(kind) {
            let device = t.device().id();
            py.ok(py.without_gil(|| crate::cuda::synchronize(device)))?;
        }
    }
    Ok(t)
}

/// Applies `from_dlpack`'s device / copy request to a tensor the producer
/// handed over as it was (a raw capsule, or a producer that could not).
/// Whatever stands in the way of the device request is a BufferError.
fn honour(py: Py<'_>, t: Tensor, target: Option<DLDevice>, copy: Option<bool>) -> PyResult<Tensor> {
    match target {
        Some(target) if !same_device(target, t.device().raw()) => {
            if copy == Some(false) {
                let message = format!(
                    "moving a {} tensor to device {} needs a copy, and copy=False forbids it",
                    t.device(),
                    pair(target)
                );
                return Err(py.raise(Exc::Buffer, &message));
            }
            moved(py, &t, target, "move")
        }
        _ if copy == Some(true) => py.ok(py.without_gil(|| copy::duplicate(&t))),
        _ => Ok(t),
    }
}

/// Imports a capsule a producer returned.
fn take(py: Py<'_>, capsule: PyResult<Owned>) -> PyResult<Tensor> {
    capsule::import(py, capsule?.as_ref())
}

/// `from_dlpack(x, *, device=None, copy=None)`.
fn from_dlpack_object(py: Py<'_>, x: Ref<'_>, device: Option<Ref<'_>>, copy: Option<Ref<'_>>) -> PyResult<Owned> {
    let copy = args::copy_flag(py, copy)?;
    let target = match device.filter(|d| !py.is_none(*d)) {
        Some(d) => Some(args::device(py, d)?),
        None => None,
    };
    if py.is_exactly(x, py.api().capsule_type) {
        let t = capsule::import(py, x)?;
        return tensor_type::wrap(py, honour(py, t, target, copy)?);
    }
    let known = producers::info(py, x.type_of());
    // DLPack 1.3's C exchange API, when the producer's type publishes one
    // (PyTorch, dlbridge itself): one C call instead of __dlpack__.
    if target.is_none()
        && copy.is_none()
        && let Some(producer) = known.producer
        && let Some(t) = exchange::import_through(py, producer, x)?
    {
        return tensor_type::wrap(py, t);
    }
    let c = constants(py)?;
    // A type whose tensors have all been in host memory is not asked for its
    // device again (NumPy's never are); should one come back with memory
    // that takes a stream after all, the device is synchronised below.
    let asks = !(known.numpy || known.host_so_far);
    let stream = if !asks {
        None
    } else {
        if let Err(raised) = py.getattr(x, c.dlpack.get(py)) {
            if !py.error_matches(Exc::Attribute) {
                return Err(raised);
            }
            py.clear_error();
            let message = format!("{} does not support DLPack (no __dlpack__)", py.type_name(x));
            return Err(py.raise(Exc::Type, &message));
        }
        let (kind, stream) = consumer_stream(py, c, x)?;
        if kind == Some(DLDeviceType::CPU) {
            producers::saw_host(x.type_of(), true);
        }
        stream
    };
    let dlpack = c.dlpack.get(py);
    if target.is_none() && copy.is_none() && stream.is_none() {
        let capsule = if known.old_signature {
            py.call_method(dlpack, &[x], None)
        } else {
            match py.call_method(dlpack, &[x, c.max_version.get(py)], Some(c.max_version_name.get(py))) {
                // A producer older than DLPack 1.0's keywords (not one that
                // refused with a TypeError subclass, such as pyarrow's):
                // asked without them, now and from then on.
                Err(_) if py.error_is_exactly(Exc::Type) => {
                    py.clear_error();
                    let old = py.call_method(dlpack, &[x], None);
                    if old.is_ok() {
                        producers::saw_old_signature(x.type_of());
                    }
                    old
                }
                asked => asked,
            }
        };
        let t = take(py, capsule)?;
        let t = if asks || known.numpy { t } else { unasked(py, x, t)? };
        return tensor_type::wrap(py, t);
    }
    // The full request: (name, value) pairs, as keywords.
    let stream_value = stream.map(|s| py.int(s)).transpose()?;
    let copy_value = copy.map(|c| py.bool(c));
    let target_value = match target {
        Some(t) => Some(py.tuple([py.int(i64::from(t.device_type.0)), py.int(i64::from(t.device_id))])?),
        None => None,
    };
    let ask = |with_device: bool, with_copy: bool| -> PyResult<Owned> {
        let mut names = vec![py.str("max_version")];
        let mut values = vec![x, c.max_version.get(py)];
        for (name, value, on) in [
            ("stream", &stream_value, true),
            ("copy", &copy_value, with_copy),
            ("dl_device", &target_value, with_device),
        ] {
            if let (Some(v), true) = (value, on) {
                names.push(py.str(name));
                values.push(v.as_ref());
            }
        }
        let names = py.tuple(names)?;
        py.call_method(dlpack, &values, Some(names.as_ref()))
    };
    let took = |t: Tensor| if asks || known.numpy { Ok(t) } else { unasked(py, x, t) };
    match ask(true, true) {
        Ok(capsule) => tensor_type::wrap(py, took(take(py, Ok(capsule))?)?),
        Err(_) if py.error_is_exactly(Exc::Type) => {
            // An old producer: take what it has, then honour the request here.
            py.clear_error();
            let old = match &stream_value {
                None => py.call_method(dlpack, &[x], None),
                Some(s) => {
                    let names = py.tuple([py.str("stream")])?;
                    py.call_method(dlpack, &[x, s.as_ref()], Some(names.as_ref()))
                }
            };
            tensor_type::wrap(py, honour(py, took(take(py, old)?)?, target, copy)?)
        }
        // NotImplementedError: PaddlePaddle's way of refusing a device.
        Err(_) if target.is_some() && (py.error_matches(Exc::Buffer) || py.error_matches(Exc::NotImplemented)) => {
            // The producer cannot put its data on that device: take it where
            // it is, then move it (or refuse: copy=False) here; the move is the copy.
            py.clear_error();
            let here = took(take(py, ask(false, copy != Some(true)))?)?;
            tensor_type::wrap(py, honour(py, here, target, copy)?)
        }
        Err(raised) => Err(raised),
    }
}

/// The signature of a namespace function as CPython calls it (`METH_FASTCALL
/// | METH_KEYWORDS`; `self` is NULL).
type Function = unsafe extern "C" fn(Obj, *const Obj, usize, Obj) -> Obj;

/// Binds a namespace function's vectorcall arguments to `sig` and runs
/// `body` on them.
///
/// # Safety
/// As CPython calls a function: the GIL held, its own arguments.
unsafe fn function<const N: usize>(
    (args, nargsf, kwnames): (*const Obj, usize, Obj),
    sig: &Signature<N>,
    body: impl FnOnce(Py<'_>, [Option<Ref<'_>>; N]) -> PyResult<Owned>,
) -> Obj {
    const ARGUMENTS_OFFSET: usize = 1 << (usize::BITS - 1);
    // SAFETY: by contract.
    unsafe {
        entry_object(|py| {
            let call = Call::new(py, args, (nargsf & !ARGUMENTS_OFFSET) as isize, kwnames);
            body(py, call.bind(py, sig)?)
        })
    }
}

/// Defines the namespace's functions and their table from one list: each
/// with its signature (positional count; parameter names), docstring and
/// body (`|py, [arguments]| body`, where `SIG` is the signature).
macro_rules! namespace_functions {
    ($(
        $name:ident($positional:literal; $($param:literal),*) $doc:literal
        => |$py:ident, $bound:pat_param| $body:expr;
    )*) => {
        /// (name, definition) of each function, in one table.
        static FUNCTIONS: &[(&CStr, PyMethodDef)] = &[$({
            unsafe extern "C" fn $name(_module: Obj, args: *const Obj, nargsf: usize, kwnames: Obj) -> Obj {
                static SIG: Signature<{ 0 $(+ { let _ = $param; 1 })* }> =
                    Signature::new(stringify!($name), $positional, [$($param),*]);
                fn body($py: Py<'_>, $bound: [Option<Ref<'_>>; { 0 $(+ { let _ = $param; 1 })* }]) -> PyResult<Owned> {
                    $body
                }
                // SAFETY: CPython calls functions with the GIL and their arguments.
                unsafe { function((args, nargsf, kwnames), &SIG, body) }
            }
            let name: &CStr = match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(n) => n,
                Err(_) => panic!("a function name without NUL"),
            };
            let meth: Function = $name;
            (name, PyMethodDef { name: name.as_ptr(), meth: meth as *const c_void, flags: api::METH_FASTCALL_KEYWORDS, doc: $doc.as_ptr() })
        }),*];
    };
}

namespace_functions! {
    from_dlpack(1; "x", "device", "copy") c"from_dlpack(x, *, device=None, copy=None)\n--\n\n\
A Tensor over the memory of any DLPack producer (NumPy, PyTorch, JAX, CuPy, ...) or of a raw \
DLPack capsule, zero copy. Asks for a versioned capsule (max_version=(1, 3)) and falls back to a \
keyword-less __dlpack__() for older producers; CUDA producers are asked for stream=1. device asks \
the producer for a copy on that device (moved here when it cannot); copy=True / False is passed \
on. A capsule can be consumed once."
        => |py, [x, device, copy]| from_dlpack_object(py, SIG.required(py, x, 0)?, device, copy);
    adopt(1; "handle") c"adopt(handle, /)\n--\n\nA Tensor that takes over a dlb_tensor * (an int) from the C API."
        => |py, [handle]| {
            let address = usize::try_from(py.index(SIG.required(py, handle, 0)?)?).ok().filter(|a| *a != 0);
            let Some(address) = address else {
                return Err(py.raise(Exc::Value, "adopt() needs a non-NULL dlb_tensor * handle"));
            };
            // SAFETY: the caller gives up a live handle (the package's contract).
            tensor_type::wrap(py, unsafe { Tensor::from_raw(address as *const c_void) })
        };
    from_buffer(2; "obj", "swap") c"from_buffer(obj, swap=False, /)\n--\n\nA Tensor over a buffer-protocol \
object's memory, zero copy; with swap, data in the other byte order becomes a native copy."
        => |py, [obj, swap]| {
            let swap = match swap { Some(s) => py.truth(s)?, None => false };
            tensor_type::wrap(py, interface::from_buffer(py, SIG.required(py, obj, 0)?, swap)?)
        };
    set_tensor_class(1; "cls") c"set_tensor_class(cls, /)\n--\n\nThe subclass of TensorBase whose instances the library makes."
        => |py, [cls]| tensor_type::register_class(py, SIG.required(py, cls, 0)?).map(|()| py.none());
    set_void_resolver(1; "f") c"set_void_resolver(f, /)\n--\n\nf(name) names the NumPy type of a dtype NumPy lacks (or None)."
        => |py, [f]| {
            interface::set_void_resolver(py, SIG.required(py, f, 0)?);
            Ok(py.none())
        };
    copy_flag(1; "copy") c"copy_flag(copy, /)\n--\n\nA copy argument as None, True or False (NumPy's rule)."
        => |py, [copy]| Ok(match args::copy_flag(py, Some(SIG.required(py, copy, 0)?))? {
            None => py.none(),
            Some(b) => py.bool(b),
        });
    parse_device(1; "device") c"parse_device(device, /)\n--\n\n(device_type, device_id) from \"cpu\", \"cuda:1\", a pair, or a DLPack producer."
        => |py, [device]| {
            let d = args::device(py, SIG.required(py, device, 0)?)?;
            py.tuple([py.int(i64::from(d.device_type.0)), py.int(i64::from(d.device_id))])
        };
    dtype(1; "dtype") c"dtype(dtype, /)\n--\n\n(code, bits, lanes) of a dtype name or object."
        => |py, [value]| {
            let d = args::dtype(py, SIG.required(py, value, 0)?)?.raw();
            py.tuple([py.int(i64::from(d.code.0)), py.int(i64::from(d.bits)), py.int(i64::from(d.lanes))])
        };
    host_types(0;) c"host_types()\n--\n\nThe producer types from_dlpack knows to be NumPy's (always host memory)."
        => |py, []| producers::numpy_types(py);
    raise_last(0;) c"raise_last()\n--\n\nRaises the exception for this thread's last failed C API call."
        => |py, []| {
            let e = crate::ffi::guard::last_error_value()
                .unwrap_or_else(|| crate::Error::new(crate::ErrorKind::InvalidArgument, "internal error in dlbridge"));
            Err(py.error(&e))
        };
    typestr(2; "typestr", "dtype") c"typestr(typestr, dtype=None, /)\n--\n\nWhether an array-interface typestr is in the other byte order \
(True: its data must be byte-swapped); BufferError for kinds DLPack cannot carry, ValueError for a malformed \
one. dtype names the type of a raw-byte (\"V\") typestr."
        => |py, [text, hint]| {
            let text = py.utf8(SIG.required(py, text, 0)?)?;
            let hint = match hint.filter(|d| !py.is_none(*d)) {
                Some(d) => Some(args::dtype(py, d)?.raw()),
                None => None,
            };
            let (_, swapped) = py.ok(crate::array_interface::parse_typestr_order(text, hint))?;
            Ok(py.bool(swapped))
        };
    exchange_api_calls(0;) c"exchange_api_calls()\n--\n\nHow many tensors consumers took out of \
dlbridge.Tensor objects through the C exchange API (__dlpack_c_exchange_api__) so far."
        => |py, []| py.uint(exchange::produced());
}

/// The namespace: functions, the base type, and the tables the package
/// shows (device names, the dtypes NumPy lacks).
fn namespace(py: Py<'_>) -> PyResult<Owned> {
    let base = tensor_type::create(py)?;
    constants(py)?;
    let mut items: Vec<(&CStr, PyResult<Owned>)> = Vec::new();
    for (name, def) in FUNCTIONS {
        // SAFETY: GIL held (token); a static definition, no `self`.
        let f = py.owned(unsafe { (py.api().cfunction_new)(def, std::ptr::null_mut(), std::ptr::null_mut()) });
        items.push((name, f));
    }
    items.push((c"TensorBase", Ok(py.retain(base))));
    let names = Device::names().iter().map(|(kind, name)| py.tuple([py.int(i64::from(kind.0)), py.str(name)]));
    items.push((c"device_names", py.tuple(names)));
    let host = Device::names().iter().filter(|(kind, _)| Device::is_host_kind(*kind));
    items.push((c"host_device_types", py.tuple(host.map(|(kind, _)| py.int(i64::from(kind.0))))));
    items.push((c"ml_dtypes", py.tuple(DType::ml_dtypes_names().map(|n| py.str(n)))));
    let release: unsafe extern "C" fn(*mut c_void) = interface::release_object;
    items.push((c"decref_release", py.uint(release as usize as u64)));
    py.dict(items)
}

/// Resolves the CPython API by name from the running interpreter (see
/// `python::api`) and refuses subinterpreters. DLB_OK, or a status whose
/// message names the missing symbol (the package raises ImportError).
///
/// # Safety
/// Called from the running interpreter, with the GIL (`PyDLL`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_init() -> c_int {
    // SAFETY: forwarded contract.
    crate::ffi::guard::status(|| unsafe { api::register() }) as c_int
}

/// The namespace dict (a new reference), or NULL with an exception set.
///
/// # Safety
/// After `dlb_py_init` succeeded, with the GIL (`PyDLL`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_py_module() -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { entry_object(namespace) }.cast()
}

/// The `dlbridge` package, imported (so its `Tensor` class is registered):
/// what the C entry points for extension authors need.
fn package(py: Py<'_>) -> PyResult<Owned> {
    // SAFETY: GIL held (token).
    py.owned(unsafe { (py.api().import_module)(c"dlbridge".as_ptr()) })
}

/// A tensor over any Python object that shares memory: a `dlbridge.Tensor`,
/// a DLPack capsule, a producer with the C exchange API (all answered
/// here), or anything `dlbridge.asarray` takes (`__dlpack__`, the array
/// interfaces, buffers, `__array__`). Without `allow_copy`, whatever would
/// need a copy is refused (BufferError).
pub fn tensor_from_object(py: Py<'_>, obj: Ref<'_>, allow_copy: bool) -> PyResult<Tensor> {
    if let Some(t) = tensor_type::tensor_of(py, obj) {
        return Ok(t.clone());
    }
    if py.is_exactly(obj, py.api().capsule_type) {
        return capsule::import(py, obj);
    }
    if let Some(producer) = producers::info(py, obj.type_of()).producer
        && let Some(t) = exchange::import_through(py, producer, obj)?
    {
        return Ok(t);
    }
    let asarray = py.getattr_str(package(py)?.as_ref(), c"asarray")?;
    let copy = if allow_copy { py.none() } else { py.bool(false) };
    let names = py.tuple([py.str("copy")])?;
    let made = py.call(asarray.as_ref(), &[obj, copy.as_ref()], Some(names.as_ref()))?;
    match tensor_type::tensor_of(py, made.as_ref()) {
        Some(t) => Ok(t.clone()),
        None => Err(py.raise(
            Exc::Runtime,
            "dlbridge.asarray made a tensor of another copy of libdlbridge: link the library the dlbridge \
             package loads (dlbridge.capi.path)",
        )),
    }
}

/// A new `dlbridge.Tensor` holding `tensor` (the package is imported first,
/// so the object is of its class).
pub fn tensor_to_object(py: Py<'_>, tensor: &Tensor) -> PyResult<Owned> {
    package(py)?;
    tensor_type::wrap(py, tensor.clone())
}
