//! The process-wide allocator state: the page heap, the central lists, the
//! heap's lock-free view, and their lazy initialisation from inside the
//! allocator; plus the small glue the central lists use to reach the heap.
//!
//! Initialisation happens on the first slow-path call: the heap reservation
//! under the heap lock, then (with no lock held, because glibc may allocate
//! inside `pthread_atfork`) the thread-exit and fork hooks (`hooks.rs`).

use crate::background;
use crate::central::{new_small_span, Batch, CentralList, SpanSource};
use crate::config::Mode;
use crate::freelist::{FreeObject, Links};
use crate::huge::{PageSpans, PageTags};
use crate::lock::SpinLock;
use crate::os::linux::{self, LinuxOs};
use crate::page_heap::{HeapView, PageHeap, Policy, DEFAULT_RESERVE, MIN_RESERVE};
use crate::size_class::NUM_CLASSES;
use crate::span::Span;
use crate::units::{PAGES_PER_HUGE, PAGE_SHIFT};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// The page heap. Lock order: after any central list lock.
pub static HEAP: SpinLock<PageHeap<LinuxOs>> = SpinLock::new(PageHeap::new(LinuxOs));

/// One central list per size class, each on its own cache line.
pub static CENTRAL: [CachePadded<SpinLock<CentralList>>; NUM_CLASSES] =
    [const { CachePadded::new(SpinLock::new(CentralList::new())) }; NUM_CLASSES];

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
pub fn view() -> HeapView {
    let pages = VIEW_PAGES.load(Ordering::Acquire);
    if pages.is_null() {
        return HeapView::empty();
    }
    // SAFETY: published by `ensure_heap` from the process heap's view (the
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
pub fn page_tag(addr: usize) -> u16 {
    let off = addr.wrapping_sub(VIEW_BASE.load(Ordering::Relaxed));
    if off >= VIEW_BYTES.load(Ordering::Acquire) {
        return 0;
    }
    let tags = VIEW_TAGS.load(Ordering::Relaxed);
    let page = off >> PAGE_SHIFT;
    // SAFETY: `off` is inside the heap (the check above; `VIEW_BYTES` is
    // published after `VIEW_BASE` and `VIEW_TAGS`), and the tags cover every
    // page of it in one flat array (huge page `i`'s `PAGES_PER_HUGE` tags
    // follow huge page `i - 1`'s) that lives for the process.
    unsafe { (*tags.add(page / PAGES_PER_HUGE))[page % PAGES_PER_HUGE].load(Ordering::Relaxed) }
}

/// Makes sure the heap exists; `false` if the OS refused the reservation.
pub fn ensure_heap() -> bool {
    if !VIEW_PAGES.load(Ordering::Acquire).is_null() {
        return true;
    }
    {
        let mut heap = HEAP.lock();
        if !heap.is_ready() {
            let cfg = crate::config::get();
            heap.set_policy(Policy {
                must_mark: cfg.must_mark(),
                go_legacy: cfg.mode == Mode::GoLegacy,
                regain: cfg.regain_huge_pages(),
            });
            heap.set_class_homes(cfg.mesh);
            if cfg.mesh {
                // Before the reservation: the heap then lives in a shared
                // file that meshing can map twice.
                crate::mesh::enable();
            }
            if !heap.init(DEFAULT_RESERVE, MIN_RESERVE) {
                return false;
            }
            let (base, end, pages, tags, len) = heap.view().parts();
            if cfg.mesh {
                crate::mesh::confirm(base);
            }
            VIEW_BASE.store(base, Ordering::Relaxed);
            VIEW_END.store(end, Ordering::Relaxed);
            VIEW_LEN.store(len, Ordering::Relaxed);
            VIEW_TAGS.store(tags as *mut PageTags, Ordering::Relaxed);
            VIEW_PAGES.store(pages as *mut PageSpans, Ordering::Release);
            VIEW_BYTES.store(end - base, Ordering::Release);
        }
    }
    crate::hooks::install();
    true
}

/// Takes up to `want` objects of `class` from its central list.
pub fn central_take(class: usize, want: usize) -> Batch {
    if !ensure_heap() {
        return Batch {
            head: ptr::null_mut(),
            count: 0,
        };
    }
    let chain = CENTRAL[class].lock().take(&ProcessHeap, class, want);
    if crate::mesh::thaw_pending() {
        // The class wanted its frozen spans back: wake the background
        // thread (outside the list lock).
        background::note_free();
    }
    background::maybe_start();
    chain
}

/// Gives `n` linked objects of `class` back to its central list.
///
/// # Safety
/// The chain holds `n` free objects of `class`, linked by their first word.
pub unsafe fn central_give(class: usize, head: *mut FreeObject, n: usize) {
    let chain = Batch { head, count: n };
    // SAFETY: forwarded from the caller.
    unsafe { CENTRAL[class].lock().give(&ProcessHeap, class, chain) };
    background::note_free();
    background::maybe_start();
}

/// The process heap as the central lists' span source.
pub struct ProcessHeap;

impl SpanSource for ProcessHeap {
    fn new_span(&self, class: usize) -> *mut Span {
        new_small_span(&mut HEAP.lock(), class)
    }

    unsafe fn free_span(&self, span: *mut Span) {
        // SAFETY: forwarded from the caller.
        unsafe { HEAP.lock().free_run(span) };
        background::note_free();
    }

    unsafe fn release_span_pages(&self, span: &mut Span, mask: u64) -> usize {
        // SAFETY: forwarded from the caller.
        unsafe { HEAP.lock().release_span_pages(span, mask) }
    }

    fn pages_reused(&self, n: usize) {
        HEAP.lock().pages_reused(n);
    }

    #[inline]
    fn span_of(&self, addr: usize) -> *mut Span {
        view().span_of(addr)
    }

    #[inline]
    fn now(&self) -> u32 {
        now()
    }

    fn frozen_wanted(&self, class: usize) {
        crate::mesh::request_thaw(class);
    }

    #[inline]
    fn links(&self) -> Links {
        // The configuration (and with it the encoding) is loaded before the
        // heap exists, so before any batch.
        Links::current()
    }

    fn mesh_slots(&self) -> bool {
        crate::config::get().mesh
    }
}

/// The release clock: milliseconds of a monotonic clock, wrapping at 2^32
/// (read through the vDSO: no system call).
#[inline]
pub fn now() -> u32 {
    linux::now_ms() as u32
}

/// Returns every object parked in transfer caches to its span, and every
/// wholly free span kept for reuse to the page heap.
pub fn drain_transfer_caches() {
    for (class, c) in CENTRAL.iter().enumerate().skip(1) {
        c.lock().drain(&ProcessHeap, class);
    }
}
