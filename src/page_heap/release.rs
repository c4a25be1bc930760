//! The page heap's side of releasing memory: every `madvise` the allocator
//! makes goes through here, so the ordering rules hold in one place:
//!
//! * flags (`MADV_NOHUGEPAGE`, `MADV_HUGEPAGE`) are only ever applied to a
//!   whole aligned 2 MiB huge page;
//! * inside a huge page that keeps live data, `MADV_NOHUGEPAGE` comes before
//!   the first `MADV_DONTNEED` (when the kernel could re-inflate it:
//!   [`Policy::must_mark`]); if marking fails with ENOMEM or EAGAIN (the VMA
//!   limit: `madvise` reports it as EAGAIN), marking stops for good and only
//!   whole free huge pages are released;
//! * whole free huge pages are released first ([`PageHeap::release_free_huge_pages`]),
//!   partly used ones after ([`PageHeap::release_filler_pages`],
//!   [`PageHeap::release_span_pages`]);
//! * memory touched within the hold-back ([`Pass::holdback`]) is left alone
//!   unless the pass is forced;
//! * a dense huge page carrying NOHUGEPAGE gets `MADV_HUGEPAGE` back, and the
//!   background thread may `MADV_COLLAPSE` it ([`PageHeap::pick_dense`],
//!   [`PageHeap::collapse_done`]).

use super::PageHeap;
use crate::huge::{HugeKind, HugeState};
use crate::os::{Advice, Os};
use crate::span::Span;
use crate::units::{HUGE_SHIFT, HUGE_SIZE, PAGES_PER_HUGE, PAGE_SHIFT, PAGE_SIZE};

/// A huge page with at least this many used pages is dense (95 %).
pub const DENSE_PAGES: usize = PAGES_PER_HUGE * 95 / 100;

/// How the heap advises the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Mark NOHUGEPAGE before releasing part of a huge page.
    pub must_mark: bool,
    /// Go 1.5-1.20: also mark whole released huge pages, and re-mark
    /// HUGEPAGE as soon as a marked huge page is reused.
    pub go_legacy: bool,
    /// Re-mark and collapse dense huge pages.
    pub regain: bool,
    /// Heap pages (4 KiB) per kernel base page, a power of two up to 512
    /// (`config::fit_geometry`): a release inside a huge page covers whole
    /// kernel pages only (a `MADV_DONTNEED` of one 4 KiB unit would drop the
    /// whole larger page around it), and above 1 no metadata page is given
    /// back (its kernel page holds other records).
    pub kernel_page: usize,
    /// The kernel's huge pages are not the heap's 2 MiB: every committed
    /// range is marked NOHUGEPAGE, every release (whole units too, which
    /// are parts of the kernel's larger huge page) needs that mark, and
    /// nothing is re-marked HUGEPAGE (`set_policy` turns `regain` and
    /// `go_legacy` off).
    pub no_huge: bool,
}

impl Policy {
    /// The default policy on a THP kernel with `max_ptes_none > 0`.
    pub const AWARE: Policy = Policy {
        must_mark: true,
        go_legacy: false,
        regain: true,
        kernel_page: 1,
        no_huge: false,
    };
}

/// Parameters of one release pass.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    /// Release clock (ms, wrapping).
    pub now: u32,
    /// Memory touched more recently than this many ms is kept.
    pub holdback: u32,
    /// Ignore the hold-back (release_now, memory limit).
    pub force: bool,
}

impl Pass {
    /// Whether something last touched at `at` may be released.
    pub fn idle(&self, at: u32) -> bool {
        self.force || self.now.wrapping_sub(at) >= self.holdback
    }
}

/// What a pass did and whether work remains.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassResult {
    /// Pages returned to the OS.
    pub released_pages: usize,
    /// Something was skipped only because of the hold-back.
    pub pending: bool,
}

impl<O: Os> PageHeap<O> {
    fn hp_addr(&self, idx: usize) -> usize {
        self.base + (idx << HUGE_SHIFT)
    }

    /// `advise` through this heap's OS, counted in its statistics.
    ///
    /// # Safety
    /// `[addr, addr + len)` lies in committed huge pages of this heap; with
    /// `DontNeed`, none of its pages holds an object in use.
    pub(super) unsafe fn advise_counted(
        &mut self,
        addr: usize,
        len: usize,
        advice: Advice,
    ) -> Result<(), i32> {
        // SAFETY: forwarded from the caller.
        let r = unsafe { self.os.advise(addr, len, advice) };
        let counter = match advice {
            Advice::DontNeed => &mut self.stats.advice.dontneed_calls,
            Advice::NoHugePage => &mut self.stats.advice.nohugepage_calls,
            Advice::HugePage => &mut self.stats.advice.hugepage_calls,
            Advice::Collapse => &mut self.stats.advice.collapse_attempts,
        };
        *counter += 1;
        if r.is_err() && advice != Advice::Collapse {
            self.stats.advice.advise_failures += 1;
        }
        r
    }

