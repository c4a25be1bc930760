//! hugeguard against the real kernel's limits, one case per argument; run
//! by `scripts/kernel/kernel_limits.py`, which sets and restores the system
//! settings (`vm.max_map_count`, a cgroup) around it. Each case prints one
//! `RESULT key=value ...` line and exits 0 when the allocator behaved.
//!
//! * `vma ROUNDS MB`: a fragmenting workload (every huge page keeps a few live
//!   objects, so every release marks part of the heap `MADV_NOHUGEPAGE` and
//!   splits its mapping) until marking degrades on `ENOMEM`; checks every
//!   kept object and that the process keeps allocating.
//! * `forks N`: 8 threads allocate and free without pause while the main
//!   thread forks N times; each child allocates, checks and exits; a child
//!   that does not exit within 10 s is a deadlock.
//! * `oom`: run under `ulimit -v` (`RLIMIT_AS`, set by the caller before
//!   the allocator reserves its heap): `Vec::try_reserve` of ever larger
//!   sizes until it fails; checks the error comes back (no abort) and that
//!   the allocator still serves small and large blocks afterwards.
//! * `touch MB`: allocates and writes MB of memory in 16 MiB blocks (for a
//!   cgroup memory limit: the kernel answers with the OOM killer, not with
//!   a failed allocation).
//! * `hold MB KEEP SECS`: allocates and writes MB in 1 MiB blocks, frees
//!   all but KEEP of them (held back for the hold-back the caller sets),
//!   prints `held`, then samples RSS every 100 ms for SECS: when it first
//!   fell below KEEP + 16 MB, and the memory-pressure events seen.
//! * `squeeze MB ROUNDS`: writes every page of MB, ROUNDS times (in a
//!   memory cgroup smaller than MB, with swap: memory stalls, which raise
//!   the kernel's memory pressure).

use std::collections::TryReserveError;
use std::io::Write;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn vmas() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

fn rss_mb() -> f64 {
    hugeguard_bench::batch::rss_of(std::process::id()) as f64 / 1e6
}

/// Fragments the heap round after round: `mb` MiB of 200-byte objects; in
/// every other huge page 1 object in 512 is kept, all the rest is freed,
/// then a forced release. Each round's survivors pin new huge pages, so the
/// marked and unmarked ranges, and the mappings they split, keep growing.
fn vma(rounds: usize, mb: usize) -> bool {
    let mut s = 0x2545f4914f6cdd1du64;
    let mut kept: Vec<(Box<[u8]>, u8)> = Vec::new();
    let mut degraded_at = None;
    let mut peak_vmas = 0;
    for round in 0..rounds {
        let batch: Vec<Box<[u8]>> = (0..(mb << 20) / 208)
            .map(|i| vec![(i % 251) as u8; 200].into_boxed_slice())
            .collect();
        for (i, b) in batch.into_iter().enumerate() {
            // Survivors only in every other huge page: those are released
            // in part and marked, their neighbours released whole and left
            // unmarked, so each marked range is a mapping of its own.
            let even = (b.as_ptr() as usize >> 21) % 2 == 0;
            if even && rng(&mut s) % 512 == 0 {
                kept.push((b, (i % 251) as u8));
            }
        }
        hugeguard::release_now();
        peak_vmas = peak_vmas.max(vmas());
        let st = hugeguard::stats();
        if st.advice.marking_degraded && degraded_at.is_none() {
            degraded_at = Some(round);
        }
        println!(
            "round {round}: VMAs {}, RSS {:.0} MB, kept {}, marking degraded {}, madvise: {} NOHUGEPAGE, {} DONTNEED, {} failed; huge pages partial {}, released {}",
            vmas(),
            rss_mb(),
            kept.len(),
            st.advice.marking_degraded,
            st.advice.nohugepage_calls,
            st.advice.dontneed_calls,
            st.advice.advise_failures,
            st.partial_huge_pages,
            st.released_huge_pages
        );
        let _ = std::io::stdout().flush();
    }
    let intact = kept.iter().all(|(b, t)| b.iter().all(|x| x == t));
    // The allocator still works: a fresh batch, checked.
    let after: Vec<Vec<u64>> = (0..10_000).map(|i| vec![i; 64]).collect();
    let usable = after
        .iter()
        .enumerate()
        .all(|(i, v)| v.iter().all(|&x| x == i as u64));
    println!(
        "RESULT case=vma rounds={rounds} peak_vmas={peak_vmas} degraded_at={} kept={} intact={intact} usable={usable} rss_mb={:.0}",
        degraded_at.map_or("never".to_string(), |r| r.to_string()),
        kept.len(),
        rss_mb()
    );
    intact && usable
}

