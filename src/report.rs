//! The public report types: what [`crate::stats`], [`crate::placement`]
//! and [`crate::mesh_now`] return, with their `Display` reports. Plain
//! data, compiled in every build (the fallback's too: `fallback.rs`).

use crate::size_class::NUM_CLASSES;
use crate::units::PAGE_SIZE;
use core::fmt;

/// Where the soft memory limit ([`Stats::memory_limit_bytes`]) comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum LimitSource {
    /// No limit: the variable is unset (or `0`) and the cgroup sets none.
    #[default]
    None,
    /// `HUGEGUARD_MEMORY_LIMIT`.
    Variable,
    /// The process's cgroup v1 memory controller.
    CgroupV1,
    /// The process's cgroup v2 `memory.max` or `memory.high`.
    CgroupV2,
}

/// Counts of the `madvise` calls the release policy made, and whether it
/// had to stop marking. Kept by the page heap; reported as is by `stats()`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AdviceCounts {
    /// `MADV_DONTNEED` calls (memory returned to the OS).
    pub dontneed_calls: usize,
    /// `MADV_NOHUGEPAGE` calls (huge pages protected before partial release).
    pub nohugepage_calls: usize,
    /// `MADV_HUGEPAGE` calls (dense huge pages made eligible again).
    pub hugepage_calls: usize,
    /// `MADV_COLLAPSE` calls by the background thread.
    pub collapse_attempts: usize,
    /// `MADV_COLLAPSE` calls that failed.
    pub collapse_failures: usize,
    /// Failed `madvise` calls other than collapses.
    pub advise_failures: usize,
    /// Whether NOHUGEPAGE marking stopped after ENOMEM or EAGAIN (the VMA
    /// limit).
    pub marking_degraded: bool,
}

