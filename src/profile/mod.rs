//! Sampled heap profiles: which call sites hold the live bytes.
//!
//! Off by default. With profiling on (`HUGEGUARD_PROF=on`, or [`start`]),
//! allocations are sampled by bytes, as jemalloc and TCMalloc do: an
//! allocation of `s` bytes is sampled with probability
//! `1 - exp(-s / interval)` (the interval is `HUGEGUARD_PROF_INTERVAL`,
//! 512 KiB by default), independently of every other, so dividing each
//! sample by that probability gives an unbiased estimate of the live bytes
//! per call site at any interval (`google-pprof` does the division when it
//! reads the profile's `heap_v2/<interval>` header).
//!
//! **Small allocations** are counted in allocations, not bytes, so that the
//! fast path pays nothing for it: each thread keeps, per size class, a
//! countdown of the allocations left before the next *candidate*, in the
//! same word as the class's count of cached objects (`cache::pop_counted`:
//! one subtraction takes the object and counts it). The countdown is drawn
//! geometric (`draw_pops`), so each allocation of a class of `c` bytes is
//! a candidate with probability `1 - exp(-c / interval)`; a candidate that
//! asked for `s < c` bytes is kept with probability
//! `(1 - exp(-s / interval)) / (1 - exp(-c / interval))` (`thin`), which
//! makes its probability `1 - exp(-s / interval)`, as if its bytes had been
//! counted. **Large allocations** and `realloc` count their bytes against a
//! thread-wide countdown, an exponential draw (`cache::sample_due`).
//!
//! **Cost when off.** The same allocation fast path: a class's countdown
//! is then at its most (`draw::MAX_POPS`, 2^30 pops), and one that runs
//! out only sets it again. [`start`] and [`stop`] close every cache's
//! allocation fast path (`cache::set_profiling`), and each thread sets its
//! countdowns for the new state at its next allocation (drawn afresh when
//! on). A large allocation or a `realloc` whose byte countdown
//! runs out while profiling is off restarts it from 1 MiB unsampled. A
//! Rust free of a small object passes one addition
//! (`cache::dealloc_unless_sampled`), the same with profiling on or off:
//! once profiling has started (and samples may exist) its carry sends the
//! frees of the sampled objects' region, mapped below the heap, to the
//! slow path (`cache::set_sampled`).
//! A C free looks there only on its slow path.
//!
//! **A sampled allocation** (`alloc_due`) captures the stack with the
//! unwinder (`os::unwind`), with no allocator lock held and the thread's
//! countdown parked at its maximum, so an allocation the unwinder makes is
//! never sampled itself; the stack starts at the program's frame that
//! called the allocator: the unwinder leaves out the frames of this
//! module's slow path (known by their functions' start addresses) and,
//! above them, those of the allocator's entry points, learned once by
//! sampling through each entry (`learn_entries`): the entry the program
//! called, or the out-of-line slow path it jumped to, which calls this
//! module through `black_box` (never as a tail call that would drop its
//! frame). Where the entry was inlined into the program's function
//! (link-time optimisation), that function's frame is the first kept.
//! Then the object goes to a slot of its own (small) or is an ordinary page
//! run (large), and its record waits in `table` until it is freed.
//!
//! **Output**: the gperftools heap profile text format (`format`), written
//! by [`write()`], or pprof's protobuf format (`pprof`), written by
//! [`write_pprof`]; and at exit to `HUGEGUARD_PROF_PATH` when that is set
//! (protobuf if its name ends in `.pb`).

pub(crate) mod draw;
pub(crate) mod format;
mod out;
pub(crate) mod pprof;
pub(crate) mod table;

use crate::block::{self, Kind};
use crate::cache;
use crate::os::unwind;
use crate::report::ProfileSummary;
use crate::size_class::SizeClass;
use draw::{draw, draw_pops, thin};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

pub use draw::DEFAULT_INTERVAL;

/// The countdown a thread restarts from while profiling is off.
const OFF_COUNTDOWN: isize = 1 << 20;

