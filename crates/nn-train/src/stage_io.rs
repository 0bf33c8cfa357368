//! What the two network stages share around training: their class list, a progress observer,
//! and the `model`, `history` and `predictions` artifacts they write.

use contracts::{History, NnModel, Predictions, PredictionsMeta};
use pipeline::{Bar, BoxError, InputArtifact, StageContext};

use crate::{BatchInfo, EpochRecord, Evaluate, Evaluation, Observer, TrainOutput};

/// The class list of a stage's training input: its JSON (carried into the outputs) and its
/// length.
pub fn class_list(input: &InputArtifact<'_>) -> Result<(Vec<String>, usize), BoxError> {
    let classes = contracts::classes(input)?;
    let n = classes.len();
    Ok((classes, n))
}

/// Progress bar over all batches of all epochs, with a line per epoch.
pub struct EpochProgress<'a> {
    ctx: &'a StageContext<'a>,
    bar: Option<Bar>,
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
        self.ctx.count(b.rows as u64, "rows");
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
    classes: &[String],
) -> Result<(), BoxError> {
    NnModel {
        final_weights: out.final_weights.tensors.clone(),
        best_weights: out.best_weights.tensors.clone(),
        best_epoch: out.best_epoch,
        evaluate,
        classes: classes.to_vec(),
    }
    .write(ctx)?;
    History {
        epochs: out.history.clone(),
    }
    .write(ctx)?;
    let p = &eval.prediction;
    let preds = Predictions {
        pred: p.predictions.iter().map(|&v| v as i64).collect(),
        labels: labels.iter().map(|&v| v as i64).collect(),
        probs: p.probabilities.clone(),
        n_classes: p.n_classes,
        index: index.to_vec(),
    };
    preds.write(
        ctx,
        &PredictionsMeta {
            classes: classes.to_vec(),
            test_loss: Some(eval.loss),
            evaluate: Some(evaluate),
            ..PredictionsMeta::default()
        },
    )?;
    ctx.progress().println(format!(
        "{}: test accuracy {:.4} ({}/{})",
        ctx.stage(),
        preds.accuracy(),
        preds.correct(),
        preds.labels.len()
    ));
    Ok(())
}
