//! The report's parameters and the fixed facts it shows (a leaf: every section reads it).

use contracts::ids;
use pipeline::Validate;
use serde::{Deserialize, Serialize};

/// The models a report shows when their stage ran: the study's, in the order the study reports
/// them, then the ensemble and the fine-tuned network.
pub const MODELS: [&str; 5] = [
    ids::MODELS[0],
    ids::MODELS[1],
    ids::MODELS[2],
    ids::ENSEMBLE,
    ids::FINETUNE,
];

/// The study's published test accuracies on Food-11 (11 classes).
pub const PUBLISHED: [(&str, f64); 3] = [
    (ids::SCRATCH_CNN, 0.553),
    (ids::HEAD_NN, 0.852),
    (ids::LOGREG, 0.850),
];

/// The setting naming a JSON file of a reference implementation's per-seed results.
pub const REFERENCE_SETTING: &str = "report.reference";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Sample images shown (a square grid: 16 = 4x4).
    pub samples: usize,
    /// Wrong predictions shown per model in the mistakes gallery.
    pub mistakes: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            samples: 16,
            mistakes: 8,
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        let side = (self.samples as f64).sqrt() as usize;
        if side * side != self.samples || self.samples == 0 || self.samples > 64 {
            return Err("samples must be a square number between 1 and 64".into());
        }
        if self.mistakes > 64 {
            return Err("mistakes must be at most 64".into());
        }
        Ok(())
    }
}
