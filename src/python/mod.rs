//! The Python binding: everything the `dlbridge` package runs natively,
//! reached through two C symbols (`dlb_py_init`, `dlb_py_module`) that the
//! package calls through ctypes. The library never links libpython: it
//! resolves the CPython API by name from the running interpreter.
//!
//! | module | role |
//! | --- | --- |
//! | [`api`] | the CPython API table, resolved by name |
//! | [`object`] | GIL token, owned / borrowed references, checked calls |
//! | [`args`] | keyword binding; the `copy`, device, dtype and stream rules |
//! | [`capsule`] | DLPack capsules, both ways |
//! | [`exchange`] | DLPack 1.3's C exchange API, producer and consumer |
//! | [`interface`] | `__array_interface__` dict, `__array_struct__`, buffers |
//! | [`tensor_type`] | the `Tensor` type (PyType_FromSpec) |
//! | [`producers`] | what `from_dlpack` learns about each producer type |
//! | [`module`] | `from_dlpack` and the namespace the package imports |

pub mod api;
pub mod args;
pub mod capsule;
pub mod exchange;
pub mod interface;
pub mod module;
pub mod object;
pub mod producers;
pub mod tensor_type;

#[cfg(test)]
mod tests;
