//! What the kernel says about a process and about transparent huge pages:
//! `/proc/PID/smaps` (one record per mapping), `/proc/PID/status`,
//! `/proc/PID/stat` (CPU time), `/proc/PID/pagemap` (which 4 KiB pages are
//! present) and the THP settings under `/sys/kernel/mm/transparent_hugepage`.
//!
//! The parsers take text, so tests feed them fixtures; the readers add the
//! file names and turn "no such process" into [`Error::Exited`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Why a reading failed.
#[derive(Debug)]
pub enum Error {
    /// The process does not exist (any more).
    Exited(u32),
    /// The kernel refused (permissions: another user's process needs root).
    Denied(String),
    /// Anything else: the file and what went wrong.
    Other(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Exited(pid) => write!(f, "process {pid} does not exist (it has exited?)"),
            Error::Denied(what) => write!(
                f,
                "permission denied reading {what}: inspect your own processes, or run as root"
            ),
            Error::Other(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {}

fn read_error(pid: u32, path: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::Exited(pid),
        io::ErrorKind::PermissionDenied => Error::Denied(path.to_string()),
        // A process that exits while its smaps is read gives ESRCH.
        _ if e.raw_os_error() == Some(libc::ESRCH) => Error::Exited(pid),
        _ => Error::Other(format!("{path}: {e}")),
    }
}

fn read_proc(pid: u32, name: &str) -> Result<String, Error> {
    let path = format!("/proc/{pid}/{name}");
    std::fs::read_to_string(&path).map_err(|e| read_error(pid, &path, e))
}

/// One mapping of `smaps`. Sizes are in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rw-p` and the like.
    pub perms: String,
    pub inode: u64,
    /// The file, `[heap]`, `[stack]`, `[anon:NAME]`, or empty.
    pub path: String,
    pub rss: u64,
    pub anonymous: u64,
    pub anon_huge: u64,
    pub swap: u64,
    /// The kernel's `THPeligible`: huge pages allowed here under the current
    /// settings (the THP mode, `MADV_HUGEPAGE`/`MADV_NOHUGEPAGE`, prctl).
    pub thp_eligible: bool,
    /// `VmFlags`: `hg` (MADV_HUGEPAGE), `nh` (MADV_NOHUGEPAGE), ...
    pub flags: Vec<String>,
}

impl Mapping {
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Private, writable, anonymous memory: what an allocator's heap is made
    /// of, and the only kind this tool models (khugepaged also collapses
    /// shared memory and read-only file text, which allocators do not own).
    pub fn is_private_anonymous(&self) -> bool {
        let p = self.perms.as_bytes();
        let anon_name = self.path.is_empty()
            || self.path == "[heap]"
            || self.path == "[stack]"
            || self.path.starts_with("[anon:");
        self.inode == 0 && p.len() == 4 && p[1] == b'w' && p[3] == b'p' && anon_name
    }

    /// A short name for reports.
    pub fn label(&self) -> &str {
        if self.path.is_empty() {
            "[anon]"
        } else {
            &self.path
        }
    }
}

fn kb_field(value: &str) -> u64 {
    value
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Splits off the first `n` space-separated fields; the rest, trimmed, is
/// the last item (a path may contain spaces).
fn split_fields(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut rest = line;
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    Some((fields, rest.trim()))
}

/// Parses the header line of a mapping: `start-end perms offset dev inode
/// [path]`.
fn parse_header(line: &str) -> Option<Mapping> {
    let (f, path) = split_fields(line, 5)?;
    let (s, e) = f[0].split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms: f[1].to_string(),
        inode: f[4].parse().ok()?,
        path: path.to_string(),
        ..Mapping::default()
    })
}

/// Parses the whole text of `/proc/PID/smaps`.
pub fn parse_smaps(text: &str) -> Result<Vec<Mapping>, Error> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.ends_with(':') {
            let Some(m) = maps.last_mut() else {
                return Err(Error::Other(format!(
                    "smaps: a field before any mapping: {line:?}"
                )));
            };
            let value = line[line.find(':').map_or(0, |i| i + 1)..].trim();
            match first {
                "Rss:" => m.rss = kb_field(value),
                "Anonymous:" => m.anonymous = kb_field(value),
                "AnonHugePages:" => m.anon_huge = kb_field(value),
                "Swap:" => m.swap = kb_field(value),
                "THPeligible:" => m.thp_eligible = value.starts_with('1'),
                "VmFlags:" => m.flags = value.split_whitespace().map(String::from).collect(),
                _ => {}
            }
        } else if !line.trim().is_empty() {
            let m = parse_header(line)
                .ok_or_else(|| Error::Other(format!("smaps: unreadable line {line:?}")))?;
            maps.push(m);
        }
    }
    Ok(maps)
}

