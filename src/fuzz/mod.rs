//! Fuzz drivers, compiled for the tests and under `--cfg fuzzing` (which
//! `cargo fuzz` sets). Each takes raw fuzzer bytes, decodes a sequence of
//! operations and panics on the first broken property; `fuzz/` wraps them as
//! libFuzzer targets and the unit tests below replay the corpora in
//! `fuzz/corpus/`, so CI re-runs every input ever kept.
//!
//! * [`ops`]: alloc / dealloc / realloc / alloc_zeroed with random layouts
//!   against a shadow model (each block's first 4 KiB and 64 bytes of every
//!   later 4 KiB written and read back, alignment,
//!   non-overlap), checking what each operation touched
//!   (`check::check_touched`) and everything at the end of the input.
//! * [`threads`]: the same, with frees and reallocs handed to another thread.
//! * [`raw`]: the C entry points with C programs' sizes, alignments and
//!   error cases (`c_abi.rs`).
//! * [`heap`]: a private heap per input (page heap over the fake OS with
//!   real memory, central lists, release passes on a fake clock), so a
//!   failing input fails alone (`private.rs`).
//! * [`policy`]: the page heap and its release rules driven by random time
//!   steps, runs, frees and release passes against the recording fake OS,
//!   with injected failures (commit refused, NOHUGEPAGE ENOMEM, DONTNEED
//!   errors): heap invariants, the advice rules, and never a DONTNEED over a
//!   page in use.
//! * [`mesh`]: mesh mode on the process heap (the fuzz target turns it on;
//!   meshing needs a userfaultfd for all faults, so root): bursts of small
//!   blocks, frees that leave their spans sparse, meshing rounds,
//!   unmeshing, writes into meshed blocks; every block checked after each
//!   round.

mod c_abi;
mod private;
pub use c_abi::raw;
pub use private::heap;

use crate::os::fake::{check_advice_rules, Call, FakeOs, Rules};
use crate::os::Advice;
use crate::page_heap::{PageHeap, Pass, PassResult, Policy};
use crate::span::Span;
use crate::units::{HUGE_SIZE, PAGES_PER_HUGE, PAGE_SIZE};
use crate::HugeGuard;
use core::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

/// Reads fuzzer bytes as small numbers; runs dry as zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8().unwrap_or(0)) | u16::from(self.u8().unwrap_or(0)) << 8
    }
    fn size(&mut self) -> usize {
        let b = self.u8().unwrap_or(0);
        let v = self.u16() as usize;
        // One block in 64 is large (up to 3 MiB, across huge pages): those
        // cost a fuzz run most of its time (`alloc_zeroed` clears a reused
        // run with memset; at one in 16 that was half of `ops`' time).
        match b % 64 {
            0..=39 => 1 + v % 512,
            40..=62 => 1 + v % (64 * 1024),
            _ => 1 + v * 48,
        }
    }
    fn align(&mut self) -> usize {
        let b = self.u8().unwrap_or(0);
        1 << match b % 16 {
            0..=9 => b % 5,    // 1-16
            10..=13 => b % 13, // up to 4 KiB
            _ => 12 + b % 11,  // up to 4 MiB
        }
    }
}

struct Block {
    ptr: *mut u8,
    layout: Layout,
    tag: u8,
}

// SAFETY: blocks are plain heap memory handed between threads whole.
unsafe impl Send for Block {}

/// The bytes of a block the drivers write and check: all of its first
/// 4 KiB, 64 bytes at the start of each later 4 KiB page up to 64 KiB, then
/// 64 bytes every 64 KiB and at the start of the block's last page.
/// Defined by offset and length; a prefix's windows (what realloc keeps)
/// were written as the longer block's windows, except the last-page window,
/// which [`intact`] then skips. Filling and comparing megabytes per
/// operation was most of `ops`' time.
fn windows(len: usize) -> impl Iterator<Item = (usize, usize)> {
    const FIRST: usize = 4096;
    const WINDOW: usize = 64;
    const DENSE: usize = 64 * 1024;
    let page_windows = (FIRST..len.min(DENSE)).step_by(4096);
    let sparse_windows = (DENSE..len).step_by(DENSE);
    core::iter::once(0)
        .chain(page_windows)
        .chain(sparse_windows)
        .map(move |p| (p, (p + if p == 0 { FIRST } else { WINDOW }).min(len)))
}

