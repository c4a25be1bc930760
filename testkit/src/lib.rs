//! What hugeguard's tests share, written once:
//!
//! * [`child`]: re-run this test binary as a child process that runs one
//!   ignored test, with its own environment (the allocator reads its
//!   configuration once, at start-up, so a mode needs a process).
//! * [`c`]: compile a C program of the tests once per test process, safely
//!   under parallel tests.
//! * [`paths`]: the target directory of the running test and the
//!   `LD_PRELOAD` library built there (found, never hard-coded).
//! * [`procfs`]: this process's resident and huge-page-mapped memory, read
//!   with the inspector's `/proc` readers.
//! * [`heap_profile`]: a heap profile's counts and `google-pprof`'s rows.
//! * [`pprof`]: a pprof protobuf profile decoded, and `go tool pprof`.
//! * [`meshing_possible`]: whether mesh mode can mesh here.

pub mod c;
pub mod child;
pub mod heap_profile;
pub mod paths;
pub mod pprof;
pub mod procfs;

/// Whether this process may mesh: the kernel gives it a userfaultfd that
/// holds back every write (root, or `vm.unprivileged_userfaultfd=1`).
pub fn meshing_possible() -> bool {
    // SAFETY: no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    root || std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd")
        .is_ok_and(|s| s.trim() == "1")
}