    /// Marks huge page `idx` NOHUGEPAGE if needed before a partial release.
    /// `false` when the partial release must not happen.
    fn prepare_partial(&mut self, idx: usize) -> bool {
        // SAFETY: `idx < top`; heap lock held.
        let m = unsafe { self.metas.get_mut(idx) };
        if m.nohuge || !self.policy.must_mark {
            return true;
        }
        if self.stats.advice.marking_degraded {
            return false;
        }
        // SAFETY: huge page `idx < top` is committed; NOHUGEPAGE keeps data.
        match unsafe { self.advise_counted(self.hp_addr(idx), HUGE_SIZE, Advice::NoHugePage) } {
            Ok(()) => {
                // SAFETY: as above.
                let m = unsafe { self.metas.get_mut(idx) };
                m.nohuge = true;
                m.collapsed = false;
                true
            }
            Err(e) => {
                // The VMA limit: `madvise` says EAGAIN (the kernel converts
                // the split's ENOMEM); ENOMEM where a kernel passes it on.
                if e == crate::os::ENOMEM || e == crate::os::EAGAIN {
                    self.stats.advice.marking_degraded = true;
                }
                false
            }
        }
    }

    /// Releases `[page, page + n)` of huge page `idx` (already prepared),
    /// of which `fresh` pages were not released before.
    fn dontneed_pages(&mut self, idx: usize, page: usize, n: usize, fresh: usize) -> bool {
        debug_assert!(page % self.policy.kernel_page == 0 && n % self.policy.kernel_page == 0);
        let addr = self.hp_addr(idx) + page * PAGE_SIZE;
        // SAFETY: the caller passes free pages of committed huge page `idx`.
        if unsafe { self.advise_counted(addr, n * PAGE_SIZE, Advice::DontNeed) }.is_err() {
            return false;
        }
        self.stats.released_bytes += fresh * PAGE_SIZE;
        true
    }

    /// Called when pages of huge page `idx` are handed out: a released huge
    /// page is in use again; under `go_legacy`, a marked one is re-marked
    /// HUGEPAGE at once, as Go's `sysUsed` did.
    pub(super) fn on_reuse(&mut self, idx: usize) {
        // SAFETY: `idx < top`; heap lock held.
        let m = unsafe { self.metas.get_mut(idx) };
        if m.state == HugeState::Released {
            m.state = if m.nohuge {
                HugeState::Partial
            } else {
                HugeState::Backed
            };
        }
        if self.policy.go_legacy
            && m.nohuge
            // SAFETY: huge page `idx < top` is committed; HUGEPAGE keeps data.
            && unsafe { self.advise_counted(self.hp_addr(idx), HUGE_SIZE, Advice::HugePage) }
                .is_ok()
        {
            // SAFETY: as above.
            let m = unsafe { self.metas.get_mut(idx) };
            m.nohuge = false;
            m.state = HugeState::Backed;
        }
    }

