//! The live samples of the heap profile: where sampled objects live and the
//! record (size, stack) each carries until it is freed.
//!
//! **Small sampled objects** (any request that would take a size class) do
//! not go to their class: each gets a slot of its own, [`SLOT`] bytes, in a
//! region reserved for them when profiling first starts (`MAP_NORESERVE`,
//! and `MADV_NOHUGEPAGE` so khugepaged never fills it out), below the heap
//! (`os::linux::map_metadata_low`). So a free can tell a sampled object
//! from every other by its address alone: [`holds`] on the slow paths, and
//! on a Rust free's fast path the cache's gate, whose one addition carries
//! for every address above the region (`cache::set_sampled`). Slot `i`
//! starts at `region + i * SLOT` (page aligned, enough for every class's
//! alignment) and its record is `records[i]`. A
//! freed slot keeps its pages (it is *warm*) and goes on top of the free
//! stack, so the next sample reuses them without a system call or a page
//! fault; the free slots' warm pages are capped at [`WARM_CAP_PAGES`] (a
//! free beyond it gives its slot's pages back with `MADV_DONTNEED`, outside
//! the lock, and the slot goes under the warm ones, so the next samples
//! still take warm slots: on top, it would make every sample at the cap
//! fault its pages in and every free give them back), and every release
//! pass gives them all back ([`release_warm`]). A slot's pages are the most its objects ever used,
//! so a warm slot is cleared for an `alloc_zeroed` sample.
//!
//! **Large sampled objects** are ordinary page runs of the heap; their
//! records (`records[SMALL_SLOTS..]`) are found by address in an
//! open-addressing map, which a large free looks into only while some
//! large sample with the same hash of its address is live
//! ([`maybe_large_sample`]).
//!
//! Every structure is behind [`TABLE`]'s lock (rank `Profile`, a leaf),
//! taken with no other allocator lock held; its memory is mapped once, from
//! the OS layer, and never freed. Stacks are captured before the lock is
//! taken, and nothing under it allocates.

use crate::lock::SpinLock;
use crate::lock_rank::Rank;
use crate::os::linux::LinuxOs;
use crate::os::Os;
use crate::size_class::MAX_SMALL;
use core::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

/// Address space of one small sampled object.
pub(crate) const SLOT: usize = MAX_SMALL;
/// Small sampled objects that can be live at once (512 MiB of address
/// space); a sample beyond it is dropped (counted, not recorded).
pub(crate) const SMALL_SLOTS: usize = 16 * 1024;
/// Large sampled objects that can be live at once.
pub(crate) const LARGE_RECORDS: usize = 16 * 1024;
/// Return addresses kept per sample (the innermost ones).
pub(crate) const DEPTH: usize = 48;
/// Pages that free (warm) slots may keep for reuse: 4 MiB.
pub(crate) const WARM_CAP_PAGES: usize = 1024;
use crate::units::PAGE_SIZE as PAGE;

const RECORDS: usize = SMALL_SLOTS + LARGE_RECORDS;
/// Bytes of the small sampled objects' region.
pub(crate) const REGION_LEN: usize = SLOT * SMALL_SLOTS;
/// Entries of the large-object map: a power of two, at most half full.
const MAP_LEN: usize = 2 * LARGE_RECORDS;
/// The tables' bytes: records, scratch copies, free stacks, the map and
/// the warm page counts.
const META_LEN: usize = 2 * RECORDS * core::mem::size_of::<Record>()
    + RECORDS * core::mem::size_of::<u32>()
    + MAP_LEN * core::mem::size_of::<MapEntry>()
    + SMALL_SLOTS * core::mem::size_of::<u32>();
/// The profile's one mapping: the slot region, then the tables.
const MAPPING_LEN: usize = REGION_LEN + META_LEN;
/// The region's base before there is one: no user address is within
/// `REGION_LEN` above it (the subtraction wraps).
const NO_REGION: usize = 0usize.wrapping_sub(REGION_LEN);

/// One live sample.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Record {
    /// The object's address; 0 while the record is unused.
    pub(crate) addr: usize,
    /// Bytes the program asked for.
    pub(crate) size: usize,
    /// Usable bytes reported for it.
    pub(crate) usable: usize,
    /// Entries of `stack` in use.
    pub(crate) depth: usize,
    /// Return addresses, innermost first.
    pub(crate) stack: [usize; DEPTH],
}

