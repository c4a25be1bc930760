//! The RSS breakdown (`hugeguard::rss_breakdown`): its parts add up to the
//! measured RSS within 5 % at the peak of a batch, after the batch is freed,
//! and after a release; and the live part follows what the program holds.

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

/// The tests measure the whole process: they take turns.
#[cfg(not(hugeguard_fallback))]
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(not(hugeguard_fallback))]
/// Fills `total` bytes of objects of mixed sizes (16 B to 64 KiB).
fn batch(total: usize) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let (mut sum, mut x) = (0, 12345u64);
    while sum < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = match x % 100 {
            0..=59 => 16 + (x >> 8) as usize % 240,
            60..=94 => 256 + (x >> 8) as usize % 3840,
            _ => 4096 + (x >> 8) as usize % 61440,
        };
        v.push(vec![(x >> 16) as u8 | 1; size]);
        sum += size;
    }
    v
}

#[cfg(not(hugeguard_fallback))]
/// Asserts the parts add up to the RSS within 5 %, and prints the report.
fn check(when: &str) -> hugeguard::RssBreakdown {
    let b = hugeguard::rss_breakdown();
    println!("{when}:\n{b}\n");
    let (rss, explained) = (b.rss_bytes as f64, b.explained_bytes() as f64);
    assert!(rss > 0.0, "{when}: no RSS read");
    assert!(
        (explained - rss).abs() <= 0.05 * rss,
        "{when}: the parts sum to {explained} against an RSS of {rss}: {b:?}"
    );
    b
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn the_parts_add_up_to_the_rss_through_a_batch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = check("start").live_bytes;
    let mut kept = batch(256 << 20);
    let peak = check("peak, 256 MiB live");
    assert!(
        peak.live_bytes >= base + (256 << 20),
        "live {} after 256 MiB",
        peak.live_bytes
    );
    // Keep one object in 16: the rest is free memory the heap holds.
    let mut i = 0;
    kept.retain(|_| {
        i += 1;
        i % 16 == 0
    });
    kept.shrink_to_fit();
    let freed = check("freed, 1 in 16 kept");
    assert!(
        freed.live_bytes < peak.live_bytes / 8,
        "live {}",
        freed.live_bytes
    );
    assert!(
        freed.span_free_bytes + freed.held_back_bytes + freed.cached_bytes > 64 << 20,
        "the freed memory shows as held: {freed:?}"
    );
    hugeguard::release_now();
    let released = check("after release_now");
    assert!(released.rss_bytes < freed.rss_bytes, "{released:?}");
    drop(kept);
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn pages_made_resident_behind_the_heaps_back_show_as_unaccounted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // What khugepaged does to a huge page the heap released (it faults the
    // whole huge page back in), done by hand: a freed and released 16 MiB
    // object's pages are populated again (they still read as zero, as the
    // heap expects of released pages).
    let layout = std::alloc::Layout::from_size_align(16 << 20, 4096).unwrap();
    // SAFETY: a non-zero layout.
    let p = unsafe { std::alloc::alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: `p` holds 16 MiB; freed once with its layout.
    unsafe {
        p.write_bytes(1, 16 << 20);
        std::alloc::dealloc(p, layout);
    }
    hugeguard::release_now();
    let before = check("16 MiB freed and released");
    // SAFETY: the range is the heap's own committed memory, released (it
    // reads as zero); MADV_POPULATE_WRITE (Linux 5.14) only faults it in.
    let rc = unsafe { libc::madvise(p.cast(), 16 << 20, 23) };
    if rc != 0 {
        println!(
            "MADV_POPULATE_WRITE refused ({}); skipped",
            std::io::Error::last_os_error()
        );
        return;
    }
    let b = hugeguard::rss_breakdown();
    println!("populated again:\n{b}\n");
    // The heap counts those pages as released and would never give them
    // back again: the test does (they still read as zero). In mesh mode the
    // heap is a shared file, whose pages only REMOVE gives back.
    // SAFETY: as above; REMOVE and DONTNEED leave the range reading as zero.
    unsafe {
        if libc::madvise(p.cast(), 16 << 20, libc::MADV_REMOVE) != 0 {
            libc::madvise(p.cast(), 16 << 20, libc::MADV_DONTNEED);
        }
    }
    let grown = b.unaccounted_bytes - before.unaccounted_bytes;
    assert!(
        (15 << 20..=17 << 20).contains(&grown),
        "16 MiB made resident behind the heap's back: unaccounted grew by {grown}: {b:?}"
    );
}

#[test]
#[cfg(hugeguard_fallback)]
fn the_fallback_build_reports_only_the_rss() {
    let b = hugeguard::rss_breakdown();
    assert!(b.stats.forwarding_to_system);
    assert_eq!(b.explained_bytes(), b.outside_heap_bytes);
    assert_eq!(b.live_bytes, 0);
}