    /// Phase 1: `MADV_DONTNEED` every whole free huge page that may hold
    /// resident pages and has been idle for the hold-back.
    pub fn release_free_huge_pages(&mut self, pass: &Pass, out: &mut PassResult) {
        let mut i = 0;
        while let Some(idx) = self.free.next_member(i, self.top) {
            i = idx + 1;
            // SAFETY: `idx < top`; heap lock held.
            let m = unsafe { self.metas.get_mut(idx) };
            let dirty = m.dirty.count_ones();
            if dirty == 0 {
                continue;
            }
            if !pass.idle(m.touched_at) {
                out.pending = true;
                continue;
            }
            if self.policy.go_legacy && !m.nohuge && !self.stats.advice.marking_degraded {
                // Go marked every released range NOHUGEPAGE.
                if self.prepare_partial(idx) {
                    // SAFETY: as above.
                    unsafe { self.metas.get_mut(idx) }.nohuge = true;
                }
            }
            // Under larger kernel huge pages a whole unit is a part of one.
            if self.policy.no_huge && !self.prepare_partial(idx) {
                continue;
            }
            // SAFETY: a whole free huge page below `top`: committed, and
            // no object of it is in use.
            if unsafe { self.advise_counted(self.hp_addr(idx), HUGE_SIZE, Advice::DontNeed) }
                .is_err()
            {
                continue;
            }
            // SAFETY: as above.
            let m = unsafe { self.metas.get_mut(idx) };
            m.dirty = Default::default();
            m.state = HugeState::Released;
            m.collapsed = false;
            self.stats.dirty_pages -= dirty;
            self.stats.released_bytes += dirty * PAGE_SIZE;
            out.released_pages += dirty;
            // Its span entries (all null: no page has an owner) go back too;
            // a lock-free reader then reads zeroes, which are nulls.
            if self.pages.all_unowned(idx) && self.policy.kernel_page == 1 {
                // SAFETY: the entries' own page of the heap's metadata, all
                // null, which the zero page reads as.
                unsafe {
                    self.os.discard_metadata(
                        self.pages.entries_page(idx),
                        core::mem::size_of::<crate::huge::PageSpans>(),
                    )
                };
                self.stats.metadata_released_bytes +=
                    core::mem::size_of::<crate::huge::PageSpans>();
            }
        }
    }

    /// Phase 2: release the free, possibly resident pages of partly used
    /// huge pages (pages in no span), NOHUGEPAGE first; and mark sparse huge
    /// pages NOHUGEPAGE even when they have nothing to release, since
    /// khugepaged would fill their never-touched pages.
    pub fn release_filler_pages(&mut self, pass: &Pass, out: &mut PassResult) {
        for idx in 0..self.top {
            // SAFETY: `idx < top`; heap lock held.
            let m = unsafe { self.metas.get_mut(idx) };
            if m.kind == HugeKind::Free {
                continue;
            }
            // Whole kernel pages that may hold data and hold no page in use.
            let candidates = m.dirty.whole_groups(&m.used, self.policy.kernel_page);
            // A sparse huge page (fewer than 95 % of its pages ever written)
            // holds untouched pages that khugepaged would fill in: protect
            // it even when nothing in it can be released.
            let sparse = m.dirty.count_ones() < DENSE_PAGES && !m.nohuge && self.policy.must_mark;
            if candidates.is_empty() && !sparse {
                continue;
            }
            if !pass.idle(m.touched_at) {
                out.pending = true;
                continue;
            }
            if !self.prepare_partial(idx) || candidates.is_empty() {
                continue;
            }
            let mut released = 0;
            candidates.for_each_set_run(|page, n| {
                // SAFETY: as above; the closure's borrow of `self` is
                // exclusive for its duration.
                let fresh = unsafe { self.metas.get(idx) }.dirty.count_range(page, n);
                if self.dontneed_pages(idx, page, n, fresh) {
                    // SAFETY: as above.
                    unsafe { self.metas.get_mut(idx) }
                        .dirty
                        .clear_range(page, n);
                    released += fresh;
                }
            });
            // SAFETY: as above.
            let m = unsafe { self.metas.get_mut(idx) };
            m.state = HugeState::Partial;
            m.collapsed = false;
            self.stats.dirty_pages -= released;
            out.released_pages += released;
        }
    }

    /// Phase 3 (called with the span's central lock held): release the span
    /// pages in `mask` (bit per span page). Returns the pages released.
    ///
    /// # Safety
    /// `span` is a live span of this heap and no object in use lies on a
    /// page of `mask`.
    pub unsafe fn release_span_pages(&mut self, span: &mut Span, mask: u64) -> usize {
        let off = span.start - self.base;
        let idx = off >> HUGE_SHIFT;
        let first = (off >> PAGE_SHIFT) % PAGES_PER_HUGE;
        // Whole kernel pages only: those that `mask` fills together with
        // the span's pages released before.
        let whole = kernel_page_mask(mask, span.released, first, self.policy.kernel_page);
        if whole & mask == 0 || !self.prepare_partial(idx) {
            return 0;
        }
        let mut released = 0;
        let mut bits = whole;
        while bits != 0 {
            let lo = bits.trailing_zeros() as usize;
            let len = (!(bits >> lo)).trailing_zeros() as usize;
            let run = crate::span::page_mask(lo, lo + len);
            let fresh = (run & mask).count_ones() as usize;
            if self.dontneed_pages(idx, first + lo, len, fresh) {
                span.released |= run;
                released += fresh;
            }
            bits &= !run;
        }
        self.stats.span_released_pages += released;
        // SAFETY: `idx < top`; heap lock held.
        let m = unsafe { self.metas.get_mut(idx) };
        m.state = HugeState::Partial;
        m.collapsed = false;
        released
    }

