//! The `report` stage and the report folder. The page is built one section at a time, each by
//! its own function over a [`Builder`] that collects the files and `metrics.json`.

use std::collections::BTreeMap;
use std::path::Path;

use contracts::{
    ids, outputs, History, ImagesReader, ManifestMeta, Predictions, PredictionsMeta, ReportBundle,
    Skipped,
};
use pipeline::{resolve_params, BoxError, Stage, StageContext, Validate};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::figures::{bars, confusion_heatmap, curves};
use crate::html::{page, Section};
use crate::metrics::{evaluate, ModelMetrics};
use crate::provenance::StageProvenance;

pub const CACHE_VERSION: u32 = 1;

/// The models the study compares, in the order the study reports them.
pub const MODELS: [&str; 3] = ids::MODELS;

/// The study's published test accuracies on Food-11 (11 classes).
pub const PUBLISHED: [(&str, f64); 3] = [
    (ids::SCRATCH_CNN, 0.553),
    (ids::HEAD_NN, 0.852),
    (ids::LOGREG, 0.850),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Sample images shown (a square grid: 16 = 4x4).
    pub samples: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { samples: 16 }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        let side = (self.samples as f64).sqrt() as usize;
        if side * side != self.samples || self.samples == 0 || self.samples > 64 {
            return Err("samples must be a square number between 1 and 64".into());
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

/// A 2x downscaled tile (nearest) of a 224x224 RGB image, as PNG bytes.
fn tile_png(rgb: &[u8], size: usize) -> Result<Vec<u8>, BoxError> {
    let half = size / 2;
    let mut px = Vec::with_capacity(half * half * 3);
    for y in 0..half {
        for x in 0..half {
            let i = ((2 * y) * size + 2 * x) * 3;
            px.extend_from_slice(&rgb[i..i + 3]);
        }
    }
    encode_png(&px, half, half)
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

/// What the sections produce: the report's files, `metrics.json` and the Markdown summary.
struct Builder {
    files: BTreeMap<String, Vec<u8>>,
    metrics: Value,
    md: String,
}

impl Builder {
    fn file(&mut self, name: String, bytes: Vec<u8>) {
        self.files.insert(name, bytes);
    }
}

/// Which dataset the numbers are about, in words.
fn describe_dataset(m: &ManifestMeta) -> String {
    if m.synthetic {
        "the embedded SYNTHETIC demo dataset (shapes and textures, not food)".to_string()
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

/// One model: accuracy, confusion heatmap and tables, training curves, the logreg grid.
fn model_section(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    model: &str,
    classes: &[String],
) -> Result<(Section, ModelMetrics), BoxError> {
    let pred_in = ctx.input(model, outputs::PREDICTIONS)?;
    let preds = Predictions::read(&pred_in)?;
    let pmeta = PredictionsMeta::read(&pred_in);
    let m = evaluate(&preds.labels, &preds.pred, classes)?;
    let heat = confusion_heatmap(
        &format!("{model}: confusion (row-normalised)"),
        classes,
        &m.confusion,
    )?;
    b.file(format!("confusion_{model}.svg"), heat.clone().into_bytes());
    let mut s = Section::new(model);
    s.text(&format!(
        "Test accuracy <b>{}</b> ({} / {} correct).",
        pct(m.test_accuracy),
        m.correct,
        m.total
    ));
    s.svg(&heat);
    s.table(
        &["class", "precision", "recall", "F1", "support"],
        m.per_class
            .iter()
            .map(|c| {
                vec![
                    c.class.clone(),
                    format!("{:.3}", c.precision),
                    format!("{:.3}", c.recall),
                    format!("{:.3}", c.f1),
                    c.support.to_string(),
                ]
            })
            .collect(),
    );
    let head: Vec<String> = std::iter::once("true \\ predicted".to_string())
        .chain((0..classes.len()).map(|i| i.to_string()))
        .collect();
    s.table(
        &head.iter().map(String::as_str).collect::<Vec<_>>(),
        m.confusion
            .iter()
            .enumerate()
            .map(|(i, r)| {
                std::iter::once(format!("{i} {}", classes[i]))
                    .chain(r.iter().map(|v| v.to_string()))
                    .collect()
            })
            .collect(),
    );
    if ctx.has_input(model, outputs::HISTORY) {
        history_figures(ctx, b, &mut s, model)?;
    }
    if let Some(grid) = &pmeta.grid {
        grid_table(b, &mut s, model, grid, pmeta.best.as_ref());
    }
    let mm = &mut b.metrics["models"][model];
    mm["test_accuracy"] = json!(m.test_accuracy);
    mm["correct"] = json!(m.correct);
    mm["total"] = json!(m.total);
    mm["confusion"] = json!(m.confusion);
    mm["per_class"] = json!(m.per_class);
    Ok((s, m))
}

/// Accuracy and loss curves of a network.
fn history_figures(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    s: &mut Section,
    model: &str,
) -> Result<(), BoxError> {
    let h = History::read(&ctx.input(model, outputs::HISTORY)?)?;
    let col = |f: fn(&contracts::EpochRecord) -> f64| h.epochs.iter().map(f).collect::<Vec<_>>();
    let (acc, val_acc, loss, val_loss) = (
        col(|r| r.accuracy),
        col(|r| r.val_accuracy),
        col(|r| r.loss),
        col(|r| r.val_loss),
    );
    let a = curves(
        &format!("{model}: accuracy"),
        "accuracy",
        &[("training", acc.clone()), ("validation", val_acc.clone())],
    )?;
    let l = curves(
        &format!("{model}: loss"),
        "loss",
        &[("training", loss.clone()), ("validation", val_loss.clone())],
    )?;
    b.file(
        format!("curves_{model}_accuracy.svg"),
        a.clone().into_bytes(),
    );
    b.file(format!("curves_{model}_loss.svg"), l.clone().into_bytes());
    s.svg(&a);
    s.svg(&l);
    b.metrics["models"][model]["history"] =
        json!({"accuracy": acc, "val_accuracy": val_acc, "loss": loss, "val_loss": val_loss});
    Ok(())
}

/// The logistic regression's validation grid.
fn grid_table(b: &mut Builder, s: &mut Section, model: &str, grid: &Value, best: Option<&Value>) {
    let rows: Vec<Vec<String>> = grid
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    ["C", "solver", "val_accuracy", "n_iter", "converged"]
                        .iter()
                        .map(|k| {
                            r.get(*k)
                                .map(|v| v.to_string().trim_matches('"').to_string())
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    s.text(&format!(
        "Grid on the validation split; chosen: {}.",
        best.map(Value::to_string).unwrap_or_default()
    ));
    s.table(
        &["C", "solver", "val accuracy", "iterations", "converged"],
        rows,
    );
    b.metrics["models"][model]["grid"] = grid.clone();
}

/// Our accuracies beside the study's.
fn comparison_section(b: &mut Builder, rows: &[(&str, ModelMetrics)], dataset: &str) -> Section {
    let mut cmp = Section::new("Comparison with the study");
    let table: Vec<Vec<String>> = PUBLISHED
        .iter()
        .map(|(model, published)| {
            let ours = rows
                .iter()
                .find(|(m, _)| m == model)
                .map(|(_, m)| format!("{} ({}/{})", pct(m.test_accuracy), m.correct, m.total))
                .unwrap_or_else(|| "not run".into());
            vec![model.to_string(), ours, pct(*published)]
        })
        .collect();
    cmp.text(&format!("Ours on {dataset}; the study's on Food-11 (11 classes). Numbers on different datasets are not directly comparable; the ordering (transfer learning far above the scratch CNN) is what carries over."));
    cmp.table(
        &["model", "ours: test accuracy", "study (Food-11)"],
        table.clone(),
    );
    b.md.push_str(&format!("## Results on {dataset}\n\n| model | test accuracy (ours) | study, Food-11 |\n|---|---|---|\n"));
    for r in &table {
        b.md.push_str(&format!("| {} | {} | {} |\n", r[0], r[1], r[2]));
    }
    cmp
}

/// Class distributions per split.
fn data_section(b: &mut Builder, m: &ManifestMeta) -> Result<Section, BoxError> {
    let mut data = Section::new("Data");
    for split in contracts::SPLITS {
        let v: Vec<usize> = m
            .class_counts
            .get(split)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0) as usize).collect())
            .unwrap_or_default();
        if v.len() == m.classes.len() {
            let svg = bars(
                &format!("{split}: images per class ({})", v.iter().sum::<usize>()),
                &m.classes,
                &v,
            )?;
            b.file(format!("classes_{split}.svg"), svg.clone().into_bytes());
            data.svg(&svg);
        }
    }
    b.metrics["dataset"]["class_counts"] = m.class_counts.clone();
    Ok(data)
}

/// The first images of the evaluation split, spread over classes: a grid (`samples.png`) and
/// tiles in the page.
fn samples(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    data: &mut Section,
    p: &Params,
    classes: &[String],
) -> Result<(), BoxError> {
    let eval = ImagesReader::new(ctx.input(ids::PREPROCESS, outputs::EVALUATION)?);
    let c0 = eval.chunk(0)?;
    let imgs = c0.images();
    let labels = c0.labels()?;
    let size = c0.height;
    let per = size * size * 3;
    let n = labels.len();
    let picks: Vec<usize> = (0..p.samples).map(|i| i * n / p.samples).collect();
    let side = (p.samples as f64).sqrt() as usize;
    let mut grid = vec![255u8; side * side * per];
    let mut tiles = Vec::new();
    for (k, &i) in picks.iter().enumerate() {
        let img = &imgs[i * per..(i + 1) * per];
        let (gx, gy) = (k % side, k / side);
        for y in 0..size {
            let dst = ((gy * size + y) * side * size + gx * size) * 3;
            grid[dst..dst + size * 3].copy_from_slice(&img[y * size * 3..(y + 1) * size * 3]);
        }
        tiles.push((
            tile_png(img, size)?,
            classes.get(labels[i] as usize).cloned().unwrap_or_default(),
        ));
    }
    b.file(
        "samples.png".into(),
        encode_png(&grid, side * size, side * size)?,
    );
    data.images(&tiles, side);
    Ok(())
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
    let mut sk = Section::new(&format!("Skipped files ({})", skipped.len()));
    if skipped.is_empty() {
        sk.text("No input file was skipped.");
    } else {
        sk.table(
            &["file", "reason"],
            skipped
                .iter()
                .map(|s| vec![s.path.clone(), s.reason.clone()])
                .collect(),
        );
    }
    if m.leakage.as_array().is_some_and(|a| !a.is_empty()) {
        sk.text(&format!("Identical images found in more than one split (kept, but they inflate test accuracy): {}", m.leakage));
    }
    b.metrics["skipped"] = json!(skipped);
    b.metrics["leakage"] = m.leakage.clone();
    b.md.push_str(&format!(
        "\n{} input files skipped. Report: index.html in the report folder.\n",
        skipped.len()
    ));
    Ok(sk)
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
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let manifest = ManifestMeta::read(&ctx.input(ids::LOADER, outputs::MANIFEST)?)?;
        let classes = manifest.classes.clone();
        let dataset = describe_dataset(&manifest);
        let mut b = Builder {
            files: BTreeMap::new(),
            metrics: json!({"dataset": {"synthetic": manifest.synthetic, "classes": classes, "description": dataset}, "models": {}}),
            md: String::new(),
        };
        let mut sections = Vec::new();
        let mut rows = Vec::new();
        for model in MODELS {
            if ctx.has_input(model, outputs::PREDICTIONS) {
                let (s, m) = model_section(ctx, &mut b, model, &classes)?;
                sections.push(s);
                rows.push((model, m));
            }
        }
        let cmp = comparison_section(&mut b, &rows, &dataset);
        let mut data = data_section(&mut b, &manifest)?;
        samples(ctx, &mut b, &mut data, &p, &classes)?;
        let sk = skipped_section(ctx, &mut b, &manifest)?;

        let mut all = vec![cmp];
        all.extend(sections);
        all.push(data);
        all.push(sk);
        let html = page(
            "Transfer learning by feature extraction: report",
            &dataset,
            &all,
        );
        b.file("index.html".into(), html.into_bytes());
        b.file("summary.md".into(), b.md.clone().into_bytes());
        b.file(
            "metrics.json".into(),
            serde_json::to_vec_pretty(&b.metrics)?,
        );
        ReportBundle {
            files: b.files,
            models: json!(rows
                .iter()
                .map(|(m, x)| json!({"model": m, "test_accuracy": x.test_accuracy}))
                .collect::<Vec<_>>()),
        }
        .write(ctx)
    }
}

/// Writes the report artifact's files into `out`, adding this run's provenance to
/// `metrics.json` (`stages`) and `index.html`. Returns the Markdown summary.
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
                m["stages"] = provenance.iter().map(|p| (p.stage.clone(), json!({"seconds": p.seconds, "cached": p.cached, "key": p.key, "params": p.params}))).collect::<serde_json::Map<_, _>>().into();
                m["run"] = extra.clone();
                bytes = serde_json::to_vec_pretty(&m)?;
            }
            "index.html" => {
                let html = String::from_utf8_lossy(&bytes).replace(
                    "<!--PROVENANCE-->",
                    &crate::html::provenance(provenance, extra),
                );
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