/// Counters read at one moment (each under its own lock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
    /// Bytes handed out: small objects (including those waiting in thread
    /// caches) at their class size, and large objects at their page size.
    pub allocated_bytes: usize,
    /// Bytes the program holds: `allocated_bytes` less the free objects in
    /// thread caches (small objects at their class size, large ones at
    /// their page size; sampled small objects of the heap profile are not
    /// in the heap and not counted).
    pub live_bytes: usize,
    /// Bytes of free objects parked in the central transfer caches.
    pub parked_bytes: usize,
    /// Free bytes inside small-object spans, not released: free objects on
    /// the spans, and the tail of each span that holds no whole object.
    pub span_free_bytes: usize,
    /// Heap address space made read-write (the most RSS the heap can have).
    pub mapped_bytes: usize,
    /// Bytes in spans handed out (small-object spans and large objects).
    pub span_bytes: usize,
    /// Bytes that may be resident: written and not released since.
    pub resident_bytes: usize,
    /// Bytes returned to the OS so far (cumulative).
    pub released_bytes: usize,
    /// Free heap bytes that may still be resident: pages in no span,
    /// written since they were last released, waiting for the hold-back
    /// and the next release pass (what an idle process gives back soon).
    pub held_back_bytes: usize,
    /// Huge pages holding small-object spans or sub-2 MiB runs.
    pub filler_huge_pages: usize,
    /// Huge pages holding large objects.
    pub large_huge_pages: usize,
    /// Whole free huge pages below the heap top.
    pub free_huge_pages: usize,
    /// Huge pages in use with nothing released: THP-eligible.
    pub backed_huge_pages: usize,
    /// Huge pages with some of their 4 KiB pages released (and marked
    /// `MADV_NOHUGEPAGE` first, so khugepaged cannot refill them).
    pub partial_huge_pages: usize,
    /// Huge pages wholly returned to the OS.
    pub released_huge_pages: usize,
    /// Huge pages carrying MADV_NOHUGEPAGE now.
    pub nohugepage_huge_pages: usize,
    /// Huge pages collapsed by the background thread (and not split since).
    pub collapsed_huge_pages: usize,
    /// `madvise` calls by kind, and whether marking was degraded.
    pub advice: AdviceCounts,
    /// Objects parked in the central transfer caches.
    pub parked_objects: usize,
    /// Bytes of free objects held in threads' caches (all live threads; the
    /// background thread takes back those of idle threads).
    pub thread_cache_bytes: usize,
    /// Bytes taken back from threads' caches without their help (idle
    /// threads, by the background thread; all threads, by `release_now`),
    /// since start.
    pub thread_cache_reclaimed_bytes: usize,
    /// Span records in use (one per span; 120 bytes each).
    pub span_records: usize,
    /// Metadata bytes given back to the OS since start by the release pass:
    /// pages of span records left empty after a batch, and the span entries
    /// of huge pages released whole.
    pub metadata_released_bytes: usize,
    /// Times the OS refused memory.
    pub os_refusals: usize,
    /// Whether the background release thread is running.
    pub background_running: bool,
    /// Mesh mode: units (runs of up to 16 pages) mapped onto another
    /// unit's pages now.
    pub meshed_units: usize,
    /// Mesh mode: the bytes those units span (their own memory went back to
    /// the OS; `resident_bytes` does not count it).
    pub meshed_bytes: usize,
    /// Mesh mode: units meshed since start (cumulative).
    pub meshed_units_total: usize,
    /// The fallback build (targets other than Linux, or a Linux build with
    /// `--cfg hugeguard_fallback`): every allocation goes to
    /// `std::alloc::System`, and every other counter stays zero.
    pub forwarding_to_system: bool,
    /// The kernel's base page size (bytes). The heap works in 4 KiB pages;
    /// where the kernel's differ it gives nothing back (`docs/design.md`,
    /// "Platforms").
    pub page_size: usize,
    /// The kernel's huge page size (`hpage_pmd_size`, bytes; 0 without
    /// THP). The heap packs into and guards 2 MiB units.
    pub huge_page_size: usize,
    /// Multi-size THP as the kernel set it at start-up: bit `k` set when a
    /// page fault may map a folio of `page_size << k` bytes in the heap's
    /// memory (its `hugepages-<size>kB/enabled` is `always` or `madvise`,
    /// or `inherit` while THP is on). Any size below the huge page makes
    /// `aware` mode mark a huge page NOHUGEPAGE before releasing part of
    /// it; see [`Stats::mthp_sizes`].
    pub mthp_enabled_sizes: u32,
    /// The soft memory limit (bytes; 0 for none): above 95 % of it, freed
    /// memory goes back at once, without the hold-back.
    pub memory_limit_bytes: usize,
    /// Where [`Stats::memory_limit_bytes`] comes from.
    pub memory_limit_source: LimitSource,
    /// The background thread watches the kernel's memory pressure (a PSI
    /// trigger on the cgroup's `memory.pressure`, else the system's) while
    /// memory is held back (`HUGEGUARD_PRESSURE`). It opens the trigger the
    /// first time it has memory to hold back.
    pub pressure_watched: bool,
    /// Times the kernel reported memory pressure while memory was held
    /// back, each followed by a release pass without the hold-back.
    pub pressure_events: u64,
}

