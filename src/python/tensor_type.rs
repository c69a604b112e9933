//! The `Tensor` type, built by the library from a type spec (CPython's
//! stable ABI: `PyType_FromSpec`, `PyMethodDef`, `PyGetSetDef`): the
//! tensor lives in the object's own C struct. The Python package subclasses
//! it (`dlbridge.Tensor`) for the pure-Python conveniences (repr, pickling,
//! `numpy()`), and registers that subclass: instances the library makes are
//! of it.

use std::ffi::{CStr, c_int, c_void};
use std::mem::offset_of;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use dlpark::ffi::DLDevice;

use super::api::{Exc, Obj, PyGetSetDef, PyMemberDef, PyMethodDef, PyObject, PyTypeSlot, PyTypeSpec};
use super::args::{self, Call, Signature};
use super::capsule;
use super::interface;
use super::object::{Head, Kept, Owned, Py, PyResult, Ref, entry_object};
use crate::copy;
use crate::device::Device;
use crate::tensor::{Flags, Tensor};

/// A Tensor instance: the object header, the tensor (None only in an
/// instance the library did not make, which every method refuses), and the
/// weak-reference list.
#[repr(C)]
struct Object {
    head: Head,
    tensor: Option<Tensor>,
    weakrefs: Obj,
}

/// The base type, made once by [`create`].
static BASE: OnceLock<Kept> = OnceLock::new();
/// The class of new instances: the package's subclass once registered (a
/// reference kept for the process; NULL: the base type).
static CLASS: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());

// typeslots.h; object.h; structmember.h.
const PY_TP_ALLOC: c_int = 47;
const PY_TP_DEALLOC: c_int = 52;
const PY_TP_DOC: c_int = 56;
const PY_TP_METHODS: c_int = 64;
const PY_TP_NEW: c_int = 65;
const PY_TP_MEMBERS: c_int = 72;
const PY_TP_GETSET: c_int = 73;
const PY_TP_FREE: c_int = 74;
const PY_MP_LENGTH: c_int = 4;
const PY_NB_BOOL: c_int = 9;
const TPFLAGS_DEFAULT: u32 = 1 << 18;
const TPFLAGS_BASETYPE: u32 = 1 << 10;
const T_PYSSIZET: c_int = 19;
const READONLY: c_int = 1;

/// What a getter returns; its number is the getter's closure.
#[derive(Clone, Copy)]
enum Attr {
    Shape,
    Strides,
    Dtype,
    Device,
    Ndim,
    Nbytes,
    Readonly,
    IsCopied,
    IsPadded,
    IsContiguous,
    DataPtr,
    Handle,
    ArrayInterface,
    CudaArrayInterface,
    ArrayStruct,
}

const ATTRS: [Attr; 15] = [
    Attr::Shape,
    Attr::Strides,
    Attr::Dtype,
    Attr::Device,
    Attr::Ndim,
    Attr::Nbytes,
    Attr::Readonly,
    Attr::IsCopied,
    Attr::IsPadded,
    Attr::IsContiguous,
    Attr::DataPtr,
    Attr::Handle,
    Attr::ArrayInterface,
    Attr::CudaArrayInterface,
    Attr::ArrayStruct,
];

macro_rules! getset {
    ($( $attr:ident: $name:literal, $doc:literal; )*) => {
        static GETSET: [PyGetSetDef; ATTRS.len() + 1] = [
            $( PyGetSetDef {
                name: $name.as_ptr(),
                get: get as *const c_void,
                set: std::ptr::null(),
                doc: $doc.as_ptr(),
                closure: Attr::$attr as usize as *mut c_void,
            }, )*
            PyGetSetDef { name: std::ptr::null(), get: std::ptr::null(), set: std::ptr::null(), doc: std::ptr::null(), closure: std::ptr::null_mut() },
        ];
    };
}

