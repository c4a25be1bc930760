//! The soft memory limit: above 95 % of it the release pass ignores the
//! hold-back and gives back everything it can at once.
//!
//! `HUGEGUARD_MEMORY_LIMIT` sets it (`0`: none). Unset, the limit is the
//! lowest memory limit of the process's cgroup (`os::cgroup`: v2
//! `memory.max`/`memory.high` up the tree, v1 `memory.limit_in_bytes`,
//! `memory.soft_limit_in_bytes`, `hierarchical_memory_limit`), the way the
//! JVM and .NET size themselves to their container. The cgroup is read
//! when the background thread starts, and again at most every
//! [`REFRESH_MS`] when the thread or [`crate::stats`] asks, so a limit an
//! operator changes takes effect within one idle park. A leaf: it imports
//! only `config` and the OS layer.

use crate::config;
use crate::os::{cgroup, linux};
use crate::report::LimitSource;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// How often the cgroup's files are read again, at most.
pub(crate) const REFRESH_MS: u64 = 10_000;

static LIMIT: AtomicUsize = AtomicUsize::new(0);
static SOURCE: AtomicU8 = AtomicU8::new(0);
/// When the cgroup was last read (ms of `now_ms`, +1 so 0 means never).
static READ_AT: AtomicU64 = AtomicU64::new(0);

/// The soft limit in bytes; 0 for none (as last read, see [`refresh`]).
pub(crate) fn get() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Where [`get`]'s value came from.
pub(crate) fn source() -> LimitSource {
    match SOURCE.load(Ordering::Relaxed) {
        1 => LimitSource::Variable,
        2 => LimitSource::CgroupV1,
        3 => LimitSource::CgroupV2,
        _ => LimitSource::None,
    }
}

/// Sets the limit from the variable, or reads the cgroup when the last
/// read is [`REFRESH_MS`] old (or there was none). Not for the allocator's
/// paths: it opens files.
pub(crate) fn refresh() {
    let (bytes, source) = match config::get().memory_limit {
        Some(n) => (n, if n == 0 { 0 } else { 1 }),
        None => {
            let now = linux::now_ms() + 1;
            let last = READ_AT.load(Ordering::Relaxed);
            if last != 0 && now.saturating_sub(last) < REFRESH_MS {
                return;
            }
            READ_AT.store(now, Ordering::Relaxed);
            let l = cgroup::memory_limit();
            (l.bytes, if l.bytes == 0 { 0 } else { l.version + 1 })
        }
    };
    LIMIT.store(bytes, Ordering::Relaxed);
    SOURCE.store(source, Ordering::Relaxed);
}
