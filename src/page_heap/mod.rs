//! The page heap: the reserved address space, its huge pages, and runs of
//! pages handed out as spans.
//!
//! The heap reserves one large range of address space up front (1 TiB, halved
//! until the OS agrees) aligned to 2 MiB, and commits it in steps of
//! [`GROW_HUGE_PAGES`] huge pages as demand grows. Runs of fewer than 512 pages
//! come from the [`Filler`]; larger ones (or ones whose alignment cannot fit a
//! huge page) take whole contiguous huge pages from the [`HugeSet`] of free
//! huge pages, first fit. Every huge page has a record in the [`MetaTable`].
//!
//! Everything here is protected by the page heap lock; `span_of` reads the
//! table's `spans` entries without it (see [`HeapView`]).

use crate::huge::filler::Filler;
use crate::huge::set::HugeSet;
use crate::huge::{page_tag, HugeKind, HugePageMeta, MetaTable, PageMap, PageSpans, PageTags, NIL};
use crate::os::{Advice, Os};
use crate::size_class::NUM_CLASSES;
use crate::span::Span;
use crate::span_pool::{SpanPool, SPAN_CHUNK};
use crate::units::{HUGE_SHIFT, HUGE_SIZE, PAGES_PER_HUGE, PAGE_SHIFT, PAGE_SIZE};
use core::ptr;

/// Huge pages committed at once when the heap grows (32 MiB).
pub const GROW_HUGE_PAGES: usize = 16;
/// Address space asked for first; halved down to [`MIN_RESERVE`] on refusal.
pub const DEFAULT_RESERVE: usize = 1 << 40;
/// Smallest reservation the heap accepts.
pub const MIN_RESERVE: usize = 1 << 30;

pub mod mesh;
pub mod release;
pub use release::{Pass, PassResult, Policy};

use crate::report::AdviceCounts;

/// Counters kept by the page heap (under its lock).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes of heap address space made read-write.
    pub committed_bytes: usize,
    /// Pages in spans handed out.
    pub pages_in_use: usize,
    /// Huge pages holding a large object.
    pub large_huge_pages: usize,
    /// Times the OS refused memory.
    pub os_refusals: usize,
    /// Pages that may be resident (set bits of all `dirty` bitmaps).
    pub dirty_pages: usize,
    /// Bytes returned to the OS so far.
    pub released_bytes: usize,
    /// Pages released inside spans that still hold objects, and not handed
    /// out since (they count in `dirty_pages` but are not resident).
    pub span_released_pages: usize,
    /// Metadata bytes given back to the OS: the span entries of huge pages
    /// released whole (cumulative).
    pub metadata_released_bytes: usize,
    /// `madvise` calls by kind.
    pub advice: AdviceCounts,
}

impl HeapStats {
    const ZERO: HeapStats = HeapStats {
        committed_bytes: 0,
        pages_in_use: 0,
        large_huge_pages: 0,
        os_refusals: 0,
        dirty_pages: 0,
        released_bytes: 0,
        span_released_pages: 0,
        metadata_released_bytes: 0,
        advice: AdviceCounts {
            dontneed_calls: 0,
            nohugepage_calls: 0,
            hugepage_calls: 0,
            collapse_attempts: 0,
            collapse_failures: 0,
            advise_failures: 0,
            marking_degraded: false,
        },
    };
}

/// A run handed out: its span and whether all its pages were known zero.
pub struct Run {
    pub span: *mut Span,
    pub clean: bool,
}

/// The read-only facts needed to find a pointer's span without the lock.
#[derive(Clone, Copy)]
pub struct HeapView {
    base: usize,
    end: usize,
    pages: PageMap,
}

impl HeapView {
    /// The span owning the page of `addr`, or null when `addr` is outside the
    /// heap or its page starts no span.
    #[inline]
    pub fn span_of(&self, addr: usize) -> *mut Span {
        if addr < self.base || addr >= self.end {
            return ptr::null_mut();
        }
        let off = addr - self.base;
        self.pages
            .span(off >> HUGE_SHIFT, (off >> PAGE_SHIFT) % PAGES_PER_HUGE)
    }

    /// A view of no heap (before the heap exists): finds nothing.
    pub const fn empty() -> Self {
        HeapView {
            base: 0,
            end: 0,
            pages: PageMap::empty(),
        }
    }

    /// The heap's first address.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The parts to publish to lock-free readers: base, end, the page map's
    /// span entries and tags, and its length.
    pub fn parts(&self) -> (usize, usize, *const PageSpans, *const PageTags, usize) {
        (
            self.base,
            self.end,
            self.pages.as_ptr(),
            self.pages.tags_ptr(),
            self.pages.len(),
        )
    }