getset! {
    Shape: c"shape", c"The dimensions (a tuple of ints).";
    Strides: c"strides", c"The strides, in elements (a tuple of ints; DLPack's unit, not NumPy's bytes).";
    Dtype: c"dtype", c"The dtype's name: \"float32\", \"bool\", \"bfloat16\", \"float8_e4m3fn\", ...";
    Device: c"device", c"Where the memory is: \"cpu\", \"cuda:0\", \"cuda_host\", ...";
    Ndim: c"ndim", c"The number of dimensions.";
    Nbytes: c"nbytes", c"Bytes the elements occupy (packed sub-byte types: rounded up).";
    Readonly: c"readonly", c"True when the memory must not be written (a read-only producer or legacy import).";
    IsCopied: c"is_copied", c"True when this memory is a copy made for an exchange (DLPack's IS_COPIED).";
    IsPadded: c"is_padded", c"True when sub-byte elements (int4, float4_e2m1fn, ...) take one byte each (DLPack's IS_SUBBYTE_TYPE_PADDED); False when packed, and for every other dtype.";
    IsContiguous: c"is_contiguous", c"True when the elements are compact and row-major.";
    DataPtr: c"data_ptr", c"The address of the first element (an int).";
    Handle: c"_handle", c"The C API handle (dlb_tensor *, an int) of this tensor, borrowed: valid while this object lives.";
    ArrayInterface: c"__array_interface__", c"NumPy's array interface (version 3), zero copy; CPU-readable memory only (AttributeError otherwise). The dict keeps the memory alive under \"__ref\".";
    CudaArrayInterface: c"__cuda_array_interface__", c"The CUDA array interface (version 3) of a CUDA tensor, zero copy; stream 1: dlbridge's CUDA work is on the legacy default stream.";
    ArrayStruct: c"__array_struct__", c"NumPy's C-level array interface (a capsule that keeps the memory alive): what np.asarray reads first. CPU-readable memory only (AttributeError otherwise).";
}

const fn method(name: &'static CStr, meth: *const c_void, flags: c_int, doc: &'static CStr) -> PyMethodDef {
    PyMethodDef { name: name.as_ptr(), meth, flags, doc: doc.as_ptr() }
}

static METHODS: [PyMethodDef; 7] = [
    method(
        c"__dlpack__",
        dlpack as *const c_void,
        super::api::METH_FASTCALL_KEYWORDS,
        c"__dlpack__($self, /, *, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n\
A DLPack capsule of this tensor: \"dltensor_versioned\" when max_version allows it, legacy \
\"dltensor\" otherwise (refused for read-only data: BufferError). copy=True exports a copy \
(IS_COPIED), copy=False refuses anything that needs one; dl_device exports a copy on that \
device; stream (CUDA and managed memory only) is the consumer's stream, ordered after ours.",
    ),
    method(
        c"__dlpack_device__",
        dlpack_device as *const c_void,
        super::api::METH_NOARGS,
        c"__dlpack_device__($self, /)\n--\n\n(device_type, device_id) of this tensor, as DLPack numbers them.",
    ),
    method(
        c"copy",
        copy_method as *const c_void,
        super::api::METH_NOARGS,
        c"copy($self, /)\n--\n\nA compact row-major copy in new memory on the same device (writable, \
IS_COPIED); managed and ROCm host memory, where dlbridge does not allocate, are copied to the CPU. \
Runs without the GIL.",
    ),
    method(
        c"astype",
        astype as *const c_void,
        super::api::METH_FASTCALL_KEYWORDS,
        c"astype($self, dtype)\n--\n\nA compact row-major copy converted to dtype (a name such as \
\"float16\", \"bfloat16\" or \"f4\", or a NumPy / ml_dtypes dtype), as NumPy's astype converts; \
float16 and bfloat16 round to nearest even. Runs without the GIL.",
    ),
    method(
        c"to_device",
        to_device as *const c_void,
        super::api::METH_FASTCALL_KEYWORDS,
        c"to_device($self, device)\n--\n\nThis tensor on device (\"cpu\", \"cuda:1\", \"cuda_host\" \
for pinned memory, or a (type, id) pair): the same tensor when it is already there and \
compact, else an explicit, synchronous copy (compact row-major, IS_COPIED). Runs without the GIL.",
    ),
    method(
        c"repack",
        repack as *const c_void,
        super::api::METH_FASTCALL_KEYWORDS,
        c"repack($self, padded)\n--\n\nA compact copy of sub-byte data (int2, int4, float4_e2m1fn, float6_*) \
stored padded (padded=True: one element per byte, as NumPy and ml_dtypes keep them) or packed \
(padded=False: DLPack's default, little bit-endian). BufferError for other dtypes. Runs without the GIL.",
    ),
    PyMethodDef { name: std::ptr::null(), meth: std::ptr::null(), flags: 0, doc: std::ptr::null() },
];

