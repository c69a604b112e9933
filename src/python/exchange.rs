//! DLPack 1.3's C exchange API, both sides.
//!
//! Producer: `TensorBase.__dlpack_c_exchange_api__` is a capsule named
//! "dlpack_exchange_api" holding [`TABLE`], a static `DLPackExchangeAPI`
//! (version 1.3, no older table chained): a consumer (tvm-ffi, CuTe DSL, a
//! kernel launcher) converts a `dlbridge.Tensor` with one C call instead of
//! `__dlpack__`. Every function must be called with the GIL held (the
//! spec's rule; an error path without it would crash) and returns 0, or -1
//! with a Python exception set; none synchronises a stream.
//!
//! Consumer: `from_dlpack(x)` asks `type(x).__dlpack_c_exchange_api__`
//! first (the answer cached per type, see `producers`) and takes the tensor
//! through the producer's table where that gives what `__dlpack__` would,
//! ordering its own work after the producer's current stream where
//! streams apply.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use dlpark::ffi::{DLDevice, DLDeviceType, DLManagedTensorVersioned, DLPackVersion, DLTensor};

use super::api::Exc;
use super::object::{Kept, Owned, Py, PyResult, Ref, entry};
use super::tensor_type;
use crate::device::Device;
use crate::dlpack::{export, import};
use crate::dtype::DType;
use crate::error::{Error, ErrorKind};
use crate::tensor::Tensor;

/// The capsule name the spec fixes.
pub const CAPSULE: &CStr = c"dlpack_exchange_api";

/// `DLPackExchangeAPIHeader`.
#[repr(C)]
pub struct Header {
    version: DLPackVersion,
    prev_api: *mut Header,
}

type SetError = unsafe extern "C" fn(ctx: *mut c_void, kind: *const c_char, message: *const c_char);

/// `DLPackExchangeAPI` (dlpack.h 1.3).
#[repr(C)]
pub struct ExchangeApi {
    header: Header,
    managed_tensor_allocator: Option<
        unsafe extern "C" fn(*mut DLTensor, *mut *mut DLManagedTensorVersioned, *mut c_void, Option<SetError>) -> c_int,
    >,
    managed_tensor_from_py_object_no_sync:
        Option<unsafe extern "C" fn(*mut c_void, *mut *mut DLManagedTensorVersioned) -> c_int>,
    managed_tensor_to_py_object_no_sync:
        Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned, *mut *mut c_void) -> c_int>,
    dltensor_from_py_object_no_sync: Option<unsafe extern "C" fn(*mut c_void, *mut DLTensor) -> c_int>,
    current_work_stream: Option<unsafe extern "C" fn(DLDeviceType, i32, *mut *mut c_void) -> c_int>,
}

// SAFETY: immutable static data (function pointers; `prev_api` is NULL).
unsafe impl Sync for ExchangeApi {}

/// dlbridge's table, for the life of the process.
pub static TABLE: ExchangeApi = ExchangeApi {
    header: Header { version: DLPackVersion { major: 1, minor: 3 }, prev_api: std::ptr::null_mut() },
    managed_tensor_allocator: Some(allocate),
    managed_tensor_from_py_object_no_sync: Some(to_managed),
    managed_tensor_to_py_object_no_sync: Some(from_managed),
    dltensor_from_py_object_no_sync: Some(fill_dltensor),
    current_work_stream: Some(current_stream),
};

/// Calls through the table's functions that took a tensor out of a
/// `dlbridge.Tensor` (`managed_tensor_from_py_object_no_sync` and
/// `dltensor_from_py_object_no_sync`): shows a consumer used the table.
static PRODUCED: AtomicU64 = AtomicU64::new(0);

/// How many tensors consumers took through the table so far.
pub fn produced() -> u64 {
    PRODUCED.load(Ordering::Relaxed)
}

/// The capsule published as `TensorBase.__dlpack_c_exchange_api__`.
pub fn capsule(py: Py<'_>) -> PyResult<Owned> {
    // SAFETY: GIL held (token); a static table and name, no destructor.
    py.owned(unsafe { (py.api().capsule_new)((&raw const TABLE).cast_mut().cast(), CAPSULE.as_ptr(), None) })
}

/// The tensor of a `dlbridge.Tensor` argument (TypeError for anything else).
fn tensor_arg<'a>(py: Py<'_>, o: *mut c_void) -> PyResult<&'a Tensor> {
    // SAFETY: consumers pass a live object (the spec's contract).
    let o = unsafe { Ref::from_ptr(o.cast()) };
    match o.and_then(|o| tensor_type::tensor_of(py, o)) {
        Some(t) => Ok(t),
        None => Err(py.raise(Exc::Type, "dlbridge's DLPack exchange API takes dlbridge.Tensor objects only")),
    }
}