    /// Rebuilds a view from [`HeapView::parts`].
    ///
    /// # Safety
    /// The parts come from `parts` of a view of a heap that still exists
    /// (the process heap lives for the process).
    pub unsafe fn from_parts(
        base: usize,
        end: usize,
        pages: *const PageSpans,
        tags: *const PageTags,
        len: usize,
    ) -> Self {
        // SAFETY: forwarded from the caller.
        let pages = unsafe { PageMap::new(pages, tags, len) };
        HeapView { base, end, pages }
    }
}

/// The page heap over an OS layer `O`.
pub struct PageHeap<O: Os> {
    os: O,
    base: usize,
    /// Huge pages reserved.
    reserved: usize,
    /// Huge pages committed (the heap's top).
    top: usize,
    metas: MetaTable,
    /// The page-to-span map (lock-free readers use it through `view`).
    pages: PageMap,
    free: HugeSet,
    filler: Filler,
    pool: SpanPool,
    stats: HeapStats,
    /// How releases and reuse advise the kernel.
    policy: Policy,
    /// Mesh mode: each size class's spans go to huge pages of their own,
    /// next to each other (see [`PageHeap::set_class_homes`]).
    class_homes: bool,
    /// Each class's current home huge page (`NIL`: none yet); index 0
    /// for large objects' runs.
    homes: [u32; NUM_CLASSES],
}

/// [`HugePageMeta::home`] of a home of large objects' runs.
const LARGE_HOME: u8 = u8::MAX;

impl<O: Os> PageHeap<O> {
    pub const fn new(os: O) -> Self {
        PageHeap {
            os,
            base: 0,
            reserved: 0,
            top: 0,
            metas: MetaTable::empty(),
            pages: PageMap::empty(),
            free: HugeSet::empty(),
            filler: Filler::new(),
            pool: SpanPool::new(),
            stats: HeapStats::ZERO,
            policy: Policy::AWARE,
            class_homes: false,
            homes: [NIL; NUM_CLASSES],
        }
    }

    /// The OS layer this heap uses (tests inspect the fake's record).
    #[cfg(any(test, fuzzing))]
    pub fn os(&self) -> &O {
        &self.os
    }

    /// This heap's counters.
    pub fn stats(&self) -> &HeapStats {
        &self.stats
    }

    /// Span records: (live records, pages given back to the OS since
    /// start).
    pub fn span_records(&self) -> (usize, usize) {
        (self.pool.live, self.pool.discarded_pages)
    }

    /// Gives back to the OS the pages of span records that hold no live
    /// record (after a batch, most of them); returns how many. Part of the
    /// release pass.
    pub fn discard_span_records(&mut self) -> usize {
        if self.policy.kernel_page != 1 {
            return 0;
        }
        self.pool.discard_free_pages(&self.os)
    }

    /// Sets how releases and reuse advise the kernel (before the heap is
    /// used; the process heap takes it from the configuration at start-up).
    /// Under `no_huge`, nothing is ever re-marked HUGEPAGE.
    pub fn set_policy(&mut self, mut policy: Policy) {
        debug_assert!(
            policy.kernel_page.is_power_of_two() && policy.kernel_page <= PAGES_PER_HUGE
        );
        if policy.no_huge {
            policy.regain = false;
            policy.go_legacy = false;
        }
        self.policy = policy;
    }

    /// Mesh mode's layout (before the heap is used): each size class's
    /// spans are carved from a huge page of their own, its *home*, one
    /// after the other, and a full home is followed by a wholly free huge
    /// page (or the fullest one with room if that happens to be a home of
    /// the same class); large objects' runs below a huge page have homes of
    /// their own too. So a class's spans are neighbours, and meshing can
    /// map whole runs of them at once instead of one span per mapping
    /// (`docs/MESH.md`: one mapping per span would exceed
    /// `vm.max_map_count`). Holes left in old homes are reused by large
    /// objects and by the class only when a home fills; that is the layout's
    /// memory cost, measured in `docs/MESH.md`.
    pub fn set_class_homes(&mut self, on: bool) {
        self.class_homes = on;
    }

    /// Pages released inside spans were handed out again (their objects
    /// are in use, so the pages become resident).
    pub fn pages_reused(&mut self, n: usize) {
        self.stats.span_released_pages = self.stats.span_released_pages.saturating_sub(n);
    }

    /// Whether `init` has succeeded.
    pub fn is_ready(&self) -> bool {
        self.base != 0
    }

