//! A real service, end to end: an HTTP server (tokio + axum) under load, then
//! idle, then khugepaged; once per allocator, each in its own process.
//!
//! ```sh
//! cargo run --release -p hugeguard-bench --example service            # about 2 minutes
//! cargo run --release -p hugeguard-bench --example service -- --mb 512 --only hugeguard,system
//! ```
//!
//! For each allocator it starts that allocator's server binary
//! (`examples/service_server_*.rs`, built on demand) on an ephemeral
//! loopback port, and drives it over HTTP from this process: a warm-up batch, then a burst of 4 connections ingesting JSON
//! records (and querying) until the server's RSS reaches the target, the end
//! of the batch (1 record in 64 kept), a quiet period, and the simulated
//! khugepaged (`POST /simulate-khugepaged`: MADV_COLLAPSE on every 2 MiB
//! range with a resident page; with `--real`, the real daemon sped up for
//! the whole run, sysfs restored afterwards). Prints a table and writes
//! `target/service.svg`; the figures in docs/SERVICE.md come from here.

use hugeguard_bench::batch::{anon_huge_of, rss_of, Rng};
use hugeguard_bench::service::{percentile_ms, records_json, Conn};
use hugeguard_bench::sysfs;
use hugeguard_inspect::chart::{write_svg, write_svg_with_x, Series};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 4;
const RECORDS_PER_REQUEST: usize = 500;

struct Options {
    target_mb: usize,
    quiet: Duration,
    /// The real khugepaged, sped up (root; sysfs restored afterwards),
    /// instead of the simulation.
    real: bool,
    allocators: Vec<&'static str>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let real = args.iter().any(|a| a == "--real");
    let allocators = match value("--only") {
        Some(list) => ALLOCATORS
            .into_iter()
            .filter(|c| list.split(',').any(|n| n == *c))
            .collect(),
        None => ALLOCATORS.to_vec(),
    };
    Options {
        target_mb: value("--mb").and_then(|v| v.parse().ok()).unwrap_or(1024),
        quiet: Duration::from_secs(
            value("--quiet")
                .and_then(|v| v.parse().ok())
                .unwrap_or(if real { 40 } else { 10 }),
        ),
        real,
        allocators,
    }
}

const ALLOCATORS: [&str; 4] = ["system", "hugeguard", "mimalloc", "jemalloc"];

/// The server binary for `name`: next to this one, or built now with the
/// cargo that runs us (`cargo run` sets `CARGO`); `None` when neither works.
fn server_binary(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(format!("service_server_{name}"));
    if !path.exists() {
        let cargo = std::env::var_os("CARGO")?;
        eprintln!("{name}: building service_server_{name} ...");
        let ok = Command::new(cargo)
            .args(["build", "--release", "-p", "hugeguard-bench", "--example"])
            .arg(format!("service_server_{name}"))
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
    }
    path.exists().then_some(path)
}

