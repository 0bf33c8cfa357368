//! The `report` stage and the report folder. The page is built one section at a time, each by
//! its own function over a [`Builder`] that collects the files and `metrics.json`.
//!
//! Layout: the first screen answers the study's question (a comparison figure of the three
//! models beside the study's numbers, the key numbers, the dataset); then the models side by
//! side (confusion matrices on one colour scale, per-class F1, training curves), the mistakes
//! (the most confident wrong predictions as thumbnails, the most confused classes), the
//! logistic-regression grid, seeds (in a sweep), the data, skipped files, and the run.

use std::collections::BTreeMap;
use std::path::Path;

use contracts::{
    ids, outputs, History, ImagesChunk, ImagesReader, ManifestMeta, Predictions, PredictionsMeta,
    ReportBundle, Skipped,
};
use pipeline::{resolve_params, BoxError, Stage, StageContext, Validate};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::html::{esc, gallery, page, Section};
use crate::metrics::{confused_pairs, evaluate, mean_std, ModelMetrics};
use crate::provenance::StageProvenance;
use crate::svg;

pub const CACHE_VERSION: u32 = 2;

/// The stage id of the ensemble of the head and the logistic regression (not in the study).
pub const ENSEMBLE: &str = "ensemble";

/// The models a report shows when their stage ran: the study's, in the order the study reports
/// them, then the ensemble.
pub const MODELS: [&str; 4] = [ids::MODELS[0], ids::MODELS[1], ids::MODELS[2], ENSEMBLE];

/// The study's published test accuracies on Food-11 (11 classes).
pub const PUBLISHED: [(&str, f64); 3] = [
    (ids::SCRATCH_CNN, 0.553),
    (ids::HEAD_NN, 0.852),
    (ids::LOGREG, 0.850),
];

/// The setting naming a JSON file of a reference implementation's per-seed results.
pub const REFERENCE_SETTING: &str = "report.reference";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Sample images shown (a square grid: 16 = 4x4).
    pub samples: usize,
    /// Wrong predictions shown per model in the mistakes gallery.
    pub mistakes: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            samples: 16,
            mistakes: 8,
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        let side = (self.samples as f64).sqrt() as usize;
        if side * side != self.samples || self.samples == 0 || self.samples > 64 {
            return Err("samples must be a square number between 1 and 64".into());
        }
        if self.mistakes > 64 {
            return Err("mistakes must be at most 64".into());
        }
        Ok(())
    }
}

pub struct Report;

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Seconds for a reader: `0.04 s`, `3.2 s`, `85 s`, `12 min 05 s`.
pub(crate) fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{s:.2} s")
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 600.0 {
        format!("{s:.0} s")
    } else {
        let m = (s / 60.0).floor();
        format!("{m:.0} min {:02.0} s", s - 60.0 * m)
    }
}

/// Params as `key=value` pairs (numbers as JSON writes them: shortest exact form).
pub(crate) fn params_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
            .collect::<Vec<_>>()
            .join(", "),
        None => v.to_string(),
    }
}

/// A 2x2 box-averaged half-size copy of an RGB image.
fn half(rgb: &[u8], size: usize) -> (Vec<u8>, usize) {
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

fn encode_jpeg(px: &[u8], w: usize, h: usize) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82).encode(
        px,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}

