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

mod table;

use crate::central::CentralList;
use crate::global::{ProcessHeap, CENTRAL, HEAP};
use crate::lock::SpinLock;
use crate::lock_rank::Rank;
use crate::os::linux::LinuxOs;
use crate::os::shared;
use crate::page_heap::mesh::{Unit, MAX_UNIT_PAGES};
use crate::page_heap::PageHeap;
use crate::size_class::{CLASS_PAGES, CLASS_SIZE, NUM_CLASSES};
use crate::units::{PAGES_PER_HUGE, PAGE_SIZE};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use table::{Rec, Role, Table};

/// Open groups a unit is tried against (the most recent ones).
pub(crate) const GROUPS: usize = 32;
/// Members a class that asks for its frozen spans gets back per request
/// (each gives back a unit's free slots, most of a sparse unit).
const THAW_UNITS: usize = 4;
/// Members planned per class and round.
const PLAN: usize = 1024;
/// 8-byte granules of a unit.
const GRANULES: usize = MAX_UNIT_PAGES * PAGE_SIZE / 8;
/// A unit's live-byte mask.
type Mask = [u64; GRANULES / 64];

/// Whether meshing is on (mesh mode with a shared heap and a userfaultfd
/// that holds back every write).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Units meshed now, the bytes they span, and units meshed since start.
static MESHED_NOW: AtomicUsize = AtomicUsize::new(0);
static MESHED_BYTES: AtomicUsize = AtomicUsize::new(0);
static MESHED_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// The mesh lock and the records of meshed units.
pub(crate) static MESH: SpinLock<Table> = SpinLock::new(Rank::Mesh, Table::new());

/// Classes that needed a new span while some of their spans were frozen:
/// their units are to be unmeshed (thawed), so the frozen spans' free
/// slots are used again.
static THAW: [AtomicBool; NUM_CLASSES] = [const { AtomicBool::new(false) }; NUM_CLASSES];
static THAW_ANY: AtomicBool = AtomicBool::new(false);

/// Asks for `class`'s meshed units to be thawed (from the allocator's slow
/// path, under the class's list lock: two atomic stores).
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

/// Thaws the classes that asked for it; returns the units unmeshed. For
/// the background thread, also while the program is busy.
pub(crate) fn thaw_requested() -> usize {
    if !active() || !THAW_ANY.swap(false, Ordering::Acquire) {
        return 0;
    }
    let mut table = MESH.lock();
    thaw_marked(&mut table, &mut [false; NUM_CLASSES])
}

/// Thaws every class marked in [`THAW`] and notes it in `thawed`; the
/// members unmeshed.
fn thaw_marked(table: &mut Table, thawed: &mut [bool; NUM_CLASSES]) -> usize {
    let mut done = 0;
    for (class, t) in thawed.iter_mut().enumerate().skip(1) {
        if THAW[class].swap(false, Ordering::Relaxed) {
            done += thaw_class(table, class);
            *t = true;
        }
    }
    done
}

/// The heap's copy for the child of a fork in progress (set between the
/// fork handlers; the mesh lock is held meanwhile).
static FORK_COPY: AtomicI32 = AtomicI32::new(-1);

/// Prepares meshing for the process heap, before the heap is reserved:
/// the heap then lives in a shared file ([`confirm`] turns meshing on once
/// it does). Says in one line why not when the kernel refuses (mesh mode
/// then keeps its layout only).
pub(crate) fn enable() {
    match shared::enable_shared_heap() {
        Ok(()) => {}
        Err(errno) => {
            let mut msg = *b"hugeguard: HUGEGUARD_MESH=on: no userfaultfd for all faults (errno 00); random slots and class homes only, no meshing\n";
            let at = msg.iter().position(|&b| b == b'0').unwrap_or(0);
            msg[at] = b'0' + (errno / 10 % 10) as u8;
            msg[at + 1] = b'0' + (errno % 10) as u8;
            crate::os::linux::write_stderr(&msg);
        }
    }
}

/// Turns meshing on if the heap reserved at `base` lives in the shared
/// file (a reservation the file could not be mapped over stays private
/// memory, which must never be meshed).
pub(crate) fn confirm(base: usize) {
    if base != 0 && shared::committed().0 == base {
        ACTIVE.store(true, Ordering::Release);
    }
}

/// Whether meshing is on.
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// What a meshing round did.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct MeshRound {
    /// Units meshed onto another unit this round.
    pub meshed_units: usize,
    /// Bytes those units span: their own pages were punched out of the
    /// heap file, so what was resident there went back to the OS.
    pub punched_bytes: usize,
    /// Units unmeshed (wholly free) this round.
    pub unmeshed_units: usize,
}

