//! Trained models and training histories: `<net>.model`, `<net>.history`, `logreg.model`.

use pipeline::{InputArtifact, StageContext, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::outputs::{HISTORY, MODEL};
use crate::predictions::{Evaluate, LogRegChoice};
use crate::{meta, tensor_err, Result};

const BEST_EPOCH: &str = "best_epoch";
const EVALUATE: &str = "evaluate";
const FINAL_PREFIX: &str = "final.";
/// The prefix of the best weights' tensor names in a model artifact.
pub const BEST_PREFIX: &str = "best.";
const HISTORY_META: &str = "history";
const EPOCH_SECONDS: &str = "epoch_seconds";
const COEF: &str = "coef";
const INTERCEPT: &str = "intercept";
const BEST: &str = "best";

/// One named, row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Name, e.g. `dense1.kernel`.
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

/// A trained network: the weights after the last epoch and after the best one.
#[derive(Clone, Debug, PartialEq)]
pub struct NnModel {
    pub final_weights: Vec<NamedTensor>,
    pub best_weights: Vec<NamedTensor>,
    /// 1-based epoch of the best weights.
    pub best_epoch: usize,
    /// Which weights the stage evaluated.
    pub evaluate: Evaluate,
    pub classes: Vec<String>,
}

impl NnModel {
    pub fn write(&self, ctx: &StageContext<'_>) -> Result<()> {
        let mut tensors = Vec::new();
        for (prefix, w) in [
            (FINAL_PREFIX, &self.final_weights),
            (BEST_PREFIX, &self.best_weights),
        ] {
            for t in w {
                tensors.push((
                    format!("{prefix}{}", t.name),
                    Tensor::from_f32(&t.shape, &t.data),
                ));
            }
        }
        let mut m = ctx.output(MODEL)?;
        m.write_chunk(
            tensors
                .iter()
                .map(|(n, t)| (n.as_str(), t.clone()))
                .collect(),
        )?;
        m.set_meta(BEST_EPOCH, json!(self.best_epoch));
        m.set_meta(EVALUATE, json!(self.evaluate));
        m.set_meta(meta::CLASSES, json!(self.classes));
        m.finish()?;
        Ok(())
    }

    /// The weights the stage evaluated with, and the class names. With [`Evaluate::Both`], the
    /// final weights and after them the best ones, which keep their `best.` prefix.
    pub fn read_selected(input: &InputArtifact<'_>) -> Result<(Vec<NamedTensor>, Vec<String>)> {
        let evaluate: Evaluate = match input.meta(EVALUATE) {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                format!("{}.model: metadata `{EVALUATE}`: {e}", input.artifact.stage)
            })?,
            None => Evaluate::Final,
        };
        // (prefix in the artifact, prefix kept in the names returned)
        let sets: &[(&str, &str)] = match evaluate {
            Evaluate::Best => &[(BEST_PREFIX, "")],
            Evaluate::Final => &[(FINAL_PREFIX, "")],
            Evaluate::Both => &[(FINAL_PREFIX, ""), (BEST_PREFIX, BEST_PREFIX)],
        };
        let c = input.chunk(0)?;
        let mut out = Vec::new();
        for &(prefix, kept) in sets {
            for t in &input.artifact.chunks[0].tensors {
                if let Some(name) = t.name.strip_prefix(prefix) {
                    let (shape, data) = c.f32(&t.name).map_err(|e| tensor_err(input, e))?;
                    out.push(NamedTensor {
                        name: format!("{kept}{name}"),
                        shape,
                        data,
                    });
                }
            }
        }
        Ok((out, crate::classes(input)?))
    }
}

/// Metrics of one epoch, as Keras's `History` (loss and accuracy of the training batches as
/// they were trained, dropout active; validation after the epoch, dropout off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training cross-entropy over the epoch's rows.
    pub loss: f64,
    /// Training accuracy over the epoch's rows.
    pub accuracy: f64,
    /// Mean validation cross-entropy.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Wall-clock seconds of the epoch, validation included.
    pub seconds: f64,
}

