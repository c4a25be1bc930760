//! The background thread's doorbell: the few atomics through which the
//! allocator's slow paths and hooks signal the background thread, without
//! importing it.
//!
//! * [`note_free`]: a slow path returned memory; wakes the thread if it is
//!   parked (one futex wake, only then).
//! * [`note_thread_exit`]: a thread is ending, perhaps the program's last.
//! * [`wake`]: other work for the thread (the heap profile's signal).
//! * [`request_thaw`]: mesh mode: a class needed a new span while some of
//!   its spans were frozen; the thread is to thaw them.
//! * [`maybe_start`]: start the thread if none runs. The doorbell does not
//!   know how: the background module registers its starter
//!   ([`set_starter`]) when the hooks are installed, which happens before
//!   the first slow path that rings (every ringing path has made the heap
//!   exist first). Until then, ringing starts nothing.
//!
//! The other side (the thread's park, its state after `fork`) reads and
//! writes the same words through the `pub(crate)` functions below. A leaf:
//! it imports only the OS layer's futex.
//!
//! **Quiet while the initial thread is watched.** The background thread must
//! end when it is the process's last thread, which can only happen after
//! the program's initial thread has ended (with `pthread_exit`: a return
//! from `main` ends the process). Once the initial thread has armed its
//! exit hook ([`note_initial_thread_watched`]), its end rings the doorbell,
//! and until then the background thread needs no timer to look for it
//! ([`quiet`]): an idle process sees one wake-up per long park. After the
//! initial thread's end, and in a forked child, the thread looks every
//! 250 ms as before. (A pidfd of the initial thread, `PIDFD_THREAD`, is not
//! enough: measured on Linux 6.18, a thread-group leader's pidfd does not
//! become readable while other threads live on, so a process whose main
//! called `pthread_exit` was left with our thread parked in `poll`.)

use crate::os::linux;
use crate::size_class::NUM_CLASSES;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, Ordering};

/// No background thread runs (none started yet, or it ended, or a fork).
pub(crate) const NONE: u8 = 0;
/// The thread runs (or is being spawned).
pub(crate) const RUNNING: u8 = 1;
/// It must not or could not run: configured off, or the spawn failed.
pub(crate) const FAILED: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(NONE);
/// The futex word the thread parks on; bumped to wake it.
static WORD: AtomicU32 = AtomicU32::new(0);
static PARKED: AtomicBool = AtomicBool::new(false);
/// Set by the thread-exit hook: a thread is ending, perhaps the last one.
static THREAD_ENDING: AtomicBool = AtomicBool::new(false);
/// Set by slow paths when memory was freed since the last pass.
static FREED: AtomicBool = AtomicBool::new(false);
/// The initial thread armed its exit hook, and has not ended.
static INITIAL_WATCHED: AtomicBool = AtomicBool::new(false);
/// How to start the thread (a `fn()`), null until registered.
static STARTER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Called from allocator slow paths that return memory: wakes the parked
/// background thread (a system call only when it is parked).
#[inline]
pub(crate) fn note_free() {
    if !FREED.load(Ordering::Relaxed) {
        FREED.store(true, Ordering::Relaxed);
    }
    if PARKED.load(Ordering::Relaxed) && PARKED.swap(false, Ordering::AcqRel) {
        ring();
    }
}

/// Classes that needed a new span while some of their spans were frozen
/// for meshing: their units are to be thawed, so the frozen spans' free
/// slots are used again.
static THAW: [AtomicBool; NUM_CLASSES] = [const { AtomicBool::new(false) }; NUM_CLASSES];
static THAW_ANY: AtomicBool = AtomicBool::new(false);

/// Asks for `class`'s frozen units to be thawed (from the allocator's slow
/// path, under the class's list lock: two atomic stores). The caller rings
/// [`note_free`] once it has dropped the lock.
pub(crate) fn request_thaw(class: usize) {
    if !THAW[class].load(Ordering::Relaxed) {
        THAW[class].store(true, Ordering::Relaxed);
        THAW_ANY.store(true, Ordering::Release);
    }
}

/// Whether some class asked to be thawed.
pub(crate) fn thaw_pending() -> bool {
    THAW_ANY.load(Ordering::Relaxed)
}

/// Takes the "some class asked" signal.
pub(crate) fn take_thaw_any() -> bool {
    THAW_ANY.swap(false, Ordering::Acquire)
}

