//! Size-less entry points for the C allocation ABI (the `LD_PRELOAD`
//! library in `preload/` wraps them): `free` and `realloc` without a
//! `Layout`, exact usable sizes, and validation of the pointer freed.
//!
//! Every block handed out here is aligned to at least 16 bytes, like glibc's
//! `malloc` on x86-64. A pointer is looked up in the page map: one outside
//! the heap, not at an object start, or (once it reaches its span) already
//! free is reported as misuse.

use crate::os::linux;
use crate::size_class::{class_for, CLASS_RECIP, CLASS_SIZE};
use crate::{cache, global, large};
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
    let align = align.max(MIN_ALIGN);
    let size = size.max(1);
    let class = class_for(size, align);
    if class == 0 {
        return large::alloc(size, align, zero);
    }
    let p = cache::alloc(class);
    if zero && !p.is_null() {
        // SAFETY: the block holds at least `size` bytes.
        unsafe { ptr::write_bytes(p, 0, size) };
    }
    p
}

/// `malloc(size)`.
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    alloc_aligned(size, MIN_ALIGN, false)
}

/// What a pointer is to this allocator.
enum Block {
    Small(usize),
    Large,
    NotOurs,
}

fn classify(p: *mut u8) -> Block {
    let span = global::view().span_of(p as usize);
    if span.is_null() {
        return Block::NotOurs;
    }
    // SAFETY: a non-null page-map entry is a live span record.
    let s = unsafe { &*span };
    let class = s.class as usize;
    if class == 0 {
        return if s.start == p as usize {
            Block::Large
        } else {
            Block::NotOurs
        };
    }
    match s.object_index(p as usize, CLASS_SIZE[class] as usize, CLASS_RECIP[class]) {
        Some(_) => Block::Small(class),
        None => Block::NotOurs,
    }
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
        // SAFETY: `p` is an object start of `class` that the caller gives up.
        Block::Small(class) => unsafe { cache::dealloc(p, class) },
        // SAFETY: `p` is a large object start that the caller gives up.
        Block::Large => return unsafe { large::dealloc(p) },
        Block::NotOurs => return false,
    }
    true
}

/// Usable bytes of block `p` (0 for null or a pointer that is not a block).
pub fn usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    match classify(p) {
        Block::Small(class) => CLASS_SIZE[class] as usize,
        Block::Large => large::usable_size(p),
        Block::NotOurs => 0,
    }
}

/// Whether `p` is a block of this allocator.
pub fn owns(p: *mut u8) -> bool {
    !matches!(classify(p), Block::NotOurs)
}

/// `realloc(p, size)` for non-null `p` and non-zero `size`: in place when
/// the class or page run allows, else allocate, copy, free. Null (with `p`
/// untouched) when out of memory or when `p` is not a block of this
/// allocator (check with [`owns`] first to tell the two apart).
///
/// # Safety
/// `p` was returned by this module and is live.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    let old = match classify(p) {
        Block::Small(class) => {
            if class_for(size.max(1), MIN_ALIGN) == class {
                return p;
            }
            CLASS_SIZE[class] as usize
        }
        Block::Large => {
            // SAFETY: `p` is a live large object.
            if class_for(size, MIN_ALIGN) == 0 && unsafe { large::resize_in_place(p, size) } {
                return p;
            }
            large::usable_size(p)
        }
        Block::NotOurs => return ptr::null_mut(),
    };
    let new = malloc(size);
    if !new.is_null() {
        // SAFETY: both blocks are live and distinct; `old` is `p`'s usable size.
        unsafe {
            ptr::copy_nonoverlapping(p, new, old.min(size));
            free(p);
        }
    }
    new
}