static ON: AtomicBool = AtomicBool::new(false);
/// Whether the environment has been read (`HUGEGUARD_PROF*`).
static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// Turns heap profiling on: from now on allocations are sampled (each
/// thread's small ones from its next allocation, its large ones and
/// reallocations from its next MiB of them at the latest). `false` if the
/// memory for the samples could not be mapped (profiling stays off).
pub fn start() -> bool {
    configure();
    start_inner()
}

fn start_inner() -> bool {
    if !table::setup() {
        return false;
    }
    draw::seed(crate::os::linux::random_u64);
    // Before any sample can be taken: Rust frees check for samples.
    cache::set_sampled(table::region_base(), table::REGION_LEN);
    ON.store(true, Ordering::SeqCst);
    sync_caches();
    true
}

/// Tells the thread caches whether profiling is on (they count bytes only
/// then), until what they were told is still what holds: a concurrent
/// start or stop cannot leave them with the older state.
fn sync_caches() {
    loop {
        let on = ON.load(Ordering::SeqCst);
        cache::set_profiling(on);
        if ON.load(Ordering::SeqCst) == on {
            return;
        }
    }
}

/// Turns heap profiling off. Objects sampled so far stay in the profile
/// until they are freed.
pub fn stop() {
    configure();
    ON.store(false, Ordering::SeqCst);
    sync_caches();
}

/// Whether heap profiling is on.
pub fn is_on() -> bool {
    configure();
    ON.load(Ordering::Acquire)
}

/// Sets the mean sampling interval in bytes (at least 1). Threads draw with
/// it from their next sample on; a profile is exact for one interval, so set
/// it before [`start`].
pub fn set_interval(bytes: usize) {
    configure();
    draw::set_interval(bytes);
}

/// The mean sampling interval in bytes.
pub fn interval() -> usize {
    draw::interval()
}

/// Reads `HUGEGUARD_PROF` and `HUGEGUARD_PROF_INTERVAL` once (through the
/// allocator's configuration).
fn configure() {
    if CONFIGURED.load(Ordering::Acquire) {
        return;
    }
    let c = crate::config::get();
    if CONFIGURED.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(n) = c.prof_interval {
        draw::set_interval(n);
    }
    if c.prof && !start_inner() {
        crate::os::linux::write_stderr(
            b"hugeguard: HUGEGUARD_PROF=on, but the profile's memory could not be mapped; profiling stays off\n",
        );
    }
    // Off (or on) from now on: the caches stop counting while it is off.
    sync_caches();
    install_signal();
}

/// What the profile holds now (all zero if profiling never started).
pub fn summary() -> ProfileSummary {
    configure();
    let interval = interval();
    let c = table::counts();
    let (est, var) = table::estimate(interval);
    ProfileSummary {
        on: ON.load(Ordering::Acquire),
        interval,
        samples: c.live,
        sampled_bytes: c.live_bytes,
        samples_taken: c.taken,
        estimated_live_bytes: est as usize,
        estimate_error_bytes: var.sqrt() as usize,
        dropped: c.dropped,
        overhead_bytes: table::overhead_bytes(),
    }
}

/// How many objects of `size` bytes one sample stands for.
pub(crate) fn weight(size: usize, interval: usize) -> f64 {
    let p = 1.0 - (-(size.max(1) as f64) / interval as f64).exp();
    1.0 / p
}

/// Writes the heap profile to `path` (gperftools text format, with the
/// process's mappings, for `google-pprof --text PROGRAM PATH`).
///
/// Errors: profiling never started, another thread is writing a profile
/// (`WouldBlock`), the path is longer than 4 KiB or holds a NUL byte
/// (`InvalidInput`), or the file's own error.
pub fn write(path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    write_as(path.as_ref(), format::Format::Text)
}

/// Writes the heap profile to `path` in pprof's protobuf format
/// (uncompressed, unsymbolized, with the process's executable mappings),
/// for `go tool pprof PROGRAM PATH` and services that take pprof profiles.
/// Its values are estimates (the samples divided by the probability of
/// sampling each), under `inuse_objects` and `inuse_space`.
///
/// Errors: as for [`write()`].
pub fn write_pprof(path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    write_as(path.as_ref(), format::Format::Proto)
}

