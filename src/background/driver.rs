//! The release driver: one release pass over the process heap and the
//! central lists, and background step 5 (dense huge pages regain their huge
//! page through a rate-limited `MADV_COLLAPSE` with back-off).
//!
//! A pass, in order: (1) whole free huge pages, (2) parked batches and free
//! pages inside partly used spans, per size class, (3) free pages of partly
//! used huge pages, (4) whole free huge pages again (step 2 may have emptied
//! some).

use crate::config::{self, Mode};
use crate::global::{self, CENTRAL, HEAP};
use crate::lock::SpinLock;
use crate::lock_rank::Rank;
use crate::os::linux;
use crate::os::{Advice, Os};
use crate::page_heap::PageHeap;
use crate::page_heap::{Pass, PassResult};
use crate::units::{HUGE_SIZE, PAGE_SIZE};

/// Collapses per tick at most.
const COLLAPSES_PER_TICK: usize = 4;
/// A collapse slower than this backs off, as does a failed one.
const SLOW_COLLAPSE_US: u64 = 20_000;

/// Collapse back-off (used by the background thread only).
pub(super) static COLLAPSE_BACKOFF: SpinLock<CollapseBackoff> =
    SpinLock::new(Rank::CollapseBackoff, CollapseBackoff::new());

/// When `MADV_COLLAPSE` may be tried again: after a failure or a slow
/// collapse, wait 1 s, doubling up to 60 s; a quick success resets it.
#[derive(Debug)]
pub struct CollapseBackoff {
    waiting: bool,
    wait_until: u32,
    backoff_ms: u32,
}

impl CollapseBackoff {
    pub const fn new() -> Self {
        CollapseBackoff {
            waiting: false,
            wait_until: 0,
            backoff_ms: 0,
        }
    }

    /// Whether a collapse may be tried at `now` (release clock, ms).
    pub fn ready(&self, now: u32) -> bool {
        !self.waiting || (now.wrapping_sub(self.wait_until) as i32) >= 0
    }

    /// Records a collapse that failed or was slow.
    pub fn failed(&mut self, now: u32) {
        self.backoff_ms = if self.backoff_ms == 0 {
            1000
        } else {
            (self.backoff_ms * 2).min(60_000)
        };
        self.waiting = true;
        self.wait_until = now.wrapping_add(self.backoff_ms);
    }

    /// Records a quick, successful collapse.
    pub fn succeeded(&mut self) {
        *self = CollapseBackoff::new();
    }
}

impl Default for CollapseBackoff {
    fn default() -> Self {
        Self::new()
    }
}

pub(super) fn over_limit(limit: usize) -> bool {
    limit != 0 && resident_estimate() * 20 > limit * 19
}

/// Bytes the heap may have resident (pages ever written and not released).
pub fn resident_estimate() -> usize {
    let meshed = crate::mesh::totals().1;
    let heap = HEAP.lock();
    let s = heap.stats();
    (s.dirty_pages.saturating_sub(s.span_released_pages) * PAGE_SIZE).saturating_sub(meshed)
}

/// One release pass; returns what it did. `force` ignores the hold-back.
pub fn release_pass(force: bool) -> PassResult {
    let cfg = config::get();
    let mut out = PassResult::default();
    if cfg.mode == Mode::Off || !global::ensure_heap() {
        return out;
    }
    let pass = Pass {
        now: global::release_clock(),
        holdback: cfg.holdback_ms,
        force: force || over_limit(crate::soft_limit::get()),
    };
    HEAP.lock().release_free_huge_pages(&pass, &mut out);
    for (class, c) in CENTRAL.iter().enumerate().skip(1) {
        c.lock()
            .release(&global::ProcessHeap, class, &pass, &mut out);
    }
    {
        let mut heap = HEAP.lock();
        heap.release_filler_pages(&pass, &mut out);
        heap.release_free_huge_pages(&pass, &mut out);
        heap.discard_span_records();
    }
    out.released_pages += crate::profile::table::release_warm();
    out
}

/// Background step 5: dense huge pages regain their huge page. Returns
/// whether candidates remain.
pub(super) fn regain_huge_pages(now: u32) -> bool {
    let cfg = config::get();
    if !cfg.collapse {
        return false;
    }
    // SAFETY: the process heap's OS: the kernel, over the heap's file.
    unsafe {
        collapse_step(
            &HEAP,
            &linux::LinuxOs::over(&global::SHARED),
            &mut COLLAPSE_BACKOFF.lock(),
            now,
            cfg.holdback_ms,
            linux::now_us,
        )
    }
}

