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

impl<'a, 'b> Walk<'a, 'b> {
    fn new(marks: &'a [usize], entry: &'a mut Entry<'b>, out: &'a mut [usize]) -> Self {
        Walk {
            marks,
            entry,
            seen_mark: false,
            past_entry: false,
            out,
            len: 0,
        }
    }

    /// Whether every frame from here on is recorded (as [`Self::visit`]
    /// does once past the frames it leaves out).
    #[inline(always)]
    fn recording(&self) -> bool {
        self.marks.is_empty() || self.past_entry
    }

    /// Takes frame `ip` (in the function starting at `start()`): leaves it
    /// out or records it. `false` when the walk is done.
    #[inline(always)]
    fn visit(&mut self, ip: usize, start: impl FnOnce() -> usize) -> bool {
        if !self.marks.is_empty() && !self.past_entry {
            let start = start();
            if self.marks.contains(&start) {
                self.seen_mark = true;
                return true;
            }
            if !self.seen_mark {
                // Below the slow path (this walk's own frames).
                return true;
            }
            match self.entry {
                Entry::Skip(entries) => {
                    if entries.contains(&start) {
                        return true;
                    }
                    self.past_entry = true;
                }
                Entry::Learn {
                    until,
                    learned,
                    count,
                } => {
                    if start == *until {
                        self.past_entry = true;
                    } else {
                        if *count < learned.len() {
                            learned[*count] = start;
                        }
                        *count += 1;
                        return true;
                    }
                }
            }
        }
        if ip == 0 || self.len == self.out.len() {
            return false;
        }
        self.out[self.len] = ip;
        self.len += 1;
        true
    }
}

extern "C" fn step(ctx: *mut c_void, arg: *mut c_void) -> _Unwind_Reason_Code {
    // SAFETY: `arg` is the `Walk` that `backtrace` passed, alive for the
    // whole `_Unwind_Backtrace` call.
    let walk = unsafe { &mut *(arg as *mut Walk) };
    // SAFETY: `ctx` is the unwinder's context for this frame.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    // SAFETY: as above.
    if walk.visit(ip, || unsafe { _Unwind_GetRegionStart(ctx) }) {
        URC_NO_REASON
    } else {
        URC_END_OF_STACK
    }
}

/// Fills `out` with the return addresses of the calling thread's frames,
/// innermost first, and returns how many. With `marks` (the start
/// addresses of the functions of the allocator's slow path), the frames up
/// to the outermost marked one are left out, and above them the entry
/// frames as `entry` says, so the first address is in the program's own
/// code. (The slow path must be called, not jumped to, or the frame that
/// called it is lost.) Without a marked frame nothing is kept.
///
/// Walks with the cached call-frame rules ([`fast`]) where it can, else
/// with libgcc's unwinder. May call `malloc` (a first walk of a library's
/// tables); the caller guards against re-entering itself.
// Inlined: the caller builds `entry` just before, and reading it back
// through a call stalls on the stores (a 16-byte load of two 8-byte
// stores); the frames below `marks` are left out either way.
#[inline]
pub fn backtrace(marks: &[usize], entry: &mut Entry, out: &mut [usize]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let Entry::Skip(entries) = entry {
        let mut skip = Entry::Skip(entries);
        let mut walk = Walk::new(marks, &mut skip, &mut *out);
        if fast::walk(&mut walk) {
            return walk.len;
        }
    }
    libgcc_backtrace(marks, entry, out)
}

/// [`backtrace`] with libgcc's unwinder alone.
#[inline(never)]
fn libgcc_backtrace(marks: &[usize], entry: &mut Entry, out: &mut [usize]) -> usize {
    let mut walk = Walk::new(marks, entry, out);
    // SAFETY: `step` only touches `walk`, which outlives the call.
    unsafe { _Unwind_Backtrace(step, &mut walk as *mut Walk as *mut c_void) };
    walk.len
}