static MEMBERS: [PyMemberDef; 2] = [
    PyMemberDef {
        name: c"__weaklistoffset__".as_ptr(),
        kind: T_PYSSIZET,
        offset: offset_of!(Object, weakrefs) as isize,
        flags: READONLY,
        doc: std::ptr::null(),
    },
    PyMemberDef { name: std::ptr::null(), kind: 0, offset: 0, flags: 0, doc: std::ptr::null() },
];

const DOC: &CStr = c"A view of memory (shape, strides, dtype, device, read-only flag) that keeps that \
memory alive and exchanges it with zero copy through DLPack (__dlpack__) and NumPy's array \
interface. Made by dlbridge.from_dlpack, dlbridge.asarray and dlbridge.zeros.";

/// Makes the base type (once per process; later calls return it).
pub fn create(py: Py<'_>) -> PyResult<Ref<'_>> {
    if let Some(base) = BASE.get() {
        return Ok(base.get(py));
    }
    let mut slots = [
        PyTypeSlot { slot: PY_TP_DEALLOC, pfunc: dealloc as *mut c_void },
        PyTypeSlot { slot: PY_TP_DOC, pfunc: DOC.as_ptr().cast_mut().cast() },
        PyTypeSlot { slot: PY_TP_METHODS, pfunc: (&raw const METHODS).cast_mut().cast() },
        PyTypeSlot { slot: PY_TP_GETSET, pfunc: (&raw const GETSET).cast_mut().cast() },
        PyTypeSlot { slot: PY_TP_MEMBERS, pfunc: (&raw const MEMBERS).cast_mut().cast() },
        PyTypeSlot { slot: PY_MP_LENGTH, pfunc: length as *mut c_void },
        PyTypeSlot { slot: PY_TP_NEW, pfunc: refuse_new as *mut c_void },
        PyTypeSlot { slot: PY_NB_BOOL, pfunc: truth as *mut c_void },
        PyTypeSlot { slot: 0, pfunc: std::ptr::null_mut() },
    ];
    let mut spec = PyTypeSpec {
        // Kept by the type (tp_name points into it): static.
        name: c"dlbridge.TensorBase".as_ptr(),
        basicsize: std::mem::size_of::<Object>() as c_int,
        itemsize: 0,
        flags: TPFLAGS_DEFAULT | TPFLAGS_BASETYPE,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: GIL held (token); the spec is complete and its tables static.
    let tp = py.owned(unsafe { (py.api().type_from_spec)(&mut spec) })?;
    // DLPack 1.3's C exchange API, published on the type (subclasses inherit it).
    let table = super::exchange::capsule(py)?;
    // SAFETY: GIL held; a type that allows attributes to be set (not immutable).
    if unsafe {
        (py.api().set_attr_string)(tp.as_ref().as_ptr(), c"__dlpack_c_exchange_api__".as_ptr(), table.as_ref().as_ptr())
    } != 0
    {
        return Err(py.already_raised());
    }
    let _ = BASE.set(Kept::new(tp));
    Ok(BASE.get().expect("just set").get(py))
}

/// Makes `cls` (a subclass of the base type) the class of new instances.
pub fn register_class(py: Py<'_>, cls: Ref<'_>) -> PyResult<()> {
    let base = create(py)?;
    // SAFETY: GIL held (token); IsSubtype needs two types (checked first).
    if !py.is_type(cls) || unsafe { (py.api().type_is_subtype)(cls.as_ptr(), base.as_ptr()) } == 0 {
        return Err(py.raise(Exc::Type, "the tensor class must be a subclass of dlbridge.TensorBase"));
    }
    // A class registered before keeps its reference: instances may still use it.
    CLASS.store(py.retain(cls).into_ptr(), Ordering::Release);
    Ok(())
}

/// A new instance holding `tensor`.
pub fn wrap(py: Py<'_>, tensor: Tensor) -> PyResult<Owned> {
    // SAFETY: a class registered for the process (its reference is never released).
    let class = match unsafe { Ref::from_ptr(CLASS.load(Ordering::Acquire)) } {
        Some(c) => c,
        None => create(py)?,
    };
    // SAFETY: GIL held; tp_alloc of a type whose instances are `Object`s (or
    // a subclass's, which begin with one): zeroed memory, `tensor` None.
    unsafe {
        let alloc: unsafe extern "C" fn(Obj, isize) -> Obj =
            std::mem::transmute((py.api().type_get_slot)(class.as_ptr(), PY_TP_ALLOC));
        let o = py.owned(alloc(class.as_ptr(), 0))?;
        (&raw mut (*o.as_ref().as_ptr().cast::<Object>()).tensor).write(Some(tensor));
        Ok(o)
    }
}

/// The tensor of `o` when it is a Tensor (any subclass) the library made.
pub fn tensor_of<'a>(py: Py<'_>, o: Ref<'a>) -> Option<&'a Tensor> {
    let base = BASE.get()?.get(py);
    // SAFETY: GIL held; two types.
    let is = o.type_of() == base || unsafe { (py.api().type_is_subtype)(o.type_of().as_ptr(), base.as_ptr()) } != 0;
    // SAFETY: an instance of the base type (or a subclass) is an `Object`,
    // whose tensor lives as long as the object.
    is.then(|| unsafe { (*o.as_ptr().cast::<Object>()).tensor.as_ref() }).flatten()
}

/// The tensor of a method's `self` (CPython's descriptors checked its type).
///
/// # Safety
/// `this` is an instance of the base type (or a subclass), alive for `'a`.
unsafe fn this<'a>(py: Py<'_>, this: Obj) -> PyResult<&'a Tensor> {
    // SAFETY: by contract.
    match unsafe { (*this.cast::<Object>()).tensor.as_ref() } {
        Some(t) => Ok(t),
        None => Err(py.raise(
            Exc::Value,
            "this Tensor holds no tensor (make tensors with dlbridge.from_dlpack, asarray or zeros)",
        )),
    }
}

