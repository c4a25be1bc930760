//! A snapshot of the allocator's counters, for users and tests.

use crate::global::{CENTRAL, HEAP};
use crate::page_heap::AdviceCounts;
use crate::size_class::{CLASS_PAGES, CLASS_SIZE, NUM_CLASSES};
use crate::units::{HUGE_SIZE, PAGE_SIZE};
use core::fmt;

/// Counters read at one moment (each under its own lock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
    /// Bytes handed out: small objects (including those waiting in thread
    /// caches) at their class size, and large objects at their page size.
    pub allocated_bytes: usize,
    /// Heap address space made read-write (the most RSS the heap can have).
    pub mapped_bytes: usize,
    /// Bytes in spans handed out (small-object spans and large objects).
    pub span_bytes: usize,
    /// Bytes that may be resident: written and not released since.
    pub resident_bytes: usize,
    /// Bytes returned to the OS so far (cumulative).
    pub released_bytes: usize,
    /// Free heap bytes that may still be resident: pages in no span,
    /// written since they were last released, waiting for the hold-back
    /// and the next release pass (what an idle process gives back soon).
    pub held_back_bytes: usize,
    /// Huge pages holding small-object spans or sub-2 MiB runs.
    pub filler_huge_pages: usize,
    /// Huge pages holding large objects.
    pub large_huge_pages: usize,
    /// Whole free huge pages below the heap top.
    pub free_huge_pages: usize,
    /// Huge pages in use with nothing released: THP-eligible.
    pub backed_huge_pages: usize,
    /// Huge pages with some of their 4 KiB pages released (and marked
    /// `MADV_NOHUGEPAGE` first, so khugepaged cannot refill them).
    pub partial_huge_pages: usize,
    /// Huge pages wholly returned to the OS.
    pub released_huge_pages: usize,
    /// Huge pages carrying MADV_NOHUGEPAGE now.
    pub nohugepage_huge_pages: usize,
    /// Huge pages collapsed by the background thread (and not split since).
    pub collapsed_huge_pages: usize,
    /// `madvise` calls by kind, and whether marking was degraded.
    pub advice: AdviceCounts,
    /// Objects parked in the central transfer caches.
    pub parked_objects: usize,
    /// Bytes of free objects held in threads' caches (all live threads; the
    /// background thread takes back those of idle threads).
    pub thread_cache_bytes: usize,
    /// Bytes taken back from threads' caches without their help (idle
    /// threads, by the background thread; all threads, by `release_now`),
    /// since start.
    pub thread_cache_reclaimed_bytes: usize,
    /// Span records in use (one per span; 120 bytes each).
    pub span_records: usize,
    /// Metadata bytes given back to the OS since start by the release pass:
    /// pages of span records left empty after a batch, and the span entries
    /// of huge pages released whole.
    pub metadata_released_bytes: usize,
    /// Times the OS refused memory.
    pub os_refusals: usize,
    /// Whether the background release thread is running.
    pub background_running: bool,
    /// Mesh mode: units (runs of up to 16 pages) mapped onto another
    /// unit's pages now.
    pub meshed_units: usize,
    /// Mesh mode: the bytes those units span (their own memory went back to
    /// the OS; `resident_bytes` does not count it).
    pub meshed_bytes: usize,
    /// Mesh mode: units meshed since start (cumulative).
    pub meshed_units_total: usize,
}

impl Stats {
    /// Huge pages holding anything.
    pub fn huge_pages_in_use(&self) -> usize {
        self.filler_huge_pages + self.large_huge_pages
    }
}

/// Reads the counters. Takes each lock briefly; not for hot paths.
pub fn stats() -> Stats {
    let mesh = crate::mesh::totals();
    let thread_cache_bytes = crate::cache::all_cached_bytes();
    let mut parked = 0;
    let mut small = 0;
    for (class, c) in CENTRAL.iter().enumerate().skip(1) {
        let c = c.lock();
        parked += c.parked_objects(class);
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
    Stats {
        allocated_bytes: small + (h.pages_in_use * PAGE_SIZE).saturating_sub(small_span_bytes),
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
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        writeln!(f, "hugeguard: memory")?;
        writeln!(f, "  allocated      {:10.1} MiB", mib(self.allocated_bytes))?;
        writeln!(f, "  in spans       {:10.1} MiB", mib(self.span_bytes))?;
        writeln!(f, "  resident (est) {:10.1} MiB", mib(self.resident_bytes))?;
        writeln!(f, "  mapped         {:10.1} MiB", mib(self.mapped_bytes))?;
        writeln!(f, "  released total {:10.1} MiB", mib(self.released_bytes))?;
        writeln!(f, "  held back      {:10.1} MiB", mib(self.held_back_bytes))?;
        writeln!(f, "huge pages ({} MiB each)", HUGE_SIZE >> 20)?;
        writeln!(
            f,
            "  in use         {} filler, {} large; {} free",
            self.filler_huge_pages, self.large_huge_pages, self.free_huge_pages
        )?;
        writeln!(
            f,
            "  states         {} backed, {} partial, {} released",
            self.backed_huge_pages, self.partial_huge_pages, self.released_huge_pages
        )?;
        writeln!(
            f,
            "  advice         {} NOHUGEPAGE now, {} collapsed",
            self.nohugepage_huge_pages, self.collapsed_huge_pages
        )?;
        writeln!(f, "madvise calls")?;
        writeln!(
            f,
            "  DONTNEED {}, NOHUGEPAGE {}, HUGEPAGE {}, COLLAPSE {} ({} failed), other failures {}",
            self.advice.dontneed_calls,
            self.advice.nohugepage_calls,
            self.advice.hugepage_calls,
            self.advice.collapse_attempts,
            self.advice.collapse_failures,
            self.advice.advise_failures
        )?;
        writeln!(
            f,
            "  marking        {}",
            if self.advice.marking_degraded {
                "DEGRADED (VMA limit): whole huge pages only"
            } else {
                "normal"
            }
        )?;
        writeln!(
            f,
            "metadata       {} span records; {:.1} MiB given back",
            self.span_records,
            mib(self.metadata_released_bytes)
        )?;
        if self.meshed_units_total != 0 {
            writeln!(
                f,
                "meshing        {} units meshed now ({:.1} MiB shared), {} since start",
                self.meshed_units,
                mib(self.meshed_bytes),
                self.meshed_units_total
            )?;
        }
        write!(
            f,
            "background thread {}; {:.1} MiB in thread caches; {} objects parked; {} OS refusals",
            if self.background_running {
                "running"
            } else {
                "not running"
            },
            mib(self.thread_cache_bytes),
            self.parked_objects,
            self.os_refusals
        )
    }
}
