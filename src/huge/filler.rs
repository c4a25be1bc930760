//! The huge page filler: packs spans into the fullest huge page that has room.
//!
//! Huge pages holding spans are bucketed by their longest run of free pages
//! (1 to 512; a full one is in no bucket). A request for `n` pages takes the
//! first non-empty bucket at or above `n`, found with one scan of a 513-bit
//! mask: O(1). The smallest sufficient free run belongs to the most packed huge
//! pages, so new spans go where memory is already used and the emptiest huge
//! pages drain until they are wholly free and leave the filler (the page heap
//! then reuses or releases them whole). This is TCMalloc Temeraire's
//! "fullest first" in its simplest form.

use super::{HugeKind, MetaTable, NIL};
use crate::units::PAGES_PER_HUGE;

const BUCKETS: usize = PAGES_PER_HUGE + 1;
const MASK_WORDS: usize = BUCKETS.div_ceil(64);

/// Buckets of filler huge pages by longest free run.
pub struct Filler {
    heads: [u32; BUCKETS],
    nonempty: [u64; MASK_WORDS],
    /// Huge pages in the filler, full ones included.
    pub count: usize,
}

impl Default for Filler {
    fn default() -> Self {
        Self::new()
    }
}

impl Filler {
    pub const fn new() -> Self {
        Filler {
            heads: [NIL; BUCKETS],
            nonempty: [0; MASK_WORDS],
            count: 0,
        }
    }

    /// A filler huge page whose longest free run is at least `need` and is
    /// the smallest such, or `None`.
    pub fn find(&self, need: usize) -> Option<u32> {
        let mut b = need.max(1);
        while b < BUCKETS {
            let w = b / 64;
            let bits = self.nonempty[w] & (u64::MAX << (b % 64));
            if bits != 0 {
                let bucket = w * 64 + bits.trailing_zeros() as usize;
                return (bucket < BUCKETS).then(|| self.heads[bucket]);
            }
            b = (w + 1) * 64;
        }
        None
    }

    fn link(&mut self, metas: &mut MetaTable, idx: u32) {
        // SAFETY: `idx` is a valid record (below the heap's top).
        let m = unsafe { metas.get_mut(idx as usize) };
        let bucket = m.longest_free as usize;
        if bucket == 0 {
            return;
        }
        let head = self.heads[bucket];
        m.prev = NIL;
        m.next = head;
        if head != NIL {
            // SAFETY: list members are valid records.
            unsafe { metas.get_mut(head as usize) }.prev = idx;
        }
        self.heads[bucket] = idx;
        self.nonempty[bucket / 64] |= 1 << (bucket % 64);
    }

    fn unlink(&mut self, metas: &mut MetaTable, idx: u32) {
        // SAFETY: `idx` is a valid record (below the heap's top).
        let m = unsafe { metas.get_mut(idx as usize) };
        let bucket = m.longest_free as usize;
        if bucket == 0 {
            return;
        }
        let (prev, next) = (m.prev, m.next);
        if prev == NIL {
            self.heads[bucket] = next;
            if next == NIL {
                self.nonempty[bucket / 64] &= !(1 << (bucket % 64));
            }
        } else {
            // SAFETY: list members are valid records.
            unsafe { metas.get_mut(prev as usize) }.next = next;
        }
        if next != NIL {
            // SAFETY: list members are valid records.
            unsafe { metas.get_mut(next as usize) }.prev = prev;
        }
    }

    /// Adds a huge page whose record was reset with `start_filler`.
    pub fn add(&mut self, metas: &mut MetaTable, idx: u32) {
        self.count += 1;
        self.link(metas, idx);
    }

    /// Takes `n` pages (start a multiple of `align`) from filler huge page
    /// `idx`; returns the first page index, or `None` if it has no such run.
    pub fn take_pages(
        &mut self,
        metas: &mut MetaTable,
        idx: u32,
        n: usize,
        align: usize,
    ) -> Option<usize> {
        // SAFETY: `idx` is a valid filler record.
        let m = unsafe { metas.get_mut(idx as usize) };
        debug_assert_eq!(m.kind, HugeKind::Filler);
        let page = m.used.find_clear_run(n, align)?;
        self.claim_pages(metas, idx, page, n);
        Some(page)
    }

    /// Whether pages `[page, page + n)` of `idx` are free.
    pub fn pages_free(&self, metas: &MetaTable, idx: u32, page: usize, n: usize) -> bool {
        // SAFETY: a valid record (`idx` below the heap's top).
        let m = unsafe { metas.get(idx as usize) };
        page + n <= PAGES_PER_HUGE && m.used.count_range(page, n) == 0
    }

    /// Marks pages `[page, page + n)` of `idx` used (they must be free).
    pub fn claim_pages(&mut self, metas: &mut MetaTable, idx: u32, page: usize, n: usize) {
        self.unlink(metas, idx);
        // SAFETY: a valid record (below the heap's top).
        let m = unsafe { metas.get_mut(idx as usize) };
        debug_assert_eq!(m.used.count_range(page, n), 0);
        // Only taking from a run as long as the longest can shorten it.
        let run = m.used.next_set(page) - m.used.clear_run_start(page);
        m.used.set_range(page, n);
        m.nused += n as u16;
        if run >= m.longest_free as usize {
            m.longest_free = m.used.longest_clear_run() as u16;
        }
        self.link(metas, idx);
    }