    /// Reserves the heap: `want` bytes, halved on refusal down to `min`.
    pub fn init(&mut self, want: usize, min: usize) -> bool {
        let mut len = want;
        while len >= min {
            if self.try_init(len) {
                return true;
            }
            len /= 2;
        }
        false
    }

    fn try_init(&mut self, len: usize) -> bool {
        let hps = len / HUGE_SIZE;
        // Records, then the page map, then the free set's bits; each part
        // starts 8-aligned (all sizes are multiples of 8). The records are
        // rounded up to whole pages, so that each huge page's span entries
        // fill one page of their own, which goes back to the OS when the
        // huge page is released whole (`release_free_huge_pages`).
        let meta_bytes = (hps * core::mem::size_of::<HugePageMeta>()).next_multiple_of(PAGE_SIZE);
        let map_bytes = hps * core::mem::size_of::<PageSpans>();
        let tag_bytes = hps * core::mem::size_of::<PageTags>();
        let set_bytes = HugeSet::bytes_for(hps);
        let Some(base) = self.os.reserve(len, HUGE_SIZE) else {
            return false;
        };
        let Some(meta) = self
            .os
            .map_metadata(meta_bytes + map_bytes + tag_bytes + set_bytes)
        else {
            return false;
        };
        self.base = base;
        self.reserved = hps;
        // SAFETY: `meta` is zeroed memory of the needed size that lives as
        // long as the OS value (for the process heap, the process) and is
        // used by nothing else; all-zero records, null map entries and clear
        // bits are valid.
        unsafe {
            self.metas = MetaTable::new(meta as *mut HugePageMeta, hps);
            let tags = meta.add(meta_bytes + map_bytes) as *const PageTags;
            self.pages = PageMap::new(meta.add(meta_bytes) as *const PageSpans, tags, hps);
            let set = meta.add(meta_bytes + map_bytes + tag_bytes);
            self.free = HugeSet::new(set as *mut u64, hps);
        }
        true
    }

    /// Facts for lock-free `span_of`.
    pub fn view(&self) -> HeapView {
        HeapView {
            base: self.base,
            end: self.base + self.reserved * HUGE_SIZE,
            pages: self.pages,
        }
    }

    /// Huge pages in the filler.
    pub fn filler_huge_pages(&self) -> usize {
        self.filler.count
    }

    /// Whole free huge pages below the top.
    pub fn free_huge_pages(&self) -> usize {
        self.free.count
    }

    /// Huge pages committed.
    pub fn committed_huge_pages(&self) -> usize {
        self.top
    }

    /// The committed part of the heap: its first address and length.
    pub fn committed_range(&self) -> (usize, usize) {
        (self.base, self.top * HUGE_SIZE)
    }

    /// The huge-page records, for the release policy and invariant checks.
    /// The page-to-span map (for the invariant checker).
    pub fn pages(&self) -> PageMap {
        self.pages
    }

    pub fn metas(&self) -> &MetaTable {
        &self.metas
    }

    fn grow(&mut self, min_hps: usize) -> bool {
        let room = self.reserved - self.top;
        if min_hps > room {
            return false;
        }
        let mut want = min_hps.max(GROW_HUGE_PAGES).min(room);
        loop {
            let addr = self.base + self.top * HUGE_SIZE;
            // SAFETY: `[top, top + want)` huge pages lie inside the
            // reservation (`want <= room`) and were never committed.
            if unsafe { self.os.commit(addr, want * HUGE_SIZE) } {
                break;
            }
            self.stats.os_refusals += 1;
            if want == min_hps {
                return false;
            }
            want = min_hps;
        }
        // Under huge pages larger than ours, the heap never has any: one
        // mark for the new range (it joins the marked range before it).
        let marked = self.policy.no_huge
            // SAFETY: the range was just committed; NOHUGEPAGE keeps data.
            && unsafe { self.advise_counted(self.base + self.top * HUGE_SIZE, want * HUGE_SIZE, Advice::NoHugePage) }
                .is_ok();
        for i in self.top..self.top + want {
            self.free.insert(i);
            // SAFETY: `i` is below the reservation; heap lock held.
            unsafe { self.metas.get_mut(i) }.nohuge = marked;
        }
        self.top += want;
        self.stats.committed_bytes += want * HUGE_SIZE;
        true
    }

