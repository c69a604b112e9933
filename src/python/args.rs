//! Arguments from Python, checked once for every entry point: keyword
//! parsing for vectorcall functions, and the rules for `copy`, devices,
//! dtypes and streams.

use dlpark::ffi::{DLDevice, DLDeviceType};

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::api::{Exc, Obj, PyObject};
use super::object::{Py, PyResult, Ref};
use crate::device::Device;
use crate::dtype::DType;

/// The arguments CPython passes to a `METH_FASTCALL | METH_KEYWORDS`
/// function: positional values, then one value per name of `kwnames`
/// (read in place: binding allocates nothing).
pub struct Call<'a> {
    values: &'a [Obj],
    nargs: usize,
    kwnames: Option<Ref<'a>>,
}

impl<'a> Call<'a> {
    /// Reads a vectorcall.
    ///
    /// # Safety
    /// As CPython passes them: `args` holds `nargs` positional values, then
    /// one per item of `kwnames` (NULL or a tuple of str), alive for `'a`.
    pub unsafe fn new(py: Py<'_>, args: *const Obj, nargs: isize, kwnames: Obj) -> Call<'a> {
        // SAFETY: by contract.
        unsafe {
            let kwnames = Ref::from_ptr(kwnames);
            let count = nargs as usize + kwnames.map_or(0, |k| py.tuple_len(k));
            let values: &[Obj] = if count == 0 { &[] } else { std::slice::from_raw_parts(args, count) };
            Call { values, nargs: nargs as usize, kwnames }
        }
    }

    fn value(&self, i: usize) -> Ref<'a> {
        // SAFETY: CPython passes live, non-NULL arguments (see `new`).
        unsafe { Ref::from_ptr(self.values[i]) }.expect("CPython passes no NULL argument")
    }

    /// The values of `sig`'s parameters (keywords; the first `positional`
    /// of them may also come by position), as Python would bind them for
    /// `function(a, b, /, *, c, d)`: too many positional arguments, an
    /// unknown keyword and a value given twice are TypeErrors. None: absent.
    pub fn bind<const N: usize>(&self, py: Py<'_>, sig: &Signature<N>) -> PyResult<[Option<Ref<'a>>; N]> {
        let function = sig.function;
        let mut out = [None; N];
        if self.nargs > sig.positional {
            let message = format!(
                "{}() takes {} positional argument{} but {} were given",
                function,
                sig.positional,
                if sig.positional == 1 { "" } else { "s" },
                self.nargs
            );
            return Err(py.raise(Exc::Type, &message));
        }
        for (i, slot) in out.iter_mut().enumerate().take(self.nargs) {
            *slot = Some(self.value(i));
        }
        let Some(kwnames) = self.kwnames else { return Ok(out) };
        // The same keyword tuple as last time (CPython and NumPy pass one
        // tuple per call site): its names bind as they did then.
        let slots = sig.slots.load(Ordering::Relaxed);
        if kwnames.as_ptr() == sig.last.load(Ordering::Relaxed) && (slots >> 56) as usize == self.nargs {
            for i in self.nargs..self.values.len() {
                out[((slots >> (4 * (i - self.nargs))) & 0xf) as usize] = Some(self.value(i));
            }
            return Ok(out);
        }
        let mut slots = 0u64;
        for i in self.nargs..self.values.len() {
            let name = py.utf8(py.tuple_item(kwnames, i - self.nargs))?;
            let Some(k) = sig.names.iter().position(|n| *n == name) else {
                let message = format!("{function}() got an unexpected keyword argument '{name}'");
                return Err(py.raise(Exc::Type, &message));
            };
            if out[k].is_some() {
                let message = format!("{function}() got multiple values for argument '{name}'");
                return Err(py.raise(Exc::Type, &message));
            }
            out[k] = Some(self.value(i));
            slots |= (k as u64) << (4 * (i - self.nargs).min(13));
        }
        // Up to 12 keywords of up to 16 parameters: 4 bits each, then the
        // positional count (a different count binds differently).
        let count = self.values.len() - self.nargs;
        if count <= 12 && N <= 16 && self.nargs < 256 {
            let slots = slots | (self.nargs as u64) << 56;
            // Keep the tuple (a reference held, so its address is not reused
            // by another tuple while it is remembered); the GIL serialises this.
            let kept = py.retain(kwnames).into_ptr();
            sig.slots.store(slots, Ordering::Relaxed);
            let previous = sig.last.swap(kept, Ordering::Relaxed);
            // SAFETY: the reference taken when `previous` was remembered.
            if let Some(previous) = unsafe { Ref::from_ptr(previous) } {
                // SAFETY: GIL held (token); our reference.
                unsafe { (py.api().decref)(previous.as_ptr()) };
            }
        }
        Ok(out)
    }
}