/// Whether the fast walk finds the same frames as libgcc's unwinder from
/// here (after its own frames); if not, it is turned off for good. The
/// heap profile asks once, when it first samples.
pub fn check_fast_walk() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let (mut a, mut b) = ([0usize; 64], [0usize; 64]);
        let n = agree_probe(false, &mut a);
        let m = agree_probe(true, &mut b);
        // The first frame is the return address into this function: a
        // different call for each.
        let same = n == m && n > 1 && a[1..n] == b[1..m];
        if !same {
            fast::ENABLED.store(false, core::sync::atomic::Ordering::Relaxed);
        }
        same
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Walks the stack above itself with the fast walk (`fast`) or libgcc's.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn agree_probe(fast: bool, out: &mut [usize]) -> usize {
    let marks = [agree_probe as fn(bool, &mut [usize]) -> usize as usize];
    let n = if fast {
        let mut skip = Entry::Skip(&[]);
        let mut walk = Walk::new(&marks, &mut skip, &mut *out);
        if fast::walk(&mut walk) {
            walk.len
        } else {
            0
        }
    } else {
        libgcc_backtrace(&marks, &mut Entry::Skip(&[]), out)
    };
    core::hint::black_box(n)
}

/// The fast walk: each frame's call-frame rule (`os::cfi`) is looked up
/// once per code address and kept in a cache, so a walk is a few loads per
/// frame where libgcc's unwinder decodes the tables every time.
#[cfg(target_arch = "x86_64")]
mod fast {
    use super::super::cfi::{rule_at, Rule};
    use super::Walk;
    use core::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

    /// Off after a disagreement with libgcc's unwinder (`check_fast_walk`).
    pub(super) static ENABLED: AtomicBool = AtomicBool::new(true);

    const SLOTS: usize = 4096;
    /// The first frame's key bit: its rule is the one at an instruction,
    /// not after a call.
    const FIRST: usize = 1 << 63;

    /// One cached rule: `key` the code address (0 while being written),
    /// `rule` packed ([`pack`]), `func` the function's start.
    struct Slot {
        key: AtomicUsize,
        rule: AtomicU64,
        func: AtomicUsize,
    }

    static CACHE: [Slot; SLOTS] = [const {
        Slot {
            key: AtomicUsize::new(0),
            rule: AtomicU64::new(0),
            func: AtomicUsize::new(0),
        }
    }; SLOTS];
    /// One writer at a time (others skip caching: they lose nothing but
    /// the time of the next lookup).
    static WRITING: AtomicBool = AtomicBool::new(false);

    const TAG_STEP: u64 = 0;
    const TAG_END: u64 = 1;
    const TAG_NO_ENTRY: u64 = 2;
    const TAG_UNSUPPORTED: u64 = 3;

    /// Bits 0-1 the kind, 2 `cfa_rbp`, 3 whether `rbp_off` is given,
    /// 8-23 `ra_off`, 24-39 `rbp_off`, 40-63 `cfa_off` (24 bits; larger
    /// frames are unsupported).
    fn pack(rule: Rule) -> (u64, usize) {
        match rule {
            Rule::Step {
                cfa_rbp,
                cfa_off,
                ra_off,
                rbp_off,
                func,
            } if (-(1 << 23)..1 << 23).contains(&cfa_off) => (
                TAG_STEP
                    | (cfa_rbp as u64) << 2
                    | (rbp_off.is_some() as u64) << 3
                    | (ra_off as u16 as u64) << 8
                    | (rbp_off.unwrap_or(0) as u16 as u64) << 24
                    | ((cfa_off as u32 as u64) & 0xff_ffff) << 40,
                func,
            ),
            Rule::End { func } => (TAG_END, func),
            Rule::NoEntry => (TAG_NO_ENTRY, 0),
            _ => (TAG_UNSUPPORTED, 0),
        }
    }

    fn unpack(v: u64, func: usize) -> Rule {
        match v & 3 {
            TAG_STEP => Rule::Step {
                cfa_rbp: v >> 2 & 1 != 0,
                cfa_off: ((v as i64) >> 40) as i32,
                ra_off: (v >> 8) as u16 as i16,
                rbp_off: (v >> 3 & 1 != 0).then_some((v >> 24) as u16 as i16),
                func,
            },
            TAG_END => Rule::End { func },
            TAG_NO_ENTRY => Rule::NoEntry,
            _ => Rule::Unsupported,
        }
    }

