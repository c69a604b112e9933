//! The Python exchange protocols spoken natively, so each hot path of the
//! `dlbridge` package is one foreign call: DLPack capsules both ways, the
//! `__array_interface__` dict, the buffer protocol, and keeping Python
//! owners alive. Every function here expects the GIL to be held.

pub mod api;

use std::ffi::{CStr, c_void};
use std::ptr::NonNull;

use dlpark::ffi::{DLManagedTensor, DLManagedTensorVersioned};

use self::api::{Api, Exc, Obj, PyBuffer};
use crate::array_interface;
use crate::dlpack::{export, import};
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result, bail};
use crate::tensor::{Flags, RawView, Tensor};

/// Capsule names (static for the process lifetime, as the spec requires).
pub const VERSIONED: &CStr = c"dltensor_versioned";
/// Legacy capsule name.
pub const LEGACY: &CStr = c"dltensor";
const USED_VERSIONED: &CStr = c"used_dltensor_versioned";
const USED_LEGACY: &CStr = c"used_dltensor";

/// Exports `tensor` in a new capsule: "dltensor_versioned" or, when the
/// consumer cannot take versioned capsules, "dltensor" (refused for
/// read-only data). The capsule frees the tensor if nobody consumes it.
///
/// # Safety
/// The GIL must be held.
pub unsafe fn to_capsule(api: &Api, tensor: Tensor, versioned: bool) -> Result<Obj> {
    let (ptr, name): (*mut c_void, &CStr) = if versioned {
        (export::to_versioned(tensor).cast(), VERSIONED)
    } else {
        (export::to_legacy(tensor)?.cast(), LEGACY)
    };
    // SAFETY: GIL held; the name is static.
    let capsule = unsafe { (api.capsule_new)(ptr, name.as_ptr(), Some(capsule_destructor)) };
    if capsule.is_null() {
        // SAFETY: nobody else has seen `ptr`: free it through its own deleter.
        unsafe { delete_managed(ptr, versioned) };
        bail!(OutOfMemory, "could not create a capsule");
    }
    Ok(capsule)
}

/// Consumes a DLPack capsule: renames it "used_..." first (so its destructor
/// will not free it and a second consume is refused), then imports it.
/// A capsule already consumed, or not a DLPack capsule, is a TypeError /
/// ValueError with a clear message, never a crash.
///
/// # Safety
/// The GIL must be held; `capsule` is a live object.
pub unsafe fn from_capsule(api: &Api, capsule: Obj) -> std::result::Result<Tensor, Raised> {
    // SAFETY: GIL held; IsValid sets no error.
    let is = |name: &CStr| unsafe { (api.capsule_is_valid)(capsule, name.as_ptr()) == 1 };
    let (name, used, versioned) = if is(VERSIONED) {
        (VERSIONED, USED_VERSIONED, true)
    } else if is(LEGACY) {
        (LEGACY, USED_LEGACY, false)
    } else if is(USED_VERSIONED) || is(USED_LEGACY) {
        // SAFETY: GIL held by contract.
        return Err(unsafe {
            Raised::with(api, Exc::Value, "this DLPack capsule was already consumed (a capsule can be consumed once)")
        });
    } else {
        // SAFETY: GIL held by contract.
        return Err(unsafe {
            Raised::with(api, Exc::Type, "expected a DLPack capsule named \"dltensor_versioned\" or \"dltensor\"")
        });
    };
    // SAFETY: the capsule is valid under `name`.
    let ptr = unsafe { (api.capsule_get_pointer)(capsule, name.as_ptr()) };
    // SAFETY: as above; renaming a valid capsule cannot fail.
    unsafe { (api.capsule_set_name)(capsule, used.as_ptr()) };
    // From here we own the managed tensor; the import frees it on failure.
    let Some(ptr) = NonNull::new(ptr) else {
        // SAFETY: GIL held by contract.
        return Err(unsafe { Raised::with(api, Exc::Value, "the DLPack capsule holds a NULL pointer") });
    };
    // SAFETY: a producer's managed tensor whose ownership the rename took.
    let imported =
        unsafe { if versioned { import::from_versioned(ptr.cast()) } else { import::from_legacy(ptr.cast()) } };
    // SAFETY: GIL held by contract.
    imported.map_err(|e| unsafe { Raised::from(api, &e) })
}

