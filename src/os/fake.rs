//! A recording fake of the OS layer for unit tests: hands out address ranges
//! that are never dereferenced (or, when `backed`, real memory), maps
//! metadata as fresh anonymous memory (zero pages that cost nothing until
//! touched: the policy fuzz target builds a heap per input), and records
//! every call so tests can check order and granularity.

use super::{Advice, Os};
use core::cell::RefCell;

/// One recorded OS call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Call {
    Reserve {
        addr: usize,
        len: usize,
    },
    Commit {
        addr: usize,
        len: usize,
    },
    Advise {
        addr: usize,
        len: usize,
        advice: Advice,
    },
}

/// The fake. Not thread-safe; tests use one per thread.
#[derive(Default)]
pub struct FakeOs {
    /// Every call, in order.
    pub calls: RefCell<Vec<Call>>,
    next: RefCell<usize>,
    /// When set, `commit` fails.
    pub refuse_commit: RefCell<bool>,
    /// When set, `advise` with this advice fails with this errno.
    pub fail_advice: RefCell<Option<(Advice, i32)>>,
    /// The fake clock, in milliseconds.
    pub clock: RefCell<u64>,
    /// What `resident_pages` answers (512 when `None`).
    pub resident: RefCell<Option<usize>>,
    /// When set (before the first `reserve`), reservations are real, zeroed
    /// memory, so code above the page heap (the
    /// central lists, which link objects through their memory) can run on
    /// it. `advise` still only records: DONTNEED does not zero anything.
    pub backed: bool,
    /// With `backed`: `MADV_DONTNEED` really drops the pages of the
    /// reservation (they read as zero afterwards, as on the kernel), so a
    /// release under a live object destroys its contents where a test sees
    /// it (the `heap` fuzz driver).
    pub dontneed_zeroes: bool,
    /// The simulated kernel's base page in bytes (0: 4 KiB). A DONTNEED
    /// that starts inside one fails with EINVAL and one that ends inside one
    /// covers all of it, as on the kernel (with `dontneed_zeroes`, the
    /// whole page is zeroed).
    pub page_size: usize,
    /// Bytes of metadata given back with `discard_metadata` (dropped or
    /// zeroed here, as the kernel would).
    pub discarded_metadata: RefCell<usize>,
    /// Memory handed out (address, length), unmapped when the fake is dropped.
    mapped: RefCell<Vec<(*mut u8, usize)>>,
}

impl FakeOs {
    /// `len` bytes of fresh zeroed memory aligned to `align`, kept until the
    /// fake is dropped.
    fn map_zeroed(&self, len: usize, align: usize) -> Option<*mut u8> {
        let total = len.checked_add(align.max(4096))?;
        // The kernel's metadata mapping: fresh, zeroed, private.
        let raw = super::linux::LinuxOs::PRIVATE.map_metadata(total)?;
        self.mapped.borrow_mut().push((raw.cast(), total));
        Some((raw as usize).next_multiple_of(align.max(1)) as *mut u8)
    }
}

impl Drop for FakeOs {
    fn drop(&mut self) {
        for (p, len) in self.mapped.borrow_mut().drain(..) {
            // SAFETY: mapped in `map_zeroed` with this length; the heap that
            // used it is being dropped with this fake.
            unsafe { libc::munmap(p.cast(), len) };
        }
    }
}

// SAFETY: tests never share a FakeOs between threads at once; the page heap
// that owns one lives behind a lock.
unsafe impl Sync for FakeOs {}
// SAFETY: see `Sync`.
unsafe impl Send for FakeOs {}

// SAFETY: `reserve` hands out addresses that are only recorded, never
// dereferenced, by the heaps of the tests, or (when `backed`) real zeroed
// memory of its own; `map_metadata` returns real, zeroed memory of its own
// (fresh anonymous mappings);
// `commit` and `advise` only record.
unsafe impl Os for FakeOs {
    fn reserve(&self, len: usize, align: usize) -> Option<usize> {
        if self.backed {
            let p = self.map_zeroed(len, align)?;
            let addr = p as usize;
            self.calls.borrow_mut().push(Call::Reserve { addr, len });
            return Some(addr);
        }
        let mut next = self.next.borrow_mut();
        if *next == 0 {
            *next = 0x1000_0000_0000;
        }
        let addr = (*next + align - 1) & !(align - 1);
        *next = addr + len;
        self.calls.borrow_mut().push(Call::Reserve { addr, len });
        Some(addr)
    }

    unsafe fn commit(&self, addr: usize, len: usize) -> bool {
        if *self.refuse_commit.borrow() {
            return false;
        }
        self.calls.borrow_mut().push(Call::Commit { addr, len });
        true
    }