    /// Returns pages `[page, page + n)` of `idx`. When the huge page becomes
    /// wholly free it leaves the filler and `true` is returned.
    pub fn put_pages(&mut self, metas: &mut MetaTable, idx: u32, page: usize, n: usize) -> bool {
        self.unlink(metas, idx);
        // SAFETY: a valid record (below the heap's top).
        let m = unsafe { metas.get_mut(idx as usize) };
        debug_assert_eq!(m.used.count_range(page, n), n);
        m.used.clear_range(page, n);
        m.nused -= n as u16;
        if m.nused == 0 {
            m.longest_free = 0;
            m.kind = HugeKind::Free;
            self.count -= 1;
            return true;
        }
        // The freed pages join one run; only it can be the new longest.
        let run = m.used.next_set(page) - m.used.clear_run_start(page);
        m.longest_free = m.longest_free.max(run as u16);
        debug_assert_eq!(m.longest_free as usize, m.used.longest_clear_run());
        self.link(metas, idx);
        false
    }

    /// Visits every listed (not full) filler huge page.
    #[cfg(test)]
    pub fn for_each_listed(&self, mut f: impl FnMut(u32), metas: &MetaTable) {
        for &head in self.heads.iter() {
            let mut i = head;
            while i != NIL {
                f(i);
                // SAFETY: list members are valid records.
                i = unsafe { metas.get(i as usize) }.next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::huge::HugePageMeta;

    fn table(n: usize) -> (Vec<HugePageMeta>, MetaTable) {
        let mut v: Vec<HugePageMeta> = (0..n)
            // SAFETY: all-zero is a valid record (documented on the type).
            .map(|_| unsafe { core::mem::zeroed() })
            .collect();
        // SAFETY: the records are valid and outlive the table in each test.
        let t = unsafe { MetaTable::new(v.as_mut_ptr(), n) };
        (v, t)
    }

    fn add(f: &mut Filler, t: &mut MetaTable, idx: u32) {
        // SAFETY: valid record.
        unsafe { t.get_mut(idx as usize) }.start_filler();
        f.add(t, idx);
    }

    #[test]
    fn picks_the_fullest_huge_page_that_fits() {
        let (_v, mut t) = table(3);
        let mut f = Filler::new();
        for i in 0..3 {
            add(&mut f, &mut t, i);
        }
        // Fill 0 to 500 pages, 1 to 300, leave 2 empty.
        f.take_pages(&mut t, 0, 500, 1).unwrap();
        f.take_pages(&mut t, 1, 300, 1).unwrap();
        assert_eq!(f.find(1), Some(0));
        assert_eq!(f.find(12), Some(0));
        assert_eq!(f.find(13), Some(1));
        assert_eq!(f.find(213), Some(2));
        assert_eq!(f.find(513), None);
        // Filling huge page 0 completely takes it out of every bucket.
        f.take_pages(&mut t, 0, 12, 1).unwrap();
        assert_eq!(f.find(1), Some(1));
        assert_eq!(f.count, 3);
    }

    #[test]
    fn emptied_huge_page_leaves_the_filler() {
        let (_v, mut t) = table(2);
        let mut f = Filler::new();
        add(&mut f, &mut t, 0);
        let a = f.take_pages(&mut t, 0, 8, 1).unwrap();
        let b = f.take_pages(&mut t, 0, 8, 1).unwrap();
        assert_eq!((a, b), (0, 8));
        assert!(!f.put_pages(&mut t, 0, a, 8));
        assert_eq!(f.find(8), Some(0));
        assert!(f.put_pages(&mut t, 0, b, 8));
        assert_eq!(f.count, 0);
        assert_eq!(f.find(1), None);
        // SAFETY: valid record.
        assert_eq!(unsafe { t.get(0) }.kind, HugeKind::Free);
    }

    #[test]
    fn fragmented_page_is_bucketed_by_longest_run() {
        let (_v, mut t) = table(1);
        let mut f = Filler::new();
        add(&mut f, &mut t, 0);
        f.take_pages(&mut t, 0, 512, 1).unwrap();
        // Free every other page: 256 free pages but longest run 1.
        for p in (0..512).step_by(2) {
            f.put_pages(&mut t, 0, p, 1);
        }
        assert_eq!(f.find(1), Some(0));
        assert_eq!(f.find(2), None);
        assert_eq!(f.take_pages(&mut t, 0, 2, 1), None);
        // Aligned request.
        f.put_pages(&mut t, 0, 65, 1);
        f.put_pages(&mut t, 0, 67, 1);
        assert!(f.pages_free(&t, 0, 64, 4));
        assert_eq!(f.take_pages(&mut t, 0, 4, 4), Some(64));
        let mut seen = 0;
        f.for_each_listed(|_| seen += 1, &t);
        assert_eq!(seen, 1);
    }
}
