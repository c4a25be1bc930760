//! The placement floor, measured in one run against glibc +
//! `malloc_trim(0)`: the records scenario (`hugeguard_bench::records`: 2 M
//! records of five small objects each, 1 in 64 kept, then idle) in three
//! child processes: the System worker with `malloc_trim(0)`, and this
//! program under hugeguard with `HUGEGUARD_MESH=off` and `=on` (random
//! slots). Each reports its RSS after the idle wait and after the
//! simulated khugepaged; the hugeguard children also report
//! `hugeguard::placement()`: the pages holding a live byte, and what a
//! meshing round would free now and the mappings it would add (the
//! mesher's planner run dry; nothing without mesh mode's class homes).
//!
//! `cargo build --release -p hugeguard-bench --examples && cargo run --release -p hugeguard-bench --example placement`
//! (`-- --child` runs one hugeguard child and prints its placement table.)

use hugeguard_bench::records;
use std::process::Command;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

fn child() {
    let (kept, peak) = records::build_and_keep(2_000_000);
    let result = records::idle_then_collapse(false);
    // Counted after the simulation, so the thread caches are empty.
    hugeguard::release_now();
    let p = hugeguard::placement();
    let (live, live_pages, _) = p.totals();
    let meshable = p.meshable();
    println!(
        "RESULT peak={peak} {result} live={live} live_pages={} meshable={} meshable_vmas={}",
        live_pages * 4096,
        meshable.pages * 4096,
        meshable.vmas
    );
    println!("{p}");
    println!("{}", hugeguard::stats());
    assert!(records::kept_intact(&kept));
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |v| v / 1e6)
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("spawn a child");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed:\n{text}");
    text.lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT:\n{text}"))
        .to_string()
}

fn main() {
    if std::env::args().any(|a| a == "--child") {
        child();
        return;
    }
    let me = std::env::current_exe().unwrap();
    let mut glibc = Command::new(me.with_file_name("suite_worker_system"));
    glibc.arg("records-trim");
    let rows = [
        ("glibc + malloc_trim(0)", glibc),
        ("hugeguard", {
            let mut c = Command::new(&me);
            c.arg("--child").env("HUGEGUARD_MESH", "off");
            c
        }),
        ("hugeguard, HUGEGUARD_MESH=on (meshing)", {
            let mut c = Command::new(&me);
            c.arg("--child").env("HUGEGUARD_MESH", "on");
            c
        }),
    ];
    println!("| allocator | peak RSS | RSS after idle | after simulated khugepaged | mappings (VMAs) when idle | pages holding a live byte | a meshing round now would free (mappings added) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, cmd) in rows {
        let r = run(cmd);
        let mb = |k: &str| {
            let v = field(&r, k);
            if v.is_nan() {
                "".to_string()
            } else {
                format!("{v:.1} MB")
            }
        };
        let with_vmas = |k: &str| {
            let vmas = field(&r, &format!("{k}_vmas")) * 1e6;
            if vmas.is_nan() {
                String::new()
            } else {
                format!("{} ({vmas:.0})", mb(k))
            }
        };
        println!(
            "| {name} | {} | {} | {} | {:.0} | {} | {} |",
            mb("peak"),
            mb("idle"),
            mb("after"),
            field(&r, "vmas") * 1e6,
            mb("live_pages"),
            with_vmas("meshable")
        );
    }
}