impl Record {
    /// Whether `other` has the same size and stack (one line of a profile).
    pub(crate) fn same_line(&self, other: &Record) -> bool {
        self.size == other.size && self.stack[..self.depth] == other.stack[..other.depth]
    }
}

/// One entry of the large-object map: `addr` 0 is empty.
#[derive(Clone, Copy)]
#[repr(C)]
struct MapEntry {
    addr: usize,
    index: usize,
}

struct Table {
    ready: bool,
    records: *mut Record,
    /// Stacks of free indices: small slots, then large records. The small
    /// slots' stack keeps the cold ones (no pages) below the warm ones:
    /// `free_small[..n_cold_small]` are cold, so a sample takes a warm slot
    /// while there is one.
    free_small: *mut u32,
    n_free_small: usize,
    n_cold_small: usize,
    free_large: *mut u32,
    n_free_large: usize,
    map: *mut MapEntry,
    /// Per small slot: the pages it may hold (the most its objects used
    /// since its pages last went back).
    warm: *mut u32,
    /// Sum of `warm` over all slots, and over the free slots alone.
    warm_pages: usize,
    idle_warm_pages: usize,
    /// Small slots neither live nor free: their pages are going back with
    /// the lock released.
    in_transit: usize,
    /// One past the highest small slot and large record ever used (free
    /// stacks hand out the lowest first): scans stop there, so they never
    /// read (and map) the untouched rest of the tables.
    used_small: usize,
    used_large: usize,
    /// Copies of live records for a profile being written (`format`).
    scratch: *mut Record,
    live: usize,
    live_bytes: usize,
    /// Samples not recorded because a table was full.
    dropped: usize,
    /// Samples recorded since start (freed ones included).
    taken: usize,
}

// SAFETY: the pointers are to the table's own mappings, only followed under
// its lock.
unsafe impl Send for Table {}

static TABLE: SpinLock<Table> = SpinLock::new(
    Rank::Profile,
    Table {
        ready: false,
        records: core::ptr::null_mut(),
        free_small: core::ptr::null_mut(),
        n_free_small: 0,
        n_cold_small: 0,
        free_large: core::ptr::null_mut(),
        n_free_large: 0,
        map: core::ptr::null_mut(),
        warm: core::ptr::null_mut(),
        warm_pages: 0,
        idle_warm_pages: 0,
        in_transit: 0,
        used_small: 0,
        used_large: 0,
        scratch: core::ptr::null_mut(),
        live: 0,
        live_bytes: 0,
        dropped: 0,
        taken: 0,
    },
);

/// The slot region's base ([`NO_REGION`] until it exists; set once).
static REGION: AtomicUsize = AtomicUsize::new(NO_REGION);
/// Large samples live now.
static LARGE_LIVE: AtomicUsize = AtomicUsize::new(0);

/// The small sampled objects' region's start (before there is one, a
/// value no user address lies within [`REGION_LEN`] above).
pub(crate) fn region_base() -> usize {
    REGION.load(Ordering::Relaxed)
}

/// Whether `p` lies in the sampled objects' region.
#[inline(always)]
pub(crate) fn holds(p: *mut u8) -> bool {
    (p as usize).wrapping_sub(REGION.load(Ordering::Relaxed)) < REGION_LEN
}

/// Counters of live large samples per hash of their address: a large free
/// takes the table's lock only where its counter is not zero, instead of
/// on every free while any large sample is live (threads freeing large
/// blocks met on that lock). Changed under the lock; read without it (a
/// sample's counter was raised before its block was returned, so the
/// thread that frees it sees it raised). With at most [`LARGE_RECORDS`]
/// samples live, no counter overflows.
static LARGE_FILTER: [AtomicU16; LARGE_FILTER_LEN] = [const { AtomicU16::new(0) }; LARGE_FILTER_LEN];
const LARGE_FILTER_LEN: usize = 1 << 16;

/// `p`'s counter in [`LARGE_FILTER`] (large blocks are page aligned).
fn large_filter(p: usize) -> &'static AtomicU16 {
    let h = (p >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - 16);
    &LARGE_FILTER[h % LARGE_FILTER_LEN]
}

