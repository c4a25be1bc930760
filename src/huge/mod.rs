//! Huge pages: the per-2 MiB bookkeeping every span lives in, and the filler
//! that chooses which huge page a new span goes into.
//!
//! Each huge page of the heap has a [`HugePageMeta`] in a flat table indexed by
//! `(address - heap base) >> 21`. It records which 4 KiB pages are in use, which
//! may hold data (so fresh or released pages need no zeroing), what the huge
//! page is used for ([`HugeKind`]) and its release state ([`HugeState`]). The
//! span that owns each page is in a separate table, the [`PageMap`], which
//! lock-free readers use while the records are the heap lock's.

pub mod filler;
pub mod set;

use crate::bitmap::PageBitmap;
use crate::span::Span;
use crate::units::{PAGES_PER_HUGE, PAGE_SHIFT};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// What a huge page holds. All-zero metadata reads as `Free`.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HugeKind {
    /// Not in use; in the page heap's free set.
    Free = 0,
    /// Spans of up to 512 pages, packed by the filler.
    Filler = 1,
    /// First huge page of a large object of one or more whole huge pages.
    Large = 2,
    /// A following huge page of such a large object.
    LargeTail = 3,
}

/// Release state of a huge page, as the kernel sees it.
///
/// Transitions (flags only ever change on the whole aligned 2 MiB):
/// ```text
///   Backed ──all 512 pages free, MADV_DONTNEED on the 2 MiB──────────> Released
///   Backed ──MADV_NOHUGEPAGE on the 2 MiB, then DONTNEED free pages──> Partial
///   Partial ──more free pages released (still NOHUGEPAGE)────────────> Partial
///   Partial ──all pages free and released────────────────────────────> Released
///   Partial ──dense again: MADV_HUGEPAGE (then maybe MADV_COLLAPSE)──> Backed
///   Released ──reused──────────────────────────────────────────────────> Backed
/// ```
/// Allocation only moves `Released` to `Backed` (or to `Partial` when the
/// huge page still carries NOHUGEPAGE); the release policy drives the other
/// transitions. All-zero metadata reads as `Backed`. Whether NOHUGEPAGE is
/// set is the separate flag `nohuge`: with `max_ptes_none = 0` or THP
/// disabled, partial release needs no marking.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HugeState {
    /// Eligible for THP; pages in use or free but resident.
    Backed = 0,
    /// Marked `MADV_NOHUGEPAGE`; some free pages returned to the OS.
    Partial = 1,
    /// Every page returned to the OS.
    Released = 2,
}

/// "No huge page" in the filler's intrusive lists.
pub const NIL: u32 = u32::MAX;

/// Bookkeeping for one 2 MiB huge page. Zeroed memory is a valid, free entry.
/// Protected by the page heap lock (the table hands out `&mut` only through
/// `&mut MetaTable`, which the heap owns). The owning span of each page lives
/// apart, in the lock-free [`PageMap`].
#[repr(C)]
pub struct HugePageMeta {
    /// Pages handed out in spans.
    pub used: PageBitmap,
    /// Pages that may hold non-zero data (touched since mapped or released).
    pub dirty: PageBitmap,
    /// Number of set bits in `used`.
    pub nused: u16,
    /// Longest run of free pages (filler huge pages only).
    pub longest_free: u16,
    pub kind: HugeKind,
    pub state: HugeState,
    /// Whether the 2 MiB carries `MADV_NOHUGEPAGE` (set before any partial
    /// release; cleared by `MADV_HUGEPAGE` when dense again).
    pub nohuge: bool,
    /// Whether a background `MADV_COLLAPSE` succeeded since the last release
    /// inside this huge page.
    pub collapsed: bool,
    /// Release clock (ms, wrapping) of the last allocation or free here.
    pub touched_at: u32,
    /// Whether the release policy has seen the huge page dense, and since when.
    pub dense_seen: bool,
    pub dense_since: u32,
    /// Filler bucket links.
    pub next: u32,
    pub prev: u32,
    /// In mesh mode, the size class this filler huge page was taken for
    /// as its home (0: none; `u8::MAX`: large objects' runs).
    pub home: u8,
    /// Units frozen for meshing inside this huge page (mesh mode): while any
    /// is, the release policy neither re-marks nor collapses it.
    pub frozen_units: u16,
}

/// The owning span of each page of one huge page: every page of a
/// small-object span, the first page only of a large-object span.
pub type PageSpans = [AtomicPtr<Span>; PAGES_PER_HUGE];

const _: () = assert!(core::mem::size_of::<PageSpans>() == crate::units::PAGE_SIZE);

/// The tag of each page of one huge page (see [`page_tag`]).
pub type PageTags = [AtomicU32; PAGES_PER_HUGE];

/// A page's tag: for a page of a small-object span, its size class (low
/// byte, never 0) and the page's offset from the span's start in bytes (the
/// bits from [`PAGE_SHIFT`] up: a whole number of pages); 0 for every other
/// page. One load gives a size-less `free` the class and the span's start,
/// without reading the span record; the pointer's offset in the span is
/// the tag's high bits joined to its low ones, with no shift.
#[inline]
pub const fn page_tag(class: u8, page_in_span: usize) -> u32 {
    class as u32 | (page_in_span as u32) << PAGE_SHIFT
}

