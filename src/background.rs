//! The release policy's driver: one release pass, the background thread that
//! runs passes while the program is idle, and the public controls.
//!
//! A pass, in order: (1) whole free huge pages, (2) parked batches and free
//! pages inside partly used spans, per size class, (3) free pages of partly
//! used huge pages, (4) whole free huge pages again (step 2 may have emptied
//! some), then, on the background thread only, (5) dense huge pages regain
//! their huge page: `MADV_HUGEPAGE` if they carry NOHUGEPAGE, and a
//! rate-limited `MADV_COLLAPSE` with back-off.
//!
//! The background thread starts lazily from an allocation slow path with no
//! lock held. While memory is held back it runs a pass every half hold-back
//! (at least [`TICK_MS`]); while dense huge pages wait for collapse, every
//! [`TICK_MS`]; over the soft memory limit, ten times as often; otherwise it
//! parks on a futex until an allocator slow path frees memory (one wake-up
//! system call per park, never on the fast path).
//! After `fork` the child starts its own thread when it next needs one.
//!
//! The thread never keeps the process alive: no wait lasts longer than
//! [`LIVENESS_MS`], and between waits it checks whether any other thread of
//! the process still lives (`/proc/self/stat`, at most once per
//! [`LIVENESS_MS`], and at once when an ending thread's exit hook says so).
//! When none does, it returns from its start routine; glibc (and musl) end
//! the process with status 0 when the last thread ends, as POSIX says for a
//! program whose last thread called `pthread_exit`. Without this, a program
//! whose threads all end that way would live on with only this thread,
//! which blocks every signal, so not even SIGTERM could end it.

use crate::config::{self, Mode};
use crate::global::{self, CENTRAL, HEAP};
use crate::lock::SpinLock;
use crate::os::linux;
use crate::os::{Advice, Os};
use crate::page_heap::PageHeap;
use crate::page_heap::{Pass, PassResult};
use crate::units::{HUGE_SIZE, PAGE_SIZE};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

/// Period of the background thread while work is pending.
pub const TICK_MS: u64 = 100;
/// Longest park before the thread runs a pass on its own.
const PARK_MS: u64 = 2000;
/// Meshing rounds the background thread runs back to back at most.
const MESH_ROUNDS: usize = 16;
/// Longest wait before the thread checks whether it is the last thread of
/// the process (and so how long, at most, it can outlive the program's last
/// thread).
pub const LIVENESS_MS: u64 = 250;
/// After an ending thread's exit hook: how often, and how many times, to
/// look whether it has left (its hook runs just before it does).
const EXIT_RECHECK_MS: u64 = 5;
const EXIT_RECHECKS: usize = 40;
/// Idle thread caches are looked for at most this often, so a thread
/// counts as idle after this long, at most twice this, without an allocator
/// call.
pub const CACHE_SCAN_MS: u64 = 500;
/// Collapses per tick at most.
const COLLAPSES_PER_TICK: usize = 4;
/// A collapse slower than this backs off, as does a failed one.
const SLOW_COLLAPSE_US: u64 = 20_000;

const BG_NONE: u8 = 0;
const BG_RUNNING: u8 = 1;
const BG_FAILED: u8 = 2;
static BG_STATE: AtomicU8 = AtomicU8::new(BG_NONE);
/// Whether the background thread may work (API switch).
static BG_ENABLED: AtomicBool = AtomicBool::new(true);
/// The futex word the thread parks on; bumped to wake it.
static BG_WORD: AtomicU32 = AtomicU32::new(0);
static BG_PARKED: AtomicBool = AtomicBool::new(false);
/// Set by the thread-exit hook: a thread is ending, perhaps the last one.
static THREAD_ENDING: AtomicBool = AtomicBool::new(false);
/// Set by slow paths when memory was freed since the last pass.
static FREED: AtomicBool = AtomicBool::new(false);
/// Held by the background thread for each round of work (cache scan,
/// release pass, collapses), so that `set_background(false)` can wait for a
/// round under way to end.
static WORK: SpinLock<()> = SpinLock::new(());
/// Collapse back-off (used by the background thread only).
static COLLAPSE_BACKOFF: SpinLock<CollapseBackoff> = SpinLock::new(CollapseBackoff::new());

/// When `MADV_COLLAPSE` may be tried again: after a failure or a slow
/// collapse, wait 1 s, doubling up to 60 s; a quick success resets it.
#[derive(Debug)]
pub struct CollapseBackoff {
    waiting: bool,
    wait_until: u32,
    backoff_ms: u32,
}

