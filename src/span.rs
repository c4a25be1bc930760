//! Spans: runs of 4 KiB pages inside one huge page (or whole huge pages for
//! large objects), their intrusive lists, and the pool their records come from.
//!
//! A small-object span holds objects of one size class. Which objects are free
//! is kept out of band, in a bitmap in the span record, never in the objects
//! themselves: so the release policy can return a free 4 KiB page inside a
//! span that still holds live objects (`MADV_DONTNEED` zeroes it) without
//! breaking any list, and an object never handed out is never touched. Span
//! records live in metadata memory, so freeing pages never touches a record.

use crate::units::{PAGE_SHIFT, PAGE_SIZE};
use core::ptr;

/// Most objects one span can hold (8 B objects in one page).
pub const MAX_OBJECTS: usize = 512;
const FREE_WORDS: usize = MAX_OBJECTS / 64;

/// A run of pages handed out by the page heap.
///
/// Protected by: the page heap lock for `start`, `npages`, `class` and pool
/// membership; for small spans, the central list lock of `class` for all
/// other fields.
#[repr(C)]
pub struct Span {
    /// First byte of the run (page-aligned).
    pub start: usize,
    /// Length of the run in pages.
    pub npages: u32,
    /// Size class, or 0 for a large-object run.
    pub class: u8,
    /// Whether the span is on its central list's non-empty list.
    pub in_list: bool,
    /// Whether objects came back since the release policy last looked.
    pub release_pending: bool,
    /// Frozen for meshing (mesh mode): on no list, hands out nothing, and
    /// stays a span when wholly free until its unit is unmeshed.
    pub frozen: bool,
    /// Objects handed out and not yet returned.
    pub used: u32,
    /// Objects the span holds.
    pub capacity: u32,
    /// Coarse time (release clock) an object last came back.
    pub freed_at: u32,
    /// Bit `i` set: object `i` is free.
    pub free: [u64; FREE_WORDS],
    /// Bit `p` set: span page `p` was returned to the OS while the span lived
    /// and no object on it has been handed out since (it reads as zero).
    pub released: u64,
    /// Intrusive list links.
    pub next: *mut Span,
    pub prev: *mut Span,
}

impl Span {
    /// A record for a run of pages; `init_objects` makes it a small span.
    pub fn init(&mut self, start: usize, npages: usize) {
        *self = Span {
            start,
            npages: npages as u32,
            class: 0,
            in_list: false,
            release_pending: false,
            frozen: false,
            used: 0,
            capacity: 0,
            freed_at: 0,
            free: [0; FREE_WORDS],
            released: 0,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        };
    }

    /// Makes the span hold `capacity` objects of `class`, all free.
    pub fn init_objects(&mut self, class: u8, capacity: usize) {
        debug_assert!(capacity <= MAX_OBJECTS && self.npages <= 64);
        self.class = class;
        self.capacity = capacity as u32;
        for (w, word) in self.free.iter_mut().enumerate() {
            let lo = w * 64;
            *word = match capacity.saturating_sub(lo) {
                0 => 0,
                n if n >= 64 => u64::MAX,
                n => (1u64 << n) - 1,
            };
        }
    }

    /// Whether the span has an object to hand out.
    #[inline]
    pub fn has_free(&self) -> bool {
        self.used < self.capacity
    }

    /// Takes the lowest free object (so objects pack towards the span start),
    /// or null when full. Pages the object covers stop counting as released;
    /// their number is added to `unreleased`.
    #[inline]
    pub fn pop(&mut self, size: usize, unreleased: &mut usize) -> *mut u8 {
        for w in 0..FREE_WORDS {
            if self.free[w] != 0 {
                return self.take_in_word(w, self.free[w], size, unreleased);
            }
        }
        ptr::null_mut()
    }

    /// Takes the first free object at or after slot `from` (modulo the
    /// capacity, wrapping to the start), or null when full. With `from`
    /// random, the slots a program leaves in use are scattered across its
    /// spans instead of repeating from span to span, which is what lets
    /// two sparse spans' objects sit at disjoint offsets (meshing's
    /// precondition; `HUGEGUARD_MESH`).
    pub fn pop_from(&mut self, from: usize, size: usize, unreleased: &mut usize) -> *mut u8 {
        if self.capacity == 0 {
            return ptr::null_mut();
        }
        let from = from % self.capacity as usize;
        let (w0, b0) = (from / 64, from % 64);
        let above = self.free[w0] & (u64::MAX << b0);
        if above != 0 {
            return self.take_in_word(w0, above, size, unreleased);
        }
        for k in 1..=FREE_WORDS {
            let w = (w0 + k) % FREE_WORDS;
            if self.free[w] != 0 {
                return self.take_in_word(w, self.free[w], size, unreleased);
            }
        }
        ptr::null_mut()
    }