    fn new_span(&mut self, start: usize, npages: usize) -> *mut Span {
        let mut s = self.pool.take();
        if s.is_null() {
            // Room for an aligned chunk (the pool finds a record's chunk by
            // masking its address); the rest is never touched.
            let Some(raw) = self.os.map_metadata(2 * SPAN_CHUNK) else {
                self.stats.os_refusals += 1;
                return ptr::null_mut();
            };
            let chunk = (raw as usize).next_multiple_of(SPAN_CHUNK) as *mut u8;
            // SAFETY: fresh zeroed metadata of our own, aligned, of at least
            // `SPAN_CHUNK` bytes, kept for the heap's life.
            unsafe { self.pool.add_chunk(chunk) };
            s = self.pool.take();
        }
        // SAFETY: the pool hands out valid, unused records.
        unsafe { (*s).init(start, npages) };
        s
    }

    fn filler_huge_page(&mut self, need: usize) -> Option<u32> {
        if let Some(idx) = self.filler.find(need) {
            return Some(idx);
        }
        self.fresh_filler_huge_page()
    }

    /// The home huge page of small-object class `class` with a free run of
    /// `need` pages, taking a new home when the current one is full (see
    /// [`PageHeap::set_class_homes`]).
    fn home_huge_page(&mut self, class: u8, need: usize) -> Option<u32> {
        // Runs for large objects have homes of their own too (`homes[0]`),
        // so they do not cut a class's run of spans in two.
        let mark = if class == 0 { LARGE_HOME } else { class };
        let has_room = |heap: &Self, idx: u32| {
            (idx as usize) < heap.top && {
                // SAFETY: `idx < top`; we hold the heap lock.
                let m = unsafe { heap.metas.get(idx as usize) };
                m.kind == HugeKind::Filler && m.home == mark && m.longest_free as usize >= need
            }
        };
        let current = self.homes[class as usize];
        if current != NIL && has_room(self, current) {
            return Some(current);
        }
        let idx = match self.filler.find(need) {
            Some(idx) if has_room(self, idx) => idx,
            _ => self.fresh_filler_huge_page()?,
        };
        // SAFETY: a filler huge page below the top; we hold the heap lock.
        unsafe { self.metas.get_mut(idx as usize) }.home = mark;
        self.homes[class as usize] = idx;
        Some(idx)
    }

    /// A wholly free huge page (growing the heap if there is none) made a
    /// filler huge page.
    fn fresh_filler_huge_page(&mut self) -> Option<u32> {
        let idx = match self.free.next_member(0, self.top) {
            Some(i) => i,
            None => {
                if !self.grow(1) {
                    return None;
                }
                self.free.next_member(0, self.top)?
            }
        };
        self.free.remove(idx);
        // SAFETY: `idx < top <= reserved`; we hold the heap lock.
        unsafe { self.metas.get_mut(idx) }.start_filler();
        self.filler.add(&mut self.metas, idx as u32);
        Some(idx as u32)
    }

    /// Hands out `npages` pages aligned to `align_pages` (a power of two) as
    /// a span. For a small-object span, `class` is its size class (not 0):
    /// every page maps to the span and is tagged with the class and its
    /// index in the span, so `npages` is at most 255. For a large object,
    /// `class` is 0 and only the first page maps. `None` when memory runs out.
    pub fn alloc_run(&mut self, npages: usize, align_pages: usize, class: u8) -> Option<Run> {
        debug_assert!(class == 0 || npages <= 255);
        if !self.is_ready() || npages == 0 {
            return None;
        }
        let need = npages.checked_add(align_pages - 1)?;
        let run = if need < PAGES_PER_HUGE {
            self.alloc_from_filler(npages, align_pages, need, class)?
        } else {
            self.alloc_huge_pages(npages, align_pages)?
        };
        self.stats.pages_in_use += npages;
        Some(run)
    }

    fn alloc_from_filler(&mut self, n: usize, align: usize, need: usize, class: u8) -> Option<Run> {
        let idx = if self.class_homes {
            self.home_huge_page(class, need)?
        } else {
            self.filler_huge_page(need)?
        };
        let page = self.filler.take_pages(&mut self.metas, idx, n, align)?;
        let start = self.base + ((idx as usize) << HUGE_SHIFT) + (page << PAGE_SHIFT);
        let span = self.new_span(start, n);
        if span.is_null() {
            self.filler.put_pages(&mut self.metas, idx, page, n);
            return None;
        }
        let now = self.release_clock();
        // SAFETY: valid record under the heap lock.
        let m = unsafe { self.metas.get_mut(idx as usize) };
        let dirty_before = m.dirty.count_range(page, n);
        let clean = dirty_before == 0;
        m.dirty.set_range(page, n);
        m.touched_at = now;
        self.stats.dirty_pages += n - dirty_before;
        self.on_reuse(idx as usize);
        let mapped = if class != 0 { n } else { 1 };
        for p in page..page + mapped {
            let tag = if class != 0 {
                page_tag(class, p - page)
            } else {
                0
            };
            // SAFETY: heap lock held (`&mut self`); `idx < top`; `span` is
            // the live record that now owns the page, a small span of
            // `class` when the tag says so.
            unsafe { self.pages.set(idx as usize, p, span, tag) };
        }
        Some(Run { span, clean })
    }

