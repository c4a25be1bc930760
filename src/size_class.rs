//! Size classes for small objects, generated at compile time.
//!
//! Classes: 8, then multiples of 16 up to 128, then four classes per doubling
//! (spacing 1/4 of the lower power of two) up to [`MAX_SMALL`] = 32 KiB. Class 0
//! means "not small". Every class from 16 up is a multiple of 16, so any
//! request with alignment at most 16 is served by its class's natural alignment.
//!
//! Worst-case internal waste (request one byte above the previous class):
//! 50 % for requests of 9 to 32 bytes (the same as any 16-byte-aligned
//! allocator), under 20 % above 128 bytes (4097 bytes in the 5120-byte class: 19.98 %), and at most 1/8 of a span lost at
//! the span's tail; the tests check all three bounds from the table itself.
//!
//! Why 32 KiB: objects above it are at least eight pages, where page-granular
//! runs waste less than a class would and release frees whole pages.

use crate::units::PAGE_SIZE;

/// Largest size served from size classes.
pub const MAX_SMALL: usize = 32 * 1024;
/// Number of classes including the unused class 0.
pub const NUM_CLASSES: usize = count_classes() + 1;
/// Entries in the size-to-class lookup table, one per 8 bytes.
const LOOKUP_LEN: usize = MAX_SMALL / 8 + 1;

const fn next_class(prev: usize) -> usize {
    if prev < 16 {
        16
    } else if prev < 128 {
        prev + 16
    } else {
        // Largest power of two not above prev, then a quarter of it as step.
        let pow = 1usize << (usize::BITS - 1 - prev.leading_zeros());
        prev + pow / 4
    }
}

const fn count_classes() -> usize {
    let mut n = 1;
    let mut s = 8;
    while s < MAX_SMALL {
        s = next_class(s);
        n += 1;
    }
    n
}

/// Object size of each class (`CLASS_SIZE[0] == 0`).
pub static CLASS_SIZE: [u32; NUM_CLASSES] = build_sizes();

const fn build_sizes() -> [u32; NUM_CLASSES] {
    let mut t = [0u32; NUM_CLASSES];
    let mut s = 8;
    let mut i = 1;
    while i < NUM_CLASSES {
        t[i] = s as u32;
        s = next_class(s);
        i += 1;
    }
    t
}

/// Pages per span of each class: the fewest pages that hold at least
/// `min_objects` objects with at most 1/8 of the span left over.
pub static CLASS_PAGES: [u16; NUM_CLASSES] = build_pages();

const fn build_pages() -> [u16; NUM_CLASSES] {
    let sizes = build_sizes();
    let mut t = [0u16; NUM_CLASSES];
    let mut i = 1;
    while i < NUM_CLASSES {
        let size = sizes[i] as usize;
        let min_objects = if size <= 4096 { 8 } else { 4 };
        let mut pages = 1;
        loop {
            let bytes = pages * PAGE_SIZE;
            if bytes / size >= min_objects && (bytes % size) * 8 <= bytes {
                break;
            }
            pages += 1;
        }
        t[i] = pages as u16;
        i += 1;
    }
    t
}

/// `ceil(2^32 / size)` per class, for exact division of object offsets.
pub static CLASS_RECIP: [u64; NUM_CLASSES] = build_recip();

const fn build_recip() -> [u64; NUM_CLASSES] {
    let sizes = build_sizes();
    let mut t = [0u64; NUM_CLASSES];
    let mut i = 1;
    while i < NUM_CLASSES {
        t[i] = (1u64 << 32).div_ceil(sizes[i] as u64);
        i += 1;
    }
    t
}

/// What the size-less `free` checks a pointer's offset in its span against
/// (`lookup::classify`): one 16-byte record per class, so the check reads
/// one cache line and one table address.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
struct StartCheck {
    /// `m = floor(2^64 / size) + 1`, so that `m * size = 2^64 + e` with
    /// `1 <= e <= size`. For an offset `x = k * size + r` (`r < size`)
    /// inside the span, `x * m` (mod 2^64) is `k * e + r * m`, without
    /// wrapping (`(k + 1) * e < m` for spans this small): `k * e` for an
    /// object start (`r = 0`), and at least `m` otherwise (after the
    /// divisibility test of Lemire, Kaser and Kurz, "Faster remainder by
    /// direct computation", 2019). The tests check every offset of every
    /// span. 0 for the bytes that are no class.
    magic: u64,
    /// `(K - 1) * e + 1` for a span of `K` objects: `x * m` is below it
    /// exactly for the starts of objects 0 to `K - 1`, so one comparison
    /// rejects an offset inside an object and one in the span's unused
    /// tail (`k = K`) alike. 0 for the bytes that are no class, which no
    /// offset passes.
    bound: u64,
}

