//! Fuzz driver `raw`: the C entry points (`hugeguard::raw::c_*`, which the
//! `LD_PRELOAD` library only forwards to) with the sizes and alignments C
//! programs pass, the error cases included: 0, huge sizes, `calloc` and
//! `reallocarray` overflows, alignments that are not powers of two or not
//! multiples of `sizeof(void *)`, `realloc(NULL, n)`, `realloc(p, 0)`,
//! `free(NULL)`, and frees of pointers that are not blocks (inside a live
//! block, on the stack), which must be refused with nothing done.
//!
//! Checked after every call: the result's alignment, `errno` (`ENOMEM` or
//! `EINVAL` on failure, as the function's contract says), usable size at
//! least the request, zeroed memory from `calloc`, contents kept across
//! `realloc` (sampled windows, as in [`super::ops`]), no overlap with any
//! live block; the full invariant check at the end of the input.

use super::{intact_bytes, Input};
use crate::os::{EINVAL, ENOMEM};
use crate::raw;
use std::collections::BTreeMap;

/// Alignments from this one up may fail with `ENOMEM` (the heap's
/// reservation is smaller); every smaller one must be served.
const MAY_FAIL_ALIGN: usize = 1 << 30;

/// A live C block: its request and the tag its windows hold.
struct CBlock {
    ptr: *mut u8,
    len: usize,
    tag: u8,
}

impl Input<'_> {
    /// Sizes as C programs pass them: 0, small, medium, large, and sizes no
    /// allocation can satisfy.
    fn c_size(&mut self) -> usize {
        let b = self.u8().unwrap_or(0);
        let v = self.u16() as usize;
        match b % 16 {
            0 => 0,
            1..=9 => 1 + v % 512,
            10..=13 => v % (64 * 1024),
            14 => v * 48,
            _ => usize::MAX - v,
        }
    }

    /// Alignments as C programs pass them, invalid ones included.
    fn c_align(&mut self) -> usize {
        let b = self.u8().unwrap_or(0);
        match b % 8 {
            0..=4 => 1 << (b % 13),
            5 => 1 << (12 + b % 11),
            6 => self.u16() as usize % 200,
            _ => [0, 3, 24, 1 << 40, 1 << 63, usize::MAX][b as usize % 6],
        }
    }
}

fn clear_errno() {
    raw::set_errno(0);
}

fn expect_failure(what: &str, errno: i32) {
    assert_eq!(raw::errno(), errno, "{what} failed with the wrong errno");
}

/// Writes `b`'s windows with its tag.
fn fill(b: &CBlock) {
    for (s, e) in super::windows(b.len).chain(super::last_page_window(b.len)) {
        // SAFETY: the block is live and at least `len` long.
        unsafe { core::ptr::write_bytes(b.ptr.add(s), b.tag, e - s) };
    }
}

fn intact(b: &CBlock, len: usize, whole: bool) -> bool {
    // SAFETY: the block is live and at least `len` long.
    unsafe { intact_bytes(b.ptr, len, b.tag, whole) }
}

/// Takes a fresh block from a C entry point: checks alignment, usable size,
/// overlap and (for `zeroed`) contents, then fills it.
fn adopt(
    live: &mut BTreeMap<usize, CBlock>,
    ptr: *mut u8,
    len: usize,
    align: usize,
    zeroed: bool,
    tag: u8,
) {
    assert!(!ptr.is_null());
    assert_eq!(ptr as usize % align.max(raw::MIN_ALIGN), 0, "misaligned");
    // SAFETY: `ptr` is a live block of this allocator.
    let usable = unsafe { raw::usable_size(ptr) };
    assert!(
        usable >= len.max(1),
        "usable size {usable} below the request {len}"
    );
    let s = ptr as usize;
    let before = live.range(..=s).next_back();
    assert!(
        before.is_none_or(|(&a, b)| a + b.len.max(1) <= s),
        "overlap"
    );
    let after = live.range(s..).next();
    assert!(after.is_none_or(|(&a, _)| a >= s + len.max(1)), "overlap");
    let b = CBlock { ptr, len, tag: 0 };
    if zeroed {
        assert!(intact(&b, len, true), "calloc memory not zero");
    }
    let b = CBlock { tag, ..b };
    fill(&b);
    live.insert(s, b);
}

