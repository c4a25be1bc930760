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
    let view = heap.view();
    let pages = heap.pages();
    let metas = heap.metas();
    for idx in 0..heap.committed_huge_pages() {
        // SAFETY: `idx` is below the top; we hold the heap lock.
        let m = unsafe { metas.get(idx) };
        if m.kind != HugeKind::Filler {
            continue;
        }
        let base = view.base() + idx * HUGE_SIZE;
        for page in 0..PAGES_PER_HUGE {
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
            if class == 0 {
                if pages.tag(idx, page) != 0 {
                    return Err("a large object's page has a tag");
                }
                continue;
            }
            for p in page..page + s.npages as usize {
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
                        let pages =
                            page_mask(off >> PAGE_SHIFT, ((off + size - 1) >> PAGE_SHIFT) + 1);
                        if s.released & pages != 0 {
                            return Err("an object in use sits on a released page");
                        }
                    }
                }
            }
        }
    }
    for c in 1..NUM_CLASSES {
        if used_by_span[c] != out_by_list[c] {
            return Err("span used counts disagree with the central list's");
        }
    }
    Ok(())
}
