//! The binding's unit tests, against a real CPython embedded in the test
//! process: libpython is loaded at run time with its symbols global (as an
//! interpreter that loads the library has them), and the API table is
//! resolved from it exactly as at `import dlbridge`. Without a shared
//! libpython (`DLB_TEST_LIBPYTHON`, else libpython3.11 / 3.12 / 3.13 from
//! the loader's path) the tests say so and pass without checking.

use std::ffi::{CString, c_int, c_void};
use std::sync::OnceLock;

use super::api::{self, Exc, Obj};
use super::args::{self, Call, Signature};
use super::capsule;
use super::interface;
use super::object::{Owned, Py};
use super::tensor_type;
use crate::{DType, Device, Tensor};

fn symbol(handle: *mut c_void, name: &str) -> *mut c_void {
    let name = CString::new(name).unwrap();
    // SAFETY: a handle from dlopen and a NUL-terminated name.
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

/// Starts the embedded interpreter once (then releases the GIL for the
/// test threads); false when no libpython can be loaded.
fn python() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = [std::env::var("DLB_TEST_LIBPYTHON").ok()]
            .into_iter()
            .flatten()
            .chain(["3.11", "3.12", "3.13"].map(|v| format!("libpython{v}.so.1.0")));
        for name in candidates {
            let c = CString::new(name).unwrap();
            // SAFETY: loading a shared library; its initialisers run.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                continue;
            }
            // SAFETY: CPython's own entry points, called as documented: the
            // interpreter starts, the table is resolved with the GIL held, then
            // the GIL is released for the test threads (each takes it).
            unsafe {
                let init: extern "C" fn(c_int) = std::mem::transmute(symbol(handle, "Py_InitializeEx"));
                init(0);
                api::register().expect("the API table resolves from a real interpreter");
                let save: extern "C" fn() -> *mut c_void = std::mem::transmute(symbol(handle, "PyEval_SaveThread"));
                save();
            }
            return true;
        }
        eprintln!("SKIPPED: no shared libpython3.11/3.12/3.13 could be loaded (set DLB_TEST_LIBPYTHON)");
        false
    })
}