/// Takes `class`'s request.
pub(crate) fn take_thaw(class: usize) -> bool {
    THAW[class].swap(false, Ordering::Relaxed)
}

/// Wakes the background thread from any wait, for work that is not freed
/// memory (the heap profile's signal). Async-signal-safe: atomics and a
/// futex wake.
pub(crate) fn wake() {
    if STATE.load(Ordering::Relaxed) == RUNNING {
        ring();
    }
}

/// Called from the thread-exit hook of an ending thread: wakes the
/// background thread so it can end too if that thread was the last one.
pub(crate) fn note_thread_exit() {
    if INITIAL_WATCHED.load(Ordering::Relaxed) && linux::is_initial_thread() {
        // From now on the background thread must look for itself.
        INITIAL_WATCHED.store(false, Ordering::Release);
    }
    if STATE.load(Ordering::Relaxed) != RUNNING {
        return;
    }
    THREAD_ENDING.store(true, Ordering::Release);
    ring();
}

/// The initial thread has armed its exit hook (see the module overview).
pub(crate) fn note_initial_thread_watched() {
    INITIAL_WATCHED.store(true, Ordering::Release);
}

/// Whether the background thread may wait without a timer for the end of
/// the program's last thread: the initial thread lives, and its exit hook
/// will ring.
pub(crate) fn quiet() -> bool {
    INITIAL_WATCHED.load(Ordering::Acquire)
}

fn ring() {
    WORD.fetch_add(1, Ordering::Release);
    linux::futex_wake(&WORD);
}

/// Starts the background thread if none runs and a starter is registered.
/// Call with no allocator lock held.
#[inline]
pub(crate) fn maybe_start() {
    if STATE.load(Ordering::Relaxed) != NONE {
        return;
    }
    start_slow();
}

#[cold]
fn start_slow() {
    let f = STARTER.load(Ordering::Acquire);
    if !f.is_null() {
        // SAFETY: only `set_starter` stores into `STARTER`, and it stores a
        // `fn()`.
        let start: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(f) };
        start();
    }
}

/// Registers how [`maybe_start`] starts the thread (idempotent).
pub(crate) fn set_starter(start: fn()) {
    STARTER.store(start as *mut (), Ordering::Release);
}

/// The thread's state: [`NONE`], [`RUNNING`] or [`FAILED`].
pub(crate) fn state() -> u8 {
    STATE.load(Ordering::Relaxed)
}

/// Sets the thread's state.
pub(crate) fn set_state(s: u8) {
    STATE.store(s, Ordering::Relaxed);
}

/// Claims the start: `true` for the one caller that moves the state from
/// [`NONE`] to [`RUNNING`].
pub(crate) fn claim_start() -> bool {
    STATE
        .compare_exchange(NONE, RUNNING, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Whether memory was freed since [`clear_freed`].
pub(crate) fn freed() -> bool {
    FREED.load(Ordering::Relaxed)
}

/// Forgets earlier frees (the thread is about to run a pass).
pub(crate) fn clear_freed() {
    FREED.store(false, Ordering::Relaxed);
}

/// Takes the "a thread is ending" signal.
pub(crate) fn take_thread_ending() -> bool {
    THREAD_ENDING.swap(false, Ordering::Acquire)
}

/// Waits on the doorbell for `ms` at most. With `park`, a [`note_free`]
/// rings it too (otherwise only [`note_thread_exit`] and [`wake`] do), and
/// a free that came before the park returns at once.
pub(crate) fn wait(ms: u64, park: bool) {
    let word = WORD.load(Ordering::Acquire);
    if park {
        PARKED.store(true, Ordering::Release);
        if FREED.load(Ordering::Relaxed) {
            PARKED.store(false, Ordering::Relaxed);
            return;
        }
    }
    linux::futex_wait(&WORD, word, ms);
    if park {
        PARKED.store(false, Ordering::Relaxed);
    }
}

/// In a forked child: no background thread exists there. Returns whether
/// the parent had one running (the child starts its own on next need).
pub(crate) fn after_fork_child() -> bool {
    PARKED.store(false, Ordering::Relaxed);
    // The child's initial thread is the one that forked, whose hook may or
    // may not be armed: look every 250 ms there.
    INITIAL_WATCHED.store(false, Ordering::Relaxed);
    THREAD_ENDING.store(false, Ordering::Relaxed);
    let was_running = STATE.load(Ordering::Relaxed) == RUNNING;
    if was_running {
        STATE.store(NONE, Ordering::Relaxed);
    }
    was_running
}
