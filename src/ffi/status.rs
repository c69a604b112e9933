//! Status codes, error messages and process-wide diagnostics.

use std::ffi::{c_char, c_int};

use super::guard;
use crate::error::ErrorKind;
use crate::tensor::Tensor;

/// Most dimensions a tensor may have.
pub const DLB_MAX_NDIM: i32 = 64;

/// Alignment in bytes of the buffers `dlb_tensor_new` allocates.
pub const DLB_ALIGNMENT: usize = 256;

/// The array-interface version `dlb_array_interface` speaks.
pub const DLB_ARRAY_INTERFACE_VERSION: i32 = 3;

// cbindgen needs literals above; these keep them equal to the core's values.
const _: () = assert!(DLB_MAX_NDIM as usize == crate::layout::MAX_NDIM);
const _: () = assert!(DLB_ALIGNMENT == crate::owner::ALIGNMENT);
const _: () = assert!(DLB_ARRAY_INTERFACE_VERSION == crate::array_interface::VERSION);

/// Result of every fallible dlbridge function. `DLB_OK` is 0; each error
/// has a fixed number that is never renumbered or reused.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dlb_status {
    /// Success.
    DLB_OK = 0,
    /// A required pointer argument was NULL.
    DLB_ERR_NULL_ARGUMENT = 1,
    /// An argument had a value the function does not accept.
    DLB_ERR_INVALID_ARGUMENT = 2,
    /// ndim was negative or above 64.
    DLB_ERR_INVALID_NDIM = 3,
    /// A negative dimension, or a NULL shape with ndim > 0.
    DLB_ERR_INVALID_SHAPE = 4,
    /// Strides that cannot describe the tensor.
    DLB_ERR_INVALID_STRIDES = 5,
    /// An element count, byte extent or address overflowed.
    DLB_ERR_OVERFLOW = 6,
    /// Unknown or unsupported dtype (code, bits, lanes).
    DLB_ERR_UNSUPPORTED_DTYPE = 7,
    /// Unknown device type, negative device id, or an operation the device
    /// cannot do.
    DLB_ERR_UNSUPPORTED_DEVICE = 8,
    /// A DLManagedTensorVersioned of another major version (its deleter
    /// was called).
    DLB_ERR_VERSION_MISMATCH = 9,
    /// NULL data for a tensor that has elements.
    DLB_ERR_NULL_DATA = 10,
    /// The operation would let read-only memory be written.
    DLB_ERR_READ_ONLY = 11,
    /// Non-native byte order.
    DLB_ERR_BYTE_ORDER = 12,
    /// Malformed array-interface typestr.
    DLB_ERR_INVALID_TYPESTR = 13,
    /// DLPack flag bits this library does not know.
    DLB_ERR_UNSUPPORTED_FLAGS = 14,
    /// Allocation failed.
    DLB_ERR_OUT_OF_MEMORY = 15,
    /// No CUDA driver could be loaded.
    DLB_ERR_CUDA_UNAVAILABLE = 16,
    /// A CUDA driver call failed.
    DLB_ERR_CUDA = 17,
    /// A bug in dlbridge was caught at the ABI boundary (a Rust panic).
    DLB_ERR_PANIC = 18,
    /// Python raised an exception (the Python entry points only): it stays
    /// set for the caller, and the message repeats it.
    DLB_ERR_PYTHON = 19,
}

impl From<ErrorKind> for dlb_status {
    fn from(kind: ErrorKind) -> dlb_status {
        use dlb_status::*;
        match kind {
            ErrorKind::NullArgument => DLB_ERR_NULL_ARGUMENT,
            ErrorKind::InvalidArgument => DLB_ERR_INVALID_ARGUMENT,
            ErrorKind::InvalidNdim => DLB_ERR_INVALID_NDIM,
            ErrorKind::InvalidShape => DLB_ERR_INVALID_SHAPE,
            ErrorKind::InvalidStrides => DLB_ERR_INVALID_STRIDES,
            ErrorKind::Overflow => DLB_ERR_OVERFLOW,
            ErrorKind::UnsupportedDtype => DLB_ERR_UNSUPPORTED_DTYPE,
            ErrorKind::UnsupportedDevice => DLB_ERR_UNSUPPORTED_DEVICE,
            ErrorKind::VersionMismatch => DLB_ERR_VERSION_MISMATCH,
            ErrorKind::NullData => DLB_ERR_NULL_DATA,
            ErrorKind::ReadOnly => DLB_ERR_READ_ONLY,
            ErrorKind::ByteOrder => DLB_ERR_BYTE_ORDER,
            ErrorKind::InvalidTypestr => DLB_ERR_INVALID_TYPESTR,
            ErrorKind::UnsupportedFlags => DLB_ERR_UNSUPPORTED_FLAGS,
            ErrorKind::OutOfMemory => DLB_ERR_OUT_OF_MEMORY,
            ErrorKind::CudaUnavailable => DLB_ERR_CUDA_UNAVAILABLE,
            ErrorKind::Cuda => DLB_ERR_CUDA,
            ErrorKind::Python => DLB_ERR_PYTHON,
        }
    }
}

