//! The `report` stage and the report folder.

use std::collections::BTreeMap;
use std::path::Path;

use pipeline::{resolve_params, BoxError, Chunk, Stage, StageContext, Tensor, Validate};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::figures::{bars, confusion_heatmap, curves};
use crate::html::{page, Section};
use crate::metrics::evaluate;

pub const CACHE_VERSION: u32 = 1;

/// The models the study compares, in the order the study reports them.
pub const MODELS: [&str; 3] = ["scratch-cnn", "head-nn", "logreg"];

/// The study's published test accuracies on Food-11 (11 classes).
pub const PUBLISHED: [(&str, f64); 3] = [
    ("scratch-cnn", 0.553),
    ("head-nn", 0.852),
    ("logreg", 0.850),
];

const SPLITS: [&str; 3] = ["training", "validation", "evaluation"];

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

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn f64s(c: &Chunk, name: &str) -> Vec<f64> {
    c.f64(name).map(|(_, v)| v).unwrap_or_default()
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
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

impl Stage for Report {
    fn id(&self) -> &'static str {
        "report"
    }
    fn code_version(&self) -> String {
        format!("{}-v{CACHE_VERSION}", env!("CODE_HASH"))
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["report"]
    }
    fn resolve_params(&self, raw: &toml::Table) -> Result<Value, String> {
        resolve_params::<Params>(raw)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let manifest = ctx.input("loader", "manifest")?;
        let classes = strings(manifest.meta("classes"));
        let synthetic = manifest
            .meta("synthetic")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let dataset = if synthetic {
            "the embedded SYNTHETIC demo dataset (shapes and textures, not food)".to_string()
        } else {
            format!(
                "{} ({} classes, {} layout)",
                manifest
                    .meta("dataset")
                    .and_then(Value::as_str)
                    .unwrap_or("dataset"),
                classes.len(),
                manifest
                    .meta("layout")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown"),
            )
        };
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut sections = Vec::new();
        let mut md = String::new();
        let mut metrics = json!({"dataset": {"synthetic": synthetic, "classes": classes, "description": dataset}, "models": {}});

        // Models.
        let mut rows = Vec::new();
        for model in MODELS {
            if !ctx.has_input(model, "predictions") {
                continue;
            }
            let pred_art = ctx.input(model, "predictions")?;
            let c = pred_art.chunk(0)?;
            let (_, labels) = c.i64("labels")?;
            let (_, pred) = c.i64("pred")?;
            let m = evaluate(&labels, &pred, &classes)?;
            let heat = confusion_heatmap(
                &format!("{model}: confusion (row-normalised)"),
                &classes,
                &m.confusion,
            )?;
            files.insert(format!("confusion_{model}.svg"), heat.clone().into_bytes());
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
            s.table(
                &std::iter::once("true \\ predicted".to_string())
                    .chain((0..classes.len()).map(|i| i.to_string()))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
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
            if ctx.has_input(model, "history") {
                let h = ctx.input(model, "history")?.chunk(0)?;
                let (acc, val_acc, loss, val_loss) = (
                    f64s(&h, "accuracy"),
                    f64s(&h, "val_accuracy"),
                    f64s(&h, "loss"),
                    f64s(&h, "val_loss"),
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
                files.insert(
                    format!("curves_{model}_accuracy.svg"),
                    a.clone().into_bytes(),
                );
                files.insert(format!("curves_{model}_loss.svg"), l.clone().into_bytes());
                s.svg(&a);
                s.svg(&l);
                metrics["models"][model]["history"] = json!({"accuracy": acc, "val_accuracy": val_acc, "loss": loss, "val_loss": val_loss, "seconds": f64s(&h, "seconds")});
            }
            if let Some(grid) = pred_art.meta("grid") {
                let rows_g: Vec<Vec<String>> = grid
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|r| {
                                [
                                    "C",
                                    "solver",
                                    "val_accuracy",
                                    "n_iter",
                                    "converged",
                                    "seconds",
                                ]
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
                    pred_art
                        .meta("best")
                        .map(Value::to_string)
                        .unwrap_or_default()
                ));
                s.table(
                    &[
                        "C",
                        "solver",
                        "val accuracy",
                        "iterations",
                        "converged",
                        "seconds",
                    ],
                    rows_g,
                );
                metrics["models"][model]["grid"] = grid.clone();
            }
            sections.push(s);
            metrics["models"][model]["test_accuracy"] = json!(m.test_accuracy);
            metrics["models"][model]["correct"] = json!(m.correct);
            metrics["models"][model]["total"] = json!(m.total);
            metrics["models"][model]["confusion"] = json!(m.confusion);
            metrics["models"][model]["per_class"] = json!(m.per_class);
            rows.push((model, m));
        }

        // Comparison with the study.
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
        md.push_str(&format!("## Results on {dataset}\n\n| model | test accuracy (ours) | study, Food-11 |\n|---|---|---|\n"));
        for r in &table {
            md.push_str(&format!("| {} | {} | {} |\n", r[0], r[1], r[2]));
        }

        // Data.
        let mut data = Section::new("Data");
        let counts = manifest
            .meta("class_counts")
            .cloned()
            .unwrap_or(Value::Null);
        for split in SPLITS {
            let v: Vec<usize> = counts
                .get(split)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0) as usize).collect())
                .unwrap_or_default();
            if v.len() == classes.len() {
                let svg = bars(
                    &format!("{split}: images per class ({})", v.iter().sum::<usize>()),
                    &classes,
                    &v,
                )?;
                files.insert(format!("classes_{split}.svg"), svg.clone().into_bytes());
                data.svg(&svg);
            }
        }
        metrics["dataset"]["class_counts"] = counts;

        // Samples: the first images of the evaluation split, spread over classes.
        let eval = ctx.input("preprocess", "evaluation")?;
        let c0 = eval.chunk(0)?;
        let (shape, imgs) = c0.u8("images")?;
        let (_, labels) = c0.i64("labels")?;
        let size = shape[1];
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
        files.insert(
            "samples.png".into(),
            encode_png(&grid, side * size, side * size)?,
        );
        data.images(&tiles, side);

        // Skipped files.
        let mut skipped: Vec<(String, String)> = Vec::new();
        let mut add_skips = |v: Option<&Value>| {
            for s in v.and_then(Value::as_array).into_iter().flatten() {
                skipped.push((
                    s["path"].as_str().unwrap_or("?").to_string(),
                    s["reason"].as_str().unwrap_or("?").to_string(),
                ));
            }
        };
        add_skips(manifest.meta("skipped"));
        for split in SPLITS {
            add_skips(ctx.input("preprocess", split)?.meta("skipped"));
        }
        let mut sk = Section::new(&format!("Skipped files ({})", skipped.len()));
        if skipped.is_empty() {
            sk.text("No input file was skipped.");
        } else {
            sk.table(
                &["file", "reason"],
                skipped
                    .iter()
                    .map(|(a, b)| vec![a.clone(), b.clone()])
                    .collect(),
            );
        }
        let leakage = manifest.meta("leakage").cloned().unwrap_or(json!([]));
        if leakage.as_array().is_some_and(|a| !a.is_empty()) {
            sk.text(&format!("Identical images found in more than one split (kept, but they inflate test accuracy): {leakage}"));
        }
        metrics["skipped"] = json!(skipped
            .iter()
            .map(|(p, r)| json!({"path": p, "reason": r}))
            .collect::<Vec<_>>());
        metrics["leakage"] = leakage;
        md.push_str(&format!(
            "\n{} input files skipped. Report: index.html in the report folder.\n",
            skipped.len()
        ));

        let mut all = vec![cmp];
        all.extend(sections);
        all.push(data);
        all.push(sk);
        let html = page(
            "Transfer learning by feature extraction: report",
            &dataset,
            &all,
        );
        files.insert("index.html".into(), html.into_bytes());
        files.insert("summary.md".into(), md.into_bytes());
        files.insert("metrics.json".into(), serde_json::to_vec_pretty(&metrics)?);

        let tensors: Vec<(String, Tensor)> = files
            .into_iter()
            .map(|(k, v)| (format!("file:{k}"), Tensor::from_u8(&[v.len()], v)))
            .collect();
        let mut w = ctx.output("report")?;
        w.write_chunk(
            tensors
                .iter()
                .map(|(k, t)| (k.as_str(), t.clone()))
                .collect(),
        )?;
        w.set_meta(
            "models",
            json!(rows
                .iter()
                .map(|(m, x)| json!({"model": m, "test_accuracy": x.test_accuracy}))
                .collect::<Vec<_>>()),
        );
        w.finish()?;
        Ok(())
    }
}

/// What a run knows about one stage (not cached: it changes from run to run).
#[derive(Debug, Clone, Serialize)]
pub struct StageProvenance {
    pub stage: String,
    pub seconds: f64,
    pub cached: bool,
    pub key: String,
    pub params: Value,
}

/// Writes the report artifact's files into `out`, adding this run's provenance to
/// `metrics.json` (`stages`) and `index.html`. Returns the Markdown summary.
pub fn write_folder(
    chunk: &Chunk,
    out: &Path,
    provenance: &[StageProvenance],
    extra: &Value,
) -> Result<String, BoxError> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let st = chunk.tensors();
    let mut summary = String::new();
    for name in st.names() {
        let Some(file) = name.strip_prefix("file:") else {
            continue;
        };
        let (_, bytes) = chunk.u8(name)?;
        let mut bytes = bytes.to_vec();
        match file {
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
