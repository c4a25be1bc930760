//! Per-thread caches of small objects: the allocation fast path, and how the
//! background thread takes back what idle threads hold.
//!
//! Each thread has, per size class, a singly linked list of free objects and a
//! count, which shares a word with the heap profile's countdown for the class
//! (`Bin::word`). `alloc` pops, `dealloc` pushes: no lock, no atomic
//! read-modify-write, no system call. An empty list refills with a batch from the central list; a
//! list longer than [`CLASS_CACHE_MAX`] flushes a batch back, so a thread holds
//! at most the bytes checked in `size_class` tests (3.2 MiB). An object freed
//! by a thread that did not allocate it joins that thread's cache, once that
//! thread allocates the class too; until then (a cold bin) it waits on a
//! remote list that allocation never reads (see [`Remote`]).
//!
//! **Taking an idle thread's cache.** A worker pool that handles a burst and
//! then blocks would otherwise keep every cached object, and every span and
//! page those objects pin, for as long as it sleeps. So every operation of the
//! owner is bracketed by a `busy` flag (two plain relaxed stores and a
//! compiler fence, no fence instruction), and after setting it the owner reads
//! `fast`, the flag that lets it use the fast path. The background thread,
//! holding the registry lock, picks caches that hold objects, whose owner is
//! not busy and ran no slow path since the previous scan (`activity`
//! unchanged), sets their `taking` flag, clears `fast`, and calls `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which
//! makes every running thread of the process execute a full barrier. Then it
//! reads `busy` again:
//! * clear: the owner is outside an operation, and any operation it starts
//!   now reads `fast` after the barrier, so sees it clear and waits for
//!   `taking` to clear. The background thread owns the lists: it gives every
//!   cached object back to its central list.
//! * set: the owner is inside an operation that may not have seen `fast`;
//!   the lists are left alone.
//!
//! Either way it sets `fast` again (unless the cache is hardened), then
//! clears `taking` (release), and an owner that
//! waited continues with its (perhaps emptied) lists. Every field is an
//! atomic accessed with relaxed loads and stores by its owner (the same
//! instructions as plain ones on x86-64), so no access is a data race in
//! Rust's model; the ordering between the owner's `busy` store and its
//! `fast` load is what the barrier adds, as in TCMalloc's and liburcu's
//! asymmetric fences. Where `membarrier` is refused (an old kernel, a seccomp
//! filter), nothing is taken and caches behave as before. The price: the two
//! stores and the check add about 2.3 ns to an alloc/free pair on this
//! machine (`docs/design.md`).
//!
//! **The heap profile.** An allocation's pop also counts down the class's
//! sampling countdown, in the same subtraction ([`pop_counted`]): profiling
//! on or off, the allocation fast path is the same. Two more flags follow
//! `fast`: `alloc_fast` (and the bins' countdowns were set for the profile's
//! current state) and, for a Rust free, the gate `free_gate` (one addition
//! whose carry lets a free through: once samples may exist, the frees of
//! the sampled objects' region, which lies below the heap, take the slow
//! path). Each fast path tests its flag or gate alone; the profile
//! closes or gates them in every registered cache ([`set_profiling`],
//! [`set_sampled`]), and the background thread closes them with `fast`.
//!
//! `fast` is clear in a new cache (a zeroed TLS block), so a thread's first
//! operations take the slow path, which activates the cache; in hardened
//! mode (`harden`) it stays clear, and every operation takes the slow path,
//! where frees are checked and links encoded.
//!
//! The cache lives in a `const`-initialised `thread_local!` without `Drop`, so
//! access compiles to a plain TLS load and never allocates or registers a
//! destructor. Thread exit is caught with a pthread key destructor instead
//! (`hooks::thread_exit_dtor`): it leaves the registry, returns every cached
//! object, then leaves the cache in pass-through mode for any allocation made
//! later in the thread's teardown.

use crate::freelist::{FreeObject, Links};
use crate::global;
use crate::harden;
use crate::lock::SpinLock;
use crate::lock_rank::Rank;
use crate::os::linux;
use crate::profile::draw::{self, MAX_POPS};
use crate::size_class::{SizeClass, CLASS_BATCH, CLASS_CACHE_MAX, CLASS_SIZE, NUM_CLASSES};
use core::ptr;
use core::sync::atomic::{
    compiler_fence, fence, AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicU8,
    AtomicUsize, Ordering,
};

/// The count's half of a bin's `word`.
const COUNT_MASK: u64 = u32::MAX as u64;
/// What a counted pop subtracts from a bin's `word`: one object, one pop of
/// the countdown.
const POP: u64 = (1 << 32) | 1;
/// The sign bits of both halves of a bin's `word` after a counted pop
/// (`word - POP`): the count's is set when the list was empty (the count is
/// far below 2^31, so it is never set otherwise), the countdown's when the
/// countdown ran out (or the empty count borrowed from a countdown at
/// zero). Either means the pop cannot be done on the fast path.
const EMPTY_OR_DUE: u64 = (1 << 63) | (1 << 31);
/// What the counted slow path returns for "the countdown ran out": no
/// object was taken, and the caller goes to `profile::alloc_due`. Never an
/// object's address (objects are 8-aligned).
const DUE: usize = 1;

// The bins stay 24 bytes, as before the countdown shared their count's word.
const _: () = assert!(core::mem::size_of::<Bin>() == 24);
// One placeholder bit per class.
const _: () = assert!(NUM_CLASSES <= 64);

/// One size class's list. Written by the owner, or by the background thread
/// while it holds the cache (see the module overview).
struct Bin {
    head: AtomicPtr<FreeObject>,
    /// Two counters in one word, so that a pop updates both with one
    /// subtraction ([`POP`]): the low half is the number of cached objects;
    /// the high half (signed) is how many more pops of the fast path may
    /// pass before one goes to the slow path, which makes it a sample
    /// candidate (the heap profile's countdown for this class, `profile`;
    /// [`OFF_POPS`] while profiling is off). Counts stay far below 2^31,
    /// and a pop happens only with the low half above zero, so the halves
    /// never borrow from each other.
    word: AtomicU64,
    /// Flush threshold; 0 while the bin is cold (before the thread's first
    /// refill of this class: every push then overflows to `remote`) and
    /// after the thread exits (pass-through).
    max: AtomicU32,
    /// The count at which a push records `low` (`max / 2 + 1`, 0 while
    /// `max` is 0): set with `max` ([`Bin::set_max`]), so the push compares
    /// with one load.
    mark: AtomicU32,
}

impl Bin {
    // Unused in code with `initial-exec-tls` (zero bytes stand for it).
    #[cfg_attr(feature = "initial-exec-tls", allow(dead_code))]
    const fn new() -> Self {
        Bin {
            head: AtomicPtr::new(ptr::null_mut()),
            word: AtomicU64::new(0),
            max: AtomicU32::new(0),
            mark: AtomicU32::new(0),
        }
    }

    /// Sets the flush threshold (0: cold or pass-through) and the count at
    /// which a push records `low`.
    fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
        let mark = if max == 0 { 0 } else { max / 2 + 1 };
        self.mark.store(mark, Ordering::Relaxed);
    }

    /// The count at which `low` is the last object kept by an overflow's
    /// cut (`max / 2 + 1`), 0 while `max` is 0.
    #[inline(always)]
    fn mark(&self) -> usize {
        self.mark.load(Ordering::Relaxed) as usize
    }

    /// Cached objects on the list.
    #[inline(always)]
    fn count(&self) -> u32 {
        self.word.load(Ordering::Relaxed) as u32
    }

    /// Sets the number of cached objects (the countdown kept).
    #[inline(always)]
    fn set_count(&self, n: u32) {
        let w = self.word.load(Ordering::Relaxed);
        self.word
            .store((w & !COUNT_MASK) | n as u64, Ordering::Relaxed);
    }

    /// Fast-path pops left before the next sample candidate (below zero:
    /// the next pop is one).
    #[inline(always)]
    fn pops_left(&self) -> i32 {
        (self.word.load(Ordering::Relaxed) >> 32) as i32
    }

    /// Sets the pops left before the next sample candidate (the count kept).
    #[inline(always)]
    fn set_pops_left(&self, k: i32) {
        let w = self.word.load(Ordering::Relaxed);
        self.word.store(
            ((k as u32 as u64) << 32) | (w & COUNT_MASK),
            Ordering::Relaxed,
        );
    }

    /// Takes the first cached object, or null when the list is empty. The
    /// fast path: links read raw, which is their encoding outside hardened
    /// mode (the only mode in which this runs; see `harden`).
    ///
    /// # Safety
    /// The lists are the caller's (the owner inside an operation with
    /// `fast` set).
    #[inline(always)]
    unsafe fn pop_fast(&self) -> *mut FreeObject {
        let obj = self.head.load(Ordering::Relaxed);
        if !obj.is_null() {
            // SAFETY: cached objects are free and link through their first
            // word.
            self.head.store(unsafe { (*obj).next }, Ordering::Relaxed);
            // The low half is at least 1: no borrow.
            self.word
                .store(self.word.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
        }
        obj
    }

    /// Caches free object `obj`; returns whether the list is now longer
    /// than its limit. The fast path, as for [`Bin::pop_fast`].
    ///
    /// # Safety
    /// As for [`Bin::pop_fast`]; `obj` is a free object of this list's class.
    #[inline(always)]
    unsafe fn push_fast(&self, obj: *mut FreeObject, low: &AtomicPtr<FreeObject>) -> bool {
        // SAFETY: the object is free and at least 8 bytes (smallest class).
        unsafe { (*obj).next = self.head.load(Ordering::Relaxed) };
        self.head.store(obj, Ordering::Relaxed);
        self.counted_push(obj, low)
    }

    /// Counts a push of `obj` and keeps `low` (the bin's entry of
    /// [`ThreadCache::lows`]); returns whether the list is now longer than
    /// its limit.
    #[inline(always)]
    fn counted_push(&self, obj: *mut FreeObject, low: &AtomicPtr<FreeObject>) -> bool {
        // The low half stays far below 2^32: no carry.
        let w = self.word.load(Ordering::Relaxed) + 1;
        self.word.store(w, Ordering::Relaxed);
        let count = w as u32;
        let over = count > self.max.load(Ordering::Relaxed);
        if count == self.mark.load(Ordering::Relaxed) {
            low.store(obj, Ordering::Relaxed);
        }
        over
    }

    /// [`Bin::pop_fast`] for the slow paths: links decoded, and in hardened
    /// mode checked: a link that is not an object of `class` (a write after
    /// free) is reported and the rest of the list dropped (leaked) rather
    /// than followed.
    ///
    /// # Safety
    /// The lists are the caller's (the owner inside an operation, the
    /// background thread while it holds the cache).
    unsafe fn pop(&self, class: usize) -> *mut FreeObject {
        let links = harden::links();
        let obj = self.head.load(Ordering::Relaxed);
        if obj.is_null() {
            return obj;
        }
        // SAFETY: cached objects are free and link through their first word.
        let next = unsafe { FreeObject::next_of(obj, links) };
        let count = self.count() - 1;
        if links.hardened() && !link_ok(next, class, count) {
            crate::misuse::corrupt_list(obj as usize);
            self.head.store(ptr::null_mut(), Ordering::Relaxed);
            self.set_count(0);
        } else {
            self.head.store(next, Ordering::Relaxed);
            self.set_count(count);
        }
        if links.hardened() {
            // SAFETY: just taken from the list, at least 8 bytes.
            unsafe { harden::clear_link(obj.cast()) };
        }
        obj
    }

    /// [`Bin::push_fast`] for the slow paths: the link encoded.
    ///
    /// # Safety
    /// As for [`Bin::pop`]; `obj` is a free object of this list's class.
    unsafe fn push(&self, obj: *mut FreeObject, low: &AtomicPtr<FreeObject>) -> bool {
        let links = harden::links();
        // SAFETY: the object is free and at least 8 bytes (smallest class).
        unsafe { FreeObject::set_next(obj, self.head.load(Ordering::Relaxed), links) };
        self.head.store(obj, Ordering::Relaxed);
        self.counted_push(obj, low)
    }
}

