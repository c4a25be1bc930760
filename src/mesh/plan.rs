//! The mesher's planner: how a class's sparse units are grouped
//! ([`group_class`]), and its vocabulary (a unit's live-byte mask, open
//! groups, planned members). The engine runs it and freezes what it
//! groups; `placement()` runs it dry and only counts. The table keeps the
//! planner's scratch memory.

use crate::os::Os;
use crate::page_heap::mesh::{Unit, MAX_UNIT_PAGES};
use crate::page_heap::PageHeap;
use crate::size_class::{CLASS_PAGES, CLASS_SIZE};
use crate::units::{PAGES_PER_HUGE, PAGE_SIZE};

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

impl Group {
    /// A group slot before its first owner (no unit, empty union).
    pub(crate) const EMPTY: Group = Group {
        owner: Unit {
            start: 0,
            pages: 0,
            spans: [core::ptr::null_mut(); MAX_UNIT_PAGES],
            nspans: 0,
            free: 0,
        },
        rec: None,
        union: [0; GRANULES / 64],
    };
}

/// What the planner does after a unit joined a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Go on with the next unit.
    Go,
    /// Stop planning this class (a budget or buffer is spent).
    Stop,
}

/// Groups the sparse units of `class` in the class's home huge pages of
/// `heap`: each unit at most half live goes into the first of the last
/// `groups.len()` open groups whose union its live bytes miss, or opens a
/// group as its owner (replacing the oldest when all are open). For each
/// unit that fits a group, `join(heap, group, unit, mask)` decides; on
/// [`Step::Go`] the unit's mask joins the group's union.
///
/// The caller holds the class's list lock and the heap lock (`heap` is the
/// locked heap).
pub(crate) fn group_class<O: Os>(
    heap: &mut PageHeap<O>,
    class: usize,
    groups: &mut [Group],
    mut join: impl FnMut(&mut PageHeap<O>, &mut Group, &Unit, &Mask) -> Step,
) {
    let pages = unit_pages(class);
    if pages == 0 {
        // Spans longer than a unit: the class is never meshed.
        return;
    }
    let mut ngroups = 0usize;
    let mut next_group = 0usize;
    let mut mask: Mask = [0; GRANULES / 64];
    let mut idx = 0;
    while let Some(h) = heap.next_home(class as u8, idx) {
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
            match groups[..ngroups]
                .iter()
                .position(|g| disjoint(&g.union, &mask))
            {
                Some(gi) => {
                    let g = &mut groups[gi];
                    if join(heap, g, &u, &mask) == Step::Stop {
                        return;
                    }
                    for (x, y) in g.union.iter_mut().zip(&mask) {
                        *x |= y;
                    }
                }
                None => {
                    let slot = if ngroups < groups.len() {
                        ngroups += 1;
                        ngroups - 1
                    } else {
                        next_group = (next_group + 1) % groups.len();
                        next_group
                    };
                    groups[slot] = Group {
                        owner: u,
                        rec: None,
                        union: mask,
                    };
                }
            }
        }
    }
}
