//! Allocating, freeing and resizing one block once its size class (or
//! largeness) is known: the single implementation behind both the
//! `GlobalAlloc` slow paths (which know a block's `Layout`) and the size-less
//! C entry points in `raw` (which look a pointer up in the page map first).

pub(crate) use crate::lookup::Kind;
use crate::profile::table as sampled;
use crate::{cache, large};
use core::ptr;

/// A block of at least `size` bytes aligned to `align` (a power of two),
/// zeroed if `zero`; null when out of memory.
#[inline]
pub(crate) fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    match Kind::of(size, align) {
        Kind::Small(class) => {
            let p = cache::alloc(class);
            if zero && !p.is_null() {
                // SAFETY: `p` holds at least `size` bytes.
                unsafe { ptr::write_bytes(p, 0, size) };
            }
            p
        }
        Kind::Large => large::alloc(size, align, zero),
        // `Kind::of` never says this.
        Kind::Sampled => ptr::null_mut(),
    }
}

/// [`alloc`] as a trial of the heap profile's sampling, for the entries'
/// slow paths: a small block pops its class's countdown
/// (`cache::alloc_slow_or`), a large one counts its bytes
/// (`cache::sample_due`). When the countdown ran out, returns what `due`
/// (`profile::alloc_due`) returns, called through `black_box` (never as a
/// tail call: the profile's stack starts above the caller's frame).
#[inline]
pub(crate) fn alloc_counted(
    size: usize,
    align: usize,
    zero: bool,
    due: fn(usize, usize, bool) -> *mut u8,
) -> *mut u8 {
    match Kind::of(size, align) {
        Kind::Small(class) => cache::alloc_slow_or::<false>(size, align, class, zero, due),
        _ if cache::sample_due(size) => core::hint::black_box(due(size, align, zero)),
        Kind::Large => large::alloc(size, align, zero),
        // `Kind::of` never says this.
        Kind::Sampled => ptr::null_mut(),
    }
}

/// Frees block `p` of kind `kind`. Returns `false` if `p` turned out not to
/// be a large object start (nothing is done then).
///
/// # Safety
/// `p` is a live block of kind `kind` that the caller gives up.
#[inline]
pub(crate) unsafe fn free(p: *mut u8, kind: Kind) -> bool {
    match kind {
        Kind::Small(class) => {
            // SAFETY: forwarded from the caller.
            unsafe { cache::dealloc(p, class) };
            true
        }
        Kind::Large => {
            if sampled::maybe_large_sample(p) {
                sampled::forget_large(p);
            }
            // SAFETY: forwarded from the caller; a pointer that is not a
            // large object start is ignored rather than corrupting the heap.
            unsafe { large::dealloc(p) }
        }
        Kind::Sampled => sampled::free_small(p),
    }
}

/// Usable bytes of live block `p` of kind `kind`.
pub(crate) fn usable_size(p: *mut u8, kind: Kind) -> usize {
    match kind {
        Kind::Small(class) => class.size(),
        Kind::Large => large::usable_size(p),
        Kind::Sampled => sampled::small_usable(p),
    }
}

/// Resizes live block `p` of kind `kind`, whose first `old_size` bytes are
/// the caller's data, to `new_size` bytes aligned to `align`: in place when
/// the class stays the same or the large object's page run can grow or
/// shrink where it is; otherwise a new block, the data copied, the old block
/// freed. Null (with `p` untouched) when out of memory.
///
/// # Safety
/// `p` is a live block of kind `kind`, allocated with alignment `align`;
/// `old_size` is at most its usable size; `new_size` is not zero.
pub(crate) unsafe fn resize(
    p: *mut u8,
    kind: Kind,
    old_size: usize,
    new_size: usize,
    align: usize,
) -> *mut u8 {
    let new_kind = Kind::of(new_size, align);
    match kind {
        Kind::Small(_) if new_kind == kind => return p,
        // SAFETY: `p` is a live large object. A sampled one moves, so its
        // record keeps the size it was sampled at.
        Kind::Large
            if new_kind == Kind::Large
                && !sampled::is_large_sampled(p)
                && unsafe { large::resize_in_place(p, new_size) } =>
        {
            return p
        }
        _ => {}
    }
    let new = alloc(new_size, align, false);
    if !new.is_null() {
        // SAFETY: both blocks are live and distinct; `old_size` bytes of `p`
        // are the caller's and `new` holds at least `new_size`.
        unsafe {
            ptr::copy_nonoverlapping(p, new, old_size.min(new_size));
            free(p, kind);
        }
    }
    new
}
