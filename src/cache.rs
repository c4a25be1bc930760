//! Per-thread caches of small objects: the allocation fast path, and how the
//! background thread takes back what idle threads hold.
//!
//! Each thread has, per size class, an array of free objects' addresses
//! (slots, newest last) and a count. `alloc` pops, `dealloc` pushes: no
//! lock, no atomic read-modify-write, no system call, and no access to the
//! object's memory (a list linked through the objects would load a cold
//! word on every pop). An empty bin refills with a batch from the central
//! list; a full one (at [`CLASS_CACHE_MAX`]) first gives its oldest batch
//! back, so a thread holds at most the bytes checked in `size_class` tests
//! (2.6 MiB), and keeps its newest objects, the ones still in the
//! processor's cache. Batches move as arrays of pointers both ways
//! (`central.rs`). A thread's slots live in one block of metadata memory
//! ([`CACHE_SLOTS`] pointers, about 50 KiB, touched only for the classes it
//! uses), mapped when its cache activates and kept for the next thread when
//! it exits. An object freed by a thread that did not allocate it joins that
//! thread's cache, once that thread allocates the class too; until then (a
//! cold bin) it waits in the bin's slots as a remote object, which
//! allocation never takes (see [`ThreadCache::remote`]).
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
//!   `taking` to clear. The background thread owns the bins: it gives every
//!   cached object back to its central list.
//! * set: the owner is inside an operation that may not have seen `fast`;
//!   the bins are left alone.
//!
//! Either way it sets `fast` again (unless the cache is hardened), then
//! clears `taking` (release), and an owner that
//! waited continues with its (perhaps emptied) bins. Every field is an
//! atomic accessed with relaxed loads and stores by its owner (the same
//! instructions as plain ones on x86-64), so no access is a data race in
//! Rust's model; the ordering between the owner's `busy` store and its
//! `fast` load is what the barrier adds, as in TCMalloc's and liburcu's
//! asymmetric fences. Where `membarrier` is refused (an old kernel, a seccomp
//! filter), nothing is taken and caches behave as before. The price: the two
//! stores and the check add about 2.3 ns to an alloc/free pair on this
//! machine (`docs/design.md`).
//!
//! `fast` is clear in a new cache (a zeroed TLS block), so a thread's first
//! operations take the slow path, which activates the cache; in hardened
//! mode (`harden`) it stays clear, and every operation takes the slow path,
//! where frees are checked, every cached object carries the free mark, and
//! a pop that finds the mark overwritten (a write after free) drops the
//! object instead of handing it out.
//!
//! The cache lives in a `const`-initialised `thread_local!` without `Drop`, so
//! access compiles to a plain TLS load and never allocates or registers a
//! destructor. Thread exit is caught with a pthread key destructor instead
//! (`hooks::thread_exit_dtor`): it leaves the registry, returns every cached
//! object, then leaves the cache in pass-through mode for any allocation made
//! later in the thread's teardown.

use crate::freelist::FreeObject;
use crate::global;
use crate::harden;
use crate::lock::SpinLock;
use crate::lock_rank::Rank;
use crate::os::linux::{self, LinuxOs};
use crate::os::Os;
use crate::size_class::{
    SizeClass, CACHE_SLOTS, CLASS_BATCH, CLASS_CACHE_MAX, CLASS_SIZE, NUM_CLASSES,
};
use crate::units::PAGE_SIZE;
use core::ptr;
use core::sync::atomic::{
    compiler_fence, fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};

/// A cached free object's address. Slots are atomics for the same reason
/// as every field here (see the module overview); the owner inside an
/// operation, and the background thread while it holds the cache, are the
/// only ones to touch them, so runs of them are also read and written as
/// plain pointers (`slots_mut`).
type Slot = AtomicPtr<FreeObject>;

/// One size class's cached objects. Written by the owner, or by the
/// background thread while it holds the cache (see the module overview).
struct Bin {
    /// This class's slots in the thread's slot block; null until the cache
    /// activates, and again after its thread exits.
    slots: AtomicPtr<Slot>,
    /// Objects cached: the first `count` slots, the newest last.
    count: AtomicU32,
    /// The bin's capacity, [`CLASS_CACHE_MAX`]; 0 while the bin is cold
    /// (before the thread's first refill of this class: every push then
    /// takes the slow path, to the remote objects) and whenever the cache
    /// is not active (new or exited: pass-through).
    max: AtomicU32,
}

