//! The size-less C entry points find a block from its pointer alone: every
//! object start of every class is recognised with its exact usable size, and
//! pointers inside objects, past a span's last object or outside the heap
//! are not.

// `raw` is the Linux heap's (the fallback build has no C entry points).
#![cfg(not(hugeguard_fallback))]

use hugeguard::raw;

/// Usable sizes of small blocks, one per class reached by `malloc`.
fn class_sizes() -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut n = 1;
    while n <= 32 << 10 {
        let p = raw::malloc(n);
        // SAFETY: `p` is a live block of this module.
        let usable = unsafe { raw::usable_size(p) };
        // SAFETY: freed once.
        unsafe { raw::free(p) };
        if sizes.last() != Some(&usable) {
            sizes.push(usable);
        }
        n = usable + 1;
    }
    sizes
}

#[test]
fn every_object_start_and_nothing_else_is_a_block() {
    let sizes = class_sizes();
    assert!(sizes.len() > 30, "classes reached: {sizes:?}");
    for &size in &sizes {
        // Enough objects to fill a few spans, so some sit at span ends and
        // on every page of a span.
        let count = (3 * (64 << 12) / size).clamp(8, 2000);
        let blocks: Vec<*mut u8> = (0..count).map(|_| raw::malloc(size)).collect();
        for (i, &p) in blocks.iter().enumerate() {
            assert!(!p.is_null());
            // SAFETY: `p` is live; the other pointers are inside it.
            unsafe {
                assert!(raw::owns(p), "class {size}: start of block {i}");
                assert_eq!(raw::usable_size(p), size);
                for delta in [1, 8, 16, size / 2, size - 1] {
                    if delta > 0 && delta < size {
                        assert!(!raw::owns(p.add(delta)), "class {size}: {p:?} + {delta}");
                    }
                }
            }
        }
        for p in blocks {
            // SAFETY: each block freed once.
            assert!(unsafe { raw::free(p) });
        }
    }
}

#[test]
fn large_blocks_and_foreign_pointers() {
    let p = raw::malloc(100 << 10);
    // SAFETY: `p` is live; `p + 4096` is inside it; the stack and a static
    // are outside the heap.
    unsafe {
        assert!(raw::owns(p));
        assert!(raw::usable_size(p) >= 100 << 10);
        assert!(!raw::owns(p.add(4096)));
        assert!(!raw::owns(p.add(16)));
        let local = 0u64;
        assert!(!raw::owns(&local as *const u64 as *mut u8));
        static STATIC: u64 = 0;
        assert!(!raw::owns(&STATIC as *const u64 as *mut u8));
        assert!(!raw::free(&local as *const u64 as *mut u8));
        assert!(raw::free(p));
    }
}