fn encode_png(px: &[u8], w: usize, h: usize) -> Result<Vec<u8>, BoxError> {
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
struct EvalImages {
    chunks: Vec<ImagesChunk>,
    /// manifest position -> (chunk, row)
    at: BTreeMap<i64, (usize, usize)>,
    size: usize,
}

impl EvalImages {
    fn open(ctx: &StageContext<'_>) -> Result<EvalImages, BoxError> {
        let r = ImagesReader::new(ctx.input(ids::PREPROCESS, outputs::EVALUATION)?);
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

    fn image(&self, pos: i64) -> Option<&[u8]> {
        let &(ci, row) = self.at.get(&pos)?;
        let per = self.size * self.size * 3;
        self.chunks[ci].images().get(row * per..(row + 1) * per)
    }

    /// A small JPEG of the image at manifest position `pos`.
    fn thumb(&self, pos: i64) -> Result<Option<Vec<u8>>, BoxError> {
        let Some(img) = self.image(pos) else {
            return Ok(None);
        };
        let (px, h) = half(img, self.size);
        Ok(Some(encode_jpeg(&px, h, h)?))
    }
}

/// One model's results: one entry per seed (one without a sweep), the first being the one
/// the figures show.
struct ModelResult {
    model: &'static str,
    seeds: Vec<(Option<u64>, ModelMetrics, Predictions)>,
    meta: PredictionsMeta,
    history: Option<History>,
}

impl ModelResult {
    fn primary(&self) -> &ModelMetrics {
        &self.seeds[0].1
    }
    fn accuracies(&self) -> Vec<f64> {
        self.seeds.iter().map(|(_, m, _)| m.test_accuracy).collect()
    }
    /// Mean and standard deviation over seeds (the deviation only with several seeds).
    fn mean_std(&self) -> (f64, Option<f64>) {
        let (m, s) = mean_std(&self.accuracies());
        (m, (self.seeds.len() > 1).then_some(s))
    }
    /// `correct / total`, or with a sweep each seed's count: `21, 27, 31 of 220`.
    fn correct_text(&self) -> String {
        let m = self.primary();
        if self.seeds.len() < 2 {
            return format!("{} / {}", m.correct, m.total);
        }
        let counts: Vec<String> = self.seeds.iter().map(|s| s.1.correct.to_string()).collect();
        format!("{} of {}", counts.join(", "), m.total)
    }
    fn accuracy_text(&self) -> String {
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

fn read_model(
    ctx: &StageContext<'_>,
    model: &'static str,
    classes: &[String],
) -> Result<ModelResult, BoxError> {
    let mut seeds = Vec::new();
    let mut meta = None;
    for (seed, input) in ctx.input_variants(model, outputs::PREDICTIONS)? {
        let preds = Predictions::read(&input)?;
        let m = evaluate(&preds.labels, &preds.pred, classes)?;
        meta.get_or_insert_with(|| PredictionsMeta::read(&input));
        seeds.push((seed, m, preds));
    }
    let history = if ctx.has_input(model, outputs::HISTORY) {
        Some(History::read(&ctx.input(model, outputs::HISTORY)?)?)
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
struct Builder {
    files: BTreeMap<String, Vec<u8>>,
    metrics: Value,
    md: String,
}

impl Builder {
    /// Stores an SVG figure as a file too, and returns it for the page.
    fn svg(&mut self, name: &str, svg: String) -> String {
        self.files
            .insert(format!("{name}.svg"), svg.clone().into_bytes());
        svg
    }
}

/// Which dataset the numbers are about, in words.
fn describe_dataset(m: &ManifestMeta) -> String {
    if m.synthetic {
        format!(
            "the embedded SYNTHETIC demo dataset ({} classes of generated pictures, not food)",
            m.classes.len()
        )
    } else {
        format!(
            "{} ({} classes, {} layout)",
            if m.dataset.is_empty() {
                "dataset"
            } else {
                &m.dataset
            },
            m.classes.len(),
            if m.layout.is_empty() {
                "unknown"
            } else {
                &m.layout
            },
        )
    }
}

/// The line under the title: what the data is, how much, and the answer in one sentence.
fn header(m: &ManifestMeta, dataset: &str, results: &[ModelResult]) -> String {
    let count = |split: &str| -> u64 {
        m.class_counts
            .get(split)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    };
    let mut s = format!(
        "<p>Dataset: <b>{}</b>: {} training, {} validation, {} evaluation images.</p>\n",
        esc(dataset),
        count("training"),
        count("validation"),
        count("evaluation")
    );
    if m.synthetic {
        s.push_str("<p class=\"synthetic\">SYNTHETIC demo data: generated pictures of shapes and textures under varied scale, rotation, position, lighting, clutter and occlusion, so that the pipeline runs on a fresh clone. The numbers show the method, not food classification. Set <code>dataset.root</code> to a real dataset for the study itself.</p>\n");
    }
    let get = |id: &str| {
        results
            .iter()
            .find(|r| r.model == id)
            .map(|r| r.mean_std().0)
    };
    if let (Some(scratch), Some(best)) = (
        get(ids::SCRATCH_CNN),
        [get(ids::HEAD_NN), get(ids::LOGREG)]
            .into_iter()
            .flatten()
            .reduce(f64::max),
    ) {
        let verdict = if best > scratch {
            format!(
                "Transfer learning from ImageNet (VGG16 features) reaches <b>{}</b>, <b>{:.1} points</b> above the CNN trained from scratch ({}).",
                pct(best),
                100.0 * (best - scratch),
                pct(scratch)
            )
        } else {
            format!(
                "Here the CNN trained from scratch ({}) is not beaten by the transfer-learning models ({}).",
                pct(scratch),
                pct(best)
            )
        };
        s.push_str(&format!("<p class=\"answer\">{verdict}</p>\n"));
    }
    s
}

/// The first screen: the comparison figure and the key numbers.
fn overview(b: &mut Builder, results: &[ModelResult]) -> Section {
    let mut sec = Section::new("overview", "Overview");
    let bars: Vec<svg::Bar<'_>> = results
        .iter()
        .map(|r| {
            let (mean, std) = r.mean_std();
            svg::Bar {
                model: r.model,
                mean,
                std,
                values: r.accuracies(),
                study: PUBLISHED.iter().find(|(m, _)| *m == r.model).map(|p| p.1),
            }
        })
        .collect();
    let fig = b.svg("comparison", svg::comparison(&bars));
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.model.to_string(),
                r.accuracy_text(),
                r.correct_text(),
                format!("<!--SECONDS:{}-->", r.model),
                PUBLISHED
                    .iter()
                    .find(|(p, _)| *p == r.model)
                    .map(|p| pct(p.1))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    sec.raw("<div class=\"first\">");
    sec.figure(
        &fig,
        "Figure 1: test accuracy of each model (bars; with a seed sweep the mean, ± one standard deviation, and each seed as a dot) beside the study's published accuracy on Food-11 (grey).",
    );
    sec.raw("<div>");
    sec.table(
        &[
            "model",
            "test accuracy",
            "correct / total",
            "training time",
            "study (Food-11)",
        ],
        &rows,
        &[],
    );
    sec.text("The study's numbers are on Food-11 (11 classes); on other data compare the ordering, not the numbers.");
    sec.raw("</div></div>\n");
    b.md.push_str(
        "| model | test accuracy | correct / total | study, Food-11 |\n|---|---|---|---|\n",
    );
    for r in rows.iter() {
        b.md.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[4]));
    }
    sec
}

/// Confusion matrices in one row (one colour scale), per-class F1 of all models, curves.
fn side_by_side(b: &mut Builder, results: &[ModelResult], classes: &[String]) -> Section {
    let mut sec = Section::new("models", "Models side by side");
    if let Some(r) = results.iter().find(|r| r.seeds.len() > 1) {
        if let Some(seed) = r.seeds[0].0 {
            sec.text(&format!(
                "A seed sweep: the figures of this section and of the mistakes show seed {seed}, the first of the sweep; the overview and the seeds section show every seed."
            ));
        }
    }
    sec.raw("<div class=\"row\">");
    for r in results {
        let fig = b.svg(
            &format!("confusion_{}", r.model),
            svg::confusion(r.model, classes, &r.primary().confusion),
        );
        sec.figure(
            &fig,
            &format!(
                "Confusion matrix of {} on the evaluation split: each row is a true class, shaded by the share of its images predicted as each column; counts in the cells (hover for details).",
                r.model
            ),
        );
    }
    sec.raw("</div>");
    sec.figure(
        &svg::ramp_legend(),
        "Colour scale of every confusion matrix (share of the true class).",
    );
    let f1: Vec<(&str, Vec<f64>)> = results
        .iter()
        .map(|r| {
            (
                r.model,
                r.primary().per_class.iter().map(|c| c.f1).collect(),
            )
        })
        .collect();
    let fig = b.svg("f1_per_class", svg::f1_grouped(classes, &f1));
    sec.figure(
        &fig,
        "Per-class F1 score of every model on the evaluation split.",
    );
    sec.raw("<div class=\"row\">");
    for r in results {
        let Some(h) = &r.history else { continue };
        let col =
            |f: fn(&contracts::EpochRecord) -> f64| h.epochs.iter().map(f).collect::<Vec<_>>();
        let (acc, vacc, loss, vloss) = (
            col(|e| e.accuracy),
            col(|e| e.val_accuracy),
            col(|e| e.loss),
            col(|e| e.val_loss),
        );
        // The epoch with the lowest validation loss (the first on ties), as training defines it.
        let best = vloss
            .iter()
            .enumerate()
            .fold(None::<(usize, f64)>, |b, (i, &v)| match b {
                Some((_, bv)) if bv <= v => b,
                _ => Some((i, v)),
            })
            .map(|(i, _)| i + 1)
            .unwrap_or(0);
        let fig = b.svg(
            &format!("curves_{}", r.model),
            svg::curves(r.model, (&acc, &vacc), (&loss, &vloss), best),
        );
        sec.figure(
            &fig,
            &format!(
                "Training curves of {}: accuracy and loss per epoch on the training batches (solid) and the validation split (dashed); the dotted line marks the epoch with the lowest validation loss.",
                r.model
            ),
        );
        b.metrics["models"][r.model]["history"] = json!({"accuracy": acc, "val_accuracy": vacc, "loss": loss, "val_loss": vloss, "best_epoch": best});
    }
    sec.raw("</div>");
    let rows: Vec<Vec<String>> = classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            std::iter::once(name.clone())
                .chain(results.iter().map(|r| {
                    let s = &r.primary().per_class[c];
                    format!("{:.2} / {:.2} / {:.2}", s.precision, s.recall, s.f1)
                }))
                .collect()
        })
        .collect();
    let head: Vec<String> = std::iter::once("class".to_string())
        .chain(results.iter().map(|r| format!("{}: P / R / F1", r.model)))
        .collect();
    sec.table(
        &head.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
        &[],
    );
    sec
}

/// The most confident wrong predictions of every model, and the most confused classes.
fn mistakes(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    results: &[ModelResult],
    classes: &[String],
    p: &Params,
) -> Result<Section, BoxError> {
    let mut sec = Section::new("mistakes", "Mistakes");
    let images = EvalImages::open(ctx)?;
    for r in results {
        let (_, _, preds) = &r.seeds[0];
        let k = preds.n_classes.max(1);
        let mut wrong: Vec<(usize, f32)> = (0..preds.pred.len())
            .filter(|&i| preds.pred[i] != preds.labels[i])
            .map(|i| (i, preds.probs[i * k + preds.pred[i] as usize]))
            .collect();
        wrong.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut tiles = Vec::new();
        for &(i, conf) in wrong.iter().take(p.mistakes) {
            if let Some(jpeg) = images.thumb(preds.index[i])? {
                let name = |c: i64| classes.get(c as usize).cloned().unwrap_or_default();
                tiles.push((
                    jpeg,
                    "image/jpeg",
                    vec![
                        format!("true: {}", name(preds.labels[i])),
                        format!("predicted: {}", name(preds.pred[i])),
                        format!("confidence {}", pct(conf as f64)),
                    ],
                ));
            }
        }
        sec.raw(&format!(
            "<h3>{}: the {} most confident wrong predictions (of {} wrong)</h3>\n",
            esc(r.model),
            tiles.len(),
            wrong.len()
        ));
        sec.raw(&gallery(&tiles, 112));
        let pairs = confused_pairs(&r.primary().confusion, 5);
        b.metrics["models"][r.model]["confused_pairs"] = json!(pairs
            .iter()
            .map(|(t, q, c)| json!({"true": classes[*t], "predicted": classes[*q], "count": c}))
            .collect::<Vec<_>>());
        let rows: Vec<Vec<String>> = pairs
            .iter()
            .map(|(t, q, c)| {
                let support: usize = r.primary().confusion[*t].iter().sum();
                vec![
                    classes[*t].clone(),
                    classes[*q].clone(),
                    format!(
                        "{c} ({} of the class)",
                        pct(*c as f64 / support.max(1) as f64)
                    ),
                ]
            })
            .collect();
        sec.table(&["true class", "predicted as", "images"], &rows, &[]);
    }
    Ok(sec)
}

/// The logistic regression's validation grid, the chosen row highlighted.
fn grid_section(b: &mut Builder, results: &[ModelResult]) -> Option<Section> {
    let r = results
        .iter()
        .find(|r| r.model == ids::LOGREG && r.meta.grid.is_some())?;
    let grid = r.meta.grid.as_ref()?.as_array()?;
    let best = r.meta.best.as_ref();
    let mut chosen = Vec::new();
    let rows: Vec<Vec<String>> = grid
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let c = g["C"].as_f64().unwrap_or(f64::NAN);
            let solver = g["solver"].as_str().unwrap_or("").to_string();
            if best.is_some_and(|bst| {
                bst["C"].as_f64() == Some(c) && bst["solver"].as_str() == Some(&solver)
            }) {
                chosen.push(i);
            }
            vec![
                format!("{c}"),
                solver,
                pct(g["val_accuracy"].as_f64().unwrap_or(f64::NAN)),
                g["n_iter"].to_string(),
                if g["converged"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    let mut sec = Section::new("grid", "Logistic regression: model selection");
    sec.text("Every candidate is fitted on the training split and scored on the validation split; the highlighted row is the one chosen (highest validation accuracy, the first in grid order among equals).");
    sec.table(
        &[
            "C",
            "solver",
            "validation accuracy",
            "iterations",
            "converged",
        ],
        &rows,
        &chosen,
    );
    b.metrics["models"][r.model]["grid"] = Value::Array(grid.clone());
    Some(sec)
}

/// The ensemble's validation grid of head weights, the chosen row highlighted.
fn ensemble_section(b: &mut Builder, results: &[ModelResult]) -> Option<Section> {
    let r = results.iter().find(|r| r.model == ENSEMBLE)?;
    let grid = r.meta.grid.as_ref()?.as_array()?;
    let w = r.meta.best.as_ref()?["head_weight"].as_f64();
    let mut chosen = Vec::new();
    let rows: Vec<Vec<String>> = grid
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let hw = g["head_weight"].as_f64().unwrap_or(f64::NAN);
            if w == Some(hw) {
                chosen.push(i);
            }
            vec![
                format!("{hw}"),
                format!("{}", 1.0 - hw),
                pct(g["val_accuracy"].as_f64().unwrap_or(f64::NAN)),
                format!("{:.4}", g["val_loss"].as_f64().unwrap_or(f64::NAN)),
            ]
        })
        .collect();
    let mut sec = Section::new("ensemble", "Ensemble: head and logistic regression");
    sec.text("The ensemble averages the class probabilities of the dense head and of the logistic regression, weighted; each weight is scored on the validation split, and the highlighted row is the one chosen (highest validation accuracy, then lowest validation cross-entropy, then the first in grid order).");
    sec.table(
        &[
            "head weight",
            "logistic regression weight",
            "validation accuracy",
            "validation cross-entropy",
        ],
        &rows,
        &chosen,
    );
    b.metrics["models"][r.model]["grid"] = Value::Array(grid.clone());
    Some(sec)
}

/// Per-seed results of a sweep, beside a reference's when given.
fn seeds_section(
    b: &mut Builder,
    results: &[ModelResult],
    reference: Option<&Value>,
) -> Option<Section> {
    let swept = results.iter().any(|r| r.seeds.len() > 1);
    if !swept && reference.is_none() {
        return None;
    }
    let refs = |m: &str| -> Option<Vec<f64>> {
        let v = reference?.get("models")?.get(m)?.as_array()?;
        Some(v.iter().filter_map(Value::as_f64).collect())
    };
    let rows: Vec<svg::SeedRow<'_>> = results
        .iter()
        .map(|r| svg::SeedRow {
            model: r.model,
            ours: r.accuracies(),
            reference: refs(r.model),
        })
        .collect();
    let mut sec = Section::new("seeds", "Seeds");
    let fig = b.svg("seeds", svg::seed_strip(&rows));
    let source = reference
        .and_then(|r| r.get("source"))
        .and_then(Value::as_str)
        .unwrap_or("a reference run");
    sec.figure(
        &fig,
        &format!(
            "Test accuracy per seed (dots), mean (tick) ± one sample standard deviation (bar): ours in colour{}.",
            if reference.is_some() {
                format!(", {source} in grey")
            } else {
                String::new()
            }
        ),
    );
    let mut table_rows = Vec::new();
    for r in results {
        let seeds: Vec<String> = r
            .seeds
            .iter()
            .map(|(s, m, _)| match s {
                Some(s) => format!("{s}: {}", pct(m.test_accuracy)),
                None => pct(m.test_accuracy),
            })
            .collect();
        let (m, s) = mean_std(&r.accuracies());
        let ours = r.accuracies();
        let reference_values = refs(r.model).filter(|v| !v.is_empty());
        let reference_text = reference_values
            .as_ref()
            .map(|v| {
                let (rm, rs) = mean_std(v);
                format!("{} ± {:.1} ({} seeds)", pct(rm), 100.0 * rs, v.len())
            })
            .unwrap_or_else(|| "-".into());
        let difference = reference_values
            .as_ref()
            .map(|v| {
                let (d, t) = crate::metrics::welch(&ours, v);
                match t {
                    Some(t) => format!("{:+.1} points ({:+.1} standard errors)", 100.0 * d, t),
                    None => format!("{:+.1} points", 100.0 * d),
                }
            })
            .unwrap_or_else(|| "-".into());
        table_rows.push(vec![
            r.model.to_string(),
            format!("{} ± {:.1}", pct(m), 100.0 * s),
            seeds.join(", "),
            reference_text,
            difference,
        ]);
    }
    sec.table(
        &[
            "model",
            "ours: mean ± sd",
            "ours per seed",
            "reference: mean ± sd",
            "ours - reference (Welch)",
        ],
        &table_rows,
        &[],
    );
    Some(sec)
}

/// Class distributions per split and sample images.
fn data_section(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    m: &ManifestMeta,
    p: &Params,
) -> Result<Section, BoxError> {
    let mut sec = Section::new("data", "Data");
    let splits: Vec<(&str, Vec<usize>)> = contracts::SPLITS
        .iter()
        .map(|s| {
            (
                *s,
                m.class_counts
                    .get(*s)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0) as usize).collect())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let fig = b.svg(
        "class_distribution",
        svg::class_distribution(&m.classes, &splits),
    );
    sec.figure(&fig, "Images per class in each split.");
    b.metrics["dataset"]["class_counts"] = m.class_counts.clone();
    // Samples: the first images of the evaluation split, spread over it.
    let eval = ImagesReader::new(ctx.input(ids::PREPROCESS, outputs::EVALUATION)?);
    let c0 = eval.chunk(0)?;
    let (imgs, labels, size) = (c0.images(), c0.labels()?, c0.height);
    let per = size * size * 3;
    let n = labels.len();
    let side = (p.samples as f64).sqrt() as usize;
    let mut grid = vec![255u8; side * side * per];
    let mut tiles = Vec::new();
    for k in 0..p.samples.min(n) {
        let i = k * n / p.samples;
        let img = &imgs[i * per..(i + 1) * per];
        let (gx, gy) = (k % side, k / side);
        for y in 0..size {
            let dst = ((gy * size + y) * side * size + gx * size) * 3;
            grid[dst..dst + size * 3].copy_from_slice(&img[y * size * 3..(y + 1) * size * 3]);
        }
        let (px, h) = half(img, size);
        tiles.push((
            encode_jpeg(&px, h, h)?,
            "image/jpeg",
            vec![m
                .classes
                .get(labels[i] as usize)
                .cloned()
                .unwrap_or_default()],
        ));
    }
    b.files.insert(
        "samples.png".into(),
        encode_png(&grid, side * size, side * size)?,
    );
    sec.raw("<figure class=\"fig\">");
    sec.raw(&gallery(&tiles, 112));
    sec.raw(&format!(
        "<figcaption>Figure: {} evaluation images as the models see them ({size}x{size} after preprocessing), with their class.</figcaption></figure>\n",
        tiles.len()
    ));
    Ok(sec)
}

/// Files skipped by the loader and by preprocess, and images shared between splits.
fn skipped_section(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    m: &ManifestMeta,
) -> Result<Section, BoxError> {
    let mut skipped: Vec<Skipped> = m.skipped.clone();
    for split in contracts::SPLITS {
        skipped.extend(ImagesReader::new(ctx.input(ids::PREPROCESS, split)?).skipped()?);
    }
    let mut sec = Section::new("skipped", &format!("Skipped files ({})", skipped.len()));
    if skipped.is_empty() {
        sec.text("No input file was skipped.");
    } else {
        let rows: Vec<Vec<String>> = skipped
            .iter()
            .map(|s| vec![s.path.clone(), s.reason.clone()])
            .collect();
        sec.table(&["file", "reason"], &rows, &[]);
    }
    if let Some(groups) = m.leakage.as_array().filter(|a| !a.is_empty()) {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                vec![g
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" = ")
                    })
                    .unwrap_or_default()]
            })
            .collect();
        sec.text(
            "Identical images found in more than one split (kept, but they inflate test accuracy):",
        );
        sec.table(&["identical files"], &rows, &[]);
    }
    b.metrics["skipped"] = json!(skipped);
    b.metrics["leakage"] = m.leakage.clone();
    b.md.push_str(&format!(
        "\n{} input files skipped. Report: index.html in the report folder.\n",
        skipped.len()
    ));
    Ok(sec)
}