impl StartCheck {
    /// Whether `off` (below the span's size) is the offset of an object in
    /// a span of this class.
    #[inline(always)]
    fn is_start(&self, off: u64) -> bool {
        off.wrapping_mul(self.magic) < self.bound
    }
}

/// [`StartCheck`] per value of a page tag's class byte: the classes', then
/// entries that pass nothing (as class 0's does), so a tag's byte indexes
/// it without a range test ([`object_start`]).
static START_CHECK: [StartCheck; 256] = build_start_check();

const fn build_start_check() -> [StartCheck; 256] {
    let sizes = build_sizes();
    let pages = build_pages();
    let mut t = [StartCheck { magic: 0, bound: 0 }; 256];
    let mut i = 1;
    while i < NUM_CLASSES {
        let size = sizes[i] as u128;
        let span = pages[i] as u128 * PAGE_SIZE as u128;
        let magic = (1u128 << 64) / size + 1;
        let e = magic * size - (1u128 << 64);
        let objects = span / size;
        // No wrap for any offset inside the span (see `magic`).
        assert!(e >= 1 && e <= size && (objects + 1) * e < magic);
        t[i] = StartCheck {
            magic: magic as u64,
            bound: ((objects - 1) * e + 1) as u64,
        };
        i += 1;
    }
    t
}

// Only the classes' entries pass any offset: `object_start` relies on it.
const _: () = {
    let t = build_start_check();
    let mut i = 0;
    while i < 256 {
        assert!((t[i].bound != 0) == (i >= 1 && i < NUM_CLASSES));
        i += 1;
    }
};

/// The class whose number is `class_byte` (a page tag's low byte), when
/// `off` is the offset of an object start in a span of it; `None` for any
/// other offset and for a byte that is no class (0 on an untagged page).
#[inline(always)]
pub(crate) fn object_start(class_byte: u8, off: u64) -> Option<SizeClass> {
    // Only a class's entry passes an offset (checked at compile time
    // above), so a `Some` holds an index in 1..NUM_CLASSES.
    START_CHECK[class_byte as usize]
        .is_start(off)
        .then_some(SizeClass(class_byte))
}

/// Objects a thread cache moves to or from the central list at once: 32 KiB
/// worth, at least 4 (with fewer, two threads using a class of 4 KiB or more
/// meet on its central lock every few operations). Small classes get 32 KiB
/// too (2,048 objects of 16 B): a cap of 64 objects made a thread that frees
/// a few hundred small objects and allocates them again go through the
/// central list, and meet the other threads there (`docs/MIMALLOC-BENCH.md`,
/// 2026-12-06, later).
pub static CLASS_BATCH: [u16; NUM_CLASSES] = build_batch();

const fn build_batch() -> [u16; NUM_CLASSES] {
    let sizes = build_sizes();
    let mut t = [0u16; NUM_CLASSES];
    let mut i = 1;
    while i < NUM_CLASSES {
        let b = (32 * 1024) / sizes[i] as usize;
        t[i] = if b < 4 {
            4
        } else if b > 2048 {
            2048
        } else {
            b as u16
        };
        i += 1;
    }
    t
}

/// Objects a thread cache may hold per class before it flushes a batch.
pub static CLASS_CACHE_MAX: [u16; NUM_CLASSES] = build_cache_max();

const fn build_cache_max() -> [u16; NUM_CLASSES] {
    let batch = build_batch();
    let mut t = [0u16; NUM_CLASSES];
    let mut i = 1;
    while i < NUM_CLASSES {
        t[i] = batch[i] * 2;
        i += 1;
    }
    t
}

// The lookup table stores classes as u8.
const _: () = assert!(NUM_CLASSES <= 256);

static LOOKUP: [u8; LOOKUP_LEN] = build_lookup();

const fn build_lookup() -> [u8; LOOKUP_LEN] {
    let sizes = build_sizes();
    let mut t = [0u8; LOOKUP_LEN];
    let mut idx = 0;
    let mut class = 1;
    while idx < LOOKUP_LEN {
        let size = idx * 8;
        while (sizes[class] as usize) < size {
            class += 1;
        }
        t[idx] = class as u8;
        idx += 1;
    }
    t
}

/// Whether every entry of `t` is a class from `lowest` up (below
/// NUM_CLASSES): the lookup tables' compile-time check.
const fn entries_are_classes(t: &[u8], lowest: u8) -> bool {
    let mut i = 0;
    while i < t.len() {
        if t[i] < lowest || t[i] as usize >= NUM_CLASSES {
            return false;
        }
        i += 1;
    }
    true
}