impl Bin {
    // Unused in code with `initial-exec-tls` (zero bytes stand for it).
    #[cfg_attr(feature = "initial-exec-tls", allow(dead_code))]
    const fn new() -> Self {
        Bin {
            slots: AtomicPtr::new(ptr::null_mut()),
            count: AtomicU32::new(0),
            max: AtomicU32::new(0),
        }
    }

    /// Takes the newest cached object, or null when the bin is empty. The
    /// fast path.
    ///
    /// # Safety
    /// The bin is the caller's (the owner inside an operation with `fast`
    /// set).
    #[inline(always)]
    unsafe fn pop_fast(&self) -> *mut FreeObject {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return ptr::null_mut();
        }
        self.count.store(count - 1, Ordering::Relaxed);
        // SAFETY: a bin with objects is active: `slots` points at `max >=
        // count` slots.
        unsafe { &*self.slots.load(Ordering::Relaxed).add(count as usize - 1) }
            .load(Ordering::Relaxed)
    }

    /// Caches free object `obj` if the bin has room; returns whether it
    /// did. The fast path, as for [`Bin::pop_fast`].
    ///
    /// # Safety
    /// As for [`Bin::pop_fast`]; `obj` is a free object of this bin's class.
    #[inline(always)]
    unsafe fn push_fast(&self, obj: *mut FreeObject) -> bool {
        let count = self.count.load(Ordering::Relaxed);
        if count >= self.max.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: `max > count`: the bin is active and `slots` points at
        // `max` slots.
        unsafe { &*self.slots.load(Ordering::Relaxed).add(count as usize) }
            .store(obj, Ordering::Relaxed);
        self.count.store(count + 1, Ordering::Relaxed);
        true
    }

    /// Slots `from..to` as plain pointers.
    ///
    /// # Safety
    /// The bin is the caller's and active, `from <= to <= ` its capacity,
    /// and the slice is dropped before the bin is touched otherwise.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slots_mut(&self, from: usize, to: usize) -> &mut [*mut FreeObject] {
        let base = self.slots.load(Ordering::Relaxed);
        // SAFETY: `AtomicPtr<T>` has the layout of `*mut T`; the slots are
        // in bounds and, the bin being the caller's, no one else accesses
        // them meanwhile.
        unsafe { core::slice::from_raw_parts_mut(base.add(from).cast(), to - from) }
    }
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
    bins: [Bin; NUM_CLASSES],
    /// Objects of a cold bin's class freed by this thread, in that bin's
    /// first slots (its count stays 0, so allocation never takes them). An
    /// object freed by a thread that only frees its class is usually
    /// another thread's, and its neighbours on the same cache line are in
    /// use there: handing it to this thread's next allocation would make
    /// the two threads write one line (false sharing, the suite's
    /// cache-scratch). A batch of them, or all when the bin warms up, goes
    /// to the central list.
    remote: [AtomicU32; NUM_CLASSES],
    /// The slot block (null until the cache activates).
    block: AtomicPtr<Slot>,
    /// Set by the owner while it runs an operation on its bins.
    busy: AtomicBool,
    /// Slow paths (refills and flushes) of the owner: a thread whose count
    /// did not move between two scans counts as idle. Owner only.
    activity: AtomicU32,
    /// Set while the owner may take the fast path: the cache is active, not
    /// hardened, and the background thread is not asking for it (it clears
    /// this to ask, and sets it again when done). Clear in a new cache
    /// (zero bytes), so its first operations take the slow path.
    fast: AtomicBool,
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
}

