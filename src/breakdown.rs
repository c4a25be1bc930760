//! The RSS breakdown: the process's resident set, measured, split by what
//! holds it, so an operator can tell a program that keeps more (live grows)
//! from an allocator that keeps more (caches, free space, held-back pages
//! or metadata grow) or from huge-page inflation.
//!
//! The allocator's parts come from its counters (`stats()`); the rest is
//! measured: the process's RSS (`/proc/self/statm`), what is resident in
//! the heap and in the allocator's metadata and profile mappings
//! (`mincore`), and, as the difference, the program's memory outside the
//! heap (code, stacks, other mappings). What is resident in the heap
//! beyond what the counters account for is reported, not folded into a
//! part: positive, pages the heap released or never handed out that are
//! resident again (khugepaged filling a huge page); negative, bytes handed
//! out and never written.

use crate::global::HEAP;
use crate::os::linux;
use crate::report::RssBreakdown;

/// Measures the resident set and splits it (see the module overview).
/// Several system calls (`mincore` over the heap, 2 MiB at a time, and one
/// file read): for a report or a metrics scrape, not a hot path. The parts
/// add up only while the process is quiet: they are read one after another.
pub fn rss_breakdown() -> RssBreakdown {
    let stats = crate::stats();
    let profile = crate::profile::summary();
    let heap = crate::view::published().then(|| HEAP.lock().committed_range());
    let heap_resident = heap.map_or(0, |(base, len)| linux::resident_bytes(base, len));
    let profile_map = crate::profile::table::mapping();
    let (mut metadata, mut profile_resident) = (0, 0);
    let unlisted = linux::for_each_metadata(|addr, len| {
        let r = linux::resident_bytes(addr, len);
        if profile_map.is_some_and(|(base, _)| base == addr) {
            profile_resident += r;
        } else {
            metadata += r;
        }
    });
    let rss = linux::process_resident_bytes().unwrap_or(0);
    let counted = stats.live_bytes + stats.thread_cache_bytes + stats.parked_bytes + stats.span_free_bytes
        + stats.held_back_bytes;
    RssBreakdown {
        rss_bytes: rss,
        live_bytes: stats.live_bytes,
        cached_bytes: stats.thread_cache_bytes + stats.parked_bytes,
        span_free_bytes: stats.span_free_bytes,
        held_back_bytes: stats.held_back_bytes,
        metadata_bytes: metadata,
        metadata_unmeasured_bytes: unlisted,
        profile_bytes: profile_resident,
        outside_heap_bytes: rss.saturating_sub(heap_resident + metadata + profile_resident),
        heap_resident_bytes: heap_resident,
        unaccounted_bytes: heap_resident as isize - counted as isize,
        profile,
        stats,
    }
}
