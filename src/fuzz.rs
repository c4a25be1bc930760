//! Fuzz drivers, compiled for the tests and under `--cfg fuzzing` (which
//! `cargo fuzz` sets). Each takes raw fuzzer bytes, decodes a sequence of
//! operations and panics on the first broken property; `fuzz/` wraps them as
//! libFuzzer targets and the unit tests below replay the corpora in
//! `fuzz/corpus/`, so CI re-runs every input ever kept.
//!
//! * [`ops`]: alloc / dealloc / realloc / alloc_zeroed with random layouts
//!   against a shadow model (every byte written is read back, alignment,
//!   non-overlap), with [`crate::check_invariants`] after every operation.
//! * [`threads`]: the same, with frees and reallocs handed to another thread.
//! * [`policy`]: the page heap and its release rules driven by random time
//!   steps, runs, frees and release passes against the recording fake OS,
//!   with injected failures (commit refused, NOHUGEPAGE ENOMEM, DONTNEED
//!   errors): heap invariants, the advice rules, and never a DONTNEED over a
//!   page in use.

use crate::os::fake::{check_advice_rules, Call, FakeOs};
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
        match b % 8 {
            0..=4 => 1 + v % 512,
            5 | 6 => 1 + v % (64 * 1024),
            _ => 1 + v * 48, // up to 3 MiB
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

fn fill(b: &Block) {
    // SAFETY: the block is live and `layout.size()` long.
    unsafe { core::ptr::write_bytes(b.ptr, b.tag, b.layout.size()) };
}

fn intact(b: &Block, len: usize) -> bool {
    // SAFETY: the block is live and at least `len` long.
    unsafe { core::slice::from_raw_parts(b.ptr, len) }
        .iter()
        .all(|&x| x == b.tag)
}

fn invariants() {
    if let Err(e) = crate::check_invariants() {
        panic!("invariant broken: {e}");
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
        assert!(intact(&b, size), "alloc_zeroed not zero");
    }
    let b = Block { tag, ..b };
    fill(&b);
    Some(b)
}

fn free_block(b: Block) {
    assert!(intact(&b, b.layout.size()), "contents lost before free");
    // SAFETY: allocated with this layout, freed once.
    unsafe { HugeGuard.dealloc(b.ptr, b.layout) };
}

fn realloc_block(b: Block, size: usize) -> Block {
    assert!(intact(&b, b.layout.size()), "contents lost before realloc");
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
        intact(&nb, size.min(b.layout.size())),
        "realloc lost contents"
    );
    fill(&nb);
    nb
}

/// Driver (a): one thread, shadow model, invariants after every operation.
pub fn ops(data: &[u8]) {
    let mut input = Input(data);
    let mut blocks: Vec<Block> = Vec::new();
    let mut live: BTreeMap<usize, usize> = BTreeMap::new();
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
                if let Some(b) = new_block(size, align, op % 5 == 1, tag) {
                    assert!(!overlaps(&live, &b), "overlap");
                    live.insert(b.ptr as usize, size);
                    blocks.push(b);
                }
            }
            2 | 3 if !blocks.is_empty() => {
                let i = input.u16() as usize % blocks.len();
                let b = blocks.swap_remove(i);
                live.remove(&(b.ptr as usize));
                free_block(b);
            }
            _ if !blocks.is_empty() => {
                let i = input.u16() as usize % blocks.len();
                let size = input.size();
                let b = blocks.swap_remove(i);
                live.remove(&(b.ptr as usize));
                let nb = realloc_block(b, size);
                assert!(!overlaps(&live, &nb), "realloc overlap");
                live.insert(nb.ptr as usize, size);
                blocks.push(nb);
            }
            _ => {}
        }
        invariants();
    }
    for b in blocks {
        free_block(b);
    }
    invariants();
}

/// Driver (b): blocks allocated here are freed or reallocated on another
/// thread (and some come back), and now and then this thread takes the
/// helper's cache (`cache::reclaim`); invariants checked at the end.
pub fn threads(data: &[u8]) {
    use std::sync::mpsc;
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
}

/// Driver (c): the release policy against the recording fake OS.
pub fn policy(data: &[u8]) {
    let mut input = Input(data);
    let mut heap = PageHeap::new(FakeOs::default());
    assert!(heap.init(64 * HUGE_SIZE, HUGE_SIZE));
    let must_mark = input.u8().unwrap_or(0) % 4 != 0;
    heap.set_policy(Policy {
        must_mark,
        go_legacy: input.u8().unwrap_or(0) % 4 == 0,
        regain: true,
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
        if let Err(e) = check_advice_rules(&heap.os().calls.borrow(), base, must_mark) {
            panic!("release rule broken: {e}");
        }
    }
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

    #[test]
    fn replay_ops_corpus_and_random_inputs() {
        let inputs = corpus("ops");
        assert!(!inputs.is_empty(), "fuzz/corpus/ops is empty");
        for i in inputs.iter().chain(random_inputs(1, 40, 300).iter()) {
            ops(i);
        }
    }

    #[test]
    fn replay_threads_corpus_and_random_inputs() {
        let inputs = corpus("threads");
        assert!(!inputs.is_empty(), "fuzz/corpus/threads is empty");
        for i in inputs.iter().chain(random_inputs(2, 40, 300).iter()) {
            threads(i);
        }
    }

    #[test]
    fn replay_policy_corpus_and_random_inputs() {
        let inputs = corpus("policy");
        assert!(!inputs.is_empty(), "fuzz/corpus/policy is empty");
        for i in inputs.iter().chain(random_inputs(3, 200, 400).iter()) {
            policy(i);
        }
    }
}
