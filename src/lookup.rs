//! What a pointer is to this allocator: the kind of block it starts (an
//! object of a size class, or a large object), found in the page map
//! without taking a lock. Shared by the C entry points (`raw`), the block
//! operations (`block`) and hardened mode's checks (`harden`), so none of
//! them reaches into another for it.

use crate::size_class::{class_for, SizeClass, CLASS_START_CHECK};
use crate::units::{PAGE_SHIFT, PAGE_SIZE};

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
///
/// A small object is found from its page's tag alone (one load): the tag
/// gives the class and where the span starts, and the offset from there
/// must be a whole number of objects inside the span
/// (`size_class::StartCheck::is_start`: a multiplication and two
/// comparisons).
#[inline(always)]
pub(crate) fn classify(p: *mut u8) -> Option<Kind> {
    let tag = crate::view::page_tag(p as usize);
    let Some(class) = SizeClass::from_index((tag & 0xff) as usize) else {
        return classify_large(p);
    };
    // The page's place in its span (the tag's high byte) in whole pages,
    // plus the offset in the page: below 2^18 (spans are at most 64 pages).
    let off = (p as usize & (PAGE_SIZE - 1)) | ((tag as usize & 0xff00) << (PAGE_SHIFT - 8));
    // SAFETY: a `SizeClass` index is below NUM_CLASSES, the table's length.
    let check = unsafe { CLASS_START_CHECK.get_unchecked(class.index()) };
    check.is_start(off as u64).then_some(Kind::Small(class))
}

/// [`classify`] for a page without a small-object tag: a large object's
/// first page, or not a block of ours.
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
