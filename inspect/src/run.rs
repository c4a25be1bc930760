//! `hugeguard-inspect run`: start a program under a chosen allocator
//! (`LD_PRELOAD`), sample its RSS, and when it goes idle report its
//! exposure, simulate khugepaged and measure again.
//!
//! Idle means one of: the program sent SIGUSR1 to the inspector (its pid is
//! in the child's `HUGEGUARD_INSPECT_PID`), a fixed number of seconds
//! passed (`--idle`), or the program used no CPU time for the quiet window
//! (CPU time from `/proc/PID/stat`, in clock ticks).

use crate::{inspect, proc_files, simulate, sys, Assume, Report, Simulation};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Which allocator the program runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// Its own (glibc's malloc for a C program).
    System,
    /// `libhugeguard_preload.so`: `$HUGEGUARD_PRELOAD_LIB`, or the one built
    /// next to this binary.
    Hugeguard,
    /// Any malloc replacement library.
    Library(PathBuf),
}

impl Allocator {
    pub fn parse(s: &str) -> Allocator {
        match s {
            "system" | "glibc" => Allocator::System,
            "hugeguard" => Allocator::Hugeguard,
            path => Allocator::Library(PathBuf::from(path)),
        }
    }

    /// The library to preload, if any.
    pub fn library(&self) -> Result<Option<PathBuf>, String> {
        match self {
            Allocator::System => Ok(None),
            Allocator::Library(p) if p.exists() => Ok(Some(p.clone())),
            Allocator::Library(p) => Err(format!("{}: no such library", p.display())),
            Allocator::Hugeguard => hugeguard_library().map(Some).ok_or_else(|| {
                "libhugeguard_preload.so not found: build it (cargo build --release \
                 --workspace) or set HUGEGUARD_PRELOAD_LIB"
                    .to_string()
            }),
        }
    }
}

/// `$HUGEGUARD_PRELOAD_LIB`, or `libhugeguard_preload.so` in the directory of
/// this executable, its parent or its `deps/` (how cargo lays out a target
/// directory).
pub fn hugeguard_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HUGEGUARD_PRELOAD_LIB") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let name = "libhugeguard_preload.so";
    [
        dir.join(name),
        dir.join("deps").join(name),
        dir.parent()?.join(name),
        dir.parent()?.join("deps").join(name),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// How `run` decides the program is idle, and what it does then.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub allocator: Allocator,
    /// Idle after this long, whatever the program does.
    pub idle_after: Option<Duration>,
    /// Idle once the program used no CPU time for this long.
    pub quiet: Duration,
    /// Give up after this long without idleness.
    pub timeout: Duration,
    pub assume: Assume,
    pub simulate: bool,
    /// Environment for the program (beyond the inspector's own).
    pub env: Vec<(String, String)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            allocator: Allocator::System,
            idle_after: None,
            quiet: Duration::from_secs(2),
            timeout: Duration::from_secs(600),
            assume: Assume::Configured,
            simulate: true,
            env: Vec::new(),
        }
    }
}

/// What `run` measured.
#[derive(Debug)]
pub struct RunOutcome {
    /// RSS samples: (seconds since start, bytes).
    pub samples: Vec<(f64, u64)>,
    /// When and why the program counted as idle.
    pub idle_at: f64,
    pub idle_reason: String,
    /// The report at that moment.
    pub report: Report,
    /// The simulation, or why it did not run.
    pub simulation: Option<Result<Simulation, String>>,
    /// When the simulation began (collapsing 2 MiB ranges takes a few ms
    /// each).
    pub simulated_at: f64,
    /// RSS right after the simulation.
    pub rss_after: Option<u64>,
}

/// Kills and reaps the child when dropped.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (program and arguments) and measures it as the module
/// overview says. The program is killed at the end.
pub fn run(cmd: &[String], opts: &RunOptions) -> Result<RunOutcome, String> {
    let (prog, args) = cmd.split_first().ok_or("run: no command given")?;
    let mut c = Command::new(prog);
    // The program's output goes to stderr: stdout is the report's (--json).
    c.args(args)
        .stdout(std::io::stderr())
        .env("HUGEGUARD_INSPECT_PID", std::process::id().to_string());
    if let Some(lib) = opts.allocator.library()? {
        c.env("LD_PRELOAD", lib);
    }
    for (k, v) in &opts.env {
        c.env(k, v);
    }
    sys::catch_usr1();
    sys::take_usr1();
    let child = c.spawn().map_err(|e| format!("{prog}: {e}"))?;
    let mut child = Reaper(child);
    let pid = child.0.id();
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last_ticks = None;
    let mut last_change = Instant::now();
    let idle_reason = loop {
        if let Some(status) = child.0.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("{prog} exited ({status}) before it went idle"));
        }
        let t = start.elapsed();
        let rss = proc_files::status(pid).map_err(|e| e.to_string())?.rss;
        samples.push((t.as_secs_f64(), rss));
        let (_, ticks) = proc_files::cpu_ticks(pid).map_err(|e| e.to_string())?;
        if last_ticks != Some(ticks) {
            last_ticks = Some(ticks);
            last_change = Instant::now();
        }
        if sys::take_usr1() {
            break "the program signalled (SIGUSR1)".to_string();
        }
        match opts.idle_after {
            Some(d) if t >= d => break format!("{:.1} s passed (--idle)", d.as_secs_f64()),
            Some(_) => {}
            None if last_change.elapsed() >= opts.quiet => {
                break format!("no CPU time used for {:.1} s", opts.quiet.as_secs_f64())
            }
            None => {}
        }
        if t >= opts.timeout {
            return Err(format!(
                "{prog} did not go idle within {:.0} s",
                opts.timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let idle_at = start.elapsed().as_secs_f64();
    let report = inspect(pid, opts.assume).map_err(|e| e.to_string())?;
    let mut outcome = RunOutcome {
        samples,
        idle_at,
        idle_reason,
        report,
        simulation: None,
        simulated_at: 0.0,
        rss_after: None,
    };
    if opts.simulate {
        // RSS as it stood until the collapse began (the chart's flat part).
        let rss = proc_files::status(pid).map_err(|e| e.to_string())?.rss;
        outcome.simulated_at = start.elapsed().as_secs_f64();
        outcome.samples.push((outcome.simulated_at, rss));
        let sim = simulate(&outcome.report).map_err(|e| e.to_string());
        if sim.is_ok() {
            let rss = proc_files::status(pid).map_err(|e| e.to_string())?.rss;
            outcome.rss_after = Some(rss);
            // A few more samples, for the chart.
            for _ in 0..5 {
                let rss = proc_files::status(pid).map_err(|e| e.to_string())?.rss;
                outcome.samples.push((start.elapsed().as_secs_f64(), rss));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        outcome.simulation = Some(sim);
    }
    Ok(outcome)
}
