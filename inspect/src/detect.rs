//! Which allocator and runtime a process uses, read from the outside: the
//! files it has mapped (`/proc/PID/maps`) and two sections of its
//! executable (`/proc/PID/exe`): `.go.buildinfo` (a Go binary, and its
//! version) and `.rodata` (marks that a statically linked allocator leaves:
//! hugeguard's `HUGEGUARD_` variable names, jemalloc's `<jemalloc>:`
//! message prefix, mimalloc's `mimalloc: ` one). The advice of a report
//! follows from what is found ([`Detected::advice`]). `docs/INSPECT.md`
//! has the table.

use crate::elf;
use serde::Serialize;
use std::path::Path;

/// Go versions whose runtime marked partially released huge pages
/// `MADV_NOHUGEPAGE` (1.5 to 1.21.0, `docs/INSPECT.md`).
pub const GO_PROTECTED: ((u32, u32, u32), (u32, u32, u32)) = ((1, 5, 0), (1, 21, 0));

/// How much of `.rodata` is searched for marks (a larger section is read
/// only this far).
const RODATA_LIMIT: u64 = 64 << 20;

/// What a process was found to use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Detected {
    /// The allocator behind its heap: `glibc`, `musl`, `jemalloc`,
    /// `mimalloc`, `tcmalloc`, `hugeguard`, `go` (the Go runtime's own), or
    /// `unknown`.
    pub allocator: String,
    /// The language runtime, if one is recognised: `go`, `jvm`, `v8`,
    /// `python`; empty otherwise.
    pub runtime: String,
    /// The Go version (`go1.22.3`), from the binary's build info.
    pub go_version: Option<String>,
    /// Whether the detected allocator or runtime defends against
    /// khugepaged's re-inflation itself (`None`: not known, such as a Go
    /// binary whose version could not be read).
    pub protected: Option<bool>,
}

/// What the executable's sections say (cached by the exporter per file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExeMarks {
    /// A Go binary (it has `.go.buildinfo`), with its version if readable.
    pub go: Option<Option<String>>,
    /// An allocator linked into the executable, by its marks in `.rodata`.
    pub allocator: Option<&'static str>,
}

/// Reads the marks of the executable at `path` (two sections at most).
pub fn exe_marks(path: &Path) -> ExeMarks {
    let go = elf::read_section(path, ".go.buildinfo", 4096).map(|b| go_version(&b));
    let allocator = if go.is_some() {
        None
    } else {
        elf::read_section(path, ".rodata", RODATA_LIMIT).and_then(|r| static_allocator(&r))
    };
    ExeMarks { go, allocator }
}

/// The Go version in a `.go.buildinfo` section: the 32-byte header
/// (`\xff Go buildinf:`, pointer size, flags) and, in Go 1.18 and later
/// (flag 2), the version as a length-prefixed string right after it.
/// Older binaries point to it instead: `None` then.
pub fn go_version(section: &[u8]) -> Option<String> {
    if section.len() < 33 || &section[..14] != b"\xff Go buildinf:" || section[15] & 2 == 0 {
        return None;
    }
    let (len, used) = uvarint(&section[32..])?;
    let start = 32 + used;
    let bytes = section.get(start..start.checked_add(len as usize)?)?;
    let v = std::str::from_utf8(bytes).ok()?;
    v.starts_with("go").then(|| v.to_string())
}

