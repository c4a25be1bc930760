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

use crate::freelist::{FreeObject, Links};
use crate::lookup::{classify, Kind};
use crate::misuse::BadFree;
use crate::size_class::SizeClass;

/// Whether hardened mode is on (fixed once the configuration is loaded,
/// which happens before the heap exists and so before any object is freed).
#[inline]
pub(crate) fn enabled() -> bool {
    crate::freelist::keyed()
}

/// [`enabled`], loading the configuration first if no thread has: for a
/// thread cache deciding whether it may use the fast path, which can come
/// before the heap exists.
pub(crate) fn active() -> bool {
    crate::config::get_loaded();
    enabled()
}

/// The current link encoding ([`Links::current`]), loading the
/// configuration first if no thread has (it decides the mode, and the mode
/// must not change between a link's store and its load). In the allocator
/// the heap exists before any link, so this is one load that finds it done;
/// heaps built apart from the process heap (tests, the `heap` fuzz driver)
/// need it.
#[inline(always)]
pub(crate) fn links() -> Links {
    crate::config::ensure_loaded();
    Links::current()
}

/// Whether `next` can be the successor of an object of `class` on a free
/// list: null, or an object start of that class in the heap.
pub(crate) fn plausible_link(next: *mut FreeObject, class: SizeClass) -> bool {
    next.is_null() || classify(next.cast()) == Some(Kind::Small(class))
}

/// The hardened checks of a free of `ptr` as an object of `class`.
///
/// # Safety
/// `ptr` is readable for 8 bytes if it is an object start of `class` in the
/// heap (the page map says so before anything is read).
pub(crate) unsafe fn check_free(ptr: *mut u8, class: SizeClass) -> Result<(), BadFree> {
    if classify(ptr) != Some(Kind::Small(class)) {
        return Err(BadFree::NotABlock);
    }
    // SAFETY: an object start of `class` (checked): at least 8 bytes.
    let word = unsafe { (*(ptr as *mut FreeObject)).next };
    if plausible_link(links().decode(word), class) {
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
        let links = links();
        assert_eq!(links.decode(links.encode(p)), p);
        let keyed = Links::keyed(0x1234_5678_9abc_def1 | 1 << 8, 0x0fed_cba9_8765_4321);
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