/// Drops a tensor; device memory (whose free may wait for the device)
/// without the GIL.
pub fn release(py: Py<'_>, tensor: Tensor) {
    if tensor.device() == Device::CPU {
        drop(tensor);
    } else {
        py.without_gil(move || drop(tensor));
    }
}

unsafe extern "C" fn dealloc(o: Obj) {
    // SAFETY: CPython deallocates with the GIL held, an `Object` (or a
    // subclass instance) whose last reference is gone; the type is a heap
    // type, which each instance holds a reference to.
    unsafe {
        let Some(py) = Py::assume() else { return };
        let object = o.cast::<Object>();
        let tp = Ref::from_ptr(o).expect("live").type_of().as_ptr();
        if !(*object).weakrefs.is_null() {
            (py.api().clear_weakrefs)(o);
        }
        if let Some(tensor) = (*object).tensor.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| release(py, tensor)));
        }
        let free: unsafe extern "C" fn(*mut c_void) = std::mem::transmute((py.api().type_get_slot)(tp, PY_TP_FREE));
        free(o.cast());
        (py.api().decref)(tp);
    }
}

/// `Tensor(...)` (and a subclass's): refused, saying how tensors are made;
/// every instance holds a tensor the library put there.
unsafe extern "C" fn refuse_new(_tp: Obj, _args: Obj, _kwargs: Obj) -> Obj {
    // SAFETY: CPython calls tp_new with the GIL.
    unsafe {
        entry_object(|py| {
            Err(py.raise(Exc::Type, "create tensors with dlbridge.from_dlpack, dlbridge.asarray or dlbridge.zeros"))
        })
    }
}