    /// Takes the lowest object of `candidates` (free bits of word `w`, not
    /// zero) and hands it out.
    #[inline]
    fn take_in_word(
        &mut self,
        w: usize,
        candidates: u64,
        size: usize,
        unreleased: &mut usize,
    ) -> *mut u8 {
        let bit = candidates.trailing_zeros() as usize;
        self.free[w] &= !(1u64 << bit);
        self.used += 1;
        let off = (w * 64 + bit) * size;
        if self.released != 0 {
            let first = off >> PAGE_SHIFT;
            let last = (off + size - 1) >> PAGE_SHIFT;
            let mask = page_mask(first, last + 1);
            *unreleased += (self.released & mask).count_ones() as usize;
            self.released &= !mask;
        }
        (self.start + off) as *mut u8
    }

    /// Index of the object at `addr`, if `addr` is an object start of this span.
    #[inline]
    pub fn object_index(&self, addr: usize, size: usize, recip: u64) -> Option<usize> {
        let off = addr.checked_sub(self.start)?;
        // Exact division by multiplication: offsets are below 2^18 and
        // recip = ceil(2^32 / size), so the error term stays below one.
        let i = ((off as u64 * recip) >> 32) as usize;
        (i < self.capacity as usize && i * size == off).then_some(i)
    }

    /// Whether object `i` is free.
    #[inline]
    pub fn is_free(&self, i: usize) -> bool {
        self.free[i / 64] >> (i % 64) & 1 == 1
    }

    /// Returns object `i` to the span.
    #[inline]
    pub fn push(&mut self, i: usize) {
        debug_assert!(!self.is_free(i));
        self.free[i / 64] |= 1 << (i % 64);
        self.used -= 1;
    }

    /// Span pages (bit per page) on which every object is free, including
    /// the unused tail after the last object.
    pub fn free_pages(&self, size: usize) -> u64 {
        let mut free = page_mask(0, self.npages as usize);
        for i in 0..self.capacity as usize {
            if !self.is_free(i) {
                let off = i * size;
                free &= !page_mask(off >> PAGE_SHIFT, ((off + size - 1) >> PAGE_SHIFT) + 1);
            }
        }
        free
    }

    /// Bytes the span covers.
    pub fn bytes(&self) -> usize {
        self.npages as usize * PAGE_SIZE
    }
}

/// Bits `[lo, hi)` of a u64 (`hi <= 64`).
#[inline]
pub fn page_mask(lo: usize, hi: usize) -> u64 {
    let upper = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 };
    upper & !((1u64 << lo) - 1)
}

/// An intrusive doubly linked list of spans.
pub struct SpanList {
    head: *mut Span,
    len: usize,
}

// SAFETY: the list is only reached through a lock that owns it.
unsafe impl Send for SpanList {}

