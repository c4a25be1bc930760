//! Charts of RSS over time for the `khugepaged` demo and the benchmark
//! suite: (seconds, bytes) samples drawn with `plotters` through
//! `hugeguard_inspect::chart` (axes with ticks and units, event markers).

use hugeguard_inspect::chart::{write_svg, Series};

/// Writes one line per series of (seconds, bytes) points to `path`, with a
/// vertical marker at each (seconds, label).
pub fn line_chart(
    series: &[(String, Vec<(f64, usize)>)],
    path: &str,
    title: &str,
    markers: &[(f64, String)],
) -> std::io::Result<()> {
    let series: Vec<Series> = series
        .iter()
        .map(|(label, points)| Series {
            label: label.clone(),
            points: points.iter().map(|&(t, b)| (t, b as f64 / 1e6)).collect(),
        })
        .collect();
    write_svg(std::path::Path::new(path), title, &series, markers).map_err(std::io::Error::other)
}
