//! Central free lists: one per size class, shared by all threads.
//!
//! A thread cache refills from and flushes to its class's central list in
//! batches ([`CLASS_BATCH`] objects). Whole batches are parked in a small
//! transfer cache first, so objects moving from a freeing thread to an
//! allocating one (producer/consumer) cost one lock and no span work. Past
//! that, objects go back to their spans; a span whose objects are all free
//! goes back to the page heap at once, so its pages can drain out of their
//! huge page.
//!
//! Lock order: a central list's lock, then the page heap lock; never the
//! reverse.

use crate::global;
use crate::page_heap::{Pass, PassResult};
use crate::size_class::{CLASS_BATCH, CLASS_PAGES, CLASS_RECIP, CLASS_SIZE};
use crate::span::{FreeObject, Span, SpanList};
use crate::units::PAGE_SIZE;
use core::ptr;

/// Batches one class's transfer cache can hold.
pub const TRANSFER_SLOTS: usize = 64;
/// Bytes one class's transfer cache may hold (bounds idle memory there).
const TRANSFER_BYTES: usize = 1024 * 1024;
/// Bytes of wholly free spans a class keeps for reuse instead of returning
/// them to the page heap at once (a batch that frees everything and
/// allocates again would otherwise churn spans through the heap lock). The
/// release pass returns them once the class is idle.
const RETAIN_EMPTY_BYTES: usize = 1024 * 1024;

/// A batch of free objects of one class, linked through their first word,
/// handed between a thread cache and a central list.
pub struct Batch {
    pub head: *mut FreeObject,
    pub count: usize,
}

/// The shared free list of one size class.
///
/// Protected by its own lock (`global::CENTRAL[class]`).
pub struct CentralList {
    transfer: [*mut FreeObject; TRANSFER_SLOTS],
    ntransfer: usize,
    /// Spans with at least one free object.
    nonempty: SpanList,
    /// Spans of this class in existence.
    pub spans: usize,
    /// Spans on `nonempty` with no object in use.
    empty: usize,
    /// Release clock when a batch was last parked.
    transfer_at: u32,
    /// Release clock of the last object or batch given back.
    last_give: u32,
    /// Objects handed to thread caches and not returned (parked ones count
    /// as returned).
    pub objects_out: usize,
}

// SAFETY: the raw pointers are owned by the list and only reached under its lock.
unsafe impl Send for CentralList {}

impl Default for CentralList {
    fn default() -> Self {
        Self::new()
    }
}

/// Batches of `class` the transfer cache keeps.
fn transfer_limit(class: usize) -> usize {
    let batch_bytes = CLASS_BATCH[class] as usize * CLASS_SIZE[class] as usize;
    (TRANSFER_BYTES / batch_bytes).clamp(1, TRANSFER_SLOTS)
}

impl CentralList {
    pub const fn new() -> Self {
        CentralList {
            transfer: [ptr::null_mut(); TRANSFER_SLOTS],
            ntransfer: 0,
            nonempty: SpanList::new(),
            spans: 0,
            empty: 0,
            transfer_at: 0,
            last_give: 0,
            objects_out: 0,
        }
    }

    /// Takes up to `want` objects of `class`. Returns an empty chain only when
    /// memory is exhausted.
    pub fn take(&mut self, class: usize, want: usize) -> Batch {
        if want == CLASS_BATCH[class] as usize && self.ntransfer > 0 {
            self.ntransfer -= 1;
            self.objects_out += want;
            return Batch {
                head: self.transfer[self.ntransfer],
                count: want,
            };
        }
        let size = CLASS_SIZE[class] as usize;
        let mut head: *mut FreeObject = ptr::null_mut();
        let mut count = 0;
        let mut unreleased = 0;
        while count < want {
            let mut span = self.nonempty.first();
            if span.is_null() {
                span = global::new_small_span(class);
                if span.is_null() {
                    break;
                }
                self.spans += 1;
                // A fresh span is an empty span on the list.
                self.empty += 1;
                // SAFETY: a fresh span record, on no list.
                unsafe {
                    (*span).in_list = true;
                    self.nonempty.push_front(span);
                }
            }
            // SAFETY: spans on `nonempty` are live spans of this class, and
            // we hold this list's lock.
            unsafe {
                let s = &mut *span;
                if s.used == 0 {
                    self.empty -= 1;
                }
                while count < want {
                    let obj = s.pop(size, &mut unreleased) as *mut FreeObject;
                    if obj.is_null() {
                        break;
                    }
                    (*obj).next = head;
                    head = obj;
                    count += 1;
                }
                if !s.has_free() {
                    self.nonempty.remove(span);
                    s.in_list = false;
                }
            }
        }
        if unreleased != 0 {
            global::pages_reused(unreleased);
        }
        self.objects_out += count;
        Batch { head, count }
    }

    /// Returns a chain of `class` objects (as linked by thread caches).
    ///
    /// # Safety
    /// Every object in the chain was handed out for `class` and is free.
    pub unsafe fn give(&mut self, class: usize, chain: Batch) {
        self.objects_out -= chain.count;
        self.last_give = global::now();
        if chain.count == CLASS_BATCH[class] as usize && self.ntransfer < transfer_limit(class) {
            self.transfer[self.ntransfer] = chain.head;
            self.ntransfer += 1;
            self.transfer_at = self.last_give;
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.give_to_spans(chain) };
    }