/// Whether `next`, read from a free object of `class` with `after` objects
/// left behind it on its list, can be that list's next object: null exactly
/// at the end, else an object of the class.
fn link_ok(next: *mut FreeObject, class: usize, after: u32) -> bool {
    let Some(c) = SizeClass::from_index(class) else {
        return false;
    };
    (after == 0) == next.is_null() && harden::plausible_link(next, c)
}

/// Objects of one class freed by a thread that does not allocate that
/// class (its bin is still cold: never refilled). They wait here, where
/// allocation never looks, and go to the central list a batch at a time. An
/// object freed by a thread that only frees its class is usually another
/// thread's, and its neighbours on the same cache line are in use there:
/// handing it to this thread's next allocation would make the two threads
/// write one line (false sharing, the suite's cache-scratch).
struct Remote {
    head: AtomicPtr<FreeObject>,
    count: AtomicU32,
}

impl Remote {
    #[cfg_attr(feature = "initial-exec-tls", allow(dead_code))]
    const fn new() -> Self {
        Remote {
            head: AtomicPtr::new(ptr::null_mut()),
            count: AtomicU32::new(0),
        }
    }
}

/// Bytes of whole batches a thread keeps for itself past its lists (the
/// stash): a thread that frees a few megabytes of small objects in a row
/// and then allocates them again (sh8bench) gets its own objects back,
/// without the central list's lock and without taking other threads'
/// objects, whose cache lines those threads still write. The idle reclaim
/// and thread exit return the stash with the lists.
pub(crate) const STASH_BYTES: usize = 8 << 20;

/// The smallest class with a stash: a batch's first object holds the link
/// to the next batch in its second word, which an object of 8 bytes (the
/// Rust layouts' smallest class) does not have.
const STASH_MIN_SIZE: usize = 16;

/// One class's stash: whole batches ([`CLASS_BATCH`] objects, linked
/// through their first words as any batch), each batch's first object
/// holding the next batch in its second word (classes of at least
/// [`STASH_MIN_SIZE`] bytes). Owner only, or whoever holds the lists.
struct Stash {
    head: AtomicPtr<FreeObject>,
    batches: AtomicU32,
}

impl Stash {
    #[cfg_attr(feature = "initial-exec-tls", allow(dead_code))]
    const fn new() -> Self {
        Stash {
            head: AtomicPtr::new(ptr::null_mut()),
            batches: AtomicU32::new(0),
        }
    }
}

/// The word of a stashed batch's first object that holds the next batch.
///
/// # Safety
/// `batch` is a free object of at least [`STASH_MIN_SIZE`] bytes that the
/// caller owns.
unsafe fn next_batch_slot(batch: *mut FreeObject) -> *mut *mut FreeObject {
    // SAFETY: the object has a second word (forwarded from the caller).
    unsafe { batch.cast::<*mut FreeObject>().add(1) }
}

/// States of [`ThreadCache::taking`]: the background thread is not taking
/// the cache; is taking it; is taking it and the owner sleeps until it is
/// done (a futex wake-up is owed).
const NOT_TAKING: u32 = 0;
const TAKING: u32 = 1;
const TAKING_OWNER_ASLEEP: u32 = 2;

const NEW: u8 = 0;
const ACTIVE: u8 = 1;
const EXITED: u8 = 2;

/// One thread's cache.
pub struct ThreadCache {
    /// A bin is cold (`max` 0) until its first refill: every push then
    /// overflows, and the object goes to `remote` instead.
    bins: [Bin; NUM_CLASSES],
    /// Per bin, while its `count > max / 2`: the object `max / 2 + 1` places
    /// from the bottom of its list (pushed when `count` became that). The
    /// objects after it are the oldest half, which an overflow gives away in
    /// one cut instead of walking the list (see [`Self::overflow_inner`]).
    /// Apart from the bins, which it would make a third longer (32 bytes
    /// against 24): a push writes it once per crossing of the middle.
    lows: [AtomicPtr<FreeObject>; NUM_CLASSES],
    remote: [Remote; NUM_CLASSES],
    /// Whole batches an overflow gave away and the thread keeps for its own
    /// next refills (see [`Stash`]), up to [`STASH_BYTES`] in all.
    stash: [Stash; NUM_CLASSES],
    /// Bytes in `stash`.
    stash_bytes: AtomicUsize,
    /// Set by the owner while it runs an operation on its lists.
    busy: AtomicBool,
    /// Slow paths (refills and flushes) of the owner: a thread whose count
    /// did not move between two scans counts as idle. Owner only.
    activity: AtomicU32,
    /// Set while the owner may take the fast path: the cache is active, not
    /// hardened, and the background thread is not asking for it (it clears
    /// this to ask, and sets it again when done). Clear in a new cache
    /// (zero bytes), so its first operations take the slow path.
    fast: AtomicBool,
    /// `fast`, and the bins' countdowns were set for the heap profile's
    /// current state (`epoch` is [`PROFILE_EPOCH`]): the allocation fast
    /// path ([`pop_counted`]) tests this alone. Written wherever `fast` is
    /// ([`Self::set_fast`]), opened by the owner's slow path after it set
    /// the countdowns, and cleared in every registered cache when profiling
    /// starts or stops.
    alloc_fast: AtomicBool,
    /// The gate of a Rust free's fast path (whose layout gives the class,
    /// so which never looks at the page map): a free of `ptr` takes the
    /// fast path when `ptr + free_gate` carries, one load and one addition
    /// whatever the state. Closed, 0 (a new cache's zero bytes): no free.
    /// Open with no heap-profile sample possible ([`SAMPLED`] clear),
    /// `MAX`: every free. Open with samples possible, `-R` (wrapping),
    /// where `R` is the end of the small sampled objects' region: the frees
    /// of addresses from `R` up. The region is mapped below the heap
    /// (`os::linux::map_metadata_low`), so those are all the heap's frees;
    /// the slow path tells a sample from a heap object below `R` (where the
    /// region could not be placed low). Written wherever `fast` is
    /// ([`Self::open_free_fast`]).
    free_gate: AtomicUsize,
    /// Held by the background thread from before it clears `fast` until
    /// after it sets it again; an owner that saw `fast` clear waits for it.
    /// [`NOT_TAKING`], [`TAKING`] or [`TAKING_OWNER_ASLEEP`].
    taking: AtomicU32,
    /// `NEW`, `ACTIVE` (registered, caching) or `EXITED`; owner only.
    state: AtomicU8,
    /// Registry links, and `activity` as the last scan saw it: registry lock.
    next: AtomicPtr<ThreadCache>,
    prev: AtomicPtr<ThreadCache>,
    seen: AtomicU32,
    /// Bytes left to allocate in large blocks and `realloc` before the next
    /// heap-profile sample (`profile`); below zero, the allocation that
    /// took it there goes to the profile's slow path. 0 in a new cache.
    /// Owner only.
    sample_left: AtomicIsize,
    /// `sample_left` was drawn while profiling was on (a countdown set while
    /// it was off is not a fair draw: its end is not sampled). Owner only.
    sample_armed: AtomicBool,
    /// The next allocation is sampled whichever countdown runs out
    /// ([`force_sample`]). Owner only.
    forced: AtomicBool,
    /// The [`PROFILE_EPOCH`] the bins' countdowns were set for (0: never).
    /// Owner only (written with the lists held).
    epoch: AtomicU32,
    /// Bit `c`: bin `c`'s countdown is not a fair draw (set while profiling
    /// was off, after a start, or cut at [`MAX_POPS`]): when it runs out, the
    /// pop is an ordinary trial, not a candidate (`profile`). Owner only.
    placeholder: AtomicU64,
}

