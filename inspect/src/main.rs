//! The `hugeguard-inspect` command line: report, `--json`, `--simulate`,
//! `--watch`, and `run`. See `docs/INSPECT.md`.

use clap::{Args, Parser, Subcommand};
use hugeguard_inspect::chart::{write_svg, Series};
use hugeguard_inspect::exporter::{self, ScanOptions};
use hugeguard_inspect::report::{mb, render, render_simulation};
use hugeguard_inspect::run::{run, Allocator, RunOptions};
use hugeguard_inspect::{inspect, proc_files, simulate, Assume, Report, Simulation};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// See, predict and reproduce khugepaged's RSS inflation in a running
/// process: how many bytes collapsing its sparse 2 MiB ranges into huge
/// pages would add, where, and (with --simulate) what the kernel does.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The process to inspect.
    pid: Option<u32>,
    #[command(flatten)]
    common: Common,
    /// Collapse every range the report counts, now (process_madvise with
    /// MADV_COLLAPSE; needs root and Linux 6.1+), and report RSS after.
    #[arg(long)]
    simulate: bool,
    /// Sample RSS and exposure every --interval for SECONDS and write an SVG
    /// chart (--svg).
    #[arg(long, value_name = "SECONDS")]
    watch: Option<f64>,
    /// Seconds between --watch samples.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

#[derive(Args)]
struct Common {
    /// Print one JSON object instead of the readable report.
    #[arg(long)]
    json: bool,
    /// Judge as if THP were enabled=always (what MADV_COLLAPSE accepts in
    /// any mode), instead of the configured mode and flags.
    #[arg(long)]
    always: bool,
    /// List every mapping that matters, not only the 12 most exposed.
    #[arg(long)]
    all: bool,
    /// Where --watch and run write their chart.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a program, wait until it is idle, report, simulate, report again.
    Run {
        /// system, hugeguard, or the path of a malloc library to preload.
        #[arg(long, default_value = "system")]
        allocator: String,
        /// Count the program idle after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        idle: Option<f64>,
        /// Count the program idle after it used no CPU for this long.
        #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
        quiet: f64,
        /// Give up if the program is not idle by then.
        #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
        timeout: f64,
        /// Report only; do not collapse anything.
        #[arg(long)]
        no_simulate: bool,
        #[command(flatten)]
        common: Common,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Scan every process of the host at an interval and serve the result
    /// to Prometheus at http://ADDR/metrics (every process as root, or with
    /// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; otherwise your own).
    Serve {
        /// Where to listen (port 0: any free port; the first line printed
        /// says which).
        #[arg(long, default_value = "127.0.0.1:9977", value_name = "ADDR")]
        listen: String,
        /// Seconds between scans.
        #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
        interval: f64,
        #[command(flatten)]
        scan: ScanArgs,
    },
    /// One scan of every process, printed in the Prometheus text format
    /// (for node_exporter's textfile collector, or a look by hand); the
    /// same options as serve.
    Scan {
        #[command(flatten)]
        scan: ScanArgs,
    },
}

/// What `serve` and `scan` take alike.
#[derive(Args)]
struct ScanArgs {
    /// Processes with series of their own (the most exposed); the rest are
    /// summed.
    #[arg(long, default_value_t = 50, value_name = "N")]
    top: usize,
    /// Measure the exposure of processes with at least this many MB of
    /// anonymous memory (smaller ones report RSS only).
    #[arg(long, default_value_t = 16.0, value_name = "MB")]
    min_anon_mb: f64,
    /// Judge as if THP were enabled=always.
    #[arg(long)]
    always: bool,
}

/// The `--json` object: the report, plus the simulation when one ran.
#[derive(Serialize)]
struct JsonOut<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    simulation: Option<&'a Simulation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_after_simulation_bytes: Option<u64>,
}

fn assume(c: &Common) -> Assume {
    if c.always {
        Assume::Always
    } else {
        Assume::Configured
    }
}

fn limit(c: &Common) -> usize {
    if c.all {
        usize::MAX
    } else {
        12
    }
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("{what}: {v} is not a number of seconds"))
}

