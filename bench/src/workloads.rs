//! The benchmark suite's workloads, compiled into one worker binary per
//! allocator (`bench/examples/suite_worker_*.rs`, each with its own
//! `#[global_allocator]`). A worker runs one workload, given as its first
//! argument, and prints one `RESULT key=value ...` line; the driver
//! (`bench/examples/suite.rs`) measures its peak RSS from outside.
//!
//! `SUITE_SCALE` (default 1.0) scales every workload's operation count.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::batch;

/// A small deterministic random generator.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn scale() -> f64 {
    std::env::var("SUITE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

const THREADS: usize = 2;

/// larson: threads replace random slots of a shared array of objects
/// (8-1000 B); the object freed was usually allocated by another thread.
fn larson() -> usize {
    const SLOTS: usize = 8192;
    let slots: Arc<Vec<AtomicPtr<u8>>> = Arc::new(
        (0..SLOTS)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect(),
    );
    let ops = scaled(2_000_000);
    let hs: Vec<_> = (0..THREADS)
        .map(|t| {
            let slots = slots.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(t as u64 + 1);
                for _ in 0..ops / THREADS {
                    let size = 8 + rng.below(993);
                    let b: Box<[u8]> = vec![size as u8; size].into_boxed_slice();
                    let p = Box::into_raw(b) as *mut u8;
                    let old = slots[rng.below(SLOTS)].swap(encode(p, size), Ordering::AcqRel);
                    free_encoded(old);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    for s in slots.iter() {
        free_encoded(s.swap(std::ptr::null_mut(), Ordering::AcqRel));
    }
    ops
}

// Objects in the larson array carry their size in a 16-byte header.
fn encode(p: *mut u8, size: usize) -> *mut u8 {
    Box::into_raw(Box::new((p as usize, size))) as *mut u8
}

fn free_encoded(h: *mut u8) {
    if h.is_null() {
        return;
    }
    // SAFETY: `h` came from `encode` and is freed once.
    unsafe {
        let hdr = Box::from_raw(h as *mut (usize, usize));
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            hdr.0 as *mut u8,
            hdr.1,
        )));
    }
}

/// xmalloc: one thread allocates batches, another frees them; batches pass
/// through a queue.
fn xmalloc() -> usize {
    let batches = scaled(20_000);
    let (tx, rx) = mpsc::sync_channel::<Vec<Box<[u8; 64]>>>(64);
    let consumer = thread::spawn(move || {
        let mut n = 0;
        for b in rx {
            n += b.len();
        }
        n
    });
    for i in 0..batches {
        let v: Vec<Box<[u8; 64]>> = (0..100).map(|j| Box::new([(i + j) as u8; 64])).collect();
        tx.send(v).unwrap();
    }
    drop(tx);
    consumer.join().unwrap()
}

/// cache-scratch: small objects allocated by one thread are freed by the
/// workers, which then allocate their own and write them hard: an allocator
/// that places different threads' objects on one cache line loses here.
fn cache_scratch() -> usize {
    let iters = scaled(50_000);
    let writes = 1000;
    let objs: Vec<usize> = (0..THREADS)
        .map(|_| Box::into_raw(Box::new([0u8; 8])) as usize)
        .collect();
    let hs: Vec<_> = objs
        .into_iter()
        .map(|p| {
            thread::spawn(move || {
                // SAFETY: allocated by the main thread, freed once here.
                drop(unsafe { Box::from_raw(p as *mut [u8; 8]) });
                for _ in 0..iters {
                    let mut b = Box::new([0u8; 8]);
                    for w in 0..writes {
                        b[w % 8] = b[w % 8].wrapping_add(1);
                        std::hint::black_box(&mut b);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    iters * THREADS * writes
}

/// mstress: threads keep a retained set, churn it, exchange objects through
/// a shared pool, and are recreated every round.
fn mstress() -> usize {
    let rounds = scaled(20);
    let pool: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let ops = Arc::new(AtomicUsize::new(0));
    for round in 0..rounds {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let pool = pool.clone();
                let ops = ops.clone();
                thread::spawn(move || {
                    let mut rng = Rng::new((round * 16 + t + 1) as u64);
                    let mut set: Vec<Vec<u8>> =
                        (0..2000).map(|i| vec![i as u8; 16 + i % 500]).collect();
                    for _ in 0..20_000 {
                        let i = rng.below(set.len());
                        let size = if rng.below(100) < 95 {
                            16 + rng.below(1000)
                        } else {
                            4096 + rng.below(60_000)
                        };
                        set[i] = vec![size as u8; size];
                        if rng.below(50) == 0 {
                            let mut p = pool.lock().unwrap();
                            if let Some(o) = p.pop() {
                                p.push(std::mem::replace(&mut set[i], o));
                            } else {
                                p.push(std::mem::take(&mut set[i]));
                            }
                        }
                    }
                    ops.fetch_add(20_000, Ordering::Relaxed);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let mut p = pool.lock().unwrap();
        let keep = p.len() / 2;
        p.truncate(keep);
    }
    ops.load(Ordering::Relaxed)
}

/// Same-size alloc/free loops (glibc's bench-malloc-simple), one thread.
fn sweep_single() -> usize {
    let n = scaled(200_000);
    let mut total = 0;
    for size in [16usize, 64, 256, 1024, 4096, 16384] {
        let mut v: Vec<Vec<u8>> = Vec::with_capacity(100);
        for i in 0..n {
            v.push(Vec::with_capacity(size));
            if v.len() == 100 {
                v.clear();
            }
            total += i & 1;
        }
    }
    total + n * 6
}

/// The same with two threads (bench-malloc-thread).
fn sweep_threads() -> usize {
    let barrier = Arc::new(Barrier::new(THREADS));
    let hs: Vec<_> = (0..THREADS)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || {
                b.wait();
                sweep_single()
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).sum()
}

/// realloc-heavy: Vec and String growth by push, and shrink_to_fit.
fn realloc_heavy() -> usize {
    let rounds = scaled(3_000);
    let mut rng = Rng::new(3);
    let mut total = 0;
    for _ in 0..rounds {
        let target = 16 + rng.below(64 * 1024);
        let mut v: Vec<u8> = Vec::new();
        for i in 0..target {
            v.push(i as u8);
        }
        let mut s = String::new();
        while s.len() < target / 8 {
            s.push_str("abcdefgh");
        }
        v.truncate(target / 3);
        v.shrink_to_fit();
        s.shrink_to_fit();
        total += v.len() + s.len();
    }
    total
}

/// alloc-test-like (mimalloc-bench's alloc-test): one thread keeps 8192
/// slots and replaces a random one with a block of random size, mostly
/// small (inverse-square from 8 B to 8 KiB), writing every byte of it.
fn alloc_test() -> usize {
    const SLOTS: usize = 8192;
    let ops = scaled(2_000_000);
    let mut rng = Rng::new(7);
    let mut slots: Vec<Vec<u8>> = (0..SLOTS).map(|_| Vec::new()).collect();
    for i in 0..ops {
        // Inverse square: P(size > x) ~ 8 / x.
        let r = 1 + rng.below(1 << 20);
        let size = ((8usize << 20) / r).clamp(8, 8192);
        let mut b = Vec::with_capacity(size);
        b.resize(size, i as u8);
        slots[rng.below(SLOTS)] = b;
    }
    std::hint::black_box(&slots);
    ops
}

/// sh6bench-like (SmartHeap's test; its source is not reachable here, so
/// this follows its published description): each thread allocates runs of
/// blocks of 1-1000 B, frees half of each run in FIFO and half in LIFO
/// order, and hands every fourth block to the other thread to free.
fn sh6() -> usize {
    sh_like(1000, 4)
}

/// sh8bench-like: as sh6, with blocks up to 2000 B and every other block
/// freed by the other thread (heavier cross-thread traffic).
fn sh8() -> usize {
    sh_like(2000, 2)
}

fn sh_like(max: usize, share: usize) -> usize {
    let rounds = scaled(2_000);
    let run = 256;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::sync_channel::<Vec<Vec<u8>>>(16))
        .unzip();
    let hs: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let tx = txs[(t + 1) % THREADS].clone();
            thread::spawn(move || {
                let mut rng = Rng::new(t as u64 + 9);
                for _ in 0..rounds {
                    let mut blocks: Vec<Vec<u8>> = (0..run)
                        .map(|i| vec![i as u8; 1 + rng.below(max)])
                        .collect();
                    let given: Vec<Vec<u8>> = (0..run / share)
                        .map(|i| std::mem::take(&mut blocks[i * share]))
                        .collect();
                    let _ = tx.try_send(given);
                    let half = run / 2;
                    for b in blocks.iter_mut().take(half) {
                        drop(std::mem::take(b));
                    }
                    while let Some(b) = blocks.pop() {
                        drop(b);
                    }
                    while let Ok(v) = rx.try_recv() {
                        drop(v);
                    }
                }
                drop(tx);
                rx
            })
        })
        .collect();
    drop(txs);
    for h in hs {
        for v in h.join().unwrap().try_iter() {
            drop(v);
        }
    }
    rounds * run * THREADS
}

/// A real Rust workload: build and query a word index in a BTreeMap and a
/// HashMap (the shape of a search or metrics service's in-memory index).
fn index() -> usize {
    let words = scaled(300_000);
    let mut rng = Rng::new(11);
    let mut tree: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut hash: HashMap<String, usize> = HashMap::new();
    for doc in 0..words {
        let len = 3 + rng.below(10);
        let w: String = (0..len)
            .map(|_| (b'a' + rng.below(12) as u8) as char)
            .collect();
        tree.entry(w.clone()).or_default().push(doc as u32);
        *hash.entry(w).or_default() += 1;
    }
    let mut hits = 0;
    for _ in 0..words {
        let len = 3 + rng.below(10);
        let w: String = (0..len)
            .map(|_| (b'a' + rng.below(12) as u8) as char)
            .collect();
        hits += tree.get(&w).map_or(0, |v| v.len()) + hash.get(&w).copied().unwrap_or(0);
        if let Some((k, _)) = tree.range(w..).next() {
            hits += k.len();
        }
    }
    std::hint::black_box(hits);
    words * 2
}

/// Latency of single allocations while the background release is at work:
/// 512 MB of mixed objects are allocated and 63 of 64 freed, then one
/// 64-byte alloc+free pair is timed at a time.
fn latency() -> String {
    let mut rng = Rng::new(5);
    let mut v: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    while bytes < 512 << 20 {
        let size = match rng.below(100) {
            0..=69 => 16 + rng.below(240),
            70..=94 => 256 + rng.below(3840),
            _ => 4096 + rng.below(61_440),
        };
        v.push(vec![1u8; size]);
        bytes += size;
    }
    let mut keep = Vec::new();
    for (i, b) in v.into_iter().enumerate() {
        if i % 64 == 0 {
            keep.push(b);
        }
    }
    let n = scaled(1_000_000);
    let mut lat: Vec<u32> = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let b = Box::new([i as u8; 64]);
        std::hint::black_box(&b);
        drop(b);
        lat.push(t0.elapsed().as_nanos() as u32);
        if i % 1000 == 0 && start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    std::hint::black_box(&keep);
    format!(
        "p50={} p99={} p999={} max={} samples={}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        lat[lat.len() - 1],
        lat.len()
    )
}

/// A dense live heap: 256 MB of small objects kept live; after a wait, the
/// share backed by huge pages (AnonHugePages).
fn dense() -> String {
    let blocks: Vec<Box<[u8; 192]>> = (0..(256 << 20) / 192)
        .map(|i| Box::new([i as u8; 192]))
        .collect();
    thread::sleep(Duration::from_secs(6));
    let huge = batch::anon_huge_of(std::process::id());
    let live = blocks.len() * 192;
    format!("live={live} anon_huge={huge}")
}

/// Runs the workload named by the first argument and prints its result;
/// `global` is the worker's global allocator (for the batch scenario, which
/// calls it directly).
pub fn main(global: &'static dyn std::alloc::GlobalAlloc) {
    let name = std::env::args().nth(1).unwrap_or_default();
    if name == "batch" {
        // The release issue's scenario, driven over stdin/stdout.
        let total = std::env::args()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024usize)
            << 20;
        batch::run_child(global, "mixed", total);
        return;
    }
    if name == "workers" {
        // The idle-workers scenario: `workers THREADS MB`.
        let arg = |i: usize, d: usize| {
            std::env::args()
                .nth(i)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        batch::run_workers(arg(2, 8), arg(3, 1024) << 20, false);
        return;
    }
    if name == "records" || name == "records-trim" {
        // Issue 15's records scenario (`records`), for the placement floor.
        let (kept, peak) = crate::records::build_and_keep(2_000_000);
        let result = crate::records::idle_then_collapse(name == "records-trim");
        assert!(crate::records::kept_intact(&kept));
        println!("RESULT peak={peak} {result}");
        return;
    }
    let start = Instant::now();
    let ops = match name.as_str() {
        "larson" => larson(),
        "xmalloc" => xmalloc(),
        "cache-scratch" => cache_scratch(),
        "mstress" => mstress(),
        "sweep-1t" => sweep_single(),
        "sweep-2t" => sweep_threads(),
        "realloc" => realloc_heavy(),
        "index" => index(),
        "alloc-test" => alloc_test(),
        "sh6" => sh6(),
        "sh8" => sh8(),
        "latency" => {
            println!("RESULT {}", latency());
            return;
        }
        "dense" => {
            println!("RESULT {}", dense());
            return;
        }
        other => {
            eprintln!("unknown workload {other}");
            std::process::exit(2);
        }
    };
    println!("RESULT secs={:.6} ops={ops}", start.elapsed().as_secs_f64());
}
