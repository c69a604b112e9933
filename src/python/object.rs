//! Safe handles on CPython objects: a GIL token ([`Py`]), owned and
//! borrowed references ([`Owned`], [`Ref`]), and the few operations the
//! binding needs, each a checked call through the API table.
//!
//! The unsafe part is small and in one place: a token exists only where
//! the GIL is held (entry points make one, unsafely, once), references are
//! only made from live objects, and neither can leave the thread (raw
//! pointers inside make them `!Send`). Long work runs through
//! [`Py::without_gil`], whose closure must be `Send`: it cannot capture a
//! Python object, so it cannot touch one without the GIL.

use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::api::{self, Api, Exc, Obj, PyObject};
use crate::error::Error;

/// A Python exception that has been set; the entry point returns NULL.
#[derive(Debug)]
pub struct Raised(());

/// A result whose error is a set Python exception.
pub type PyResult<T> = Result<T, Raised>;

/// Proof that this thread holds the GIL (and that the API is registered),
/// for `'py`.
#[derive(Clone, Copy)]
pub struct Py<'py> {
    api: &'static Api,
    _gil: PhantomData<&'py *mut ()>,
}

/// A borrowed reference, valid for `'a`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ref<'a>(NonNull<PyObject>, PhantomData<&'a PyObject>);

/// An owned (strong) reference, released when dropped.
pub struct Owned(NonNull<PyObject>);

/// CPython's object header (`ob_refcnt`, `ob_type`): the same layout on
/// every GIL build of 3.11 to 3.13 (the stable ABI's `PyObject`).
/// Free-threaded builds differ; the package refuses them at import.
#[repr(C)]
pub struct Head {
    refcnt: isize,
    ob_type: Obj,
}

impl<'a> Ref<'a> {
    /// Borrows `o`.
    ///
    /// # Safety
    /// `o` is NULL or a live object, kept alive for `'a`.
    pub unsafe fn from_ptr(o: Obj) -> Option<Ref<'a>> {
        NonNull::new(o).map(|p| Ref(p, PhantomData))
    }

    /// The raw pointer.
    pub fn as_ptr(self) -> Obj {
        self.0.as_ptr()
    }

    /// The object's type (borrowed: the object holds it).
    pub fn type_of(self) -> Ref<'a> {
        // SAFETY: a live object's header; every object has a type.
        unsafe { Ref::from_ptr((*self.0.as_ptr().cast::<Head>()).ob_type).expect("an object has a type") }
    }

    /// Whether `self` is the object `other`.
    pub fn is(self, other: Obj) -> bool {
        self.as_ptr() == other
    }
}

impl Owned {
    /// The borrowed view.
    pub fn as_ref(&self) -> Ref<'_> {
        Ref(self.0, PhantomData)
    }

    /// Gives the reference up (to a caller that takes it over).
    pub fn into_ptr(self) -> Obj {
        std::mem::ManuallyDrop::new(self).0.as_ptr()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // An Owned exists only after the table was registered, on the thread
        // that holds the GIL (it is !Send).
        if let Some(api) = api::try_get() {
            // SAFETY: our reference, released once, with the GIL.
            unsafe { (api.decref)(self.0.as_ptr()) }
        }
    }
}

