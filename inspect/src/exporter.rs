//! The fleet view (`hugeguard-inspect serve`, `docs/INSPECT.md`): one scan
//! of every process of the host ([`scan`]) and its rendering in the
//! Prometheus text format ([`render`]).
//!
//! A scan reads, per process, what costs no page-table walk (`status`,
//! `maps`, `cgroup`, two sections of its executable, cached per file), then
//! `smaps_rollup` (one walk) for its huge pages, and only for a process with
//! at least `min_anon_bytes` of anonymous memory the full measurement
//! ([`crate::inspect`]: `smaps` and `pagemap`) for its exposure. Smaller
//! processes are counted with their RSS and no exposure. Cardinality is
//! bounded at render time: the `top` processes by exposure (then RSS) get
//! series of their own, the rest are summed.

use crate::detect::{detect_process_with, exe_marks, Detected, ExeMarks};
use crate::proc_files::{self, Error, ThpSettings};
use crate::{inspect_as, Assume};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

/// What a scan covers and measures.
#[derive(Clone, Copy, Debug)]
pub struct ScanOptions {
    /// The rules the exposure is judged by.
    pub assume: Assume,
    /// Processes with less anonymous memory get no exposure measurement.
    pub min_anon_bytes: u64,
}

/// Whose processes a scan can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every process (root, or `CAP_SYS_PTRACE`).
    All,
    /// Only this user's.
    OwnUser(u32),
}

/// [`Scope::All`] with the capabilities that reading another user's
/// `smaps` and `pagemap` takes: `CAP_SYS_PTRACE` (ptrace access) and
/// `CAP_DAC_READ_SEARCH` or `CAP_DAC_OVERRIDE` (`pagemap` is readable by
/// its owner only). Root has them; a service or container can be given
/// just those two. Otherwise the calling user's own processes.
pub fn scope() -> Scope {
    if can_read_every_process() {
        Scope::All
    } else {
        // SAFETY: geteuid has no preconditions.
        Scope::OwnUser(unsafe { libc::geteuid() })
    }
}

fn can_read_every_process() -> bool {
    const CAP_DAC_OVERRIDE: u32 = 1;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_SYS_PTRACE: u32 = 19;
    let Some(caps) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
    else {
        return false;
    };
    let has = |cap: u32| caps >> cap & 1 == 1;
    has(CAP_SYS_PTRACE) && (has(CAP_DAC_READ_SEARCH) || has(CAP_DAC_OVERRIDE))
}

/// One process of a scan (bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
    pub detected: Detected,
    pub rss: u64,
    pub rss_anon: u64,
    pub anon_huge: u64,
    /// `None` when not measured (below `min_anon_bytes`, or it failed).
    pub exposure: Option<u64>,
}

impl ProcessRow {
    /// RSS after khugepaged collapsed what it could.
    pub fn predicted(&self) -> u64 {
        self.rss + self.exposure.unwrap_or(0)
    }
}

/// One scan of the host.
#[derive(Clone, Debug)]
pub struct HostScan {
    pub rows: Vec<ProcessRow>,
    pub settings: ThpSettings,
    pub assume: Assume,
    pub scope: Scope,
    /// khugepaged's `pages_collapsed` and `full_scans`.
    pub pages_collapsed: Option<u64>,
    pub full_scans: Option<u64>,
    /// Processes that could not be read (permissions; not the ones that
    /// exited during the scan).
    pub errors: usize,
    /// Wall-clock seconds the scan took.
    pub seconds: f64,
}

/// The executables' marks, by file (device, inode, size, mtime): a file is
/// read once, however many processes run it. A file no process of a scan
/// ran is forgotten at the end of that scan, so a
/// host that keeps starting new binaries does not grow the cache.
#[derive(Default, Debug)]
pub struct ExeCache {
    /// The marks, and the scan that last used them.
    files: HashMap<(u64, u64, u64, i64), (ExeMarks, u64)>,
    /// Scans ended so far.
    scans: u64,
}

impl ExeCache {
    fn marks(&mut self, pid: u32) -> ExeMarks {
        let path = format!("/proc/{pid}/exe");
        let Ok(meta) = std::fs::metadata(&path) else {
            return ExeMarks::default();
        };
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
        let scan = self.scans;
        let entry = self
            .files
            .entry(key)
            .or_insert_with(|| (exe_marks(std::path::Path::new(&path)), scan));
        entry.1 = scan;
        entry.0.clone()
    }

    /// Forgets the files the scan that ends now did not use.
    fn end_scan(&mut self) {
        let scan = self.scans;
        self.files.retain(|_, (_, used)| *used == scan);
        self.scans += 1;
    }

