//! Allocation speed: HugeGuard against System (glibc), mimalloc and jemalloc,
//! side by side in one run, all called through the `GlobalAlloc` trait.
//!
//! Run: `cargo bench -p hugeguard-bench --bench alloc` (the table in docs/BENCHMARKS.md comes
//! from `cargo bench -p hugeguard-bench --bench alloc -- --noplot` and the ratios script there).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

static HG: hugeguard::HugeGuard = hugeguard::HugeGuard;
static MI: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JE: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static SYS: System = System;

fn allocators() -> [(&'static str, &'static (dyn GlobalAlloc + Sync)); 4] {
    [
        ("hugeguard", &HG),
        ("system", &SYS),
        ("mimalloc", &MI),
        ("jemalloc", &JE),
    ]
}

const SIZES: [usize; 6] = [16, 64, 256, 1024, 4096, 32768];

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair");
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        g.throughput(Throughput::Elements(1));
        for (name, a) in allocators() {
            g.bench_with_input(BenchmarkId::new(name, size), &layout, |b, &l| {
                b.iter(|| {
                    // SAFETY: non-zero layout, freed with the same layout.
                    unsafe {
                        let p = a.alloc(l);
                        black_box(p);
                        a.dealloc(p, l);
                    }
                })
            });
        }
    }
    g.finish();
}

fn batch(c: &mut Criterion) {
    const N: usize = 1000;
    let mut g = c.benchmark_group("batch1000");
    for size in [16usize, 128, 1024, 8192] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        g.throughput(Throughput::Elements(N as u64));
        for (name, a) in allocators() {
            let mut ptrs = vec![std::ptr::null_mut(); N];
            g.bench_with_input(BenchmarkId::new(name, size), &layout, |b, &l| {
                b.iter(|| {
                    // SAFETY: each block is freed once with its layout.
                    unsafe {
                        for p in ptrs.iter_mut() {
                            *p = a.alloc(l);
                        }
                        for &p in ptrs.iter() {
                            a.dealloc(black_box(p), l);
                        }
                    }
                })
            });
        }
    }
    g.finish();
}

/// Grows a byte vector by pushes through `realloc`, doubling like `Vec`.
fn grow(a: &dyn GlobalAlloc, target: usize) -> usize {
    let mut cap = 8usize;
    let mut len = 0usize;
    // SAFETY: layouts are non-zero; each realloc passes the current layout.
    unsafe {
        let mut p = a.alloc(Layout::from_size_align_unchecked(cap, 1));
        while len < target {
            if len == cap {
                let new_cap = cap * 2;
                p = a.realloc(p, Layout::from_size_align_unchecked(cap, 1), new_cap);
                cap = new_cap;
            }
            *p.add(len) = len as u8;
            len += 1;
        }
        let sum = *p.add(target / 2) as usize;
        a.dealloc(p, Layout::from_size_align_unchecked(cap, 1));
        sum
    }
}

fn vec_growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("vec_push");
    for target in [4096usize, 256 * 1024, 8 << 20] {
        g.throughput(Throughput::Bytes(target as u64));
        for (name, a) in allocators() {
            g.bench_with_input(BenchmarkId::new(name, target), &target, |b, &t| {
                b.iter(|| black_box(grow(a, t)))
            });
        }
    }
    g.finish();
}

/// One thread allocates batches of 64-byte blocks, another frees them.
fn cross_thread(c: &mut Criterion) {
    const BATCH: usize = 256;
    let mut g = c.benchmark_group("cross_thread");
    for size in [64usize, 1024] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        g.throughput(Throughput::Elements(BATCH as u64));
        for (name, a) in allocators() {
            g.bench_with_input(BenchmarkId::new(name, size), &layout, |b, &l| {
                b.iter_custom(|iters| {
                    let (tx, rx) = mpsc::sync_channel::<Vec<usize>>(16);
                    let freer = thread::spawn(move || {
                        for v in rx {
                            for p in v {
                                // SAFETY: allocated by the other thread with `l`.
                                unsafe { a.dealloc(p as *mut u8, l) };
                            }
                        }
                    });
                    let start = Instant::now();
                    for _ in 0..iters {
                        let v: Vec<usize> = (0..BATCH)
                            // SAFETY: non-zero layout.
                            .map(|_| unsafe { a.alloc(l) } as usize)
                            .collect();
                        tx.send(v).unwrap();
                    }
                    drop(tx);
                    freer.join().unwrap();
                    start.elapsed()
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! { name = benches; config = config(); targets = pairs, batch, vec_growth, cross_thread }
criterion_main!(benches);
