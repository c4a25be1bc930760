//! Huge pages: the per-2 MiB bookkeeping every span lives in, and the filler
//! that chooses which huge page a new span goes into.
//!
//! Each huge page of the heap has a [`HugePageMeta`] in a flat table indexed by
//! `(address - heap base) >> 21`. It records which 4 KiB pages are in use, which
//! may hold data (so fresh or released pages need no zeroing), what the huge
//! page is used for ([`HugeKind`]), its release state ([`HugeState`]), and the
//! span that owns each page.

pub mod filler;
pub mod set;

use crate::bitmap::PageBitmap;
use crate::span::Span;
use crate::units::PAGES_PER_HUGE;
use core::sync::atomic::AtomicPtr;

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
///
/// Protected by the page heap lock, except `spans`, which is written under
/// that lock and read without it by `span_of` for pages the reader owns.
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
    /// Owning span of each page: every page of a small-object span, the first
    /// page only of a large-object span.
    pub spans: [AtomicPtr<Span>; PAGES_PER_HUGE],
}

/// The flat table of huge-page records.
#[derive(Clone, Copy)]
pub struct MetaTable {
    base: *mut HugePageMeta,
    len: usize,
}

// SAFETY: the table is plain memory; access is serialised by the page heap
// lock except for the atomic `spans` entries.
unsafe impl Send for MetaTable {}
// SAFETY: see `Send`.
unsafe impl Sync for MetaTable {}

impl MetaTable {
    pub const fn empty() -> Self {
        MetaTable {
            base: core::ptr::null_mut(),
            len: 0,
        }
    }

    /// # Safety
    /// `base` points to `len` zero-initialised or valid records that live as
    /// long as the table.
    pub unsafe fn new(base: *mut HugePageMeta, len: usize) -> Self {
        MetaTable { base, len }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Raw pointer to record `idx`.
    #[inline]
    pub fn ptr(&self, idx: usize) -> *mut HugePageMeta {
        debug_assert!(idx < self.len);
        self.base.wrapping_add(idx)
    }

    /// Record `idx`.
    ///
    /// # Safety
    /// `idx < len`, and the caller holds the page heap lock (or is the only
    /// user), so no other `&mut` to this record exists.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self, idx: usize) -> &mut HugePageMeta {
        // SAFETY: guaranteed by the caller.
        unsafe { &mut *self.ptr(idx) }
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
    }
}