struct Outcome {
    name: &'static str,
    before: usize,
    peak: usize,
    /// AnonHugePages at the end of the burst.
    huge: usize,
    kept: usize,
    /// RSS over the quiet period: lowest and highest sample.
    quiet_range: (usize, usize),
    quiet: usize,
    after: usize,
    collapsed: u64,
    p50: f64,
    p99: f64,
    requests: usize,
    burst_secs: f64,
    /// (seconds from the end of the batch, RSS bytes)
    samples: Vec<(f64, usize)>,
    metrics_ok: bool,
    /// hugeguard's RSS breakdown from `/metrics` at the peak, at the end of
    /// the quiet period and after khugepaged (empty under another
    /// allocator).
    breakdown: Vec<(&'static str, Breakdown)>,
}

/// The parts of `hugeguard_rss_bytes{part=...}`, in bytes, in the order of
/// [`PARTS`], then `hugeguard_rss_unaccounted_bytes`.
type Breakdown = [f64; 10];
const PARTS: [&str; 9] = [
    "total",
    "live",
    "cached",
    "span_free",
    "held_back",
    "metadata",
    "profile",
    "outside_heap",
    "unaccounted",
];

/// Reads hugeguard's RSS breakdown from the service's `/metrics`; `None`
/// when hugeguard is not the server's allocator.
async fn breakdown_of(ctl: &mut Conn) -> std::io::Result<Option<Breakdown>> {
    let (_, m) = ctl.request("GET", "/metrics", b"").await?;
    let m = String::from_utf8_lossy(&m);
    if !m.lines().any(|l| l == "hugeguard_active 1") {
        return Ok(None);
    }
    let value = |prefix: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let mut b = [0.0; 10];
    for (i, part) in PARTS[..8].iter().enumerate() {
        b[i] = value(&format!("hugeguard_rss_bytes{{part=\"{part}\"}} "));
    }
    b[8] = value("hugeguard_rss_unaccounted_bytes ");
    b[9] = value("hugeguard_profile_estimated_live_bytes{kind=\"estimate\"} ");
    Ok(Some(b))
}

/// Starts a server binary; returns it, its pid and its address.
fn start_server(
    server: &std::path::Path,
) -> std::io::Result<(std::process::Child, u32, SocketAddr)> {
    let mut child = Command::new(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let port: u16 = line
        .strip_prefix("LISTEN ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("server said {line:?}")))?;
    Ok((child, pid, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// A small batch, queried and ended.
async fn warm_up(ctl: &mut Conn, next_id: &Arc<AtomicU64>) -> std::io::Result<()> {
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        let first = next_id.fetch_add(RECORDS_PER_REQUEST as u64, Ordering::Relaxed);
        ctl.json(
            "POST",
            "/ingest",
            &records_json(&mut rng, first, RECORDS_PER_REQUEST),
        )
        .await?;
        ctl.json("GET", "/query?tag=t7", b"").await?;
    }
    ctl.json("POST", "/end-batch", b"").await?;
    Ok(())
}

/// When a burst stops.
#[derive(Clone, Copy)]
enum Until {
    /// The server's RSS reaches this many bytes.
    Rss(usize),
    /// Records up to this id have been sent.
    Id(u64),
}

/// CONNECTIONS clients ingest, query and look up until `until` (at most
/// 60 s); RSS samples go to `samples` (seconds
/// since `start`). Returns the latencies, the peak RSS and the seconds.
async fn burst(
    addr: SocketAddr,
    pid: u32,
    until: Until,
    next_id: &Arc<AtomicU64>,
    start: Instant,
    samples: &mut Vec<(f64, usize)>,
    seed: u64,
) -> std::io::Result<(Vec<Duration>, usize, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let burst_start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CONNECTIONS {
        let (stop, next_id) = (stop.clone(), next_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let mut rng = Rng::new(seed + k as u64);
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let first = next_id.fetch_add(RECORDS_PER_REQUEST as u64, Ordering::Relaxed);
                let body = records_json(&mut rng, first, RECORDS_PER_REQUEST);
                let t = Instant::now();
                conn.json("POST", "/ingest", &body).await?;
                lat.push(t.elapsed());
                let tag = format!("/query?tag=t{}", rng.range(0, 200));
                let t = Instant::now();
                conn.json("GET", &tag, b"").await?;
                lat.push(t.elapsed());
                let id = rng.range(0, first as usize + 1);
                let t = Instant::now();
                conn.request("GET", &format!("/record/{id}"), b"").await?;
                lat.push(t.elapsed());
            }
            Ok::<_, std::io::Error>(lat)
        }));
    }
    let mut peak = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rss = rss_of(pid);
        peak = peak.max(rss);
        samples.push((start.elapsed().as_secs_f64(), rss));
        let done = match until {
            Until::Rss(target) => rss >= target,
            Until::Id(limit) => next_id.load(Ordering::Relaxed) >= limit,
        };
        if done || burst_start.elapsed() > Duration::from_secs(60) {
            stop.store(true, Ordering::Relaxed);
        }
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(std::io::Error::other)??);
    }
    let burst_secs = burst_start.elapsed().as_secs_f64();
    peak = peak.max(rss_of(pid));
    Ok((lat, peak, burst_secs))
}

