//! Stage `report`: what a user reads.
//!
//! The stage turns the models' predictions and histories, the manifest and the preprocessed
//! images into files: `metrics.json`, SVG figures (the comparison with the study, confusion
//! matrices, per-class F1, training curves, class distributions, seeds), a grid of sample
//! images (`samples.png`), a Markdown summary and a self-contained `index.html` (everything
//! embedded, thumbnails as small JPEGs; opens offline). In a seed sweep it reads every seed's
//! predictions and shows each model's mean and spread.
//! They are stored as one artifact, so they are cached like any other result.
//!
//! Provenance that belongs to a particular run (seconds per stage, which stages came from the
//! cache) is not part of the cached artifact: [`write_folder`] adds it when it writes the
//! files into the report folder (`report.out`) after every `run`.

mod figures;
mod html;
mod metrics;
mod params;
mod provenance;
mod results;
mod sections;
mod stage;
mod svg;
mod text;

pub use metrics::{confused_pairs, evaluate, mean_std, ClassScore, ModelMetrics};
pub use params::{Params, MODELS, PUBLISHED, REFERENCE_SETTING};
pub use provenance::StageProvenance;
pub use sections::run::write_folder;
pub use stage::{Report, CACHE_VERSION};
pub use svg::{ablation_figure, AblationRow};
