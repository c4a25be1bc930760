//! Large objects: anything above `MAX_SMALL`, or aligned beyond a page, is a
//! run of whole pages straight from the page heap (whole huge pages from 2 MiB
//! up). The heap knows which pages have never held data, so `alloc_zeroed`
//! skips clearing them.

use crate::central::SpanSource;
use crate::global::{self, HEAP};
use crate::units::{pages_for, PAGE_SHIFT, PAGE_SIZE};
use core::ptr;

/// Allocates `size` bytes aligned to `align`, cleared if `zero`; null on
/// exhaustion or overflow.
pub fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    let Some(npages) = pages_for(size.max(1)) else {
        return ptr::null_mut();
    };
    let align_pages = (align >> PAGE_SHIFT).max(1);
    if !global::ensure_heap() {
        return ptr::null_mut();
    }
    let Some(run) = HEAP.lock().alloc_run(npages, align_pages, 0) else {
        return ptr::null_mut();
    };
    crate::doorbell::maybe_start();
    // SAFETY: a live span just handed out.
    let start = unsafe { (*run.span).start } as *mut u8;
    if zero && !run.clean {
        // SAFETY: the run covers `npages * PAGE_SIZE >= size` bytes we own.
        unsafe { ptr::write_bytes(start, 0, size) };
    }
    start
}

/// The large-object span starting exactly at `ptr`, or null.
fn span_at(ptr: *mut u8) -> *mut crate::span::Span {
    let span = crate::view::view().span_of(ptr as usize);
    // SAFETY: a non-null entry is a live span record.
    if span.is_null() || unsafe { (*span).start != ptr as usize || (*span).class != 0 } {
        return ptr::null_mut();
    }
    span
}

/// Frees a large object. Returns `false` (and does nothing) if `ptr` is not
/// the start of a live large object.
///
/// # Safety
/// `ptr` is not used after a `true` return.
pub unsafe fn dealloc(ptr: *mut u8) -> bool {
    let span = span_at(ptr);
    if span.is_null() {
        return false;
    }
    // SAFETY: the caller gives up the object; the span is live.
    unsafe { global::ProcessHeap.free_span(span) };
    crate::doorbell::maybe_start();
    true
}

/// Resizes a large object to `new_size` bytes without moving it, if the
/// neighbouring pages allow; returns whether it did.
///
/// # Safety
/// `ptr` is a live large object.
pub unsafe fn resize_in_place(ptr: *mut u8, new_size: usize) -> bool {
    let span = span_at(ptr);
    let Some(pages) = pages_for(new_size.max(1)) else {
        return false;
    };
    // SAFETY: the span is live and large.
    !span.is_null() && unsafe { HEAP.lock().resize_in_place(span, pages) }
}

/// Usable bytes of the large object at `ptr`, or 0 if it is not one.
pub fn usable_size(ptr: *mut u8) -> usize {
    let span = span_at(ptr);
    if span.is_null() {
        return 0;
    }
    // SAFETY: a live span record.
    unsafe { (*span).npages as usize * PAGE_SIZE }
}