/// `managed_tensor_allocator`: a new zero-filled dlbridge tensor shaped as
/// the prototype (dtype, ndim, shape, device), on the CPU, a CUDA device or
/// pinned memory. Errors go through `set_error` (kind: the Python
/// exception's name).
unsafe extern "C" fn allocate(
    prototype: *mut DLTensor,
    out: *mut *mut DLManagedTensorVersioned,
    error_ctx: *mut c_void,
    set_error: Option<SetError>,
) -> c_int {
    let made = std::panic::catch_unwind(|| {
        if prototype.is_null() || out.is_null() {
            return Err(Error::new(ErrorKind::NullArgument, "prototype and out must not be NULL"));
        }
        // SAFETY: a caller's prototype; only dtype, ndim, shape and device are read.
        let p = unsafe { &*prototype };
        let ndim = crate::layout::check_ndim(p.ndim)?;
        // SAFETY: `shape` holds `ndim` values (the prototype's contract).
        let Some(shape) = (unsafe { crate::layout::dims_from_raw(p.shape, ndim) }) else {
            return Err(Error::new(
                ErrorKind::InvalidShape,
                format!("the prototype's shape is NULL but ndim is {ndim}"),
            ));
        };
        let t = Tensor::zeros(Device::target(p.device)?, DType::new(p.dtype)?, shape)?;
        Ok(export::to_versioned(&t))
    });
    let failure = match made {
        Ok(Ok(mt)) => {
            // SAFETY: checked non-NULL and writable by contract.
            unsafe { out.write(mt) };
            return 0;
        }
        Ok(Err(e)) => e,
        Err(_) => Error::new(ErrorKind::InvalidArgument, "internal error (panic) in dlbridge"),
    };
    if let Some(set_error) = set_error {
        let kind = match super::api::exception_kind(&failure) {
            Exc::Value => c"ValueError",
            Exc::Memory => c"MemoryError",
            Exc::Runtime => c"RuntimeError",
            _ => c"BufferError",
        };
        let message = std::ffi::CString::new(failure.message().replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: the caller's callback and context, called once on failure.
        unsafe { set_error(error_ctx, kind.as_ptr(), message.as_ptr()) };
    }
    -1
}

/// `managed_tensor_from_py_object_no_sync`: a versioned export of a
/// `dlbridge.Tensor` (the consumer owns it and calls its deleter once).
unsafe extern "C" fn to_managed(o: *mut c_void, out: *mut *mut DLManagedTensorVersioned) -> c_int {
    // SAFETY: consumers call the table with the GIL held.
    unsafe {
        entry(-1, |py| {
            let t = tensor_arg(py, o)?;
            if out.is_null() {
                return Err(py.raise(Exc::Value, "out must not be NULL"));
            }
            PRODUCED.fetch_add(1, Ordering::Relaxed);
            out.write(export::to_versioned(t));
            Ok(0)
        })
    }
}

/// `managed_tensor_to_py_object_no_sync`: a `dlbridge.Tensor` taking over
/// (and validating) a managed tensor; on failure the tensor is freed.
unsafe extern "C" fn from_managed(mt: *mut DLManagedTensorVersioned, out: *mut *mut c_void) -> c_int {
    // SAFETY: consumers call the table with the GIL held.
    unsafe {
        entry(-1, |py| {
            let Some(mt) = NonNull::new(mt) else {
                return Err(py.raise(Exc::Value, "the managed tensor is NULL"));
            };
            // Taken over first: it is freed if anything below fails.
            let t = py.ok(import::from_versioned(mt))?;
            if out.is_null() {
                drop(t); // the producer's deleter runs before an exception is set
                return Err(py.raise(Exc::Value, "out must not be NULL"));
            }
            out.write(tensor_type::wrap(py, t)?.into_ptr().cast());
            Ok(0)
        })
    }
}

/// `dltensor_from_py_object_no_sync`: the view of a `dlbridge.Tensor` in a
/// caller's DLTensor; its shape and strides point into the tensor, valid
/// while the object lives (at least until control returns to Python). A
/// bare DLTensor carries no flags: padded sub-byte data (which it would
/// present as packed) and read-only memory (which a kernel might write) are
/// refused with BufferError; `managed_tensor_from_py_object_no_sync` says both.
unsafe extern "C" fn fill_dltensor(o: *mut c_void, out: *mut DLTensor) -> c_int {
    // SAFETY: consumers call the table with the GIL held.
    unsafe {
        entry(-1, |py| {
            let t = tensor_arg(py, o)?;
            if out.is_null() {
                return Err(py.raise(Exc::Value, "out must not be NULL"));
            }
            if t.flags().contains(crate::tensor::Flags::SUBBYTE_PADDED) || t.is_readonly() {
                let what = if t.is_readonly() { "read-only" } else { "padded sub-byte" };
                let message = format!(
                    "a {what} tensor cannot be described by a bare DLTensor (it has no flags): use \
                     managed_tensor_from_py_object_no_sync"
                );
                return Err(py.raise(Exc::Buffer, &message));
            }
            PRODUCED.fetch_add(1, Ordering::Relaxed);
            out.write(t.dltensor());
            Ok(0)
        })
    }
}

/// `current_work_stream`: NULL where streams do not apply; for CUDA and
/// managed memory the legacy default stream, where dlbridge orders its work.
unsafe extern "C" fn current_stream(kind: DLDeviceType, id: i32, out: *mut *mut c_void) -> c_int {
    // SAFETY: consumers call the table with the GIL held.
    unsafe {
        entry(-1, |py| {
            if out.is_null() {
                return Err(py.raise(Exc::Value, "out must not be NULL"));
            }
            py.ok(Device::new(DLDevice { device_type: kind, device_id: id }))?;
            let stream = if super::args::takes_stream(kind) { crate::cuda::LEGACY_STREAM } else { 0 };
            out.write(stream as *mut c_void);
            Ok(0)
        })
    }
}

/// A producer type's table, as `from_dlpack` uses it.
#[derive(Clone, Copy)]
pub struct Producer {
    /// The table (DLPack 1.x).
    pub api: &'static ExchangeApi,
    /// The type is PyTorch's (it has `is_conj()`, `is_neg()` and
    /// `requires_grad`): its table hands out what its `__dlpack__` refuses
    /// (lazy views as their stored values, tensors that require grad), and
    /// such tensors go through `__dlpack__` instead.
    pub torch_rules: bool,
}

/// `tp.__dlpack_c_exchange_api__`, walked along `prev_api` (at most eight
/// steps: a cycle is not followed for ever) to a table of major version 1.
/// None where `tp` overrides the `__dlpack__` of the class that publishes
/// the table (its own export rules must apply), or on any error (cleared).
pub fn lookup(py: Py<'_>, tp: Ref<'_>) -> Option<Producer> {
    let found = (|| {
        let capsule = py.getattr_str(tp, c"__dlpack_c_exchange_api__").ok()?;
        let owner = publisher(py, tp)?;
        let ours = py.getattr_str(tp, c"__dlpack__").ok()?;
        let theirs = py.getattr_str(owner.as_ref(), c"__dlpack__").ok()?;
        if ours.as_ref() != theirs.as_ref() {
            return None;
        }
        // SAFETY: GIL held; GetPointer checks the object and the name.
        let mut header =
            unsafe { (py.api().capsule_get_pointer)(capsule.as_ref().as_ptr(), CAPSULE.as_ptr()) }.cast::<Header>();
        // SAFETY: published tables live for the process (the spec's rule);
        // each header's `prev_api` is NULL or another table.
        let api = unsafe {
            for _ in 0..8 {
                if header.is_null() || (*header).version.major == 1 {
                    break;
                }
                header = (*header).prev_api;
            }
            header.cast::<ExchangeApi>().as_ref().filter(|_| (*header).version.major == 1)?
        };
        // The functions a consumer needs (the spec makes both mandatory).
        api.managed_tensor_from_py_object_no_sync?;
        api.current_work_stream?;
        let has = |name: &CStr| py.getattr_str(tp, name).is_ok();
        Some(Producer { api, torch_rules: has(c"is_conj") && has(c"is_neg") && has(c"requires_grad") })
    })();
    py.clear_error();
    found
}

/// The class in `tp.__mro__` whose own namespace defines
/// `__dlpack_c_exchange_api__`.
fn publisher(py: Py<'_>, tp: Ref<'_>) -> Option<Owned> {
    let mro = py.getattr_str(tp, c"__mro__").ok()?;
    if !py.is_tuple(mro.as_ref()) {
        return None;
    }
    (0..py.tuple_len(mro.as_ref())).find_map(|i| {
        let class = py.tuple_item(mro.as_ref(), i);
        let namespace = py.getattr_str(class, c"__dict__").ok()?;
        // SAFETY: GIL held; a mapping and a static name.
        let has = unsafe {
            (py.api().mapping_has_key_string)(namespace.as_ref().as_ptr(), c"__dlpack_c_exchange_api__".as_ptr())
        };
        (has == 1).then(|| py.retain(class))
    })
}

/// PyTorch's questions, asked of a tensor its table would hand out where
/// its `__dlpack__` refuses (`requires_grad`, `is_conj()`: a lazy conjugate
/// view, complex dtypes only, so asked only of those) or where both hand
/// out wrong values (`is_neg()`: a lazy negative view, real dtypes too).
#[derive(Clone, Copy)]
enum Question {
    RequiresGrad,
    IsNeg,
    IsConj,
}

/// Whether PyTorch answers yes (any error counts as yes: the caller then
/// takes the careful path).
fn torch_says(py: Py<'_>, x: Ref<'_>, question: Question) -> bool {
    static NAMES: OnceLock<[Kept; 3]> = OnceLock::new();
    let names = match NAMES.get() {
        Some(n) => n,
        None => match (py.interned(c"requires_grad"), py.interned(c"is_neg"), py.interned(c"is_conj")) {
            (Ok(a), Ok(b), Ok(c)) => NAMES.get_or_init(|| [Kept::new(a), Kept::new(b), Kept::new(c)]),
            _ => {
                py.clear_error();
                return true;
            }
        },
    };
    let name = names[question as usize].get(py);
    let answer = match question {
        Question::RequiresGrad => py.getattr(x, name),
        _ => py.call_method(name, &[x], None),
    };
    // Exactly False is the common answer: no truth call needed.
    let yes = match answer {
        Ok(a) if a.as_ref().is(py.api().false_) => false,
        Ok(a) => py.truth(a.as_ref()).unwrap_or(true),
        Err(_) => true,
    };
    py.clear_error();
    yes
}

/// Takes `x`'s tensor through its type's table: a versioned managed tensor
/// imported (validated) here, with dlbridge's stream (the legacy default)
/// ordered after the producer's current work stream where streams apply.
/// Ok(None): the table declined (an error, cleared) or would answer
/// differently from `__dlpack__` (PyTorch's rules): use
/// `__dlpack__`, whose answer (or refusal) is the producer's own.
pub fn import_through(py: Py<'_>, producer: Producer, x: Ref<'_>) -> PyResult<Option<Tensor>> {
    let api = producer.api;
    if producer.torch_rules {
        if torch_says(py, x, Question::RequiresGrad) {
            return Ok(None); // PyTorch's __dlpack__ says why not
        }
        if torch_says(py, x, Question::IsNeg) {
            // Both PyTorch's table and its __dlpack__ (2.15) hand out a lazy
            // negative view's stored values, not negated: refused here.
            return Err(py.raise(
                Exc::Buffer,
                "a PyTorch negative view (is_neg()) cannot be exchanged as it is stored: call resolve_neg() first",
            ));
        }
    }
    let from = api.managed_tensor_from_py_object_no_sync.expect("checked in lookup");
    let mut mt: *mut DLManagedTensorVersioned = std::ptr::null_mut();
    // SAFETY: GIL held (token); `x` is an object of the table's type.
    if unsafe { from(x.as_ptr().cast(), &mut mt) } != 0 {
        py.clear_error();
        return Ok(None);
    }
    let Some(mt) = NonNull::new(mt) else {
        return Ok(None);
    };
    // SAFETY: an owning managed tensor the producer handed over.
    let t = py.ok(unsafe { import::from_versioned(mt) })?;
    if producer.torch_rules
        && t.dtype().raw().code == dlpark::ffi::DLDataTypeCode::COMPLEX
        && torch_says(py, x, Question::IsConj)
    {
        drop(t); // back to PyTorch; its __dlpack__ answers instead
        return Ok(None);
    }
    let device = t.device();
    if super::args::takes_stream(device.kind()) {
        let current = api.current_work_stream.expect("checked in lookup");
        let mut stream: *mut c_void = std::ptr::null_mut();
        // SAFETY: GIL held; the producer's function, as the spec calls it.
        if unsafe { current(device.kind(), device.id(), &mut stream) } != 0 {
            // The tensor goes back to its producer with no exception pending
            // (its deleter may run Python code), then the failure is raised.
            let failure = py.error_text();
            py.clear_error();
            drop(t);
            let message = failure.unwrap_or_else(|| "no exception was set".into());
            return Err(py.raise(Exc::Runtime, &format!("the producer's current_work_stream failed: {message}")));
        }
        // NULL: the producer's default (legacy) stream, already ours.
        if !stream.is_null() {
            let cuda = py.ok(Device::cuda(device.id()))?;
            let stream = stream as usize;
            py.ok(py.without_gil(|| crate::cuda::stream_wait(cuda, crate::cuda::LEGACY_STREAM, stream)))?;
        }
    }
    Ok(Some(t))
}