    /// The rule at `key` (see `rule_at` for `lookup` and `target`).
    fn cached(key: usize, lookup: usize, target: usize) -> Rule {
        let slot = &CACHE[(key ^ key >> 12 ^ key >> 24) % SLOTS];
        if slot.key.load(Ordering::Acquire) == key {
            let (v, f) = (slot.rule.load(Ordering::Relaxed), slot.func.load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            // Unchanged key: `v` and `f` were written for it (a writer
            // clears the key first).
            if slot.key.load(Ordering::Relaxed) == key {
                return unpack(v, f);
            }
        }
        let rule = rule_at(lookup, target);
        if !WRITING.swap(true, Ordering::Acquire) {
            let (v, f) = pack(rule);
            slot.key.store(0, Ordering::Relaxed);
            fence(Ordering::Release);
            slot.rule.store(v, Ordering::Relaxed);
            slot.func.store(f, Ordering::Relaxed);
            slot.key.store(key, Ordering::Release);
            WRITING.store(false, Ordering::Release);
        }
        rule
    }

    /// Frames whose rules a thread keeps from its last walk.
    const MEMO_DEPTH: usize = 64;

    /// What a thread's last walk found at one depth: the frame's rule (by
    /// its code address), and where that rule led from the frame's stack
    /// pointer (and `rbp`, where the rule reads the CFA from it).
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Seen {
        /// The code address (`FIRST` set at depth 0); 0 for none.
        key: usize,
        rule: u64,
        func: usize,
        /// The frame's stack pointer when `cfa`, `ra_at` and `bp_at` were
        /// worked out from the rule; 0 when they were not.
        sp: usize,
        /// Its `rbp` then (compared only where the CFA is `rbp`-based).
        bp: usize,
        cfa: usize,
        ra_at: usize,
        /// Where the caller's `rbp` is saved; 0 where `rbp` is unchanged.
        bp_at: usize,
    }

    const UNSEEN: Seen = Seen {
        key: 0,
        rule: 0,
        func: 0,
        sp: 0,
        bp: 0,
        cfa: 0,
        ra_at: 0,
        bp_at: 0,
    };

    /// The frames of a thread's last walk, depth by depth: a program samples
    /// from the same few stacks, so most frames of a walk are where they
    /// were the last time. A frame at the same code address gets its rule
    /// from here instead of the shared cache (one line of the thread's own
    /// memory, where the cache is a random line of 96 KiB); one at the same
    /// stack pointer (and `rbp`) too also gets the addresses the rule led
    /// to, which depend on nothing else, so the step is two loads.
    struct Memo {
        seen: [Seen; MEMO_DEPTH],
    }

    std::thread_local! {
        /// Set while the thread walks (`MEMO` is borrowed).
        static BUSY: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
        static MEMO: core::cell::UnsafeCell<Memo> = const {
            core::cell::UnsafeCell::new(Memo { seen: [UNSEEN; MEMO_DEPTH] })
        };
    }

    /// The rule of frame `depth` at `key` (see `cached`), from the thread's
    /// memo where it holds that frame, else from the cache (and memoised,
    /// with no addresses yet).
    fn rule_of(memo: &mut Option<&mut Memo>, depth: usize, key: usize, lookup: usize, target: usize) -> Rule {
        match memo {
            Some(m) if depth < MEMO_DEPTH => {
                let s = &mut m.seen[depth];
                if s.key == key {
                    return unpack(s.rule, s.func);
                }
                let rule = cached(key, lookup, target);
                let (v, f) = pack(rule);
                *s = Seen {
                    key,
                    rule: v,
                    func: f,
                    ..UNSEEN
                };
                rule
            }
            _ => cached(key, lookup, target),
        }
    }

    /// Walks the calling thread's stack into `walk`; `false` (with `walk`
    /// to be discarded) where a frame's rule is not one this walk follows.
    #[inline(never)]
    pub(super) fn walk(walk: &mut Walk) -> bool {
        if !ENABLED.load(Ordering::Relaxed) {
            return false;
        }
        let (pc, sp, bp): (usize, usize, usize);
        // SAFETY: reads the instruction pointer, the stack pointer and
        // `rbp` into registers; touches no memory.
        unsafe {
            core::arch::asm!(
                "lea {pc}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                pc = out(reg) pc,
                sp = out(reg) sp,
                bp = out(reg) bp,
                options(nomem, nostack, preserves_flags),
            );
        }
        // The steps run in frames below this one, which stays live: every
        // read is above `sp`.
        if BUSY.with(|b| b.replace(true)) {
            // A walk inside a walk (a signal handler that allocates): no
            // memo, which the outer walk holds.
            return steps(walk, pc, sp, bp, None);
        }
        let done = MEMO.with(|m| {
            // SAFETY: this thread's memo, borrowed by this walk alone
            // (`BUSY` was clear and is set until the walk ends).
            let m = unsafe { &mut *m.get() };
            steps(walk, pc, sp, bp, Some(m))
        });
        BUSY.with(|b| b.set(false));
        done
    }

    /// The packed rule's bit for a CFA worked out from `rbp` (see `pack`).
    const CFA_RBP: u64 = 1 << 2;

    /// Where the memo's frame at `depth` leads from `(key, sp, bp)`, if it
    /// was worked out from that same state: `(cfa, ra_at, bp_at)`.
    #[inline(always)]
    fn seen_step(memo: &Option<&mut Memo>, depth: usize, key: usize, sp: usize, bp: usize) -> Option<(usize, usize, usize, usize)> {
        let s = memo.as_ref()?.seen.get(depth)?;
        let same = s.key == key && s.sp == sp && s.rule & 3 == TAG_STEP && (s.rule & CFA_RBP == 0 || s.bp == bp);
        same.then_some((s.func, s.cfa, s.ra_at, s.bp_at))
    }

    /// How [`replay`] ended.
    enum Replay {
        /// The walk is done (the outermost frame, or `out` full).
        Done,
        /// The frame at `depth` is not in the memo's state.
        Differs,
    }

    /// Records and steps over the frames from `depth` up for as long as the
    /// memo holds each in the same state ([`seen_step`]'s test), the walk
    /// past the frames it leaves out: per frame, the test, the record and
    /// two loads. From depth 1 (the key of every frame above the first is
    /// its address).
    #[inline(always)]
    fn replay(walk: &mut Walk, m: &Memo, depth: &mut usize, ip: &mut usize, sp: &mut usize, bp: &mut usize) -> Replay {
        let mut len = walk.len;
        let end = walk.out.len();
        let result = loop {
            let Some(s) = m.seen.get(*depth) else {
                break Replay::Differs;
            };
            // `sp` is set only with a step's rule (see `steps`).
            if s.key != *ip || s.sp != *sp || (s.rule & CFA_RBP != 0 && s.bp != *bp) {
                break Replay::Differs;
            }
            if len == end {
                break Replay::Done;
            }
            walk.out[len] = *ip;
            len += 1;
            // SAFETY: the return address's and saved `rbp`'s slots that the
            // same rule found from the same frame state, checked then by
            // `step_of` (see `steps`).
            unsafe {
                if s.bp_at != 0 {
                    *bp = (s.bp_at as *const usize).read();
                }
                *ip = (s.ra_at as *const usize).read();
            }
            *sp = s.cfa;
            *depth += 1;
            if *ip == 0 {
                break Replay::Done;
            }
        };
        walk.len = len;
        result
    }

    /// The walk's steps from the frame of `walk` (`pc`, `sp`, `bp`).
    fn steps(walk: &mut Walk, pc: usize, mut sp: usize, mut bp: usize, mut memo: Option<&mut Memo>) -> bool {
        // This frame's rule is the one at `pc` itself; every other frame's
        // is the one at its return address, found one byte back (the call).
        let (mut ip, mut key, mut depth) = (pc, pc | FIRST, 0);
        loop {
            if depth > 0 && walk.recording() {
                if let Some(m) = memo.as_deref() {
                    // Past the allocator's frames, the memo's frames in the
                    // same state are only recorded and stepped over.
                    match replay(walk, m, &mut depth, &mut ip, &mut sp, &mut bp) {
                        Replay::Done => return true,
                        Replay::Differs => key = ip,
                    }
                }
            }
            let (cfa, ra_at, bp_at) = match seen_step(&memo, depth, key, sp, bp) {
                // The same frame in the same state as in an earlier walk:
                // the rule leads to the same addresses (they depend on
                // nothing else), which passed the checks below then.
                Some((func, cfa, ra_at, bp_at)) => {
                    if !walk.visit(ip, || func) {
                        return true;
                    }
                    (cfa, ra_at, bp_at)
                }
                None => {
                    let (lookup, target) = if depth == 0 { (pc, pc + 1) } else { (ip - 1, ip) };
                    let rule = rule_of(&mut memo, depth, key, lookup, target);
                    let Some(found) = step_of(walk, rule, ip, sp, bp) else {
                        return true;
                    };
                    let Ok((cfa, ra_at, bp_at)) = found else {
                        return false;
                    };
                    if let Some(s) = memo.as_mut().and_then(|m| m.seen.get_mut(depth)) {
                        (s.sp, s.bp, s.cfa, s.ra_at, s.bp_at) = (sp, bp, cfa, ra_at, bp_at);
                    }
                    (cfa, ra_at, bp_at)
                }
            };
            // SAFETY: the return address's slot in the frame between this
            // frame's stack pointer and its CFA, as the tables say (the
            // same slot libgcc's unwinder reads; checked by `step_of`).
            let ra = unsafe { (ra_at as *const usize).read() };
            if bp_at != 0 {
                // SAFETY: the saved `rbp` slot, in the same frame (checked
                // by `step_of`).
                bp = unsafe { (bp_at as *const usize).read() };
            }
            sp = cfa;
            ip = ra;
            if ip == 0 {
                return true;
            }
            depth += 1;
            key = ip;
        }
    }

    /// Frame `ip`'s step by `rule` from `sp` and `bp`: visits the frame,
    /// then `Some(Ok((cfa, ra_at, bp_at)))` with the caller's CFA and the
    /// slots of its return address and its `rbp` (0: unchanged); `None`
    /// when the walk is done; `Some(Err(()))` where the rule is not one
    /// this walk follows, or its addresses are not a caller's frame above
    /// this one (a table this walk misreads, left to libgcc).
    fn step_of(walk: &mut Walk, rule: Rule, ip: usize, sp: usize, bp: usize) -> Option<Result<(usize, usize, usize), ()>> {
        let (cfa_rbp, cfa_off, ra_off, rbp_off, func) = match rule {
            Rule::Step {
                cfa_rbp,
                cfa_off,
                ra_off,
                rbp_off,
                func,
            } => (cfa_rbp, cfa_off, ra_off, rbp_off, func),
            Rule::End { func } => {
                walk.visit(ip, || func);
                return None;
            }
            Rule::NoEntry => {
                walk.visit(ip, || 0);
                return None;
            }
            Rule::Unsupported => return Some(Err(())),
        };
        if !walk.visit(ip, || func) {
            return None;
        }
        let cfa = (if cfa_rbp { bp } else { sp }).wrapping_add(cfa_off as isize as usize);
        let ra_at = cfa.wrapping_add(ra_off as isize as usize);
        if cfa <= sp || cfa - sp > 1 << 30 || ra_at < sp || ra_at >= cfa || ra_at % 8 != 0 {
            return Some(Err(()));
        }
        let mut bp_at = 0;
        if let Some(off) = rbp_off {
            bp_at = cfa.wrapping_add(off as isize as usize);
            if bp_at < sp || bp_at >= cfa || bp_at % 8 != 0 {
                return Some(Err(()));
            }
        }
        Some(Ok((cfa, ra_at, bp_at)))
    }
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
        // A large block takes `malloc`'s other slow path.
        before();
        libc::free(libc::malloc(64 * 1024));
    }
    call_cxx_new(before);
    core::hint::black_box(());
}

