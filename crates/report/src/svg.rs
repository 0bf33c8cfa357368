//! The report's figures as hand-written SVG: a small builder and one function per figure.
//! Colours are colour-blind safe (Okabe and Ito's palette for categories, a single-hue blue
//! ramp for magnitudes); every text is real text (selectable, no font files needed).

use crate::text::esc;

/// Okabe-Ito colours, one per model (in the study's order) and for the study's numbers.
pub const SCRATCH: &str = "#E69F00";
pub const HEAD: &str = "#0072B2";
pub const LOGREG: &str = "#009E73";
pub const STUDY: &str = "#999999";
/// Training vs validation curves (with solid vs dashed lines too).
pub const TRAIN: &str = "#0072B2";
pub const VALID: &str = "#D55E00";
/// The three splits in class-distribution charts.
pub const SPLIT_COLOURS: [&str; 3] = ["#0072B2", "#E69F00", "#009E73"];

/// The colour of a model.
pub fn model_colour(model: &str) -> &'static str {
    match model {
        "scratch-cnn" => SCRATCH,
        "head-nn" => HEAD,
        "logreg" => LOGREG,
        "finetune" => "#E69F00",
        _ => "#CC79A7",
    }
}

/// A blue ramp from white (0) to dark blue (1), and a readable text colour on it.
pub fn ramp(v: f64) -> (String, &'static str) {
    let v = v.clamp(0.0, 1.0);
    let (a, b) = ([247.0, 251.0, 255.0], [8.0, 48.0, 107.0]);
    let c: Vec<u8> = (0..3)
        .map(|i| (a[i] + (b[i] - a[i]) * v).round() as u8)
        .collect();
    (
        format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]),
        if v > 0.55 { "#ffffff" } else { "#222222" },
    )
}

/// An SVG document being drawn.
pub struct Svg {
    w: f64,
    h: f64,
    body: String,
}

impl Svg {
    pub fn new(w: f64, h: f64) -> Svg {
        Svg {
            w,
            h,
            body: String::new(),
        }
    }

    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, tip: Option<&str>) {
        let tip = tip
            .map(|t| format!("<title>{}</title>", esc(t)))
            .unwrap_or_default();
        self.body.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\">{tip}</rect>",
            w.max(0.0),
            h.max(0.0)
        ));
    }

    /// Text; `anchor` is `start`, `middle` or `end`.
    pub fn text(&mut self, x: f64, y: f64, s: &str, anchor: &str, size: f64, fill: &str) {
        self.body.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" font-size=\"{size}\" fill=\"{fill}\">{}</text>",
            esc(s)
        ));
    }

    /// Text that ends at (x, y), rotated `deg` degrees (column labels).
    pub fn rotated(&mut self, x: f64, y: f64, s: &str, deg: f64, size: f64, fill: &str) {
        self.body.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"end\" font-size=\"{size}\" fill=\"{fill}\" transform=\"rotate({deg:.0} {x:.1} {y:.1})\">{}</text>",
            esc(s)
        ));
    }

    pub fn bold(&mut self, x: f64, y: f64, s: &str, anchor: &str, size: f64) {
        self.body.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" font-size=\"{size}\" font-weight=\"bold\" fill=\"#222\">{}</text>",
            esc(s)
        ));
    }

    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), stroke: &str, width: f64, dash: bool) {
        self.body.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{stroke}\" stroke-width=\"{width}\"{}/>",
            a.0,
            a.1,
            b.0,
            b.1,
            if dash { " stroke-dasharray=\"5 3\"" } else { "" }
        ));
    }

    pub fn polyline(&mut self, pts: &[(f64, f64)], stroke: &str, width: f64, dash: bool) {
        let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        self.body.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"{width}\"{}/>",
            p.join(" "),
            if dash { " stroke-dasharray=\"6 3\"" } else { "" }
        ));
    }

    pub fn circle(&mut self, cx: f64, cy: f64, r: f64, fill: &str, tip: Option<&str>) {
        let tip = tip
            .map(|t| format!("<title>{}</title>", esc(t)))
            .unwrap_or_default();
        self.body.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{r}\" fill=\"{fill}\" stroke=\"#222\" stroke-width=\"0.6\">{tip}</circle>"
        ));
    }

    /// A legend: coloured swatches (a line if `line`) with labels, in a row from `(x, y)`.
    pub fn legend(&mut self, x: f64, y: f64, items: &[(&str, &str, bool)]) {
        let mut cx = x;
        for (label, colour, dashed) in items {
            self.line((cx, y - 4.0), (cx + 18.0, y - 4.0), colour, 3.0, *dashed);
            self.text(cx + 22.0, y, label, "start", 12.0, "#222");
            cx += 30.0 + 7.0 * label.chars().count() as f64;
        }
    }

    pub fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" role=\"img\">{}</svg>",
            self.body,
            w = self.w,
            h = self.h
        )
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// One model's test accuracy for the comparison figure.
pub struct Bar<'a> {
    pub model: &'a str,
    /// Mean over seeds (or the one value).
    pub mean: f64,
    pub std: Option<f64>,
    /// Per-seed values (one without a sweep).
    pub values: Vec<f64>,
    pub study: Option<f64>,
}

