//! Reporting heap misuse that the allocator detects (a double free that
//! reaches its span, a foreign or interior pointer): one line on stderr,
//! written with one `write` and no allocation; then, in C mode (the
//! `LD_PRELOAD` library, see [`crate::raw::set_abort_on_misuse`]), abort.

use crate::os::linux;
use core::sync::atomic::{AtomicBool, Ordering};

static ABORT_ON_MISUSE: AtomicBool = AtomicBool::new(false);

/// Makes detected misuse abort the process after its message.
pub(crate) fn set_abort(abort: bool) {
    ABORT_ON_MISUSE.store(abort, Ordering::Relaxed);
}

/// Whether detected misuse aborts.
pub(crate) fn aborts() -> bool {
    ABORT_ON_MISUSE.load(Ordering::Relaxed)
}

/// Writes `parts`, then `addr` as 16 hex digits, then `tail`, as one line.
fn write_line(parts: &[&[u8]], addr: usize, tail: &[u8]) {
    let mut buf = [0u8; 192];
    let mut n = 0;
    let mut put = |b: &[u8], n: &mut usize| {
        let k = b.len().min(buf.len() - *n);
        buf[*n..*n + k].copy_from_slice(&b[..k]);
        *n += k;
    };
    for p in parts {
        put(p, &mut n);
    }
    let digits = b"0123456789abcdef";
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = digits[(addr >> ((15 - i) * 4)) & 0xf];
    }
    put(&hex, &mut n);
    put(tail, &mut n);
    linux::write_stderr(&buf[..n]);
}

/// A pointer freed that is not a live object of this allocator (double
/// free or foreign pointer) reached its span: say so and ignore it, so no
/// list is corrupted; abort in C mode.
#[cold]
pub(crate) fn bad_free(addr: usize) {
    let tail: &[u8] = b": not a live block (double free or foreign pointer)\n";
    if aborts() {
        write_line(&[b"hugeguard: aborting free of 0x"], addr, tail);
        linux::abort();
    }
    write_line(&[b"hugeguard: ignoring free of 0x"], addr, tail);
}

/// Hardened mode refused a free of `addr` (see `harden`): say what was
/// wrong and ignore the free; abort in C mode.
#[cold]
pub(crate) fn hardened_bad_free(addr: usize, why: BadFree) {
    let tail: &[u8] = match why {
        BadFree::DoubleFree => b": double free (the object is already free)\n",
        BadFree::NotABlock => {
            b": not an object of its size (foreign, interior or wrongly sized pointer)\n"
        }
    };
    if aborts() {
        write_line(&[b"hugeguard: aborting free of 0x"], addr, tail);
        linux::abort();
    }
    write_line(&[b"hugeguard: ignoring free of 0x"], addr, tail);
}

/// Hardened mode found a free list whose link after the object at `addr`
/// is not an object of its class (a write after free): say so; the rest of
/// the list is dropped (leaked), never followed. Abort in C mode.
#[cold]
pub(crate) fn corrupt_list(addr: usize) {
    let tail: &[u8] =
        b": free list corrupted after this object (write after free?); dropping the rest\n";
    if aborts() {
        write_line(&[b"hugeguard: aborting at 0x"], addr, tail);
        linux::abort();
    }
    write_line(&[b"hugeguard: at 0x"], addr, tail);
}

/// A C entry point named `what` was given `addr`, which is not a block of
/// this allocator: say so and abort.
#[cold]
pub(crate) fn abort_foreign(what: &[u8], addr: usize) -> ! {
    write_line(
        &[b"hugeguard: ", what, b"(0x"],
        addr,
        b"): not a block of this allocator (invalid or foreign pointer)\n",
    );
    linux::abort()
}

/// What a hardened free found wrong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BadFree {
    /// Not an object start of this class (foreign, interior, wrong size).
    NotABlock,
    /// Already on a free list.
    DoubleFree,
}
