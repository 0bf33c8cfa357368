//! Stage `report`: what a user reads.
//!
//! The stage turns the models' predictions and histories, the manifest and the preprocessed
//! images into files: `metrics.json`, SVG figures (class distributions, confusion heatmaps,
//! training curves, drawn with plotters), a 4x4 grid of sample images (`samples.png`), a
//! Markdown summary and a self-contained `index.html` (everything embedded; opens offline).
//! They are stored as one artifact, so they are cached like any other result.
//!
//! Provenance that belongs to a particular run (seconds per stage, which stages came from the
//! cache) is not part of the cached artifact: [`write_folder`] adds it when it writes the
//! files into the report folder (`report.out`) after every `run`.

mod figures;
mod html;
mod metrics;
mod provenance;
mod stage;

pub use figures::{bars, confusion_heatmap, curves};
pub use metrics::{evaluate, ClassScore, ModelMetrics};
pub use provenance::StageProvenance;
pub use stage::{write_folder, Params, Report, CACHE_VERSION, MODELS, PUBLISHED};
