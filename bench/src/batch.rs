//! The batch-then-idle scenario, shared by the scenario tests, the
//! `khugepaged` example and the suite: a child process allocates mixed small
//! objects, frees 63 of every 64 at random, then makes no allocator call while
//! its parent watches its RSS; on request it runs the worst-case khugepaged
//! simulation on itself.
//!
//! Everything the child does after the frees is allocation-free (raw `read`,
//! `write`, `madvise`, `mincore`), so what the parent sees is the allocator's
//! doing alone.

use std::alloc::{GlobalAlloc, Layout};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Size of the next object: 70 % 16-256 B, 25 % 256 B-4 KiB, 5 % 4-64 KiB.
pub fn mixed_size(rng: &mut Rng) -> usize {
    match rng.next_u64() % 100 {
        0..=69 => rng.range(16, 256),
        70..=94 => rng.range(256, 4096),
        _ => rng.range(4096, 65536),
    }
}

fn write_raw(fd: i32, msg: &[u8]) {
    // SAFETY: writing a valid buffer to a file descriptor.
    unsafe { libc::write(fd, msg.as_ptr() as *const libc::c_void, msg.len()) };
}

/// Formats `label` and numbers into a stack buffer and writes one line.
pub fn report(label: &str, values: &[(&str, usize)]) {
    let mut buf = [0u8; 512];
    let mut len = 0;
    let mut put = |b: &[u8], len: &mut usize| {
        let n = b.len().min(buf.len() - *len);
        buf[*len..*len + n].copy_from_slice(&b[..n]);
        *len += n;
    };
    put(label.as_bytes(), &mut len);
    for (k, v) in values {
        put(b" ", &mut len);
        put(k.as_bytes(), &mut len);
        put(b"=", &mut len);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = *v;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        put(&digits[i..], &mut len);
    }
    put(b"\n", &mut len);
    write_raw(1, &buf[..len]);
}

fn wait_stdin() {
    let mut b = [0u8; 1];
    // SAFETY: reading into a valid one-byte buffer.
    unsafe { libc::read(0, b.as_mut_ptr() as *mut libc::c_void, 1) };
}

/// What the simulation did.
#[derive(Default, Debug, Clone, Copy)]
pub struct SimReport {
    pub chunks: usize,
    pub collapsed: usize,
    pub refused: usize,
}

const MADV_COLLAPSE: i32 = 25;

/// Worst-case khugepaged, deterministic and without root: for every 2 MiB
/// aligned chunk of a private anonymous writable mapping with at least one
/// resident page, `madvise(MADV_COLLAPSE)`. Allocation-free.
pub fn simulate_khugepaged() -> SimReport {
    // Read the whole maps file first, so that the collapses (which split and
    // merge VMAs) do not disturb the listing. The buffers live in a mapping
    // of their own that is unmapped at the end: on the stack, their pages
    // would stay resident and count in the RSS this measures.
    const MAPS_BYTES: usize = 256 * 1024;
    const MAX_RANGES: usize = 4096;
    let scratch_len = MAPS_BYTES + MAX_RANGES * core::mem::size_of::<(usize, usize)>();
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
    let scratch = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            scratch_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if scratch == libc::MAP_FAILED {
        return SimReport::default();
    }
    let scratch_range = (scratch as usize, scratch as usize + scratch_len);
    // SAFETY: the mapping holds `MAPS_BYTES` bytes, then room for the ranges
    // (page-aligned, so aligned for `(usize, usize)`); it is zeroed, and
    // nothing else uses it until it is unmapped below.
    let (maps, ranges) = unsafe {
        (
            std::slice::from_raw_parts_mut(scratch as *mut u8, MAPS_BYTES),
            std::slice::from_raw_parts_mut(
                (scratch as *mut u8).add(MAPS_BYTES) as *mut (usize, usize),
                MAX_RANGES,
            ),
        )
    };
    let r = simulate_with(maps, ranges, scratch_range);
    // SAFETY: the mapping made above; the slices are not used any more.
    unsafe { libc::munmap(scratch, scratch_len) };
    r
}

