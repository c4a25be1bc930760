//! Does a steady workload pay for the release policy? Runs the same churn
//! (allocate a working set of mixed objects, free it, repeat) in child
//! processes with `HUGEGUARD_RELEASE=off` and with the default `aware`,
//! alternating in ABBA order, and prints the median time of each and their
//! ratio. The machines here are noisy: single runs vary by +-7 %, so the
//! median of many runs is what to compare.
//!
//! `cargo run --release -p hugeguard-bench --example churn [-- --runs N --rounds N]`

use std::process::Command;
use std::time::Instant;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn churn(rounds: usize) -> f64 {
    let mut s = 0x9e3779b97f4a7c15u64;
    let start = Instant::now();
    let mut keep: Vec<Vec<u8>> = Vec::new();
    for _ in 0..rounds {
        let set: Vec<Vec<u8>> = (0..100_000)
            .map(|_| {
                let r = rng(&mut s);
                let size = match r % 100 {
                    0..=69 => 16 + (r >> 8) as usize % 240,
                    70..=94 => 256 + (r >> 8) as usize % 3840,
                    _ => 4096 + (r >> 8) as usize % 61440,
                };
                vec![r as u8; size]
            })
            .collect();
        // Keep a few across rounds so the heap is not trivially empty.
        keep.extend(set.into_iter().step_by(1000));
        if keep.len() > 2000 {
            keep.drain(..1000);
        }
    }
    std::hint::black_box(&keep);
    start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str, d: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rounds = arg("--rounds", 40);
    if std::env::var("HG_CHURN_CHILD").is_ok() {
        println!("{}", churn(rounds));
        if std::env::var("HG_CHURN_STATS").is_ok() {
            eprintln!("{}", hugeguard::stats());
        }
        return;
    }
    let runs = arg("--runs", 11);
    let mut off = Vec::new();
    let mut on = Vec::new();
    for i in 0..runs * 2 {
        // ABBA order cancels slow drift of the machine.
        let mode = if matches!(i % 4, 0 | 3) {
            "off"
        } else {
            "aware"
        };
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--rounds", &rounds.to_string()])
            .env("HG_CHURN_CHILD", "1")
            .env("HUGEGUARD_RELEASE", mode)
            .output()
            .expect("child");
        let t: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("child time");
        if mode == "off" {
            off.push(t)
        } else {
            on.push(t)
        }
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::MAX, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        (lo, hi)
    };
    let (off_lo, off_hi) = spread(&off);
    let (on_lo, on_hi) = spread(&on);
    let (m_off, m_on) = (median(&mut off), median(&mut on));
    println!("churn, {rounds} rounds of 100k mixed objects, {runs} alternating runs each:");
    println!(
        "  release off    median {:.3} s (range {:.3}-{:.3})",
        m_off, off_lo, off_hi
    );
    println!(
        "  release aware  median {:.3} s (range {:.3}-{:.3})",
        m_on, on_lo, on_hi
    );
    println!("  ratio aware/off: {:.3}", m_on / m_off);
}