/// A function's parameters for [`Call::bind`], and the last keyword tuple
/// it bound (a reference held) with where each of its names went.
pub struct Signature<const N: usize> {
    function: &'static str,
    positional: usize,
    names: [&'static str; N],
    last: AtomicPtr<PyObject>,
    slots: AtomicU64,
}

impl<const N: usize> Signature<N> {
    /// The value bound to parameter `i`, which must be there (TypeError
    /// naming it otherwise).
    pub fn required<'a>(&self, py: Py<'_>, value: Option<Ref<'a>>, i: usize) -> PyResult<Ref<'a>> {
        value.ok_or_else(|| {
            py.raise(Exc::Type, &format!("{}() missing required argument '{}'", self.function, self.names[i]))
        })
    }

    /// `function(names[..positional], /, *, names[positional..])`.
    pub const fn new(function: &'static str, positional: usize, names: [&'static str; N]) -> Signature<N> {
        Signature { function, positional, names, last: AtomicPtr::new(std::ptr::null_mut()), slots: AtomicU64::new(0) }
    }
}

/// A `copy` argument as None / True / False, with NumPy's rule: None, or
/// any value by its truth (`np.True_`, 1, a 0-d array); strings and bytes
/// are a ValueError, and so is a value without a truth (an array of several
/// elements).
pub fn copy_flag(py: Py<'_>, copy: Option<Ref<'_>>) -> PyResult<Option<bool>> {
    let Some(copy) = copy.filter(|c| !py.is_none(*c)) else { return Ok(None) };
    if py.is_str(copy) || py.is_bytes(copy) {
        let message = format!("copy must be True, False or None, not the string {}", py.repr(copy));
        return Err(py.raise(Exc::Value, &message));
    }
    py.truth(copy).map(Some).map_err(|raised| {
        if py.error_matches(Exc::Value) || py.error_matches(Exc::Type) {
            py.clear_error();
            return py.raise(Exc::Value, "copy must be True, False or None: its truth value is ambiguous");
        }
        raised
    })
}

/// A device number: an integer (not a bool) in 0 .. 2**31 - 1.
fn device_int(py: Py<'_>, value: Ref<'_>, what: &str) -> PyResult<i32> {
    if py.is_bool(value) {
        return Err(py.raise(Exc::Value, &format!("{what} must be an integer, not a bool")));
    }
    let v = py.index(value).map_err(|_| {
        py.clear_error();
        py.raise(Exc::Value, &format!("{what} must be an integer, not {}", py.type_name(value)))
    })?;
    match i32::try_from(v).ok().filter(|v| *v >= 0) {
        Some(v) => Ok(v),
        None => Err(py.raise(Exc::Value, &format!("{what} {} is out of range (0 to 2**31 - 1)", py.repr(value)))),
    }
}

/// A device as (device_type, device_id) from "cpu", "cuda:1", a (type, id)
/// pair, or an object with `__dlpack_device__`. Malformed or out-of-range
/// values are a ValueError; a host device's id may be None (PaddlePaddle's
/// `(1, None)`) and reads as 0. Whether the device exists is checked where
/// it is used (BufferError there).
pub fn device(py: Py<'_>, value: Ref<'_>) -> PyResult<DLDevice> {
    let mut held = None;
    let mut value = value;
    if !py.is_tuple(value) && !py.is_str(value) {
        match py.getattr_str(value, c"__dlpack_device__") {
            Ok(method) => {
                let answer = py.call(method.as_ref(), &[], None)?;
                let answer = if py.is_tuple(answer.as_ref()) { answer } else { py.to_tuple(answer.as_ref())? };
                held = Some(answer);
            }
            Err(raised) if !py.error_matches(Exc::Attribute) => return Err(raised),
            Err(_) => py.clear_error(),
        }
    }
    if let Some(answer) = &held {
        value = answer.as_ref();
    }
    if py.is_tuple(value) {
        if let Some((kind, id)) = py.pair(value) {
            let kind = device_int(py, kind, "device type")?;
            let device_type = DLDeviceType(kind as u32);
            let id =
                if py.is_none(id) && Device::is_host_kind(device_type) { 0 } else { device_int(py, id, "device id")? };
            return Ok(DLDevice { device_type, device_id: id });
        }
    } else if py.is_str(value) {
        let text = py.utf8(value)?;
        let (name, index) = match text.split_once(':') {
            Some((name, index)) => (name, Some(index)),
            None => (text, None),
        };
        if let Some(kind) = Device::kind_named(name) {
            match index {
                None => return Ok(DLDevice { device_type: kind, device_id: 0 }),
                Some(i) if !i.is_empty() && i.bytes().all(|c| c.is_ascii_digit()) => {
                    let id = i.parse::<i32>().map_err(|_| {
                        py.raise(Exc::Value, &format!("device id {i} is out of range (0 to 2**31 - 1)"))
                    })?;
                    return Ok(DLDevice { device_type: kind, device_id: id });
                }
                Some(_) => {}
            }
        }
    }
    let message =
        format!("unknown device {}: expected e.g. 'cpu', 'cuda:0' or (device_type, device_id)", py.repr(value));
    Err(py.raise(Exc::Value, &message))
}

