//! What `from_dlpack` learns about each producer type: whether it is one of
//! NumPy's (always host memory: never asked for its device), whether it
//! publishes a DLPack exchange table `from_dlpack` may use (both learnt
//! once), and whether its tensors have all been in host memory so far (then
//! it is not asked for its device either; see `module::from_dlpack` for what
//! happens when one is not).
//! Read and written under the GIL, without a lock. At most `SLOTS` types
//! are remembered, each with a reference kept (so its address cannot be
//! reused by another type); when all are taken, slots are reused round
//! robin (the type forgotten, and learnt again if it comes back).

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::api::PyObject;
use super::exchange::{self, ExchangeApi, Producer};
use super::object::{Kept, Owned, Py, PyResult, Ref};

const SLOTS: usize = 32;

/// The next slot to reuse once every slot is taken (round robin).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Per type: the table's address (tables are 8-aligned) with flag bits.
const TORCH_RULES: usize = 1;
const NUMPY: usize = 2;
const HOST_SO_FAR: usize = 4;
/// The table's address is 8-aligned: this flag is kept above it, in the
/// top bit (no user-space address has it).
const OLD_SIGNATURE: usize = 1 << (usize::BITS - 1);

static TYPES: [(AtomicPtr<PyObject>, AtomicUsize); SLOTS] =
    [const { (AtomicPtr::new(std::ptr::null_mut()), AtomicUsize::new(0)) }; SLOTS];

/// What is known of a producer type.
#[derive(Clone, Copy)]
pub struct TypeInfo {
    /// One of NumPy's types: host memory, no stream to ask for.
    pub numpy: bool,
    /// Its exchange table, where `from_dlpack` may use it.
    pub producer: Option<Producer>,
    /// Every tensor it gave so far was in host memory (and it is remembered).
    pub host_so_far: bool,
    /// Its `__dlpack__` takes no `max_version` (a TypeError, then a
    /// keyword-less call that worked): called without it from then on.
    pub old_signature: bool,
}

fn decode(word: usize) -> TypeInfo {
    // SAFETY: the address of a table a producer published for the process (or 0).
    let api = unsafe { ((word & !7 & !OLD_SIGNATURE) as *const ExchangeApi).as_ref() };
    TypeInfo {
        numpy: word & NUMPY != 0,
        producer: api.map(|api| Producer { api, torch_rules: word & TORCH_RULES != 0 }),
        host_so_far: word & HOST_SO_FAR != 0,
        old_signature: word & OLD_SIGNATURE != 0,
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
    // An empty slot, else the next one round robin: the type it held is
    // forgotten (its reference dropped; it is learnt again if it comes back).
    // Every reader and writer holds the GIL, so no one is reading the slot.
    let slot = match TYPES.iter().find(|(t, _)| t.load(Ordering::Relaxed).is_null()) {
        Some(slot) => slot,
        None => &TYPES[NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS],
    };
    let previous = slot.0.swap(Kept::new(py.retain(tp)).0.as_ptr(), Ordering::Relaxed);
    slot.1.store(word, Ordering::Relaxed);
    // SAFETY: the reference kept for the type this slot remembered (or NULL).
    if let Some(previous) = unsafe { Ref::from_ptr(previous) } {
        // SAFETY: GIL held (token); our reference.
        unsafe { (py.api().decref)(previous.as_ptr()) };
    }
    decode(word)
}

/// Sets (`on`) or clears a learnt flag of `tp`, if it is remembered.
fn learn(tp: Ref<'_>, flag: usize, on: bool) {
    if let Some((_, word)) = TYPES.iter().find(|(t, _)| t.load(Ordering::Relaxed) == tp.as_ptr()) {
        if on {
            word.fetch_or(flag, Ordering::Relaxed);
        } else {
            word.fetch_and(!flag, Ordering::Relaxed);
        }
    }
}

/// Records that `tp` gave a tensor in host memory (`true`) or elsewhere.
pub fn saw_host(tp: Ref<'_>, host: bool) {
    learn(tp, HOST_SO_FAR, host);
}

/// Records that `tp.__dlpack__` takes no `max_version`.
pub fn saw_old_signature(tp: Ref<'_>) {
    learn(tp, OLD_SIGNATURE, true);
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
