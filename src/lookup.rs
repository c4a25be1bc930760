//! What a pointer is to this allocator: the kind of block it starts (an
//! object of a size class, or a large object), found in the page map
//! without taking a lock. Shared by the C entry points (`raw`), the block
//! operations (`block`) and hardened mode's checks (`harden`), so none of
//! them reaches into another for it.

use crate::size_class::{class_for, object_start, SizeClass};
use crate::units::PAGE_SIZE;

/// What a live block is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An object of this size class.
    Small(SizeClass),
    /// A large object (a page run of its own).
    Large,
    /// A small object the heap profile sampled: a slot of its own
    /// (`profile::table`).
    Sampled,
}

impl Kind {
    /// The kind of the block that `alloc(size, align)` hands out.
    #[inline]
    pub(crate) fn of(size: usize, align: usize) -> Kind {
        class_for(size, align).map_or(Kind::Large, Kind::Small)
    }
}

/// What `p` is to this allocator: the kind of the block it starts, or
/// `None` when it is not a block start of ours (outside the heap, inside an
/// object, or on a page no span owns).
#[inline(always)]
pub(crate) fn classify(p: *mut u8) -> Option<Kind> {
    match small_class(p) {
        Some(class) => Some(Kind::Small(class)),
        None => classify_large(p),
    }
}

/// The class of `p` when it is an object start in a small-object span,
/// else `None` (null, outside the heap, a large object, a sample, or not a
/// block start: [`classify`] tells those apart).
///
/// Found from the page's tag alone (one load): the tag gives the class and
/// where the span starts, and the offset from there must be a whole number
/// of objects inside the span (`size_class::object_start`: a
/// multiplication and one comparison). Null is outside the heap (the
/// heap never starts at address 0), so it needs no test of its own.
#[inline(always)]
pub(crate) fn small_class(p: *mut u8) -> Option<SizeClass> {
    let tag = crate::view::page_tag(p as usize)?;
    // The page's offset in its span (the tag's bits from PAGE_SHIFT up),
    // plus the offset in the page: below 2^18 (spans are at most 64 pages).
    let off = (p as usize & (PAGE_SIZE - 1)) | (tag as usize & !(PAGE_SIZE - 1));
    // An untagged page's class byte (0) passes no offset.
    object_start(tag as u8, off as u64)
}

/// [`classify`] for what is not a small object start: a large object's
/// first page, a sample, or not a block of ours.
#[cold]
#[inline(never)]
fn classify_large(p: *mut u8) -> Option<Kind> {
    if crate::profile::table::holds(p) {
        return crate::profile::table::is_live_small(p).then_some(Kind::Sampled);
    }
    let span = crate::view::view().span_of(p as usize);
    if span.is_null() {
        return None;
    }
    // SAFETY: a non-null page-map entry is a live span record.
    let s = unsafe { &*span };
    (s.class == 0 && s.start == p as usize).then_some(Kind::Large)
}