fn write_as(path: &std::path::Path, f: format::Format) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = CPath::new();
    let c = buf
        .set(path.as_os_str().as_bytes(), None)
        .ok_or(std::io::ErrorKind::InvalidInput)?;
    configure();
    match format::write_profile(c, f) {
        Ok(()) => Ok(()),
        Err(format::Error::NotStarted) => Err(std::io::Error::other("heap profiling never started")),
        Err(format::Error::Busy) => Err(std::io::ErrorKind::WouldBlock.into()),
        Err(format::Error::Os(e)) => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// Writes the profile to `HUGEGUARD_PROF_PATH` if that is set and
/// profiling ran (at exit; see `exit_hook`). Allocation-free.
pub(crate) fn write_at_exit() {
    if !CONFIGURED.load(Ordering::Acquire) {
        return;
    }
    let Some(path) = crate::config::get().prof_path else {
        return;
    };
    let mut buf = CPath::new();
    let Some(c) = buf.set(path, None) else {
        return;
    };
    if let Err(format::Error::Os(_)) = format::write_profile(c, format_for(c)) {
        crate::os::linux::write_stderr(b"hugeguard: could not write the heap profile to HUGEGUARD_PROF_PATH\n");
    }
}

/// A NUL-terminated file name built on the stack (no allocation): a path
/// of up to 4 KiB and, optionally, `.` and a number after it.
struct CPath([u8; 4097 + 21]);

impl CPath {
    fn new() -> Self {
        CPath([0; 4097 + 21])
    }

    /// `path`, then `.n` if given; `None` if `path` is too long or holds a
    /// NUL byte.
    fn set(&mut self, path: &[u8], n: Option<usize>) -> Option<&core::ffi::CStr> {
        if path.len() >= 4097 || path.contains(&0) {
            return None;
        }
        self.0.fill(0);
        self.0[..path.len()].copy_from_slice(path);
        if let Some(n) = n {
            self.0[path.len()] = b'.';
            crate::config::write_decimal(&mut self.0[path.len() + 1..], n);
        }
        core::ffi::CStr::from_bytes_until_nul(&self.0).ok()
    }
}

/// The format of a profile written to `HUGEGUARD_PROF_PATH`: protobuf
/// where the name ends in `.pb`, else text.
fn format_for(path: &core::ffi::CStr) -> format::Format {
    if pprof::wants_proto(path) {
        format::Format::Proto
    } else {
        format::Format::Text
    }
}

/// Signals that asked for a profile and have not been answered yet.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
/// Profiles written on a signal so far (the files' sequence numbers).
static WRITTEN: AtomicUsize = AtomicUsize::new(0);

/// `HUGEGUARD_PROF_SIGNAL`'s handler: asks for a profile and wakes the
/// background thread, which writes it (as does the next sampled
/// allocation): a handler can take no lock.
extern "C" fn on_signal(_: core::ffi::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
    crate::doorbell::wake();
}

/// Installs [`on_signal`] for `HUGEGUARD_PROF_SIGNAL`, once, where
/// `HUGEGUARD_PROF_PATH` says where its profiles go.
fn install_signal() {
    let c = crate::config::get();
    let Some(sig) = c.prof_signal else {
        return;
    };
    if c.prof_path.is_none() {
        crate::os::linux::write_stderr(
            b"hugeguard: HUGEGUARD_PROF_SIGNAL needs HUGEGUARD_PROF_PATH (where the profiles go); no handler installed\n",
        );
    } else if !crate::os::linux::install_signal_handler(sig, on_signal) {
        crate::os::linux::write_stderr(b"hugeguard: HUGEGUARD_PROF_SIGNAL: the signal handler could not be installed\n");
    }
}

/// Writes the profile a signal asked for, if one did: to
/// `HUGEGUARD_PROF_PATH` with `.1`, `.2`, ... appended (one file per
/// answered request; signals that came together share one). Called by the
/// background thread when it wakes and by sampled allocations, with no
/// allocator lock held. Allocation-free.
pub(crate) fn write_pending() {
    if SIGNALS.load(Ordering::Relaxed) == 0 || SIGNALS.swap(0, Ordering::Acquire) == 0 {
        return;
    }
    let Some(path) = crate::config::get().prof_path else {
        return;
    };
    let n = WRITTEN.fetch_add(1, Ordering::Relaxed) + 1;
    let mut buf = CPath::new();
    let Some(c) = buf.set(path, Some(n)) else {
        return;
    };
    match format::write_profile(c, format_for(c)) {
        Ok(()) => {}
        // Another writer is busy: ask again.
        Err(format::Error::Busy) => {
            WRITTEN.fetch_sub(1, Ordering::Relaxed);
            SIGNALS.fetch_add(1, Ordering::Relaxed);
        }
        Err(format::Error::NotStarted) => crate::os::linux::write_stderr(
            b"hugeguard: a signal asked for a heap profile, but profiling never started\n",
        ),
        Err(format::Error::Os(_)) => {
            crate::os::linux::write_stderr(b"hugeguard: could not write the heap profile a signal asked for\n")
        }
    }
}

/// Runs [`write_at_exit`] when the program exits (the C library runs the
/// `.fini_array` entries of the executable and of each library).
extern "C" fn exit_hook() {
    write_at_exit();
}

#[used]
#[link_section = ".fini_array"]
static EXIT_HOOK: extern "C" fn() = exit_hook;

/// Decides whether the allocation whose byte countdown ran out is sampled,
/// and sets the thread's next countdown.
fn rearm() -> bool {
    configure();
    if cache::take_forced() {
        cache::set_sample_countdown(draw(interval()), true);
        return true;
    }
    if !ON.load(Ordering::Acquire) {
        cache::set_sample_countdown(OFF_COUNTDOWN, false);
        return false;
    }
    let was_armed = cache::set_sample_countdown(draw(interval()), true);
    // A countdown set while profiling was off is not a fair draw.
    was_armed
}

/// Decides whether the small allocation whose class countdown ran out
/// (`cache::pop_counted`) is sampled, and sets the class's next
/// countdown. A fair countdown's end is a candidate, sampled after
/// [`thin`]; a placeholder's end is an ordinary trial (drawn now).
fn rearm_class(class: SizeClass, size: usize) -> bool {
    configure();
    let c = class.index();
    if !ON.load(Ordering::Acquire) {
        cache::set_class_countdown(c, draw::MAX_POPS, true);
        return false;
    }
    let (interval, class_size) = (interval(), class.size());
    let forced = cache::take_forced();
    // Inside the stack capture (the byte countdown parked): never a sample.
    let capturing = cache::sample_countdown() > isize::MAX / 2;
    let (mut pops, mut cut) = draw_pops(class_size, interval);
    let candidate = if cache::class_countdown_is_placeholder(c) {
        // This allocation is the first trial of the draw.
        if pops == 0 {
            (pops, cut) = draw_pops(class_size, interval);
            true
        } else {
            pops -= 1;
            false
        }
    } else {
        true
    };
    cache::set_class_countdown(c, pops, cut);
    forced || (candidate && !capturing && thin(size, class_size, interval))
}

/// The cold path of an allocation whose countdown ran out (its class's for
/// a small one, the thread's byte countdown for a large one): samples it if
/// profiling is on and it is drawn, else allocates it as usual. Called (not
/// jumped to: the stack capture leaves out this function's frames and the
/// one above) by the allocator entry the program called.
#[cold]
#[inline(never)]
pub(crate) fn alloc_due(size: usize, align: usize, zero: bool) -> *mut u8 {
    write_pending();
    let sampled = match Kind::of(size, align) {
        Kind::Small(class) => rearm_class(class, size),
        _ => rearm(),
    };
    if !sampled {
        return block::alloc(size, align, zero);
    }
    sampled_alloc(size, align, zero)
}

/// Allocates a block that is sampled: with its stack, in a slot of its own
/// if small (an ordinary block if the table is full). Inlined into the two
/// functions whose frames the stack capture looks for.
#[inline(always)]
fn sampled_alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    if LEARN_STATE.load(Ordering::Acquire) == LEARN_NOT_YET {
        learn_entries();
    }
    let mut stack = [0usize; table::DEPTH];
    let depth = capture(&mut stack);
    let stack = &stack[..depth];
    match Kind::of(size, align) {
        Kind::Small(class) => {
            let p = table::take_small(size, class.size(), zero, stack);
            if p.is_null() {
                // Table full: an ordinary object.
                return block::alloc(size, align, zero);
            }
            p
        }
        _ => {
            let p = block::alloc(size, align, zero);
            if !p.is_null() {
                table::add_large(p, size, block::usable_size(p, Kind::Large), stack);
            }
            p
        }
    }
}

