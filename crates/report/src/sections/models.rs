//! The models side by side: confusion matrices on one colour scale, per-class F1, training curves; and each model's entry of `metrics.json`.

use serde_json::json;

use crate::html::Section;
use crate::metrics::mean_std;
use crate::results::{Builder, ModelResult};
use crate::svg;

/// Confusion matrices in one row (one colour scale), per-class F1 of all models, curves.
pub(crate) fn side_by_side(
    b: &mut Builder,
    results: &[ModelResult],
    classes: &[String],
) -> Section {
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

/// `metrics.json`'s entry of a model: the shown seed's metrics and every seed's.
pub(crate) fn model_metrics(b: &mut Builder, r: &ModelResult) {
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
