//! The study's stage registry and the binary's own commands, shared by the `cargo xtask`
//! binary and the end-to-end tests.

mod ablation;
mod commands;
mod predict;

pub use ablation::{ablation, AblationArgs};
pub use commands::{Command, FetchArgs, StudyCli, StudyHooks, EXAMPLES};
pub use predict::{predict, PredictArgs};

/// Every stage this build knows, by the id used in `pipeline.toml`.
pub fn registry() -> pipeline::Registry {
    pipeline::Registry::new()
        .with(loader::Loader)
        .with(preprocess::Preprocess)
        .with(vgg_extract::VggExtract)
        .with(describe::Describe)
        .with(head_nn::HeadNn)
        .with(logreg::LogReg)
        .with(ensemble::Ensemble)
        .with(scratch_cnn::ScratchCnn)
        .with(report::Report)
}
