//! hugeguard-inspect against real child processes: a C program under glibc
//! with `malloc_trim`, the same program under `libhugeguard_preload.so`, and
//! a Rust program using `HugeGuard` (this test binary, re-executed). Each
//! frees 63 of 64 objects of a batch and goes idle; the prediction (RSS +
//! exposure) is checked against the RSS the kernel gives after the
//! simulated khugepaged, within 5 %. Simulating needs root and Linux 6.1;
//! without them those checks are skipped with a message and the
//! predictions are still checked.

use hugeguard_inspect::{inspect, proc_files, simulate, Assume, Report, SimulateError};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

const BATCH_MB: usize = 128;
const BATCH_BYTES: u64 = (BATCH_MB as u64) << 20;
const CHILD_ENV: &str = "HUGEGUARD_INSPECT_TEST_CHILD";

/// Kills and reaps the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use hugeguard_testkit::paths::{preload_library, target_dir};

/// Compiles `tests/c/NAME.c` next to this test binary.
fn compile(name: &str) -> PathBuf {
    hugeguard_testkit::c::compile_once(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        name,
        &target_dir().join(format!("inspect-c-{name}")),
        &["-O2", "-w"],
    )
}

/// Starts `cmd` and waits for its `READY` line. The child keeps running
/// with its standard output closed; it writes nothing more.
fn start(mut cmd: Command) -> Proc {
    cmd.stdout(Stdio::piped())
        .env("HUGEGUARD_HOLDBACK_MS", "200");
    let mut p = Proc(cmd.spawn().unwrap());
    let out = p.0.stdout.take().unwrap();
    // The Rust child is a test binary: libtest prints its own lines first.
    let mut said = String::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        // (libtest may print "test rust_child ... " on the same line.)
        if line.contains("READY") {
            return p;
        }
        said += &line;
    }
    panic!("the child ended without READY: {said:?}");
}

/// Reports on `pid` until the exposure stops falling (an allocator that
/// releases by itself finishes within a few seconds of going idle).
fn settled_report(pid: u32, within: Duration) -> Report {
    let deadline = Instant::now() + within;
    let mut r = inspect(pid, Assume::Always).unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let next = inspect(pid, Assume::Always).unwrap();
        let settled = next.rss_bytes + (1 << 20) >= r.rss_bytes
            && next.exposure_bytes + (1 << 20) >= r.exposure_bytes;
        r = next;
        if settled || Instant::now() > deadline {
            return r;
        }
    }
}

