//! The blend applied to new images (for `predict`): the head's and the logistic regression's
//! probabilities, with the weight the cached run chose.

use contracts::predictor::{ModelInputs, Predictor};
use contracts::{ids, slots, BlendChoice, Choice, PredictionsMeta};
use pipeline::{RunRecord, Store};

/// The weight a cached `ensemble` run chose, and its classes.
pub struct EnsemblePredictor {
    head_weight: f64,
    classes: Vec<String>,
}

impl EnsemblePredictor {
    pub fn from_record(rec: &RunRecord, store: &Store) -> contracts::Result<Self> {
        let meta: PredictionsMeta = slots::predictions(ids::ENSEMBLE).read_record(rec, store)?;
        let Some(Choice::Blend(BlendChoice { head_weight, .. })) = meta.best else {
            return Err(
                "the cached ensemble names no head weight; run `cargo xtask run ensemble`".into(),
            );
        };
        Ok(EnsemblePredictor {
            head_weight,
            classes: meta.classes,
        })
    }
}

impl Predictor for EnsemblePredictor {
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn predict(&self, inputs: &mut dyn ModelInputs) -> contracts::Result<Vec<f32>> {
        let (h, head_classes) = inputs.probabilities(ids::HEAD_NN)?;
        let (l, lr_classes) = inputs.probabilities(ids::LOGREG)?;
        if head_classes != self.classes || lr_classes != self.classes {
            return Err(format!(
                "the cached head-nn ({}) and logreg ({}) do not predict the ensemble's classes ({}): rerun `cargo xtask run ensemble`",
                head_classes.join(", "),
                lr_classes.join(", "),
                self.classes.join(", ")
            )
            .into());
        }
        Ok(crate::blend(&h, &l, self.head_weight)?)
    }
}
