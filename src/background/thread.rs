//! The background thread's life: its start (registered with the doorbell),
//! its loop of rounds (idle caches, a release pass, collapses, meshing),
//! how long it waits between rounds, and its end.
//!
//! The thread starts lazily from an allocation slow path with no lock
//! held, through [`crate::doorbell::maybe_start`]. While memory is held
//! back it runs a pass every half hold-back (at least [`TICK_MS`]); while
//! dense huge pages wait for collapse, every [`TICK_MS`]; over the soft
//! memory limit, ten times as often; while it sleeps with memory held back
//! it also watches the kernel's memory pressure (`os::pressure`) and runs a
//! pass without the hold-back when that fires; otherwise it parks on the doorbell
//! until an allocator slow path frees memory (one wake-up system call per
//! park, never on the fast path). After `fork` the child starts its own
//! thread when it next needs one.
//!
//! The thread never keeps the process alive. It looks whether any other
//! thread of the process still lives (`/proc/self/stat`) at once when an
//! ending thread's exit hook says so, and otherwise at most once per
//! [`LIVENESS_MS`], no wait lasting longer, except while the program's
//! initial thread lives with its exit hook armed: that thread's end rings
//! the doorbell (`doorbell::quiet`), so an idle process sees one wake-up
//! per [`QUIET_PARK_MS`].
//! When none does, it returns from its start routine; glibc (and musl) end
//! the process with status 0 when the last thread ends, as POSIX says for a
//! program whose last thread called `pthread_exit`. Without this, a program
//! whose threads all end that way would live on with only this thread,
//! which blocks every signal, so not even SIGTERM could end it.

use super::driver::{
    over_limit, regain_huge_pages, release_pass, resident_estimate, HoldbackStretch,
    COLLAPSE_BACKOFF,
};
use crate::config::{self, Mode};
use crate::doorbell;
use crate::global;
use crate::lock::SpinLock;
use crate::lock_rank::Rank;
use crate::os::linux;
use crate::os::pressure as os_pressure;
use crate::units::PAGE_SIZE;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Period of the background thread while work is pending.
pub const TICK_MS: u64 = 100;
/// Longest park before the thread runs a pass on its own, while quiet (an
/// idle process then sees one wake-up per park) and otherwise (it wakes
/// every [`LIVENESS_MS`] anyway).
const QUIET_PARK_MS: u64 = 10_000;
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

/// Memory pressure events that ended a sleep (`Stats::pressure_events`).
pub(super) static PRESSURE_EVENTS: AtomicU64 = AtomicU64::new(0);

/// Whether the background thread may work (API switch).
pub(super) static ENABLED: AtomicBool = AtomicBool::new(true);
/// Held by the background thread for each round of work (cache scan,
/// release pass, collapses), so that `set_background(false)` can wait for a
/// round under way to end.
pub(super) static WORK: SpinLock<()> = SpinLock::new(Rank::Work, ());

/// The doorbell's starter: spawns the thread if the configuration wants
/// one and no other caller claimed the start.
pub(crate) fn start() {
    let cfg = config::get();
    if !cfg.background || cfg.mode == Mode::Off {
        doorbell::set_state(doorbell::FAILED);
        return;
    }
    if doorbell::claim_start() && !linux::spawn_detached(background_main) {
        doorbell::set_state(doorbell::FAILED);
    }
}