/// [`call_c_allocator`] for the C++ `operator new` forms, each freed with
/// its `delete`, where this allocator's library defines them (the
/// `LD_PRELOAD` library does): a program's own, which may take its own
/// locks, are never called from inside the allocator. So they are called
/// only where the process's `malloc` is this code's too: in a Rust
/// program that holds the allocator (where the executable is the object
/// that holds this code), an `operator new` the executable defines is the
/// program's.
fn call_cxx_new(before: &dyn Fn()) {
    use core::ffi::c_void;
    type Delete = unsafe extern "C" fn(*mut c_void);
    type DeleteAligned = unsafe extern "C" fn(*mut c_void, usize);
    // The `std::nothrow_t` argument: a reference to an empty struct.
    static NOTHROW: u8 = 0;
    let nt = &NOTHROW as *const u8 as *const c_void;
    let ours = |name: &core::ffi::CStr| {
        let f = super::linux::global_symbol(name);
        (!f.is_null() && same_object(f, call_c_allocator as fn(&dyn Fn()) as *const c_void))
            .then_some(f)
    };
    if ours(c"malloc").is_none() {
        return;
    }
    for (new, nothrow, delete) in [
        (c"_Znwm", c"_ZnwmRKSt9nothrow_t", c"_ZdlPv"),
        (c"_Znam", c"_ZnamRKSt9nothrow_t", c"_ZdaPv"),
    ] {
        let (Some(new), Some(nothrow), Some(delete)) = (ours(new), ours(nothrow), ours(delete)) else {
            continue;
        };
        // SAFETY: these are the Itanium C++ ABI's signatures of the forms
        // named; each block is freed once by the matching `delete`.
        unsafe {
            let new: unsafe extern "C-unwind" fn(usize) -> *mut c_void = core::mem::transmute(new);
            let nothrow: unsafe extern "C-unwind" fn(usize, *const c_void) -> *mut c_void =
                core::mem::transmute(nothrow);
            let delete: Delete = core::mem::transmute(delete);
            before();
            delete(new(64));
            before();
            delete(nothrow(64, nt));
        }
    }
    for (new, nothrow, delete) in [
        (c"_ZnwmSt11align_val_t", c"_ZnwmSt11align_val_tRKSt9nothrow_t", c"_ZdlPvSt11align_val_t"),
        (c"_ZnamSt11align_val_t", c"_ZnamSt11align_val_tRKSt9nothrow_t", c"_ZdaPvSt11align_val_t"),
    ] {
        let (Some(new), Some(nothrow), Some(delete)) = (ours(new), ours(nothrow), ours(delete)) else {
            continue;
        };
        // SAFETY: as above.
        unsafe {
            let new: unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void = core::mem::transmute(new);
            let nothrow: unsafe extern "C-unwind" fn(usize, usize, *const c_void) -> *mut c_void =
                core::mem::transmute(nothrow);
            let delete: DeleteAligned = core::mem::transmute(delete);
            before();
            delete(new(64, 64), 64);
            before();
            delete(nothrow(64, 64, nt), 64);
        }
    }
}