/// Whether large block `p` may be a live sample (then a free must look it
/// up; `false` is certain).
#[inline]
pub(crate) fn maybe_large_sample(p: *mut u8) -> bool {
    LARGE_LIVE.load(Ordering::Relaxed) != 0 && large_filter(p as usize).load(Ordering::Relaxed) != 0
}

/// Maps the region and the tables, once; `false` if the OS refused.
pub(crate) fn setup() -> bool {
    let mut t = TABLE.lock();
    if t.ready {
        return true;
    }
    // One mapping: the slot region, then the tables; below the heap, so
    // that a Rust free tells a sample by one addition (`cache::set_sampled`).
    let Some(region) = crate::os::linux::map_metadata_low(MAPPING_LEN) else {
        return false;
    };
    // SAFETY: the tables start `REGION_LEN` bytes into the mapping of
    // `REGION_LEN + META_LEN` bytes.
    let meta = unsafe { region.add(REGION_LEN) };
    // The pieces, in order: records, scratch, free stacks, map, warm pages
    // (each piece's size is a multiple of 8, so every piece is aligned).
    t.records = meta as *mut Record;
    // SAFETY (these four): offsets inside the `META_LEN` bytes just mapped.
    t.scratch = unsafe { t.records.add(RECORDS) };
    t.free_small = unsafe { t.scratch.add(RECORDS) } as *mut u32;
    // SAFETY: inside the mapping, past the SMALL_SLOTS free-slot entries.
    t.free_large = unsafe { t.free_small.add(SMALL_SLOTS) };
    // SAFETY: inside the mapping, past the LARGE_RECORDS free-record entries.
    t.map = unsafe { t.free_large.add(LARGE_RECORDS) } as *mut MapEntry;
    // SAFETY: inside the mapping, past the MAP_LEN map entries.
    t.warm = unsafe { t.map.add(MAP_LEN) } as *mut u32;
    for i in 0..SMALL_SLOTS {
        // Slot 0 on top: the lowest addresses are used first.
        // SAFETY: inside the free-slot stack.
        unsafe { *t.free_small.add(i) = (SMALL_SLOTS - 1 - i) as u32 };
    }
    for i in 0..LARGE_RECORDS {
        // SAFETY: inside the free-record stack.
        unsafe { *t.free_large.add(i) = (RECORDS - 1 - i) as u32 };
    }
    t.n_free_small = SMALL_SLOTS;
    t.n_cold_small = SMALL_SLOTS;
    t.n_free_large = LARGE_RECORDS;
    t.ready = true;
    REGION.store(region as usize, Ordering::Release);
    true
}

/// Bytes the profile's mappings may hold in memory now: the small slots'
/// pages (live samples' and warm free slots') and the touched part of the
/// tables (an estimate from the live counts: each record is touched when
/// used).
pub(crate) fn overhead_bytes() -> usize {
    let t = TABLE.lock();
    if !t.ready {
        return 0;
    }
    t.warm_pages * PAGE + t.live * core::mem::size_of::<Record>()
}

/// The profile's mapping (address, length), once profiling has started.
pub(crate) fn mapping() -> Option<(usize, usize)> {
    let base = REGION.load(Ordering::Acquire);
    (base != NO_REGION).then_some((base, MAPPING_LEN))
}

impl Table {
    /// Stores a record at `index`.
    ///
    /// # Safety
    /// `index < RECORDS` and the record is unused.
    unsafe fn put(&mut self, index: usize, addr: usize, size: usize, usable: usize, stack: &[usize]) {
        // SAFETY: forwarded from the caller.
        let r = unsafe { &mut *self.records.add(index) };
        r.addr = addr;
        r.size = size;
        r.usable = usable;
        r.depth = stack.len().min(DEPTH);
        r.stack[..r.depth].copy_from_slice(&stack[..r.depth]);
        if index < SMALL_SLOTS {
            self.used_small = self.used_small.max(index + 1);
        } else {
            self.used_large = self.used_large.max(index - SMALL_SLOTS + 1);
        }
        self.live += 1;
        self.live_bytes += size;
        self.taken += 1;
    }

    /// Clears the record at `index`, which is in use.
    ///
    /// # Safety
    /// `index < RECORDS`.
    unsafe fn clear(&mut self, index: usize) {
        // SAFETY: forwarded from the caller.
        let r = unsafe { &mut *self.records.add(index) };
        self.live -= 1;
        self.live_bytes -= r.size;
        r.addr = 0;
    }

