//! The set of whole free huge pages: one bit per huge page of the heap, with
//! first-fit search for aligned runs (large objects need contiguous ones).

/// A bitmap over huge-page indices, stored in metadata memory.
pub struct HugeSet {
    words: *mut u64,
    nbits: usize,
    /// Number of set bits.
    pub count: usize,
}

// SAFETY: only reached through the page heap lock.
unsafe impl Send for HugeSet {}

impl HugeSet {
    pub const fn empty() -> Self {
        HugeSet {
            words: core::ptr::null_mut(),
            nbits: 0,
            count: 0,
        }
    }

    /// Bytes of storage needed for `nbits` bits.
    pub const fn bytes_for(nbits: usize) -> usize {
        nbits.div_ceil(64) * 8
    }

    /// # Safety
    /// `words` points to `bytes_for(nbits)` zeroed bytes, 8-aligned, that live
    /// as long as the set.
    pub unsafe fn new(words: *mut u64, nbits: usize) -> Self {
        HugeSet {
            words,
            nbits,
            count: 0,
        }
    }

    #[inline]
    fn word(&self, w: usize) -> u64 {
        // SAFETY: callers keep `w < nbits.div_ceil(64)`, inside the storage.
        unsafe { *self.words.add(w) }
    }

    #[inline]
    fn word_mut(&mut self, w: usize) -> &mut u64 {
        // SAFETY: as in `word`; `&mut self` makes the access exclusive.
        unsafe { &mut *self.words.add(w) }
    }

    pub fn contains(&self, i: usize) -> bool {
        i < self.nbits && self.word(i / 64) >> (i % 64) & 1 == 1
    }

    pub fn insert(&mut self, i: usize) {
        debug_assert!(i < self.nbits && !self.contains(i));
        *self.word_mut(i / 64) |= 1 << (i % 64);
        self.count += 1;
    }

    pub fn remove(&mut self, i: usize) {
        debug_assert!(self.contains(i));
        *self.word_mut(i / 64) &= !(1 << (i % 64));
        self.count -= 1;
    }

    /// First set bit in `[from, limit)`.
    pub fn next_member(&self, from: usize, limit: usize) -> Option<usize> {
        let limit = limit.min(self.nbits);
        let mut i = from;
        while i < limit {
            let w = i / 64;
            let bits = self.word(w) & (u64::MAX << (i % 64));
            if bits != 0 {
                let found = w * 64 + bits.trailing_zeros() as usize;
                return (found < limit).then_some(found);
            }
            i = (w + 1) * 64;
        }
        None
    }

    /// First run of `len` members below `limit` whose start `s` makes
    /// `s + phase` a multiple of `align` (a power of two). `phase` is the
    /// heap base in huge pages, so the run's address is aligned.
    pub fn find_run(&self, len: usize, align: usize, limit: usize, phase: usize) -> Option<usize> {
        let mut i = self.next_member(0, limit)?;
        loop {
            let start = (i.checked_add(phase)?.checked_add(align - 1)? & !(align - 1)) - phase;
            if start.checked_add(len)? > limit {
                return None;
            }
            match (start..start + len).find(|&j| !self.contains(j)) {
                None => return Some(start),
                Some(gap) => i = self.next_member(gap + 1, limit)?,
            }
        }
    }

    /// Length of the run of members ending just below `limit`.
    pub fn trailing_run(&self, limit: usize) -> usize {
        let mut n = 0;
        while n < limit && self.contains(limit - 1 - n) {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_alignment() {
        let mut storage = vec![0u64; 4];
        // SAFETY: storage is zeroed, aligned and outlives the set.
        let mut s = unsafe { HugeSet::new(storage.as_mut_ptr(), 256) };
        for i in [3, 4, 5, 6, 8, 9, 10, 11, 64, 65, 200] {
            s.insert(i);
        }
        assert_eq!(s.count, 11);
        assert_eq!(s.find_run(1, 1, 256, 0), Some(3));
        assert_eq!(s.find_run(4, 1, 256, 0), Some(3));
        assert_eq!(s.find_run(4, 4, 256, 0), Some(8));
        assert_eq!(s.find_run(2, 64, 256, 0), Some(64));
        assert_eq!(s.find_run(5, 1, 256, 0), None);
        assert_eq!(s.find_run(1, 1, 3, 0), None);
        assert_eq!(s.next_member(12, 256), Some(64));
        // With the heap base 3 huge pages past an aligned address.
        assert_eq!(s.find_run(4, 4, 256, 3), None);
        assert_eq!(s.find_run(2, 4, 256, 3), Some(5));
        assert_eq!(s.find_run(1, 64, 256, 63), Some(65));
        s.remove(64);
        assert_eq!(s.next_member(12, 256), Some(65));
        assert_eq!(s.trailing_run(12), 4);
        assert_eq!(s.trailing_run(7), 4);
        assert_eq!(s.trailing_run(3), 0);
    }
}