impl Stats {
    /// The folio sizes (bytes) of [`Stats::mthp_enabled_sizes`], smallest
    /// first.
    pub fn mthp_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..32)
            .filter(|k| self.mthp_enabled_sizes >> k & 1 != 0)
            .map(|k| self.page_size << k)
    }

    /// Huge pages holding anything.
    pub fn huge_pages_in_use(&self) -> usize {
        self.filler_huge_pages + self.large_huge_pages
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.forwarding_to_system {
            return write!(
                f,
                "hugeguard: fallback build, every allocation forwarded to the system allocator (no counters)"
            );
        }
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        writeln!(f, "hugeguard: memory")?;
        writeln!(f, "  allocated      {:10.1} MiB", mib(self.allocated_bytes))?;
        writeln!(f, "  live           {:10.1} MiB", mib(self.live_bytes))?;
        writeln!(f, "  free in spans  {:10.1} MiB", mib(self.span_free_bytes))?;
        writeln!(f, "  in spans       {:10.1} MiB", mib(self.span_bytes))?;
        writeln!(f, "  resident (est) {:10.1} MiB", mib(self.resident_bytes))?;
        writeln!(f, "  mapped         {:10.1} MiB", mib(self.mapped_bytes))?;
        writeln!(f, "  released total {:10.1} MiB", mib(self.released_bytes))?;
        writeln!(f, "  held back      {:10.1} MiB", mib(self.held_back_bytes))?;
        write!(
            f,
            "geometry       {} KiB pages, {} MiB huge pages; mTHP sizes on:",
            self.page_size >> 10,
            self.huge_page_size >> 20
        )?;
        let mut any = false;
        for size in self.mthp_sizes() {
            write!(f, " {}K", size >> 10)?;
            any = true;
        }
        writeln!(f, "{}", if any { "" } else { " none" })?;
        match self.memory_limit_source {
            LimitSource::None => writeln!(f, "soft limit     none")?,
            s => writeln!(
                f,
                "soft limit     {:.1} MiB (from {})",
                mib(self.memory_limit_bytes),
                match s {
                    LimitSource::Variable => "HUGEGUARD_MEMORY_LIMIT",
                    LimitSource::CgroupV1 => "the cgroup v1 memory limits",
                    _ => "the cgroup's memory.max/memory.high",
                }
            )?,
        }
        writeln!(
            f,
            "pressure       {}; {} events released held-back memory",
            if self.pressure_watched {
                "watched (PSI)"
            } else {
                "not watched"
            },
            self.pressure_events
        )?;
        writeln!(f, "huge pages ({} MiB each)", self.huge_page_size >> 20)?;
        writeln!(
            f,
            "  in use         {} filler, {} large; {} free",
            self.filler_huge_pages, self.large_huge_pages, self.free_huge_pages
        )?;
        writeln!(
            f,
            "  states         {} backed, {} partial, {} released",
            self.backed_huge_pages, self.partial_huge_pages, self.released_huge_pages
        )?;
        writeln!(
            f,
            "  advice         {} NOHUGEPAGE now, {} collapsed",
            self.nohugepage_huge_pages, self.collapsed_huge_pages
        )?;
        writeln!(f, "madvise calls")?;
        writeln!(
            f,
            "  DONTNEED {}, NOHUGEPAGE {}, HUGEPAGE {}, COLLAPSE {} ({} failed), other failures {}",
            self.advice.dontneed_calls,
            self.advice.nohugepage_calls,
            self.advice.hugepage_calls,
            self.advice.collapse_attempts,
            self.advice.collapse_failures,
            self.advice.advise_failures
        )?;
        writeln!(
            f,
            "  marking        {}",
            if self.advice.marking_degraded {
                "DEGRADED (VMA limit): whole huge pages only"
            } else {
                "normal"
            }
        )?;
        writeln!(
            f,
            "metadata       {} span records; {:.1} MiB given back",
            self.span_records,
            mib(self.metadata_released_bytes)
        )?;
        if self.meshed_units_total != 0 {
            writeln!(
                f,
                "meshing        {} units meshed now ({:.1} MiB shared), {} since start",
                self.meshed_units,
                mib(self.meshed_bytes),
                self.meshed_units_total
            )?;
        }
        write!(
            f,
            "background thread {}; {:.1} MiB in thread caches; {} objects parked; {} OS refusals",
            if self.background_running {
                "running"
            } else {
                "not running"
            },
            mib(self.thread_cache_bytes),
            self.parked_objects,
            self.os_refusals
        )
    }
}

/// What a meshing round did.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct MeshRound {
    /// Units meshed onto another unit this round.
    pub meshed_units: usize,
    /// Bytes those units span: their own pages were punched out of the
    /// heap file, so what was resident there went back to the OS.
    pub punched_bytes: usize,
    /// Units unmeshed (wholly free) this round.
    pub unmeshed_units: usize,
}

/// What the mesher would do with a class now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshEstimate {
    /// Resident pages of the units it would mesh (it punches them out).
    pub pages: usize,
    /// Mappings it would add (two per meshed unit: the unit's own, and the
    /// rest of the mapping it was cut from).
    pub vmas: usize,
}

/// Histogram buckets of live objects per page holding a live byte:
/// 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65 or more.
const BUCKETS: [&str; 8] = ["1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", "65+"];

/// One size class's placement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassPlacement {
    /// Object size in bytes (0 for the unused class 0).
    pub object_size: usize,
    /// Spans of the class.
    pub spans: usize,
    /// Objects in use (including thread caches).
    pub live_objects: usize,
    /// Pages of the class's spans not released to the OS.
    pub resident_pages: usize,
    /// Pages holding at least one byte of an object in use.
    pub live_pages: usize,
    /// Pages holding a live byte, by the live objects on the page: 1, 2,
    /// 3-4, 5-8, 9-16, 17-32, 33-64, 65 or more.
    pub histogram: [usize; 8],
    /// The mesher's planner run dry over the class's home huge pages (mesh
    /// mode's layout; zero without it): the units it would mesh onto
    /// another, as a meshing round now would, before its mapping budget.
    pub meshable: MeshEstimate,
}

