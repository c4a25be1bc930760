//! Span records: where they live, and how their memory goes back to the OS.
//!
//! A 1 GiB batch of small objects needs some 200,000 span records (120
//! bytes each): about 25 MB of metadata, still resident after the batch is
//! freed if the records only went back on a free list (each free record's
//! link is a write). So records live in chunks of [`SPAN_CHUNK`] bytes,
//! aligned to their size, whose first page is a header: per 4 KiB page of
//! records a bitmap of free slots (no link is written into a free record),
//! and a bitmap of pages with a free slot. A record is always taken from the
//! lowest page with a free slot of the oldest chunk that has one, so live
//! records gather at the front and whole pages at the back empty out; the
//! release pass gives those pages back ([`SpanPool::discard_free_pages`]:
//! `MADV_DONTNEED` on metadata, through [`Os::discard_metadata`]). A page
//! taken from again faults in as zeroes; every record is fully written by
//! `Span::init` before use. Under the heap lock only.

use crate::os::Os;
use crate::span::Span;
use crate::units::PAGE_SIZE;
use core::ptr;

/// Bytes of one chunk of span records (also its alignment).
pub const SPAN_CHUNK: usize = 1 << 20;
const POOL_PAGES: usize = SPAN_CHUNK / PAGE_SIZE;
const RECORD: usize = core::mem::size_of::<Span>();
/// Records per 4 KiB page (records do not straddle pages).
const PER_PAGE: usize = PAGE_SIZE / RECORD;
const FULL: u64 = if PER_PAGE >= 64 {
    u64::MAX
} else {
    (1u64 << PER_PAGE) - 1
};
const WORDS: usize = POOL_PAGES / 64;

const _: () = assert!(PER_PAGE >= 1 && PER_PAGE <= 64);
const _: () = assert!(core::mem::size_of::<Header>() <= PAGE_SIZE);
const _: () = assert!(core::mem::align_of::<Span>() <= 64 && PAGE_SIZE % 64 == 0);

/// The first page of a chunk.
#[repr(C)]
struct Header {
    /// The next chunk, in the order they were added.
    next: *mut Header,
    /// Position in that order (0 = oldest).
    index: usize,
    /// Records handed out from this chunk.
    live: usize,
    /// Bit `p`: page `p` has a free slot.
    avail: [u64; WORDS],
    /// Bit `p`: page `p` was given back to the OS and not used since.
    discarded: [u64; WORDS],
    /// Per page, bit `i`: slot `i` is free. Page 0 (this header) has none.
    free: [u64; POOL_PAGES],
}

fn bit(words: &[u64; WORDS], p: usize) -> bool {
    words[p / 64] >> (p % 64) & 1 == 1
}

fn set(words: &mut [u64; WORDS], p: usize, on: bool) {
    if on {
        words[p / 64] |= 1 << (p % 64);
    } else {
        words[p / 64] &= !(1 << (p % 64));
    }
}

fn first(words: &[u64; WORDS]) -> Option<usize> {
    words
        .iter()
        .enumerate()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
}

/// Span records, in chunks of metadata.
pub struct SpanPool {
    first: *mut Header,
    last: *mut Header,
    /// No chunk before this one has a free slot.
    hint: *mut Header,
    chunks: usize,
    /// Records handed out and not returned.
    pub live: usize,
    /// Pages of records given back to the OS (cumulative).
    pub discarded_pages: usize,
}

// SAFETY: the pool is only reached through the page heap lock.
unsafe impl Send for SpanPool {}

impl Default for SpanPool {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanPool {
    pub const fn new() -> Self {
        SpanPool {
            first: ptr::null_mut(),
            last: ptr::null_mut(),
            hint: ptr::null_mut(),
            chunks: 0,
            live: 0,
            discarded_pages: 0,
        }
    }

    /// A record (uninitialised memory: zeroes or an old record), or null when
    /// it needs a new chunk ([`SpanPool::add_chunk`]).
    pub fn take(&mut self) -> *mut Span {
        let mut c = self.hint;
        while !c.is_null() {
            // SAFETY: chunks in the list are valid headers of this pool.
            let h = unsafe { &mut *c };
            if let Some(p) = first(&h.avail) {
                let slot = h.free[p].trailing_zeros() as usize;
                h.free[p] &= !(1 << slot);
                if h.free[p] == 0 {
                    set(&mut h.avail, p, false);
                }
                set(&mut h.discarded, p, false);
                h.live += 1;
                self.live += 1;
                self.hint = c;
                return (c as usize + p * PAGE_SIZE + slot * RECORD) as *mut Span;
            }
            c = h.next;
        }
        ptr::null_mut()
    }