impl Default for SpanList {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanList {
    pub const fn new() -> Self {
        SpanList {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn first(&self) -> *mut Span {
        self.head
    }

    /// # Safety
    /// `span` is a valid span record not on any list.
    pub unsafe fn push_front(&mut self, span: *mut Span) {
        // SAFETY: the caller guarantees `span` is valid and unlisted; `head`
        // is valid when non-null.
        unsafe {
            (*span).prev = ptr::null_mut();
            (*span).next = self.head;
            if !self.head.is_null() {
                (*self.head).prev = span;
            }
        }
        self.head = span;
        self.len += 1;
    }

    /// # Safety
    /// `span` is on this list.
    pub unsafe fn remove(&mut self, span: *mut Span) {
        // SAFETY: `span` and its neighbours are valid records on this list.
        unsafe {
            let (prev, next) = ((*span).prev, (*span).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*span).next = ptr::null_mut();
            (*span).prev = ptr::null_mut();
        }
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<Span> {
        (0..n)
            .map(|_| {
                // SAFETY: Span is plain data; all-zero is a valid value.
                unsafe { core::mem::zeroed() }
            })
            .collect()
    }

    #[test]
    fn list_push_remove_keeps_links() {
        let mut spans = records(3);
        let p: Vec<*mut Span> = spans.iter_mut().map(|s| s as *mut Span).collect();
        let mut list = SpanList::new();
        // SAFETY: the records are valid and unlisted, then listed.
        unsafe {
            for &s in &p {
                list.push_front(s);
            }
            assert_eq!(list.len(), 3);
            assert_eq!(list.first(), p[2]);
            list.remove(p[1]);
            assert_eq!((*p[2]).next, p[0]);
            assert_eq!((*p[0]).prev, p[2]);
            list.remove(p[2]);
            assert_eq!(list.first(), p[0]);
            list.remove(p[0]);
        }
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn span_hands_out_lowest_free_object_and_tracks_free_pages() {
        let mut span = records(1).pop().unwrap();
        let start = 0x10_0000;
        span.init(start, 2);
        span.init_objects(3, 8); // 8 objects of 1 KiB over two pages
        let recip = (1u64 << 32).div_ceil(1024);
        let mut unreleased = 0;
        let a = span.pop(1024, &mut unreleased) as usize;
        let b = span.pop(1024, &mut unreleased) as usize;
        assert_eq!((a, b), (start, start + 1024));
        assert_eq!(span.object_index(b, 1024, recip), Some(1));
        assert_eq!(span.object_index(b + 8, 1024, recip), None);
        assert_eq!(span.object_index(start + 8 * 1024, 1024, recip), None);
        assert_eq!(span.free_pages(1024), 0b10);
        span.push(0);
        assert_eq!(span.pop(1024, &mut unreleased) as usize, a);
        for _ in 2..8 {
            assert!(!span.pop(1024, &mut unreleased).is_null());
        }
        assert!(!span.has_free());
        assert!(span.pop(1024, &mut unreleased).is_null());
        for i in 0..8 {
            span.push(i);
        }
        assert_eq!(span.free_pages(1024), 0b11);
        // A released page stops counting as released once an object on it
        // is handed out again.
        span.released = 0b10;
        for _ in 0..5 {
            span.pop(1024, &mut unreleased);
        }
        assert_eq!((span.released, unreleased), (0, 1));
        assert_eq!(span.used, 5);
    }

    #[test]
    fn pop_from_takes_the_first_free_slot_from_a_start_wrapping_around() {
        let mut span = records(1).pop().unwrap();
        let start = 0x10_0000;
        span.init(start, 1);
        span.init_objects(1, 200); // 200 objects of 16 bytes, four words
        let mut unreleased = 0;
        let slot = |p: *mut u8| (p as usize - start) / 16;
        assert_eq!(slot(span.pop_from(70, 16, &mut unreleased)), 70);
        assert_eq!(slot(span.pop_from(70, 16, &mut unreleased)), 71);
        // Starts beyond the capacity wrap.
        assert_eq!(slot(span.pop_from(200 + 5, 16, &mut unreleased)), 5);
        // Take everything from 150 up: the next start there wraps to 0.
        for i in 150..200 {
            assert_eq!(slot(span.pop_from(150, 16, &mut unreleased)), i);
        }
        assert_eq!(slot(span.pop_from(199, 16, &mut unreleased)), 0);
        while span.has_free() {
            assert!(!span.pop_from(123, 16, &mut unreleased).is_null());
        }
        assert_eq!(span.used, 200);
        assert!(span.pop_from(0, 16, &mut unreleased).is_null());
        span.push(42);
        assert_eq!(slot(span.pop_from(199, 16, &mut unreleased)), 42);
    }

    #[test]
    fn reciprocal_division_is_exact_for_every_class() {
        use crate::size_class::{CLASS_PAGES, CLASS_RECIP, CLASS_SIZE, NUM_CLASSES};
        for c in 1..NUM_CLASSES {
            let size = CLASS_SIZE[c] as usize;
            let mut span = records(1).pop().unwrap();
            span.init(0x4000_0000, CLASS_PAGES[c] as usize);
            let cap = CLASS_PAGES[c] as usize * PAGE_SIZE / size;
            span.init_objects(c as u8, cap);
            for i in 0..cap {
                assert_eq!(
                    span.object_index(span.start + i * size, size, CLASS_RECIP[c]),
                    Some(i)
                );
            }
        }
    }
}
