//! C++ `operator new` and `operator delete` in their twenty standard forms
//! (the Itanium C++ ABI names that libstdc++ and libc++ export), so that a
//! C++ program's `new` and `delete` reach the allocator directly instead of
//! through the C++ runtime's wrappers around `malloc` and `free`, as they do
//! under jemalloc's, mimalloc's and TCMalloc's libraries.
//!
//! **`new`** allocates as `malloc` does (the `align_val_t` forms as
//! `aligned_alloc`). When that fails, the call goes on to the definition
//! this library overrides, the C++ runtime's (`raw::next_symbol`): that one
//! calls `malloc` (this library's) again, runs the program's new-handler
//! until it gets memory or there is none, and then throws `std::bad_alloc`,
//! or returns null in the `nothrow` forms. So a program's new-handler and
//! its `catch (std::bad_alloc&)` work as without this library. The `new`
//! functions are `C-unwind`, so that the exception passes through them.
//! With no C++ runtime in the process (a C program that looked the symbols
//! up itself), a `nothrow` form returns null and the others abort with a
//! one-line message.
//!
//! **`delete`** is `free`, whatever its size and alignment arguments say:
//! the page map knows the block, and a wrong size (undefined behaviour in
//! C++) cannot misplace it. A pointer that is not a block of this allocator
//! aborts with a message, as for `free`.

use core::ffi::{c_void, CStr};
use hugeguard::raw;

/// The `std::nothrow_t` argument (an empty struct, passed by reference).
type Nothrow = *const c_void;

/// The out-of-memory case of a `new` form: the C++ runtime's definition of
/// the same operator, `name`, or null when the process has none.
#[cold]
#[inline(never)]
fn runtime_new(name: &CStr) -> *mut c_void {
    raw::next_symbol(name)
}

/// Aborts a throwing `new` that has no C++ runtime to throw from.
#[cold]
#[inline(never)]
fn no_runtime() -> ! {
    raw::abort_with_message(
        b"hugeguard: operator new: out of memory, and no C++ runtime to throw std::bad_alloc\n",
    )
}

/// `operator new(size)` or `new[]` (`name`) out of memory.
///
/// # Safety
/// `name` is one of the `(std::size_t)` forms.
#[cold]
#[inline(never)]
unsafe fn new_failed(name: &CStr, size: usize) -> *mut c_void {
    let f = runtime_new(name);
    if f.is_null() {
        no_runtime();
    }
    // SAFETY: the C++ runtime defines this operator with this signature
    // (Itanium C++ ABI); it may throw, which passes through (`C-unwind`).
    unsafe {
        let f: unsafe extern "C-unwind" fn(usize) -> *mut c_void = core::mem::transmute(f);
        f(size)
    }
}

/// The `(std::size_t, const std::nothrow_t&)` form `name` out of memory.
///
/// # Safety
/// `name` is one of those forms; `nt` is the caller's argument.
#[cold]
#[inline(never)]
unsafe fn new_nothrow_failed(name: &CStr, size: usize, nt: Nothrow) -> *mut c_void {
    let f = runtime_new(name);
    if f.is_null() {
        return f;
    }
    // SAFETY: as in `new_failed`, for this signature.
    unsafe {
        let f: unsafe extern "C-unwind" fn(usize, Nothrow) -> *mut c_void = core::mem::transmute(f);
        f(size, nt)
    }
}

/// The `(std::size_t, std::align_val_t)` form `name` out of memory.
///
/// # Safety
/// `name` is one of those forms.
#[cold]
#[inline(never)]
unsafe fn new_aligned_failed(name: &CStr, size: usize, align: usize) -> *mut c_void {
    let f = runtime_new(name);
    if f.is_null() {
        no_runtime();
    }
    // SAFETY: as in `new_failed`, for this signature.
    unsafe {
        let f: unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void = core::mem::transmute(f);
        f(size, align)
    }
}

/// The `(std::size_t, std::align_val_t, const std::nothrow_t&)` form `name`
/// out of memory.
///
/// # Safety
/// `name` is one of those forms; `nt` is the caller's argument.
#[cold]
#[inline(never)]
unsafe fn new_aligned_nothrow_failed(
    name: &CStr,
    size: usize,
    align: usize,
    nt: Nothrow,
) -> *mut c_void {
    let f = runtime_new(name);
    if f.is_null() {
        return f;
    }
    // SAFETY: as in `new_failed`, for this signature.
    unsafe {
        let f: unsafe extern "C-unwind" fn(usize, usize, Nothrow) -> *mut c_void =
            core::mem::transmute(f);
        f(size, align, nt)
    }
}

