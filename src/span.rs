//! Spans: runs of 4 KiB pages inside one huge page (or whole huge pages for
//! large objects), their intrusive lists, and the pool their records come from.
//!
//! A small-object span holds objects of one size class. Objects never handed
//! out sit between `bump` and `end` (untouched, so a fresh span costs no page
//! faults until used); freed objects form the intrusive list `free`.
//! Span records live out of band, in metadata memory, so freeing pages never
//! touches a record inside them.

use core::ptr;

/// A free object: its first word links to the next free object.
#[repr(C)]
pub struct FreeObject {
    pub next: *mut FreeObject,
}

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
    /// Objects handed out and not yet returned.
    pub used: u32,
    /// Objects the span holds.
    pub capacity: u32,
    /// Freed objects.
    pub free: *mut FreeObject,
    /// Next never-used object.
    pub bump: usize,
    /// End of the usable object area.
    pub end: usize,
    /// Intrusive list links.
    pub next: *mut Span,
    pub prev: *mut Span,
}

impl Span {
    /// A record for a run of pages; the caller fills in the class fields.
    pub fn init(&mut self, start: usize, npages: usize) {
        *self = Span {
            start,
            npages: npages as u32,
            class: 0,
            in_list: false,
            used: 0,
            capacity: 0,
            free: ptr::null_mut(),
            bump: start,
            end: start,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        };
    }

    /// Whether the span has an object to hand out.
    #[inline]
    pub fn has_free(&self) -> bool {
        !self.free.is_null() || self.bump < self.end
    }

    /// Takes one object, or null when full.
    ///
    /// # Safety
    /// The caller holds the lock protecting the span, and `free` links only
    /// objects of this span.
    #[inline]
    pub unsafe fn pop(&mut self, size: usize) -> *mut FreeObject {
        let obj = self.free;
        if !obj.is_null() {
            // SAFETY: objects on the free list are free memory of this span
            // whose first word is the link.
            self.free = unsafe { (*obj).next };
            self.used += 1;
            return obj;
        }
        if self.bump < self.end {
            let obj = self.bump as *mut FreeObject;
            self.bump += size;
            self.used += 1;
            return obj;
        }
        ptr::null_mut()
    }

    /// Returns one object to the span.
    ///
    /// # Safety
    /// `obj` was handed out by this span, is not in use, and the caller holds
    /// the lock protecting the span.
    #[inline]
    pub unsafe fn push(&mut self, obj: *mut FreeObject) {
        // SAFETY: the object is free memory of at least one word.
        unsafe { (*obj).next = self.free };
        self.free = obj;
        self.used -= 1;
    }
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

/// Records for spans, carved from metadata chunks and recycled on a free list.
pub struct SpanPool {
    free: *mut Span,
    chunk_next: usize,
    chunk_end: usize,
    /// Records handed out and not returned.
    pub live: usize,
}

// SAFETY: the pool is only reached through the page heap lock.
unsafe impl Send for SpanPool {}

/// Bytes of metadata fetched at once for span records.
pub const SPAN_CHUNK: usize = 1 << 20;

impl Default for SpanPool {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanPool {
    pub const fn new() -> Self {
        SpanPool {
            free: ptr::null_mut(),
            chunk_next: 0,
            chunk_end: 0,
            live: 0,
        }
    }

    /// A record, or null when it needs a new chunk ([`SpanPool::add_chunk`]).
    pub fn take(&mut self) -> *mut Span {
        let s = self.free;
        if !s.is_null() {
            // SAFETY: records on the free list are valid, unused records.
            self.free = unsafe { (*s).next };
            self.live += 1;
            return s;
        }
        let size = core::mem::size_of::<Span>();
        if self.chunk_next + size <= self.chunk_end {
            let s = self.chunk_next as *mut Span;
            self.chunk_next += size;
            self.live += 1;
            return s;
        }
        ptr::null_mut()
    }

    /// Gives the pool `len` bytes of zeroed metadata at `base`.
    pub fn add_chunk(&mut self, base: *mut u8, len: usize) {
        let align = core::mem::align_of::<Span>();
        self.chunk_next = (base as usize + align - 1) & !(align - 1);
        self.chunk_end = base as usize + len;
    }

    /// # Safety
    /// `span` came from `take` and is no longer referenced.
    pub unsafe fn give_back(&mut self, span: *mut Span) {
        // SAFETY: the record is valid and unused.
        unsafe { (*span).next = self.free };
        self.free = span;
        self.live -= 1;
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
    fn span_hands_out_bump_then_free_list() {
        let mut mem = vec![0u64; 64];
        let start = mem.as_mut_ptr() as usize;
        let mut span = records(1).pop().unwrap();
        span.init(start, 1);
        span.end = start + 4 * 16;
        span.capacity = 4;
        // SAFETY: the span covers `mem`, which outlives it.
        unsafe {
            let a = span.pop(16);
            let b = span.pop(16);
            assert_eq!(a as usize, start);
            assert_eq!(b as usize, start + 16);
            span.push(a);
            assert_eq!(span.pop(16), a);
            let _c = span.pop(16);
            let _d = span.pop(16);
            assert!(!span.has_free());
            assert!(span.pop(16).is_null());
            assert_eq!(span.used, 4);
        }
    }

    #[test]
    fn pool_recycles_records() {
        let mut backing = vec![0u8; 4096];
        let mut pool = SpanPool::new();
        assert!(pool.take().is_null());
        pool.add_chunk(backing.as_mut_ptr(), backing.len());
        let a = pool.take();
        let b = pool.take();
        assert!(!a.is_null() && !b.is_null() && a != b);
        // SAFETY: `a` came from this pool.
        unsafe { pool.give_back(a) };
        assert_eq!(pool.take(), a);
        assert_eq!(pool.live, 2);
        let mut n = 2;
        while !pool.take().is_null() {
            n += 1;
        }
        assert_eq!(n, 4096 / core::mem::size_of::<Span>());
    }
}