/// Frees the managed tensor of a capsule nobody consumed.
unsafe extern "C" fn capsule_destructor(capsule: Obj) {
    let Some(api) = api::try_get() else { return };
    let _ = std::panic::catch_unwind(|| {
        for (name, versioned) in [(VERSIONED, true), (LEGACY, false)] {
            // SAFETY: Python calls this with the GIL, on a live capsule.
            unsafe {
                if (api.capsule_is_valid)(capsule, name.as_ptr()) == 1 {
                    delete_managed((api.capsule_get_pointer)(capsule, name.as_ptr()), versioned);
                }
            }
        }
    });
}

/// Calls a managed tensor's own deleter.
///
/// # Safety
/// `ptr` is an unconsumed managed tensor of the given ABI.
unsafe fn delete_managed(ptr: *mut c_void, versioned: bool) {
    // SAFETY: by contract.
    unsafe {
        if versioned {
            let mt = ptr.cast::<DLManagedTensorVersioned>();
            if let Some(deleter) = (*mt).deleter {
                deleter(mt)
            }
        } else {
            let mt = ptr.cast::<DLManagedTensor>();
            if let Some(deleter) = (*mt).deleter {
                deleter(mt)
            }
        }
    }
}

/// A Python exception that has been set; the caller returns NULL.
pub struct Raised(pub(crate) ());

impl Raised {
    /// Sets the exception that `e` maps to.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn from(api: &Api, e: &Error) -> Raised {
        // SAFETY: forwarded contract.
        unsafe { api.raise(e) };
        Raised(())
    }

    /// Sets `exc` with `message`.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn with(api: &Api, exc: Exc, message: &str) -> Raised {
        // SAFETY: forwarded contract.
        unsafe { api.raise_as(exc, message) };
        Raised(())
    }
}

/// Builds Python objects, dropping what was built on the first failure.
struct Builder<'a> {
    api: &'a Api,
}

impl Builder<'_> {
    fn check(&self, o: Obj) -> Result<Obj> {
        if o.is_null() {
            return Err(Error::new(ErrorKind::OutOfMemory, "a Python object could not be created"));
        }
        Ok(o)
    }
    fn int(&self, v: i64) -> Result<Obj> {
        // SAFETY: GIL held by the caller.
        self.check(unsafe { (self.api.long_from_long_long)(v) })
    }
    fn uint(&self, v: u64) -> Result<Obj> {
        // SAFETY: GIL held by the caller.
        self.check(unsafe { (self.api.long_from_unsigned_long_long)(v) })
    }
    fn str(&self, s: &CStr) -> Result<Obj> {
        // SAFETY: GIL held by the caller.
        self.check(unsafe { (self.api.unicode_from_string)(s.as_ptr()) })
    }
    fn boolean(&self, b: bool) -> Obj {
        let o = if b { self.api.true_ } else { self.api.false_ };
        // SAFETY: GIL held; the reference is handed to a container.
        unsafe { (self.api.incref)(o) };
        o
    }
    /// A tuple of the given new references (stolen, also on failure).
    fn tuple(&self, items: impl ExactSizeIterator<Item = Result<Obj>>) -> Result<Obj> {
        // SAFETY: GIL held by the caller.
        let t = self.check(unsafe { (self.api.tuple_new)(items.len() as isize) })?;
        for (i, item) in items.enumerate() {
            match item {
                // SAFETY: a fresh tuple; SetItem steals `o`.
                Ok(o) => unsafe {
                    (self.api.tuple_set_item)(t, i as isize, o);
                },
                Err(e) => {
                    // SAFETY: drops the partial tuple.
                    unsafe { (self.api.decref)(t) };
                    return Err(e);
                }
            }
        }
        Ok(t)
    }
    /// `dict[key] = value`, consuming the `value` reference.
    fn set(&self, dict: Obj, key: &CStr, value: Result<Obj>) -> Result<()> {
        let value = value?;
        // SAFETY: GIL held; SetItemString takes its own reference.
        let rc = unsafe { (self.api.dict_set_item_string)(dict, key.as_ptr(), value) };
        // SAFETY: releases ours.
        unsafe { (self.api.decref)(value) };
        if rc != 0 {
            bail!(OutOfMemory, "could not fill the array interface dict");
        }
        Ok(())
    }
}