    /// Finds a dense huge page that lacks its huge page, at or after `from`;
    /// re-marks it HUGEPAGE if it carries NOHUGEPAGE. Returns its index and
    /// address for the caller to collapse (outside the lock).
    pub fn pick_dense(&mut self, pass: &Pass, from: usize) -> Option<(usize, usize)> {
        if !self.policy.regain {
            return None;
        }
        for idx in from..self.top {
            // SAFETY: `idx < top`; heap lock held.
            let m = unsafe { self.metas.get_mut(idx) };
            let dense = match m.kind {
                HugeKind::Filler | HugeKind::Large | HugeKind::LargeTail => {
                    m.nused as usize >= DENSE_PAGES && m.dirty.count_ones() >= DENSE_PAGES
                }
                HugeKind::Free => false,
            };
            if !dense {
                m.dense_seen = false;
                continue;
            }
            if m.collapsed || m.frozen_units != 0 {
                continue;
            }
            if !m.dense_seen {
                m.dense_seen = true;
                m.dense_since = pass.now;
            }
            if !pass.idle(m.dense_since) {
                continue;
            }
            if m.nohuge {
                // SAFETY: huge page `idx < top` is committed; HUGEPAGE keeps
                // data.
                if unsafe { self.advise_counted(self.hp_addr(idx), HUGE_SIZE, Advice::HugePage) }
                    .is_err()
                {
                    continue;
                }
                // SAFETY: as above.
                let m = unsafe { self.metas.get_mut(idx) };
                m.nohuge = false;
                m.state = HugeState::Backed;
            }
            return Some((idx, self.hp_addr(idx)));
        }
        None
    }

    /// Records the outcome of a background `MADV_COLLAPSE` of huge page
    /// `idx`: on success every page is resident (free ones as zero pages).
    pub fn collapse_done(&mut self, idx: usize, ok: bool) {
        self.stats.advice.collapse_attempts += 1;
        // SAFETY: `idx < top`; heap lock held.
        let m = unsafe { self.metas.get_mut(idx) };
        // Try again only after the huge page changes (a release clears it).
        m.collapsed = true;
        if !ok {
            self.stats.advice.collapse_failures += 1;
            return;
        }
        let before = m.dirty.count_ones();
        m.dirty.set_range(0, PAGES_PER_HUGE);
        self.stats.dirty_pages += PAGES_PER_HUGE - before;
    }

    /// Huge page `idx` was not resident enough to collapse: look again
    /// after another hold-back.
    pub fn collapse_skipped(&mut self, idx: usize, now: u32) {
        // SAFETY: `idx < top`; heap lock held.
        unsafe { self.metas.get_mut(idx) }.dense_since = now;
    }

    /// Pages in no span that may be resident (written since last
    /// released): free memory the release has not given back yet.
    pub fn held_back_pages(&self) -> usize {
        (0..self.top)
            .map(|idx| {
                // SAFETY: `idx < top`.
                let m = unsafe { self.metas.get(idx) };
                m.dirty.and_not(&m.used).count_ones()
            })
            .sum()
    }

    /// Huge pages by state: (backed, partial, released or never touched,
    /// marked NOHUGEPAGE, collapsed), over huge pages below the top.
    pub fn count_states(&self) -> [usize; 5] {
        let mut c = [0; 5];
        for idx in 0..self.top {
            // SAFETY: `idx < top`.
            let m = unsafe { self.metas.get(idx) };
            let released = m.kind == HugeKind::Free && m.dirty.is_empty();
            match (released, m.state) {
                (true, _) => c[2] += 1,
                (false, HugeState::Partial) => c[1] += 1,
                (false, _) => c[0] += 1,
            }
            c[3] += m.nohuge as usize;
            c[4] += m.collapsed as usize;
        }
        c
    }
}

