//! Heap blocks for tensor views and DLPack exports, with a few freed
//! blocks kept per thread for reuse, and the count of live tensor views.
//!
//! An exchange allocates and frees the same two block sizes over and over
//! (a view, an export), and malloc + free of them cost more than the rest
//! of a C round trip's work; a spare block is taken back in a few
//! instructions. At most `SLOTS` blocks of at most `MAX_SIZE` bytes are
//! kept per thread, and freed when it exits.
//!
//! The live count (`dlb_live_tensor_count`) is kept in the same per-thread
//! storage, so counting costs neither a second thread-local lookup nor a
//! locked instruction (an atomic read-modify-write on a shared counter cost
//! as much as the rest of a round trip's bookkeeping): each thread adds to
//! a counter only it writes, and the count is the sum of all of them.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::Cell;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicPtr, Ordering};

const SLOTS: usize = 4;
const MAX_SIZE: usize = 1024;
/// The alignment of every block kept (views and exports need 8).
const ALIGN: usize = 8;

/// One thread's part of the live count. Counters are never freed: a
/// thread that exits gives its counter up (with the value it holds, which
/// stays in the sum) and a later thread takes it over. They form a list
/// that only grows, so reading the sum takes no lock (nothing to go wrong
/// in a forked child or at exit) and the list is as long as the most
/// threads ever counting at once.
struct Counter {
    value: AtomicIsize,
    /// Taken by a live thread, the only one that writes `value`.
    taken: AtomicBool,
    next: *const Counter,
}

// SAFETY: `next` points to a leaked, never-changed `Counter` (or is NULL).
unsafe impl Sync for Counter {}

static COUNTERS: AtomicPtr<Counter> = AtomicPtr::new(null_mut());
/// Counts made where a thread's storage is gone (its teardown).
static ORPHANED: AtomicIsize = AtomicIsize::new(0);

const EMPTY: (*mut u8, usize) = (null_mut(), 0);

/// The calling thread's spare blocks (`(address, size)` of blocks aligned
/// to `ALIGN`; size 0 when empty) and live counter.
struct Local {
    spares: [Cell<(*mut u8, usize)>; SLOTS],
    counter: Cell<Option<&'static Counter>>,
}

impl Drop for Local {
    fn drop(&mut self) {
        for slot in &self.spares {
            let (block, size) = slot.replace(EMPTY);
            if size != 0 {
                // SAFETY: a block from `alloc` with this layout, owned by the slot.
                unsafe { dealloc(block, Layout::from_size_align_unchecked(size, ALIGN)) }
            }
        }
        if let Some(counter) = self.counter.take() {
            // Release: this thread's writes come before the next taker's.
            counter.taken.store(false, Ordering::Release);
        }
    }
}

thread_local! {
    static LOCAL: Local = const {
        Local { spares: [const { Cell::new(EMPTY) }; SLOTS], counter: Cell::new(None) }
    };
}

