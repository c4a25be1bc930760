//! hugeguard for any C or C++ program, without a rebuild:
//!
//! ```text
//! LD_PRELOAD=target/release/libhugeguard_preload.so program
//! ```
//!
//! Exports the allocation ABI of glibc's "Replacing malloc" contract:
//! `malloc`, `free`, `calloc`, `realloc`, `reallocarray`, `aligned_alloc`,
//! `posix_memalign`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`,
//! plus `malloc_trim` (release now) and `mallopt` (accepted, ignored).
//!
//! C semantics: `free(NULL)` does nothing and `free` preserves `errno`;
//! failures return null with `errno = ENOMEM`; `posix_memalign` returns
//! `EINVAL` for an alignment that is not a power of two multiple of
//! `sizeof(void *)`; `calloc` and `reallocarray` detect overflow;
//! `realloc(p, 0)` frees `p` and returns null (as glibc does);
//! `realloc(NULL, n)` is `malloc(n)`; `malloc_usable_size` is exact.
//!
//! Misuse detected (one line on stderr, then `abort()`): freeing or
//! reallocating a pointer outside the heap (stack, static, another
//! allocator's), a pointer inside the heap that is not the start of a block,
//! and a double free once the block has reached its span. Not detected: a
//! double free while the block still sits in the freeing thread's cache (the
//! fast path reads no metadata), and use after free.
//!
//! Release behaviour and `HUGEGUARD_*` configuration are those of the Rust
//! crate. Nothing here calls `dlsym`, so there is no bootstrap recursion;
//! allocation before `main` and during thread exit go through the same paths.

use core::ffi::{c_int, c_void};
use hugeguard::raw;

const ENOMEM: c_int = libc::ENOMEM;
const EINVAL: c_int = libc::EINVAL;

use raw::set_errno;

#[inline]
fn checked(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        set_errno(ENOMEM);
    }
    p as *mut c_void
}

#[cold]
fn misuse(what: &[u8], p: *mut c_void) -> ! {
    raw::abort_misuse(what, p as *mut u8)
}

fn init_c_mode() {
    raw::set_abort_on_misuse(true);
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = {
    extern "C" fn init() {
        init_c_mode();
    }
    init
};

/// # Safety
/// C `malloc` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    checked(raw::malloc(size))
}

/// # Safety
/// C `free` contract: `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // `errno` is left alone: the allocator's OS layer puts it back around
    // every system call, so the fast path needs no save and restore.
    // SAFETY: forwarded from the caller.
    if !unsafe { raw::free(p as *mut u8) } {
        misuse(b"free", p);
    }
}

/// # Safety
/// C `calloc` contract.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => checked(raw::alloc_aligned(total, raw::MIN_ALIGN, true)),
        None => {
            set_errno(ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// # Safety
/// C `realloc` contract.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return checked(raw::malloc(size));
    }
    // SAFETY: the C contract: `p` is a live block of this allocator, or the
    // program is in error (a foreign pointer outside the heap is told apart
    // without reading anything; one inside it is undefined in C as well).
    if !unsafe { raw::owns(p as *mut u8) } {
        misuse(b"realloc", p);
    }
    if size == 0 {
        // glibc: realloc(p, 0) frees p and returns NULL.
        // SAFETY: `p` is a live block (checked above).
        unsafe { free(p) };
        return core::ptr::null_mut();
    }
    // SAFETY: `p` is a live block of this allocator.
    checked(unsafe { raw::realloc(p as *mut u8, size) })
}

/// # Safety
/// glibc `reallocarray` contract.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded from the caller.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// # Safety
/// C11 `aligned_alloc` contract.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(EINVAL);
        return core::ptr::null_mut();
    }
    checked(raw::alloc_aligned(size, align, false))
}

/// # Safety
/// POSIX `posix_memalign` contract: `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return EINVAL;
    }
    let p = raw::alloc_aligned(size, align, false);
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: the caller passes a valid out-pointer.
    unsafe { *out = p as *mut c_void };
    0
}

/// # Safety
/// glibc `memalign` contract.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // glibc rounds a non-power-of-two alignment up.
    let Some(align) = align.max(1).checked_next_power_of_two() else {
        set_errno(EINVAL);
        return core::ptr::null_mut();
    };
    checked(raw::alloc_aligned(size, align, false))
}

const PAGE: usize = 4096;

/// # Safety
/// glibc `valloc` contract.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    checked(raw::alloc_aligned(size, PAGE, false))
}

/// # Safety
/// glibc `pvalloc` contract: size rounded up to whole pages.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_add(PAGE - 1) {
        Some(s) => checked(raw::alloc_aligned(s & !(PAGE - 1), PAGE, false)),
        None => {
            set_errno(ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// # Safety
/// glibc `malloc_usable_size` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: the glibc contract: `p` is null or a live block of this
    // allocator.
    unsafe { raw::usable_size(p as *mut u8) }
}

/// Releases everything releasable now; returns 1 if memory was released.
///
/// # Safety
/// None beyond the C contract.
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(_pad: usize) -> c_int {
    (hugeguard::release_now() > 0) as c_int
}

/// Accepted and ignored (returns 1, "success", as glibc does for known
/// parameters); hugeguard is configured with `HUGEGUARD_*` variables.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}