    /// Indices of every record ever used (the others are untouched).
    fn used(&self) -> impl Iterator<Item = usize> {
        (0..self.used_small).chain(SMALL_SLOTS..SMALL_SLOTS + self.used_large)
    }

    /// Slot `slot`'s warm pages.
    fn warm_of(&self, slot: usize) -> usize {
        // SAFETY: callers pass `slot < SMALL_SLOTS`, inside the warm array.
        unsafe { *self.warm.add(slot) as usize }
    }

    /// Sets slot `slot`'s warm pages (keeping the total).
    fn set_warm(&mut self, slot: usize, pages: usize) {
        self.warm_pages = self.warm_pages - self.warm_of(slot) + pages;
        // SAFETY: callers pass `slot < SMALL_SLOTS`, inside the warm array.
        unsafe { *self.warm.add(slot) = pages as u32 };
    }

    /// Pushes free slot `slot` on the free stack: on top if it is warm,
    /// else on top of the cold ones (under the warm ones).
    fn push_free_slot(&mut self, slot: usize) {
        let n = self.n_free_small;
        let pages = self.warm_of(slot);
        if pages > 0 {
            // SAFETY: fewer than SMALL_SLOTS slots are free, so `n` is in
            // the stack.
            unsafe { *self.free_small.add(n) = slot as u32 };
        } else {
            let c = self.n_cold_small;
            // SAFETY: `c <= n < SMALL_SLOTS`: both in the stack. The first
            // warm slot (if any) moves to the top.
            unsafe {
                *self.free_small.add(n) = *self.free_small.add(c);
                *self.free_small.add(c) = slot as u32;
            }
            self.n_cold_small = c + 1;
        }
        self.n_free_small = n + 1;
        self.idle_warm_pages += pages;
    }

    /// Takes the free slot on top of the free stack (a warm one if any).
    /// There must be one.
    fn pop_free_slot(&mut self) -> usize {
        self.n_free_small -= 1;
        let n = self.n_free_small;
        self.n_cold_small = self.n_cold_small.min(n);
        // SAFETY: below the stack's old length.
        unsafe { *self.free_small.add(n) as usize }
    }

    fn map_slot(addr: usize) -> usize {
        (addr >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - MAP_LEN.trailing_zeros())
    }

    /// The map position holding `addr`, if present.
    fn map_find(&self, addr: usize) -> Option<usize> {
        let mut i = Self::map_slot(addr);
        loop {
            // SAFETY: `i < MAP_LEN`.
            let e = unsafe { *self.map.add(i) };
            if e.addr == addr {
                return Some(i);
            }
            if e.addr == 0 {
                return None;
            }
            i = (i + 1) & (MAP_LEN - 1);
        }
    }

    fn map_insert(&mut self, addr: usize, index: usize) {
        let mut i = Self::map_slot(addr);
        // The map is at most half full, so an empty entry comes.
        // SAFETY (both): `i < MAP_LEN`.
        while unsafe { (*self.map.add(i)).addr } != 0 {
            i = (i + 1) & (MAP_LEN - 1);
        }
        // SAFETY: `i < MAP_LEN` (masked above).
        unsafe { *self.map.add(i) = MapEntry { addr, index } };
    }

    /// Removes map position `i`, shifting later entries of its cluster back
    /// (no tombstones).
    fn map_remove(&mut self, mut i: usize) {
        let mask = MAP_LEN - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            // SAFETY: `j < MAP_LEN`.
            let e = unsafe { *self.map.add(j) };
            if e.addr == 0 {
                break;
            }
            let home = Self::map_slot(e.addr);
            // Move `e` into the hole unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                // SAFETY: `i < MAP_LEN`.
                unsafe { *self.map.add(i) = e };
                i = j;
            }
        }
        // SAFETY: `i < MAP_LEN`.
        unsafe { *self.map.add(i) = MapEntry { addr: 0, index: 0 } };
    }
}

