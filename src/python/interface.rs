//! NumPy's protocols: the `__array_interface__` / `__cuda_array_interface__`
//! dict and the `__array_struct__` capsule (both translate
//! [`array_interface::describe`], as the C struct does), and buffer-protocol
//! imports.

use std::ffi::{CStr, c_void};
use std::sync::Mutex;

use super::api::{self, Exc, Obj, PyBuffer};
use super::object::{Kept, Owned, Py, PyResult, Ref};
use crate::array_interface::{self, Description};
use crate::dtype::DType;
use crate::error::{Result, bail};
use crate::tensor::{Flags, RawView, Tensor};

/// What the array interface says of `tensor`, once the CPU may use it:
/// managed memory first waits (without the GIL) for the work ordered on
/// its device's legacy stream, as producers were asked to order theirs.
fn describe<'t>(py: Py<'_>, tensor: &'t Tensor) -> PyResult<Description<'t>> {
    if tensor.device().kind() == dlpark::ffi::DLDeviceType::CUDAMANAGED {
        let device = tensor.device();
        py.ok(py.without_gil(|| crate::cuda::host_ready(device)))?;
    }
    py.ok(array_interface::describe(tensor))
}

/// The `__array_interface__` (or, for CUDA memory, the
/// `__cuda_array_interface__`) dict of `tensor`, version 3. `keep` (an
/// object that keeps the memory alive) goes in under `"__ref"`, as NumPy's
/// scalars do, so a consumer that keeps only the dict keeps the memory.
pub fn dict(py: Py<'_>, tensor: &Tensor, keep: Ref<'_>) -> PyResult<Owned> {
    let d = describe(py, tensor)?;
    let mut items = vec![
        (c"shape", py.ints(d.shape)),
        (c"typestr", py.str(&d.typestr)),
        (c"data", py.tuple([py.uint(d.data as u64), Ok(py.bool(d.readonly))])),
        (c"strides", py.ints(d.byte_strides)),
        (c"version", py.int(i64::from(array_interface::VERSION))),
        (c"__ref", Ok(py.retain(keep))),
    ];
    if !d.device.is_host_accessible() {
        // dlbridge orders its CUDA work (and asks producers to order
        // theirs) on the legacy default stream: consumers sync with it.
        items.push((c"stream", py.int(1)));
    }
    py.dict(items)
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

/// The NumPy flags of a description.
fn numpy_flags(d: &Description<'_>, contiguous: bool, has_descr: bool) -> i32 {
    let size = d.itemsize;
    let aligned = (d.data as usize).is_multiple_of(size) && d.byte_strides.iter().all(|s| *s % size as i64 == 0);
    [
        (true, NPY_NOTSWAPPED),
        (aligned, NPY_ALIGNED),
        (contiguous, NPY_C_CONTIGUOUS),
        (!d.readonly, NPY_WRITEABLE),
        (has_descr, NPY_ARR_HAS_DESCR),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(0, |flags, (_, flag)| flags | flag)
}

/// The `__array_struct__` capsule of a host tensor: what NumPy reads
/// fastest (no dict). The capsule holds the tensor. Raw-byte types
/// (bfloat16, FP8, ... "V" typestrs) carry `descr`, the NumPy type that
/// `void_descr` finds for them (ml_dtypes'), so `np.asarray` keeps the type.
/// Memory the CPU cannot read: AttributeError (NumPy then tries the next
/// protocol).
pub fn array_struct(py: Py<'_>, tensor: &Tensor) -> PyResult<Owned> {
    if !tensor.device().is_host_accessible() {
        let message = format!("a {} tensor has no __array_struct__; call .to_device('cpu') first", tensor.device());
        return Err(py.raise(Exc::Attribute, &message));
    }
    let d = describe(py, tensor)?;
    let kind = d.typestr.as_bytes()[1];
    let descr = if kind == b'V' { void_descr(py, tensor.dtype()) } else { std::ptr::null_mut() };
    let ndim = d.shape.len();
    let mut dims: Vec<isize> = Vec::with_capacity(2 * ndim);
    dims.extend(d.shape.iter().map(|v| *v as isize));
    dims.extend(d.byte_strides.iter().map(|v| *v as isize));
    let mut block = Box::new(ArrayStruct {
        inter: PyArrayInterface {
            two: 2,
            nd: ndim as i32,
            typekind: kind,
            itemsize: d.itemsize as i32,
            flags: numpy_flags(&d, tensor.is_contiguous(), !descr.is_null()),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            data: d.data,
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
    // SAFETY: GIL held (token); a capsule without name, as NumPy expects.
    let capsule = py.owned(unsafe { (py.api().capsule_new)(raw.cast(), std::ptr::null(), Some(free_array_struct)) });
    if capsule.is_err() {
        // SAFETY: not handed out.
        drop(unsafe { Box::from_raw(raw) });
    }
    capsule
}

/// The callable that names NumPy types for raw-byte dtypes (see
/// [`set_void_resolver`]), and what it answered, per dtype.
static VOID_RESOLVER: Mutex<Option<Kept>> = Mutex::new(None);
static VOID_DESCRS: Mutex<Vec<(DType, Kept)>> = Mutex::new(Vec::new());

/// Registers `resolver`, called as `resolver(name)` (e.g. "bfloat16") the
/// first time a tensor of a raw-byte dtype is exported through
/// `__array_struct__`: it returns the NumPy type for it, or None. A
/// reference to it (and to each answer) is kept for the process.
pub fn set_void_resolver(py: Py<'_>, resolver: Ref<'_>) {
    *VOID_RESOLVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Kept::new(py.retain(resolver)));
}

/// The NumPy type for a raw-byte dtype (borrowed, kept for the process), or
/// NULL when there is none now (no resolver, no answer, or an error, which
/// is cleared; asked again next time).
fn void_descr(py: Py<'_>, dtype: DType) -> Obj {
    let known = |py| {
        let descrs = VOID_DESCRS.lock().unwrap_or_else(|e| e.into_inner());
        descrs.iter().find(|(d, _)| *d == dtype).map(|(_, o)| o.get(py).as_ptr())
    };
    if let Some(o) = known(py) {
        return o;
    }
    let resolver = VOID_RESOLVER.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|r| r.get(py));
    let Some(resolver) = resolver else { return std::ptr::null_mut() };
    // The locks are released: the resolver runs Python code (which may
    // export another tensor, or let another thread run).
    let answer = py.str(&dtype.name()).and_then(|name| py.call(resolver, &[name.as_ref()], None));
    let answer = match answer {
        Ok(a) if !py.is_none(a.as_ref()) => a,
        Ok(_) => return std::ptr::null_mut(),
        Err(_) => {
            py.clear_error();
            return std::ptr::null_mut();
        }
    };
    // Another call may have answered meanwhile: keep the first answer.
    if let Some(o) = known(py) {
        return o;
    }
    let o = answer.as_ref().as_ptr();
    VOID_DESCRS.lock().unwrap_or_else(|e| e.into_inner()).push((dtype, Kept::new(answer)));
    o
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
/// With `swap`, data in the other byte order (a big-endian format) is
/// byte-swapped into a native copy (IS_COPIED), without the GIL, and the
/// buffer released at once; without it, such data is refused.
pub fn from_buffer(py: Py<'_>, obj: Ref<'_>, swap: bool) -> PyResult<Tensor> {
    let api = py.api();
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
    // SAFETY: GIL held (token); `ctx` is a fresh view. On failure Python has
    // set the exception and the view holds nothing.
    if unsafe { (api.get_buffer)(obj.as_ptr(), ctx, PYBUF_RECORDS_RO) } != 0 {
        // SAFETY: ours, unused.
        drop(unsafe { Box::from_raw(ctx) });
        return Err(py.already_raised());
    }
    let wrapped = (|| {
        // SAFETY: filled by the exporter; lives until `release_buffer`.
        let view = unsafe { &*ctx };
        let (dtype, ndim, swapped) = buffer_layout(view, swap)?;
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
        let view = unsafe { Tensor::wrap(&raw, Some(release_buffer), ctx.cast()) }?;
        if !swapped {
            return Ok(view);
        }
        // The view (so the buffer) lives until the copy is made, then goes.
        py.without_gil(|| crate::copy::byteswapped(&view))
    })();
    wrapped.map_err(|e| {
        // SAFETY: not wrapped, so `release_buffer` will not run: release now.
        unsafe {
            (api.buffer_release)(ctx);
            drop(Box::from_raw(ctx));
        }
        py.error(&e)
    })
}

/// The element type and dimension count of a filled `Py_buffer`, and
/// whether its data is in the other byte order (accepted only when `swap`).
fn buffer_layout(view: &PyBuffer, swap: bool) -> Result<(DType, usize, bool)> {
    if !view.suboffsets.is_null() {
        bail!(InvalidStrides, "buffers with suboffsets (indirect arrays) cannot be exchanged");
    }
    let format = if view.format.is_null() {
        "B"
    } else {
        // SAFETY: a NUL-terminated format string owned by the view.
        unsafe { CStr::from_ptr(view.format) }.to_str().unwrap_or("?invalid")
    };
    let itemsize = view.itemsize as usize;
    let swapped = swap && itemsize > 1 && matches!(format.as_bytes().first(), Some(b'>' | b'!'));
    let dtype =
        if swapped { buffer_format_dtype(&format[1..], itemsize)? } else { buffer_format_dtype(format, itemsize)? };
    Ok((dtype, crate::layout::check_ndim(view.ndim)?, swapped))
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
    use crate::error::ErrorKind;

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

    #[test]
    fn numpy_flags_follow_the_description() {
        let d = Description {
            typestr: "<f4".into(),
            shape: &[2, 3],
            byte_strides: &[12, 4],
            data: 0x1000 as *mut c_void,
            readonly: false,
            itemsize: 4,
            device: crate::Device::CPU,
        };
        assert_eq!(numpy_flags(&d, true, false), NPY_NOTSWAPPED | NPY_ALIGNED | NPY_C_CONTIGUOUS | NPY_WRITEABLE);
        let odd = Description { data: 0x1002 as *mut c_void, readonly: true, ..d };
        assert_eq!(numpy_flags(&odd, false, true), NPY_NOTSWAPPED | NPY_ARR_HAS_DESCR);
    }
}