impl<'py> Py<'py> {
    /// The token, where the GIL is held.
    ///
    /// # Safety
    /// The calling thread holds the GIL for `'py`.
    pub unsafe fn assume() -> Option<Py<'py>> {
        api::try_get().map(|api| Py { api, _gil: PhantomData })
    }

    /// The API table.
    pub fn api(self) -> &'static Api {
        self.api
    }

    /// Sets `exc` with `message`.
    pub fn raise(self, exc: Exc, message: &str) -> Raised {
        // SAFETY: GIL held (token).
        unsafe { self.api.raise_as(exc, message) };
        Raised(())
    }

    /// Sets the exception an error maps to (see [`Api::raise`]).
    pub fn error(self, e: &Error) -> Raised {
        // SAFETY: GIL held (token).
        unsafe { self.api.raise(e) };
        Raised(())
    }

    /// The exception a CPython call has just set (it returned NULL or -1).
    pub fn already_raised(self) -> Raised {
        Raised(())
    }

    /// Maps a core result, setting the exception on error.
    pub fn ok<T>(self, r: crate::Result<T>) -> PyResult<T> {
        r.map_err(|e| self.error(&e))
    }

    /// A new reference CPython returned: NULL means it set an exception.
    pub fn owned(self, o: Obj) -> PyResult<Owned> {
        NonNull::new(o).map(Owned).ok_or(Raised(()))
    }

    /// A new reference to `o`.
    pub fn retain(self, o: Ref<'_>) -> Owned {
        // SAFETY: GIL held; a live object.
        unsafe { (self.api.incref)(o.as_ptr()) };
        Owned(o.0)
    }

    /// None, True or False, as a new reference.
    pub fn none(self) -> Owned {
        // SAFETY: an immortal builtin object.
        self.retain(unsafe { Ref::from_ptr(self.api.none) }.expect("None"))
    }

    /// True or False.
    pub fn bool(self, b: bool) -> Owned {
        let o = if b { self.api.true_ } else { self.api.false_ };
        // SAFETY: an immortal builtin object.
        self.retain(unsafe { Ref::from_ptr(o) }.expect("bool"))
    }

    /// Whether `o` is None.
    pub fn is_none(self, o: Ref<'_>) -> bool {
        o.is(self.api.none)
    }

    /// A Python int.
    pub fn int(self, v: i64) -> PyResult<Owned> {
        // SAFETY: GIL held.
        self.owned(unsafe { (self.api.long_from_long_long)(v) })
    }

    /// A Python int from an unsigned value.
    pub fn uint(self, v: u64) -> PyResult<Owned> {
        // SAFETY: GIL held.
        self.owned(unsafe { (self.api.long_from_unsigned_long_long)(v) })
    }

    /// A Python str.
    pub fn str(self, s: &str) -> PyResult<Owned> {
        // SAFETY: GIL held; `s` is valid UTF-8 of that length.
        self.owned(unsafe { (self.api.unicode_from_string_and_size)(s.as_ptr().cast(), s.len() as isize) })
    }

    /// An interned str (kept by the interpreter).
    pub fn interned(self, s: &CStr) -> PyResult<Owned> {
        // SAFETY: GIL held.
        self.owned(unsafe { (self.api.intern)(s.as_ptr()) })
    }

    /// A tuple of new references (all consumed, also on failure).
    pub fn tuple(self, items: impl IntoIterator<Item = PyResult<Owned>>) -> PyResult<Owned> {
        let items = items.into_iter().collect::<PyResult<smallvec::SmallVec<[Owned; 8]>>>()?;
        // SAFETY: GIL held.
        let t = self.owned(unsafe { (self.api.tuple_new)(items.len() as isize) })?;
        for (i, item) in items.into_iter().enumerate() {
            // SAFETY: a fresh tuple of that size; SetItem steals the reference.
            unsafe { (self.api.tuple_set_item)(t.as_ref().as_ptr(), i as isize, item.into_ptr()) };
        }
        Ok(t)
    }

    /// A tuple of ints.
    pub fn ints(self, values: &[i64]) -> PyResult<Owned> {
        self.tuple(values.iter().map(|v| self.int(*v)))
    }

    /// A new dict with these items.
    pub fn dict<'k>(self, items: impl IntoIterator<Item = (&'k CStr, PyResult<Owned>)>) -> PyResult<Owned> {
        // SAFETY: GIL held.
        let d = self.owned(unsafe { (self.api.dict_new)() })?;
        for (key, value) in items {
            let value = value?;
            // SAFETY: GIL held; SetItemString takes its own reference.
            if unsafe { (self.api.dict_set_item_string)(d.as_ref().as_ptr(), key.as_ptr(), value.as_ref().as_ptr()) }
                != 0
            {
                return Err(Raised(()));
            }
        }
        Ok(d)
    }

    /// Whether `o`'s type is exactly `tp` (`type(o) is tp`).
    pub fn is_exactly(self, o: Ref<'_>, tp: Obj) -> bool {
        o.type_of().is(tp)
    }

    /// `type(o).__flags__ & flag`: CPython marks subclasses of its builtin
    /// types (int, tuple, str, bytes, type) with one bit each.
    pub fn has_type_flag(self, o: Ref<'_>, flag: std::ffi::c_ulong) -> bool {
        // SAFETY: GIL held; a live type.
        let flags = unsafe { (self.api.type_get_flags)(o.type_of().as_ptr()) };
        flags & flag != 0
    }

    /// `isinstance(o, str)`.
    pub fn is_str(self, o: Ref<'_>) -> bool {
        self.has_type_flag(o, 1 << 28)
    }

    /// `isinstance(o, bytes)`.
    pub fn is_bytes(self, o: Ref<'_>) -> bool {
        self.has_type_flag(o, 1 << 27)
    }

    /// `isinstance(o, tuple)`.
    pub fn is_tuple(self, o: Ref<'_>) -> bool {
        self.has_type_flag(o, 1 << 26)
    }

    /// `isinstance(o, type)`.
    pub fn is_type(self, o: Ref<'_>) -> bool {
        self.has_type_flag(o, 1 << 31)
    }

    /// `isinstance(o, bool)` (bool is the one subclass of int whose
    /// `__flags__` CPython sets apart: its type is `True`'s).
    pub fn is_bool(self, o: Ref<'_>) -> bool {
        // SAFETY: an immortal builtin object.
        let true_type = unsafe { Ref::from_ptr(self.api.true_) }.expect("True").type_of();
        o.type_of() == true_type
    }

    /// The length of a tuple.
    pub fn tuple_len(self, t: Ref<'_>) -> usize {
        debug_assert!(self.is_tuple(t));
        // SAFETY: GIL held; a tuple.
        unsafe { (self.api.tuple_size)(t.as_ptr()) }.max(0) as usize
    }

    /// Item `i` (< its length) of a tuple (borrowed: the tuple holds it).
    pub fn tuple_item<'a>(self, t: Ref<'a>, i: usize) -> Ref<'a> {
        debug_assert!(i < self.tuple_len(t));
        // SAFETY: GIL held; an index in range of a tuple, whose items are live while it is.
        unsafe { Ref::from_ptr((self.api.tuple_get_item)(t.as_ptr(), i as isize)) }.expect("an item in range")
    }

    /// The items of a 2-tuple (None for anything else).
    pub fn pair<'a>(self, t: Ref<'a>) -> Option<(Ref<'a>, Ref<'a>)> {
        (self.is_tuple(t) && self.tuple_len(t) == 2).then(|| (self.tuple_item(t, 0), self.tuple_item(t, 1)))
    }

    /// The text of a str (borrowed from it; TypeError for anything else).
    pub fn utf8<'a>(self, o: Ref<'a>) -> PyResult<&'a str> {
        let mut len = 0isize;
        // SAFETY: GIL held; the UTF-8 buffer lives as long as the str.
        unsafe {
            let p = (self.api.unicode_as_utf8)(o.as_ptr(), &mut len);
            if p.is_null() {
                return Err(Raised(()));
            }
            let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len as usize);
            Ok(std::str::from_utf8_unchecked(bytes))
        }
    }

    /// `repr(o)`, for messages (a placeholder when repr fails).
    pub fn repr(self, o: Ref<'_>) -> String {
        // SAFETY: GIL held.
        let text =
            self.owned(unsafe { (self.api.repr)(o.as_ptr()) }).and_then(|r| self.utf8(r.as_ref()).map(String::from));
        text.unwrap_or_else(|_| {
            self.clear_error();
            "<object>".into()
        })
    }

    /// `type(o).__name__`.
    pub fn type_name(self, o: Ref<'_>) -> String {
        self.getattr_str(o.type_of(), c"__name__").and_then(|n| self.utf8(n.as_ref()).map(String::from)).unwrap_or_else(
            |_| {
                self.clear_error();
                "object".into()
            },
        )
    }

    /// `int(o.__index__())`, saturated: values beyond -2**64 .. 2**64 - 1
    /// read as `i128::MIN` / `i128::MAX` (every caller's range check refuses
    /// them, and comparisons keep their sign); TypeError for what is not an
    /// integer.
    pub fn index(self, o: Ref<'_>) -> PyResult<i128> {
        // An int is its own index (the common case: no new object).
        let converted = if self.is_exactly(o, self.api.int_type) {
            None
        } else {
            // SAFETY: GIL held.
            Some(self.owned(unsafe { (self.api.number_index)(o.as_ptr()) })?)
        };
        let i = converted.as_ref().map_or(o, Owned::as_ref);
        let mut overflow: c_int = 0;
        // SAFETY: GIL held; an int.
        let v = unsafe { (self.api.long_as_long_long_and_overflow)(i.as_ptr(), &mut overflow) };
        match overflow {
            0 if v == -1 && !self.error_set().is_null() => Err(Raised(())),
            0 => Ok(i128::from(v)),
            1 => {
                // SAFETY: GIL held; an int above i64::MAX.
                let u = unsafe { (self.api.long_as_unsigned_long_long)(i.as_ptr()) };
                if u == u64::MAX && !self.error_set().is_null() {
                    self.clear_error();
                    return Ok(i128::MAX);
                }
                Ok(i128::from(u))
            }
            _ => Ok(i128::MIN),
        }
    }

    /// `bool(o)`.
    pub fn truth(self, o: Ref<'_>) -> PyResult<bool> {
        // SAFETY: GIL held.
        match unsafe { (self.api.is_true)(o.as_ptr()) } {
            -1 => Err(Raised(())),
            v => Ok(v != 0),
        }
    }

    /// `getattr(o, name)`.
    pub fn getattr(self, o: Ref<'_>, name: Ref<'_>) -> PyResult<Owned> {
        // SAFETY: GIL held.
        self.owned(unsafe { (self.api.get_attr)(o.as_ptr(), name.as_ptr()) })
    }

    /// `getattr(o, "name")`.
    pub fn getattr_str(self, o: Ref<'_>, name: &CStr) -> PyResult<Owned> {
        // SAFETY: GIL held.
        self.owned(unsafe { (self.api.get_attr_string)(o.as_ptr(), name.as_ptr()) })
    }

    /// `f(*args, **dict(zip(kwnames, values)))`: `args` holds the positional
    /// arguments, then one value per name of `kwnames` (a tuple of str).
    pub fn call(self, f: Ref<'_>, args: &[Ref<'_>], kwnames: Option<Ref<'_>>) -> PyResult<Owned> {
        let n = kwnames.map_or(0, |k| self.tuple_len(k));
        let raw: smallvec::SmallVec<[Obj; 6]> = args.iter().map(|a| a.as_ptr()).collect();
        // SAFETY: GIL held; `raw` holds the positional values then the keyword values.
        self.owned(unsafe {
            (self.api.vectorcall)(
                f.as_ptr(),
                raw.as_ptr(),
                raw.len() - n,
                kwnames.map_or(std::ptr::null_mut(), |k| k.as_ptr()),
            )
        })
    }

    /// `o.name(*args, **dict(zip(kwnames, values)))` with `args[0]` as `o`
    /// (no bound method made): `args` holds `o`, the positional arguments,
    /// then one value per name of `kwnames`.
    pub fn call_method(self, name: Ref<'_>, args: &[Ref<'_>], kwnames: Option<Ref<'_>>) -> PyResult<Owned> {
        let n = kwnames.map_or(0, |k| self.tuple_len(k));
        let raw: smallvec::SmallVec<[Obj; 6]> = args.iter().map(|a| a.as_ptr()).collect();
        let kw = kwnames.map_or(std::ptr::null_mut(), |k| k.as_ptr());
        // SAFETY: GIL held (token); `raw` holds self, the positional values, then the keyword values.
        self.owned(unsafe { (self.api.vectorcall_method)(name.as_ptr(), raw.as_ptr(), raw.len() - n, kw) })
    }

    /// `seq[i]`.
    pub fn item(self, seq: Ref<'_>, i: isize) -> PyResult<Owned> {
        // SAFETY: GIL held.
        self.owned(unsafe { (self.api.sequence_get_item)(seq.as_ptr(), i) })
    }

    /// `tuple(o)`.
    pub fn to_tuple(self, o: Ref<'_>) -> PyResult<Owned> {
        // SAFETY: GIL held.
        self.owned(unsafe { (self.api.sequence_tuple)(o.as_ptr()) })
    }

    /// The type of the exception set (NULL: none).
    fn error_set(self) -> Obj {
        // SAFETY: GIL held.
        unsafe { (self.api.err_occurred)() }
    }

    /// Whether the exception set is exactly `exc` (`type(e) is exc`).
    pub fn error_is_exactly(self, exc: Exc) -> bool {
        self.error_set() == self.api.exception(exc)
    }

    /// Whether the exception set is an instance of `exc` (`except exc`).
    pub fn error_matches(self, exc: Exc) -> bool {
        // SAFETY: GIL held; a builtin exception class.
        !self.error_set().is_null() && unsafe { (self.api.err_matches)(self.api.exception(exc)) } != 0
    }

    /// "TypeError: message" for the exception set (which stays set);
    /// None when there is none.
    pub fn error_text(self) -> Option<String> {
        let (mut kind, mut value, mut traceback) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: GIL held (token); Fetch takes the exception's references,
        // which Restore gives back (nothing else consumes them).
        unsafe {
            (self.api.err_fetch)(&mut kind, &mut value, &mut traceback);
            let kind_ref = Ref::from_ptr(kind)?;
            (self.api.err_normalize)(&mut kind, &mut value, &mut traceback);
            let name = self
                .getattr_str(Ref::from_ptr(kind).unwrap_or(kind_ref), c"__name__")
                .and_then(|n| self.utf8(n.as_ref()).map(String::from))
                .unwrap_or_else(|_| "Exception".into());
            self.clear_error();
            let message = Ref::from_ptr(value)
                .and_then(|v| self.owned((self.api.str)(v.as_ptr())).ok())
                .and_then(|s| self.utf8(s.as_ref()).map(String::from).ok())
                .unwrap_or_default();
            self.clear_error();
            (self.api.err_restore)(kind, value, traceback);
            Some(if message.is_empty() { name } else { format!("{name}: {message}") })
        }
    }

    /// Clears the exception set (if any).
    pub fn clear_error(self) {
        // SAFETY: GIL held.
        unsafe { (self.api.err_clear)() }
    }

    /// Runs `body` with the GIL released, so other Python threads run
    /// during long work (copies, conversions, transfers, device frees). The
    /// closure is `Send`: it cannot hold a Python reference.
    pub fn without_gil<T: Send>(self, body: impl FnOnce() -> T + Send) -> T {
        // SAFETY: the token proves the GIL is held.
        unsafe { self.api.without_gil(body) }
    }
}

