//! The chosen logistic regression applied to new images' features (for `predict`).

use contracts::predictor::{ModelInputs, Predictor};
use contracts::{slots, FeatureSource, LogRegModel};
use pipeline::{RunRecord, Store};

use crate::Model;

/// The model of a cached `logreg` run and the features it read.
pub struct LogRegPredictor {
    model: Model,
    classes: Vec<String>,
    source: FeatureSource,
}

impl LogRegPredictor {
    pub fn from_record(rec: &RunRecord, store: &Store) -> contracts::Result<Self> {
        let m: LogRegModel = slots::LOGREG_MODEL.read_record(rec, store)?;
        Ok(LogRegPredictor {
            model: Model::from_coefficients(m.coef, m.intercept, m.n_features)?,
            classes: m.classes,
            source: FeatureSource::of_record(rec),
        })
    }
}

impl Predictor for LogRegPredictor {
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn predict(&self, inputs: &mut dyn ModelInputs) -> contracts::Result<Vec<f32>> {
        let (f, _) = inputs.features(self.source)?;
        let p = self.model.predict_proba(&f)?;
        Ok(p.into_iter().map(|v| v as f32).collect())
    }
}