/// The mappings of process `pid`.
pub fn smaps(pid: u32) -> Result<Vec<Mapping>, Error> {
    parse_smaps(&read_proc(pid, "smaps")?)
}

/// The fields of `/proc/PID/status` that matter here (bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub rss: u64,
    pub rss_anon: u64,
    /// `THP_enabled`: 0 when the process disabled THP with
    /// `prctl(PR_SET_THP_DISABLE)`.
    pub thp_enabled: bool,
    /// The real user id (`Uid`'s first field).
    pub uid: u32,
}

pub fn parse_status(text: &str) -> Status {
    let mut st = Status {
        thp_enabled: true,
        ..Status::default()
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "Name" => st.name = value.trim().to_string(),
            "VmRSS" => st.rss = kb_field(value),
            "RssAnon" => st.rss_anon = kb_field(value),
            "THP_enabled" => st.thp_enabled = value.trim() != "0",
            "Uid" => {
                st.uid = value
                    .split_whitespace()
                    .next()
                    .and_then(|u| u.parse().ok())
                    .unwrap_or(u32::MAX)
            }
            _ => {}
        }
    }
    st
}

pub fn status(pid: u32) -> Result<Status, Error> {
    Ok(parse_status(&read_proc(pid, "status")?))
}

/// The huge-page lines of `/proc/PID/smaps_rollup` (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollup {
    /// `AnonHugePages`: anonymous memory mapped by huge pages.
    pub anon_huge_pages: u64,
    /// `ShmemPmdMapped`: shared memory mapped by huge pages.
    pub shmem_pmd_mapped: u64,
}

pub fn parse_rollup(text: &str) -> Rollup {
    let mut r = Rollup::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "AnonHugePages" => r.anon_huge_pages = kb_field(value),
            "ShmemPmdMapped" => r.shmem_pmd_mapped = kb_field(value),
            _ => {}
        }
    }
    r
}

/// The totals over every mapping (one file read, cheap even for a large
/// process, unlike `smaps`).
pub fn smaps_rollup(pid: u32) -> Result<Rollup, Error> {
    Ok(parse_rollup(&read_proc(pid, "smaps_rollup")?))
}

/// The process's cgroup from the text of `/proc/PID/cgroup`: the unified
/// (v2) path, else the memory controller's (v1), else the first line's.
pub fn parse_cgroup(text: &str) -> String {
    let mut first = None;
    let mut memory = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            return path.to_string();
        }
        if controllers.split(',').any(|c| c == "memory") {
            memory = Some(path);
        }
        first = first.or(Some(path));
    }
    memory.or(first).unwrap_or("").to_string()
}

pub fn cgroup(pid: u32) -> Result<String, Error> {
    Ok(parse_cgroup(&read_proc(pid, "cgroup")?))
}

/// The distinct files mapped, from the text of `/proc/PID/maps` (the paths
/// of its sixth column; anonymous and special mappings left out).
pub fn parse_mapped_files(text: &str) -> Vec<String> {
    let mut files: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// `/proc/PID/maps` only lists the mappings (no page-table walk, unlike
/// `smaps`): cheap for any process.
pub fn mapped_files(pid: u32) -> Result<Vec<String>, Error> {
    Ok(parse_mapped_files(&read_proc(pid, "maps")?))
}

/// khugepaged's own counters (`/sys/kernel/mm/transparent_hugepage/
/// khugepaged/pages_collapsed` and `full_scans`); `None` where absent.
pub fn khugepaged_counters() -> (Option<u64>, Option<u64>) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("{THP_DIR}/khugepaged/{name}"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    (read("pages_collapsed"), read("full_scans"))
}

/// CPU time the process has used (user + system), in clock ticks; `None`
/// when `stat` cannot be parsed. Also its state letter (`Z` for a zombie).
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name is in parentheses and may hold spaces: fields count
    // from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the ')'.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((state, utime + stime))
}

pub fn cpu_ticks(pid: u32) -> Result<(char, u64), Error> {
    let text = read_proc(pid, "stat")?;
    parse_stat(&text).ok_or_else(|| Error::Other(format!("/proc/{pid}/stat: unreadable")))
}

