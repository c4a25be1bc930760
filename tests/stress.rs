//! Threads allocate blocks, write a per-block cookie, hand them to other
//! threads, which verify and free them; threads are recreated. It runs in a
//! child process with `HUGEGUARD_HOLDBACK_MS=0`, so the background thread
//! releases memory as aggressively as it can while the threads work: any
//! page released under a live object, or any object handed out twice,
//! shows up as a broken cookie.
//!
//! `HUGEGUARD_STRESS_SECS` sets the length (default 3 s; run longer by hand).

use hugeguard_testkit::child;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

const CHILD_ENV: &str = "HUGEGUARD_TEST_STRESS_CHILD";

mod common;
use common::{intact as check, make};

fn stress(secs: u64) -> (u64, u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut checked = 0;
    let mut bad = 0;
    let mut generation = 0u64;
    while Instant::now() < end {
        generation += 1;
        let (tx, rx) = mpsc::sync_channel::<Vec<(u64, Vec<u8>)>>(8);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let producers: Vec<_> = (0..3u64)
            .map(|t| {
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut id = (generation << 32) | (t << 24);
                    for round in 0..40usize {
                        let batch: Vec<_> = (0..200usize)
                            .map(|k| {
                                id += 1;
                                let size = match (k + round) % 10 {
                                    0..=6 => 8 + (id as usize % 250),
                                    7 | 8 => 256 + (id as usize % 4000),
                                    _ => 4096 + (id as usize % 70_000),
                                };
                                make(id, size)
                            })
                            .collect();
                        if tx.send(batch).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    let (mut ok, mut bad) = (0u64, 0u64);
                    // Keep some blocks a while so pages stay partly used.
                    let mut keep: Vec<(u64, Vec<u8>)> = Vec::new();
                    loop {
                        let batch = match rx.lock().unwrap().recv() {
                            Ok(b) => b,
                            Err(_) => break,
                        };
                        for b in batch {
                            if check(&b) {
                                ok += 1
                            } else {
                                bad += 1
                            }
                            if b.0 % 16 == 0 {
                                keep.push(b);
                            }
                        }
                        if keep.len() > 300 {
                            for b in keep.drain(..150) {
                                if check(&b) {
                                    ok += 1
                                } else {
                                    bad += 1
                                }
                            }
                        }
                    }
                    for b in keep {
                        if check(&b) {
                            ok += 1
                        } else {
                            bad += 1
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        for c in consumers {
            let (o, b) = c.join().unwrap();
            checked += o;
            bad += b;
        }
        // Let the background thread release between generations.
        thread::sleep(Duration::from_millis(50));
    }
    (checked, bad)
}

#[test]
#[ignore]
fn stress_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let secs = std::env::var("HUGEGUARD_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (checked, bad) = stress(secs);
    let s = hugeguard::stats();
    println!(
        "STRESS checked={checked} bad={bad} released={} dontneed={}",
        s.released_bytes, s.advice.dontneed_calls
    );
}

#[test]
fn threads_exchange_cookie_checked_blocks_under_aggressive_release() {
    let out = hugeguard_testkit::child::command("stress_child")
        .env(CHILD_ENV, "1")
        .env("HUGEGUARD_HOLDBACK_MS", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = child::report_line(&text, "STRESS").expect("no STRESS line");
    println!("{line}");
    let field = |k: &str| -> u64 {
        child::field(line, k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(field("bad"), 0, "corrupted blocks");
    assert!(field("checked") > 10_000);
    // The fallback build forwards to `System`: no release of ours.
    assert!(
        field("dontneed") > 0 || cfg!(hugeguard_fallback),
        "the release never ran during the stress"
    );
}
