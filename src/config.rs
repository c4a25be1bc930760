//! Configuration from `HUGEGUARD_*` environment variables and the kernel's
//! THP settings, read once at start-up without allocating.
//!
//! | variable | values | default |
//! |---|---|---|
//! | `HUGEGUARD_RELEASE` | `aware`, `go-legacy`, `disable-thp`, `off` | `aware` |
//! | `HUGEGUARD_HOLDBACK_MS` | milliseconds freed memory is kept before release (the background thread stretches it up to 16 times against release churn: `background::driver::HoldbackStretch`) | `1000` |
//! | `HUGEGUARD_BACKGROUND` | `on`, `off`: the background release thread | `on` |
//! | `HUGEGUARD_MEMORY_LIMIT` | soft limit in bytes, suffix `k`, `m`, `g` allowed; `0` none | the cgroup's lowest memory limit (`soft_limit.rs`), else none |
//! | `HUGEGUARD_COLLAPSE` | `on`, `off`: background `MADV_COLLAPSE` of dense huge pages | `on` |
//! | `HUGEGUARD_PRESSURE` | `on`, `off`: give held-back memory back at once on the kernel's memory pressure (a PSI trigger, `os/pressure.rs`) | `on` |
//! | `HUGEGUARD_HARDEN` | `on`/`1`, `off`/`0`: hardened mode (`harden`: every free checked, links encoded) | `off` (`on` in builds with debug assertions) |
//! | `HUGEGUARD_PROF` | `on`, `off`: sampled heap profiling (`profile`) from the start | `off` |
//! | `HUGEGUARD_PROF_INTERVAL` | mean bytes between heap-profile samples, suffix `k`, `m`, `g` allowed | `512k` |
//! | `HUGEGUARD_PROF_PATH` | a file the heap profile is written to at exit | none |
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
    /// Multi-size THP (Linux 6.8+, `hugepages-<size>kB/enabled`).
    pub mthp: Mthp,
}

/// Orders of the mTHP sizes read: 16 KiB (order 2) up to the 2 MiB huge
/// page (order 9); bit `k` of each mask is the size `PAGE_SIZE << k`.
pub const MTHP_ORDERS: core::ops::RangeInclusive<u32> = 2..=9;

/// Each mTHP size's setting, as bit masks by order (absent sizes in none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mthp {
    pub always: u32,
    pub madvise: u32,
    pub inherit: u32,
}

impl Thp {
    /// Orders a page fault may map as one folio in the heap's memory: sizes
    /// set to `always` or `madvise` (the heap's dense huge pages are
    /// `MADV_HUGEPAGE`), and `inherit` ones while THP itself is on.
    pub fn mthp_enabled(&self) -> u32 {
        let thp_on = matches!(self.enabled, ThpEnabled::Always | ThpEnabled::Madvise);
        self.mthp.always | self.mthp.madvise | if thp_on { self.mthp.inherit } else { 0 }
    }

    /// Whether memory released inside a huge page could come back larger
    /// than it went, so that marking the huge page NOHUGEPAGE first is worth
    /// a system call: khugepaged could re-inflate the 2 MiB page, or a
    /// fault in a released range could map a whole mTHP folio there
    /// (`MADV_NOHUGEPAGE` turns off every size).
    pub fn inflation_possible(&self) -> bool {
        let pmd_order = 1 << MTHP_ORDERS.end();
        let enabled = self.mthp_enabled();
        // The 2 MiB size's own file overrides THP's switch unless `inherit`.
        let pmd = (matches!(self.enabled, ThpEnabled::Always | ThpEnabled::Madvise)
            || enabled & pmd_order != 0)
            && self.max_ptes_none > 0;
        pmd || enabled & !pmd_order != 0
    }
}

/// The kernel's page sizes, read at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Base page size (`sysconf(_SC_PAGESIZE)`).
    pub page_size: usize,
    /// Huge page size (`hpage_pmd_size`; 0 without THP).
    pub huge_size: usize,
}

