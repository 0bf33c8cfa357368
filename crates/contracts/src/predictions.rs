//! `<model>.predictions`: every trained model's predictions on the evaluation split.

use pipeline::{InputArtifact, StageContext, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::outputs::PREDICTIONS;
use crate::{meta, tensor_err, Result};

const PRED: &str = "pred";
const LABELS: &str = "labels";
const PROBS: &str = "probs";
const INDEX: &str = "index";
const TEST_ACCURACY: &str = "test_accuracy";
const TEST_LOSS: &str = "test_loss";
const CORRECT: &str = "correct";
const TOTAL: &str = "total";
const EVALUATE: &str = "evaluate";
const GRID: &str = "grid";
const BEST: &str = "best";
const GRID_SECONDS: &str = "grid_seconds";

/// Predicted classes, true labels, probabilities (`n x n_classes`) and manifest indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub pred: Vec<i64>,
    pub labels: Vec<i64>,
    pub probs: Vec<f32>,
    pub n_classes: usize,
    pub index: Vec<i64>,
}

/// Which weights of a network a stage evaluated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evaluate {
    /// The weights after the last epoch.
    #[default]
    Final,
    /// The weights of the epoch with the lowest validation loss (first one on ties).
    Best,
    /// Both: the average of the probabilities given by the final weights and by the best ones
    /// (a snapshot ensemble of two, for the training cost of one). Only `finetune` takes it.
    Both,
}

/// One fit of the logistic regression's validation grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRegFit {
    /// Inverse regularisation strength.
    #[serde(rename = "C")]
    pub c: f64,
    pub solver: String,
    pub val_accuracy: f64,
    pub n_iter: usize,
    pub converged: bool,
    /// Why the solver stopped, in the solver's words.
    pub stop: String,
}

/// The grid entry the logistic regression kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRegChoice {
    #[serde(rename = "C")]
    pub c: f64,
    pub solver: String,
    pub val_accuracy: f64,
}

/// One weight of the head in the ensemble's blend, scored on the validation split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlendCandidate {
    pub head_weight: f64,
    pub val_accuracy: f64,
    pub val_correct: usize,
    /// Mean cross-entropy of the blended probabilities.
    pub val_loss: f64,
}

/// The weight the ensemble kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlendChoice {
    pub head_weight: f64,
    pub val_accuracy: f64,
}

/// A model-selection grid on the validation split (the `grid` metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Grid {
    LogReg(Vec<LogRegFit>),
    Blend(Vec<BlendCandidate>),
}

/// The grid's winner (the `best` metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Choice {
    LogReg(LogRegChoice),
    Blend(BlendChoice),
}

impl Choice {
    /// Validation accuracy of the chosen entry.
    pub fn val_accuracy(&self) -> f64 {
        match self {
            Choice::LogReg(c) => c.val_accuracy,
            Choice::Blend(c) => c.val_accuracy,
        }
    }
}

/// What a predictions artifact says beyond its tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PredictionsMeta {
    pub classes: Vec<String>,
    /// Mean test cross-entropy (the networks).
    pub test_loss: Option<f64>,
    /// Which weights were evaluated (the networks).
    pub evaluate: Option<Evaluate>,
    /// The model-selection grid and its winner (logistic regression, ensemble).
    pub grid: Option<Grid>,
    pub best: Option<Choice>,
    /// Seconds of each grid entry's fit (kept in the run record only: timings are not
    /// results).
    pub grid_seconds: Option<Vec<f64>>,
}

/// The scores as stored (`test_accuracy`, `correct`, `total`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoredScores {
    pub test_accuracy: f64,
    pub correct: usize,
    pub total: usize,
}

