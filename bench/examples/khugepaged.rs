//! The khugepaged demonstration: the incident and its cure, side by side.
//!
//! A batch allocates about 1 GB of mixed small objects, frees 63 of every 64
//! at random, and goes idle (no allocator call at all). The same workload runs
//! in one child process per allocator; this parent samples each child's RSS,
//! then has the child run the worst-case khugepaged simulation on itself
//! (MADV_COLLAPSE on every 2 MiB chunk with a resident page) and samples again.
//!
//! ```text
//! cargo run --release -p hugeguard-bench --example khugepaged            # simulated khugepaged
//! cargo run --release -p hugeguard-bench --example khugepaged -- --real  # the real daemon (root)
//! options: --mb N (default 1024)  --idle SECS (default 6)  --svg PATH
//!          --mthp KB (root: set hugepages-<KB>kB/enabled=always for the run)
//!          --thp always|madvise|never (root: set THP's own switch for the run)
//! ```
//! With `--real` the parent sets THP `enabled=always` and khugepaged's
//! `scan_sleep_millisecs=100`, `pages_to_scan=4096`, waits while the real
//! daemon scans, and restores every value it changed, also on failure or
//! Ctrl-C.

use hugeguard_bench::{batch, svg, sysfs};

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Chooses System or HugeGuard once per process, from `HG_DEMO_ALLOC`, read
/// without allocating on the first call (before anything was allocated).
struct Switch;
static CHOICE: AtomicU8 = AtomicU8::new(0);

fn use_hugeguard() -> bool {
    match CHOICE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: getenv with a NUL-terminated name; the result is read
            // at once.
            let hg = unsafe {
                let p = libc::getenv(c"HG_DEMO_ALLOC".as_ptr());
                !p.is_null() && std::ffi::CStr::from_ptr(p).to_bytes() == b"hugeguard"
            };
            CHOICE.store(if hg { 2 } else { 1 }, Ordering::Relaxed);
            hg
        }
    }
}