/// Units meshed now, the bytes they span, and units meshed since start.
pub(crate) fn totals() -> (usize, usize, usize) {
    (
        MESHED_NOW.load(Ordering::Relaxed),
        MESHED_BYTES.load(Ordering::Relaxed),
        MESHED_TOTAL.load(Ordering::Relaxed),
    )
}

/// One meshing round over every class: first unmeshes what emptied, then
/// meshes what it can. Does nothing unless meshing is on.
pub(crate) fn round() -> MeshRound {
    let mut out = MeshRound::default();
    if !active() {
        return out;
    }
    let mut table = MESH.lock();
    if !table.ready() && !table.init(&LinuxOs) {
        return out;
    }
    out.unmeshed_units = unmesh_empty(&mut table);
    let mut thawed = [false; NUM_CLASSES];
    if THAW_ANY.swap(false, Ordering::Acquire) {
        out.unmeshed_units += thaw_marked(&mut table, &mut thawed);
    }
    for (class, &pages) in CLASS_PAGES.iter().enumerate().skip(1) {
        // A class just thawed is in use again: not meshed in this round.
        if pages as usize <= MAX_UNIT_PAGES && !thawed[class] {
            mesh_class(&mut table, class, &mut out);
        }
    }
    MESHED_TOTAL.fetch_add(out.meshed_units, Ordering::Relaxed);
    out
}

/// Pages of a unit of `class`: as many whole spans as fit in 16 pages.
fn unit_pages(class: usize) -> usize {
    let p = CLASS_PAGES[class] as usize;
    MAX_UNIT_PAGES / p * p
}

/// Sets `mask`'s granules for every live object of the unit's spans;
/// returns the live bytes.
fn live_mask(u: &Unit, class: usize, mask: &mut Mask) -> usize {
    mask.fill(0);
    let size = CLASS_SIZE[class] as usize;
    let mut live = 0;
    for &s in &u.spans[..u.nspans] {
        // SAFETY: the unit's spans are live spans of `class`, read under
        // the class's list lock (held by the caller).
        let sp = unsafe { &*s };
        let off = sp.start - u.start;
        for i in 0..sp.capacity as usize {
            if !sp.is_free(i) {
                let (lo, hi) = ((off + i * size) / 8, (off + (i + 1) * size).div_ceil(8));
                for g in lo..hi {
                    mask[g / 64] |= 1 << (g % 64);
                }
                live += size;
            }
        }
    }
    live
}

fn disjoint(a: &Mask, b: &Mask) -> bool {
    a.iter().zip(b).all(|(x, y)| x & y == 0)
}

/// A group being filled: its owner unit (frozen once a member joins) and
/// the union of its members' masks.
pub(crate) struct Group {
    owner: Unit,
    rec: Option<u32>,
    union: Mask,
}

/// A member to mesh: its unit, its owner's start, and its live mask.
pub(crate) struct Planned {
    member: usize,
    owner: usize,
    pages: usize,
    rec: u32,
    mask: Mask,
}