    fn alloc_huge_pages(&mut self, npages: usize, align_pages: usize) -> Option<Run> {
        let k = npages.div_ceil(PAGES_PER_HUGE);
        let hp_align = (align_pages / PAGES_PER_HUGE).max(1);
        let idx = match self
            .free
            .find_run(k, hp_align, self.top, self.base >> HUGE_SHIFT)
        {
            Some(i) => i,
            None => {
                let extra = if hp_align == 1 {
                    k - self.free.trailing_run(self.top)
                } else {
                    k.checked_add(hp_align - 1)?
                };
                if !self.grow(extra) {
                    return None;
                }
                self.free
                    .find_run(k, hp_align, self.top, self.base >> HUGE_SHIFT)?
            }
        };
        let start = self.base + (idx << HUGE_SHIFT);
        let span = self.new_span(start, npages);
        if span.is_null() {
            return None;
        }
        let mut clean = true;
        let mut left = npages;
        let now = self.release_clock();
        for j in idx..idx + k {
            self.free.remove(j);
            // SAFETY: `j < top`; heap lock held.
            let m = unsafe { self.metas.get_mut(j) };
            let n = left.min(PAGES_PER_HUGE);
            left -= n;
            m.kind = if j == idx {
                HugeKind::Large
            } else {
                HugeKind::LargeTail
            };
            m.used.set_range(0, n);
            m.nused = n as u16;
            let dirty_before = m.dirty.count_range(0, n);
            clean &= dirty_before == 0;
            m.dirty.set_range(0, n);
            m.touched_at = now;
            self.stats.dirty_pages += n - dirty_before;
            self.on_reuse(j);
        }
        // SAFETY: heap lock held (`&mut self`); `idx < top`; `span` is the
        // live record of the large object starting there.
        unsafe { self.pages.set(idx, 0, span, 0) };
        self.stats.large_huge_pages += k;
        Some(Run { span, clean })
    }

    /// The release clock: milliseconds, wrapping at 2^32.
    pub fn release_clock(&self) -> u32 {
        self.os.now_ms() as u32
    }

    fn mark_dirty(&mut self, idx: usize, page: usize, n: usize) {
        // SAFETY: `idx < top`; heap lock held.
        let m = unsafe { self.metas.get_mut(idx) };
        let before = m.dirty.count_range(page, n);
        m.dirty.set_range(page, n);
        m.touched_at = self.os.now_ms() as u32;
        self.stats.dirty_pages += n - before;
    }

    fn locate(&self, addr: usize) -> (usize, usize) {
        let off = addr - self.base;
        (off >> HUGE_SHIFT, (off >> PAGE_SHIFT) % PAGES_PER_HUGE)
    }

    /// Returns a span's pages and its record.
    ///
    /// # Safety
    /// `span` came from `alloc_run` of this heap and is not used afterwards.
    pub unsafe fn free_run(&mut self, span: *mut Span) {
        // SAFETY: the caller passes a live span of this heap.
        let (start, n) = unsafe { ((*span).start, (*span).npages as usize) };
        let (idx, page) = self.locate(start);
        // SAFETY: the caller passes a live span of this heap.
        let released = unsafe { (*span).released };
        let now = self.release_clock();
        // SAFETY: `idx` is inside the table; heap lock held.
        let m = unsafe { self.metas.get_mut(idx) };
        m.touched_at = now;
        if released != 0 {
            // Pages released inside the live span and untouched since are
            // zero: they stop counting as dirty.
            let mut cleared = 0;
            for p in 0..n.min(64) {
                if released >> p & 1 == 1 {
                    m.dirty.clear_range(page + p, 1);
                    cleared += 1;
                }
            }
            self.stats.dirty_pages -= cleared;
            self.stats.span_released_pages = self.stats.span_released_pages.saturating_sub(cleared);
        }
        match m.kind {
            HugeKind::Filler => {
                // `alloc_run` mapped every page of a run it tagged.
                let mapped = if self.pages.tag(idx, page) != 0 { n } else { 1 };
                for p in page..page + mapped {
                    // SAFETY: heap lock held; `idx < top`; null owns nothing.
                    unsafe { self.pages.set(idx, p, ptr::null_mut(), 0) };
                }
                if self.filler.put_pages(&mut self.metas, idx as u32, page, n) {
                    self.free.insert(idx);
                }
            }
            _ => {
                // SAFETY: heap lock held; `idx < top`; null owns nothing.
                unsafe { self.pages.set(idx, 0, ptr::null_mut(), 0) };
                let k = n.div_ceil(PAGES_PER_HUGE);
                self.release_huge_pages(idx, k);
            }
        }
        self.stats.pages_in_use -= n;
        // SAFETY: the record is no longer referenced.
        unsafe { self.pool.give_back(span) };
    }

