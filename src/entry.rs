//! The entry points of the Linux heap: [`HugeGuard`]'s `GlobalAlloc`
//! methods (the fast paths inline, the rest out of line), the usable size
//! of a block, and flushing the calling thread's cache.

use crate::block::{self, Kind};
use crate::size_class::{class_of_small, fast_path_ok};
use crate::{cache, global, large, profile};
use core::alloc::{GlobalAlloc, Layout};
use core::hint::black_box;
use core::ptr;

/// The allocator. Use it as
/// `#[global_allocator] static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;`
/// or call it through [`GlobalAlloc`] directly; every instance shares one
/// process-wide heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugeGuard;

/// An allocation that does not take the fast path's classes (large, or
/// aligned beyond them), as a trial of the heap profile's sampling.
/// Tail-called by `alloc` (so its frame stands for the entry's when the
/// profile captures the stack, learned as an entry frame).
#[cold]
#[inline(never)]
fn alloc_slow(size: usize, align: usize) -> *mut u8 {
    block::alloc_counted(size, align, false, profile::alloc_due)
}

/// # Safety
/// `ptr` was allocated by hugeguard with this `size` and `align`.
#[cold]
#[inline(never)]
unsafe fn dealloc_slow(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: forwarded from the caller: the layout (or the sampled
    // objects' region) gives the block's kind.
    unsafe { block::free(ptr, profile::kind_of_block(ptr, size, align)) };
}

// SAFETY: every path returns either null or a block of at least
// `layout.size()` bytes aligned to `layout.align()` that no other live
// allocation overlaps; `dealloc` and `realloc` rely on the caller's layout as
// the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for HugeGuard {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if fast_path_ok(size, align) {
            let class = class_of_small(size);
            let p = cache::pop_counted(class);
            if !p.is_null() {
                return p;
            }
            return cache::alloc_slow_or::<false>(size, align, class, false, profile::alloc_due);
        }
        alloc_slow(size, align)
    }

    // Always: into the `__rust_dealloc` shim, whose whole body it is (left
    // to itself, the compiler made the shim a jump to it).
    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: the caller passes the layout `ptr` was allocated with,
        // which maps to the same class (a sampled object has a slot of its
        // own instead, told apart by its address).
        if fast_path_ok(size, align)
            && unsafe { cache::dealloc_unless_sampled(ptr, class_of_small(size)) }
        {
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { dealloc_slow(ptr, size, align) };
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if Kind::of(size, align) == Kind::Large {
            if cache::sample_due(size) {
                return black_box(profile::alloc_due(size, align, true));
            }
            // Large blocks skip zeroing the pages never written.
            return large::alloc(size, align, true);
        }
        // SAFETY: forwarded from the caller.
        let p = unsafe { self.alloc(layout) };
        if !p.is_null() {
            // SAFETY: `p` holds at least `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let kind = profile::kind_of_block(ptr, size, align);
        if cache::sample_due(new_size) {
            // SAFETY: as below.
            return black_box(unsafe { profile::realloc_due(ptr, kind, size, new_size, align) });
        }
        // SAFETY: the caller passes the layout `ptr` was allocated with (its
        // kind, and `size` bytes of data) and a non-zero `new_size`.
        unsafe { block::resize(ptr, kind, size, new_size, align) }
    }
}

/// Usable size of a block allocated with `layout` (at least `layout.size()`).
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// let l = Layout::from_size_align(100, 8).unwrap();
/// // SAFETY: a non-zero layout; the block is freed with it below.
/// unsafe {
///     let p = hugeguard::HugeGuard.alloc(l);
///     assert!(hugeguard::usable_size(p, l) >= 100);
///     hugeguard::HugeGuard.dealloc(p, l);
/// }
/// ```
///
/// # Safety
/// `ptr` is a live block that hugeguard allocated with `layout`. For a large
/// layout the size is read from the block's span record without a lock,
/// which is sound only while no other thread can free that block.
pub unsafe fn usable_size(ptr: *mut u8, layout: Layout) -> usize {
    block::usable_size(
        ptr,
        profile::kind_of_block(ptr, layout.size(), layout.align()),
    )
}

/// Returns the calling thread's cached free objects and every batch parked
/// in the central transfer caches to their spans, so that fully free spans
/// and huge pages go back to the page heap.
pub fn flush_caches() {
    cache::flush_current_thread();
    global::drain_transfer_caches();
}
