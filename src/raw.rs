//! Size-less entry points for the C allocation ABI (the `LD_PRELOAD`
//! library in `preload/` wraps them): `free` and `realloc` without a
//! `Layout`, exact usable sizes, and validation of the pointer freed.
//!
//! Every block handed out here is aligned to at least 16 bytes, like glibc's
//! `malloc` on x86-64. A pointer is looked up in the page map: one outside
//! the heap, not at an object start, or (once it reaches its span) already
//! free is reported as misuse.
//!
//! The `c_*` functions carry the whole C contract of their namesakes
//! (`errno`, overflow, `realloc(NULL, n)` and `realloc(p, 0)`, alignment
//! rules), so the exported symbols in `preload/` only forward, and the `raw`
//! fuzz target drives exactly what C programs reach.

use crate::block;
pub(crate) use crate::lookup::classify;
use crate::os::linux;

use crate::units::PAGE_SIZE;
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

/// Writes `msg` on stderr in one line's write, then aborts (for a failure
/// with no other way out, such as C++ `operator new` out of memory in a
/// process without a C++ runtime to throw `std::bad_alloc`).
pub fn abort_with_message(msg: &[u8]) -> ! {
    linux::abort_with(msg)
}

/// The definition of the function `name` that the calling library
/// overrides (`dlsym(RTLD_NEXT)`), null when no later object defines it:
/// the `LD_PRELOAD` library hands C++ `operator new`'s out-of-memory case
/// to the C++ runtime's own, which runs the new-handler and throws.
/// Not for a fast path: the lookup may allocate.
pub fn next_symbol(name: &core::ffi::CStr) -> *mut core::ffi::c_void {
    linux::next_symbol(name)
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
    let (size, align) = (size.max(MIN_ALIGN), align.max(MIN_ALIGN));
    if let block::Kind::Small(class) = block::Kind::of(size, align) {
        return alloc_small::<false>(size, align, class, zero);
    }
    alloc_aligned_slow::<false>(size, align, zero)
}

/// An object of `class` for a request of `size` bytes aligned to `align`
/// (which the class keeps): the cache's pop, else its slow path (which may
/// sample it, as a request of at least 16 bytes). Zeroed if `zero`. With
/// `C_ERRNO`, a null result sets `errno` to `ENOMEM`, in the slow path.
#[inline(always)]
fn alloc_small<const C_ERRNO: bool>(
    size: usize,
    align: usize,
    class: crate::size_class::SizeClass,
    zero: bool,
) -> *mut u8 {
    let p = crate::cache::pop_counted(class);
    if !p.is_null() {
        if zero {
            // SAFETY: `p` holds at least `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        return p;
    }
    // The clamp only here: `malloc` passes its size as asked, and the fast
    // path above needs none.
    let size = size.max(MIN_ALIGN);
    crate::cache::alloc_slow_or::<C_ERRNO>(size, align, class, zero, crate::profile::alloc_due)
}

/// [`alloc_aligned`] for a large block (learned by the profile as an
/// entry frame, as `alloc_aligned`'s caller is). With `C_ERRNO`, a null
/// result sets `errno` to `ENOMEM`.
#[cold]
#[inline(never)]
extern "C" fn alloc_aligned_slow<const C_ERRNO: bool>(size: usize, align: usize, zero: bool) -> *mut u8 {
    let p = block::alloc_counted(size, align, zero, crate::profile::alloc_due);
    if C_ERRNO {
        or_enomem(p)
    } else {
        p
    }
}

/// `malloc(size)`: [`alloc_aligned`] at alignment 16, its class found in
/// one table load (`size_class::class_for_malloc`).
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    if let Some(class) = crate::size_class::class_for_malloc(size) {
        return alloc_small::<false>(size, MIN_ALIGN, class, false);
    }
    alloc_aligned_slow::<false>(size, MIN_ALIGN, false)
}

/// Frees `p` (null is ignored). Returns `false` if `p` is not a block of
/// this allocator (nothing is done then).
///
/// # Safety
/// `p` is null, or was returned by this module and is not used afterwards,
/// or is not a block start of this allocator: outside its heap (told apart
/// without reading anything), or inside it but not at a live block's start
/// (inside an object, say), which is refused as long as no other thread can
/// free or reuse the span it lies in (as for [`usable_size`]). The C
/// library's misuse checks and the `raw` fuzz target rely on the refusal.
#[inline]
pub unsafe fn free(p: *mut u8) -> bool {
    // The fast path: an object of a small-object span, from its page's tag
    // (null, outside the heap, fails that test too).
    if let Some(class) = crate::lookup::small_class(p) {
        // SAFETY: `p` is an object start of this class that the caller
        // gives up.
        unsafe { crate::cache::dealloc(p, class) };
        return true;
    }
    // SAFETY: forwarded from the caller.
    unsafe { free_other(p) }
}