    fn release_huge_pages(&mut self, idx: usize, k: usize) {
        let now = self.release_clock();
        for j in idx..idx + k {
            // SAFETY: `j < top`; heap lock held.
            let m = unsafe { self.metas.get_mut(j) };
            m.touched_at = now;
            m.used = Default::default();
            m.nused = 0;
            m.kind = HugeKind::Free;
            self.free.insert(j);
        }
        self.stats.large_huge_pages -= k;
    }

    /// Grows or shrinks a large-object span to `new_pages` without moving it,
    /// if the pages around it allow. Returns whether it did.
    ///
    /// # Safety
    /// `span` is a live large-object span (class 0) of this heap.
    pub unsafe fn resize_in_place(&mut self, span: *mut Span, new_pages: usize) -> bool {
        // SAFETY: the caller passes a live span.
        let sp = unsafe { &mut *span };
        let n = sp.npages as usize;
        if new_pages == n {
            return true;
        }
        if new_pages == 0 {
            return false;
        }
        let (idx, page) = self.locate(sp.start);
        // SAFETY: `idx` is inside the table; heap lock held.
        let kind = unsafe { self.metas.get_mut(idx) }.kind;
        if kind == HugeKind::Filler {
            if new_pages < n {
                self.filler
                    .put_pages(&mut self.metas, idx as u32, page + new_pages, n - new_pages);
            } else {
                let extra = new_pages - n;
                if !self
                    .filler
                    .pages_free(&self.metas, idx as u32, page + n, extra)
                {
                    return false;
                }
                self.filler
                    .claim_pages(&mut self.metas, idx as u32, page + n, extra);
                self.mark_dirty(idx, page + n, extra);
            }
        } else {
            let k_old = n.div_ceil(PAGES_PER_HUGE);
            let k_new = new_pages.div_ceil(PAGES_PER_HUGE);
            if k_new > k_old {
                let end = idx + k_new;
                if end > self.top || (idx + k_old..end).any(|j| !self.free.contains(j)) {
                    return false;
                }
                for j in idx + k_old..end {
                    self.free.remove(j);
                    // SAFETY: `j < top`; heap lock held.
                    unsafe { self.metas.get_mut(j) }.kind = HugeKind::LargeTail;
                }
                self.stats.large_huge_pages += k_new - k_old;
            } else if k_new < k_old {
                self.release_huge_pages(idx + k_new, k_old - k_new);
            }
            let mut left = new_pages;
            for j in idx..idx + k_new {
                // SAFETY: `j < top`; heap lock held.
                let m = unsafe { self.metas.get_mut(j) };
                let used = left.min(PAGES_PER_HUGE);
                left -= used;
                m.used = Default::default();
                m.used.set_range(0, used);
                m.nused = used as u16;
                self.mark_dirty(j, 0, used);
            }
        }
        self.stats.pages_in_use = self.stats.pages_in_use + new_pages - n;
        sp.npages = new_pages as u32;
        true
    }