/// The page-to-span map and the page tags: written under the page heap
/// lock, read without it (`HeapView::span_of`, `view::page_tag`). Every
/// span entry is null or a live span record, which `set`'s contract keeps
/// true. Copied freely: it is a view of memory that lives for the rest of
/// the process.
#[derive(Clone, Copy)]
pub struct PageMap {
    base: *const PageSpans,
    tags: *const PageTags,
    len: usize,
}

// SAFETY: the entries are atomics; the memory lives for the process.
unsafe impl Send for PageMap {}
// SAFETY: see `Send`.
unsafe impl Sync for PageMap {}

impl PageMap {
    /// A map of no huge pages (before the heap exists).
    pub const fn empty() -> Self {
        PageMap {
            base: core::ptr::null(),
            tags: core::ptr::null(),
            len: 0,
        }
    }

    /// # Safety
    /// `base` and `tags` each point to `len` zeroed (all null) or valid
    /// entries that live for the rest of the process.
    pub unsafe fn new(base: *const PageSpans, tags: *const PageTags, len: usize) -> Self {
        PageMap { base, tags, len }
    }

    /// Huge pages covered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The span entries' memory, for publishing the map to lock-free readers.
    pub fn as_ptr(&self) -> *const PageSpans {
        self.base
    }

    /// The tags' memory, for publishing them to lock-free readers.
    pub fn tags_ptr(&self) -> *const PageTags {
        self.tags
    }

    /// The span owning page `page` of huge page `idx` (null when none, or
    /// when the indexes are out of range).
    #[inline]
    pub fn span(&self, idx: usize, page: usize) -> *mut Span {
        if idx >= self.len || page >= PAGES_PER_HUGE {
            return core::ptr::null_mut();
        }
        // SAFETY: `idx < len` entries are valid for the process's life.
        unsafe { (*self.base.add(idx))[page].load(Ordering::Acquire) }
    }

    /// The tag of page `page` of huge page `idx` (0 when out of range).
    #[inline]
    pub fn tag(&self, idx: usize, page: usize) -> u32 {
        if idx >= self.len || page >= PAGES_PER_HUGE {
            return 0;
        }
        // SAFETY: `idx < len` entries are valid for the process's life.
        unsafe { (*self.tags.add(idx))[page].load(Ordering::Relaxed) }
    }

    /// Whether no page of huge page `idx` has an owner (`idx < len`).
    pub fn all_unowned(&self, idx: usize) -> bool {
        (0..PAGES_PER_HUGE).all(|p| self.span(idx, p).is_null())
    }

    /// Where huge page `idx`'s span entries live: one page of metadata of
    /// their own (`idx < len`; the heap lays the map out page-aligned).
    pub fn entries_page(&self, idx: usize) -> usize {
        debug_assert!(idx < self.len);
        self.base as usize + idx * core::mem::size_of::<PageSpans>()
    }

    /// Records `span` (or null) as the owner of page `page` of huge page
    /// `idx`, with tag `tag` ([`page_tag`], or 0).
    ///
    /// # Safety
    /// The caller holds the page heap lock; `idx < len`; `span` is null or a
    /// live span record that owns the page (readers dereference it); a
    /// non-zero tag describes that span truthfully.
    #[inline]
    pub unsafe fn set(&self, idx: usize, page: usize, span: *mut Span, tag: u32) {
        debug_assert!(idx < self.len && page < PAGES_PER_HUGE);
        // SAFETY: `idx < len` (the caller's contract).
        unsafe {
            (*self.tags.add(idx))[page].store(tag, Ordering::Relaxed);
            (*self.base.add(idx))[page].store(span, Ordering::Release);
        }
    }
}

/// The flat table of huge-page records, owned by the page heap.
pub struct MetaTable {
    base: *mut HugePageMeta,
    len: usize,
}

// SAFETY: the table is plain memory owned by the page heap; `&mut` access
// needs `&mut MetaTable`, so the heap lock serialises it.
unsafe impl Send for MetaTable {}

impl MetaTable {
    /// A table of no records (before the heap exists).
    pub const fn empty() -> Self {
        MetaTable {
            base: core::ptr::null_mut(),
            len: 0,
        }
    }

    /// # Safety
    /// `base` points to `len` zero-initialised or valid records that live as
    /// long as the table, and that nothing else accesses.
    pub unsafe fn new(base: *mut HugePageMeta, len: usize) -> Self {
        MetaTable { base, len }
    }

    /// Record `idx`.
    ///
    /// # Safety
    /// `idx < len`.
    #[inline]
    pub unsafe fn get(&self, idx: usize) -> &HugePageMeta {
        debug_assert!(idx < self.len);
        // SAFETY: in bounds (the caller's contract); no `&mut` can coexist
        // with this shared borrow of the table.
        unsafe { &*self.base.add(idx) }
    }

    /// Record `idx`, to change.
    ///
    /// # Safety
    /// `idx < len`.
    #[inline]
    pub unsafe fn get_mut(&mut self, idx: usize) -> &mut HugePageMeta {
        debug_assert!(idx < self.len);
        // SAFETY: in bounds (the caller's contract); the exclusive borrow of
        // the table makes this the only reference to the record.
        unsafe { &mut *self.base.add(idx) }
    }
}

impl HugePageMeta {
    /// Resets the record for a huge page entering the filler.
    pub fn start_filler(&mut self) {
        self.used = PageBitmap::new();
        self.nused = 0;
        self.longest_free = PAGES_PER_HUGE as u16;
        self.kind = HugeKind::Filler;
        self.next = NIL;
        self.prev = NIL;
        self.home = 0;
    }
}