/// `realloc` whose countdown ran out: resized as usual (in place where it
/// can be) unless the new block is sampled; then it is allocated as
/// [`alloc_due`] does, the data copied, the old block freed. Called, not
/// jumped to, as [`alloc_due`].
///
/// # Safety
/// As for `block::resize`.
#[cold]
#[inline(never)]
pub(crate) unsafe fn realloc_due(
    p: *mut u8,
    kind: Kind,
    old_size: usize,
    new_size: usize,
    align: usize,
) -> *mut u8 {
    write_pending();
    if !rearm() {
        // SAFETY: forwarded from the caller.
        return unsafe { block::resize(p, kind, old_size, new_size, align) };
    }
    let q = sampled_alloc(new_size, align, false);
    if q.is_null() {
        return q;
    }
    // SAFETY: `p` holds `old_size` bytes of data, `q` at least `new_size`;
    // distinct live blocks.
    unsafe {
        ptr::copy_nonoverlapping(p, q, old_size.min(new_size));
        block::free(p, kind);
    }
    q
}

/// Captures the stack above the allocator entry into `out`, with the
/// thread's countdown parked so that an allocation inside the unwinder is
/// not sampled (and cannot recurse); puts the countdown back after.
fn capture(out: &mut [usize]) -> usize {
    let next = cache::sample_countdown();
    cache::set_sample_countdown(isize::MAX, true);
    // The slow path's own functions: frames up to theirs are the
    // allocator's, and above them the entry frames learned at start.
    let marks = [
        alloc_due as fn(usize, usize, bool) -> *mut u8 as usize,
        realloc_due as unsafe fn(*mut u8, Kind, usize, usize, usize) -> *mut u8 as usize,
    ];
    let n = if LEARNER.load(Ordering::Relaxed) == cache::thread_key() {
        let mut learned = [0usize; 4];
        let mut entry = unwind::Entry::Learn {
            until: LEARN_UNTIL.load(Ordering::Relaxed),
            learned: &mut learned,
            count: 0,
        };
        let n = unwind::backtrace(&marks, &mut entry, out);
        if let unwind::Entry::Learn { count, .. } = entry {
            for &start in &learned[..count.min(learned.len())] {
                add_entry(start);
            }
        }
        n
    } else {
        let known = ENTRIES_LEN.load(Ordering::Acquire);
        let mut entries = [0usize; MAX_ENTRIES];
        for (e, slot) in entries.iter_mut().zip(&ENTRIES[..known]) {
            *e = slot.load(Ordering::Relaxed);
        }
        unwind::backtrace(&marks, &mut unwind::Entry::Skip(&entries[..known]), out)
    };
    cache::set_sample_countdown(next, true);
    n
}

