//! The benchmark suite: speed and memory of hugeguard against System (glibc),
//! mimalloc and jemalloc, side by side, each measurement in its own process.
//!
//! ```text
//! cargo run --release -p hugeguard-bench --example suite              # quick mode, a couple of minutes
//! cargo run --release -p hugeguard-bench --example suite -- --full    # full mode: more runs, larger scale
//! ```
//! Writes `docs/BENCHMARKS.md` (or `--out PATH`) with the machine, the date,
//! a table per workload (median time, spread, peak RSS, ratio against the best
//! peer), the memory scenarios, allocation latency percentiles, and two SVG
//! charts beside it. Workers are `examples/suite_worker_*` (one binary per
//! allocator, chosen at build time); this driver builds nothing itself, so
//! build the examples first (`cargo build --release --workspace --examples`, which
//! `cargo run -p hugeguard-bench --example suite` does).

use hugeguard_bench::{batch, svg};
use hugeguard_inspect::run::{run as inspect_run, Allocator, RunOptions};
use hugeguard_inspect::Assume;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

const ALLOCATORS: [&str; 4] = ["hugeguard", "system", "mimalloc", "jemalloc"];
const SPEED: [(&str, &str); 11] = [
    ("larson", "larson-like server: 2 threads replace random slots of a shared array (8-1000 B); frees cross threads"),
    ("xmalloc", "xmalloc-like: one thread allocates batches of 100 x 64 B, another frees them"),
    ("cache-scratch", "cache-scratch: objects allocated by one thread, freed by workers that then write their own hard"),
    ("mstress", "mstress-like: 2 threads churn a retained set, exchange objects, are recreated each round"),
    ("sweep-1t", "size-class sweep, 1 thread: same-size alloc/free, 16 B-16 KiB"),
    ("sweep-2t", "size-class sweep, 2 threads"),
    ("realloc", "realloc-heavy: Vec and String growth by push, truncate, shrink_to_fit"),
    ("index", "real workload: build and query a 300k-word BTreeMap + HashMap index"),
    ("alloc-test", "alloc-test-like: 1 thread replaces random slots of 8192 with blocks of 8 B-8 KiB (inverse square), writing them"),
    ("sh6", "sh6bench-like: 2 threads allocate runs of 1-1000 B, free them FIFO and LIFO, hand every 4th block to the other thread"),
    ("sh8", "sh8bench-like: as sh6 with 1-2000 B and every other block freed by the other thread"),
];

fn worker(alloc: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let name = alloc.split(['/', '+']).next().unwrap();
    Command::new(dir.join(format!("suite_worker_{name}")))
}

/// `hugeguard/MODE` runs with `HUGEGUARD_RELEASE=MODE`, `hugeguard+harden`
/// with `HUGEGUARD_HARDEN=1`, `hugeguard+mesh` with `HUGEGUARD_MESH=on`;
/// every other name with its defaults (hardened mode and mesh mode
/// explicitly off, as in a release build).
fn with_mode(mut cmd: Command, alloc: &str) -> Command {
    if let Some(mode) = alloc.split('/').nth(1) {
        cmd.env("HUGEGUARD_RELEASE", mode);
    }
    cmd.env(
        "HUGEGUARD_HARDEN",
        if alloc.ends_with("+harden") { "1" } else { "0" },
    );
    cmd.env(
        "HUGEGUARD_MESH",
        if alloc.ends_with("+mesh") {
            "on"
        } else {
            "off"
        },
    );
    cmd
}

