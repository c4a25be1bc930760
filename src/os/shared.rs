//! Kernel primitives for mesh mode (issue 15): a heap that is a shared
//! memory file, so one physical page can back two virtual pages
//! ([`SharedFile`]), and write-protection through userfaultfd, so a writer
//! to a page being meshed waits in the kernel instead of writing into a
//! page that is being copied ([`WriteGuard`]). `docs/MESH.md` says why
//! userfaultfd and not `mprotect`.
//!
//! A heap's shared file and guard are a value, [`SharedHeap`]:
//! [`SharedHeap::enable`] opens them before the heap is reserved, and a
//! `LinuxOs` over it then maps the reservation onto the file and releases
//! pages by punching them out of it. On `fork`, the parent copies the file
//! before the fork ([`SharedHeap::fork_prepare_copy`]) and the child maps
//! the copy ([`SharedHeap::fork_child_map`]), so parent and child stop
//! sharing memory.
//!
//! Meshing page B onto page A with these: protect B, copy B's live objects
//! into A's page (at the same offsets), [`SharedFile::alias`] B's virtual
//! page onto A's file offset, [`SharedFile::punch`] B's old file page, lift
//! the protection (a waiting writer then faults onto A's page and writes
//! there). The tests below do exactly that.

use core::ffi::c_void;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// A heap that lives in a shared memory file, with the userfaultfd that
/// holds its writers back: descriptors and the mapped range. A value (the
/// process keeps one, `global::SHARED`, and hands it to its `LinuxOs`);
/// this module holds no state of its own.
#[derive(Debug)]
pub struct SharedHeap {
    /// The shared file (-1: the heap is private memory).
    fd: AtomicI32,
    /// The userfaultfd (-1: none).
    uffd: AtomicI32,
    /// The reservation, once mapped onto the file (0: not yet).
    base: AtomicUsize,
    len: AtomicUsize,
    /// End of the committed part.
    top: AtomicUsize,
}

impl Default for SharedHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedHeap {
    /// Not enabled: a heap reserved with it is private memory.
    pub const fn new() -> Self {
        SharedHeap {
            fd: AtomicI32::new(-1),
            uffd: AtomicI32::new(-1),
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            top: AtomicUsize::new(0),
        }
    }

    /// Notes that `..end` of the heap was made accessible.
    pub fn note_commit(&self, end: usize) {
        self.top.fetch_max(end, Ordering::Relaxed);
    }

    /// The shared heap's base and committed bytes ((0, 0): no shared heap).
    pub fn committed(&self) -> (usize, usize) {
        let base = self.base.load(Ordering::Acquire);
        if base == 0 {
            return (0, 0);
        }
        (base, self.top.load(Ordering::Relaxed).saturating_sub(base))
    }

    /// Whether the heap was reserved in the file (meshing can work on it).
    pub fn mapped(&self) -> bool {
        self.base.load(Ordering::Acquire) != 0
    }

    /// Opens the shared file and a userfaultfd that holds back every write
    /// (kernel ones included); the heap reserved afterwards lives in the
    /// file. The errno when the kernel refuses either; then nothing is
    /// changed.
    pub fn enable(&self) -> Result<(), i32> {
        if self.fd.load(Ordering::Acquire) >= 0 {
            return Ok(());
        }
        let guard = WriteGuard::open(Faults::All)?;
        let file = SharedFile::create(0).ok_or_else(super::sys::errno)?;
        self.uffd.store(guard.fd, Ordering::Relaxed);
        self.fd.store(file.fd, Ordering::Release);
        core::mem::forget((guard, file));
        Ok(())
    }

    /// [`SharedHeap::enable`], saying in one line why not when the kernel
    /// refuses (mesh mode then keeps its layout only).
    pub fn enable_or_say_why(&self) {
        if let Err(errno) = self.enable() {
            let mut msg = *b"hugeguard: HUGEGUARD_MESH=on: no userfaultfd for all faults (errno 00); random slots and class homes only, no meshing\n";
            let at = msg.iter().position(|&b| b == b'0').unwrap_or(0);
            msg[at] = b'0' + (errno / 10 % 10) as u8;
            msg[at + 1] = b'0' + (errno % 10) as u8;
            super::sys::write_stderr(&msg);
        }
    }

    /// The shared file, once [`SharedHeap::enable`] succeeded.
    pub fn file(&self) -> Option<ManuallyDrop<SharedFile>> {
        let fd = self.fd.load(Ordering::Acquire);
        (fd >= 0).then_some(ManuallyDrop::new(SharedFile { fd }))
    }

