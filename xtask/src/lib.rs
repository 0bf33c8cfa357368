//! The study's stage registry and the binary's own commands, shared by the `cargo xtask`
//! binary and the end-to-end tests.

mod ablation;
mod commands;
mod predict;

pub use ablation::{ablation, check_ladder, AblationArgs};
pub use commands::{Command, FetchArgs, StudyCli, StudyHooks, EXAMPLES};
pub use predict::{predict, PredictArgs};

/// The study's settings outside the stages' inputs that hold paths: the report folder.
pub const PATH_SETTINGS: &[&str] = &["report.out"];

/// The pipeline file with the command line's `--set`s, as every command of the study reads it.
pub fn load_config(globals: &cli::Globals) -> Result<pipeline::Config, pipeline::ConfigError> {
    pipeline::Config::load_with_paths(&globals.config, &globals.set, PATH_SETTINGS)
}

/// Builds the predictor of a cached model from its run record.
pub type PredictorFactory = fn(
    &pipeline::RunRecord,
    &pipeline::Store,
) -> contracts::Result<Box<dyn contracts::predictor::Predictor>>;

/// The models `predict` can apply, by stage id (each crate builds its own from its artifacts).
pub fn predictors() -> [(&'static str, PredictorFactory); 5] {
    use contracts::ids;
    [
        (ids::HEAD_NN, |r, s| {
            Ok(Box::new(head_nn::HeadPredictor::from_record(r, s)?))
        }),
        (ids::LOGREG, |r, s| {
            Ok(Box::new(logreg::LogRegPredictor::from_record(r, s)?))
        }),
        (ids::SCRATCH_CNN, |r, s| {
            Ok(Box::new(scratch_cnn::CnnPredictor::from_record(r, s)?))
        }),
        (ids::ENSEMBLE, |r, s| {
            Ok(Box::new(ensemble::EnsemblePredictor::from_record(r, s)?))
        }),
        (ids::FINETUNE, |r, s| {
            Ok(Box::new(finetune::FinetunePredictor::from_record(r, s)?))
        }),
    ]
}

/// Every stage this build knows, by the id used in `pipeline.toml`.
pub fn registry() -> pipeline::Registry {
    pipeline::Registry::new()
        .with(loader::Loader)
        .with(preprocess::Preprocess)
        .with(vgg_extract::VggExtract)
        .with(lite0_extract::Lite0Extract)
        .with(vgg_activations::VggActivations)
        .with(finetune::Finetune)
        .with(describe::Describe)
        .with(head_nn::HeadNn)
        .with(logreg::LogReg)
        .with(ensemble::Ensemble)
        .with(scratch_cnn::ScratchCnn)
        .with(report::Report)
}