/// The simulation over buffers `maps` and `ranges`, skipping any chunk that
/// overlaps `skip` (the buffers' own mapping).
fn simulate_with(
    maps: &mut [u8],
    ranges: &mut [(usize, usize)],
    skip: (usize, usize),
) -> SimReport {
    let mut len = 0;
    // SAFETY: plain file I/O into the buffer.
    unsafe {
        let fd = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return SimReport::default();
        }
        loop {
            let n = libc::read(
                fd,
                maps[len..].as_mut_ptr() as *mut libc::c_void,
                maps.len() - len,
            );
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        libc::close(fd);
    }
    let mut nranges = 0;
    for line in maps[..len].split(|&c| c == b'\n') {
        // "start-end perms offset dev inode [path]"
        let mut fields = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.next().unwrap_or(b"");
        let anon = inode == b"0" && (path.is_empty() || path == b"[heap]" || path == b"[stack]");
        if !anon || perms.len() < 4 || &perms[..2] != b"rw" || perms[3] != b'p' {
            continue;
        }
        let dash = range.iter().position(|&c| c == b'-').unwrap_or(0);
        let hex = |s: &[u8]| {
            s.iter().fold(0usize, |a, &c| {
                a * 16 + (c as char).to_digit(16).unwrap_or(0) as usize
            })
        };
        if nranges < ranges.len() {
            ranges[nranges] = (hex(&range[..dash]), hex(&range[dash + 1..]));
            nranges += 1;
        }
    }
    let mut r = SimReport::default();
    // SAFETY: getenv with a NUL-terminated name.
    let verbose = unsafe { !libc::getenv(c"HUGEGUARD_SIM_VERBOSE".as_ptr()).is_null() };
    const HUGE: usize = 2 << 20;
    let mut vec = [0u8; 512];
    for &(start, end) in &ranges[..nranges] {
        let mut chunk = (start + HUGE - 1) & !(HUGE - 1);
        while chunk + HUGE <= end {
            let ours = chunk < skip.1 && skip.0 < chunk + HUGE;
            // SAFETY: mincore on a mapped range, into a 512-byte vector.
            let rc = unsafe { libc::mincore(chunk as *mut libc::c_void, HUGE, vec.as_mut_ptr()) };
            if !ours && rc == 0 && vec.iter().any(|&b| b & 1 == 1) {
                r.chunks += 1;
                // SAFETY: advice on our own mapping; MADV_COLLAPSE keeps data.
                if unsafe { libc::madvise(chunk as *mut libc::c_void, HUGE, MADV_COLLAPSE) } == 0 {
                    r.collapsed += 1;
                    if verbose {
                        report("COLLAPSED", &[("addr", chunk)]);
                    }
                } else {
                    r.refused += 1;
                }
            }
            chunk += HUGE;
        }
    }
    r
}

/// Objects a workload keeps alive through the idle phase.
pub struct Kept {
    list: *mut (usize, usize),
    cap: usize,
    pub n: usize,
    pub live: usize,
}

impl Kept {
    fn new(alloc: &dyn GlobalAlloc, cap: usize) -> Kept {
        let layout = Layout::array::<(usize, usize)>(cap.max(1)).unwrap();
        // SAFETY: non-zero layout; kept for the life of the child.
        let list = unsafe { alloc.alloc(layout) } as *mut (usize, usize);
        Kept {
            list,
            cap,
            n: 0,
            live: 0,
        }
    }

    fn push(&mut self, p: usize, size: usize) -> bool {
        if self.n == self.cap {
            return false;
        }
        // SAFETY: in bounds.
        unsafe { self.list.add(self.n).write((p, size)) };
        self.n += 1;
        self.live += size;
        true
    }

    fn get(&self, i: usize) -> (usize, usize) {
        // SAFETY: entries below `n` were written.
        unsafe { self.list.add(i).read() }
    }
}

fn alloc_filled(alloc: &dyn GlobalAlloc, size: usize, byte: u8) -> usize {
    let layout = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: non-zero layout; the caller frees it with the same layout.
    unsafe {
        let p = alloc.alloc(layout);
        if !p.is_null() {
            p.write_bytes(byte, size);
        }
        p as usize
    }
}

fn free_sized(alloc: &dyn GlobalAlloc, p: usize, size: usize) {
    // SAFETY: allocated by `alloc_filled` with this size.
    unsafe { alloc.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) };
}

