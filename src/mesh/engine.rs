//! The meshing engine, over a [`MeshWorld`]: a [`Mesher`] holds the mesh
//! table (under the mesh lock) and the counts, and runs rounds (group,
//! freeze, mesh), unmeshes units whose spans emptied, and thaws classes
//! that asked for their frozen spans back. The steps are described in
//! [`super`].

use super::plan::unit_pages;
use super::plan::{group_class, live_mask, Group, Mask, Planned, Step, GRANULES};
use super::table::{Rec, Role, Table};
use super::world::MeshWorld;
use super::MeshRound;
use crate::central::CentralList;
use crate::lock::SpinLock;
use crate::lock_rank::Rank;
use crate::page_heap::mesh::{Unit, MAX_UNIT_PAGES};
use crate::page_heap::PageHeap;
use crate::size_class::{CLASS_PAGES, NUM_CLASSES};
use crate::span::Span;
use crate::units::PAGE_SIZE;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Members a class that asks for its frozen spans gets back per request
/// (each gives back a unit's free slots, most of a sparse unit).
const THAW_UNITS: usize = 4;

/// The mesh table under the mesh lock, and the counts.
pub(crate) struct Mesher {
    table: SpinLock<Table>,
    /// Units meshed now, the bytes they span, and units meshed since start.
    meshed_now: AtomicUsize,
    meshed_bytes: AtomicUsize,
    meshed_total: AtomicUsize,
}

impl Mesher {
    /// A mesher whose table holds at most `capacity` records (owners and
    /// members): the budget of kernel mappings meshing may add.
    pub(crate) const fn new(capacity: usize) -> Self {
        Mesher {
            table: SpinLock::new(Rank::Mesh, Table::new(capacity)),
            meshed_now: AtomicUsize::new(0),
            meshed_bytes: AtomicUsize::new(0),
            meshed_total: AtomicUsize::new(0),
        }
    }

    /// The mesh lock (fork takes it first).
    pub(crate) fn table(&self) -> &SpinLock<Table> {
        &self.table
    }

    /// Units meshed now, the bytes they span, and units meshed since start.
    pub(crate) fn totals(&self) -> (usize, usize, usize) {
        (
            self.meshed_now.load(Ordering::Relaxed),
            self.meshed_bytes.load(Ordering::Relaxed),
            self.meshed_total.load(Ordering::Relaxed),
        )
    }

    /// One round over every class of `w`: first unmeshes what emptied and
    /// thaws what was asked for, then meshes what it can.
    pub(crate) fn round<W: MeshWorld>(&self, w: &W) -> MeshRound {
        let mut out = MeshRound::default();
        let mut table = self.table.lock();
        if !table.ready() && !table.init(w.table_os()) {
            return out;
        }
        out.unmeshed_units = self.unmesh_empty(w, &mut table);
        let mut thawed = [false; NUM_CLASSES];
        if w.take_thaw_any() {
            out.unmeshed_units += self.thaw_marked(w, &mut table, &mut thawed);
        }
        for (class, &pages) in CLASS_PAGES.iter().enumerate().skip(1) {
            // A class just thawed is in use again: not meshed in this round.
            if pages as usize <= MAX_UNIT_PAGES && !thawed[class] {
                self.mesh_class(w, &mut table, class, &mut out);
            }
        }
        self.meshed_total
            .fetch_add(out.meshed_units, Ordering::Relaxed);
        out
    }

    /// Thaws the classes that asked for it; the units unmeshed.
    pub(crate) fn thaw_requested<W: MeshWorld>(&self, w: &W) -> usize {
        if !w.take_thaw_any() {
            return 0;
        }
        let mut table = self.table.lock();
        self.thaw_marked(w, &mut table, &mut [false; NUM_CLASSES])
    }

    /// Thaws every class that asked and notes it in `thawed`; the members
    /// unmeshed.
    fn thaw_marked<W: MeshWorld>(
        &self,
        w: &W,
        table: &mut Table,
        thawed: &mut [bool; NUM_CLASSES],
    ) -> usize {
        let mut done = 0;
        for (class, t) in thawed.iter_mut().enumerate().skip(1) {
            if w.take_thaw(class) {
                done += self.thaw_class(w, table, class);
                *t = true;
            }
        }
        done
    }

    fn mesh_class<W: MeshWorld>(
        &self,
        w: &W,
        table: &mut Table,
        class: usize,
        out: &mut MeshRound,
    ) {
        // SAFETY: the slices live until this function returns, and nothing
        // else asks for them while it runs (the mesh lock is held).
        let Some(scratch) = (unsafe { table.scratch() }) else {
            return;
        };
        let (groups, plan) = scratch;
        let nplan = plan_class(w, table, class, groups, plan);
        for p in &plan[..nplan] {
            let ok = mesh_one(w, p);
            if let Some(r) = table.get_mut(p.rec) {
                r.role = if ok { Role::Meshed } else { Role::Frozen };
            }
            if ok {
                out.meshed_units += 1;
                out.punched_bytes += p.pages * PAGE_SIZE;
                self.meshed_now.fetch_add(1, Ordering::Relaxed);
                self.meshed_bytes
                    .fetch_add(p.pages * PAGE_SIZE, Ordering::Relaxed);
            }
        }
    }

