//! Packing: small objects fill huge pages densely, and freed memory gathers
//! into whole free huge pages.

// The Linux heap's own behaviour (the fallback build forwards to `System`).
#![cfg(not(hugeguard_fallback))]

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

#[test]
fn small_objects_touch_close_to_the_minimum_of_huge_pages() {
    let a = hugeguard::HugeGuard;
    // Sizes that are exact classes and divide their spans evenly, so the
    // minimum possible is exact: ceil(bytes / 2 MiB).
    let sizes = [64usize, 256, 1024, 4096, 16, 512];
    let target = 256usize << 20;
    let mean = sizes.iter().sum::<usize>() / sizes.len();
    // The bookkeeping vector is allocated before the first snapshot.
    let mut blocks = Vec::with_capacity(target / mean + sizes.len());
    hugeguard::flush_caches();
    let before = hugeguard::stats();
    let mut total = 0usize;
    let mut i = 0;
    while total < target {
        let size = sizes[i % sizes.len()];
        let layout = Layout::from_size_align(size, 8).unwrap();
        assert!(blocks.len() < blocks.capacity(), "the vector must not grow");
        // SAFETY: non-zero layout.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        blocks.push((p, layout));
        total += size;
        i += 1;
    }
    let after = hugeguard::stats();
    let used = after.huge_pages_in_use() - before.huge_pages_in_use();
    let minimum = total.div_ceil(2 << 20);
    println!("allocated {total} bytes: {used} huge pages, minimum {minimum}");
    assert!(
        used as f64 <= minimum as f64 * 1.03 + 2.0,
        "{used} huge pages for a minimum of {minimum}"
    );
    // Free everything: the huge pages come back whole.
    for (p, l) in blocks.drain(..) {
        // SAFETY: allocated above with this layout.
        unsafe { a.dealloc(p, l) };
    }
    hugeguard::flush_caches();
    let end = hugeguard::stats();
    assert!(
        end.huge_pages_in_use() <= before.huge_pages_in_use() + 2,
        "{} huge pages still in use after freeing all (was {})",
        end.huge_pages_in_use(),
        before.huge_pages_in_use()
    );
    assert!(end.free_huge_pages >= minimum);
}
