//! Configuration from `HUGEGUARD_*` environment variables and the kernel's
//! THP settings, read once at start-up without allocating.
//!
//! | variable | values | default |
//! |---|---|---|
//! | `HUGEGUARD_RELEASE` | `aware`, `go-legacy`, `disable-thp`, `off` | `aware` |
//! | `HUGEGUARD_HOLDBACK_MS` | milliseconds freed memory is kept before release | `1000` |
//! | `HUGEGUARD_BACKGROUND` | `on`, `off`: the background release thread | `on` |
//! | `HUGEGUARD_MEMORY_LIMIT` | soft limit in bytes, suffix `k`, `m`, `g` allowed; `0` none | none |
//! | `HUGEGUARD_COLLAPSE` | `on`, `off`: background `MADV_COLLAPSE` of dense huge pages | `on` |
//! | `HUGEGUARD_HARDEN` | `on`/`1`, `off`/`0`: hardened mode (`harden`: every free checked, links encoded) | `off` (`on` in builds with debug assertions) |
//! | `HUGEGUARD_MESH` | `on`, `off`: mesh mode (`docs/MESH.md`): a shared-memory heap, objects from random slots of their span, each class's spans in huge pages of their own, and sparse units meshed when idle | `off` |
//!
//! An invalid value gets one line on stderr and the default.

use crate::os::linux;
use core::sync::atomic::{AtomicU8, Ordering};

/// How memory goes back to the OS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Whole free huge pages first; NOHUGEPAGE before any partial release;
    /// dense huge pages re-marked and collapsed in the background.
    Aware,
    /// Go 1.5-1.20: NOHUGEPAGE on every release, HUGEPAGE when reused.
    GoLegacy,
    /// `PR_SET_THP_DISABLE` for the whole process, then release freely.
    DisableThp,
    /// Never release.
    Off,
}

/// What the kernel's `transparent_hugepage/enabled` says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ThpEnabled {
    Always,
    Madvise,
    Never,
    /// Unreadable (no THP support, or no /sys): treated as `Never`.
    Unknown,
}

/// The kernel's THP settings that matter to the release policy.
#[derive(Clone, Copy, Debug)]
pub struct Thp {
    pub enabled: ThpEnabled,
    pub max_ptes_none: u32,
}

impl Thp {
    /// Whether khugepaged could re-inflate a partly released huge page, so
    /// that marking it NOHUGEPAGE first is worth a system call.
    pub fn inflation_possible(&self) -> bool {
        matches!(self.enabled, ThpEnabled::Always | ThpEnabled::Madvise) && self.max_ptes_none > 0
    }
}

/// The allocator's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub mode: Mode,
    pub holdback_ms: u32,
    pub background: bool,
    /// Soft memory limit in bytes; 0 for none.
    pub memory_limit: usize,
    pub collapse: bool,
    /// Hardened mode (`harden`).
    pub harden: bool,
    /// Mesh mode: objects from random slots of their span (`central`), each
    /// class's spans in its own huge pages (`page_heap`), and meshing
    /// (`mesh`) where the kernel allows it.
    pub mesh: bool,
    pub thp: Thp,
}

impl Config {
    /// The defaults, with THP settings unknown.
    pub const DEFAULT: Config = Config {
        mode: Mode::Aware,
        holdback_ms: 1000,
        background: true,
        memory_limit: 0,
        collapse: true,
        harden: cfg!(debug_assertions),
        mesh: false,
        thp: Thp {
            enabled: ThpEnabled::Unknown,
            max_ptes_none: 511,
        },
    };

    /// Whether releases must mark the huge page NOHUGEPAGE first.
    pub fn must_mark(&self) -> bool {
        match self.mode {
            Mode::GoLegacy => true,
            Mode::Aware => self.thp.inflation_possible(),
            Mode::DisableThp | Mode::Off => false,
        }
    }

    /// Whether dense huge pages are re-marked and collapsed.
    pub fn regain_huge_pages(&self) -> bool {
        self.mode == Mode::Aware && self.thp.enabled != ThpEnabled::Never
    }
}

