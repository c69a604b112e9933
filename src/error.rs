//! The one error type of the safe core: a kind (stable, mapped 1:1 to a C
//! status code by `ffi`) and a message written for the person debugging.

use std::fmt;

/// What went wrong. The C ABI maps each kind to a fixed `dlb_status` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A required pointer argument was NULL.
    NullArgument,
    /// An argument had a value the function does not accept.
    InvalidArgument,
    /// `ndim` was negative or above [`crate::layout::MAX_NDIM`].
    InvalidNdim,
    /// A dimension was negative, or the shape pointer was missing.
    InvalidShape,
    /// Strides cannot describe this tensor (e.g. byte strides that are not
    /// a multiple of the item size, strided packed sub-byte data).
    InvalidStrides,
    /// An element count, byte extent or address computation overflowed.
    Overflow,
    /// Unknown or unsupported data type (code, bits, lanes).
    UnsupportedDtype,
    /// Unknown device type, negative device id, or an operation that the
    /// tensor's device cannot do.
    UnsupportedDevice,
    /// A DLManagedTensorVersioned with another major version.
    VersionMismatch,
    /// NULL data for a tensor with elements.
    NullData,
    /// A write access or legacy export was asked of read-only memory.
    ReadOnly,
    /// Non-native byte order.
    ByteOrder,
    /// A malformed array-interface type string.
    InvalidTypestr,
    /// DLPack flag bits this library does not know.
    UnsupportedFlags,
    /// The allocator returned nothing.
    OutOfMemory,
    /// CUDA was asked for but no CUDA driver could be loaded.
    CudaUnavailable,
    /// A CUDA driver call failed.
    Cuda,
    /// Python raised (the exception stays set for the caller).
    Python,
}

/// An error: a kind and a detailed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Result alias of the safe core.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of `kind` that says `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `Err(Error::new(kind, format!(...)))` in one line.
macro_rules! bail {
    ($kind:ident, $($fmt:tt)+) => {
        return Err($crate::error::Error::new($crate::error::ErrorKind::$kind, format!($($fmt)+)))
    };
}
pub(crate) use bail;