fn pick(live: &BTreeMap<usize, CBlock>, input: &mut Input) -> Option<usize> {
    let n = live.len();
    (n > 0).then(|| *live.keys().nth(input.u16() as usize % n).expect("in range"))
}

/// The driver: see the module documentation.
pub fn raw(data: &[u8]) {
    let mut input = Input(data);
    let mut live: BTreeMap<usize, CBlock> = BTreeMap::new();
    let mut tag = 0u8;
    while let Some(op) = input.u8() {
        // At most `LIVE_CAP` bytes live, as in `ops`: the oldest blocks
        // (lowest addresses first) are freed before the next operation.
        while live.values().map(|b| b.len).sum::<usize>() > super::LIVE_CAP {
            let (_, b) = live.pop_first().expect("over the cap, so not empty");
            assert!(intact(&b, b.len, true), "contents lost before free");
            // SAFETY: a live block given up here.
            assert!(unsafe { raw::free(b.ptr) }, "a live block was refused");
        }
        tag = tag.wrapping_add(1).max(1);
        clear_errno();
        match op % 12 {
            0 => {
                let size = input.c_size();
                let p = raw::c_malloc(size);
                if p.is_null() {
                    assert!(size > 1 << 40, "malloc({size}) failed");
                    expect_failure("malloc", ENOMEM);
                } else {
                    adopt(&mut live, p, size, raw::MIN_ALIGN, false, tag);
                }
            }
            1 => {
                let (n, size) = (input.c_size() % 70_000, input.c_size());
                // Products that neither overflow nor stay below 16 MiB would
                // only make the run slow and large: ask for one element then.
                let n = match n.checked_mul(size) {
                    Some(t) if t > 16 << 20 && t <= 1 << 40 => 1,
                    _ => n,
                };
                let p = raw::c_calloc(n, size);
                match n.checked_mul(size) {
                    Some(t) if t <= 1 << 40 => {
                        assert!(!p.is_null(), "calloc({n}, {size}) failed");
                        adopt(&mut live, p, t, raw::MIN_ALIGN, true, tag);
                    }
                    _ => {
                        assert!(p.is_null(), "calloc({n}, {size}) of an impossible size");
                        expect_failure("calloc", ENOMEM);
                    }
                }
            }
            2 | 3 => {
                let size = input.c_size();
                let array = op % 12 == 3;
                let n = if array {
                    1 + input.u8().unwrap_or(0) as usize % 4
                } else {
                    1
                };
                let key = if input.u8().unwrap_or(0) % 8 == 0 {
                    None
                } else {
                    pick(&live, &mut input)
                };
                let old = key.and_then(|k| live.remove(&k));
                let p = old.as_ref().map_or(core::ptr::null_mut(), |b| b.ptr);
                if let Some(b) = &old {
                    assert!(intact(b, b.len, true), "contents lost before realloc");
                }
                // SAFETY: `p` is null or a live block given up here.
                let r = unsafe {
                    if array {
                        raw::c_reallocarray(p, n, size)
                    } else {
                        raw::c_realloc(p, size)
                    }
                };
                let q = r.expect("a live block was refused as misuse");
                let total = n.checked_mul(size);
                match (total, old) {
                    (Some(0), Some(_)) => assert!(q.is_null(), "realloc(p, 0) returned a block"),
                    (Some(t), old) if t <= 1 << 40 => {
                        assert!(!q.is_null(), "realloc to {t} failed");
                        if let Some(b) = &old {
                            let kept = CBlock {
                                ptr: q,
                                len: t,
                                tag: b.tag,
                            };
                            assert!(intact(&kept, t.min(b.len), false), "realloc lost contents");
                        }
                        adopt(&mut live, q, t, raw::MIN_ALIGN, false, tag);
                    }
                    (_, old) => {
                        assert!(q.is_null(), "realloc to an impossible size");
                        expect_failure("realloc", ENOMEM);
                        // The old block is untouched and still ours.
                        if let Some(b) = old {
                            assert!(intact(&b, b.len, true), "failed realloc changed the block");
                            live.insert(b.ptr as usize, b);
                        }
                    }
                }
            }
            4 => {
                let (align, size) = (input.c_align(), input.c_size());
                let p = raw::c_aligned_alloc(align, size);
                if !align.is_power_of_two() {
                    assert!(p.is_null());
                    expect_failure("aligned_alloc", EINVAL);
                } else if p.is_null() {
                    assert!(
                        size > 1 << 40 || align >= MAY_FAIL_ALIGN,
                        "aligned_alloc({align}, {size}) failed"
                    );
                    expect_failure("aligned_alloc", ENOMEM);
                } else {
                    adopt(&mut live, p, size, align, false, tag);
                }
            }
            5 => {
                let (align, size) = (input.c_align(), input.c_size());
                let valid = align.is_power_of_two() && align % core::mem::size_of::<usize>() == 0;
                match raw::c_posix_memalign(align, size) {
                    Ok(p) => {
                        assert!(valid, "posix_memalign accepted alignment {align}");
                        adopt(&mut live, p, size, align, false, tag);
                    }
                    Err(e) if !valid => assert_eq!(e, EINVAL),
                    Err(e) => {
                        assert_eq!(e, ENOMEM);
                        assert!(
                            size > 1 << 40 || align >= MAY_FAIL_ALIGN,
                            "posix_memalign({align}, {size}) failed"
                        );
                    }
                }
                assert_eq!(raw::errno(), 0, "posix_memalign set errno");
            }
            6 => {
                let (align, size) = (input.c_align(), input.c_size());
                let p = raw::c_memalign(align, size);
                match align.max(1).checked_next_power_of_two() {
                    None => {
                        assert!(p.is_null());
                        expect_failure("memalign", EINVAL);
                    }
                    Some(a) if p.is_null() => {
                        assert!(
                            size > 1 << 40 || a >= MAY_FAIL_ALIGN,
                            "memalign({align}, {size}) failed"
                        );
                        expect_failure("memalign", ENOMEM);
                    }
                    Some(a) => adopt(&mut live, p, size, a, false, tag),
                }
            }
            7 | 8 => {
                let size = input.c_size();
                let (p, len) = if op % 12 == 7 {
                    (raw::c_valloc(size), size)
                } else {
                    (
                        raw::c_pvalloc(size),
                        size.max(1)
                            .checked_next_multiple_of(4096)
                            .unwrap_or(usize::MAX),
                    )
                };
                if p.is_null() {
                    assert!(size > 1 << 40, "valloc/pvalloc({size}) failed");
                    expect_failure("valloc", ENOMEM);
                } else {
                    adopt(&mut live, p, len, 4096, false, tag);
                }
            }
            9 | 10 => {
                let Some(k) = pick(&live, &mut input) else {
                    // SAFETY: freeing null does nothing.
                    assert!(unsafe { raw::free(core::ptr::null_mut()) });
                    continue;
                };
                let b = live.remove(&k).expect("picked from the map");
                assert!(intact(&b, b.len, true), "contents lost before free");
                // SAFETY: a live block given up here.
                assert!(unsafe { raw::free(b.ptr) }, "a live block was refused");
            }
            _ => {
                // Misuse that must be refused with nothing done: a pointer
                // inside a live block, and one on the stack.
                let local = 0u64;
                let inside = pick(&live, &mut input)
                    .map(|k| (k, 1 + input.u16() as usize % live[&k].len.max(2)));
                // SAFETY: the stack address is outside the heap, so the page
                // map says so without reading it; the interior pointer lies in
                // a live block of this single-threaded driver, whose span no
                // other thread can change, and is not an object start (the
                // offset is below the block's size class or page run).
                unsafe {
                    assert!(!raw::free((&local as *const u64).cast_mut().cast()));
                    if let Some((k, off)) = inside {
                        let b = &live[&k];
                        if off < b.len {
                            assert!(!raw::free(b.ptr.add(off)), "an interior pointer was freed");
                            assert!(intact(b, b.len, true), "a refused free changed the block");
                        }
                    }
                }
            }
        }
    }
    for (_, b) in live {
        assert!(intact(&b, b.len, true), "contents lost before free");
        // SAFETY: a live block given up here.
        assert!(unsafe { raw::free(b.ptr) });
    }
    super::invariants();
}
