//! The placement floor of issue 15, measured: 2 M records of five small
//! objects each (a struct, its name, its tag vector, its payload, its key),
//! 1 record in 64 kept, then `release_now()`, then `hugeguard::placement()`
//! and the RSS.
//!
//! `cargo run --release -p hugeguard-bench --example placement [-- RECORDS]`

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

#[allow(dead_code)] // the fields are there to be allocated and kept
struct Record {
    id: u64,
    name: String,
    tags: Vec<u32>,
    payload: Box<[u8]>,
    key: Box<u64>,
}

fn rss_mb() -> f64 {
    hugeguard_bench::batch::rss_of(std::process::id()) as f64 / 1e6
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut rng = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let records: Vec<Box<Record>> = (0..n)
        .map(|id| {
            let r = rng();
            Box::new(Record {
                id,
                name: format!("record-{id}-{}", r % 1000),
                tags: (0..1 + r % 6).map(|t| t as u32).collect(),
                payload: vec![r as u8; 24 + (r >> 8) as usize % 100].into_boxed_slice(),
                key: Box::new(r),
            })
        })
        .collect();
    let peak = rss_mb();
    let kept: Vec<Box<Record>> = records.into_iter().filter(|r| r.id % 64 == 0).collect();
    hugeguard::release_now();
    let p = hugeguard::placement();
    let (live, live_pages, resident, mesh) = p.totals();
    println!(
        "{n} records, {} kept; peak RSS {peak:.0} MB; RSS after release_now {:.1} MB",
        kept.len(),
        rss_mb()
    );
    println!(
        "RESULT live_small_mb={:.1} pages_with_live_mb={:.1} resident_small_mb={:.1} meshable_mb={:.1}",
        live as f64 / 1e6,
        (live_pages * 4096) as f64 / 1e6,
        (resident * 4096) as f64 / 1e6,
        (mesh * 4096) as f64 / 1e6
    );
    println!("{p}");
    assert!(kept.iter().all(|r| r.id % 64 == 0 && !r.name.is_empty()));
}
