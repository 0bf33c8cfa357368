//! The trained head applied to new images' features (for `predict`).

use contracts::predictor::{ModelInputs, Predictor};
use contracts::{ids, FeatureSource};
use pipeline::{RunRecord, Store};

use crate::Weights;

/// The head of a cached `head-nn` run: the weights it evaluated and the features it read.
pub struct HeadPredictor {
    weights: Weights,
    classes: Vec<String>,
    source: FeatureSource,
}

impl HeadPredictor {
    pub fn from_record(rec: &RunRecord, store: &Store) -> contracts::Result<Self> {
        let (weights, classes) = Weights::from_record(ids::HEAD_NN, rec, store)?;
        Ok(HeadPredictor {
            weights,
            classes,
            source: FeatureSource::of_record(rec),
        })
    }
}

impl Predictor for HeadPredictor {
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn predict(&self, inputs: &mut dyn ModelInputs) -> contracts::Result<Vec<f32>> {
        let n = inputs.len();
        let (f, channels) = inputs.features(self.source)?;
        let x = crate::global_average_pool(&f, n, channels)?;
        Ok(crate::predict(&self.weights, &x)?.probabilities)
    }
}