/// A network's per-epoch training history.
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// The metrics go into the artifact; the seconds per epoch (which differ from run to run)
    /// only into the run record, so that a rerun with the same results has the same digest.
    pub fn write(&self, ctx: &StageContext<'_>) -> Result<()> {
        let col = |f: fn(&EpochRecord) -> f64| self.epochs.iter().map(f).collect::<Vec<f64>>();
        let e = self.epochs.len();
        let mut h = ctx.output(HISTORY)?;
        h.write_chunk(vec![
            ("epoch", Tensor::from_f64(&[e], &col(|r| r.epoch as f64))),
            ("loss", Tensor::from_f64(&[e], &col(|r| r.loss))),
            ("accuracy", Tensor::from_f64(&[e], &col(|r| r.accuracy))),
            ("val_loss", Tensor::from_f64(&[e], &col(|r| r.val_loss))),
            (
                "val_accuracy",
                Tensor::from_f64(&[e], &col(|r| r.val_accuracy)),
            ),
        ])?;
        let records: Vec<Value> = self
            .epochs
            .iter()
            .map(|r| {
                json!({"epoch": r.epoch, "loss": r.loss, "accuracy": r.accuracy, "val_loss": r.val_loss, "val_accuracy": r.val_accuracy})
            })
            .collect();
        h.set_meta(HISTORY_META, json!(records));
        h.set_volatile(EPOCH_SECONDS, json!(col(|r| r.seconds)));
        h.finish()?;
        Ok(())
    }

    /// The history; `seconds` of each epoch from the run record (0 where unknown).
    pub fn read(input: &InputArtifact<'_>) -> Result<History> {
        #[derive(Deserialize)]
        struct Row {
            epoch: usize,
            loss: f64,
            accuracy: f64,
            val_loss: f64,
            val_accuracy: f64,
        }
        let v = input
            .meta(HISTORY_META)
            .ok_or_else(|| format!("{}.history has no history", input.artifact.stage))?;
        let rows: Vec<Row> = serde_json::from_value(v.clone())?;
        let secs: Vec<f64> = input
            .volatile(EPOCH_SECONDS)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        Ok(History {
            epochs: rows
                .into_iter()
                .enumerate()
                .map(|(i, r)| EpochRecord {
                    epoch: r.epoch,
                    loss: r.loss,
                    accuracy: r.accuracy,
                    val_loss: r.val_loss,
                    val_accuracy: r.val_accuracy,
                    seconds: secs.get(i).copied().unwrap_or(0.0),
                })
                .collect(),
        })
    }
}

/// The logistic regression chosen on validation: coefficients `k x d`, intercepts `k`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRegModel {
    pub coef: Vec<f64>,
    pub intercept: Vec<f64>,
    pub n_features: usize,
    /// The chosen grid entry.
    pub best: LogRegChoice,
    pub classes: Vec<String>,
}

impl LogRegModel {
    pub fn write(&self, ctx: &StageContext<'_>) -> Result<()> {
        let k = self.intercept.len();
        let mut m = ctx.output(MODEL)?;
        m.write_chunk(vec![
            (COEF, Tensor::from_f64(&[k, self.n_features], &self.coef)),
            (INTERCEPT, Tensor::from_f64(&[k], &self.intercept)),
        ])?;
        m.set_meta(BEST, json!(self.best));
        m.set_meta(meta::CLASSES, json!(self.classes));
        m.finish()?;
        Ok(())
    }

    pub fn read(input: &InputArtifact<'_>) -> Result<LogRegModel> {
        let c = input.chunk(0)?;
        let (shape, coef) = c.f64(COEF).map_err(|e| tensor_err(input, e))?;
        let (_, intercept) = c.f64(INTERCEPT).map_err(|e| tensor_err(input, e))?;
        Ok(LogRegModel {
            n_features: shape.get(1).copied().unwrap_or(0),
            coef,
            intercept,
            best: serde_json::from_value(
                input
                    .meta(BEST)
                    .cloned()
                    .ok_or_else(|| format!("{}.model has no `{BEST}`", input.artifact.stage))?,
            )
            .map_err(|e| format!("{}.model: metadata `{BEST}`: {e}", input.artifact.stage))?,
            classes: crate::classes(input)?,
        })
    }
}
