//! Hardened mode (`HUGEGUARD_HARDEN=1`; on by default in builds with debug
//! assertions, off with `HUGEGUARD_HARDEN=0`): the checks a C library's
//! secure mode makes, paid for only when asked.
//!
//! * **Encoded links.** A free object's first word links it to the next
//!   free object of its list. In hardened mode that word holds
//!   `rotl(next ^ k1, k0) + k0` with two random keys, so a use-after-free
//!   write cannot name an address the allocator will later hand out: it
//!   decodes to a random value, which the next allocation from that list
//!   rejects (see [`plausible_link`]), dropping the rest of the list with a
//!   one-line report instead of following it. With both keys zero (the
//!   default mode) the encoding is the identity, so code that reads links
//!   raw (the thread cache's fast path, which hardened mode never runs) and
//!   code that decodes agree.
//! * **Every free checked.** Thread caches take the slow path for every
//!   operation (`cache.rs`: the cache's `fast` flag stays clear). A free
//!   looks its pointer up in the page map (it must be an object start of
//!   the class its `Layout` or size says: a foreign or interior pointer is
//!   refused) and reads the object's first word: if it decodes to a
//!   plausible link, the object is already on a free list (a thread cache,
//!   a transfer batch, or its span after a flush), and the free is a double
//!   free. A live object never holds a plausible link by chance: an
//!   allocation clears the word, and what a program writes there decodes
//!   to a plausible link only if it knows the keys (or wrote the value the
//!   allocator wrote, which is a use after free).
//!
//! Misuse is reported in one line; the C library then aborts, the Rust
//! allocator ignores the free (as for misuse detected at the span).

use crate::size_class::SizeClass;
use crate::span::FreeObject;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static ON: AtomicBool = AtomicBool::new(false);
static K0: AtomicUsize = AtomicUsize::new(0);
static K1: AtomicUsize = AtomicUsize::new(0);

/// Turns hardened mode on with fresh keys. Called once, while the
/// configuration loads, before any object is linked.
pub(crate) fn enable() {
    let (a, b) = (
        crate::os::linux::random_u64(),
        crate::os::linux::random_u64(),
    );
    // k0's low bit set: the rotation (k0 & 63) is odd, never zero, so no
    // key pair makes the encoding the identity.
    K0.store((a as usize) | 1, Ordering::Relaxed);
    K1.store(b as usize, Ordering::Relaxed);
    ON.store(true, Ordering::Release);
}

/// Whether hardened mode is on (fixed once the configuration is loaded,
/// which happens before the heap exists and so before any object is freed).
#[inline]
pub(crate) fn enabled() -> bool {
    ON.load(Ordering::Acquire)
}

/// [`enabled`], loading the configuration first if no thread has: for a
/// thread cache deciding whether it may use the fast path, which can come
/// before the heap exists.
pub(crate) fn active() -> bool {
    crate::config::get_loaded();
    enabled()
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
    /// The current encoding. Loads the configuration first if no thread
    /// has (it decides the mode, and the mode must not change between a
    /// link's store and its load). In the allocator the heap exists before
    /// any link, so this is one load that finds it done; heaps built apart
    /// from the process heap (tests, the `heap` fuzz driver) need it.
    #[inline(always)]
    pub(crate) fn get() -> Links {
        crate::config::ensure_loaded();
        Links {
            on: ON.load(Ordering::Relaxed),
            k0: K0.load(Ordering::Relaxed),
            k1: K1.load(Ordering::Relaxed),
        }
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

/// Whether `next` can be the successor of an object of `class` on a free
/// list: null, or an object start of that class in the heap.
pub(crate) fn plausible_link(next: *mut FreeObject, class: SizeClass) -> bool {
    next.is_null() || crate::raw::classify(next.cast()) == Some(crate::block::Kind::Small(class))
}

/// What a hardened free found wrong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BadFree {
    /// Not an object start of this class (foreign, interior, wrong size).
    NotABlock,
    /// Already on a free list.
    DoubleFree,
}

/// The hardened checks of a free of `ptr` as an object of `class`.
///
/// # Safety
/// `ptr` is readable for 8 bytes if it is an object start of `class` in the
/// heap (the page map says so before anything is read).
pub(crate) unsafe fn check_free(ptr: *mut u8, class: SizeClass) -> Result<(), BadFree> {
    if crate::raw::classify(ptr) != Some(crate::block::Kind::Small(class)) {
        return Err(BadFree::NotABlock);
    }
    // SAFETY: an object start of `class` (checked): at least 8 bytes.
    let word = unsafe { (*(ptr as *mut FreeObject)).next };
    if plausible_link(Links::get().decode(word), class) {
        return Err(BadFree::DoubleFree);
    }
    Ok(())
}

/// Makes a just-allocated object's first word implausible as a link (see
/// the module overview).
///
/// # Safety
/// `obj` is an object just taken from a free list, at least 8 bytes.
#[inline]
pub(crate) unsafe fn clear_link(obj: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe { (*(obj as *mut FreeObject)).next = core::ptr::null_mut() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_inverts_encode_and_zero_keys_are_the_identity() {
        let p = 0x7f12_3456_7890usize as *mut FreeObject;
        let links = Links::get();
        assert_eq!(links.decode(links.encode(p)), p);
        let keyed = Links {
            on: true,
            k0: 0x1234_5678_9abc_def1 | 1 << 8,
            k1: 0x0fed_cba9_8765_4321,
        };
        assert_eq!(keyed.decode(keyed.encode(p)), p);
        assert_ne!(keyed.encode(p), p);
        assert_ne!(keyed.encode(core::ptr::null_mut()), core::ptr::null_mut());
        if !enabled() {
            assert_eq!(links.encode(p), p, "default mode links must be raw");
        }
        // A cleared word (0) is not a plausible link under real keys.
        let (k0, k1) = (
            0x1234_5678_9abc_def1usize | 1 << 8,
            0x0fed_cba9_8765_4321usize,
        );
        let dec = 0usize.wrapping_sub(k0).rotate_right(k0 as u32 & 63) ^ k1;
        assert_ne!(dec, 0);
    }
}