/// The window at the start of the last page of a block of `len` bytes,
/// when it is not already one of [`windows`].
fn last_page_window(len: usize) -> Option<(usize, usize)> {
    let p = len.saturating_sub(1) & !4095;
    (p >= 64 * 1024 && p % (64 * 1024) != 0).then(|| (p, (p + 64).min(len)))
}

fn fill(b: &Block) {
    let len = b.layout.size();
    for (s, e) in windows(len).chain(last_page_window(len)) {
        // SAFETY: the block is live and `layout.size()` long; `e` is within it.
        unsafe { core::ptr::write_bytes(b.ptr.add(s), b.tag, e - s) };
    }
}

/// Whether the windows of the block's first `len` bytes all hold its tag
/// (the last-page window too when `whole`: the block was filled at this
/// length, not only a longer block before a realloc). Each window is
/// compared with itself shifted by one byte (`bcmp`): a byte loop would run
/// the fuzzer's comparison hook once per byte.
fn intact(b: &Block, len: usize, whole: bool) -> bool {
    // SAFETY: the block is live and at least `len` long.
    unsafe { intact_bytes(b.ptr, len, b.tag, whole) }
}

/// [`intact`] for the `len` bytes at `ptr` holding `tag`.
///
/// # Safety
/// `ptr` is valid for reads of `len` bytes.
unsafe fn intact_bytes(ptr: *const u8, len: usize, tag: u8, whole: bool) -> bool {
    windows(len)
        .chain(last_page_window(len).filter(|_| whole))
        .all(|(s, e)| {
            // SAFETY: `e <= len`, readable (the caller's contract).
            let bytes = unsafe { core::slice::from_raw_parts(ptr.add(s), e - s) };
            bytes.is_empty() || (bytes[0] == tag && bytes[1..] == bytes[..bytes.len() - 1])
        })
}

fn invariants() {
    if let Err(e) = crate::check_invariants() {
        panic!("invariant broken: {e}");
    }
}

/// The incremental check after an operation on `layout` at `ptr` (the
/// block's huge pages and its class's central list); the drivers end every
/// input with the full [`invariants`].
fn touched(ptr: *mut u8, layout: Layout) {
    let class =
        crate::size_class::class_for(layout.size(), layout.align()).map_or(0, |c| c.index());
    if let Err(e) = crate::check::check_touched(ptr as usize, layout.size(), class) {
        panic!("invariant broken after an operation on {layout:?}: {e}");
    }
}

fn new_block(size: usize, align: usize, zeroed: bool, tag: u8) -> Option<Block> {
    let layout = Layout::from_size_align(size, align).ok()?;
    // SAFETY: non-zero size.
    let ptr = unsafe {
        if zeroed {
            HugeGuard.alloc_zeroed(layout)
        } else {
            HugeGuard.alloc(layout)
        }
    };
    assert!(!ptr.is_null(), "allocation of {layout:?} failed");
    assert_eq!(ptr as usize % align, 0, "misaligned {layout:?}");
    let b = Block {
        ptr,
        layout,
        tag: 0,
    };
    if zeroed {
        assert!(intact(&b, size, true), "alloc_zeroed not zero");
    }
    let b = Block { tag, ..b };
    fill(&b);
    Some(b)
}

fn free_block(b: Block) {
    assert!(
        intact(&b, b.layout.size(), true),
        "contents lost before free"
    );
    // SAFETY: allocated with this layout, freed once.
    unsafe { HugeGuard.dealloc(b.ptr, b.layout) };
}

