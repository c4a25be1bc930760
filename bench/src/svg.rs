//! Charts for the `khugepaged` demo and the benchmark suite, drawn with
//! `plotters`: RSS over time as (seconds, bytes) samples through
//! `hugeguard_inspect::chart` (axes with ticks and units, event markers),
//! and the suite's time ratios as horizontal bars.

use hugeguard_inspect::chart::{write_svg, Series};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

/// Writes one horizontal bar per (name, ratio) to `path`, first at the top,
/// with the ratio printed at the bar's end and a line at 1.0. Bars are
/// green at or below 1, orange up to 1.25, red above; a ratio above the
/// axis's end (2.0) is drawn to the end and printed in full.
pub fn ratio_bars(
    path: &str,
    title: &str,
    x_desc: &str,
    bars: &[(String, f64)],
) -> std::io::Result<()> {
    let err = |e: &dyn std::fmt::Display| std::io::Error::other(format!("chart {path}: {e}"));
    let n = bars.len().max(1);
    let x_max = 2.0;
    let root = SVGBackend::new(path, (900, 80 + 34 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let names: Vec<&str> = bars.iter().map(|b| b.0.as_str()).collect();
    // Bar i sits in segment n - 1 - i, so the first bar is at the top (a
    // segmented 0..k has the k + 1 segments 0..=k).
    let name_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(k) if *k < n => {
            names.get(n - 1 - k).copied().unwrap_or("").to_string()
        }
        _ => String::new(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(120)
        .build_cartesian_2d(0f64..x_max, (0usize..n - 1).into_segmented())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc(x_desc)
        .y_labels(n)
        .y_label_formatter(&name_of)
        .draw()
        .map_err(|e| err(&e))?;
    let colour = |r: f64| {
        if r <= 1.0 {
            RGBColor(0x27, 0xae, 0x60)
        } else if r <= 1.25 {
            RGBColor(0xe6, 0x7e, 0x22)
        } else {
            RGBColor(0xc0, 0x39, 0x2b)
        }
    };
    chart
        .draw_series(bars.iter().enumerate().map(|(i, &(_, r))| {
            let seg = n - 1 - i;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(seg)),
                    (r.min(x_max), SegmentValue::Exact(seg + 1)),
                ],
                colour(r).filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, &(_, r))| {
            Text::new(
                format!(" {r:.2}"),
                // After the bar's end, or inside it when it reaches the edge.
                (
                    if r < 1.85 { r } else { 1.85 },
                    SegmentValue::CenterOf(n - 1 - i),
                ),
                ("sans-serif", 13)
                    .into_text_style(&root)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.mix(0.6).stroke_width(1),
        ))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratio_bars_names_every_workload_and_prints_its_ratio() {
        let path = std::env::temp_dir().join(format!("hg-bars-{}.svg", std::process::id()));
        let bars = vec![
            ("churn".to_string(), 0.62),
            ("larson".to_string(), 1.07),
            ("mstress".to_string(), 2.4),
        ];
        super::ratio_bars(path.to_str().unwrap(), "t", "ratio", &bars).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        for (name, r) in &bars {
            assert!(svg.contains(name.as_str()), "{name} missing");
            assert!(svg.contains(&format!("{r:.2}")), "{r} missing");
        }
        // One filled bar per workload in its colour band.
        for colour in ["#27AE60", "#E67E22", "#C0392B"] {
            assert_eq!(svg.matches(colour).count(), 1, "{colour} in {svg}");
        }
    }
}