/// The prediction holds (RSS + exposure), and, where the kernel lets us
/// simulate, the measured RSS after it is within 5 % of the prediction.
fn check_prediction(name: &str, pid: u32, r: &Report) {
    assert_eq!(r.pid, pid);
    assert_eq!(r.predicted_rss_bytes, r.rss_bytes + r.exposure_bytes);
    let listed: u64 = r.mappings.iter().map(|m| m.exposure_bytes).sum();
    assert_eq!(listed, r.exposure_bytes);
    match simulate(r) {
        Ok(sim) => {
            let after = proc_files::status(pid).unwrap().rss;
            let err = after as f64 / r.predicted_rss_bytes as f64 - 1.0;
            eprintln!(
                "{name}: RSS {} MB, exposure {} MB, predicted {} MB, after simulate {} MB \
                 ({:+.1} %), {} collapsed, {} refused",
                r.rss_bytes >> 20,
                r.exposure_bytes >> 20,
                r.predicted_rss_bytes >> 20,
                after >> 20,
                err * 100.0,
                sim.collapsed,
                sim.refused
            );
            assert!(
                err.abs() <= 0.05,
                "{name}: predicted {} B, measured {after} B after collapsing",
                r.predicted_rss_bytes
            );
        }
        Err(e @ (SimulateError::NotPermitted | SimulateError::Unsupported(_))) => {
            eprintln!("{name}: simulate skipped: {e}");
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn glibc_with_malloc_trim_is_exposed_and_the_prediction_holds() {
    let mut cmd = Command::new(compile("sparse"));
    cmd.args([&BATCH_MB.to_string(), "trim"]);
    let p = start(cmd);
    let pid = p.0.id();
    let r = inspect(pid, Assume::Always).unwrap();
    // malloc_trim gave back the free pages inside the heap, leaving one
    // live object in most 2 MiB ranges: most of the batch can come back.
    assert!(
        r.exposure_bytes > BATCH_BYTES / 2,
        "exposure {} of a {BATCH_MB} MB batch",
        r.exposure_bytes
    );
    assert!(r.rss_bytes < BATCH_BYTES / 3, "rss {}", r.rss_bytes);
    let heap = r.mappings.iter().find(|m| m.path == "[heap]").unwrap();
    assert!(heap.collapsible && heap.exposure_bytes > 0);
    check_prediction("glibc + malloc_trim", pid, &r);
}

#[test]
fn the_preload_library_leaves_nothing_exposed() {
    let mut cmd = Command::new(compile("sparse"));
    cmd.args([&BATCH_MB.to_string(), "keep", "1"])
        .env("LD_PRELOAD", preload_library());
    assert_left_unexposed("hugeguard (LD_PRELOAD)", cmd);
}

/// Starts a hugeguard child, waits for its release to settle, and checks
/// that under 5 % of the batch is exposed and the prediction holds.
fn assert_left_unexposed(name: &str, cmd: Command) {
    let p = start(cmd);
    let pid = p.0.id();
    let r = settled_report(pid, Duration::from_secs(5));
    assert!(
        r.exposure_bytes < BATCH_BYTES / 20,
        "{name}: exposure {} B",
        r.exposure_bytes
    );
    check_prediction(name, pid, &r);
}

/// Not a test of its own: the Rust child, run by the test below.
#[test]
#[ignore]
fn rust_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let total = BATCH_MB << 20;
    let mut all: Vec<Box<[u8]>> = Vec::new();
    let (mut bytes, mut s) = (0usize, 88172645463325252u64);
    while bytes < total {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let size = match s % 100 {
            0..70 => 16 + (s % 241) as usize,
            70..95 => 256 + (s % 3841) as usize,
            _ => 4096 + (s % 61441) as usize,
        };
        all.push(vec![s as u8; size].into_boxed_slice());
        bytes += size;
    }
    let mut i = 0;
    all.retain(|_| {
        i += 1;
        i % 64 == 0
    });
    std::hint::black_box(&all);
    println!("READY kept={}", all.len());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_rust_program_using_hugeguard_leaves_nothing_exposed() {
    let mut cmd = hugeguard_testkit::child::command("rust_child");
    cmd.env(CHILD_ENV, "1");
    assert_left_unexposed("hugeguard (Rust)", cmd);
}

#[test]
fn a_process_that_has_exited_is_reported_as_such() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let e = inspect(pid, Assume::Configured).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hugeguard-inspect"))
}

#[test]
fn the_json_report_has_the_documented_fields() {
    let mut cmd = Command::new(compile("sparse"));
    cmd.args(["32", "trim"]);
    let p = start(cmd);
    let out = cli()
        .args([&p.0.id().to_string(), "--json", "--always"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "pid",
        "rss_bytes",
        "anon_huge_bytes",
        "exposure_bytes",
        "predicted_rss_bytes",
        "max_ptes_none",
        "thp_enabled",
        "mappings",
        "page_size",
        "huge_page_size",
    ] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    // This machine's geometry, as the kernel gives it.
    let pmd = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
        .map_or(0, |t| t.trim().parse::<u64>().unwrap());
    assert_eq!(v["page_size"].as_u64(), Some(4096));
    assert_eq!(v["huge_page_size"].as_u64(), Some(pmd));
    assert_eq!(v["pid"].as_u64(), Some(u64::from(p.0.id())));
    assert!(v["exposure_bytes"].as_u64().unwrap() > 8 << 20, "{v}");
    let m = &v["mappings"][0];
    for key in [
        "start",
        "path",
        "size_bytes",
        "rss_bytes",
        "collapsible",
        "exposure_bytes",
    ] {
        assert!(m.get(key).is_some(), "no {key} in {m}");
    }
    // The readable form names the same numbers.
    let text = cli()
        .arg(p.0.id().to_string())
        .arg("--always")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("exposure") && text.contains("[heap]"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "geometry: 4 KiB pages, {} KiB huge pages",
            pmd >> 10
        )),
        "{text}"
    );
}

#[test]
fn watch_samples_and_writes_a_chart() {
    let mut cmd = Command::new(compile("sparse"));
    cmd.args(["16"]);
    let p = start(cmd);
    let svg = target_dir().join("inspect-watch-test.svg");
    let _ = std::fs::remove_file(&svg);
    let out = cli()
        .args([
            &p.0.id().to_string(),
            "--watch",
            "0.5",
            "--interval",
            "0.2",
            "--svg",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().filter(|l| l.contains(" MB")).count() >= 2,
        "{text}"
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("<svg") && chart.contains("RSS"), "{chart}");
}

#[test]
fn run_starts_a_program_and_reports_when_it_signals_idle() {
    let prog = compile("sparse");
    let out = cli()
        .args([
            "run",
            "--allocator",
            "system",
            "--always",
            "--json",
            "--timeout",
            "30",
        ])
        .arg("--")
        .arg(&prog)
        .args(["32", "trim"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["exposure_bytes"].as_u64().unwrap() > 8 << 20, "{v}");
    match v.get("rss_after_simulation_bytes").and_then(|a| a.as_u64()) {
        Some(after) => {
            let predicted = v["predicted_rss_bytes"].as_u64().unwrap() as f64;
            assert!((after as f64 / predicted - 1.0).abs() <= 0.05, "{v}");
        }
        None => assert!(err.contains("not simulated"), "{err}"),
    }
    // A program that exits first is an error with a message.
    let out = cli().args(["run", "--", "true"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("before it went idle"));
}