    /// Gives the pool a chunk: `SPAN_CHUNK` bytes of zeroed metadata at
    /// `base`, aligned to `SPAN_CHUNK`.
    ///
    /// # Safety
    /// The memory is valid, unused, zeroed and stays so for the pool's life.
    pub unsafe fn add_chunk(&mut self, base: *mut u8) {
        debug_assert_eq!(base as usize % SPAN_CHUNK, 0);
        let c = base as *mut Header;
        // SAFETY: the caller gives zeroed memory large enough for a header
        // (checked at compile time), aligned; zero is a valid header.
        let h = unsafe { &mut *c };
        h.index = self.chunks;
        for p in 1..POOL_PAGES {
            h.free[p] = FULL;
            set(&mut h.avail, p, true);
        }
        if self.last.is_null() {
            self.first = c;
        } else {
            // SAFETY: `last` is a valid header of this pool.
            unsafe { (*self.last).next = c };
        }
        self.last = c;
        self.chunks += 1;
        // Every older chunk is full (`take` found no slot before this).
        if self.hint.is_null() {
            self.hint = c;
        }
    }

    /// Returns a record.
    ///
    /// # Safety
    /// `span` came from `take` of this pool and is no longer referenced.
    pub unsafe fn give_back(&mut self, span: *mut Span) {
        let c = (span as usize & !(SPAN_CHUNK - 1)) as *mut Header;
        let off = span as usize - c as usize;
        let (p, slot) = (off / PAGE_SIZE, off % PAGE_SIZE / RECORD);
        // SAFETY: records come from chunks whose header starts the aligned
        // chunk (the caller's contract).
        let h = unsafe { &mut *c };
        debug_assert!(
            p >= 1 && h.free[p] >> slot & 1 == 0,
            "span record freed twice"
        );
        h.free[p] |= 1 << slot;
        set(&mut h.avail, p, true);
        h.live -= 1;
        self.live -= 1;
        // SAFETY: `hint`, when not null, is a valid header of this pool.
        if self.hint.is_null() || h.index < unsafe { (*self.hint).index } {
            self.hint = c;
        }
    }

    /// Gives back to the OS every page of records that holds no live record
    /// and was not given back already; returns how many pages.
    pub fn discard_free_pages<O: Os>(&mut self, os: &O) -> usize {
        let mut n = 0;
        let mut c = self.first;
        while !c.is_null() {
            // SAFETY: chunks in the list are valid headers of this pool.
            let h = unsafe { &mut *c };
            let mut p = 1;
            while p < POOL_PAGES {
                let free = |h: &Header, p: usize| h.free[p] == FULL && !bit(&h.discarded, p);
                if !free(h, p) {
                    p += 1;
                    continue;
                }
                let start = p;
                while p < POOL_PAGES && free(h, p) {
                    set(&mut h.discarded, p, true);
                    p += 1;
                }
                // SAFETY: whole pages of this chunk's metadata that hold no
                // live record; a page is written again only after `take`
                // hands out a record there, which `Span::init` overwrites.
                unsafe {
                    os.discard_metadata(c as usize + start * PAGE_SIZE, (p - start) * PAGE_SIZE)
                };
                n += p - start;
            }
            c = h.next;
        }
        self.discarded_pages += n;
        n
    }