/// A soak of one allocator: repeated bursts and quiet windows.
struct Soak {
    name: &'static str,
    /// Per cycle, at the end of its quiet window: (seconds, RSS, kept).
    cycles: Vec<(f64, usize, usize)>,
    /// Per cycle, hugeguard's own view at the same moment (zero under
    /// another allocator): (allocated bytes, resident bytes).
    heap: Vec<(usize, usize)>,
    samples: Vec<(f64, usize)>,
}

/// Bursts and quiet windows until `minutes` pass. The first burst grows
/// the server to `target_mb`; later ones ingest as many records as it did
/// (an allocator that keeps its peak would otherwise stop at once). The
/// snapshot keeps 1 record in 64 of every batch, so what the service keeps
/// grows by design; the slope that matters is RSS minus kept.
async fn soak(
    name: &'static str,
    server: std::path::PathBuf,
    target_mb: usize,
    minutes: f64,
    window: Duration,
) -> std::io::Result<Soak> {
    let (mut child, pid, addr) = start_server(&server)?;
    let start = Instant::now();
    let mut ctl = Conn::connect(addr).await?;
    let next_id = Arc::new(AtomicU64::new(0));
    warm_up(&mut ctl, &next_id).await?;
    let (mut samples, mut cycles, mut heap) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_batch = None;
    let mut seed = 100;
    while start.elapsed().as_secs_f64() < minutes * 60.0 {
        let first = next_id.load(Ordering::Relaxed);
        let until = per_batch.map_or(Until::Rss(target_mb << 20), |n| Until::Id(first + n));
        burst(addr, pid, until, &next_id, start, &mut samples, seed).await?;
        per_batch.get_or_insert(next_id.load(Ordering::Relaxed) - first);
        seed += 10;
        let end = ctl.json("POST", "/end-batch", b"").await?;
        let kept = end["kept_bytes"].as_u64().unwrap_or(0) as usize;
        let quiet = Instant::now();
        while quiet.elapsed() < window {
            tokio::time::sleep(Duration::from_secs(1)).await;
            samples.push((start.elapsed().as_secs_f64(), rss_of(pid)));
        }
        let rss = rss_of(pid);
        cycles.push((start.elapsed().as_secs_f64(), rss, kept));
        let st = ctl.json("GET", "/stats", b"").await?;
        let field = |k: &str| st["hugeguard"][k].as_u64().unwrap_or(0) as usize;
        heap.push((field("allocated_bytes"), field("resident_bytes")));
        eprintln!(
            "{name}: cycle {} at {:.0} s: RSS {:.1} MB, kept {:.1} MB, allocated {:.1} MB",
            cycles.len(),
            start.elapsed().as_secs_f64(),
            mb(rss),
            mb(kept),
            mb(field("allocated_bytes"))
        );
    }
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(Soak {
        name,
        cycles,
        heap,
        samples,
    })
}

/// Least-squares slope of (seconds, bytes) points, in MB per hour.
fn slope_mb_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx * 3600.0 / 1e6
    }
}

