//! This process's memory as the kernel counts it, through the inspector's
//! `/proc` readers.

use hugeguard_inspect::proc_files;

/// Resident bytes of this process (`VmRSS`).
pub fn rss() -> usize {
    proc_files::status(std::process::id())
        .expect("/proc/self/status")
        .rss as usize
}

/// Bytes of this process mapped by huge pages: anonymous ones and
/// shared-memory ones (mesh mode's heap is a shared-memory file); 0 where
/// `/proc` does not say.
pub fn huge_mapped() -> usize {
    proc_files::smaps_rollup(std::process::id())
        .map_or(0, |r| (r.anon_huge_pages + r.shmem_pmd_mapped) as usize)
}
