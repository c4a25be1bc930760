//! # hugeguard
//!
//! A global allocator for Linux that keeps a process's RSS honest under
//! transparent huge pages (THP).
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;
//! # fn main() { let v = vec![1u8; 100]; assert_eq!(v.len(), 100); }
//! ```
//!
//! ## Why
//! An allocator that returns free 4 KiB pages with `MADV_DONTNEED` inside a
//! 2 MiB range that still holds a live object invites khugepaged (default
//! `max_ptes_none = 511`) to collapse the range back into a full huge page: an
//! idle service's RSS climbs back to its peak with no allocation made. hugeguard
//! packs small objects densely into 2 MiB huge pages so free memory gathers
//! into whole huge pages, and (with the release policy) gives memory back in a
//! form khugepaged cannot re-inflate.
//!
//! ## The API
//! * [`HugeGuard`]: the allocator, for `#[global_allocator]` or direct
//!   [`GlobalAlloc`] calls.
//! * [`stats`] returns [`Stats`] (with [`AdviceCounts`]): bytes allocated,
//!   resident and released, huge pages by state, bytes in thread caches,
//!   `madvise` counts; it implements `Display`.
//! * [`release_now`] gives back everything releasable at once (like
//!   `malloc_trim(0)`); [`flush_caches`] returns the calling thread's cache
//!   and the parked batches to their spans; [`set_background`] turns the
//!   background release thread's work on or off.
//! * [`placement`] reports where live objects sit (the placement floor);
//!   in mesh mode (`HUGEGUARD_MESH=on`, `docs/MESH.md`) [`mesh_now`] merges
//!   sparse spans onto each other's pages at once, returning a
//!   [`MeshRound`], instead of waiting for the program to go idle.
//! * [`usable_size`]: the usable bytes of a live block for its `Layout`
//!   (`unsafe`: it may read the block's span record).
//! * [`raw`]: the size-less C entry points (`malloc`, `free`, `realloc`,
//!   aligned allocation, usable size, `errno`, misuse reporting) that the
//!   `LD_PRELOAD` library wraps.
//! * [`check_invariants`]: walks every structure (for tests and fuzzing).
//!
//! ```
//! let s = hugeguard::stats();
//! assert!(s.resident_bytes <= s.mapped_bytes);
//! println!("{s}");
//! ```
//!
//! Everything else is private to the crate, so safe code outside it cannot
//! reach the heap's internals (each of these once compiled):
//! ```compile_fail,E0603
//! hugeguard::cache::alloc(9999); // an index checked only by debug_assert
//! ```
//! ```compile_fail,E0603
//! let _ = hugeguard::huge::Filler::new(); // records by raw pointer
//! ```
//! ```compile_fail,E0603
//! let _ = hugeguard::page_heap::HeapView::default(); // wild span lookups
//! ```
//! ```compile_fail,E0603
//! use hugeguard::os::{linux::LinuxOs, Advice, Os}; // madvise(DONTNEED) on any address
//! ```
//! ```compile_fail,E0603
//! let _ = hugeguard::central::CentralList::new();
//! ```
//! and a pointer the caller does not own cannot reach a span record from
//! safe code (the lookup could race with another thread changing it):
//! ```compile_fail,E0133
//! let p = 0x1000 as *mut u8;
//! let _ = hugeguard::raw::owns(p) || hugeguard::raw::usable_size(p) > 0;
//! ```
//!
//! ## The shape
//! ```text
//! thread cache ──> central free lists ──> page heap ──> huge page filler ──> OS layer
//!  (cache.rs)        (central.rs)       (page_heap/)    (huge/filler.rs)    (os/)
//! ```
//! * thread caches: per-thread lists per size class; the fast path (no lock,
//!   no atomic read-modify-write, no system call); the background thread
//!   takes idle threads' caches back through a `membarrier` handshake.
//! * central lists: per-class shared lists with a transfer cache of whole
//!   batches; spans whose objects are all free go back to the page heap.
//! * page heap: one reserved range of address space, committed in 32 MiB
//!   steps; runs of pages as spans; whole huge pages for large objects.
//! * huge pages: per-2 MiB records (pages in use, pages that hold data,
//!   state), the filler (fullest huge page first, O(1)) and the free set.
//! * OS layer: the only module that calls `libc`, behind a trait with a
//!   recording fake for tests.
//!
//! `docs/design.md` describes each structure and its lock; every shared field
//! names the lock that protects it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The internals are crate-private: safe code outside the crate reaches the
// heap only through the items re-exported below, and through `raw`. Every
// public function that looks at memory through a pointer it is given (`free`,
// `realloc`, `usable_size`, `owns`, and `usable_size` here) is `unsafe fn`.
mod background;
pub(crate) mod bitmap;
mod block;
pub(crate) mod cache;
pub(crate) mod central;
mod check;
pub(crate) mod config;
mod doorbell;
pub(crate) mod freelist;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
mod global;
mod harden;
mod hooks;
pub(crate) mod huge;
pub(crate) mod large;
pub(crate) mod lock;
mod lock_rank;
mod lookup;
mod mesh;
mod misuse;
pub(crate) mod os;
pub(crate) mod page_heap;
mod placement;
pub mod raw;
pub(crate) mod size_class;
pub(crate) mod span;
pub(crate) mod span_pool;
mod stats;
pub(crate) mod thread_exit;
pub(crate) mod units;
mod view;

use block::Kind;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use size_class::{class_of_small, fast_path_ok};

pub use background::{mesh_now, release_now, set_background};
pub use check::check_invariants;
pub use mesh::MeshRound;
pub use page_heap::AdviceCounts;
pub use placement::{placement, ClassPlacement, MeshEstimate, Placement};
pub use stats::{stats, Stats};

/// The allocator. Use it as
/// `#[global_allocator] static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;`
/// or call it through [`GlobalAlloc`] directly; every instance shares one
/// process-wide heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugeGuard;

#[cold]
#[inline(never)]
fn alloc_slow(size: usize, align: usize, zero: bool) -> *mut u8 {
    block::alloc(size, align, zero)
}

/// # Safety
/// `ptr` was allocated by hugeguard with this `size` and `align`.
#[cold]
#[inline(never)]
unsafe fn dealloc_slow(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: forwarded from the caller: the layout gives the block's kind.
    unsafe { block::free(ptr, Kind::of(size, align)) };
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
            return cache::alloc(class_of_small(size));
        }
        alloc_slow(size, align, false)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let (size, align) = (layout.size(), layout.align());
        if fast_path_ok(size, align) {
            // SAFETY: the caller passes the layout `ptr` was allocated with,
            // which maps to the same class.
            unsafe { cache::dealloc(ptr, class_of_small(size)) };
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { dealloc_slow(ptr, size, align) };
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if Kind::of(size, align) == Kind::Large {
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
        // SAFETY: the caller passes the layout `ptr` was allocated with (its
        // kind, and `size` bytes of data) and a non-zero `new_size`.
        unsafe { block::resize(ptr, Kind::of(size, align), size, new_size, align) }
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
    block::usable_size(ptr, Kind::of(layout.size(), layout.align()))
}

/// Returns the calling thread's cached free objects and every batch parked
/// in the central transfer caches to their spans, so that fully free spans
/// and huge pages go back to the page heap.
pub fn flush_caches() {
    cache::flush_current_thread();
    global::drain_transfer_caches();
}
