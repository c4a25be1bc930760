//! The heap profile (`hugeguard::profile`): sampled objects behave like any
//! other block, the live-bytes estimate is unbiased, and a profile written
//! to a file is in the format `google-pprof` reads.
//!
//! One process per file (profiling is process-wide); the tests of this file
//! take turns.

use hugeguard::profile;
#[cfg(not(hugeguard_fallback))]
use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

static SERIAL: Mutex<()> = Mutex::new(());

/// Profiling on with `interval` for the length of a test.
#[cfg(not(hugeguard_fallback))]
struct Profiling;

#[cfg(not(hugeguard_fallback))]
impl Profiling {
    fn on(interval: usize) -> Self {
        profile::set_interval(interval);
        assert!(profile::start(), "profiling did not start");
        Profiling
    }
}

#[cfg(not(hugeguard_fallback))]
impl Drop for Profiling {
    fn drop(&mut self) {
        profile::stop();
        profile::set_interval(profile::DEFAULT_INTERVAL);
    }
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn sampled_blocks_keep_alignment_data_and_sizes() {
    // In a process of its own: once profiling starts, every thread samples
    // from its next allocation, and the test harness's main thread starts
    // the other tests' threads meanwhile, whose blocks would be live
    // samples in the count below.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (ok, text) =
        hugeguard_testkit::child::run("child_sampled_blocks_keep_alignment_data_and_sizes", &[]);
    assert!(ok, "{text}");
    assert!(text.contains("SAMPLED BLOCKS OK"), "{text}");
}

#[test]
#[ignore = "run in a child by sampled_blocks_keep_alignment_data_and_sizes"]
#[cfg(not(hugeguard_fallback))]
fn child_sampled_blocks_keep_alignment_data_and_sizes() {
    let before = profile::summary().samples;
    // An interval of one byte samples nearly every allocation.
    let on = Profiling::on(1);
    // Allocate a little first: a thread's first countdown after `start`
    // was drawn while profiling was off, and is not sampled (`black_box`:
    // the compiler may leave out an allocation freed unused).
    drop(std::hint::black_box(vec![0u8; 2 << 20]));
    let mut blocks = Vec::new();
    for (i, &(size, align)) in [
        (1, 1),
        (24, 8),
        (100, 16),
        (1000, 64),
        (4000, 4096),
        (32 * 1024, 8),
        (40 * 1024, 8),
        (3 << 20, 4096),
    ]
    .iter()
    .enumerate()
    {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero layout; freed below with the same layout.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null(), "{size} bytes aligned {align}");
        assert_eq!(p as usize % align, 0, "{size} bytes aligned {align}");
        // SAFETY: `p` holds `size` bytes.
        unsafe { p.write_bytes(i as u8 + 1, size) };
        // SAFETY: a live block of this layout.
        assert!(unsafe { hugeguard::usable_size(p, layout) } >= size);
        blocks.push((p, layout, i as u8 + 1));
    }
    let live = profile::summary().samples;
    assert!(
        live >= before + 6,
        "8 allocations at a 1-byte interval, {} samples live",
        live - before
    );
    // Grow and shrink each, then check and free it.
    for (p, layout, fill) in blocks {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: a live block of `layout`; a non-zero new size.
        let q = unsafe { GLOBAL.realloc(p, layout, size * 2 + 1) };
        assert!(!q.is_null());
        assert_eq!(q as usize % align, 0);
        // SAFETY: the first `size` bytes were copied.
        assert!(unsafe { std::slice::from_raw_parts(q, size) }
            .iter()
            .all(|&b| b == fill));
        let grown = Layout::from_size_align(size * 2 + 1, align).unwrap();
        // SAFETY: a live block of `grown`.
        let r = unsafe { GLOBAL.realloc(q, grown, size.div_ceil(2)) };
        assert!(!r.is_null());
        // SAFETY: the first half was copied.
        assert!(unsafe { std::slice::from_raw_parts(r, size.div_ceil(2)) }
            .iter()
            .all(|&b| b == fill));
        let shrunk = Layout::from_size_align(size.div_ceil(2), align).unwrap();
        // SAFETY: a live block of `shrunk`, freed once.
        unsafe { GLOBAL.dealloc(r, shrunk) };
    }
    drop(on);
    assert!(hugeguard::check_invariants().is_ok());
    assert!(
        profile::summary().samples <= before + 2,
        "freed samples still live: {:?}",
        profile::summary()
    );
    println!("SAMPLED BLOCKS OK");
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn freed_sample_slots_are_reused_cleared_when_asked_and_given_back_on_release() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The background thread's release passes would give the pages back at
    // a time of their own.
    hugeguard::set_background(false);
    let on = Profiling::on(1);
    drop(std::hint::black_box(vec![0u8; 2 << 20]));
    let layout = Layout::from_size_align(4000, 8).unwrap();
    let taken = |()| profile::summary().samples_taken;
    let before = taken(());
    // 64 sampled blocks, dirtied and freed: their slots keep their pages.
    let blocks: Vec<*mut u8> = (0..64)
        .map(|_| {
            // SAFETY: a non-zero layout; freed below.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: `p` holds 4,000 bytes.
            unsafe { p.write_bytes(0xab, 4000) };
            p
        })
        .collect();
    assert!(taken(()) >= before + 60, "{:?}", profile::summary());
    for p in blocks {
        // SAFETY: live blocks of `layout`, freed once.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    let warm = profile::summary().overhead_bytes;
    assert!(warm >= 60 * 4096, "freed slots kept {warm} bytes");
    // Zeroed samples (the C `calloc`; Rust's `alloc_zeroed` clears small
    // blocks itself) reuse those slots and read as zero.
    let zeroed: Vec<*mut u8> = (0..64)
        .map(|_| {
            let p = hugeguard::raw::c_calloc(1, 4000);
            assert!(!p.is_null());
            // SAFETY: `p` holds 4,000 bytes.
            assert!(unsafe { std::slice::from_raw_parts(p, 4000) }
                .iter()
                .all(|&b| b == 0));
            p
        })
        .collect();
    for p in zeroed {
        // SAFETY: live blocks of the C interface, freed once.
        assert!(unsafe { hugeguard::raw::free(p) });
    }
    drop(on);
    if let Err(e) = hugeguard::check_invariants() {
        panic!("{e:?}");
    }
    // A release pass gives the free slots' pages back.
    let held = profile::summary().overhead_bytes;
    hugeguard::release_now();
    let after = profile::summary().overhead_bytes;
    hugeguard::set_background(true);
    assert!(
        after + 60 * 4096 <= held,
        "free slots held {held} bytes before a release, {after} after"
    );
}

/// Keeps `n` blocks of `size` bytes alive, allocated here (the call site a
/// profile should name).
#[cfg(not(hugeguard_fallback))]
#[inline(never)]
fn leak_here(n: usize, size: usize) -> Vec<Box<[u8]>> {
    (0..n)
        .map(|i| vec![i as u8; size].into_boxed_slice())
        .collect()
}

/// Asserts that the profile's estimate of live bytes grew from `base` by
/// `truth` bytes, within 10 %; returns the summary it read.
#[cfg(not(hugeguard_fallback))]
fn assert_estimate_within_ten_percent(base: usize, truth: usize) -> hugeguard::ProfileSummary {
    let s = profile::summary();
    let est = s.estimated_live_bytes.saturating_sub(base);
    let off = (est as f64 - truth as f64).abs() / truth as f64;
    assert!(
        off < 0.10,
        "estimate {est} against {truth} kept ({:.1} % off; {s:?})",
        off * 100.0
    );
    s
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn the_estimate_of_live_bytes_is_within_ten_percent() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 16 KiB: about 3,500 samples of what is kept, so 10 % is about seven
    // standard deviations (at 64 KiB, about 970 samples, three).
    let _on = Profiling::on(16 * 1024);
    drop(std::hint::black_box(vec![0u8; 2 << 20]));
    let base = profile::summary().estimated_live_bytes;
    // 64 MiB kept, and 256 MiB allocated and freed around it.
    let mut kept = Vec::new();
    for _ in 0..16 {
        kept.push(leak_here(1024, 4000));
        drop(leak_here(4096, 4000));
    }
    let truth = 16 * 1024 * 4000;
    let s = assert_estimate_within_ten_percent(base, truth);
    // The estimate's own error is about 1.5 %.
    assert!(s.estimate_error_bytes < truth / 10, "{s:?}");
    drop(kept);
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn the_estimate_is_unbiased_for_sizes_between_classes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A class's countdown makes every allocation of it a candidate with the
    // probability of its class size (1,280 bytes here), and a candidate
    // that asked for less is kept with the ratio of the two probabilities.
    // Without that thinning, 1,025-byte blocks would be sampled as if they
    // were 1,280 bytes, and the estimate would be 25 % high. 16 KiB:
    // about 4,000 samples of what is kept, so 10 % is about six standard
    // deviations.
    let _on = Profiling::on(16 * 1024);
    drop(std::hint::black_box(vec![0u8; 2 << 20]));
    let base = profile::summary().estimated_live_bytes;
    let kept: Vec<_> = (0..16).map(|_| leak_here(4000, 1025)).collect();
    let truth = 16 * 4000 * 1025;
    assert_estimate_within_ten_percent(base, truth);
    drop(kept);
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn a_thread_already_allocating_is_sampled_once_profiling_starts() {
    unhardened_child(
        "child_a_thread_on_its_fast_path_is_sampled_after_start",
        "SAMPLED within 10 %",
    );
}

/// Runs child test `name` without hardened mode (on in test builds, it
/// keeps every operation off the fast paths these tests are about) and
/// checks that it passed and printed `marker`.
#[cfg(not(hugeguard_fallback))]
fn unhardened_child(name: &str, marker: &str) {
    // Every thread samples from its next allocation once profiling starts:
    // this one's would otherwise be live samples in the other tests' counts.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (ok, text) = hugeguard_testkit::child::run(name, &[("HUGEGUARD_HARDEN", "off")]);
    assert!(ok, "{text}");
    assert!(text.contains(marker), "{text}");
}

#[test]
#[ignore = "run in a child by a_thread_already_allocating_is_sampled_once_profiling_starts"]
#[cfg(not(hugeguard_fallback))]
fn child_a_thread_on_its_fast_path_is_sampled_after_start() {
    // The thread's cache is active and on its allocation fast path before
    // the start, which counts nothing while profiling is off: the start
    // must close that path in every cache, this one included.
    let (go, ready) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            for _ in 0..1000 {
                drop(std::hint::black_box(vec![1u8; 4000]));
            }
            ready.wait();
            go.wait();
            // 16 MiB kept in objects of the same class.
            leak_here(4096, 4000)
        });
        ready.wait();
        // 8 KiB: about 1,600 samples of the 16 MiB kept (one standard
        // deviation about 2 %, so 10 % is five); at 16 KiB it was about
        // 900 samples and three and a half deviations.
        let _on = Profiling::on(8 * 1024);
        let base = profile::summary().estimated_live_bytes;
        go.wait();
        let kept = worker.join().unwrap();
        let truth = 4096 * 4000;
        let est = profile::summary().estimated_live_bytes.saturating_sub(base);
        let off = (est as f64 - truth as f64).abs() / truth as f64;
        assert!(off < 0.10, "estimate {est} against {truth} kept");
        println!("SAMPLED within 10 %: {est} against {truth}");
        drop(kept);
    });
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn starting_and_stopping_keeps_the_objects_a_thread_has_cached() {
    unhardened_child(
        "child_start_and_stop_keep_the_cached_objects",
        "CACHED OBJECTS KEPT",
    );
}

