//! The placement floor (issue 15's first step): how the live small objects
//! sit in their spans, class by class. After a batch most pages may keep
//! only a survivor or two; no release can give such a page back, whatever
//! the policy. [`placement`] measures it: per class the spans, the pages
//! that hold a live byte, a histogram of live objects per such page, and an
//! estimate of the pages meshing could free (two spans of one class whose
//! objects in use sit at disjoint slots could share one set of physical
//! pages, which then needs only the pages where either holds a live byte;
//! Mesh, PLDI 2019). The estimate pairs spans greedily: each span
//! with the first disjoint one among the next [`PROBES`] of its class, as
//! Mesh's own search does, so it is a lower bound of what pairing could do.
//!
//! Objects cached by threads count as live here (their spans hold them);
//! call [`crate::release_now`] first to count only what the program holds.

use crate::global::{self, CENTRAL, HEAP};
use crate::huge::HugeKind;
use crate::size_class::{CLASS_PAGES, CLASS_SIZE, NUM_CLASSES};
use crate::span::{Span, MAX_OBJECTS};
use crate::units::{HUGE_SIZE, PAGES_PER_HUGE, PAGE_SHIFT, PAGE_SIZE};

/// Spans compared with each span when looking for a disjoint partner.
pub(crate) const PROBES: usize = 64;

/// Histogram buckets of live objects per page holding a live byte:
/// 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65 or more.
pub(crate) const BUCKETS: [&str; 8] = ["1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", "65+"];

/// One size class's placement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassPlacement {
    /// Object size in bytes (0 for the unused class 0).
    pub object_size: usize,
    /// Spans of the class.
    pub spans: usize,
    /// Objects in use (including thread caches).
    pub live_objects: usize,
    /// Pages of the class's spans not released to the OS.
    pub resident_pages: usize,
    /// Pages holding at least one byte of an object in use.
    pub live_pages: usize,
    /// Pages holding a live byte, by the live objects on the page: 1, 2,
    /// 3-4, 5-8, 9-16, 17-32, 33-64, 65 or more.
    pub histogram: [usize; 8],
    /// Pages meshing could free: one span's pages per disjoint pair found.
    pub meshable_pages: usize,
    /// Pages meshing could free when a merged set of spans may take in more
    /// spans (Mesh meshes a meshed span again): each span joins the first
    /// of its class's last [`PROBES`] sets whose slots in use it misses.
    pub meshable_pages_merged: usize,
}

/// Every class's placement; see [`placement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Indexed by size class (class 0 is unused).
    pub classes: [ClassPlacement; NUM_CLASSES],
}

impl Placement {
    /// Sums over the classes: (live objects' bytes, pages holding a live
    /// byte, resident pages, meshable pages by pairs).
    pub fn totals(&self) -> (usize, usize, usize, usize) {
        self.classes.iter().fold((0, 0, 0, 0), |t, c| {
            (
                t.0 + c.live_objects * c.object_size,
                t.1 + c.live_pages,
                t.2 + c.resident_pages,
                t.3 + c.meshable_pages,
            )
        })
    }

    /// Meshable pages summed over the classes when merged sets may grow
    /// ([`ClassPlacement::meshable_pages_merged`]).
    pub fn meshable_pages_merged(&self) -> usize {
        self.classes.iter().map(|c| c.meshable_pages_merged).sum()
    }
}

impl core::fmt::Display for Placement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mib = |pages: usize| (pages * PAGE_SIZE) as f64 / 1048576.0;
        let (live, live_pages, resident, mesh) = self.totals();
        writeln!(
            f,
            "small objects: {:.1} MiB live on {:.1} MiB of pages holding a live byte ({:.1} MiB resident); meshing could free {:.1} MiB in pairs, {:.1} MiB merging sets",
            live as f64 / 1048576.0,
            mib(live_pages),
            mib(resident),
            mib(mesh),
            mib(self.meshable_pages_merged())
        )?;
        write!(
            f,
            "class   size  spans  live objs  live MiB  pages w/ live  resident"
        )?;
        for b in BUCKETS {
            write!(f, " {b:>6}")?;
        }
        writeln!(f, "  meshable  merged")?;
        for (i, c) in self.classes.iter().enumerate().filter(|(_, c)| c.spans > 0) {
            write!(
                f,
                "{i:>5} {:>6} {:>6} {:>10} {:>9.1} {:>14} {:>9}",
                c.object_size,
                c.spans,
                c.live_objects,
                (c.live_objects * c.object_size) as f64 / 1048576.0,
                c.live_pages,
                c.resident_pages
            )?;
            for n in c.histogram {
                write!(f, " {n:>6}")?;
            }
            writeln!(f, " {:>9} {:>7}", c.meshable_pages, c.meshable_pages_merged)?;
        }
        Ok(())
    }
}

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

/// The slots in use of `s` as a bitmap (1 = in use).
fn used_bits(s: &Span) -> [u64; MAX_OBJECTS / 64] {
    let mut used = [0u64; MAX_OBJECTS / 64];
    for (i, w) in used.iter_mut().enumerate() {
        let cap_bits = (s.capacity as usize).saturating_sub(i * 64).min(64);
        let mask = if cap_bits == 64 {
            u64::MAX
        } else {
            (1u64 << cap_bits) - 1
        };
        *w = !s.free[i] & mask;
    }
    used
}

/// The pages of `s` (bit per page) holding a byte of an object in use.
fn live_page_mask(s: &Span) -> u64 {
    let size = CLASS_SIZE[s.class as usize] as usize;
    let mut mask = 0;
    for i in 0..s.capacity as usize {
        if !s.is_free(i) {
            let off = i * size;
            mask |= crate::span::page_mask(off >> PAGE_SHIFT, ((off + size - 1) >> PAGE_SHIFT) + 1);
        }
    }
    mask
}