/// [`free`] for the C library's `free` and C++ `delete`: a pointer that
/// is not a block of this allocator aborts the process after one line on
/// stderr naming the entry point `what` ([`abort_misuse`]). The misuse
/// check lives in the slow path, so that the fast path ends in jumps.
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn free_or_abort(p: *mut u8, what: &'static [u8]) {
    if let Some(class) = crate::lookup::small_class(p) {
        // SAFETY: as in `free`.
        unsafe { crate::cache::dealloc(p, class) };
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { free_other_or_abort(p, what) }
}

/// [`free_or_abort`] for anything but a small object. `extern "C"`, so
/// that C `free` can jump here (see `cache::alloc_slow_or`).
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
// Only Rust calls it (`what` is a slice): the ABI is for `nounwind`.
#[allow(improper_ctypes_definitions)]
unsafe extern "C" fn free_other_or_abort(p: *mut u8, what: &'static [u8]) {
    // SAFETY: forwarded from the caller.
    if !unsafe { free_other(p) } {
        abort_misuse(what, p);
    }
}

/// [`free`] for anything but a small object: null, a large object, a
/// sample, or not a block of ours (`false`).
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe fn free_other(p: *mut u8) -> bool {
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
    let size = size.max(1);
    if crate::cache::sample_due(size) {
        // SAFETY: as below.
        return core::hint::black_box(unsafe {
            crate::profile::realloc_due(p, kind, old, size, MIN_ALIGN)
        });
    }
    // SAFETY: `p` is a live block of this kind (the caller's contract and
    // the page map agree), allocated with `MIN_ALIGN`; all `old` usable
    // bytes may be the caller's data.
    unsafe { block::resize(p, kind, old, size, MIN_ALIGN) }
}

use crate::os::{EINVAL, ENOMEM};

/// Null with `errno = ENOMEM` when `p` is null, as the C functions report
/// exhaustion.
#[inline]
fn or_enomem(p: *mut u8) -> *mut u8 {
    if p.is_null() {
        set_errno(ENOMEM);
    }
    p
}

/// C `malloc`: null with `errno = ENOMEM` when out of memory. As
/// [`malloc`], with `errno` set in the slow paths, so that the fast path
/// ends in a jump to them rather than a call.
#[inline]
pub fn c_malloc(size: usize) -> *mut u8 {
    if let Some(class) = crate::size_class::class_for_malloc(size) {
        return alloc_small::<true>(size, MIN_ALIGN, class, false);
    }
    alloc_aligned_slow::<true>(size, MIN_ALIGN, false)
}

/// C `calloc`: zeroed; null with `ENOMEM` when `n * size` overflows or
/// memory runs out.
pub fn c_calloc(n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        Some(total) => or_enomem(alloc_aligned(total, MIN_ALIGN, true)),
        None => or_enomem(ptr::null_mut()),
    }
}

/// C `realloc` (glibc's choices): `realloc(NULL, n)` is `malloc(n)`;
/// `realloc(p, 0)` frees `p` and returns null; null with `ENOMEM` (and `p`
/// untouched) when out of memory. `None` when `p` is not a block of this
/// allocator (misuse: nothing was done).
///
/// # Safety
/// `p` is null or a live block of this allocator (one outside the heap is
/// told apart without reading anything; see [`owns`]).
pub unsafe fn c_realloc(p: *mut u8, size: usize) -> Option<*mut u8> {
    if p.is_null() {
        return Some(c_malloc(size));
    }
    // SAFETY: forwarded from the caller.
    if !unsafe { owns(p) } {
        return None;
    }
    if size == 0 {
        // SAFETY: `p` is a live block (checked above) the caller gives up.
        unsafe { free(p) };
        return Some(ptr::null_mut());
    }
    // SAFETY: `p` is a live block of this allocator.
    Some(or_enomem(unsafe { realloc(p, size) }))
}

/// glibc `reallocarray`: [`c_realloc`] of `n * size` bytes, null with
/// `ENOMEM` (and `p` untouched) when the product overflows.
///
/// # Safety
/// As for [`c_realloc`].
pub unsafe fn c_reallocarray(p: *mut u8, n: usize, size: usize) -> Option<*mut u8> {
    match n.checked_mul(size) {
        // SAFETY: forwarded from the caller.
        Some(total) => unsafe { c_realloc(p, total) },
        None => Some(or_enomem(ptr::null_mut())),
    }
}

/// C11 `aligned_alloc`: null with `EINVAL` when `align` is not a power of
/// two, with `ENOMEM` when out of memory.
pub fn c_aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        set_errno(EINVAL);
        return ptr::null_mut();
    }
    or_enomem(alloc_aligned(size, align, false))
}

/// POSIX `posix_memalign`: the block, or the error number (`EINVAL` for an
/// alignment that is not a power of two multiple of `sizeof(void *)`,
/// `ENOMEM`); `errno` is not changed.
pub fn c_posix_memalign(align: usize, size: usize) -> Result<*mut u8, i32> {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut u8>() != 0 {
        return Err(EINVAL);
    }
    let p = alloc_aligned(size, align, false);
    if p.is_null() {
        Err(ENOMEM)
    } else {
        Ok(p)
    }
}

/// glibc `memalign`: an alignment that is not a power of two is rounded up
/// to the next one; null with `EINVAL` when there is none, `ENOMEM` when
/// out of memory.
pub fn c_memalign(align: usize, size: usize) -> *mut u8 {
    let Some(align) = align.max(1).checked_next_power_of_two() else {
        set_errno(EINVAL);
        return ptr::null_mut();
    };
    or_enomem(alloc_aligned(size, align, false))
}

/// glibc `valloc`: page-aligned.
pub fn c_valloc(size: usize) -> *mut u8 {
    or_enomem(alloc_aligned(size, PAGE_SIZE, false))
}

/// glibc `pvalloc`: page-aligned, the size rounded up to whole pages (one
/// page for 0); null with `ENOMEM` when the rounding overflows.
pub fn c_pvalloc(size: usize) -> *mut u8 {
    match size.max(1).checked_add(PAGE_SIZE - 1) {
        Some(s) => or_enomem(alloc_aligned(s & !(PAGE_SIZE - 1), PAGE_SIZE, false)),
        None => or_enomem(ptr::null_mut()),
    }
}