fn mesh_class(table: &mut Table, class: usize, out: &mut MeshRound) {
    // SAFETY: the slices live until this function returns, and nothing
    // else asks for them while it runs (the mesh lock is held).
    let Some(scratch) = (unsafe { table.scratch() }) else {
        return;
    };
    let (groups, plan) = scratch;
    let mut nplan = 0;
    {
        let mut list = CENTRAL[class].lock();
        let mut heap = HEAP.lock();
        let pages = unit_pages(class);
        let mut ngroups = 0usize;
        let mut next_group = 0usize;
        let mut mask: Mask = [0; GRANULES / 64];
        let mut idx = 0;
        'homes: while let Some(h) = heap.next_home(class as u8, idx) {
            idx = h + 1;
            let mut page = 0;
            while page + pages <= PAGES_PER_HUGE {
                let mut skip = page + 1;
                let Some(u) = heap.unit_at(h, page, pages, class as u8, &mut skip) else {
                    page = skip;
                    continue;
                };
                page += pages;
                let live = live_mask(&u, class, &mut mask);
                if live == 0 || live * 2 > pages * PAGE_SIZE {
                    continue;
                }
                let found = groups[..ngroups]
                    .iter()
                    .position(|g| disjoint(&g.union, &mask));
                let Some(gi) = found else {
                    // A new group with this unit as its owner, replacing the
                    // oldest when all are taken.
                    let slot = if ngroups < GROUPS {
                        ngroups += 1;
                        ngroups - 1
                    } else {
                        next_group = (next_group + 1) % GROUPS;
                        next_group
                    };
                    groups[slot] = Group {
                        owner: u,
                        rec: None,
                        union: mask,
                    };
                    continue;
                };
                if table.members_left() == 0 || table.free_records() < 2 {
                    break 'homes;
                }
                let g = &mut groups[gi];
                let owner_rec = match g.rec {
                    Some(r) => r,
                    None => {
                        let Some(r) = freeze(table, &mut list, &mut heap, &g.owner, Role::Owner, 0)
                        else {
                            break 'homes;
                        };
                        g.rec = Some(r);
                        r
                    }
                };
                let Some(rec) = freeze(table, &mut list, &mut heap, &u, Role::Pending, owner_rec)
                else {
                    break 'homes;
                };
                if let Some(o) = table.get_mut(owner_rec) {
                    o.members += 1;
                }
                for (x, y) in g.union.iter_mut().zip(&mask) {
                    *x |= y;
                }
                // The owner's pages that receive copies stop reading as zero.
                clear_released(&g.owner, &mask, &mut heap);
                plan[nplan] = Planned {
                    member: u.start,
                    owner: g.owner.start,
                    pages,
                    rec,
                    mask,
                };
                nplan += 1;
                if nplan == PLAN {
                    break 'homes;
                }
            }
        }
    }
    for p in &plan[..nplan] {
        let ok = mesh_one(p);
        if let Some(r) = table.get_mut(p.rec) {
            r.role = if ok { Role::Meshed } else { Role::Frozen };
        }
        if ok {
            out.meshed_units += 1;
            out.punched_bytes += p.pages * PAGE_SIZE;
            MESHED_NOW.fetch_add(1, Ordering::Relaxed);
            MESHED_BYTES.fetch_add(p.pages * PAGE_SIZE, Ordering::Relaxed);
        }
    }
}

/// Freezes unit `u`'s spans and pins its free pages; its record.
fn freeze(
    table: &mut Table,
    list: &mut CentralList,
    heap: &mut PageHeap<LinuxOs>,
    u: &Unit,
    role: Role,
    owner: u32,
) -> Option<u32> {
    let rec = table.add(Rec {
        start: u.start,
        pinned: u.free,
        owner,
        members: 0,
        pages: u.pages as u8,
        role,
    })?;
    for &s in &u.spans[..u.nspans] {
        // SAFETY: a live span of the list's class (the unit walk checked).
        unsafe { list.freeze(s) };
    }
    heap.pin_pages(u.start, u.free);
    heap.note_meshed(u.start, 1);
    Some(rec)
}

/// Clears the `released` bit of the owner's span pages that `mask` writes.
fn clear_released(owner: &Unit, mask: &Mask, heap: &mut PageHeap<LinuxOs>) {
    let mut reused = 0;
    for &s in &owner.spans[..owner.nspans] {
        // SAFETY: a frozen span of the owner, under its list's lock.
        let sp = unsafe { &mut *s };
        let first = (sp.start - owner.start) / PAGE_SIZE;
        for p in 0..sp.npages as usize {
            let words = (first + p) * PAGE_SIZE / 512;
            let hit = mask[words..words + PAGE_SIZE / 512].iter().any(|w| *w != 0);
            if hit && sp.released >> p & 1 == 1 {
                sp.released &= !(1 << p);
                reused += 1;
            }
        }
    }
    if reused != 0 {
        heap.pages_reused(reused);
    }
}

/// Meshes one planned member onto its owner; `false` if the kernel
/// refused a step before the member's mapping changed (it then stays
/// frozen, unmeshed).
fn mesh_one(p: &Planned) -> bool {
    let (Some(guard), Some(file)) = (shared::heap_guard(), shared::heap_file()) else {
        return false;
    };
    let len = p.pages * PAGE_SIZE;
    let base = shared::committed().0;
    if !guard.hold(p.member, len) {
        return false;
    }
    // The member's live granules are free in the owner and every other
    // member of the group (the masks are disjoint and the spans frozen);
    // writers of the member wait on the write-protection, so the copy is
    // whole.
    copy_granules(p.member, p.owner, &p.mask);
    // SAFETY: the member's live bytes are in the owner's pages at the same
    // offsets; its virtual pages now show the owner's.
    if !unsafe { file.alias(p.member, p.owner - base, len) } {
        guard.release(p.member, len);
        return false;
    }
    guard.wake(p.member, len);
    file.punch(p.member - base, len);
    true
}