// Every lookup entry is a real class (1..NUM_CLASSES).
const _: () = assert!(entries_are_classes(&build_lookup(), 1));

/// A size class: an index 1..[`NUM_CLASSES`] into the class tables. Only
/// this module builds one (from the lookup table, or by checking an index),
/// so code that indexes a per-class array with it needs no bounds check.
/// `repr(transparent)`: the allocation slow paths take one through the C
/// ABI (see `cache::alloc_slow_or`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct SizeClass(u8);

impl SizeClass {
    /// The class with table index `index`, if there is one (1..NUM_CLASSES).
    #[inline]
    pub fn from_index(index: usize) -> Option<SizeClass> {
        (1..NUM_CLASSES)
            .contains(&index)
            .then_some(SizeClass(index as u8))
    }

    /// Its index in the class tables: always in 1..NUM_CLASSES.
    #[inline(always)]
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Bytes per object.
    #[inline]
    pub fn size(self) -> usize {
        CLASS_SIZE[self.index()] as usize
    }
}

/// Class for a request of `size` bytes with alignment at most 16 (at most 8
/// when `size <= 8`). Requires `size <= MAX_SMALL` (larger sizes get the
/// largest class: callers check [`fast_path_ok`] first).
#[inline(always)]
pub fn class_of_small(size: usize) -> SizeClass {
    debug_assert!(size <= MAX_SMALL);
    // Bounds-checked indexing, clamped so no size can go past the table;
    // every entry is a real class (checked at compile time above).
    SizeClass(LOOKUP[(size.min(MAX_SMALL) + 7) >> 3])
}

/// Class for a C `malloc` of `size` bytes (alignment 16: up to 16 bytes
/// take the 16-byte class), `None` above [`MAX_SMALL`]. One load from a
/// table with an entry per 16 bytes: no clamp to the 16-byte minimum.
#[inline(always)]
pub(crate) fn class_for_malloc(size: usize) -> Option<SizeClass> {
    if size > MAX_SMALL {
        return None;
    }
    // Every entry is a real class (checked at compile time below).
    Some(SizeClass(LOOKUP16[(size + 15) >> 4]))
}

/// Entries in [`LOOKUP16`], one per 16 bytes.
const LOOKUP16_LEN: usize = MAX_SMALL / 16 + 1;

/// The class of each multiple of 16 bytes (entry 0 too: the 16-byte
/// class). Every class from 16 bytes up is a multiple of 16, so the class
/// of `16 * i` is also the class of every size in `(16 * (i - 1), 16 * i]`.
static LOOKUP16: [u8; LOOKUP16_LEN] = build_lookup16();

const fn build_lookup16() -> [u8; LOOKUP16_LEN] {
    let t8 = build_lookup();
    let mut t = [0u8; LOOKUP16_LEN];
    let mut i = 0;
    while i < LOOKUP16_LEN {
        let size = if i == 0 { 16 } else { 16 * i };
        t[i] = t8[(size + 7) >> 3];
        i += 1;
    }
    t
}

// Every entry is a class of 16 bytes or more (class 1, 8 bytes, is not
// 16-aligned).
const _: () = assert!(entries_are_classes(&build_lookup16(), 2));

/// Whether the fast table [`class_of_small`] gives a correctly aligned class.
#[inline(always)]
pub fn fast_path_ok(size: usize, align: usize) -> bool {
    size <= MAX_SMALL && (align <= 8 || (align <= 16 && size > 8))
}

/// Class for any `(size, align)`, or `None` when the request must go to page
/// runs (too big, or aligned beyond a page, or no class is a multiple of
/// `align`).
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<SizeClass> {
    if fast_path_ok(size, align) {
        return Some(class_of_small(size));
    }
    if size > MAX_SMALL || align > PAGE_SIZE {
        return None;
    }
    // Objects sit at span_start + i * size with span_start page-aligned, so a
    // class whose size is a multiple of `align` aligns every object.
    let mut c = class_of_small(size.max(align)).index();
    while c < NUM_CLASSES {
        if CLASS_SIZE[c] as usize % align == 0 {
            return SizeClass::from_index(c);
        }
        c += 1;
    }
    None
}

// The Linux heap's span limits are checked here too.
#[cfg(all(test, not(hugeguard_fallback)))]
mod tests {
    use super::*;