/// `metrics.json`'s entry of a model: the shown seed's metrics and every seed's.
fn model_metrics(b: &mut Builder, r: &ModelResult) {
    let m = r.primary();
    let (mean, std) = mean_std(&r.accuracies());
    let mm = &mut b.metrics["models"][r.model];
    mm["test_accuracy"] = json!(m.test_accuracy);
    mm["correct"] = json!(m.correct);
    mm["total"] = json!(m.total);
    mm["confusion"] = json!(m.confusion);
    mm["per_class"] = json!(m.per_class);
    mm["seeds"] = json!(r
        .seeds
        .iter()
        .map(|(s, m, _)| json!({"seed": s, "test_accuracy": m.test_accuracy, "correct": m.correct, "total": m.total}))
        .collect::<Vec<_>>());
    mm["mean"] = json!(mean);
    mm["std"] = json!(if r.seeds.len() > 1 { std } else { 0.0 });
}

impl Stage for Report {
    fn id(&self) -> &'static str {
        ids::REPORT
    }
    fn code_version(&self) -> String {
        format!("{}-v{CACHE_VERSION}", env!("CODE_HASH"))
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[outputs::REPORT]
    }
    fn resolve_params(&self, raw: &toml::Table) -> Result<Value, String> {
        resolve_params::<Params>(raw)
    }
    fn resources(&self) -> pipeline::Resources {
        pipeline::Resources::cpus(1)
    }
    /// In a seed sweep the report reads every seed's predictions (mean and spread).
    fn aggregates_seeds(&self) -> bool {
        true
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let manifest = ManifestMeta::read(&ctx.input(ids::LOADER, outputs::MANIFEST)?)?;
        let classes = manifest.classes.clone();
        let dataset = describe_dataset(&manifest);
        let reference: Option<Value> = match ctx.setting(REFERENCE_SETTING) {
            Ok(Some(path)) => Some(
                serde_json::from_slice(
                    &std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
                )
                .map_err(|e| format!("{}: not a reference results file: {e}", path.display()))?,
            ),
            _ => None,
        };
        let mut b = Builder {
            files: BTreeMap::new(),
            metrics: json!({"dataset": {"synthetic": manifest.synthetic, "classes": classes, "description": dataset}, "models": {}}),
            md: format!("## Results on {dataset}\n\n"),
        };
        let mut results = Vec::new();
        for model in MODELS {
            if ctx.has_input(model, outputs::PREDICTIONS) {
                results.push(read_model(ctx, model, &classes)?);
            }
        }
        for r in &results {
            model_metrics(&mut b, r);
        }
        if let Some(r) = &reference {
            b.metrics["reference"] = r.clone();
        }
        let mut sections = vec![
            overview(&mut b, &results),
            side_by_side(&mut b, &results, &classes),
            mistakes(ctx, &mut b, &results, &classes, &p)?,
        ];
        sections.extend(grid_section(&mut b, &results));
        sections.extend(ensemble_section(&mut b, &results));
        sections.extend(seeds_section(&mut b, &results, reference.as_ref()));
        sections.push(data_section(ctx, &mut b, &manifest, &p)?);
        sections.push(skipped_section(ctx, &mut b, &manifest)?);
        let html = page(
            "Transfer learning by feature extraction",
            &header(&manifest, &dataset, &results),
            &sections,
        );
        b.files.insert("index.html".into(), html.into_bytes());
        b.files
            .insert("summary.md".into(), b.md.clone().into_bytes());
        b.files.insert(
            "metrics.json".into(),
            serde_json::to_vec_pretty(&b.metrics)?,
        );
        ReportBundle {
            files: b.files,
            models: json!(results
                .iter()
                .map(|r| json!({"model": r.model, "test_accuracy": r.primary().test_accuracy, "mean": r.mean_std().0}))
                .collect::<Vec<_>>()),
        }
        .write(ctx)
    }
}