/// The release issue's workload: `total` bytes of mixed objects, 63 of every
/// 64 freed at random. Returns (bytes allocated, objects, kept).
fn workload_mixed(alloc: &dyn GlobalAlloc, total: usize) -> (usize, usize, Kept) {
    let mut rng = Rng::new(0x5eed);
    let n_est = total / 1800 + 1024;
    let mut all = Kept::new(alloc, n_est);
    let mut bytes = 0;
    while bytes < total {
        let size = mixed_size(&mut rng);
        let p = alloc_filled(alloc, size, (all.n % 251) as u8);
        if p == 0 || !all.push(p, size) {
            break;
        }
        bytes += size;
    }
    let mut kept = Kept::new(alloc, all.n / 32 + 64);
    for i in 0..all.n {
        let (p, size) = all.get(i);
        if !(rng.next_u64() % 64 == 0 && kept.push(p, size)) {
            free_sized(alloc, p, size);
        }
    }
    let n = all.n;
    free_sized(alloc, all.list as usize, all.cap * 16);
    (bytes, n, kept)
}

/// Kernel bugzilla 93111 as allocations: 256 MB of 4 KiB blocks, written,
/// then every block freed except the last 4 KiB of every 2 MiB.
fn workload_bugzilla(alloc: &dyn GlobalAlloc, total: usize) -> (usize, usize, Kept) {
    const BLOCK: usize = 4096;
    let n = total / BLOCK;
    let mut all = Kept::new(alloc, n);
    for i in 0..n {
        let p = alloc_filled(alloc, BLOCK, i as u8);
        if p == 0 || !all.push(p, BLOCK) {
            break;
        }
    }
    let mut kept = Kept::new(alloc, n / 512 + 1);
    for i in 0..all.n {
        let (p, size) = all.get(i);
        let last_of_2mib = i % 512 == 511;
        if !(last_of_2mib && kept.push(p, size)) {
            free_sized(alloc, p, size);
        }
    }
    let count = all.n;
    free_sized(alloc, all.list as usize, all.cap * 16);
    (count * BLOCK, count, kept)
}

/// The incident's Go program: 1000 blocks of 10 MB, each filled with random
/// bytes and dropped at once.
fn workload_go(alloc: &dyn GlobalAlloc, _total: usize) -> (usize, usize, Kept) {
    const BLOCK: usize = 10 << 20;
    let mut rng = Rng::new(7);
    for _ in 0..1000 {
        let layout = Layout::from_size_align(BLOCK, 8).unwrap();
        // SAFETY: non-zero layout; filled and freed right away.
        unsafe {
            let p = alloc.alloc(layout) as *mut u64;
            if p.is_null() {
                break;
            }
            for i in 0..BLOCK / 8 {
                p.add(i).write(rng.next_u64());
            }
            alloc.dealloc(p as *mut u8, layout);
        }
    }
    (1000 * BLOCK, 1000, Kept::new(alloc, 1))
}

/// The child side: run workload `name` over `total` bytes through `alloc`,
/// report, idle until told to simulate, report, idle until told to exit.
pub fn run_child(alloc: &dyn GlobalAlloc, name: &str, total: usize) {
    run_child_with(alloc, name, total, false);
}

/// As [`run_child`]; with `trim`, calls glibc's `malloc_trim(0)` after the
/// frees (the "glibc + malloc_trim" row of the comparison). A `name` of
/// `workers:N` runs the idle-workers scenario ([`run_workers`]) through the
/// global allocator.
pub fn run_child_with(alloc: &dyn GlobalAlloc, name: &str, total: usize, trim: bool) {
    if let Some(n) = name.strip_prefix("workers:") {
        run_workers(n.parse().unwrap_or(1), total, trim);
        return;
    }
    let (bytes, n, kept) = match name {
        "bugzilla" => workload_bugzilla(alloc, total),
        "go" => workload_go(alloc, total),
        _ => workload_mixed(alloc, total),
    };
    idle_protocol(bytes, n, &[&kept], trim);
}