/// `bool(tensor)`: refused (ValueError), as NumPy refuses an array of
/// several elements; `len()` alone would make empty tensors false.
unsafe extern "C" fn truth(_o: Obj) -> c_int {
    // SAFETY: CPython calls slots with the GIL.
    unsafe {
        super::object::entry(-1, |py| {
            Err(py.raise(
                Exc::Value,
                "the truth value of a dlbridge.Tensor is ambiguous: test its shape, or its data through numpy()",
            ))
        })
    }
}

unsafe extern "C" fn length(o: Obj) -> isize {
    // SAFETY: CPython calls slots with the GIL, on an instance.
    unsafe {
        super::object::entry(-1, |py| {
            let t = this(py, o)?;
            match t.shape().first() {
                Some(n) => Ok(*n as isize),
                None => Err(py.raise(Exc::Type, "len() of a 0-d tensor")),
            }
        })
    }
}

/// A device in Python's spelling for messages: "(2, 0)".
pub fn pair(d: DLDevice) -> String {
    format!("({}, {})", d.device_type.0, d.device_id)
}

/// Whether two DLPack devices are the same (type and id).
pub fn same_device(a: DLDevice, b: DLDevice) -> bool {
    a.device_type == b.device_type && a.device_id == b.device_id
}

/// A copy of `t` on `target` (GIL released), every failure a BufferError
/// that says `what` failed.
pub fn moved(py: Py<'_>, t: &Tensor, target: DLDevice, what: &str) -> PyResult<Tensor> {
    let made = Device::target(target).and_then(|device| py.without_gil(|| copy::to_device(t, device)));
    made.map_err(|e| {
        py.raise(Exc::Buffer, &format!("cannot {what} a {} tensor to device {}: {e}", t.device(), pair(target)))
    })
}

static DLPACK: Signature<4> = Signature::new("__dlpack__", 0, ["stream", "max_version", "dl_device", "copy"]);
static ASTYPE: Signature<1> = Signature::new("astype", 1, ["dtype"]);
static TO_DEVICE: Signature<1> = Signature::new("to_device", 1, ["device"]);
static REPACK: Signature<1> = Signature::new("repack", 1, ["padded"]);

/// Hands `t` to a consumer's stream: the memory's free waits for the work
/// the consumer queues there, and (CUDA and managed memory) that work waits
/// for the work already queued on the legacy stream. Pinned memory has no
/// pending work of dlbridge's: its copies are synchronous.
fn handoff(py: Py<'_>, t: &Tensor, consumer: usize) -> PyResult<()> {
    #[cfg(feature = "cuda")]
    t.used_on_stream(consumer);
    if args::takes_stream(t.device().kind()) {
        let device = py.ok(Device::cuda(t.device().id()))?;
        py.ok(py.without_gil(|| crate::cuda::stream_wait(device, consumer, crate::cuda::LEGACY_STREAM)))?;
    }
    Ok(())
}