/// The system's THP settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThpSettings {
    /// `always`, `madvise`, `never`, or `unavailable` (no THP in the kernel).
    pub enabled: String,
    pub defrag: String,
    /// Absent (or zero-page) PTEs khugepaged accepts in a 2 MiB range it
    /// collapses (0..=511).
    pub max_ptes_none: u32,
    /// Swapped-out PTEs khugepaged accepts in such a range.
    pub max_ptes_swap: u32,
    /// Multi-size THP (Linux 6.8+): each size's `hugepages-<size>kB/enabled`
    /// (`always`, `inherit`, `madvise`, `never`), smallest first; empty on
    /// older kernels.
    pub sizes: Vec<(u32, String)>,
    /// The base page size (`sysconf(_SC_PAGESIZE)`).
    pub page_size: u64,
    /// The huge page size (`hpage_pmd_size`; 0 where THP is unavailable).
    pub huge_page_size: u64,
}

/// The base page size of this machine.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// The multi-size THP settings under `dir`: `(size in KiB, selected word)`
/// for each `hugepages-<size>kB/enabled`, smallest size first.
pub fn mthp_sizes(dir: &std::path::Path) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<(u32, String)> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let kb = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let text = std::fs::read_to_string(dir.join(&name).join("enabled")).ok()?;
            Some((kb, selected(&text)))
        })
        .collect();
    sizes.sort_unstable();
    sizes
}

const THP_DIR: &str = "/sys/kernel/mm/transparent_hugepage";

/// The selected word of a sysfs choice file: `always [madvise] never`.
pub fn selected(text: &str) -> String {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .unwrap_or("unknown")
        .to_string()
}

pub fn thp_settings() -> ThpSettings {
    let read = |name: &str| std::fs::read_to_string(format!("{THP_DIR}/{name}")).ok();
    let number = |name: &str, default: u32| {
        read(name)
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(default)
    };
    match read("enabled") {
        None => ThpSettings {
            enabled: "unavailable".into(),
            defrag: "unavailable".into(),
            max_ptes_none: 0,
            max_ptes_swap: 0,
            sizes: Vec::new(),
            page_size: page_size(),
            huge_page_size: 0,
        },
        Some(enabled) => ThpSettings {
            enabled: selected(&enabled),
            defrag: read("defrag").map_or("unknown".into(), |t| selected(&t)),
            max_ptes_none: number("khugepaged/max_ptes_none", 511),
            max_ptes_swap: number("khugepaged/max_ptes_swap", 64),
            sizes: mthp_sizes(std::path::Path::new(THP_DIR)),
            page_size: page_size(),
            huge_page_size: number("hpage_pmd_size", 0) as u64,
        },
    }
}

/// Which 4 KiB pages of another process are present or swapped
/// (`/proc/PID/pagemap`: one 64-bit entry per page; bit 63 present, bit 62
/// swapped). Needs the same ptrace access as reading its memory; page frame
/// numbers, which need root, are not used.
pub struct Pagemap {
    file: File,
    pid: u32,
}

/// Present and swapped pages of one range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub present: u32,
    pub swapped: u32,
}

impl Pagemap {
    pub fn open(pid: u32) -> Result<Pagemap, Error> {
        let path = format!("/proc/{pid}/pagemap");
        let file = File::open(&path).map_err(|e| read_error(pid, &path, e))?;
        Ok(Pagemap { file, pid })
    }

