//! The free-list codec: how a free object sitting in a thread cache or a
//! transfer batch links to the next one through its first word, and how
//! hardened mode encodes that word (`harden` sets the keys; with none set
//! the encoding is the identity, so the thread cache's fast path may read
//! links raw). A leaf: it imports nothing from the crate, so the data floor
//! (spans, central lists, the page heap) can use it without reaching up.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static ON: AtomicBool = AtomicBool::new(false);
static K0: AtomicUsize = AtomicUsize::new(0);
static K1: AtomicUsize = AtomicUsize::new(0);

/// Turns hardened mode's encoding on with keys `k0` and `k1` (random).
/// Called once, while the configuration loads, before any object is linked.
pub(crate) fn set_keys(k0: usize, k1: usize) {
    // k0's low bit set: the rotation (k0 & 63) is odd, never zero, so no
    // key pair makes the encoding the identity.
    let k0 = k0 | 1;
    K0.store(k0, Ordering::Relaxed);
    K1.store(k1, Ordering::Relaxed);
    ON.store(true, Ordering::Release);
}

/// Whether links are encoded with keys (hardened mode).
#[inline]
pub(crate) fn keyed() -> bool {
    ON.load(Ordering::Acquire)
}

/// A free object while it sits in a thread cache or transfer batch: its first
/// word links to the next one. (Spans do not use this link.)
#[repr(C)]
pub struct FreeObject {
    /// The link to the next free object, encoded ([`Links`]); read
    /// and write it through [`FreeObject::next_of`] and
    /// [`FreeObject::set_next`] (only the thread cache's fast path, which
    /// never runs in hardened mode, reads it raw).
    pub next: *mut FreeObject,
}

impl FreeObject {
    /// The next object on `obj`'s list, its link stored as `links` says.
    ///
    /// # Safety
    /// `obj` is a free object on a list (its first word is a link).
    #[inline(always)]
    pub unsafe fn next_of(obj: *mut FreeObject, links: Links) -> *mut FreeObject {
        // SAFETY: forwarded from the caller.
        links.decode(unsafe { (*obj).next })
    }

    /// Links free object `obj` to `next`, stored as `links` says.
    ///
    /// # Safety
    /// `obj` is a free object of at least 8 bytes that the caller owns.
    #[inline(always)]
    pub unsafe fn set_next(obj: *mut FreeObject, next: *mut FreeObject, links: Links) {
        // SAFETY: forwarded from the caller.
        unsafe { (*obj).next = links.encode(next) };
    }
}

/// How links are stored, read once per batch of link operations (so a loop
/// that walks a list keeps the keys in registers, and the default mode's
/// links are plain loads and stores, with no arithmetic on the path from
/// one object to the next).
#[derive(Clone, Copy)]
pub(crate) struct Links {
    on: bool,
    k0: usize,
    k1: usize,
}

impl Links {
    /// The current encoding: identity until hardened mode sets keys (which
    /// it does while the configuration loads, before any object is linked;
    /// `harden::links` makes sure of that first).
    #[inline(always)]
    pub(crate) fn current() -> Links {
        Links {
            on: ON.load(Ordering::Relaxed),
            k0: K0.load(Ordering::Relaxed),
            k1: K1.load(Ordering::Relaxed),
        }
    }

    /// An encoding with keys `k0` (its low bit set) and `k1`.
    #[cfg(test)]
    pub(crate) fn keyed(k0: usize, k1: usize) -> Links {
        Links { on: true, k0, k1 }
    }

    /// Whether this is hardened mode's encoding (links checked as well).
    #[inline(always)]
    pub(crate) fn hardened(self) -> bool {
        self.on
    }

    /// The stored word for a link to `next`.
    #[inline(always)]
    pub(crate) fn encode(self, next: *mut FreeObject) -> *mut FreeObject {
        if !self.on {
            return next;
        }
        ((next as usize ^ self.k1)
            .rotate_left(self.k0 as u32 & 63)
            .wrapping_add(self.k0)) as *mut FreeObject
    }

    /// The link a stored word stands for.
    #[inline(always)]
    pub(crate) fn decode(self, word: *mut FreeObject) -> *mut FreeObject {
        if !self.on {
            return word;
        }
        ((word as usize)
            .wrapping_sub(self.k0)
            .rotate_right(self.k0 as u32 & 63)
            ^ self.k1) as *mut FreeObject
    }
}
