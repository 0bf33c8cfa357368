//! The run timeline figure (drawn per run by `write_folder`, never cached).

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
        crate::text::esc(title)
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
            crate::text::esc(sp.stage),
            y + (20.0 - h) / 2.0,
            crate::text::esc(&sp.label),
            (x0 + w + 4.0).min(left + width + 4.0),
            y + 13.0,
            crate::text::esc(&sp.label)
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
