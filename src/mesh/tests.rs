//! The meshing engine over a heap on the fake OS (its reservation real
//! memory, so objects can be written and copies checked) and a recording
//! fake of the shared file: grouping, freezing, meshing, unmeshing,
//! thawing and the mapping budget, without the kernel.

use super::engine::Mesher;
use super::plan::unit_pages;
use super::world::MeshWorld;
use crate::central::{Batch, CentralList, FakeHeap, SpanSource};
use crate::freelist::FreeObject;
use crate::lock::{SpinGuard, SpinLock};
use crate::lock_rank::Rank;
use crate::os::fake::FakeOs;
use crate::page_heap::PageHeap;
use crate::size_class::{class_of_small, NUM_CLASSES};
use crate::units::{HUGE_SIZE, PAGE_SIZE};
use core::cell::{Cell, RefCell};
use std::collections::BTreeMap;

/// One call through the fake file door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileCall {
    Hold(usize),
    Release(usize),
    Wake(usize),
    /// A unit's range mapped onto the file pages at an offset.
    Alias(usize, usize),
    Punch(usize),
    Map(usize),
}

/// A heap, its lists and a fake file. The file door records its calls and
/// changes no mapping: a unit "aliased" onto its owner keeps showing its
/// own bytes, which are the bytes the owner received, so objects read the
/// same as on the kernel.
struct FakeWorld {
    heap: FakeHeap,
    lists: Vec<SpinLock<CentralList>>,
    table_os: FakeOs,
    thaw: Vec<Cell<bool>>,
    thaw_any: Cell<bool>,
    calls: RefCell<Vec<FileCall>>,
    refuse_alias: Cell<bool>,
}

impl FakeWorld {
    fn new() -> FakeWorld {
        let mut os = FakeOs::default();
        os.backed = true;
        let heap = FakeHeap::new(os, 8, crate::harden::links());
        // Mesh mode's layout: each class fills huge pages of its own.
        heap.heap.lock().set_class_homes(true);
        FakeWorld {
            heap,
            lists: (0..NUM_CLASSES)
                .map(|_| SpinLock::new(Rank::Central, CentralList::new()))
                .collect(),
            table_os: FakeOs::default(),
            thaw: (0..NUM_CLASSES).map(|_| Cell::new(false)).collect(),
            thaw_any: Cell::new(false),
            calls: RefCell::new(Vec::new()),
            refuse_alias: Cell::new(false),
        }
    }

    fn record(&self, c: FileCall) {
        self.calls.borrow_mut().push(c);
    }

    fn calls(&self) -> Vec<FileCall> {
        self.calls.borrow().clone()
    }
}

impl MeshWorld for FakeWorld {
    type Os = FakeOs;
    type Source = FakeHeap;

    fn list(&self, class: usize) -> SpinGuard<'_, CentralList> {
        self.lists[class].lock()
    }

    fn heap(&self) -> SpinGuard<'_, PageHeap<FakeOs>> {
        self.heap.heap.lock()
    }

    fn source(&self) -> &FakeHeap {
        &self.heap
    }

    fn table_os(&self) -> &FakeOs {
        &self.table_os
    }

    fn take_thaw_any(&self) -> bool {
        self.thaw_any.replace(false)
    }

    fn take_thaw(&self, class: usize) -> bool {
        self.thaw[class].replace(false)
    }

    fn file_open(&self) -> bool {
        true
    }

    fn base(&self) -> usize {
        self.heap.heap.lock().view().parts().0
    }

    fn hold(&self, addr: usize, _len: usize) -> bool {
        self.record(FileCall::Hold(addr));
        true
    }

    fn release(&self, addr: usize, _len: usize) {
        self.record(FileCall::Release(addr));
    }

    fn wake(&self, addr: usize, _len: usize) {
        self.record(FileCall::Wake(addr));
    }

    unsafe fn alias(&self, addr: usize, offset: usize, _len: usize) -> bool {
        if self.refuse_alias.get() {
            return false;
        }
        self.record(FileCall::Alias(addr, offset));
        true
    }

    fn punch(&self, offset: usize, _len: usize) {
        self.record(FileCall::Punch(offset));
    }

    fn punch_mask(&self, _offset: usize, _mask: u64) {}

    fn map(&self, offset: usize, _len: usize) -> Option<usize> {
        self.record(FileCall::Map(offset));
        // The unit's own file pages are its own memory here.
        Some(self.base() + offset)
    }

    unsafe fn unmap(&self, _addr: usize, _len: usize) {}
}

