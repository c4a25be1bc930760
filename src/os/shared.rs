//! Kernel primitives for mesh mode (issue 15), not yet used by the
//! allocator: a heap that is a shared memory file, so one physical page can
//! back two virtual pages ([`SharedFile`]), and write-protection through
//! userfaultfd, so a writer to a page being meshed waits in the kernel
//! instead of writing into a page that is being copied ([`WriteGuard`]).
//! `docs/MESH.md` says why userfaultfd and not `mprotect`.
//!
//! Meshing page B onto page A with these: protect B, copy B's live objects
//! into A's page (at the same offsets), [`SharedFile::alias`] B's virtual
//! page onto A's file offset, [`SharedFile::punch`] B's old file page, lift
//! the protection (a waiting writer then faults onto A's page and writes
//! there). The tests below do exactly that.

use core::ffi::c_void;

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

    /// Bytes of memory the file holds (its allocated blocks).
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
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_USER_MODE_ONLY: i32 = 1;
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_WRITEPROTECT: u64 = 0xc018_aa06;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

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
    /// may ask for).
    UserMode,
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
            return Err(super::linux::errno());
        }
        let guard = WriteGuard { fd };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            ioctls: 0,
        };
        // SAFETY: our descriptor and a correctly laid out argument.
        if unsafe { libc::ioctl(fd, UFFDIO_API as _, &mut api) } != 0 {
            return Err(super::linux::errno());
        }
        Ok(guard)
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
            super::super::linux::read_file(c"/proc/sys/vm/unprivileged_userfaultfd", &mut buf)
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
