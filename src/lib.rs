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
//!   [`GlobalAlloc`](core::alloc::GlobalAlloc) calls.
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
// The fallback build leaves most of the size-class and page arithmetic unused.
#![cfg_attr(any(hugeguard_fallback, not(target_os = "linux")), allow(dead_code))]

// The internals are crate-private: safe code outside the crate reaches the
// heap only through the items re-exported below, and through `raw`. Every
// public function that looks at memory through a pointer it is given (`free`,
// `realloc`, `usable_size`, `owns`, and `usable_size` here) is `unsafe fn`.
//
// Two builds: the Linux heap, and the fallback (`fallback.rs`), selected on
// other targets or by `--cfg hugeguard_fallback`, which forwards to
// `std::alloc::System`. The macros below put each item in its build.

/// Items of the Linux heap (left out of the fallback build).
macro_rules! linux_heap {
    ($($item:item)*) => {
        $( #[cfg(not(any(hugeguard_fallback, not(target_os = "linux"))))] $item )*
    };
}

/// Items of the fallback build.
macro_rules! fallback_build {
    ($($item:item)*) => {
        $( #[cfg(any(hugeguard_fallback, not(target_os = "linux")))] $item )*
    };
}

linux_heap! {
    mod background;
    pub(crate) mod bitmap;
    mod block;
    mod breakdown;
    pub(crate) mod cache;
    pub(crate) mod central;
    mod check;
    pub(crate) mod config;
    mod doorbell;
    mod entry;
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
    pub mod profile;
    pub mod raw;
    mod soft_limit;
    pub(crate) mod span;
    pub(crate) mod span_pool;
    mod stats;
    pub(crate) mod thread_exit;
    mod view;

    pub use background::{mesh_now, release_now, set_background};
    pub use breakdown::rss_breakdown;
    pub use check::check_invariants;
    pub use entry::{flush_caches, usable_size, HugeGuard};
    pub use placement::placement;
    pub use stats::stats;
}

fallback_build! {
    mod fallback;
    pub use fallback::profile;
    pub use fallback::{
        check_invariants, flush_caches, mesh_now, placement, release_now, rss_breakdown, set_background,
        stats, usable_size, HugeGuard,
    };
}

mod report;
pub(crate) mod size_class;
pub(crate) mod units;

pub use report::{
    AdviceCounts, ClassPlacement, LimitSource, MeshEstimate, MeshRound, Placement, ProfileSummary,
    RssBreakdown, Stats,
};
