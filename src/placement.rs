//! The placement floor (issue 15's first step): how the live small objects
//! sit in their spans, class by class. After a batch most pages may keep
//! only a survivor or two; no release can give such a page back, whatever
//! the policy. [`placement`] measures it: per class the spans, the pages
//! that hold a live byte, a histogram of live objects per such page, and
//! estimates of the pages meshing could free (spans of one class whose
//! objects in use sit at disjoint slots could share one set of physical
//! pages, which then needs only the pages where one of them holds a live
//! byte; Mesh, PLDI 2019) and of the mappings that would cost: each meshed
//! run of virtual pages becomes a mapping of its own, up to two more VMAs
//! against the process's `vm.max_map_count`.
//!
//! Three greedy estimates ([`MeshEstimate`]), each unit searching the last
//! [`PROBES`] sets of its class: *pairs* of spans, *merged* sets of spans
//! (a meshed span meshed again, as Mesh does), and merged sets of *runs*
//! of up to [`RUN_SPANS`] neighbouring spans of the class, meshed position
//! by position with one mapping per run.
//!
//! Objects cached by threads count as live here (their spans hold them);
//! call [`crate::release_now`] first to count only what the program holds.

use crate::global::{self, CENTRAL, HEAP};
use crate::huge::HugeKind;
use crate::size_class::{CLASS_PAGES, CLASS_SIZE, NUM_CLASSES};
use crate::span::{Span, MAX_OBJECTS};
use crate::units::{HUGE_SIZE, PAGES_PER_HUGE, PAGE_SHIFT, PAGE_SIZE};

/// Sets of its class each span (or run) is compared with.
pub(crate) const PROBES: usize = 64;

/// Most spans in one run of the `runs` estimate.
pub(crate) const RUN_SPANS: usize = 16;

/// What meshing could do by one way of grouping spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshEstimate {
    /// Pages it could free.
    pub pages: usize,
    /// Mappings it would add (two per meshed unit: the unit's own, and the
    /// rest of the mapping it was cut from).
    pub vmas: usize,
}

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
    /// Meshing disjoint pairs of spans.
    pub pairs: MeshEstimate,
    /// Meshing merged sets of spans: each span joins the first of its
    /// class's last 64 sets whose slots in use it misses.
    pub merged: MeshEstimate,
    /// Merged sets of runs of up to 16 neighbouring spans of the class,
    /// disjoint position by position: one mapping per run.
    pub runs: MeshEstimate,
}

/// Every class's placement; see [`placement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Indexed by size class (class 0 is unused).
    pub classes: [ClassPlacement; NUM_CLASSES],
}

impl Placement {
    /// Sums over the classes: (live objects' bytes, pages holding a live
    /// byte, resident pages).
    pub fn totals(&self) -> (usize, usize, usize) {
        self.classes.iter().fold((0, 0, 0), |t, c| {
            (
                t.0 + c.live_objects * c.object_size,
                t.1 + c.live_pages,
                t.2 + c.resident_pages,
            )
        })
    }

    /// The three estimates summed over the classes: pairs, merged, runs.
    pub fn mesh_totals(&self) -> [MeshEstimate; 3] {
        let mut t = [MeshEstimate::default(); 3];
        for c in &self.classes {
            for (t, e) in t.iter_mut().zip([c.pairs, c.merged, c.runs]) {
                t.pages += e.pages;
                t.vmas += e.vmas;
            }
        }
        t
    }
}

impl core::fmt::Display for Placement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mib = |pages: usize| (pages * PAGE_SIZE) as f64 / 1048576.0;
        let (live, live_pages, resident) = self.totals();
        let [pairs, merged, runs] = self.mesh_totals();
        writeln!(
            f,
            "small objects: {:.1} MiB live on {:.1} MiB of pages holding a live byte ({:.1} MiB resident); meshing could free {:.1} MiB in pairs, {:.1} MiB merging sets, {:.1} MiB merging runs (adding {}, {} and {} mappings)",
            live as f64 / 1048576.0,
            mib(live_pages),
            mib(resident),
            mib(pairs.pages),
            mib(merged.pages),
            mib(runs.pages),
            pairs.vmas,
            merged.vmas,
            runs.vmas
        )?;
        write!(
            f,
            "class   size  spans  live objs  live MiB  pages w/ live  resident"
        )?;
        for b in BUCKETS {
            write!(f, " {b:>6}")?;
        }
        writeln!(f, "  meshable: pairs  merged    runs")?;
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
            writeln!(
                f,
                " {:>16} {:>7} {:>7}",
                c.pairs.pages, c.merged.pages, c.runs.pages
            )?;
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
/// such pages hold, and three estimates of the pages meshing could free and
/// the mappings it would add ([`ClassPlacement::pairs`], `merged`, `runs`).
/// Meshing puts spans of one class whose objects in use sit at disjoint
/// slots on one set of physical pages (Mesh, PLDI 2019); every meshed span
/// or run becomes a mapping of its own, counted against the process's
/// `vm.max_map_count`. Objects in thread caches count as live: call
/// [`crate::release_now`] first.
///
/// Takes every lock for the walk, like [`crate::check_invariants`], and
/// allocates its buffers before it does.
///
/// ```
/// let p = hugeguard::placement();
/// let (live_bytes, live_pages, resident_pages) = p.totals();
/// let [pairs, merged, runs] = p.mesh_totals();
/// assert!(live_pages <= resident_pages && pairs.pages <= merged.pages + resident_pages);
/// # let _ = (live_bytes, runs);
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
    let estimate: usize = CENTRAL.iter().map(|c| c.lock().spans).sum::<usize>() + 64;
    let mut spans: Vec<Unit> = Vec::with_capacity(estimate);
    let mut scratch = Scratch::with_capacity(estimate);
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
                spans.push(Unit {
                    class: s.class as usize,
                    start: s.start,
                    end: s.start + s.bytes(),
                    used: used_bits(s),
                    live: live_page_mask(s),
                    resident: resident(s),
                });
            }
            count(&mut out.classes[s.class as usize], s);
        }
    }
    drop(heap);
    drop(lists);
    // The estimates work on the copies, without the locks.
    for (how, (run_spans, most)) in [(1, 2), (1, usize::MAX), (RUN_SPANS, usize::MAX)]
        .into_iter()
        .enumerate()
    {
        let per_class = scratch.estimate(&spans, run_spans, most);
        for (c, e) in out.classes.iter_mut().zip(per_class) {
            *[&mut c.pairs, &mut c.merged, &mut c.runs][how] = e;
        }
    }
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