/// The part of the child after the frees: report, idle until told to
/// simulate, report, idle until told to check the `kept` objects, report.
/// Allocation-free.
fn idle_protocol(bytes: usize, n: usize, kept: &[&Kept], trim: bool) {
    let peak = own_peak_rss();
    if trim {
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as usize;
    report(
        "FREED",
        &[
            ("allocated", bytes),
            ("objects", n),
            ("live", kept.iter().map(|k| k.live).sum()),
            ("kept", kept.iter().map(|k| k.n).sum()),
            ("pid", pid),
            ("peak", peak),
        ],
    );
    wait_stdin();
    let sim = simulate_khugepaged();
    report(
        "SIM",
        &[
            ("chunks", sim.chunks),
            ("collapsed", sim.collapsed),
            ("refused", sim.refused),
        ],
    );
    wait_stdin();
    // Check the live objects survived everything.
    let mut bad = 0;
    for k in kept {
        for i in 0..k.n {
            let (p, size) = k.get(i);
            // SAFETY: each kept object is live and `size` bytes.
            let s = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
            if s.iter().any(|&b| b != s[0]) {
                bad += 1;
            }
        }
    }
    report("CHECKED", &[("corrupted", bad)]);
}

/// The global allocator as a `GlobalAlloc` value.
struct Global;

// SAFETY: forwards to the global allocator.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::dealloc(ptr, layout) }
    }
}

/// Per-worker lists, each written by one worker in one phase and read by
/// others only after a barrier.
struct Lists(Vec<std::cell::UnsafeCell<Kept>>);

// SAFETY: see the phases in `run_workers`: no list is accessed by two
// threads without a barrier between the accesses.
unsafe impl Sync for Lists {}

/// The idle-workers scenario (a worker pool that handles a burst, then
/// blocks): `threads` workers allocate `total` bytes of mixed objects
/// between them; after a barrier each frees the objects of the next worker
/// (with more than one worker, every free is cross-thread), keeping 1 in
/// 64; then every worker blocks on a condition variable, alive, while the
/// main thread runs [`idle_protocol`]. Uses the global allocator.
pub fn run_workers(threads: usize, total: usize, trim: bool) {
    use std::sync::{Barrier, Condvar, Mutex};
    let threads = threads.max(1);
    let share = total / threads;
    let cap = share / 1800 + 1024;
    let made = Lists(
        (0..threads)
            .map(|_| Kept::new(&Global, cap).into())
            .collect(),
    );
    let kept = Lists(
        (0..threads)
            .map(|_| Kept::new(&Global, cap / 32 + 64).into())
            .collect(),
    );
    let batch_done = Barrier::new(threads + 1);
    let frees_done = Barrier::new(threads + 1);
    let quit = (Mutex::new(false), Condvar::new());
    std::thread::scope(|s| {
        for i in 0..threads {
            let (made, kept, quit) = (&made, &kept, &quit);
            let (batch_done, frees_done) = (&batch_done, &frees_done);
            s.spawn(move || {
                let mut rng = Rng::new(0x5eed + i as u64);
                {
                    // SAFETY: phase 1: only worker i touches list i.
                    let mine = unsafe { &mut *made.0[i].get() };
                    let mut bytes = 0;
                    while bytes < share {
                        let size = mixed_size(&mut rng);
                        let p = alloc_filled(&Global, size, (mine.n % 251) as u8);
                        if p == 0 || !mine.push(p, size) {
                            break;
                        }
                        bytes += size;
                    }
                }
                batch_done.wait();
                {
                    // SAFETY: phase 2: worker i alone reads list i + 1 and
                    // writes kept list i.
                    let theirs = unsafe { &*made.0[(i + 1) % threads].get() };
                    let keep = unsafe { &mut *kept.0[i].get() };
                    for j in 0..theirs.n {
                        let (p, size) = theirs.get(j);
                        if !(rng.next_u64() % 64 == 0 && keep.push(p, size)) {
                            free_sized(&Global, p, size);
                        }
                    }
                }
                frees_done.wait();
                // Idle: blocked, alive, no allocator call.
                let mut q = quit.0.lock().unwrap();
                while !*q {
                    q = quit.1.wait(q).unwrap();
                }
            });
        }
        batch_done.wait();
        frees_done.wait();
        // SAFETY: phase 3: the workers no longer touch the lists.
        let (bytes, n) = made.0.iter().fold((0, 0), |(b, n), l| {
            let l = unsafe { &*l.get() };
            (b + (0..l.n).map(|j| l.get(j).1).sum::<usize>(), n + l.n)
        });
        for l in &made.0 {
            // SAFETY: phase 3, as above; the list is not used again.
            let l = unsafe { &*l.get() };
            free_sized(&Global, l.list as usize, l.cap * 16);
        }
        // SAFETY: phase 3, as above.
        let kept_refs: Vec<&Kept> = kept.0.iter().map(|k| unsafe { &*k.get() }).collect();
        idle_protocol(bytes, n, &kept_refs, trim);
        *quit.0.lock().unwrap() = true;
        quit.1.notify_all();
    });
}