fn print_json(out: &JsonOut) -> Result<(), String> {
    let text = serde_json::to_string_pretty(out).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn report_once(pid: u32, cli: &Cli) -> Result<(), String> {
    let c = &cli.common;
    let report = inspect(pid, assume(c)).map_err(|e| e.to_string())?;
    if !cli.simulate {
        if c.json {
            return print_json(&JsonOut {
                report: &report,
                simulation: None,
                rss_after_simulation_bytes: None,
            });
        }
        print!("{}", render(&report, limit(c)));
        return Ok(());
    }
    let sim = simulate(&report).map_err(|e| e.to_string())?;
    let after = proc_files::status(pid).map_err(|e| e.to_string())?.rss;
    if c.json {
        return print_json(&JsonOut {
            report: &report,
            simulation: Some(&sim),
            rss_after_simulation_bytes: Some(after),
        });
    }
    print!("{}", render(&report, limit(c)));
    print!("\n{}", render_simulation(&report, &sim, after));
    Ok(())
}

fn watch(pid: u32, seconds: f64, cli: &Cli) -> Result<(), String> {
    let c = &cli.common;
    let total = secs(seconds, "--watch")?;
    let every = secs(cli.interval, "--interval")?.max(Duration::from_millis(100));
    let start = Instant::now();
    let (mut rss, mut predicted) = (Vec::new(), Vec::new());
    let mut ended = None;
    println!(
        "{:>8} {:>12} {:>12} {:>14}",
        "seconds", "RSS", "exposure", "predicted RSS"
    );
    loop {
        let t = start.elapsed().as_secs_f64();
        match inspect(pid, assume(c)) {
            Ok(r) => {
                println!(
                    "{t:>8.1} {:>12} {:>12} {:>14}",
                    mb(r.rss_bytes),
                    mb(r.exposure_bytes),
                    mb(r.predicted_rss_bytes)
                );
                rss.push((t, r.rss_bytes as f64 / 1e6));
                predicted.push((t, r.predicted_rss_bytes as f64 / 1e6));
            }
            Err(hugeguard_inspect::Error::Exited(_)) => {
                println!("process {pid} exited after {t:.1} s");
                ended = Some((t, "exited".to_string()));
                break;
            }
            Err(e) => return Err(e.to_string()),
        }
        if start.elapsed() + every > total {
            break;
        }
        std::thread::sleep(every);
    }
    let path = c
        .svg
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("hugeguard-inspect-{pid}.svg")));
    let series = [
        Series {
            label: "RSS".into(),
            points: rss,
        },
        Series {
            label: "predicted RSS after khugepaged".into(),
            points: predicted,
        },
    ];
    let markers: Vec<_> = ended.into_iter().collect();
    write_svg(&path, &format!("process {pid}"), &series, &markers)?;
    println!("chart: {}", path.display());
    Ok(())
}

fn scan_options(a: &ScanArgs) -> Result<ScanOptions, String> {
    if a.min_anon_mb.is_nan() || a.min_anon_mb < 0.0 {
        return Err(format!("--min-anon-mb: {} is not a size", a.min_anon_mb));
    }
    Ok(ScanOptions {
        assume: if a.always {
            Assume::Always
        } else {
            Assume::Configured
        },
        min_anon_bytes: (a.min_anon_mb * 1e6) as u64,
    })
}

fn scan_command(a: &ScanArgs) -> Result<(), String> {
    let opts = scan_options(a)?;
    let scan = exporter::scan(&opts, &mut exporter::ExeCache::default());
    print!("{}", exporter::render(&scan, a.top));
    Ok(())
}

fn serve_command(listen: &str, interval: f64, a: &ScanArgs) -> Result<(), String> {
    use hugeguard_inspect::exporter::{scope, Scope};
    use hugeguard_inspect::serve::{serve, ServeOptions};
    let opts = ServeOptions {
        scan: scan_options(a)?,
        interval: secs(interval, "--interval")?.max(Duration::from_secs(1)),
        top: a.top,
    };
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}/metrics");
    if let Scope::OwnUser(uid) = scope() {
        println!(
            "without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: scanning the processes of user {uid} only"
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    serve(listener, opts).map_err(|e| e.to_string())
}

fn run_command(cmd_args: &Cmd) -> Result<(), String> {
    let Cmd::Run {
        allocator,
        idle,
        quiet,
        timeout,
        no_simulate,
        common: c,
        cmd,
    } = cmd_args
    else {
        return Err("not a run command".into());
    };
    let opts = RunOptions {
        allocator: Allocator::parse(allocator),
        idle_after: idle.map(|v| secs(v, "--idle")).transpose()?,
        quiet: secs(*quiet, "--quiet")?,
        timeout: secs(*timeout, "--timeout")?,
        assume: assume(c),
        simulate: !no_simulate,
        env: Vec::new(),
    };
    let out = run(cmd, &opts)?;
    let sim = match &out.simulation {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            eprintln!("hugeguard-inspect: not simulated: {e}");
            None
        }
        None => None,
    };
    if c.json {
        print_json(&JsonOut {
            report: &out.report,
            simulation: sim,
            rss_after_simulation_bytes: out.rss_after,
        })?;
    } else {
        println!(
            "{} with allocator {allocator}: idle after {:.1} s ({})",
            cmd.join(" "),
            out.idle_at,
            out.idle_reason
        );
        print!("{}", render(&out.report, limit(c)));
        if let (Some(s), Some(after)) = (sim, out.rss_after) {
            print!("\n{}", render_simulation(&out.report, s, after));
        }
    }
    if let Some(path) = &c.svg {
        let series = [Series {
            label: format!("RSS ({allocator})"),
            points: out
                .samples
                .iter()
                .map(|&(t, b)| (t, b as f64 / 1e6))
                .collect(),
        }];
        let mut markers = vec![(out.idle_at, "idle".to_string())];
        if sim.is_some() {
            markers.push((out.simulated_at, "khugepaged (simulated)".to_string()));
        }
        write_svg(path, &cmd.join(" "), &series, &markers)?;
        if !c.json {
            println!("chart: {}", path.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (&cli.command, cli.pid) {
        (
            Some(Cmd::Serve {
                listen,
                interval,
                scan,
            }),
            _,
        ) => serve_command(listen, *interval, scan),
        (Some(Cmd::Scan { scan }), _) => scan_command(scan),
        (Some(cmd), _) => run_command(cmd),
        (None, Some(pid)) => match cli.watch {
            Some(s) => watch(pid, s, &cli),
            None => report_once(pid, &cli),
        },
        (None, None) => Err("give a PID, or `run -- COMMAND` (see --help)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hugeguard-inspect: {e}");
            ExitCode::FAILURE
        }
    }
}