/// A Go unsigned varint: the value and the bytes it took.
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `go1.21.0` -> (1, 21, 0); a release candidate (`go1.21rc2`) counts as
/// its release; `None` for a development build.
pub fn parse_go_version(v: &str) -> Option<(u32, u32, u32)> {
    let rest = v.strip_prefix("go")?;
    let rest = rest
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = rest.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The allocator whose marks `.rodata` holds (hugeguard first: a program
/// that links it and another names both).
///
/// The marks are kept reversed here, so that this tool's own `.rodata`
/// does not hold them and it does not find itself.
fn static_allocator(rodata: &[u8]) -> Option<&'static str> {
    let has = |reversed: &[u8]| {
        let needle: Vec<u8> = reversed.iter().rev().copied().collect();
        rodata.windows(needle.len()).any(|w| w == needle)
    };
    [
        (&b"HSEM_DRAUGEGUH"[..], "hugeguard"),
        (b" :>collamej<", "jemalloc"),
        (b" :collamim", "mimalloc"),
    ]
    .into_iter()
    .find_map(|(reversed, name)| has(reversed).then_some(name))
}

/// Decides from the mapped files' paths (`/proc/PID/maps`, one per line,
/// in any order), the executable's path and its marks.
pub fn detect<'a>(
    mapped: impl IntoIterator<Item = &'a str>,
    exe: &str,
    marks: &ExeMarks,
) -> Detected {
    let mut preload = None;
    let mut libc = None;
    let mut runtime = "";
    for path in mapped {
        let base = path.rsplit('/').next().unwrap_or(path);
        if base.starts_with("libhugeguard") {
            preload = Some("hugeguard");
        } else if base.starts_with("libjemalloc") && preload.is_none() {
            preload = Some("jemalloc");
        } else if base.starts_with("libmimalloc") && preload.is_none() {
            preload = Some("mimalloc");
        } else if base.starts_with("libtcmalloc") && preload.is_none() {
            preload = Some("tcmalloc");
        } else if base.starts_with("libc.so.6") || base.starts_with("libc-2.") {
            libc = libc.or(Some("glibc"));
        } else if base.starts_with("ld-musl") || base.starts_with("libc.musl") {
            libc = Some("musl");
        } else if base == "libjvm.so" {
            runtime = "jvm";
        } else if base.starts_with("libnode.so") || base.starts_with("libv8") {
            runtime = "v8";
        } else if base.starts_with("libpython") && runtime.is_empty() {
            runtime = "python";
        }
    }
    let exe_base = exe.rsplit('/').next().unwrap_or(exe);
    if runtime.is_empty() {
        if matches!(exe_base, "node" | "nodejs" | "deno" | "d8") {
            runtime = "v8";
        } else if exe_base.starts_with("python") {
            runtime = "python";
        }
    }
    let mut d = Detected::default();
    if let Some(go) = &marks.go {
        d.allocator = "go".into();
        d.runtime = "go".into();
        d.go_version = go.clone();
        d.protected = go
            .as_deref()
            .and_then(parse_go_version)
            .map(|v| GO_PROTECTED.0 <= v && v <= GO_PROTECTED.1);
        return d;
    }
    d.allocator = preload
        .or(marks.allocator)
        .or(libc)
        .unwrap_or("unknown")
        .into();
    d.runtime = runtime.into();
    d.protected = Some(d.allocator == "hugeguard");
    d
}

/// What process `pid` uses: its mapped files and its executable's marks.
pub fn detect_process(pid: u32) -> Result<Detected, crate::Error> {
    detect_process_with(pid, &exe_marks(Path::new(&format!("/proc/{pid}/exe"))))
}

/// [`detect_process`] with the executable's marks already read (the
/// exporter keeps them per file).
pub fn detect_process_with(pid: u32, marks: &ExeMarks) -> Result<Detected, crate::Error> {
    let mapped = crate::proc_files::mapped_files(pid)?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(detect(mapped.iter().map(String::as_str), &exe, marks))
}

