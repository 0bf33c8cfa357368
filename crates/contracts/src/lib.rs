//! The artifacts that cross a stage boundary, as types.
//!
//! Producer and consumer of an artifact both use the type defined here, so a tensor name or a
//! metadata key is spelled once, and a change to an artifact breaks its users at compile time,
//! not at run time. Each type has a `write` (through the stage's [`pipeline::StageContext`])
//! and a `read` (from a [`pipeline::InputArtifact`]); the crate holds no logic beyond that.
//!
//! | stage | artifact(s) | type |
//! |---|---|---|
//! | `loader` | `manifest` | [`ManifestArtifact`] / [`ManifestReader`] |
//! | `preprocess` | `training`, `validation`, `evaluation` | [`ImagesWriter`] / [`ImagesReader`] |
//! | `vgg-extract` | the three splits | [`FeaturesWriter`] / [`FeaturesReader`] |
//! | `describe` | the three splits (descriptors as `[n, 1, 1, d]`) | [`FeaturesWriter`] / [`FeaturesReader`] |
//! | `head-nn`, `scratch-cnn` | `model`, `history`, `predictions` | [`NnModel`], [`History`], [`Predictions`] |
//! | `logreg` | `model`, `predictions` | [`LogRegModel`], [`Predictions`] |
//! | `report` | `report` | [`ReportBundle`] |

mod features;
mod images;
mod manifest;
mod models;
mod predictions;
pub mod predictor;
mod report;
pub mod slots;

pub use features::{
    tap_tensor, view_tensor, FeatureChunk, FeaturesMeta, FeaturesReader, FeaturesWriter,
    MappedChunk, FEATURES_TENSOR, ORIGINAL_VIEW,
};
pub use images::{ImagesChunk, ImagesMeta, ImagesReader, ImagesWriter};
pub use manifest::{Entry, Manifest, ManifestArtifact, ManifestMeta, ManifestReader, Skipped};
pub use models::{EpochRecord, History, LogRegModel, NamedTensor, NnModel, BEST_PREFIX};
pub use predictions::{
    BlendCandidate, BlendChoice, Choice, Evaluate, Grid, LogRegChoice, LogRegFit, Predictions,
    PredictionsMeta, StoredScores,
};
pub use report::{ModelSummary, ReportBundle};
pub use slots::{Backbone, FeatureSource, Slot};

/// Results of reading or writing an artifact.
pub type Result<T> = std::result::Result<T, pipeline::BoxError>;

/// Stage ids, as in `pipeline.toml`.
pub mod ids {
    pub const LOADER: &str = "loader";
    pub const PREPROCESS: &str = "preprocess";
    pub const VGG_EXTRACT: &str = "vgg-extract";
    /// The other backbone's extraction (EfficientNet-Lite0): the same features contract.
    pub const LITE0_EXTRACT: &str = "lite0-extract";
    /// The full maps of one inner VGG16 layer, per view (what fine-tuning starts from).
    pub const VGG_ACTIVATIONS: &str = "vgg-activations";
    /// VGG16's top convolutions and a head trained on those stored activations.
    pub const FINETUNE: &str = "finetune";
    /// Descriptors computed from stored features (optional: the classifiers read it when
    /// they need it, else `vgg-extract`).
    pub const DESCRIBE: &str = "describe";
    pub const HEAD_NN: &str = "head-nn";
    pub const LOGREG: &str = "logreg";
    pub const SCRATCH_CNN: &str = "scratch-cnn";
    /// The blend of the head's and the logistic regression's probabilities (not in the study).
    pub const ENSEMBLE: &str = "ensemble";
    pub const REPORT: &str = "report";
    /// The trained models, in the order the study reports them.
    pub const MODELS: [&str; 3] = [SCRATCH_CNN, HEAD_NN, LOGREG];
}

/// Output names.
pub mod outputs {
    pub const MANIFEST: &str = "manifest";
    pub const MODEL: &str = "model";
    pub const HISTORY: &str = "history";
    pub const PREDICTIONS: &str = "predictions";
    /// A feature classifier's probabilities on the validation split.
    pub const VALIDATION_PREDICTIONS: &str = "validation-predictions";
    pub const REPORT: &str = "report";
    /// The study's three splits, in this order everywhere; per-split artifacts are named so.
    pub const SPLITS: [&str; 3] = ["training", "validation", "evaluation"];
    pub const TRAINING: &str = SPLITS[0];
    pub const VALIDATION: &str = SPLITS[1];
    pub const EVALUATION: &str = SPLITS[2];
}

