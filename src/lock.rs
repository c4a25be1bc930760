//! A lock that never allocates, sleeps instead of spinning on a preempted
//! holder, and that a forked child can reset.
//!
//! `std::sync::Mutex` may allocate on some platforms and cannot be reset after
//! `fork()`; the allocator needs neither. The lock word is a futex with three
//! states (unlocked, locked, locked with sleepers), as in Drepper's "Futexes
//! are tricky" and std's Linux mutex. A waiter spins briefly while the holder
//! is (probably) running, then sleeps in the kernel until the holder wakes it:
//! with more threads than cores the holder may have been preempted, and a
//! spinning waiter would burn the time slice the holder needs to finish.
//! Unlocking is one atomic swap, plus a wake-up system call only when some
//! thread went to sleep.
//!
//! Every lock has a rank in the lock order (`lock_rank.rs`); debug builds
//! check on every acquire that a thread's ranks only increase.

use crate::lock_rank::Rank;
use crate::os::linux;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// The lock word's states.
const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and a waiter may be asleep on the word.
const SLEEPERS: u32 = 2;
/// Spins before a waiter goes to sleep (a few hundred nanoseconds: a
/// critical section of the allocator that is not preempted ends by then).
const SPINS: u32 = 100;

/// A mutual-exclusion lock around `T`, usable in `static`s.
pub struct SpinLock<T> {
    state: AtomicU32,
    #[cfg(debug_assertions)]
    rank: Rank,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `value`, so sharing the lock
// between threads is sound whenever `T` may be sent between threads.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value; fine when `T: Send`.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new, unlocked lock of `rank` in the lock order (kept by debug
    /// builds only).
    #[cfg_attr(not(debug_assertions), allow(unused_variables))]
    pub const fn new(rank: Rank, value: T) -> Self {
        SpinLock {
            state: AtomicU32::new(UNLOCKED),
            #[cfg(debug_assertions)]
            rank,
            value: UnsafeCell::new(value),
        }
    }

    /// Debug builds: checks the lock order and records the acquire.
    #[inline(always)]
    fn note_acquire(&self) {
        #[cfg(debug_assertions)]
        crate::lock_rank::acquire(self.rank, self as *const Self as usize);
    }

    /// Debug builds: records the release.
    #[inline(always)]
    fn note_release(&self) {
        #[cfg(debug_assertions)]
        crate::lock_rank::release(self as *const Self as usize);
    }

    /// Takes the lock, spinning briefly and then sleeping while another
    /// thread holds it.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.note_acquire();
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut state = self.spin();
        if state == UNLOCKED {
            match self.state.compare_exchange(
                UNLOCKED,
                LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
        loop {
            // Announce a sleeper before sleeping. A lock taken this way stays
            // marked, so its release wakes the next sleeper (at worst one
            // wake-up too many).
            if state != SLEEPERS && self.state.swap(SLEEPERS, Ordering::Acquire) == UNLOCKED {
                return;
            }
            linux::futex_wait_while(&self.state, SLEEPERS);
            state = self.spin();
        }
    }

    /// Spins while the lock is held and nobody sleeps on it (the holder is
    /// likely running); returns the state seen last.
    fn spin(&self) -> u32 {
        let mut n = SPINS;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if state != LOCKED || n == 0 {
                return state;
            }
            core::hint::spin_loop();
            n -= 1;
        }
    }

    /// Releases the lock; wakes a sleeper if one announced itself.
    #[inline]
    fn unlock(&self) {
        self.note_release();
        if self.state.swap(UNLOCKED, Ordering::Release) == SLEEPERS {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        linux::futex_wake(&self.state);
    }

    /// Takes the lock only if it is free right now.
    #[cfg(test)]
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| {
                self.note_acquire();
                SpinGuard { lock: self }
            })
    }

    /// Takes the lock and leaves it held with no guard (for `fork` preparation).
    pub fn lock_raw(&self) {
        core::mem::forget(self.lock());
    }

    /// The value behind a lock taken with [`SpinLock::lock_raw`].
    ///
    /// # Safety
    /// The calling thread holds the lock through `lock_raw`, and no other
    /// reference to the value is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn held_value(&self) -> &mut T {
        // SAFETY: forwarded from the caller: the lock makes this access
        // the only one.
        unsafe { &mut *self.value.get() }
    }

    /// Releases a lock taken with [`SpinLock::lock_raw`], waking a sleeper.
    ///
    /// # Safety
    /// The caller must hold the lock through `lock_raw` (or be the only thread
    /// left, as in a forked child, where waking the parent's sleepers is a
    /// harmless system call) and must not use any guard of it afterwards.
    pub unsafe fn unlock_raw(&self) {
        self.unlock();
    }
}

/// Proof that the lock is held; releases it when dropped.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and `&mut self`
        // makes this the only reference obtained through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_correctly_under_contention() {
        let lock = Arc::new(SpinLock::new(Rank::Heap, 0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 40_000);
    }

    #[test]
    fn try_lock_fails_while_held_and_raw_unlock_frees() {
        let lock = SpinLock::new(Rank::Heap, 1);
        lock.lock_raw();
        assert!(lock.try_lock().is_none());
        // SAFETY: we hold it through lock_raw.
        unsafe { lock.unlock_raw() };
        assert!(lock.try_lock().is_some());
    }

    /// Waiters for a lock held a long time (a preempted holder looks the
    /// same to them) sleep in the kernel: 4 waiters on 2 cores burn almost
    /// no CPU while the holder keeps the lock for 300 ms, and all get it
    /// once it is released.
    #[test]
    fn waiters_sleep_while_the_holder_keeps_the_lock() {
        let lock = Arc::new(SpinLock::new(Rank::Heap, 0u64));
        let guard = lock.lock();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    let start = linux::thread_cpu_us();
                    *lock.lock() += 1;
                    linux::thread_cpu_us() - start
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(guard);
        let cpu: Vec<u64> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(*lock.lock(), 4);
        // Spinning (or yielding in a loop) for 300 ms costs about that much
        // CPU per waiter, shared between 2 cores; sleeping costs a few
        // microseconds of system calls.
        assert!(
            cpu.iter().all(|&us| us < 20_000),
            "waiters' CPU time (us): {cpu:?}"
        );
    }
}