/// The DLPack type for a name ("float32", "bfloat16", "f4", ...) or
/// anything with a `name` (a NumPy or ml_dtypes dtype) or a `__name__` (a
/// type: `np.float32`, `ml_dtypes.bfloat16`).
pub fn dtype(py: Py<'_>, value: Ref<'_>) -> PyResult<DType> {
    let named = if py.is_str(value) {
        None
    } else {
        let name = py.getattr_str(value, c"name").or_else(|_| {
            py.clear_error();
            if py.is_type(value) { py.getattr_str(value, c"__name__") } else { Err(py.already_raised()) }
        });
        match name {
            Ok(n) if py.is_str(n.as_ref()) => Some(n),
            _ => {
                py.clear_error();
                let message = format!("expected a dtype name or a dtype, not {}", py.repr(value));
                return Err(py.raise(Exc::Type, &message));
            }
        }
    };
    // A NumPy dtype object in the other byte order (np.dtype(">f4")) names
    // a type dlbridge cannot produce: refused, as the string ">f4" is.
    if named.is_some()
        && let Ok(native) = py.getattr_str(value, c"isnative")
        && !py.truth(native.as_ref())?
    {
        let message = format!("dtype {} is not in native byte order", py.repr(value));
        return Err(py.raise(Exc::Value, &message));
    }
    py.clear_error();
    let text = py.utf8(named.as_ref().map_or(value, |n| n.as_ref()))?;
    if text.contains('\0') {
        return Err(py.raise(Exc::Value, &format!("unknown dtype name {text:?}")));
    }
    py.ok(DType::from_name(text))
}

/// Where a consumer's stream applies: CUDA and managed memory (dlbridge
/// orders its CUDA work on the legacy default stream).
pub fn takes_stream(kind: DLDeviceType) -> bool {
    matches!(kind, DLDeviceType::CUDA | DLDeviceType::CUDAMANAGED)
}

/// The stream a consumer passes to a producer of `kind`: the legacy default
/// stream (1) for CUDA and managed memory, ROCm's default stream (0); None
/// where streams do not apply.
pub fn stream_to_ask(kind: DLDeviceType) -> Option<i64> {
    match kind {
        k if takes_stream(k) => Some(1),
        DLDeviceType::ROCM => Some(0),
        _ => None,
    }
}

/// Where `__dlpack__` accepts a consumer's stream: CUDA, managed and pinned
/// memory (the consumer may queue work reading pinned memory on it).
pub fn accepts_stream(kind: DLDeviceType) -> bool {
    takes_stream(kind) || kind == DLDeviceType::CUDAHOST
}

/// A `stream` argument of `__dlpack__` for a tensor on `device`: None, or an
/// int (TypeError otherwise) in -1 .. 2**64 - 1 that is allowed there
/// (ValueError otherwise: 0 is ambiguous, and only CUDA, managed and pinned
/// memory take one). The consumer's stream (None: nothing to order).
pub fn stream(py: Py<'_>, value: Option<Ref<'_>>, device: Device) -> PyResult<Option<u64>> {
    let Some(value) = value.filter(|v| !py.is_none(*v)) else { return Ok(None) };
    if !py.is_exactly(value, py.api().int_type) {
        return Err(py.raise(Exc::Type, &format!("stream must be an int or None, not {}", py.type_name(value))));
    }
    let v = Some(py.index(value)?).filter(|v| (-1..1 << 64).contains(v));
    let Some(v) = v else {
        let message = format!("stream={} is not a stream (-1, 1, 2 or a cudaStream_t)", py.repr(value));
        return Err(py.raise(Exc::Value, &message));
    };
    if !accepts_stream(device.kind()) {
        return Err(py.raise(Exc::Value, &format!("stream={v} is not allowed for a {device} tensor (only None)")));
    }
    if v == 0 {
        return Err(
            py.raise(Exc::Value, "stream=0 is ambiguous and not allowed; use 1 (legacy default) or 2 (per-thread)")
        );
    }
    // -1: no ordering asked; 1: the legacy default stream, where our work already is.
    Ok(if v == -1 || v == 1 { None } else { Some(v as u64) })
}
