//! The invariant checker: walks every structure of the allocator and
//! reports the first inconsistency. Used by the tests and the fuzz targets
//! after every operation; takes every lock, so never call it from a hot path.
//!
//! Checked: the page heap (filler buckets, free set, used/dirty bitmaps and
//! their counters), each central list (class, flags, free bitmaps, counts),
//! that every small-object span's used objects equal what its central list
//! has handed out or parked, that every page of a span maps to it, and that
//! no page released inside a live span holds an object in use (a released
//! page reads as zero: an object on it would have lost its data).

use crate::global::{self, CENTRAL, HEAP};
use crate::huge::{page_tag, HugeKind};
use crate::os::linux::LinuxOs;
use crate::page_heap::PageHeap;
use crate::size_class::{CLASS_SIZE, NUM_CLASSES};
use crate::span::page_mask;
use crate::units::{HUGE_SIZE, PAGES_PER_HUGE, PAGE_SHIFT, PAGE_SIZE};

/// Checks every invariant; `Err` names the first one broken.
pub fn check_invariants() -> Result<(), &'static str> {
    if !global::ensure_heap() {
        return Ok(());
    }
    let lists: [_; NUM_CLASSES] = core::array::from_fn(|c| CENTRAL[c].lock());
    let heap = HEAP.lock();
    heap.check()?;
    let mut out_by_list = [0usize; NUM_CLASSES];
    for c in 1..NUM_CLASSES {
        out_by_list[c] = lists[c].check(c)?;
    }
    let mut used_by_span = [0usize; NUM_CLASSES];
    for idx in 0..heap.committed_huge_pages() {
        check_huge_page(&heap, idx, 0..PAGES_PER_HUGE, &mut used_by_span)?;
    }
    for c in 1..NUM_CLASSES {
        if used_by_span[c] != out_by_list[c] {
            return Err("span used counts disagree with the central list's");
        }
    }
    drop(heap);
    drop(lists);
    crate::profile::table::check()
}

/// Checks the pages `range` of huge page `idx` against their spans and
/// tags (each span that starts in the range, and those pages no span owns),
/// adding the objects in use of each small span to `used_by_span`.
fn check_huge_page(
    heap: &PageHeap<LinuxOs>,
    idx: usize,
    range: core::ops::Range<usize>,
    used_by_span: &mut [usize; NUM_CLASSES],
) -> Result<(), &'static str> {
    let view = heap.view();
    let pages = heap.pages();
    let metas = heap.metas();
    if idx >= heap.committed_huge_pages() {
        return Err("checked a huge page above the heap's top");
    }
    // SAFETY: `idx` is below the top (checked); we hold the heap lock.
    let m = unsafe { metas.get(idx) };
    if m.kind != HugeKind::Filler {
        return Ok(());
    }
    let base = view.base() + idx * HUGE_SIZE;
    let end = range.end.min(PAGES_PER_HUGE);
    let mut next = range.start;
    // Each span is checked page by page from its first page, and the walk
    // then jumps past it (visiting its pages once, not twice, halved the
    // full check's time in the fuzz drivers).
    while next < end {
        let page = next;
        next += 1;
        let span = pages.span(idx, page);
        if span.is_null() {
            if pages.tag(idx, page) != 0 {
                return Err("a page no span owns has a tag");
            }
            continue;
        }
        // SAFETY: a mapped span is a live record.
        let s = unsafe { &*span };
        if s.start != base + page * PAGE_SIZE {
            if s.class == 0 || s.start > base + page * PAGE_SIZE {
                return Err("a page maps to a span that does not cover it");
            }
            continue;
        }
        if !m.used.get(page) {
            return Err("a span starts on a page the filler thinks free");
        }
        let class = s.class as usize;
        let span_end = page + s.npages as usize;
        if span_end > PAGES_PER_HUGE {
            return Err("a span in a filler huge page runs past its end");
        }
        next = span_end;
        if class == 0 {
            // A large object maps its first page only.
            if pages.tag(idx, page) != 0 {
                return Err("a large object's page has a tag");
            }
            for p in page + 1..span_end {
                if !pages.span(idx, p).is_null() || pages.tag(idx, p) != 0 {
                    return Err("a page inside a large object is mapped or tagged");
                }
            }
            continue;
        }
        for p in page..span_end {
            if pages.span(idx, p) != span {
                return Err("a page of a small span maps elsewhere");
            }
            if pages.tag(idx, p) != page_tag(s.class, p - page) {
                return Err("a page of a small span has the wrong tag");
            }
        }
        used_by_span[class] += s.used as usize;
        // Released pages must hold no object in use.
        if s.released != 0 {
            let size = CLASS_SIZE[class] as usize;
            for i in 0..s.capacity as usize {
                if !s.is_free(i) {
                    let off = i * size;
                    let pages = page_mask(off >> PAGE_SHIFT, ((off + size - 1) >> PAGE_SHIFT) + 1);
                    if s.released & pages != 0 {
                        return Err("an object in use sits on a released page");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The incremental check for the fuzz drivers: what an operation on the
/// block at `addr..addr + len` of size class `class` (0: large) touched.
/// That is the page heap's records of the huge pages under the block, those
/// pages against their spans and tags, and the class's central list; the
/// counts that add up across the whole heap are left to
/// [`check_invariants`], which the drivers run at the end of an input.
#[cfg(any(test, fuzzing))]
pub fn check_touched(addr: usize, len: usize, class: usize) -> Result<(), &'static str> {
    if !global::ensure_heap() {
        return Ok(());
    }
    let list = (class != 0 && class < NUM_CLASSES).then(|| CENTRAL[class].lock());
    let heap = HEAP.lock();
    if let Some(list) = &list {
        list.check(class)?;
    }
    let base = heap.view().base();
    let top = heap.committed_huge_pages();
    let (first, last) = (
        addr.saturating_sub(base) / HUGE_SIZE,
        (addr + len.max(1) - 1).saturating_sub(base) / HUGE_SIZE,
    );
    let mut unused = [0usize; NUM_CLASSES];
    let pages = heap.pages();
    for idx in first..=last.min(top.saturating_sub(1)) {
        heap.check_huge_page_meta(idx)?;
        // The block's pages in this huge page, widened to the start of the
        // span holding the first (spans never cross a huge page here).
        let page_of =
            |a: usize| (a.saturating_sub(base + idx * HUGE_SIZE) >> PAGE_SHIFT).min(PAGES_PER_HUGE);
        let mut lo = page_of(addr);
        let hi = page_of(addr + len.max(1) - 1) + 1;
        while lo > 0
            && !pages.span(idx, lo).is_null()
            && pages.span(idx, lo - 1) == pages.span(idx, lo)
        {
            lo -= 1;
        }
        check_huge_page(&heap, idx, lo..hi, &mut unused)?;
    }
    Ok(())
}
