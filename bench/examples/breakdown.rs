//! The RSS breakdown (`hugeguard::rss_breakdown`) through two scenarios,
//! in this process with hugeguard as the global allocator: does what the
//! parts say add up to the measured RSS?
//!
//! ```sh
//! cargo run --release -p hugeguard-bench --example breakdown   # about 1 minute
//! ```
//!
//! - **batch**: one thread fills 1 GiB of mixed objects (16 B to 64 KiB),
//!   keeps 1 in 64 and frees the rest, then the process goes idle.
//! - **pool**: 4 worker threads fill 256 MiB each, each frees the objects
//!   of the next worker (cross-thread), keeping 1 in 64, then all of them
//!   block, alive, while the process goes idle.
//!
//! For each point it prints the parts, their sum against the RSS, and the
//! difference (`unaccounted_bytes`). The service scenario's figures come
//! from `examples/service.rs` (its `/metrics`). docs/PROFILE.md records
//! the results.

use hugeguard_bench::batch::{mixed_size, Rng};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

const KEEP_ONE_IN: u64 = 64;

fn fill(rng: &mut Rng, total: usize) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut sum = 0;
    while sum < total {
        let size = mixed_size(rng);
        v.push(vec![(sum % 251) as u8 | 1; size]);
        sum += size;
    }
    v
}

fn mib(b: usize) -> f64 {
    b as f64 / 1048576.0
}

fn row(scenario: &str, point: &str) {
    let b = hugeguard::rss_breakdown();
    let err = (b.explained_bytes() as f64 - b.rss_bytes as f64) / b.rss_bytes as f64 * 100.0;
    let estimate = if b.profile.on {
        format!(
            "{:.1} +- {:.1}",
            mib(b.profile.estimated_live_bytes),
            mib(b.profile.estimate_error_bytes)
        )
    } else {
        "-".to_string()
    };
    println!(
        "| {scenario} | {point} | {:.1} | {:.1} | {estimate} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.2} % |",
        mib(b.rss_bytes),
        mib(b.live_bytes),
        mib(b.cached_bytes),
        mib(b.span_free_bytes),
        mib(b.held_back_bytes),
        mib(b.metadata_bytes),
        mib(b.profile_bytes),
        mib(b.outside_heap_bytes),
        mib(b.explained_bytes()),
        err
    );
    if std::env::var_os("BREAKDOWN_SHOW").is_some() {
        eprintln!("{scenario}, {point}:\n{b}\n");
    }
}

/// Waits until the background thread has given back what it will (held-back
/// pages and idle threads' caches), at most `limit`.
fn wait_idle(limit: Duration) {
    let start = Instant::now();
    let mut last = hugeguard::rss_breakdown().rss_bytes;
    let mut still = 0;
    while start.elapsed() < limit && still < 4 {
        std::thread::sleep(Duration::from_millis(500));
        let b = hugeguard::rss_breakdown();
        still = if b.rss_bytes.abs_diff(last) < 256 << 10 && b.held_back_bytes == 0 {
            still + 1
        } else {
            0
        };
        last = b.rss_bytes;
    }
}

fn batch() {
    let mut rng = Rng::new(7);
    row("batch", "start");
    let all = fill(&mut rng, 1 << 30);
    row("batch", "peak (1 GiB live)");
    let kept: Vec<Vec<u8>> = all
        .into_iter()
        .filter(|_| rng.next_u64() % KEEP_ONE_IN == 0)
        .collect();
    row("batch", "freed (1 in 64 kept)");
    wait_idle(Duration::from_secs(30));
    row("batch", "idle");
    drop(kept);
    hugeguard::release_now();
}

fn pool() {
    const THREADS: usize = 4;
    let peak = Arc::new(Barrier::new(THREADS + 1));
    let go = Arc::new(Barrier::new(THREADS + 1));
    let handed = Arc::new(Barrier::new(THREADS));
    let freed = Arc::new(Barrier::new(THREADS + 1));
    let quit = Arc::new((Mutex::new(false), Condvar::new()));
    let slots: Arc<Vec<Mutex<Vec<Vec<u8>>>>> =
        Arc::new((0..THREADS).map(|_| Mutex::new(Vec::new())).collect());
    let kept: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let hs: Vec<_> = (0..THREADS)
        .map(|i| {
            let (peak, go, handed, freed) =
                (peak.clone(), go.clone(), handed.clone(), freed.clone());
            let quit = quit.clone();
            let (slots, kept) = (slots.clone(), kept.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + i as u64);
                *slots[i].lock().unwrap() = fill(&mut rng, 256 << 20);
                handed.wait();
                peak.wait();
                // The main thread measures the peak before any free.
                go.wait();
                // Free the next worker's objects, keeping 1 in 64.
                let theirs = std::mem::take(&mut *slots[(i + 1) % THREADS].lock().unwrap());
                let mine: Vec<Vec<u8>> = theirs
                    .into_iter()
                    .filter(|_| rng.next_u64() % KEEP_ONE_IN == 0)
                    .collect();
                kept.lock().unwrap().extend(mine);
                freed.wait();
                let (m, c) = &*quit;
                let mut q = m.lock().unwrap();
                while !*q {
                    q = c.wait(q).unwrap();
                }
            })
        })
        .collect();
    peak.wait();
    row("pool", "peak (4 x 256 MiB live)");
    go.wait();
    freed.wait();
    row("pool", "freed (1 in 64 kept)");
    wait_idle(Duration::from_secs(30));
    row("pool", "idle (workers blocked)");
    *quit.0.lock().unwrap() = true;
    quit.1.notify_all();
    for h in hs {
        h.join().unwrap();
    }
    drop(kept);
}

fn main() {
    println!("| scenario | point | RSS (MiB) | live | profile's estimate of live | caches | free in spans | held back | metadata | profile | outside heap | parts' sum | sum - RSS |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    batch();
    pool();
}
