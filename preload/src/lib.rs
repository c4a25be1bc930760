//! hugeguard for any C or C++ program, without a rebuild:
//!
//! ```text
//! LD_PRELOAD=target/release/libhugeguard_preload.so program
//! ```
//!
//! Exports the allocation ABI of glibc's "Replacing malloc" contract:
//! `malloc`, `free`, `calloc`, `realloc`, `reallocarray`, `aligned_alloc`,
//! `posix_memalign`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`,
//! plus `malloc_trim` (release now) and `mallopt` (accepted, ignored), and
//! C++ `operator new` and `operator delete` in all their forms (module
//! `cxx`).
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
//! and a double free once the block has reached its span. Not detected in
//! the default mode: a double free while the block still sits in the
//! freeing thread's cache (the fast path reads no metadata), and use after
//! free. With `HUGEGUARD_HARDEN=1` (the default in debug builds) every free
//! is checked, so that double free aborts too, and free-list links are
//! encoded, so a write after free cannot steer a later allocation.
//!
//! Release behaviour and `HUGEGUARD_*` configuration are those of the Rust
//! crate. Nothing here calls `dlsym` but a C++ `new` that ran out of memory
//! (to hand it to the C++ runtime, which throws), so there is no bootstrap
//! recursion; allocation before `main` and during thread exit go through
//! the same paths.

use core::ffi::{c_int, c_void};
use hugeguard::raw;

pub mod cxx;

#[cold]
fn misuse(what: &[u8], p: *mut c_void) -> ! {
    raw::abort_misuse(what, p as *mut u8)
}

fn init_c_mode() {
    raw::set_abort_on_misuse(true);
}

// Detected misuse aborts from the first allocation on, also before `main`.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = {
    extern "C" fn init() {
        init_c_mode();
    }
    init
};

// Every export forwards to `hugeguard::raw`'s `c_*` function of the same
// name, which carries the C contract (and is what the `raw` fuzz target
// drives); only the misuse abort and the C types live here.

/// # Safety
/// C `malloc` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    raw::c_malloc(size).cast()
}

/// # Safety
/// C `free` contract: `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // `errno` is left alone: the allocator's OS layer puts it back around
    // every system call, so the fast path needs no save and restore.
    // SAFETY: forwarded from the caller.
    unsafe { raw::free_or_abort(p as *mut u8, b"free") }
}

/// # Safety
/// C `calloc` contract.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    raw::c_calloc(n, size).cast()
}

/// # Safety
/// C `realloc` contract.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the C contract: `p` is null or a live block of this allocator,
    // or the program is in error (a foreign pointer outside the heap is told
    // apart without reading anything; one inside it is undefined in C too).
    match unsafe { raw::c_realloc(p.cast(), size) } {
        Some(q) => q.cast(),
        None => misuse(b"realloc", p),
    }
}

/// # Safety
/// glibc `reallocarray` contract.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: as for `realloc`.
    match unsafe { raw::c_reallocarray(p.cast(), n, size) } {
        Some(q) => q.cast(),
        None => misuse(b"reallocarray", p),
    }
}

/// # Safety
/// C11 `aligned_alloc` contract.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    raw::c_aligned_alloc(align, size).cast()
}

/// # Safety
/// POSIX `posix_memalign` contract: `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    match raw::c_posix_memalign(align, size) {
        Ok(p) => {
            // SAFETY: the caller passes a valid out-pointer.
            unsafe { *out = p.cast() };
            0
        }
        Err(e) => e,
    }
}

/// # Safety
/// glibc `memalign` contract.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    raw::c_memalign(align, size).cast()
}

/// # Safety
/// glibc `valloc` contract.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    raw::c_valloc(size).cast()
}

/// # Safety
/// glibc `pvalloc` contract: size rounded up to whole pages.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    raw::c_pvalloc(size).cast()
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

/// Prints `hugeguard::placement()` (after `release_now()`) to stderr: the
/// placement floor of the program's small objects, for programs that can
/// call a C function (`ctypes.CDLL(None).hugeguard_print_placement()` from
/// Python). Not part of the C allocation ABI.
///
/// # Safety
/// None beyond the C contract; not from a signal handler.
#[no_mangle]
pub unsafe extern "C" fn hugeguard_print_placement() {
    hugeguard::release_now();
    let report = hugeguard::placement().to_string();
    eprint!("{report}");
}