fn ints<'a>(b: &'a Builder<'a>, v: &'a [i64]) -> impl ExactSizeIterator<Item = Result<Obj>> + 'a {
    v.iter().map(move |&x| b.int(x))
}

/// The `__array_interface__` (or, for CUDA memory, the
/// `__cuda_array_interface__`) dict of `tensor`, version 3. `keep` (an
/// object that keeps the memory alive) goes in under `"__ref"`, as NumPy's
/// scalars do, so a consumer that keeps only the dict keeps the memory.
///
/// # Safety
/// The GIL must be held; `keep` is a live object.
pub unsafe fn array_interface_dict(api: &Api, tensor: &Tensor, byte_strides: &[i64], keep: Obj) -> Result<Obj> {
    let device = tensor.device();
    if !device.has_addresses() {
        bail!(UnsupportedDevice, "{device} memory has no array interface");
    }
    let cuda = !device.is_host_accessible();
    let typestr = array_interface::typestr(tensor.dtype(), tensor.flags().contains(Flags::SUBBYTE_PADDED))?;
    let typestr = std::ffi::CString::new(typestr).unwrap_or_default();
    let b = Builder { api };
    // SAFETY: GIL held.
    let dict = b.check(unsafe { (api.dict_new)() })?;
    let data = if tensor.numel() == 0 { 0 } else { tensor.data() as u64 };
    let filled = (|| {
        b.set(dict, c"shape", b.tuple(ints(&b, tensor.shape())))?;
        b.set(dict, c"typestr", b.str(&typestr))?;
        b.set(dict, c"data", b.tuple([b.uint(data), Ok(b.boolean(tensor.is_readonly()))].into_iter()))?;
        b.set(dict, c"strides", b.tuple(ints(&b, byte_strides)))?;
        b.set(dict, c"version", b.int(3))?;
        // SAFETY: GIL held; `set` consumes the new reference.
        unsafe { (api.incref)(keep) };
        b.set(dict, c"__ref", Ok(keep))?;
        if cuda {
            // dlbridge orders its CUDA work (and asks producers to order
            // theirs) on the legacy default stream: consumers sync with it.
            b.set(dict, c"stream", b.int(1))?;
        }
        Ok(())
    })();
    if let Err(e) = filled {
        // SAFETY: drops the partial dict.
        unsafe { (api.decref)(dict) };
        return Err(e);
    }
    Ok(dict)
}

/// NumPy's `PyArrayInterface` (the `__array_struct__` capsule's content).
#[repr(C)]
struct PyArrayInterface {
    two: i32,
    nd: i32,
    typekind: u8,
    itemsize: i32,
    flags: i32,
    shape: *mut isize,
    strides: *mut isize,
    data: *mut c_void,
    descr: Obj,
}

/// The capsule's block: the struct (first, so the block's address is the
/// struct's), the arrays it points into, and the tensor whose memory `data`
/// points at: a consumer may keep only the capsule (NumPy itself keeps the
/// exporting object, but nothing obliges others to).
#[repr(C)]
struct ArrayStruct {
    inter: PyArrayInterface,
    dims: Vec<isize>,
    _keep: Tensor,
}