/// In a forked child: no background thread exists there.
pub(crate) fn after_fork_child() {
    doorbell::after_fork_child();
    os_pressure::after_fork_child();
    // Only the parent's background thread takes the back-off and work
    // locks, and it does not exist here: release them in case the fork
    // caught them held.
    // SAFETY: no thread of the child holds or will use a guard of them.
    unsafe {
        COLLAPSE_BACKOFF.unlock_raw();
        WORK.unlock_raw();
    }
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
    // The kernel reported memory pressure during the last wait.
    let mut pressure = false;
    // The last wait was only for a stash left in an idle thread's cache.
    let mut stash_poll = false;
    // The hold-back, stretched while the program takes back what was
    // released.
    let mut stretch = HoldbackStretch::new();
    loop {
        let cfg = config::get();
        crate::soft_limit::refresh();
        let limit = crate::soft_limit::get();
        let work = WORK.lock();
        doorbell::clear_freed();
        let park_ms = if doorbell::quiet() {
            QUIET_PARK_MS
        } else {
            PARK_MS
        };
        let wait = if !ENABLED.load(Ordering::Relaxed) {
            Wait::Park(park_ms)
        } else {
            let now = linux::now_ms();
            if pressure || now.saturating_sub(scanned_at) >= CACHE_SCAN_MS {
                scanned_at = now;
                // Objects of idle threads go back to their central lists
                // first, so this pass and the next can release what they
                // pinned.
                crate::cache::reclaim(if stash_poll {
                    crate::cache::Reclaim::IdleStashes
                } else {
                    crate::cache::Reclaim::Idle
                });
            }
            stash_poll = false;
            // A class that needed new spans while some were frozen for
            // meshing gets them back first (mesh mode; also while busy).
            crate::mesh::thaw_requested();
            // Under the kernel's memory pressure, held-back memory goes now.
            stretch.observe(resident_estimate());
            let holdback = stretch.holdback(cfg.holdback_ms);
            let r = release_pass(pressure, holdback);
            stretch.passed(r.released_pages * PAGE_SIZE, resident_estimate());
            pressure = false;
            let more_dense = regain_huge_pages(global::release_clock(), holdback);
            // Idle and released: mesh mode merges sparse units now, round
            // after round while they mesh something and nothing is freed.
            let mut meshed = false;
            if !r.pending && !doorbell::freed() {
                for _ in 0..MESH_ROUNDS {
                    let m = crate::mesh::round();
                    meshed |= m.meshed_units + m.unmeshed_units != 0;
                    if m.meshed_units == 0 || doorbell::freed() {
                        break;
                    }
                }
            }
            if over_limit(limit) && (r.released_pages != 0 || r.pending) {
                // Over the soft limit and still giving back: go on at once.
                // (Once a pass finds nothing to give, only a free can change
                // that, and a free rings the doorbell: park below.)
                Wait::Sleep(TICK_MS / 10)
            } else if more_dense {
                Wait::Sleep(TICK_MS)
            } else if r.pending || doorbell::freed() {
                // Memory is held back: nothing can go before the hold-back
                // has passed, so look again at half of it (a busy program's
                // locks are not disturbed more often than that).
                Wait::Sleep((holdback as u64 / 2).max(TICK_MS))
            } else if meshed {
                Wait::Sleep(TICK_MS)
            } else if crate::cache::stash_to_reclaim() {
                // A thread keeps a stash: look again within a scan's
                // time, when its thread may be idle (that scan takes only
                // stashes).
                stash_poll = true;
                Wait::Park(CACHE_SCAN_MS)
            } else {
                Wait::Park(park_ms)
            }
        };
        drop(work);
        if !wait_alive(wait, limit, &mut liveness, &mut pressure) {
            break;
        }
    }
    // The last thread: end it, and with it the process (the C library exits
    // with status 0 when its last thread returns). Should anything still run
    // after all, the next slow path starts a new background thread.
    doorbell::set_state(doorbell::NONE);
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
        if doorbell::take_thread_ending() {
            self.checked_at = linux::now_ms();
            return alone_once_ending_thread_left();
        }
        if doorbell::quiet() {
            // The initial thread lives: not alone.
            return false;
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

/// Waits as `wait` says, in slices of at most [`LIVENESS_MS`] (none while
/// quiet), checking between slices whether the background thread has
/// become the last thread. Under a soft `limit`, a sleep (the program is
/// busy freeing) is cut into [`TICK_MS`] slices and ends early when the
/// heap goes over the limit, or is over it and something was freed since:
/// memory goes back at once. A park is not cut: a parked thread is rung by
/// every free, and without frees there is nothing more to give back,
/// however high the heap stands (an idle process stays quiet under a
/// limit). A sleep also ends when the kernel reports memory pressure
/// (`os::pressure`, with `pressure` set); it then polls the trigger in
/// slices of at most [`LIVENESS_MS`] (the doorbell's futex cannot wake a
/// poll). Returns `false` when the thread must end, `true` when it is
/// time for the next pass.
fn wait_alive(wait: Wait, limit: usize, liveness: &mut Liveness, pressure: &mut bool) -> bool {
    let (total, park) = match wait {
        Wait::Sleep(ms) => (ms, false),
        Wait::Park(ms) => (ms, true),
    };
    let watch = limit != 0 && !park;
    let mut psi = !park && config::get().pressure;
    let was_over = watch && over_limit(limit);
    let start = linux::now_ms();
    loop {
        let elapsed = linux::now_ms().saturating_sub(start);
        if elapsed >= total {
            return true;
        }
        let mut slice = total - elapsed;
        if !doorbell::quiet() {
            slice = slice.min(LIVENESS_MS);
        }
        if watch {
            slice = slice.min(TICK_MS);
        }
        if psi {
            match os_pressure::wait(slice.min(LIVENESS_MS)) {
                os_pressure::Waited::Pressure => {
                    PRESSURE_EVENTS.fetch_add(1, Ordering::Relaxed);
                    *pressure = true;
                    return !liveness.alone();
                }
                os_pressure::Waited::Timeout => {}
                os_pressure::Waited::NoWatch => psi = false,
            }
        }
        if !psi {
            doorbell::wait(slice, park);
        }
        if liveness.alone() {
            return false;
        }
        // The heap profile's signal came (it rang the doorbell).
        crate::profile::write_pending();
        if park && doorbell::freed() {
            return true;
        }
        if watch && over_limit(limit) && (!was_over || doorbell::freed()) {
            return true;
        }
    }
}