fn realloc_block(b: Block, size: usize) -> Block {
    assert!(
        intact(&b, b.layout.size(), true),
        "contents lost before realloc"
    );
    // SAFETY: live block with its layout; `size` non-zero.
    let ptr = unsafe { HugeGuard.realloc(b.ptr, b.layout, size) };
    assert!(!ptr.is_null());
    let nb = Block {
        ptr,
        layout: Layout::from_size_align(size, b.layout.align()).unwrap(),
        tag: b.tag,
    };
    assert_eq!(ptr as usize % b.layout.align(), 0, "realloc misaligned");
    assert!(
        intact(&nb, size.min(b.layout.size()), false),
        "realloc lost contents"
    );
    fill(&nb);
    nb
}

/// At most this many bytes live at once in one input of [`ops`] and of
/// `raw`: a long input could otherwise hold over a gigabyte of large blocks
/// (1.6 GiB was seen in `ops`; `raw` went past libFuzzer's default 2 GB
/// RSS limit within 1,500 runs, 2026-12-07), which made it slow and the
/// fuzzer's RSS large without reaching code a smaller heap does not.
const LIVE_CAP: usize = 256 << 20;

/// Driver (a): one thread, shadow model, the incremental check after every
/// operation and the full one at the end.
pub fn ops(data: &[u8]) {
    let samples_before = crate::profile::table::counts().live;
    let mut input = Input(data);
    let mut blocks: Vec<Block> = Vec::new();
    let mut live: BTreeMap<usize, usize> = BTreeMap::new();
    let mut live_bytes = 0usize;
    let mut zeroed_large = false;
    let mut zeroed_small = 0usize;
    let mut tag = 0u8;
    let overlaps = |live: &BTreeMap<usize, usize>, b: &Block| {
        let (s, l) = (b.ptr as usize, b.layout.size());
        live.range(..=s)
            .next_back()
            .is_some_and(|(&a, &n)| a + n > s)
            || live.range(s..).next().is_some_and(|(&a, _)| a < s + l)
    };
    while let Some(op) = input.u8() {
        tag = tag.wrapping_add(1);
        match op % 5 {
            0 | 1 => {
                let (size, align) = (input.size(), input.align());
                if live_bytes + size > LIVE_CAP {
                    continue;
                }
                // Zeroing is a memset of the whole block when its memory
                // was used before, and inputs the fuzzer grew to zero many
                // blocks spent most of their time there: per input, one
                // large zeroed block and 256 KiB of smaller ones.
                let zeroed = op % 5 == 1
                    && if size <= 64 * 1024 {
                        zeroed_small + size <= 256 * 1024 && {
                            zeroed_small += size;
                            true
                        }
                    } else {
                        !core::mem::replace(&mut zeroed_large, true)
                    };
                if let Some(b) = new_block(size, align, zeroed, tag) {
                    assert!(!overlaps(&live, &b), "overlap");
                    touched(b.ptr, b.layout);
                    live.insert(b.ptr as usize, size);
                    live_bytes += size;
                    blocks.push(b);
                }
            }
            2 | 3 if !blocks.is_empty() => {
                let i = input.u16() as usize % blocks.len();
                let b = blocks.swap_remove(i);
                live.remove(&(b.ptr as usize));
                live_bytes -= b.layout.size();
                let (ptr, layout) = (b.ptr, b.layout);
                free_block(b);
                touched(ptr, layout);
            }
            _ if !blocks.is_empty() => {
                let i = input.u16() as usize % blocks.len();
                let size = input.size();
                if live_bytes - blocks[i].layout.size() + size > LIVE_CAP {
                    continue;
                }
                let b = blocks.swap_remove(i);
                live.remove(&(b.ptr as usize));
                live_bytes = live_bytes - b.layout.size() + size;
                let (old, old_layout) = (b.ptr, b.layout);
                let nb = realloc_block(b, size);
                assert!(!overlaps(&live, &nb), "realloc overlap");
                touched(old, old_layout);
                touched(nb.ptr, nb.layout);
                live.insert(nb.ptr as usize, size);
                blocks.push(nb);
            }
            _ => {}
        }
    }
    for b in blocks {
        free_block(b);
    }
    invariants();
    samples_all_freed(samples_before);
}

