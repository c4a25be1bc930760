//! Per-thread caches of small objects: the allocation fast path.
//!
//! Each thread has, per size class, a singly linked list of free objects and a
//! count. `alloc` pops, `dealloc` pushes: no lock, no atomic, no system call.
//! An empty list refills with a batch from the central list; a list longer
//! than [`CLASS_CACHE_MAX`] flushes a batch back, so a thread holds at most
//! the bytes checked in `size_class` tests (1.4 MiB). An object freed by a
//! thread that did not allocate it simply joins that thread's cache: cross-
//! thread frees are as cheap as local ones.
//!
//! The cache lives in a `const`-initialised `thread_local!` without `Drop`, so
//! access compiles to a plain TLS load and never allocates or registers a
//! destructor. Thread exit is caught with a pthread key destructor instead
//! (`global::thread_exit_key`): it returns every cached object, then leaves
//! the cache in pass-through mode for any allocation made later in the
//! thread's teardown.

use crate::global;
use crate::size_class::{CLASS_BATCH, CLASS_CACHE_MAX, NUM_CLASSES};
use crate::span::FreeObject;
use core::cell::UnsafeCell;
use core::ptr;

#[derive(Clone, Copy)]
struct Bin {
    head: *mut FreeObject,
    count: u32,
    /// Flush threshold; 0 until the thread registers, and after it exits.
    max: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Active,
    Exited,
}

/// One thread's cache.
pub struct ThreadCache {
    bins: [Bin; NUM_CLASSES],
    state: State,
}

thread_local! {
    static CACHE: UnsafeCell<ThreadCache> = const {
        UnsafeCell::new(ThreadCache {
            bins: [Bin { head: ptr::null_mut(), count: 0, max: 0 }; NUM_CLASSES],
            state: State::New,
        })
    };
}

/// Runs `f` on the calling thread's cache.
#[inline(always)]
fn with_cache<R>(f: impl FnOnce(&mut ThreadCache) -> R) -> R {
    // SAFETY: the cache is thread-local and `f` is never re-entered: nothing
    // reachable from it calls back into the global allocator.
    CACHE.with(|c| f(unsafe { &mut *c.get() }))
}

/// Allocates an object of `class` (1..NUM_CLASSES); null when out of memory.
#[inline(always)]
pub fn alloc(class: usize) -> *mut u8 {
    with_cache(|tc| {
        debug_assert!(class > 0 && class < NUM_CLASSES);
        // SAFETY: size-class lookups only produce classes below NUM_CLASSES.
        let bin = unsafe { tc.bins.get_unchecked_mut(class) };
        let obj = bin.head;
        if !obj.is_null() {
            // SAFETY: cached objects are free and link through their first word.
            bin.head = unsafe { (*obj).next };
            bin.count -= 1;
            return obj as *mut u8;
        }
        tc.refill(class)
    })
}

/// Frees an object of `class`.
///
/// # Safety
/// `ptr` was allocated for `class` by this allocator and is not used again.
#[inline(always)]
pub unsafe fn dealloc(ptr: *mut u8, class: usize) {
    with_cache(|tc| {
        // SAFETY: size-class lookups only produce classes below NUM_CLASSES.
        let bin = unsafe { tc.bins.get_unchecked_mut(class) };
        let obj = ptr as *mut FreeObject;
        // SAFETY: the object is free and at least 8 bytes (smallest class).
        unsafe { (*obj).next = bin.head };
        bin.head = obj;
        bin.count += 1;
        if bin.count > bin.max {
            tc.overflow(class);
        }
    })
}

impl ThreadCache {
    fn activate(&mut self) {
        if global::arm_thread_exit() {
            for (c, bin) in self.bins.iter_mut().enumerate() {
                bin.max = CLASS_CACHE_MAX[c] as u32;
            }
            self.state = State::Active;
        }
    }

    #[cold]
    #[inline(never)]
    fn refill(&mut self, class: usize) -> *mut u8 {
        if self.state == State::New {
            self.activate();
        }
        let want = if self.state == State::Active {
            CLASS_BATCH[class] as usize
        } else {
            1
        };
        let chain = global::central_take(class, want);
        if chain.count == 0 {
            return ptr::null_mut();
        }
        let obj = chain.head;
        let bin = &mut self.bins[class];
        // SAFETY: the chain links `count` free objects of this class.
        bin.head = unsafe { (*obj).next };
        bin.count = chain.count as u32 - 1;
        obj as *mut u8
    }

    #[cold]
    #[inline(never)]
    fn overflow(&mut self, class: usize) {
        if self.state == State::New {
            self.activate();
            if self.bins[class].count <= self.bins[class].max {
                return;
            }
        }
        let n = if self.state == State::Active {
            CLASS_BATCH[class] as usize
        } else {
            self.bins[class].count as usize
        };
        self.flush(class, n);
    }

    /// Gives the first `n` cached objects of `class` to the central list.
    fn flush(&mut self, class: usize, n: usize) {
        let bin = &mut self.bins[class];
        let n = n.min(bin.count as usize);
        if n == 0 {
            return;
        }
        let head = bin.head;
        let mut last = head;
        for _ in 1..n {
            // SAFETY: the bin links `count >= n` free objects.
            last = unsafe { (*last).next };
        }
        // SAFETY: `last` is the n-th cached object.
        unsafe {
            bin.head = (*last).next;
            (*last).next = ptr::null_mut();
        }
        bin.count -= n as u32;
        // SAFETY: the chain holds `n` free objects of `class`.
        unsafe { global::central_give(class, head, n) };
    }

    /// Returns every cached object and switches to pass-through mode.
    fn exit(&mut self) {
        for class in 1..NUM_CLASSES {
            let count = self.bins[class].count as usize;
            self.flush(class, count);
            self.bins[class].max = 0;
        }
        self.state = State::Exited;
    }

    /// Returns every cached object but stays active.
    fn flush_all(&mut self) {
        for class in 1..NUM_CLASSES {
            let count = self.bins[class].count as usize;
            self.flush(class, count);
        }
    }

    /// Bytes held by this cache.
    fn cached_bytes(&self) -> usize {
        (1..NUM_CLASSES)
            .map(|c| self.bins[c].count as usize * crate::size_class::CLASS_SIZE[c] as usize)
            .sum()
    }
}

/// Called by the pthread key destructor when a thread exits.
pub fn on_thread_exit() {
    with_cache(|tc| tc.exit());
}

/// Returns the calling thread's cached objects to the central lists.
pub fn flush_current_thread() {
    with_cache(|tc| tc.flush_all());
}

/// Bytes cached by the calling thread.
pub fn current_thread_cached_bytes() -> usize {
    with_cache(|tc| tc.cached_bytes())
}