impl ThreadCache {
    // Unused in code with `initial-exec-tls` (zero bytes stand for it).
    #[cfg_attr(feature = "initial-exec-tls", allow(dead_code))]
    const fn new() -> Self {
        ThreadCache {
            bins: [const { Bin::new() }; NUM_CLASSES],
            lows: [const { AtomicPtr::new(ptr::null_mut()) }; NUM_CLASSES],
            stash: [const { Stash::new() }; NUM_CLASSES],
            stash_bytes: AtomicUsize::new(0),
            remote: [const { Remote::new() }; NUM_CLASSES],
            busy: AtomicBool::new(false),
            activity: AtomicU32::new(0),
            fast: AtomicBool::new(false),
            alloc_fast: AtomicBool::new(false),
            free_gate: AtomicUsize::new(0),
            taking: AtomicU32::new(NOT_TAKING),
            state: AtomicU8::new(NEW),
            next: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
            sample_left: AtomicIsize::new(0),
            sample_armed: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            epoch: AtomicU32::new(0),
            placeholder: AtomicU64::new(0),
            // Activity is at least 1 once registered: the first scan never
            // counts a thread idle.
            seen: AtomicU32::new(0),
        }
    }
}

#[cfg(not(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux"
)))]
thread_local! {
    static CACHE: ThreadCache = const { ThreadCache::new() };
}

/// The thread's cache in the static TLS block, reached with the
/// initial-exec TLS model: two instructions (`fs:0` plus an offset from the
/// GOT), where a `thread_local!` in a shared library costs a call to
/// `__tls_get_addr`. For the `LD_PRELOAD` library, which is loaded with the
/// program (a library opened later with `dlopen` may find no static TLS
/// left, so this is a feature and not the default). Rust has no stable
/// attribute for the TLS model, hence the symbol is defined in assembly: a
/// zero-filled `.tbss` object, which is `ThreadCache::new()` (checked by the
/// test `new_cache_is_all_zero`).
#[cfg(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux"
))]
mod static_tls {
    use super::ThreadCache;

    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".balign 64",
        ".globl __hugeguard_0_1_thread_cache",
        ".hidden __hugeguard_0_1_thread_cache",
        ".type __hugeguard_0_1_thread_cache, @tls_object",
        ".size __hugeguard_0_1_thread_cache, {size}",
        "__hugeguard_0_1_thread_cache:",
        ".zero {size}",
        ".popsection",
        size = const core::mem::size_of::<ThreadCache>(),
    );

    /// The calling thread's cache.
    #[inline(always)]
    pub(super) fn cache() -> &'static ThreadCache {
        let p: usize;
        // SAFETY: reads the thread pointer and the GOT slot the dynamic
        // linker filled with the object's offset from it (`readonly`: both
        // are memory, constant for the thread); nothing else.
        unsafe {
            core::arch::asm!(
                "mov {p}, qword ptr fs:[0]",
                "add {p}, qword ptr [rip + __hugeguard_0_1_thread_cache@GOTTPOFF]",
                p = out(reg) p,
                options(pure, readonly, nostack),
            );
        }
        // SAFETY: the object is this thread's, aligned (64 >= the type's
        // alignment) and sized for a `ThreadCache`, zero-filled at thread
        // start (a valid `ThreadCache::new()`), and lives as long as the
        // thread; every field is an atomic, so shared references are all
        // anyone holds. `'static` stands for "the rest of this thread".
        unsafe { &*(p as *const ThreadCache) }
    }
}

const _: () = assert!(core::mem::align_of::<ThreadCache>() <= 64);

/// The registered (active) caches, linked through their `next`/`prev`.
struct Registry {
    head: *mut ThreadCache,
}

// SAFETY: the pointers are only followed under the registry lock, and a cache
// leaves the registry (under the lock) before its thread's storage goes away.
unsafe impl Send for Registry {}

/// Ranks `Registry` in the lock order (`lock_rank.rs`): central lists and
/// the heap are taken under it.
static REGISTRY: SpinLock<Registry> = SpinLock::new(
    Rank::Registry,
    Registry {
        head: ptr::null_mut(),
    },
);

/// Runs `f` on the calling thread's cache.
#[inline(always)]
fn with_cache<R>(f: impl FnOnce(&ThreadCache) -> R) -> R {
    #[cfg(all(
        feature = "initial-exec-tls",
        target_arch = "x86_64",
        target_os = "linux"
    ))]
    return f(static_tls::cache());
    #[cfg(not(all(
        feature = "initial-exec-tls",
        target_arch = "x86_64",
        target_os = "linux"
    )))]
    CACHE.with(f)
}

/// Counts `size` bytes (a large block's, or a `realloc`'s) against the
/// calling thread's heap-profile byte countdown;
/// `true` when the countdown ran out, so this allocation must go to
/// `profile::alloc_due` (which samples it or not, and sets a new
/// countdown). With profiling off the countdown restarts every 1 MiB, so
/// this costs a subtraction and a branch.
#[inline(always)]
pub fn sample_due(size: usize) -> bool {
    with_cache(|tc| {
        let left = tc.sample_left.load(Ordering::Relaxed) - size as isize;
        tc.sample_left.store(left, Ordering::Relaxed);
        left < 0
    })
}

/// A number that identifies the calling thread while it lives (its
/// cache's address).
pub fn thread_key() -> usize {
    with_cache(|tc| tc as *const ThreadCache as usize)
}

/// The calling thread's heap-profile countdown.
pub fn sample_countdown() -> isize {
    with_cache(|tc| tc.sample_left.load(Ordering::Relaxed))
}

/// Sets the calling thread's heap-profile countdown; `armed` when it was
/// drawn with profiling on. Returns whether the previous one was armed.
pub fn set_sample_countdown(left: isize, armed: bool) -> bool {
    with_cache(|tc| {
        tc.sample_left.store(left, Ordering::Relaxed);
        // Owner only: a load and a store, not a locked swap.
        let was = tc.sample_armed.load(Ordering::Relaxed);
        tc.sample_armed.store(armed, Ordering::Relaxed);
        was
    })
}

/// An allocation of an object of `class` that is a trial of the heap
/// profile's sampling, on the fast path alone: pops the class's countdown
/// with the object; null when that cannot be done here (the list is empty,
/// the countdown ran out, or the fast path is closed), with nothing done:
/// the caller goes on to [`alloc_slow_or`] out of line.
///
/// Profiling on or off, this is the same path: one subtraction takes the
/// object and the pop ([`POP`]). Off, the countdown is [`MAX_POPS`], so a
/// bin runs out once in 2^30 pops (and `profile::alloc_due` sets it again).
#[inline(always)]
pub fn pop_counted(class: SizeClass) -> *mut u8 {
    let class = class.index();
    with_cache(|tc| {
        tc.begin();
        // SAFETY: a `SizeClass` index is below NUM_CLASSES, the bins' length.
        let bin = unsafe { tc.bins.get_unchecked(class) };
        // The countdowns follow the profile's state (`alloc_fast`), and the
        // lists are ours (it was set after `begin`, and only with `fast`).
        if tc.alloc_fast.load(Ordering::Acquire) {
            let w = bin.word.load(Ordering::Relaxed).wrapping_sub(POP);
            // One test for both: the list was not empty (the count's half
            // did not go below zero) and the countdown did not run out.
            if w & EMPTY_OR_DUE == 0 {
                // The count was at least 1: the list links that many.
                let obj = bin.head.load(Ordering::Relaxed);
                // SAFETY: cached objects are free and link through their
                // first word (raw outside hardened mode, the only mode with
                // `fast`); `obj` is one (the count says the list holds one).
                bin.head.store(unsafe { (*obj).next }, Ordering::Relaxed);
                bin.word.store(w, Ordering::Relaxed);
                tc.end();
                return obj as *mut u8;
            }
        }
        // Laid out after the pop, which falls through from the test.
        cold_path();
        tc.end();
        ptr::null_mut()
    })
}

/// The slow path of [`pop_counted`] for an entry that asked for `size`
/// bytes aligned to `align` (which take `class`): allocates an object of
/// `class` (null when out of memory; zeroed if `zero`), unless the class's
/// countdown ran out: then returns what `due` (`profile::alloc_due`)
/// returns. An entry jumps here (its frame is then this one, which the
/// profile learns as an entry frame) or calls it from its own slow path,
/// and this calls `due` through `black_box`, so never as a tail call that
/// would drop its frame. The list of `class` may hold objects (the fast
/// path leaves it alone while `alloc_fast` is closed): one is taken first.
/// With `C_ERRNO`, a null result also sets `errno` to `ENOMEM` (C
/// `malloc`, whose fast path can then jump here instead of calling).
///
/// `extern "C"`, like the other slow paths the fast paths reach
/// ([`ThreadCache::dealloc_slow`], [`ThreadCache::overflow`]): such a
/// function cannot unwind (a panic would abort inside it), so a C entry
/// point, which must not unwind either, needs no landing pad around the
/// call and can end in a jump to it.
#[cold]
#[inline(never)]
// Only Rust calls it (`due` is a Rust function): the ABI is for `nounwind`.
#[allow(improper_ctypes_definitions)]
pub extern "C" fn alloc_slow_or<const C_ERRNO: bool>(
    // In the order of `GlobalAlloc::alloc`'s layout (and `malloc`'s size):
    // the entry's registers are the arguments as they are.
    size: usize,
    align: usize,
    class: SizeClass,
    zero: bool,
    due: fn(usize, usize, bool) -> *mut u8,
) -> *mut u8 {
    let p = with_cache(|tc| {
        tc.begin();
        // Ends the operation itself.
        tc.alloc_slow_counted(class.index())
    });
    let p = if p as usize == DUE {
        core::hint::black_box(due(size, align, zero))
    } else {
        if zero && !p.is_null() {
            // SAFETY: an object of a class that holds `size` bytes.
            unsafe { ptr::write_bytes(p, 0, size) };
        }
        p
    };
    if C_ERRNO && p.is_null() {
        linux::set_errno(crate::os::ENOMEM);
    }
    p
}

