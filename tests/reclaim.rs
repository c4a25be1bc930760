//! Taking other threads' caches back (`cache::reclaim`): a blocked thread's
//! cache is emptied without its help, and a thread that wakes up while its
//! cache is being taken neither loses nor duplicates an object.
//!
//! One process per file: `Stats` counts every thread of the process.

// The Linux heap's own behaviour (the fallback build forwards to `System`).
#![cfg(not(hugeguard_fallback))]

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

mod common;
use common::{intact, make};

#[test]
fn blocked_threads_caches_are_taken_and_waking_threads_stay_correct() {
    // Part 1: four threads fill their caches (free what they allocated),
    // then block. The background thread takes their caches within a few
    // of its scans; nothing is needed from them.
    let go = Arc::new(Barrier::new(5));
    let blocked: Vec<_> = (0..4)
        .map(|t| {
            let go = go.clone();
            thread::spawn(move || {
                let v: Vec<Box<[u64; 6]>> = (0..3000).map(|i| Box::new([t + i; 6])).collect();
                drop(v);
                let s: Vec<String> = (0..500).map(|i| format!("{t}-{i}")).collect();
                drop(s);
                go.wait(); // cached
                go.wait(); // checked: exit
            })
        })
        .collect();
    go.wait();
    let cached = hugeguard::stats().thread_cache_bytes;
    assert!(cached > 4 * 8 * 1024, "caches hold {cached} bytes");
    let t0 = Instant::now();
    let mut now = cached;
    while now > cached / 4 && t0.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
        now = hugeguard::stats().thread_cache_bytes;
    }
    println!(
        "blocked threads: {cached} bytes cached, {now} after {:?}",
        t0.elapsed()
    );
    assert!(
        now <= cached / 4,
        "blocked threads still hold {now} of {cached} bytes"
    );
    go.wait();
    for t in blocked {
        t.join().unwrap();
    }

    // Part 2: threads alternate bursts and short sleeps while this thread
    // takes every cache it can, as often as it can. Blocks carry cookies
    // and move between threads.
    let before = hugeguard::stats().thread_cache_reclaimed_bytes;
    let end = Instant::now() + Duration::from_millis(1500);
    let workers: Vec<_> = (0..3u64)
        .map(|t| {
            thread::spawn(move || {
                let mut live: Vec<(u64, Vec<u8>)> = Vec::new();
                let (mut id, mut bad, mut rounds) = (t << 40, 0u64, 0u64);
                while Instant::now() < end {
                    rounds += 1;
                    for k in 0..(50 + rounds % 300) {
                        id += 1;
                        let size = match k % 8 {
                            0..=5 => 8 + (id as usize % 200),
                            6 => 200 + (id as usize % 3000),
                            _ => 3000 + (id as usize % 30_000),
                        };
                        live.push(make(id, size));
                    }
                    // Free most, in an order that differs every round.
                    let keep = live.len() / 4;
                    while live.len() > keep {
                        let i = (id as usize).wrapping_mul(31 + rounds as usize) % live.len();
                        let b = live.swap_remove(i);
                        bad += u64::from(!intact(&b));
                        id += 1;
                    }
                    thread::sleep(Duration::from_micros(id % 400));
                }
                bad += live.iter().filter(|b| !intact(b)).count() as u64;
                (bad, rounds)
            })
        })
        .collect();
    let mut takes = 0;
    while Instant::now() < end {
        hugeguard::release_now();
        takes += 1;
    }
    let mut rounds = 0;
    for w in workers {
        let (bad, r) = w.join().unwrap();
        assert_eq!(bad, 0, "corrupted blocks");
        rounds += r;
    }
    let taken = hugeguard::stats().thread_cache_reclaimed_bytes - before;
    println!("{takes} release_now calls, {rounds} worker rounds, {taken} bytes taken from caches");
    assert!(taken > 0, "no cache was taken while the workers ran");
    hugeguard::check_invariants().unwrap();
}