    /// The userfaultfd, once [`SharedHeap::enable`] succeeded.
    pub fn guard(&self) -> Option<ManuallyDrop<WriteGuard>> {
        let fd = self.uffd.load(Ordering::Acquire);
        (fd >= 0).then_some(ManuallyDrop::new(WriteGuard { fd }))
    }

    /// Whether `addr` lies in the shared heap (so releasing it must punch
    /// the file: `MADV_DONTNEED` would only unmap the page).
    pub fn contains(&self, addr: usize) -> bool {
        let base = self.base.load(Ordering::Relaxed);
        base != 0 && addr.wrapping_sub(base) < self.len.load(Ordering::Relaxed)
    }

    /// Maps the fresh reservation `base..base + len` onto the shared file
    /// (still inaccessible); `false` if there is no shared file or the
    /// kernel refuses (the reservation is then unchanged).
    pub fn map_reservation(&self, base: usize, len: usize) -> bool {
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 || self.base.load(Ordering::Relaxed) != 0 {
            return false;
        }
        // SAFETY: our own descriptor; no memory is passed.
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            return false;
        }
        // SAFETY: the caller's fresh PROT_NONE reservation, replaced in one
        // step by an equally inaccessible mapping of the file.
        let p = unsafe {
            libc::mmap(
                base as *mut c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
                fd,
                0,
            )
        };
        if p as usize != base {
            return false;
        }
        self.len.store(len, Ordering::Relaxed);
        self.base.store(base, Ordering::Release);
        true
    }

    /// Fork protocol, parent side, in the prepare handler (every allocator
    /// lock held): copies the data of the heap's committed part
    /// `base..base + len` into a new shared file while every writer waits, so
    /// the copy is one instant's snapshot. Returns the copy's descriptor, for
    /// the child to map ([`fork_child_map`]); `None` when the kernel refuses
    /// (the child then aborts rather than share the parent's memory).
    ///
    /// The protection then stays on through the `fork` if `keep_protected`
    /// says so (it opens the fork window, [`super::fork_window`]): a thread
    /// that writes to the heap after the copy waits until
    /// [`fork_parent_done`], so none of them can make a change the child
    /// misses and then act on it (write memory the child does get). The
    /// forking thread's own writes go on through the window's helper.
    /// Without a helper (no other thread, or none could be started) the
    /// protection is lifted before the handler returns.
    ///
    /// [`fork_child_map`]: SharedHeap::fork_child_map
    /// [`fork_parent_done`]: SharedHeap::fork_parent_done
    pub fn fork_prepare_copy(
        &self,
        base: usize,
        len: usize,
        keep_protected: impl FnOnce() -> bool,
    ) -> Option<i32> {
        let _errno = super::sys::KeepErrno::new();
        let old = self.fd.load(Ordering::Relaxed);
        if base == 0 || old < 0 {
            return None;
        }
        let new = SharedFile::create(self.len.load(Ordering::Relaxed))?;
        let guard = self.guard()?;
        if len != 0 && !guard.hold(base, len) {
            return None;
        }
        if len != 0 && !copy_data(old, new.fd, len) {
            guard.release(base, len);
            return None;
        }
        if len != 0 && !keep_protected() && !guard.lift_quietly(base, len) {
            guard.release(base, len);
            return None;
        }
        let fd = new.fd;
        core::mem::forget(new);
        Some(fd)
    }

    /// Fork protocol, parent side, after `fork` (and after the fork
    /// window's helper has stopped): closes the parent's descriptor of the
    /// child's copy (if [`fork_prepare_copy`] made one), lifts the
    /// protection of `base..base + len`, ends its registration and wakes
    /// the writers that waited since the copy.
    ///
    /// [`fork_prepare_copy`]: SharedHeap::fork_prepare_copy
    pub fn fork_parent_done(&self, copy: Option<i32>, base: usize, len: usize) {
        let _errno = super::sys::KeepErrno::new();
        if let Some(fd) = copy {
            // SAFETY: the descriptor `fork_prepare_copy` opened, closed once.
            unsafe { libc::close(fd) };
            if let Some(guard) = self.guard() {
                if len != 0 {
                    guard.protect(base, len, false);
                    guard.unregister(base, len);
                    guard.wake(base, len);
                }
            }
        }
    }

    /// Fork protocol, child side: maps the copy made before the fork
    /// (`copy`, from [`fork_prepare_copy`]; `None` if it failed) over the
    /// whole reservation (`committed` bytes of it readable and writable), lets
    /// `alias` re-create each meshed mapping through it, and opens a
    /// userfaultfd of the child's own. Aborts the child if it cannot: a child
    /// left on the parent's memory would corrupt it.
    pub fn fork_child_map(
        &self,
        committed: usize,
        copy: Option<i32>,
        mut alias: impl FnMut(&SharedFile),
    ) {
        let _errno = super::sys::KeepErrno::new();
        let (base, len) = (
            self.base.load(Ordering::Relaxed),
            self.len.load(Ordering::Relaxed),
        );
        let old = self.fd.load(Ordering::Relaxed);
        if base == 0 || old < 0 {
            return;
        }
        let Some(fd) = copy else {
            super::sys::abort_with(b"hugeguard: fork: no copy of the heap for the child\n");
        };
        let new = SharedFile { fd };
        // SAFETY: the reservation is the heap's own; the copy holds the same
        // bytes at the same offsets, so every object reads the same.
        let ok = unsafe {
            libc::mmap(
                base as *mut c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
                new.fd,
                0,
            ) as usize
                == base
                && (committed == 0
                    || libc::mprotect(
                        base as *mut c_void,
                        committed,
                        libc::PROT_READ | libc::PROT_WRITE,
                    ) == 0)
        };
        if !ok {
            super::sys::abort_with(b"hugeguard: fork: remapping the heap failed\n");
        }
        alias(&new);
        // SAFETY: the inherited descriptors are this process's copies; the
        // userfaultfd belongs to the parent's memory and must not be used here.
        unsafe {
            libc::close(old);
            libc::close(self.uffd.load(Ordering::Relaxed));
        }
        self.uffd.store(
            WriteGuard::open(Faults::All).map_or(-1, |g| {
                let fd = g.fd;
                core::mem::forget(g);
                fd
            }),
            Ordering::Relaxed,
        );
        self.fd.store(new.fd, Ordering::Release);
        core::mem::forget(new);
    }
}