/// `--only hardened` / `--only mesh`: hugeguard's time and peak RSS on
/// every speed workload with and without the setting (`setting` is
/// `harden` or `mesh`), alternating runs.
fn setting_section(reps: usize, scale: f64, setting: &str) -> String {
    let other = format!("hugeguard+{setting}");
    let modes = ["hugeguard", other.as_str()];
    let name = if setting == "harden" {
        "hardened"
    } else {
        "mesh mode"
    };
    let mut md = format!(
        "| workload | default (median s) | {name} (median s) | {name} / default | peak RSS default | peak RSS {name} |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut log_sum = 0.0;
    for (workload, _) in SPEED {
        let mut per: [(Vec<f64>, Vec<usize>); 2] = Default::default();
        for rep in 0..reps {
            for k in 0..2 {
                let m = (k + rep) % 2;
                let (kv, rss) = run_once(modes[m], workload, scale);
                per[m].0.push(get(&kv, "secs").parse().unwrap_or(0.0));
                per[m].1.push(rss);
            }
        }
        let med = |v: &mut Vec<f64>| median(v);
        let (d, h) = (med(&mut per[0].0.clone()), med(&mut per[1].0.clone()));
        let rss = |v: &Vec<usize>| {
            let mut v = v.clone();
            v.sort();
            mb(v[v.len() / 2])
        };
        log_sum += (h / d).ln();
        let _ = writeln!(
            md,
            "| {workload} | {d:.3} | {h:.3} | {:.2} | {:.0} MB | {:.0} MB |",
            h / d,
            rss(&per[0].1),
            rss(&per[1].1)
        );
        eprintln!("{workload} done");
    }
    let _ = writeln!(
        md,
        "\ngeometric mean of {name} / default: {:.2}",
        (log_sum / SPEED.len() as f64).exp()
    );
    md
}

/// Runs one worker; returns its RESULT fields and its peak RSS in bytes.
fn run_once(alloc: &str, workload: &str, scale: f64) -> (Vec<(String, String)>, usize) {
    let mut cmd = with_mode(worker(alloc), alloc);
    cmd.arg(workload)
        .env("SUITE_SCALE", scale.to_string())
        .stdout(Stdio::piped());
    let child = cmd
        .spawn()
        .expect("worker binary (build the examples first)");
    let pid = child.id() as i32;
    let out = child.wait_with_output_rusage(pid);
    let text = String::from_utf8_lossy(&out.0).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .unwrap_or_else(|| panic!("{alloc} {workload}: no result"));
    let kv = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (kv, out.1)
}

trait WaitRusage {
    fn wait_with_output_rusage(self, pid: i32) -> (Vec<u8>, usize);
}

impl WaitRusage for std::process::Child {
    fn wait_with_output_rusage(mut self, pid: i32) -> (Vec<u8>, usize) {
        use std::io::Read;
        let mut out = Vec::new();
        self.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter; we wait for our own child.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        (out, ru.ru_maxrss as usize * 1024)
    }
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> &'a str {
    kv.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("0")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Speed {
    workload: &'static str,
    what: &'static str,
    /// Per allocator: (median secs, min, max, median peak RSS).
    results: Vec<(&'static str, f64, f64, f64, usize)>,
}

fn mb(b: usize) -> f64 {
    b as f64 / 1048576.0
}

/// hugeguard's median time over the best peer's, per workload.
fn ratios(speeds: &[Speed]) -> Vec<(String, f64)> {
    speeds
        .iter()
        .map(|sp| {
            let hg = sp
                .results
                .iter()
                .find(|r| r.0 == "hugeguard")
                .map_or(0.0, |r| r.1);
            let best = sp
                .results
                .iter()
                .filter(|r| r.0 != "hugeguard")
                .map(|r| r.1)
                .fold(f64::MAX, f64::min);
            (sp.workload.to_string(), hg / best)
        })
        .collect()
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// C programs under `LD_PRELOAD`: peers from Debian's packages
/// (`apt-get install libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4`) and
/// `libhugeguard_preload.so` (`cargo build --release --workspace`).
const C_LIBS: [(&str, &str); 6] = [
    ("glibc", ""),
    ("glibc + malloc_trim", ""),
    ("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ("mimalloc", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
    (
        "tcmalloc",
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    ),
    ("hugeguard", "libhugeguard_preload.so"),
];

/// Compiles the C file `src` (relative to the workspace root) next to this
/// binary.
fn compile_c(src: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let stem = std::path::Path::new(src).file_stem()?.to_string_lossy();
    let out = dir.join(format!("c-suite-{stem}"));
    let ok = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(out)
}

fn preload_path(lib: &str) -> Option<std::path::PathBuf> {
    if lib.is_empty() {
        return Some(std::path::PathBuf::new());
    }
    let p = if lib.starts_with('/') {
        std::path::PathBuf::from(lib)
    } else {
        // examples/ lives in target/release/examples; the library one level up.
        std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join(lib)
    };
    p.exists().then_some(p)
}

/// Runs a C program with `lib` preloaded; returns stdout, wall time, peak RSS.
fn run_c(prog: &std::path::Path, args: &[&str], lib: &std::path::Path) -> (String, f64, usize) {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("HUGEGUARD_HOLDBACK_MS", "1000")
        .stdout(Stdio::piped());
    if !lib.as_os_str().is_empty() {
        cmd.env("LD_PRELOAD", lib);
    }
    let t0 = std::time::Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let (out, rss) = child.wait_with_output_rusage(pid);
    (
        String::from_utf8_lossy(&out).to_string(),
        t0.elapsed().as_secs_f64(),
        rss,
    )
}

/// The idle worker pool (`batch::run_workers`): hugeguard with 1, 8, 32 and
/// 64 workers, the peers with 1 and 32; RSS 5 s after the last free, then
/// after the simulated khugepaged.
fn idle_workers_section(batch_mb: usize) -> String {
    let runs: [(&str, usize); 10] = [
        ("hugeguard", 1),
        ("hugeguard", 8),
        ("hugeguard", 32),
        ("hugeguard", 64),
        ("system", 1),
        ("system", 32),
        ("mimalloc", 1),
        ("mimalloc", 32),
        ("jemalloc", 1),
        ("jemalloc", 32),
    ];
    let mut md = format!("## Memory: an idle worker pool ({batch_mb} MB)\n\nN worker threads allocate the batch's mixed objects between them; each then frees the objects of the next worker (every free cross-thread when N > 1), keeping 1 in 64; then every worker blocks on a condition variable, alive. RSS 5 s after the last free, then after the simulated khugepaged. hugeguard's background thread takes back the caches of threads idle for 0.5-1 s.\n\n| allocator | workers | live | RSS after 5 s idle | vs 1 worker | after simulated khugepaged |\n|---|---:|---:|---:|---:|---:|\n");
    let mut one = 0;
    for (a, n) in runs {
        let mut cmd = worker(a);
        cmd.args(["workers", &n.to_string(), &batch_mb.to_string()]);
        let r = batch::watch(cmd, Duration::from_secs(5));
        assert_eq!(batch::get(&r.checked, "corrupted"), 0, "{a}: corrupted");
        if n == 1 {
            one = r.idle;
        }
        let _ = writeln!(
            md,
            "| {a} | {n} | {:.1} MB | {:.1} MB | {:.2} | {:.1} MB |",
            mb(batch::get(&r.freed, "live")),
            mb(r.idle),
            r.idle as f64 / one.max(1) as f64,
            mb(r.after)
        );
    }
    md
}

fn c_section(reps: usize, batch_mb: usize) -> String {
    let mut md = String::new();
    let (Some(stress), Some(sparse)) = (
        compile_c("preload/tests/c/stress.c"),
        compile_c("inspect/tests/c/sparse.c"),
    ) else {
        return "## C programs under LD_PRELOAD\n\nNot run: no C compiler.\n".into();
    };
    let _ = writeln!(md, "## C programs under LD_PRELOAD\n\nThe same C programs with glibc and with each allocator preloaded (Debian's `libjemalloc2` 5.3.0, `libmimalloc2.0`, `libtcmalloc-minimal4`; install them with `apt-get install libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4`) and with `libhugeguard_preload.so` (`cargo build --release --workspace`). The classic benchmark programs (mimalloc-bench) under the same libraries: [MIMALLOC-BENCH.md](MIMALLOC-BENCH.md).\n");
    let _ = writeln!(md, "### Threaded stress (`preload/tests/c/stress.c`: 4 threads x 60k cookie-checked blocks through a shared ring, 3 rounds)\n\n| allocator | median time | spread | peak RSS |\n|---|---:|---:|---:|");
    for (name, lib) in C_LIBS.iter().filter(|(n, _)| !n.contains("trim")) {
        let Some(path) = preload_path(lib) else {
            let _ = writeln!(md, "| {name} | not installed | | |");
            continue;
        };
        let mut times = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..reps {
            let (out, t, r) = run_c(&stress, &[], &path);
            assert!(out.contains("bad=0"), "{name}: {out}");
            times.push(t);
            rss.push(r);
        }
        let lo = times.iter().cloned().fold(f64::MAX, f64::min);
        let hi = times.iter().cloned().fold(0.0, f64::max);
        rss.sort();
        let _ = writeln!(
            md,
            "| {name} | {:.0} ms | {:.0}-{:.0} ms | {:.1} MB |",
            median(&mut times) * 1e3,
            lo * 1e3,
            hi * 1e3,
            mb(rss[rss.len() / 2])
        );
    }
    let _ = writeln!(md, "\n### Batch then idle in C, measured from outside (`inspect/tests/c/sparse.c`, {batch_mb} MB of mixed objects, 63 of 64 freed, 3 s idle)\n\nEach program runs under `hugeguard_inspect::run` (what `hugeguard-inspect run --always` does): when the program says it is idle, the inspector reads its RSS and exposure (the bytes khugepaged could add; rules as if THP were `enabled=always`, which is what `MADV_COLLAPSE` accepts), then collapses every counted range with `process_madvise(MADV_COLLAPSE)` and reads RSS again. Needs root for the collapse.\n\n| allocator | RSS after idle | exposure | predicted RSS | after simulated khugepaged | collapsed / refused |\n|---|---:|---:|---:|---:|---:|");
    for (name, lib) in C_LIBS {
        let Some(path) = preload_path(lib) else {
            let _ = writeln!(md, "| {name} | not installed | | | | |");
            continue;
        };
        let allocator = if path.as_os_str().is_empty() {
            Allocator::System
        } else {
            Allocator::Library(path)
        };
        let opts = RunOptions {
            allocator,
            // Only the program's signal (after its 3 s of sleep) counts.
            quiet: Duration::from_secs(600),
            timeout: Duration::from_secs(300),
            assume: Assume::Always,
            simulate: true,
            env: vec![("HUGEGUARD_HOLDBACK_MS".into(), "1000".into())],
            ..RunOptions::default()
        };
        let cmd = [
            sparse.display().to_string(),
            batch_mb.to_string(),
            if name.contains("trim") {
                "trim"
            } else {
                "keep"
            }
            .to_string(),
            "3".to_string(),
        ];
        match inspect_run(&cmd, &opts) {
            Ok(o) => {
                let r = &o.report;
                let (after, counts) = match &o.simulation {
                    Some(Ok(sim)) => (
                        format!("{:.1} MB", mb(o.rss_after.unwrap_or(0) as usize)),
                        format!("{} / {}", sim.collapsed, sim.refused),
                    ),
                    Some(Err(e)) => (format!("not simulated: {e}"), String::new()),
                    None => (String::new(), String::new()),
                };
                let _ = writeln!(
                    md,
                    "| {name} | {:.1} MB | {:.1} MB | {:.1} MB | {after} | {counts} |",
                    mb(r.rss_bytes as usize),
                    mb(r.exposure_bytes as usize),
                    mb(r.predicted_rss_bytes as usize),
                );
            }
            Err(e) => {
                let _ = writeln!(md, "| {name} | failed: {e} | | | | |");
            }
        }
    }
    md
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--full");
    let out_path = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "docs/BENCHMARKS.md".into());
    let dir = std::path::Path::new(&out_path)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let (reps, scale, batch_mb) = if full { (7, 3.0, 1024) } else { (3, 1.0, 512) };
    if args.iter().any(|a| a == "idle-workers") {
        // `--only idle-workers [--mb N]`: just that table, on stdout.
        let mb_arg = args
            .iter()
            .position(|a| a == "--mb")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(batch_mb);
        println!("{}", idle_workers_section(mb_arg));
        return;
    }

    if args.iter().any(|a| a == "hardened") {
        // `--only hardened`: the cost of hardened mode, on stdout.
        println!("{}", setting_section(reps.max(5), scale, "harden"));
        return;
    }

    if args.iter().any(|a| a == "mesh") {
        // `--only mesh`: the cost of mesh mode, on stdout.
        println!("{}", setting_section(reps.max(5), scale, "mesh"));
        return;
    }

    if args.iter().any(|a| a == "c-programs") {
        // `--only c-programs`: just the C section, on stdout.
        println!("{}", c_section(reps, batch_mb));
        return;
    }

    // Speed: every workload, allocators rotated each repetition.
    let mut speeds = Vec::new();
    for (workload, what) in SPEED {
        let mut per: Vec<(Vec<f64>, Vec<usize>)> = vec![(Vec::new(), Vec::new()); ALLOCATORS.len()];
        for rep in 0..reps {
            for k in 0..ALLOCATORS.len() {
                let a = (k + rep) % ALLOCATORS.len();
                let (kv, rss) = run_once(ALLOCATORS[a], workload, scale);
                per[a].0.push(get(&kv, "secs").parse().unwrap_or(0.0));
                per[a].1.push(rss);
            }
        }
        let results = ALLOCATORS
            .iter()
            .zip(per.iter_mut())
            .map(|(a, (t, r))| {
                let lo = t.iter().cloned().fold(f64::MAX, f64::min);
                let hi = t.iter().cloned().fold(0.0, f64::max);
                r.sort();
                (*a, median(t), lo, hi, r[r.len() / 2])
            })
            .collect();
        eprintln!("{workload} done");
        speeds.push(Speed {
            workload,
            what,
            results,
        });
    }

    // Latency while the background release works.
    let mut latency = Vec::new();
    for a in ALLOCATORS {
        let (kv, _) = run_once(a, "latency", if full { 2.0 } else { 1.0 });
        latency.push((
            a,
            get(&kv, "p50").to_string(),
            get(&kv, "p99").to_string(),
            get(&kv, "p999").to_string(),
            get(&kv, "max").to_string(),
        ));
    }
    eprintln!("latency done");

    // Dense heap: huge-page coverage.
    let mut dense = Vec::new();
    for a in ALLOCATORS {
        let (kv, rss) = run_once(a, "dense", 1.0);
        let live: f64 = get(&kv, "live").parse().unwrap_or(1.0);
        let huge: f64 = get(&kv, "anon_huge").parse().unwrap_or(0.0);
        dense.push((a, huge / live, rss));
    }
    eprintln!("dense done");

    // Batch-then-idle, per allocator and hugeguard mode.
    let memory_allocs = [
        "system",
        "mimalloc",
        "jemalloc",
        "hugeguard",
        "hugeguard/go-legacy",
        "hugeguard/disable-thp",
    ];
    let mut memory = Vec::new();
    let mut series = Vec::new();
    for a in memory_allocs {
        let mut cmd = with_mode(worker(a), a);
        cmd.args(["batch", &batch_mb.to_string()]);
        let r = batch::watch(cmd, Duration::from_secs(5));
        assert_eq!(batch::get(&r.checked, "corrupted"), 0, "{a}: corrupted");
        memory.push((
            a,
            batch::get(&r.freed, "live"),
            batch::get(&r.freed, "peak"),
            r.idle,
            r.after,
            r.vmas,
            batch::get(&r.sim, "refused"),
        ));
        series.push((a.to_string(), r.samples));
    }
    eprintln!("memory done");

    let workers_md = idle_workers_section(batch_mb);
    eprintln!("idle workers done");

    let c_md = c_section(reps, batch_mb);
    eprintln!("C programs done");

    // The report.
    let mut md = String::new();
    let date = sh("date -u +%Y-%m-%d");
    let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `cargo run --release -p hugeguard-bench --example suite{}` on {date}.\n",
        if full { " -- --full" } else { "" }
    );
    let _ = writeln!(md, "Machine: {} cores ({}), {} GiB, Linux {}; THP `{}`, defrag `{}`, max_ptes_none {}. glibc {}, mimalloc crate 0.1.52, tikv-jemallocator 0.6.1 (default settings), Rust {}.\n",
        sh("nproc"), cpu.trim(), sh("free -g | awk '/Mem/{print $2}'"), sh("uname -r"),
        sh("cat /sys/kernel/mm/transparent_hugepage/enabled"), sh("cat /sys/kernel/mm/transparent_hugepage/defrag"),
        sh("cat /sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none"), sh("ldd --version | head -1 | awk '{print $NF}'"), sh("rustc --version | cut -d' ' -f2"));
    let _ = writeln!(md, "Each measurement runs in its own process (one worker binary per allocator, the allocator chosen at build time). Speed: median of {reps} runs per allocator, allocators rotated between runs; the spread is min-max. Ratios compare hugeguard with the best peer (the fastest of System, mimalloc, jemalloc). Peak RSS is the worker's `ru_maxrss`. This machine is shared and noisy: single runs vary by several percent.\n");
    let _ = writeln!(md, "![time ratios](bench-ratios.svg)\n");
    let _ = writeln!(md, "## Speed\n");
    let _ = writeln!(md, "| workload | allocator | median time | spread | peak RSS | hugeguard / this |\n|---|---|---:|---:|---:|---:|");
    let mut wins = 0;
    let mut summary = Vec::new();
    for sp in &speeds {
        let hg = sp.results[0].1;
        let hg_rss = sp.results[0].4;
        for r in &sp.results {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} ms | {:.1}-{:.1} ms | {:.1} MB | {:.2} |",
                sp.workload,
                r.0,
                r.1 * 1e3,
                r.2 * 1e3,
                r.3 * 1e3,
                mb(r.4),
                hg / r.1
            );
        }
        let best = sp.results[1..]
            .iter()
            .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap())
            .unwrap();
        let sys_rss = sp.results[1].4;
        if hg <= best.1 {
            wins += 1;
        }
        summary.push(format!(
            "| {} | {:.2} ({}) | {:.2} | {} |",
            sp.workload,
            hg / best.1,
            best.0,
            hg_rss as f64 / sys_rss as f64,
            sp.what
        ));
    }
    let _ = writeln!(md, "\n### Summary\n\nhugeguard is at or below the best peer's time on {wins} of {} workloads.\n", speeds.len());
    let _ = writeln!(md, "| workload | hugeguard / best peer | hugeguard peak RSS / System's | what it does |\n|---|---:|---:|---|");
    for l in &summary {
        let _ = writeln!(md, "{l}");
    }
    let _ = writeln!(md, "\n## Allocation latency while the release works\n\nAfter 512 MB of mixed objects are allocated and 63 of 64 freed, single 64 B alloc+free pairs are timed (ns, `Instant` overhead included) while hugeguard's background thread releases the freed memory.\n\n| allocator | p50 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|");
    for (a, p50, p99, p999, max) in &latency {
        let _ = writeln!(md, "| {a} | {p50} | {p99} | {p999} | {max} |");
    }
    let _ = writeln!(md, "\n## Memory: batch then idle ({batch_mb} MB)\n\nMixed objects (70 % 16-256 B, 25 % 256 B-4 KiB, 5 % 4-64 KiB), 63 of 64 freed at random, then no allocator call; RSS after 5 s idle, then after the simulated worst-case khugepaged (MADV_COLLAPSE on every 2 MiB chunk with a resident page).\n\n| allocator | live | peak RSS | RSS after 5 s idle | after simulated khugepaged | VMAs | collapses refused |\n|---|---:|---:|---:|---:|---:|---:|");
    for (a, live, peak, idle, after, vmas, refused) in &memory {
        let _ = writeln!(
            md,
            "| {a} | {:.1} MB | {:.0} MB | {:.1} MB | {:.1} MB | {vmas} | {refused} |",
            mb(*live),
            mb(*peak),
            mb(*idle),
            mb(*after)
        );
    }
    let _ = writeln!(
        md,
        "\n![RSS over time after the frees](bench-idle-rss.svg)\n"
    );
    let _ = writeln!(md, "## Memory: huge-page coverage of a dense live heap\n\n256 MB of live 192 B objects, 6 s later: the share of the live bytes backed by huge pages (AnonHugePages).\n\n| allocator | AnonHugePages / live | peak RSS |\n|---|---:|---:|");
    for (a, share, rss) in &dense {
        let _ = writeln!(md, "| {a} | {:.0} % | {:.0} MB |", share * 100.0, mb(*rss));
    }
    let _ = writeln!(md, "\n{workers_md}");
    let _ = writeln!(md, "\n{c_md}");
    let _ = writeln!(md, "\n## Micro-benchmarks\n\n`cargo bench -p hugeguard-bench --bench alloc` (criterion, the four allocators through `GlobalAlloc` in one process): see [CRITERION.md](CRITERION.md).\n\n## Notes on the losses\n\nSee [SUITE-NOTES.md](SUITE-NOTES.md) for the causes of the workloads where hugeguard is slower.");
    std::fs::write(&out_path, md).unwrap();
    svg::ratio_bars(
        dir.join("bench-ratios.svg").to_str().unwrap(),
        "hugeguard time / best peer's time (mimalloc, jemalloc, System)",
        "ratio (below 1: hugeguard is faster)",
        &ratios(&speeds),
    )
    .unwrap();
    svg::line_chart(
        &series,
        dir.join("bench-idle-rss.svg").to_str().unwrap(),
        &format!("RSS (MB) after a {batch_mb} MB batch frees 63 of 64 objects and idles"),
        &[
            (0.0, "frees done".to_string()),
            (5.0, "khugepaged (simulated)".to_string()),
        ],
    )
    .unwrap();
    println!("wrote {out_path}");
}