/// Writes the report artifact's files into `out`, adding this run's provenance to
/// `metrics.json` (`stages`) and `index.html` (the run section, the training times). Returns
/// the Markdown summary.
pub fn write_folder(
    bundle: &ReportBundle,
    out: &Path,
    provenance: &[StageProvenance],
    extra: &Value,
) -> Result<String, BoxError> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut summary = String::new();
    for (file, bytes) in &bundle.files {
        let mut bytes = bytes.clone();
        match file.as_str() {
            "metrics.json" => {
                let mut m: Value = serde_json::from_slice(&bytes)?;
                m["stages"] = provenance.iter().map(|p| (p.stage.clone(), json!({"seconds": p.seconds, "cached": p.cached, "key": p.key, "params": p.params, "threads": p.threads, "cpu_seconds": p.cpu_seconds, "peak_rss_bytes": p.peak_rss_bytes}))).collect::<serde_json::Map<_, _>>().into();
                m["run"] = extra.clone();
                bytes = serde_json::to_vec_pretty(&m)?;
            }
            "index.html" => {
                let mut html = String::from_utf8_lossy(&bytes).replace(
                    "<!--PROVENANCE-->",
                    &crate::html::provenance(provenance, extra),
                );
                for model in MODELS {
                    html = html.replace(
                        &format!("&lt;!--SECONDS:{model}--&gt;"),
                        &training_time(model, provenance),
                    );
                }
                bytes = html.into_bytes();
            }
            "summary.md" => summary = String::from_utf8_lossy(&bytes).into_owned(),
            _ => {}
        }
        let path = out.join(file);
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(summary)
}

