//! The process heap's lock-free view: its address range, page-to-span map
//! and page tags, published once when the heap exists
//! (`global::ensure_heap`) and read without a lock by every pointer lookup
//! (`lookup`, `large`, the central lists' `span_of`). A leaf over the data
//! floor: it holds only the published words.

use crate::huge::{PageSpans, PageTags};
use crate::page_heap::HeapView;
use crate::units::PAGE_SHIFT;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU16, AtomicUsize, Ordering};

// The heap's address range and page-to-span map, published once the heap
// exists so `span_of` needs no lock.
static VIEW_BASE: AtomicUsize = AtomicUsize::new(0);
static VIEW_END: AtomicUsize = AtomicUsize::new(0);
static VIEW_PAGES: AtomicPtr<PageSpans> = AtomicPtr::new(ptr::null_mut());
static VIEW_LEN: AtomicUsize = AtomicUsize::new(0);
static VIEW_TAGS: AtomicPtr<PageTags> = AtomicPtr::new(ptr::null_mut());
/// The heap's length in bytes; published last (release), so a reader that
/// sees it non-zero sees `VIEW_TAGS` too. 0 before the heap exists.
static VIEW_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The heap's lock-free view (empty before initialisation).
#[inline]
pub(crate) fn view() -> HeapView {
    let pages = VIEW_PAGES.load(Ordering::Acquire);
    if pages.is_null() {
        return HeapView::empty();
    }
    // SAFETY: published by [`publish`] from the process heap's view (the
    // acquire load above sees the relaxed stores made before the release).
    unsafe {
        HeapView::from_parts(
            VIEW_BASE.load(Ordering::Relaxed),
            VIEW_END.load(Ordering::Relaxed),
            pages,
            VIEW_TAGS.load(Ordering::Relaxed),
            VIEW_LEN.load(Ordering::Relaxed),
        )
    }
}

/// The tag of the page holding `addr` ([`crate::huge::page_tag`]): the size
/// class and page-in-span of a small-object span's page, 0 for any other
/// page and for an address outside the heap. Two loads of process-wide
/// values and one of the tag: the size-less `free`'s first step.
#[inline(always)]
pub(crate) fn page_tag(addr: usize) -> u16 {
    let off = addr.wrapping_sub(VIEW_BASE.load(Ordering::Relaxed));
    if off >= VIEW_BYTES.load(Ordering::Acquire) {
        return 0;
    }
    // The tags cover the heap in one flat array (huge page `i`'s
    // `PAGES_PER_HUGE` tags follow huge page `i - 1`'s), indexed here by page.
    let tags = VIEW_TAGS.load(Ordering::Relaxed) as *const AtomicU16;
    // SAFETY: `off` is inside the heap (the check above; `VIEW_BYTES` is
    // published after `VIEW_BASE` and `VIEW_TAGS`), so its page's tag is in
    // that array, which lives for the process.
    unsafe { (*tags.add(off >> PAGE_SHIFT)).load(Ordering::Relaxed) }
}

/// Whether the view is published (the heap exists).
#[inline]
pub(crate) fn published() -> bool {
    !VIEW_PAGES.load(Ordering::Acquire).is_null()
}

/// Publishes the heap's view, once, under the heap lock at its creation.
/// Every reader sees either nothing or the whole view.
pub(crate) fn publish(view: &HeapView) {
    let (base, end, pages, tags, len) = view.parts();
    VIEW_BASE.store(base, Ordering::Relaxed);
    VIEW_END.store(end, Ordering::Relaxed);
    VIEW_LEN.store(len, Ordering::Relaxed);
    VIEW_TAGS.store(tags as *mut PageTags, Ordering::Relaxed);
    VIEW_PAGES.store(pages as *mut PageSpans, Ordering::Release);
    VIEW_BYTES.store(end - base, Ordering::Release);
}