/// `Tensor.__dlpack__`.
unsafe extern "C" fn dlpack(o: Obj, args: *const Obj, nargs: isize, kwnames: Obj) -> Obj {
    // SAFETY: CPython calls methods with the GIL, on an instance, with its arguments.
    unsafe {
        entry_object(|py| {
            let t = this(py, o)?;
            let call = Call::new(py, args, nargs, kwnames);
            let [stream, max_version, dl_device, copy] = call.bind(py, &DLPACK)?;
            let copy = args::copy_flag(py, copy)?;
            let consumer = args::stream(py, stream, t.device())?;
            // The consumer's stream goes with the memory it gets (a copy's, when one is made).
            let export = |py: Py<'_>, tensor: Tensor, versioned: bool| {
                if let Some(consumer) = consumer {
                    handoff(py, &tensor, consumer as usize)?;
                }
                capsule::export(py, tensor, versioned)
            };
            let versioned = match max_version.filter(|v| !py.is_none(*v)) {
                None => false,
                Some(v) => {
                    let pair = if py.is_exactly(v, py.api().tuple_type) { py.pair(v) } else { None };
                    let Some((major, _)) = pair else {
                        let message = format!("max_version must be a (major, minor) tuple, not {}", py.repr(v));
                        return Err(py.raise(Exc::Type, &message));
                    };
                    py.index(major)? >= 1
                }
            };
            if let Some(d) = dl_device.filter(|d| !py.is_none(*d)) {
                let target = args::device(py, d)?;
                if !same_device(target, t.device().raw()) {
                    if copy == Some(false) {
                        let message =
                            format!("exporting to device {} needs a copy, and copy=False forbids it", pair(target));
                        return Err(py.raise(Exc::Buffer, &message));
                    }
                    return export(py, moved(py, t, target, "export")?, versioned);
                }
            }
            let tensor = if copy == Some(true) { py.ok(py.without_gil(|| copy::duplicate(t)))? } else { t.clone() };
            export(py, tensor, versioned)
        })
    }
}

/// `Tensor.__dlpack_device__`.
unsafe extern "C" fn dlpack_device(o: Obj, _unused: Obj) -> Obj {
    // SAFETY: CPython calls methods with the GIL, on an instance.
    unsafe {
        entry_object(|py| {
            // The common answer, made once: (1, 0).
            static CPU: OnceLock<Kept> = OnceLock::new();
            let d = this(py, o)?.device();
            let make = || py.tuple([py.int(i64::from(d.kind().0)), py.int(i64::from(d.id()))]);
            if d != Device::CPU {
                return make();
            }
            if let Some(cpu) = CPU.get() {
                return Ok(py.retain(cpu.get(py)));
            }
            let cpu = make()?;
            let _ = CPU.set(Kept::new(py.retain(cpu.as_ref())));
            Ok(cpu)
        })
    }
}

/// `Tensor.copy()`.
unsafe extern "C" fn copy_method(o: Obj, _unused: Obj) -> Obj {
    // SAFETY: CPython calls methods with the GIL, on an instance.
    unsafe {
        entry_object(|py| {
            let t = this(py, o)?;
            wrap(py, py.ok(py.without_gil(|| copy::duplicate(t)))?)
        })
    }
}