/// A model's training time for the overview table: its stage's seconds, or in a seed sweep
/// (stages `model (seed N)`) the mean per seed.
fn training_time(model: &str, provenance: &[StageProvenance]) -> String {
    let sweep = format!("{model} (seed ");
    let runs: Vec<&StageProvenance> = provenance
        .iter()
        .filter(|p| p.stage == model || p.stage.starts_with(&sweep))
        .collect();
    let cached = if runs.iter().any(|p| p.cached) {
        " (cached)"
    } else {
        ""
    };
    match runs.as_slice() {
        [] => "-".into(),
        [p] => format!("{}{cached}", seconds(p.seconds)),
        many => {
            let mean = many.iter().map(|p| p.seconds).sum::<f64>() / many.len() as f64;
            format!("{} per seed{cached}", seconds(mean))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_time_of_a_sweep_is_per_seed() {
        let p = |stage: &str, seconds: f64, cached: bool| StageProvenance {
            stage: stage.into(),
            seconds,
            cached,
            ..Default::default()
        };
        let single = [p("head-nn", 1.5, false)];
        assert_eq!(training_time("head-nn", &single), "1.5 s");
        let sweep = [
            p("head-nn (seed 1)", 2.0, true),
            p("head-nn (seed 2)", 4.0, false),
            p("logreg", 30.0, false),
        ];
        assert_eq!(training_time("head-nn", &sweep), "3.0 s per seed (cached)");
        assert_eq!(training_time("scratch-cnn", &sweep), "-");
    }

    #[test]
    fn numbers_for_readers() {
        assert_eq!(seconds(0.3572416), "0.36 s");
        assert_eq!(seconds(28.81), "28.8 s");
        assert_eq!(seconds(744.2), "12 min 24 s");
        assert_eq!(pct(0.9848484848484849), "98.5%");
        assert_eq!(
            params_text(&json!({"lr": 0.001, "mode": "x"})),
            "lr=0.001, mode=x"
        );
    }
}