/// The name of a status code ("DLB_OK", "DLB_ERR_NULL_ARGUMENT", ...), or
/// "DLB_UNKNOWN_STATUS" for a number that is not one. The string is static:
/// never free it.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_status_name(status: c_int) -> *const c_char {
    let name = match status {
        0 => c"DLB_OK",
        1 => c"DLB_ERR_NULL_ARGUMENT",
        2 => c"DLB_ERR_INVALID_ARGUMENT",
        3 => c"DLB_ERR_INVALID_NDIM",
        4 => c"DLB_ERR_INVALID_SHAPE",
        5 => c"DLB_ERR_INVALID_STRIDES",
        6 => c"DLB_ERR_OVERFLOW",
        7 => c"DLB_ERR_UNSUPPORTED_DTYPE",
        8 => c"DLB_ERR_UNSUPPORTED_DEVICE",
        9 => c"DLB_ERR_VERSION_MISMATCH",
        10 => c"DLB_ERR_NULL_DATA",
        11 => c"DLB_ERR_READ_ONLY",
        12 => c"DLB_ERR_BYTE_ORDER",
        13 => c"DLB_ERR_INVALID_TYPESTR",
        14 => c"DLB_ERR_UNSUPPORTED_FLAGS",
        15 => c"DLB_ERR_OUT_OF_MEMORY",
        16 => c"DLB_ERR_CUDA_UNAVAILABLE",
        17 => c"DLB_ERR_CUDA",
        18 => c"DLB_ERR_PANIC",
        19 => c"DLB_ERR_PYTHON",
        _ => c"DLB_UNKNOWN_STATUS",
    };
    name.as_ptr()
}

/// The detailed message of the calling thread's last failed call, e.g.
/// `"shape[2] is -1: dimensions must be >= 0"`. Empty ("") before any
/// failure; successful calls leave it unchanged. The string belongs to
/// dlbridge and stays valid until the next failing call on this thread, or
/// until the thread's storage is destroyed (thread exit; for the main
/// thread, `exit()`, before `atexit` handlers run): copy it to keep it.
/// Called during that teardown (from an `atexit` handler, a pthread key or
/// C++ static destructor), it returns a fixed text saying the detail is
/// unavailable, and failing calls still return their status.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_last_error_message() -> *const c_char {
    guard::value(c"".as_ptr(), guard::last_error)
}

/// Tensor views alive in this process. A view lives while any of its
/// holders does: `dlb_tensor` handles (and their retains), exported DLPack
/// tensors whose deleter has not run yet (an export holds the view it was
/// made from), other views of its memory. A program that freed everything
/// sees 0. For leak tests. Exact once the calls of other threads that made
/// or freed views are ordered before this one (the threads joined, or
/// synchronised with the caller); while they run it is a snapshot. Each
/// thread counts its own part without a locked instruction.
#[unsafe(no_mangle)]
pub extern "C" fn dlb_live_tensor_count() -> usize {
    guard::value(0, Tensor::live_count)
}

/// The library's version, "MAJOR.MINOR.PATCH" (static; compare with
/// DLBRIDGE_VERSION to detect a header/library mismatch).
#[unsafe(no_mangle)]
pub extern "C" fn dlb_version() -> *const c_char {
    const VERSION: &std::ffi::CStr =
        match std::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("version string"),
        };
    VERSION.as_ptr()
}

/// Writes the DLPack type named `name` to `*out`: "float32", "int8",
/// "bool", "bfloat16", "complex64", "float8_e4m3fn", "float4_e2m1fn", ...
/// (NumPy / ml_dtypes spelling; "x4" suffix for 4 lanes). Unknown names give
/// DLB_ERR_INVALID_ARGUMENT and leave `*out` untouched.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlb_dtype_from_name(name: *const c_char, out: *mut dlpark::ffi::DLDataType) -> dlb_status {
    guard::status(|| {
        // SAFETY: NUL-terminated by contract.
        let name = unsafe { guard::arg(name, "name").map(|p| std::ffi::CStr::from_ptr(p)) }?;
        let out = guard::non_null(out, "out")?;
        let dtype = crate::DType::from_name(&name.to_string_lossy())?;
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { out.write(dtype.raw()) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_name() {
        use std::ffi::CStr;
        let mut names = std::collections::HashSet::new();
        for code in 0..=19 {
            // SAFETY: static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(dlb_status_name(code)) }.to_str().unwrap();
            assert!(name.starts_with("DLB_") && name != "DLB_UNKNOWN_STATUS", "{code}");
            assert!(names.insert(name));
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(dlb_status_name(20)) };
        assert_eq!(unknown.to_str().unwrap(), "DLB_UNKNOWN_STATUS");
        assert_eq!(dlb_status::DLB_ERR_PANIC as i32, 18);
        assert_eq!(dlb_status::DLB_ERR_PYTHON as i32, 19);
    }
}
