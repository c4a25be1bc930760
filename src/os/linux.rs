//! [`Os`] on Linux, and the few other libc services the allocator needs
//! (thread-exit hook, fork handlers). Nothing here allocates.

use super::{Advice, Os};

/// The real kernel.
#[derive(Clone, Copy, Default, Debug)]
pub struct LinuxOs;

impl Os for LinuxOs {
    fn reserve(&self, len: usize, align: usize) -> Option<usize> {
        let padded = len.checked_add(align)?;
        // SAFETY: an anonymous PROT_NONE mapping at an address of the kernel's
        // choosing touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                padded,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let raw = raw as usize;
        let start = (raw + align - 1) & !(align - 1);
        let end = start + len;
        // Trim the unaligned head and the tail so the reservation is exact.
        // SAFETY: both ranges lie inside the mapping just created and are
        // page-aligned (mmap results and `align` are multiples of the page).
        unsafe {
            if start > raw {
                libc::munmap(raw as *mut libc::c_void, start - raw);
            }
            if raw + padded > end {
                libc::munmap(end as *mut libc::c_void, raw + padded - end);
            }
        }
        Some(start)
    }

    fn commit(&self, addr: usize, len: usize) -> bool {
        // SAFETY: callers pass a page-aligned range inside a reservation made
        // by `reserve`, which nobody else uses.
        unsafe {
            libc::mprotect(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
            ) == 0
        }
    }

    fn map_metadata(&self, len: usize) -> Option<*mut u8> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (raw != libc::MAP_FAILED).then_some(raw as *mut u8)
    }

    fn advise(&self, addr: usize, len: usize, advice: Advice) -> Result<(), i32> {
        let flag = match advice {
            Advice::DontNeed => libc::MADV_DONTNEED,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::Collapse => MADV_COLLAPSE,
        };
        // SAFETY: callers pass a page-aligned range of the allocator's own
        // committed memory; these advices never invalidate live data they
        // were not asked to drop.
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, flag) };
        if rc == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }
}

/// `MADV_COLLAPSE` (Linux 6.1), spelled out in case the libc crate lacks it.
pub const MADV_COLLAPSE: libc::c_int = 25;

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub fn set_errno(value: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = value }
}

/// A pthread key whose destructor runs at thread exit for threads that set it.
pub struct ThreadExitKey(libc::pthread_key_t);

impl ThreadExitKey {
    /// Creates the key (glibc does not allocate for it).
    pub fn create(dtor: unsafe extern "C" fn(*mut core::ffi::c_void)) -> Option<Self> {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; `dtor` is a valid function.
        let rc = unsafe { libc::pthread_key_create(&mut key, Some(dtor)) };
        (rc == 0).then_some(ThreadExitKey(key))
    }

    /// Rebuilds a key from its raw value (as stored in an atomic).
    pub fn from_raw(raw: u32) -> Self {
        ThreadExitKey(raw as libc::pthread_key_t)
    }

    /// The raw key, for storing in an atomic.
    pub fn raw(&self) -> u32 {
        self.0
    }

    /// Arms the destructor for the calling thread with a non-null `value`.
    pub fn arm(&self, value: *mut u8) {
        // SAFETY: the key was created by `create`; glibc stores the value in
        // the thread's static block for the first 32 keys (no allocation).
        unsafe {
            libc::pthread_setspecific(self.0, value as *const libc::c_void);
        }
    }
}

/// Registers fork handlers. May call the C allocator inside glibc, so the
/// caller must hold none of the allocator's locks.
pub fn register_fork_handlers(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> bool {
    // SAFETY: the handlers are valid `extern "C"` functions that live forever.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// Yields the CPU.
pub fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe {
        libc::sched_yield();
    }
}