/// Defines `new` forms: `$alloc` allocates; when it fails, `$failed` hands
/// the call, with its name and arguments, to the C++ runtime's own.
macro_rules! news {
    ($($sym:literal $name:ident ($($arg:ident: $ty:ty),*) => $alloc:expr, $failed:ident;)*) => {$(
        #[doc = concat!("C++ `operator new` form `", $sym, "`.")]
        ///
        /// # Safety
        /// C++ `operator new` contract.
        #[export_name = $sym]
        pub unsafe extern "C-unwind" fn $name($($arg: $ty),*) -> *mut c_void {
            let p = $alloc;
            if p.is_null() {
                const NAME: &CStr = match CStr::from_bytes_with_nul(concat!($sym, "\0").as_bytes()) {
                    Ok(name) => name,
                    Err(_) => panic!("a symbol name has no NUL"),
                };
                // SAFETY: this form's name and arguments.
                return unsafe { $failed(NAME, $($arg),*) };
            }
            p.cast()
        }
    )*};
}

news! {
    "_Znwm" new(size: usize) => raw::malloc(size), new_failed;
    "_Znam" new_array(size: usize) => raw::malloc(size), new_failed;
    "_ZnwmRKSt9nothrow_t" new_nothrow(size: usize, nt: Nothrow) => raw::malloc(size), new_nothrow_failed;
    "_ZnamRKSt9nothrow_t" new_array_nothrow(size: usize, nt: Nothrow) => raw::malloc(size), new_nothrow_failed;
    "_ZnwmSt11align_val_t" new_aligned(size: usize, align: usize)
        => raw::alloc_aligned(size, align, false), new_aligned_failed;
    "_ZnamSt11align_val_t" new_array_aligned(size: usize, align: usize)
        => raw::alloc_aligned(size, align, false), new_aligned_failed;
    "_ZnwmSt11align_val_tRKSt9nothrow_t" new_aligned_nothrow(size: usize, align: usize, nt: Nothrow)
        => raw::alloc_aligned(size, align, false), new_aligned_nothrow_failed;
    "_ZnamSt11align_val_tRKSt9nothrow_t" new_array_aligned_nothrow(size: usize, align: usize, nt: Nothrow)
        => raw::alloc_aligned(size, align, false), new_aligned_nothrow_failed;
}

/// Every `delete` form: `free(p)`, misuse aborting with a message.
///
/// # Safety
/// `p` is null or a live block of this allocator that the caller gives up.
#[inline(always)]
unsafe fn delete_block(p: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { raw::free_or_abort(p.cast(), b"operator delete") }
}

/// Defines `delete` forms that free their first argument and ignore the
/// others (size, alignment, `nothrow`).
macro_rules! deletes {
    ($($sym:literal $name:ident ($($arg:ident: $ty:ty),*);)*) => {$(
        /// A C++ `operator delete` form: frees `p`.
        ///
        /// # Safety
        /// C++ `operator delete` contract: `p` is null or came from a
        /// `new` form and is not used again.
        #[export_name = $sym]
        pub unsafe extern "C" fn $name(p: *mut c_void, $($arg: $ty),*) {
            $(let _ = $arg;)*
            // SAFETY: forwarded from the caller.
            unsafe { delete_block(p) }
        }
    )*};
}

deletes! {
    "_ZdlPv" delete();
    "_ZdaPv" delete_array();
    "_ZdlPvm" delete_sized(size: usize);
    "_ZdaPvm" delete_array_sized(size: usize);
    "_ZdlPvRKSt9nothrow_t" delete_nothrow(nt: Nothrow);
    "_ZdaPvRKSt9nothrow_t" delete_array_nothrow(nt: Nothrow);
    "_ZdlPvSt11align_val_t" delete_aligned(align: usize);
    "_ZdaPvSt11align_val_t" delete_array_aligned(align: usize);
    "_ZdlPvmSt11align_val_t" delete_sized_aligned(size: usize, align: usize);
    "_ZdaPvmSt11align_val_t" delete_array_sized_aligned(size: usize, align: usize);
    "_ZdlPvSt11align_val_tRKSt9nothrow_t" delete_aligned_nothrow(align: usize, nt: Nothrow);
    "_ZdaPvSt11align_val_tRKSt9nothrow_t" delete_array_aligned_nothrow(align: usize, nt: Nothrow);
}