#[test]
#[ignore = "run in a child by starting_and_stopping_keeps_the_objects_a_thread_has_cached"]
#[cfg(not(hugeguard_fallback))]
fn child_start_and_stop_keep_the_cached_objects() {
    // `start` and `stop` close every cache's allocation fast path, so the
    // next allocation of a class whose list still holds objects takes the
    // slow path: it must take one of them, not refill over the list (which
    // would lose every object on it: live bytes that nothing holds).
    hugeguard::set_background(false);
    let warm: Vec<Vec<u8>> = (0..200).map(|i| vec![i as u8; 64]).collect();
    drop(warm);
    let base = hugeguard::stats().live_bytes;
    for on in [true, false] {
        if on {
            assert!(profile::start());
        } else {
            profile::stop();
        }
        drop(std::hint::black_box(vec![1u8; 64]));
    }
    hugeguard::flush_caches();
    let after = hugeguard::stats().live_bytes;
    hugeguard::set_background(true);
    assert!(
        after <= base + 1024,
        "live bytes {after} after start, stop and a flush, against {base} before"
    );
    println!("CACHED OBJECTS KEPT: live {after} against {base}");
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn a_thread_freeing_on_its_fast_path_frees_samples_through_the_profile() {
    unhardened_child(
        "child_samples_freed_by_a_thread_on_its_free_fast_path",
        "ALL SAMPLES FREED",
    );
}

#[test]
#[ignore = "run in a child by a_thread_freeing_on_its_fast_path_frees_samples_through_the_profile"]
#[cfg(not(hugeguard_fallback))]
fn child_samples_freed_by_a_thread_on_its_free_fast_path() {
    // The worker's cache is on its free fast path, which skips the sampled
    // region's check while no sample can exist: the start must close it
    // before the first sample, or the worker's frees below would put the
    // samples in its cache and leave their records live.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Box<[u8]>>>(1);
    let ready = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let ready = &ready;
        let worker = s.spawn(move || {
            for _ in 0..1000 {
                drop(std::hint::black_box(vec![1u8; 100]));
            }
            ready.wait();
            let got = rx.recv().unwrap();
            let n = got.len();
            drop(got);
            n
        });
        ready.wait();
        let before = profile::summary().samples;
        let on = Profiling::on(1);
        drop(std::hint::black_box(vec![0u8; 2 << 20]));
        let blocks: Vec<Box<[u8]>> = (0..2000)
            .map(|i| vec![i as u8; 100].into_boxed_slice())
            .collect();
        let live = profile::summary().samples - before;
        assert!(live >= 1900, "only {live} of 2000 blocks sampled");
        tx.send(blocks).unwrap();
        assert_eq!(worker.join().unwrap(), 2000);
        drop(on);
        // The channel and the join may allocate (and keep) a block or two
        // of their own while every allocation is sampled: the 2,000 freed
        // blocks must all be gone.
        let after = profile::summary().samples;
        assert!(
            after - before <= 2,
            "{} samples still live after the worker freed them all",
            after - before
        );
        println!("ALL SAMPLES FREED: {live} sampled");
    });
}

