//! `cargo xtask ablation FILE`: runs a ladder of recipes, each adding one ingredient to the one
//! before, on one cache (stages they share run once), and tabulates what each ingredient
//! bought: validation and test accuracy of the dense head and the logistic regression, and
//! what the feature extraction cost. Every choice is made on validation; test accuracy is
//! reported, never used.
//!
//! The file (TOML), paths relative to its folder:
//! ```toml
//! [[step]]
//! name = "the study's recipe"
//! config = "../../pipeline.toml"
//! [[step]]
//! name = "+ conv5_3 average"
//! config = "best.toml"
//! set = ["stage.describe.params.parts=[\"conv5_3.avg\"]"]
//! targets = ["head-nn", "logreg"]   # optional: the stages to bring up to date
//! ```
//! The command line's `--set`s apply to every step, before the step's own.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use contracts::{ids, slots, Evaluate, History, Predictions, PredictionsMeta};
use pipeline::{Config, RunOptions, RunRecord, Store};
use serde::Deserialize;
use serde_json::{json, Value};

/// `ablation`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct AblationArgs {
    /// The ladder of recipes (see `xtask/pipelines/ablation.toml`).
    #[arg(default_value = "xtask/pipelines/ablation.toml")]
    pub file: PathBuf,
    /// Where the table (`ablation.md`, `ablation.json`, `ablation.svg`) is written; default:
    /// the last step's `report.out`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ladder {
    step: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    name: String,
    config: PathBuf,
    #[serde(default)]
    set: Vec<String>,
    /// Stages to bring up to date (default: all).
    #[serde(default)]
    targets: Vec<String>,
}

/// `(validation, test)` accuracy.
pub type Scores = (Option<f64>, f64);

/// One step's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    /// `(validation, test)` accuracy of each model, when the step has it; no validation
    /// accuracy for a model trained on the validation images.
    pub head: Option<Scores>,
    pub logreg: Option<Scores>,
    pub ensemble: Option<Scores>,
    pub finetune: Option<Scores>,
    /// The fine-tuning stage's seconds (0 when the step has none).
    pub finetune_seconds: f64,
    /// The feature extraction's seconds (when it ran), images and views.
    pub extract_seconds: f64,
    pub images: u64,
    pub views: usize,
    /// The part of `extract_seconds` spent on the views this step's descriptor reads, in
    /// proportion to their pixels (a forward pass costs in proportion to its input's area).
    pub views_seconds: f64,
    pub descriptor: String,
}

fn load_ladder(file: &Path) -> anyhow::Result<Vec<Step>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the ablation file {}", file.display()))?;
    let l: Ladder = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
    if l.step.is_empty() {
        bail!("{}: no [[step]]", file.display());
    }
    let base = file.parent().unwrap_or(Path::new("."));
    Ok(l.step
        .into_iter()
        .map(|s| Step {
            config: base.join(&s.config),
            ..s
        })
        .collect())
}

fn record(store: &Store, summary: &pipeline::RunSummary, stage: &str) -> Option<RunRecord> {
    summary
        .records
        .get(stage)
        .cloned()
        .or_else(|| store.latest(stage).ok().flatten())
}

/// `(validation, test)` accuracy of a model's record: the validation accuracy of the grid
/// entry it chose, of its stored validation predictions, or, for a network, of the epoch it
/// evaluated; none when it trained on the validation images.
fn accuracies(store: &Store, rec: &RunRecord, model: &str) -> anyhow::Result<Scores> {
    let (val, test) = validation_and_test(store, rec, model)?;
    let seen = model == ids::FINETUNE
        && finetune::Params::from_record(rec)
            .map_err(anyhow::Error::from_boxed)?
            .train_on
            == finetune::TrainOn::TrainingAndValidation;
    Ok(((!seen).then_some(val), test))
}

