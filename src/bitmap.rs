//! A 512-bit bitmap: one bit per 4 KiB page of a 2 MiB huge page.
//!
//! The huge page filler keeps two of these per huge page (pages in use, pages
//! that may hold data) and asks it for free runs and the longest free run.

use crate::units::PAGES_PER_HUGE;

const WORDS: usize = PAGES_PER_HUGE / 64;

/// One bit per page of a huge page; bit `i` is page `i`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PageBitmap {
    words: [u64; WORDS],
}

/// Mask of bits `[lo, hi)` inside one word, `0 <= lo <= hi <= 64`.
#[inline]
fn word_mask(lo: usize, hi: usize) -> u64 {
    let upper = if hi == 64 { u64::MAX } else { (1u64 << hi) - 1 };
    let lower = if lo == 64 { u64::MAX } else { (1u64 << lo) - 1 };
    upper & !lower
}

impl PageBitmap {
    /// All bits clear.
    pub const fn new() -> Self {
        PageBitmap { words: [0; WORDS] }
    }

    /// Whether bit `i` is set (`i < 512`).
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    fn for_words(&mut self, start: usize, len: usize, mut f: impl FnMut(&mut u64, u64)) {
        debug_assert!(start + len <= PAGES_PER_HUGE);
        let end = start + len;
        let mut i = start;
        while i < end {
            let w = i / 64;
            let hi = core::cmp::min(end - w * 64, 64);
            f(&mut self.words[w], word_mask(i % 64, hi));
            i = (w + 1) * 64;
        }
    }

    /// Sets bits `[start, start + len)`.
    pub fn set_range(&mut self, start: usize, len: usize) {
        self.for_words(start, len, |w, m| *w |= m);
    }

    /// Clears bits `[start, start + len)`.
    pub fn clear_range(&mut self, start: usize, len: usize) {
        self.for_words(start, len, |w, m| *w &= !m);
    }