    /// Counts the present and the swapped pages among the `n` 4 KiB pages
    /// from `addr` (page aligned).
    pub fn count(&self, addr: u64, n: usize, buf: &mut Vec<u8>) -> Result<PageCounts, Error> {
        buf.resize(n * 8, 0);
        self.file
            .read_exact_at(buf, addr / 4096 * 8)
            .map_err(|e| read_error(self.pid, "pagemap", e))?;
        let mut c = PageCounts::default();
        for e in buf.chunks_exact(8) {
            let v = u64::from_ne_bytes(e.try_into().unwrap_or([0; 8]));
            if v >> 63 & 1 == 1 {
                c.present += 1;
            } else if v >> 62 & 1 == 1 {
                c.swapped += 1;
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5591f3a00000-5591f3c00000 rw-p 00000000 00:00 0                          [heap]
Size:               2048 kB
Rss:                 100 kB
Anonymous:           100 kB
AnonHugePages:         0 kB
Swap:                  8 kB
THPeligible:           1
VmFlags: rd wr mr mw me ac sd hg
7f0000000000-7f0000400000 rw-p 00000000 00:00 0 
Size:               4096 kB
Rss:                4096 kB
Anonymous:          4096 kB
AnonHugePages:      2048 kB
THPeligible:           0
VmFlags: rd wr mr mw me nh
7f0000400000-7f0000401000 r-xp 00002000 fe:00 247282                     /usr/lib/my lib.so
Size:                  4 kB
Rss:                   4 kB
THPeligible:           0
VmFlags: rd ex mr mw me
";

    #[test]
    fn mthp_sizes_are_read_smallest_first_with_their_selected_word() {
        let dir = std::env::temp_dir().join(format!("hg-mthp-{}", std::process::id()));
        for (kb, text) in [
            (64, "always inherit madvise [never]\n"),
            (16, "[always] inherit madvise never\n"),
            (2048, "always [inherit] madvise never\n"),
        ] {
            let d = dir.join(format!("hugepages-{kb}kB"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("enabled"), text).unwrap();
        }
        std::fs::create_dir_all(dir.join("khugepaged")).unwrap();
        let sizes = mthp_sizes(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            sizes,
            vec![
                (16, "always".to_string()),
                (64, "never".to_string()),
                (2048, "inherit".to_string())
            ]
        );
        assert!(mthp_sizes(std::path::Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn smaps_fields_and_paths_with_spaces() {
        let m = parse_smaps(SMAPS).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x5591f3a00000);
        assert_eq!(m[0].size(), 2 << 20);
        assert_eq!(m[0].path, "[heap]");
        assert_eq!((m[0].rss, m[0].swap), (100 * 1024, 8 * 1024));
        assert!(m[0].thp_eligible && m[0].has_flag("hg") && !m[0].has_flag("nh"));
        assert!(m[0].is_private_anonymous());
        assert_eq!(m[1].path, "");
        assert_eq!(m[1].label(), "[anon]");
        assert_eq!(m[1].anon_huge, 2 << 20);
        assert!(m[1].has_flag("nh") && !m[1].thp_eligible);
        assert!(m[1].is_private_anonymous());
        assert_eq!(m[2].path, "/usr/lib/my lib.so");
        assert_eq!(m[2].inode, 247282);
        assert!(!m[2].is_private_anonymous());
    }

    #[test]
    fn smaps_rejects_garbage() {
        assert!(parse_smaps("Rss: 4 kB\n").is_err());
        assert!(parse_smaps("not a mapping\n").is_err());
    }

    #[test]
    fn status_and_stat() {
        let st = parse_status(
            "Name:\tpython3\nVmRSS:\t  2048 kB\nRssAnon:\t 1024 kB\nTHP_enabled:\t0\n",
        );
        assert_eq!(st.name, "python3");
        assert_eq!((st.rss, st.rss_anon), (2 << 20, 1 << 20));
        assert!(!st.thp_enabled);
        assert!(parse_status("VmRSS: 4 kB\n").thp_enabled);
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194304 100 0 0 0 17 5 0 0 20 0 1 0";
        assert_eq!(parse_stat(stat), Some(('S', 22)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn sysfs_choice() {
        assert_eq!(selected("always [madvise] never\n"), "madvise");
        assert_eq!(selected("[always] madvise never"), "always");
        assert_eq!(selected(""), "unknown");
    }

    #[test]
    fn own_pagemap_sees_touched_pages() {
        let pid = std::process::id();
        let mut v = vec![0u8; 64 * 4096 + 4096];
        let base = (v.as_mut_ptr() as u64 + 4095) & !4095;
        // Touch every other page of 64.
        for i in (0..64).step_by(2) {
            // SAFETY: inside `v`.
            unsafe { *((base + i * 4096) as *mut u8) = 1 };
        }
        let pm = Pagemap::open(pid).unwrap();
        let c = pm.count(base, 64, &mut Vec::new()).unwrap();
        assert!(c.present >= 32, "{c:?}");
        assert!(matches!(smaps(u32::MAX - 1), Err(Error::Exited(_))));
    }

    #[test]
    fn rollup_reads_the_huge_page_lines() {
        let text = "55a4c0000000-7ffd5d7fe000 ---p 00000000 00:00 0 [rollup]\n\
                    Rss:              123456 kB\n\
                    AnonHugePages:      4096 kB\n\
                    ShmemPmdMapped:     2048 kB\n\
                    FilePmdMapped:         0 kB\n";
        let r = parse_rollup(text);
        assert_eq!(r.anon_huge_pages, 4096 * 1024);
        assert_eq!(r.shmem_pmd_mapped, 2048 * 1024);
    }
}