impl Detected {
    /// What to do about khugepaged's re-inflation for this process.
    pub fn advice(&self) -> String {
        const SYSCTL: &str =
            "or lower /sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none";
        match (self.allocator.as_str(), self.protected) {
            ("hugeguard", _) => {
                "protected: hugeguard marks partially released huge pages NOHUGEPAGE".into()
            }
            ("go", Some(true)) => format!(
                "protected: {} marks released memory NOHUGEPAGE (Go 1.5 to 1.21.0)",
                self.go_version.as_deref().unwrap_or("this Go")
            ),
            ("go", _) => format!(
                "{} gives no huge-page advice (only Go 1.5 to 1.21.0 did): run it with \
                 GODEBUG=disablethp=1 (Go 1.21.6 and later) {SYSCTL}",
                self.go_version
                    .as_deref()
                    .unwrap_or("this Go (version unknown)")
            ),
            ("unknown", _) => format!("allocator not recognised: {}", &SYSCTL[3..]),
            (alloc, _) => {
                let what = match self.runtime.as_str() {
                    "jvm" => " (the JVM's native memory; its Java heap is its own)",
                    "v8" => " (V8's native memory; its JavaScript heap is its own)",
                    _ => "",
                };
                format!(
                    "{alloc}{what}: LD_PRELOAD=libhugeguard_preload.so (any program), or \
                     #[global_allocator] static A: hugeguard::HugeGuard (Rust), {SYSCTL}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buildinfo(version: &str) -> Vec<u8> {
        let mut b = b"\xff Go buildinf:".to_vec();
        b.push(8); // pointer size
        b.push(2); // flags: version inline
        b.resize(32, 0);
        b.push(version.len() as u8);
        b.extend_from_slice(version.as_bytes());
        b.extend_from_slice(b"\x00modinfo");
        b
    }

    #[test]
    fn reads_go_versions_and_their_range() {
        assert_eq!(
            go_version(&buildinfo("go1.22.3")).as_deref(),
            Some("go1.22.3")
        );
        // An old binary points to its version: not read.
        let mut old = buildinfo("go1.16");
        old[15] = 0;
        assert_eq!(go_version(&old), None);
        assert_eq!(
            go_version(b"not build info at all, but long enough to try"),
            None
        );
        assert_eq!(parse_go_version("go1.21.0"), Some((1, 21, 0)));
        assert_eq!(parse_go_version("go1.21rc2"), Some((1, 21, 0)));
        assert_eq!(parse_go_version("go1.9"), Some((1, 9, 0)));
        assert_eq!(parse_go_version("devel +abc"), None);
        let go = |v: &str| ExeMarks {
            go: Some(Some(v.into())),
            allocator: None,
        };
        for (v, protected) in [
            ("go1.4.3", false),
            ("go1.5", true),
            ("go1.20.14", true),
            ("go1.21.0", true),
            ("go1.21.1", false),
            ("go1.22.3", false),
        ] {
            let d = detect(["/lib/x86_64-linux-gnu/libc.so.6"], "/usr/bin/svc", &go(v));
            assert_eq!(
                (d.allocator.as_str(), d.protected),
                ("go", Some(protected)),
                "{v}"
            );
            assert_eq!(d.advice().starts_with("protected"), protected, "{v}");
        }
        let unknown = ExeMarks {
            go: Some(None),
            allocator: None,
        };
        let d = detect([], "/app", &unknown);
        assert_eq!(d.protected, None);
        assert!(d.advice().contains("GODEBUG=disablethp=1"));
    }

    #[test]
    fn tells_allocators_and_runtimes_from_mapped_files() {
        let none = ExeMarks::default();
        let glibc = [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libm.so.6",
        ];
        let d = detect(glibc, "/usr/bin/python3.11", &none);
        assert_eq!(
            (d.allocator.as_str(), d.runtime.as_str()),
            ("glibc", "python")
        );
        assert!(d.advice().contains("LD_PRELOAD=libhugeguard_preload.so"));
        for (lib, name) in [
            ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc"),
            ("/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0", "mimalloc"),
            (
                "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.9",
                "tcmalloc",
            ),
            ("/work/target/release/libhugeguard_preload.so", "hugeguard"),
        ] {
            let d = detect([glibc[0], lib], "/bin/prog", &none);
            assert_eq!(d.allocator, name);
            assert_eq!(d.protected, Some(name == "hugeguard"));
        }
        let jvm = detect(
            [glibc[0], "/usr/lib/jvm/java-17/lib/server/libjvm.so"],
            "/usr/bin/java",
            &none,
        );
        assert_eq!(
            (jvm.allocator.as_str(), jvm.runtime.as_str()),
            ("glibc", "jvm")
        );
        let node = detect([glibc[0]], "/usr/bin/node", &none);
        assert_eq!(node.runtime, "v8");
        let musl = detect(["/lib/ld-musl-x86_64.so.1"], "/bin/app", &none);
        assert_eq!(musl.allocator, "musl");
        let stat = detect([], "/bin/static", &none);
        assert_eq!(stat.allocator, "unknown");
        // Statically linked allocators, found by their marks.
        let rust = ExeMarks {
            go: None,
            allocator: Some("hugeguard"),
        };
        assert_eq!(detect(glibc, "/srv/api", &rust).allocator, "hugeguard");
    }

    #[test]
    fn finds_marks_in_rodata() {
        assert_eq!(
            static_allocator(b"..HUGEGUARD_MESH..<jemalloc>: "),
            Some("hugeguard")
        );
        assert_eq!(static_allocator(b"abc<jemalloc>: def"), Some("jemalloc"));
        assert_eq!(static_allocator(b"mimalloc: warning"), Some("mimalloc"));
        assert_eq!(static_allocator(b"nothing here"), None);
        // A Rust binary is no Go binary.
        let marks = exe_marks(&std::env::current_exe().unwrap());
        assert_eq!(marks.go, None);
    }
}