const CLASS_BYTES: usize = 64;

/// Objects of the 64-byte class, one unit's worth per entry of `keep`,
/// each unit in a home huge page of the class; in unit `k`, the objects
/// whose index in the unit is `keep[k]` modulo 4 stay live (each holding
/// its own address) and the rest go back. Returns the live objects by
/// unit start.
fn sparse_units(w: &FakeWorld, keep: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    let class = class_of_small(CLASS_BYTES).index();
    let unit = unit_pages(class) * PAGE_SIZE;
    let want = keep.len() * unit / CLASS_BYTES;
    let mut objs = Vec::new();
    let mut list = w.list(class);
    while objs.len() < want {
        let b = list.take(&w.heap, class, 7);
        let mut o = b.head;
        for _ in 0..b.count {
            objs.push(o as usize);
            // SAFETY: the batch links `count` free objects.
            o = unsafe { FreeObject::next_of(o, w.heap.links()) };
        }
    }
    objs.sort_unstable();
    let first = objs[0] / unit * unit;
    assert_eq!(
        first % HUGE_SIZE,
        0,
        "the class's first unit starts its home"
    );
    let mut live: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut back = Vec::new();
    for &o in &objs {
        let start = o / unit * unit;
        let k = (start - first) / unit;
        let i = (o - start) / CLASS_BYTES;
        if k < keep.len() && i % 4 == keep[k] {
            // SAFETY: a live object of ours, 64 bytes.
            unsafe { (o as *mut usize).write(o) };
            live.entry(start).or_default().push(o);
        } else {
            back.push(o as *mut FreeObject);
        }
    }
    give(w, &mut list, class, &back);
    live
}

/// Gives `objs` back to `list` (in batches of 5: to the spans, not the
/// transfer cache).
fn give(w: &FakeWorld, list: &mut CentralList, class: usize, objs: &[*mut FreeObject]) {
    for chunk in objs.chunks(5) {
        let mut head = core::ptr::null_mut();
        for &o in chunk.iter().rev() {
            // SAFETY: free objects of the test heap, at least 8 bytes.
            unsafe { FreeObject::set_next(o, head, w.heap.links()) };
            head = o;
        }
        let b = Batch {
            head,
            count: chunk.len(),
        };
        // SAFETY: objects taken from this list and no longer used.
        unsafe { list.give(&w.heap, class, b) };
    }
}

fn frozen_spans(w: &FakeWorld) -> usize {
    w.list(class_of_small(CLASS_BYTES).index()).frozen
}

#[test]
fn disjoint_sparse_units_mesh_onto_the_first_and_the_owner_gets_the_bytes() {
    let w = FakeWorld::new();
    let live = sparse_units(&w, &[0, 2]);
    let (&owner, _) = live.iter().next().unwrap();
    let (&member, member_objs) = live.iter().nth(1).unwrap();
    let m = Mesher::new(64);
    let r = m.round(&w);
    assert_eq!(r.meshed_units, 1);
    assert_eq!(r.punched_bytes, member - owner, "one unit's pages");
    let base = w.base();
    assert_eq!(
        w.calls(),
        [
            FileCall::Hold(member),
            FileCall::Alias(member, owner - base),
            FileCall::Wake(member),
            FileCall::Punch(member - base),
        ]
    );
    // Every live object of the member is in the owner at its offset.
    for &o in member_objs {
        // SAFETY: inside the owner unit, in the test heap's memory.
        let copied = unsafe { ((owner + (o - member)) as *const usize).read() };
        assert_eq!(copied, o);
    }
    assert_eq!(m.totals(), (1, member - owner, 1));
    // Both units' spans are frozen: nothing new lands in them.
    let spans_per_unit = (member - owner) / PAGE_SIZE;
    assert_eq!(frozen_spans(&w), 2 * spans_per_unit);
    let class = class_of_small(CLASS_BYTES).index();
    let b = w.list(class).take(&w.heap, class, 7);
    let o = b.head as usize;
    assert!(
        !(owner..member + (member - owner)).contains(&o),
        "a new object came from a frozen unit"
    );
}