#[test]
#[cfg(not(hugeguard_fallback))]
fn a_written_profile_is_in_the_heap_profile_format() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let on = Profiling::on(64 * 1024);
    drop(std::hint::black_box(vec![0u8; 2 << 20]));
    let kept = leak_here(2048, 4000);
    let dir = std::env::temp_dir().join(format!("hugeguard-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("heap.prof");
    profile::write(&path).unwrap();
    drop(on);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("heap profile: ") && header.ends_with(" @ heap_v2/65536"),
        "{header}"
    );
    let mut samples = 0;
    let mut bytes_4000 = 0;
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        // `n: bytes [n: bytes] @ 0x.. 0x..`
        let (n, bytes) =
            hugeguard_testkit::heap_profile::counts(line).unwrap_or_else(|| panic!("{line}"));
        let stack = line.split_once(" @ ").unwrap().1;
        assert!(stack.split(' ').all(|pc| pc.starts_with("0x")), "{line}");
        samples += n;
        if bytes == n * 4000 {
            bytes_4000 += n;
        }
    }
    assert_eq!(lines.next(), Some("MAPPED_LIBRARIES:"));
    assert!(text.contains("[stack]"), "the mappings follow");
    // 8 MB kept at a 64 KiB interval: about 125 samples of 4,000 bytes.
    assert!(
        bytes_4000 >= 60 && samples >= bytes_4000,
        "{samples} samples, {bytes_4000} of 4,000 B"
    );
    drop(kept);
}

#[test]
fn a_profile_needs_profiling_to_have_started_or_says_why() {
    // The fallback build has no profiling; the Linux heap writes an empty
    // profile once profiling has run, and refuses a path with a NUL byte.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for err in [
        profile::write("/tmp/a\0b").unwrap_err(),
        profile::write_pprof("/tmp/a\0b").unwrap_err(),
    ] {
        assert!(matches!(
            err.kind(),
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
        ));
    }
}

#[test]
#[cfg(hugeguard_fallback)]
fn the_fallback_build_has_no_profiling() {
    assert!(!profile::start());
    assert!(!profile::is_on());
    assert_eq!(profile::summary().samples, 0);
}
