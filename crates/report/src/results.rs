//! What the sections share: each model's results as read from its artifacts, the
//! evaluation images (for thumbnails), and the [`Builder`] that collects the report's files.

use std::collections::BTreeMap;

use contracts::{outputs, slots, History, ImagesChunk, ImagesReader, Predictions, PredictionsMeta};
use pipeline::{BoxError, StageContext};
use serde_json::Value;

use crate::metrics::{evaluate, mean_std, ModelMetrics};
use crate::text::pct;

/// A 2x2 box-averaged half-size copy of an RGB image.
pub(crate) fn half(rgb: &[u8], size: usize) -> (Vec<u8>, usize) {
    let h = size / 2;
    let mut px = Vec::with_capacity(h * h * 3);
    for y in 0..h {
        for x in 0..h {
            for c in 0..3 {
                let at =
                    |dy: usize, dx: usize| rgb[((2 * y + dy) * size + 2 * x + dx) * 3 + c] as u16;
                px.push(((at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1) + 2) / 4) as u8);
            }
        }
    }
    (px, h)
}

pub(crate) fn encode_jpeg(px: &[u8], w: usize, h: usize) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82).encode(
        px,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

pub(crate) fn encode_png(px: &[u8], w: usize, h: usize) -> Result<Vec<u8>, BoxError> {
    use image::ImageEncoder;
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::png::PngEncoder::new(&mut out).write_image(
        px,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out.into_inner())
}

/// The evaluation images, by their position in the manifest's evaluation split.
pub(crate) struct EvalImages {
    pub(crate) chunks: Vec<ImagesChunk>,
    /// manifest position -> (chunk, row)
    pub(crate) at: BTreeMap<i64, (usize, usize)>,
    pub(crate) size: usize,
}

impl EvalImages {
    pub(crate) fn open(ctx: &StageContext<'_>) -> Result<EvalImages, BoxError> {
        let r: ImagesReader<'_> = slots::images(outputs::EVALUATION).read(ctx)?;
        let mut e = EvalImages {
            chunks: Vec::new(),
            at: BTreeMap::new(),
            size: 0,
        };
        for ci in 0..r.chunks() {
            let c = r.chunk(ci)?;
            e.size = c.height;
            for (row, pos) in c.index()?.into_iter().enumerate() {
                e.at.insert(pos, (ci, row));
            }
            e.chunks.push(c);
        }
        Ok(e)
    }

    pub(crate) fn image(&self, pos: i64) -> Option<&[u8]> {
        let &(ci, row) = self.at.get(&pos)?;
        let per = self.size * self.size * 3;
        self.chunks[ci].images().get(row * per..(row + 1) * per)
    }

    /// A small JPEG of the image at manifest position `pos`.
    pub(crate) fn thumb(&self, pos: i64) -> Result<Option<Vec<u8>>, BoxError> {
        let Some(img) = self.image(pos) else {
            return Ok(None);
        };
        let (px, h) = half(img, self.size);
        Ok(Some(encode_jpeg(&px, h, h)?))
    }
}

/// One model's results: one entry per seed (one without a sweep), the first being the one
/// the figures show.
pub(crate) struct ModelResult {
    pub(crate) model: &'static str,
    pub(crate) seeds: Vec<(Option<u64>, ModelMetrics, Predictions)>,
    pub(crate) meta: PredictionsMeta,
    pub(crate) history: Option<History>,
}

impl ModelResult {
    pub(crate) fn primary(&self) -> &ModelMetrics {
        &self.seeds[0].1
    }
    pub(crate) fn accuracies(&self) -> Vec<f64> {
        self.seeds.iter().map(|(_, m, _)| m.test_accuracy).collect()
    }
    /// Mean and standard deviation over seeds (the deviation only with several seeds).
    pub(crate) fn mean_std(&self) -> (f64, Option<f64>) {
        let (m, s) = mean_std(&self.accuracies());
        (m, (self.seeds.len() > 1).then_some(s))
    }
    /// `correct / total`, or with a sweep each seed's count: `21, 27, 31 of 220`.
    pub(crate) fn correct_text(&self) -> String {
        let m = self.primary();
        if self.seeds.len() < 2 {
            return format!("{} / {}", m.correct, m.total);
        }
        let counts: Vec<String> = self.seeds.iter().map(|s| s.1.correct.to_string()).collect();
        format!("{} of {}", counts.join(", "), m.total)
    }
    pub(crate) fn accuracy_text(&self) -> String {
        match self.mean_std() {
            (m, Some(s)) => format!(
                "{} ± {:.1} (mean ± sd of {} seeds)",
                pct(m),
                100.0 * s,
                self.seeds.len()
            ),
            (m, None) => pct(m),
        }
    }
}

pub(crate) fn read_model(
    ctx: &StageContext<'_>,
    model: &'static str,
    classes: &[String],
) -> Result<ModelResult, BoxError> {
    let mut seeds = Vec::new();
    let mut meta = None;
    for (seed, input, preds) in slots::predictions(model).read_variants::<Predictions>(ctx)? {
        let m = evaluate(&preds.labels, &preds.pred, classes)?;
        if meta.is_none() {
            meta = Some(slots::predictions(model).read_from::<PredictionsMeta>(input)?);
        }
        seeds.push((seed, m, preds));
    }
    let history = if slots::history(model).is_input(ctx) {
        Some(slots::history(model).read(ctx)?)
    } else {
        None
    };
    Ok(ModelResult {
        model,
        seeds,
        meta: meta.unwrap_or_default(),
        history,
    })
}

/// What the sections produce: the report's files, `metrics.json` and the Markdown summary.
pub(crate) struct Builder {
    pub(crate) files: BTreeMap<String, Vec<u8>>,
    pub(crate) metrics: Value,
    pub(crate) md: String,
}

impl Builder {
    /// Stores an SVG figure as a file too, and returns it for the page.
    pub(crate) fn svg(&mut self, name: &str, svg: String) -> String {
        self.files
            .insert(format!("{name}.svg"), svg.clone().into_bytes());
        svg
    }
}
