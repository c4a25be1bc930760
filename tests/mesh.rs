//! Meshing for real (`HUGEGUARD_MESH=on`), in child processes so the
//! setting applies from the first allocation: sparse spans are merged, the
//! memory they held goes back to the OS, every surviving object keeps its
//! bytes through its own address, writes after meshing land, frees and
//! new allocations stay correct, and a forked child gets a heap of its own.
//! Where userfaultfd may not hold back every write (not root, and
//! `vm.unprivileged_userfaultfd=0`), mesh mode does no meshing; the tests
//! then check that it said so and that nothing was meshed.

// The Linux heap's own behaviour (the fallback build forwards to `System`).
#![cfg(not(hugeguard_fallback))]

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

/// Runs the ignored test `name` of this binary with mesh mode on; its
/// standard output and error.
fn child(name: &str) -> String {
    let (ok, text) = hugeguard_testkit::child::run(
        name,
        &[("HUGEGUARD_MESH", "on"), ("HUGEGUARD_HOLDBACK_MS", "100")],
    );
    assert!(ok, "{name} failed:\n{text}");
    text
}

use hugeguard_testkit::meshing_possible;
use hugeguard_testkit::procfs::rss;

/// The numbers that follow `marker` on the first line of `text` holding
/// it, up to the first word that is not a number (panics without one).
fn numbers_after(text: &str, marker: &str) -> Vec<usize> {
    let rest = text
        .lines()
        .find_map(|l| l.split(marker).nth(1))
        .unwrap_or_else(|| panic!("no {marker:?} line:\n{text}"));
    let v: Vec<usize> = rest
        .split_whitespace()
        .map_while(|w| w.parse().ok())
        .collect();
    assert!(!v.is_empty(), "no number after {marker:?}:\n{text}");
    v
}

/// A record's bytes: `i` everywhere but the first and last byte.
fn pattern(i: usize, size: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; size];
    v[0] = (i >> 8) as u8;
    v[size - 1] = (i >> 16) as u8;
    v
}

#[test]
fn sparse_spans_are_meshed_and_every_object_keeps_its_bytes() {
    let text = child("child_mesh");
    println!("{text}");
    if !meshing_possible() {
        assert!(text.contains("no meshing"), "{text}");
        return;
    }
    let v = numbers_after(&text, "MESHED ");
    let (units, punched, before, after) = (v[0], v[1], v[2], v[3]);
    assert!(units > 100, "{units} units meshed");
    // The RSS drops by most of what was punched out.
    assert!(
        before - after > punched / 2,
        "rss {before} -> {after}, punched {punched}"
    );
}

#[test]
#[ignore = "run by sparse_spans_are_meshed_and_every_object_keeps_its_bytes"]
fn child_mesh() {
    let sizes = [24usize, 48, 64, 80, 128, 256];
    let all: Vec<Vec<u8>> = (0..120_000)
        .map(|i| pattern(i, sizes[i % sizes.len()]))
        .collect();
    // Keep one in 29 (a stride that is no multiple of any span's slots).
    let mut kept: Vec<(usize, Vec<u8>)> = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 29 == 0)
        .collect();
    hugeguard::release_now();
    let before = rss();
    let m = hugeguard::mesh_now();
    let after = rss();
    println!(
        "MESHED {} {} {} {}",
        m.meshed_units, m.punched_bytes, before, after
    );
    for (i, v) in &kept {
        assert_eq!(v[..], pattern(*i, v.len())[..], "object {i} changed");
    }
    // Writes through meshed addresses land and stay apart.
    for (i, v) in kept.iter_mut() {
        v.iter_mut().for_each(|b| *b = b.wrapping_add(1));
        v[0] = (*i % 256) as u8;
    }
    for (i, v) in &kept {
        let mut want = pattern(*i, v.len());
        want.iter_mut().for_each(|b| *b = b.wrapping_add(1));
        want[0] = (*i % 256) as u8;
        assert_eq!(v[..], want[..], "object {i} after writing");
    }
    // New objects (never in frozen spans) and frees of meshed ones.
    let fresh: Vec<Vec<u8>> = (0..20_000).map(|i| pattern(i, 64)).collect();
    let half = kept.len() / 2;
    kept.truncate(half);
    // The 64-byte class needed new spans while some of its spans were
    // frozen: the round thaws its units (copying each member back to its
    // own pages) before it meshes anything else.
    let again = hugeguard::mesh_now();
    println!("AGAIN {} {}", again.meshed_units, again.unmeshed_units);
    if m.meshed_units > 0 {
        assert!(again.unmeshed_units > 0, "nothing thawed");
    }
    for (i, v) in &kept {
        let mut want = pattern(*i, v.len());
        want.iter_mut().for_each(|b| *b = b.wrapping_add(1));
        want[0] = (*i % 256) as u8;
        assert_eq!(v[..], want[..], "object {i} after thawing");
    }
    for (i, v) in fresh.iter().enumerate() {
        assert_eq!(v[..], pattern(i, 64)[..]);
    }
    drop(kept);
    let last = hugeguard::mesh_now();
    println!("LAST {} {}", last.meshed_units, last.unmeshed_units);
    if m.meshed_units > 0 {
        assert!(last.unmeshed_units + again.unmeshed_units > 0);
    }
    hugeguard::check_invariants().unwrap();
}