impl Predictions {
    /// Rows whose prediction equals the label.
    pub fn correct(&self) -> usize {
        self.pred
            .iter()
            .zip(&self.labels)
            .filter(|(a, b)| a == b)
            .count()
    }

    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.labels.len().max(1) as f64
    }

    /// Writes the evaluation split's predictions (`predictions`) with their scores.
    pub fn write(&self, ctx: &StageContext<'_>, m: &PredictionsMeta) -> Result<()> {
        let mut w = self.write_tensors(ctx, PREDICTIONS)?;
        let n = self.pred.len();
        let correct = self.correct();
        w.set_meta(meta::CLASSES, json!(m.classes));
        w.set_meta(TEST_ACCURACY, json!(correct as f64 / n.max(1) as f64));
        w.set_meta(CORRECT, json!(correct));
        w.set_meta(TOTAL, json!(n));
        let optional = [
            (TEST_LOSS, m.test_loss.map(|v| json!(v))),
            (EVALUATE, m.evaluate.map(|v| json!(v))),
            (GRID, m.grid.as_ref().map(|v| json!(v))),
            (BEST, m.best.as_ref().map(|v| json!(v))),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                w.set_meta(k, v);
            }
        }
        if let Some(s) = &m.grid_seconds {
            w.set_volatile(GRID_SECONDS, json!(s));
        }
        w.finish()?;
        Ok(())
    }

    /// Writes the validation split's predictions (`validation-predictions`: the tensors and
    /// the class names), for stages that choose among models there.
    pub fn write_validation(&self, ctx: &StageContext<'_>, classes: &[String]) -> Result<()> {
        let mut w = self.write_tensors(ctx, crate::outputs::VALIDATION_PREDICTIONS)?;
        w.set_meta(meta::CLASSES, json!(classes));
        w.finish()?;
        Ok(())
    }

    fn write_tensors<'c>(
        &self,
        ctx: &'c StageContext<'_>,
        output: &str,
    ) -> Result<pipeline::OutputWriter<'c>> {
        let n = self.pred.len();
        let mut w = ctx.output(output)?;
        w.write_chunk(vec![
            (PRED, Tensor::from_i64(&[n], &self.pred)),
            (LABELS, Tensor::from_i64(&[n], &self.labels)),
            (PROBS, Tensor::from_f32(&[n, self.n_classes], &self.probs)),
            (INDEX, Tensor::from_i64(&[n], &self.index)),
        ])?;
        Ok(w)
    }

    pub fn read(input: &InputArtifact<'_>) -> Result<Predictions> {
        let c = input.chunk(0)?;
        let e = |err| tensor_err(input, err);
        let (shape, probs) = c.f32(PROBS).map_err(e)?;
        Ok(Predictions {
            pred: c.i64(PRED).map_err(e)?.1,
            labels: c.i64(LABELS).map_err(e)?.1,
            n_classes: shape.get(1).copied().unwrap_or(0),
            probs,
            index: c.i64(INDEX).map_err(e)?.1,
        })
    }
}

impl PredictionsMeta {
    pub fn read(input: &InputArtifact<'_>) -> Result<PredictionsMeta> {
        fn field<T: serde::de::DeserializeOwned>(
            input: &InputArtifact<'_>,
            k: &str,
        ) -> Result<Option<T>> {
            input
                .meta(k)
                .map(|v| {
                    serde_json::from_value(v.clone()).map_err(|e| {
                        format!(
                            "{}.{}: metadata `{k}`: {e}",
                            input.artifact.stage, input.artifact.name
                        )
                        .into()
                    })
                })
                .transpose()
        }
        Ok(PredictionsMeta {
            classes: crate::classes(input)?,
            test_loss: field(input, TEST_LOSS)?,
            evaluate: field(input, EVALUATE)?,
            grid: field(input, GRID)?,
            best: field(input, BEST)?,
            grid_seconds: input
                .volatile(GRID_SECONDS)
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
        })
    }

    /// The numbers as stored (`test_accuracy`, `correct`, `total`), for tools.
    pub fn stored_scores(input: &InputArtifact<'_>) -> Result<StoredScores> {
        let get = |k: &str| -> Result<Value> {
            input.meta(k).cloned().ok_or_else(|| {
                format!(
                    "{}.{} has no `{k}`",
                    input.artifact.stage, input.artifact.name
                )
                .into()
            })
        };
        Ok(StoredScores {
            test_accuracy: serde_json::from_value(get(TEST_ACCURACY)?)?,
            correct: serde_json::from_value(get(CORRECT)?)?,
            total: serde_json::from_value(get(TOTAL)?)?,
        })
    }
}
