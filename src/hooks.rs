//! The hooks the allocator installs in the C library, once, from its first
//! slow path: a pthread key whose destructor runs when a thread that used
//! its cache exits (its cache goes back, and the background thread hears of
//! it), and the `fork` handlers (prepare takes every allocator lock in order,
//! parent and child release them; the child also resets the cache registry
//! and the background thread's state), and the doorbell's starter (how a
//! slow path starts the background thread).
//!
//! Installed with no allocator lock held: glibc may allocate inside
//! `pthread_key_create` and `pthread_atfork`.

use crate::background;
use crate::doorbell;
use crate::global::{CENTRAL, HEAP};
use crate::os::linux::{self, ThreadExitKey};
use core::sync::atomic::{AtomicU8, Ordering};

const HOOKS_NONE: u8 = 0;
const HOOKS_BUSY: u8 = 1;
const HOOKS_DONE: u8 = 2;
const HOOKS_FAILED: u8 = 3;
static HOOKS: AtomicU8 = AtomicU8::new(HOOKS_NONE);

/// Creates the thread-exit key and registers the fork handlers, once; a
/// failure leaves threads without caches (they pass through to the central
/// lists) rather than breaking anything.
pub(crate) fn install() {
    // Before anything can fail or return early: the doorbell can start the
    // background thread from the caller's next slow path.
    doorbell::set_starter(background::start);
    if HOOKS
        .compare_exchange(HOOKS_NONE, HOOKS_BUSY, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let ok = match ThreadExitKey::create(thread_exit_dtor) {
        Some(key) => {
            let ok = linux::register_fork_handlers(fork_prepare, fork_parent, fork_child);
            if ok {
                // Threads cache only once the fork handlers guard the caches.
                crate::thread_exit::publish(&key);
            }
            ok
        }
        None => false,
    };
    HOOKS.store(
        if ok { HOOKS_DONE } else { HOOKS_FAILED },
        Ordering::Release,
    );
}

unsafe extern "C" fn thread_exit_dtor(_: *mut core::ffi::c_void) {
    crate::cache::on_thread_exit();
    // Perhaps the program's last thread: the background thread must not
    // outlive it.
    doorbell::note_thread_exit();
}

unsafe extern "C" fn fork_prepare() {
    crate::mesh::fork_prepare_lock();
    crate::cache::lock_for_fork();
    for c in CENTRAL.iter() {
        c.lock_raw();
    }
    HEAP.lock_raw();
    crate::profile::table::lock_for_fork();
    // Mesh mode: the heap is shared memory; copy it for the child now.
    crate::mesh::fork_prepare_copy();
}

unsafe extern "C" fn fork_parent() {
    // SAFETY: `fork_prepare` took every lock on this thread.
    unsafe {
        crate::mesh::fork_parent();
        unlock_all();
        crate::cache::unlock_after_fork_parent();
    }
}

unsafe extern "C" fn fork_child() {
    // SAFETY: the child has only this thread, which took every lock in
    // `fork_prepare`. The heap copy is mapped first: until it is, every
    // write to the heap would land in the parent's memory.
    unsafe {
        crate::mesh::fork_child();
        unlock_all();
        crate::cache::reset_after_fork_child();
    }
    background::after_fork_child();
}

/// # Safety
/// The calling thread holds every allocator lock through `lock_raw`.
unsafe fn unlock_all() {
    // SAFETY: forwarded from the caller.
    unsafe {
        crate::profile::table::unlock_after_fork();
        HEAP.unlock_raw();
        for c in CENTRAL.iter().rev() {
            c.unlock_raw();
        }
    }
}