#[test]
fn overlapping_units_do_not_mesh() {
    let w = FakeWorld::new();
    sparse_units(&w, &[1, 1]);
    let r = Mesher::new(64).round(&w);
    assert_eq!(r.meshed_units, 0);
    assert!(w.calls().is_empty());
    assert_eq!(frozen_spans(&w), 0);
}

#[test]
fn a_member_whose_objects_are_all_freed_is_unmeshed_and_its_owner_thawed() {
    let w = FakeWorld::new();
    let live = sparse_units(&w, &[0, 2]);
    let (&member, member_objs) = live.iter().nth(1).unwrap();
    let m = Mesher::new(64);
    assert_eq!(m.round(&w).meshed_units, 1);
    let class = class_of_small(CLASS_BYTES).index();
    let objs: Vec<*mut FreeObject> = member_objs.iter().map(|&o| o as *mut FreeObject).collect();
    give(&w, &mut w.list(class), class, &objs);
    w.calls.borrow_mut().clear();
    let r = m.round(&w);
    assert_eq!(r.unmeshed_units, 1);
    assert_eq!(r.meshed_units, 0, "nothing left to mesh");
    let base = w.base();
    assert_eq!(w.calls(), [FileCall::Alias(member, member - base)]);
    assert_eq!(frozen_spans(&w), 0, "the owner had no other member");
    assert_eq!(m.totals().0, 0);
}

#[test]
fn a_class_that_asks_gets_its_frozen_units_back_with_their_bytes() {
    let w = FakeWorld::new();
    let live = sparse_units(&w, &[0, 2]);
    let (&member, member_objs) = live.iter().nth(1).unwrap();
    let m = Mesher::new(64);
    assert_eq!(m.round(&w).meshed_units, 1);
    w.calls.borrow_mut().clear();
    let class = class_of_small(CLASS_BYTES).index();
    assert_eq!(m.thaw_requested(&w), 0, "nobody asked");
    w.thaw[class].set(true);
    w.thaw_any.set(true);
    assert_eq!(m.thaw_requested(&w), 1);
    let base = w.base();
    assert_eq!(
        w.calls(),
        [
            FileCall::Hold(member),
            FileCall::Map(member - base),
            FileCall::Alias(member, member - base),
            FileCall::Wake(member),
        ]
    );
    assert_eq!(frozen_spans(&w), 0);
    for &o in member_objs {
        // SAFETY: a live object of the test heap.
        assert_eq!(unsafe { (o as *const usize).read() }, o);
    }
}

#[test]
fn the_mapping_budget_stops_meshing() {
    // Units 1 and 2 both fit in unit 0's group.
    let w = FakeWorld::new();
    sparse_units(&w, &[0, 1, 2]);
    assert_eq!(Mesher::new(64).round(&w).meshed_units, 2);
    // A table of two records: one owner and one member.
    let w = FakeWorld::new();
    sparse_units(&w, &[0, 1, 2]);
    let m = Mesher::new(2);
    assert_eq!(m.round(&w).meshed_units, 1);
    assert_eq!(m.round(&w).meshed_units, 0, "the budget stays spent");
}

#[test]
fn a_refused_alias_leaves_the_member_frozen_and_its_writers_released() {
    let w = FakeWorld::new();
    let live = sparse_units(&w, &[0, 2]);
    let (&member, _) = live.iter().nth(1).unwrap();
    w.refuse_alias.set(true);
    let m = Mesher::new(64);
    assert_eq!(m.round(&w).meshed_units, 0);
    assert_eq!(
        w.calls(),
        [FileCall::Hold(member), FileCall::Release(member)]
    );
    assert!(frozen_spans(&w) > 0, "frozen, not meshed");
    assert_eq!(m.totals().0, 0);
}