/// `--soak MINUTES`: every allocator at once, each with its own server.
fn run_soak(opts: &Options, minutes: f64, window: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut tasks = Vec::new();
    for &name in &opts.allocators {
        let Some(server) = server_binary(name) else {
            eprintln!("{name}: not built");
            continue;
        };
        tasks.push(rt.spawn(soak(name, server, opts.target_mb, minutes, window)));
    }
    let soaks: Vec<Soak> = tasks
        .into_iter()
        .filter_map(|t| match rt.block_on(t) {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                eprintln!("soak failed: {e}");
                None
            }
            Err(e) => {
                eprintln!("soak failed: {e}");
                None
            }
        })
        .collect();
    println!(
        "\nSoak: {minutes} min, bursts to {} MB then {} s quiet windows, all allocators at once, {}\n",
        opts.target_mb,
        window.as_secs(),
        if opts.real { "the real khugepaged sped up throughout" } else { "no khugepaged simulation" }
    );
    println!("| allocator | cycles | RSS after the first quiet window | after the last | kept at the end | RSS slope | (RSS - kept) slope |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for s in &soaks {
        let rss: Vec<(f64, f64)> = s.cycles.iter().map(|c| (c.0, c.1 as f64)).collect();
        let over: Vec<(f64, f64)> = s
            .cycles
            .iter()
            .map(|c| (c.0, c.1 as f64 - c.2 as f64))
            .collect();
        let (first, last) = (s.cycles.first(), s.cycles.last());
        println!(
            "| {} | {} | {:.1} MB | {:.1} MB | {:.1} MB | {:+.1} MB/hour | {:+.1} MB/hour |",
            s.name,
            s.cycles.len(),
            first.map_or(0.0, |c| mb(c.1)),
            last.map_or(0.0, |c| mb(c.1)),
            last.map_or(0.0, |c| mb(c.2)),
            slope_mb_per_hour(&rss),
            slope_mb_per_hour(&over)
        );
    }
    // hugeguard's own view separates what the program holds (allocated,
    // which includes the service's indexes however it counts them) from
    // what the allocator keeps resident beyond it.
    for s in soaks.iter().filter(|s| s.heap.iter().any(|h| h.0 > 0)) {
        type Cycle = (f64, usize, usize);
        let points = |f: fn(&Cycle, &(usize, usize)) -> f64| -> Vec<(f64, f64)> {
            s.cycles
                .iter()
                .zip(&s.heap)
                .map(|(c, h)| (c.0, f(c, h)))
                .collect()
        };
        let alloc = points(|_, h| h.0 as f64);
        let over_alloc = points(|c, h| c.1 as f64 - h.0 as f64);
        let over_kept = points(|c, h| h.0 as f64 - c.2 as f64);
        let (first, last) = (s.heap.first(), s.heap.last());
        println!(
            "\n{}: allocated {:.1} MB after the first window, {:.1} MB after the last; \
             slopes: allocated {:+.1} MB/hour, allocated - kept {:+.1} MB/hour, \
             RSS - allocated {:+.1} MB/hour",
            s.name,
            first.map_or(0.0, |h| mb(h.0)),
            last.map_or(0.0, |h| mb(h.0)),
            slope_mb_per_hour(&alloc),
            slope_mb_per_hour(&over_kept),
            slope_mb_per_hour(&over_alloc)
        );
        println!("| cycle | minutes | RSS | allocated | kept |");
        println!("|---:|---:|---:|---:|---:|");
        for (i, (c, h)) in s.cycles.iter().zip(&s.heap).enumerate() {
            println!(
                "| {} | {:.1} | {:.1} MB | {:.1} MB | {:.1} MB |",
                i + 1,
                c.0 / 60.0,
                mb(c.1),
                mb(h.0),
                mb(c.2)
            );
        }
    }
    let series: Vec<Series> = soaks
        .iter()
        .map(|s| Series {
            label: s.name.to_string(),
            points: s.samples.iter().map(|&(t, r)| (t / 60.0, mb(r))).collect(),
        })
        .collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/service-soak.svg");
    match write_svg_with_x(
        &path,
        "HTTP service soak: RSS (MB) over minutes",
        "time (min)",
        &series,
        &[],
    ) {
        Ok(()) => println!("\nchart (x in minutes): {}", path.display()),
        Err(e) => eprintln!("chart: {e}"),
    }
}

