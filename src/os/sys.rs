//! The process basics every OS file needs: the thread's `errno` (read, set,
//! kept across a call), one line to standard error, an abort, and reading
//! a small file into a buffer. A leaf of the OS layer: no allocation, no
//! state.

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

/// Puts the calling thread's `errno` back when dropped. Every function here
/// that makes a system call holds one, so no allocator entry point changes
/// the program's `errno`: C's `free` must not, and `malloc` and friends set
/// it only where they fail (in `preload`), not because an `madvise` inside
/// a slow path failed. The fast paths make no system call and pay nothing.
pub(crate) struct KeepErrno(i32);

impl KeepErrno {
    pub(crate) fn new() -> Self {
        KeepErrno(errno())
    }
}

impl Drop for KeepErrno {
    fn drop(&mut self) {
        set_errno(self.0);
    }
}

/// Ends the process with SIGABRT (after detected heap misuse in C mode).
/// Writes `msg` to standard error and aborts.
pub fn abort_with(msg: &[u8]) -> ! {
    write_stderr(msg);
    abort()
}

/// Ends the process with SIGABRT.
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

/// Writes `msg` to standard error (one `write`, no buffering, no allocation).
pub fn write_stderr(msg: &[u8]) {
    let _errno = KeepErrno::new();
    // SAFETY: `msg` is valid for its length; fd 2 may be closed, then the
    // write just fails.
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
    }
}

/// Reads up to `buf.len()` bytes of the file at `path` into `buf`.
pub fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> Option<usize> {
    let _errno = KeepErrno::new();
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
    (n >= 0).then_some(n as usize)
}
