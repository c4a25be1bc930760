//! [`Os`] on Linux, and the few other libc services the allocator needs
//! (thread-exit hook, fork handlers). Nothing here allocates.

use super::shared::SharedHeap;
pub(crate) use super::sys::KeepErrno;
pub use super::sys::{abort, abort_with, errno, for_each_line, read_file, set_errno, write_stderr, WriteFile};
use super::{Advice, Os};
use core::sync::atomic::{AtomicUsize, Ordering};

/// The real kernel, for a heap of private memory or one in a shared file
/// ([`SharedHeap`], mesh mode).
#[derive(Clone, Copy, Default, Debug)]
pub struct LinuxOs {
    shared: Option<&'static SharedHeap>,
}

impl LinuxOs {
    /// A heap of private anonymous memory (and metadata, which always is).
    pub const PRIVATE: LinuxOs = LinuxOs { shared: None };

    /// A heap reserved in `shared`'s file once that is enabled (private
    /// memory until then, or if the kernel refuses).
    pub const fn over(shared: &'static SharedHeap) -> LinuxOs {
        LinuxOs {
            shared: Some(shared),
        }
    }
}

// SAFETY: `reserve` and `map_metadata` return fresh anonymous mappings of
// the kernel's choosing; `commit` and `advise` act on the range given only.
unsafe impl Os for LinuxOs {
    fn reserve(&self, len: usize, align: usize) -> Option<usize> {
        let _errno = KeepErrno::new();
        let padded = len.checked_add(align)?;
        // SAFETY: an anonymous PROT_NONE mapping at an address of the kernel's
        // choosing touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                padded,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let raw = raw as usize;
        let start = (raw + align - 1) & !(align - 1);
        let end = start + len;
        // Trim the unaligned head and the tail so the reservation is exact.
        // SAFETY: both ranges lie inside the mapping just created and are
        // page-aligned (mmap results and `align` are multiples of the page).
        unsafe {
            if start > raw {
                libc::munmap(raw as *mut libc::c_void, start - raw);
            }
            if raw + padded > end {
                libc::munmap(end as *mut libc::c_void, raw + padded - end);
            }
        }
        // Mesh mode: the heap lives in a shared file (a no-op otherwise).
        if let Some(shared) = self.shared {
            shared.map_reservation(start, len);
        }
        Some(start)
    }

    unsafe fn commit(&self, addr: usize, len: usize) -> bool {
        let _errno = KeepErrno::new();
        // SAFETY: the caller passes a page-aligned range inside a reservation
        // made by `reserve`, which nobody else uses.
        let ok = unsafe {
            libc::mprotect(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
            ) == 0
        };
        if let (true, Some(shared)) = (ok, self.shared) {
            shared.note_commit(addr + len);
        }
        ok
    }

    fn map_metadata(&self, len: usize) -> Option<*mut u8> {
        map_metadata_at(0, len)
    }

    unsafe fn discard_metadata(&self, addr: usize, len: usize) {
        let _errno = KeepErrno::new();
        // SAFETY: the caller gives whole pages of our metadata mapping that
        // hold nothing needed; DONTNEED makes them read as zero.
        unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    }

