//! The system calls the tool makes, each wrapped so that callers see
//! `io::Result`: `pidfd_open`, `process_madvise(MADV_COLLAPSE)`, signals,
//! and the kernel release. The only module that calls `libc`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// `MADV_COLLAPSE` (Linux 6.1), spelled out in case the libc crate lacks it.
pub(crate) const MADV_COLLAPSE: libc::c_int = 25;

/// A process, held by a pidfd so that a recycled pid cannot be mistaken for
/// it.
pub(crate) struct ProcessHandle(OwnedFd);

impl ProcessHandle {
    pub(crate) fn open(pid: u32) -> io::Result<ProcessHandle> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(ProcessHandle(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// `process_madvise(MADV_COLLAPSE)` on `len` bytes at `addr` of the
    /// process: the kernel collapses the range into a huge page now, as
    /// khugepaged would. The target's memory is read and copied by the
    /// kernel; this process touches nothing of it.
    pub(crate) fn collapse(&self, addr: u64, len: u64) -> io::Result<()> {
        let iov = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len as usize,
        };
        // SAFETY: the iovec array (one entry) is valid for the call; the
        // addresses name the other process's memory, which the kernel checks.
        let r = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                self.0.as_raw_fd(),
                &iov as *const libc::iovec,
                1usize,
                MADV_COLLAPSE,
                0u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// The kernel's release as (major, minor).
pub(crate) fn kernel_version() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut it = text.trim().split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

static USR1: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    USR1.store(true, Ordering::SeqCst);
}

/// From now on, SIGUSR1 sets a flag that [`take_usr1`] reads (how a program
/// started by `run` says "I am idle now").
pub(crate) fn catch_usr1() {
    // SAFETY: installs an async-signal-safe handler (one atomic store) with
    // a zeroed, then filled, sigaction.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// Whether SIGUSR1 arrived since the last call.
pub(crate) fn take_usr1() -> bool {
    USR1.swap(false, Ordering::SeqCst)
}