pub use outputs::SPLITS;

/// The class names an artifact carries in its `classes` metadata.
pub fn classes(input: &pipeline::InputArtifact<'_>) -> Result<Vec<String>> {
    let v = input.meta(meta::CLASSES).ok_or_else(|| {
        format!(
            "{}.{} has no class list",
            input.artifact.stage, input.artifact.name
        )
    })?;
    Ok(serde_json::from_value(v.clone())?)
}

/// The `classes` and `synthetic` metadata of an artifact, typed (`None` where absent).
pub(crate) fn carried_meta(
    input: &pipeline::InputArtifact<'_>,
) -> Result<(Option<Vec<String>>, Option<bool>)> {
    let field = |k: &str| -> Result<Option<serde_json::Value>> { Ok(input.meta(k).cloned()) };
    let bad = |k: &str, e: serde_json::Error| -> pipeline::BoxError {
        format!(
            "{}.{}: metadata `{k}`: {e}",
            input.artifact.stage, input.artifact.name
        )
        .into()
    };
    let classes = match field(meta::CLASSES)? {
        Some(v) => Some(serde_json::from_value(v).map_err(|e| bad(meta::CLASSES, e))?),
        None => None,
    };
    let synthetic = match field(meta::SYNTHETIC)? {
        Some(v) => Some(serde_json::from_value(v).map_err(|e| bad(meta::SYNTHETIC, e))?),
        None => None,
    };
    Ok((classes, synthetic))
}

/// How many input files a run skipped: the lengths of the `skipped` lists in its outputs'
/// metadata (the manifest's and the images'), for [`pipeline::Stage::skipped_inputs`].
pub fn skipped_inputs(rec: &pipeline::RunRecord) -> usize {
    rec.outputs
        .values()
        .filter_map(|a| a.meta.get(meta::SKIPPED)?.as_array().map(|v| v.len()))
        .sum()
}

/// The manifest positions (`index`) of the rows of every chunk of a chunked artifact (images,
/// features), chunk by chunk.
pub fn chunk_rows(input: &pipeline::InputArtifact<'_>) -> Result<Vec<Vec<i64>>> {
    (0..input.len())
        .map(|i| {
            let c = input.chunk(i)?;
            Ok(c.i64(ROW_INDEX).map_err(|e| tensor_err(input, e))?.1)
        })
        .collect()
}

/// Checks that a gathered artifact holds the rows it must (`want`, chunk by chunk): no chunk
/// dropped, repeated or reordered by a shard record. `what` names the artifact.
pub fn check_same_rows(what: &str, got: &[Vec<i64>], want: &[Vec<i64>]) -> Result<()> {
    if got == want {
        return Ok(());
    }
    let rows = |v: &[Vec<i64>]| v.iter().map(Vec::len).sum::<usize>();
    let span = |c: Option<&Vec<i64>>| match c {
        Some(c) if !c.is_empty() => format!("rows {}..={}", c[0], c[c.len() - 1]),
        Some(_) => "no rows".to_string(),
        None => "nothing".to_string(),
    };
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Err(format!(
        "{what} has {} chunks with {} rows where its upstream gives {} chunks with {} rows; chunk {i} holds {} where {} belong: a shard record dropped, repeated or reordered a chunk (rerun the shards with `run STAGE --shard I/N --force`)",
        got.len(),
        rows(got),
        want.len(),
        rows(want),
        span(got.get(i)),
        span(want.get(i)),
    )
    .into())
}

/// The tensor of a chunk's manifest positions, in the images and the features alike.
const ROW_INDEX: &str = "index";

/// Metadata keys shared by several artifacts.
pub(crate) mod meta {
    pub const CLASSES: &str = "classes";
    pub const SYNTHETIC: &str = "synthetic";
    pub const SKIPPED: &str = "skipped";
}

fn tensor_err(input: &pipeline::InputArtifact<'_>, e: pipeline::ReadError) -> pipeline::BoxError {
    format!("{}.{}: {e}", input.artifact.stage, input.artifact.name).into()
}