/// With heap profiling on (`HUGEGUARD_PROF=on`, and a small
/// `HUGEGUARD_PROF_INTERVAL` so that inputs sample): every sampled block of
/// the input was freed, so none may stay in the profile. The drivers'
/// own allocations go to the system allocator, so the count is exact.
/// With `HUGEGUARD_FUZZ_REPORT` set, prints the profile's counts every
/// 65,536 inputs (to show that the run sampled).
fn samples_all_freed(before: usize) {
    use core::sync::atomic::{AtomicUsize, Ordering};
    static INPUTS: AtomicUsize = AtomicUsize::new(0);
    let c = crate::profile::table::counts();
    assert_eq!(c.live, before, "a freed sampled block stayed in the heap profile");
    if INPUTS.fetch_add(1, Ordering::Relaxed) % 65536 == 0
        && std::env::var_os("HUGEGUARD_FUZZ_REPORT").is_some()
    {
        eprintln!(
            "hugeguard fuzz: {} inputs, heap profile: {} samples taken, {} dropped, {} live",
            INPUTS.load(Ordering::Relaxed),
            c.taken,
            c.dropped,
            c.live
        );
    }
}

/// Driver (b): blocks allocated here are freed or reallocated on another
/// thread (and some come back), and now and then this thread takes the
/// helper's cache (`cache::reclaim`); invariants checked at the end.
pub fn threads(data: &[u8]) {
    use std::sync::mpsc;
    let samples_before = crate::profile::table::counts().live;
    let (to_helper, helper_rx) = mpsc::channel::<(Block, u8, usize)>();
    let (to_main, main_rx) = mpsc::channel::<Block>();
    let helper = std::thread::spawn(move || {
        for (b, how, size) in helper_rx {
            match how % 3 {
                0 => free_block(b),
                1 => {
                    let nb = realloc_block(b, size);
                    free_block(nb);
                }
                _ => {
                    let nb = realloc_block(b, size);
                    let _ = to_main.send(nb);
                }
            }
        }
    });
    let mut input = Input(data);
    let mut mine: Vec<Block> = Vec::new();
    let mut tag = 0u8;
    while let Some(op) = input.u8() {
        tag = tag.wrapping_add(1);
        while let Ok(b) = main_rx.try_recv() {
            mine.push(b);
        }
        if op >= 0xf0 {
            // Take the helper's cache, perhaps while it works.
            crate::cache::reclaim(crate::cache::Reclaim::All);
        }
        match op % 4 {
            0 | 1 => {
                let (size, align) = (input.size(), input.align());
                mine.extend(new_block(size, align, false, tag));
            }
            2 if !mine.is_empty() => {
                let i = input.u16() as usize % mine.len();
                let b = mine.swap_remove(i);
                let how = input.u8().unwrap_or(0);
                let size = input.size();
                to_helper.send((b, how, size)).unwrap();
            }
            _ if !mine.is_empty() => {
                let i = input.u16() as usize % mine.len();
                free_block(mine.swap_remove(i));
            }
            _ => {}
        }
    }
    drop(to_helper);
    helper.join().expect("helper thread panicked");
    while let Ok(b) = main_rx.try_recv() {
        mine.push(b);
    }
    for b in mine {
        free_block(b);
    }
    invariants();
    samples_all_freed(samples_before);
}

