//! SVG charts of RSS over time (with `plotters`): one line per series,
//! axes with ticks and units, vertical markers for events (idle, the
//! simulated khugepaged), the legend outside the lines' usual path.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A line: its legend and its points (seconds, MB).
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Writes the chart to `path`, time in seconds on the x axis.
pub fn write_svg(
    path: &std::path::Path,
    title: &str,
    series: &[Series],
    markers: &[(f64, String)],
) -> Result<(), String> {
    write_svg_with_x(path, title, "time (s)", series, markers)
}

/// As [`write_svg`], with `x_desc` naming the x axis and its unit.
pub fn write_svg_with_x(
    path: &std::path::Path,
    title: &str,
    x_desc: &str,
    series: &[Series],
    markers: &[(f64, String)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(markers.iter().map(|m| m.0))
        .fold(1.0f64, f64::max);
    let x_min = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(markers.iter().map(|m| m.0))
        .fold(0.0f64, f64::min);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.4;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min..x_max + (x_max - x_min) * 0.02, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("MB")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    let colours = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, s) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    let x_span = x_max - x_min;
    for (t, label) in markers {
        chart
            .draw_series(LineSeries::new(
                [(*t, 0.0), (*t, y_max * 0.76)],
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        // Labels sit between the lines' top (y_max / 1.4) and the legend;
        // near the right edge they end at their marker instead of starting
        // there.
        let anchor = if *t > x_min + 0.7 * x_span {
            Pos::new(HPos::Right, VPos::Bottom)
        } else {
            Pos::new(HPos::Left, VPos::Bottom)
        };
        let style = ("sans-serif", 13).into_text_style(&root).pos(anchor);
        chart
            .draw_series(std::iter::once(Text::new(
                format!(" {label} "),
                (*t, y_max * 0.76),
                style,
            )))
            .map_err(|e| err(&e))?;
    }
    // The lines live in the lower part of the plot (y_max has 40 % head
    // room); the legend goes in the top right corner above them.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