/// A span as the estimates see it.
#[derive(Clone, Copy)]
struct Unit {
    class: usize,
    start: usize,
    end: usize,
    /// Slots in use.
    used: [u64; MAX_OBJECTS / 64],
    /// Span pages holding a live byte.
    live: u64,
    resident: usize,
}

/// A set of meshed runs: `len` positions (spans), each the union of its
/// members' slots in use and live pages, at `first..first + len` of
/// [`Scratch::positions`].
struct Set {
    class: usize,
    first: usize,
    len: usize,
    members: usize,
    resident: usize,
}

/// The estimates' buffers, allocated before the walk.
struct Scratch {
    sets: Vec<Set>,
    positions: Vec<([u64; MAX_OBJECTS / 64], u64)>,
}

impl Scratch {
    fn with_capacity(spans: usize) -> Scratch {
        Scratch {
            sets: Vec::with_capacity(spans),
            positions: Vec::with_capacity(spans),
        }
    }

    /// Groups `spans` (in address order) into runs of up to `run_spans`
    /// neighbouring spans of one class, and each run into the first of its
    /// class's last [`PROBES`] sets of runs of its length that have at most
    /// `most - 1` members and are disjoint from it position by position.
    /// Returns the estimate per class.
    fn estimate(
        &mut self,
        spans: &[Unit],
        run_spans: usize,
        most: usize,
    ) -> [MeshEstimate; NUM_CLASSES] {
        self.sets.clear();
        self.positions.clear();
        let mut recent = [[usize::MAX; PROBES]; NUM_CLASSES];
        let mut i = 0;
        while i < spans.len() {
            let mut n = 1;
            while n < run_spans
                && i + n < spans.len()
                && spans[i + n].class == spans[i].class
                && spans[i + n].start == spans[i + n - 1].end
            {
                n += 1;
            }
            let run = &spans[i..i + n];
            i += n;
            let class = run[0].class;
            let resident: usize = run.iter().map(|u| u.resident).sum();
            let fits = |set: &Set, positions: &[([u64; MAX_OBJECTS / 64], u64)]| {
                set.len == n
                    && set.members < most
                    && run.iter().enumerate().all(|(k, u)| {
                        let used = &positions[set.first + k].0;
                        used.iter().zip(&u.used).all(|(x, y)| x & y == 0)
                    })
            };
            let ring = &mut recent[class];
            let found = ring
                .iter()
                .copied()
                .filter(|&g| g != usize::MAX)
                .find(|&g| fits(&self.sets[g], &self.positions));
            match found {
                Some(g) => {
                    let set = &mut self.sets[g];
                    for (k, u) in run.iter().enumerate() {
                        let (used, live) = &mut self.positions[set.first + k];
                        for (x, y) in used.iter_mut().zip(&u.used) {
                            *x |= y;
                        }
                        *live |= u.live;
                    }
                    set.members += 1;
                    set.resident += resident;
                }
                None => {
                    ring.rotate_right(1);
                    ring[0] = self.sets.len();
                    self.sets.push(Set {
                        class,
                        first: self.positions.len(),
                        len: n,
                        members: 1,
                        resident,
                    });
                    self.positions.extend(run.iter().map(|u| (u.used, u.live)));
                }
            }
        }
        let mut out = [MeshEstimate::default(); NUM_CLASSES];
        for set in self.sets.iter().filter(|set| set.members > 1) {
            let live: usize = self.positions[set.first..set.first + set.len]
                .iter()
                .map(|p| p.1.count_ones() as usize)
                .sum();
            let e = &mut out[set.class];
            e.pages += set.resident.saturating_sub(live);
            e.vmas += 2 * (set.members - 1);
        }
        out
    }
}
