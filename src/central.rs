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
//! Its lock ranks `Central` in the lock order (`lock_rank.rs`): under it
//! only the page heap's lock and higher classes' lists are taken.
//!
//! A list gets and returns spans through a [`SpanSource`] passed to each
//! call: the process heap (`global::ProcessHeap`) in the allocator, a heap
//! over a fake OS in the unit tests below.

use crate::freelist::{FreeObject, Links};
use crate::page_heap::{Pass, PassResult};
use crate::size_class::{CLASS_BATCH, CLASS_PAGES, CLASS_RECIP, CLASS_SIZE};
use crate::span::{Span, SpanList};
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

/// Where a central list gets spans and gives them back.
pub trait SpanSource {
    /// A new span of `class` with every object free (see
    /// [`init_small_span`]); null when memory is exhausted. Called with the
    /// class's list lock held.
    fn new_span(&self, class: usize) -> *mut Span;
    /// Gives a wholly free span back to the page heap.
    ///
    /// # Safety
    /// `span` is a live span of this source, and nothing uses it or its
    /// memory afterwards.
    unsafe fn free_span(&self, span: *mut Span);
    /// Returns the pages in `mask` (bit per span page) of `span` to the OS;
    /// returns how many went.
    ///
    /// # Safety
    /// `span` is a live span of this source, and no object in use lies on a
    /// page of `mask`.
    unsafe fn release_span_pages(&self, span: &mut Span, mask: u64) -> usize;
    /// `n` pages released inside spans were handed out again.
    fn pages_reused(&self, n: usize);
    /// The span that owns the page of `addr`, or null.
    fn span_of(&self, addr: usize) -> *mut Span;
    /// The release clock (ms, wrapping).
    fn release_clock(&self) -> u32;
    /// `class` needs a new span while some of its spans are frozen for
    /// meshing: ask for them to be thawed (mesh mode). Called with the
    /// class's list lock held; must not block or enter the kernel.
    fn frozen_wanted(&self, _class: usize) {}
    /// How free objects link to each other in batches (hardened mode's
    /// encoding or the identity), fixed before the first batch is made.
    fn links(&self) -> Links;
    /// Whether new batches take objects from random slots of their spans
    /// (mesh mode spreads live objects so sparse spans can mesh).
    fn mesh_slots(&self) -> bool {
        false
    }
}

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
    /// State of the slot picker in mesh mode (xorshift; never zero).
    slot_rng: u64,
    /// Random slots whatever the configuration says (private heaps of the
    /// tests and the `heap` fuzz driver).
    pub(crate) random_slots: bool,
    /// Spans frozen for meshing (off the list).
    pub frozen: usize,
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
            slot_rng: 0x9e37_79b9_7f4a_7c15,
            random_slots: false,
            frozen: 0,
        }
    }

    /// Takes up to `want` objects of `class`. Returns an empty chain only when
    /// memory is exhausted.
    pub fn take<S: SpanSource>(&mut self, src: &S, class: usize, want: usize) -> Batch {
        if want == CLASS_BATCH[class] as usize && self.ntransfer > 0 {
            self.ntransfer -= 1;
            self.objects_out += want;
            return Batch {
                head: self.transfer[self.ntransfer],
                count: want,
            };
        }
        let size = CLASS_SIZE[class] as usize;
        let links = src.links();
        let random_slots = self.random_slots || src.mesh_slots();
        let mut head: *mut FreeObject = ptr::null_mut();
        let mut count = 0;
        let mut unreleased = 0;
        while count < want {
            let mut span = self.nonempty.first();
            if span.is_null() {
                if self.frozen != 0 {
                    src.frozen_wanted(class);
                }
                span = src.new_span(class);
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
                    let obj = if random_slots {
                        let mut r = self.slot_rng;
                        r ^= r << 13;
                        r ^= r >> 7;
                        r ^= r << 17;
                        self.slot_rng = r;
                        s.pop_from((r >> 32) as usize, size, &mut unreleased)
                    } else {
                        s.pop(size, &mut unreleased)
                    } as *mut FreeObject;
                    if obj.is_null() {
                        break;
                    }
                    FreeObject::set_next(obj, head, links);
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
            src.pages_reused(unreleased);
        }
        self.objects_out += count;
        Batch { head, count }
    }

    /// Returns a chain of `class` objects (as linked by thread caches).
    ///
    /// # Safety
    /// Every object in the chain was handed out for `class` and is free.
    pub unsafe fn give<S: SpanSource>(&mut self, src: &S, class: usize, chain: Batch) {
        if chain.count == CLASS_BATCH[class] as usize && self.ntransfer < transfer_limit(class) {
            self.objects_out -= chain.count;
            self.last_give = src.release_clock();
            self.transfer[self.ntransfer] = chain.head;
            self.ntransfer += 1;
            self.transfer_at = self.last_give;
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.give_to_spans_now(src, chain) };
    }

    /// Returns a chain of `class` objects straight to their spans, past the
    /// transfer cache: what an idle or ending thread's cache gave back is
    /// not about to be reused, and parked batches would hold its pages for
    /// another hold-back before they reach their spans.
    ///
    /// # Safety
    /// As for [`CentralList::give`].
    pub unsafe fn give_to_spans_now<S: SpanSource>(&mut self, src: &S, chain: Batch) {
        self.objects_out -= chain.count;
        self.last_give = src.release_clock();
        // SAFETY: forwarded from the caller.
        let rejected = unsafe { self.give_to_spans(src, chain) };
        // What was not a live object of ours stays counted as handed out.
        self.objects_out += rejected;
    }

    /// Puts `obj` back into its span; `false` (and nothing done but a
    /// report) when it is not an object in use there (a double free).
    ///
    /// # Safety
    /// `obj` is a free object of a live span of this list's class.
    unsafe fn return_object<S: SpanSource>(
        &mut self,
        src: &S,
        obj: *mut FreeObject,
        now: u32,
    ) -> bool {
        let span = src.span_of(obj as usize);
        // SAFETY: a handed-out object's page maps to its live span.
        let s: &mut Span = unsafe { &mut *span };
        let class = s.class as usize;
        let size = CLASS_SIZE[class] as usize;
        match s.object_index(obj as usize, size, CLASS_RECIP[class]) {
            Some(i) if !s.is_free(i) => s.push(i),
            _ => {
                crate::misuse::bad_free(obj as usize);
                return false;
            }
        }
        if s.frozen {
            // A frozen span stays off the list and stays a span, even
            // wholly free, until the mesher unmeshes its unit.
            return true;
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
            unsafe { src.free_span(span) };
            return true;
        }
        if s.used == 0 {
            self.empty += 1;
        }
        if !s.in_list {
            s.in_list = true;
            // SAFETY: the span is live and on no list.
            unsafe { self.nonempty.push_front(span) };
        }
        true
    }

    /// Freezes `span` for meshing: off the list, so it hands out nothing
    /// (its free slots may come to hold another span's objects).
    ///
    /// # Safety
    /// `span` is a live span of this list's class.
    pub unsafe fn freeze(&mut self, span: *mut Span) {
        // SAFETY: forwarded from the caller; we hold this list's lock.
        let s = unsafe { &mut *span };
        if s.in_list {
            if s.used == 0 {
                self.empty -= 1;
            }
            // SAFETY: the span is on this list.
            unsafe { self.nonempty.remove(span) };
            s.in_list = false;
        }
        if !s.frozen {
            self.frozen += 1;
        }
        s.frozen = true;
    }

    /// Ends the freeze of `span`: back on the list when it has a free
    /// object (a wholly free one goes back to the page heap).
    ///
    /// # Safety
    /// `span` is a frozen live span of this list's class, and no other
    /// span's objects live in its memory any more.
    pub unsafe fn thaw<S: SpanSource>(&mut self, src: &S, span: *mut Span) {
        // SAFETY: forwarded from the caller; we hold this list's lock.
        let s = unsafe { &mut *span };
        if s.frozen {
            self.frozen -= 1;
        }
        s.frozen = false;
        if s.used == 0 {
            self.spans -= 1;
            // SAFETY: no object of the span is in use.
            unsafe { src.free_span(span) };
            return;
        }
        if s.has_free() {
            s.in_list = true;
            // SAFETY: the span is live and on no list.
            unsafe { self.nonempty.push_front(span) };
        }
    }

    /// Returns the wholly free spans kept for reuse to the page heap.
    pub fn free_empty_spans<S: SpanSource>(&mut self, src: &S) {
        let mut s = self.nonempty.first();
        while !s.is_null() && self.empty > 0 {
            // SAFETY: listed spans are live and we hold this list's lock.
            let span = unsafe { &mut *s };
            s = span.next;
            if span.used == 0 {
                // SAFETY: the span is on this list and wholly free.
                unsafe {
                    self.nonempty.remove(span);
                    src.free_span(span);
                }
                self.empty -= 1;
                self.spans -= 1;
            }
        }
    }

    /// Moves every parked batch back into its spans (idle memory can then
    /// drain out of huge pages), then returns wholly free spans.
    pub fn drain<S: SpanSource>(&mut self, src: &S, class: usize) {
        self.drain_transfer(src, class);
        self.free_empty_spans(src);
    }

    /// Moves every parked batch back into its spans.
    fn drain_transfer<S: SpanSource>(&mut self, src: &S, class: usize) {
        while self.ntransfer > 0 {
            self.ntransfer -= 1;
            let chain = Batch {
                head: self.transfer[self.ntransfer],
                count: CLASS_BATCH[class] as usize,
            };
            // SAFETY: parked chains hold free objects of this class.
            let rejected = unsafe { self.give_to_spans(src, chain) };
            self.objects_out += rejected;
        }
    }

    /// Puts every object of `chain` back into its span; returns how many
    /// were rejected as not in use (double frees).
    ///
    /// # Safety
    /// As for [`CentralList::give`].
    unsafe fn give_to_spans<S: SpanSource>(&mut self, src: &S, chain: Batch) -> usize {
        let now = self.last_give;
        let links = src.links();
        let mut obj = chain.head;
        let mut rejected = 0;
        for _ in 0..chain.count {
            // SAFETY: the chain holds `count` free objects linked by their
            // first word.
            let next = unsafe { FreeObject::next_of(obj, links) };
            // SAFETY: the object belongs to a live span of this class.
            if !unsafe { self.return_object(src, obj, now) } {
                rejected += 1;
            }
            obj = next;
        }
        rejected
    }

    /// Release pass over this class: parked batches that sat idle go back
    /// to their spans, then free pages inside partly used spans idle for the
    /// hold-back are returned to the OS (through the page heap, which marks
    /// the huge page NOHUGEPAGE first).
    pub fn release<S: SpanSource>(
        &mut self,
        src: &S,
        class: usize,
        pass: &Pass,
        out: &mut PassResult,
    ) {
        // A class in steady use is left alone (and its lock uncontended):
        // its free memory is about to be reused.
        if !pass.idle(self.last_give) {
            out.pending = true;
            return;
        }
        if self.ntransfer > 0 {
            if pass.idle(self.transfer_at) {
                self.drain_transfer(src, class);
            } else {
                out.pending = true;
            }
        }
        self.free_empty_spans(src);
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
                // SAFETY: a listed span of this source; `mask` holds only
                // pages every object of which is free.
                out.released_pages += unsafe { src.release_span_pages(span, mask) };
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

/// A new span of `class` from `heap`, every object free; null when memory
/// is exhausted (the body of every [`SpanSource::new_span`]).
pub fn new_small_span<O: crate::os::Os>(
    heap: &mut crate::page_heap::PageHeap<O>,
    class: usize,
) -> *mut Span {
    let Some(run) = heap.alloc_run(CLASS_PAGES[class] as usize, 1, class as u8) else {
        return ptr::null_mut();
    };
    // SAFETY: a fresh span record owned by the caller.
    init_small_span(unsafe { &mut *run.span }, class);
    run.span
}

/// Initialises a fresh span for `class`: every object free.
pub fn init_small_span(span: &mut Span, class: usize) {
    let size = CLASS_SIZE[class] as usize;
    let bytes = CLASS_PAGES[class] as usize * PAGE_SIZE;
    span.init_objects(class as u8, bytes / size);
}

/// A page heap of its own over the fake OS, with a clock its user sets, as
/// the span source of central lists built apart from the process heap: the
/// central lists' tests and the `heap` fuzz driver.
#[cfg(any(test, fuzzing))]
pub(crate) struct FakeHeap {
    pub heap: crate::lock::SpinLock<crate::page_heap::PageHeap<crate::os::fake::FakeOs>>,
    pub clock: core::cell::Cell<u32>,
    /// The link encoding its batches use.
    pub links: Links,
}

#[cfg(any(test, fuzzing))]
impl FakeHeap {
    /// A heap of `huge_pages` huge pages over `os` (which should be `backed`:
    /// central lists link objects through their memory), its batches linked
    /// as `links` says (`harden::links()` for the process's mode).
    pub fn new(os: crate::os::fake::FakeOs, huge_pages: usize, links: Links) -> FakeHeap {
        let mut heap = crate::page_heap::PageHeap::new(os);
        let len = huge_pages * crate::units::HUGE_SIZE;
        assert!(heap.init(len, len), "the fake OS refused the reservation");
        FakeHeap {
            heap: crate::lock::SpinLock::new(crate::lock_rank::Rank::Heap, heap),
            clock: core::cell::Cell::new(0),
            links,
        }
    }
}

#[cfg(any(test, fuzzing))]
impl SpanSource for FakeHeap {
    fn new_span(&self, class: usize) -> *mut Span {
        new_small_span(&mut self.heap.lock(), class)
    }

    unsafe fn free_span(&self, span: *mut Span) {
        // SAFETY: forwarded from the caller.
        unsafe { self.heap.lock().free_run(span) };
    }

    unsafe fn release_span_pages(&self, span: &mut Span, mask: u64) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { self.heap.lock().release_span_pages(span, mask) }
    }

    fn pages_reused(&self, n: usize) {
        self.heap.lock().pages_reused(n);
    }

    fn span_of(&self, addr: usize) -> *mut Span {
        self.heap.lock().view().span_of(addr)
    }

    fn release_clock(&self) -> u32 {
        self.clock.get()
    }

    fn links(&self) -> Links {
        self.links
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::{Call, FakeOs};
    use crate::os::Advice;
    use crate::size_class::{class_of_small, CLASS_PAGES};
    use std::collections::HashSet;

    /// A 32-huge-page heap over a fake OS whose reservation is real memory.
    type TestHeap = FakeHeap;

    impl TestHeap {
        fn test() -> TestHeap {
            let mut os = FakeOs::default();
            os.backed = true;
            FakeHeap::new(os, 32, crate::harden::links())
        }

        fn pages_in_use(&self) -> usize {
            self.heap.lock().stats().pages_in_use
        }

        fn dontneeds(&self) -> usize {
            let h = self.heap.lock();
            let calls = h.os().calls.borrow();
            calls
                .iter()
                .filter(|c| {
                    matches!(
                        c,
                        Call::Advise {
                            advice: Advice::DontNeed,
                            ..
                        }
                    )
                })
                .count()
        }
    }

    /// The objects of a batch, in order.
    fn objects(b: &Batch) -> Vec<*mut FreeObject> {
        let mut v = Vec::new();
        let mut o = b.head;
        for _ in 0..b.count {
            v.push(o);
            // SAFETY: the batch links `count` free objects.
            o = unsafe { FreeObject::next_of(o, crate::harden::links()) };
        }
        v
    }

    /// Links `objs` into a batch.
    fn batch_of(objs: &[*mut FreeObject]) -> Batch {
        let mut head = ptr::null_mut();
        for &o in objs.iter().rev() {
            // SAFETY: free objects of the test heap, at least 8 bytes.
            unsafe { FreeObject::set_next(o, head, crate::harden::links()) };
            head = o;
        }
        Batch {
            head,
            count: objs.len(),
        }
    }

    #[test]
    fn random_slots_fill_whole_spans_with_distinct_objects_out_of_order() {
        let src = TestHeap::test();
        let class = class_of_small(64).index();
        let mut list = CentralList::new();
        list.random_slots = true;
        // Three spans' worth, in odd batch sizes (no parking on the way).
        let per_span = CLASS_PAGES[class] as usize * PAGE_SIZE / 64;
        let mut objs = Vec::new();
        while objs.len() < 3 * per_span {
            objs.extend(objects(&list.take(&src, class, 7)));
        }
        let distinct: HashSet<_> = objs.iter().collect();
        assert_eq!(distinct.len(), objs.len());
        assert_eq!(list.check(class), Ok(objs.len()));
        // Not handed out in address order within the first span.
        let first: Vec<usize> = objs[..per_span].iter().map(|&o| o as usize).collect();
        assert!(first.windows(2).any(|w| w[1] < w[0]), "address order");
        let span = src.span_of(first[0]);
        // SAFETY: a live span of the test heap.
        assert!(!unsafe { &*span }.has_free(), "the first span is full");
        // SAFETY: the objects were taken above and are not used.
        unsafe { list.give(&src, class, batch_of(&objs)) };
        assert_eq!(list.objects_out, 0);
    }

    #[test]
    fn batches_are_distinct_objects_of_the_class_and_park_whole() {
        let src = TestHeap::test();
        let class = class_of_small(64).index();
        let batch = CLASS_BATCH[class] as usize;
        let mut list = CentralList::new();
        let b = list.take(&src, class, batch);
        assert_eq!(b.count, batch);
        let objs = objects(&b);
        let distinct: HashSet<_> = objs.iter().collect();
        assert_eq!(distinct.len(), batch);
        for &o in &objs {
            let span = src.span_of(o as usize);
            assert!(!span.is_null());
            // SAFETY: a live span of the test heap.
            let s = unsafe { &*span };
            assert_eq!(s.class as usize, class);
            assert_eq!((o as usize - s.start) % 64, 0);
        }
        assert_eq!(list.check(class), Ok(batch));
        // A whole batch given back is parked, and handed out again as is.
        // SAFETY: the objects were taken above and are free.
        unsafe { list.give(&src, class, b) };
        assert_eq!(list.objects_out, 0);
        assert_eq!(list.parked_objects(class), batch);
        let again = list.take(&src, class, batch);
        assert_eq!(objects(&again), objs);
        assert_eq!(list.parked_objects(class), 0);
        // SAFETY: as above.
        unsafe { list.give(&src, class, again) };
        assert_eq!(list.check(class), Ok(batch));
    }

    #[test]
    fn the_transfer_cache_is_bounded_and_the_rest_goes_to_spans() {
        let src = TestHeap::test();
        let class = class_of_small(1024).index();
        let batch = CLASS_BATCH[class] as usize;
        let limit = transfer_limit(class);
        let mut list = CentralList::new();
        let taken: Vec<Batch> = (0..limit + 3)
            .map(|_| list.take(&src, class, batch))
            .collect();
        assert!(taken.iter().all(|b| b.count == batch));
        for b in taken {
            // SAFETY: taken above, free.
            unsafe { list.give(&src, class, b) };
        }
        assert_eq!(list.parked_objects(class), limit * batch);
        assert_eq!(list.objects_out, 0);
        // The parked objects are the only ones out of their spans.
        assert_eq!(list.check(class), Ok(limit * batch));
        // Draining puts them back and returns the emptied spans.
        list.drain(&src, class);
        assert_eq!(list.check(class), Ok(0));
        assert_eq!(list.spans, 0);
        assert_eq!(src.pages_in_use(), 0);
    }

    #[test]
    fn wholly_free_spans_are_kept_up_to_a_limit_then_returned() {
        let src = TestHeap::test();
        let class = class_of_small(4096).index();
        let span_bytes = CLASS_PAGES[class] as usize * PAGE_SIZE;
        let per_span = span_bytes / CLASS_SIZE[class] as usize;
        let mut list = CentralList::new();
        // Three MiB of objects, taken one at a time (not batches, so they
        // go back to their spans, not to the transfer cache).
        let n = 3 * 1024 * 1024 / CLASS_SIZE[class] as usize;
        let objs: Vec<*mut FreeObject> = (0..n)
            .map(|_| {
                let b = list.take(&src, class, 1);
                assert_eq!(b.count, 1);
                b.head
            })
            .collect();
        let spans = list.spans;
        assert_eq!(spans, n.div_ceil(per_span));
        for &o in &objs {
            // SAFETY: taken above, free.
            unsafe { list.give(&src, class, batch_of(&[o])) };
        }
        // Empty spans beyond 1 MiB went back to the heap at once.
        let kept = list.spans;
        assert!(
            kept > 0 && kept * span_bytes <= RETAIN_EMPTY_BYTES,
            "{kept} kept"
        );
        assert_eq!(src.pages_in_use(), kept * span_bytes / PAGE_SIZE);
        assert_eq!(list.check(class), Ok(0));
        list.free_empty_spans(&src);
        assert_eq!((list.spans, src.pages_in_use()), (0, 0));
    }

    #[test]
    fn release_returns_idle_free_pages_and_reuse_is_counted() {
        let src = TestHeap::test();
        // A class whose span spans several pages.
        let class = class_of_small(2048).index();
        assert!(CLASS_PAGES[class] > 1);
        let mut list = CentralList::new();
        let per_span = CLASS_PAGES[class] as usize * PAGE_SIZE / CLASS_SIZE[class] as usize;
        let objs: Vec<*mut FreeObject> = (0..per_span)
            .map(|_| list.take(&src, class, 1).head)
            .collect();
        assert_eq!(list.spans, 1);
        // Keep the first object; free the rest: the span's later pages are
        // wholly free.
        src.clock.set(100);
        for &o in &objs[1..] {
            // SAFETY: taken above, free.
            unsafe { list.give(&src, class, batch_of(&[o])) };
        }
        let pass = |now: u32| Pass {
            now,
            holdback: 1000,
            force: false,
        };
        // Within the hold-back nothing goes, and the pass says so.
        let mut out = PassResult::default();
        list.release(&src, class, &pass(500), &mut out);
        assert_eq!(out.released_pages, 0);
        assert!(out.pending);
        assert_eq!(src.dontneeds(), 0);
        // After it, every wholly free page of the span goes.
        let mut out = PassResult::default();
        list.release(&src, class, &pass(1200), &mut out);
        assert!(out.released_pages >= CLASS_PAGES[class] as usize - 1);
        assert!(src.dontneeds() > 0);
        let released = src.heap.lock().stats().span_released_pages;
        assert_eq!(released, out.released_pages);
        // Handing the objects out again makes those pages resident again.
        let again: Vec<*mut FreeObject> = (1..per_span)
            .map(|_| list.take(&src, class, 1).head)
            .collect();
        assert_eq!(src.heap.lock().stats().span_released_pages, 0);
        assert_eq!(list.check(class), Ok(per_span));
        for &o in again.iter().chain(&objs[..1]) {
            // SAFETY: taken above, free.
            unsafe { list.give(&src, class, batch_of(&[o])) };
        }
        assert_eq!(list.check(class), Ok(0));
    }

    #[test]
    fn a_double_free_reaching_its_span_is_ignored() {
        let src = TestHeap::test();
        let class = class_of_small(32).index();
        let mut list = CentralList::new();
        let a = list.take(&src, class, 1).head;
        let b = list.take(&src, class, 1).head;
        // SAFETY: `a` was taken and is free.
        unsafe { list.give(&src, class, batch_of(&[a])) };
        // `a` again: the misuse under test (it breaks `give`'s contract on
        // purpose). The object's memory is still the heap's, and the list
        // checks every object it puts back into a span: it reports this one
        // on stderr and ignores it, so the free bitmap and counts stay right.
        // SAFETY: see above; nothing but the span's bitmap is read.
        unsafe { list.give(&src, class, batch_of(&[a])) };
        assert_eq!(list.check(class), Ok(1), "only `b` is out");
        // SAFETY: `b` was taken and is free.
        unsafe { list.give(&src, class, batch_of(&[b])) };
        assert_eq!(list.check(class), Ok(0));
    }
}