/// Pages of `s` not released to the OS.
fn resident(s: &Span) -> usize {
    let npages = CLASS_PAGES[s.class as usize] as usize;
    npages - (s.released & crate::span::page_mask(0, npages)).count_ones() as usize
}

/// Measures the placement of every small object: per size class the
/// spans, the pages holding a byte of a live object, how many live objects
/// such pages hold, and an estimate of the pages meshing could free (two
/// spans of a class whose objects in use sit at disjoint slots could share
/// physical pages, needing them only where either holds a live byte). The
/// estimate pairs each span with the first disjoint one among the next 64
/// spans of its class: a lower bound of what merging could do. Objects in
/// thread caches count as live: call [`crate::release_now`] first.
///
/// Takes every lock for the walk, like [`crate::check_invariants`], and
/// allocates its buffers before it does.
///
/// ```
/// let p = hugeguard::placement();
/// let (live_bytes, live_pages, resident_pages, meshable_pages) = p.totals();
/// assert!(live_pages <= resident_pages && meshable_pages <= resident_pages);
/// # let _ = live_bytes;
/// ```
pub fn placement() -> Placement {
    let mut out = Placement {
        classes: [ClassPlacement::default(); NUM_CLASSES],
    };
    if !global::ensure_heap() {
        return out;
    }
    // Room for every span, sized before the locks are taken (allocating
    // under them could deadlock); spans made meanwhile are left out.
    let estimate: usize = CENTRAL.iter().map(|c| c.lock().spans).sum();
    let mut spans: Vec<*mut Span> = Vec::with_capacity(estimate + 64);
    let mut paired = vec![0u64; (estimate + 64).div_ceil(64)];
    let mut sets: Vec<MergedSet> = Vec::with_capacity(estimate + 64);
    let mut recent = vec![[usize::MAX; PROBES]; NUM_CLASSES];
    let lists: [_; NUM_CLASSES] = core::array::from_fn(|c| CENTRAL[c].lock());
    let heap = HEAP.lock();
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
            if spans.len() < spans.capacity() {
                spans.push(span);
            }
        }
    }
    for &span in &spans {
        // SAFETY: collected above under the same locks.
        let s = unsafe { &*span };
        let class = s.class as usize;
        let c = &mut out.classes[class];
        let size = CLASS_SIZE[class] as usize;
        c.object_size = size;
        c.spans += 1;
        c.live_objects += s.used as usize;
        let npages = CLASS_PAGES[class] as usize;
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
        for &n in per_page.iter().take(npages) {
            if n > 0 {
                c.live_pages += 1;
                c.histogram[bucket(n as usize)] += 1;
            }
        }
    }
    // Greedy pairing of disjoint spans, class by class (spans are in
    // address order; a span pairs with the first disjoint one of the next
    // PROBES of its class).
    let bit = |b: &[u64], i: usize| b[i / 64] >> (i % 64) & 1 != 0;
    for i in 0..spans.len() {
        if bit(&paired, i) {
            continue;
        }
        // SAFETY: as above.
        let a = unsafe { &*spans[i] };
        let ua = used_bits(a);
        let mut probes = 0;
        for j in i + 1..spans.len() {
            if probes == PROBES {
                break;
            }
            // SAFETY: as above.
            let b = unsafe { &*spans[j] };
            if b.class != a.class || bit(&paired, j) {
                continue;
            }
            probes += 1;
            let ub = used_bits(b);
            if ua.iter().zip(&ub).all(|(x, y)| x & y == 0) {
                paired[i / 64] |= 1 << (i % 64);
                paired[j / 64] |= 1 << (j % 64);
                // Merged, the two need physical pages only where either holds a
                // live byte.
                let union = (live_page_mask(a) | live_page_mask(b)).count_ones() as usize;
                out.classes[a.class as usize].meshable_pages +=
                    (resident(a) + resident(b)).saturating_sub(union);
                break;
            }
        }
    }
    // Merged sets, class by class: each span joins the first of its class's
    // last PROBES sets whose slots in use it misses, or opens a new set.
    for &span in &spans {
        // SAFETY: as above.
        let s = unsafe { &*span };
        let class = s.class as usize;
        let used = used_bits(s);
        let live = live_page_mask(s);
        let ring = &mut recent[class];
        let joined = ring
            .iter()
            .copied()
            .filter(|&g| g != usize::MAX)
            .find(|&g| sets[g].used.iter().zip(&used).all(|(x, y)| x & y == 0));
        match joined {
            Some(g) => {
                let set = &mut sets[g];
                for (x, y) in set.used.iter_mut().zip(&used) {
                    *x |= y;
                }
                set.live |= live;
                set.resident += resident(s);
                set.members += 1;
            }
            None => {
                ring.rotate_right(1);
                ring[0] = sets.len();
                sets.push(MergedSet {
                    class,
                    used,
                    live,
                    resident: resident(s),
                    members: 1,
                });
            }
        }
    }
    for set in sets.iter().filter(|set| set.members > 1) {
        out.classes[set.class].meshable_pages_merged +=
            set.resident.saturating_sub(set.live.count_ones() as usize);
    }
    drop(heap);
    drop(lists);
    out
}

/// Spans of one class whose slots in use are disjoint, counted as if they
/// shared one set of physical pages.
struct MergedSet {
    class: usize,
    /// Slots in use in any member.
    used: [u64; MAX_OBJECTS / 64],
    /// Pages (bit per span page) holding a live byte in any member.
    live: u64,
    /// The members' resident pages.
    resident: usize,
    members: usize,
}