/// Takes a slot for a small sampled object of `size` requested bytes and
/// `usable` usable ones, recording `stack`, and clears it if `zero`; null
/// when the table is full or was never set up (the caller then allocates
/// unsampled).
pub(crate) fn take_small(size: usize, usable: usize, zero: bool, stack: &[usize]) -> *mut u8 {
    let (addr, dirty) = {
        let mut t = TABLE.lock();
        if !t.ready || t.n_free_small == 0 {
            t.dropped += 1;
            return core::ptr::null_mut();
        }
        let slot = t.pop_free_slot();
        let warm = t.warm_of(slot);
        t.idle_warm_pages -= warm;
        t.set_warm(slot, warm.max(usable.div_ceil(PAGE)));
        let addr = REGION.load(Ordering::Relaxed) + slot * SLOT;
        // SAFETY: a slot index is below SMALL_SLOTS; its record is unused.
        unsafe { t.put(slot, addr, size, usable, stack) };
        (addr, warm * PAGE)
    };
    if zero && dirty != 0 {
        // SAFETY: the slot is this sample's alone now; its first `usable`
        // bytes lie in the slot's mapped region, `usable <= SLOT`; pages
        // beyond `dirty` were never written (or went back) and read as zero.
        unsafe { core::ptr::write_bytes(addr as *mut u8, 0, usable.min(dirty)) };
    }
    addr as *mut u8
}

/// The slot index of `p` if it is a live small sample's address.
fn live_slot(t: &Table, p: *mut u8) -> Option<usize> {
    if !t.ready || !holds(p) {
        return None;
    }
    let off = p as usize - REGION.load(Ordering::Relaxed);
    if off % SLOT != 0 {
        return None;
    }
    let slot = off / SLOT;
    // SAFETY: `slot < SMALL_SLOTS`.
    (unsafe { (*t.records.add(slot)).addr } == p as usize).then_some(slot)
}

/// Whether `p` is a live small sample.
pub(crate) fn is_live_small(p: *mut u8) -> bool {
    live_slot(&TABLE.lock(), p).is_some()
}

/// Usable bytes of live small sample `p` (0 if it is not one).
pub(crate) fn small_usable(p: *mut u8) -> usize {
    let t = TABLE.lock();
    // SAFETY: a live slot's record.
    live_slot(&t, p).map_or(0, |s| unsafe { (*t.records.add(s)).usable })
}

/// Frees small sample `p`: its slot goes on top of the free stack, keeping
/// its pages while the free slots' warm pages stay within
/// [`WARM_CAP_PAGES`], else giving them back first. `false` (nothing done)
/// if `p` is not a live small sample.
pub(crate) fn free_small(p: *mut u8) -> bool {
    let (slot, pages) = {
        let mut t = TABLE.lock();
        let Some(slot) = live_slot(&t, p) else {
            return false;
        };
        // SAFETY: `slot < SMALL_SLOTS`, in use.
        unsafe { t.clear(slot) };
        let pages = t.warm_of(slot);
        if t.idle_warm_pages + pages <= WARM_CAP_PAGES {
            t.push_free_slot(slot);
            return true;
        }
        t.set_warm(slot, 0);
        t.in_transit += 1;
        (slot, pages)
    };
    // The slot is now neither live nor free: ours alone while its pages go.
    // SAFETY: whole pages of the region's slot, which nothing uses now.
    unsafe { LinuxOs::PRIVATE.discard_metadata(p as usize, pages * PAGE) };
    let mut t = TABLE.lock();
    t.in_transit -= 1;
    t.push_free_slot(slot);
    true
}

/// Gives back the pages of every warm free slot (a release pass; the
/// program may be idle). Returns the pages given back.
pub(crate) fn release_warm() -> usize {
    let mut released = 0;
    loop {
        // Take up to a batch of warm free slots off the free stack, so their
        // pages go back with the lock released.
        let mut batch = [(0u32, 0u32); 64];
        let mut n = 0;
        {
            let mut t = TABLE.lock();
            if !t.ready || t.idle_warm_pages == 0 {
                return released;
            }
            // The warm free slots are the top of the stack.
            while t.n_free_small > t.n_cold_small && n < batch.len() {
                let slot = t.pop_free_slot();
                let pages = t.warm_of(slot);
                t.idle_warm_pages -= pages;
                t.set_warm(slot, 0);
                batch[n] = (slot as u32, pages as u32);
                n += 1;
            }
            t.in_transit += n;
        }
        if n == 0 {
            return released;
        }
        let base = REGION.load(Ordering::Relaxed);
        for &(slot, pages) in &batch[..n] {
            // SAFETY: whole pages of a slot taken off the free stack above:
            // neither live nor free, so nothing uses it.
            unsafe { LinuxOs::PRIVATE.discard_metadata(base + slot as usize * SLOT, pages as usize * PAGE) };
            released += pages as usize;
        }
        let mut t = TABLE.lock();
        t.in_transit -= n;
        for &(slot, _) in &batch[..n] {
            t.push_free_slot(slot as usize);
        }
    }
}

