//! The process basics every OS file needs: the thread's `errno` (read, set,
//! kept across a call), one line to standard error, an abort, and reading
//! a small file into a buffer or line by line. A leaf of the OS layer: no allocation, no
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

/// Calls `f` with each line of the file at `path` (without its newline),
/// read through a 4 KiB stack buffer: lines longer than that are skipped.
/// Stops when `f` returns `false`. Returns `false` when the file cannot be
/// opened.
pub fn for_each_line(path: &core::ffi::CStr, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
    let _errno = KeepErrno::new();
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 4096];
    // Bytes of an unfinished line at the start of `buf`; `skipping` while
    // the rest of an overlong line passes.
    let mut len = 0;
    let mut skipping = false;
    'read: loop {
        // SAFETY: `buf[len..]` is valid for its length.
        let n = unsafe {
            libc::read(
                fd,
                buf[len..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - len,
            )
        };
        if n <= 0 {
            if n == 0 && len > 0 && !skipping {
                f(&buf[..len]);
            }
            break;
        }
        let end = len + n as usize;
        let mut start = 0;
        while let Some(nl) = buf[start..end].iter().position(|&c| c == b'\n') {
            if !skipping && !f(&buf[start..start + nl]) {
                break 'read;
            }
            skipping = false;
            start += nl + 1;
        }
        if start == 0 && end == buf.len() {
            // A line longer than the buffer: drop what we have of it.
            skipping = true;
            len = 0;
        } else {
            buf.copy_within(start..end, 0);
            len = end - start;
        }
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
    true
}

/// A file opened for writing (created or truncated, mode 0644); closed
/// when dropped.
pub struct WriteFile(i32);

impl WriteFile {
    /// Creates or truncates the file at `path`; the `errno` on failure.
    pub fn create(path: &core::ffi::CStr) -> Result<WriteFile, i32> {
        let _errno = KeepErrno::new();
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            Err(errno())
        } else {
            Ok(WriteFile(fd))
        }
    }

    /// Writes all of `buf`; the `errno` on failure.
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), i32> {
        let _errno = KeepErrno::new();
        while !buf.is_empty() {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let n = unsafe { libc::write(self.0, buf.as_ptr() as *const libc::c_void, buf.len()) };
            if n < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            buf = &buf[n as usize..];
        }
        Ok(())
    }

    /// Appends the whole file at `src` (read in 4 KiB pieces, so files of
    /// any length such as `/proc/self/maps`); the `errno` on failure.
    pub fn copy_from(&mut self, src: &core::ffi::CStr) -> Result<(), i32> {
        let _errno = KeepErrno::new();
        // SAFETY: `src` is NUL-terminated.
        let fd = unsafe { libc::open(src.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(errno());
        }
        let mut buf = [0u8; 4096];
        let result = loop {
            // SAFETY: `buf` is valid for its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                break Err(e);
            }
            if n == 0 {
                break Ok(());
            }
            if let Err(e) = self.write_all(&buf[..n as usize]) {
                break Err(e);
            }
        };
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(fd) };
        result
    }
}

impl Drop for WriteFile {
    fn drop(&mut self) {
        let _errno = KeepErrno::new();
        // SAFETY: closing the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}