    unsafe fn advise(&self, addr: usize, len: usize, advice: Advice) -> Result<(), i32> {
        let _errno = KeepErrno::new();
        let flag = match advice {
            // In a shared heap DONTNEED would only unmap the page; REMOVE
            // punches it out of the file (it reads as zero afterwards).
            Advice::DontNeed if self.shared.is_some_and(|s| s.contains(addr)) => libc::MADV_REMOVE,
            Advice::DontNeed => libc::MADV_DONTNEED,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::Collapse => MADV_COLLAPSE,
        };
        // SAFETY: the caller passes a page-aligned range of the allocator's
        // own committed memory and, for DONTNEED, holds no data there.
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, len, flag) };
        if rc == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }

    fn resident_pages(&self, addr: usize, len: usize) -> Option<usize> {
        resident_pages(addr, len)
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// `MADV_COLLAPSE` (Linux 6.1), spelled out in case the libc crate lacks it.
pub const MADV_COLLAPSE: libc::c_int = 25;

/// A pthread key whose destructor runs at thread exit for threads that set it.
pub struct ThreadExitKey(libc::pthread_key_t);

impl ThreadExitKey {
    /// Creates the key (glibc does not allocate for it).
    pub fn create(dtor: unsafe extern "C" fn(*mut core::ffi::c_void)) -> Option<Self> {
        let _errno = KeepErrno::new();
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; `dtor` is a valid function.
        let rc = unsafe { libc::pthread_key_create(&mut key, Some(dtor)) };
        (rc == 0).then_some(ThreadExitKey(key))
    }

    /// Rebuilds a key from its raw value (as stored in an atomic).
    pub fn from_raw(raw: u32) -> Self {
        ThreadExitKey(raw as libc::pthread_key_t)
    }

    /// The raw key, for storing in an atomic.
    pub fn raw(&self) -> u32 {
        self.0
    }

    /// Arms the destructor for the calling thread with a non-null `value`.
    pub fn arm(&self, value: *mut u8) {
        let _errno = KeepErrno::new();
        // SAFETY: the key was created by `create`; glibc stores the value in
        // the thread's static block for the first 32 keys (no allocation).
        unsafe {
            libc::pthread_setspecific(self.0, value as *const libc::c_void);
        }
    }
}

/// Registers fork handlers. May call the C allocator inside glibc, so the
/// caller must hold none of the allocator's locks.
pub fn register_fork_handlers(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> bool {
    let _errno = KeepErrno::new();
    // SAFETY: the handlers are valid `extern "C"` functions that live forever.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// Whether the calling thread is the process's initial thread (its thread
/// id is the process id; in a forked child, the thread that forked).
pub fn is_initial_thread() -> bool {
    // SAFETY: gettid and getpid take no arguments and cannot fail.
    unsafe { libc::gettid() == libc::getpid() }
}

/// The value of environment variable `name` (NUL-terminated), without
/// allocating. Read once at start-up, before the program could call setenv
/// from another thread.
/// The kernel's base page size (`sysconf(_SC_PAGESIZE)`; 4096 if unknown).
pub fn page_size() -> usize {
    let _errno = KeepErrno::new();
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

pub fn getenv(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns a pointer into the
    // environment block or null.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null result is a NUL-terminated string that stays valid
    // while the environment is not modified.
    Some(unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes())
}

/// The next definition of the function or object `name` after the object
/// that holds this code, in the process's lookup order
/// (`dlsym(RTLD_NEXT)`): for the `LD_PRELOAD` library, the definition it
/// overrides. Null when no later object defines it. Off the fast paths
/// only: `dlsym` may allocate.
pub fn next_symbol(name: &core::ffi::CStr) -> *mut core::ffi::c_void {
    // SAFETY: `name` is NUL-terminated; dlsym only reads it.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) }
}

/// The definition of `name` that the process's global lookup finds first
/// (`dlsym(RTLD_DEFAULT)`), null when none does. Off the fast paths only.
pub fn global_symbol(name: &core::ffi::CStr) -> *mut core::ffi::c_void {
    // SAFETY: as for `next_symbol`.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// Live threads of this process other than the calling one, from
/// `/proc/self/stat` (three system calls, no allocation); `None` when it
/// cannot be read (no `/proc`). A thread-group leader that has ended while
/// other threads run stays in the kernel's count as a zombie (state `Z`)
/// until the last thread ends, so it is not counted as live.
pub fn other_live_threads() -> Option<usize> {
    let mut buf = [0u8; 1024];
    let n = read_file(c"/proc/self/stat", &mut buf)?;
    parse_other_live_threads(&buf[..n])
}

/// The parsing half of [`other_live_threads`]: `stat` is the text of a
/// `/proc/PID/stat` file read by one of the process's threads.
pub(crate) fn parse_other_live_threads(stat: &[u8]) -> Option<usize> {
    // The command name (field 2) may hold spaces and parentheses: the
    // fields that follow start after its last `)`.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    // Field 20 (`num_threads`) is the 18th after the name.
    let threads = fields.nth(16)?;
    let mut count: usize = 0;
    for &d in threads {
        if !d.is_ascii_digit() {
            return None;
        }
        count = count.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    let zombie_leader = usize::from(state == b'Z');
    Some(count.saturating_sub(1 + zombie_leader))
}

/// Milliseconds of the coarse monotonic clock (vDSO: no system call, and a
/// plain read of the kernel's last tick: a few nanoseconds, where the
/// precise clock costs tens). Its resolution is the kernel tick (1-4 ms),
/// plenty for the release clock, which the central lists read on every
/// batch they take back, under their lock.
pub fn now_ms() -> u64 {
    clock_us(libc::CLOCK_MONOTONIC_COARSE) / 1000
}

/// Microseconds of clock `id`.
fn clock_us(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// 64 random bits from the kernel (`getrandom`, not blocking); when it
/// fails (too early in boot, a seccomp filter), bits of the clock, the
/// process id and a stack address, which still differ between runs.
pub fn random_u64() -> u64 {
    let _errno = KeepErrno::new();
    let mut v = 0u64;
    // SAFETY: `v` is valid for 8 bytes of writes.
    let n = unsafe {
        libc::getrandom(
            (&mut v as *mut u64).cast(),
            core::mem::size_of::<u64>(),
            libc::GRND_NONBLOCK,
        )
    };
    if n == 8 {
        return v;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let here = &ts as *const _ as u64;
    (ts.tv_nsec as u64 ^ (ts.tv_sec as u64) << 30 ^ pid << 48 ^ here)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Microseconds of a monotonic clock, for timing slow kernel calls.
pub fn now_us() -> u64 {
    clock_us(libc::CLOCK_MONOTONIC)
}

/// CPU time the calling thread has used, in microseconds (tests of the lock).
#[cfg(test)]
pub fn thread_cpu_us() -> u64 {
    clock_us(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Waits until `word` no longer holds `expected`, a wake-up, or `timeout_ms`.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ms: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ms / 1000) as libc::time_t,
        tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
    };
    futex_wait_until(word, expected, &ts);
}

/// Sleeps while `word` holds `expected`, until a wake-up (or a signal: the
/// caller re-checks).
pub fn futex_wait_while(word: &core::sync::atomic::AtomicU32, expected: u32) {
    futex_wait_until(word, expected, core::ptr::null());
}

/// `FUTEX_WAIT` with relative timeout `ts` (null: none).
fn futex_wait_until(
    word: &core::sync::atomic::AtomicU32,
    expected: u32,
    ts: *const libc::timespec,
) {
    let _errno = KeepErrno::new();
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
    // `ts` is null or points to a timespec that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts,
        );
    }
}

/// Wakes one waiter of `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32) {
    let _errno = KeepErrno::new();
    // SAFETY: `word` is a valid, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Starts a detached thread running `entry`, with a 256 KiB stack and every
/// signal blocked (signals belong to the program's own threads). glibc may
/// call the C allocator inside: the caller must hold no allocator lock.
pub fn spawn_detached(entry: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) -> bool {
    let _errno = KeepErrno::new();
    // SAFETY: all structures are initialised before use and destroyed after;
    // the signal mask is restored on the calling thread.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setstacksize(&mut attr, 256 * 1024);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut tid: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut tid, &attr, entry, core::ptr::null_mut());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        rc == 0
    }
}

/// `membarrier` commands (Linux 4.14).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for [`membarrier`]; `false` where the kernel (or a
/// seccomp filter) refuses.
pub fn membarrier_register() -> bool {
    let _errno = KeepErrno::new();
    // SAFETY: membarrier with integer arguments only.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
        ) == 0
    }
}

/// Makes every running thread of the process execute a full memory barrier
/// before this returns (threads not running pass one when they are next
/// scheduled). Needs [`membarrier_register`] first.
pub fn membarrier() -> bool {
    let _errno = KeepErrno::new();
    // SAFETY: membarrier with integer arguments only.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0 }
}

/// Turns transparent huge pages off for this process and its children
/// (`PR_SET_THP_DISABLE`).
pub fn disable_thp_for_process() -> bool {
    let _errno = KeepErrno::new();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

/// Resident 4 KiB pages in `[addr, addr + len)`, `len <= 2 MiB` (mincore).
pub fn resident_pages(addr: usize, len: usize) -> Option<usize> {
    let _errno = KeepErrno::new();
    let mut vec = [0u8; crate::units::PAGES_PER_HUGE];
    // `mincore` answers per kernel page, which may be a whole number of ours.
    let kernel_page = page_size().max(crate::units::PAGE_SIZE);
    let pages = len.div_ceil(kernel_page);
    if pages > vec.len() {
        return None;
    }
    // SAFETY: `vec` has room for one byte per kernel page of the range.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    let resident = vec[..pages].iter().filter(|&&b| b & 1 == 1).count();
    (rc == 0).then_some(resident * (kernel_page / crate::units::PAGE_SIZE))
}

/// Metadata mappings (address, length), so the RSS breakdown can measure
/// what of them is resident; the first [`METADATA_SLOTS`] are kept (the
/// heap maps a handful, then one per 1 MiB chunk of span records).
const METADATA_SLOTS: usize = 512;
static METADATA: [(AtomicUsize, AtomicUsize); METADATA_SLOTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; METADATA_SLOTS];
static METADATA_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Bytes of metadata mappings beyond the kept ones.
static METADATA_UNLISTED: AtomicUsize = AtomicUsize::new(0);

/// Metadata mapped at `hint` if that range is free (`MAP_FIXED_NOREPLACE`;
/// a kernel older than 4.17 takes it as a hint), else, with `hint` 0, where
/// the kernel chooses. `None` if the kernel refused (or the range at `hint`
/// is taken).
fn map_metadata_at(hint: usize, len: usize) -> Option<*mut u8> {
    let _errno = KeepErrno::new();
    let fixed = if hint == 0 { 0 } else { libc::MAP_FIXED_NOREPLACE };
    // SAFETY: a fresh anonymous mapping; with `MAP_FIXED_NOREPLACE` the
    // kernel fails rather than replace anything already mapped at `hint`.
    let raw = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | fixed,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    // Metadata is touched sparsely (one record per huge page in use):
    // never let khugepaged fill it out to whole huge pages.
    // SAFETY: advice on the mapping just created.
    unsafe { libc::madvise(raw, len, libc::MADV_NOHUGEPAGE) };
    register_metadata(raw as usize, len);
    Some(raw as *mut u8)
}

/// Addresses tried, in order, for [`map_metadata_low`]: 64 GiB, 16 GiB,
/// 256 GiB. Above a non-PIE program and its `brk` heap, far below where
/// the kernel places mappings of its own choosing (top-down under the
/// libraries, about 0x7f.. 0000 0000; bottom-up from a third of the address
/// space with an unlimited stack) and below a PIE program (about 0x55..).
const LOW_HINTS: [usize; 3] = [1 << 36, 1 << 34, 1 << 38];

/// Metadata mapped below every mapping of the kernel's choosing, and so
/// below the whole heap (whose reservations are such mappings): at the
/// first free address of [`LOW_HINTS`], or where the kernel chooses if
/// none is.
pub(crate) fn map_metadata_low(len: usize) -> Option<*mut u8> {
    LOW_HINTS
        .iter()
        .find_map(|&hint| map_metadata_at(hint, len))
        .or_else(|| map_metadata_at(0, len))
}

fn register_metadata(addr: usize, len: usize) {
    let i = METADATA_COUNT.fetch_add(1, Ordering::Relaxed);
    if i < METADATA_SLOTS {
        METADATA[i].0.store(addr, Ordering::Relaxed);
        // The length last: a reader skips an entry whose length is 0.
        METADATA[i].1.store(len, Ordering::Release);
    } else {
        METADATA_UNLISTED.fetch_add(len, Ordering::Relaxed);
    }
}

/// Calls `f(addr, len)` for each metadata mapping kept; returns the bytes
/// of those not kept (their residency is unknown).
pub fn for_each_metadata(mut f: impl FnMut(usize, usize)) -> usize {
    let n = METADATA_COUNT.load(Ordering::Relaxed).min(METADATA_SLOTS);
    for (addr, len) in &METADATA[..n] {
        let len = len.load(Ordering::Acquire);
        if len != 0 {
            f(addr.load(Ordering::Relaxed), len);
        }
    }
    METADATA_UNLISTED.load(Ordering::Relaxed)
}

/// Resident bytes of `[addr, addr + len)` (mincore, 2 MiB at a time); 0
/// for parts that are not mapped.
pub fn resident_bytes(addr: usize, len: usize) -> usize {
    let step = crate::units::HUGE_SIZE;
    let mut total = 0;
    let mut at = addr;
    while at < addr + len {
        let n = step.min(addr + len - at);
        total += resident_pages(at, n).unwrap_or(0) * crate::units::PAGE_SIZE;
        at += n;
    }
    total
}

/// This process's resident set in bytes (`/proc/self/statm`), if readable.
pub fn process_resident_bytes() -> Option<usize> {
    let mut buf = [0u8; 256];
    let n = read_file(c"/proc/self/statm", &mut buf)?;
    let resident = buf[..n].split(|&b| b == b' ').nth(1)?;
    let mut pages: usize = 0;
    for &d in resident {
        if !d.is_ascii_digit() {
            return None;
        }
        pages = pages.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    pages.checked_mul(page_size())
}

/// Installs `handler` for signal `sig` (`SA_RESTART`, nothing blocked
/// while it runs); `false` if the kernel refused. The handler must be
/// async-signal-safe.
pub fn install_signal_handler(sig: i32, handler: extern "C" fn(libc::c_int)) -> bool {
    let _errno = KeepErrno::new();
    // SAFETY: a zeroed `sigaction` is a valid value to fill in; the handler
    // is a plain function that lives as long as the program.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, core::ptr::null_mut()) == 0
    }
}

/// Sleeps for `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    let _errno = KeepErrno::new();
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is valid; an interrupted sleep just returns early.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `stat` line with `state` and `threads` in fields 3 and 20.
    fn stat_line(comm: &str, state: char, threads: usize) -> Vec<u8> {
        format!(
            "4242 ({comm}) {state} 1 4242 4242 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 {threads} 0 \
             7000 10000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn system_calls_leave_errno_alone() {
        let os = LinuxOs::PRIVATE;
        let map = os.map_metadata(1 << 16).unwrap() as usize;
        set_errno(77);
        // SAFETY: an unaligned start makes madvise fail with EINVAL before
        // it looks at any memory.
        let r = unsafe { os.advise(map + 1, 4096, Advice::DontNeed) };
        assert_eq!(r, Err(libc::EINVAL));
        assert_eq!(errno(), 77, "the failed madvise's EINVAL leaked");
        assert!(read_file(c"/nonexistent/hugeguard", &mut [0u8; 8]).is_none());
        assert_eq!(errno(), 77, "the failed open's ENOENT leaked");
        // SAFETY: unmapping the metadata mapping made above.
        unsafe { libc::munmap(map as *mut libc::c_void, 1 << 16) };
    }

    #[test]
    fn low_metadata_lies_below_the_kernels_own_choices() {
        let os = LinuxOs::PRIVATE;
        let low = map_metadata_low(1 << 16).unwrap() as usize;
        // A reservation of the heap's kind: where the kernel chooses.
        let heap = os.reserve(1 << 21, 1 << 21).unwrap();
        assert!(low + (1 << 16) <= heap, "low mapping {low:#x} not below a reservation at {heap:#x}");
        assert!(LOW_HINTS.contains(&low), "{low:#x} is not one of the low addresses");
        // That hint is taken now: another address (never over it).
        let next = map_metadata_low(1 << 16).unwrap() as usize;
        assert_ne!(next, low);
        // SAFETY: unmapping the mappings made above.
        unsafe {
            libc::munmap(low as *mut libc::c_void, 1 << 16);
            libc::munmap(next as *mut libc::c_void, 1 << 16);
            libc::munmap(heap as *mut libc::c_void, 1 << 21);
        }
    }

    #[test]
    fn counts_other_live_threads() {
        assert_eq!(parse_other_live_threads(&stat_line("a", 'S', 1)), Some(0));
        assert_eq!(parse_other_live_threads(&stat_line("a", 'R', 4)), Some(3));
        // A leader that has ended stays counted, as a zombie, until the
        // last thread ends: only the caller lives.
        assert_eq!(parse_other_live_threads(&stat_line("a", 'Z', 2)), Some(0));
        assert_eq!(parse_other_live_threads(&stat_line("a", 'Z', 3)), Some(1));
    }

    #[test]
    fn command_names_with_spaces_and_parentheses() {
        let line = stat_line("x) S 9 (y", 'S', 7);
        assert_eq!(parse_other_live_threads(&line), Some(6));
    }

    #[test]
    fn malformed_stat_is_none() {
        assert_eq!(parse_other_live_threads(b""), None);
        assert_eq!(parse_other_live_threads(b"12 (a) S 1 2 3"), None);
        let line = String::from_utf8(stat_line("a", 'S', 5)).unwrap();
        let broken = line.replace(" 5 0 7000", " 5x 0 7000");
        assert_eq!(parse_other_live_threads(broken.as_bytes()), None);
    }

    #[test]
    fn agrees_with_proc_self_status() {
        // `/proc/self/status` says "Threads: N" for the same count.
        let stop = std::sync::Arc::new(std::sync::Barrier::new(2));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || s2.wait());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let n: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let others = other_live_threads().unwrap();
        stop.wait();
        t.join().unwrap();
        // Other test threads may start or end between the two reads.
        assert!(others >= 1, "the spawned thread is alive: {others}");
        assert!(others.abs_diff(n - 1) <= 8, "stat {others} vs status {n}");
    }
}