    /// # Safety
    /// `obj` is a free object of a live span of this list's class.
    unsafe fn return_object(&mut self, obj: *mut FreeObject, now: u32) {
        let span = global::view().span_of(obj as usize);
        // SAFETY: a handed-out object's page maps to its live span.
        let s: &mut Span = unsafe { &mut *span };
        let class = s.class as usize;
        let size = CLASS_SIZE[class] as usize;
        match s.object_index(obj as usize, size, CLASS_RECIP[class]) {
            Some(i) if !s.is_free(i) => s.push(i),
            _ => return crate::misuse::bad_free(obj as usize),
        }
        s.release_pending = true;
        s.freed_at = now;
        if s.used == 0 && (self.empty + 1) * s.bytes() > RETAIN_EMPTY_BYTES {
            if s.in_list {
                // SAFETY: the span is on this list.
                unsafe { self.nonempty.remove(span) };
            }
            self.spans -= 1;
            // SAFETY: no object of the span is in use any more.
            unsafe { global::free_span(span) };
            return;
        }
        if s.used == 0 {
            self.empty += 1;
        }
        if !s.in_list {
            s.in_list = true;
            // SAFETY: the span is live and on no list.
            unsafe { self.nonempty.push_front(span) };
        }
    }

    /// Returns the wholly free spans kept for reuse to the page heap.
    pub fn free_empty_spans(&mut self) {
        let mut s = self.nonempty.first();
        while !s.is_null() && self.empty > 0 {
            // SAFETY: listed spans are live and we hold this list's lock.
            let span = unsafe { &mut *s };
            s = span.next;
            if span.used == 0 {
                // SAFETY: the span is on this list and wholly free.
                unsafe {
                    self.nonempty.remove(span);
                    global::free_span(span);
                }
                self.empty -= 1;
                self.spans -= 1;
            }
        }
    }

    /// Moves every parked batch back into its spans (idle memory can then
    /// drain out of huge pages), then returns wholly free spans.
    pub fn drain(&mut self, class: usize) {
        self.drain_transfer(class);
        self.free_empty_spans();
    }

    /// Moves every parked batch back into its spans.
    fn drain_transfer(&mut self, class: usize) {
        while self.ntransfer > 0 {
            self.ntransfer -= 1;
            let chain = Batch {
                head: self.transfer[self.ntransfer],
                count: CLASS_BATCH[class] as usize,
            };
            // SAFETY: parked chains hold free objects of this class.
            unsafe { self.give_to_spans(chain) };
        }
    }

    /// # Safety
    /// As for [`CentralList::give`].
    unsafe fn give_to_spans(&mut self, chain: Batch) {
        let now = self.last_give;
        let mut obj = chain.head;
        for _ in 0..chain.count {
            // SAFETY: the chain holds `count` free objects linked by their
            // first word.
            let next = unsafe { (*obj).next };
            // SAFETY: the object belongs to a live span of this class.
            unsafe { self.return_object(obj, now) };
            obj = next;
        }
    }

    /// Release pass over this class: parked batches that sat idle go back
    /// to their spans, then free pages inside partly used spans idle for the
    /// hold-back are returned to the OS (through the page heap, which marks
    /// the huge page NOHUGEPAGE first).
    pub fn release(&mut self, class: usize, pass: &Pass, out: &mut PassResult) {
        // A class in steady use is left alone (and its lock uncontended):
        // its free memory is about to be reused.
        if !pass.idle(self.last_give) {
            out.pending = true;
            return;
        }
        if self.ntransfer > 0 {
            if pass.idle(self.transfer_at) {
                self.drain_transfer(class);
            } else {
                out.pending = true;
            }
        }
        self.free_empty_spans();
        let size = CLASS_SIZE[class] as usize;
        let mut s = self.nonempty.first();
        while !s.is_null() {
            // SAFETY: listed spans are live and we hold this list's lock.
            let span = unsafe { &mut *s };
            s = span.next;
            if !span.release_pending {
                continue;
            }
            if !pass.idle(span.freed_at) {
                out.pending = true;
                continue;
            }
            let mask = span.free_pages(size) & !span.released;
            if mask != 0 {
                out.released_pages += global::HEAP.lock().release_span_pages(span, mask);
            }
            span.release_pending = false;
        }
    }

    /// Checks this list's structure: every listed span belongs to `class`,
    /// has a free object and knows it is listed; the empty count matches.
    /// Returns the objects that are out of their spans (handed out or
    /// parked) by this list's account.
    pub fn check(&self, class: usize) -> Result<usize, &'static str> {
        let mut s = self.nonempty.first();
        let mut empty = 0;
        let mut listed = 0;
        while !s.is_null() {
            // SAFETY: listed spans are live; the caller holds this list's lock.
            let span = unsafe { &*s };
            if span.class as usize != class || !span.in_list || !span.has_free() {
                return Err("a listed span has the wrong class, flag or no free object");
            }
            let free = span.free.iter().map(|w| w.count_ones()).sum::<u32>();
            if free + span.used != span.capacity {
                return Err("a span's free bitmap disagrees with its used count");
            }
            empty += (span.used == 0) as usize;
            listed += 1;
            s = span.next;
        }
        if empty != self.empty || listed != self.nonempty.len() || listed > self.spans {
            return Err("central list counts are off");
        }
        Ok(self.objects_out + self.parked_objects(class))
    }

    /// Objects parked in the transfer cache.
    pub fn parked_objects(&self, class: usize) -> usize {
        self.ntransfer * CLASS_BATCH[class] as usize
    }
}

/// Initialises a fresh span for `class`: every object free.
pub fn init_small_span(span: &mut Span, class: usize) {
    let size = CLASS_SIZE[class] as usize;
    let bytes = CLASS_PAGES[class] as usize * PAGE_SIZE;
    span.init_objects(class as u8, bytes / size);
}
