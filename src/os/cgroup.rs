//! The memory limits of the process's own cgroup, read the way the JVM
//! reads its container's: `/proc/self/cgroup` names the cgroup,
//! `/proc/self/mountinfo` where its hierarchy is mounted.
//!
//! * cgroup v2: the lowest `memory.max` or `memory.high` of the cgroup and
//!   every ancestor up to the mount (a parent's limit binds its children).
//! * cgroup v1 (the memory controller's own hierarchy): the lowest of
//!   `memory.limit_in_bytes`, `memory.soft_limit_in_bytes` and `memory.stat`'s
//!   `hierarchical_memory_limit` (values of 2^62 and more mean none).
//!
//! Both are read where both are mounted; the lower limit wins. Nothing is
//! allocated: lines go through a stack buffer, paths are built in another.

use super::sys::{for_each_line, read_file};
use core::ffi::CStr;

/// A limit found, and where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupLimit {
    /// Bytes; 0 when the cgroup sets none.
    pub bytes: usize,
    /// 1 or 2: the cgroup version that set it (0 with no limit).
    pub version: u8,
}

/// Limits at or above this are "no limit" (cgroup v1 writes the largest
/// page multiple below 2^63).
const UNLIMITED: usize = 1 << 62;
pub(crate) const PATH_MAX: usize = 512;

/// A path assembled on the stack.
struct PathBuf {
    buf: [u8; PATH_MAX],
    len: usize,
}

impl PathBuf {
    fn new() -> Self {
        PathBuf {
            buf: [0; PATH_MAX],
            len: 0,
        }
    }

    /// Appends `s`; `false` when it does not fit.
    fn push(&mut self, s: &[u8]) -> bool {
        if self.len + s.len() >= PATH_MAX {
            return false;
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
        true
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// `self` + "/" + `file`, NUL-terminated, in `out`.
    fn file<'a>(&self, file: &[u8], out: &'a mut [u8; PATH_MAX]) -> Option<&'a CStr> {
        let n = self.len + 1 + file.len();
        if n + 1 > PATH_MAX {
            return None;
        }
        out[..self.len].copy_from_slice(self.bytes());
        out[self.len] = b'/';
        out[self.len + 1..n].copy_from_slice(file);
        out[n] = 0;
        CStr::from_bytes_with_nul(&out[..=n]).ok()
    }

    /// Cuts the last path component; `false` at `floor` bytes or fewer.
    fn pop(&mut self, floor: usize) -> bool {
        match self.bytes().iter().rposition(|&c| c == b'/') {
            Some(i) if i >= floor && self.len > floor => {
                self.len = i;
                true
            }
            _ => false,
        }
    }
}

/// The process's cgroup memory limit (see the module documentation).
pub fn memory_limit() -> CgroupLimit {
    memory_limit_at(c"/proc/self/cgroup", c"/proc/self/mountinfo", b"")
}

/// The process's own cgroup directories: (v2, v1 memory controller).
struct Dirs {
    v2: Option<(PathBuf, usize)>,
    v1: Option<PathBuf>,
}

/// Finds the process's cgroup directories from the given files, every mount
/// point prefixed with `prefix` (the tests' fake trees). The v2 directory
/// comes with the length of its mount point (where its ancestors end).
fn dirs_at(cgroup: &CStr, mountinfo: &CStr, prefix: &[u8]) -> Dirs {
    // The cgroup's path in each hierarchy.
    let (mut v2, mut v1) = (PathBuf::new(), PathBuf::new());
    let (mut have_v2, mut have_v1) = (false, false);
    for_each_line(cgroup, &mut |line| {
        let mut parts = line.splitn(3, |&c| c == b':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return true;
        };
        if id == b"0" && controllers.is_empty() {
            have_v2 = v2.push(path);
        } else if controllers.split(|&c| c == b',').any(|c| c == b"memory") {
            have_v1 = v1.push(path);
        }
        true
    });
    // Where each hierarchy is mounted: (root inside the hierarchy, mount point).
    let (mut m2, mut m1) = (Mount::new(), Mount::new());
    for_each_line(mountinfo, &mut |line| {
        if let Some(m) = parse_mount(line) {
            if m.fstype == b"cgroup2" && !m2.found {
                m2.set(m.root, m.point, prefix);
            } else if m.fstype == b"cgroup"
                && m.super_opts.split(|&c| c == b',').any(|o| o == b"memory")
                && !m1.found
            {
                m1.set(m.root, m.point, prefix);
            }
        }
        true
    });
    Dirs {
        v2: (have_v2 && m2.found)
            .then(|| m2.dir_of(v2.bytes()).map(|d| (d, m2.point.len)))
            .flatten(),
        v1: (have_v1 && m1.found).then(|| m1.dir_of(v1.bytes())).flatten(),
    }
}

