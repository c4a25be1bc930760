//! The reason the crate exists, against the real kernel: a batch that frees
//! 63 of every 64 objects and goes idle must give its memory back by itself,
//! and the worst khugepaged can do (simulated with MADV_COLLAPSE on every
//! 2 MiB chunk with a resident page) must not bring it back.
//!
//! Each run happens in a child process (this test binary re-executed), so the
//! RSS measured is the scenario's alone.

use hugeguard_bench::batch;

use batch::get;
use std::time::Duration;

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

const CHILD_ENV: &str = "HUGEGUARD_TEST_BATCH_CHILD";

/// Not a test of its own: the child side, run by `batch_then_idle_*` below.
#[test]
#[ignore]
fn batch_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (name, mb) = spec.rsplit_once(':').unwrap();
    let total: usize = mb.parse::<usize>().unwrap() << 20;
    batch::run_child(&hugeguard::HugeGuard, name, total);
}

struct Outcome {
    live: usize,
    idle: usize,
    after_sim: usize,
    refused: usize,
    collapsed: usize,
    corrupted: usize,
    vmas: usize,
}

fn run(workload: &str, total_mb: usize, env: &[(&str, &str)]) -> Outcome {
    // Idle: no allocator call from the child; give the release 3 s.
    run_idle(workload, total_mb, env, Duration::from_secs(3))
}

fn run_idle(workload: &str, total_mb: usize, env: &[(&str, &str)], idle: Duration) -> Outcome {
    let mut cmd = hugeguard_testkit::child::command("batch_child");
    cmd.env(CHILD_ENV, format!("{workload}:{total_mb}"))
        .env("HUGEGUARD_HOLDBACK_MS", "200");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r = batch::watch(cmd, idle);
    Outcome {
        live: get(&r.freed, "live"),
        idle: r.idle,
        after_sim: r.after,
        refused: get(&r.sim, "refused"),
        collapsed: get(&r.sim, "collapsed"),
        corrupted: get(&r.checked, "corrupted"),
        vmas: r.vmas,
    }
}

/// After the worst khugepaged can do, RSS has grown by at most 5 %.
fn assert_not_reinflated(o: &Outcome) {
    assert!(
        o.after_sim * 100 <= o.idle * 105,
        "khugepaged re-inflated RSS from {} to {}",
        o.idle,
        o.after_sim
    );
}

#[test]
fn batch_then_idle_releases_and_khugepaged_cannot_reinflate() {
    let o = run("mixed", 256, &[]);
    let mib = |b: usize| b as f64 / 1048576.0;
    println!(
        "live {:.1} MiB, idle RSS {:.1} MiB, after simulated khugepaged {:.1} MiB ({} collapsed, {} refused)",
        mib(o.live),
        mib(o.idle),
        mib(o.after_sim),
        o.collapsed,
        o.refused
    );
    assert_eq!(o.corrupted, 0, "live objects corrupted");
    // The bound: RSS <= 3.5 x live + 8 MiB, measured on the whole
    // process (binary, libc and test harness included).
    let bound = o.live * 7 / 2 + (8 << 20);
    assert!(o.idle <= bound, "idle RSS {} above {}", o.idle, bound);
    assert_not_reinflated(&o);
    // The huge pages the release touched refused to collapse.
    assert!(o.refused > 0, "no partly released huge page was protected");
    // 114k frees, 139 huge pages marked: the VMA count follows runs of equal
    // state (at most one or two per huge page), not frees. Mesh mode maps
    // each meshed unit apart: up to two more per unit, and at most 12,288
    // units (the mesher's budget, `src/mesh/table.rs`).
    let meshing = std::env::var("HUGEGUARD_MESH").is_ok_and(|v| v == "on");
    let budget = if meshing { 2 * 12_288 } else { 0 };
    assert!(o.vmas < 100 + 2 * o.refused + budget, "{} VMAs", o.vmas);
    println!("VMAs in the child after release: {}", o.vmas);
}

#[test]
fn go_legacy_and_disable_thp_modes_also_hold_rss_down() {
    for mode in ["go-legacy", "disable-thp"] {
        let o = run("mixed", 128, &[("HUGEGUARD_RELEASE", mode)]);
        println!(
            "{mode}: live {} KiB, idle {} KiB, after simulated khugepaged {} KiB",
            o.live >> 10,
            o.idle >> 10,
            o.after_sim >> 10
        );
        assert_eq!(o.corrupted, 0);
        assert!(
            o.idle <= o.live * 7 / 2 + (8 << 20),
            "{mode}: idle RSS {}",
            o.idle
        );
        assert_not_reinflated(&o);
    }
}

#[test]
fn invalid_configuration_warns_once_and_uses_the_default() {
    let out = hugeguard_testkit::child::command("batch_child")
        .env("HUGEGUARD_RELEASE", "sometimes")
        .env("HUGEGUARD_HOLDBACK_MS", "soon")
        .output()
        .unwrap();
    assert!(out.status.success(), "the process must not crash");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("hugeguard:"))
        .collect();
    assert_eq!(
        lines,
        [
            "hugeguard: invalid HUGEGUARD_RELEASE=sometimes; using the default (aware)",
            "hugeguard: invalid HUGEGUARD_HOLDBACK_MS=soon; using the default (1000)"
        ]
    );
}