/// Every class's placement; see [`crate::placement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Indexed by size class (class 0 is unused).
    pub classes: [ClassPlacement; NUM_CLASSES],
}

impl Placement {
    /// Sums over the classes: (live objects' bytes, pages holding a live
    /// byte, resident pages).
    pub fn totals(&self) -> (usize, usize, usize) {
        self.classes.iter().fold((0, 0, 0), |t, c| {
            (
                t.0 + c.live_objects * c.object_size,
                t.1 + c.live_pages,
                t.2 + c.resident_pages,
            )
        })
    }

    /// [`ClassPlacement::meshable`] summed over the classes.
    pub fn meshable(&self) -> MeshEstimate {
        self.classes
            .iter()
            .fold(MeshEstimate::default(), |t, c| MeshEstimate {
                pages: t.pages + c.meshable.pages,
                vmas: t.vmas + c.meshable.vmas,
            })
    }
}

impl core::fmt::Display for Placement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mib = |pages: usize| (pages * PAGE_SIZE) as f64 / 1048576.0;
        let (live, live_pages, resident) = self.totals();
        let meshable = self.meshable();
        writeln!(
            f,
            "small objects: {:.1} MiB live on {:.1} MiB of pages holding a live byte ({:.1} MiB resident); meshing now would free {:.1} MiB (adding {} mappings)",
            live as f64 / 1048576.0,
            mib(live_pages),
            mib(resident),
            mib(meshable.pages),
            meshable.vmas
        )?;
        write!(
            f,
            "class   size  spans  live objs  live MiB  pages w/ live  resident"
        )?;
        for b in BUCKETS {
            write!(f, " {b:>6}")?;
        }
        writeln!(f, "  meshable pages")?;
        for (i, c) in self.classes.iter().enumerate().filter(|(_, c)| c.spans > 0) {
            write!(
                f,
                "{i:>5} {:>6} {:>6} {:>10} {:>9.1} {:>14} {:>9}",
                c.object_size,
                c.spans,
                c.live_objects,
                (c.live_objects * c.object_size) as f64 / 1048576.0,
                c.live_pages,
                c.resident_pages
            )?;
            for n in c.histogram {
                write!(f, " {n:>6}")?;
            }
            writeln!(f, " {:>15}", c.meshable.pages)?;
        }
        Ok(())
    }
}

/// What the heap profile holds now (`profile::summary`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ProfileSummary {
    /// Profiling is on.
    pub on: bool,
    /// The mean sampling interval in bytes.
    pub interval: usize,
    /// Sampled objects still live.
    pub samples: usize,
    /// Their requested bytes.
    pub sampled_bytes: usize,
    /// Samples taken since start, freed ones included.
    pub samples_taken: usize,
    /// Live bytes of the whole program estimated from the samples (each
    /// sample of `s` bytes stands for `s / (1 - exp(-s / interval))`).
    pub estimated_live_bytes: usize,
    /// One standard deviation of that estimate, in bytes.
    pub estimate_error_bytes: usize,
    /// Samples not recorded because the table was full.
    pub dropped: usize,
    /// Memory the profile itself holds: the live small samples' pages and
    /// their records.
    pub overhead_bytes: usize,
}

