//! The C ABI. Translation only: check pointers, turn C arguments into core
//! types, call the core, turn the result into a status and out-parameters.
//!
//! Every exported body runs inside `guard::status` or `guard::value`,
//! so no panic crosses the ABI, and out-parameters are written only after
//! everything else succeeded.

pub mod array_interface;
pub mod cuda;
pub mod guard;
pub mod pyobject;
pub mod status;
pub mod tensor;