/// The pages of a span to release under kernel pages of `g` heap pages:
/// bit `i` is page `first + i` of its huge page. The aligned groups of `g`
/// pages that lie in the span, are all in `mask` (free) or `done`
/// (released before), and hold at least one page of `mask`; `mask` itself
/// when `g` is 1.
fn kernel_page_mask(mask: u64, done: u64, first: usize, g: usize) -> u64 {
    if g == 1 {
        return mask;
    }
    let free = mask | done;
    let mut out = 0;
    let mut p = first.next_multiple_of(g);
    while p + g <= first + 64 {
        let m = crate::span::page_mask(p - first, p - first + g);
        if free & m == m && mask & m != 0 {
            out |= m;
        }
        p += g;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::{Call, FakeOs};
    use crate::span::Span;

    fn heap() -> PageHeap<FakeOs> {
        let mut h = PageHeap::new(FakeOs::default());
        assert!(h.init(64 * HUGE_SIZE, HUGE_SIZE));
        h
    }

    fn pass(now: u32, force: bool) -> Pass {
        Pass {
            now,
            holdback: 1000,
            force,
        }
    }

    fn advices(h: &PageHeap<FakeOs>) -> Vec<(usize, usize, Advice)> {
        h.os.calls
            .borrow()
            .iter()
            .filter_map(|c| match *c {
                Call::Advise { addr, len, advice } => Some((addr, len, advice)),
                _ => None,
            })
            .collect()
    }

    /// The ordering rules, checked over a whole recorded call sequence.
    fn check_rules(h: &PageHeap<FakeOs>, base: usize) {
        crate::os::fake::check_advice_rules(
            &h.os.calls.borrow(),
            base,
            crate::os::fake::Rules::marking(true),
        )
        .unwrap();
    }

    fn spans(h: &mut PageHeap<FakeOs>, n: usize, pages: usize) -> Vec<*mut Span> {
        (0..n)
            .map(|_| h.alloc_run(pages, 1, 1).unwrap().span)
            .collect()
    }

    fn free(h: &mut PageHeap<FakeOs>, s: *mut Span) {
        // SAFETY: live span of this heap.
        unsafe { h.free_run(s) };
    }

    #[test]
    fn whole_huge_pages_go_first_and_partial_ones_are_marked_first() {
        let mut h = heap();
        let base = h.view().base;
        let s = spans(&mut h, 1024, 1);
        // Huge page 0 wholly free, huge page 1 half free.
        for &x in s[..512].iter().chain(s[512..768].iter()) {
            free(&mut h, x);
        }
        h.os.calls.borrow_mut().clear();
        let mut r = PassResult::default();
        let p = pass(0, false);
        let written = h.held_back_pages();
        assert_eq!(written, 512 + 256, "the freed pages were written");
        h.release_free_huge_pages(&p, &mut r);
        assert!(
            r.pending && r.released_pages == 0,
            "hold-back keeps fresh frees"
        );
        assert_eq!(h.held_back_pages(), written, "held back, not released");
        *h.os.clock.borrow_mut() = 5000;
        let p = pass(5000, false);
        let mut r = PassResult::default();
        h.release_free_huge_pages(&p, &mut r);
        h.release_filler_pages(&p, &mut r);
        assert_eq!(r.released_pages, 512 + 256);
        assert_eq!(h.held_back_pages(), 0);
        // The wholly released huge page's span entries went back too, and
        // read as null; the half-used one keeps its entries.
        assert_eq!(h.stats().metadata_released_bytes, PAGE_SIZE);
        assert_eq!(*h.os.discarded_metadata.borrow(), PAGE_SIZE);
        assert!(h.pages.all_unowned(0));
        assert!(!h.pages.all_unowned(1));
        // The 1024 span records filled the first pages of the record chunk
        // (255 pages of records after its header); the first 768 came back,
        // so the pages they wholly filled, and the pages never used, go
        // back to the OS.
        let per_page = PAGE_SIZE / core::mem::size_of::<Span>();
        let expect = 768 / per_page + (255 - 1024usize.div_ceil(per_page));
        let before = *h.os.discarded_metadata.borrow();
        assert_eq!(h.discard_span_records(), expect);
        assert_eq!(
            *h.os.discarded_metadata.borrow() - before,
            expect * PAGE_SIZE
        );
        assert_eq!(h.discard_span_records(), 0);
        h.check().unwrap();
        let calls = advices(&h);
        assert_eq!(
            calls[0],
            (base, HUGE_SIZE, Advice::DontNeed),
            "whole huge page first"
        );
        assert_eq!(calls[1], (base + HUGE_SIZE, HUGE_SIZE, Advice::NoHugePage));
        assert_eq!(
            calls[2],
            (base + HUGE_SIZE, 256 * PAGE_SIZE, Advice::DontNeed)
        );
        check_rules(&h, base);
        h.check().unwrap();
        assert_eq!(h.stats.dirty_pages, 256);
        // Huge page 0 released, 1 partial, the 14 never touched hold nothing.
        assert_eq!(h.count_states(), [0, 1, 15, 1, 0]);
        // Nothing left: a second pass makes no call.
        let n = advices(&h).len();
        let mut r = PassResult::default();
        h.release_free_huge_pages(&p, &mut r);
        h.release_filler_pages(&p, &mut r);
        assert_eq!(advices(&h).len(), n);
        assert!(!r.pending);
    }

    #[test]
    fn reused_memory_within_the_holdback_is_not_released() {
        let mut h = heap();
        let s = spans(&mut h, 512, 1);
        for &x in &s[..300] {
            free(&mut h, x);
        }
        *h.os.clock.borrow_mut() = 900;
        let again = spans(&mut h, 300, 1);
        assert_eq!(again.len(), 300);
        let mut r = PassResult::default();
        h.release_filler_pages(&pass(1500, false), &mut r);
        h.release_free_huge_pages(&pass(1500, false), &mut r);
        assert_eq!(r.released_pages, 0);
        assert!(advices(&h).is_empty(), "a steady workload pays no madvise");
    }

    #[test]
    fn span_pages_are_released_inside_a_marked_huge_page() {
        let mut h = heap();
        let base = h.view().base;
        let s = h.alloc_run(8, 1, 1).unwrap().span;
        let _neighbour = h.alloc_run(8, 1, 1).unwrap().span;
        // SAFETY: live span.
        let span = unsafe { &mut *s };
        // SAFETY: a live span of this heap whose memory the fake OS never
        // backs: nothing is in use on any of its pages.
        let got = unsafe { h.release_span_pages(span, 0b1011_0110) };
        assert_eq!(got, 5);
        assert_eq!(span.released, 0b1011_0110);
        check_rules(&h, base);
        let calls = advices(&h);
        assert_eq!(calls[0].2, Advice::NoHugePage);
        assert_eq!(calls.len(), 1 + 3, "one DONTNEED per run of pages");
        // When the span is freed its released pages are clean again.
        let before = h.stats.dirty_pages;
        free(&mut h, s);
        assert_eq!(h.stats.dirty_pages, before - 5);
        h.check().unwrap();
    }

    #[test]
    fn dense_huge_pages_are_remarked_then_collapsed() {
        let mut h = heap();
        let base = h.view().base;
        let s = spans(&mut h, 512, 1);
        for &x in &s[..100] {
            free(&mut h, x);
        }
        let mut r = PassResult::default();
        h.release_filler_pages(&pass(5000, true), &mut r);
        assert_eq!(h.pick_dense(&pass(5000, false), 0), None, "not dense");
        // Fill it again to 100 %: dense, but held back at first.
        let _refill = spans(&mut h, 100, 1);
        assert_eq!(h.pick_dense(&pass(6000, false), 0), None);
        let picked = h.pick_dense(&pass(7000, false), 0);
        assert_eq!(picked, Some((0, base)));
        let calls = advices(&h);
        assert_eq!(*calls.last().unwrap(), (base, HUGE_SIZE, Advice::HugePage));
        h.collapse_done(0, true);
        assert_eq!(h.pick_dense(&pass(8000, false), 0), None, "collapsed once");
        check_rules(&h, base);
        h.check().unwrap();
        assert_eq!(h.stats.advice.collapse_attempts, 1);
    }

    #[test]
    fn enomem_on_marking_degrades_to_whole_releases() {
        for errno in [crate::os::ENOMEM, crate::os::EAGAIN] {
            marking_failure_degrades(errno);
        }
    }

    fn marking_failure_degrades(errno: i32) {
        let mut h = heap();
        let s = spans(&mut h, 1024, 1);
        for &x in s[..512].iter().chain(s[512..600].iter()) {
            free(&mut h, x);
        }
        *h.os.fail_advice.borrow_mut() = Some((Advice::NoHugePage, errno));
        let mut r = PassResult::default();
        let p = pass(5000, true);
        h.release_free_huge_pages(&p, &mut r);
        h.release_filler_pages(&p, &mut r);
        assert!(h.stats.advice.marking_degraded);
        assert_eq!(r.released_pages, 512, "whole huge page still released");
        let calls = advices(&h);
        assert!(
            calls.iter().all(|c| c.1 == HUGE_SIZE),
            "no partial DONTNEED without marking"
        );
        h.check().unwrap();
    }

    /// A heap over a fake kernel of `page_size` byte base pages, under
    /// `Policy::AWARE` fitted to it.
    fn heap_with_pages(page_size: usize, no_huge: bool) -> PageHeap<FakeOs> {
        let mut os = FakeOs::default();
        os.page_size = page_size;
        let mut h = PageHeap::new(os);
        h.set_policy(Policy {
            kernel_page: page_size / PAGE_SIZE,
            no_huge,
            ..Policy::AWARE
        });
        assert!(h.init(64 * HUGE_SIZE, HUGE_SIZE));
        h
    }

    #[test]
    fn larger_base_pages_are_given_back_whole() {
        // 64 KiB kernel pages under 2 MiB huge pages (ppc64le radix): 16
        // of the heap's pages each.
        let mut h = heap_with_pages(64 << 10, false);
        let base = h.view().base;
        let s = spans(&mut h, 1024, 1);
        // Huge page 0 wholly free; huge page 1's first half free but for
        // pages 5 and 130, which keep kernel pages 0 and 8 of it.
        for (i, &x) in s[..768].iter().enumerate() {
            if i != 512 + 5 && i != 512 + 130 {
                free(&mut h, x);
            }
        }
        let mut r = PassResult::default();
        let p = pass(5000, true);
        h.release_free_huge_pages(&p, &mut r);
        h.release_filler_pages(&p, &mut r);
        assert_eq!(r.released_pages, 512 + 256 - 2 * 16);
        assert_eq!(h.held_back_pages(), 2 * 15, "the blocked kernel pages' free pages");
        let dontneeds: Vec<_> = advices(&h)
            .into_iter()
            .filter(|c| c.2 == Advice::DontNeed)
            .collect();
        assert_eq!(dontneeds[0], (base, HUGE_SIZE, Advice::DontNeed));
        assert_eq!(
            dontneeds[1..],
            [
                (base + HUGE_SIZE + (16 << 12), 112 << 12, Advice::DontNeed),
                (base + HUGE_SIZE + (144 << 12), 112 << 12, Advice::DontNeed),
            ]
        );
        let rules = crate::os::fake::Rules {
            must_mark: true,
            page_size: 64 << 10,
            no_huge: false,
        };
        crate::os::fake::check_advice_rules(&h.os.calls.borrow(), base, rules).unwrap();
        // No 4 KiB metadata page goes back: its 64 KiB page holds others.
        assert_eq!(h.discard_span_records(), 0);
        assert_eq!(*h.os.discarded_metadata.borrow(), 0);
        h.check().unwrap();
    }

    #[test]
    fn span_pages_go_back_in_whole_kernel_pages() {
        // A span that starts at page 2 of its huge page (bit i is page
        // 2 + i), under 16 KiB kernel pages (heap pages 4..8, 8..12, ...).
        // Its pages 2..10 free: kernel page 4..8 goes, 8..12 lacks 10, 11.
        assert_eq!(kernel_page_mask(0xff, 0, 2, 4), 0b1111 << 2);
        // With pages 10 and 11 released before, 8..12 goes too.
        assert_eq!(kernel_page_mask(0xff, 0b11 << 8, 2, 4), 0xff << 2);
        // A kernel page of released pages only is not released again.
        assert_eq!(kernel_page_mask(0b11 << 8, 0xff << 2, 2, 4), 0b1111 << 6);
        assert_eq!(kernel_page_mask(0b11, 0, 2, 4), 0, "pages 2 and 3 only");
        assert_eq!(kernel_page_mask(0xff, 0, 2, 1), 0xff);
        // Wider than a span: never.
        assert_eq!(kernel_page_mask(u64::MAX, 0, 0, 128), 0);
        // Through the heap: a 16-page span of one object per page, all free.
        let mut h = heap_with_pages(16 << 10, false);
        let _pad = spans(&mut h, 1, 2);
        let s = h.alloc_run(16, 1, 1).unwrap().span;
        // SAFETY: a live span of this heap, none of whose pages holds a
        // live object; bits 0 and 1 are heap pages 2 and 3.
        let released = unsafe { h.release_span_pages(&mut *s, 0xffff) };
        assert_eq!(released, 12, "heap pages 4..16 of the 2..18 the span holds");
        // SAFETY: as above.
        assert_eq!(unsafe { (*s).released }, 0x3ffc);
        h.check().unwrap();
    }

    #[test]
    fn other_huge_page_sizes_keep_the_heap_nohugepage() {
        // 16 KiB pages under 32 MiB huge pages (arm64): the heap cannot
        // pack into those, so it keeps them out; re-marking and Go's
        // behaviour are turned off with them.
        let mut h = heap_with_pages(16 << 10, true);
        h.set_policy(Policy {
            go_legacy: true,
            ..h.policy
        });
        assert!(!h.policy.regain && !h.policy.go_legacy);
        let base = h.view().base;
        let s = spans(&mut h, 1024, 1);
        let calls = advices(&h);
        assert_eq!(calls[0].0, base);
        assert_eq!(calls[0].2, Advice::NoHugePage);
        // SAFETY: every index is below the top; single-threaded test.
        assert!((0..h.top).all(|i| unsafe { h.metas.get(i) }.nohuge));
        for &x in s[..768].iter() {
            free(&mut h, x);
        }
        let mut r = PassResult::default();
        let p = pass(5000, true);
        h.release_free_huge_pages(&p, &mut r);
        h.release_filler_pages(&p, &mut r);
        assert_eq!(r.released_pages, 768);
        assert!(h.pick_dense(&p, 0).is_none());
        let n_marks = advices(&h)
            .iter()
            .filter(|c| c.2 != Advice::DontNeed)
            .count();
        assert_eq!(n_marks, 1, "one mark at commit, none per release");
        let rules = crate::os::fake::Rules {
            must_mark: true,
            page_size: 16 << 10,
            no_huge: true,
        };
        crate::os::fake::check_advice_rules(&h.os.calls.borrow(), base, rules).unwrap();
        h.check().unwrap();

        // Where the kernel refuses the mark at commit (the VMA limit), no
        // unit carries it, and no release happens unprotected: not even
        // of a whole unit, which is part of a larger huge page.
        let mut os = FakeOs::default();
        os.page_size = 16 << 10;
        *os.fail_advice.borrow_mut() = Some((Advice::NoHugePage, crate::os::ENOMEM));
        let mut h = PageHeap::new(os);
        h.set_policy(Policy {
            kernel_page: 4,
            no_huge: true,
            ..Policy::AWARE
        });
        assert!(h.init(64 * HUGE_SIZE, HUGE_SIZE));
        let s = spans(&mut h, 512, 1);
        for &x in &s {
            free(&mut h, x);
        }
        let mut r = PassResult::default();
        h.release_free_huge_pages(&pass(5000, true), &mut r);
        assert_eq!(r.released_pages, 0);
        assert!(advices(&h).iter().all(|c| c.2 != Advice::DontNeed));
        crate::os::fake::check_advice_rules(&h.os.calls.borrow(), base_of(&h), rules).unwrap();
    }

    fn base_of(h: &PageHeap<FakeOs>) -> usize {
        h.view().base
    }

    #[test]
    fn sparse_huge_pages_are_protected_even_with_nothing_to_release() {
        let mut h = heap();
        let base = h.view().base;
        let _s = spans(&mut h, 40, 1);
        let mut r = PassResult::default();
        h.release_filler_pages(&pass(5000, false), &mut r);
        assert_eq!(r.released_pages, 0);
        assert_eq!(advices(&h), [(base, HUGE_SIZE, Advice::NoHugePage)]);
        // Once marked, nothing more happens.
        h.release_filler_pages(&pass(9000, false), &mut r);
        assert_eq!(advices(&h).len(), 1);
    }

    #[test]
    fn without_inflation_risk_no_flags_are_set() {
        let mut h = heap();
        h.policy.must_mark = false;
        let s = spans(&mut h, 512, 1);
        for &x in &s[..200] {
            free(&mut h, x);
        }
        let mut r = PassResult::default();
        h.release_filler_pages(&pass(0, true), &mut r);
        assert_eq!(r.released_pages, 200);
        assert!(advices(&h).iter().all(|c| c.2 == Advice::DontNeed));
    }

    #[test]
    fn go_legacy_marks_whole_releases_and_remarks_on_reuse() {
        let mut h = heap();
        h.policy = Policy {
            must_mark: true,
            go_legacy: true,
            regain: false,
            ..Policy::AWARE
        };
        let base = h.view().base;
        let s = spans(&mut h, 512, 1);
        for &x in &s {
            free(&mut h, x);
        }
        let mut r = PassResult::default();
        h.release_free_huge_pages(&pass(0, true), &mut r);
        let _again = spans(&mut h, 1, 1);
        let calls: Vec<Advice> = advices(&h).iter().map(|c| c.2).collect();
        assert_eq!(
            calls,
            [Advice::NoHugePage, Advice::DontNeed, Advice::HugePage]
        );
        check_rules(&h, base);
    }
}