/// Marks the branch it is called from as the unlikely one, so the code
/// laid out straight after the test is the other (the open fast path).
#[cold]
#[inline(always)]
fn cold_path() {}

/// The heap profile's state as the caches see it: [`PROFILE_UNKNOWN`] until
/// the profile has read its configuration, then [`PROFILE_OFF`] or
/// [`PROFILE_ON`] ([`set_profiling`]).
static PROFILE: AtomicU8 = AtomicU8::new(PROFILE_UNKNOWN);
const PROFILE_UNKNOWN: u8 = 0;
const PROFILE_OFF: u8 = 1;
const PROFILE_ON: u8 = 2;

/// Changes each time [`PROFILE`] is set: a cache whose bins' countdowns
/// were set for an older epoch sets them again ([`ThreadCache::sync_bins`])
/// before it opens `alloc_fast`. Starts at 1, so a new cache (0) syncs.
static PROFILE_EPOCH: AtomicU32 = AtomicU32::new(1);

/// The heap profile turned on or off (`profile::start`, `stop`, and its
/// configuration): every registered cache's allocation fast path is closed,
/// so each thread sets its bins' countdowns for the new state at its next
/// allocation (a cache that opens it concurrently sees the new epoch after
/// it, [`ThreadCache::set_fast`]).
pub fn set_profiling(on: bool) {
    PROFILE.store(if on { PROFILE_ON } else { PROFILE_OFF }, Ordering::SeqCst);
    PROFILE_EPOCH.fetch_add(1, Ordering::SeqCst);
    close_in_every_cache(|tc| &tc.alloc_fast);
}

/// Sets the calling thread's countdown for `class` to `pops` fast-path pops
/// (at most [`MAX_POPS`]), `placeholder` if it is not a fair draw (see
/// `ThreadCache::placeholder`). For `profile::alloc_due`.
pub fn set_class_countdown(class: usize, pops: i32, placeholder: bool) {
    with_cache(|tc| {
        tc.with_lists(|| {
            if let Some(bin) = tc.bins.get(class) {
                bin.set_pops_left(pops.min(MAX_POPS));
                let bits = tc.placeholder.load(Ordering::Relaxed);
                let bit = 1u64 << class;
                let bits = if placeholder { bits | bit } else { bits & !bit };
                tc.placeholder.store(bits, Ordering::Relaxed);
            }
        })
    });
}

/// Whether the calling thread's countdown for `class` is a placeholder
/// (see `ThreadCache::placeholder`).
pub fn class_countdown_is_placeholder(class: usize) -> bool {
    with_cache(|tc| tc.placeholder.load(Ordering::Relaxed) & (1u64 << (class % 64)) != 0)
}

/// Makes the calling thread's next allocation a sample, through whichever
/// countdown it takes (the profile's learning of its entry frames): the
/// byte countdown at zero, every class's at zero (as placeholders, so after
/// the forced sample each pop there is an ordinary trial).
pub fn force_sample() {
    with_cache(|tc| {
        tc.sample_left.store(0, Ordering::Relaxed);
        tc.sample_armed.store(true, Ordering::Relaxed);
        tc.forced.store(true, Ordering::Relaxed);
        tc.with_lists(|| {
            // Synced first: a later sync would draw over the zeros.
            tc.sync_if_stale();
            for bin in &tc.bins {
                bin.set_pops_left(0);
            }
            tc.placeholder.store(u64::MAX, Ordering::Relaxed);
        })
    });
}

/// Whether a [`force_sample`] is pending; clears it.
pub fn take_forced() -> bool {
    with_cache(|tc| {
        let f = tc.forced.load(Ordering::Relaxed);
        if f {
            tc.forced.store(false, Ordering::Relaxed);
        }
        f
    })
}

/// After a sequentially consistent store of the state that closes it:
/// clears `flag` (a fast-path flag) in every registered cache, sequentially
/// consistent, so a cache opening it concurrently either is cleared here or
/// sees the new state when it checks again after its own store.
fn close_in_every_cache(flag: impl Fn(&ThreadCache) -> &AtomicBool) {
    fence(Ordering::SeqCst);
    let reg = REGISTRY.lock();
    let mut p = reg.head;
    while !p.is_null() {
        // SAFETY: registered caches are live (registry lock held).
        let tc = unsafe { &*p };
        flag(tc).store(false, Ordering::SeqCst);
        p = tc.next.load(Ordering::Relaxed);
    }
}

/// Heap-profile samples may exist: profiling has started at least once.
/// Never cleared (samples outlive `stop`).
static SAMPLED: AtomicBool = AtomicBool::new(false);

/// The end of the small sampled objects' region and its length
/// ([`set_sampled`]; 0 before): copies of `profile::table`'s, since the
/// profile calls this module and an import back would be a cycle
/// (`tests/layering.rs`).
static SAMPLED_END: AtomicUsize = AtomicUsize::new(0);
static SAMPLED_LEN: AtomicUsize = AtomicUsize::new(0);

