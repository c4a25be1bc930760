//! The thread-exit key, published by the hooks once they are installed
//! (the key created and the fork handlers registered) and armed by each
//! thread's cache when it first caches. A leaf: the cache reaches the key
//! here, not through the hooks that call back into it.

use crate::os::linux::ThreadExitKey;
use core::sync::atomic::{AtomicU64, Ordering};

/// The key in the low 32 bits, [`READY`] once published; 0 before.
static KEY: AtomicU64 = AtomicU64::new(0);
const READY: u64 = 1 << 32;

/// Publishes the key: from now on threads can arm it.
pub(crate) fn publish(key: &ThreadExitKey) {
    KEY.store(READY | key.raw() as u64, Ordering::Release);
}

/// Arms the calling thread's exit hook; `false` while it cannot be armed
/// (hooks not installed, or their installation failed), in which case the
/// thread caches nothing.
pub(crate) fn arm() -> bool {
    let k = KEY.load(Ordering::Acquire);
    if k & READY == 0 {
        return false;
    }
    ThreadExitKey::from_raw(k as u32).arm(1 as *mut u8);
    if crate::os::linux::is_initial_thread() {
        crate::doorbell::note_initial_thread_watched();
    }
    true
}
