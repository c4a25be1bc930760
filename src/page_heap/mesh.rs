//! The page heap's side of meshing (mesh mode, `docs/MESH.md`): finding
//! a class's *units* (runs of whole spans of one class and free pages,
//! inside one home huge page) and keeping a meshed unit's pages out of
//! use while it is meshed.
//!
//! A meshed unit's free pages are *pinned*: marked used in their huge
//! page's record, with no span, so the filler never hands them out (their
//! virtual pages share physical pages with another unit). `frozen_units` in the
//! huge page's record counts its frozen units, and the release policy
//! neither re-marks nor collapses such a huge page.

use super::PageHeap;
use crate::huge::HugeKind;
use crate::os::Os;
use crate::span::Span;
use crate::units::{HUGE_SHIFT, PAGES_PER_HUGE, PAGE_SHIFT};
use core::ptr;

/// Most pages a unit spans.
pub const MAX_UNIT_PAGES: usize = 16;

/// A unit of a home huge page: its spans (each wholly inside it) and the
/// pages of it that belong to no span.
pub struct Unit {
    pub start: usize,
    pub pages: usize,
    pub spans: [*mut Span; MAX_UNIT_PAGES],
    pub nspans: usize,
    /// Bit `p`: page `p` of the unit is free (in no span).
    pub free: u64,
}

impl<O: Os> PageHeap<O> {
    /// Huge pages `from..` that are homes of `class`: the first one, if any.
    pub fn next_home(&self, class: u8, from: usize) -> Option<usize> {
        (from..self.top).find(|&i| {
            // SAFETY: `i < top`; heap lock held (`&self` of the locked heap).
            let m = unsafe { self.metas.get(i) };
            m.kind == HugeKind::Filler && m.home == class
        })
    }

    /// The unit of `pages` pages at page `page` of huge page `idx`, if every
    /// span on it is a small span of `class`, lies wholly inside it and is
    /// not frozen, and no page of it is pinned. Otherwise `None`; then
    /// `*skip` is where the next unit may start.
    pub fn unit_at(
        &self,
        idx: usize,
        page: usize,
        pages: usize,
        class: u8,
        skip: &mut usize,
    ) -> Option<Unit> {
        *skip = page + 1;
        if page + pages > PAGES_PER_HUGE || pages > MAX_UNIT_PAGES {
            return None;
        }
        // SAFETY: `idx < top` (the caller found it with `next_home`).
        let m = unsafe { self.metas.get(idx) };
        let start = self.base + (idx << HUGE_SHIFT) + (page << PAGE_SHIFT);
        let mut u = Unit {
            start,
            pages,
            spans: [ptr::null_mut(); MAX_UNIT_PAGES],
            nspans: 0,
            free: 0,
        };
        let mut p = page;
        while p < page + pages {
            if !m.used.get(p) {
                u.free |= 1 << (p - page);
                p += 1;
                continue;
            }
            let s = self.pages.span(idx, p);
            if s.is_null() {
                // A pinned page (used, no span).
                return None;
            }
            // SAFETY: the page map holds live span records (heap lock held);
            // `class` and `start` are the heap lock's, `meshed` is written
            // under the class's list lock, which the caller holds too.
            let sp = unsafe { &*s };
            let s_page = (sp.start - self.base) >> PAGE_SHIFT;
            let first = (idx << (HUGE_SHIFT - PAGE_SHIFT)) + page;
            if sp.class != class || sp.frozen || s_page < first {
                return None;
            }
            let end = p + sp.npages as usize;
            if end > page + pages {
                *skip = p;
                return None;
            }
            u.spans[u.nspans] = s;
            u.nspans += 1;
            p = end;
        }
        Some(u)
    }

    /// Pins the free pages of `unit` (bit per unit page in `mask`), so
    /// nothing is carved from them while the unit is meshed.
    pub fn pin_pages(&mut self, start: usize, mask: u64) {
        let (idx, page) = self.locate(start);
        for p in 0..64 {
            if mask >> p & 1 == 1 {
                self.filler
                    .claim_pages(&mut self.metas, idx as u32, page + p, 1);
                self.mark_dirty(idx, page + p, 1);
                self.stats.pages_in_use += 1;
            }
        }
    }

    /// Gives pinned pages back to the filler.
    pub fn unpin_pages(&mut self, start: usize, mask: u64) {
        let (idx, page) = self.locate(start);
        for p in 0..64 {
            if mask >> p & 1 == 1 {
                self.stats.pages_in_use -= 1;
                if self
                    .filler
                    .put_pages(&mut self.metas, idx as u32, page + p, 1)
                {
                    self.free.insert(idx);
                }
            }
        }
    }

    /// Counts a unit frozen (`+1`) or thawed (`-1`) in its huge page.
    pub fn note_frozen(&mut self, start: usize, delta: i32) {
        let (idx, _) = self.locate(start);
        // SAFETY: `idx < top`; heap lock held.
        let m = unsafe { self.metas.get_mut(idx) };
        m.frozen_units = (m.frozen_units as i32 + delta) as u16;
    }
}