/// Unmeshes every member whose spans are all wholly free, and thaws owners
/// left with no member. Returns the members unmeshed.
fn unmesh_empty(table: &mut Table) -> usize {
    let Some(file) = shared::heap_file() else {
        return 0;
    };
    let base = shared::committed().0;
    let mut done = 0;
    for i in 0..table.len() as u32 {
        let Some(&mut r) = table.get_mut(i) else {
            continue;
        };
        if !matches!(r.role, Role::Meshed | Role::Frozen) {
            continue;
        }
        let Some((class, spans, n)) = unit_spans(&r) else {
            continue;
        };
        let mut list = CENTRAL[class].lock();
        // SAFETY: frozen spans of the unit, under their list's lock.
        if spans[..n].iter().any(|&s| unsafe { (*s).used } != 0) {
            continue;
        }
        let len = r.pages as usize * PAGE_SIZE;
        // SAFETY: no object lives in the member any more; its own file
        // pages were punched, so it reads as zero again.
        if r.role == Role::Meshed && !unsafe { file.alias(r.start, r.start - base, len) } {
            continue;
        }
        thaw(&mut list, &r, &spans[..n]);
        drop(list);
        unmeshed(table, i, &r, &file, base);
        done += 1;
    }
    done
}

/// The end of unmeshing member record `i` (`r`), its spans thawed and, if
/// it was meshed, its range mapped on its own pages again: the counts, the
/// record, and its owner when it was the owner's last member.
fn unmeshed(table: &mut Table, i: u32, r: &Rec, file: &shared::SharedFile, base: usize) {
    if r.role == Role::Meshed {
        MESHED_NOW.fetch_sub(1, Ordering::Relaxed);
        MESHED_BYTES.fetch_sub(r.pages as usize * PAGE_SIZE, Ordering::Relaxed);
    }
    table.remove(i);
    release_owner(table, file, base, r.owner);
}

/// Unmeshes up to [`THAW_UNITS`] members of `class`: each member's live
/// bytes are copied back to its own file pages and it is mapped onto them
/// again (writers wait meanwhile, as when meshing); its spans are thawed,
/// so their free slots take objects again, and so is an owner left with no
/// member. Returns the members unmeshed. A class that still needs spans
/// asks again.
fn thaw_class(table: &mut Table, class: usize) -> usize {
    let (Some(guard), Some(file)) = (shared::heap_guard(), shared::heap_file()) else {
        return 0;
    };
    let base = shared::committed().0;
    let mut mask: Mask = [0; GRANULES / 64];
    let mut done = 0;
    for i in 0..table.len() as u32 {
        if done == THAW_UNITS {
            break;
        }
        let Some(&mut r) = table.get_mut(i) else {
            continue;
        };
        if !matches!(r.role, Role::Meshed | Role::Frozen) {
            continue;
        }
        let Some((c, spans, n)) = unit_spans(&r) else {
            continue;
        };
        if c != class {
            continue;
        }
        if r.role == Role::Meshed {
            {
                // The live set of a frozen unit only shrinks: a mask taken
                // now covers every byte to copy back.
                let _list = CENTRAL[class].lock();
                let mut u = Unit {
                    start: r.start,
                    pages: r.pages as usize,
                    spans: [core::ptr::null_mut(); MAX_UNIT_PAGES],
                    nspans: n,
                    free: 0,
                };
                u.spans[..n].copy_from_slice(&spans[..n]);
                live_mask(&u, class, &mut mask);
            }
            if !copy_back(&guard, &file, base, &r, &mask) {
                continue;
            }
        }
        let mut list = CENTRAL[class].lock();
        thaw(&mut list, &r, &spans[..n]);
        drop(list);
        unmeshed(table, i, &r, &file, base);
        done += 1;
    }
    done
}

/// Copies member `r`'s live granules (`mask`) from the owner's pages it
/// shows now back to its own file pages, and maps it onto them again;
/// `false` (nothing changed) if the kernel refuses a step.
fn copy_back(
    guard: &shared::WriteGuard,
    file: &shared::SharedFile,
    base: usize,
    r: &Rec,
    mask: &Mask,
) -> bool {
    let len = r.pages as usize * PAGE_SIZE;
    let own = r.start - base;
    if !guard.hold(r.start, len) {
        return false;
    }
    let Some(tmp) = file.map(own, len) else {
        guard.release(r.start, len);
        return false;
    };
    copy_granules(r.start, tmp, mask);
    // SAFETY: the member's live bytes are in its own file pages now (at
    // `tmp`); its virtual pages show them from here on.
    let ok = unsafe { file.alias(r.start, own, len) };
    if ok {
        guard.wake(r.start, len);
    } else {
        guard.release(r.start, len);
    }
    // SAFETY: the temporary mapping made above, used by nothing else.
    unsafe { file.unmap(tmp, len) };
    ok
}