fn validation_and_test(store: &Store, rec: &RunRecord, model: &str) -> anyhow::Result<(f64, f64)> {
    let boxed = anyhow::Error::from_boxed;
    let slot = slots::predictions(model);
    let test = slot
        .read_record::<Predictions>(rec, store)
        .map_err(boxed)?
        .accuracy();
    let meta: PredictionsMeta = slot.read_record(rec, store).map_err(boxed)?;
    if let Some(best) = &meta.best {
        return Ok((best.val_accuracy(), test));
    }
    // A stage that stores its validation predictions (finetune: its members and weight sets
    // averaged, as it evaluates) is scored on them; a history holds one network's epochs.
    let val_slot = slots::validation_predictions(model);
    if rec.outputs.contains_key(val_slot.output) {
        let val = val_slot
            .read_record::<Predictions>(rec, store)
            .map_err(boxed)?
            .accuracy();
        return Ok((val, test));
    }
    let h: History = slots::history(model)
        .read_record(rec, store)
        .map_err(boxed)
        .with_context(|| format!("`{model}` names neither a chosen grid entry nor a history"))?;
    let e = if meta.evaluate == Some(Evaluate::Best) {
        h.epochs
            .iter()
            .reduce(|a, b| if b.val_loss < a.val_loss { b } else { a })
    } else {
        h.epochs.last()
    };
    Ok((e.context("empty history")?.val_accuracy, test))
}

/// Loads every step's configuration of the ladder `file` (with `set` before each step's own
/// settings) and checks it (stages known, params valid) without running anything; returns the
/// number of steps. `ablation` does this first, so that a mistake in the last step shows
/// before the first steps' hours.
pub fn check_ladder(file: &Path, set: &[String]) -> anyhow::Result<usize> {
    let steps = load_ladder(file)?;
    let registry = crate::registry();
    for step in &steps {
        let mut all = set.to_vec();
        all.extend(step.set.iter().cloned());
        Config::load_with_paths(&step.config, &all, crate::PATH_SETTINGS)
            .map_err(anyhow::Error::from)
            .and_then(|c| Ok(pipeline::check(&c, &registry)?))
            .with_context(|| format!("{}: step `{}`", file.display(), step.name))?;
    }
    Ok(steps.len())
}

