//! Heap blocks for tensor views and DLPack exports, with a few freed
//! blocks kept per thread for reuse. An exchange allocates and frees the
//! same two block sizes over and over (a view, an export), and malloc +
//! free of them cost more than the rest of a C round trip's work; a spare
//! block is taken back in a few instructions. At most `SLOTS` blocks of at
//! most `MAX_SIZE` bytes are kept per thread, and freed when it exits.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::Cell;

const SLOTS: usize = 4;
const MAX_SIZE: usize = 1024;
/// The alignment of every block kept (views and exports need 8).
const ALIGN: usize = 8;

/// Spare blocks: `(address, size)` of blocks aligned to `ALIGN`; size 0
/// when empty.
struct Spares([Cell<(*mut u8, usize)>; SLOTS]);

const EMPTY: (*mut u8, usize) = (std::ptr::null_mut(), 0);

impl Drop for Spares {
    fn drop(&mut self) {
        for slot in &self.0 {
            let (block, size) = slot.replace(EMPTY);
            if size != 0 {
                // SAFETY: a block from `alloc` with this layout, owned by the slot.
                unsafe { dealloc(block, Layout::from_size_align_unchecked(size, ALIGN)) }
            }
        }
    }
}

thread_local! {
    static SPARES: Spares = const { Spares([const { Cell::new(EMPTY) }; SLOTS]) };
}

/// A block for `layout` (nonzero size): a spare one of the same layout, or
/// a new one. Aborts (as `Box` does) when memory is exhausted.
pub(crate) fn allocate(layout: Layout) -> *mut u8 {
    let size = if layout.align() == ALIGN { layout.size() } else { 0 };
    let spare = SPARES
        .try_with(|s| s.0.iter().find(|slot| slot.get().1 == size && size != 0).map(|slot| slot.replace(EMPTY).0))
        .ok()
        .flatten();
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

/// Gives back a block from [`allocate`]: kept as a spare when a slot is
/// free, freed otherwise (or when the thread is exiting).
///
/// # Safety
/// `block` came from `allocate(layout)`, is not used afterwards, and holds
/// nothing that needs dropping.
pub(crate) unsafe fn release(block: *mut u8, layout: Layout) {
    let kept = layout.size() <= MAX_SIZE
        && layout.align() == ALIGN
        && SPARES
            .try_with(|s| match s.0.iter().find(|slot| slot.get().1 == 0) {
                Some(slot) => {
                    slot.set((block, layout.size()));
                    true
                }
                None => false,
            })
            .unwrap_or(false);
    if !kept {
        // SAFETY: by contract, a block from `alloc` with this layout.
        unsafe { dealloc(block, layout) }
    }
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
        let kept = SPARES.with(|s| s.0.iter().filter(|slot| slot.get().1 != 0).count());
        assert_eq!(kept, SLOTS);
        let big = Layout::from_size_align(MAX_SIZE + 8, 8).unwrap();
        let b = allocate(big);
        // SAFETY: as above; too big to be kept.
        unsafe { release(b, big) };
        assert!(SPARES.with(|s| s.0.iter().all(|slot| slot.get().1 != big.size())));
    }
}
