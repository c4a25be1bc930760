//! The soft limit comes from the process's own cgroup (issue 24, point 3).
//! As root, each test starts this binary again as a child inside a new
//! memory cgroup it creates (and removes afterwards); without root, or
//! without a writable memory controller, it says so and passes.
//!
//! * The child reads the limit the parent set, with its source.
//! * cgroup v1 (this project's machines): with a soft limit of 64 MiB and
//!   a hold-back of 60 s, 120 MiB of 128 MiB freed go back within seconds,
//!   while the same child outside the cgroup keeps them.
//!   (On cgroup v2 the child is given `memory.high` = 1 GiB, above what it
//!   uses, and only the reading is checked: a `memory.high` below the
//!   child's peak would throttle it.)

#![cfg(not(hugeguard_fallback))]

use hugeguard_testkit::child;
use std::alloc::{GlobalAlloc, Layout};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: hugeguard::HugeGuard = hugeguard::HugeGuard;

/// How long (s) the child waits for its memory to go back.
const CHILD_WAIT_ENV: &str = "HUGEGUARD_TEST_CGROUP_WAIT";
const MIB: usize = 1 << 20;

/// The child: reports the limit, allocates and writes 128 MiB in 1 MiB
/// blocks, frees 120 of them, and reports how soon the heap's resident
/// bytes fell below 32 MiB (waiting at most `wait` seconds).
fn child(wait: u64) {
    let l = Layout::from_size_align(MIB, 8).unwrap();
    // SAFETY: non-zero layout; each block freed once below.
    let blocks: Vec<*mut u8> = (0..128)
        .map(|i| unsafe {
            let p = GLOBAL.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(i as u8, MIB);
            p
        })
        .collect();
    let s = hugeguard::stats();
    let start = Instant::now();
    for &p in &blocks[8..] {
        // SAFETY: allocated above with `l`.
        unsafe { GLOBAL.dealloc(p, l) };
    }
    let mut resident = hugeguard::stats().resident_bytes;
    while resident >= 32 * MIB && start.elapsed() < Duration::from_secs(wait) {
        std::thread::sleep(Duration::from_millis(50));
        resident = hugeguard::stats().resident_bytes;
    }
    println!(
        "CGROUP limit={} source={:?} resident={} ms={}",
        s.memory_limit_bytes,
        s.memory_limit_source,
        resident,
        start.elapsed().as_millis()
    );
    for &p in &blocks[..8] {
        // SAFETY: allocated above with `l`, not freed yet.
        unsafe { GLOBAL.dealloc(p, l) };
    }
}

/// A memory cgroup made for one test, removed when dropped.
struct TestCgroup {
    dir: PathBuf,
    v2: bool,
}

impl TestCgroup {
    /// A new memory cgroup: v2 where the memory controller is on the
    /// unified hierarchy, else v1's memory hierarchy; `None` (with the
    /// reason) when neither can be made.
    fn new(name: &str) -> Result<TestCgroup, String> {
        let name = format!("hugeguard-test-{}-{name}", std::process::id());
        let v2_root = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(v2_root.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
        let dir = if v2 {
            v2_root.join(&name)
        } else {
            Path::new("/sys/fs/cgroup/memory").join(&name)
        };
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TestCgroup { dir, v2 })
    }

    fn set(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value)
            .unwrap_or_else(|e| panic!("writing {file} of {}: {e}", self.dir.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Runs [`cgroup_child`] (in `cgroup` if given) and returns its report
/// line's fields: limit, source, resident bytes, milliseconds.
fn run_child(cgroup: Option<&TestCgroup>, wait: u64) -> (usize, String, usize, u64) {
    let direct = child::command("cgroup_child");
    let mut cmd = match cgroup {
        // The shell moves itself into the cgroup, then becomes the child.
        Some(cg) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                    cg.dir.display()
                ))
                .arg(direct.get_program())
                .args(direct.get_args());
            c
        }
        None => direct,
    };
    let out = cmd
        .env(CHILD_WAIT_ENV, wait.to_string())
        .env("HUGEGUARD_HOLDBACK_MS", "60000")
        .env_remove("HUGEGUARD_MEMORY_LIMIT")
        .output()
        .expect("starting the child");
    let text = child::text(&out);
    assert!(out.status.success(), "child failed:\n{text}");
    let line = child::report_line(&text, "CGROUP ").expect("no CGROUP line");
    println!("{line}");
    let field = |k: &str| child::field(line, k).unwrap_or("").to_string();
    (
        field("limit").parse().unwrap(),
        field("source"),
        field("resident").parse().unwrap(),
        field("ms").parse().unwrap(),
    )
}

/// The child (run by [`run_child`] only).
#[test]
#[ignore]
fn cgroup_child() {
    let wait = std::env::var(CHILD_WAIT_ENV).expect("run by run_child");
    child(wait.parse().unwrap());
}

#[test]
fn a_child_in_a_memory_cgroup_takes_its_limit_and_releases_at_once_above_it() {
    let cg = match TestCgroup::new("limit") {
        Ok(cg) => cg,
        Err(e) => {
            println!("skipped: {e} (needs root and a memory cgroup hierarchy)");
            return;
        }
    };
    if cg.v2 {
        cg.set("memory.high", &(1usize << 30).to_string());
        let (limit, source, _, _) = run_child(Some(&cg), 0);
        assert_eq!((limit, source.as_str()), (1 << 30, "CgroupV2"));
        return;
    }
    cg.set("memory.soft_limit_in_bytes", &(64 * MIB).to_string());
    let (limit, source, resident, ms) = run_child(Some(&cg), 10);
    assert_eq!((limit, source.as_str()), (64 * MIB, "CgroupV1"));
    assert!(
        resident < 32 * MIB,
        "above the cgroup's limit the freed memory stayed: {} MiB after {ms} ms",
        resident / MIB
    );
    // The same child outside the cgroup: no limit, and the 60 s hold-back
    // keeps the freed memory for the 2 s it watches.
    let (limit, source, resident, _) = run_child(None, 2);
    assert_eq!(limit, 0, "this test's own cgroup has a limit ({source})");
    assert!(
        resident >= 100 * MIB,
        "released without a limit: {resident}"
    );
}