#[test]
fn a_child_forked_from_a_meshed_heap_has_a_heap_of_its_own() {
    let text = child("child_fork");
    println!("{text}");
    assert!(text.contains("FORK OK"), "{text}");
    if meshing_possible() {
        let units = numbers_after(&text, "FORKMESHED ")[0];
        assert!(units > 0, "nothing was meshed before the fork");
    }
}

/// Writes one byte to `fd`, then reads one from `rd` (a handshake).
fn say_then_wait(fd: i32, rd: i32) {
    let b = [1u8];
    let mut r = [0u8];
    // SAFETY: pipe ends of this process; one-byte buffers.
    unsafe {
        assert_eq!(libc::write(fd, b.as_ptr().cast(), 1), 1);
        if rd >= 0 {
            assert_eq!(libc::read(rd, r.as_mut_ptr().cast(), 1), 1);
        }
    }
}

#[test]
#[ignore = "run by a_child_forked_from_a_meshed_heap_has_a_heap_of_its_own"]
fn child_fork() {
    let all: Vec<Vec<u8>> = (0..60_000).map(|i| pattern(i, 48 + i % 3 * 16)).collect();
    let mut kept: Vec<(usize, Vec<u8>)> = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 29 == 0)
        .collect();
    let m = hugeguard::mesh_now();
    println!("FORKMESHED {}", m.meshed_units);
    let (mut to_child, mut to_parent) = ([0i32; 2], [0i32; 2]);
    // SAFETY: two-element arrays for the pipes' ends.
    unsafe {
        assert_eq!(libc::pipe(to_child.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(to_parent.as_mut_ptr()), 0);
    }
    // SAFETY: the child only touches memory it owns, allocates through
    // hugeguard (whose fork handlers reset its locks), and leaves with
    // `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok_before = kept.iter().all(|(i, v)| v[..] == pattern(*i, v.len())[..]);
        for (_, v) in kept.iter_mut() {
            v[1] ^= 0xff;
        }
        let fresh: Vec<Box<[u8; 64]>> = (0..5_000).map(|i| Box::new([i as u8; 64])).collect();
        say_then_wait(to_parent[1], to_child[0]);
        // The parent has written its own change by now: not seen here.
        let ok_after = kept.iter().all(|(i, v)| {
            let mut want = pattern(*i, v.len());
            want[1] ^= 0xff;
            v[..] == want[..]
        });
        let ok_fresh = fresh.iter().enumerate().all(|(i, b)| b[63] == i as u8);
        let code = if ok_before && ok_after && ok_fresh {
            0
        } else {
            1
        };
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut r = [0u8];
    // SAFETY: our pipe end; a one-byte buffer.
    assert_eq!(
        unsafe { libc::read(to_parent[0], r.as_mut_ptr().cast(), 1) },
        1
    );
    // The child has written its change: not seen here.
    for (i, v) in &kept {
        assert_eq!(
            v[..],
            pattern(*i, v.len())[..],
            "the child's write showed in the parent"
        );
    }
    for (_, v) in kept.iter_mut() {
        v[2] ^= 0x55;
    }
    say_then_wait(to_child[1], -1);
    let mut status = 0;
    // SAFETY: our child; a status word.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child saw the parent's writes or lost its objects (status {status})"
    );
    for (i, v) in &kept {
        let mut want = pattern(*i, v.len());
        want[2] ^= 0x55;
        assert_eq!(v[..], want[..]);
    }
    println!("FORK OK");
    hugeguard::check_invariants().unwrap();
}

