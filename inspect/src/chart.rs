//! SVG charts of RSS over time (with `plotters`): one line per series,
//! axes with ticks and units, vertical markers for events (idle, the
//! simulated khugepaged), the legend outside the lines' usual path.

use plotters::prelude::*;

/// A line: its legend and its points (seconds, MB).
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Writes the chart to `path`.
pub fn write_svg(
    path: &std::path::Path,
    title: &str,
    series: &[Series],
    markers: &[(f64, String)],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(markers.iter().map(|m| m.0))
        .fold(1.0f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.25;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max * 1.02, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
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
    for (t, label) in markers {
        chart
            .draw_series(LineSeries::new(
                [(*t, 0.0), (*t, y_max * 0.9)],
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (*t, y_max * 0.93),
                ("sans-serif", 13),
            )))
            .map_err(|e| err(&e))?;
    }
    // The lines live in the lower part of the plot (y_max has 25 % head
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