/// Functions that are allocator entry points (their start addresses):
/// the Rust global allocator's shims (`__rust_alloc` and its kin, which the
/// compiler generates in the program and which inline `HugeGuard`'s
/// methods) and, under the `LD_PRELOAD` library, the C functions. Learned
/// once, by [`learn_entries`]; a frame of one of these above the slow path
/// is not the program's.
const MAX_ENTRIES: usize = 32;
static ENTRIES: [AtomicUsize; MAX_ENTRIES] = [const { AtomicUsize::new(0) }; MAX_ENTRIES];
static ENTRIES_LEN: AtomicUsize = AtomicUsize::new(0);
/// The thread learning entries (`cache::thread_key`), 0 when none.
static LEARNER: AtomicUsize = AtomicUsize::new(0);
/// The probe function that ends the entry frames while learning.
static LEARN_UNTIL: AtomicUsize = AtomicUsize::new(0);
const LEARN_NOT_YET: u8 = 0;
const LEARN_BUSY: u8 = 1;
const LEARN_DONE: u8 = 2;
static LEARN_STATE: AtomicU8 = AtomicU8::new(LEARN_NOT_YET);

fn add_entry(start: usize) {
    let n = ENTRIES_LEN.load(Ordering::Relaxed);
    if start == 0 || n == MAX_ENTRIES || ENTRIES[..n].iter().any(|e| e.load(Ordering::Relaxed) == start) {
        return;
    }
    ENTRIES[n].store(start, Ordering::Relaxed);
    ENTRIES_LEN.store(n + 1, Ordering::Release);
}

