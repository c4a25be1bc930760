//! Dense memory keeps the TLB benefit of THP: a dense live heap ends up
//! mostly huge-page backed through the background thread's MADV_COLLAPSE,
//! also when THP is in `madvise` mode (where nothing else would do it).

// The Linux heap's own behaviour (the fallback build forwards to `System`).
#![cfg(not(hugeguard_fallback))]

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

// Bytes mapped by huge pages: anonymous ones, and shared-memory ones (the
// heap of mesh mode is a shared memory file).
use hugeguard_testkit::procfs::huge_mapped as anon_huge_bytes;

fn thp_available() -> bool {
    let s =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    s.contains("[always]") || s.contains("[madvise]")
}

#[test]
fn dense_live_heap_becomes_huge_page_backed() {
    if !thp_available() {
        eprintln!("THP not available here: nothing to check");
        return;
    }
    let before = anon_huge_bytes();
    // 256 MB of small objects, all kept live and written.
    let blocks: Vec<Box<[u8; 192]>> = (0..(256 << 20) / 192)
        .map(|i| Box::new([i as u8; 192]))
        .collect();
    let live = blocks.len() * 192;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut huge = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        huge = anon_huge_bytes().saturating_sub(before);
        if huge * 10 >= live * 8 {
            break;
        }
    }
    let s = hugeguard::stats();
    println!(
        "live {} MB, huge-page backed (anonymous and shared) +{} MB\n{s}",
        live >> 20,
        huge >> 20
    );
    // With THP `always` the kernel backs the heap with huge pages as it
    // faults in, and nothing is left to collapse; with `madvise` only the
    // background thread's marking and collapses can get there.
    let always = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .unwrap_or_default()
        .contains("[always]");
    assert!(
        s.advice.collapse_attempts > 0 || always,
        "the background thread never collapsed"
    );
    if huge * 10 < live * 7 && s.advice.collapse_failures > 0 {
        // The kernel may refuse collapses when it has no free huge page
        // (a fragmented shared machine): that is its answer, not ours.
        eprintln!(
            "kernel refused {} collapses; coverage not checked",
            s.advice.collapse_failures
        );
    } else {
        assert!(
            huge * 10 >= live * 7,
            "only {} of {} MB huge-page backed",
            huge >> 20,
            live >> 20
        );
    }
    assert!(blocks
        .iter()
        .enumerate()
        .all(|(i, b)| b[0] == i as u8 && b[191] == i as u8));
}