    /// Unmeshes every member whose spans are all wholly free, and thaws
    /// owners left with no member. Returns the members unmeshed.
    fn unmesh_empty<W: MeshWorld>(&self, w: &W, table: &mut Table) -> usize {
        if !w.file_open() {
            return 0;
        }
        let base = w.base();
        let mut done = 0;
        for i in 0..table.len() as u32 {
            let Some(&mut r) = table.get_mut(i) else {
                continue;
            };
            if !matches!(r.role, Role::Meshed | Role::Frozen) {
                continue;
            }
            let Some((class, spans, n)) = unit_spans(w, &r) else {
                continue;
            };
            let mut list = w.list(class);
            // SAFETY: frozen spans of the unit, under their list's lock.
            if spans[..n].iter().any(|&s| unsafe { (*s).used } != 0) {
                continue;
            }
            let len = r.pages as usize * PAGE_SIZE;
            // SAFETY: no object lives in the member any more; its own file
            // pages were punched, so it reads as zero again.
            if r.role == Role::Meshed && !unsafe { w.alias(r.start, r.start - base, len) } {
                continue;
            }
            thaw(w, &mut list, &r, &spans[..n]);
            drop(list);
            self.unmeshed(w, table, i, &r, base);
            done += 1;
        }
        done
    }

    /// The end of unmeshing member record `i` (`r`), its spans thawed and,
    /// if it was meshed, its range mapped on its own pages again: the
    /// counts, the record, and its owner when it was the owner's last
    /// member.
    fn unmeshed<W: MeshWorld>(&self, w: &W, table: &mut Table, i: u32, r: &Rec, base: usize) {
        if r.role == Role::Meshed {
            self.meshed_now.fetch_sub(1, Ordering::Relaxed);
            self.meshed_bytes
                .fetch_sub(r.pages as usize * PAGE_SIZE, Ordering::Relaxed);
        }
        table.remove(i);
        release_owner(w, table, base, r.owner);
    }

    /// Unmeshes up to [`THAW_UNITS`] members of `class`: each member's live
    /// bytes are copied back to its own file pages and it is mapped onto
    /// them again (writers wait meanwhile, as when meshing); its spans are
    /// thawed, so their free slots take objects again, and so is an owner
    /// left with no member. Returns the members unmeshed. A class that
    /// still needs spans asks again.
    fn thaw_class<W: MeshWorld>(&self, w: &W, table: &mut Table, class: usize) -> usize {
        if !w.file_open() {
            return 0;
        }
        let base = w.base();
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
            let Some((c, spans, n)) = unit_spans(w, &r) else {
                continue;
            };
            if c != class {
                continue;
            }
            if r.role == Role::Meshed {
                {
                    // The live set of a frozen unit only shrinks: a mask
                    // taken now covers every byte to copy back.
                    let _list = w.list(class);
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
                if !copy_back(w, base, &r, &mask) {
                    continue;
                }
            }
            let mut list = w.list(class);
            thaw(w, &mut list, &r, &spans[..n]);
            drop(list);
            self.unmeshed(w, table, i, &r, base);
            done += 1;
        }
        done
    }
}

/// Step 1 for `class`: groups its sparse units ([`group_class`]), freezes
/// each group's owner and members, and writes the members to mesh into
/// `plan`; how many.
fn plan_class<W: MeshWorld>(
    w: &W,
    table: &mut Table,
    class: usize,
    groups: &mut [Group],
    plan: &mut [Planned],
) -> usize {
    let mut nplan = 0;
    let mut list = w.list(class);
    let mut heap = w.heap();
    let pages = unit_pages(class);
    group_class(&mut heap, class, groups, |heap, g, u, mask| {
        if table.members_left() == 0 || table.free_records() < 2 {
            return Step::Stop;
        }
        let owner_rec = match g.rec {
            Some(r) => r,
            None => {
                let Some(r) = freeze(table, &mut list, heap, &g.owner, Role::Owner, 0) else {
                    return Step::Stop;
                };
                g.rec = Some(r);
                r
            }
        };
        let Some(rec) = freeze(table, &mut list, heap, u, Role::Pending, owner_rec) else {
            return Step::Stop;
        };
        if let Some(o) = table.get_mut(owner_rec) {
            o.members += 1;
        }
        // The owner's pages that receive copies stop reading as zero.
        clear_released(&g.owner, mask, heap);
        plan[nplan] = Planned {
            member: u.start,
            owner: g.owner.start,
            pages,
            rec,
            mask: *mask,
        };
        nplan += 1;
        if nplan == plan.len() {
            Step::Stop
        } else {
            Step::Go
        }
    });
    nplan
}