/// This process's peak RSS (VmHWM), read without allocating.
fn own_peak_rss() -> usize {
    let mut buf = [0u8; 4096];
    // SAFETY: plain file I/O into a stack buffer.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::close(fd);
        n.max(0) as usize
    };
    let text = &buf[..n];
    let Some(at) = text.windows(6).position(|w| w == b"VmHWM:") else {
        return 0;
    };
    text[at + 6..]
        .iter()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .fold(0usize, |a, &c| a * 10 + (c - b'0') as usize)
        * 1024
}

/// Resident bytes of process `pid` (from /proc/pid/statm).
pub fn rss_of(pid: u32) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        * 4096
}

/// AnonHugePages of process `pid`, in bytes.
pub fn anon_huge_of(pid: u32) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

/// Number of VMAs of process `pid`.
pub fn vmas_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The parent side of one run.
pub struct Watched {
    pub child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    pub started: Instant,
}

impl Watched {
    pub fn spawn(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Watched {
            child,
            stdin,
            out,
            started: Instant::now(),
        }
    }

    /// Waits for a line starting with `label` and returns its `key=value` pairs.
    pub fn expect(&mut self, label: &str) -> Vec<(String, usize)> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("child ended before {label}");
            }
            // The test harness may print "test name ... " before our line.
            if let Some(at) = line.find(label) {
                return line[at + label.len()..]
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
                    .collect();
            }
        }
    }

    pub fn signal(&mut self) {
        self.stdin.write_all(b"x").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Samples RSS every `step` for `total`, as (seconds since start, bytes).
    pub fn sample(&self, total: Duration, step: Duration) -> Vec<(f64, usize)> {
        let end = Instant::now() + total;
        let mut v = Vec::new();
        while Instant::now() < end {
            std::thread::sleep(step);
            v.push((self.started.elapsed().as_secs_f64(), rss_of(self.pid())));
        }
        v
    }

    pub fn finish(mut self) -> Vec<(String, usize)> {
        self.signal();
        let r = self.expect("CHECKED");
        let _ = self.child.wait();
        r
    }
}

pub fn get(kv: &[(String, usize)], key: &str) -> usize {
    kv.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

/// One batch-then-idle run watched from outside, with the simulated
/// khugepaged: what the child reported and what its RSS did.
pub struct BatchRun {
    pub freed: Vec<(String, usize)>,
    /// RSS samples during the idle phase, as (seconds since the frees, bytes).
    pub samples: Vec<(f64, usize)>,
    /// RSS at the end of the idle phase.
    pub idle: usize,
    pub sim: Vec<(String, usize)>,
    /// RSS after the simulation.
    pub after: usize,
    pub vmas: usize,
    pub checked: Vec<(String, usize)>,
}

/// Spawns `cmd` (a child running [`run_child`]), samples its RSS for `idle`
/// after the frees, has it simulate khugepaged, and measures again.
pub fn watch(cmd: Command, idle: Duration) -> BatchRun {
    let mut w = Watched::spawn(cmd);
    let freed = w.expect("FREED");
    let start = w.started.elapsed().as_secs_f64();
    let samples: Vec<(f64, usize)> = w
        .sample(idle, Duration::from_millis(250))
        .into_iter()
        .map(|(t, b)| (t - start, b))
        .collect();
    let idle_rss = samples.last().map_or(0, |s| s.1);
    w.signal();
    let sim = w.expect("SIM");
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_of(w.pid());
    let vmas = vmas_of(w.pid());
    let checked = w.finish();
    BatchRun {
        freed,
        samples,
        idle: idle_rss,
        sim,
        after,
        vmas,
        checked,
    }
}
