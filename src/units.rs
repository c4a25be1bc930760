//! Units of memory: 4 KiB pages and 2 MiB huge pages never mix by accident.

/// log2 of the small page size.
pub const PAGE_SHIFT: usize = 12;
/// A small (base) page: the unit of spans and of partial release.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// log2 of the huge page size.
pub const HUGE_SHIFT: usize = 21;
/// A transparent huge page on x86-64: the unit of flags and of whole release.
pub const HUGE_SIZE: usize = 1 << HUGE_SHIFT;
/// Small pages in one huge page.
pub const PAGES_PER_HUGE: usize = HUGE_SIZE / PAGE_SIZE;

/// Rounds `n` up to a multiple of `align` (a power of two); `None` on overflow.
#[inline]
pub const fn align_up(n: usize, align: usize) -> Option<usize> {
    match n.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Small pages needed for `bytes`; `None` on overflow.
#[inline]
pub const fn pages_for(bytes: usize) -> Option<usize> {
    match align_up(bytes, PAGE_SIZE) {
        Some(v) => Some(v >> PAGE_SHIFT),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(PAGES_PER_HUGE, 512);
        assert_eq!(pages_for(1), Some(1));
        assert_eq!(pages_for(4096), Some(1));
        assert_eq!(pages_for(4097), Some(2));
        assert_eq!(pages_for(usize::MAX), None);
        assert_eq!(align_up(3, 4), Some(4));
    }
}