#[test]
fn release_off_keeps_rss_and_khugepaged_inflates_nothing_new() {
    // With release off nothing is returned: RSS stays near the peak. This is
    // the control that shows the first test measures the release itself.
    let o = run("mixed", 128, &[("HUGEGUARD_RELEASE", "off")]);
    assert_eq!(o.corrupted, 0);
    assert!(
        o.idle > 100 << 20,
        "release off must keep the memory: {}",
        o.idle
    );
}

#[test]
fn bugzilla_93111_as_allocations_stays_low() {
    // 256 MB touched, then all but the last 4 KiB of every 2 MiB freed. The
    // C program's RSS went 1 MB -> 254 MB under khugepaged.
    let o = run("bugzilla", 256, &[]);
    println!(
        "bugzilla 93111: live {} KiB, idle {} KiB, after simulated khugepaged {} KiB",
        o.live >> 10,
        o.idle >> 10,
        o.after_sim >> 10
    );
    assert_eq!(o.corrupted, 0);
    assert!(o.live == 128 * 4096, "one block per 2 MiB kept");
    // The 128 kept blocks sit in about 128 huge pages; each pins one 4 KiB
    // page (plus its span's other pages if any object of it is live).
    assert!(o.idle <= 24 << 20, "idle RSS {}", o.idle);
    assert_not_reinflated(&o);
}

#[test]
fn go_incident_program_stays_low() {
    // 1000 blocks of 10 MB filled with random bytes and dropped; then idle.
    // Under Go 1.21.1+ RSS went 5 MB -> 10 MB.
    let o = run("go", 0, &[]);
    println!(
        "go program: idle {} KiB, after simulated khugepaged {} KiB",
        o.idle >> 10,
        o.after_sim >> 10
    );
    assert!(o.idle <= 16 << 20, "idle RSS {}", o.idle);
    assert_not_reinflated(&o);
}

#[test]
fn soft_memory_limit_overrides_the_holdback() {
    // A 60 s hold-back would keep everything for the 3 s we watch; a soft
    // limit far below the heap makes the release go ahead anyway.
    let o = run(
        "mixed",
        128,
        &[
            ("HUGEGUARD_HOLDBACK_MS", "60000"),
            ("HUGEGUARD_MEMORY_LIMIT", "8m"),
        ],
    );
    println!(
        "limit 8m: live {} KiB, idle {} KiB",
        o.live >> 10,
        o.idle >> 10
    );
    assert_eq!(o.corrupted, 0);
    assert!(o.idle <= o.live * 7 / 2 + (8 << 20), "idle RSS {}", o.idle);
}

#[test]
fn idle_worker_threads_give_back_their_caches() {
    // A pool of workers handles a batch (every free cross-thread), then
    // blocks, every worker alive. Their caches, and what cached objects pin,
    // must be taken back without their help: idle RSS within 15 % of the
    // one-worker figure, 5 s after the last free, default hold-back.
    let counts = [1, 8, 32, 64];
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let runs: Vec<_> = counts
            .iter()
            .map(|n| {
                s.spawn(move || {
                    run_idle(
                        &format!("workers:{n}"),
                        384,
                        &[("HUGEGUARD_HOLDBACK_MS", "1000")],
                        Duration::from_secs(5),
                    )
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mib = |b: usize| b as f64 / 1048576.0;
    for (n, o) in counts.iter().zip(&outcomes) {
        println!(
            "{n:2} workers: live {:.1} MiB, idle RSS {:.1} MiB, after simulated khugepaged {:.1} MiB",
            mib(o.live),
            mib(o.idle),
            mib(o.after_sim)
        );
    }
    let one = &outcomes[0];
    for (n, o) in counts.iter().zip(&outcomes) {
        assert_eq!(o.corrupted, 0, "{n} workers: live objects corrupted");
        // Within 15 %, or 5 MiB: the threads' own memory (stacks, TLS,
        // cache records) is a larger share of mesh mode's smaller idle RSS
        // (13.7 MiB for one worker against 18.8 in the default mode), where
        // 64 workers came to 14 %. It was about 1.9 MiB for 64 workers
        // when this test was written, and 2.8-3.1 MiB at stop 39 in the
        // default mode (the preload library's TLS block alone is about
        // 6 KiB a thread since stop 38), where a 3 MiB margin failed one
        // CI run by 0.1 MiB. Caches not taken back would hold up to 2.8 MB per
        // worker, 180 MB for 64.
        assert!(
            o.idle * 100 <= one.idle * 115 || o.idle <= one.idle + (5 << 20),
            "{n} idle workers hold {:.1} MiB against {:.1} MiB for one",
            mib(o.idle),
            mib(one.idle)
        );
        assert_not_reinflated(o);
    }
}
