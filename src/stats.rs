//! A snapshot of the allocator's counters, for users and tests.

use crate::global::{CENTRAL, HEAP};
use crate::units::{HUGE_SIZE, PAGE_SIZE};
use core::fmt;

/// Counters read at one moment (each under its own lock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Heap address space made read-write (the most RSS the heap can have).
    pub mapped_bytes: usize,
    /// Bytes in spans handed out (small-object spans and large objects).
    pub span_bytes: usize,
    /// Huge pages holding small-object spans or sub-2 MiB runs.
    pub filler_huge_pages: usize,
    /// Huge pages holding large objects.
    pub large_huge_pages: usize,
    /// Whole free huge pages below the heap top.
    pub free_huge_pages: usize,
    /// Objects parked in the central transfer caches.
    pub parked_objects: usize,
    /// Times the OS refused memory.
    pub os_refusals: usize,
}

impl Stats {
    /// Huge pages holding anything.
    pub fn huge_pages_in_use(&self) -> usize {
        self.filler_huge_pages + self.large_huge_pages
    }
}

/// Reads the counters. Takes each lock briefly; not for hot paths.
pub fn stats() -> Stats {
    let mut parked = 0;
    for (class, c) in CENTRAL.iter().enumerate().skip(1) {
        parked += c.lock().parked_objects(class);
    }
    let heap = HEAP.lock();
    Stats {
        mapped_bytes: heap.stats.committed_bytes,
        span_bytes: heap.stats.pages_in_use * PAGE_SIZE,
        filler_huge_pages: heap.filler_huge_pages(),
        large_huge_pages: heap.stats.large_huge_pages,
        free_huge_pages: heap.free_huge_pages(),
        parked_objects: parked,
        os_refusals: heap.stats.os_refusals,
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        writeln!(f, "hugeguard stats")?;
        writeln!(f, "  mapped        {:10.1} MiB", mib(self.mapped_bytes))?;
        writeln!(f, "  in spans      {:10.1} MiB", mib(self.span_bytes))?;
        writeln!(
            f,
            "  huge pages    {} filler, {} large, {} free ({} MiB each)",
            self.filler_huge_pages,
            self.large_huge_pages,
            self.free_huge_pages,
            HUGE_SIZE >> 20
        )?;
        writeln!(f, "  parked objs   {}", self.parked_objects)?;
        write!(f, "  OS refusals   {}", self.os_refusals)
    }
}