async fn drive(
    name: &'static str,
    server: &std::path::Path,
    opts: &Options,
) -> std::io::Result<Outcome> {
    let (mut child, pid, addr) = start_server(server)?;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut ctl = Conn::connect(addr).await?;
    let next_id = Arc::new(AtomicU64::new(0));

    warm_up(&mut ctl, &next_id).await?;
    // RSS before the burst: once it has not moved for 2 s (an allocator
    // that releases by itself has then done so), at most 8 s.
    let mut before = rss_of(pid);
    let (mut still, settle) = (0, Instant::now());
    while still < 8 && settle.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_of(pid);
        still = if now.abs_diff(before) < 64 << 10 {
            still + 1
        } else {
            0
        };
        before = now;
    }

    // The burst: CONNECTIONS clients until the server's RSS reaches the target.
    let until = Until::Rss(opts.target_mb << 20);
    let (mut lat, burst_peak, burst_secs) =
        burst(addr, pid, until, &next_id, start, &mut samples, 100).await?;
    let peak = burst_peak.max(before);
    let huge = anon_huge_of(pid);
    let mut breakdown = Vec::new();
    if let Some(b) = breakdown_of(&mut ctl).await? {
        breakdown.push(("end of the burst", b));
    }

    // The batch ends: 1 in 64 records kept (copied into the snapshot).
    let end = ctl.json("POST", "/end-batch", b"").await?;
    let kept = end["kept_bytes"].as_u64().unwrap_or(0) as usize;
    let t_end = start.elapsed().as_secs_f64();

    // Quiet: no request at all.
    let quiet_start = Instant::now();
    let mut quiet_range = (usize::MAX, 0);
    while quiet_start.elapsed() < opts.quiet {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss = rss_of(pid);
        quiet_range = (quiet_range.0.min(rss), quiet_range.1.max(rss));
        samples.push((start.elapsed().as_secs_f64(), rss));
    }
    let quiet = rss_of(pid);
    if let Some(b) = breakdown_of(&mut ctl).await? {
        breakdown.push(("end of the quiet period", b));
    }

    // khugepaged, simulated: the worst it could do, now. With --real the
    // sped-up daemon has been scanning through the whole quiet period, and
    // its result is the RSS at the end of it.
    let sim = if opts.real {
        serde_json::json!({"collapsed": 0})
    } else {
        ctl.json("POST", "/simulate-khugepaged", b"").await?
    };
    let after = rss_of(pid);
    samples.push((start.elapsed().as_secs_f64(), after));
    if let Some(b) = breakdown_of(&mut ctl).await? {
        breakdown.push(("after khugepaged", b));
    }
    let (status, m) = ctl.request("GET", "/metrics", b"").await?;
    let m = String::from_utf8_lossy(&m);
    if std::env::var_os("SERVICE_SHOW_METRICS").is_some() {
        eprintln!("{m}");
    }
    let metrics_ok = status == 200
        && m.contains("hugeguard_active")
        && m.contains("process_resident_memory_bytes")
        && m.contains("service_kept_bytes");
    drop(child.stdin.take());
    let _ = child.wait();

    lat.sort();
    Ok(Outcome {
        name,
        before,
        peak,
        huge,
        kept,
        quiet_range,
        quiet,
        after,
        collapsed: sim["collapsed"].as_u64().unwrap_or(0),
        p50: percentile_ms(&lat, 50.0),
        p99: percentile_ms(&lat, 99.0),
        requests: lat.len(),
        burst_secs,
        samples: samples.into_iter().map(|(t, r)| (t - t_end, r)).collect(),
        metrics_ok,
        breakdown,
    })
}

fn mb(b: usize) -> f64 {
    b as f64 / 1e6
}