/// Learns the entry functions, once: allocates through each entry with the
/// countdown at zero, so each allocation is sampled, and records the frames
/// between the slow path and the probe that allocated (none where the entry
/// was inlined into the probe). The probes' samples are freed at once.
/// Runs on the thread that first samples, inside `alloc_due` (no allocator
/// lock held, so the probes may allocate).
fn learn_entries() {
    if LEARN_STATE
        .compare_exchange(LEARN_NOT_YET, LEARN_BUSY, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let next = cache::sample_countdown();
    LEARNER.store(cache::thread_key(), Ordering::Relaxed);
    LEARN_UNTIL.store(probe_rust_entries as fn() as usize, Ordering::Relaxed);
    probe_rust_entries();
    LEARN_UNTIL.store(unwind::call_c_allocator as fn(&dyn Fn()) as usize, Ordering::Relaxed);
    // Each C call is its own sample.
    unwind::call_c_allocator(&|| {
        cache::force_sample();
    });
    LEARNER.store(0, Ordering::Relaxed);
    // The fast walk stays on only where it finds what libgcc finds.
    unwind::check_fast_walk();
    cache::set_sample_countdown(next, true);
    LEARN_STATE.store(LEARN_DONE, Ordering::Release);
}

/// Allocates, grows and frees through the Rust global allocator's shims,
/// each with the countdown at zero (see [`learn_entries`]).
#[inline(never)]
fn probe_rust_entries() {
    use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
    let l = Layout::from_size_align(64, 8).expect("a valid layout");
    // SAFETY: non-zero layouts; each block freed once with its layout.
    unsafe {
        cache::force_sample();
        let p = alloc(l);
        if !p.is_null() {
            cache::force_sample();
            let q = realloc(p, l, 128);
            let (q, ql) = if q.is_null() { (p, l) } else { (q, Layout::from_size_align(128, 8).expect("a valid layout")) };
            dealloc(q, ql);
        }
        cache::force_sample();
        let z = alloc_zeroed(l);
        if !z.is_null() {
            dealloc(z, l);
        }
        // A large block takes the entry's other slow path.
        let big = Layout::from_size_align(64 * 1024, 8).expect("a valid layout");
        cache::force_sample();
        let b = alloc(big);
        if !b.is_null() {
            dealloc(b, big);
        }
    }
    core::hint::black_box(());
}

/// Whether `p` lies in the small sampled objects' region.
#[inline(always)]
pub(crate) fn holds(p: *mut u8) -> bool {
    table::holds(p)
}

/// The kind of a block the caller says was allocated with `(size, align)`:
/// that layout's kind, unless the block is a sampled small object.
#[inline]
pub(crate) fn kind_of_block(p: *mut u8, size: usize, align: usize) -> Kind {
    if holds(p) {
        Kind::Sampled
    } else {
        Kind::of(size, align)
    }
}
