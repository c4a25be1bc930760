//! Property test: random sequences of alloc / dealloc / realloc /
//! alloc_zeroed with random layouts, checked against a shadow model for
//! alignment, non-overlap, contents kept across realloc, and zeroes where
//! asked.

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        size: usize,
        align_log: u32,
        zeroed: bool,
    },
    Dealloc {
        pick: usize,
    },
    Realloc {
        pick: usize,
        size: usize,
    },
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 1usize..=256,
        4 => 257usize..=32 * 1024,
        2 => 32 * 1024 + 1..=600usize * 1024,
        1 => 600usize * 1024..=5 * 1024 * 1024,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (size_strategy(), prop_oneof![6 => 0u32..=4, 2 => 5u32..=12, 1 => 13u32..=22], any::<bool>())
            .prop_map(|(size, align_log, zeroed)| Op::Alloc { size, align_log, zeroed }),
        3 => any::<usize>().prop_map(|pick| Op::Dealloc { pick }),
        3 => (any::<usize>(), size_strategy()).prop_map(|(pick, size)| Op::Realloc { pick, size }),
    ]
}

struct Block {
    ptr: *mut u8,
    layout: Layout,
    tag: u8,
}

fn fill(b: &Block) {
    // SAFETY: the block is live and `layout.size()` long.
    unsafe { std::ptr::write_bytes(b.ptr, b.tag, b.layout.size()) };
}

fn check(b: &Block, len: usize) -> bool {
    // SAFETY: the block is live and at least `len` long.
    let s = unsafe { std::slice::from_raw_parts(b.ptr, len) };
    s.iter().all(|&x| x == b.tag)
}

fn no_overlap(live: &BTreeMap<usize, usize>, start: usize, len: usize) -> bool {
    let before_ok = live
        .range(..=start)
        .next_back()
        .is_none_or(|(&s, &l)| s + l <= start);
    let after_ok = live
        .range(start..)
        .next()
        .is_none_or(|(&s, _)| start + len <= s);
    before_ok && after_ok
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn matches_shadow_model(ops in proptest::collection::vec(op_strategy(), 1..300)) {
        let a = hugeguard::HugeGuard;
        let mut blocks: Vec<Block> = Vec::new();
        let mut ranges: BTreeMap<usize, usize> = BTreeMap::new();
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Alloc { size, align_log, zeroed } => {
                    let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
                    // SAFETY: non-zero size.
                    let ptr = unsafe { if zeroed { a.alloc_zeroed(layout) } else { a.alloc(layout) } };
                    prop_assert!(!ptr.is_null());
                    prop_assert_eq!(ptr as usize % layout.align(), 0, "misaligned {:?}", layout);
                    prop_assert!(no_overlap(&ranges, ptr as usize, size), "overlap {:?}", layout);
                    tag = tag.wrapping_add(1);
                    let b = Block { ptr, layout, tag: 0 };
                    if zeroed {
                        prop_assert!(check(&b, size), "alloc_zeroed not zero {:?}", layout);
                    }
                    let b = Block { tag, ..b };
                    fill(&b);
                    ranges.insert(ptr as usize, size);
                    blocks.push(b);
                }
                Op::Dealloc { pick } if !blocks.is_empty() => {
                    let b = blocks.swap_remove(pick % blocks.len());
                    prop_assert!(check(&b, b.layout.size()), "contents lost");
                    ranges.remove(&(b.ptr as usize));
                    // SAFETY: allocated with this layout, not used again.
                    unsafe { a.dealloc(b.ptr, b.layout) };
                }
                Op::Realloc { pick, size } if !blocks.is_empty() => {
                    let i = pick % blocks.len();
                    let old = &blocks[i];
                    prop_assert!(check(old, old.layout.size()));
                    ranges.remove(&(old.ptr as usize));
                    // SAFETY: live block with its layout; size non-zero.
                    let ptr = unsafe { a.realloc(old.ptr, old.layout, size) };
                    prop_assert!(!ptr.is_null());
                    let layout = Layout::from_size_align(size, old.layout.align()).unwrap();
                    prop_assert_eq!(ptr as usize % layout.align(), 0);
                    prop_assert!(no_overlap(&ranges, ptr as usize, size), "realloc overlap");
                    let nb = Block { ptr, layout, tag: old.tag };
                    prop_assert!(check(&nb, size.min(old.layout.size())), "realloc lost contents");
                    fill(&nb);
                    ranges.insert(ptr as usize, size);
                    blocks[i] = nb;
                }
                _ => {}
            }
        }
        for b in blocks {
            prop_assert!(check(&b, b.layout.size()));
            // SAFETY: allocated with this layout.
            unsafe { a.dealloc(b.ptr, b.layout) };
        }
    }
}

#[test]
fn overflowing_and_exhausting_layouts_return_null() {
    let a = hugeguard::HugeGuard;
    // Larger than any reservation: null, and the allocator stays usable.
    let huge = Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap();
    // SAFETY: non-zero size. (`black_box`: the compiler may assume a
    // `malloc` it sees inlined succeeds when its block goes unused.)
    assert!(std::hint::black_box(unsafe { a.alloc(huge) }).is_null());
    let huge_aligned = Layout::from_size_align(1 << 40, 1 << 30).unwrap();
    // The system allocator may grant 1 TiB of address space (overcommit);
    // the Linux heap's reservation is smaller.
    if !hugeguard::stats().forwarding_to_system {
        // SAFETY: non-zero size.
        assert!(unsafe { a.alloc(huge_aligned) }.is_null());
    }
    let ok = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: non-zero size; freed below.
    unsafe {
        let p = a.alloc(ok);
        assert!(!p.is_null());
        let q = std::hint::black_box(a.realloc(p, ok, isize::MAX as usize - 4096));
        assert!(q.is_null(), "realloc beyond the OS must fail");
        assert_eq!(*p, *p, "the old block stays valid");
        a.dealloc(p, ok);
    }
    assert!(hugeguard::stats().mapped_bytes < 1 << 40);
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn realloc_stays_in_place_within_a_class_or_page_run() {
    let a = hugeguard::HugeGuard;
    // SAFETY: live blocks, layouts matching.
    unsafe {
        let l = Layout::from_size_align(100, 8).unwrap();
        let p = a.alloc(l);
        assert_eq!(a.realloc(p, l, 110), p, "100 and 110 share a class");
        let l = Layout::from_size_align(110, 8).unwrap();
        a.dealloc(p, l);
        let l = Layout::from_size_align(40_000, 8).unwrap();
        let p = a.alloc(l);
        assert_eq!(a.realloc(p, l, 40_900), p, "same 10-page run");
        let l = Layout::from_size_align(40_900, 8).unwrap();
        let q = a.realloc(p, l, 36_000);
        assert_eq!(q, p, "shrinking a page run stays in place");
        a.dealloc(q, Layout::from_size_align(36_000, 8).unwrap());
    }
}
