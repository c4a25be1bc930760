//! A snapshot of the allocator's counters, for users and tests.

use crate::global::{CENTRAL, HEAP};
use crate::report::Stats;
use crate::size_class::{CLASS_PAGES, CLASS_SIZE, NUM_CLASSES};
use crate::units::PAGE_SIZE;

/// Reads the counters. Takes each lock briefly; not for hot paths.
pub fn stats() -> Stats {
    crate::soft_limit::refresh();
    let cfg = crate::config::get();
    let mesh = crate::mesh::totals();
    let thread_cache_bytes = crate::cache::all_cached_bytes();
    let mut parked = 0;
    let mut parked_bytes = 0;
    let mut small = 0;
    for (class, c) in CENTRAL.iter().enumerate().skip(1) {
        let c = c.lock();
        let n = c.parked_objects(class);
        parked += n;
        parked_bytes += n * CLASS_SIZE[class] as usize;
        small += c.objects_out * CLASS_SIZE[class] as usize;
    }
    let heap = HEAP.lock();
    let h = *heap.stats();
    let [backed, partial, released, nohuge, collapsed] = heap.count_states();
    let (filler, free) = (heap.filler_huge_pages(), heap.free_huge_pages());
    let held_back_pages = heap.held_back_pages();
    let (span_records, discarded_pages) = heap.span_records();
    drop(heap);
    let small_span_bytes: usize = (1..NUM_CLASSES)
        .map(|c| CENTRAL[c].lock().spans * CLASS_PAGES[c] as usize * PAGE_SIZE)
        .sum();
    let large = (h.pages_in_use * PAGE_SIZE).saturating_sub(small_span_bytes);
    Stats {
        allocated_bytes: small + large,
        live_bytes: (small + large).saturating_sub(thread_cache_bytes),
        parked_bytes,
        span_free_bytes: small_span_bytes
            .saturating_sub(small + parked_bytes)
            .saturating_sub(h.span_released_pages * PAGE_SIZE),
        mapped_bytes: h.committed_bytes,
        span_bytes: h.pages_in_use * PAGE_SIZE,
        resident_bytes: (h.dirty_pages.saturating_sub(h.span_released_pages) * PAGE_SIZE)
            .saturating_sub(mesh.1),
        released_bytes: h.released_bytes,
        held_back_bytes: held_back_pages * PAGE_SIZE,
        filler_huge_pages: filler,
        large_huge_pages: h.large_huge_pages,
        free_huge_pages: free,
        backed_huge_pages: backed,
        partial_huge_pages: partial,
        released_huge_pages: released,
        nohugepage_huge_pages: nohuge,
        collapsed_huge_pages: collapsed,
        advice: h.advice,
        parked_objects: parked,
        thread_cache_bytes,
        thread_cache_reclaimed_bytes: crate::cache::reclaimed_bytes(),
        span_records,
        metadata_released_bytes: discarded_pages * PAGE_SIZE + h.metadata_released_bytes,
        os_refusals: h.os_refusals,
        background_running: crate::background::background_running(),
        meshed_units: mesh.0,
        meshed_bytes: mesh.1,
        meshed_units_total: mesh.2,
        forwarding_to_system: false,
        page_size: cfg.geometry.page_size,
        huge_page_size: cfg.geometry.huge_size,
        mthp_enabled_sizes: cfg.thp.mthp_enabled(),
        memory_limit_bytes: crate::soft_limit::get(),
        memory_limit_source: crate::soft_limit::source(),
        pressure_watched: crate::os::pressure::watching(),
        pressure_events: crate::background::pressure_events(),
    }
}

