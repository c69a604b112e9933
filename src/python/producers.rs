//! What `from_dlpack` learns about each producer type, once: whether it
//! is one of NumPy's (always host memory: never asked for its device) and
//! whether it publishes a DLPack exchange table `from_dlpack` may use.
//! Read on every call without a lock; written under the GIL. At most
//! `SLOTS` types are remembered, each with a reference kept (so its address
//! cannot be reused by another type); later types are looked up each time.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::api::PyObject;
use super::exchange::{self, ExchangeApi, Producer};
use super::object::{Kept, Owned, Py, PyResult, Ref};

const SLOTS: usize = 16;

/// Per type: the table's address (tables are 8-aligned) with flag bits.
const TORCH_RULES: usize = 1;
const NUMPY: usize = 2;

static TYPES: [(AtomicPtr<PyObject>, AtomicUsize); SLOTS] =
    [const { (AtomicPtr::new(std::ptr::null_mut()), AtomicUsize::new(0)) }; SLOTS];

/// What is known of a producer type.
#[derive(Clone, Copy)]
pub struct TypeInfo {
    /// One of NumPy's types: host memory, no stream to ask for.
    pub numpy: bool,
    /// Its exchange table, where `from_dlpack` may use it.
    pub producer: Option<Producer>,
}

fn decode(word: usize) -> TypeInfo {
    // SAFETY: the address of a table a producer published for the process (or 0).
    let api = unsafe { ((word & !7) as *const ExchangeApi).as_ref() };
    TypeInfo {
        numpy: word & NUMPY != 0,
        producer: api.map(|api| Producer { api, torch_rules: word & TORCH_RULES != 0 }),
    }
}

/// What is known of `tp` (learnt now if it is new).
pub fn info(py: Py<'_>, tp: Ref<'_>) -> TypeInfo {
    if let Some((_, word)) = TYPES.iter().find(|(t, _)| t.load(Ordering::Relaxed) == tp.as_ptr()) {
        return decode(word.load(Ordering::Relaxed));
    }
    let numpy = is_numpy_type(py, tp);
    let producer = if numpy { None } else { exchange::lookup(py, tp) };
    let word = producer.map_or(0, |p| std::ptr::from_ref(p.api) as usize | if p.torch_rules { TORCH_RULES } else { 0 })
        | if numpy { NUMPY } else { 0 };
    if let Some(slot) = TYPES.iter().find(|(t, _)| t.load(Ordering::Relaxed).is_null()) {
        slot.1.store(word, Ordering::Relaxed);
        slot.0.store(Kept::new(py.retain(tp)).0.as_ptr(), Ordering::Relaxed);
    }
    decode(word)
}

/// Whether `tp.__module__` is "numpy" (its arrays are always in host memory).
fn is_numpy_type(py: Py<'_>, tp: Ref<'_>) -> bool {
    let numpy = py.getattr_str(tp, c"__module__").and_then(|m| py.utf8(m.as_ref()).map(|s| s == "numpy"));
    numpy.unwrap_or_else(|_| {
        py.clear_error(); // any object may stand there
        false
    })
}

/// The NumPy types seen so far (a tuple).
pub fn numpy_types(py: Py<'_>) -> PyResult<Owned> {
    let known = TYPES.iter().filter(|(_, w)| w.load(Ordering::Relaxed) & NUMPY != 0);
    // SAFETY: each remembered type's reference is kept for the process.
    let types = known.filter_map(|(t, _)| unsafe { Ref::from_ptr(t.load(Ordering::Relaxed)) });
    py.tuple(types.map(|t| Ok(py.retain(t))))
}
