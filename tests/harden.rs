//! Hardened mode (`HUGEGUARD_HARDEN=1`): a double free of an object still in
//! the freeing thread's cache, and frees of pointers that are not objects of
//! their layout (on the stack, inside an object, a wrong size), are reported
//! in one line and ignored, and the allocator goes on working. Each case
//! runs in a child process (this binary re-run with one ignored test), so
//! the mode is set before the allocator starts.

// The Linux heap's own behaviour (the fallback build forwards to `System`).
#![cfg(not(hugeguard_fallback))]

use hugeguard::HugeGuard;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;

#[global_allocator]
static A: HugeGuard = HugeGuard;

fn run_child(case: &str, harden: &str) -> (bool, String) {
    hugeguard_testkit::child::run(case, &[("HUGEGUARD_HARDEN", harden)])
}

#[test]
fn double_free_in_the_thread_cache_is_reported_and_ignored() {
    let (ok, text) = run_child("child_double_free", "1");
    assert!(ok, "child failed:\n{text}");
    let reports: Vec<_> = text.lines().filter(|l| l.contains("double free")).collect();
    assert_eq!(reports.len(), 1, "one report expected:\n{text}");
    assert!(
        reports[0].starts_with("hugeguard: ignoring free of 0x"),
        "{text}"
    );
    assert!(text.contains("DISTINCT"), "{text}");
}

#[test]
fn frees_of_pointers_that_are_not_objects_are_reported_and_ignored() {
    let (ok, text) = run_child("child_foreign", "1");
    assert!(ok, "child failed:\n{text}");
    let reports = text
        .lines()
        .filter(|l| l.contains("not an object of its size"))
        .count();
    assert_eq!(
        reports, 3,
        "stack, interior and wrongly sized frees:\n{text}"
    );
    assert!(text.contains("INTACT"), "{text}");
}

#[test]
fn a_write_after_free_cannot_steer_allocation() {
    let (ok, text) = run_child("child_write_after_free", "1");
    assert!(ok, "child failed:\n{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("free list corrupted"))
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains("NOT STEERED"), "{text}");
}

#[test]
#[ignore = "run by a_write_after_free_cannot_steer_allocation"]
fn child_write_after_free() {
    let layout = Layout::from_size_align(96, 8).unwrap();
    let mut target = [0u8; 96];
    let target_addr = target.as_mut_ptr();
    // SAFETY: a valid layout; the write into `b` after its free is the
    // misuse under test (it overwrites the free-list link in `b`'s first
    // word with the address of `target`).
    let got = unsafe {
        let a = A.alloc(layout);
        let b = A.alloc(layout);
        A.dealloc(a, layout);
        A.dealloc(b, layout);
        (b as *mut *mut u8).write(target_addr);
        let got: Vec<*mut u8> = (0..3).map(|_| A.alloc(layout)).collect();
        for &g in &got {
            A.dealloc(g, layout);
        }
        got
    };
    assert!(
        !got.contains(&target_addr),
        "allocation handed out {target_addr:?}"
    );
    assert!(target.iter().all(|&x| x == 0));
    println!("NOT STEERED");
}

#[test]
#[ignore = "run by double_free_in_the_thread_cache_is_reported_and_ignored"]
fn child_double_free() {
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: a valid layout; the second dealloc is the misuse under test,
    // which hardened mode refuses before it touches any list.
    unsafe {
        let keep = A.alloc(layout);
        let p = A.alloc(layout);
        assert!(!p.is_null() && !keep.is_null());
        A.dealloc(p, layout);
        A.dealloc(p, layout); // still in this thread's cache
                              // Had the second free gone into the cache, `p` would come back twice.
        let again: Vec<*mut u8> = (0..4).map(|_| A.alloc(layout)).collect();
        let distinct: HashSet<_> = again.iter().collect();
        assert_eq!(
            distinct.len(),
            again.len(),
            "an object was handed out twice"
        );
        for q in again {
            A.dealloc(q, layout);
        }
        A.dealloc(keep, layout);
    }
    println!("DISTINCT");
}

#[test]
#[ignore = "run by frees_of_pointers_that_are_not_objects_are_reported_and_ignored"]
fn child_foreign() {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let mut on_stack = [7u8; 64];
    // SAFETY: a valid layout; the three frees of pointers that are not
    // objects of this layout are the misuse under test, refused before any
    // list is touched.
    unsafe {
        let p = A.alloc(layout);
        core::ptr::write_bytes(p, 0xab, 64);
        A.dealloc(on_stack.as_mut_ptr(), layout);
        A.dealloc(p.add(16), layout);
        // `p` freed as if it were of another size class.
        A.dealloc(p, Layout::from_size_align(512, 8).unwrap());
        let intact = (0..64).all(|i| *p.add(i) == 0xab);
        assert!(intact, "a refused free changed the object");
        assert!(on_stack.iter().all(|&b| b == 7));
        A.dealloc(p, layout);
    }
    hugeguard::check_invariants().unwrap();
    println!("INTACT");
}