    /// Checks the counts against the bitmaps; the first inconsistency found.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut live = 0;
        let mut c = self.first;
        let mut hint_seen = self.hint.is_null();
        let mut before_hint_full = true;
        while !c.is_null() {
            // SAFETY: chunks in the list are valid headers of this pool.
            let h = unsafe { &*c };
            hint_seen |= c == self.hint;
            let mut chunk_live = 0;
            for p in 1..POOL_PAGES {
                chunk_live += PER_PAGE - h.free[p].count_ones() as usize;
                if (h.free[p] != 0) != bit(&h.avail, p) {
                    return Err("span pool: a page's availability bit is wrong");
                }
                if bit(&h.discarded, p) && h.free[p] != FULL {
                    return Err("span pool: a discarded page holds a record");
                }
            }
            if chunk_live != h.live {
                return Err("span pool: a chunk's live count is wrong");
            }
            if !hint_seen && h.avail.iter().any(|w| *w != 0) {
                before_hint_full = false;
            }
            live += chunk_live;
            c = h.next;
        }
        if live != self.live {
            return Err("span pool: the live count is wrong");
        }
        if !hint_seen || !before_hint_full {
            return Err("span pool: a chunk before the hint has a free slot");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::FakeOs;

    fn chunk(os: &FakeOs) -> *mut u8 {
        let raw = os.map_metadata(2 * SPAN_CHUNK).unwrap() as usize;
        ((raw + SPAN_CHUNK - 1) & !(SPAN_CHUNK - 1)) as *mut u8
    }

    #[test]
    fn records_fill_the_front_and_come_back() {
        let os = FakeOs::default();
        let mut pool = SpanPool::new();
        assert!(pool.take().is_null());
        // SAFETY: fresh zeroed aligned metadata.
        unsafe { pool.add_chunk(chunk(&os)) };
        let a = pool.take();
        let b = pool.take();
        assert_eq!(
            a as usize % SPAN_CHUNK,
            PAGE_SIZE,
            "the first record follows the header"
        );
        assert_eq!(b as usize, a as usize + RECORD);
        // SAFETY: `a` came from this pool.
        unsafe { pool.give_back(a) };
        assert_eq!(pool.take(), a, "the lowest free slot is taken first");
        assert_eq!(pool.live, 2);
        let mut n = 2;
        while !pool.take().is_null() {
            n += 1;
        }
        assert_eq!(n, (POOL_PAGES - 1) * PER_PAGE);
        pool.check().unwrap();
    }

    #[test]
    fn empty_pages_go_back_to_the_os_and_are_reused() {
        let os = FakeOs::default();
        let mut pool = SpanPool::new();
        // SAFETY: fresh zeroed aligned metadata.
        unsafe { pool.add_chunk(chunk(&os)) };
        let recs: Vec<*mut Span> = (0..10 * PER_PAGE).map(|_| pool.take()).collect();
        // Write them as the heap would.
        for &r in &recs {
            // SAFETY: a record from the pool.
            unsafe { (*r).init(0x1000, 1) };
        }
        // Keep one record on the first page; free everything else.
        for &r in &recs[1..] {
            // SAFETY: records from this pool, unreferenced.
            unsafe { pool.give_back(r) };
        }
        pool.check().unwrap();
        let n = pool.discard_free_pages(&os);
        // Pages 2..255 are wholly free (page 1 keeps one record).
        assert_eq!(n, POOL_PAGES - 2);
        assert_eq!(pool.discard_free_pages(&os), 0, "nothing twice");
        pool.check().unwrap();
        // The next records come from page 1, then page 2 (discarded: zeroes).
        let r = pool.take();
        assert_eq!(r, recs[1]);
        for _ in 0..PER_PAGE - 2 {
            pool.take();
        }
        let on_page_2 = pool.take();
        assert_eq!(on_page_2 as usize % SPAN_CHUNK, 2 * PAGE_SIZE);
        // SAFETY: discarded pages read as zero (the fake zeroes them).
        assert_eq!(unsafe { (*on_page_2).start }, 0);
        pool.check().unwrap();
    }

    #[test]
    fn the_oldest_chunk_with_room_serves_first() {
        let os = FakeOs::default();
        let mut pool = SpanPool::new();
        // SAFETY: fresh zeroed aligned metadata.
        unsafe { pool.add_chunk(chunk(&os)) };
        let first: Vec<*mut Span> = std::iter::from_fn(|| Some(pool.take()))
            .take_while(|r| !r.is_null())
            .collect();
        // SAFETY: as above.
        unsafe { pool.add_chunk(chunk(&os)) };
        let second = pool.take();
        assert_ne!(
            second as usize & !(SPAN_CHUNK - 1),
            first[0] as usize & !(SPAN_CHUNK - 1)
        );
        // SAFETY: a record from this pool, unreferenced.
        unsafe { pool.give_back(first[100]) };
        assert_eq!(pool.take(), first[100]);
        pool.check().unwrap();
    }
}