/// Copies the data (not the holes) of `old`'s first `len` bytes into `new`
/// at the same offsets, through two temporary mappings.
fn copy_data(old: i32, new: i32, len: usize) -> bool {
    // SAFETY: fresh mappings at addresses of the kernel's choosing.
    let (src, dst) = unsafe {
        (
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                old,
                0,
            ),
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                new,
                0,
            ),
        )
    };
    let mut ok = src != libc::MAP_FAILED && dst != libc::MAP_FAILED;
    let mut off = 0usize;
    while ok && off < len {
        // SAFETY: our own descriptor; no memory is passed.
        let data = unsafe { libc::lseek(old, off as libc::off_t, libc::SEEK_DATA) };
        if data < 0 || data as usize >= len {
            break; // ENXIO: no data after `off`.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(old, data, libc::SEEK_HOLE) };
        let end = if hole < 0 {
            len
        } else {
            (hole as usize).min(len)
        };
        let start = data as usize;
        // SAFETY: both mappings cover `0..len` and `start < end <= len`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (src as *const u8).add(start),
                (dst as *mut u8).add(start),
                end - start,
            )
        };
        ok = end > start;
        off = end;
    }
    // SAFETY: the temporary mappings made above, if made.
    unsafe {
        if src != libc::MAP_FAILED {
            libc::munmap(src, len);
        }
        if dst != libc::MAP_FAILED {
            libc::munmap(dst, len);
        }
    }
    ok
}

/// A shared memory file (`memfd_create`), sparse: pages cost memory only
/// once written, and again nothing once punched out.
pub struct SharedFile {
    fd: i32,
}