const NPY_C_CONTIGUOUS: i32 = 0x1;
const NPY_ALIGNED: i32 = 0x100;
const NPY_NOTSWAPPED: i32 = 0x200;
const NPY_WRITEABLE: i32 = 0x400;
const NPY_ARR_HAS_DESCR: i32 = 0x800;

unsafe extern "C" fn free_array_struct(capsule: Obj) {
    let Some(api) = api::try_get() else { return };
    // SAFETY: Python calls this with the GIL on a capsule made by
    // `array_struct`, whose pointer is a leaked `Box<ArrayStruct>`.
    unsafe {
        let block = (api.capsule_get_pointer)(capsule, std::ptr::null());
        if !block.is_null() {
            drop(Box::from_raw(block.cast::<ArrayStruct>()));
        }
    }
}

/// The `__array_struct__` capsule of a host tensor: what NumPy reads
/// fastest (no dict). The capsule holds the tensor. Raw-byte types
/// (bfloat16, FP8, ... "V" typestrs) carry `descr`, the NumPy type that
/// `void_descr` finds for them (ml_dtypes'), so `np.asarray` keeps the type.
///
/// # Safety
/// The GIL must be held.
pub unsafe fn array_struct(api: &Api, tensor: &Tensor, byte_strides: &[i64]) -> Result<Obj> {
    if !tensor.device().is_host_accessible() {
        bail!(UnsupportedDevice, "{} memory has no __array_struct__", tensor.device());
    }
    let typestr = array_interface::typestr(tensor.dtype(), tensor.flags().contains(Flags::SUBBYTE_PADDED))?;
    let itemsize = tensor.itemsize().unwrap_or(1);
    let data = if tensor.numel() == 0 { std::ptr::null_mut() } else { tensor.data() };
    let aligned = (data as usize).is_multiple_of(itemsize) && byte_strides.iter().all(|s| *s % itemsize as i64 == 0);
    let mut flags = NPY_NOTSWAPPED;
    if aligned {
        flags |= NPY_ALIGNED;
    }
    if tensor.is_contiguous() {
        flags |= NPY_C_CONTIGUOUS;
    }
    if !tensor.is_readonly() {
        flags |= NPY_WRITEABLE;
    }
    let descr = match typestr.as_bytes()[1] {
        // SAFETY: GIL held by contract.
        b'V' => unsafe { void_descr(api, tensor.dtype()) },
        _ => std::ptr::null_mut(),
    };
    if !descr.is_null() {
        flags |= NPY_ARR_HAS_DESCR;
    }
    let ndim = tensor.ndim();
    let mut dims: Vec<isize> = Vec::with_capacity(2 * ndim);
    dims.extend(tensor.shape().iter().map(|d| *d as isize));
    dims.extend(byte_strides.iter().map(|s| *s as isize));
    let mut block = Box::new(ArrayStruct {
        inter: PyArrayInterface {
            two: 2,
            nd: ndim as i32,
            typekind: typestr.as_bytes()[1],
            itemsize: itemsize as i32,
            flags,
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            data,
            descr,
        },
        dims,
        _keep: tensor.clone(),
    });
    let base = block.dims.as_mut_ptr();
    block.inter.shape = base;
    // SAFETY: `dims` holds 2 * ndim values; strides are the second half.
    block.inter.strides = unsafe { base.add(ndim) };
    let raw = Box::into_raw(block);
    // SAFETY: GIL held; a capsule without name, as NumPy expects.
    let capsule = unsafe { (api.capsule_new)(raw.cast(), std::ptr::null(), Some(free_array_struct)) };
    if capsule.is_null() {
        // SAFETY: not handed out.
        drop(unsafe { Box::from_raw(raw) });
        bail!(OutOfMemory, "could not create the __array_struct__ capsule");
    }
    Ok(capsule)
}