/// A method of one required argument: `body(py, tensor, self, argument)`.
///
/// # Safety
/// As CPython calls a `METH_FASTCALL | METH_KEYWORDS` method: the GIL held,
/// `o` an instance, the vectorcall arguments.
unsafe fn one_argument(
    o: Obj,
    (args, nargs, kwnames): (*const Obj, isize, Obj),
    sig: &Signature<1>,
    body: impl FnOnce(Py<'_>, &Tensor, Ref<'_>, Ref<'_>) -> PyResult<Owned>,
) -> Obj {
    // SAFETY: by contract.
    unsafe {
        entry_object(|py| {
            let t = this(py, o)?;
            let [argument] = Call::new(py, args, nargs, kwnames).bind(py, sig)?;
            body(py, t, Ref::from_ptr(o).expect("self"), sig.required(py, argument, 0)?)
        })
    }
}

/// `Tensor.astype(dtype)`.
unsafe extern "C" fn astype(o: Obj, args: *const Obj, nargs: isize, kwnames: Obj) -> Obj {
    // SAFETY: CPython calls methods with the GIL, on an instance, with its arguments.
    unsafe {
        one_argument(o, (args, nargs, kwnames), &ASTYPE, |py, t, _, dtype| {
            let dtype = args::dtype(py, dtype)?;
            wrap(py, py.ok(py.without_gil(|| copy::astype(t, dtype)))?)
        })
    }
}

/// `Tensor.to_device(device)`.
unsafe extern "C" fn to_device(o: Obj, args: *const Obj, nargs: isize, kwnames: Obj) -> Obj {
    // SAFETY: CPython calls methods with the GIL, on an instance, with its arguments.
    unsafe {
        one_argument(o, (args, nargs, kwnames), &TO_DEVICE, |py, t, this, device| {
            let target = args::device(py, device)?;
            if same_device(target, t.device().raw()) && t.is_contiguous() {
                return Ok(py.retain(this));
            }
            let device = py.ok(Device::target(target))?;
            wrap(py, py.ok(py.without_gil(|| copy::to_device(t, device)))?)
        })
    }
}

/// `Tensor.repack(padded)`.
unsafe extern "C" fn repack(o: Obj, args: *const Obj, nargs: isize, kwnames: Obj) -> Obj {
    // SAFETY: CPython calls methods with the GIL, on an instance, with its arguments.
    unsafe {
        one_argument(o, (args, nargs, kwnames), &REPACK, |py, t, _, padded| {
            let padded = py.truth(padded)?;
            wrap(py, py.ok(py.without_gil(|| copy::repack(t, padded)))?)
        })
    }
}

/// Every getter (the closure says which attribute).
unsafe extern "C" fn get(o: Obj, closure: *mut c_void) -> Obj {
    // SAFETY: CPython calls getters with the GIL, on an instance.
    unsafe {
        entry_object(|py| {
            let t = this(py, o)?;
            let this_ref = Ref::from_ptr(o).expect("self");
            let host = t.device().is_host_accessible();
            match ATTRS[closure as usize] {
                Attr::Shape => py.ints(t.shape()),
                Attr::Strides => py.ints(t.strides()),
                Attr::Dtype => py.str(&t.dtype().name()),
                Attr::Device => py.str(&t.device().to_string()),
                Attr::Ndim => py.int(t.ndim() as i64),
                Attr::Nbytes => py.uint(t.nbytes()),
                Attr::Readonly => Ok(py.bool(t.is_readonly())),
                Attr::IsCopied => Ok(py.bool(t.flags().contains(Flags::IS_COPIED))),
                Attr::IsPadded => Ok(py.bool(t.flags().contains(Flags::SUBBYTE_PADDED))),
                Attr::IsContiguous => Ok(py.bool(t.is_contiguous())),
                Attr::DataPtr => py.uint(t.data() as u64),
                Attr::Handle => py.uint(t.as_raw() as u64),
                Attr::ArrayInterface if host => interface::dict(py, t, this_ref),
                Attr::ArrayInterface => {
                    let message =
                        format!("a {} tensor has no __array_interface__; call .to_device('cpu') first", t.device());
                    Err(py.raise(Exc::Attribute, &message))
                }
                Attr::CudaArrayInterface if t.device().kind() == dlpark::ffi::DLDeviceType::CUDA => {
                    interface::dict(py, t, this_ref)
                }
                Attr::CudaArrayInterface => {
                    Err(py.raise(Exc::Attribute, &format!("a {} tensor has no __cuda_array_interface__", t.device())))
                }
                Attr::ArrayStruct => interface::array_struct(py, t),
            }
        })
    }
}
