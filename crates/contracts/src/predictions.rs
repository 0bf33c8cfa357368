//! `<model>.predictions`: every trained model's predictions on the evaluation split.

use std::collections::BTreeMap;

use pipeline::{InputArtifact, StageContext, Tensor};
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

/// What a predictions artifact says beyond its tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PredictionsMeta {
    pub classes: Value,
    /// Mean test cross-entropy (the networks).
    pub test_loss: Option<f64>,
    /// Which weights were evaluated (the networks: `"final"` or `"best"`).
    pub evaluate: Option<Value>,
    /// The model-selection grid and its winner (logistic regression).
    pub grid: Option<Value>,
    pub best: Option<Value>,
    /// Seconds of each grid entry's fit (kept in the run record only: timings are not
    /// results).
    pub grid_seconds: Option<Vec<f64>>,
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

    pub fn write(&self, ctx: &StageContext<'_>, m: &PredictionsMeta) -> Result<()> {
        let n = self.pred.len();
        let mut w = ctx.output(PREDICTIONS)?;
        w.write_chunk(vec![
            (PRED, Tensor::from_i64(&[n], &self.pred)),
            (LABELS, Tensor::from_i64(&[n], &self.labels)),
            (PROBS, Tensor::from_f32(&[n, self.n_classes], &self.probs)),
            (INDEX, Tensor::from_i64(&[n], &self.index)),
        ])?;
        let correct = self.correct();
        w.set_meta(meta::CLASSES, m.classes.clone());
        w.set_meta(TEST_ACCURACY, json!(correct as f64 / n.max(1) as f64));
        w.set_meta(CORRECT, json!(correct));
        w.set_meta(TOTAL, json!(n));
        let optional = [
            (TEST_LOSS, m.test_loss.map(|v| json!(v))),
            (EVALUATE, m.evaluate.clone()),
            (GRID, m.grid.clone()),
            (BEST, m.best.clone()),
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
    pub fn read(input: &InputArtifact<'_>) -> PredictionsMeta {
        let get = |k: &str| input.meta(k).cloned();
        PredictionsMeta {
            classes: get(meta::CLASSES).unwrap_or(Value::Null),
            test_loss: get(TEST_LOSS).and_then(|v| v.as_f64()),
            evaluate: get(EVALUATE),
            grid: get(GRID),
            best: get(BEST),
            grid_seconds: input
                .volatile(GRID_SECONDS)
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
        }
    }

    /// The numbers as stored (`test_accuracy`, `correct`, `total`), for tools.
    pub fn stored_scores(input: &InputArtifact<'_>) -> BTreeMap<String, Value> {
        [TEST_ACCURACY, CORRECT, TOTAL]
            .iter()
            .filter_map(|k| input.meta(k).map(|v| (k.to_string(), v.clone())))
            .collect()
    }
}