/// The callable that names NumPy types for raw-byte dtypes (see
/// [`set_void_resolver`]), and what it answered, per dtype (None: no type).
static VOID_RESOLVER: std::sync::Mutex<Option<usize>> = std::sync::Mutex::new(None);
static VOID_DESCRS: std::sync::Mutex<Vec<(DType, usize)>> = std::sync::Mutex::new(Vec::new());

/// Registers `resolver`, called as `resolver(name)` (e.g. "bfloat16") the
/// first time a tensor of a raw-byte dtype is exported through
/// `__array_struct__`: it returns the NumPy type for it, or None. A
/// reference to it (and to each answer) is kept for the process.
///
/// # Safety
/// The GIL must be held; `resolver` is a live callable.
pub unsafe fn set_void_resolver(api: &Api, resolver: Obj) {
    // SAFETY: GIL held; the reference is kept for the process.
    unsafe { (api.incref)(resolver) };
    *VOID_RESOLVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(resolver as usize);
}

/// The NumPy type for a raw-byte dtype (borrowed, kept for the process), or
/// NULL when there is none now (no resolver, no answer, or an error, which
/// is cleared; asked again next time).
///
/// # Safety
/// The GIL must be held.
unsafe fn void_descr(api: &Api, dtype: DType) -> Obj {
    if let Some(&(_, o)) = VOID_DESCRS.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(d, _)| *d == dtype) {
        return o as Obj;
    }
    let Some(resolver) = *VOID_RESOLVER.lock().unwrap_or_else(|e| e.into_inner()) else {
        return std::ptr::null_mut();
    };
    let name = std::ffi::CString::new(dtype.name()).unwrap_or_default();
    // SAFETY: GIL held (the locks above are released: the call may run any
    // Python code); the new references are kept or released here.
    let answer = unsafe {
        let arg = (api.unicode_from_string)(name.as_ptr());
        let answer = if arg.is_null() {
            std::ptr::null_mut()
        } else {
            let args = [arg];
            let r = (api.vectorcall)(resolver as Obj, args.as_ptr(), 1, std::ptr::null_mut());
            (api.decref)(arg);
            r
        };
        if answer.is_null() {
            (api.err_clear)();
            std::ptr::null_mut()
        } else if answer == api.none {
            (api.decref)(answer);
            std::ptr::null_mut()
        } else {
            answer
        }
    };
    // Only answers are kept: a failure (an interrupted first import) or None
    // (no ml_dtypes) is asked again next time.
    if !answer.is_null() {
        let mut known = VOID_DESCRS.lock().unwrap_or_else(|e| e.into_inner());
        match known.iter().find(|(d, _)| *d == dtype) {
            // Another call answered meanwhile (the resolver runs Python code).
            Some(&(_, first)) => {
                // SAFETY: GIL held; our answer is not kept.
                unsafe { (api.decref)(answer) };
                return first as Obj;
            }
            None => known.push((dtype, answer as usize)),
        }
    }
    answer
}

/// `(shape, strides, dtype name, device type, device id, flags, nbytes,
/// is_contiguous, data address)`: everything the Python `Tensor` shows, in
/// one call.
///
/// # Safety
/// The GIL must be held.
pub unsafe fn info_tuple(api: &Api, tensor: &Tensor) -> Result<Obj> {
    let b = Builder { api };
    let name = std::ffi::CString::new(tensor.dtype().name()).unwrap_or_default();
    let device = tensor.device();
    b.tuple(
        [
            b.tuple(ints(&b, tensor.shape())),
            b.tuple(ints(&b, tensor.strides())),
            b.str(&name),
            b.int(i64::from(device.kind().0)),
            b.int(i64::from(device.id())),
            b.uint(tensor.flags().0),
            b.uint(tensor.nbytes()),
            Ok(b.boolean(tensor.is_contiguous())),
            b.uint(tensor.data() as u64),
        ]
        .into_iter(),
    )
}