// SAFETY: forwards every call to one allocator chosen before the first
// allocation and never changed.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe {
            if use_hugeguard() {
                hugeguard::HugeGuard.alloc(l)
            } else {
                System.alloc(l)
            }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded to the allocator that made `p`.
        unsafe {
            if use_hugeguard() {
                hugeguard::HugeGuard.dealloc(p, l)
            } else {
                System.dealloc(p, l)
            }
        }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe {
            if use_hugeguard() {
                hugeguard::HugeGuard.alloc_zeroed(l)
            } else {
                System.alloc_zeroed(l)
            }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: forwarded to the allocator that made `p`.
        unsafe {
            if use_hugeguard() {
                hugeguard::HugeGuard.realloc(p, l, n)
            } else {
                System.realloc(p, l, n)
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Switch = Switch;

struct Run {
    name: &'static str,
    live: usize,
    peak: usize,
    samples: Vec<(f64, usize)>,
    /// Seconds from the frees to the end of the idle period.
    idle_secs: Option<f64>,
    idle: usize,
    after: usize,
    anon_huge_after: usize,
    vmas: usize,
    refused: usize,
    collapsed: usize,
    corrupted: usize,
    /// With `--mthp`: the size's folios in the system (`nr_anon`, and
    /// `nr_anon_partially_mapped`) at the end of the idle period.
    folios_idle: Option<(usize, usize)>,
}

/// `nr_anon` and `nr_anon_partially_mapped` of the mTHP size of `kb` KiB
/// (system-wide counters; the children run one at a time).
fn mthp_folios(kb: usize) -> Option<(usize, usize)> {
    let dir = format!("/sys/kernel/mm/transparent_hugepage/hugepages-{kb}kB/stats");
    let read = |f: &str| -> Option<usize> {
        std::fs::read_to_string(format!("{dir}/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nr_anon")?, read("nr_anon_partially_mapped")?))
}

fn run(name: &'static str, mb: usize, idle: Duration, real: bool, mthp_kb: Option<usize>) -> Run {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    let alloc = if name == "hugeguard" {
        "hugeguard"
    } else {
        "system"
    };
    cmd.env("HG_DEMO_CHILD", format!("mixed:{mb}"))
        .env("HG_DEMO_ALLOC", alloc)
        .env(
            "HG_DEMO_TRIM",
            if name == "system+malloc_trim" {
                "1"
            } else {
                "0"
            },
        );
    let mut w = batch::Watched::spawn(cmd);
    let freed = w.expect("FREED");
    let live = batch::get(&freed, "live");
    let peak = batch::get(&freed, "peak");
    // Seconds since the frees were done (the chart's zero).
    let t0 = w.started.elapsed().as_secs_f64();
    let since_frees = |v: Vec<(f64, usize)>| v.into_iter().map(move |(t, b)| (t - t0, b));
    let mut samples: Vec<(f64, usize)> =
        since_frees(w.sample(idle, Duration::from_millis(250))).collect();
    let idle_rss = samples.last().map(|s| s.1).unwrap_or(0);
    let idle_secs = samples.last().map(|s| s.0);
    let folios_idle = mthp_kb.and_then(mthp_folios);
    let (refused, collapsed) = if real {
        // The real daemon: wait while it scans (a full pass over 1 GB takes
        // a few seconds at the sped-up rate).
        samples.extend(since_frees(
            w.sample(Duration::from_secs(30), Duration::from_millis(500)),
        ));
        w.signal();
        let _ = w.expect("SIM");
        (0, 0)
    } else {
        w.signal();
        let sim = w.expect("SIM");
        samples.extend(since_frees(
            w.sample(Duration::from_secs(2), Duration::from_millis(250)),
        ));
        (batch::get(&sim, "refused"), batch::get(&sim, "collapsed"))
    };
    let after = samples.last().map(|s| s.1).unwrap_or(0);
    let anon_huge_after = batch::anon_huge_of(w.pid());
    let vmas = batch::vmas_of(w.pid());
    let checked = w.finish();
    Run {
        name,
        live,
        peak,
        samples,
        idle_secs,
        idle: idle_rss,
        after,
        anon_huge_after,
        vmas,
        refused,
        collapsed,
        corrupted: batch::get(&checked, "corrupted"),
        folios_idle,
    }
}

fn svg(runs: &[Run], path: &str, real: bool, mb: usize) -> std::io::Result<()> {
    let series: Vec<(String, Vec<(f64, usize)>)> = runs
        .iter()
        .map(|r| (r.name.to_string(), r.samples.clone()))
        .collect();
    let title = format!(
        "RSS after a {mb} MB batch frees 63/64 and idles ({})",
        if real {
            "real khugepaged, sped up"
        } else {
            "then simulated worst-case khugepaged"
        }
    );
    // Samples start when the frees are done; the idle period follows.
    let idle = runs
        .iter()
        .filter_map(|r| r.idle_secs)
        .fold(0.0f64, f64::max);
    let event = if real {
        "khugepaged sped up"
    } else {
        "khugepaged (simulated)"
    };
    svg::line_chart(
        &series,
        path,
        &title,
        &[(0.0, "frees done".to_string()), (idle, event.to_string())],
    )
}
fn main() {
    if let Ok(spec) = std::env::var("HG_DEMO_CHILD") {
        let (name, mb) = spec.split_once(':').unwrap();
        let total = mb.parse::<usize>().unwrap() << 20;
        let trim = std::env::var("HG_DEMO_TRIM").as_deref() == Ok("1");
        batch::run_child_with(&GLOBAL, name, total, trim);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let real = args.iter().any(|a| a == "--real");
    let mb: usize = arg("--mb").and_then(|v| v.parse().ok()).unwrap_or(1024);
    let idle = Duration::from_secs(arg("--idle").and_then(|v| v.parse().ok()).unwrap_or(6));
    let svg_path = arg("--svg").unwrap_or_else(|| "target/khugepaged.svg".to_string());
    let _guard = if real {
        match sysfs::speed_up() {
            Ok(g) => Some(g),
            Err(e) => {
                sysfs::restore();
                eprintln!("--real: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let _thp_guard = arg("--thp").map(|word| match sysfs::thp_enabled(&word) {
        Ok(g) => g,
        Err(e) => {
            sysfs::restore();
            eprintln!("--thp: {e}");
            std::process::exit(2);
        }
    });
    let mthp_kb: Option<usize> = arg("--mthp").and_then(|v| v.parse().ok());
    let _mthp_guard = mthp_kb.map(|kb| match sysfs::mthp_always(kb) {
        Ok(g) => g,
        Err(e) => {
            sysfs::restore();
            eprintln!("--mthp: {e}");
            std::process::exit(2);
        }
    });
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let mpn =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none")
            .unwrap_or_default();
    println!("THP enabled: {}; max_ptes_none: {}", thp.trim(), mpn.trim());
    let mthp: Vec<String> = hugeguard_inspect::proc_files::thp_settings()
        .sizes
        .into_iter()
        .filter(|(_, w)| w != "never")
        .map(|(kb, w)| format!("{kb}K={w}"))
        .collect();
    println!(
        "mTHP sizes not `never`: {}",
        if mthp.is_empty() {
            "none".to_string()
        } else {
            mthp.join(" ")
        }
    );
    println!("workload: {mb} MB of mixed objects (70% 16-256 B, 25% 256 B-4 KiB, 5% 4-64 KiB), 63 of 64 freed, then idle\n");
    let mut runs = Vec::new();
    for name in ["system", "system+malloc_trim", "hugeguard"] {
        eprintln!("running {name} ...");
        runs.push(run(name, mb, idle, real, mthp_kb));
    }
    let mbf = |b: usize| b as f64 / 1048576.0;
    let after_label = if real {
        "after real khugepaged (30 s)"
    } else {
        "after simulated khugepaged"
    };
    println!("| allocator | live | peak RSS | RSS after {}s idle | {} | AnonHugePages | VMAs | chunks collapsed / refused |", idle.as_secs(), after_label);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {:.1} MB | {:.0} MB | {:.1} MB | {:.1} MB | {:.1} MB | {} | {} / {} |",
            r.name,
            mbf(r.live),
            mbf(r.peak),
            mbf(r.idle),
            mbf(r.after),
            mbf(r.anon_huge_after),
            r.vmas,
            r.collapsed,
            r.refused
        );
        assert_eq!(r.corrupted, 0, "{}: live objects corrupted", r.name);
    }
    if let Some(kb) = mthp_kb {
        println!("\n{kb} KiB folios in the system at the end of each idle period (nr_anon / nr_anon_partially_mapped):");
        for r in &runs {
            if let Some((n, partial)) = r.folios_idle {
                println!(
                    "  {:<20} {n} / {partial} ({:.1} MB in such folios)",
                    r.name,
                    mbf(n * kb * 1024)
                );
            }
        }
    }
    let hg = runs.last().unwrap();
    println!(
        "\nhugeguard: idle RSS = {:.2} x live (bound: 3.5 x live + 8 MiB = {:.0} MB); growth after khugepaged {:+.1}%",
        hg.idle as f64 / hg.live.max(1) as f64,
        mbf(hg.live * 7 / 2 + (8 << 20)),
        (hg.after as f64 / hg.idle.max(1) as f64 - 1.0) * 100.0
    );
    println!("RSS over time (s, MB):");
    for r in &runs {
        let pts: Vec<String> = r
            .samples
            .iter()
            .step_by(4)
            .map(|&(t, b)| format!("{t:.1}:{:.0}", mbf(b)))
            .collect();
        println!("  {:<20} {}", r.name, pts.join(" "));
    }
    match svg(&runs, &svg_path, real, mb) {
        Ok(()) => println!("\nplot written to {svg_path}"),
        Err(e) => eprintln!("cannot write {svg_path}: {e}"),
    }
}