impl ThreadCache {
    // Unused in code with `initial-exec-tls` (zero bytes stand for it).
    #[cfg_attr(feature = "initial-exec-tls", allow(dead_code))]
    const fn new() -> Self {
        ThreadCache {
            bins: [const { Bin::new() }; NUM_CLASSES],
            remote: [const { AtomicU32::new(0) }; NUM_CLASSES],
            block: AtomicPtr::new(ptr::null_mut()),
            busy: AtomicBool::new(false),
            activity: AtomicU32::new(0),
            fast: AtomicBool::new(false),
            taking: AtomicU32::new(NOT_TAKING),
            state: AtomicU8::new(NEW),
            next: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
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

/// The registered (active) caches, linked through their `next`/`prev`, and
/// the slot blocks exited threads left, linked through their first slot.
struct Registry {
    head: *mut ThreadCache,
    spare_blocks: *mut Slot,
}

// SAFETY: the pointers are only followed under the registry lock, and a cache
// leaves the registry (under the lock) before its thread's storage goes away;
// a spare block belongs to no thread.
unsafe impl Send for Registry {}

/// Bytes of one thread's slot block (whole pages, so it can be discarded).
const BLOCK_BYTES: usize = (CACHE_SLOTS * core::mem::size_of::<Slot>()).next_multiple_of(PAGE_SIZE);

/// Gives the pages of an emptied slot block back to the OS (its slots are
/// never read before written again).
///
/// # Safety
/// `block` is a slot block whose cache holds nothing (or no cache), and no
/// one writes it meanwhile.
unsafe fn discard_block(block: *mut Slot) {
    // SAFETY: a slot block is a whole-page metadata mapping of `LinuxOs`,
    // holding nothing anyone needs (forwarded from the caller).
    unsafe { LinuxOs::PRIVATE.discard_metadata(block as usize, BLOCK_BYTES) };
}

/// Ranks `Registry` in the lock order (`lock_rank.rs`): central lists and
/// the heap are taken under it.
static REGISTRY: SpinLock<Registry> = SpinLock::new(
    Rank::Registry,
    Registry {
        head: ptr::null_mut(),
        spare_blocks: ptr::null_mut(),
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

/// Allocates an object of `class`; null when out of memory.
#[inline(always)]
pub fn alloc(class: SizeClass) -> *mut u8 {
    let class = class.index();
    with_cache(|tc| {
        tc.begin();
        // SAFETY: a `SizeClass` index is below NUM_CLASSES, the bins' length.
        let bin = unsafe { tc.bins.get_unchecked(class) };
        if tc.fast.load(Ordering::Acquire) {
            // SAFETY: the bins are ours (`fast` was set after `begin`).
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
        // SAFETY: a `SizeClass` index is below NUM_CLASSES, the bins' length.
        let bin = unsafe { tc.bins.get_unchecked(class) };
        // SAFETY: the bins are ours (`fast` was set after `begin`); the
        // caller gives up a free object of this class.
        if !unsafe { bin.push_fast(ptr as *mut FreeObject) } {
            // Ends the operation itself.
            // SAFETY: as above.
            return unsafe { tc.overflow(class, ptr as *mut FreeObject) };
        }
        tc.end();
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

    /// Marks the end of an operation: every access to the bins before it is
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
    /// cache: wait until it is done, after which the bins are ours again.
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

    /// `alloc` when the bin is empty or `fast` is clear (a new or hardened
    /// cache, or the background thread asking for it); ends the operation.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, class: usize) -> *mut u8 {
        let _end = EndOnDrop(self);
        // With `fast` set the fast path found the bin empty: refill.
        if !self.fast.load(Ordering::Relaxed) {
            self.wait_if_taken();
            // The background thread may have left the bins alone, and a
            // hardened cache holds objects the fast path never took.
            let obj = self.pop_checked(class);
            if !obj.is_null() {
                return obj as *mut u8;
            }
        }
        self.refill(class)
    }

    /// Takes the newest cached object of `class`, or null; in hardened mode
    /// an object whose free mark was overwritten is reported and dropped,
    /// and the mark of the one handed out is cleared. The bins must be the
    /// caller's.
    fn pop_checked(&self, class: usize) -> *mut FreeObject {
        let bin = &self.bins[class];
        loop {
            let count = bin.count.load(Ordering::Relaxed) as usize;
            if count == 0 {
                return ptr::null_mut();
            }
            bin.count.store(count as u32 - 1, Ordering::Relaxed);
            // SAFETY: the bin is ours and holds `count` objects.
            let obj = unsafe { self.bins[class].slots_mut(count - 1, count) }[0];
            // SAFETY: a cached object is free, ours, at least 8 bytes.
            if let Some(obj) = unsafe { hand_out(obj) } {
                return obj;
            }
        }
    }

    /// `dealloc` when `fast` is clear; ends the operation. In hardened mode
    /// the free is checked first (see `harden`) and refused if wrong.
    ///
    /// # Safety
    /// As for [`dealloc`], except that hardened mode tolerates (reports and
    /// ignores) a pointer that is not a live object of `class`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, ptr: *mut u8, class: usize) {
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
        // SAFETY: the bins are ours; the caller gives up a free object of
        // this class (checked in hardened mode).
        unsafe { self.push_slow(class, ptr as *mut FreeObject) };
    }

    /// The fast path found the bin of `class` full (or cold, or the cache
    /// not active): caches `obj` the slow way; ends the operation.
    ///
    /// # Safety
    /// As for [`Self::push_slow`].
    #[cold]
    #[inline(never)]
    unsafe fn overflow(&self, class: usize, obj: *mut FreeObject) {
        let _end = EndOnDrop(self);
        // SAFETY: forwarded from the caller.
        unsafe { self.push_slow(class, obj) };
    }

    /// Caches free object `obj` of `class`: after giving the bin's oldest
    /// batch away when it is full, among the remote objects when the bin is
    /// cold, straight to the central list when the cache is not active. In
    /// hardened mode the object gets its free mark first.
    ///
    /// # Safety
    /// The bins are the caller's; `obj` is a free object of `class`.
    unsafe fn push_slow(&self, class: usize, obj: *mut FreeObject) {
        if self.state.load(Ordering::Relaxed) == NEW {
            self.note_activity();
            self.activate();
        }
        // (The configuration is loaded: activating loads it.)
        if harden::enabled() {
            // SAFETY: forwarded from the caller: a free object, ours.
            unsafe { harden::mark_free(obj.cast()) };
        }
        if self.state.load(Ordering::Relaxed) != ACTIVE {
            // SAFETY: forwarded from the caller.
            unsafe { global::central_give(class, &[obj]) };
            return global::after_central(true);
        }
        let bin = &self.bins[class];
        let max = bin.max.load(Ordering::Relaxed) as usize;
        if max == 0 {
            if self.to_remote(class, obj) {
                global::after_central(true);
            }
            return;
        }
        let count = bin.count.load(Ordering::Relaxed) as usize;
        let gave = count >= max;
        if gave {
            self.note_activity();
            self.flush(class, CLASS_BATCH[class] as usize);
        }
        let count = bin.count.load(Ordering::Relaxed) as usize;
        // SAFETY: the bin is ours, active, and has room after the flush.
        let slot = unsafe { bin.slots_mut(count, count + 1) };
        slot[0] = obj;
        bin.count.store(count as u32 + 1, Ordering::Relaxed);
        if gave {
            global::after_central(true);
        }
    }

    /// Registers the cache with a slot block; its bins stay cold until each
    /// first refills. Without memory for the block, or a heap, the cache
    /// stays new and passes every object through.
    fn activate(&self) {
        if !(crate::global::ensure_heap() && crate::thread_exit::arm()) {
            return;
        }
        let Some(block) = register(self) else {
            return;
        };
        self.block.store(block, Ordering::Relaxed);
        let mut at = 0;
        for (class, bin) in self.bins.iter().enumerate().skip(1) {
            // SAFETY: the block holds CACHE_SLOTS slots, the sum of the
            // classes' limits.
            bin.slots.store(unsafe { block.add(at) }, Ordering::Relaxed);
            at += CLASS_CACHE_MAX[class] as usize;
        }
        self.state.store(ACTIVE, Ordering::Relaxed);
        // A hardened cache keeps every operation on the slow path.
        self.fast.store(!harden::active(), Ordering::Relaxed);
    }

    /// Takes a batch from the central list (the bins are the caller's, and
    /// the bin of `class` is empty).
    fn refill(&self, class: usize) -> *mut u8 {
        self.note_activity();
        if self.state.load(Ordering::Relaxed) == NEW {
            self.activate();
        }
        // (The configuration is loaded: activating loads it.)
        let hardened = harden::enabled();
        if self.state.load(Ordering::Relaxed) != ACTIVE {
            let mut one = [ptr::null_mut()];
            let got = global::central_take(class, &mut one);
            global::after_central(false);
            if got == 1 && hardened {
                // SAFETY: just taken: free, ours, at least 8 bytes.
                unsafe { harden::clear_link(one[0].cast()) };
            }
            return one[0].cast();
        }
        let bin = &self.bins[class];
        let mut gave = false;
        if bin.max.load(Ordering::Relaxed) == 0 {
            // The thread allocates this class now: its frees of it are
            // cached from here on, and what waited as remote goes home.
            gave = self.flush_remote(class);
            bin.max
                .store(CLASS_CACHE_MAX[class] as u32, Ordering::Relaxed);
        }
        // SAFETY: the bin is ours, active and empty; its capacity is at
        // least a batch. (The central list calls nothing outside the
        // allocator, so nothing else runs on this cache meanwhile.)
        let got = global::central_take(class, unsafe {
            bin.slots_mut(0, CLASS_BATCH[class] as usize)
        });
        if hardened {
            // SAFETY: the bin is ours and holds the `got` objects just taken.
            for &obj in unsafe { bin.slots_mut(0, got) }.iter() {
                // SAFETY: a free object, ours, at least 8 bytes.
                unsafe { harden::mark_free(obj.cast()) };
            }
        }
        bin.count.store(got as u32, Ordering::Relaxed);
        let obj = self.pop_checked(class);
        // The bin is whole: the background thread may be started (which
        // allocates, on this cache).
        global::after_central(gave);
        if obj.is_null() && got != 0 {
            // Every object taken was dropped (hardened mode): try again.
            return self.refill(class);
        }
        obj as *mut u8
    }

    /// Gives the oldest `n` cached objects of `class` to the central list
    /// and keeps the newest, which are likely still in the processor's
    /// cache for the thread's next allocations. Called by whoever holds the
    /// bins: the owner inside an operation, or the background thread while
    /// it takes the cache.
    /// The caller calls `global::after_central` afterwards; returns whether
    /// anything went.
    fn flush(&self, class: usize, n: usize) -> bool {
        let bin = &self.bins[class];
        let count = bin.count.load(Ordering::Relaxed) as usize;
        let n = n.min(count);
        if n == 0 {
            return false;
        }
        // SAFETY: the bin is ours and holds `count >= n` objects: free
        // objects of `class`.
        unsafe { global::central_give(class, bin.slots_mut(0, n)) };
        // SAFETY: the bin is ours; the `count - n` kept move to the front.
        unsafe {
            let base = bin.slots.load(Ordering::Relaxed);
            ptr::copy(base.add(n), base, count - n);
        }
        bin.count.store((count - n) as u32, Ordering::Relaxed);
        true
    }

    /// Keeps `obj`, freed into the cold bin of `class`, as a remote object;
    /// a full batch of them goes to the central list (then `true`: the
    /// caller calls `global::after_central`).
    fn to_remote(&self, class: usize, obj: *mut FreeObject) -> bool {
        let remote = self.remote[class].load(Ordering::Relaxed) as usize;
        // SAFETY: the bin is ours and active; remote objects stay below a
        // batch, within its capacity.
        let slot = unsafe { self.bins[class].slots_mut(remote, remote + 1) };
        slot[0] = obj;
        self.remote[class].store(remote as u32 + 1, Ordering::Relaxed);
        if remote + 1 < CLASS_BATCH[class] as usize {
            return false;
        }
        self.note_activity();
        self.flush_remote(class)
    }

    /// Gives the remote objects of `class` to the central list; returns
    /// whether there were any (the caller calls `global::after_central`).
    fn flush_remote(&self, class: usize) -> bool {
        let n = self.remote[class].load(Ordering::Relaxed) as usize;
        if n == 0 {
            return false;
        }
        // SAFETY: the bin is ours and cold (or warming up, still empty):
        // its first `n` slots hold the remote objects, free objects of
        // `class`.
        unsafe { global::central_give(class, self.bins[class].slots_mut(0, n)) };
        self.remote[class].store(0, Ordering::Relaxed);
        true
    }

    /// Returns every cached object, remote ones included (the bins must be
    /// the caller's).
    fn flush_all(&self) -> usize {
        let mut bytes = 0;
        for (class, size) in CLASS_SIZE.iter().enumerate().skip(1) {
            let count = self.bins[class].count.load(Ordering::Relaxed) as usize;
            let remote = self.remote[class].load(Ordering::Relaxed) as usize;
            bytes += (count + remote) * *size as usize;
            self.flush(class, count);
            self.flush_remote(class);
        }
        if bytes != 0 {
            global::after_central(true);
        }
        bytes
    }

    /// Returns every cached object and switches to pass-through mode; the
    /// slot block is the caller's to keep for another thread.
    fn exit(&self) -> *mut Slot {
        self.flush_all();
        for bin in &self.bins {
            bin.max.store(0, Ordering::Relaxed);
            bin.slots.store(ptr::null_mut(), Ordering::Relaxed);
        }
        self.state.store(EXITED, Ordering::Relaxed);
        self.block.swap(ptr::null_mut(), Ordering::Relaxed)
    }

    /// Bytes held by this cache (any thread may ask; a moment's view).
    fn cached_bytes(&self) -> usize {
        (1..NUM_CLASSES)
            .map(|c| {
                let n = self.bins[c].count.load(Ordering::Relaxed)
                    + self.remote[c].load(Ordering::Relaxed);
                n as usize * CLASS_SIZE[c] as usize
            })
            .sum()
    }
}

/// Hands out `obj`, just taken from a cache or the central list: in
/// hardened mode only if its free mark is intact (else reported, dropped:
/// `None`), and with the mark cleared.
///
/// # Safety
/// `obj` is a free object of at least 8 bytes that the caller owns.
unsafe fn hand_out(obj: *mut FreeObject) -> Option<*mut FreeObject> {
    // A cache holds objects only once active: the configuration is loaded.
    if harden::enabled() {
        // SAFETY: forwarded from the caller.
        if !unsafe { harden::free_mark_intact(obj.cast()) } {
            crate::misuse::written_after_free(obj as usize);
            return None;
        }
        // SAFETY: as above.
        unsafe { harden::clear_link(obj.cast()) };
    }
    Some(obj)
}

/// Adds the calling thread's cache to the registry with a slot block (a
/// spare one, else freshly mapped); `None` (not registered) when no memory
/// is left for the block.
fn register(tc: &ThreadCache) -> Option<*mut Slot> {
    let p = tc as *const ThreadCache as *mut ThreadCache;
    let mut fresh = ptr::null_mut();
    if REGISTRY.lock().spare_blocks.is_null() {
        // Mapped outside the lock (a system call, once per thread at most).
        fresh = LinuxOs::PRIVATE.map_metadata(BLOCK_BYTES)? as *mut Slot;
    }
    let mut reg = REGISTRY.lock();
    let block = if fresh.is_null() && !reg.spare_blocks.is_null() {
        let block = reg.spare_blocks;
        // SAFETY: a spare block links to the next through its first slot.
        reg.spare_blocks = unsafe { &*block }.load(Ordering::Relaxed) as *mut Slot;
        block
    } else if fresh.is_null() {
        // Another thread took the spare block meanwhile.
        drop(reg);
        fresh = LinuxOs::PRIVATE.map_metadata(BLOCK_BYTES)? as *mut Slot;
        reg = REGISTRY.lock();
        fresh
    } else {
        fresh
    };
    tc.prev.store(ptr::null_mut(), Ordering::Relaxed);
    tc.next.store(reg.head, Ordering::Relaxed);
    if !reg.head.is_null() {
        // SAFETY: registered caches are live (registry lock held).
        unsafe { (*reg.head).prev.store(p, Ordering::Relaxed) };
    }
    reg.head = p;
    Some(block)
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
        let block = tc.exit();
        if !block.is_null() {
            // SAFETY: the cache gave everything back and let go of it.
            unsafe { discard_block(block) };
            let mut reg = REGISTRY.lock();
            // SAFETY: the block is no thread's now; its first slot links it.
            unsafe { &*block }.store(reg.spare_blocks.cast(), Ordering::Relaxed);
            reg.spare_blocks = block;
        }
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
            Reclaim::All => !ptr::eq(p, me),
        };
        if eligible && !tc.busy.load(Ordering::Relaxed) && tc.cached_bytes() > 0 {
            tc.taking.store(TAKING, Ordering::Relaxed);
            tc.fast.store(false, Ordering::Relaxed);
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
                // SAFETY: the cache is ours until `taking` clears, and now
                // empty; its block is its own.
                unsafe { discard_block(tc.block.load(Ordering::Relaxed)) };
            }
            tc.fast.store(!harden::active(), Ordering::Release);
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
            tc.fast.store(!harden::active(), Ordering::Relaxed);
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
            assert_eq!(z.slots.load(r), n.slots.load(r));
            assert_eq!(z.count.load(r), n.count.load(r));
            assert_eq!(z.max.load(r), n.max.load(r));
        }
        for (z, n) in zero.remote.iter().zip(&new.remote) {
            assert_eq!(z.load(r), n.load(r));
        }
        assert_eq!(zero.block.load(r), new.block.load(r));
        assert_eq!(zero.busy.load(r), new.busy.load(r));
        assert_eq!(zero.activity.load(r), new.activity.load(r));
        assert_eq!(zero.fast.load(r), new.fast.load(r));
        assert_eq!(zero.taking.load(r), new.taking.load(r));
        assert_eq!(zero.state.load(r), new.state.load(r));
        assert_eq!(zero.next.load(r), new.next.load(r));
        assert_eq!(zero.prev.load(r), new.prev.load(r));
        assert_eq!(zero.seen.load(r), new.seen.load(r));
    }

    /// A full bin gives the central list its oldest half and keeps
    /// the objects freed last, which are the ones still in the processor's
    /// cache, for the thread's next allocations.
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
            // One overflow (at the push of object 2 * batch + 1) sent the
            // oldest `batch` away; the 2 * batch left are the last freed,
            // handed out newest first.
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