/// Runs an entry point's body with a GIL token: NULL (`null`) with the
/// exception set on failure; a panic becomes a RuntimeError.
///
/// # Safety
/// The calling thread holds the GIL (CPython calls methods, getters and
/// destructors with it; `PyDLL` calls keep it).
pub unsafe fn entry<T>(null: T, body: impl FnOnce(Py<'_>) -> PyResult<T>) -> T {
    // SAFETY: GIL held by contract.
    let Some(py) = (unsafe { Py::assume() }) else { return null };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(py))) {
        Ok(Ok(v)) => v,
        Ok(Err(Raised(()))) => null,
        Err(_) => {
            py.raise(Exc::Runtime, "internal error (panic) in dlbridge");
            null
        }
    }
}

/// An entry point returning an object: the pointer, or NULL.
///
/// # Safety
/// As for [`entry`].
pub unsafe fn entry_object(body: impl FnOnce(Py<'_>) -> PyResult<Owned>) -> Obj {
    // SAFETY: forwarded contract.
    unsafe { entry(std::ptr::null_mut(), |py| body(py).map(Owned::into_ptr)) }
}

/// Objects kept for the life of the process (one reference held), touched
/// only with the GIL held.
pub struct Kept(pub NonNull<PyObject>);

// SAFETY: only used with the GIL held, which serialises every use; never freed.
unsafe impl Send for Kept {}
// SAFETY: as above; never mutated after it is made.
unsafe impl Sync for Kept {}

impl Kept {
    /// Keeps `o` for the process.
    pub fn new(o: Owned) -> Kept {
        Kept(NonNull::new(o.into_ptr()).expect("non-NULL"))
    }

    /// The object, borrowed under a GIL token.
    pub fn get<'py>(&self, _py: Py<'py>) -> Ref<'py> {
        Ref(self.0, PhantomData)
    }
}