/// Fits the configuration to a kernel whose pages are not the heap's
/// (`units.rs`: 4 KiB pages, 2 MiB huge pages) and returns the one line to
/// say so, or `None` when they are. The heap keeps carving memory in its
/// own units, which divide the kernel's; only what it asks of the kernel
/// changes:
/// * base pages larger than 4 KiB (arm64, ppc64le): a release inside a huge
///   page covers whole kernel pages only (`Policy::kernel_page`), since a
///   `MADV_DONTNEED` of one 4 KiB unit would drop the whole larger page
///   around it; no metadata page is given back (a span record's 4 KiB page
///   shares its kernel page with live records) and there is no meshing
///   (it maps 4 KiB pages of a file);
/// * huge pages other than 2 MiB (32 MiB under 16 KiB pages, 512 MiB under
///   64 KiB): the heap cannot pack into them, so it does without them: every
///   committed range is marked NOHUGEPAGE (`Policy::no_huge`), which also
///   turns off every mTHP size there, so nothing released can come back
///   larger; nothing is re-marked or collapsed.
pub fn fit_geometry(c: &mut Config, g: Geometry) -> Option<&'static [u8]> {
    use crate::units::{HUGE_SIZE, PAGES_PER_HUGE, PAGE_SIZE};
    let page_ok =
        g.page_size.is_power_of_two() && (PAGE_SIZE..=HUGE_SIZE).contains(&g.page_size);
    // An unheard-of page size: whole 2 MiB units only, which is a whole
    // number of any base page Linux has.
    c.kernel_page_pages = if page_ok {
        g.page_size / PAGE_SIZE
    } else {
        PAGES_PER_HUGE
    };
    let other_page = g.page_size != PAGE_SIZE;
    let other_huge = g.huge_size != 0 && g.huge_size != HUGE_SIZE;
    if other_page {
        c.mesh = false;
    }
    if other_huge {
        c.no_huge_pages = true;
        c.collapse = false;
    }
    match (other_page, other_huge) {
        (false, false) => None,
        (true, false) => Some(
            b"hugeguard: this kernel's base pages are larger than 4 KiB: memory is given back in whole base pages, span metadata is kept, and meshing is off\n",
        ),
        (false, true) => Some(
            b"hugeguard: this kernel's huge pages are not 2 MiB: the heap is marked NOHUGEPAGE, so no huge page of any size backs it or re-inflates it, and nothing is collapsed\n",
        ),
        (true, true) => Some(
            b"hugeguard: this kernel's pages are not 4 KiB and 2 MiB: the heap is marked NOHUGEPAGE (no huge page of any size backs it or re-inflates it), memory is given back in whole base pages, span metadata is kept, and meshing is off\n",
        ),
    }
}

fn read_geometry() -> Geometry {
    let mut buf = [0u8; 32];
    let huge_size = linux::read_file(
        c"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
        &mut buf,
    )
    .and_then(|n| parse_size(trim(&buf[..n])))
    .unwrap_or(0);
    Geometry {
        page_size: linux::page_size(),
        huge_size,
    }
}

/// The allocator's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub mode: Mode,
    pub holdback_ms: u32,
    pub background: bool,
    /// Soft memory limit in bytes from `HUGEGUARD_MEMORY_LIMIT` (0: none);
    /// `None` when the variable is unset, so the cgroup's limit applies
    /// (`soft_limit.rs`).
    pub memory_limit: Option<usize>,
    pub collapse: bool,
    /// Watch the kernel's memory pressure while memory is held back.
    pub pressure: bool,
    /// Hardened mode (`harden`).
    pub harden: bool,
    /// Mesh mode: objects from random slots of their span (`central`), each
    /// class's spans in its own huge pages (`page_heap`), and meshing
    /// (`mesh`) where the kernel allows it.
    pub mesh: bool,
    /// Heap profiling from the start (`HUGEGUARD_PROF`).
    pub prof: bool,
    /// The profile's mean sampling interval (`HUGEGUARD_PROF_INTERVAL`).
    pub prof_interval: Option<usize>,
    /// Where the profile goes at exit (`HUGEGUARD_PROF_PATH`).
    pub prof_path: Option<&'static [u8]>,
    /// The signal that writes the profile (`HUGEGUARD_PROF_SIGNAL`).
    pub prof_signal: Option<i32>,
    pub thp: Thp,
    /// The kernel's page sizes.
    pub geometry: Geometry,
    /// Heap pages (4 KiB) per kernel base page (`fit_geometry`).
    pub kernel_page_pages: usize,
    /// The kernel's huge pages are not 2 MiB: the heap is kept NOHUGEPAGE
    /// (`fit_geometry`).
    pub no_huge_pages: bool,
}