/// Up to [`COLLAPSES_PER_TICK`] collapses of dense huge pages of `heap`,
/// through `os`, with the heap lock released during each (slow) collapse.
/// `clock_us` times them. Returns whether candidates remain.
///
/// # Safety
/// `os` acts on the memory of `heap` (it is the heap's OS, or another value
/// of the same stateless kind, such as `LinuxOs`).
pub unsafe fn collapse_step<O: Os>(
    heap: &SpinLock<PageHeap<O>>,
    os: &O,
    backoff: &mut CollapseBackoff,
    now: u32,
    holdback: u32,
    clock_us: impl Fn() -> u64,
) -> bool {
    if !backoff.ready(now) {
        return true;
    }
    let pass = Pass {
        now,
        holdback,
        force: false,
    };
    let mut from = 0;
    for _ in 0..COLLAPSES_PER_TICK {
        let Some((idx, addr)) = heap.lock().pick_dense(&pass, from) else {
            return false;
        };
        from = idx + 1;
        // Collapse only memory that is really there: never fault in pages
        // the program has not touched.
        let resident = os.resident_pages(addr, HUGE_SIZE).unwrap_or(0);
        if resident < crate::page_heap::release::DENSE_PAGES {
            heap.lock().collapse_skipped(idx, now);
            continue;
        }
        let t0 = clock_us();
        // SAFETY: `addr` is a dense, committed huge page of `heap`, whose OS
        // `os` is (the process's one kernel, or the test's fake); a collapse
        // keeps every byte.
        let ok = unsafe { os.advise(addr, HUGE_SIZE, Advice::Collapse) }.is_ok();
        let slow = clock_us().saturating_sub(t0) > SLOW_COLLAPSE_US;
        heap.lock().collapse_done(idx, ok);
        if !ok || slow {
            backoff.failed(now);
            return true;
        }
        backoff.succeeded();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::{Call, FakeOs};
    use core::cell::Cell;

    fn dense_heap() -> SpinLock<PageHeap<FakeOs>> {
        let mut h = PageHeap::new(FakeOs::default());
        assert!(h.init(64 * HUGE_SIZE, HUGE_SIZE));
        // Three huge pages filled completely.
        for _ in 0..3 * 512 {
            h.alloc_run(1, 1, 1).unwrap();
        }
        SpinLock::new(Rank::Heap, h)
    }

    /// `collapse_step` over a fake-OS heap and a fake OS: nothing is
    /// dereferenced, calls are only recorded.
    fn step(
        heap: &SpinLock<PageHeap<FakeOs>>,
        os: &FakeOs,
        b: &mut CollapseBackoff,
        now: u32,
        holdback: u32,
        clock: impl Fn() -> u64,
    ) -> bool {
        // SAFETY: a fake OS acts on no memory.
        unsafe { collapse_step(heap, os, b, now, holdback, clock) }
    }

    fn collapses(os: &FakeOs) -> usize {
        os.calls
            .borrow()
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Call::Advise {
                        advice: Advice::Collapse,
                        ..
                    }
                )
            })
            .count()
    }

    #[test]
    fn failed_collapse_backs_off_and_doubles() {
        let heap = dense_heap();
        let os = FakeOs::default();
        *os.fail_advice.borrow_mut() = Some((Advice::Collapse, 12));
        let mut b = CollapseBackoff::new();
        let clock = || 0u64;
        // Dense for the hold-back first: nothing is tried at once.
        step(&heap, &os, &mut b, 0, 1000, clock);
        assert_eq!(collapses(&os), 0);
        assert!(step(&heap, &os, &mut b, 1000, 1000, clock));
        assert_eq!(
            heap.lock().stats().advice.collapse_failures,
            1,
            "stops at the first failure"
        );
        assert!(!b.ready(1500) && b.ready(2000));
        assert!(step(&heap, &os, &mut b, 1500, 1000, clock));
        assert_eq!(
            heap.lock().stats().advice.collapse_attempts,
            1,
            "waits while backing off"
        );
        step(&heap, &os, &mut b, 2000, 1000, clock);
        assert_eq!(heap.lock().stats().advice.collapse_failures, 2);
        assert!(!b.ready(3999) && b.ready(4000), "second failure waits 2 s");
        // Success resets the back-off. The two huge pages that failed are
        // not retried until they change.
        *os.fail_advice.borrow_mut() = None;
        assert!(!step(&heap, &os, &mut b, 4000, 1000, clock), "nothing left");
        assert!(b.ready(4000));
        assert_eq!(collapses(&os), 1);
        assert_eq!(heap.lock().stats().advice.collapse_attempts, 3);
    }

    #[test]
    fn slow_collapse_backs_off_too() {
        let heap = dense_heap();
        let os = FakeOs::default();
        let mut b = CollapseBackoff::new();
        let t = Cell::new(0u64);
        let clock = || {
            t.set(t.get() + 50_000); // each reading 50 ms later
            t.get()
        };
        step(&heap, &os, &mut b, 0, 0, clock);
        assert_eq!(collapses(&os), 1, "one slow collapse, then back-off");
        assert!(!b.ready(999));
    }

    #[test]
    fn untouched_memory_is_never_collapsed() {
        let heap = dense_heap();
        let os = FakeOs::default();
        *os.resident.borrow_mut() = Some(10);
        let mut b = CollapseBackoff::new();
        step(&heap, &os, &mut b, 0, 0, || 0);
        assert_eq!(collapses(&os), 0);
    }
}
