//! hugeguard-inspect: see, predict and reproduce khugepaged's RSS inflation
//! in any running Linux process, whatever its language or allocator.
//!
//! [`inspect`] reads a process's mappings, which of their pages are present,
//! and the THP settings, and applies the exposure rule ([`exposure`]): the
//! bytes khugepaged could add to RSS by collapsing every eligible 2 MiB range
//! whose absent pages are within `max_ptes_none`. [`simulate`] then does what
//! khugepaged would do, now, with `process_madvise(MADV_COLLAPSE)` on exactly
//! those ranges, so the prediction can be checked against the kernel.
//! [`run`] starts a program, waits until it is idle and does both.
//! [`detect`] tells which allocator and runtime a process uses, and
//! [`exporter`] and [`serve`] scan the whole host for Prometheus.
//!
//! The binary (`src/main.rs`) is the command line over this library; the
//! benchmark suite and the tests use the library directly.

pub mod chart;
pub mod detect;
mod elf;
pub mod exporter;
pub mod exposure;
pub mod proc_files;
pub mod report;
pub mod run;
pub mod serve;
mod sys;

pub use exposure::Assume;
pub use proc_files::Error;

use exposure::{mapping_eligible, measure_mapping, MappingReport, RANGE_BYTES};
use serde::Serialize;

/// What [`inspect`] found. Bytes throughout; this is the `--json` object.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub pid: u32,
    pub command: String,
    pub rss_bytes: u64,
    pub rss_anon_bytes: u64,
    /// Anonymous memory backed by huge pages now.
    pub anon_huge_bytes: u64,
    /// The system's THP mode (`always`, `madvise`, `never`).
    pub thp_enabled: String,
    pub thp_defrag: String,
    pub max_ptes_none: u32,
    pub max_ptes_swap: u32,
    /// Multi-size THP: `(size in KiB, setting)` per size, smallest first
    /// (empty before Linux 6.8). The exposure is judged for 2 MiB only.
    pub mthp_sizes: Vec<(u32, String)>,
    /// The base page size (bytes).
    pub page_size: u64,
    /// The huge page size (`hpage_pmd_size`, bytes; 0 without THP).
    pub huge_page_size: u64,
    /// The rules applied: the configured ones, or THP `always`.
    pub assumed: Assume,
    /// Bytes khugepaged could add to RSS.
    pub exposure_bytes: u64,
    /// `rss_bytes + exposure_bytes`.
    pub predicted_rss_bytes: u64,
    /// The mappings that matter (holding a whole 2 MiB range, huge pages or
    /// exposure), the most exposed first.
    pub mappings: Vec<MappingReport>,
    /// Mappings not listed.
    pub other_mappings: usize,
    /// The allocator and runtime the process uses ([`detect`]).
    pub uses: detect::Detected,
    /// What to do about re-inflation, given [`Report::uses`].
    pub advice: String,
    /// Starts of the 2 MiB ranges khugepaged would collapse (for
    /// [`simulate`]).
    #[serde(skip)]
    pub collapse_ranges: Vec<u64>,
}

/// Measures process `pid` under the rules `assume`, and finds what it
/// uses ([`detect::detect_process`]).
pub fn inspect(pid: u32, assume: Assume) -> Result<Report, Error> {
    let uses = detect::detect_process(pid)?;
    inspect_as(pid, assume, uses)
}

