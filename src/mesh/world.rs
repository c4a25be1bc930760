//! The mesher's two doors ([`MeshWorld`]): the heap door (a class's central
//! list, the page heap, the span source, the thaw requests) and the file
//! door (hold and wake a range's writers, alias a range onto other file
//! pages, punch file pages out, map file pages for a copy).
//!
//! The process opens them onto the global heap and its shared file
//! ([`ProcessWorld`]); unit tests open them onto a heap over the fake OS and
//! a recording fake of the file, so the engine is tested without the kernel.

use crate::central::{CentralList, SpanSource};
use crate::global::{ProcessHeap, CENTRAL, HEAP, SHARED};
use crate::lock::SpinGuard;
use crate::os::linux::LinuxOs;
use crate::os::Os;
use crate::page_heap::PageHeap;

/// What the mesher works on and through.
pub(crate) trait MeshWorld {
    /// The page heap's OS.
    type Os: Os;
    /// The central lists' span source.
    type Source: SpanSource;

    /// The central list of `class`, locked.
    fn list(&self, class: usize) -> SpinGuard<'_, CentralList>;
    /// The page heap, locked.
    fn heap(&self) -> SpinGuard<'_, PageHeap<Self::Os>>;
    /// The span source the lists thaw spans through.
    fn source(&self) -> &Self::Source;
    /// Where the mesh table maps its memory.
    fn table_os(&self) -> &Self::Os;
    /// Takes the "some class asked to be thawed" signal.
    fn take_thaw_any(&self) -> bool;
    /// Takes `class`'s thaw request.
    fn take_thaw(&self, class: usize) -> bool;

    /// Whether the file door is open (a shared heap file and a write
    /// guard exist).
    fn file_open(&self) -> bool;
    /// The heap's address at file offset 0.
    fn base(&self) -> usize;
    /// Makes writers of `addr..+len` wait; `false` if the kernel refuses.
    fn hold(&self, addr: usize, len: usize) -> bool;
    /// Lets them go on where they were (the range unchanged).
    fn release(&self, addr: usize, len: usize);
    /// Lets them go on, onto what the range maps now.
    fn wake(&self, addr: usize, len: usize);
    /// Maps `addr..+len` onto the file's pages at `offset`.
    ///
    /// # Safety
    /// As [`crate::os::shared::SharedFile::alias`]: the caller owns the range, and its
    /// live bytes are at `offset` in the file.
    unsafe fn alias(&self, addr: usize, offset: usize, len: usize) -> bool;
    /// Frees the file pages `offset..+len`.
    fn punch(&self, offset: usize, len: usize);
    /// Frees the file pages of `offset..` whose bits `mask` sets.
    fn punch_mask(&self, offset: usize, mask: u64);
    /// Maps the file pages `offset..+len` somewhere else, for a copy.
    fn map(&self, offset: usize, len: usize) -> Option<usize>;
    /// Unmaps a mapping made by [`MeshWorld::map`].
    ///
    /// # Safety
    /// `addr..+len` is such a mapping, and nothing uses it any more.
    unsafe fn unmap(&self, addr: usize, len: usize);
}

/// The process: the global heap and lists, the doorbell's thaw requests,
/// and the shared heap file with its userfaultfd.
pub(crate) struct ProcessWorld;

impl MeshWorld for ProcessWorld {
    type Os = LinuxOs;
    type Source = ProcessHeap;

    fn list(&self, class: usize) -> SpinGuard<'_, CentralList> {
        CENTRAL[class].lock()
    }

    fn heap(&self) -> SpinGuard<'_, PageHeap<LinuxOs>> {
        HEAP.lock()
    }

    fn source(&self) -> &ProcessHeap {
        &ProcessHeap
    }

    fn table_os(&self) -> &LinuxOs {
        &LinuxOs::PRIVATE
    }

    fn take_thaw_any(&self) -> bool {
        crate::doorbell::take_thaw_any()
    }

    fn take_thaw(&self, class: usize) -> bool {
        crate::doorbell::take_thaw(class)
    }

    fn file_open(&self) -> bool {
        SHARED.guard().is_some() && SHARED.file().is_some()
    }

    fn base(&self) -> usize {
        SHARED.committed().0
    }

    fn hold(&self, addr: usize, len: usize) -> bool {
        SHARED.guard().is_some_and(|g| g.hold(addr, len))
    }

    fn release(&self, addr: usize, len: usize) {
        if let Some(g) = SHARED.guard() {
            g.release(addr, len);
        }
    }

    fn wake(&self, addr: usize, len: usize) {
        if let Some(g) = SHARED.guard() {
            g.wake(addr, len);
        }
    }

    unsafe fn alias(&self, addr: usize, offset: usize, len: usize) -> bool {
        // SAFETY: forwarded from the caller.
        SHARED
            .file()
            .is_some_and(|f| unsafe { f.alias(addr, offset, len) })
    }

    fn punch(&self, offset: usize, len: usize) {
        if let Some(f) = SHARED.file() {
            f.punch(offset, len);
        }
    }

    fn punch_mask(&self, offset: usize, mask: u64) {
        if let Some(f) = SHARED.file() {
            f.punch_mask(offset, mask);
        }
    }

    fn map(&self, offset: usize, len: usize) -> Option<usize> {
        SHARED.file()?.map(offset, len)
    }

    unsafe fn unmap(&self, addr: usize, len: usize) {
        if let Some(f) = SHARED.file() {
            // SAFETY: forwarded from the caller.
            unsafe { f.unmap(addr, len) };
        }
    }
}