/// Freezes unit `u`'s spans and pins its free pages; its record.
fn freeze<O: crate::os::Os>(
    table: &mut Table,
    list: &mut CentralList,
    heap: &mut PageHeap<O>,
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
    heap.note_frozen(u.start, 1);
    Some(rec)
}

/// Clears the `released` bit of the owner's span pages that `mask` writes.
fn clear_released<O: crate::os::Os>(owner: &Unit, mask: &Mask, heap: &mut PageHeap<O>) {
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

/// Meshes one planned member onto its owner; `false` if a step was refused
/// before the member's mapping changed (it then stays frozen, unmeshed).
fn mesh_one<W: MeshWorld>(w: &W, p: &Planned) -> bool {
    if !w.file_open() {
        return false;
    }
    let len = p.pages * PAGE_SIZE;
    let base = w.base();
    if !w.hold(p.member, len) {
        return false;
    }
    // The member's live granules are free in the owner and every other
    // member of the group (the masks are disjoint and the spans frozen);
    // writers of the member wait on the write-protection, so the copy is
    // whole.
    copy_granules(p.member, p.owner, &p.mask);
    // SAFETY: the member's live bytes are in the owner's pages at the same
    // offsets; its virtual pages now show the owner's.
    if !unsafe { w.alias(p.member, p.owner - base, len) } {
        w.release(p.member, len);
        return false;
    }
    w.wake(p.member, len);
    w.punch(p.member - base, len);
    true
}

/// Copies member `r`'s live granules (`mask`) from the owner's pages it
/// shows now back to its own file pages, and maps it onto them again;
/// `false` (nothing changed) if a step is refused.
fn copy_back<W: MeshWorld>(w: &W, base: usize, r: &Rec, mask: &Mask) -> bool {
    let len = r.pages as usize * PAGE_SIZE;
    let own = r.start - base;
    if !w.hold(r.start, len) {
        return false;
    }
    let Some(tmp) = w.map(own, len) else {
        w.release(r.start, len);
        return false;
    };
    copy_granules(r.start, tmp, mask);
    // SAFETY: the member's live bytes are in its own file pages now (at
    // `tmp`); its virtual pages show them from here on.
    let ok = unsafe { w.alias(r.start, own, len) };
    if ok {
        w.wake(r.start, len);
    } else {
        w.release(r.start, len);
    }
    // SAFETY: the temporary mapping made above, used by nothing else.
    unsafe { w.unmap(tmp, len) };
    ok
}

/// Copies the granules of `mask` from `from` to `to` (same offsets).
fn copy_granules(from: usize, to: usize, mask: &Mask) {
    if from == to {
        return;
    }
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
fn release_owner<W: MeshWorld>(w: &W, table: &mut Table, base: usize, owner: u32) {
    let Some(o) = table.get_mut(owner) else {
        return;
    };
    o.members -= 1;
    if o.members != 0 {
        return;
    }
    let o = *o;
    // The owner's pinned pages may hold members' old bytes.
    w.punch_mask(o.start - base, o.pinned);
    match unit_spans(w, &o) {
        Some((class, spans, n)) => {
            let mut list = w.list(class);
            thaw(w, &mut list, &o, &spans[..n]);
        }
        None => {
            let mut heap = w.heap();
            heap.unpin_pages(o.start, o.pinned);
            heap.note_frozen(o.start, -1);
        }
    }
    table.remove(owner);
}

/// The frozen spans of unit `r`, with their class.
fn unit_spans<W: MeshWorld>(w: &W, r: &Rec) -> Option<(usize, [*mut Span; MAX_UNIT_PAGES], usize)> {
    use crate::central::SpanSource;
    let mut spans = [core::ptr::null_mut(); MAX_UNIT_PAGES];
    let mut n = 0;
    let mut class = 0;
    for p in 0..r.pages as usize {
        let s = w.source().span_of(r.start + p * PAGE_SIZE);
        if s.is_null() {
            continue;
        }
        // SAFETY: a live span record (frozen spans are not freed while
        // their unit is meshed, and only the mesh lock's holder unmeshes).
        let sp = unsafe { &*s };
        if n == 0 || spans[n - 1] != s {
            spans[n] = s;
            n += 1;
            class = sp.class as usize;
        }
    }
    (n > 0 || r.pinned != 0).then_some((class.max(1), spans, n))
}

/// Thaws a unit's spans and unpins its pages.
fn thaw<W: MeshWorld>(w: &W, list: &mut CentralList, r: &Rec, spans: &[*mut Span]) {
    for &s in spans {
        // SAFETY: frozen live spans of the list's class; no other unit's
        // objects live in them any more (the member is unmeshed, or the
        // owner has no member left).
        unsafe { list.thaw(w.source(), s) };
    }
    let mut heap = w.heap();
    heap.unpin_pages(r.start, r.pinned);
    heap.note_frozen(r.start, -1);
}
