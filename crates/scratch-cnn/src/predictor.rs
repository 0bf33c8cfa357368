//! The trained CNN applied to new preprocessed images (for `predict`).

use contracts::ids;
use contracts::predictor::{ModelInputs, Predictor};
use pipeline::{RunRecord, Store};

use crate::{Images, Weights};

/// The network of a cached `scratch-cnn` run, with the weights it evaluated.
pub struct CnnPredictor {
    weights: Weights,
    classes: Vec<String>,
}

impl CnnPredictor {
    pub fn from_record(rec: &RunRecord, store: &Store) -> contracts::Result<Self> {
        let (weights, classes) = Weights::from_record(ids::SCRATCH_CNN, rec, store)?;
        Ok(CnnPredictor { weights, classes })
    }
}

impl Predictor for CnnPredictor {
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn predict(&self, inputs: &mut dyn ModelInputs) -> contracts::Result<Vec<f32>> {
        let (pixels, size) = inputs.images()?;
        let images = Images::new(pixels, size, size)?;
        Ok(crate::predict(&self.weights, &images)?.probabilities)
    }
}
