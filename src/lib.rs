//! dlbridge: tensor exchange through DLPack and the NumPy array interface.
//!
//! One internal type, the reference-counted [`Tensor`] view, sits between
//! every input and every output, so N producers and M consumers need N + M
//! conversions:
//!
//! | module | role |
//! | --- | --- |
//! | [`dtype`], [`device`] | validated DLPack data types and devices |
//! | [`layout`] | shapes and strides: checks, contiguity, extents |
//! | `owner` | who keeps memory alive (buffer, borrowed, foreign DLPack) |
//! | `block` | heap blocks of views and exports, with per-thread spares |
//! | [`tensor`] | the view itself |
//! | [`dlpack`] | DLPack producer and consumer, versioned and legacy |
//! | [`array_interface`] | `__array_interface__` / `__cuda_array_interface__` |
//! | [`copy`] | explicit host copies |
//! | [`python`] | the Python protocols (capsules, array-interface dict, buffers) |
//! | [`cuda`] | CUDA through cudarc, loaded at run time |
//! | [`ffi`] | the C ABI (`dlb_*`), translation only |
//!
//! The C header `include/dlbridge.h` is generated from [`ffi`] by cbindgen.
#![warn(missing_docs, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod array_interface;
mod block;
pub mod copy;
pub mod cuda;
pub mod device;
pub mod dlpack;
pub mod dtype;
pub mod error;
pub mod ffi;
pub mod layout;
mod owner;
mod parallel;
pub mod python;
pub mod tensor;

pub use device::Device;
pub use dtype::DType;
pub use error::{Error, ErrorKind, Result};
pub use owner::{ALIGNMENT, ReleaseFn};
pub use tensor::{Flags, RawView, Tensor};