    fn map_metadata(&self, len: usize) -> Option<*mut u8> {
        self.map_zeroed(len, 4096)
    }

    unsafe fn discard_metadata(&self, addr: usize, len: usize) {
        // Whole pages are dropped as the kernel would (they read as zero and
        // cost nothing until touched again); a partial page is zeroed.
        if addr % 4096 == 0 && len % 4096 == 0 {
            // SAFETY: the caller gives a range of metadata this fake mapped;
            // dropping its pages of a private anonymous mapping zeroes them.
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        } else {
            // SAFETY: the caller gives a range of metadata this fake mapped.
            unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len) };
        }
        *self.discarded_metadata.borrow_mut() += len;
    }

    unsafe fn advise(&self, addr: usize, len: usize, advice: Advice) -> Result<(), i32> {
        if let Some((a, errno)) = *self.fail_advice.borrow() {
            if a == advice {
                return Err(errno);
            }
        }
        let page = self.page_size.max(4096);
        if addr % page != 0 {
            return Err(22);
        }
        self.calls
            .borrow_mut()
            .push(Call::Advise { addr, len, advice });
        // The kernel rounds the length up to whole pages.
        let len = len.next_multiple_of(page);
        if self.backed && self.dontneed_zeroes && advice == Advice::DontNeed {
            // SAFETY: with `backed`, the heap's addresses are this fake's own
            // private anonymous mapping; the caller releases memory that
            // holds no data (the `Os::advise` contract).
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        }
        Ok(())
    }

    fn resident_pages(&self, _addr: usize, len: usize) -> Option<usize> {
        Some(self.resident.borrow().unwrap_or(len / 4096))
    }

    fn now_ms(&self) -> u64 {
        *self.clock.borrow()
    }
}

/// What [`check_advice_rules`] holds a call sequence to.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// A partial DONTNEED only inside a huge page marked NOHUGEPAGE.
    pub must_mark: bool,
    /// The kernel's base page in bytes: every DONTNEED covers whole ones
    /// (the kernel would round a shorter one up over live data).
    pub page_size: usize,
    /// The kernel's huge pages are not 2 MiB (`Policy::no_huge`): no
    /// HUGEPAGE or COLLAPSE ever, and with `must_mark` every DONTNEED,
    /// whole units too (parts of a larger huge page), only inside a unit
    /// marked NOHUGEPAGE.
    pub no_huge: bool,
}

impl Rules {
    /// This machine's geometry.
    pub fn marking(must_mark: bool) -> Rules {
        Rules {
            must_mark,
            page_size: 4096,
            no_huge: false,
        }
    }
}

/// The release rules over a recorded call sequence: flags only on whole
/// aligned 2 MiB units; a DONTNEED stays inside one unit and covers whole
/// kernel pages; when `must_mark`, a partial DONTNEED only inside a unit
/// marked NOHUGEPAGE (and not re-marked HUGEPAGE since), under `no_huge`
/// every DONTNEED.
pub fn check_advice_rules(calls: &[Call], base: usize, rules: Rules) -> Result<(), String> {
    use crate::units::HUGE_SIZE;
    let mut nohuge = std::collections::HashSet::new();
    for (n, call) in calls.iter().enumerate() {
        let Call::Advise { addr, len, advice } = *call else {
            continue;
        };
        let off = addr - base;
        let hp = off / HUGE_SIZE;
        match advice {
            Advice::NoHugePage | Advice::HugePage | Advice::Collapse => {
                if off % HUGE_SIZE != 0 || len % HUGE_SIZE != 0 || len == 0 {
                    return Err(format!("call {n}: {advice:?} on part of a huge page"));
                }
                if rules.no_huge && advice != Advice::NoHugePage {
                    return Err(format!("call {n}: {advice:?} under no_huge"));
                }
                for unit in hp..hp + len / HUGE_SIZE {
                    if advice == Advice::NoHugePage {
                        nohuge.insert(unit);
                    } else if advice == Advice::HugePage {
                        nohuge.remove(&unit);
                    }
                }
            }
            Advice::DontNeed => {
                if hp != (off + len - 1) / HUGE_SIZE {
                    return Err(format!("call {n}: DONTNEED across huge pages"));
                }
                if off % rules.page_size != 0 || len % rules.page_size != 0 {
                    return Err(format!(
                        "call {n}: DONTNEED of {len} bytes at offset {off:#x}: not whole {} byte pages",
                        rules.page_size
                    ));
                }
                let whole = off % HUGE_SIZE == 0 && len == HUGE_SIZE;
                let needs_mark = rules.must_mark && (rules.no_huge || !whole);
                if needs_mark && !nohuge.contains(&hp) {
                    return Err(format!("call {n}: DONTNEED inside unmarked huge page {hp}"));
                }
            }
        }
    }
    Ok(())
}
