//! The public API: `release_now`, `stats` and its report, `set_background`.

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

#[test]
fn stats_say_which_heap_serves_the_blocks() {
    let l = Layout::from_size_align(4096, 8).unwrap();
    // SAFETY: a non-zero layout, freed once below.
    let p = unsafe { hugeguard::HugeGuard.alloc(l) };
    assert!(!p.is_null());
    let s = hugeguard::stats();
    let report = s.to_string();
    // SAFETY: allocated above with `l`.
    unsafe { hugeguard::HugeGuard.dealloc(p, l) };
    assert_eq!(s.forwarding_to_system, cfg!(hugeguard_fallback));
    if s.forwarding_to_system {
        assert_eq!((s.mapped_bytes, s.allocated_bytes), (0, 0));
        assert!(
            report.contains("forwarded to the system allocator"),
            "{report}"
        );
        assert_eq!(hugeguard::release_now(), 0);
        assert_eq!(hugeguard::mesh_now(), hugeguard::MeshRound::default());
    } else {
        assert!(s.allocated_bytes >= 4096 && s.mapped_bytes >= s.resident_bytes);
        assert!(report.contains("resident"), "{report}");
        assert_eq!((s.page_size, s.huge_page_size), (4096, 2 << 20));
        // The mTHP sizes a fault may map, as this test reads sysfs itself.
        let word = |p: &str| {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let word = t.split('[').nth(1).and_then(|r| r.split(']').next());
            word.unwrap_or("").to_string()
        };
        let thp = word("/sys/kernel/mm/transparent_hugepage/enabled");
        let thp_on = thp == "always" || thp == "madvise";
        let expected: Vec<usize> = (2..=9)
            .map(|k| 4096usize << k)
            .filter(|size| {
                let w = word(&format!(
                    "/sys/kernel/mm/transparent_hugepage/hugepages-{}kB/enabled",
                    size >> 10
                ));
                w == "always" || w == "madvise" || (w == "inherit" && thp_on)
            })
            .collect();
        assert_eq!(s.mthp_sizes().collect::<Vec<_>>(), expected, "{report}");
        assert!(
            report.contains("geometry       4 KiB pages, 2 MiB huge pages; mTHP sizes on:"),
            "{report}"
        );
    }
    assert!(hugeguard::check_invariants().is_ok());
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn release_now_returns_freed_memory_at_once() {
    use hugeguard_testkit::procfs::rss;
    // The background thread must not do the work for us here.
    hugeguard::set_background(false);
    let a = hugeguard::HugeGuard;
    let l = Layout::from_size_align(4096, 8).unwrap();
    // SAFETY: non-zero layout; every block freed once below.
    let blocks: Vec<*mut u8> = (0..16384)
        .map(|i| unsafe {
            let p = a.alloc(l);
            p.write_bytes(i as u8, 4096);
            p
        })
        .collect();
    let full = rss();
    for &p in &blocks {
        // SAFETY: allocated above with `l`.
        unsafe { a.dealloc(p, l) };
    }
    let before = hugeguard::stats();
    let released = hugeguard::release_now();
    let after = hugeguard::stats();
    let low = rss();
    println!(
        "released {} MiB; RSS {} -> {} MiB\n{after}",
        released >> 20,
        full >> 20,
        low >> 20
    );
    assert!(
        released >= 48 << 20,
        "released only {released} bytes of 64 MiB freed"
    );
    assert_eq!(after.released_bytes - before.released_bytes, released);
    assert!(
        low + (48 << 20) <= full,
        "RSS did not drop: {full} -> {low}"
    );
    assert!(after.resident_bytes < before.resident_bytes);
    let report = after.to_string();
    for needle in [
        "resident",
        "released",
        "NOHUGEPAGE",
        "DONTNEED",
        "COLLAPSE",
        "marking",
    ] {
        assert!(report.contains(needle), "report lacks {needle}:\n{report}");
    }
    hugeguard::set_background(true);
}
