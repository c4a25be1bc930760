//! The process-wide allocator state: the page heap, the central lists, and
//! their lazy initialisation from inside the allocator (which publishes the
//! heap's lock-free view, `view.rs`); plus the small glue the central lists
//! use to reach the heap.
//!
//! Initialisation happens on the first slow-path call: the heap reservation
//! under the heap lock, then (with no lock held, because glibc may allocate
//! inside `pthread_atfork`) the thread-exit and fork hooks (`hooks.rs`).

use crate::central::{new_small_span, Batch, CentralList, SpanSource};
use crate::config::Mode;
use crate::doorbell;
use crate::freelist::{FreeObject, Links};
use crate::lock::SpinLock;
use crate::lock_rank::Rank;
use crate::os::linux::{self, LinuxOs};
use crate::os::shared::SharedHeap;
use crate::page_heap::{PageHeap, Policy, DEFAULT_RESERVE, MIN_RESERVE};
use crate::size_class::NUM_CLASSES;
use crate::span::Span;
use core::ptr;
use crossbeam_utils::CachePadded;

/// The page heap; its lock ranks highest (`lock_rank.rs`).
pub static HEAP: SpinLock<PageHeap<LinuxOs>> =
    SpinLock::new(Rank::Heap, PageHeap::new(LinuxOs::over(&SHARED)));

/// The heap's shared file and its userfaultfd, enabled in mesh mode before
/// the heap is reserved (the heap then lives in the file).
pub static SHARED: SharedHeap = SharedHeap::new();

/// One central list per size class, each on its own cache line.
pub static CENTRAL: [CachePadded<SpinLock<CentralList>>; NUM_CLASSES] =
    [const { CachePadded::new(SpinLock::new(Rank::Central, CentralList::new())) }; NUM_CLASSES];

/// Makes sure the heap exists; `false` if the OS refused the reservation.
pub fn ensure_heap() -> bool {
    if crate::view::published() {
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
                kernel_page: cfg.kernel_page_pages,
                no_huge: cfg.no_huge_pages,
            });
            heap.set_class_homes(cfg.mesh);
            if cfg.mesh {
                // Before the reservation: the heap then lives in a shared
                // file that meshing can map twice.
                SHARED.enable_or_say_why();
            }
            if !heap.init(DEFAULT_RESERVE, MIN_RESERVE) {
                return false;
            }
            crate::view::publish(&heap.view());
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
    if doorbell::thaw_pending() {
        // The class wanted its frozen spans back: wake the background
        // thread (outside the list lock).
        doorbell::note_free();
    }
    doorbell::maybe_start();
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
    doorbell::note_free();
    doorbell::maybe_start();
}

/// Gives `n` linked objects of `class` straight back to their spans (see
/// [`CentralList::give_to_spans_now`]).
///
/// # Safety
/// As for [`central_give`].
pub unsafe fn central_give_to_spans(class: usize, head: *mut FreeObject, n: usize) {
    let chain = Batch { head, count: n };
    // SAFETY: forwarded from the caller.
    unsafe { CENTRAL[class].lock().give_to_spans_now(&ProcessHeap, chain) };
    doorbell::note_free();
    doorbell::maybe_start();
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
        doorbell::note_free();
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
        crate::view::view().span_of(addr)
    }

    #[inline]
    fn release_clock(&self) -> u32 {
        release_clock()
    }

    fn frozen_wanted(&self, class: usize) {
        doorbell::request_thaw(class);
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
pub fn release_clock() -> u32 {
    linux::now_ms() as u32
}

/// Returns every object parked in transfer caches to its span, and every
/// wholly free span kept for reuse to the page heap.
pub fn drain_transfer_caches() {
    for (class, c) in CENTRAL.iter().enumerate().skip(1) {
        c.lock().drain(&ProcessHeap, class);
    }
}