    #[test]
    fn the_start_check_passes_exactly_the_object_starts_of_each_span() {
        for byte in [0u8, NUM_CLASSES as u8, 0xff] {
            for off in [0, 8, 16, 4096] {
                assert_eq!(object_start(byte, off), None, "byte {byte}");
            }
        }
        for c in 1..NUM_CLASSES {
            let size = CLASS_SIZE[c] as u64;
            let span = CLASS_PAGES[c] as u64 * PAGE_SIZE as u64;
            let class = SizeClass::from_index(c);
            for off in 0..span + 2 * size {
                let start = off % size == 0 && off + size <= span;
                let want = if start { class } else { None };
                assert_eq!(object_start(c as u8, off), want, "class {c}, offset {off}");
            }
            // Offsets far beyond any span (up to 2^32) are refused too.
            for off in [span * 7, 1 << 20, (1 << 32) - size, (1 << 32) - 1] {
                assert_eq!(object_start(c as u8, off), None, "class {c}, offset {off}");
            }
        }
    }

    #[test]
    fn the_malloc_table_agrees_with_class_for_at_alignment_16() {
        for size in 0..=MAX_SMALL + 16 {
            let want = class_for(size.max(16), 16);
            assert_eq!(class_for_malloc(size), want, "size {size}");
        }
    }

    #[test]
    fn table_is_increasing_and_ends_at_max() {
        assert_eq!(CLASS_SIZE[0], 0);
        assert_eq!(CLASS_SIZE[1], 8);
        assert_eq!(CLASS_SIZE[NUM_CLASSES - 1] as usize, MAX_SMALL);
        for c in 2..NUM_CLASSES {
            assert!(CLASS_SIZE[c] > CLASS_SIZE[c - 1]);
            assert_eq!(CLASS_SIZE[c] % 16, 0, "class {c} not 16-aligned");
        }
    }

    #[test]
    fn lookup_gives_the_smallest_fitting_class() {
        for size in 0..=MAX_SMALL {
            let c = class_of_small(size).index();
            assert!(CLASS_SIZE[c] as usize >= size, "size {size}");
            assert!(
                c == 1 || (CLASS_SIZE[c - 1] as usize) < size,
                "size {size} not tight"
            );
        }
    }

    #[test]
    fn worst_case_internal_waste_is_as_documented() {
        let mut worst_small: f64 = 0.0;
        let mut worst_above_128: f64 = 0.0;
        for c in 2..NUM_CLASSES {
            let size = CLASS_SIZE[c] as f64;
            let req = CLASS_SIZE[c - 1] as f64 + 1.0;
            let waste = (size - req) / size;
            if CLASS_SIZE[c - 1] >= 128 {
                worst_above_128 = worst_above_128.max(waste);
            } else {
                worst_small = worst_small.max(waste);
            }
        }
        assert!(worst_small <= 0.5, "{worst_small}");
        assert!(worst_above_128 < 0.2, "{worst_above_128}");
    }

    #[test]
    fn spans_waste_at_most_an_eighth_and_hold_enough_objects() {
        for c in 1..NUM_CLASSES {
            let bytes = CLASS_PAGES[c] as usize * PAGE_SIZE;
            let size = CLASS_SIZE[c] as usize;
            assert!((bytes % size) * 8 <= bytes, "class {c}");
            assert!(bytes / size >= 4, "class {c}");
            assert!(bytes / size <= crate::span::MAX_OBJECTS, "class {c}");
            assert!(CLASS_PAGES[c] as usize <= 64);
        }
    }

    #[test]
    fn thread_cache_bound_in_bytes() {
        let total: usize = (1..NUM_CLASSES)
            .map(|c| CLASS_CACHE_MAX[c] as usize * CLASS_SIZE[c] as usize)
            .sum();
        // Documented in docs/design.md as the per-thread cache bound.
        assert!(total <= 3328 * 1024, "{total}");
        for c in 1..NUM_CLASSES {
            assert!(CLASS_BATCH[c] >= 2 && CLASS_CACHE_MAX[c] >= CLASS_BATCH[c]);
        }
    }

    #[test]
    fn aligned_classes_align_their_objects() {
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
            for size in [
                1usize, 7, 8, 9, 16, 17, 100, 1000, 4096, 5000, 20000, MAX_SMALL,
            ] {
                let Some(c) = class_for(size, align) else {
                    assert!(size.max(align) > MAX_SMALL || align > PAGE_SIZE);
                    continue;
                };
                let cs = c.size();
                assert!(cs >= size);
                assert_eq!(cs % align, 0, "size {size} align {align}");
            }
        }
        assert_eq!(class_for(8, 8192), None);
        assert_eq!(class_for(MAX_SMALL + 1, 8), None);
        assert_eq!(class_for(8, 16), Some(class_of_small(16)));
        // Only real classes can be built from an index.
        assert_eq!(SizeClass::from_index(0), None);
        assert_eq!(SizeClass::from_index(NUM_CLASSES), None);
        assert_eq!(SizeClass::from_index(1).map(SizeClass::index), Some(1));
    }
}