pub fn ablation(args: &AblationArgs, globals: &cli::Globals) -> anyhow::Result<()> {
    check_ladder(&args.file, &globals.set)?;
    let steps = load_ladder(&args.file)?;
    let registry = crate::registry();
    let progress = cli::Terminal::progress(globals.quiet);
    let mut rows = Vec::new();
    let mut last_out = None;
    for (i, step) in steps.iter().enumerate() {
        eprintln!("\n== ablation {}/{}: {}", i + 1, steps.len(), step.name);
        let mut set = globals.set.clone();
        set.extend(step.set.iter().cloned());
        let config = Config::load_with_paths(&step.config, &set, crate::PATH_SETTINGS)
            .with_context(|| format!("step `{}`", step.name))?;
        let opts = RunOptions {
            targets: step.targets.clone(),
            ..RunOptions::default()
        };
        let summary = pipeline::run(&config, &registry, &opts, &progress)
            .with_context(|| format!("step `{}`", step.name))?;
        summary.check()?;
        cli::Hooks::after_run(&crate::StudyHooks, &config, &summary, &progress)?;
        let store = config.open_store()?;
        let model = |m: &str| -> anyhow::Result<Option<Scores>> {
            match record(&store, &summary, m) {
                Some(r) if summary.records.contains_key(m) => Ok(Some(accuracies(&store, &r, m)?)),
                _ => Ok(None),
            }
        };
        // The step's extraction, whichever backbone it ran, or the stored maps fine-tuning
        // starts from.
        let (extraction, vp) = match contracts::Backbone::ALL
            .into_iter()
            .find(|b| config.stage(b.stage()).is_some())
        {
            Some(backbone) => {
                let rec = record(&store, &summary, backbone.stage())
                    .with_context(|| format!("the step has no {} record", backbone.stage()))?;
                let vp = crate::predict::extraction_params(backbone, &rec)?;
                (rec, vp)
            }
            None => {
                let rec = record(&store, &summary, ids::VGG_ACTIVATIONS).context(
                    "the step's pipeline has no vgg-extract, lite0-extract or vgg-activations record",
                )?;
                let vp = vgg_activations::Params::from_record(&rec)
                    .map_err(anyhow::Error::from_boxed)?
                    .extraction();
                (rec, vp)
            }
        };
        let views = vp.views.len();
        let described = summary
            .records
            .get(ids::DESCRIBE)
            .and_then(|d| describe::Params::from_record(d).ok());
        let descriptor = match &described {
            Some(p) => {
                let used = if p.views.is_empty() {
                    "every view".to_string()
                } else {
                    p.views.join("+")
                };
                format!("{}; {used}", p.recipe())
            }
            None if extraction.stage == ids::VGG_ACTIVATIONS => {
                let layer = vgg_activations::Params::from_record(&extraction)
                    .map_err(anyhow::Error::from_boxed)?
                    .layer;
                format!("stored {layer} maps, fine-tuned above")
            }
            None => "pool5 (head: average; logreg: flattened)".to_string(),
        };
        // Without `describe` the classifiers read the original view only; fine-tuning reads
        // every stored view.
        let used: Vec<String> = match &described {
            Some(p) if p.views.is_empty() => vp.views.iter().map(|v| v.name()).collect(),
            Some(p) => p.views.clone(),
            None if extraction.stage == ids::VGG_ACTIVATIONS => {
                vp.views.iter().map(|v| v.name()).collect()
            }
            None => vec![contracts::ORIGINAL_VIEW.to_string()],
        };
        let size = record(&store, &summary, ids::PREPROCESS)
            .and_then(|r| preprocess::Params::from_record(&r).ok())
            .context("the step has no preprocess record with a size")?
            .size;
        let share = views_share(&vp, &used, size)?;
        rows.push(Row {
            name: step.name.clone(),
            head: model(ids::HEAD_NN)?,
            logreg: model(ids::LOGREG)?,
            ensemble: model(ids::ENSEMBLE)?,
            finetune: model(ids::FINETUNE)?,
            finetune_seconds: summary
                .records
                .get(ids::FINETUNE)
                .map_or(0.0, |r| r.seconds),
            extract_seconds: extraction.seconds,
            images: extraction
                .usage
                .as_ref()
                .and_then(|u| u.items.as_ref())
                .map_or(0, |(n, _)| *n),
            views,
            views_seconds: extraction.seconds * share,
            descriptor,
        });
        last_out = config.setting_path("report.out");
    }
    let out = args
        .out
        .clone()
        .or(last_out)
        .context("no --out and no report.out")?;
    std::fs::create_dir_all(&out).with_context(|| format!("{}", out.display()))?;
    let md = markdown(&rows);
    std::fs::write(out.join("ablation.md"), &md)?;
    std::fs::write(
        out.join("ablation.json"),
        serde_json::to_vec_pretty(&json_rows(&rows))?,
    )?;
    std::fs::write(
        out.join("ablation.svg"),
        report::ablation_figure(&figure_rows(&rows)),
    )?;
    println!("\n{md}\nWritten to {}", out.join("ablation.md").display());
    Ok(())
}

/// The share of an extraction's cost spent on the views `used`: each view's forward pass
/// costs in proportion to its pixels (original and flip: `size`^2; a crop: its side^2;
/// `scale-N`: N^2), so the share is the used views' pixels over all views' pixels.
pub fn views_share(p: &vgg_extract::Params, used: &[String], size: usize) -> anyhow::Result<f64> {
    let pixels = |v: &vgg_extract::View| -> anyhow::Result<f64> {
        let side = match v {
            vgg_extract::View::Original | vgg_extract::View::Flip => size,
            vgg_extract::View::Crop(_) => vgg_extract::crop_side(size, size, p.crop)?,
            vgg_extract::View::Scale(n) => *n,
        };
        Ok((side * side) as f64)
    };
    let mut all = 0.0;
    let mut part = 0.0;
    for v in &p.views {
        let px = pixels(v)?;
        all += px;
        if used.iter().any(|u| *u == v.name()) {
            part += px;
        }
    }
    Ok(if all > 0.0 { part / all } else { 1.0 })
}

fn pct(v: Option<Scores>, test: bool) -> String {
    match v {
        Some((_, t)) if test => format!("{:.1}", 100.0 * t),
        Some((Some(val), _)) => format!("{:.1}", 100.0 * val),
        Some((None, _)) => "(trained on)".into(),
        None => "-".into(),
    }
}