/// Parses a release mode.
pub fn parse_mode(v: &[u8]) -> Option<Mode> {
    match v {
        b"aware" => Some(Mode::Aware),
        b"go-legacy" => Some(Mode::GoLegacy),
        b"disable-thp" => Some(Mode::DisableThp),
        b"off" => Some(Mode::Off),
        _ => None,
    }
}

/// Parses `on`/`off` (also `1`/`0`, `true`/`false`).
pub fn parse_switch(v: &[u8]) -> Option<bool> {
    match v {
        b"on" | b"1" | b"true" => Some(true),
        b"off" | b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// Parses a decimal number with an optional `k`, `m` or `g` suffix (powers
/// of 1024); `None` on junk or overflow.
pub fn parse_size(v: &[u8]) -> Option<usize> {
    let (digits, mult) = match v.last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1usize << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    n.checked_mul(mult)
}

/// Parses the bracketed choice of a sysfs THP file ("always [madvise] never").
pub fn parse_thp_enabled(v: &[u8]) -> ThpEnabled {
    let open = v.iter().position(|&c| c == b'[');
    let close = v.iter().position(|&c| c == b']');
    match (open, close) {
        (Some(o), Some(c)) if o < c => match &v[o + 1..c] {
            b"always" => ThpEnabled::Always,
            b"madvise" => ThpEnabled::Madvise,
            b"never" => ThpEnabled::Never,
            _ => ThpEnabled::Unknown,
        },
        _ => ThpEnabled::Unknown,
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let end = v
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &v[..end]
}

fn warn(var: &str, value: &[u8], default: &str) {
    let mut buf = [0u8; 256];
    let mut len = 0;
    for part in [
        b"hugeguard: invalid ".as_slice(),
        var.as_bytes(),
        b"=",
        value,
        b"; using the default (",
        default.as_bytes(),
        b")\n",
    ] {
        let n = part.len().min(buf.len() - len);
        buf[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    linux::write_stderr(&buf[..len]);
}

fn read_thp() -> Thp {
    let mut buf = [0u8; 128];
    let enabled = linux::read_file(c"/sys/kernel/mm/transparent_hugepage/enabled", &mut buf)
        .map_or(ThpEnabled::Unknown, |n| parse_thp_enabled(&buf[..n]));
    let max_ptes_none = linux::read_file(
        c"/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none",
        &mut buf,
    )
    .and_then(|n| parse_size(trim(&buf[..n])))
    .map_or(511, |v| v as u32);
    Thp {
        enabled,
        max_ptes_none,
    }
}

/// Reads the environment and sysfs into a `Config`.
pub fn load() -> Config {
    let mut c = Config::DEFAULT;
    if let Some(v) = linux::getenv(c"HUGEGUARD_RELEASE") {
        match parse_mode(v) {
            Some(m) => c.mode = m,
            None => warn("HUGEGUARD_RELEASE", v, "aware"),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_HOLDBACK_MS") {
        match parse_size(v).and_then(|n| u32::try_from(n).ok()) {
            Some(n) => c.holdback_ms = n,
            None => warn("HUGEGUARD_HOLDBACK_MS", v, "1000"),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_BACKGROUND") {
        match parse_switch(v) {
            Some(b) => c.background = b,
            None => warn("HUGEGUARD_BACKGROUND", v, "on"),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_MEMORY_LIMIT") {
        match parse_size(v) {
            Some(n) => c.memory_limit = n,
            None => warn("HUGEGUARD_MEMORY_LIMIT", v, "none"),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_COLLAPSE") {
        match parse_switch(v) {
            Some(b) => c.collapse = b,
            None => warn("HUGEGUARD_COLLAPSE", v, "on"),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_HARDEN") {
        match parse_switch(v) {
            Some(b) => c.harden = b,
            None => warn("HUGEGUARD_HARDEN", v, if c.harden { "on" } else { "off" }),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_MESH") {
        match parse_switch(v) {
            Some(b) => c.mesh = b,
            None => warn("HUGEGUARD_MESH", v, "off"),
        }
    }
    if c.harden {
        // Hardened mode's link keys, before any object is linked.
        crate::freelist::set_keys(linux::random_u64() as usize, linux::random_u64() as usize);
    }
    c.thp = read_thp();
    if c.mode == Mode::DisableThp && !linux::disable_thp_for_process() {
        linux::write_stderr(b"hugeguard: PR_SET_THP_DISABLE failed; releasing without it\n");
    }
    c
}

static STATE: AtomicU8 = AtomicU8::new(0);
static mut CONFIG: Config = Config::DEFAULT;

/// The configuration, loaded on first use. Concurrent first callers may
/// see the defaults until the loading thread finishes (it runs before the
/// first heap exists, so in practice only one thread is there).
pub fn get() -> Config {
    match STATE.load(Ordering::Acquire) {
        2 => {}
        0 if STATE
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok() =>
        {
            let c = load();
            // SAFETY: only the thread that won the 0 -> 1 exchange writes, and
            // readers read only after seeing 2 (Release/Acquire).
            unsafe { CONFIG = c };
            STATE.store(2, Ordering::Release);
        }
        _ => return Config::DEFAULT,
    }
    // SAFETY: written once before STATE became 2, never again.
    unsafe { CONFIG }
}

/// Makes sure the configuration is loaded (see [`get_loaded`]); one load
/// when it is.
#[inline(always)]
pub fn ensure_loaded() {
    if STATE.load(Ordering::Acquire) != 2 {
        get_loaded();
    }
}

/// [`get`], waiting for a loading thread to finish instead of answering
/// with the defaults (loading makes no allocation, so it always finishes).
/// For decisions that must agree with the loaded settings: whether a thread
/// cache may use the fast path depends on hardened mode.
pub fn get_loaded() -> Config {
    let mut spins = 0u32;
    loop {
        if STATE.load(Ordering::Acquire) != 1 {
            let c = get();
            if STATE.load(Ordering::Acquire) == 2 {
                return c;
            }
        }
        // Loading takes microseconds; a loader that takes longer was
        // preempted, so sleep instead of spinning on it (once per process).
        if spins < 1000 {
            spins += 1;
            core::hint::spin_loop();
        } else {
            linux::sleep_ms(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!(parse_mode(b"go-legacy"), Some(Mode::GoLegacy));
        assert_eq!(parse_mode(b"Aware"), None);
        assert_eq!(parse_switch(b"off"), Some(false));
        assert_eq!(parse_switch(b"maybe"), None);
        assert_eq!(parse_size(b"512m"), Some(512 << 20));
        assert_eq!(parse_size(b"2G"), Some(2 << 30));
        assert_eq!(parse_size(b"100"), Some(100));
        assert_eq!(parse_size(b"k"), None);
        assert_eq!(parse_size(b"-1"), None);
        assert_eq!(parse_size(b"99999999999999999999999"), None);
        assert_eq!(
            parse_thp_enabled(b"always [madvise] never\n"),
            ThpEnabled::Madvise
        );
        assert_eq!(
            parse_thp_enabled(b"[always] madvise never"),
            ThpEnabled::Always
        );
        assert_eq!(parse_thp_enabled(b"garbage"), ThpEnabled::Unknown);
    }

    #[test]
    fn marking_follows_mode_and_kernel() {
        let mut c = Config::DEFAULT;
        c.thp.enabled = ThpEnabled::Madvise;
        assert!(c.must_mark());
        c.thp.max_ptes_none = 0;
        assert!(
            !c.must_mark(),
            "max_ptes_none = 0: khugepaged cannot re-inflate"
        );
        c.thp.max_ptes_none = 511;
        c.thp.enabled = ThpEnabled::Never;
        assert!(!c.must_mark() && !c.regain_huge_pages());
        c.mode = Mode::GoLegacy;
        assert!(c.must_mark());
        c.mode = Mode::DisableThp;
        assert!(!c.must_mark());
    }
}
