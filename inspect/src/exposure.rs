//! The exposure rule: which 2 MiB ranges of a process khugepaged may
//! collapse, and how many bytes each collapse would add to its RSS.
//!
//! A range is a candidate when it is 2 MiB-aligned and lies wholly inside
//! one mapping that is private anonymous memory and eligible for huge
//! pages. Under the configured settings that is the kernel's own
//! `THPeligible` (the THP mode, `MADV_HUGEPAGE`, `MADV_NOHUGEPAGE`, prctl);
//! with [`Assume::Always`] it is every such mapping not marked
//! `MADV_NOHUGEPAGE`, which is what THP `enabled=always` would allow and
//! what `MADV_COLLAPSE` accepts whatever the mode. khugepaged collapses a
//! candidate that has at least one page present (or swapped) when its
//! absent pages are at most `max_ptes_none` and its swapped pages at most
//! `max_ptes_swap`; the collapse makes all 512 pages resident, so it adds
//! the absent and the swapped pages: that is the range's exposure. A range
//! already backed by a huge page has every page present and adds nothing.
//!
//! Not modelled: khugepaged also wants one recently referenced page in the
//! range (the young bit, which only root can read through page_idle) and
//! counts mapped zero pages as absent; shared memory and file-backed text,
//! which it can also collapse, are not an allocator's heap.

use crate::proc_files::{Error, Mapping, PageCounts, Pagemap, ThpSettings};
use serde::Serialize;

/// 4 KiB pages in a 2 MiB huge page.
pub const PAGES_PER_RANGE: u32 = 512;
/// Bytes in a 2 MiB huge page.
pub const RANGE_BYTES: u64 = 2 << 20;
const PAGE_BYTES: u64 = 4096;

/// Whose rules decide which mappings may get huge pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Assume {
    /// The system's THP mode and each mapping's flags, as the kernel reports
    /// them (`THPeligible`).
    Configured,
    /// As if THP were `enabled=always`: every private anonymous mapping not
    /// marked `MADV_NOHUGEPAGE`. The worst case, and what `MADV_COLLAPSE`
    /// (the test suites' simulated khugepaged) accepts in any mode.
    Always,
}

/// Whether khugepaged may collapse ranges of `m` at all.
pub fn mapping_eligible(m: &Mapping, assume: Assume, process_thp: bool) -> bool {
    if !process_thp || !m.is_private_anonymous() || m.has_flag("nh") {
        return false;
    }
    match assume {
        Assume::Configured => m.thp_eligible,
        Assume::Always => true,
    }
}

/// Bytes a collapse of a range with these pages would add, or `None` when
/// khugepaged would leave the range alone.
pub fn range_exposure(c: PageCounts, s: &ThpSettings) -> Option<u64> {
    if c.present == 0 && c.swapped == 0 {
        return None;
    }
    let absent = PAGES_PER_RANGE - c.present - c.swapped;
    if absent > s.max_ptes_none || c.swapped > s.max_ptes_swap {
        return None;
    }
    Some(u64::from(absent + c.swapped) * PAGE_BYTES)
}

/// The 2 MiB-aligned ranges that lie wholly inside `[start, end)`.
pub fn whole_ranges(start: u64, end: u64) -> impl Iterator<Item = u64> {
    let first = start.div_ceil(RANGE_BYTES) * RANGE_BYTES;
    (first..end)
        .step_by(RANGE_BYTES as usize)
        .take_while(move |r| r + RANGE_BYTES <= end)
}

/// One mapping as the report shows it. Bytes throughout.
#[derive(Clone, Debug, Serialize)]
pub struct MappingReport {
    pub start: String,
    pub end: String,
    pub path: String,
    pub perms: String,
    pub size_bytes: u64,
    pub rss_bytes: u64,
    pub anon_huge_bytes: u64,
    /// `hg` (MADV_HUGEPAGE), `nh` (MADV_NOHUGEPAGE) or empty.
    pub thp_flag: String,
    /// khugepaged may collapse ranges here (under the assumed rules).
    pub collapsible: bool,
    /// Whole 2 MiB ranges in the mapping.
    pub ranges: u64,
    /// Ranges khugepaged would collapse now (at least one page, few enough
    /// absent), including ranges already backed by a huge page.
    pub ranges_collapsible: u64,
    /// Bytes those collapses would add to RSS.
    pub exposure_bytes: u64,
}