/// Driver (c): the release policy against the recording fake OS.
pub fn policy(data: &[u8]) {
    let mut input = Input(data);
    let must_mark = input.u8().unwrap_or(0) % 4 != 0;
    // Now and then as on kernels of other page geometries: 16 KiB pages
    // under 32 MiB huge pages, 64 KiB under 512 MiB, 64 KiB under 2 MiB,
    // 4 KiB under 16 MiB (`config::fit_geometry`).
    let (page_size, no_huge) = match input.u8().unwrap_or(0) % 16 {
        0 => (16 << 10, true),
        1 => (64 << 10, true),
        2 => (64 << 10, false),
        3 => (4 << 10, true),
        _ => (4 << 10, false),
    };
    let kernel_page = page_size / PAGE_SIZE;
    let mut os = FakeOs::default();
    os.page_size = page_size;
    let mut heap = PageHeap::new(os);
    assert!(heap.init(64 * HUGE_SIZE, HUGE_SIZE));
    heap.set_policy(Policy {
        must_mark,
        go_legacy: input.u8().unwrap_or(0) % 4 == 0,
        regain: true,
        kernel_page,
        no_huge,
    });
    let base = heap.view().base();
    let mut runs: Vec<*mut Span> = Vec::new();
    let mut now = 0u64;
    while let Some(op) = input.u8() {
        match op % 8 {
            0..=2 => {
                let n = match input.u8().unwrap_or(0) % 4 {
                    0..=2 => 1 + input.u8().unwrap_or(0) as usize % 16,
                    _ => 1 + input.u16() as usize % 1200,
                };
                let align = 1 << (input.u8().unwrap_or(0) % 11);
                // Runs short enough for a small span are tagged as one.
                let class = u8::from(n <= 255);
                if let Some(r) = heap.alloc_run(n, align, class) {
                    runs.push(r.span);
                }
            }
            3 | 4 if !runs.is_empty() => {
                let i = input.u16() as usize % runs.len();
                let s = runs.swap_remove(i);
                // SAFETY: a live run of this heap, freed once.
                unsafe { heap.free_run(s) };
            }
            5 => {
                now += input.u16() as u64 * 8;
                *heap.os().clock.borrow_mut() = now;
            }
            6 => {
                // Snapshot the pages in use; no DONTNEED of this pass may touch one.
                let used: Vec<_> = (0..heap.committed_huge_pages())
                    // SAFETY: below the top; single-threaded.
                    .map(|i| unsafe { heap.metas().get(i) }.used)
                    .collect();
                let before = heap.os().calls.borrow().len();
                let pass = Pass {
                    now: now as u32,
                    holdback: 1000,
                    force: input.u8().unwrap_or(0) % 2 == 0,
                };
                let mut out = PassResult::default();
                heap.release_free_huge_pages(&pass, &mut out);
                heap.release_filler_pages(&pass, &mut out);
                heap.discard_span_records();
                if let Some((idx, _)) = heap.pick_dense(&pass, 0) {
                    heap.collapse_done(idx, input.u8().unwrap_or(0) % 3 != 0);
                }
                for call in heap.os().calls.borrow()[before..].iter() {
                    if let Call::Advise {
                        addr,
                        len,
                        advice: Advice::DontNeed,
                    } = *call
                    {
                        let first = (addr - base) / PAGE_SIZE;
                        for p in first..first + len / PAGE_SIZE {
                            let (hp, pg) = (p / PAGES_PER_HUGE, p % PAGES_PER_HUGE);
                            assert!(
                                !used[hp].get(pg),
                                "DONTNEED over page {pg} of huge page {hp}, in use"
                            );
                        }
                    }
                }
            }
            _ => {
                let b = input.u8().unwrap_or(0);
                *heap.os().refuse_commit.borrow_mut() = b % 5 == 0;
                *heap.os().fail_advice.borrow_mut() = match b % 7 {
                    0 => Some((Advice::NoHugePage, crate::os::ENOMEM)),
                    1 => Some((Advice::DontNeed, 22)),
                    2 => Some((Advice::HugePage, 22)),
                    _ => None,
                };
            }
        }
        if let Err(e) = heap.check() {
            panic!("heap invariant broken: {e}");
        }
    }
    // The advice rules are about the order of the whole call log, so one
    // check at the end sees every violation (checking the growing log after
    // each operation made an input quadratic in its length).
    let rules = Rules {
        must_mark,
        page_size,
        no_huge,
    };
    if let Err(e) = check_advice_rules(&heap.os().calls.borrow(), base, rules) {
        panic!("release rule broken: {e}");
    }
    assert!(
        kernel_page == 1 || *heap.os().discarded_metadata.borrow() == 0,
        "a 4 KiB metadata page went back under {page_size} byte kernel pages"
    );
}

