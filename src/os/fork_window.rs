//! The fork window of mesh mode: from the moment the prepare handler has
//! copied the shared heap for the child until `fork` has returned in the
//! parent, every thread but the forking one that writes to the heap waits
//! (userfaultfd write-protection), so the child's copy of the heap and its
//! copy of the rest of memory are of one instant.
//!
//! The forking thread itself must go on writing: the C library's fork code
//! runs after the handlers and writes to memory it allocated (glibc takes
//! and releases its NSS lock, which lives in the heap), and a write to a
//! protected page waits until someone else lifts the protection. That
//! someone is a helper thread, started for each fork before any allocator
//! lock is taken ([`start`]): while the window is open ([`open`]) it reads
//! the userfaultfd and lifts the protection of each page the forking
//! thread writes to (a thread of the program waiting on that same page is
//! let go with it). The parent's handler closes the window ([`close`]) and
//! waits until the helper has stopped, so the helper never lifts a
//! protection that a later meshing round set.
//!
//! A program with no other thread needs no helper: nobody else can write,
//! and the protection is lifted at once after the copy (as when the helper
//! cannot be started).

use super::linux;
use super::shared::{Fault, WriteGuard};
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// No fork in progress, or one without a helper.
const IDLE: u32 = 0;
/// A helper runs and waits for the window to open.
const STARTED: u32 = 1;
/// The window is open: the helper serves the forking thread's faults.
const OPEN: u32 = 2;
/// The window is closing: the helper stops.
const CLOSING: u32 = 3;

/// The window's phase (a futex word the helper waits on).
static PHASE: AtomicU32 = AtomicU32::new(IDLE);
/// The forking thread's id, while the window is open.
static FORKER: AtomicU32 = AtomicU32::new(0);
/// The userfaultfd the helper reads (valid from [`start`] to [`close`]).
static UFFD: AtomicI32 = AtomicI32::new(-1);
/// An eventfd that ends the helper's wait for faults at once.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// 1 once the helper of the current fork has stopped (a futex word).
static DONE: AtomicU32 = AtomicU32::new(1);

/// How long the helper waits in one go (it re-checks the phase after).
const WAIT_MS: u64 = 100;

/// Fork, before any allocator lock is taken: starts a helper for the
/// window if the program has other threads and `guard` exists. Calls the
/// C library (thread creation allocates): no allocator lock may be held.
pub fn start(guard: Option<ManuallyDrop<WriteGuard>>) {
    let Some(guard) = guard else {
        return;
    };
    if PHASE.load(Ordering::Acquire) != IDLE || linux::other_live_threads() == Some(0) {
        return;
    }
    let _errno = super::sys::KeepErrno::new();
    // SAFETY: the eventfd system call takes a count and flags only.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if wake < 0 {
        return;
    }
    UFFD.store(guard.raw_fd(), Ordering::Relaxed);
    WAKE.store(wake, Ordering::Relaxed);
    DONE.store(0, Ordering::Relaxed);
    PHASE.store(STARTED, Ordering::Release);
    if !linux::spawn_detached(helper) {
        PHASE.store(IDLE, Ordering::Release);
        DONE.store(1, Ordering::Relaxed);
        close_wake_fd();
    }
}

/// Fork, in the prepare handler once the heap is copied and protected:
/// opens the window for the calling (forking) thread. `false` when no
/// helper runs: the caller must then lift the protection itself.
pub fn open() -> bool {
    if PHASE.load(Ordering::Acquire) != STARTED {
        return false;
    }
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::gettid() } as u32;
    FORKER.store(tid, Ordering::Relaxed);
    PHASE.store(OPEN, Ordering::Release);
    linux::futex_wake(&PHASE);
    true
}

/// Fork, in the parent after `fork` (or in the prepare handler when the
/// copy failed): stops the helper, if one runs, and waits until it has.
/// The helper takes no lock, so this may be called with every allocator
/// lock held.
pub fn close() {
    let phase = PHASE.load(Ordering::Acquire);
    if phase != STARTED && phase != OPEN {
        return;
    }
    PHASE.store(CLOSING, Ordering::Release);
    linux::futex_wake(&PHASE);
    ring_wake_fd();
    while DONE.load(Ordering::Acquire) == 0 {
        linux::futex_wait_while(&DONE, 0);
    }
    close_wake_fd();
    UFFD.store(-1, Ordering::Relaxed);
    PHASE.store(IDLE, Ordering::Release);
}

/// Fork, in the child: no helper was copied into it; forgets the parent's.
pub fn reset_in_child() {
    if PHASE.load(Ordering::Relaxed) != IDLE {
        close_wake_fd();
    }
    UFFD.store(-1, Ordering::Relaxed);
    DONE.store(1, Ordering::Relaxed);
    PHASE.store(IDLE, Ordering::Relaxed);
}

fn ring_wake_fd() {
    let fd = WAKE.load(Ordering::Relaxed);
    if fd >= 0 {
        let _errno = super::sys::KeepErrno::new();
        let one: u64 = 1;
        // SAFETY: our eventfd; an 8-byte buffer that outlives the call.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

fn close_wake_fd() {
    let fd = WAKE.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the eventfd `start` opened, closed once.
        unsafe { libc::close(fd) };
    }
}

/// The helper: waits for the window, lifts the protection of the pages the
/// forking thread writes to while it is open, and stops when it closes.
/// Allocates nothing and takes no lock.
extern "C" fn helper(_: *mut libc::c_void) -> *mut libc::c_void {
    let guard = ManuallyDrop::new(WriteGuard::from_raw_fd(UFFD.load(Ordering::Relaxed)));
    let wake = WAKE.load(Ordering::Relaxed);
    loop {
        match PHASE.load(Ordering::Acquire) {
            STARTED => linux::futex_wait(&PHASE, STARTED, WAIT_MS),
            OPEN => {
                let forker = FORKER.load(Ordering::Relaxed);
                guard.wait_for_faults(wake, WAIT_MS, |fault: Fault| {
                    if fault.tid == forker && PHASE.load(Ordering::Acquire) == OPEN {
                        let page = fault.addr & !(crate::units::PAGE_SIZE - 1);
                        guard.protect(page, crate::units::PAGE_SIZE, false);
                    }
                });
            }
            _ => break,
        }
    }
    DONE.store(1, Ordering::Release);
    linux::futex_wake(&DONE);
    core::ptr::null_mut()
}
