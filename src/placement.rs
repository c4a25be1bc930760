//! The placement floor: how the live small objects sit in their spans,
//! class by class. After a batch most pages may keep only a survivor or
//! two; no release can give such a page back, whatever the policy.
//! [`placement`] measures it: per class the spans, the pages that hold a
//! live byte, a histogram of live objects per such page, and what the
//! mesher would do now ([`ClassPlacement::meshable`]): its planner run dry
//! over the class's home huge pages, counting the pages the units it would
//! mesh hold and the mappings they would add, freezing nothing.
//!
//! Objects cached by threads count as live here (their spans hold them);
//! call [`crate::release_now`] first to count only what the program holds.

use crate::global::{self, CENTRAL, HEAP};
use crate::huge::HugeKind;
use crate::mesh::plan::{group_class, Group, Step, GROUPS};
use crate::size_class::{CLASS_PAGES, CLASS_SIZE, NUM_CLASSES};
use crate::span::Span;
use crate::units::{HUGE_SIZE, PAGES_PER_HUGE, PAGE_SHIFT, PAGE_SIZE};
use crate::report::{ClassPlacement, Placement};

fn bucket(n: usize) -> usize {
    match n {
        0 | 1 => 0,
        2 => 1,
        3..=4 => 2,
        5..=8 => 3,
        9..=16 => 4,
        17..=32 => 5,
        33..=64 => 6,
        _ => 7,
    }
}

/// Pages of `s` not released to the OS.
fn resident(s: &Span) -> usize {
    let npages = CLASS_PAGES[s.class as usize] as usize;
    npages - (s.released & crate::span::page_mask(0, npages)).count_ones() as usize
}

/// Measures the placement of every small object: per size class the
/// spans, the pages holding a byte of a live object, how many live objects
/// such pages hold, and what the mesher would do now
/// ([`ClassPlacement::meshable`]: its planner run dry). Objects in thread
/// caches count as live: call [`crate::release_now`] first.
///
/// Takes every lock for the walk, like [`crate::check_invariants`], and
/// allocates its buffer before it does.
///
/// ```
/// let p = hugeguard::placement();
/// let (live_bytes, live_pages, resident_pages) = p.totals();
/// assert!(live_pages <= resident_pages);
/// assert!(p.meshable().pages <= resident_pages);
/// # let _ = live_bytes;
/// ```
pub fn placement() -> Placement {
    let mut out = Placement {
        classes: [ClassPlacement::default(); NUM_CLASSES],
    };
    if !global::ensure_heap() {
        return out;
    }
    // The planner's open groups, made before the locks are taken
    // (allocating under them could deadlock).
    let mut groups: Vec<Group> = (0..GROUPS).map(|_| Group::EMPTY).collect();
    let lists: [_; NUM_CLASSES] = core::array::from_fn(|c| CENTRAL[c].lock());
    let mut heap = HEAP.lock();
    let view = heap.view();
    let pages = heap.pages();
    let metas = heap.metas();
    for idx in 0..heap.committed_huge_pages() {
        // SAFETY: `idx` is below the top; we hold the heap lock.
        if unsafe { metas.get(idx) }.kind != HugeKind::Filler {
            continue;
        }
        let base = view.base() + idx * HUGE_SIZE;
        for page in 0..PAGES_PER_HUGE {
            let span = pages.span(idx, page);
            if span.is_null() {
                continue;
            }
            // SAFETY: a mapped span is a live record (heap lock held).
            let s = unsafe { &*span };
            if s.class == 0 || s.start != base + page * PAGE_SIZE {
                continue;
            }
            count(&mut out.classes[s.class as usize], s);
        }
    }
    for (class, c) in out.classes.iter_mut().enumerate().skip(1) {
        group_class(&mut heap, class, &mut groups, |_, _, unit, _| {
            for &s in &unit.spans[..unit.nspans] {
                // SAFETY: a live span of the unit, under its list's lock.
                c.meshable.pages += resident(unsafe { &*s });
            }
            c.meshable.vmas += 2;
            Step::Go
        });
    }
    drop(heap);
    drop(lists);
    out
}

/// Adds span `s` to its class's counts and histogram.
fn count(c: &mut ClassPlacement, s: &Span) {
    let class = s.class as usize;
    let size = CLASS_SIZE[class] as usize;
    c.object_size = size;
    c.spans += 1;
    c.live_objects += s.used as usize;
    c.resident_pages += resident(s);
    let mut per_page = [0u16; 64];
    for i in 0..s.capacity as usize {
        if !s.is_free(i) {
            let (first, last) = (
                (i * size) >> PAGE_SHIFT,
                ((i * size) + size - 1) >> PAGE_SHIFT,
            );
            for p in per_page.iter_mut().take(last + 1).skip(first) {
                *p += 1;
            }
        }
    }
    for &n in per_page.iter().take(CLASS_PAGES[class] as usize) {
        if n > 0 {
            c.live_pages += 1;
            c.histogram[bucket(n as usize)] += 1;
        }
    }
}