/// Test accuracy of each model (mean, spread and seeds) beside the study's number.
pub fn comparison(bars: &[Bar<'_>]) -> String {
    let (left, width, group) = (120.0, 440.0, 54.0);
    let h = 40.0 + group * bars.len() as f64 + 40.0;
    let mut s = Svg::new(640.0, h);
    let x = |v: f64| left + width * v.clamp(0.0, 1.0);
    for t in 0..=5 {
        let v = t as f64 / 5.0;
        s.line((x(v), 30.0), (x(v), h - 34.0), "#dddddd", 1.0, false);
        s.text(
            x(v),
            h - 20.0,
            &format!("{:.0}%", 100.0 * v),
            "middle",
            11.0,
            "#555",
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = 36.0 + group * i as f64;
        s.bold(left - 8.0, y + 22.0, b.model, "end", 13.0);
        let c = model_colour(b.model);
        s.rect(
            left,
            y,
            width * b.mean,
            20.0,
            c,
            Some(&format!("{}: {}", b.model, pct(b.mean))),
        );
        if let Some(sd) = b.std {
            s.line(
                (x(b.mean - sd), y + 10.0),
                (x(b.mean + sd), y + 10.0),
                "#222",
                1.5,
                false,
            );
            for v in &b.values {
                s.circle(x(*v), y + 10.0, 3.0, "#ffffff", Some(&pct(*v)));
            }
        }
        let label = match b.std {
            Some(sd) => format!("{} ± {:.1}", pct(b.mean), 100.0 * sd),
            None => pct(b.mean),
        };
        // Right of the bar, the whisker and every seed's dot.
        let end = b
            .values
            .iter()
            .copied()
            .chain([b.mean, b.mean + b.std.unwrap_or(0.0)])
            .fold(f64::MIN, f64::max);
        s.text(x(end) + 6.0, y + 15.0, &label, "start", 12.0, "#222");
        if let Some(st) = b.study {
            s.rect(
                left,
                y + 24.0,
                width * st,
                12.0,
                STUDY,
                Some(&format!("study: {}", pct(st))),
            );
            s.text(
                x(st) + 6.0,
                y + 34.0,
                &format!("study {}", pct(st)),
                "start",
                11.0,
                "#555",
            );
        }
    }
    s.legend(
        left,
        18.0,
        &[
            ("ours (test accuracy)", HEAD, false),
            ("the study (Food-11)", STUDY, false),
        ],
    );
    s.finish()
}

/// A row-normalised confusion matrix: cell colour = share of the true class, count inside.
pub fn confusion(model: &str, classes: &[String], m: &[Vec<usize>]) -> String {
    let k = classes.len().max(1);
    let cell = (300.0 / k as f64).clamp(14.0, 34.0);
    let longest = longest_label(classes, 22);
    let left = 8.0 + 7.0 * longest;
    let top = 34.0;
    // Column labels, rotated 50 degrees, below the matrix.
    let labels = 8.0 + 6.0 * longest * 0.77;
    let w = left + cell * k as f64 + 12.0;
    let h = top + cell * k as f64 + labels + 26.0;
    let mut s = Svg::new(w, h);
    s.bold(8.0, 18.0, model, "start", 14.0);
    for (t, row) in m.iter().enumerate() {
        let total: usize = row.iter().sum();
        let y = top + cell * t as f64;
        let name: String = classes[t].chars().take(22).collect();
        s.text(left - 4.0, y + cell * 0.5 + 4.0, &name, "end", 11.0, "#222");
        for (p, &c) in row.iter().enumerate() {
            let frac = if total > 0 {
                c as f64 / total as f64
            } else {
                0.0
            };
            let (fill, ink) = ramp(frac);
            let x = left + cell * p as f64;
            s.rect(
                x,
                y,
                cell - 1.0,
                cell - 1.0,
                &fill,
                Some(&format!(
                    "true {} → predicted {}: {c} of {total} ({})",
                    classes[t],
                    classes[p],
                    pct(frac)
                )),
            );
            if c > 0 && cell >= 18.0 {
                s.text(
                    x + cell * 0.5,
                    y + cell * 0.5 + 4.0,
                    &c.to_string(),
                    "middle",
                    10.0,
                    ink,
                );
            }
        }
    }
    for (p, class) in classes.iter().enumerate() {
        let name: String = class.chars().take(22).collect();
        let x = left + cell * (p as f64 + 0.5) + 3.0;
        s.rotated(x, top + cell * k as f64 + 8.0, &name, -50.0, 10.0, "#222");
    }
    s.text(left, h - 10.0, "predicted class →", "start", 11.0, "#555");
    s.text(8.0, top - 6.0, "true class ↓", "start", 11.0, "#555");
    s.finish()
}

/// Characters in the longest class name, at most `cap` (names are cut there); 4 without classes.
fn longest_label(classes: &[String], cap: usize) -> f64 {
    classes
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(4)
        .min(cap) as f64
}

/// The colour legend shared by every confusion matrix.
pub fn ramp_legend() -> String {
    let mut s = Svg::new(260.0, 40.0);
    for i in 0..50 {
        let (fill, _) = ramp(i as f64 / 49.0);
        s.rect(10.0 + 4.0 * i as f64, 6.0, 4.2, 14.0, &fill, None);
    }
    s.text(10.0, 34.0, "0%", "start", 11.0, "#555");
    s.text(210.0, 34.0, "100% of the true class", "end", 11.0, "#555");
    s.finish()
}

/// Per-class F1 of every model, grouped by class.
pub fn f1_grouped(classes: &[String], models: &[(&str, Vec<f64>)]) -> String {
    let per = models.len().max(1) as f64;
    let band = 8.0 * per + 8.0;
    let left = 10.0 + 7.0 * longest_label(classes, 24);
    let width = 380.0;
    let h = 40.0 + band * classes.len() as f64 + 30.0;
    let mut s = Svg::new(left + width + 60.0, h);
    let x = |v: f64| left + width * v.clamp(0.0, 1.0);
    for t in 0..=4 {
        let v = t as f64 / 4.0;
        s.line((x(v), 30.0), (x(v), h - 26.0), "#dddddd", 1.0, false);
        s.text(x(v), h - 12.0, &format!("{v:.2}"), "middle", 11.0, "#555");
    }
    for (ci, class) in classes.iter().enumerate() {
        let y = 34.0 + band * ci as f64;
        let name: String = class.chars().take(24).collect();
        s.text(left - 6.0, y + band * 0.5, &name, "end", 11.0, "#222");
        for (mi, (model, f1)) in models.iter().enumerate() {
            let v = f1.get(ci).copied().unwrap_or(0.0);
            s.rect(
                left,
                y + 8.0 * mi as f64,
                width * v,
                7.0,
                model_colour(model),
                Some(&format!("{model}, {class}: F1 {v:.3}")),
            );
        }
    }
    let items: Vec<(&str, &str, bool)> = models
        .iter()
        .map(|(m, _)| (*m, model_colour(m), false))
        .collect();
    s.legend(left, 18.0, &items);
    s.finish()
}

/// A value axis with "nice" ticks: a step of 1, 2 or 5 times a power of ten, the ends on
/// multiples of it, labels with just the decimals the step needs (so no two are equal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
}

impl Axis {
    /// An axis covering `[lo, hi]` (non-finite ends give `[0, 1]`; a flat range is widened
    /// around its value) in about `target` steps, kept inside `bounds` when given (an
    /// accuracy stays in `[0, 1]`).
    pub fn nice(lo: f64, hi: f64, target: usize, bounds: Option<(f64, f64)>) -> Axis {
        let data = lo.is_finite() && hi.is_finite() && lo <= hi;
        let (mut lo, mut hi) = if data {
            (lo, hi)
        } else {
            bounds.unwrap_or((0.0, 1.0))
        };
        if !data {
            // no data: the bounds themselves, unpadded
        } else if hi - lo < 1e-9 * (1.0 + lo.abs()) {
            let half = (0.1 * lo.abs()).max(0.01);
            (lo, hi) = (lo - half, hi + half);
        } else {
            let pad = 0.02 * (hi - lo);
            (lo, hi) = (lo - pad, hi + pad);
        }
        if let Some((blo, bhi)) = bounds {
            (lo, hi) = (lo.max(blo), hi.min(bhi));
        }
        let raw = (hi - lo) / target.max(1) as f64;
        let mag = 10f64.powf(raw.log10().floor());
        // the nearest of 1, 2, 5, 10 times the power of ten (Heckbert's "nice numbers")
        let f = raw / mag;
        let m = if f < 1.5 {
            1.0
        } else if f < 3.0 {
            2.0
        } else if f < 7.0 {
            5.0
        } else {
            10.0
        };
        let step = m * mag;
        let mut lo = (lo / step + 1e-9).floor() * step;
        let mut hi = (hi / step - 1e-9).ceil() * step;
        if let Some((blo, bhi)) = bounds {
            (lo, hi) = (lo.max(blo), hi.min(bhi));
        }
        Axis { lo, hi, step }
    }

    /// The tick values, `lo` to `hi` by `step`.
    pub fn ticks(&self) -> Vec<f64> {
        let n = ((self.hi - self.lo) / self.step).round() as usize;
        (0..=n)
            .map(|i| {
                let v = self.lo + self.step * i as f64;
                // one rounding, so 0.1 + 2 x 0.05 prints as 0.2 and -0.0 as 0
                let q = (v / self.step).round() * self.step;
                if q == 0.0 {
                    0.0
                } else {
                    q
                }
            })
            .collect()
    }

    /// `v` as a percentage with the decimals the step needs (`0.25` -> `25%`).
    pub fn percent(&self, v: f64) -> String {
        let decimals = (-((100.0 * self.step).log10() + 1e-9).floor()).max(0.0) as usize;
        format!("{:.decimals$}%", 100.0 * v)
    }

    /// `v` with the decimals the step needs.
    pub fn label(&self, v: f64) -> String {
        let decimals = (-(self.step.log10() + 1e-9).floor()).max(0.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Training and validation curves (accuracy and loss) of one network, best epoch marked.
pub fn curves(
    model: &str,
    acc: (&[f64], &[f64]),
    loss: (&[f64], &[f64]),
    best_epoch: usize,
) -> String {
    let (pw, ph) = (280.0, 170.0);
    let mut s = Svg::new(2.0 * pw + 130.0, ph + 80.0);
    s.bold(8.0, 18.0, model, "start", 14.0);
    for (k, (title, (tr, va))) in [("accuracy", acc), ("loss", loss)].into_iter().enumerate() {
        let ox = 50.0 + k as f64 * (pw + 40.0);
        let oy = 40.0;
        let n = tr.len().max(va.len()).max(2);
        let all: Vec<f64> = tr
            .iter()
            .chain(va)
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let (lo, hi) = (
            all.iter().copied().fold(f64::INFINITY, f64::min),
            all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        let bounds = (title == "accuracy").then_some((0.0, 1.0));
        let axis = Axis::nice(lo, hi, 4, bounds);
        let (lo, hi) = (axis.lo, axis.hi);
        let xp = |e: usize| ox + pw * (e as f64 - 1.0) / (n as f64 - 1.0);
        let yp = |v: f64| oy + ph * (1.0 - (v - lo) / (hi - lo));
        s.line((ox, oy + ph), (ox + pw, oy + ph), "#888", 1.0, false);
        s.line((ox, oy), (ox, oy + ph), "#888", 1.0, false);
        for v in axis.ticks() {
            s.text(ox - 4.0, yp(v) + 4.0, &axis.label(v), "end", 10.0, "#555");
        }
        let step = (n / 10).max(1);
        for e in (1..=n).step_by(step) {
            s.text(
                xp(e),
                oy + ph + 14.0,
                &e.to_string(),
                "middle",
                10.0,
                "#555",
            );
        }
        s.text(
            ox + pw * 0.5,
            oy + ph + 30.0,
            &format!("epoch ({title})"),
            "middle",
            11.0,
            "#555",
        );
        if best_epoch >= 1 && best_epoch <= n {
            s.line(
                (xp(best_epoch), oy),
                (xp(best_epoch), oy + ph),
                "#CC79A7",
                1.5,
                true,
            );
            s.text(
                xp(best_epoch) + 3.0,
                oy + 10.0,
                &format!("best epoch {best_epoch}"),
                "start",
                10.0,
                "#CC79A7",
            );
        }
        for (series, colour, dashed) in [(tr, TRAIN, false), (va, VALID, true)] {
            let pts: Vec<(f64, f64)> = series
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(e, &v)| (xp(e + 1), yp(v)))
                .collect();
            s.polyline(&pts, colour, 2.0, dashed);
        }
    }
    s.legend(
        160.0,
        18.0,
        &[("training", TRAIN, false), ("validation", VALID, true)],
    );
    s.finish()
}

/// Images per class in each split.
pub fn class_distribution(classes: &[String], splits: &[(&str, Vec<usize>)]) -> String {
    let per = splits.len().max(1) as f64;
    let band = 7.0 * per + 8.0;
    let left = 10.0 + 7.0 * longest_label(classes, 24);
    let width = 360.0;
    let max = splits
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let h = 40.0 + band * classes.len() as f64 + 10.0;
    let mut s = Svg::new(left + width + 70.0, h);
    for (ci, class) in classes.iter().enumerate() {
        let y = 34.0 + band * ci as f64;
        let name: String = class.chars().take(24).collect();
        s.text(left - 6.0, y + band * 0.5, &name, "end", 11.0, "#222");
        for (si, (split, v)) in splits.iter().enumerate() {
            let c = v.get(ci).copied().unwrap_or(0);
            let w = width * c as f64 / max;
            s.rect(
                left,
                y + 7.0 * si as f64,
                w,
                6.0,
                SPLIT_COLOURS[si % 3],
                Some(&format!("{split}, {class}: {c} images")),
            );
            s.text(
                left + w + 3.0,
                y + 7.0 * si as f64 + 6.0,
                &c.to_string(),
                "start",
                8.0,
                "#555",
            );
        }
    }
    let items: Vec<(&str, &str, bool)> = splits
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (*n, SPLIT_COLOURS[i % 3], false))
        .collect();
    s.legend(left, 18.0, &items);
    s.finish()
}

/// One model's per-seed test accuracies: ours, and a reference's when known.
pub struct SeedRow<'a> {
    pub model: &'a str,
    pub ours: Vec<f64>,
    pub reference: Option<Vec<f64>>,
}

/// Test accuracy of every seed (dots), their mean (a bar) and ± one standard deviation, per
/// model; the reference's values beside ours when given.
pub fn seed_strip(rows: &[SeedRow<'_>]) -> String {
    let (left, width, group) = (120.0, 440.0, 46.0);
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.ours.iter().chain(r.reference.iter().flatten()).copied())
        .collect();
    let axis = Axis::nice(
        all.iter().copied().fold(f64::INFINITY, f64::min) - 0.03,
        all.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 0.03,
        5,
        Some((0.0, 1.0)),
    );
    let (lo, hi) = (axis.lo, axis.hi);
    let h = 40.0 + group * rows.len() as f64 + 34.0;
    let mut s = Svg::new(680.0, h);
    let x = |v: f64| left + width * (v - lo) / (hi - lo);
    for v in axis.ticks() {
        s.line((x(v), 28.0), (x(v), h - 30.0), "#dddddd", 1.0, false);
        s.text(x(v), h - 16.0, &axis.percent(v), "middle", 11.0, "#555");
    }
    for (
        i,
        SeedRow {
            model,
            ours,
            reference,
        },
    ) in rows.iter().enumerate()
    {
        let y = 40.0 + group * i as f64;
        s.bold(left - 8.0, y + 10.0, model, "end", 13.0);
        for (k, (vals, colour, label)) in [
            (Some(ours), model_colour(model), "ours"),
            (reference.as_ref(), STUDY, "reference"),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(vals) = vals else { continue };
            if vals.is_empty() {
                continue;
            }
            let yy = y + 16.0 * k as f64;
            let (m, sd) = crate::metrics::mean_std(vals);
            s.line(
                (x(m - sd), yy + 6.0),
                (x(m + sd), yy + 6.0),
                colour,
                3.0,
                false,
            );
            s.line((x(m), yy), (x(m), yy + 12.0), "#222", 2.0, false);
            for v in vals.iter() {
                s.circle(
                    x(*v),
                    yy + 6.0,
                    3.2,
                    colour,
                    Some(&format!("{label}: {}", pct(*v))),
                );
            }
            s.text(
                left + width + 8.0,
                yy + 10.0,
                &format!("{label} {} ± {:.1}", pct(m), 100.0 * sd),
                "start",
                11.0,
                "#222",
            );
        }
    }
    s.finish()
}

/// One step of an ablation: `(validation, test)` accuracy of each model; no validation
/// accuracy when the model was trained on the validation images.
#[derive(Clone, Debug, PartialEq)]
pub struct AblationRow {
    pub name: String,
    pub head: Option<(Option<f64>, f64)>,
    pub logreg: Option<(Option<f64>, f64)>,
    pub ensemble: Option<(Option<f64>, f64)>,
    pub finetune: Option<(Option<f64>, f64)>,
}

/// The ablation ladder as a dot plot: one row per step, each model's test accuracy as a filled
/// dot and its validation accuracy as a ring, on an axis zoomed to the values.
pub fn ablation_figure(rows: &[AblationRow]) -> String {
    let values: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.head, r.logreg, r.ensemble, r.finetune])
        .flatten()
        .flat_map(|(v, t)| v.into_iter().chain([t]))
        .collect();
    let lo = (values.iter().copied().fold(1.0, f64::min) * 20.0).floor() / 20.0;
    let hi = ((values.iter().copied().fold(0.0, f64::max) * 20.0).ceil() / 20.0).max(lo + 0.05);
    let (left, width, row) = (330.0, 380.0, 30.0);
    let h = 50.0 + row * rows.len() as f64 + 36.0;
    let mut s = Svg::new(left + width + 40.0, h);
    let x = |v: f64| left + width * ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    let ticks = ((hi - lo) / 0.05).round() as usize;
    for t in 0..=ticks {
        let v = lo + 0.05 * t as f64;
        s.line((x(v), 40.0), (x(v), h - 34.0), "#dddddd", 1.0, false);
        s.text(
            x(v),
            h - 20.0,
            &format!("{:.0}%", 100.0 * v),
            "middle",
            11.0,
            "#555",
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = 54.0 + row * i as f64;
        let name: String = r.name.chars().take(48).collect();
        s.text(left - 10.0, y + 4.0, &name, "end", 12.0, "#222");
        for (model, v, dy) in [
            ("head-nn", r.head, -6.0),
            ("logreg", r.logreg, 0.0),
            ("ensemble", r.ensemble, 6.0),
            ("finetune", r.finetune, 12.0),
        ] {
            if let Some((val, test)) = v {
                let c = model_colour(model);
                if let Some(val) = val {
                    s.circle(
                        x(val),
                        y + dy,
                        5.0,
                        "#ffffff",
                        Some(&format!("{model} validation {}", pct(val))),
                    );
                    s.line(
                        (x(val) - 5.0, y + dy),
                        (x(val) + 5.0, y + dy),
                        c,
                        1.0,
                        false,
                    );
                }
                s.circle(
                    x(test),
                    y + dy,
                    4.0,
                    c,
                    Some(&format!("{model} test {}", pct(test))),
                );
            }
        }
    }
    s.legend(
        left,
        20.0,
        &[
            ("head-nn (dot: test, ring: validation)", HEAD, false),
            ("logreg", LOGREG, false),
            ("ensemble", model_colour("ensemble"), false),
            ("finetune", model_colour("finetune"), false),
        ],
    );
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The y tick labels of a curves figure (right-aligned, 10 px, grey).
    fn y_labels(svg: &str) -> Vec<String> {
        svg.split("<text ")
            .filter(|t| t.contains("text-anchor=\"end\" font-size=\"10\""))
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.to_string()))
            .collect()
    }

    #[test]
    fn flat_and_tiny_series_get_distinct_rounded_ticks_and_accuracy_stays_in_0_1() {
        // a 4-class, 8-image run: accuracy flat at 0.25, loss flat at ln 4
        let acc = [0.25; 5];
        let loss = [1.386_294_4; 5];
        let svg = curves("head-nn", (&acc, &acc), (&loss, &loss), 1);
        let labels = y_labels(&svg);
        // two panels, the accuracy's ticks first
        let cut = Axis::nice(0.25, 0.25, 4, Some((0.0, 1.0))).ticks().len();
        let (acc_l, loss_l) = labels.split_at(cut);
        for side in [acc_l, loss_l] {
            assert!(side.len() >= 3, "{side:?}");
            let mut uniq = side.to_vec();
            uniq.dedup();
            assert_eq!(uniq.len(), side.len(), "repeated tick labels: {side:?}");
        }
        for l in acc_l {
            let v: f64 = l.parse().unwrap();
            assert!((0.0..=1.0).contains(&v), "accuracy tick {l} outside [0, 1]");
        }
        // rounded: two decimals, not the float's noise
        assert!(acc_l.iter().all(|l| l.len() <= 4), "{acc_l:?}");
        assert!(loss_l.iter().all(|l| l.len() <= 4), "{loss_l:?}");
        // an accuracy that touches both ends stays inside them
        let a = Axis::nice(0.0, 1.0, 4, Some((0.0, 1.0)));
        assert_eq!((a.lo, a.hi), (0.0, 1.0));
        assert_eq!(
            a.ticks().iter().map(|&v| a.label(v)).collect::<Vec<_>>(),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        // a small range gets round steps
        let a = Axis::nice(0.612, 0.655, 4, Some((0.0, 1.0)));
        let t: Vec<String> = a.ticks().iter().map(|&v| a.label(v)).collect();
        assert_eq!(t, ["0.61", "0.62", "0.63", "0.64", "0.65", "0.66"]);
        // a seeds strip in percent: whole percents for a 1-point step
        let a = Axis::nice(0.402, 0.447, 5, Some((0.0, 1.0)));
        let t: Vec<String> = a.ticks().iter().map(|&v| a.percent(v)).collect();
        assert_eq!(t, ["40%", "41%", "42%", "43%", "44%", "45%"]);
        // non-finite input falls back to [0, 1]
        let a = Axis::nice(f64::INFINITY, f64::NEG_INFINITY, 4, None);
        assert_eq!((a.lo, a.hi), (0.0, 1.0));
    }
}
