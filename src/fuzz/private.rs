//! Fuzz driver `heap`: every input on a private heap of its own, a page
//! heap over the fake OS with a real (lazily faulted) 128 MiB reservation
//! and its own central lists, created and dropped per input, so a failing
//! input fails the same way alone. No thread cache: objects go to and come
//! from the central lists directly, one or a batch at a time, large blocks
//! are page runs, and release passes run on a fake clock with pages really
//! dropped (`FakeOs::dontneed_zeroes`): a release under a live object shows
//! as lost contents. Half the inputs (by their first byte) lay the heap
//! out as mesh mode does (random slots, class homes).
//!
//! Checked after every operation: the page heap's invariants and the touched
//! class's central list; at the end, and after every release pass, every
//! live block's contents (sampled windows, as in [`super::ops`]); at the
//! end, every list's count of objects out against the model's.

use super::{intact_bytes, last_page_window, windows, Input};
use crate::central::{Batch, CentralList, FakeHeap};
use crate::freelist::FreeObject;
use crate::os::fake::FakeOs;
use crate::page_heap::{Pass, PassResult, Policy};
use crate::size_class::{class_for, CLASS_BATCH, NUM_CLASSES};
use crate::span::Span;
use crate::units::PAGE_SIZE;

/// A live block: small (its class) or large (its run's span).
struct Obj {
    ptr: *mut u8,
    len: usize,
    class: usize,
    run: *mut Span,
    tag: u8,
}

fn fill(o: &Obj) {
    for (s, e) in windows(o.len).chain(last_page_window(o.len)) {
        // SAFETY: the block is live and at least `len` long.
        unsafe { core::ptr::write_bytes(o.ptr.add(s), o.tag, e - s) };
    }
}

fn intact(o: &Obj) -> bool {
    // SAFETY: the block is live and at least `len` long.
    unsafe { intact_bytes(o.ptr, o.len, o.tag, true) }
}

fn check_heap(src: &FakeHeap) {
    if let Err(e) = src.heap.lock().check() {
        panic!("page heap invariant broken: {e}");
    }
}