    /// Checks huge page `idx`'s own record: its used and dirty bitmaps
    /// against its counters and kind, and its membership in the free set.
    /// The part of [`Self::check`] that needs no walk over the others.
    pub fn check_huge_page_meta(&self, idx: usize) -> Result<(), &'static str> {
        if idx >= self.top {
            return Err("huge page above the top");
        }
        // SAFETY: `idx < top` (checked).
        let m = unsafe { self.metas.get(idx) };
        if m.used.and_not(&m.dirty).count_ones() != 0 && m.kind == HugeKind::Filler {
            return Err("a used filler page is not marked dirty");
        }
        if m.used.count_ones() != m.nused as usize {
            return Err("nused disagrees with the used bitmap");
        }
        match m.kind {
            HugeKind::Free => {
                if !self.free.contains(idx) || m.nused != 0 {
                    return Err("free huge page not in the free set, or with used pages");
                }
            }
            HugeKind::Filler => {
                if m.nused == 0 || m.longest_free as usize != m.used.longest_clear_run() {
                    return Err("filler huge page empty or with a stale longest run");
                }
            }
            HugeKind::Large | HugeKind::LargeTail => {
                if m.nused == 0 {
                    return Err("large huge page with no used page");
                }
            }
        }
        if self.free.contains(idx) && m.kind != HugeKind::Free {
            return Err("huge page in the free set is in use");
        }
        Ok(())
    }

    /// Checks the heap's structural invariants; returns a description of the
    /// first violation. For tests and fuzzing.
    pub fn check(&self) -> Result<(), &'static str> {
        self.pool.check()?;
        let mut filler = 0;
        let mut free = 0;
        let mut used_pages = 0;
        let mut dirty = 0;
        for i in 0..self.top {
            self.check_huge_page_meta(i)?;
            // SAFETY: `i < top`.
            let m = unsafe { self.metas.get(i) };
            dirty += m.dirty.count_ones();
            used_pages += m.nused as usize;
            match m.kind {
                HugeKind::Free => free += 1,
                HugeKind::Filler => filler += 1,
                HugeKind::Large | HugeKind::LargeTail => {}
            }
        }
        if filler != self.filler.count || free != self.free.count {
            return Err("filler or free-set count is off");
        }
        if used_pages != self.stats.pages_in_use {
            return Err("pages_in_use disagrees with the bitmaps");
        }
        if dirty != self.stats.dirty_pages {
            return Err("dirty_pages disagrees with the bitmaps");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::{Call, FakeOs};
    use crate::units::PAGE_SIZE;

    fn heap(hps: usize) -> PageHeap<FakeOs> {
        let mut h = PageHeap::new(FakeOs::default());
        assert!(h.init(hps * HUGE_SIZE, HUGE_SIZE));
        h
    }

    fn run(h: &mut PageHeap<FakeOs>, n: usize, align: usize) -> *mut Span {
        let r = h.alloc_run(n, align, 1).expect("memory");
        h.check().unwrap();
        r.span
    }

    fn start(s: *mut Span) -> usize {
        // SAFETY: live span in a test.
        unsafe { (*s).start }
    }

    #[test]
    fn packs_spans_into_one_huge_page_then_the_next() {
        let mut h = heap(64);
        let base = h.view().base;
        let spans: Vec<_> = (0..600).map(|_| run(&mut h, 1, 1)).collect();
        // 512 one-page spans fill the first huge page before the second is used.
        assert!(spans[..512].iter().all(|&s| start(s) < base + HUGE_SIZE));
        assert!(spans[512..].iter().all(|&s| start(s) >= base + HUGE_SIZE));
        assert_eq!(h.filler_huge_pages(), 2);
        assert_eq!(h.view().span_of(start(spans[7]) + 100), spans[7]);
        // Commits happen in GROW_HUGE_PAGES steps, never per span.
        let commits =
            h.os.calls
                .borrow()
                .iter()
                .filter(|c| matches!(c, Call::Commit { .. }))
                .count();
        assert_eq!(commits, 1);
    }

    #[test]
    fn class_homes_keep_each_class_s_spans_next_to_each_other() {
        let mut h = heap(64);
        h.set_class_homes(true);
        // Two classes' spans made in turn, then a large run.
        let mut by_class = [Vec::new(), Vec::new()];
        let small = |h: &mut PageHeap<FakeOs>, class: u8| {
            let r = h.alloc_run(1, 1, class).expect("memory");
            r.span
        };
        for _ in 0..600 {
            for (c, spans) in by_class.iter_mut().enumerate() {
                spans.push(small(&mut h, 1 + c as u8));
            }
        }
        let large = h.alloc_run(3, 1, 0).expect("memory").span;
        h.check().unwrap();
        for spans in &by_class {
            // Neighbours: each span starts where the previous one ended,
            // except where a home filled and the next began.
            let breaks = spans
                .windows(2)
                .filter(|w| start(w[1]) != start(w[0]) + PAGE_SIZE)
                .count();
            assert_eq!(breaks, 1, "600 one-page spans over two homes");
        }
        // Each huge page holds one class only, and the large run has a
        // huge page of its own.
        let base = h.view().base;
        let hp = |s: *mut Span| (start(s) - base) / HUGE_SIZE;
        let homes: Vec<std::collections::HashSet<usize>> = by_class
            .iter()
            .map(|v| v.iter().map(|&s| hp(s)).collect())
            .collect();
        assert!(homes[0].is_disjoint(&homes[1]));
        assert!(!homes[0].contains(&hp(large)) && !homes[1].contains(&hp(large)));
        // Freed spans of a full home leave holes; the class's next span
        // goes to its current home while that has room.
        // SAFETY: live spans of this heap, freed once.
        unsafe { h.free_run(by_class[0][3]) };
        let next = small(&mut h, 1);
        assert_eq!(hp(next), hp(by_class[0][599]));
        h.check().unwrap();
    }

    #[test]
    fn freed_huge_page_returns_whole_and_is_reused() {
        let mut h = heap(64);
        let spans: Vec<_> = (0..1024).map(|_| run(&mut h, 1, 1)).collect();
        for &s in &spans[..512] {
            // SAFETY: live span of this heap.
            unsafe { h.free_run(s) };
        }
        h.check().unwrap();
        assert_eq!(h.filler_huge_pages(), 1);
        assert_eq!(h.free_huge_pages(), GROW_HUGE_PAGES - 1);
        // Pages that held data are not reported clean.
        let r = h.alloc_run(4, 1, 1).unwrap();
        assert!(!r.clean, "reused pages may hold old data");
        let fresh = h.alloc_run(600, 1, 0).unwrap();
        assert!(fresh.clean, "never-used huge pages are zero");
    }

    #[test]
    fn fullest_first_across_huge_pages() {
        let mut h = heap(64);
        let a: Vec<_> = (0..1024).map(|_| run(&mut h, 1, 1)).collect();
        let base = h.view().base;
        // Leave huge page 0 with 10 free pages and huge page 1 with 400 free.
        for &s in a[..10].iter().chain(a[512..912].iter()) {
            // SAFETY: live spans.
            unsafe { h.free_run(s) };
        }
        let next = run(&mut h, 1, 1);
        assert!(
            start(next) < base + HUGE_SIZE,
            "went to the emptier huge page"
        );
    }

    #[test]
    fn large_runs_take_whole_aligned_huge_pages() {
        let mut h = heap(64);
        let base = h.view().base;
        let small = run(&mut h, 1, 1);
        let big = h.alloc_run(3 * PAGES_PER_HUGE + 1, 1, 0).unwrap().span;
        h.check().unwrap();
        assert_eq!(start(big) % HUGE_SIZE, 0);
        assert_eq!(h.stats.large_huge_pages, 4);
        let aligned = h.alloc_run(1, 4 * PAGES_PER_HUGE, 0).unwrap().span;
        assert_eq!((start(aligned) - base) % (4 * HUGE_SIZE), 0);
        let page_aligned = h.alloc_run(3, 64, 0).unwrap().span;
        assert_eq!(start(page_aligned) % (64 * PAGE_SIZE), 0);
        // SAFETY: live spans.
        unsafe {
            h.free_run(big);
            h.free_run(aligned);
            h.free_run(page_aligned);
            h.free_run(small);
        }
        h.check().unwrap();
        assert_eq!(h.stats.pages_in_use, 0);
        assert_eq!(h.free_huge_pages(), h.committed_huge_pages());
    }

    #[test]
    fn resize_in_place_grows_and_shrinks() {
        let mut h = heap(64);
        let s = h.alloc_run(10, 1, 0).unwrap().span;
        // SAFETY: live span.
        unsafe {
            assert!(h.resize_in_place(s, 20));
            h.check().unwrap();
            assert!(h.resize_in_place(s, 5));
            h.check().unwrap();
            let blocker = run(&mut h, 1, 1);
            assert_eq!(start(blocker), start(s) + 5 * PAGE_SIZE);
            assert!(!h.resize_in_place(s, 6));
            let big = h.alloc_run(600, 1, 0).unwrap().span;
            assert!(h.resize_in_place(big, 1100));
            assert_eq!(h.stats.large_huge_pages, 3);
            assert!(h.resize_in_place(big, 513));
            assert_eq!(h.stats.large_huge_pages, 2);
            h.check().unwrap();
        }
    }

    #[test]
    fn refusal_returns_none_and_heap_stays_usable() {
        let mut h = heap(64);
        *h.os.refuse_commit.borrow_mut() = true;
        assert!(h.alloc_run(1, 1, 1).is_none());
        assert!(h.stats.os_refusals > 0);
        *h.os.refuse_commit.borrow_mut() = false;
        assert!(h.alloc_run(1, 1, 1).is_some());
        // More than reserved: None, not a panic.
        assert!(h.alloc_run(65 * PAGES_PER_HUGE, 1, 0).is_none());
        assert!(h.alloc_run(usize::MAX, 2, 0).is_none());
        h.check().unwrap();
    }
}
