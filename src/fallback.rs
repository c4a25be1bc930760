//! The fallback build, for targets other than Linux and for a Linux build
//! with `RUSTFLAGS="--cfg hugeguard_fallback"` (which is how CI runs the
//! API tests through it): [`HugeGuard`] forwards every call to
//! `std::alloc::System`, and the rest of the API answers for a heap that
//! holds nothing of its own. [`stats`] says so (`forwarding_to_system`,
//! every counter zero), releases and meshing do nothing, and the checks
//! pass. The one Linux-only item, `raw` (the C entry points the
//! `LD_PRELOAD` library wraps), is left out: that library is Linux-only.

use crate::report::{ClassPlacement, MeshRound, Placement, RssBreakdown, Stats};
use crate::size_class::CLASS_SIZE;
use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;

/// The allocator. Use it as
/// `#[global_allocator] static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;`
/// or call it through [`GlobalAlloc`] directly. In this build (see
/// [`Stats::forwarding_to_system`]) every call goes to the system allocator.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugeGuard;

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees are ours.
unsafe impl GlobalAlloc for HugeGuard {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller: `ptr` came from `System` too.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded from the caller: `ptr` came from `System` too.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The counters: all zero but [`Stats::forwarding_to_system`].
pub fn stats() -> Stats {
    Stats {
        forwarding_to_system: true,
        ..Stats::default()
    }
}

/// The fallback build keeps no heap: every part is zero but the RSS
/// (`/proc/self/statm` where there is one, counted in 4 KiB pages).
pub fn rss_breakdown() -> RssBreakdown {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096);
    RssBreakdown {
        rss_bytes: rss,
        outside_heap_bytes: rss,
        stats: stats(),
        ..RssBreakdown::default()
    }
}

/// Usable size of a block allocated with `layout`: `layout.size()` (the
/// system allocator is not asked).
///
/// # Safety
/// `ptr` is a live block that hugeguard allocated with `layout` (the
/// contract of the Linux build, kept here so code compiles the same).
pub unsafe fn usable_size(_ptr: *mut u8, layout: Layout) -> usize {
    layout.size()
}

/// Does nothing: the system allocator keeps no caches of ours.
pub fn flush_caches() {}

/// Returns 0: there is nothing of ours to release.
pub fn release_now() -> usize {
    0
}

/// Does nothing: this build has no background thread.
pub fn set_background(_enabled: bool) {}

/// Meshes nothing.
pub fn mesh_now() -> MeshRound {
    MeshRound::default()
}

/// Always holds: there is no structure of ours to check.
pub fn check_invariants() -> Result<(), &'static str> {
    Ok(())
}

/// Every class with its object size and nothing in it.
pub fn placement() -> Placement {
    Placement {
        classes: core::array::from_fn(|c| ClassPlacement {
            object_size: if c == 0 { 0 } else { CLASS_SIZE[c] as usize },
            ..ClassPlacement::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_from_the_system_allocator_and_stats_say_so() {
        let l = Layout::from_size_align(100, 64).unwrap();
        // SAFETY: a non-zero layout, freed once with it.
        unsafe {
            let p = HugeGuard.alloc_zeroed(l);
            assert!(!p.is_null() && p as usize % 64 == 0);
            assert!((0..100).all(|i| *p.add(i) == 0));
            assert_eq!(usable_size(p, l), 100);
            HugeGuard.dealloc(p, l);
        }
        let s = stats();
        assert!(s.forwarding_to_system && s.mapped_bytes == 0);
        assert!(s.to_string().contains("forwarded to the system allocator"));
        assert_eq!(placement().classes[1].object_size, CLASS_SIZE[1] as usize);
    }
}

/// Heap profiling is not available in the fallback build: [`start`]
/// returns `false`, and [`write`] and `write_pprof` an `Unsupported` error.
///
/// [`start`]: profile::start
/// [`write`]: profile::write
pub mod profile {
    use crate::report::ProfileSummary;

    /// The default mean sampling interval in bytes.
    pub const DEFAULT_INTERVAL: usize = 512 * 1024;

    /// Always `false`: this build forwards to the system allocator.
    pub fn start() -> bool {
        false
    }

    /// Does nothing.
    pub fn stop() {}

    /// Always `false`.
    pub fn is_on() -> bool {
        false
    }

    /// Does nothing.
    pub fn set_interval(_bytes: usize) {}

    /// The default interval.
    pub fn interval() -> usize {
        DEFAULT_INTERVAL
    }

    /// All zero.
    pub fn summary() -> ProfileSummary {
        ProfileSummary {
            interval: DEFAULT_INTERVAL,
            ..ProfileSummary::default()
        }
    }

    /// Always an `Unsupported` error.
    pub fn write(_path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// Always an `Unsupported` error.
    pub fn write_pprof(_path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