impl CollapseBackoff {
    pub const fn new() -> Self {
        CollapseBackoff {
            waiting: false,
            wait_until: 0,
            backoff_ms: 0,
        }
    }

    /// Whether a collapse may be tried at `now` (release clock, ms).
    pub fn ready(&self, now: u32) -> bool {
        !self.waiting || (now.wrapping_sub(self.wait_until) as i32) >= 0
    }

    /// Records a collapse that failed or was slow.
    pub fn failed(&mut self, now: u32) {
        self.backoff_ms = if self.backoff_ms == 0 {
            1000
        } else {
            (self.backoff_ms * 2).min(60_000)
        };
        self.waiting = true;
        self.wait_until = now.wrapping_add(self.backoff_ms);
    }

    /// Records a quick, successful collapse.
    pub fn succeeded(&mut self) {
        *self = CollapseBackoff::new();
    }
}

impl Default for CollapseBackoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Called from allocator slow paths that return memory: wakes the parked
/// background thread (a system call only when it is parked).
#[inline]
pub fn note_free() {
    if !FREED.load(Ordering::Relaxed) {
        FREED.store(true, Ordering::Relaxed);
    }
    if BG_PARKED.load(Ordering::Relaxed) && BG_PARKED.swap(false, Ordering::AcqRel) {
        BG_WORD.fetch_add(1, Ordering::Release);
        linux::futex_wake(&BG_WORD);
    }
}

/// Called from the thread-exit hook of an ending thread: wakes the
/// background thread so it can end too if that thread was the last one.
pub fn note_thread_exit() {
    if BG_STATE.load(Ordering::Relaxed) != BG_RUNNING {
        return;
    }
    THREAD_ENDING.store(true, Ordering::Release);
    BG_WORD.fetch_add(1, Ordering::Release);
    linux::futex_wake(&BG_WORD);
}

/// Starts the background thread if the configuration wants one and it is
/// not running. Call with no allocator lock held.
#[inline]
pub fn maybe_start() {
    if BG_STATE.load(Ordering::Relaxed) != BG_NONE {
        return;
    }
    start_slow();
}

