//! Size-less entry points for the C allocation ABI (the `LD_PRELOAD`
//! library in `preload/` wraps them): `free` and `realloc` without a
//! `Layout`, exact usable sizes, and validation of the pointer freed.
//!
//! Every block handed out here is aligned to at least 16 bytes, like glibc's
//! `malloc` on x86-64. A pointer is looked up in the page map: one outside
//! the heap, not at an object start, or (once it reaches its span) already
//! free is reported as misuse.

use crate::block::{self, Kind};
use crate::global;
use crate::os::linux;
use crate::size_class::{SizeClass, CLASS_PAGES, CLASS_RECIP};
use crate::units::{PAGE_SHIFT, PAGE_SIZE};
use core::ptr;

/// Alignment of every block from [`malloc`].
pub const MIN_ALIGN: usize = 16;

/// Makes detected misuse (double free, foreign pointer) abort the process
/// after its one-line message, as C programs expect, instead of ignoring the
/// free.
pub fn set_abort_on_misuse(abort: bool) {
    crate::misuse::set_abort(abort);
}

/// Reports that the C entry point `what` (such as `b"free"`) was given `p`,
/// which is not a block of this allocator, in one line on stderr, then
/// aborts (what glibc does for an invalid pointer).
pub fn abort_misuse(what: &[u8], p: *mut u8) -> ! {
    crate::misuse::abort_foreign(what, p as usize)
}

/// The calling thread's C `errno`.
pub fn errno() -> i32 {
    linux::errno()
}

/// Sets the calling thread's C `errno` (`ENOMEM` after a failed allocation,
/// `EINVAL` for a bad alignment: the C library sets these).
pub fn set_errno(value: i32) {
    linux::set_errno(value);
}

/// A block of `size` bytes aligned to `align` (at least [`MIN_ALIGN`] is
/// applied), zeroed if `zero`; null when out of memory or when `align` is
/// not a power of two.
///
/// ```
/// let p = hugeguard::raw::alloc_aligned(100, 4096, true);
/// assert!(!p.is_null() && p as usize % 4096 == 0);
/// assert!(hugeguard::raw::alloc_aligned(100, 48, false).is_null());
/// // SAFETY: `p` came from this module and is not used again.
/// unsafe { hugeguard::raw::free(p) };
/// ```
#[inline]
pub fn alloc_aligned(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    // Sizes below the alignment take the smallest class that keeps it (the
    // class table's fast lookup then applies: no search for an aligned
    // class, which tiny C requests hit on every call).
    block::alloc(size.max(MIN_ALIGN), align.max(MIN_ALIGN), zero)
}

/// `malloc(size)`.
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    alloc_aligned(size, MIN_ALIGN, false)
}

/// What `p` is to this allocator: the kind of the block it starts, or
/// `None` when it is not a block start of ours (outside the heap, inside an
/// object, or on a page no span owns).
///
/// A small object is found from its page's tag alone (one load): the tag
/// gives the class and where the span starts, and the offset from there
/// must be a whole number of objects inside the span.
#[inline(always)]
fn classify(p: *mut u8) -> Option<Kind> {
    let tag = global::page_tag(p as usize);
    let Some(class) = SizeClass::from_index((tag & 0xff) as usize) else {
        return classify_large(p);
    };
    let c = class.index();
    let off = (p as usize & (PAGE_SIZE - 1)) + ((tag as usize >> 8) << PAGE_SHIFT);
    // Exact division by multiplication: offsets are below 2^18 (spans are
    // at most 64 pages) and CLASS_RECIP = ceil(2^32 / size).
    let size = class.size();
    let i = (off as u64 * CLASS_RECIP[c]) >> 32;
    let whole = i as usize * size == off;
    let inside = off + size <= (CLASS_PAGES[c] as usize) << PAGE_SHIFT;
    (whole && inside).then_some(Kind::Small(class))
}

/// [`classify`] for a page without a small-object tag: a large object's
/// first page, or not a block of ours.
#[cold]
#[inline(never)]
fn classify_large(p: *mut u8) -> Option<Kind> {
    let span = global::view().span_of(p as usize);
    if span.is_null() {
        return None;
    }
    // SAFETY: a non-null page-map entry is a live span record.
    let s = unsafe { &*span };
    (s.class == 0 && s.start == p as usize).then_some(Kind::Large)
}

/// Frees `p` (null is ignored). Returns `false` if `p` is not a block of
/// this allocator (nothing is done then).
///
/// # Safety
/// `p` is null, or was returned by this module and is not used afterwards.
#[inline]
pub unsafe fn free(p: *mut u8) -> bool {
    if p.is_null() {
        return true;
    }
    match classify(p) {
        // SAFETY: `p` is a block start of this kind that the caller gives up.
        Some(kind) => unsafe { block::free(p, kind) },
        None => false,
    }
}

/// Usable bytes of block `p` (0 for null or a pointer that is not a block).
///
/// # Safety
/// `p` is null, lies outside this allocator's heap, or is a live block of
/// this allocator. The lookup reads the span record of `p`'s page without a
/// lock, which is sound only while no other thread can free or reuse that
/// span (any pointer into the heap that is not a live block may be in one
/// being changed).
pub unsafe fn usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    classify(p).map_or(0, |kind| block::usable_size(p, kind))
}

/// Whether `p` is a block of this allocator.
///
/// # Safety
/// As for [`usable_size`]: the answer is `false` for a pointer outside the
/// heap, and `true` for a live block; a pointer into the heap that is not a
/// live block may race with another thread changing its span.
pub unsafe fn owns(p: *mut u8) -> bool {
    classify(p).is_some()
}

/// `realloc(p, size)` for non-null `p` and non-zero `size`: in place when
/// the class or page run allows, else allocate, copy, free. Null (with `p`
/// untouched) when out of memory or when `p` is not a block of this
/// allocator (check with [`owns`] first to tell the two apart).
///
/// # Safety
/// `p` was returned by this module and is live.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    let Some(kind) = classify(p) else {
        return ptr::null_mut();
    };
    let old = block::usable_size(p, kind);
    // SAFETY: `p` is a live block of this kind (the caller's contract and
    // the page map agree), allocated with `MIN_ALIGN`; all `old` usable
    // bytes may be the caller's data.
    unsafe { block::resize(p, kind, old, size.max(1), MIN_ALIGN) }
}
