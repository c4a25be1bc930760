//! The operating-system layer: the only module that calls `libc`.
//!
//! The page heap and the release policy take the OS as the [`Os`]
//! trait, so tests can substitute a recording fake ([`fake::FakeOs`]) for the
//! real kernel ([`linux::LinuxOs`]). Every primitive states its preconditions
//! here, once.

#[cfg(any(test, fuzzing))]
pub mod fake;
pub mod linux;
pub mod cgroup;
pub mod pressure;
pub mod shared;
pub(crate) mod fork_window;
#[cfg(target_arch = "x86_64")]
pub(crate) mod cfi;
pub(crate) mod unwind;
pub(crate) mod sys;

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
///
/// # Safety
/// The page heap writes through what these methods return, so an
/// implementation must keep its word: `reserve` returns a range of `len`
/// bytes aligned to `align` that nothing else in the process uses;
/// `map_metadata` returns `len` zeroed bytes, readable and writable, used by
/// nothing else, valid for as long as the implementation lives; `commit`
/// makes exactly the range it is given readable and writable (zeroes until
/// written) or returns `false`; `advise` and `resident_pages` touch no memory
/// outside the range given. The simulated OS of the tests hands out
/// addresses that must never be dereferenced, so a heap over it only ever
/// records addresses (its metadata is real memory).
pub unsafe trait Os {
    /// Reserves `len` bytes of address space aligned to `align` (a power of
    /// two), inaccessible until [`Os::commit`]. `None` when the OS refuses.
    fn reserve(&self, len: usize, align: usize) -> Option<usize>;
    /// Makes `[addr, addr + len)` of a reservation readable and writable.
    /// The memory reads as zero until written. `false` when the OS refuses.
    ///
    /// # Safety
    /// The range lies inside a range that [`Os::reserve`] of this
    /// implementation returned, and nothing uses it yet.
    unsafe fn commit(&self, addr: usize, len: usize) -> bool;
    /// Maps `len` bytes of zeroed read-write memory for allocator metadata,
    /// backed lazily on first touch and never by huge pages (it is touched
    /// sparsely). `None` when the OS refuses.
    fn map_metadata(&self, len: usize) -> Option<*mut u8>;
    /// Gives the pages of `[addr, addr + len)` of metadata back to the OS
    /// (`MADV_DONTNEED`): they read as zero afterwards and are backed again
    /// when next written.
    ///
    /// # Safety
    /// The range is page aligned, lies inside memory that
    /// [`Os::map_metadata`] of this implementation returned, and holds
    /// nothing anyone still needs.
    unsafe fn discard_metadata(&self, addr: usize, len: usize);
    /// Applies `advice` to `[addr, addr + len)`; `Err(errno)` on failure.
    ///
    /// # Safety
    /// The range lies inside memory that [`Os::commit`] of this
    /// implementation made accessible; with [`Advice::DontNeed`] no page of
    /// it holds data anyone still needs (it reads back as zeroes).
    unsafe fn advise(&self, addr: usize, len: usize, advice: Advice) -> Result<(), i32>;
    /// Resident 4 KiB pages in `[addr, addr + len)` (at most one huge page).
    /// Safe for any range: `mincore` reads no memory of it, and answers
    /// `None` for a range that is not mapped.
    fn resident_pages(&self, addr: usize, len: usize) -> Option<usize>;
    /// Milliseconds of a monotonic clock.
    fn now_ms(&self) -> u64;
}

/// `ENOMEM`: out of memory, or (from `madvise` flag changes) out of VMAs.
pub const ENOMEM: i32 = 12;

/// `EAGAIN`: what `madvise` reports when a flag change would split a mapping
/// past `vm.max_map_count` (the kernel turns the split's `ENOMEM` into
/// `EAGAIN` in `madvise_update_vma`; seen on Linux 6.18).
pub const EAGAIN: i32 = 11;

/// `EINVAL`: an invalid argument (the C functions' bad alignments).
pub const EINVAL: i32 = 22;