/// Whether code addresses `a` and `b` lie in the same loaded object (the
/// executable or one library), by `dladdr`.
fn same_object(a: *const core::ffi::c_void, b: *const core::ffi::c_void) -> bool {
    // SAFETY: dladdr only writes the `Dl_info` it is given; zero bytes are
    // a valid one (null pointers).
    unsafe {
        let mut ia: libc::Dl_info = core::mem::zeroed();
        let mut ib: libc::Dl_info = core::mem::zeroed();
        libc::dladdr(a, &mut ia) != 0 && libc::dladdr(b, &mut ib) != 0 && ia.dli_fbase == ib.dli_fbase
    }
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
    #[cfg(target_arch = "x86_64")]
    fn the_fast_walk_finds_the_frames_libgcc_finds() {
        assert!(check_fast_walk(), "the fast walk disagrees with libgcc here");
        // Deeper, through the marks and a learned entry, from a thread of
        // its own too: the same frames either way (from the same call, so
        // every return address is the same).
        let run = || {
            let marks = [marked_either as Either as usize];
            let entries = [entry_either as Either as usize];
            let mut outs = [[0usize; 64]; 2];
            let mut lens = [0; 2];
            for (i, fast) in [true, false].into_iter().enumerate() {
                lens[i] = probe_either(fast, &marks, &entries, &mut outs[i]);
            }
            assert!(lens[0] >= 3, "{lens:?}");
            assert_eq!(lens[0], lens[1]);
            // But for the return address into this closure: the compiler
            // may unroll the loop into two calls.
            assert_eq!(outs[0][0], outs[1][0]);
            assert_eq!(outs[0][2..lens[0]], outs[1][2..lens[1]]);
        };
        run();
        std::thread::spawn(run).join().unwrap();
        // Cached now: the same again.
        run();
    }

    /// Walks (fast or libgcc's) `d` frames of `nest` deeper.
    #[inline(never)]
    fn nest(d: usize, fast: bool, out: &mut [usize]) -> usize {
        let n = if d == 0 {
            let marks = [marked_either as Either as usize];
            let entries = [entry_either as Either as usize];
            probe_either(fast, &marks, &entries, out)
        } else {
            nest(d - 1, fast, out)
        };
        core::hint::black_box(n)
    }

    /// Both walks from `d` frames of `nest` deep, and the index of the
    /// return address into this function (two calls, two addresses).
    #[inline(never)]
    fn both_at(d: usize) -> ([[usize; 64]; 2], [usize; 2], usize) {
        let mut outs = [[0usize; 64]; 2];
        let a = nest(d, true, &mut outs[0]);
        let b = nest(d, false, &mut outs[1]);
        core::hint::black_box((outs, [a, b], d + 2))
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_fast_walk_agrees_with_libgcc_as_the_stack_changes_under_its_memo() {
        assert!(check_fast_walk(), "the fast walk disagrees with libgcc here");
        // The memo keeps each depth's frame and where its rule led: the
        // same depth at another address, the same address at another
        // stack pointer, and the same frame again must all walk as
        // libgcc does.
        let run = || {
            for d in [3, 1, 5, 3, 3, 0, 5, 2, 2, 7, 0, 0] {
                let (outs, lens, into_here) = both_at(d);
                assert!(lens[0] >= d + 3, "depth {d}: {lens:?}");
                assert_eq!(lens[0], lens[1], "depth {d}");
                for i in (0..lens[0]).filter(|&i| i != into_here) {
                    assert_eq!(outs[0][i], outs[1][i], "depth {d}, frame {i}");
                }
            }
        };
        run();
        std::thread::spawn(run).join().unwrap();
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_short_output_ends_the_walk_from_the_memo_too() {
        assert!(check_fast_walk(), "the fast walk disagrees with libgcc here");
        // The second walk of the same stack replays the memo; both stop
        // where `out` is full, as libgcc's walk does.
        for len in [1, 2, 4] {
            let mut full = [0usize; 64];
            let n = nest(6, false, &mut full);
            assert!(n > len + 2);
            for _ in 0..2 {
                let mut out = [0usize; 64];
                assert_eq!(nest(6, true, &mut out[..len]), len);
                assert_eq!(out[..len], full[..len], "out of {len}");
                assert!(out[len..].iter().all(|&a| a == 0));
            }
        }
    }

    type Either = fn(bool, &[usize], &[usize], &mut [usize]) -> usize;

    #[inline(never)]
    fn probe_either(fast: bool, marks: &[usize], entries: &[usize], out: &mut [usize]) -> usize {
        let n = entry_either(fast, marks, entries, out);
        core::hint::black_box(n)
    }

    #[inline(never)]
    fn entry_either(fast: bool, marks: &[usize], entries: &[usize], out: &mut [usize]) -> usize {
        let n = marked_either(fast, marks, entries, out);
        core::hint::black_box(n)
    }

    /// Walks with `backtrace` (the fast walk) or libgcc's alone.
    #[inline(never)]
    fn marked_either(fast: bool, marks: &[usize], entries: &[usize], out: &mut [usize]) -> usize {
        let n = if fast {
            backtrace(marks, &mut Entry::Skip(entries), out)
        } else {
            libgcc_backtrace(marks, &mut Entry::Skip(entries), out)
        };
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
        // Skipping it: left out are the walk's own frames (`backtrace`
        // and the walker it calls), `marked` and `entry`; kept: `probe`,
        // this test and its callers, as in the full walk but for the
        // return address into this function (a different call).
        let mut cut = [0usize; 64];
        let m = probe(&marks, &mut Entry::Skip(&learned[..1]), &mut cut);
        let k = n - m;
        assert!(k == 3 || k == 4, "cut walk {m} frames, full walk {n}");
        assert_eq!(cut[0], all[k], "the first kept frame is `probe`");
        assert_eq!(&cut[2..m], &all[k + 2..n]);
    }
}
