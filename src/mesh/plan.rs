//! The planner's vocabulary, shared by the engine and the table (which
//! keeps the planner's scratch memory): a unit's live-byte mask, open
//! groups, planned members, and the pure functions over them.

use crate::page_heap::mesh::{Unit, MAX_UNIT_PAGES};
use crate::size_class::{CLASS_PAGES, CLASS_SIZE};
use crate::units::PAGE_SIZE;

/// Open groups a unit is tried against (the most recent ones).
pub(crate) const GROUPS: usize = 32;
/// Members planned per class and round.
pub(crate) const PLAN: usize = 1024;
/// 8-byte granules of a unit.
pub(crate) const GRANULES: usize = MAX_UNIT_PAGES * PAGE_SIZE / 8;
/// A unit's live-byte mask.
pub(crate) type Mask = [u64; GRANULES / 64];

/// A group being filled: its owner unit (frozen once a member joins) and
/// the union of its members' masks.
pub(crate) struct Group {
    pub(crate) owner: Unit,
    pub(crate) rec: Option<u32>,
    pub(crate) union: Mask,
}

/// A member to mesh: its unit, its owner's start, and its live mask.
pub(crate) struct Planned {
    pub(crate) member: usize,
    pub(crate) owner: usize,
    pub(crate) pages: usize,
    pub(crate) rec: u32,
    pub(crate) mask: Mask,
}

/// Pages of a unit of `class`: as many whole spans as fit in 16 pages.
pub(crate) fn unit_pages(class: usize) -> usize {
    let p = CLASS_PAGES[class] as usize;
    MAX_UNIT_PAGES / p * p
}

/// Sets `mask`'s granules for every live object of the unit's spans;
/// returns the live bytes.
pub(crate) fn live_mask(u: &Unit, class: usize, mask: &mut Mask) -> usize {
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

pub(crate) fn disjoint(a: &Mask, b: &Mask) -> bool {
    a.iter().zip(b).all(|(x, y)| x & y == 0)
}
