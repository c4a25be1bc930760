//! Meshing (mesh mode, `HUGEGUARD_MESH=on`; `docs/MESH.md`): when the
//! program is idle, sparse *units* of a size class (a run of up to 16 pages
//! of one class's home huge page: whole spans and free pages) whose live
//! bytes sit at disjoint offsets are merged onto one unit's physical pages.
//! The heap is a shared memory file, so a member unit's virtual pages are
//! mapped onto its owner's file pages; no pointer changes.
//!
//! The steps, for each class ([`round`]):
//! 1. Under the class's list lock and the heap lock: walk the class's
//!    homes unit by unit, compute each sparse unit's live-byte mask (8-byte
//!    granules; objects in thread caches count as live), and put it into
//!    the first of the last [`GROUPS`] open groups whose union it misses.
//!    A unit that joins a group, and the group's owner, are *frozen*: their
//!    spans leave the list (no new object can land on a slot another unit
//!    uses) and their free pages are pinned. Frees go on as usual and only
//!    shrink the live masks, so disjointness holds from then on.
//! 2. With no allocator lock held, for each member: write-protect it
//!    (userfaultfd: a writer waits in the kernel), copy its live granules
//!    into the owner's pages at the same offsets, map its virtual pages onto
//!    the owner's file pages, wake the writers (they fault again, onto the
//!    owner's page), and punch its own file pages out.
//!
//! A member whose spans are all wholly free is unmeshed ([`unmesh_empty`]):
//! mapped back onto its own (punched, so zero) file pages, its spans
//! returned to the heap, its pages unpinned; an owner left with no member
//! is thawed. Frozen spans take no new objects until then: that is how a
//! page that "fills again" is kept correct.
//!
//! The mesh lock ranks `Mesh` (`lock_rank.rs`): lists and the heap are
//! taken under it, never it under them. `fork` takes the mesh lock first, so the child never sees a half-done
//! mesh; the child copies the shared file ([`crate::os::shared`]).

mod engine;
pub(crate) mod plan;
mod table;
mod world;

use crate::global::SHARED;
use crate::os::fork_window;
use crate::report::MeshRound;
use crate::units::PAGE_SIZE;
use core::sync::atomic::{AtomicI32, Ordering};
use engine::Mesher;
use table::{Rec, Role};
use world::ProcessWorld;

/// The process's mesher: the mesh lock, its table and the counts.
static MESHER: Mesher = Mesher::new(table::CAPACITY);

/// Thaws the classes that asked for it (through the doorbell); returns the
/// units unmeshed. For the background thread, also while the program is
/// busy.
pub(crate) fn thaw_requested() -> usize {
    if !active() {
        return 0;
    }
    MESHER.thaw_requested(&ProcessWorld)
}

/// The heap's copy for the child of a fork in progress (set between the
/// fork handlers; the mesh lock is held meanwhile).
static FORK_COPY: AtomicI32 = AtomicI32::new(-1);

/// Whether meshing is on: mesh mode, and the heap was reserved in the
/// shared file (a userfaultfd holds back every write). A reservation the
/// file could not be mapped over stays private memory, never meshed.
pub(crate) fn active() -> bool {
    SHARED.mapped()
}

/// Units meshed now, the bytes they span, and units meshed since start.
pub(crate) fn totals() -> (usize, usize, usize) {
    MESHER.totals()
}

/// One meshing round over every class: first unmeshes what emptied, then
/// meshes what it can. Does nothing unless meshing is on.
pub(crate) fn round() -> MeshRound {
    if !active() {
        return MeshRound::default();
    }
    MESHER.round(&ProcessWorld)
}

/// Fork, before: starts the fork window's helper while no allocator lock
/// is held (`os::fork_window`), then takes the mesh lock first (no mesh is
/// half done in the child).
pub(crate) fn fork_prepare_lock() {
    if active() {
        fork_window::start(SHARED.guard());
    }
    MESHER.table().lock_raw();
}

/// Fork, before, with every allocator lock held: copies the heap for the
/// child (writers wait from the copy until `fork` has returned in the
/// parent; the forking thread's own writes go on).
pub(crate) fn fork_prepare_copy() {
    if !active() {
        return;
    }
    let (base, committed) = SHARED.committed();
    let copy = SHARED
        .fork_prepare_copy(base, committed, fork_window::open)
        .unwrap_or(-1);
    FORK_COPY.store(copy, Ordering::Relaxed);
}

/// The copy [`fork_prepare_copy`] made, taken (at most once per fork).
fn take_fork_copy() -> Option<i32> {
    let copy = FORK_COPY.swap(-1, Ordering::Relaxed);
    (copy >= 0).then_some(copy)
}

/// Fork, after, in the parent: drops the child's copy and wakes the
/// writers that waited since the copy, then unlocks.
///
/// # Safety
/// The calling thread took the mesh lock in [`fork_prepare_lock`], and
/// still holds the heap lock (the committed size is the copy's).
pub(crate) unsafe fn fork_parent() {
    let (base, committed) = SHARED.committed();
    fork_window::close();
    SHARED.fork_parent_done(take_fork_copy(), base, committed);
    // SAFETY: forwarded from the caller.
    unsafe { MESHER.table().unlock_raw() };
}

/// Fork, after, in the child: maps the copy made before the fork,
/// re-creates the meshed mappings, then unlocks.
///
/// # Safety
/// The calling thread took the mesh lock in [`fork_prepare_lock`] and is
/// the child's only thread.
pub(crate) unsafe fn fork_child() {
    if active() {
        fork_window::reset_in_child();
        let (base, committed) = SHARED.committed();
        // SAFETY: forwarded from the caller: the lock is held by us alone.
        let table = unsafe { MESHER.table().held_value() };
        SHARED.fork_child_map(committed, take_fork_copy(), |file| {
            for i in 0..table.len() as u32 {
                let Some(&mut r) = table.get_mut(i) else {
                    continue;
                };
                if r.role == Role::Meshed {
                    let Some(&mut Rec { start: owner, .. }) = table.get_mut(r.owner) else {
                        crate::os::linux::abort_with(
                            b"hugeguard: fork: a meshed unit lost its owner\n",
                        );
                    };
                    let len = r.pages as usize * PAGE_SIZE;
                    // SAFETY: the member's pages, as in the parent.
                    if !unsafe { file.alias(r.start, owner - base, len) } {
                        crate::os::linux::abort_with(b"hugeguard: fork: re-meshing failed\n");
                    }
                }
            }
        });
    }
    // SAFETY: forwarded from the caller.
    unsafe { MESHER.table().unlock_raw() };
}

#[cfg(test)]
mod tests;