#[test]
fn writes_while_meshing_are_never_lost() {
    let text = child("child_concurrent");
    println!("{text}");
    assert!(text.contains("CONCURRENT OK"), "{text}");
    if meshing_possible() {
        let units = numbers_after(&text, "CONCURRENT OK ")[0];
        assert!(units > 0, "nothing was meshed while the writers ran");
    }
}

#[test]
#[ignore = "run by writes_while_meshing_are_never_lost"]
fn child_concurrent() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Survivors of a batch: counters bumped by two threads, and buffers the
    // kernel writes into (`pread`), while the main thread meshes again and
    // again, unmeshes what it frees, and makes new sparse spans.
    let all: Vec<Box<[u64; 6]>> = (0..150_000).map(|i| Box::new([i as u64; 6])).collect();
    let kept: Vec<Box<[u64; 6]>> = all.into_iter().step_by(29).collect();
    let bufs: Vec<Vec<u8>> = (0..60_000).map(|i| vec![i as u8; 40]).collect();
    let mut bufs: Vec<Vec<u8>> = bufs.into_iter().step_by(31).collect();
    let mut file = tempfile_with(&[[0xA5u8; 40], [0x5A; 40]].concat());
    file.flush().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The kernel writes into survivors (meshed ones among them) while the
    // main thread meshes: `pread` into a page being meshed must wait, not
    // fail with EFAULT or land in the old page.
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut reads, mut lost) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) || reads < bufs.len() {
                // Each pass reads the other pattern, and checks it at once.
                let (at, want) = if reads / bufs.len() % 2 == 0 {
                    (0, 0xA5)
                } else {
                    (40, 0x5A)
                };
                for buf in bufs.iter_mut() {
                    file.read_exact_at(buf, at).unwrap();
                    lost += buf.iter().any(|&x| x != want) as usize;
                    reads += 1;
                }
            }
            (lost == 0, reads)
        })
    };
    let (a, b) = kept.split_at(kept.len() / 2);
    let halves = [a.to_vec(), b.to_vec()];
    drop(kept);
    let workers: Vec<_> = halves
        .into_iter()
        .map(|mut mine| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) || rounds < 50 {
                    for o in mine.iter_mut() {
                        o[1] += 1;
                        o[5] = o[0] ^ o[1];
                    }
                    rounds += 1;
                }
                let ok = mine
                    .iter()
                    .all(|o| o[1] == o[0] + rounds && o[5] == o[0] ^ o[1]);
                (ok, rounds)
            })
        })
        .collect();
    let mut units = 0;
    for _ in 0..40 {
        let m = hugeguard::mesh_now();
        units += m.meshed_units;
        // New sparse spans for the next round.
        let more: Vec<Box<[u8; 48]>> = (0..20_000).map(|i| Box::new([i as u8; 48])).collect();
        let keep: Vec<_> = more.into_iter().step_by(37).collect();
        std::mem::forget(keep);
    }
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(bool, u64)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(results.iter().all(|r| r.0), "a write was lost: {results:?}");
    let (read_ok, reads) = reader.join().unwrap();
    assert!(read_ok, "a read(2) into a survivor was lost");
    println!(
        "CONCURRENT OK {units} units meshed, {reads} reads, rounds {:?}",
        results.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    hugeguard::check_invariants().unwrap();
}

/// A temporary file holding `bytes` (removed when the process ends).
fn tempfile_with(bytes: &[u8]) -> std::fs::File {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("hugeguard-mesh-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(bytes).unwrap();
    let _ = std::fs::remove_file(&path);
    f
}