/// Driver (f): meshing interleaved with allocation, frees and writes, on
/// the process heap in mesh mode (without it, rounds do nothing and the
/// rest still runs). Every block's contents are checked after each round.
pub fn mesh(data: &[u8]) {
    let mut input = Input(data);
    let mut blocks: Vec<Block> = Vec::new();
    let mut tag = 0u8;
    let check_all = |blocks: &[Block], when: &str| {
        for b in blocks {
            assert!(intact(b, b.layout.size(), true), "contents lost {when}");
        }
    };
    while let Some(op) = input.u8() {
        tag = tag.wrapping_add(1);
        match op % 6 {
            0 if blocks.len() < 20_000 => {
                // A burst of one small size.
                let size = 8 + input.u16() as usize % 1017;
                let n = 32 + input.u16() as usize % 993;
                blocks.extend((0..n).filter_map(|_| new_block(size, 8, false, tag)));
            }
            1 if !blocks.is_empty() => {
                // Keep one in `k` from a random start; free the rest.
                let k = 2 + input.u8().unwrap_or(0) as usize % 63;
                let start = input.u16() as usize % blocks.len();
                let all = core::mem::take(&mut blocks);
                for (i, b) in all.into_iter().enumerate() {
                    if (i + start) % k == 0 {
                        blocks.push(b);
                    } else {
                        free_block(b);
                    }
                }
            }
            2 => {
                let r = crate::mesh::round();
                check_all(&blocks, "after a meshing round");
                if r.meshed_units + r.unmeshed_units != 0 {
                    invariants();
                }
            }
            3 if !blocks.is_empty() => {
                // Writes into a block (perhaps a meshed one).
                let i = input.u16() as usize % blocks.len();
                blocks[i].tag = tag;
                fill(&blocks[i]);
            }
            4 if !blocks.is_empty() => {
                let i = input.u16() as usize % blocks.len();
                free_block(blocks.swap_remove(i));
            }
            5 => {
                // Everything released (thread cache included), then meshed.
                crate::background::release_now();
                crate::mesh::round();
                check_all(&blocks, "after release and meshing");
            }
            _ => {}
        }
    }
    check_all(&blocks, "at the end");
    for b in blocks {
        free_block(b);
    }
    // Unmesh what emptied, then check everything.
    crate::background::release_now();
    crate::mesh::round();
    invariants();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    fn random_inputs(seed: u64, n: usize, len: usize) -> Vec<Vec<u8>> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        s as u8
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs every kept input of `target` and `n` seeded random inputs of
    /// `len` bytes through `driver`.
    fn replay(target: &str, driver: fn(&[u8]), seed: u64, n: usize, len: usize) {
        let inputs = corpus(target);
        assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty");
        for i in inputs.iter().chain(random_inputs(seed, n, len).iter()) {
            driver(i);
        }
    }

    #[test]
    fn replay_ops_corpus_and_random_inputs() {
        replay("ops", ops, 1, 40, 300);
    }

    #[test]
    fn replay_threads_corpus_and_random_inputs() {
        replay("threads", threads, 2, 40, 300);
    }

    #[test]
    fn replay_policy_corpus_and_random_inputs() {
        replay("policy", policy, 3, 200, 400);
    }

    #[test]
    fn replay_raw_corpus_and_random_inputs() {
        replay("raw", raw, 4, 200, 300);
    }

    #[test]
    fn replay_heap_corpus_and_random_inputs() {
        replay("heap", heap, 5, 200, 400);
    }

    /// The `mesh` corpus in a child process of this test binary with mesh
    /// mode on from its first allocation (meshing itself where the kernel
    /// lets the child hold back every write: root).
    #[test]
    fn replay_mesh_corpus_and_random_inputs_in_mesh_mode() {
        let (ok, text) = hugeguard_testkit::child::run(
            "fuzz::tests::replay_mesh_child",
            &[("HUGEGUARD_MESH", "on")],
        );
        assert!(ok, "mesh replay failed:\n{text}");
        assert!(text.contains("MESH REPLAYED"), "{text}");
    }

    #[test]
    #[ignore = "run by replay_mesh_corpus_and_random_inputs_in_mesh_mode"]
    fn replay_mesh_child() {
        // The process heap of this child is in mesh mode.
        replay("mesh", mesh, 6, 20, 200);
        let s = crate::stats();
        println!(
            "MESH REPLAYED (meshing on: {}, units meshed: {})",
            crate::mesh::active(),
            s.meshed_units_total
        );
    }
}