/// The process's resident set split by what holds it
/// ([`crate::rss_breakdown`]): `rss_bytes` is the sum of `live_bytes`,
/// `cached_bytes`, `span_free_bytes`, `held_back_bytes`, `metadata_bytes`,
/// `profile_bytes` and `outside_heap_bytes`, plus `unaccounted_bytes`
/// (resident heap memory the counters do not explain; see there).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RssBreakdown {
    /// The process's resident set (`/proc/self/statm`), measured.
    pub rss_bytes: usize,
    /// Bytes the program holds in the heap ([`Stats::live_bytes`]).
    pub live_bytes: usize,
    /// Free objects in thread caches and central transfer caches.
    pub cached_bytes: usize,
    /// Free space inside small-object spans, not released.
    pub span_free_bytes: usize,
    /// Free pages outside spans not yet given back (they go once the
    /// hold-back passes, or at once under a memory limit or pressure).
    pub held_back_bytes: usize,
    /// The allocator's metadata resident now (span records, page maps),
    /// measured.
    pub metadata_bytes: usize,
    /// Metadata mappings beyond those the allocator lists (not measured;
    /// zero unless the heap has mapped more than 512 of them).
    pub metadata_unmeasured_bytes: usize,
    /// The heap profile's memory resident now (sampled small objects'
    /// slots and the profile's records), measured.
    pub profile_bytes: usize,
    /// The program's memory outside the heap, measured: its code and
    /// libraries, stacks, and mappings of its own (`rss_bytes` less what
    /// is resident in the heap, the metadata and the profile).
    pub outside_heap_bytes: usize,
    /// What is resident in the heap, measured (`mincore`).
    pub heap_resident_bytes: usize,
    /// `heap_resident_bytes` less the heap's parts above (live, caches,
    /// span free, held back). Positive: pages resident that the heap
    /// released or never handed out (khugepaged filled their huge page:
    /// inflation). Negative: bytes handed out that were never written (so
    /// never resident), or parts that changed while being read.
    pub unaccounted_bytes: isize,
    /// The heap profile's summary: with profiling on, its estimate of live
    /// bytes (and its error) is a second reading of `live_bytes`.
    pub profile: ProfileSummary,
    /// The counters the parts came from, with the huge-page state.
    pub stats: Stats,
}

impl RssBreakdown {
    /// The parts' sum, without `unaccounted_bytes`: what the counters and
    /// the measurements outside the heap explain of `rss_bytes`.
    pub fn explained_bytes(&self) -> usize {
        self.live_bytes
            + self.cached_bytes
            + self.span_free_bytes
            + self.held_back_bytes
            + self.metadata_bytes
            + self.profile_bytes
            + self.outside_heap_bytes
    }

    /// The allocator's overhead: caches, free space in spans, metadata and
    /// the profile (held-back pages are counted apart).
    pub fn overhead_bytes(&self) -> usize {
        self.cached_bytes + self.span_free_bytes + self.metadata_bytes + self.profile_bytes
    }
}

impl fmt::Display for RssBreakdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stats.forwarding_to_system {
            return write!(
                f,
                "hugeguard: fallback build, no RSS breakdown (RSS {:.1} MiB)",
                self.rss_bytes as f64 / 1048576.0
            );
        }
        let mib = |b: usize| b as f64 / 1048576.0;
        let pct = |b: usize| {
            if self.rss_bytes == 0 {
                0.0
            } else {
                b as f64 * 100.0 / self.rss_bytes as f64
            }
        };
        writeln!(f, "hugeguard: RSS {:.1} MiB =", mib(self.rss_bytes))?;
        let mut row =
            |name: &str, b: usize| writeln!(f, "  {name:<34} {:9.1} MiB {:5.1} %", mib(b), pct(b));
        row("live (the program's objects)", self.live_bytes)?;
        row("thread and transfer caches", self.cached_bytes)?;
        row("free in spans", self.span_free_bytes)?;
        row("held back (free, not yet released)", self.held_back_bytes)?;
        row("allocator metadata", self.metadata_bytes)?;
        row("heap profile", self.profile_bytes)?;
        row("outside the heap (code, stacks)", self.outside_heap_bytes)?;
        let u = self.unaccounted_bytes;
        writeln!(
            f,
            "  {:<34} {:+9.1} MiB {:+5.1} %{}",
            "unaccounted in the heap",
            u as f64 / 1048576.0,
            if self.rss_bytes == 0 {
                0.0
            } else {
                u as f64 * 100.0 / self.rss_bytes as f64
            },
            if u > (self.rss_bytes / 20) as isize {
                "  <- resident beyond the heap's count: huge-page inflation?"
            } else {
                ""
            }
        )?;
        if self.profile.on || self.profile.samples != 0 {
            writeln!(
                f,
                "heap profile estimate of live: {:.1} MiB +- {:.1} MiB ({} samples)",
                mib(self.profile.estimated_live_bytes),
                mib(self.profile.estimate_error_bytes),
                self.profile.samples
            )?;
        }
        let s = &self.stats;
        write!(
            f,
            "huge pages: {} backed, {} partial (NOHUGEPAGE before release), {} released, {} free; {:.1} MiB released since start",
            s.backed_huge_pages,
            s.partial_huge_pages,
            s.released_huge_pages,
            s.free_huge_pages,
            mib(s.released_bytes)
        )
    }
}