impl Config {
    /// The defaults, with THP settings unknown.
    pub const DEFAULT: Config = Config {
        mode: Mode::Aware,
        holdback_ms: 1000,
        background: true,
        memory_limit: None,
        collapse: true,
        pressure: true,
        harden: cfg!(debug_assertions),
        mesh: false,
        prof: false,
        prof_interval: None,
        prof_path: None,
        prof_signal: None,
        thp: Thp {
            enabled: ThpEnabled::Unknown,
            max_ptes_none: 511,
            mthp: Mthp {
                always: 0,
                madvise: 0,
                inherit: 0,
            },
        },
        geometry: Geometry {
            page_size: crate::units::PAGE_SIZE,
            huge_size: crate::units::HUGE_SIZE,
        },
        kernel_page_pages: 1,
        no_huge_pages: false,
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
        self.mode == Mode::Aware && self.thp.enabled != ThpEnabled::Never && !self.no_huge_pages
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

/// Parses a signal: `USR1`, `USR2` (with or without `SIG`) or a number
/// from 1 to 64 other than SIGKILL (9) and SIGSTOP (19), which cannot be
/// caught.
pub fn parse_signal(v: &[u8]) -> Option<i32> {
    let name = v.strip_prefix(b"SIG").unwrap_or(v);
    let n = match name {
        b"USR1" => 10,
        b"USR2" => 12,
        _ => {
            if name.is_empty() || name.len() > 2 || !name.iter().all(u8::is_ascii_digit) {
                return None;
            }
            name.iter().fold(0, |n, &d| n * 10 + (d - b'0') as i32)
        }
    };
    ((1..=64).contains(&n) && n != 9 && n != 19).then_some(n)
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
    match bracketed(v) {
        b"always" => ThpEnabled::Always,
        b"madvise" => ThpEnabled::Madvise,
        b"never" => ThpEnabled::Never,
        _ => ThpEnabled::Unknown,
    }
}

/// The bracketed word of a sysfs choice ("always [madvise] never"), or
/// nothing.
fn bracketed(v: &[u8]) -> &[u8] {
    let open = v.iter().position(|&c| c == b'[');
    let close = v.iter().position(|&c| c == b']');
    match (open, close) {
        (Some(o), Some(c)) if o < c => &v[o + 1..c],
        _ => &[],
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
        mthp: read_mthp(),
    }
}

/// Reads `hugepages-<size>kB/enabled` for every order of [`MTHP_ORDERS`]
/// (paths built on the stack: nothing is allocated).
fn read_mthp() -> Mthp {
    const DIR: &[u8] = b"/sys/kernel/mm/transparent_hugepage/hugepages-";
    let mut m = Mthp::default();
    for order in MTHP_ORDERS {
        let mut path = [0u8; 96];
        let mut len = DIR.len();
        path[..len].copy_from_slice(DIR);
        len += write_decimal(&mut path[len..], (crate::units::PAGE_SIZE >> 10) << order);
        let tail = b"kB/enabled\0";
        path[len..len + tail.len()].copy_from_slice(tail);
        let Ok(path) = core::ffi::CStr::from_bytes_with_nul(&path[..len + tail.len()]) else {
            continue;
        };
        let mut buf = [0u8; 64];
        let Some(n) = linux::read_file(path, &mut buf) else {
            continue;
        };
        match bracketed(&buf[..n]) {
            b"always" => m.always |= 1 << order,
            b"madvise" => m.madvise |= 1 << order,
            b"inherit" => m.inherit |= 1 << order,
            _ => {}
        }
    }
    m
}

/// Writes `n` in decimal at the start of `out`; returns the digits written
/// (allocation-free: for paths and file contents built on the stack).
pub(crate) fn write_decimal(out: &mut [u8], mut n: usize) -> usize {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
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
            Some(n) => c.memory_limit = Some(n),
            None => warn("HUGEGUARD_MEMORY_LIMIT", v, "none"),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_COLLAPSE") {
        match parse_switch(v) {
            Some(b) => c.collapse = b,
            None => warn("HUGEGUARD_COLLAPSE", v, "on"),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_PRESSURE") {
        match parse_switch(v) {
            Some(b) => c.pressure = b,
            None => warn("HUGEGUARD_PRESSURE", v, "on"),
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
    if let Some(v) = linux::getenv(c"HUGEGUARD_PROF") {
        match parse_switch(v) {
            Some(b) => c.prof = b,
            None => warn("HUGEGUARD_PROF", v, "off"),
        }
    }
    if let Some(v) = linux::getenv(c"HUGEGUARD_PROF_INTERVAL") {
        match parse_size(v).filter(|&n| n > 0) {
            Some(n) => c.prof_interval = Some(n),
            None => warn("HUGEGUARD_PROF_INTERVAL", v, "512k"),
        }
    }
    c.prof_path = linux::getenv(c"HUGEGUARD_PROF_PATH").filter(|p| !p.is_empty());
    if let Some(v) = linux::getenv(c"HUGEGUARD_PROF_SIGNAL") {
        match parse_signal(v) {
            Some(n) => c.prof_signal = Some(n),
            None => warn("HUGEGUARD_PROF_SIGNAL", v, "none"),
        }
    }
    if c.harden {
        // Hardened mode's link keys, before any object is linked.
        crate::freelist::set_keys(linux::random_u64() as usize, linux::random_u64() as usize);
    }
    c.thp = read_thp();
    let geometry = read_geometry();
    c.geometry = geometry;
    if let Some(line) = fit_geometry(&mut c, geometry) {
        linux::write_stderr(line);
    }
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
        assert_eq!(parse_signal(b"USR2"), Some(12));
        assert_eq!(parse_signal(b"SIGUSR1"), Some(10));
        assert_eq!(parse_signal(b"34"), Some(34));
        assert_eq!(parse_signal(b"9"), None, "SIGKILL cannot be caught");
        assert_eq!(parse_signal(b"65"), None);
        assert_eq!(parse_signal(b"HUP"), None);
        assert_eq!(parse_signal(b""), None);
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

    #[test]
    fn an_enabled_mthp_size_makes_aware_mode_mark() {
        let mut c = Config::DEFAULT;
        c.thp.enabled = ThpEnabled::Never;
        assert!(!c.must_mark());
        // hugepages-64kB/enabled = always (order 4), THP itself off: a fault
        // in a released 64 KiB range could map a whole folio.
        c.thp.mthp.always = 1 << 4;
        assert!(c.must_mark() && c.thp.mthp_enabled() == 1 << 4);
        // `inherit` follows THP: off under `never`, on under `madvise`.
        c.thp.mthp = Mthp {
            inherit: 1 << 5,
            ..Mthp::default()
        };
        assert!(!c.must_mark());
        c.thp.enabled = ThpEnabled::Madvise;
        c.thp.max_ptes_none = 0;
        assert!(c.must_mark(), "a 128 KiB size inherits madvise");
        // The 2 MiB size alone, with max_ptes_none = 0: nothing to fear.
        c.thp.mthp = Mthp {
            inherit: 1 << 9,
            ..Mthp::default()
        };
        assert!(!c.must_mark());
        // ... but set to `always` under THP `never`, it is khugepaged's.
        c.thp.enabled = ThpEnabled::Never;
        c.thp.max_ptes_none = 511;
        c.thp.mthp = Mthp {
            always: 1 << 9,
            ..Mthp::default()
        };
        assert!(c.must_mark());
    }

    #[test]
    fn other_page_geometries_get_a_policy_that_stays_correct() {
        let geometry = |page_size, huge_size| Geometry {
            page_size,
            huge_size,
        };
        // This machine's shape, and a kernel without THP: as configured.
        for g in [geometry(4096, 2 << 20), geometry(4096, 0)] {
            let mut c = Config::DEFAULT;
            assert!(fit_geometry(&mut c, g).is_none());
            assert!(c.mode == Mode::Aware && c.collapse && c.regain_huge_pages());
            assert!(c.kernel_page_pages == 1 && !c.no_huge_pages);
        }
        // arm64 with 16 KiB or 64 KiB pages (32 or 512 MiB huge pages):
        // release in whole base pages, no huge pages at all.
        for (g, pages) in [
            (geometry(16384, 32 << 20), 4),
            (geometry(65536, 512 << 20), 16),
        ] {
            let mut c = Config::DEFAULT;
            c.mesh = true;
            let line = fit_geometry(&mut c, g).unwrap();
            assert!(line.starts_with(b"hugeguard: ") && line.ends_with(b"\n"));
            assert_eq!(c.kernel_page_pages, pages);
            assert!(c.no_huge_pages && !c.mesh && !c.collapse && !c.regain_huge_pages());
        }
        // ppc64le radix: 64 KiB pages under 2 MiB huge pages; huge pages
        // are the heap's, releases are whole 64 KiB pages.
        let mut c = Config::DEFAULT;
        assert!(fit_geometry(&mut c, geometry(65536, 2 << 20)).is_some());
        assert!(c.kernel_page_pages == 16 && !c.no_huge_pages && c.collapse && !c.mesh);
        // 4 KiB pages under another huge page size: no huge pages.
        let mut c = Config::DEFAULT;
        assert!(fit_geometry(&mut c, geometry(4096, 16 << 20)).is_some());
        assert!(c.mode == Mode::Aware && !c.collapse && c.no_huge_pages);
        assert_eq!(c.kernel_page_pages, 1);
        // A page size no kernel has: whole 2 MiB units.
        let mut c = Config::DEFAULT;
        assert!(fit_geometry(&mut c, geometry(3 << 12, 2 << 20)).is_some());
        assert_eq!(c.kernel_page_pages, 512);
        // This kernel: 4 KiB and 2 MiB (or no THP).
        let g = read_geometry();
        assert_eq!(g.page_size, 4096);
        assert!(g.huge_size == 2 << 20 || g.huge_size == 0);
    }

    #[test]
    fn mthp_paths_and_words() {
        let mut out = [0u8; 8];
        assert_eq!(write_decimal(&mut out, 2048), 4);
        assert_eq!(&out[..4], b"2048");
        assert_eq!(write_decimal(&mut out, 0), 1);
        assert_eq!(bracketed(b"always inherit [madvise] never\n"), b"madvise");
        assert_eq!(bracketed(b"[inherit"), b"");
        // This kernel's settings are read without failing (absent sizes
        // stay out of every mask).
        let m = read_mthp();
        assert_eq!(m.always & m.madvise, 0);
    }
}