impl Local {
    /// Adds `delta` to this thread's counter.
    #[inline(always)]
    fn count(&self, delta: isize) {
        let counter = match self.counter.get() {
            Some(c) => c,
            None => self.take_counter(),
        };
        // Only this thread writes it: no read-modify-write instruction needed.
        counter.value.store(counter.value.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    #[cold]
    fn take_counter(&self) -> &'static Counter {
        let mut p = COUNTERS.load(Ordering::Acquire);
        // SAFETY: every pointer in the list is a leaked, live `Counter`.
        while let Some(c) = unsafe { p.as_ref() } {
            // Acquire: the previous taker's writes come before ours.
            if c.taken.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                self.counter.set(Some(c));
                return c;
            }
            p = c.next.cast_mut();
        }
        let c: &'static mut Counter =
            Box::leak(Box::new(Counter { value: AtomicIsize::new(0), taken: AtomicBool::new(true), next: null_mut() }));
        let mut head = COUNTERS.load(Ordering::Relaxed);
        loop {
            c.next = head;
            match COUNTERS.compare_exchange_weak(head, c, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        self.counter.set(Some(c));
        c
    }

    /// A spare block of `size` bytes, if one is kept.
    #[inline(always)]
    fn take(&self, size: usize) -> Option<*mut u8> {
        self.spares.iter().find(|slot| slot.get().1 == size).map(|slot| slot.replace(EMPTY).0)
    }

    /// Keeps `block` as a spare when a slot is free.
    #[inline(always)]
    fn keep(&self, block: *mut u8, size: usize) -> bool {
        match self.spares.iter().find(|slot| slot.get().1 == 0) {
            Some(slot) => {
                slot.set((block, size));
                true
            }
            None => false,
        }
    }
}

/// Whether blocks of `layout` are kept as spares.
#[inline(always)]
fn kept(layout: Layout) -> bool {
    layout.align() == ALIGN && layout.size() <= MAX_SIZE && layout.size() != 0
}

#[inline(always)]
fn take(layout: Layout, delta: isize) -> *mut u8 {
    let spare = LOCAL.try_with(|local| {
        if delta != 0 {
            local.count(delta);
        }
        if kept(layout) { local.take(layout.size()) } else { None }
    });
    let spare = match spare {
        Ok(spare) => spare,
        Err(_) => {
            ORPHANED.fetch_add(delta, Ordering::Relaxed);
            None
        }
    };
    if let Some(block) = spare {
        return block;
    }
    // SAFETY: every layout dlbridge asks for has a nonzero size (a header).
    let block = unsafe { alloc(layout) };
    if block.is_null() {
        handle_alloc_error(layout);
    }
    block
}

/// # Safety
/// As for [`release`].
#[inline(always)]
unsafe fn give(block: *mut u8, layout: Layout, delta: isize) {
    let kept = LOCAL.try_with(|local| {
        if delta != 0 {
            local.count(delta);
        }
        kept(layout) && local.keep(block, layout.size())
    });
    let kept = kept.unwrap_or_else(|_| {
        ORPHANED.fetch_add(delta, Ordering::Relaxed);
        false
    });
    if !kept {
        // SAFETY: by contract, a block from `alloc` with this layout.
        unsafe { dealloc(block, layout) }
    }
}

/// A block for `layout` (nonzero size): a spare one of the same layout, or
/// a new one. Aborts (as `Box` does) when memory is exhausted.
#[inline]
pub(crate) fn allocate(layout: Layout) -> *mut u8 {
    take(layout, 0)
}

/// Gives back a block from [`allocate`]: kept as a spare when a slot is
/// free, freed otherwise (or when the thread is exiting).
///
/// # Safety
/// `block` came from `allocate(layout)` (or `allocate_view`, when given
/// back by `release_view`), is not used afterwards, and holds nothing that
/// needs dropping.
#[inline]
pub(crate) unsafe fn release(block: *mut u8, layout: Layout) {
    // SAFETY: forwarded contract.
    unsafe { give(block, layout, 0) }
}

/// [`allocate`] for a tensor view's block: one more live view.
#[inline]
pub(crate) fn allocate_view(layout: Layout) -> *mut u8 {
    take(layout, 1)
}

/// [`release`] for a block from [`allocate_view`]: one live view fewer.
///
/// # Safety
/// As for [`release`].
#[inline]
pub(crate) unsafe fn release_view(block: *mut u8, layout: Layout) {
    // SAFETY: forwarded contract.
    unsafe { give(block, layout, -1) }
}

/// Tensor views alive in the process: blocks from [`allocate_view`] not
/// given back. Exact once the threads that made and freed them are
/// synchronised with the caller (joined, or through a lock).
pub(crate) fn live_views() -> usize {
    let mut sum = ORPHANED.load(Ordering::Relaxed);
    let mut p = COUNTERS.load(Ordering::Acquire);
    // SAFETY: every pointer in the list is a leaked, live `Counter`.
    while let Some(c) = unsafe { p.as_ref() } {
        sum += c.value.load(Ordering::Relaxed);
        p = c.next.cast_mut();
    }
    sum.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_per_layout_and_bounded() {
        let small = Layout::from_size_align(48, 8).unwrap();
        let other = Layout::from_size_align(64, 8).unwrap();
        let a = allocate(small);
        // SAFETY: a fresh block, nothing in it.
        unsafe { release(a, small) };
        assert_eq!(allocate(small), a, "the spare block comes back");
        let o = allocate(other);
        assert_ne!(o, a, "only for the same layout");
        // SAFETY: as above.
        unsafe { (release(a, small), release(o, other)) };
        let many: Vec<_> = (0..SLOTS + 3).map(|_| allocate(small)).collect();
        for &b in &many {
            // SAFETY: as above.
            unsafe { release(b, small) };
        }
        let kept = LOCAL.with(|l| l.spares.iter().filter(|slot| slot.get().1 != 0).count());
        assert_eq!(kept, SLOTS);
        for layout in [Layout::from_size_align(MAX_SIZE + 8, 8).unwrap(), Layout::from_size_align(64, 16).unwrap()] {
            let b = allocate(layout);
            // SAFETY: as above; too big or too aligned to be kept.
            unsafe { release(b, layout) };
            assert!(LOCAL.with(|l| l.spares.iter().all(|slot| slot.get().0 != b)));
        }
    }
}
