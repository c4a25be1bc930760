//! The readable forms of a [`Report`]: the summary and the table of
//! mappings, and the before/after lines of a simulation.

use crate::{Report, Simulation};
use std::fmt::Write;

/// Bytes as MB with one decimal (10^6, as `ps` and the project's docs
/// report RSS).
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The report as text; at most `limit` mappings are listed.
pub fn render(r: &Report, limit: usize) -> String {
    let mut s = String::new();
    let assumed = match r.assumed {
        crate::Assume::Configured => "as configured",
        crate::Assume::Always => "as if THP were enabled=always",
    };
    let _ = writeln!(s, "process {} ({})", r.pid, r.command);
    let runtime = match (r.uses.runtime.as_str(), &r.uses.go_version) {
        ("", _) => String::new(),
        (rt, Some(v)) => format!(", runtime {rt} ({v})"),
        (rt, None) => format!(", runtime {rt}"),
    };
    let _ = writeln!(s, "uses: allocator {}{runtime}", r.uses.allocator);
    let _ = writeln!(s, "advice: {}", r.advice);
    let _ = writeln!(
        s,
        "THP enabled={} defrag={} max_ptes_none={} max_ptes_swap={}; rules: {assumed}",
        r.thp_enabled, r.thp_defrag, r.max_ptes_none, r.max_ptes_swap
    );
    let _ = writeln!(
        s,
        "geometry: {} KiB pages, {} KiB huge pages (hpage_pmd_size)",
        r.page_size >> 10,
        r.huge_page_size >> 10
    );
    if !r.mthp_sizes.is_empty() {
        let sizes: Vec<String> = r
            .mthp_sizes
            .iter()
            .map(|(kb, setting)| format!("{kb}K={setting}"))
            .collect();
        let _ = writeln!(
            s,
            "mTHP sizes: {} (exposure judged for 2 MiB pages only)",
            sizes.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "RSS {} (anonymous {}), in huge pages {}",
        mb(r.rss_bytes),
        mb(r.rss_anon_bytes),
        mb(r.anon_huge_bytes)
    );
    let ranges: u64 = r.mappings.iter().map(|m| m.ranges_collapsible).sum();
    let _ = writeln!(
        s,
        "exposure {} in {ranges} collapsible 2 MiB ranges: predicted RSS after khugepaged {} ({:.2}x)",
        mb(r.exposure_bytes),
        mb(r.predicted_rss_bytes),
        r.predicted_rss_bytes as f64 / r.rss_bytes.max(1) as f64
    );
    if r.mappings.is_empty() {
        let _ = writeln!(s, "no mapping holds a whole 2 MiB range");
        return s;
    }
    let _ = writeln!(
        s,
        "\n{:<29} {:>10} {:>10} {:>10} {:>4} {:>8} {:>9} {:>10}  mapping",
        "address", "size", "resident", "huge", "flag", "eligible", "ranges", "exposure"
    );
    for m in r.mappings.iter().take(limit) {
        let _ = writeln!(
            s,
            "{:<29} {:>10} {:>10} {:>10} {:>4} {:>8} {:>9} {:>10}  {}",
            format!("{}-{}", m.start, m.end),
            mb(m.size_bytes),
            mb(m.rss_bytes),
            mb(m.anon_huge_bytes),
            if m.thp_flag.is_empty() {
                "-"
            } else {
                &m.thp_flag
            },
            if m.collapsible { "yes" } else { "no" },
            format!("{}/{}", m.ranges_collapsible, m.ranges),
            mb(m.exposure_bytes),
            m.path
        );
    }
    let hidden = r.mappings.len().saturating_sub(limit);
    if hidden > 0 {
        let _ = writeln!(s, "... {hidden} more (--all lists them)");
    }
    let _ = writeln!(
        s,
        "({} other mappings: smaller than 2 MiB or not private anonymous memory)",
        r.other_mappings
    );
    s
}

/// The comparison of a prediction with the RSS measured after
/// [`crate::simulate`].
pub fn render_simulation(before: &Report, sim: &Simulation, after_rss: u64) -> String {
    let err = if before.predicted_rss_bytes == 0 {
        0.0
    } else {
        (after_rss as f64 / before.predicted_rss_bytes as f64 - 1.0) * 100.0
    };
    let mut s = format!(
        "simulated khugepaged: {} ranges collapsed, {} refused\n\
         RSS before {}, predicted {}, measured after {} ({err:+.1} % against the prediction)\n",
        sim.collapsed,
        sim.refused,
        mb(before.rss_bytes),
        mb(before.predicted_rss_bytes),
        mb(after_rss),
    );
    if let Some(why) = &sim.first_refusal {
        let _ = writeln!(s, "first refusal: {why}");
    }
    s
}