/// `(device_type, device_id)`, what `__dlpack_device__` returns.
///
/// # Safety
/// The GIL must be held.
pub unsafe fn device_tuple(api: &Api, device: crate::Device) -> Result<Obj> {
    let b = Builder { api };
    b.tuple([b.int(i64::from(device.kind().0)), b.int(i64::from(device.id()))].into_iter())
}

/// Release callback for memory kept alive by a Python object: drops one
/// reference, with the GIL, unless the interpreter is finalizing.
///
/// # Safety
/// `ctx` is an object whose reference was taken for this release.
pub unsafe extern "C" fn release_object(ctx: *mut c_void) {
    if let Some(api) = api::try_get() {
        // SAFETY: by contract; the GIL is held inside `with_gil`.
        api.with_gil(|| unsafe { (api.decref)(ctx.cast()) });
    }
}

/// Release callback for a `Py_buffer` we filled: releases it with the GIL.
unsafe extern "C" fn release_buffer(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `Box<PyBuffer>` leaked by `from_buffer`.
    let mut view = unsafe { Box::from_raw(ctx.cast::<PyBuffer>()) };
    if let Some(api) = api::try_get() {
        // SAFETY: the view was filled by PyObject_GetBuffer; the GIL is held.
        api.with_gil(|| unsafe { (api.buffer_release)(&mut *view) });
    }
}

const PYBUF_RECORDS_RO: i32 = 0x0004 | 0x0018; // FORMAT | STRIDES

/// A tensor over an object's buffer (memoryview, bytearray, array.array,
/// ...), zero copy; the buffer is released when the last holder goes.
///
/// # Safety
/// The GIL must be held; `obj` is a live object.
pub unsafe fn from_buffer(api: &Api, obj: Obj) -> std::result::Result<Tensor, Raised> {
    let ctx = Box::into_raw(Box::new(PyBuffer {
        buf: std::ptr::null_mut(),
        obj: std::ptr::null_mut(),
        len: 0,
        itemsize: 0,
        readonly: 0,
        ndim: 0,
        format: std::ptr::null_mut(),
        shape: std::ptr::null_mut(),
        strides: std::ptr::null_mut(),
        suboffsets: std::ptr::null_mut(),
        internal: std::ptr::null_mut(),
    }));
    // SAFETY: GIL held; `ctx` is a fresh view. On failure Python has set the
    // exception and the view holds nothing.
    if unsafe { (api.get_buffer)(obj, ctx, PYBUF_RECORDS_RO) } != 0 {
        // SAFETY: ours, unused.
        drop(unsafe { Box::from_raw(ctx) });
        return Err(Raised(()));
    }
    let wrapped = (|| {
        // SAFETY: filled by the exporter; lives until `release_buffer`.
        let view = unsafe { &*ctx };
        let (dtype, ndim) = buffer_layout(view)?;
        // SAFETY: the exporter filled `ndim` shape and strides (STRIDES requested).
        let shape = unsafe { crate::layout::dims_from_raw(view.shape.cast::<i64>(), ndim) }.unwrap_or(&[]);
        // SAFETY: as above.
        let byte_strides = unsafe { crate::layout::dims_from_raw(view.strides.cast::<i64>(), ndim) };
        let itemsize = dtype.itemsize(false).unwrap_or(1);
        let strides = byte_strides.map(|s| array_interface::element_strides(s, itemsize)).transpose()?;
        let raw = RawView {
            data: view.buf,
            device: crate::Device::CPU.raw(),
            dtype: dtype.raw(),
            shape,
            strides: strides.as_deref(),
            byte_offset: 0,
            flags: if view.readonly != 0 { Flags::READ_ONLY.0 } else { 0 },
        };
        // SAFETY: the exporter keeps the memory until PyBuffer_Release, which
        // `release_buffer` calls once.
        unsafe { Tensor::wrap(&raw, Some(release_buffer), ctx.cast()) }
    })();
    wrapped.map_err(|e| {
        // SAFETY: not wrapped, so `release_buffer` will not run: release now.
        unsafe {
            (api.buffer_release)(ctx);
            drop(Box::from_raw(ctx));
            Raised::from(api, &e)
        }
    })
}