impl SharedFile {
    /// A new file of `len` bytes (none allocated), closed on exec; `None`
    /// when the kernel refuses.
    pub fn create(len: usize) -> Option<SharedFile> {
        // SAFETY: a constant NUL-terminated name; no memory is passed.
        let fd = unsafe { libc::memfd_create(c"hugeguard-heap".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let file = SharedFile { fd };
        // SAFETY: our own descriptor.
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            return None;
        }
        Some(file)
    }

    /// Maps `len` bytes of the file from `offset`, shared, readable and
    /// writable, at an address of the kernel's choosing; `None` on failure.
    pub fn map(&self, offset: usize, len: usize) -> Option<usize> {
        // SAFETY: a new mapping at an address the kernel picks; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd,
                offset as libc::off_t,
            )
        };
        (p != libc::MAP_FAILED).then_some(p as usize)
    }

    /// Unmaps a mapping made by [`SharedFile::map`].
    ///
    /// # Safety
    /// `addr..addr + len` is such a mapping, and nothing uses it any more.
    pub unsafe fn unmap(&self, addr: usize, len: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { libc::munmap(addr as *mut c_void, len) };
    }

    /// Maps the `len` bytes at `addr` onto the file's bytes at `offset`,
    /// replacing what was mapped there (one atomic step for other threads:
    /// they see the old page or the new one).
    ///
    /// # Safety
    /// `addr..addr + len` is a page-aligned range of a mapping of this file
    /// that the caller owns: whatever it held is no longer reachable
    /// through those addresses (it is still in the file at its own offset).
    pub unsafe fn alias(&self, addr: usize, offset: usize, len: usize) -> bool {
        // SAFETY: the caller owns the range; MAP_FIXED replaces only it.
        let p = unsafe {
            libc::mmap(
                addr as *mut c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.fd,
                offset as libc::off_t,
            )
        };
        p as usize == addr
    }

    /// Frees the file's pages in `offset..offset + len` (they read back as
    /// zero through any mapping of them).
    pub fn punch(&self, offset: usize, len: usize) -> bool {
        // SAFETY: our own descriptor; no memory is passed.
        unsafe {
            libc::fallocate(
                self.fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            ) == 0
        }
    }

    /// Punches out the pages of `offset..` whose bits are set in `mask`.
    pub fn punch_mask(&self, offset: usize, mask: u64) {
        for p in 0..64 {
            if mask >> p & 1 == 1 {
                self.punch(
                    offset + p * crate::units::PAGE_SIZE,
                    crate::units::PAGE_SIZE,
                );
            }
        }
    }

    /// Bytes of memory the file holds (its allocated blocks).
    #[cfg(test)]
    pub fn allocated_bytes(&self) -> Option<usize> {
        let mut st = core::mem::MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: `st` is a writable stat buffer.
        if unsafe { libc::fstat(self.fd, st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: fstat succeeded and filled it.
        Some(unsafe { st.assume_init() }.st_blocks as usize * 512)
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once; mappings stay valid.
        unsafe { libc::close(self.fd) };
    }
}

const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_USER_MODE_ONLY: i32 = 1;
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_WRITEPROTECT: u64 = 0xc018_aa06;
const UFFDIO_UNREGISTER: u64 = 0x8010_aa01;
const UFFDIO_WAKE: u64 = 0x8010_aa02;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const UFFDIO_WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// Which writes a [`WriteGuard`] holds back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Faults {
    /// Every write, also one the kernel makes for the program (`read(2)`
    /// into a protected buffer waits too). Needs root, `CAP_SYS_PTRACE`, or
    /// `vm.unprivileged_userfaultfd=1`.
    All,
    /// Writes by the program's own instructions only: a write the kernel
    /// makes into a protected page fails with `EFAULT` (what any process
    /// may ask for). Mesh mode does not use it (see `docs/MESH.md`).
    #[cfg_attr(not(test), allow(dead_code))]
    UserMode,
}

/// A write that waits on a protected page, as the userfaultfd reports it.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// The address written to.
    pub addr: usize,
    /// The id of the writing thread (`gettid`).
    pub tid: u32,
}

/// A userfaultfd for write-protecting pages of shared memory: a thread that
/// writes to a protected page sleeps in the kernel until the protection is
/// lifted. Reads go on.
pub struct WriteGuard {
    fd: i32,
}

