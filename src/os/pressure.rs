//! Memory pressure from the kernel: a PSI trigger (Linux 5.2) on the
//! process's cgroup v2 `memory.pressure`, or on `/proc/pressure/memory`
//! outside cgroup v2, which the background thread polls while it sleeps
//! with memory held back, so that the kernel's reclaim stalls make it give
//! that memory back at once, as the soft limit does.
//!
//! One descriptor per process, opened lazily by the background thread (the
//! only thread that uses it), close-on-exec, and never read, written or
//! closed once it may no longer be ours: a program may close descriptors it
//! did not open (daemons close all of them) and reuse the number. So after
//! every poll that reports anything, the descriptor's device and inode are
//! compared with those it had when opened; on a difference, or `POLLNVAL`,
//! the watch is dropped without touching the descriptor, and the thread
//! sleeps as before. A descriptor inherited by a forked child is closed
//! there only if it is still the same file, and the child opens its own
//! (two processes polling one trigger would take each other's events).
//! Not told apart: a program that closes ours and opens the same pressure
//! file at the same number (its own PSI monitor): we would poll, and after
//! a fork close, its descriptor.

use super::cgroup;
use super::sys::KeepErrno;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The trigger: 150 ms of some task stalled on memory within 2 s (a window
/// of whole 2 s units is what the kernel allows unprivileged processes).
const TRIGGER: &[u8] = b"some 150000 2000000\0";

/// The descriptor (-1: none yet; -2: none to be had, or given up).
static FD: AtomicI32 = AtomicI32::new(-1);
static DEV: AtomicU64 = AtomicU64::new(0);
static INO: AtomicU64 = AtomicU64::new(0);

/// What a wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The kernel reported memory pressure.
    Pressure,
    /// The time passed (or a signal came).
    Timeout,
    /// No watch: the caller sleeps its own way.
    NoWatch,
}

fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is valid; fstat writes it or fails.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; a bad descriptor only fails.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

fn open_trigger(path: &core::ffi::CStr) -> Option<i32> {
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened by us; the trigger text includes its NUL.
    let n = unsafe { libc::write(fd, TRIGGER.as_ptr().cast(), TRIGGER.len()) };
    if n < 0 {
        // SAFETY: our own descriptor, not yet published.
        unsafe { libc::close(fd) };
        return None;
    }
    Some(fd)
}

/// An open trigger: its descriptor and the file it was opened on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watch {
    fd: i32,
    dev: u64,
    ino: u64,
}

impl Watch {
    fn open(path: &core::ffi::CStr) -> Option<Watch> {
        let fd = open_trigger(path)?;
        let Some((dev, ino)) = identity(fd) else {
            // SAFETY: our own descriptor, not yet published.
            unsafe { libc::close(fd) };
            return None;
        };
        Some(Watch { fd, dev, ino })
    }

    /// Whether the descriptor still refers to the file opened.
    fn still_ours(&self) -> bool {
        identity(self.fd) == Some((self.dev, self.ino))
    }