/// Writes the path of the process's cgroup v2 `memory.pressure` (PSI of
/// the cgroup and its descendants) into `out`; `None` outside cgroup v2.
pub fn pressure_file(out: &mut [u8; PATH_MAX]) -> Option<&CStr> {
    let (dir, _) = dirs_at(c"/proc/self/cgroup", c"/proc/self/mountinfo", b"").v2?;
    dir.file(b"memory.pressure", out)
}

/// [`memory_limit`] from the given files (see [`dirs_at`]).
fn memory_limit_at(cgroup: &CStr, mountinfo: &CStr, prefix: &[u8]) -> CgroupLimit {
    let dirs = dirs_at(cgroup, mountinfo, prefix);
    let mut best = CgroupLimit::default();
    let mut offer = |bytes: Option<usize>, version: u8| {
        if let Some(b) = bytes.filter(|&b| b > 0 && b < UNLIMITED) {
            if best.bytes == 0 || b < best.bytes {
                best = CgroupLimit { bytes: b, version };
            }
        }
    };
    if let Some((mut dir, floor)) = dirs.v2 {
        // The cgroup and its ancestors, up to the mount point.
        loop {
            offer(read_number(&dir, b"memory.max"), 2);
            offer(read_number(&dir, b"memory.high"), 2);
            if !dir.pop(floor) {
                break;
            }
        }
    }
    if let Some(dir) = dirs.v1 {
        offer(read_number(&dir, b"memory.limit_in_bytes"), 1);
        offer(read_number(&dir, b"memory.soft_limit_in_bytes"), 1);
        offer(read_stat(&dir, b"hierarchical_memory_limit"), 1);
    }
    best
}

/// A cgroup hierarchy's mount.
struct Mount {
    found: bool,
    root: PathBuf,
    point: PathBuf,
}

impl Mount {
    fn new() -> Self {
        Mount {
            found: false,
            root: PathBuf::new(),
            point: PathBuf::new(),
        }
    }

    fn set(&mut self, root: &[u8], point: &[u8], prefix: &[u8]) {
        self.found = self.root.push(root) && self.point.push(prefix) && self.point.push(point);
    }

    /// The directory of the cgroup at `path` in this hierarchy: the mount
    /// point, then the path below the mount's root (in a cgroup namespace
    /// the path is already relative to it).
    fn dir_of(&self, path: &[u8]) -> Option<PathBuf> {
        let root = self.root.bytes();
        let rel = match path.strip_prefix(root) {
            Some(r) if root != b"/" => r,
            _ => path,
        };
        let mut dir = PathBuf::new();
        let rel = rel.strip_suffix(b"/").unwrap_or(rel);
        (dir.push(self.point.bytes()) && dir.push(rel)).then_some(dir)
    }
}

/// The fields of a `mountinfo` line this module reads.
struct MountLine<'a> {
    root: &'a [u8],
    point: &'a [u8],
    fstype: &'a [u8],
    super_opts: &'a [u8],
}

/// Splits a `mountinfo` line: `id parent major:minor root point options
/// [optional fields] - fstype source super-options`.
fn parse_mount(line: &[u8]) -> Option<MountLine<'_>> {
    let mut f = line.split(|&c| c == b' ');
    let (_, _, _) = (f.next()?, f.next()?, f.next()?);
    let root = f.next()?;
    let point = f.next()?;
    // The optional fields end with "-".
    for field in f.by_ref() {
        if field == b"-" {
            break;
        }
    }
    let fstype = f.next()?;
    let _source = f.next()?;
    Some(MountLine {
        root,
        point,
        fstype,
        super_opts: f.next()?,
    })
}

/// The number in `dir/file` ("max" and junk read as none).
fn read_number(dir: &PathBuf, file: &[u8]) -> Option<usize> {
    let mut path = [0u8; PATH_MAX];
    let mut buf = [0u8; 32];
    let n = read_file(dir.file(file, &mut path)?, &mut buf)?;
    parse_decimal(&buf[..n])
}

/// The value of the `key` line of `dir/memory.stat` (cgroup v1).
fn read_stat(dir: &PathBuf, key: &[u8]) -> Option<usize> {
    let mut path = [0u8; PATH_MAX];
    let mut out = None;
    for_each_line(dir.file(b"memory.stat", &mut path)?, &mut |line| {
        match line.strip_prefix(key).and_then(|r| r.strip_prefix(b" ")) {
            Some(v) => {
                out = parse_decimal(v);
                false
            }
            None => true,
        }
    });
    out
}

