//! The operating-system layer: the only module that calls `libc`.
//!
//! The page heap and (later) the release policy take the OS as the [`Os`]
//! trait, so tests can substitute a recording fake ([`fake::FakeOs`]) for the
//! real kernel ([`linux::LinuxOs`]). Every primitive states its preconditions
//! here, once.

#[cfg(any(test, fuzzing))]
pub mod fake;
pub mod linux;

/// Memory advice the allocator gives the kernel, always on whole pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Advice {
    /// `MADV_DONTNEED`: drop the pages; they read back as zero.
    DontNeed,
    /// `MADV_NOHUGEPAGE`: never back this range with huge pages.
    NoHugePage,
    /// `MADV_HUGEPAGE`: this range may be backed with huge pages.
    HugePage,
    /// `MADV_COLLAPSE`: collapse this range into huge pages now (slow).
    Collapse,
}

/// What the allocator needs from the kernel.
///
/// Addresses and lengths given to these methods are multiples of
/// [`crate::units::PAGE_SIZE`]. Implementations never allocate from the heap.
pub trait Os {
    /// Reserves `len` bytes of address space aligned to `align` (a power of
    /// two), inaccessible until [`Os::commit`]. `None` when the OS refuses.
    fn reserve(&self, len: usize, align: usize) -> Option<usize>;
    /// Makes `[addr, addr + len)` of a reservation readable and writable.
    /// The memory reads as zero until written. `false` when the OS refuses.
    fn commit(&self, addr: usize, len: usize) -> bool;
    /// Maps `len` bytes of zeroed read-write memory for allocator metadata,
    /// backed lazily on first touch and never by huge pages (it is touched
    /// sparsely). `None` when the OS refuses.
    fn map_metadata(&self, len: usize) -> Option<*mut u8>;
    /// Applies `advice` to `[addr, addr + len)`; `Err(errno)` on failure.
    fn advise(&self, addr: usize, len: usize, advice: Advice) -> Result<(), i32>;
    /// Resident 4 KiB pages in `[addr, addr + len)` (at most one huge page).
    fn resident_pages(&self, addr: usize, len: usize) -> Option<usize>;
    /// Milliseconds of a monotonic clock.
    fn now_ms(&self) -> u64;
}

/// `ENOMEM`: out of memory, or (from `madvise` flag changes) out of VMAs.
pub const ENOMEM: i32 = 12;