/// Copies the granules of `mask` from `from` to `to` (same offsets).
fn copy_granules(from: usize, to: usize, mask: &Mask) {
    for (w, &bits) in mask.iter().enumerate() {
        let mut bits = bits;
        while bits != 0 {
            let g = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            // SAFETY: granule `g` lies in both units (the mask covers one
            // unit); the caller holds the source still (write-protected)
            // and owns the destination's bytes at these offsets.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (from + g * 8) as *const u64,
                    (to + g * 8) as *mut u64,
                    1,
                )
            };
        }
    }
}

/// One member of owner record `owner` left: thaws the owner when it was
/// the last.
fn release_owner(table: &mut Table, file: &shared::SharedFile, base: usize, owner: u32) {
    let Some(o) = table.get_mut(owner) else {
        return;
    };
    o.members -= 1;
    if o.members != 0 {
        return;
    }
    let o = *o;
    // The owner's pinned pages may hold members' old bytes.
    file.punch_mask(o.start - base, o.pinned);
    match unit_spans(&o) {
        Some((class, spans, n)) => {
            let mut list = CENTRAL[class].lock();
            thaw(&mut list, &o, &spans[..n]);
        }
        None => {
            let mut heap = HEAP.lock();
            heap.unpin_pages(o.start, o.pinned);
            heap.note_meshed(o.start, -1);
        }
    }
    table.remove(owner);
}

/// The frozen spans of unit `r`, with their class.
fn unit_spans(r: &Rec) -> Option<(usize, [*mut crate::span::Span; MAX_UNIT_PAGES], usize)> {
    let view = crate::view::view();
    let mut spans = [core::ptr::null_mut(); MAX_UNIT_PAGES];
    let mut n = 0;
    let mut class = 0;
    let mut p = 0;
    while p < r.pages as usize {
        let s = view.span_of(r.start + p * PAGE_SIZE);
        if s.is_null() {
            p += 1;
            continue;
        }
        // SAFETY: a live span record (frozen spans are not freed while
        // their unit is meshed, and only this thread unmeshes).
        let sp = unsafe { &*s };
        if n == 0 || spans[n - 1] != s {
            spans[n] = s;
            n += 1;
            class = sp.class as usize;
        }
        p += 1;
    }
    (n > 0 || r.pinned != 0).then_some((class.max(1), spans, n))
}

/// Thaws a unit's spans and unpins its pages.
fn thaw(list: &mut CentralList, r: &Rec, spans: &[*mut crate::span::Span]) {
    for &s in spans {
        // SAFETY: frozen live spans of the list's class; no other unit's
        // objects live in them any more (the member is unmeshed, or the
        // owner has no member left).
        unsafe { list.thaw(&ProcessHeap, s) };
    }
    let mut heap = HEAP.lock();
    heap.unpin_pages(r.start, r.pinned);
    heap.note_meshed(r.start, -1);
}

/// Fork, before: the mesh lock first (no mesh is half done in the child).
pub(crate) fn fork_prepare_lock() {
    MESH.lock_raw();
}

/// Fork, before, with every allocator lock held: copies the heap for the
/// child (writers wait during the copy; nothing is protected after it).
pub(crate) fn fork_prepare_copy() {
    if !active() {
        return;
    }
    let (base, committed) = shared::committed();
    let copy = shared::fork_prepare_copy(base, committed).unwrap_or(-1);
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
    let (base, committed) = shared::committed();
    shared::fork_parent_done(take_fork_copy(), base, committed);
    // SAFETY: forwarded from the caller.
    unsafe { MESH.unlock_raw() };
}

/// Fork, after, in the child: maps the copy made before the fork,
/// re-creates the meshed mappings, then unlocks.
///
/// # Safety
/// The calling thread took the mesh lock in [`fork_prepare_lock`] and is
/// the child's only thread.
pub(crate) unsafe fn fork_child() {
    if active() {
        let (base, committed) = shared::committed();
        // SAFETY: forwarded from the caller: the lock is held by us alone.
        let table = unsafe { MESH.held_value() };
        shared::fork_child_map(committed, take_fork_copy(), |file| {
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
    unsafe { MESH.unlock_raw() };
}