/// A decimal number, surrounding whitespace allowed.
fn parse_decimal(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add((d - b'0') as usize))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::fs;
    use std::path::{Path, PathBuf as StdPath};

    /// A fake `/proc/self` and cgroup tree under a temporary directory.
    struct Tree(StdPath);

    impl Tree {
        fn new(name: &str, cgroup: &str, mountinfo: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!("hg-cg-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cgroup"), cgroup).unwrap();
            fs::write(dir.join("mountinfo"), mountinfo).unwrap();
            Tree(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.0.join(rel.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }

        fn limit(&self) -> CgroupLimit {
            let c = |p: &Path| CString::new(p.to_str().unwrap()).unwrap();
            memory_limit_at(
                &c(&self.0.join("cgroup")),
                &c(&self.0.join("mountinfo")),
                self.0.to_str().unwrap().as_bytes(),
            )
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const V2_MOUNT: &str =
        "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn v2_takes_the_lowest_max_or_high_of_the_cgroup_and_its_ancestors() {
        let t = Tree::new("v2", "0::/app.slice/svc.service\n", V2_MOUNT);
        t.write("/sys/fs/cgroup/app.slice/svc.service/memory.max", "max\n");
        t.write("/sys/fs/cgroup/app.slice/svc.service/memory.high", "805306368\n");
        assert_eq!(
            t.limit(),
            CgroupLimit {
                bytes: 805306368,
                version: 2
            }
        );
        // A parent's lower memory.max binds the child.
        t.write("/sys/fs/cgroup/app.slice/memory.max", "536870912\n");
        assert_eq!(t.limit().bytes, 536870912);
    }

    #[test]
    fn no_limit_anywhere_is_none() {
        let t = Tree::new("none", "0::/user.slice\n", V2_MOUNT);
        t.write("/sys/fs/cgroup/user.slice/memory.max", "max\n");
        t.write("/sys/fs/cgroup/user.slice/memory.high", "max\n");
        assert_eq!(t.limit(), CgroupLimit::default());
        // No cgroup files at all (the root cgroup, or no /sys): none.
        let bare = Tree::new("bare", "0::/\n", V2_MOUNT);
        assert_eq!(bare.limit(), CgroupLimit::default());
    }

    #[test]
    fn in_a_cgroup_namespace_the_path_is_the_mount_itself() {
        // A container: its cgroup is "/" and the mount's root is its own.
        let t = Tree::new(
            "ns",
            "0::/\n",
            "1200 1100 0:27 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
        );
        t.write("/sys/fs/cgroup/memory.max", "268435456\n");
        assert_eq!(t.limit().bytes, 268435456);
    }

    #[test]
    fn v1_reads_the_memory_hierarchy_and_ignores_its_unlimited_values() {
        let t = Tree::new(
            "v1",
            "4:memory:/process_api/job\n0::/\n3:cpuset:/\n",
            "40 30 0:35 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             41 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        );
        let dir = "/sys/fs/cgroup/memory/process_api/job";
        t.write(&format!("{dir}/memory.limit_in_bytes"), "9223372036854771712\n");
        t.write(&format!("{dir}/memory.soft_limit_in_bytes"), "9223372036854771712\n");
        t.write(
            &format!("{dir}/memory.stat"),
            "cache 0\nhierarchical_memory_limit 1073741824\ntotal_cache 0\n",
        );
        assert_eq!(
            t.limit(),
            CgroupLimit {
                bytes: 1 << 30,
                version: 1
            }
        );
        t.write(&format!("{dir}/memory.soft_limit_in_bytes"), "104857600\n");
        assert_eq!(t.limit().bytes, 100 << 20);
    }

    #[test]
    fn lines_longer_than_the_buffer_are_skipped_and_the_rest_read() {
        let long = format!("99 1 0:1 / /mnt rw - overlay overlay lowerdir={}\n", "x".repeat(9000));
        let t = Tree::new("long", "0::/a\n", &(long + V2_MOUNT));
        t.write("/sys/fs/cgroup/a/memory.max", "1048576\n");
        assert_eq!(t.limit().bytes, 1 << 20);
    }

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(parse_decimal(b" 4096\n"), Some(4096));
        assert_eq!(parse_decimal(b"max\n"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"99999999999999999999999"), None);
    }

    #[test]
    fn this_process_limit_reads_without_failing() {
        let l = memory_limit();
        assert!(l.bytes == 0 || (l.bytes < UNLIMITED && l.version != 0));
    }
}