fn forks(n: usize) -> bool {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (stop, ops) = (stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut s = 0x9e3779b97f4a7c15u64 ^ t;
                let mut live: Vec<Vec<u8>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = rng(&mut s);
                    if live.len() < 2000 && r % 3 != 0 {
                        live.push(vec![r as u8; 16 + (r >> 8) as usize % 4000]);
                    } else if !live.is_empty() {
                        let v = live.swap_remove((r >> 16) as usize % live.len());
                        assert!(v.iter().all(|&x| x == v[0]), "worker block corrupted");
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    let (mut ok, mut hung, mut failed) = (0, 0, 0);
    for _ in 0..n {
        // SAFETY: the child only allocates, checks and calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let v: Vec<Vec<u32>> = (0..2000u32)
                .map(|i| vec![i; 1 + i as usize % 300])
                .collect();
            let good = v
                .iter()
                .enumerate()
                .all(|(i, b)| b.iter().all(|&x| x == i as u32));
            drop(v);
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(if good { 0 } else { 3 }) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut status = 0;
            // SAFETY: `pid` is our child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    ok += 1;
                } else {
                    failed += 1;
                }
                break;
            }
            if Instant::now() > deadline {
                hung += 1;
                // SAFETY: our child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // SAFETY: reap it.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker panicked");
    }
    println!(
        "RESULT case=forks forks={n} ok={ok} failed={failed} hung={hung} secs={:.1} worker_ops={}",
        start.elapsed().as_secs_f64(),
        ops.load(Ordering::Relaxed)
    );
    ok == n
}

fn oom() -> bool {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) };
    let mb = if rl.rlim_cur == libc::RLIM_INFINITY {
        0
    } else {
        (rl.rlim_cur >> 20) as usize
    };
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut first_error: Option<(usize, TryReserveError)> = None;
    let mut size = 1usize << 20;
    let mut granted = 0usize;
    // Grow until a reservation fails; keep what was granted (touched), so
    // the failure is real exhaustion of the address space.
    while first_error.is_none() && size <= 1 << 40 {
        let mut v: Vec<u8> = Vec::new();
        match v.try_reserve_exact(size) {
            Ok(()) => {
                v.resize(size.min(1 << 16), 7);
                granted += size;
                held.push(v);
                size *= 2;
            }
            Err(e) => first_error = Some((size, e)),
        }
    }
    let Some((failed_size, err)) = first_error else {
        println!(
            "RESULT case=oom error=never_failed granted_mb={}",
            granted >> 20
        );
        return false;
    };
    // Smaller reservations still succeed up to the limit; then the
    // allocator must still serve ordinary requests once memory is freed.
    let mut small_ok = 0;
    for _ in 0..64 {
        let mut v: Vec<u8> = Vec::new();
        if v.try_reserve_exact(failed_size / 8).is_ok() {
            small_ok += 1;
            held.push(v);
        } else {
            break;
        }
    }
    drop(held);
    hugeguard::release_now();
    let boxes: Vec<Box<[u64; 32]>> = (0..100_000).map(|i| Box::new([i; 32])).collect();
    let usable_small = boxes
        .iter()
        .enumerate()
        .all(|(i, b)| b.iter().all(|&x| x == i as u64));
    let big = vec![9u8; 8 << 20];
    let usable_large = big.iter().all(|&x| x == 9);
    println!(
        "RESULT case=oom limit_mb={mb} granted_mb={} failed_at_mb={} error=\"{err}\" smaller_after={small_ok} usable_small={usable_small} usable_large={usable_large} os_refusals={}",
        granted >> 20,
        failed_size >> 20,
        hugeguard::stats().os_refusals
    );
    usable_small && usable_large
}

fn touch(mb: usize) -> bool {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for i in 0..mb / 16 {
        let mut v: Vec<u8> = Vec::new();
        if v.try_reserve_exact(16 << 20).is_err() {
            println!("RESULT case=touch refused_after_mb={}", i * 16);
            return true;
        }
        v.resize(16 << 20, i as u8);
        held.push(v);
        if i % 16 == 0 {
            println!("touched {} MB, RSS {:.0} MB", (i + 1) * 16, rss_mb());
            let _ = std::io::stdout().flush();
        }
    }
    println!("RESULT case=touch touched_mb={mb}");
    true
}

fn hold(mb: usize, keep: usize, secs: u64) -> bool {
    let mut blocks: Vec<Vec<u8>> = (0..mb).map(|i| vec![i as u8 | 1; 1 << 20]).collect();
    let peak = rss_mb();
    blocks.truncate(keep);
    let start = Instant::now();
    println!("held peak_rss_mb={peak:.0}");
    let _ = std::io::stdout().flush();
    let mut below_ms = None;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(100));
        if below_ms.is_none() && rss_mb() < (keep + 16) as f64 {
            below_ms = Some(start.elapsed().as_millis());
        }
    }
    let s = hugeguard::stats();
    let intact = blocks
        .iter()
        .enumerate()
        .all(|(i, b)| b.iter().all(|&x| x == (i as u8 | 1)));
    println!(
        "RESULT case=hold peak_rss_mb={peak:.0} end_rss_mb={:.0} below_ms={} pressure_watched={} pressure_events={} intact={intact}",
        rss_mb(),
        below_ms.map_or("never".to_string(), |m| m.to_string()),
        s.pressure_watched,
        s.pressure_events
    );
    intact
}

fn squeeze(mb: usize, rounds: usize) -> bool {
    let mut v = vec![0u8; mb << 20];
    let start = Instant::now();
    for r in 0..rounds {
        for i in (0..v.len()).step_by(4096) {
            v[i] = r as u8 + 1;
        }
    }
    println!(
        "RESULT case=squeeze mb={mb} rounds={rounds} secs={:.2}",
        start.elapsed().as_secs_f64()
    );
    true
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let ok = match args.get(1).map(String::as_str) {
        Some("vma") => vma(n(2, 3), n(3, 4096)),
        Some("forks") => forks(n(2, 1000)),
        Some("oom") => oom(),
        Some("touch") => touch(n(2, 1024)),
        Some("hold") => hold(n(2, 512), n(3, 8), n(4, 8) as u64),
        Some("squeeze") => squeeze(n(2, 128), n(3, 3)),
        _ => {
            eprintln!(
                "usage: limits vma [ROUNDS [MB]] | forks [N] | oom | touch [MB] | hold [MB [KEEP [SECS]]] | squeeze [MB [ROUNDS]]"
            );
            false
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}