#[cold]
fn start_slow() {
    let cfg = config::get();
    if !cfg.background || cfg.mode == Mode::Off {
        BG_STATE.store(BG_FAILED, Ordering::Relaxed);
        return;
    }
    if BG_STATE
        .compare_exchange(BG_NONE, BG_RUNNING, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
        && !linux::spawn_detached(background_main)
    {
        BG_STATE.store(BG_FAILED, Ordering::Relaxed);
    }
}

/// In a forked child: no background thread exists there.
pub fn after_fork_child() {
    let cfg_wants = BG_STATE.load(Ordering::Relaxed) == BG_RUNNING;
    BG_PARKED.store(false, Ordering::Relaxed);
    THREAD_ENDING.store(false, Ordering::Relaxed);
    // Only the parent's background thread takes the back-off and work
    // locks, and it does not exist here: release them in case the fork
    // caught them held.
    // SAFETY: no thread of the child holds or will use a guard of them.
    unsafe {
        COLLAPSE_BACKOFF.unlock_raw();
        WORK.unlock_raw();
    }
    if cfg_wants {
        BG_STATE.store(BG_NONE, Ordering::Relaxed);
    }
}

/// Turns the background release thread's work on or off (it is started on
/// first need either way, unless `HUGEGUARD_BACKGROUND=off`). When it turns
/// the work off, it returns once a round of work under way has ended: from
/// then on the background thread releases nothing and takes no cache.
pub fn set_background(enabled: bool) {
    BG_ENABLED.store(enabled, Ordering::Relaxed);
    if !enabled {
        // A round that began before the store ends before this lock is ours;
        // later rounds see the switch off.
        drop(WORK.lock());
    }
    note_free();
}

/// Whether the background thread is running.
pub fn background_running() -> bool {
    BG_STATE.load(Ordering::Relaxed) == BG_RUNNING
}

fn over_limit(limit: usize) -> bool {
    limit != 0 && resident_estimate() * 20 > limit * 19
}

/// Bytes the heap may have resident (pages ever written and not released).
pub fn resident_estimate() -> usize {
    let meshed = crate::mesh::totals().1;
    let heap = HEAP.lock();
    let s = heap.stats();
    (s.dirty_pages.saturating_sub(s.span_released_pages) * PAGE_SIZE).saturating_sub(meshed)
}

/// One release pass; returns what it did. `force` ignores the hold-back.
pub fn release_pass(force: bool) -> PassResult {
    let cfg = config::get();
    let mut out = PassResult::default();
    if cfg.mode == Mode::Off || !global::ensure_heap() {
        return out;
    }
    let pass = Pass {
        now: global::now(),
        holdback: cfg.holdback_ms,
        force: force || over_limit(cfg.memory_limit),
    };
    HEAP.lock().release_free_huge_pages(&pass, &mut out);
    for (class, c) in CENTRAL.iter().enumerate().skip(1) {
        c.lock()
            .release(&global::ProcessHeap, class, &pass, &mut out);
    }
    {
        let mut heap = HEAP.lock();
        heap.release_filler_pages(&pass, &mut out);
        heap.release_free_huge_pages(&pass, &mut out);
        heap.discard_span_records();
    }
    out
}

/// Background step 5: dense huge pages regain their huge page. Returns
/// whether candidates remain.
fn regain_huge_pages(now: u32) -> bool {
    let cfg = config::get();
    if !cfg.collapse {
        return false;
    }
    // SAFETY: the process heap's OS is the kernel, `LinuxOs`.
    unsafe {
        collapse_step(
            &HEAP,
            &linux::LinuxOs,
            &mut COLLAPSE_BACKOFF.lock(),
            now,
            cfg.holdback_ms,
            linux::now_us,
        )
    }
}

/// Up to [`COLLAPSES_PER_TICK`] collapses of dense huge pages of `heap`,
/// through `os`, with the heap lock released during each (slow) collapse.
/// `clock_us` times them. Returns whether candidates remain.
///
/// # Safety
/// `os` acts on the memory of `heap` (it is the heap's OS, or another value
/// of the same stateless kind, such as `LinuxOs`).
pub unsafe fn collapse_step<O: Os>(
    heap: &SpinLock<PageHeap<O>>,
    os: &O,
    backoff: &mut CollapseBackoff,
    now: u32,
    holdback: u32,
    clock_us: impl Fn() -> u64,
) -> bool {
    if !backoff.ready(now) {
        return true;
    }
    let pass = Pass {
        now,
        holdback,
        force: false,
    };
    let mut from = 0;
    for _ in 0..COLLAPSES_PER_TICK {
        let Some((idx, addr)) = heap.lock().pick_dense(&pass, from) else {
            return false;
        };
        from = idx + 1;
        // Collapse only memory that is really there: never fault in pages
        // the program has not touched.
        let resident = os.resident_pages(addr, HUGE_SIZE).unwrap_or(0);
        if resident < crate::page_heap::release::DENSE_PAGES {
            heap.lock().collapse_skipped(idx, now);
            continue;
        }
        let t0 = clock_us();
        // SAFETY: `addr` is a dense, committed huge page of `heap`, whose OS
        // `os` is (the process's one kernel, or the test's fake); a collapse
        // keeps every byte.
        let ok = unsafe { os.advise(addr, HUGE_SIZE, Advice::Collapse) }.is_ok();
        let slow = clock_us().saturating_sub(t0) > SLOW_COLLAPSE_US;
        heap.lock().collapse_done(idx, ok);
        if !ok || slow {
            backoff.failed(now);
            return true;
        }
        backoff.succeeded();
    }
    true
}

/// What the background thread does until its next pass.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Sleep this long (ms), or less once memory nears the soft limit.
    Sleep(u64),
    /// Park until a slow path frees memory, or this long (ms) at most.
    Park(u64),
}