/// Records large object `p` as sampled; `false` when the table is full.
pub(crate) fn add_large(p: *mut u8, size: usize, usable: usize, stack: &[usize]) -> bool {
    let mut t = TABLE.lock();
    if !t.ready || t.n_free_large == 0 {
        t.dropped += 1;
        return false;
    }
    t.n_free_large -= 1;
    // SAFETY: below the stack's length.
    let index = unsafe { *t.free_large.add(t.n_free_large) } as usize;
    // SAFETY: a large record index is below RECORDS and unused.
    unsafe { t.put(index, p as usize, size, usable, stack) };
    t.map_insert(p as usize, index);
    large_filter(p as usize).fetch_add(1, Ordering::Relaxed);
    LARGE_LIVE.fetch_add(1, Ordering::Relaxed);
    true
}

/// Whether large object `p` is a live sample.
pub(crate) fn is_large_sampled(p: *mut u8) -> bool {
    maybe_large_sample(p) && {
        let t = TABLE.lock();
        t.ready && t.map_find(p as usize).is_some()
    }
}

/// Forgets large object `p`'s sample, if it has one (it is being freed).
pub(crate) fn forget_large(p: *mut u8) {
    let mut t = TABLE.lock();
    if !t.ready {
        return;
    }
    if let Some(i) = t.map_find(p as usize) {
        // SAFETY: `i < MAP_LEN`.
        let index = unsafe { (*t.map.add(i)).index };
        t.map_remove(i);
        // SAFETY: a live large record.
        unsafe { t.clear(index) };
        let n = t.n_free_large;
        // SAFETY: fewer than LARGE_RECORDS records are free.
        unsafe { *t.free_large.add(n) = index as u32 };
        t.n_free_large = n + 1;
        large_filter(p as usize).fetch_sub(1, Ordering::Relaxed);
        LARGE_LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Samples live now.
    pub(crate) live: usize,
    /// Their requested bytes.
    pub(crate) live_bytes: usize,
    /// Samples not recorded (a table was full) since start.
    pub(crate) dropped: usize,
    /// Samples recorded since start.
    pub(crate) taken: usize,
}

/// The table's counts now.
pub(crate) fn counts() -> Counts {
    let t = TABLE.lock();
    Counts {
        live: t.live,
        live_bytes: t.live_bytes,
        dropped: t.dropped,
        taken: t.taken,
    }
}

/// The live bytes the samples stand for (each weighted by the inverse of
/// its probability of being sampled at `interval`), and the variance of
/// that sum (a sample of probability `p` stands for `1/p` objects:
/// variance `size^2 (1 - p) / p^2`).
pub(crate) fn estimate(interval: usize) -> (f64, f64) {
    let t = TABLE.lock();
    let (mut est, mut var) = (0.0, 0.0);
    if !t.ready {
        return (est, var);
    }
    for i in t.used() {
        // SAFETY: `i < RECORDS`.
        let r = unsafe { &*t.records.add(i) };
        if r.addr != 0 {
            let w = super::weight(r.size, interval);
            let s = r.size as f64;
            est += s * w;
            var += s * s * (w * w - w);
        }
    }
    (est, var)
}

/// Copies every live record into the scratch area and calls `f` with them
/// (with the lock released: `f` may take it again). `None` if profiling was
/// never set up.
///
/// The scratch area is shared: callers serialise (`format` holds its own
/// flag around this).
pub(crate) fn with_snapshot<R>(f: impl FnOnce(&mut [Record]) -> R) -> Option<R> {
    let (scratch, n) = {
        let t = TABLE.lock();
        if !t.ready {
            return None;
        }
        let mut n = 0;
        for i in t.used() {
            // SAFETY: `i < RECORDS`; scratch has RECORDS entries.
            unsafe {
                let r = &*t.records.add(i);
                if r.addr != 0 {
                    *t.scratch.add(n) = *r;
                    n += 1;
                }
            }
        }
        (t.scratch, n)
    };
    // SAFETY: the scratch area holds `n` records copied above; the caller
    // serialises users of the scratch area.
    Some(f(unsafe { core::slice::from_raw_parts_mut(scratch, n) }))
}

/// Checks the table against itself: the live count and bytes against the
/// records, the free stacks against the records in use, each small
/// record's address against its slot, and the large-object map against
/// the large records.
pub(crate) fn check() -> Result<(), &'static str> {
    let t = TABLE.lock();
    if !t.ready {
        return Ok(());
    }
    let base = REGION.load(Ordering::Relaxed);
    let (mut live_small, mut live_large, mut bytes) = (0, 0, 0);
    for i in t.used() {
        // SAFETY: `i < RECORDS`.
        let r = unsafe { &*t.records.add(i) };
        if r.addr == 0 {
            continue;
        }
        bytes += r.size;
        if r.depth > DEPTH || r.usable < r.size {
            return Err("a profile record's depth or sizes are out of range");
        }
        if i < SMALL_SLOTS {
            live_small += 1;
            if r.addr != base + i * SLOT || r.usable > SLOT {
                return Err("a small sample's record does not match its slot");
            }
        } else {
            live_large += 1;
            match t.map_find(r.addr) {
                // SAFETY: `m < MAP_LEN`.
                Some(m) if unsafe { (*t.map.add(m)).index } == i => {}
                _ => return Err("a large sample is missing from the address map"),
            }
        }
    }
    if live_small + live_large != t.live || bytes != t.live_bytes {
        return Err("the profile's live counts disagree with its records");
    }
    if live_small + t.n_free_small + t.in_transit != SMALL_SLOTS || live_large + t.n_free_large != LARGE_RECORDS {
        return Err("the profile's free stacks disagree with its records");
    }
    let (mut warm, mut idle_warm) = (0, 0);
    for i in 0..t.used_small {
        // SAFETY: `i < SMALL_SLOTS`.
        let r = unsafe { &*t.records.add(i) };
        let w = t.warm_of(i);
        warm += w;
        if r.addr != 0 && w < r.usable.div_ceil(PAGE) {
            return Err("a small sample's slot counts fewer pages than it uses");
        }
    }
    if t.n_cold_small > t.n_free_small {
        return Err("the profile's free-slot stack has more cold slots than slots");
    }
    for i in 0..t.n_free_small {
        // SAFETY: `i` is below the free stack's length.
        let slot = unsafe { *t.free_small.add(i) } as usize;
        let pages = if slot < t.used_small { t.warm_of(slot) } else { 0 };
        if (i < t.n_cold_small) != (pages == 0) {
            return Err("the profile's free-slot stack mixes warm and cold slots");
        }
        idle_warm += pages;
    }
    if warm != t.warm_pages || idle_warm != t.idle_warm_pages || idle_warm > WARM_CAP_PAGES {
        return Err("the profile's warm page counts disagree with its slots");
    }
    let mapped = (0..MAP_LEN)
        // SAFETY: `m < MAP_LEN`.
        .filter(|&m| unsafe { (*t.map.add(m)).addr } != 0)
        .count();
    if mapped != live_large || LARGE_LIVE.load(Ordering::Relaxed) != live_large {
        return Err("the profile's address map disagrees with its large records");
    }
    let filtered: usize = LARGE_FILTER.iter().map(|c| c.load(Ordering::Relaxed) as usize).sum();
    let unfiltered = (0..MAP_LEN)
        // SAFETY: `m < MAP_LEN`.
        .map(|m| unsafe { (*t.map.add(m)).addr })
        .any(|a| a != 0 && large_filter(a).load(Ordering::Relaxed) == 0);
    if filtered != live_large || unfiltered {
        return Err("the profile's large-sample filter disagrees with its large records");
    }
    Ok(())
}

/// `fork`'s prepare handler: takes the table's lock.
pub(crate) fn lock_for_fork() {
    TABLE.lock_raw();
}

/// After `fork`, in parent and child: releases the lock taken before it.
///
/// # Safety
/// The calling thread took it with [`lock_for_fork`].
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: forwarded from the caller.
    unsafe { TABLE.unlock_raw() };
}