/// The table: one row per step.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| step | head-nn val | head-nn test | logreg val | logreg test | ensemble val | ensemble test | finetune val | finetune test | fine-tuning | extraction | descriptor |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let rate = if r.extract_seconds > 0.0 {
            let own = if (r.views_seconds - r.extract_seconds).abs() > 0.5 {
                format!("; its views {:.0} s", r.views_seconds)
            } else {
                String::new()
            };
            format!(
                "{:.0} s ({} view{}, {:.1} img/s{own})",
                r.extract_seconds,
                r.views,
                if r.views == 1 { "" } else { "s" },
                r.images as f64 / r.extract_seconds
            )
        } else {
            "-".into()
        };
        let tuning = if r.finetune.is_some() {
            format!("{:.0} s", r.finetune_seconds)
        } else {
            "-".into()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {tuning} | {rate} | {} |\n",
            r.name,
            pct(r.head, false),
            pct(r.head, true),
            pct(r.logreg, false),
            pct(r.logreg, true),
            pct(r.ensemble, false),
            pct(r.ensemble, true),
            pct(r.finetune, false),
            pct(r.finetune, true),
            r.descriptor
        ));
    }
    s
}

fn json_rows(rows: &[Row]) -> Value {
    let acc = |v: Option<Scores>| v.map(|(val, test)| json!({"validation": val, "test": test}));
    json!(rows
        .iter()
        .map(|r| json!({
            "step": r.name,
            "head-nn": acc(r.head),
            "logreg": acc(r.logreg),
            "ensemble": acc(r.ensemble),
            "finetune": acc(r.finetune),
            "finetune_seconds": r.finetune_seconds,
            "extract_seconds": r.extract_seconds,
            "images": r.images,
            "views": r.views,
            "views_seconds": r.views_seconds,
            "descriptor": r.descriptor,
        }))
        .collect::<Vec<_>>())
}

fn figure_rows(rows: &[Row]) -> Vec<report::AblationRow> {
    rows.iter()
        .map(|r| report::AblationRow {
            name: r.name.clone(),
            head: r.head,
            logreg: r.logreg,
            ensemble: r.ensemble,
            finetune: r.finetune,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_pays_for_the_views_it_reads_by_their_pixels() {
        let p: vgg_extract::Params = serde_json::from_value(serde_json::json!({
            "views": ["original", "flip", "scale-224", "crop-center"],
            "crop": 0.5,
        }))
        .unwrap();
        // 320^2 + 320^2 + 224^2 + 160^2 pixels in all.
        let all = 2.0 * 320.0 * 320.0 + 224.0 * 224.0 + 160.0 * 160.0;
        let share = |used: &[&str]| {
            let used: Vec<String> = used.iter().map(|s| s.to_string()).collect();
            views_share(&p, &used, 320).unwrap()
        };
        assert!((share(&["original"]) - 320.0 * 320.0 / all).abs() < 1e-12);
        assert!((share(&["original", "flip"]) - 2.0 * 320.0 * 320.0 / all).abs() < 1e-12);
        assert!((share(&["scale-224"]) - 224.0 * 224.0 / all).abs() < 1e-12);
        assert!((share(&["crop-center"]) - 160.0 * 160.0 / all).abs() < 1e-12);
        assert_eq!(
            share(&["original", "flip", "scale-224", "crop-center"]),
            1.0
        );
    }

    #[test]
    fn the_table_shows_a_steps_own_views_cost_only_when_it_differs() {
        let row = |views_seconds: f64| Row {
            name: "step".into(),
            head: Some((Some(0.5), 0.6)),
            logreg: None,
            ensemble: None,
            finetune: (views_seconds < 50.0).then_some((Some(0.8), 0.85)),
            finetune_seconds: 300.0,
            extract_seconds: 100.0,
            images: 50,
            views: 3,
            views_seconds,
            descriptor: "d".into(),
        };
        let md = markdown(&[row(100.0), row(40.0)]);
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[2].contains("| 100 s (3 views, 0.5 img/s) |"), "{md}");
        assert!(
            lines[3].contains("| 100 s (3 views, 0.5 img/s; its views 40 s) |"),
            "{md}"
        );
        // A fine-tuning step shows its accuracies and its training time.
        assert!(lines[2].contains("| - | - | - | 100 s"), "{md}");
        assert!(lines[3].contains("| 80.0 | 85.0 | 300 s | 100 s"), "{md}");
        // A model trained on the validation images has no validation accuracy.
        let mut seen = row(40.0);
        seen.finetune = Some((None, 0.85));
        let md = markdown(&[seen]);
        assert!(md.contains("| (trained on) | 85.0 | 300 s"), "{md}");
    }
}