fn main() {
    let opts = options();
    let args: Vec<String> = std::env::args().collect();
    let soak_minutes = args
        .iter()
        .position(|a| a == "--soak")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // --real: THP always and a fast khugepaged for the whole run, restored
    // when the guard drops (also on failure or Ctrl-C).
    let _guard = if opts.real {
        match sysfs::speed_up() {
            Ok(g) => Some(g),
            Err(e) => {
                sysfs::restore();
                eprintln!("--real: {e}");
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    if let Some(minutes) = soak_minutes {
        run_soak(&opts, minutes, Duration::from_secs(60));
        return;
    }
    let event = if opts.real {
        "the real khugepaged, sped up (THP enabled=always)"
    } else {
        "the simulated khugepaged"
    };
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for &name in &opts.allocators {
        let Some(server) = server_binary(name) else {
            missing.push(name);
            continue;
        };
        eprintln!("{name}: serving, burst to {} MB ...", opts.target_mb);
        match rt.block_on(drive(name, &server, &opts)) {
            Ok(o) => results.push(o),
            Err(e) => eprintln!("{name}: failed: {e}"),
        }
    }
    println!(
        "\nA service under load, then quiet for {} s, then {event} (burst to {} MB RSS; {CONNECTIONS} connections, {RECORDS_PER_REQUEST} records per ingest; 1 in 64 records kept)\n",
        opts.quiet.as_secs(),
        opts.target_mb
    );
    let after_col = if opts.real {
        "RSS at the end (real khugepaged)"
    } else {
        "after simulated khugepaged"
    };
    println!("| allocator | RSS before burst | peak RSS | AnonHugePages at peak | kept (service's count) | RSS during quiet | RSS after quiet | {after_col} | bound 1.25 x (before + kept) | within | requests | p50 | p99 | /metrics |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
    for o in &results {
        let bound = 1.25 * (o.before + o.kept) as f64;
        let within = (o.quiet as f64) <= bound && (o.after as f64) <= bound;
        println!(
            "| {} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB | {:.1}-{:.1} MB | {:.1} MB | {:.1} MB{} | {:.1} MB | {} | {} in {:.1} s | {:.2} ms | {:.2} ms | {} |",
            o.name,
            mb(o.before),
            mb(o.peak),
            mb(o.huge),
            mb(o.kept),
            mb(o.quiet_range.0),
            mb(o.quiet_range.1),
            mb(o.quiet),
            mb(o.after),
            if opts.real {
                String::new()
            } else {
                format!(" ({} collapsed)", o.collapsed)
            },
            bound / 1e6,
            if within { "yes" } else { "no" },
            o.requests,
            o.burst_secs,
            o.p50,
            o.p99,
            if o.metrics_ok { "ok" } else { "missing" }
        );
    }
    for name in missing {
        println!("| {name} | not built | | | | | | | | | | | | |");
    }
    for o in results.iter().filter(|o| !o.breakdown.is_empty()) {
        println!("\n{}'s RSS breakdown from /metrics (MB; the parts' sum against the RSS read in the same scrape)\n", o.name);
        println!("| point | RSS | live | profile's estimate | caches | free in spans | held back | metadata | profile | outside heap | unaccounted | parts' sum - RSS |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (point, b) in &o.breakdown {
            let sum: f64 = b[1..8].iter().sum();
            let est = if b[9].is_nan() {
                "-".to_string()
            } else {
                format!("{:.1}", b[9] / 1e6)
            };
            println!(
                "| {point} | {:.1} | {:.1} | {est} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | {:+.2} % |",
                b[0] / 1e6,
                b[1] / 1e6,
                b[2] / 1e6,
                b[3] / 1e6,
                b[4] / 1e6,
                b[5] / 1e6,
                b[6] / 1e6,
                b[7] / 1e6,
                b[8] / 1e6,
                (sum - b[0]) / b[0] * 100.0
            );
        }
    }
    let series: Vec<Series> = results
        .iter()
        .map(|o| Series {
            label: o.name.to_string(),
            points: o.samples.iter().map(|&(t, r)| (t, mb(r))).collect(),
        })
        .collect();
    let quiet = opts.quiet.as_secs_f64();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/service.svg");
    let markers = if opts.real {
        vec![(0.0, "batch ends; khugepaged sped up throughout".to_string())]
    } else {
        vec![
            (0.0, "batch ends".to_string()),
            (quiet, "khugepaged (simulated)".to_string()),
        ]
    };
    match write_svg(
        &path,
        "HTTP service: RSS (MB) around the end of a batch",
        &series,
        &markers,
    ) {
        Ok(()) => println!("\nchart: {}", path.display()),
        Err(e) => eprintln!("chart: {e}"),
    }
}