/// Runs `body` with the GIL held (None without an interpreter).
fn with_py<T>(body: impl FnOnce(Py<'_>) -> T) -> Option<T> {
    if !python() {
        return None;
    }
    let api = api::try_get().expect("registered");
    // SAFETY: the interpreter runs; Ensure / Release pair on this thread.
    unsafe {
        let state = (api.gil_ensure)();
        let out = body(Py::assume().expect("registered"));
        (api.gil_release)(state);
        Some(out)
    }
}

/// Whether a call failed with exactly `exc` set (then cleared).
fn raised<T>(py: Py<'_>, r: Result<T, super::object::Raised>, exc: Exc) -> bool {
    let exact = r.is_err() && py.error_is_exactly(exc);
    py.clear_error();
    exact
}

/// The arguments of a vectorcall, kept alive by the caller.
struct Args {
    values: Vec<Obj>,
    nargs: isize,
    names: Option<Owned>,
}

fn args(py: Py<'_>, positional: &[Owned], keywords: &[(&str, Owned)]) -> Args {
    let mut values: Vec<Obj> = positional.iter().map(|o| o.as_ref().as_ptr()).collect();
    values.extend(keywords.iter().map(|(_, v)| v.as_ref().as_ptr()));
    let names = (!keywords.is_empty()).then(|| py.tuple(keywords.iter().map(|(n, _)| py.str(n))).unwrap());
    Args { values, nargs: positional.len() as isize, names }
}

fn call<'a>(py: Py<'_>, a: &'a Args) -> Call<'a> {
    let kwnames = a.names.as_ref().map_or(std::ptr::null_mut(), |n| n.as_ref().as_ptr());
    // SAFETY: `values` holds the positional values then one per name, all
    // alive while `a` (and the objects it points at) is.
    unsafe { Call::new(py, a.values.as_ptr(), a.nargs, kwnames) }
}

static F: Signature<2> = Signature::new("f", 1, ["a", "b"]);

#[test]
fn keywords_bind_as_python_binds_them() {
    with_py(|py| {
        let one = [py.int(1).unwrap()];
        let both = [("b", py.int(2).unwrap()), ("a", py.int(3).unwrap())];
        let a = args(py, &one, &both[..1]);
        for _ in 0..2 {
            // The second time, the same keyword tuple binds from the cache.
            let [x, y] = call(py, &a).bind(py, &F).unwrap();
            assert_eq!(py.index(x.unwrap()).unwrap(), 1);
            assert_eq!(py.index(y.unwrap()).unwrap(), 2);
        }
        // Too many positional arguments, an unknown keyword, a value twice
        // (also with the tuple of the earlier good call: the positional
        // count differs, so the cache does not answer).
        let two = [py.int(1).unwrap(), py.int(2).unwrap()];
        let type_error = Exc::Type;
        assert!(raised(py, call(py, &args(py, &two, &[])).bind(py, &F), type_error));
        let odd = [("c", py.int(1).unwrap())];
        assert!(raised(py, call(py, &args(py, &[], &odd)).bind(py, &F), type_error));
        assert!(raised(py, call(py, &args(py, &one, &both[1..])).bind(py, &F), type_error));
        // The remembered tuple with another positional count binds afresh.
        let names = Some(py.retain(a.names.as_ref().unwrap().as_ref()));
        let reused = Args { values: vec![both[0].1.as_ref().as_ptr()], nargs: 0, names };
        let [x, y] = call(py, &reused).bind(py, &F).unwrap();
        assert!(x.is_none());
        assert_eq!(py.index(y.unwrap()).unwrap(), 2);
        // A keyword name built at run time (not interned) binds alike.
        let built = [(&*String::from_iter(["b"]), py.int(5).unwrap())];
        let b = args(py, &[], &built);
        let [_, y] = call(py, &b).bind(py, &F).unwrap();
        assert_eq!(py.index(y.unwrap()).unwrap(), 5);
    });
}

#[test]
fn copy_devices_dtypes_and_streams_follow_the_rules() {
    with_py(|py| {
        let (value_error, type_error) = (Exc::Value, Exc::Type);
        let none = py.none();
        assert_eq!(args::copy_flag(py, Some(none.as_ref())).ok(), Some(None));
        assert_eq!(args::copy_flag(py, Some(py.int(0).unwrap().as_ref())).ok(), Some(Some(false)));
        assert_eq!(args::copy_flag(py, Some(py.bool(true).as_ref())).ok(), Some(Some(true)));
        assert!(raised(py, args::copy_flag(py, Some(py.str("yes").unwrap().as_ref())), value_error));

        let device = |o: Owned| args::device(py, o.as_ref()).map(|d| (d.device_type.0, d.device_id));
        assert_eq!(device(py.str("cuda:1").unwrap()).ok(), Some((2, 1)));
        assert_eq!(device(py.str("cuda_host").unwrap()).ok(), Some((3, 0)));
        assert_eq!(device(py.tuple([py.int(1), Ok(py.none())]).unwrap()).ok(), Some((1, 0)));
        for bad in [
            py.str("cuda:-1").unwrap(),
            py.str("cuda:").unwrap(),
            py.str("gpu").unwrap(),
            py.tuple([Ok(py.bool(true)), py.int(0)]).unwrap(),
            py.tuple([py.int(2), py.int(1 << 31)]).unwrap(),
            py.tuple([py.int(2), Ok(py.none())]).unwrap(),
            py.int(3).unwrap(),
        ] {
            assert!(raised(py, device(bad), value_error));
        }

        let dtype = |o: Owned| args::dtype(py, o.as_ref());
        assert_eq!(dtype(py.str("f4").unwrap()).ok(), Some(DType::FLOAT32));
        assert_eq!(dtype(py.str("bfloat16").unwrap()).ok(), Some(DType::BFLOAT16));
        assert_eq!(dtype(py.str("?").unwrap()).ok(), Some(DType::BOOL));
        assert!(raised(py, dtype(py.str("float31").unwrap()), value_error));
        assert!(raised(py, dtype(py.int(4).unwrap()), type_error));

        let cuda = Device::cuda(0).unwrap();
        let stream = |o: Owned, d: Device| args::stream(py, Some(o.as_ref()), d);
        assert_eq!(stream(py.int(7).unwrap(), cuda).ok(), Some(Some(7)));
        assert_eq!(stream(py.int(1).unwrap(), cuda).ok(), Some(None)); // already ours
        assert_eq!(stream(py.int(-1).unwrap(), cuda).ok(), Some(None));
        assert!(raised(py, stream(py.int(0).unwrap(), cuda), value_error));
        assert!(raised(py, stream(py.int(-2).unwrap(), cuda), value_error));
        assert!(raised(py, stream(py.int(7).unwrap(), Device::CPU), value_error));
        let pinned =
            Device::new(dlpark::ffi::DLDevice { device_type: dlpark::ffi::DLDeviceType::CUDAHOST, device_id: 0 })
                .unwrap();
        assert_eq!(stream(py.int(7).unwrap(), pinned).ok(), Some(Some(7)), "pinned memory takes a stream");
        assert!(raised(py, stream(py.int(-3).unwrap(), pinned), value_error));
        assert!(raised(py, stream(py.bool(true), cuda), type_error));
    });
}

#[test]
fn a_tensor_object_holds_its_tensor_until_it_is_freed() {
    with_py(|py| {
        tensor_type::create(py).unwrap();
        let t = Tensor::zeros(Device::CPU, DType::FLOAT32, &[2, 3]).unwrap();
        let before = t.references();
        let o = tensor_type::wrap(py, t.clone()).unwrap();
        assert_eq!(t.references(), before + 1);
        let held = tensor_type::tensor_of(py, o.as_ref()).unwrap();
        assert!(held.same_view(&t));
        assert!(tensor_type::tensor_of(py, py.int(1).unwrap().as_ref()).is_none());
        // The dict keeps the object (so the memory) under "__ref".
        let d = interface::dict(py, held, o.as_ref()).unwrap();
        drop(o);
        assert_eq!(t.references(), before + 1, "the dict keeps the tensor");
        drop(d);
        assert_eq!(t.references(), before, "dealloc released the tensor");
    });
}

#[test]
fn a_capsule_is_consumed_once_and_frees_itself_when_not() {
    with_py(|py| {
        let t = Tensor::zeros(Device::CPU, DType::INT32, &[4]).unwrap();
        let before = t.references();
        for versioned in [true, false] {
            let c = capsule::export(py, t.clone(), versioned).unwrap();
            assert!(capsule::is_dlpack(py, c.as_ref()));
            let back = capsule::import(py, c.as_ref()).unwrap();
            assert_eq!(back.data(), t.data());
            assert!(!capsule::is_dlpack(py, c.as_ref()));
            assert!(raised(py, capsule::import(py, c.as_ref()), Exc::Value));
        }
        let unused = capsule::export(py, t.clone(), true).unwrap();
        assert_eq!(t.references(), before + 1);
        drop(unused);
        assert_eq!(t.references(), before, "the capsule destructor ran the deleter");
        let three = py.int(3).unwrap();
        assert!(raised(py, capsule::import(py, three.as_ref()), Exc::Type));
    });
}
