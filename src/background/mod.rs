//! The background release: a thread that gives memory back while the
//! program is idle, in three rooms.
//!
//! * [`control`]: the public controls (`set_background`, `release_now`,
//!   `mesh_now`) and the thread's running state.
//! * [`driver`]: one release pass, and dense huge pages regaining their
//!   huge page (rate-limited `MADV_COLLAPSE` with back-off).
//! * [`thread`]: the thread's life: start, rounds, waits, liveness, fork.
//!
//! The allocator's hot and slow paths never import this module: they ring
//! [`crate::doorbell`], a leaf. The hooks register [`thread::start`] with
//! the doorbell and forward the fork child's reset here.

mod control;
mod driver;
mod thread;

pub use control::{background_running, mesh_now, release_now, set_background};
pub(crate) use thread::{after_fork_child, start};

/// Memory pressure events that ended the background thread's sleep.
pub(crate) fn pressure_events() -> u64 {
    thread::PRESSURE_EVENTS.load(core::sync::atomic::Ordering::Relaxed)
}