extern "C" fn background_main(_: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    let mut liveness = Liveness {
        checked_at: linux::now_ms(),
    };
    let mut scanned_at = 0;
    loop {
        let cfg = config::get();
        let work = WORK.lock();
        FREED.store(false, Ordering::Relaxed);
        let wait = if !BG_ENABLED.load(Ordering::Relaxed) {
            Wait::Park(PARK_MS)
        } else {
            let now = linux::now_ms();
            if now.saturating_sub(scanned_at) >= CACHE_SCAN_MS {
                scanned_at = now;
                // Objects of idle threads go back to their central lists
                // first, so this pass and the next can release what they
                // pinned.
                crate::cache::reclaim(crate::cache::Reclaim::Idle);
            }
            // A class that needed new spans while some were frozen for
            // meshing gets them back first (mesh mode; also while busy).
            crate::mesh::thaw_requested();
            let r = release_pass(false);
            let more_dense = regain_huge_pages(global::now());
            // Idle and released: mesh mode merges sparse units now, round
            // after round while they mesh something and nothing is freed.
            let mut meshed = false;
            if !r.pending && !FREED.load(Ordering::Relaxed) {
                for _ in 0..MESH_ROUNDS {
                    let m = crate::mesh::round();
                    meshed |= m.meshed_units + m.unmeshed_units != 0;
                    if m.meshed_units == 0 || FREED.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
            if over_limit(cfg.memory_limit) {
                Wait::Sleep(TICK_MS / 10)
            } else if more_dense {
                Wait::Sleep(TICK_MS)
            } else if r.pending || FREED.load(Ordering::Relaxed) {
                // Memory is held back: nothing can go before the hold-back
                // has passed, so look again at half of it (a busy program's
                // locks are not disturbed more often than that).
                Wait::Sleep((cfg.holdback_ms as u64 / 2).max(TICK_MS))
            } else if meshed {
                Wait::Sleep(TICK_MS)
            } else {
                Wait::Park(PARK_MS)
            }
        };
        drop(work);
        if !wait_alive(wait, cfg.memory_limit, &mut liveness) {
            break;
        }
    }
    // The last thread: end it, and with it the process (the C library exits
    // with status 0 when its last thread returns). Should anything still run
    // after all, the next slow path starts a new background thread.
    BG_STATE.store(BG_NONE, Ordering::Relaxed);
    core::ptr::null_mut()
}

/// When the background thread last looked for other live threads.
struct Liveness {
    checked_at: u64,
}

impl Liveness {
    /// Whether the background thread is now the only live thread of the
    /// process; looks at most once per [`LIVENESS_MS`] unless an exit hook
    /// announced an ending thread.
    fn alone(&mut self) -> bool {
        if THREAD_ENDING.swap(false, Ordering::Acquire) {
            self.checked_at = linux::now_ms();
            return alone_once_ending_thread_left();
        }
        let now = linux::now_ms();
        if now.saturating_sub(self.checked_at) < LIVENESS_MS {
            return false;
        }
        self.checked_at = now;
        linux::other_live_threads() == Some(0)
    }
}

/// After an exit hook: the ending thread still counts until it leaves the
/// kernel, so while it is the only other one, look again shortly.
fn alone_once_ending_thread_left() -> bool {
    for _ in 0..EXIT_RECHECKS {
        match linux::other_live_threads() {
            Some(0) => return true,
            Some(1) => linux::sleep_ms(EXIT_RECHECK_MS),
            _ => return false,
        }
    }
    false
}

/// Waits as `wait` says, in slices of at most [`LIVENESS_MS`] (of
/// [`TICK_MS`] under a soft `limit`), checking between slices whether the
/// background thread has become the last thread. Returns `false` when it
/// has (the thread must end), `true` when it is time for the next pass.
fn wait_alive(wait: Wait, limit: usize, liveness: &mut Liveness) -> bool {
    let (total, park) = match wait {
        Wait::Sleep(ms) => (ms, false),
        Wait::Park(ms) => (ms, true),
    };
    let start = linux::now_ms();
    loop {
        let elapsed = linux::now_ms().saturating_sub(start);
        if elapsed >= total {
            return true;
        }
        let mut slice = (total - elapsed).min(LIVENESS_MS);
        if limit != 0 {
            slice = slice.min(TICK_MS);
        }
        let word = BG_WORD.load(Ordering::Acquire);
        if park {
            BG_PARKED.store(true, Ordering::Release);
            if FREED.load(Ordering::Relaxed) {
                BG_PARKED.store(false, Ordering::Relaxed);
                return true;
            }
        }
        linux::futex_wait(&BG_WORD, word, slice);
        if park {
            BG_PARKED.store(false, Ordering::Relaxed);
        }
        if liveness.alone() {
            return false;
        }
        if (park && FREED.load(Ordering::Relaxed)) || over_limit(limit) {
            return true;
        }
    }
}

/// Releases everything releasable now, ignoring the hold-back (like
/// `malloc_trim(0)` or Go's `debug.FreeOSMemory`): the calling thread's
/// cache, the caches of other threads that are not inside an allocator call
/// right now, and all parked batches first. Returns the bytes released.
pub fn release_now() -> usize {
    crate::cache::flush_current_thread();
    crate::cache::reclaim(crate::cache::Reclaim::All);
    global::drain_transfer_caches();
    release_pass(true).released_pages * PAGE_SIZE
}

/// In mesh mode (`HUGEGUARD_MESH=on` where userfaultfd may hold back every
/// write), releases what it can ([`release_now`]) and meshes sparse spans
/// now instead of waiting for the program to go idle; what it did. Does
/// nothing else otherwise (all zero).
pub fn mesh_now() -> crate::mesh::MeshRound {
    if !crate::mesh::active() {
        return Default::default();
    }
    release_now();
    let mut total = crate::mesh::round();
    // Units freed by the first round's unmeshing may mesh in a second.
    let more = crate::mesh::round();
    total.meshed_units += more.meshed_units;
    total.punched_bytes += more.punched_bytes;
    total.unmeshed_units += more.unmeshed_units;
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fake::{Call, FakeOs};
    use core::cell::Cell;

    fn dense_heap() -> SpinLock<PageHeap<FakeOs>> {
        let mut h = PageHeap::new(FakeOs::default());
        assert!(h.init(64 * HUGE_SIZE, HUGE_SIZE));
        // Three huge pages filled completely.
        for _ in 0..3 * 512 {
            h.alloc_run(1, 1, 1).unwrap();
        }
        SpinLock::new(h)
    }

    /// `collapse_step` over a fake-OS heap and a fake OS: nothing is
    /// dereferenced, calls are only recorded.
    fn step(
        heap: &SpinLock<PageHeap<FakeOs>>,
        os: &FakeOs,
        b: &mut CollapseBackoff,
        now: u32,
        holdback: u32,
        clock: impl Fn() -> u64,
    ) -> bool {
        // SAFETY: a fake OS acts on no memory.
        unsafe { collapse_step(heap, os, b, now, holdback, clock) }
    }

    fn collapses(os: &FakeOs) -> usize {
        os.calls
            .borrow()
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Call::Advise {
                        advice: Advice::Collapse,
                        ..
                    }
                )
            })
            .count()
    }

    #[test]
    fn failed_collapse_backs_off_and_doubles() {
        let heap = dense_heap();
        let os = FakeOs::default();
        *os.fail_advice.borrow_mut() = Some((Advice::Collapse, 12));
        let mut b = CollapseBackoff::new();
        let clock = || 0u64;
        // Dense for the hold-back first: nothing is tried at once.
        step(&heap, &os, &mut b, 0, 1000, clock);
        assert_eq!(collapses(&os), 0);
        assert!(step(&heap, &os, &mut b, 1000, 1000, clock));
        assert_eq!(
            heap.lock().stats().advice.collapse_failures,
            1,
            "stops at the first failure"
        );
        assert!(!b.ready(1500) && b.ready(2000));
        assert!(step(&heap, &os, &mut b, 1500, 1000, clock));
        assert_eq!(
            heap.lock().stats().advice.collapse_attempts,
            1,
            "waits while backing off"
        );
        step(&heap, &os, &mut b, 2000, 1000, clock);
        assert_eq!(heap.lock().stats().advice.collapse_failures, 2);
        assert!(!b.ready(3999) && b.ready(4000), "second failure waits 2 s");
        // Success resets the back-off. The two huge pages that failed are
        // not retried until they change.
        *os.fail_advice.borrow_mut() = None;
        assert!(!step(&heap, &os, &mut b, 4000, 1000, clock), "nothing left");
        assert!(b.ready(4000));
        assert_eq!(collapses(&os), 1);
        assert_eq!(heap.lock().stats().advice.collapse_attempts, 3);
    }

    #[test]
    fn slow_collapse_backs_off_too() {
        let heap = dense_heap();
        let os = FakeOs::default();
        let mut b = CollapseBackoff::new();
        let t = Cell::new(0u64);
        let clock = || {
            t.set(t.get() + 50_000); // each reading 50 ms later
            t.get()
        };
        step(&heap, &os, &mut b, 0, 0, clock);
        assert_eq!(collapses(&os), 1, "one slow collapse, then back-off");
        assert!(!b.ready(999));
    }

    #[test]
    fn untouched_memory_is_never_collapsed() {
        let heap = dense_heap();
        let os = FakeOs::default();
        *os.resident.borrow_mut() = Some(10);
        let mut b = CollapseBackoff::new();
        step(&heap, &os, &mut b, 0, 0, || 0);
        assert_eq!(collapses(&os), 0);
    }
}