/// Measures one mapping; `collapse_at` receives the start of every range
/// khugepaged would collapse.
pub fn measure_mapping(
    m: &Mapping,
    eligible: bool,
    settings: &ThpSettings,
    pagemap: &Pagemap,
    collapse_at: &mut Vec<u64>,
) -> Result<MappingReport, Error> {
    let mut r = MappingReport {
        start: format!("{:x}", m.start),
        end: format!("{:x}", m.end),
        path: m.label().to_string(),
        perms: m.perms.clone(),
        size_bytes: m.size(),
        rss_bytes: m.rss,
        anon_huge_bytes: m.anon_huge,
        thp_flag: if m.has_flag("nh") {
            "nh".into()
        } else if m.has_flag("hg") {
            "hg".into()
        } else {
            String::new()
        },
        collapsible: eligible,
        ranges: whole_ranges(m.start, m.end).count() as u64,
        ranges_collapsible: 0,
        exposure_bytes: 0,
    };
    if !eligible || m.rss == 0 && m.swap == 0 {
        return Ok(r);
    }
    let mut buf = Vec::new();
    for start in whole_ranges(m.start, m.end) {
        let c = pagemap.count(start, PAGES_PER_RANGE as usize, &mut buf)?;
        if let Some(bytes) = range_exposure(c, settings) {
            r.ranges_collapsible += 1;
            r.exposure_bytes += bytes;
            collapse_at.push(start);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(none: u32) -> ThpSettings {
        ThpSettings {
            enabled: "always".into(),
            defrag: "madvise".into(),
            max_ptes_none: none,
            max_ptes_swap: 64,
            sizes: Vec::new(),
            page_size: 4096,
            huge_page_size: 2 << 20,
        }
    }

    fn counts(present: u32, swapped: u32) -> PageCounts {
        PageCounts { present, swapped }
    }

    #[test]
    fn one_present_page_exposes_the_rest_at_the_default() {
        let s = settings(511);
        assert_eq!(range_exposure(counts(0, 0), &s), None);
        assert_eq!(range_exposure(counts(1, 0), &s), Some(511 * 4096));
        assert_eq!(range_exposure(counts(512, 0), &s), Some(0));
        assert_eq!(range_exposure(counts(10, 2), &s), Some(502 * 4096));
        assert_eq!(range_exposure(counts(400, 65), &s), None);
    }

    #[test]
    fn max_ptes_none_bounds_the_absent_pages() {
        let s = settings(64);
        assert_eq!(range_exposure(counts(447, 0), &s), None);
        assert_eq!(range_exposure(counts(448, 0), &s), Some(64 * 4096));
        assert_eq!(range_exposure(counts(1, 0), &settings(0)), None);
    }

    #[test]
    fn only_whole_aligned_ranges_count() {
        let mb2 = RANGE_BYTES;
        let v: Vec<u64> = whole_ranges(mb2 - 4096, 4 * mb2 + 4096).collect();
        assert_eq!(v, vec![mb2, 2 * mb2, 3 * mb2]);
        assert_eq!(whole_ranges(mb2 + 1, 4 * mb2 - 1).count(), 1);
        assert_eq!(whole_ranges(mb2 + 1, 3 * mb2 - 1).count(), 0);
        assert_eq!(whole_ranges(0, mb2 - 1).count(), 0);
    }

    #[test]
    fn eligibility_follows_the_flags_and_the_assumption() {
        let mut m = Mapping {
            start: 0,
            end: RANGE_BYTES,
            perms: "rw-p".into(),
            ..Mapping::default()
        };
        assert!(!mapping_eligible(&m, Assume::Configured, true));
        assert!(mapping_eligible(&m, Assume::Always, true));
        assert!(!mapping_eligible(&m, Assume::Always, false));
        m.thp_eligible = true;
        assert!(mapping_eligible(&m, Assume::Configured, true));
        m.flags = vec!["nh".into()];
        assert!(!mapping_eligible(&m, Assume::Always, true));
        m.flags.clear();
        m.path = "/usr/lib/libc.so.6".into();
        m.inode = 42;
        assert!(!mapping_eligible(&m, Assume::Always, true));
    }
}