/// The element type and dimension count of a filled `Py_buffer`.
fn buffer_layout(view: &PyBuffer) -> Result<(DType, usize)> {
    if !view.suboffsets.is_null() {
        bail!(InvalidStrides, "buffers with suboffsets (indirect arrays) cannot be exchanged");
    }
    let format = if view.format.is_null() {
        "B"
    } else {
        // SAFETY: a NUL-terminated format string owned by the view.
        unsafe { CStr::from_ptr(view.format) }.to_str().unwrap_or("?invalid")
    };
    let dtype = buffer_format_dtype(format, view.itemsize as usize)?;
    Ok((dtype, crate::layout::check_ndim(view.ndim)?))
}

/// The DLPack type of a struct-module format ("f", "<d", "Zf", "?", ...).
pub fn buffer_format_dtype(format: &str, itemsize: usize) -> Result<DType> {
    let (order, code) = match format.as_bytes().first() {
        Some(c @ (b'@' | b'=' | b'<' | b'>' | b'!')) => (*c, &format[1..]),
        _ => (b'@', format),
    };
    if matches!(order, b'>' | b'!') && itemsize > 1 {
        bail!(ByteOrder, "buffer format {format:?} is big-endian; byte-swap it first");
    }
    let base = match code {
        "?" => DType::BOOL,
        "b" | "h" | "i" | "l" | "q" | "n" => DType::INT8,
        "B" | "H" | "I" | "L" | "Q" | "N" => DType::UINT8,
        "e" | "f" | "d" => DType::FLOAT32,
        "Zf" | "Zd" => DType::COMPLEX64,
        _ => bail!(UnsupportedDtype, "buffer format {format:?} cannot be exchanged"),
    };
    let Some(bits) = itemsize.checked_mul(8).and_then(|b| u8::try_from(b).ok()) else {
        bail!(UnsupportedDtype, "buffer format {format:?} with {itemsize}-byte items cannot be exchanged");
    };
    DType::new(dlpark::ffi::DLDataType { bits, ..base.raw() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_formats_map_to_dlpack_types() {
        assert_eq!(buffer_format_dtype("f", 4).unwrap(), DType::FLOAT32);
        assert_eq!(buffer_format_dtype("<d", 8).unwrap(), DType::FLOAT64);
        assert_eq!(buffer_format_dtype("e", 2).unwrap(), DType::FLOAT16);
        assert_eq!(buffer_format_dtype("l", 8).unwrap(), DType::INT64);
        assert_eq!(buffer_format_dtype("=l", 4).unwrap(), DType::INT32);
        assert_eq!(buffer_format_dtype("B", 1).unwrap(), DType::UINT8);
        assert_eq!(buffer_format_dtype("?", 1).unwrap(), DType::BOOL);
        assert_eq!(buffer_format_dtype("Zd", 16).unwrap(), DType::COMPLEX128);
        assert_eq!(buffer_format_dtype(">i", 4).unwrap_err().kind(), ErrorKind::ByteOrder);
        assert_eq!(buffer_format_dtype("O", 8).unwrap_err().kind(), ErrorKind::UnsupportedDtype);
        assert_eq!(buffer_format_dtype("T{i:x:}", 4).unwrap_err().kind(), ErrorKind::UnsupportedDtype);
        // An exporter's item size is not trusted: 2**61 + 4 bytes must not wrap to 4.
        assert_eq!(buffer_format_dtype("f", (1 << 61) + 4).unwrap_err().kind(), ErrorKind::UnsupportedDtype);
        assert_eq!(buffer_format_dtype("f", usize::MAX).unwrap_err().kind(), ErrorKind::UnsupportedDtype);
    }
}
