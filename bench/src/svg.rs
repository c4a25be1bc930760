//! A line chart of RSS over time as SVG, shared by the `khugepaged` demo and
//! the benchmark suite.

fn mb(b: usize) -> f64 {
    b as f64 / 1048576.0
}

/// Writes one polyline per series of (seconds, bytes) points to `path`.
pub fn line_chart(
    series: &[(String, Vec<(f64, usize)>)],
    path: &str,
    title: &str,
    x_label: &str,
) -> std::io::Result<()> {
    let (w, h, left, bottom) = (720.0, 360.0, 60.0, 40.0);
    let tmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .max()
        .unwrap_or(1) as f64
        / 1048576.0
        * 1.1;
    let colors = [
        "#c0392b", "#8e44ad", "#2980b9", "#27ae60", "#16a085", "#7f8c8d",
    ];
    let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n<text x='{left}' y='14'>{title}</text>\n");
    s += &format!("<line x1='{left}' y1='{}' x2='{}' y2='{}' stroke='black'/><line x1='{left}' y1='20' x2='{left}' y2='{}' stroke='black'/>\n", h - bottom, w - 20.0, h - bottom, h - bottom);
    for i in 0..=4 {
        let v = ymax * i as f64 / 4.0;
        s += &format!(
            "<text x='4' y='{:.0}'>{v:.0} MB</text>\n",
            (h - bottom) - (v / ymax) * (h - bottom - 20.0)
        );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let p: Vec<String> = pts
            .iter()
            .map(|&(t, b)| {
                format!(
                    "{:.1},{:.1}",
                    left + t / tmax * (w - left - 20.0),
                    (h - bottom) - (mb(b) / ymax) * (h - bottom - 20.0)
                )
            })
            .collect();
        s += &format!(
            "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>\n",
            colors[i % 6],
            p.join(" ")
        );
        s += &format!(
            "<text x='{}' y='{}' fill='{}'>{name}</text>\n",
            w - 220.0,
            40.0 + 16.0 * i as f64,
            colors[i % 6]
        );
    }
    s += &format!(
        "<text x='{}' y='{}'>{x_label}</text>\n</svg>\n",
        w / 2.0 - 60.0,
        h - 8.0
    );
    std::fs::write(path, s)
}
