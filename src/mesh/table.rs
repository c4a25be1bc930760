//! The records of meshed units (owners and members) and the mesher's
//! scratch memory, both in metadata memory of their own: the mesher runs
//! inside the allocator and allocates nothing from the heap.

use super::plan::{Group, Planned, GROUPS, PLAN};
use crate::os::Os;

/// What a record is.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// An unused record. All-zero memory reads as this.
    Free = 0,
    /// The unit whose file pages a group shares.
    Owner = 1,
    /// A member planned and frozen, not yet mapped onto its owner.
    Pending = 2,
    /// A member mapped onto its owner's file pages.
    Meshed = 3,
    /// A member the kernel refused to mesh: frozen, mapped as before.
    Frozen = 4,
}

/// One meshed unit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Rec {
    pub start: usize,
    /// Pinned free pages (bit per unit page).
    pub pinned: u64,
    /// A member's owner record.
    pub owner: u32,
    /// An owner's members.
    pub members: u32,
    pub pages: u8,
    pub role: Role,
}

/// Most records (owners and members): each member adds up to two kernel
/// mappings, and the process has `vm.max_map_count` (65,530 by default)
/// for everything.
pub(crate) const CAPACITY: usize = 24_576;

/// The records and the scratch memory, under the mesh lock.
pub struct Table {
    /// Most records (the mapping budget).
    capacity: usize,
    recs: *mut Rec,
    /// Records in use or freed (free ones are reused first).
    len: usize,
    used: usize,
    members: usize,
    groups: *mut Group,
    plan: *mut Planned,
}

// SAFETY: the pointers are metadata memory owned by the table, reached
// only under the mesh lock.
unsafe impl Send for Table {}

impl Table {
    /// An empty table of at most `capacity` records (mapped on first use).
    pub const fn new(capacity: usize) -> Self {
        Table {
            capacity,
            recs: core::ptr::null_mut(),
            len: 0,
            used: 0,
            members: 0,
            groups: core::ptr::null_mut(),
            plan: core::ptr::null_mut(),
        }
    }

    pub fn ready(&self) -> bool {
        !self.recs.is_null()
    }

    /// Maps the table's memory; `false` when the OS refuses.
    pub fn init(&mut self, os: &impl Os) -> bool {
        let rec_bytes = self.capacity * core::mem::size_of::<Rec>();
        let group_bytes = GROUPS * core::mem::size_of::<Group>();
        let plan_bytes = PLAN * core::mem::size_of::<Planned>();
        let Some(m) = os.map_metadata(rec_bytes + group_bytes + plan_bytes + 64) else {
            return false;
        };
        // SAFETY: zeroed memory of the size needed, kept for the process;
        // all-zero records are `Free`, and zeroed groups and plans are
        // valid values (null pointers, `None`, zero masks). Each part is
        // 8-aligned (every size is a multiple of 8).
        unsafe {
            self.recs = m as *mut Rec;
            self.groups = m.add(rec_bytes) as *mut Group;
            self.plan = m.add(rec_bytes + group_bytes) as *mut Planned;
        }
        true
    }

    /// The scratch memory: open groups and planned members.
    ///
    /// # Safety
    /// The caller drops the returned slices before it calls `scratch`
    /// again (they are the same memory each time).
    #[allow(clippy::type_complexity)]
    pub unsafe fn scratch(&mut self) -> Option<(&'static mut [Group], &'static mut [Planned])> {
        if self.recs.is_null() {
            return None;
        }
        // SAFETY: the scratch parts of the table's memory, used by one
        // round at a time (under the mesh lock, which the caller holds
        // through `&mut self`).
        unsafe {
            Some((
                core::slice::from_raw_parts_mut(self.groups, GROUPS),
                core::slice::from_raw_parts_mut(self.plan, PLAN),
            ))
        }
    }

    /// Records slots in use or freed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Members that may still be meshed.
    pub fn members_left(&self) -> usize {
        self.capacity / 2 - self.members
    }

    /// Free record slots.
    pub fn free_records(&self) -> usize {
        self.capacity - self.used
    }

    /// Record `i`, if `i < len` (indices come from the table itself, so
    /// `None` would be a bug; callers skip it rather than panic inside the
    /// allocator).
    pub fn get_mut(&mut self, i: u32) -> Option<&mut Rec> {
        let i = i as usize;
        // SAFETY: `i < len <= capacity`, inside the table's memory.
        (i < self.len).then(|| unsafe { &mut *self.recs.add(i) })
    }

    /// Adds a record; its index, or `None` when the table is full.
    pub fn add(&mut self, rec: Rec) -> Option<u32> {
        if self.recs.is_null() || self.used == self.capacity {
            return None;
        }
        // SAFETY: slots below `len` are initialised records.
        let i = (0..self.len)
            .find(|&i| unsafe { (*self.recs.add(i)).role } == Role::Free)
            .unwrap_or(self.len);
        // SAFETY: `i < capacity` (fewer than `capacity` are used).
        unsafe { *self.recs.add(i) = rec };
        self.len = self.len.max(i + 1);
        self.used += 1;
        if rec.role != Role::Owner {
            self.members += 1;
        }
        Some(i as u32)
    }

    /// Frees record `i`.
    pub fn remove(&mut self, i: u32) {
        let Some(r) = self.get_mut(i) else {
            return;
        };
        let member = r.role != Role::Owner;
        r.role = Role::Free;
        self.used -= 1;
        if member {
            self.members -= 1;
        }
    }
}
