//! SVG figures drawn with plotters (text is left to the browser: no font files needed).

use plotters::prelude::*;

fn svg(
    width: u32,
    height: u32,
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(root.clone())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Bars of `values` per category (e.g. images per class).
pub fn bars(title: &str, categories: &[String], values: &[usize]) -> Result<String, String> {
    let max = values.iter().copied().max().unwrap_or(1).max(1) as f64;
    let n = categories.len().max(1);
    let height = 60 + 22 * n as u32;
    svg(640, height, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(170)
            .build_cartesian_2d(0.0..max * 1.15, (0..n).into_segmented())
            .map_err(err)?;
        let cats = categories.to_vec();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => cats.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("images")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let mut r = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (v as f64, SegmentValue::Exact(i + 1)),
                    ],
                    BLUE.mix(0.6).filled(),
                );
                r.set_margin(3, 3, 0, 0);
                r
            }))
            .map_err(err)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                Text::new(
                    format!("{v}"),
                    (v as f64 + max * 0.01, SegmentValue::CenterOf(i)),
                    ("sans-serif", 12),
                )
            }))
            .map_err(err)?;
        Ok(())
    })
}

/// Row-normalised confusion matrix as a heatmap, with counts in the cells.
pub fn confusion_heatmap(
    title: &str,
    classes: &[String],
    confusion: &[Vec<usize>],
) -> Result<String, String> {
    let k = classes.len();
    let cell = (440 / k.max(1)).clamp(18, 60) as i32;
    let left = 170;
    let top = 50;
    let width = (left + cell * k as i32 + 20) as u32;
    let height = (top + cell * k as i32 + 60) as u32;
    svg(width, height, |root| {
        root.draw(&Text::new(title.to_string(), (10, 10), ("sans-serif", 18)))
            .map_err(err)?;
        root.draw(&Text::new(
            "predicted class →".to_string(),
            (left, top + cell * k as i32 + 30),
            ("sans-serif", 13),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            "true class ↓".to_string(),
            (8, top - 18),
            ("sans-serif", 13),
        ))
        .map_err(err)?;
        for (t, row) in confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            let y = top + t as i32 * cell;
            root.draw(&Text::new(
                format!("{} {}", classes[t], t),
                (8, y + cell / 2 - 6),
                ("sans-serif", 12),
            ))
            .map_err(err)?;
            for (p, &c) in row.iter().enumerate() {
                let frac = if total > 0 {
                    c as f64 / total as f64
                } else {
                    0.0
                };
                let x = left + p as i32 * cell;
                let shade = (255.0 * (1.0 - frac)) as u8;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell - 1, y + cell - 1)],
                    RGBColor(shade, shade, 255).filled(),
                ))
                .map_err(err)?;
                if cell >= 24 && c > 0 {
                    let colour = if frac > 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        format!("{c}"),
                        (x + 3, y + cell / 2 - 6),
                        ("sans-serif", 11).into_font().color(&colour),
                    ))
                    .map_err(err)?;
                }
            }
        }
        for p in 0..k {
            root.draw(&Text::new(
                format!("{p}"),
                (
                    left + p as i32 * cell + cell / 2 - 4,
                    top + cell * k as i32 + 4,
                ),
                ("sans-serif", 12),
            ))
            .map_err(err)?;
        }
        Ok(())
    })
}

/// Per-epoch curves (e.g. training vs validation accuracy).
pub fn curves(title: &str, y_desc: &str, series: &[(&str, Vec<f64>)]) -> Result<String, String> {
    let epochs = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in series
        .iter()
        .flat_map(|(_, v)| v.iter())
        .filter(|v| v.is_finite())
    {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(1e-3);
    svg(480, 320, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1f64..epochs.max(2) as f64, (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .x_labels(epochs.clamp(2, 20))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(err)?;
        let colours = [BLUE, RED, GREEN, MAGENTA];
        for (i, (name, v)) in series.iter().enumerate() {
            let c = colours[i % colours.len()];
            chart
                .draw_series(LineSeries::new(
                    v.iter().enumerate().map(|(e, &y)| (e as f64 + 1.0, y)),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// One bar of the run timeline.
pub struct Span<'a> {
    pub stage: &'a str,
    /// Seconds from the run's start.
    pub start: f64,
    pub end: f64,
    pub cached: bool,
    pub label: String,
}

/// The run as a timeline: a row per stage, a bar from its start to its end (cached stages as
/// a thin mark), with its seconds, threads and peak memory.
pub fn timeline(title: &str, spans: &[Span<'_>]) -> String {
    let total = spans.iter().map(|s| s.end).fold(0.0f64, f64::max).max(1e-3);
    let (left, width, row) = (120.0, 520.0, 26.0);
    let height = 50.0 + row * spans.len() as f64 + 30.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\
         <text x=\"8\" y=\"20\" font-size=\"15\">{}</text>",
        crate::html::esc(title)
    );
    for (i, sp) in spans.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let x0 = left + width * sp.start / total;
        let w = (width * (sp.end - sp.start) / total).max(2.0);
        let (fill, h) = if sp.cached {
            ("#bbbbbb", 6.0)
        } else {
            ("#0072b2", 16.0)
        };
        s.push_str(&format!(
            "<text x=\"8\" y=\"{:.1}\">{}</text><rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{h}\" fill=\"{fill}\"><title>{}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{}</text>",
            y + 13.0,
            crate::html::esc(sp.stage),
            y + (20.0 - h) / 2.0,
            crate::html::esc(&sp.label),
            (x0 + w + 4.0).min(left + width + 4.0),
            y + 13.0,
            crate::html::esc(&sp.label)
        ));
    }
    let ya = 40.0 + row * spans.len() as f64 + 8.0;
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{ya}\" x2=\"{}\" y2=\"{ya}\" stroke=\"#333\"/><text x=\"{left}\" y=\"{:.1}\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.1} s (wall)</text></svg>",
        left + width,
        ya + 16.0,
        left + width,
        ya + 16.0,
        total
    ));
    s
}
