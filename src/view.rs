//! The process heap's lock-free view: its address range, page-to-span map
//! and page tags, published once when the heap exists
//! (`global::ensure_heap`) and read without a lock by every pointer lookup
//! (`lookup`, `large`, the central lists' `span_of`). A leaf over the data
//! floor: it holds only the published words.

use crate::huge::{PageSpans, PageTags};
use crate::page_heap::HeapView;
use crate::units::PAGE_SHIFT;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// The published words, in one record so a lookup finds them all through
/// one address (a shared library reaches a static through its GOT: one
/// load of the record's address, not one per word).
#[repr(C, align(64))]
struct Published {
    // The three words the size-less `free` reads ([`page_tag`]) first.
    base: AtomicUsize,
    /// The heap's length in bytes; published last (release), so a reader
    /// that sees it non-zero sees `tags` too. 0 before the heap exists.
    bytes: AtomicUsize,
    tags: AtomicPtr<PageTags>,
    // The heap's end and page-to-span map, published once the heap exists
    // so `span_of` needs no lock.
    end: AtomicUsize,
    pages: AtomicPtr<PageSpans>,
    len: AtomicUsize,
}

static VIEW: Published = Published {
    base: AtomicUsize::new(0),
    bytes: AtomicUsize::new(0),
    tags: AtomicPtr::new(ptr::null_mut()),
    end: AtomicUsize::new(0),
    pages: AtomicPtr::new(ptr::null_mut()),
    len: AtomicUsize::new(0),
};

/// The heap's lock-free view (empty before initialisation).
#[inline]
pub(crate) fn view() -> HeapView {
    let pages = VIEW.pages.load(Ordering::Acquire);
    if pages.is_null() {
        return HeapView::empty();
    }
    // SAFETY: published by [`publish`] from the process heap's view (the
    // acquire load above sees the relaxed stores made before the release).
    unsafe {
        HeapView::from_parts(
            VIEW.base.load(Ordering::Relaxed),
            VIEW.end.load(Ordering::Relaxed),
            pages,
            VIEW.tags.load(Ordering::Relaxed),
            VIEW.len.load(Ordering::Relaxed),
        )
    }
}

/// The tag of the page holding `addr` ([`crate::huge::page_tag`]): the size
/// class and page-in-span of a small-object span's page, 0 for any other
/// page; `None` for an address outside the heap. Two loads of process-wide
/// values and one of the tag: the size-less `free`'s first step.
#[inline(always)]
pub(crate) fn page_tag(addr: usize) -> Option<u32> {
    let off = addr.wrapping_sub(VIEW.base.load(Ordering::Relaxed));
    if off >= VIEW.bytes.load(Ordering::Acquire) {
        return None;
    }
    // The tags cover the heap in one flat array (huge page `i`'s
    // `PAGES_PER_HUGE` tags follow huge page `i - 1`'s), indexed here by page.
    let tags = VIEW.tags.load(Ordering::Relaxed) as *const AtomicU32;
    // SAFETY: `off` is inside the heap (the check above; `VIEW.bytes` is
    // published after `VIEW.base` and `VIEW.tags`), so its page's tag is in
    // that array, which lives for the process.
    Some(unsafe { (*tags.add(off >> PAGE_SHIFT)).load(Ordering::Relaxed) })
}

/// Whether the view is published (the heap exists).
#[inline]
pub(crate) fn published() -> bool {
    !VIEW.pages.load(Ordering::Acquire).is_null()
}

/// Publishes the heap's view, once, under the heap lock at its creation.
/// Every reader sees either nothing or the whole view.
pub(crate) fn publish(view: &HeapView) {
    let (base, end, pages, tags, len) = view.parts();
    VIEW.base.store(base, Ordering::Relaxed);
    VIEW.end.store(end, Ordering::Relaxed);
    VIEW.len.store(len, Ordering::Relaxed);
    VIEW.tags.store(tags as *mut PageTags, Ordering::Relaxed);
    VIEW.pages.store(pages as *mut PageSpans, Ordering::Release);
    VIEW.bytes.store(end - base, Ordering::Release);
}