    /// Executables whose marks are kept.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no executable's marks are kept.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The process ids in `/proc`.
fn pids() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Reads one process; `Ok(None)` for a kernel thread or another user's
/// process out of `scope`.
fn scan_one(
    pid: u32,
    opts: &ScanOptions,
    scope: Scope,
    cache: &mut ExeCache,
) -> Result<Option<ProcessRow>, Error> {
    let status = proc_files::status(pid)?;
    if matches!(scope, Scope::OwnUser(uid) if status.uid != uid) || status.rss == 0 {
        return Ok(None);
    }
    let mut row = ProcessRow {
        pid,
        comm: status.name,
        cgroup: proc_files::cgroup(pid).unwrap_or_default(),
        detected: detect_process_with(pid, &cache.marks(pid))?,
        rss: status.rss,
        rss_anon: status.rss_anon,
        anon_huge: proc_files::smaps_rollup(pid)?.anon_huge_pages,
        exposure: None,
    };
    if status.rss_anon >= opts.min_anon_bytes {
        if let Ok(r) = inspect_as(pid, opts.assume, row.detected.clone()) {
            row.exposure = Some(r.exposure_bytes);
            row.anon_huge = r.anon_huge_bytes;
        }
    }
    Ok(Some(row))
}

/// Scans every process in scope.
pub fn scan(opts: &ScanOptions, cache: &mut ExeCache) -> HostScan {
    let start = Instant::now();
    let scope = scope();
    let mut rows = Vec::new();
    let mut errors = 0;
    for pid in pids() {
        match scan_one(pid, opts, scope, cache) {
            Ok(Some(row)) => rows.push(row),
            Ok(None) | Err(Error::Exited(_)) => {}
            Err(_) => errors += 1,
        }
    }
    cache.end_scan();
    let (pages_collapsed, full_scans) = proc_files::khugepaged_counters();
    HostScan {
        rows,
        settings: proc_files::thp_settings(),
        assume: opts.assume,
        scope,
        pages_collapsed,
        full_scans,
        errors,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: its help and type lines, then each sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The scan in the Prometheus text format (version 0.0.4): the `top`
/// processes by exposure, then RSS, with series of their own; the rest
/// summed; the host's settings and totals.
pub fn render(scan: &HostScan, top: usize) -> String {
    let mut rows: Vec<&ProcessRow> = scan.rows.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse((r.exposure.unwrap_or(0), r.rss, r.pid)));
    let (shown, rest) = rows.split_at(top.min(rows.len()));
    let labels = |r: &ProcessRow| {
        format!(
            "pid=\"{}\",comm=\"{}\",cgroup=\"{}\",allocator=\"{}\",runtime=\"{}\"",
            r.pid,
            escape(&r.comm),
            escape(&r.cgroup),
            r.detected.allocator,
            r.detected.runtime
        )
    };
    let per = |f: &dyn Fn(&ProcessRow) -> Option<u64>| -> Vec<(String, f64)> {
        shown
            .iter()
            .filter_map(|r| Some((labels(r), f(r)? as f64)))
            .collect()
    };
    let mut out = String::new();
    let gauge = "gauge";
    family(
        &mut out,
        "hugeguard_process_rss_bytes",
        gauge,
        "Resident memory of the process (VmRSS).",
        &per(&|r| Some(r.rss)),
    );
    family(
        &mut out,
        "hugeguard_process_anon_rss_bytes",
        gauge,
        "Anonymous resident memory (RssAnon).",
        &per(&|r| Some(r.rss_anon)),
    );
    family(
        &mut out,
        "hugeguard_process_anon_huge_bytes",
        gauge,
        "Anonymous memory mapped by huge pages now (AnonHugePages).",
        &per(&|r| Some(r.anon_huge)),
    );
    family(
        &mut out,
        "hugeguard_process_exposure_bytes",
        gauge,
        "Bytes khugepaged could add to RSS by collapsing sparse 2 MiB ranges (processes measured only).",
        &per(&|r| r.exposure),
    );
    family(
        &mut out,
        "hugeguard_process_predicted_rss_bytes",
        gauge,
        "RSS after khugepaged collapsed every range it could (RSS plus exposure).",
        &per(&|r| Some(r.predicted())),
    );
    let info: Vec<(String, f64)> = shown
        .iter()
        .map(|r| {
            let protected = match r.detected.protected {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            };
            (
                format!(
                    "{},go_version=\"{}\",protected=\"{protected}\",advice=\"{}\"",
                    labels(r),
                    escape(r.detected.go_version.as_deref().unwrap_or("")),
                    escape(&r.detected.advice())
                ),
                1.0,
            )
        })
        .collect();
    family(
        &mut out,
        "hugeguard_process_info",
        gauge,
        "What the process uses and what to do about re-inflation (always 1).",
        &info,
    );
    let sum = |rs: &[&ProcessRow], f: &dyn Fn(&ProcessRow) -> u64| -> f64 {
        rs.iter().map(|r| f(r)).sum::<u64>() as f64
    };
    let one = |v: f64| vec![(String::new(), v)];
    family(
        &mut out,
        "hugeguard_other_processes",
        gauge,
        "Processes scanned beyond the top N (summed below).",
        &one(rest.len() as f64),
    );
    family(
        &mut out,
        "hugeguard_other_rss_bytes",
        gauge,
        "RSS of the processes beyond the top N.",
        &one(sum(rest, &|r| r.rss)),
    );
    family(
        &mut out,
        "hugeguard_other_anon_rss_bytes",
        gauge,
        "Anonymous RSS of the processes beyond the top N.",
        &one(sum(rest, &|r| r.rss_anon)),
    );
    family(
        &mut out,
        "hugeguard_other_exposure_bytes",
        gauge,
        "Exposure of the processes beyond the top N.",
        &one(sum(rest, &|r| r.exposure.unwrap_or(0))),
    );
    let all = &rows[..];
    let measured = rows.iter().filter(|r| r.exposure.is_some()).count();
    family(
        &mut out,
        "hugeguard_host_processes",
        gauge,
        "Processes scanned, by whether their exposure was measured.",
        &[
            ("measured=\"yes\"".into(), measured as f64),
            ("measured=\"no\"".into(), (rows.len() - measured) as f64),
        ],
    );
    family(
        &mut out,
        "hugeguard_host_rss_bytes",
        gauge,
        "RSS of every process scanned.",
        &one(sum(all, &|r| r.rss)),
    );
    family(
        &mut out,
        "hugeguard_host_anon_huge_bytes",
        gauge,
        "AnonHugePages of every process scanned.",
        &one(sum(all, &|r| r.anon_huge)),
    );
    family(
        &mut out,
        "hugeguard_host_exposure_bytes",
        gauge,
        "Exposure of every process measured.",
        &one(sum(all, &|r| r.exposure.unwrap_or(0))),
    );
    family(
        &mut out,
        "hugeguard_host_predicted_rss_bytes",
        gauge,
        "RSS of every process scanned plus their exposure.",
        &one(sum(all, &|r| r.predicted())),
    );
    let s = &scan.settings;
    family(
        &mut out,
        "hugeguard_thp_enabled",
        gauge,
        "The THP mode (transparent_hugepage/enabled; always 1).",
        &[(format!("mode=\"{}\"", escape(&s.enabled)), 1.0)],
    );
    family(
        &mut out,
        "hugeguard_thp_defrag",
        gauge,
        "The THP defrag mode (always 1).",
        &[(format!("mode=\"{}\"", escape(&s.defrag)), 1.0)],
    );
    family(
        &mut out,
        "hugeguard_thp_max_ptes_none",
        gauge,
        "khugepaged/max_ptes_none: absent pages a collapse may fill.",
        &one(s.max_ptes_none as f64),
    );
    family(
        &mut out,
        "hugeguard_thp_max_ptes_swap",
        gauge,
        "khugepaged/max_ptes_swap.",
        &one(s.max_ptes_swap as f64),
    );
    let sizes: Vec<(String, f64)> = s
        .sizes
        .iter()
        .map(|(kb, mode)| (format!("size_kb=\"{kb}\",mode=\"{}\"", escape(mode)), 1.0))
        .collect();
    family(
        &mut out,
        "hugeguard_mthp_enabled",
        gauge,
        "Each multi-size THP size's setting (always 1).",
        &sizes,
    );
    if let Some(v) = scan.pages_collapsed {
        family(
            &mut out,
            "hugeguard_khugepaged_pages_collapsed_total",
            "counter",
            "Huge pages khugepaged has collapsed since boot.",
            &one(v as f64),
        );
    }
    if let Some(v) = scan.full_scans {
        family(
            &mut out,
            "hugeguard_khugepaged_full_scans_total",
            "counter",
            "Full scans khugepaged has made since boot.",
            &one(v as f64),
        );
    }
    let scope = match scan.scope {
        Scope::All => "all".to_string(),
        Scope::OwnUser(uid) => format!("uid {uid}"),
    };
    family(&mut out, "hugeguard_scan_scope", gauge, "Whose processes the exporter can read: all (root or CAP_SYS_PTRACE) or one user's (always 1).", &[(format!("scope=\"{scope}\""), 1.0)]);
    let rules = match scan.assume {
        Assume::Configured => "configured",
        Assume::Always => "always",
    };
    family(&mut out, "hugeguard_scan_rules", gauge, "The rules exposure is judged by: the configured THP mode, or as if enabled=always (always 1).", &[(format!("rules=\"{rules}\""), 1.0)]);
    family(
        &mut out,
        "hugeguard_scan_duration_seconds",
        gauge,
        "Wall-clock time of the last scan.",
        &one(scan.seconds),
    );
    family(
        &mut out,
        "hugeguard_scan_errors",
        gauge,
        "Processes the last scan could not read.",
        &one(scan.errors as f64),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, rss: u64, exposure: Option<u64>) -> ProcessRow {
        ProcessRow {
            pid,
            comm: format!("p{pid}"),
            cgroup: "/system.slice/a \"b\".service".into(),
            detected: Detected {
                allocator: "glibc".into(),
                ..Detected::default()
            },
            rss,
            rss_anon: rss / 2,
            anon_huge: 0,
            exposure,
        }
    }

    fn host(rows: Vec<ProcessRow>) -> HostScan {
        HostScan {
            rows,
            settings: ThpSettings {
                enabled: "madvise".into(),
                defrag: "madvise".into(),
                max_ptes_none: 511,
                max_ptes_swap: 64,
                sizes: vec![(64, "never".into())],
                page_size: 4096,
                huge_page_size: 2 << 20,
            },
            assume: Assume::Always,
            scope: Scope::All,
            pages_collapsed: Some(7),
            full_scans: Some(3),
            errors: 0,
            seconds: 0.25,
        }
    }

    /// The value of the sample whose line starts with `prefix`.
    fn value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn the_top_processes_get_series_and_the_rest_is_summed() {
        let scan = host(vec![
            row(1, 100, Some(0)),
            row(2, 50, Some(400)),
            row(3, 70, None),
            row(4, 10, Some(20)),
        ]);
        let text = render(&scan, 2);
        // By exposure: 2 (400) and 4 (20) have series; 1 and 3 are summed.
        assert!(text.contains("hugeguard_process_exposure_bytes{pid=\"2\","));
        assert!(text.contains("hugeguard_process_rss_bytes{pid=\"4\","));
        assert!(!text.contains("pid=\"1\""));
        assert!(!text.contains("pid=\"3\""));
        assert_eq!(value(&text, "hugeguard_other_processes "), Some(2.0));
        assert_eq!(value(&text, "hugeguard_other_rss_bytes "), Some(170.0));
        assert_eq!(value(&text, "hugeguard_host_rss_bytes "), Some(230.0));
        assert_eq!(value(&text, "hugeguard_host_exposure_bytes "), Some(420.0));
        assert_eq!(
            value(&text, "hugeguard_host_predicted_rss_bytes "),
            Some(650.0)
        );
        assert_eq!(
            value(&text, "hugeguard_host_processes{measured=\"no\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "hugeguard_process_predicted_rss_bytes{pid=\"2\""),
            Some(450.0)
        );
        assert_eq!(
            value(&text, "hugeguard_khugepaged_pages_collapsed_total "),
            Some(7.0)
        );
        assert!(text.contains("hugeguard_mthp_enabled{size_kb=\"64\",mode=\"never\"} 1"));
        assert!(text.contains("hugeguard_scan_rules{rules=\"always\"} 1"));
        // Label values are escaped.
        assert!(text.contains("cgroup=\"/system.slice/a \\\"b\\\".service\""));
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{line}");
            }
        }
    }

    #[test]
    fn a_scan_finds_this_process_with_its_allocator() {
        let mut cache = ExeCache::default();
        let cheap = ScanOptions {
            assume: Assume::Always,
            min_anon_bytes: u64::MAX,
        };
        let scan = scan(&cheap, &mut cache);
        let me = scan
            .rows
            .iter()
            .find(|r| r.pid == std::process::id())
            .expect("this process is scanned");
        assert!(me.rss > 0);
        // This test binary links hugeguard (a dev-dependency): its marks
        // are in `.rodata`, so it counts as a hugeguard program.
        assert_eq!(me.detected.allocator, "hugeguard");
        assert_eq!(me.exposure, None, "not measured below min_anon_bytes");
        assert!(
            !scan.rows.iter().any(|r| r.rss == 0),
            "kernel threads are left out"
        );
        let measured = ScanOptions {
            min_anon_bytes: 0,
            ..cheap
        };
        let me = scan_one(std::process::id(), &measured, scope(), &mut cache)
            .unwrap()
            .unwrap();
        assert!(me.exposure.is_some(), "measured at min_anon_bytes 0");
    }

    #[test]
    fn the_executables_cache_forgets_files_no_process_ran() {
        let mut cache = ExeCache::default();
        let me = std::process::id();
        let marks = cache.marks(me);
        assert_eq!(cache.len(), 1);
        cache.end_scan();
        // Used in the scan that ended: kept, and the same marks.
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.marks(me), marks);
        cache.end_scan();
        assert_eq!(cache.len(), 1);
        // A scan in which no process ran it: forgotten.
        cache.end_scan();
        assert!(cache.is_empty());
    }
}
