//! The public control face of the background release: every control a
//! program can call (`set_background`, `release_now`, `mesh_now`) and the
//! thread's running state for `Stats`.

use super::driver::release_pass;
use super::thread::{ENABLED, WORK};
use crate::doorbell;
use crate::global;
use crate::units::PAGE_SIZE;
use core::sync::atomic::Ordering;

/// Turns the background release thread's work on or off (it is started on
/// first need either way, unless `HUGEGUARD_BACKGROUND=off`). When it turns
/// the work off, it returns once a round of work under way has ended: from
/// then on the background thread releases nothing and takes no cache.
pub fn set_background(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
    if !enabled {
        // A round that began before the store ends before this lock is ours;
        // later rounds see the switch off.
        drop(WORK.lock());
    }
    doorbell::note_free();
}

/// Whether the background thread is running.
pub fn background_running() -> bool {
    doorbell::state() == doorbell::RUNNING
}

/// Releases everything releasable now, ignoring the hold-back (like
/// `malloc_trim(0)` or Go's `debug.FreeOSMemory`): the calling thread's
/// cache, the caches of other threads that are not inside an allocator call
/// right now, and all parked batches first. Returns the bytes released.
pub fn release_now() -> usize {
    crate::cache::flush_current_thread();
    crate::cache::reclaim(crate::cache::Reclaim::All);
    global::drain_transfer_caches();
    release_pass(true, crate::config::get().holdback_ms).released_pages * PAGE_SIZE
}

/// In mesh mode (`HUGEGUARD_MESH=on` where userfaultfd may hold back every
/// write), releases what it can ([`release_now`]) and meshes sparse spans
/// now instead of waiting for the program to go idle; what it did. Does
/// nothing else otherwise (all zero).
pub fn mesh_now() -> crate::report::MeshRound {
    if !crate::mesh::active() {
        return Default::default();
    }
    release_now();
    let mut total = crate::mesh::round();
    // Units freed by the first round's unmeshing may mesh in a second.
    let more = crate::mesh::round();
    total.meshed_units += more.meshed_units;
    total.punched_bytes += more.punched_bytes;
    total.unmeshed_units += more.unmeshed_units;
    total
}