    /// Number of set bits in `[start, start + len)`.
    pub fn count_range(&self, start: usize, len: usize) -> usize {
        let mut copy = *self;
        let mut n = 0;
        copy.for_words(start, len, |w, m| n += (*w & m).count_ones() as usize);
        n
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Index of the first set bit at or after `from`, or 512.
    pub fn next_set(&self, from: usize) -> usize {
        self.next_matching(from, false)
    }

    /// Index of the first clear bit at or after `from`, or 512.
    pub fn next_clear(&self, from: usize) -> usize {
        self.next_matching(from, true)
    }

    fn next_matching(&self, from: usize, clear: bool) -> usize {
        let mut i = from;
        while i < PAGES_PER_HUGE {
            let w = i / 64;
            let word = if clear { !self.words[w] } else { self.words[w] };
            let masked = word & word_mask(i % 64, 64);
            if masked != 0 {
                return w * 64 + masked.trailing_zeros() as usize;
            }
            i = (w + 1) * 64;
        }
        PAGES_PER_HUGE
    }

    /// Index just after the last set bit before `before` (0 if none): the
    /// start of the clear run that ends at `before`.
    pub fn clear_run_start(&self, before: usize) -> usize {
        let mut i = before;
        while i > 0 {
            let w = (i - 1) / 64;
            let hi = i - w * 64;
            let mask = if hi == 64 { u64::MAX } else { (1u64 << hi) - 1 };
            let bits = self.words[w] & mask;
            if bits != 0 {
                return w * 64 + 64 - bits.leading_zeros() as usize;
            }
            i = w * 64;
        }
        0
    }

    /// Length of the longest run of clear bits.
    pub fn longest_clear_run(&self) -> usize {
        let mut best = 0;
        let mut i = self.next_clear(0);
        while i < PAGES_PER_HUGE {
            let end = self.next_set(i);
            best = best.max(end - i);
            i = self.next_clear(end);
        }
        best
    }

    /// First run of `len` clear bits whose start is a multiple of `align`
    /// (a power of two), or `None`.
    pub fn find_clear_run(&self, len: usize, align: usize) -> Option<usize> {
        debug_assert!(len > 0 && align.is_power_of_two());
        let mut i = self.next_clear(0);
        while i < PAGES_PER_HUGE {
            let start = (i + align - 1) & !(align - 1);
            if start >= PAGES_PER_HUGE {
                return None;
            }
            let end = self.next_set(start);
            if end == start {
                i = self.next_clear(start);
                continue;
            }
            if end - start >= len {
                return Some(start);
            }
            i = self.next_clear(end);
        }
        None
    }

    /// Bits set in `self` and clear in `other`.
    pub fn and_not(&self, other: &PageBitmap) -> PageBitmap {
        let mut words = self.words;
        for (w, o) in words.iter_mut().zip(other.words.iter()) {
            *w &= !o;
        }
        PageBitmap { words }
    }

    /// Whole aligned groups of `g` bits (`g` a power of two, at most 512)
    /// that hold a set bit of `self` and no set bit of `blocked`: the pages
    /// of a huge page that can go back to a kernel whose base page is `g`
    /// of ours (`self` the pages that may hold data, `blocked` those in use).
    pub fn whole_groups(&self, blocked: &PageBitmap, g: usize) -> PageBitmap {
        debug_assert!(g.is_power_of_two() && g <= PAGES_PER_HUGE);
        if g == 1 {
            return self.and_not(blocked);
        }
        let mut out = PageBitmap::new();
        let mut start = 0;
        while start < PAGES_PER_HUGE {
            if self.count_range(start, g) != 0 && blocked.count_range(start, g) == 0 {
                out.set_range(start, g);
            }
            start += g;
        }
        out
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Visits each maximal run of set bits as `(start, len)`.
    pub fn for_each_set_run(&self, mut f: impl FnMut(usize, usize)) {
        let mut i = self.next_set(0);
        while i < PAGES_PER_HUGE {
            let end = self.next_clear(i);
            f(i, end - i);
            i = self.next_set(end);
        }
    }

    #[cfg(test)]
    /// Visits each maximal run of clear bits as `(start, len)`.
    pub fn for_each_clear_run(&self, mut f: impl FnMut(usize, usize)) {
        let mut i = self.next_clear(0);
        while i < PAGES_PER_HUGE {
            let end = self.next_set(i);
            f(i, end - i);
            i = self.next_clear(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_longest(bits: &[bool]) -> usize {
        let (mut best, mut cur) = (0, 0);
        for &b in bits {
            cur = if b { 0 } else { cur + 1 };
            best = best.max(cur);
        }
        best
    }

    #[test]
    fn whole_groups_take_only_groups_free_of_blocked_bits() {
        let mut dirty = PageBitmap::new();
        let mut used = PageBitmap::new();
        dirty.set_range(0, 10); // groups of 4: 0..4, 4..8, 8..12
        used.set_range(9, 1); // blocks 8..12
        dirty.set_range(100, 1); // one dirty page: its whole group goes
        let w = dirty.whole_groups(&used, 4);
        let mut want = PageBitmap::new();
        want.set_range(0, 8);
        want.set_range(100, 4);
        assert_eq!(w, want);
        // Groups wider than a word, and the plain case.
        assert!(
            dirty.whole_groups(&used, 128).is_empty(),
            "the first 128 pages hold a used page, the others no dirty one"
        );
        used.clear_range(9, 1);
        assert_eq!(dirty.whole_groups(&used, 128).count_ones(), 128);
        assert_eq!(dirty.whole_groups(&used, 1), dirty);
        assert_eq!(dirty.whole_groups(&used, 512).count_ones(), 512);
    }

    #[test]
    fn ranges_across_word_boundaries() {
        let mut b = PageBitmap::new();
        b.set_range(60, 10);
        assert_eq!(b.count_ones(), 10);
        assert!(!b.get(59) && b.get(60) && b.get(69) && !b.get(70));
        assert_eq!(b.next_set(0), 60);
        assert_eq!(b.next_clear(60), 70);
        assert_eq!(b.longest_clear_run(), 512 - 70);
        b.clear_range(62, 3);
        assert_eq!(b.count_ones(), 7);
        assert_eq!(b.count_range(60, 10), 7);
        b.set_range(0, 512);
        assert_eq!(b.count_ones(), 512);
        assert_eq!(b.longest_clear_run(), 0);
        assert_eq!(b.find_clear_run(1, 1), None);
    }

    #[test]
    fn aligned_run_search() {
        let mut b = PageBitmap::new();
        b.set_range(0, 3);
        assert_eq!(b.find_clear_run(4, 1), Some(3));
        assert_eq!(b.find_clear_run(4, 4), Some(4));
        assert_eq!(b.find_clear_run(4, 256), Some(256));
        b.set_range(256, 1);
        assert_eq!(b.find_clear_run(256, 256), None);
        assert_eq!(b.find_clear_run(253, 1), Some(3));
    }

    proptest! {
        #[test]
        fn matches_a_bool_model(ops in proptest::collection::vec((any::<bool>(), 0usize..512, 1usize..80), 1..40),
                                len in 1usize..100, align_log in 0u32..7) {
            let mut b = PageBitmap::new();
            let mut model = [false; 512];
            for (set, start, l) in ops {
                let l = l.min(512 - start);
                if set { b.set_range(start, l) } else { b.clear_range(start, l) }
                for m in &mut model[start..start + l] { *m = set; }
            }
            prop_assert_eq!(b.count_ones(), model.iter().filter(|&&x| x).count());
            for (i, &m) in model.iter().enumerate() { prop_assert_eq!(b.get(i), m); }
            prop_assert_eq!(b.longest_clear_run(), model_longest(&model));
            let align = 1usize << align_log;
            let expect = (0..512).step_by(align)
                .find(|&s| s + len <= 512 && model[s..s + len].iter().all(|&x| !x));
            prop_assert_eq!(b.find_clear_run(len, align), expect);
            let mut runs = 0;
            b.for_each_clear_run(|s, l| { runs += l; assert!(model[s..s + l].iter().all(|&x| !x)); });
            prop_assert_eq!(runs, model.iter().filter(|&&x| !x).count());
            let mut set = 0;
            b.for_each_set_run(|s, l| { set += l; assert!(model[s..s + l].iter().all(|&x| x)); });
            prop_assert_eq!(set, b.count_ones());
            let mut other = PageBitmap::new();
            other.set_range(100, 200);
            let d = b.and_not(&other);
            for (i, &m) in model.iter().enumerate() {
                prop_assert_eq!(d.get(i), m && !(100..300).contains(&i));
            }
            prop_assert_eq!(d.is_empty(), d.count_ones() == 0);
            for before in [0usize, 1, 63, 64, 65, 200, 511, 512] {
                let expect = (0..before).rev().find(|&i| model[i]).map_or(0, |i| i + 1);
                prop_assert_eq!(b.clear_run_start(before), expect);
            }
        }
    }
}
