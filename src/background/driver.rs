//! The release driver: one release pass over the process heap and the
//! central lists, and background step 5 (dense huge pages regain their huge
//! page through a rate-limited `MADV_COLLAPSE` with back-off).
//!
//! A pass, in order: (1) whole free huge pages, (2) parked batches and free
//! pages inside partly used spans, per size class, (3) free pages of partly
//! used huge pages, (4) whole free huge pages again (step 2 may have emptied
//! some).
//!
//! The background thread's hold-back is the configured one times a stretch
//! ([`HoldbackStretch`]): doubled when the heap grows back by half of what
//! a pass released (release churn: a program that pauses between phases
//! gets back every released page as a page fault), halved when the next
//! release comes and the one before stuck. Collapses wait for the same
//! stretched hold-back: a churning program would otherwise have the same
//! huge page collapsed (a 2 MiB copy) and released in part again and again.

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

/// The most the background thread stretches the hold-back by.
pub const MAX_STRETCH: u32 = 16;

/// How many times the configured hold-back the background thread waits
/// before it releases memory (1 to [`MAX_STRETCH`]).
///
/// A pass that released memory is judged later, from the resident bytes
/// at each pass: if the heap grows back by half of what it released, the
/// program needed that memory again (each page came back as a page fault;
/// rptest, which pauses for a second or two between phases of the same
/// size, ran up to 1.5 times slower so), and the stretch doubles. If the
/// next release comes first, the one before stuck, and the stretch halves.
/// A program that runs one batch and goes idle never doubles it; one that
/// churns keeps memory at most [`MAX_STRETCH`] hold-backs after it went
/// unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldbackStretch {
    factor: u32,
    /// Bytes released by the pass being judged (0: none).
    released: usize,
    /// Resident bytes after that pass.
    resident_after: usize,
}

impl HoldbackStretch {
    pub const fn new() -> Self {
        HoldbackStretch {
            factor: 1,
            released: 0,
            resident_after: 0,
        }
    }

    /// Before a pass: `resident` bytes now. Doubles the stretch if the heap
    /// grew back by half of the judged release.
    pub fn observe(&mut self, resident: usize) {
        if self.released != 0 && resident.saturating_sub(self.resident_after) >= self.released / 2 {
            self.factor = (self.factor * 2).min(MAX_STRETCH);
            self.released = 0;
        }
    }

    /// After a pass that released `released` bytes, leaving `resident`: a
    /// release still being judged stuck (halve), and this one is judged
    /// from now on. Does nothing if the pass released nothing.
    pub fn passed(&mut self, released: usize, resident: usize) {
        if released == 0 {
            return;
        }
        if self.released != 0 {
            self.factor = (self.factor / 2).max(1);
        }
        self.released = released;
        self.resident_after = resident;
    }

    /// The hold-back to use, for a configured `base` (ms).
    pub fn holdback(&self, base: u32) -> u32 {
        base.saturating_mul(self.factor)
    }
}

impl Default for HoldbackStretch {
    fn default() -> Self {
        Self::new()
    }
}

/// One release pass, leaving alone memory touched within `holdback` ms
/// (unless `force`); returns what it did.
pub fn release_pass(force: bool, holdback: u32) -> PassResult {
    let cfg = config::get();
    let mut out = PassResult::default();
    if cfg.mode == Mode::Off || !global::ensure_heap() {
        return out;
    }
    let pass = Pass {
        now: global::release_clock(),
        holdback,
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

/// Background step 5: huge pages dense for `holdback` ms regain their
/// huge page. Returns whether candidates remain.
pub(super) fn regain_huge_pages(now: u32, holdback: u32) -> bool {
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
            holdback,
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

    const MB: usize = 1 << 20;

    #[test]
    fn the_stretch_doubles_when_the_heap_grows_back_into_a_release() {
        let mut s = HoldbackStretch::new();
        assert_eq!(s.holdback(1000), 1000);
        // 10 MB released, 20 MB left; 4 MB back is not yet half.
        s.passed(10 * MB, 20 * MB);
        s.observe(24 * MB);
        assert_eq!(s.holdback(1000), 1000);
        s.observe(25 * MB);
        assert_eq!(s.holdback(1000), 2000);
        // Judged once: more growth does not double it again.
        s.observe(40 * MB);
        assert_eq!(s.holdback(1000), 2000);
        // Churn after churn, up to the cap.
        for _ in 0..10 {
            s.passed(10 * MB, 20 * MB);
            s.observe(30 * MB);
        }
        assert_eq!(s.holdback(1000), 1000 * MAX_STRETCH);
        assert_eq!(s.holdback(u32::MAX), u32::MAX, "saturates");
    }

    #[test]
    fn the_stretch_halves_when_a_release_stuck_until_the_next() {
        let mut s = HoldbackStretch::new();
        for _ in 0..3 {
            s.passed(10 * MB, 20 * MB);
            s.observe(30 * MB);
        }
        assert_eq!(s.holdback(1000), 8000);
        // Released, the heap stayed down, then another release: the first
        // stuck.
        s.passed(10 * MB, 20 * MB);
        s.observe(21 * MB);
        s.passed(0, 21 * MB);
        assert_eq!(s.holdback(1000), 8000, "a pass that released nothing judges nothing");
        s.passed(MB, 20 * MB);
        assert_eq!(s.holdback(1000), 4000);
        for _ in 0..5 {
            s.passed(MB, 19 * MB);
        }
        assert_eq!(s.holdback(1000), 1000, "never below the configured hold-back");
    }

    #[test]
    fn one_batch_then_idle_keeps_the_configured_holdback() {
        let mut s = HoldbackStretch::new();
        // A 1 GB batch released down to 20 MB, then idle passes.
        s.passed(1024 * MB, 20 * MB);
        for _ in 0..100 {
            s.observe(20 * MB);
        }
        assert_eq!(s.holdback(1000), 1000);
    }

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