/// [`inspect`] with what the process uses already known (the exporter
/// keeps the executables' marks between scans).
pub fn inspect_as(pid: u32, assume: Assume, uses: detect::Detected) -> Result<Report, Error> {
    let settings = proc_files::thp_settings();
    let status = proc_files::status(pid)?;
    let maps = proc_files::smaps(pid)?;
    let pagemap = proc_files::Pagemap::open(pid)?;
    let mut collapse_ranges = Vec::new();
    let mut mappings = Vec::new();
    let mut other = 0;
    let mut anon_huge = 0;
    let thp_on = settings.enabled != "unavailable" && status.thp_enabled;
    for m in &maps {
        anon_huge += m.anon_huge;
        let eligible = thp_on && mapping_eligible(m, assume, status.thp_enabled);
        let r = measure_mapping(m, eligible, &settings, &pagemap, &mut collapse_ranges)?;
        let matters = m.is_private_anonymous() && m.size() >= RANGE_BYTES
            || r.anon_huge_bytes > 0
            || r.exposure_bytes > 0;
        if matters {
            mappings.push(r);
        } else {
            other += 1;
        }
    }
    mappings.sort_by_key(|m| std::cmp::Reverse((m.exposure_bytes, m.rss_bytes)));
    let exposure: u64 = mappings.iter().map(|m| m.exposure_bytes).sum();
    Ok(Report {
        pid,
        command: status.name,
        rss_bytes: status.rss,
        rss_anon_bytes: status.rss_anon,
        anon_huge_bytes: anon_huge,
        thp_enabled: settings.enabled,
        thp_defrag: settings.defrag,
        max_ptes_none: settings.max_ptes_none,
        max_ptes_swap: settings.max_ptes_swap,
        mthp_sizes: settings.sizes,
        page_size: settings.page_size,
        huge_page_size: settings.huge_page_size,
        assumed: assume,
        exposure_bytes: exposure,
        predicted_rss_bytes: status.rss + exposure,
        mappings,
        other_mappings: other,
        advice: uses.advice(),
        uses,
        collapse_ranges,
    })
}

/// Why [`simulate`] could not run.
#[derive(Debug)]
pub enum SimulateError {
    /// Not root: `process_madvise` needs `CAP_SYS_NICE` and ptrace access.
    NotPermitted,
    /// The kernel predates `MADV_COLLAPSE` through `process_madvise` (6.1).
    Unsupported(String),
    /// The process is gone.
    Exited(u32),
    Other(String),
}

impl std::fmt::Display for SimulateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimulateError::NotPermitted => f.write_str(
                "--simulate needs root: process_madvise(MADV_COLLAPSE) on another process \
                 requires CAP_SYS_NICE and ptrace access",
            ),
            SimulateError::Unsupported(why) => write!(
                f,
                "--simulate needs Linux 6.1 or later (process_madvise with MADV_COLLAPSE): {why}"
            ),
            SimulateError::Exited(pid) => write!(f, "process {pid} has exited"),
            SimulateError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SimulateError {}

/// What [`simulate`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Simulation {
    /// Ranges the kernel collapsed (or found already huge).
    pub collapsed: u64,
    /// Ranges it refused (changed since the report: unmapped, marked
    /// `MADV_NOHUGEPAGE`; or no huge page free: EAGAIN/ENOMEM after retries).
    pub refused: u64,
    /// The first refusal, for the report.
    pub first_refusal: Option<String>,
}

/// Collapses every range of `report` (what khugepaged would do, now).
pub fn simulate(report: &Report) -> Result<Simulation, SimulateError> {
    if let Some(v) = sys::kernel_version() {
        if v < (6, 1) {
            return Err(SimulateError::Unsupported(format!(
                "this kernel is {}.{}",
                v.0, v.1
            )));
        }
    }
    let handle = sys::ProcessHandle::open(report.pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => SimulateError::Exited(report.pid),
        Some(libc::ENOSYS) => SimulateError::Unsupported("no pidfd_open".into()),
        _ => SimulateError::Other(format!("pidfd_open({}): {e}", report.pid)),
    })?;
    let mut sim = Simulation::default();
    for &start in &report.collapse_ranges {
        let mut tries = 0;
        let outcome = loop {
            match handle.collapse(start, RANGE_BYTES) {
                Err(e)
                    if tries < 3
                        && matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM)) =>
                {
                    tries += 1;
                }
                other => break other,
            }
        };
        match outcome {
            Ok(()) => sim.collapsed += 1,
            Err(e) => match e.raw_os_error() {
                Some(libc::EPERM) => return Err(SimulateError::NotPermitted),
                Some(libc::ESRCH) => return Err(SimulateError::Exited(report.pid)),
                Some(libc::ENOSYS) => {
                    return Err(SimulateError::Unsupported("no process_madvise".into()))
                }
                _ => {
                    sim.refused += 1;
                    sim.first_refusal
                        .get_or_insert_with(|| format!("{start:x}: {e}"));
                }
            },
        }
    }
    if sim.collapsed == 0 && sim.refused > 0 {
        return Err(SimulateError::Unsupported(format!(
            "every range was refused (first: {})",
            sim.first_refusal.as_deref().unwrap_or("?")
        )));
    }
    Ok(sim)
}
