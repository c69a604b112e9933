//! Panic boundary, per-thread error message, and pointer checks shared by
//! every exported function.

use std::cell::{Cell, RefCell};
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use super::status::dlb_status;
use crate::error::{Error, ErrorKind, Result};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    static LAST_KIND: Cell<Option<ErrorKind>> = const { Cell::new(None) };
}

/// Stands in for the message while the thread's storage is being torn down
/// (atexit handlers, pthread key and C++ static destructors): the message
/// cannot be kept then, and nothing may panic.
const TEARDOWN: &std::ffi::CStr =
    c"dlbridge: the detailed message is unavailable while this thread's storage is being destroyed";

// Every access uses `try_with`: during thread-local teardown `with` would
// panic, and a panic there cannot be caught on its way out of the C ABI.
fn record(message: &str, kind: Option<ErrorKind>) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|m| m.try_borrow_mut().map(|mut m| *m = text));
    let _ = LAST_KIND.try_with(|k| k.set(kind));
}

/// The calling thread's last error as a core error (None for a panic,
/// before any failure, or during thread teardown).
pub(crate) fn last_error_value() -> Option<Error> {
    let kind = LAST_KIND.try_with(Cell::get).ok()??;
    let message = LAST_ERROR.try_with(|m| m.borrow().to_string_lossy().into_owned()).ok()?;
    Some(Error::new(kind, message))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic");
    format!("internal error (panic) in dlbridge: {what}")
}

/// Runs a fallible body: `DLB_OK`, or the error's status with its message
/// recorded for `dlb_last_error_message`, or `DLB_ERR_PANIC`.
pub(crate) fn status(body: impl FnOnce() -> Result<()>) -> dlb_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => dlb_status::DLB_OK,
        Ok(Err(e)) => {
            record(e.message(), Some(e.kind()));
            dlb_status::from(e.kind())
        }
        Err(payload) => {
            record(&panic_message(&*payload), None);
            dlb_status::DLB_ERR_PANIC
        }
    }
}

/// Runs an infallible body; a panic yields `fallback`.
pub(crate) fn value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        record(&panic_message(&*payload), None);
        fallback
    })
}

/// The calling thread's last message (empty before any failure; a fixed
/// text during thread teardown). The pointer stays valid until the thread's
/// next failing call or the destruction of its thread-local storage.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR.try_with(|m| m.borrow().as_ptr()).unwrap_or(TEARDOWN.as_ptr())
}

/// A required pointer argument.
pub(crate) fn non_null<T>(p: *mut T, name: &str) -> Result<NonNull<T>> {
    NonNull::new(p).ok_or_else(|| Error::new(ErrorKind::NullArgument, format!("{name} is NULL")))
}

/// A required pointer argument, read-only.
///
/// # Safety
/// A non-NULL `p` must point to a live `T` for `'a`.
pub(crate) unsafe fn arg<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: non-NULL checked; liveness by contract.
    non_null(p.cast_mut(), name).map(|p| unsafe { p.as_ref() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn a_panic_becomes_a_status_and_a_message_never_an_unwind() {
        let s = status(|| panic!("boom in a test"));
        assert_eq!(s, dlb_status::DLB_ERR_PANIC);
        // SAFETY: the thread's message is a live NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(last_error()) }.to_str().unwrap();
        assert!(msg.contains("boom in a test"), "{msg}");
        assert_eq!(value(7, || -> i32 { panic!("again") }), 7);
    }

    #[test]
    fn errors_record_their_message_and_success_keeps_it() {
        let s = status(|| Err(Error::new(ErrorKind::InvalidShape, "shape[0] is -1")));
        assert_eq!(s, dlb_status::DLB_ERR_INVALID_SHAPE);
        assert_eq!(status(|| Ok(())), dlb_status::DLB_OK);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(last_error()) }.to_str().unwrap();
        assert_eq!(msg, "shape[0] is -1");
    }
}