/// The driver: see the module documentation.
pub fn heap(data: &[u8]) {
    let mut input = Input(data);
    let mut os = FakeOs::default();
    os.backed = true;
    os.dontneed_zeroes = true;
    let first = input.u8().unwrap_or(0);
    if first & 8 != 0 {
        os.page_size = 64 << 10;
    }
    let src = FakeHeap::new(os, 64, crate::harden::links());
    src.heap.lock().set_policy(Policy {
        must_mark: first % 4 != 0,
        go_legacy: false,
        regain: true,
        // Now and then as under 64 KiB kernel pages and 512 MiB huge pages.
        kernel_page: if first & 8 != 0 { 16 } else { 1 },
        no_huge: first & 8 != 0,
    });
    // Half the inputs lay the heap out as mesh mode does: random slots,
    // each class's spans in huge pages of their own.
    src.heap.lock().set_class_homes(first & 4 != 0);
    let mut lists: Vec<CentralList> = (0..NUM_CLASSES)
        .map(|_| {
            let mut list = CentralList::new();
            list.random_slots = first & 4 != 0;
            list
        })
        .collect();
    let mut live: Vec<Obj> = Vec::new();
    let mut tag = 0u8;
    let links = crate::harden::links();
    while let Some(op) = input.u8() {
        tag = tag.wrapping_add(1).max(1);
        let mut touched = 0;
        match op % 8 {
            0..=3 => {
                let (size, align) = (input.size(), input.align());
                if let Some(c) = class_for(size, align) {
                    let c = c.index();
                    let want = 1 + input.u8().unwrap_or(0) as usize % CLASS_BATCH[c] as usize;
                    let batch = lists[c].take(&src, c, want);
                    let mut o = batch.head;
                    for _ in 0..batch.count {
                        assert_eq!(o as usize % align, 0, "misaligned object");
                        // SAFETY: the batch links `count` free objects.
                        let next = unsafe { FreeObject::next_of(o, links) };
                        let obj = Obj {
                            ptr: o.cast(),
                            len: size,
                            class: c,
                            run: core::ptr::null_mut(),
                            tag,
                        };
                        fill(&obj);
                        live.push(obj);
                        o = next;
                    }
                    touched = c;
                } else {
                    let npages = size.div_ceil(PAGE_SIZE);
                    let align_pages = (align / PAGE_SIZE).max(1);
                    let run = src.heap.lock().alloc_run(npages, align_pages, 0);
                    if let Some(run) = run {
                        // SAFETY: a fresh run's span record.
                        let start = unsafe { (*run.span).start };
                        assert_eq!(start % align, 0, "misaligned run");
                        let obj = Obj {
                            ptr: start as *mut u8,
                            len: size,
                            class: 0,
                            run: run.span,
                            tag,
                        };
                        fill(&obj);
                        live.push(obj);
                    }
                }
            }
            4 | 5 if !live.is_empty() => {
                // Frees a batch of up to 4 blocks of the picked one's kind.
                let i = input.u16() as usize % live.len();
                let o = live.swap_remove(i);
                assert!(intact(&o), "contents lost before free");
                if o.class == 0 {
                    // SAFETY: a live run of this heap, freed once.
                    unsafe { src.heap.lock().free_run(o.run) };
                } else {
                    let mut chain = vec![o];
                    let more = input.u8().unwrap_or(0) % 4;
                    for _ in 0..more {
                        let class = chain[0].class;
                        if let Some(j) = live.iter().position(|x| x.class == class) {
                            let x = live.swap_remove(j);
                            assert!(intact(&x), "contents lost before free");
                            chain.push(x);
                        }
                    }
                    let class = chain[0].class;
                    let mut head: *mut FreeObject = core::ptr::null_mut();
                    for x in &chain {
                        // SAFETY: a live object of this heap, given up here.
                        unsafe { FreeObject::set_next(x.ptr.cast(), head, links) };
                        head = x.ptr.cast();
                    }
                    let batch = Batch {
                        head,
                        count: chain.len(),
                    };
                    // SAFETY: `count` live objects of `class`, linked, given up.
                    unsafe { lists[class].give(&src, class, batch) };
                    touched = class;
                }
            }
            6 => {
                src.clock
                    .set(src.clock.get().wrapping_add(u32::from(input.u16()) * 4));
                let pass = Pass {
                    now: src.clock.get(),
                    holdback: 1000,
                    force: input.u8().unwrap_or(0) % 2 == 0,
                };
                let mut out = PassResult::default();
                src.heap.lock().release_free_huge_pages(&pass, &mut out);
                for (c, list) in lists.iter_mut().enumerate().skip(1) {
                    list.release(&src, c, &pass, &mut out);
                }
                src.heap.lock().release_filler_pages(&pass, &mut out);
                assert!(
                    live.iter().all(intact),
                    "a release pass lost a live block's contents"
                );
            }
            _ => {
                src.clock
                    .set(src.clock.get().wrapping_add(u32::from(input.u16())));
            }
        }
        check_heap(&src);
        if touched != 0 {
            if let Err(e) = lists[touched].check(touched) {
                panic!("central list {touched} broken: {e}");
            }
        }
    }
    assert!(live.iter().all(intact), "contents lost");
    for (c, list) in lists.iter().enumerate().skip(1) {
        // `check` counts parked batches as out of their spans too.
        let out = list
            .check(c)
            .unwrap_or_else(|e| panic!("central list {c} broken: {e}"))
            - list.parked_objects(c);
        let model = live.iter().filter(|o| o.class == c).count();
        assert_eq!(
            out, model,
            "class {c}: the list counts {out} objects out, the model {model}"
        );
    }
    for o in live {
        if o.class == 0 {
            // SAFETY: a live run of this heap, freed once.
            unsafe { src.heap.lock().free_run(o.run) };
        } else {
            // SAFETY: a live object of this heap, given up here.
            unsafe {
                FreeObject::set_next(o.ptr.cast(), core::ptr::null_mut(), links);
                lists[o.class].give(
                    &src,
                    o.class,
                    Batch {
                        head: o.ptr.cast(),
                        count: 1,
                    },
                );
            }
        }
    }
    check_heap(&src);
}
