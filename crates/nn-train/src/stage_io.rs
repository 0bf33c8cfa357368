//! What the two neural-network stages write, in one place: the `model`, `history` and
//! `predictions` artifacts, and a progress observer.

use indicatif::ProgressBar;
use pipeline::{BoxError, StageContext, Tensor};
use serde_json::{json, Value};

use crate::{BatchInfo, EpochRecord, Evaluate, Evaluation, Observer, TrainOutput};

/// Progress bar over all batches of all epochs, with a line per epoch.
pub struct EpochProgress<'a> {
    ctx: &'a StageContext<'a>,
    bar: Option<ProgressBar>,
}

impl<'a> EpochProgress<'a> {
    pub fn new(ctx: &'a StageContext<'a>) -> Self {
        EpochProgress { ctx, bar: None }
    }
}

impl Observer for EpochProgress<'_> {
    fn on_batch(&mut self, b: &BatchInfo) {
        let bar = self.bar.get_or_insert_with(|| {
            self.ctx.progress().bar(
                b.batches as u64,
                &format!("{} ep {}", self.ctx.stage(), b.epoch),
            )
        });
        bar.set_message(format!("loss {:.4}", b.loss));
        bar.inc(1);
    }
    fn on_epoch(&mut self, e: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.ctx.progress().println(format!(
            "{}: epoch {:>2}  loss {:.4}  accuracy {:.4}  val_loss {:.4}  val_accuracy {:.4}  ({:.1}s)",
            self.ctx.stage(),
            e.epoch,
            e.loss,
            e.accuracy,
            e.val_loss,
            e.val_accuracy,
            e.seconds
        ));
    }
}

/// Writes `model` (final and best weights), `history` (per-epoch metrics) and `predictions`
/// (evaluation split: predicted class, labels, probabilities, manifest index).
pub fn write_outputs(
    ctx: &StageContext<'_>,
    out: &TrainOutput,
    evaluate: Evaluate,
    eval: &Evaluation,
    labels: &[u32],
    index: &[i64],
    classes: &Value,
) -> Result<(), BoxError> {
    let mut tensors = Vec::new();
    for (prefix, w) in [("final", &out.final_weights), ("best", &out.best_weights)] {
        for t in &w.tensors {
            tensors.push((
                format!("{prefix}.{}", t.name),
                Tensor::from_f32(&t.shape, &t.data),
            ));
        }
    }
    let mut m = ctx.output("model")?;
    m.write_chunk(
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect(),
    )?;
    m.set_meta("best_epoch", json!(out.best_epoch));
    m.set_meta("evaluate", json!(evaluate));
    m.set_meta("classes", classes.clone());
    m.finish()?;

    let col = |f: fn(&EpochRecord) -> f64| out.history.iter().map(f).collect::<Vec<f64>>();
    let e = out.history.len();
    let mut h = ctx.output("history")?;
    h.write_chunk(vec![
        ("epoch", Tensor::from_f64(&[e], &col(|r| r.epoch as f64))),
        ("loss", Tensor::from_f64(&[e], &col(|r| r.loss))),
        ("accuracy", Tensor::from_f64(&[e], &col(|r| r.accuracy))),
        ("val_loss", Tensor::from_f64(&[e], &col(|r| r.val_loss))),
        (
            "val_accuracy",
            Tensor::from_f64(&[e], &col(|r| r.val_accuracy)),
        ),
        ("seconds", Tensor::from_f64(&[e], &col(|r| r.seconds))),
    ])?;
    h.set_meta("history", json!(out.history));
    h.finish()?;

    let p = &eval.prediction;
    let n = p.predictions.len();
    let pred: Vec<i64> = p.predictions.iter().map(|&v| v as i64).collect();
    let lab: Vec<i64> = labels.iter().map(|&v| v as i64).collect();
    let correct = pred.iter().zip(&lab).filter(|(a, b)| a == b).count();
    let mut w = ctx.output("predictions")?;
    w.write_chunk(vec![
        ("pred", Tensor::from_i64(&[n], &pred)),
        ("labels", Tensor::from_i64(&[n], &lab)),
        (
            "probs",
            Tensor::from_f32(&[n, p.n_classes], &p.probabilities),
        ),
        ("index", Tensor::from_i64(&[n], index)),
    ])?;
    w.set_meta("classes", classes.clone());
    w.set_meta("test_accuracy", json!(correct as f64 / n.max(1) as f64));
    w.set_meta("test_loss", json!(eval.loss));
    w.set_meta("correct", json!(correct));
    w.set_meta("total", json!(n));
    w.set_meta("evaluate", json!(evaluate));
    w.finish()?;
    ctx.progress().println(format!(
        "{}: test accuracy {:.4} ({correct}/{n})",
        ctx.stage(),
        correct as f64 / n.max(1) as f64
    ));
    Ok(())
}