/// Called before profiling first starts (before any sample can be taken),
/// with the small sampled objects' region (mapped once, never moved):
/// every registered cache whose Rust free fast path is open lets it send
/// the region's frees to the slow path from now on. A cache opening it at
/// the same moment checks [`SAMPLED`] again after its store
/// ([`ThreadCache::open_free_fast`]).
pub fn set_sampled(region_base: usize, region_len: usize) {
    if SAMPLED.load(Ordering::Acquire) {
        return;
    }
    SAMPLED_LEN.store(region_len, Ordering::Relaxed);
    SAMPLED_END.store(region_base + region_len, Ordering::Relaxed);
    SAMPLED.store(true, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let reg = REGISTRY.lock();
    let mut p = reg.head;
    while !p.is_null() {
        // SAFETY: registered caches are live (registry lock held).
        let tc = unsafe { &*p };
        tc.gate_frees_of_samples();
        p = tc.next.load(Ordering::Relaxed);
    }
}

/// The free gate's value once samples may exist (`ThreadCache::free_gate`):
/// addresses from the sampled region's end up carry.
fn sampled_gate() -> usize {
    SAMPLED_END.load(Ordering::Relaxed).wrapping_neg()
}

/// Whether `ptr` lies in the small sampled objects' region.
#[inline(always)]
fn in_sampled_region(ptr: *mut u8) -> bool {
    let end = SAMPLED_END.load(Ordering::Relaxed);
    let len = SAMPLED_LEN.load(Ordering::Relaxed);
    end != 0 && (ptr as usize).wrapping_sub(end - len) < len
}

/// Allocates an object of `class`; null when out of memory.
#[inline(always)]
pub fn alloc(class: SizeClass) -> *mut u8 {
    let class = class.index();
    with_cache(|tc| {
        tc.begin();
        // SAFETY: a `SizeClass` index is below NUM_CLASSES, the bins' length.
        let bin = unsafe { tc.bins.get_unchecked(class) };
        if tc.fast.load(Ordering::Acquire) {
            // SAFETY: the lists are ours (`fast` was set after `begin`).
            let obj = unsafe { bin.pop_fast() };
            if !obj.is_null() {
                tc.end();
                return obj as *mut u8;
            }
        }
        // Ends the operation itself, so this is a tail call.
        tc.alloc_slow(class)
    })
}

/// Frees an object of `class`.
///
/// # Safety
/// `ptr` was allocated for `class` by this allocator and is not used again.
#[inline(always)]
pub unsafe fn dealloc(ptr: *mut u8, class: SizeClass) {
    let class = class.index();
    with_cache(|tc| {
        tc.begin();
        if !tc.fast.load(Ordering::Acquire) {
            // SAFETY: forwarded from the caller.
            return unsafe { tc.dealloc_slow(ptr, class) };
        }
        // SAFETY: a `SizeClass` index is below NUM_CLASSES, the bins' (and
        // `lows`') length.
        let (bin, low) = unsafe { (tc.bins.get_unchecked(class), tc.lows.get_unchecked(class)) };
        // SAFETY: the lists are ours (`fast` was set after `begin`); the
        // caller gives up a free object of this class.
        if unsafe { bin.push_fast(ptr as *mut FreeObject, low) } {
            // Ends the operation itself.
            return tc.overflow(class);
        }
        tc.end();
    })
}

/// Frees an object of `class` unless it lies in the small sampled objects'
/// region (a heap-profile sample); returns `false` then (nothing done: the
/// caller frees it through the profile). A Rust free, whose layout gives
/// the class; its fast path is [`dealloc`]'s after the gate's one
/// addition (`ThreadCache::free_gate`).
///
/// # Safety
/// `ptr` was allocated by this allocator for `class`, or is a small sample;
/// it is not used again.
#[inline(always)]
pub unsafe fn dealloc_unless_sampled(ptr: *mut u8, class: SizeClass) -> bool {
    let class = class.index();
    with_cache(|tc| {
        tc.begin();
        let gate = tc.free_gate.load(Ordering::Acquire);
        // Carries: open, and not below the sampled region's end.
        if !(ptr as usize).overflowing_add(gate).1 {
            cold_path();
            if in_sampled_region(ptr) {
                tc.end();
                return false;
            }
            if !tc.fast.load(Ordering::Acquire) {
                // SAFETY: forwarded from the caller (not a sample).
                unsafe { tc.dealloc_slow(ptr, class) };
                return true;
            }
        }
        // SAFETY: a `SizeClass` index is below NUM_CLASSES, the bins' (and
        // `lows`') length.
        let (bin, low) = unsafe { (tc.bins.get_unchecked(class), tc.lows.get_unchecked(class)) };
        // SAFETY: the lists are ours (`fast` was set after `begin`); the
        // caller gives up a free object of this class (not a sample).
        if unsafe { bin.push_fast(ptr as *mut FreeObject, low) } {
            // Ends the operation itself.
            tc.overflow(class);
            return true;
        }
        tc.end();
        true
    })
}

/// Ends the owner's operation when dropped (for the slow paths).
struct EndOnDrop<'a>(&'a ThreadCache);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl ThreadCache {
    /// Marks the start of an operation. The compiler fence keeps the store
    /// before the owner's read of `fast`; the background thread's
    /// `membarrier` does the same for the processor.
    #[inline(always)]
    fn begin(&self) {
        self.busy.store(true, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
    }

    /// Marks the end of an operation: every access to the lists before it is
    /// visible to a background thread that then reads `busy` clear.
    #[inline(always)]
    fn end(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Waits while the background thread is taking this cache (see
    /// [`Self::wait_while_taken`]); returns at once otherwise.
    #[inline(always)]
    fn wait_if_taken(&self) {
        if self.taking.load(Ordering::Acquire) != NOT_TAKING {
            self.wait_while_taken();
        }
    }

    /// The background thread is deciding whether to take (or is taking) this
    /// cache: wait until it is done, after which the lists are ours again.
    #[cold]
    #[inline(never)]
    fn wait_while_taken(&self) {
        loop {
            let state = self.taking.load(Ordering::Acquire);
            if state == NOT_TAKING {
                return;
            }
            // The background thread may be preempted while it holds the
            // cache: sleep rather than spin (see `lock`).
            if state == TAKING_OWNER_ASLEEP
                || self
                    .taking
                    .compare_exchange(
                        TAKING,
                        TAKING_OWNER_ASLEEP,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                linux::futex_wait_while(&self.taking, TAKING_OWNER_ASLEEP);
            }
        }
    }

    /// A slow path ran: the thread is not idle.
    fn note_activity(&self) {
        let a = self.activity.load(Ordering::Relaxed);
        self.activity.store(a.wrapping_add(1), Ordering::Relaxed);
    }

    /// Sets `fast` to `on`, and `alloc_fast` to `on` if the bins'
    /// countdowns follow the profile's current state. Opening `alloc_fast`
    /// races with [`set_profiling`] changing that state: each side writes
    /// its flag or epoch, then reads the other's (sequentially consistent),
    /// so at least one of them sees the other and the fast path ends
    /// closed.
    fn set_fast(&self, on: bool, order: Ordering) {
        self.fast.store(on, order);
        self.open_alloc_fast(on);
        self.open_free_fast(on);
    }

    /// Opens the Rust free fast path if `fast` is (`fast_now`), with the
    /// sampled region's frees gated off if samples may exist; closes it
    /// otherwise. Races with [`set_sampled`] as [`Self::open_alloc_fast`]
    /// does with [`set_profiling`]: each side writes, then reads the
    /// other's (sequentially consistent), and both gate the same way.
    fn open_free_fast(&self, fast_now: bool) {
        if !fast_now {
            self.free_gate.store(0, Ordering::SeqCst);
            return;
        }
        if SAMPLED.load(Ordering::SeqCst) {
            self.free_gate.store(sampled_gate(), Ordering::SeqCst);
            return;
        }
        self.free_gate.store(usize::MAX, Ordering::SeqCst);
        if SAMPLED.load(Ordering::SeqCst) {
            self.gate_frees_of_samples();
        }
    }

    /// Samples may exist from now on: if the Rust free fast path is open
    /// with no gate, it gates off the sampled region's frees (a closed one
    /// stays closed: a compare-exchange, as the background thread may be
    /// closing it).
    fn gate_frees_of_samples(&self) {
        let _ = self
            .free_gate
            .compare_exchange(usize::MAX, sampled_gate(), Ordering::SeqCst, Ordering::Relaxed);
    }

    /// Opens the allocation fast path if `fast` is (`fast_now`) and the
    /// bins' countdowns were set for the profile's current state (epoch);
    /// closes it otherwise.
    fn open_alloc_fast(&self, fast_now: bool) {
        let mine = self.epoch.load(Ordering::Relaxed);
        let open = fast_now && PROFILE_EPOCH.load(Ordering::SeqCst) == mine;
        self.alloc_fast.store(open, Ordering::SeqCst);
        if open && PROFILE_EPOCH.load(Ordering::SeqCst) != mine {
            self.alloc_fast.store(false, Ordering::SeqCst);
        }
    }

    /// Sets every bin's countdown for the profile's current state: on, a
    /// fresh draw for each class (`profile::draw_class_countdown`); off,
    /// the most pops (a placeholder); not yet configured, zero (a
    /// placeholder), so each class's next pop goes to `profile::alloc_due`,
    /// which reads the configuration. The lists must be the caller's.
    #[cold]
    fn sync_bins(&self) {
        let epoch = PROFILE_EPOCH.load(Ordering::SeqCst);
        let state = PROFILE.load(Ordering::SeqCst);
        let mut placeholder = u64::MAX;
        for (class, bin) in self.bins.iter().enumerate() {
            let pops = match state {
                PROFILE_OFF => MAX_POPS,
                PROFILE_ON if class > 0 => {
                    let (pops, cut) = draw::class_countdown(CLASS_SIZE[class] as usize);
                    if !cut {
                        placeholder &= !(1u64 << class);
                    }
                    pops
                }
                PROFILE_ON => MAX_POPS,
                _ => 0,
            };
            bin.set_pops_left(pops);
        }
        self.placeholder.store(placeholder, Ordering::Relaxed);
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// [`Self::sync_bins`] if the profile's state changed since the bins'
    /// countdowns were set. The lists must be the caller's.
    #[inline(always)]
    fn sync_if_stale(&self) {
        if self.epoch.load(Ordering::Relaxed) != PROFILE_EPOCH.load(Ordering::Acquire) {
            self.sync_bins();
        }
    }

    /// Runs `f` with the lists held: inside an operation, after any taking
    /// by the background thread is over.
    fn with_lists<R>(&self, f: impl FnOnce() -> R) -> R {
        self.begin();
        if !self.fast.load(Ordering::Acquire) {
            self.wait_if_taken();
        }
        let r = f();
        self.end();
        r
    }

    /// `alloc` when the list is empty or `fast` is clear (a new or hardened
    /// cache, or the background thread asking for it); ends the operation.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, class: usize) -> *mut u8 {
        self.alloc_slow_inner(class, false)
    }

    /// [`pop_counted`] off its fast path: as [`Self::alloc_slow`], after
    /// the allocation's pop of the class's countdown; [`DUE`] if that ran
    /// out (nothing taken). Also where the bins' countdowns follow a change
    /// of the profile's state and the allocation fast path opens again.
    fn alloc_slow_counted(&self, class: usize) -> *mut u8 {
        self.alloc_slow_inner(class, true)
    }

    #[inline(always)]
    fn alloc_slow_inner(&self, class: usize, counted: bool) -> *mut u8 {
        let _end = EndOnDrop(self);
        let fast = self.fast.load(Ordering::Relaxed);
        if !fast {
            self.wait_if_taken();
        }
        // The lists are ours.
        self.sync_if_stale();
        if fast && !self.alloc_fast.load(Ordering::Relaxed) {
            self.open_alloc_fast(fast);
        }
        let bin = &self.bins[class];
        if counted {
            let left = bin.pops_left();
            if left <= 0 {
                return DUE as *mut u8;
            }
            bin.set_pops_left(left - 1);
        }
        // The list may hold objects whatever `fast` says: the background
        // thread may have left the lists alone, a hardened cache holds
        // objects the fast path never took, and the counted fast path
        // leaves a list alone while `alloc_fast` is closed (after a start
        // or stop). A refill replaces the list, so it must be empty.
        // An empty list (the common case here) goes straight to the refill.
        if !bin.head.load(Ordering::Relaxed).is_null() {
            // SAFETY: the lists are ours (`fast` was set after `begin`, or
            // no one is taking them).
            let obj = unsafe { bin.pop(class) };
            if !obj.is_null() {
                return obj as *mut u8;
            }
        }
        self.refill(class)
    }

    /// `dealloc` when `fast` is clear; ends the operation. In hardened mode
    /// the free is checked first (see `harden`) and refused if wrong.
    ///
    /// # Safety
    /// As for [`dealloc`], except that hardened mode tolerates (reports and
    /// ignores) a pointer that is not a live object of `class`.
    #[cold]
    #[inline(never)]
    unsafe extern "C" fn dealloc_slow(&self, ptr: *mut u8, class: usize) {
        let _end = EndOnDrop(self);
        self.wait_if_taken();
        if let Some(c) = SizeClass::from_index(class).filter(|_| harden::enabled()) {
            // SAFETY: `check_free` reads `ptr` only once the page map says it
            // is an object start of `class`.
            if let Err(e) = unsafe { harden::check_free(ptr, c) } {
                crate::misuse::hardened_bad_free(ptr as usize, e);
                return;
            }
        }
        // SAFETY: the lists are ours; the caller gives up a free object of
        // this class (checked in hardened mode).
        if unsafe { self.bins[class].push(ptr as *mut FreeObject, &self.lows[class]) } {
            self.overflow_inner(class);
        }
    }

    /// Registers the cache; its bins stay cold until each first refills.
    fn activate(&self) {
        if crate::global::ensure_heap() && crate::thread_exit::arm() {
            self.state.store(ACTIVE, Ordering::Relaxed);
            register(self);
            // A hardened cache keeps every operation on the slow path.
            self.set_fast(!harden::active(), Ordering::Relaxed);
        }
    }

    /// Takes a batch from the central list (the lists are the caller's, and
    /// the list of `class` is empty: the batch replaces it). Inlined into
    /// the allocation slow paths, which are little more than this.
    #[inline(always)]
    fn refill(&self, class: usize) -> *mut u8 {
        self.note_activity();
        if self.state.load(Ordering::Relaxed) == NEW {
            self.activate();
        }
        let want = if self.state.load(Ordering::Relaxed) == ACTIVE {
            CLASS_BATCH[class] as usize
        } else {
            1
        };
        let chain = match self.unstash(class, want) {
            Some(chain) => chain,
            None => global::central_take(class, want),
        };
        if chain.count == 0 {
            return ptr::null_mut();
        }
        let obj = chain.head;
        let links = harden::links();
        let bin = &self.bins[class];
        if self.state.load(Ordering::Relaxed) == ACTIVE && bin.max.load(Ordering::Relaxed) == 0 {
            // The thread allocates this class now: its frees of it are
            // cached from here on, and what waited as remote goes home.
            bin.set_max(CLASS_CACHE_MAX[class] as u32);
            self.flush_remote(class);
        }
        // SAFETY: the chain links `count` free objects of this class.
        bin.head.store(
            unsafe { FreeObject::next_of(obj, links) },
            Ordering::Relaxed,
        );
        bin.set_count(chain.count as u32 - 1);
        if links.hardened() {
            // SAFETY: just taken from the chain, at least 8 bytes.
            unsafe { harden::clear_link(obj.cast()) };
        }
        obj as *mut u8
    }

    /// A list grew past its limit; ends the operation. `extern "C"`, as
    /// [`alloc_slow_or`] says why.
    #[cold]
    #[inline(never)]
    extern "C" fn overflow(&self, class: usize) {
        let _end = EndOnDrop(self);
        self.overflow_inner(class);
    }

    fn overflow_inner(&self, class: usize) {
        self.note_activity();
        let bin = &self.bins[class];
        if self.state.load(Ordering::Relaxed) == NEW {
            self.activate();
        }
        if self.state.load(Ordering::Relaxed) == ACTIVE && bin.max.load(Ordering::Relaxed) == 0 {
            self.to_remote(class);
            return;
        }
        let n = if self.state.load(Ordering::Relaxed) == ACTIVE {
            CLASS_BATCH[class] as usize
        } else {
            bin.count() as usize
        };
        self.flush(class, n, true);
    }

    /// Gives the oldest `n` cached objects of `class` (the end of the list)
    /// to the stash (`stash`, a whole batch, while there is room) or the
    /// central list and keeps the newest, which are likely still in the
    /// processor's cache for the thread's next allocations. Called by
    /// whoever holds the lists: the owner inside an operation, or the
    /// background thread while it takes the cache.
    fn flush(&self, class: usize, n: usize, stash: bool) {
        let bin = &self.bins[class];
        let count = bin.count() as usize;
        let n = n.min(count);
        if n == 0 {
            return;
        }
        let links = harden::links();
        if links.hardened() {
            return self.flush_checked(class, n, links, stash);
        }
        let keep = count - n;
        if keep == 0 {
            // SAFETY: the lists are ours; the whole list goes.
            return unsafe { self.give_oldest(class, ptr::null_mut(), 0, n, links, stash) };
        }
        let head = bin.head.load(Ordering::Relaxed);
        // The last object kept: `low` when the cut is at its place (the usual
        // overflow, see `Bin::low`), else found by walking.
        let last = if keep == bin.mark() {
            self.lows[class].load(Ordering::Relaxed)
        } else {
            let mut last = head;
            for _ in 1..keep {
                // SAFETY: the bin links `count > keep` free objects.
                last = unsafe { FreeObject::next_of(last, links) };
            }
            last
        };
        // SAFETY: the lists are ours; `last` is the `keep`-th cached object.
        unsafe { self.give_oldest(class, last, keep, n, links, stash) };
    }

    /// Gives the `n` cached objects after the `keep`-th (`last`) to the
    /// central list, the whole list when `keep` is 0. Sets `low` to the head
    /// when the new bottom makes it the object `max / 2 + 1` places up (else
    /// a push sets it when it reaches that place).
    ///
    /// # Safety
    /// The lists are the caller's; the list of `class` holds `keep + n`
    /// free objects, and `last` is its `keep`-th (unused when `keep` is 0).
    unsafe fn give_oldest(
        &self,
        class: usize,
        last: *mut FreeObject,
        keep: usize,
        n: usize,
        links: Links,
        stash: bool,
    ) {
        let bin = &self.bins[class];
        let oldest = if keep == 0 {
            bin.head.swap(ptr::null_mut(), Ordering::Relaxed)
        } else {
            // SAFETY: forwarded from the caller: `last` is a cached object
            // and the `n` after it end the list.
            unsafe {
                let oldest = FreeObject::next_of(last, links);
                FreeObject::set_next(last, ptr::null_mut(), links);
                oldest
            }
        };
        bin.set_count(keep as u32);
        if keep == bin.mark() {
            self.lows[class].store(bin.head.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        // SAFETY: the chain cut off holds `n` free objects of `class`, and
        // the lists are ours.
        if stash && unsafe { self.stash_batch(class, oldest, n, links) } {
            // Memory the program gave back, as a give to the central list
            // is: the background thread's idle reclaim is to know of it.
            crate::doorbell::note_free();
            crate::doorbell::maybe_start();
            return;
        }
        // SAFETY: as above.
        unsafe { global::central_give(class, oldest, n) };
    }

    /// Keeps the chain `head` of `n` objects of `class` in the stash if it
    /// is a whole batch, the thread caches, the stash has room and the idle
    /// reclaim can work (without `membarrier` an idle thread's stash would
    /// never go back); `false` (nothing done) otherwise. The link to the
    /// next batch is encoded as the objects' links are (hardened mode
    /// checks it when it is read).
    ///
    /// # Safety
    /// The chain links `n` free objects of `class`; the lists are the
    /// caller's.
    unsafe fn stash_batch(&self, class: usize, head: *mut FreeObject, n: usize, links: Links) -> bool {
        let bytes = n * CLASS_SIZE[class] as usize;
        let held = self.stash_bytes.load(Ordering::Relaxed);
        if n != CLASS_BATCH[class] as usize
            || (CLASS_SIZE[class] as usize) < STASH_MIN_SIZE
            || self.state.load(Ordering::Relaxed) != ACTIVE
            || MEMBARRIER.load(Ordering::Relaxed) == MB_REFUSED
            || held + bytes > STASH_BYTES
        {
            return false;
        }
        let stash = &self.stash[class];
        // SAFETY: `head` is a free object of `class` (at least
        // `STASH_MIN_SIZE` bytes, tested above) that the chain gives us.
        unsafe { *next_batch_slot(head) = links.encode(stash.head.load(Ordering::Relaxed)) };
        stash.head.store(head, Ordering::Relaxed);
        stash
            .batches
            .store(stash.batches.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.stash_bytes.store(held + bytes, Ordering::Relaxed);
        true
    }

    /// The newest stashed batch of `class` when a refill wants a whole
    /// batch (`want`) and there is one. The lists are the caller's. In
    /// hardened mode a link to the next batch that is not plausible (a
    /// write after free) is reported and the batches behind it are dropped
    /// (leaked), as a broken list link is in [`Self::flush_checked`].
    fn unstash(&self, class: usize, want: usize) -> Option<crate::central::Batch> {
        let stash = &self.stash[class];
        let head = stash.head.load(Ordering::Relaxed);
        if head.is_null() || want != CLASS_BATCH[class] as usize {
            return None;
        }
        let links = harden::links();
        let left = stash.batches.load(Ordering::Relaxed) - 1;
        // SAFETY: a stashed batch's first object holds the next batch.
        let mut next = links.decode(unsafe { *next_batch_slot(head) });
        let bytes = want * CLASS_SIZE[class] as usize;
        let mut held = self.stash_bytes.load(Ordering::Relaxed) - bytes;
        if links.hardened() && !link_ok(next, class, left) {
            crate::misuse::corrupt_list(head as usize);
            next = ptr::null_mut();
            held -= left as usize * bytes;
            stash.batches.store(0, Ordering::Relaxed);
        } else {
            stash.batches.store(left, Ordering::Relaxed);
        }
        stash.head.store(next, Ordering::Relaxed);
        self.stash_bytes.store(held, Ordering::Relaxed);
        Some(crate::central::Batch { head, count: want })
    }

    /// Gives every stashed batch of `class` back to its spans (the idle
    /// reclaim and thread exit: see [`global::central_give_to_spans`]).
    fn flush_stash(&self, class: usize) {
        while let Some(batch) = self.unstash(class, CLASS_BATCH[class] as usize) {
            // SAFETY: a stashed batch links a whole batch of free objects
            // of `class` through their first words.
            unsafe { global::central_give_to_spans(class, batch.head, batch.count) };
        }
    }

    /// [`Self::flush`] in hardened mode: every link is checked before it is
    /// followed; at a broken one (a write after free) the objects before it
    /// go back and the rest of the list is dropped (leaked).
    #[cold]
    fn flush_checked(&self, class: usize, n: usize, links: Links, stash: bool) {
        let bin = &self.bins[class];
        let count = bin.count() as usize;
        let keep = count - n;
        let head = bin.head.load(Ordering::Relaxed);
        let mut last = head;
        let mut cut: *mut FreeObject = ptr::null_mut();
        for i in 1..=count {
            if i == keep {
                cut = last;
            }
            // SAFETY: the bin links `count` free objects (checked so far).
            let next = unsafe { FreeObject::next_of(last, links) };
            if !link_ok(next, class, (count - i) as u32) {
                crate::misuse::corrupt_list(last as usize);
                bin.head.store(ptr::null_mut(), Ordering::Relaxed);
                bin.set_count(0);
                // SAFETY: `last` is the i-th cached object; the chain up to
                // it holds `i` free objects of `class`.
                unsafe {
                    FreeObject::set_next(last, ptr::null_mut(), links);
                    global::central_give(class, head, i);
                }
                return;
            }
            if i == count {
                break;
            }
            last = next;
        }
        // SAFETY: the lists are ours, every link checked; `cut` is the
        // `keep`-th cached object (null and unused when `keep` is 0).
        unsafe { self.give_oldest(class, cut, keep, n, links, stash) };
    }

    /// Moves what a cold bin holds (the object just pushed) to the remote
    /// list; a full batch there goes to the central list.
    fn to_remote(&self, class: usize) {
        let bin = &self.bins[class];
        let remote = &self.remote[class];
        let links = harden::links();
        let mut obj = bin.head.load(Ordering::Relaxed);
        let mut n = remote.count.load(Ordering::Relaxed);
        while !obj.is_null() {
            // SAFETY: cached objects are free and link through their first
            // word; the lists are the caller's.
            let next = unsafe { FreeObject::next_of(obj, links) };
            // SAFETY: as above.
            unsafe { FreeObject::set_next(obj, remote.head.load(Ordering::Relaxed), links) };
            remote.head.store(obj, Ordering::Relaxed);
            n += 1;
            obj = next;
        }
        bin.head.store(ptr::null_mut(), Ordering::Relaxed);
        bin.set_count(0);
        remote.count.store(n, Ordering::Relaxed);
        if n >= CLASS_BATCH[class] as u32 {
            self.flush_remote(class);
        }
    }

    /// Gives the remote list of `class` to the central list.
    fn flush_remote(&self, class: usize) {
        let remote = &self.remote[class];
        let n = remote.count.load(Ordering::Relaxed) as usize;
        if n == 0 {
            return;
        }
        let head = remote.head.load(Ordering::Relaxed);
        remote.head.store(ptr::null_mut(), Ordering::Relaxed);
        remote.count.store(0, Ordering::Relaxed);
        // SAFETY: the remote list links `n` free objects of `class`.
        unsafe { global::central_give(class, head, n) };
    }

    /// Returns every cached object, remote and stashed ones included (the
    /// lists must be the caller's).
    fn flush_all(&self) -> usize {
        let mut bytes = 0;
        for (class, size) in CLASS_SIZE.iter().enumerate().skip(1) {
            let count = self.bins[class].count() as usize;
            let remote = self.remote[class].count.load(Ordering::Relaxed) as usize;
            let stashed = self.stash[class].batches.load(Ordering::Relaxed) as usize
                * CLASS_BATCH[class] as usize;
            bytes += (count + remote + stashed) * *size as usize;
            self.flush(class, count, false);
            self.flush_remote(class);
            self.flush_stash(class);
        }
        bytes
    }

    /// Returns every cached object and switches to pass-through mode.
    fn exit(&self) {
        self.flush_all();
        for bin in &self.bins {
            bin.set_max(0);
        }
        self.state.store(EXITED, Ordering::Relaxed);
    }

    /// Bytes held by this cache (any thread may ask; a moment's view).
    fn cached_bytes(&self) -> usize {
        (1..NUM_CLASSES)
            .map(|c| {
                let n = self.bins[c].count()
                    + self.remote[c].count.load(Ordering::Relaxed);
                n as usize * CLASS_SIZE[c] as usize
            })
            .sum::<usize>()
            + self.stash_bytes.load(Ordering::Relaxed)
    }
}

/// Adds the calling thread's cache to the registry.
fn register(tc: &ThreadCache) {
    let p = tc as *const ThreadCache as *mut ThreadCache;
    let mut reg = REGISTRY.lock();
    tc.prev.store(ptr::null_mut(), Ordering::Relaxed);
    tc.next.store(reg.head, Ordering::Relaxed);
    if !reg.head.is_null() {
        // SAFETY: registered caches are live (registry lock held).
        unsafe { (*reg.head).prev.store(p, Ordering::Relaxed) };
    }
    reg.head = p;
}

/// Removes a registered cache (registry lock held by the caller).
fn unlink(reg: &mut Registry, tc: &ThreadCache) {
    let next = tc.next.load(Ordering::Relaxed);
    let prev = tc.prev.load(Ordering::Relaxed);
    // SAFETY: neighbours in the registry are live (registry lock held).
    unsafe {
        if prev.is_null() {
            reg.head = next;
        } else {
            (*prev).next.store(next, Ordering::Relaxed);
        }
        if !next.is_null() {
            (*next).prev.store(prev, Ordering::Relaxed);
        }
    }
}

/// Called by the pthread key destructor when a thread exits.
pub fn on_thread_exit() {
    with_cache(|tc| {
        tc.begin();
        if tc.state.load(Ordering::Relaxed) == ACTIVE {
            // Under the registry lock no background thread holds this cache.
            unlink(&mut REGISTRY.lock(), tc);
        }
        tc.exit();
        tc.end();
    });
}

/// Returns the calling thread's cached objects to the central lists.
pub fn flush_current_thread() {
    with_cache(|tc| {
        tc.begin();
        tc.wait_if_taken();
        tc.flush_all();
        tc.end();
    });
}

/// Bytes cached by all registered threads (a moment's view of each).
pub fn all_cached_bytes() -> usize {
    let reg = REGISTRY.lock();
    let mut bytes = 0;
    let mut p = reg.head;
    while !p.is_null() {
        // SAFETY: registered caches are live (registry lock held).
        let tc = unsafe { &*p };
        bytes += tc.cached_bytes();
        p = tc.next.load(Ordering::Relaxed);
    }
    bytes
}

/// Whether some registered thread keeps a stash that [`reclaim`] could
/// take: the background thread then looks again within a scan's time
/// instead of parking, so an idle thread's stash does not wait for the
/// next free elsewhere (a stash, unlike the lists, can hold megabytes).
pub fn stash_to_reclaim() -> bool {
    if !membarrier_ready() {
        return false;
    }
    let reg = REGISTRY.lock();
    let mut p = reg.head;
    while !p.is_null() {
        // SAFETY: registered caches are live (registry lock held).
        let tc = unsafe { &*p };
        if tc.stash_bytes.load(Ordering::Relaxed) != 0 {
            return true;
        }
        p = tc.next.load(Ordering::Relaxed);
    }
    false
}

const MB_UNKNOWN: u8 = 0;
const MB_READY: u8 = 1;
const MB_REFUSED: u8 = 2;
static MEMBARRIER: AtomicU8 = AtomicU8::new(MB_UNKNOWN);
/// Bytes taken from other threads' caches since start.
static RECLAIMED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes [`reclaim`] has taken from threads' caches since the process started.
pub fn reclaimed_bytes() -> usize {
    RECLAIMED_BYTES.load(Ordering::Relaxed)
}

fn membarrier_ready() -> bool {
    match MEMBARRIER.load(Ordering::Relaxed) {
        MB_READY => true,
        MB_REFUSED => false,
        _ => {
            let ok = linux::membarrier_register();
            MEMBARRIER.store(if ok { MB_READY } else { MB_REFUSED }, Ordering::Relaxed);
            ok
        }
    }
}

/// Which caches [`reclaim`] takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reclaim {
    /// Caches whose thread ran no slow path (refill or flush) since the
    /// previous scan (the background thread's, at most every 500 ms): idle
    /// threads, and threads that only hit their cache (taking theirs costs
    /// them one refill per class they use).
    Idle,
    /// [`Reclaim::Idle`]'s caches that keep a stash: the scans the
    /// background thread makes only because a stash is left
    /// ([`stash_to_reclaim`]) take nothing else, so they do not cost busy
    /// threads that only hit their caches a refill (the suite's
    /// cache-scratch ran 1.27x slower by the medians when they did).
    IdleStashes,
    /// Every cache whose thread is not inside an operation now, except the
    /// calling thread's (`release_now`).
    All,
}

/// Takes the objects cached by other threads back to the central lists,
/// following the protocol in the module overview. Returns the bytes taken.
/// Call with no allocator lock held.
pub fn reclaim(which: Reclaim) -> usize {
    if !membarrier_ready() {
        return 0;
    }
    let me = with_cache(|tc| tc as *const ThreadCache);
    let reg = REGISTRY.lock();
    // 1. Pick: holding something, not inside an operation now, and (for
    //    `Idle`) no slow path since the last scan.
    let mut picked = 0;
    let mut p = reg.head;
    while !p.is_null() {
        // SAFETY: registered caches are live (registry lock held).
        let tc = unsafe { &*p };
        let activity = tc.activity.load(Ordering::Relaxed);
        let idle = activity == tc.seen.load(Ordering::Relaxed);
        tc.seen.store(activity, Ordering::Relaxed);
        let eligible = match which {
            Reclaim::Idle => idle,
            Reclaim::IdleStashes => idle && tc.stash_bytes.load(Ordering::Relaxed) != 0,
            Reclaim::All => !ptr::eq(p, me),
        };
        if eligible && !tc.busy.load(Ordering::Relaxed) && tc.cached_bytes() > 0 {
            tc.taking.store(TAKING, Ordering::Relaxed);
            tc.fast.store(false, Ordering::Relaxed);
            tc.alloc_fast.store(false, Ordering::Relaxed);
            tc.free_gate.store(0, Ordering::Relaxed);
            picked += 1;
        }
        p = tc.next.load(Ordering::Relaxed);
    }
    if picked == 0 {
        return 0;
    }
    // 2. Every thread of the process passes a full barrier: an owner that
    //    starts an operation from now on sees `fast` clear.
    fence(Ordering::SeqCst);
    let barrier = linux::membarrier();
    fence(Ordering::SeqCst);
    // 3. Take the caches whose owner is outside an operation (any operation
    //    it starts now waits for `taking`), leave the rest.
    let mut bytes = 0;
    let mut p = reg.head;
    while !p.is_null() {
        // SAFETY: registered caches are live (registry lock held).
        let tc = unsafe { &*p };
        if tc.taking.load(Ordering::Relaxed) != NOT_TAKING {
            if barrier && !tc.busy.load(Ordering::Acquire) {
                bytes += tc.flush_all();
            }
            tc.set_fast(!harden::active(), Ordering::Release);
            if tc.taking.swap(NOT_TAKING, Ordering::Release) == TAKING_OWNER_ASLEEP {
                linux::futex_wake(&tc.taking);
            }
        }
        p = tc.next.load(Ordering::Relaxed);
    }
    RECLAIMED_BYTES.fetch_add(bytes, Ordering::Relaxed);
    bytes
}

/// `fork` support: the prepare handler takes the registry lock first.
pub fn lock_for_fork() {
    REGISTRY.lock_raw();
}

/// `fork` support, in the parent: releases the registry lock.
///
/// # Safety
/// The calling thread took it with [`lock_for_fork`].
pub unsafe fn unlock_after_fork_parent() {
    // SAFETY: forwarded from the caller.
    unsafe { REGISTRY.unlock_raw() };
}

/// `fork` support, in the child: only the calling thread exists, so the
/// registry holds its cache alone (other threads' caches are lost, as their
/// threads are), and `membarrier` must be registered again.
///
/// # Safety
/// The calling thread took the registry lock with [`lock_for_fork`].
pub unsafe fn reset_after_fork_child() {
    // SAFETY: taken by `lock_for_fork` on this thread, the only one.
    unsafe { REGISTRY.unlock_raw() };
    let mut reg = REGISTRY.lock();
    reg.head = ptr::null_mut();
    with_cache(|tc| {
        tc.taking.store(NOT_TAKING, Ordering::Relaxed);
        if tc.state.load(Ordering::Relaxed) == ACTIVE {
            tc.set_fast(!harden::active(), Ordering::Relaxed);
            tc.prev.store(ptr::null_mut(), Ordering::Relaxed);
            tc.next.store(ptr::null_mut(), Ordering::Relaxed);
            reg.head = tc as *const ThreadCache as *mut ThreadCache;
        }
    });
    MEMBARRIER.store(MB_UNKNOWN, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The static-TLS cache starts as zero bytes: that must be a fresh cache.
    #[test]
    fn new_cache_is_all_zero() {
        // SAFETY: every field is an atomic integer, flag or pointer, for
        // which zero is a valid value.
        let zero: ThreadCache = unsafe { core::mem::zeroed() };
        let new = ThreadCache::new();
        let r = Ordering::Relaxed;
        for (z, n) in zero.bins.iter().zip(&new.bins) {
            assert_eq!(z.head.load(r), n.head.load(r));
            assert_eq!(z.word.load(r), n.word.load(r));
            assert_eq!(z.max.load(r), n.max.load(r));
            assert_eq!(z.mark.load(r), n.mark.load(r));
        }
        for (z, n) in zero.remote.iter().zip(&new.remote) {
            assert_eq!(z.head.load(r), n.head.load(r));
            assert_eq!(z.count.load(r), n.count.load(r));
        }
        for (z, n) in zero.lows.iter().zip(&new.lows) {
            assert_eq!(z.load(r), n.load(r));
        }
        for (z, n) in zero.stash.iter().zip(&new.stash) {
            assert_eq!(z.head.load(r), n.head.load(r));
            assert_eq!(z.batches.load(r), n.batches.load(r));
        }
        assert_eq!(zero.stash_bytes.load(r), new.stash_bytes.load(r));
        assert_eq!(zero.busy.load(r), new.busy.load(r));
        assert_eq!(zero.epoch.load(r), new.epoch.load(r));
        assert_eq!(zero.placeholder.load(r), new.placeholder.load(r));
        assert_eq!(zero.forced.load(r), new.forced.load(r));
        assert_eq!(zero.free_gate.load(r), new.free_gate.load(r));
        assert_eq!(zero.activity.load(r), new.activity.load(r));
        assert_eq!(zero.fast.load(r), new.fast.load(r));
        assert_eq!(zero.taking.load(r), new.taking.load(r));
        assert_eq!(zero.state.load(r), new.state.load(r));
        assert_eq!(zero.next.load(r), new.next.load(r));
        assert_eq!(zero.prev.load(r), new.prev.load(r));
        assert_eq!(zero.seen.load(r), new.seen.load(r));
    }

    /// Runs `scenario` until it returns `Some`, flushing the thread's
    /// cache between tries: another test's `release_now` takes every
    /// other thread's cache (`Reclaim::All`), which can empty this
    /// thread's lists halfway through a scenario that counts on them (the
    /// likely cause of one CI run under load that saw 4 stashed batches
    /// for 3).
    fn until_untaken<T>(mut scenario: impl FnMut() -> Option<T>) -> T {
        for _ in 0..20 {
            if let Some(t) = scenario() {
                return t;
            }
            flush_current_thread();
        }
        panic!("20 tries, and the lists never held what the scenario expects (a real change, or the cache taken every time)");
    }

    /// An overflowing list gives the central list its oldest half and keeps
    /// the objects freed last, which are the ones still in the processor's
    /// cache, for the thread's next allocations.
    #[test]
    fn a_thread_gets_its_stashed_batches_back_and_gives_them_up_when_flushed() {
        std::thread::spawn(|| {
            let class = crate::size_class::class_for(16, 8).unwrap();
            let c = class.index();
            let batch = CLASS_BATCH[c] as usize;
            let n = 6 * batch;
            let objs = until_untaken(|| {
                let objs: Vec<*mut u8> = (0..n).map(|_| alloc(class)).collect();
                assert!(objs.iter().all(|p| !p.is_null()));
                for &p in &objs {
                    // SAFETY: allocated above for this class, freed once.
                    unsafe { dealloc(p, class) };
                }
                // Two batches on the list, the four the overflows cut off
                // in the stash: every byte is still this thread's.
                with_cache(|tc| {
                    tc.stash[c].batches.load(Ordering::Relaxed) == 4 && tc.cached_bytes() == n * 16
                })
                .then_some(objs)
            });
            // Allocating as many again takes back exactly those objects,
            // whatever other threads gave the central list meanwhile.
            let mut again: Vec<*mut u8> = (0..n).map(|_| alloc(class)).collect();
            let mut mine = objs.clone();
            again.sort();
            mine.sort();
            assert_eq!(again, mine);
            with_cache(|tc| assert_eq!(tc.stash_bytes.load(Ordering::Relaxed), 0));
            for &p in &objs {
                // SAFETY: allocated again above, freed once.
                unsafe { dealloc(p, class) };
            }
            flush_current_thread();
            with_cache(|tc| {
                assert_eq!(tc.stash[c].batches.load(Ordering::Relaxed), 0);
                assert_eq!(tc.cached_bytes(), 0);
            });
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_broken_link_between_stashed_batches_drops_the_batches_behind_it() {
        std::thread::spawn(|| {
            if !harden::links().hardened() {
                eprintln!("skipped: the check is hardened mode's (on with debug assertions)");
                return;
            }
            let class = crate::size_class::class_for(16, 8).unwrap();
            let c = class.index();
            let batch = CLASS_BATCH[c] as usize;
            until_untaken(|| {
                let objs: Vec<*mut u8> = (0..5 * batch).map(|_| alloc(class)).collect();
                assert!(objs.iter().all(|p| !p.is_null()));
                for &p in &objs {
                    // SAFETY: allocated above for this class, freed once.
                    unsafe { dealloc(p, class) };
                }
                // Two batches on the list, three stashed.
                with_cache(|tc| tc.stash[c].batches.load(Ordering::Relaxed) == 3).then_some(())
            });
            // A write after free hits the newest stashed batch's link to
            // the next.
            with_cache(|tc| {
                let head = tc.stash[c].head.load(Ordering::Relaxed);
                // SAFETY: a stashed, free object of 16 bytes.
                unsafe { *next_batch_slot(head) = 0x1234 as *mut FreeObject };
            });
            // The list's two batches, then a refill: the stash's newest
            // batch is handed out, the two behind the broken link dropped.
            let again: Vec<*mut u8> = (0..2 * batch + 1).map(|_| alloc(class)).collect();
            assert!(again.iter().all(|p| !p.is_null()));
            with_cache(|tc| {
                assert_eq!(tc.stash[c].batches.load(Ordering::Relaxed), 0);
                assert!(tc.stash[c].head.load(Ordering::Relaxed).is_null());
                assert_eq!(tc.stash_bytes.load(Ordering::Relaxed), 0);
            });
            for p in again {
                // SAFETY: allocated above, freed once.
                unsafe { dealloc(p, class) };
            }
            flush_current_thread();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_stash_holds_at_most_its_bound() {
        std::thread::spawn(|| {
            let class = crate::size_class::class_for(1024, 8).unwrap();
            let c = class.index();
            let size = CLASS_SIZE[c] as usize;
            let batch = CLASS_BATCH[c] as usize;
            let n = STASH_BYTES / size + 4 * batch;
            let objs: Vec<*mut u8> = (0..n).map(|_| alloc(class)).collect();
            assert!(objs.iter().all(|p| !p.is_null()));
            for &p in &objs {
                // SAFETY: allocated above for this class, freed once.
                unsafe { dealloc(p, class) };
            }
            with_cache(|tc| {
                let stashed = tc.stash_bytes.load(Ordering::Relaxed);
                assert!(stashed <= STASH_BYTES, "{stashed}");
                assert!(stashed + batch * size > STASH_BYTES, "{stashed}");
                // The rest went to the central list.
                assert!(tc.cached_bytes() <= STASH_BYTES + 2 * batch * size);
            });
            flush_current_thread();
            with_cache(|tc| assert_eq!(tc.cached_bytes(), 0));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn overflow_keeps_the_newest_half() {
        std::thread::spawn(|| {
            let class = crate::size_class::class_for(16, 8).unwrap();
            let batch = CLASS_BATCH[class.index()] as usize;
            let n = 3 * batch;
            let objs: Vec<*mut u8> = (0..n).map(|_| alloc(class)).collect();
            assert!(objs.iter().all(|p| !p.is_null()));
            for &p in &objs {
                // SAFETY: allocated above for this class, freed once.
                unsafe { dealloc(p, class) };
            }
            // One overflow (at 2 * batch + 1 objects) sent `batch` away; the
            // 2 * batch left are the last freed, newest first.
            let again: Vec<*mut u8> = (0..2 * batch).map(|_| alloc(class)).collect();
            let newest: Vec<*mut u8> = objs.iter().rev().take(2 * batch).copied().collect();
            assert_eq!(again, newest);
            for p in again {
                // SAFETY: allocated above, freed once.
                unsafe { dealloc(p, class) };
            }
        })
        .join()
        .unwrap();
    }
}
