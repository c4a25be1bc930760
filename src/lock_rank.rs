//! The allocator's lock order, as data: every lock has a [`Rank`], declared
//! once here, and a thread takes locks only in increasing rank (locks of one
//! rank, the central lists, in increasing address: class order). Debug
//! builds check it on every acquire and abort with both ranks named on a
//! violation (Go's `lockrank.go` is the model); release builds carry
//! nothing: the rank is not even stored.
//!
//! The order, lowest first:
//!
//! | rank | lock | held while taking |
//! |---|---|---|
//! | `Work` | the background thread's round (`background::thread::WORK`) | everything a round takes |
//! | `CollapseBackoff` | collapse back-off | the heap |
//! | `Mesh` | the mesh table | central lists, the heap |
//! | `Registry` | the thread-cache registry | central lists, the heap |
//! | `Central` | one central list per class | higher classes' lists (fork, checks), the heap |
//! | `Heap` | the page heap | the heap profile's table (fork only) |
//! | `Profile` | the heap profile's table (`profile::table`) | nothing |
//!
//! `fork`'s prepare handler takes them in this order (mesh, registry, every
//! central list, heap, profile), so it follows the same table.

// Release builds keep the table but check nothing.
#![cfg_attr(not(debug_assertions), allow(dead_code))]

/// A lock's place in the lock order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Rank {
    /// The background thread's round of work, held across the whole round.
    Work,
    /// The collapse back-off, held across collapse steps.
    CollapseBackoff,
    /// The mesh table: meshing rounds take lists and the heap under it.
    Mesh,
    /// The thread-cache registry: a reclaim gives cached objects back to
    /// the central lists under it.
    Registry,
    /// A central list; several are held at once only in class order.
    Central,
    /// The page heap (and the locks of unit tests).
    Heap,
    /// The heap profile's table: taken with no other allocator lock held,
    /// except by `fork`'s prepare handler.
    Profile,
}

/// Locks held by one thread, in the order taken (so in increasing rank).
#[derive(Debug)]
pub(crate) struct Held {
    len: usize,
    locks: [(Rank, usize); MAX_HELD],
}

/// Locks one thread may hold at once (checks hold every central list and
/// the heap).
const MAX_HELD: usize = 64;

/// Why an acquire breaks the order: what is held on top, what is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) held: Rank,
    pub(crate) wanted: Rank,
}

impl Held {
    pub(crate) const fn new() -> Self {
        Held {
            len: 0,
            locks: [(Rank::Work, 0); MAX_HELD],
        }
    }

    /// Records taking the lock at `addr` of `rank`; an error if a lock held
    /// ranks above it (or is of its rank at a higher or equal address).
    /// The stack stays ordered, so its top is the highest held.
    pub(crate) fn acquire(&mut self, rank: Rank, addr: usize) -> Result<(), Violation> {
        if let Some(&(top, top_addr)) = self.locks[..self.len].last() {
            if (rank, addr) <= (top, top_addr) {
                return Err(Violation {
                    held: top,
                    wanted: rank,
                });
            }
        }
        if self.len < MAX_HELD {
            self.locks[self.len] = (rank, addr);
            self.len += 1;
        }
        Ok(())
    }

    /// Records releasing the lock at `addr` (in any order). A lock this
    /// thread did not record (a forked child resetting its parent's
    /// background locks) is ignored.
    pub(crate) fn release(&mut self, addr: usize) {
        if let Some(i) = self.locks[..self.len].iter().rposition(|l| l.1 == addr) {
            self.locks.copy_within(i + 1..self.len, i);
            self.len -= 1;
        }
    }
}

/// The calling thread's held locks (debug builds).
#[cfg(debug_assertions)]
mod this_thread {
    use super::{Held, Rank};
    use core::cell::UnsafeCell;

    std::thread_local! {
        // A plain array with a constant initialiser and no destructor: the
        // access never allocates, also while the thread exits.
        static HELD: UnsafeCell<Held> = const { UnsafeCell::new(Held::new()) };
    }

    fn with<R>(f: impl FnOnce(&mut Held) -> R) -> R {
        // SAFETY: the cell belongs to this thread, and `f` (the rank
        // bookkeeping) takes no lock and does not reenter.
        HELD.with(|h| f(unsafe { &mut *h.get() }))
    }

    /// Checks and records an acquire; aborts on a violation.
    pub(crate) fn acquire(rank: Rank, addr: usize) {
        if let Err(v) = with(|h| h.acquire(rank, addr)) {
            crate::os::linux::write_stderr(b"hugeguard: lock order violated: holding ");
            crate::os::linux::write_stderr(name(v.held));
            crate::os::linux::write_stderr(b", taking ");
            crate::os::linux::write_stderr(name(v.wanted));
            crate::os::linux::abort_with(b"\n");
        }
    }

    /// Records a release.
    pub(crate) fn release(addr: usize) {
        with(|h| h.release(addr));
    }

    fn name(r: Rank) -> &'static [u8] {
        match r {
            Rank::Work => b"Work",
            Rank::CollapseBackoff => b"CollapseBackoff",
            Rank::Mesh => b"Mesh",
            Rank::Registry => b"Registry",
            Rank::Central => b"Central",
            Rank::Heap => b"Heap",
            Rank::Profile => b"Profile",
        }
    }
}

#[cfg(debug_assertions)]
pub(crate) use this_thread::{acquire, release};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_only_increase() {
        let mut h = Held::new();
        assert_eq!(h.acquire(Rank::Work, 10), Ok(()));
        assert_eq!(h.acquire(Rank::Central, 100), Ok(()));
        assert_eq!(
            h.acquire(Rank::Mesh, 5),
            Err(Violation {
                held: Rank::Central,
                wanted: Rank::Mesh
            })
        );
        assert_eq!(h.acquire(Rank::Heap, 1), Ok(()));
        h.release(1);
        h.release(100);
        assert_eq!(h.acquire(Rank::Mesh, 5), Ok(()), "after releases");
    }

    #[test]
    fn one_rank_goes_up_by_address_and_never_twice() {
        let mut h = Held::new();
        assert_eq!(h.acquire(Rank::Central, 100), Ok(()));
        assert_eq!(h.acquire(Rank::Central, 200), Ok(()));
        assert!(h.acquire(Rank::Central, 150).is_err(), "a lower class");
        assert!(h.acquire(Rank::Central, 200).is_err(), "the same lock");
        // Released out of order, the rest keeps its order.
        h.release(100);
        assert!(h.acquire(Rank::Central, 150).is_err(), "200 still held");
        h.release(200);
        assert_eq!(h.acquire(Rank::Central, 150), Ok(()));
    }

    #[test]
    fn a_lock_not_recorded_is_ignored_on_release() {
        let mut h = Held::new();
        h.acquire(Rank::Heap, 1).unwrap();
        h.release(999);
        assert!(h.acquire(Rank::Central, 2).is_err(), "heap still held");
    }
}