    /// Polls up to `ms`; `NoWatch` when the descriptor is no longer ours
    /// (closed, reused) or the trigger is gone.
    fn wait(&self, ms: u64) -> Waited {
        let mut p = libc::pollfd {
            fd: self.fd,
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a descriptor that is no longer ours is
        // only polled, never read, written or closed.
        let n = unsafe { libc::poll(&mut p, 1, ms.min(i32::MAX as u64) as i32) };
        if n <= 0 {
            // A number the program reused for a quiet file polls quiet too:
            // look at what it is now.
            return if self.still_ours() {
                Waited::Timeout
            } else {
                Waited::NoWatch
            };
        }
        if p.revents & (libc::POLLNVAL | libc::POLLERR) != 0 || !self.still_ours() {
            return Waited::NoWatch;
        }
        if p.revents & libc::POLLPRI != 0 {
            Waited::Pressure
        } else {
            Waited::Timeout
        }
    }

    fn load() -> Option<Watch> {
        let fd = FD.load(Ordering::Relaxed);
        (fd >= 0).then(|| Watch {
            fd,
            dev: DEV.load(Ordering::Relaxed),
            ino: INO.load(Ordering::Relaxed),
        })
    }
}

/// Opens the process's trigger once; `None` when there is none (no PSI,
/// not permitted, or given up).
fn ensure_open() -> Option<Watch> {
    match FD.load(Ordering::Relaxed) {
        -2 => return None,
        -1 => {}
        _ => return Watch::load(),
    }
    let mut buf = [0u8; cgroup::PATH_MAX];
    let w = cgroup::pressure_file(&mut buf)
        .and_then(Watch::open)
        .or_else(|| Watch::open(c"/proc/pressure/memory"));
    let Some(w) = w else {
        FD.store(-2, Ordering::Relaxed);
        return None;
    };
    DEV.store(w.dev, Ordering::Relaxed);
    INO.store(w.ino, Ordering::Relaxed);
    FD.store(w.fd, Ordering::Relaxed);
    Some(w)
}

/// Waits up to `ms` for memory pressure (background thread only).
pub fn wait(ms: u64) -> Waited {
    let _errno = KeepErrno::new();
    let Some(w) = ensure_open() else {
        return Waited::NoWatch;
    };
    let r = w.wait(ms);
    if r == Waited::NoWatch {
        // Closed by the program, reused, or the cgroup went away: give up.
        FD.store(-2, Ordering::Relaxed);
    }
    r
}

/// Whether a trigger is being watched (for statistics).
pub fn watching() -> bool {
    FD.load(Ordering::Relaxed) >= 0
}

/// In a forked child: close the parent's trigger if the descriptor still is
/// it, and let the child's background thread open its own.
pub fn after_fork_child() {
    let _errno = KeepErrno::new();
    if let Some(w) = Watch::load() {
        if w.still_ours() {
            // SAFETY: the descriptor is still the trigger file the parent
            // opened, which nothing in the child uses.
            unsafe { libc::close(w.fd) };
        }
    }
    FD.store(-1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_is_watched_until_its_descriptor_stops_being_ours() {
        let Some(w) = Watch::open(c"/proc/pressure/memory") else {
            eprintln!("skipped: this kernel refuses a PSI trigger here");
            return;
        };
        // No pressure on an idle machine within 20 ms (or an event, which
        // a busy machine may have: either is an answer of a live watch).
        assert_ne!(w.wait(20), Waited::NoWatch);
        // The program reuses its number for a quiet file (an empty pipe:
        // `poll` reports nothing): not ours, so the watch ends. `dup2` onto
        // the number while it is still ours replaces the trigger in one
        // step: closing it first would let another test thread take the
        // number, and the `dup2` would then close that thread's file.
        let mut quiet = [0i32; 2];
        // SAFETY: a valid out-array of two descriptors, then valid
        // descriptors of this test (`w.fd` is still the trigger).
        unsafe {
            assert_eq!(libc::pipe(quiet.as_mut_ptr()), 0);
            assert_eq!(libc::dup2(quiet[0], w.fd), w.fd);
            libc::close(quiet[0]);
            libc::close(quiet[1]);
        }
        assert_eq!(w.wait(20), Waited::NoWatch);
        // Its number is reused for another file that makes `poll` report
        // something (a pipe with a byte in it and its writer gone):
        // not ours, so the watch ends, and the pipe is neither read nor
        // closed.
        let mut fds = [0i32; 2];
        // SAFETY: a valid out-array of two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: valid descriptors of this test (`w.fd` is the quiet
        // pipe's copy, still ours).
        unsafe {
            assert_eq!(libc::dup2(fds[0], w.fd), w.fd);
            assert_eq!(libc::write(fds[1], b"x".as_ptr().cast(), 1), 1);
            libc::close(fds[1]);
            libc::close(fds[0]);
        }
        assert_eq!(w.wait(20), Waited::NoWatch);
        let mut byte = 0u8;
        // SAFETY: the dup'ed read end, still open, with its byte unread.
        assert_eq!(unsafe { libc::read(w.fd, (&mut byte as *mut u8).cast(), 1) }, 1);
        assert_eq!(byte, b'x');
        // The program closes it: the watch ends without touching it (the
        // number may meanwhile be another test thread's: not ours either).
        // SAFETY: the test's own descriptor, closed once.
        unsafe { libc::close(w.fd) };
        assert_eq!(w.wait(20), Waited::NoWatch);
    }
}
