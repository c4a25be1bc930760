//! The calling thread's stack, as return addresses, for the heap profile
//! (`profile`): libgcc's unwinder (`_Unwind_Backtrace`, which the Rust
//! standard library links on Linux) walks the `.eh_frame` tables, so it
//! needs no frame pointers, takes no allocator lock and does not allocate on
//! the `dl_iterate_phdr` path it uses for loaded objects. A leaf of the OS
//! layer.

use core::ffi::{c_int, c_void};

#[allow(non_camel_case_types)]
type _Unwind_Reason_Code = c_int;
const URC_NO_REASON: _Unwind_Reason_Code = 0;
const URC_END_OF_STACK: _Unwind_Reason_Code = 5;

extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut c_void, *mut c_void) -> _Unwind_Reason_Code,
        arg: *mut c_void,
    ) -> _Unwind_Reason_Code;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
    fn _Unwind_GetRegionStart(ctx: *mut c_void) -> usize;
}

/// Which frames a walk leaves out, beyond the allocator's slow path.
pub enum Entry<'a> {
    /// Frames whose functions start at one of these addresses (the entry
    /// functions learned so far); the first other frame is kept.
    Skip(&'a [usize]),
    /// Learning: every frame up to the one of the function starting at
    /// `until` (the probe that called the allocator) is an entry frame;
    /// their start addresses go to `learned` (as many as fit), and `count`
    /// says how many.
    Learn {
        until: usize,
        learned: &'a mut [usize],
        count: usize,
    },
}

/// The walk's state, passed through the unwinder's `arg`.
struct Walk<'a, 'b> {
    /// Start addresses of the functions that mark the allocator's own
    /// frames (empty: keep every frame).
    marks: &'a [usize],
    entry: &'a mut Entry<'b>,
    /// A marked frame has been seen.
    seen_mark: bool,
    /// The entry frames have been passed.
    past_entry: bool,
    out: &'a mut [usize],
    len: usize,
}

extern "C" fn step(ctx: *mut c_void, arg: *mut c_void) -> _Unwind_Reason_Code {
    // SAFETY: `arg` is the `Walk` that `backtrace` passed, alive for the
    // whole `_Unwind_Backtrace` call.
    let walk = unsafe { &mut *(arg as *mut Walk) };
    // SAFETY: `ctx` is the unwinder's context for this frame.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if !walk.marks.is_empty() && !walk.past_entry {
        // SAFETY: as above.
        let start = unsafe { _Unwind_GetRegionStart(ctx) };
        if walk.marks.contains(&start) {
            walk.seen_mark = true;
            return URC_NO_REASON;
        }
        if !walk.seen_mark {
            // Below the slow path (this walk's own frames).
            return URC_NO_REASON;
        }
        match walk.entry {
            Entry::Skip(entries) => {
                if entries.contains(&start) {
                    return URC_NO_REASON;
                }
                walk.past_entry = true;
            }
            Entry::Learn {
                until,
                learned,
                count,
            } => {
                if start == *until {
                    walk.past_entry = true;
                } else {
                    if *count < learned.len() {
                        learned[*count] = start;
                    }
                    *count += 1;
                    return URC_NO_REASON;
                }
            }
        }
    }
    if ip == 0 || walk.len == walk.out.len() {
        return URC_END_OF_STACK;
    }
    walk.out[walk.len] = ip;
    walk.len += 1;
    URC_NO_REASON
}

/// Fills `out` with the return addresses of the calling thread's frames,
/// innermost first, and returns how many. With `marks` (the start
/// addresses of the functions of the allocator's slow path), the frames up
/// to the outermost marked one are left out, and above them the entry
/// frames as `entry` says, so the first address is in the program's own
/// code. (The slow path must be called, not jumped to, or the frame that
/// called it is lost.) Without a marked frame nothing is kept.
///
/// May call `malloc` (a first walk of a library's tables); the caller guards
/// against re-entering itself.
#[inline(never)]
pub fn backtrace(marks: &[usize], entry: &mut Entry, out: &mut [usize]) -> usize {
    let mut walk = Walk {
        marks,
        entry,
        seen_mark: false,
        past_entry: false,
        out,
        len: 0,
    };
    // SAFETY: `step` only touches `walk`, which outlives the call.
    unsafe { _Unwind_Backtrace(step, &mut walk as *mut Walk as *mut c_void) };
    walk.len
}

/// Calls the C library's allocation functions once each (and frees what
/// they return), so that a heap profile can learn which frames are the
/// allocator's C entry points when this allocator is the C library's (the
/// `LD_PRELOAD` library); otherwise it only exercises the C library's own.
/// `before` runs before each allocating call.
#[inline(never)]
pub fn call_c_allocator(before: &dyn Fn()) {
    // SAFETY: each block is a fresh allocation, freed once; a null result
    // is passed to `free` (which ignores it) or not used.
    unsafe {
        before();
        let p = libc::malloc(64);
        before();
        let q = libc::realloc(p, 4096);
        libc::free(if q.is_null() { p } else { q });
        before();
        libc::free(libc::calloc(4, 16));
        let mut m = core::ptr::null_mut();
        before();
        if libc::posix_memalign(&mut m, 64, 64) == 0 {
            libc::free(m);
        }
        before();
        libc::free(libc::aligned_alloc(64, 64));
        before();
        libc::free(libc::memalign(64, 64));
    }
    core::hint::black_box(());
}

#[cfg(test)]
mod tests {
    use super::*;

    type Walker = fn(&[usize], &mut Entry, &mut [usize]) -> usize;

    #[inline(never)]
    fn marked(marks: &[usize], entry: &mut Entry, out: &mut [usize]) -> usize {
        let n = backtrace(marks, entry, out);
        core::hint::black_box(n)
    }

    #[inline(never)]
    fn entry(marks: &[usize], e: &mut Entry, out: &mut [usize]) -> usize {
        let n = marked(marks, e, out);
        core::hint::black_box(n)
    }

    #[inline(never)]
    fn probe(marks: &[usize], e: &mut Entry, out: &mut [usize]) -> usize {
        let n = entry(marks, e, out);
        core::hint::black_box(n)
    }

    #[test]
    fn walks_the_stack_and_leaves_out_the_marked_frames_and_the_entry() {
        let mut all = [0usize; 64];
        let n = probe(&[], &mut Entry::Skip(&[]), &mut all);
        assert!(n >= 5, "too few frames: {n}");
        let marks = [marked as Walker as usize];
        // Learn the entry: the frames between `marked` and `probe`.
        let mut learned = [0usize; 4];
        let mut learn = Entry::Learn {
            until: probe as Walker as usize,
            learned: &mut learned,
            count: 0,
        };
        let mut out = [0usize; 64];
        probe(&marks, &mut learn, &mut out);
        let Entry::Learn { count, .. } = learn else {
            unreachable!()
        };
        assert_eq!(count, 1, "one entry frame: {learned:?}");
        assert_eq!(learned[0], entry as Walker as usize);
        // Skipping it: left out are `backtrace`, `marked`, `entry`; kept:
        // `probe`, this test and its callers, as in the full walk but for
        // the return address into this function (a different call).
        let mut cut = [0usize; 64];
        let m = probe(&marks, &mut Entry::Skip(&learned[..1]), &mut cut);
        assert_eq!(m + 3, n, "cut walk {m} frames, full walk {n}");
        assert_eq!(cut[0], all[3], "the first kept frame is `probe`");
        assert_eq!(&cut[2..m], &all[5..n]);
    }
}