impl WriteGuard {
    /// Opens a userfaultfd for `faults`; the `errno` when the kernel
    /// refuses (`EPERM` for [`Faults::All`] without the privilege).
    pub fn open(faults: Faults) -> Result<WriteGuard, i32> {
        let flags = libc::O_CLOEXEC
            | libc::O_NONBLOCK
            | match faults {
                Faults::All => 0,
                Faults::UserMode => UFFD_USER_MODE_ONLY,
            };
        // SAFETY: the userfaultfd system call takes flags only.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) } as i32;
        if fd < 0 {
            return Err(super::sys::errno());
        }
        let guard = WriteGuard { fd };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_THREAD_ID,
            ioctls: 0,
        };
        // SAFETY: our descriptor and a correctly laid out argument.
        if unsafe { libc::ioctl(fd, UFFDIO_API as _, &mut api) } != 0 {
            return Err(super::sys::errno());
        }
        Ok(guard)
    }

    /// The descriptor, for a thread that reads its faults
    /// ([`WriteGuard::wait_for_faults`]).
    pub fn raw_fd(&self) -> i32 {
        self.fd
    }

    /// A guard over the userfaultfd `fd` (from [`WriteGuard::raw_fd`]);
    /// dropping it closes `fd`, so keep it in a `ManuallyDrop` unless it
    /// is the only one.
    pub fn from_raw_fd(fd: i32) -> WriteGuard {
        WriteGuard { fd }
    }

    /// Waits up to `timeout_ms` for writes to protected pages (or for the
    /// eventfd `wake`, which it then drains) and hands each fault waiting
    /// now to `f`. Reading a fault does not wake its writer: lifting the
    /// protection of its page does.
    pub fn wait_for_faults(&self, wake: i32, timeout_ms: u64, mut f: impl FnMut(Fault)) {
        let _errno = super::sys::KeepErrno::new();
        let mut fds = [
            libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two initialised pollfds that outlive the call (a negative
        // `wake` is ignored by the kernel).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms as i32) } <= 0 {
            return;
        }
        if fds[1].revents != 0 {
            let mut count = 0u64;
            // SAFETY: the caller's eventfd; an 8-byte buffer.
            unsafe { libc::read(wake, (&mut count as *mut u64).cast(), 8) };
        }
        // The 32-byte `struct uffd_msg`: event at 0; for a page fault,
        // flags at 8, the address at 16 and the thread id at 24.
        let mut msg = [0u8; 32];
        // SAFETY: our non-blocking descriptor and a 32-byte buffer: each
        // read returns whole messages or fails with EAGAIN.
        while unsafe { libc::read(self.fd, msg.as_mut_ptr().cast(), 32) } == 32 {
            if msg[0] == UFFD_EVENT_PAGEFAULT {
                let word = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&msg[at..at + 8]);
                    u64::from_ne_bytes(b)
                };
                f(Fault {
                    addr: word(16) as usize,
                    tid: u32::from_ne_bytes([msg[24], msg[25], msg[26], msg[27]]),
                });
            }
        }
    }

    /// Registers `addr..addr + len` (page-aligned, whole mappings of shared
    /// memory or anonymous memory) for write-protection.
    pub fn register(&self, addr: usize, len: usize) -> bool {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: addr as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: our descriptor and a correctly laid out argument; the
        // kernel checks the range.
        unsafe { libc::ioctl(self.fd, UFFDIO_REGISTER as _, &mut reg) == 0 }
    }

    /// Registers and write-protects `addr..addr + len`; `false` (nothing
    /// left registered) when the kernel refuses either step.
    pub fn hold(&self, addr: usize, len: usize) -> bool {
        if !self.register(addr, len) {
            return false;
        }
        if !self.protect(addr, len, true) {
            self.unregister(addr, len);
            return false;
        }
        true
    }

    /// Undoes [`WriteGuard::hold`]: lifts the protection (waking the
    /// writers) and ends the registration.
    pub fn release(&self, addr: usize, len: usize) {
        self.protect(addr, len, false);
        self.unregister(addr, len);
    }

    /// Lifts the protection of the registered range `addr..addr + len`
    /// without waking the writers that wait on it: they sleep until
    /// [`WriteGuard::wake`] (or a signal).
    pub fn lift_quietly(&self, addr: usize, len: usize) -> bool {
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: addr as u64,
                len: len as u64,
            },
            mode: UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
        };
        // SAFETY: our descriptor and a correctly laid out argument.
        unsafe { libc::ioctl(self.fd, UFFDIO_WRITEPROTECT as _, &mut wp) == 0 }
    }

    /// Ends the registration of `addr..addr + len`. Writers waiting on a
    /// write-protected page are not woken by it (the kernel wakes only
    /// missing-page waiters here): lift the protection or wake them.
    pub fn unregister(&self, addr: usize, len: usize) -> bool {
        let mut range = UffdioRange {
            start: addr as u64,
            len: len as u64,
        };
        // SAFETY: our descriptor and a correctly laid out argument.
        unsafe { libc::ioctl(self.fd, UFFDIO_UNREGISTER as _, &mut range) == 0 }
    }

    /// Wakes the writers waiting on `addr..addr + len` (after the range
    /// was mapped anew: they fault again on the new mapping).
    pub fn wake(&self, addr: usize, len: usize) -> bool {
        let mut range = UffdioRange {
            start: addr as u64,
            len: len as u64,
        };
        // SAFETY: our descriptor and a correctly laid out argument.
        unsafe { libc::ioctl(self.fd, UFFDIO_WAKE as _, &mut range) == 0 }
    }

    /// Write-protects the registered range `addr..addr + len` (`on`), or
    /// lifts the protection and wakes the writers waiting on it.
    pub fn protect(&self, addr: usize, len: usize, on: bool) -> bool {
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: addr as u64,
                len: len as u64,
            },
            mode: if on { UFFDIO_WRITEPROTECT_MODE_WP } else { 0 },
        };
        // SAFETY: our descriptor and a correctly laid out argument.
        unsafe { libc::ioctl(self.fd, UFFDIO_WRITEPROTECT as _, &mut wp) == 0 }
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once (closing wakes any
        // writer still waiting).
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::PAGE_SIZE;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Writes `bytes` at `addr`.
    fn put(addr: usize, bytes: &[u8]) {
        // SAFETY: the tests' own mapping, `bytes.len()` bytes in range.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
    }

    fn get(addr: usize, len: usize) -> Vec<u8> {
        // SAFETY: as `put`.
        unsafe { core::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
    }

    #[test]
    fn meshing_two_pages_keeps_both_objects_and_frees_a_page() {
        let file = SharedFile::create(1 << 30).expect("memfd");
        let heap = file.map(0, 2 * PAGE_SIZE).expect("map");
        let (a, b) = (heap, heap + PAGE_SIZE);
        put(a + 16, b"object of A");
        put(b + 2048, b"object of B");
        assert_eq!(file.allocated_bytes(), Some(2 * PAGE_SIZE));
        // Mesh B onto A: B's object goes to the same offset of A's page.
        put(a + 2048, &get(b + 2048, 11));
        // SAFETY: B's page is ours and its object is copied.
        assert!(unsafe { file.alias(b, 0, PAGE_SIZE) });
        assert!(file.punch(PAGE_SIZE, PAGE_SIZE));
        assert_eq!(file.allocated_bytes(), Some(PAGE_SIZE));
        assert_eq!(get(a + 16, 11), b"object of A");
        assert_eq!(get(b + 2048, 11), b"object of B");
        // One physical page behind both addresses.
        put(b + 2048, b"O");
        assert_eq!(get(a + 2048, 1), b"O");
        // SAFETY: the mapping is ours and nothing uses it any more.
        unsafe { libc::munmap(heap as *mut c_void, 2 * PAGE_SIZE) };
    }

    #[test]
    fn all_faults_need_root_or_the_sysctl_and_are_refused_with_eperm() {
        let mut buf = [0u8; 8];
        let sysctl =
            super::super::sys::read_file(c"/proc/sys/vm/unprivileged_userfaultfd", &mut buf)
                .is_some_and(|n| buf[..n].starts_with(b"1"));
        // SAFETY: no arguments.
        let root = unsafe { libc::geteuid() } == 0;
        match WriteGuard::open(Faults::All) {
            Ok(_) => assert!(root || sysctl, "opened without the privilege"),
            // Without root a capability may still be missing or present;
            // with root, only a kernel without userfaultfd refuses.
            Err(e) => assert!(!root && e == libc::EPERM, "errno {e} (root: {root})"),
        }
    }

    #[test]
    fn a_writer_to_a_protected_page_waits_until_the_protection_is_lifted() {
        // User-mode faults only: what any process may open.
        let guard = WriteGuard::open(Faults::UserMode).expect("userfaultfd");
        let file = SharedFile::create(1 << 20).expect("memfd");
        let page = file.map(0, PAGE_SIZE).expect("map");
        put(page, b"before");
        assert!(guard.register(page, PAGE_SIZE));
        assert!(guard.protect(page, PAGE_SIZE, true));
        let wrote = Arc::new(AtomicBool::new(false));
        let writer = {
            let wrote = wrote.clone();
            std::thread::spawn(move || {
                put(page, b"after!");
                wrote.store(true, Ordering::Release);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        // Reads go on; the write has not happened.
        assert_eq!(get(page, 6), b"before");
        assert!(!wrote.load(Ordering::Acquire));
        assert!(guard.protect(page, PAGE_SIZE, false));
        writer.join().unwrap();
        assert!(wrote.load(Ordering::Acquire));
        assert_eq!(get(page, 6), b"after!");
        // SAFETY: the mapping is ours and nothing uses it any more.
        unsafe { libc::munmap(page as *mut c_void, PAGE_SIZE) };
    }
}
