//! The study's stage registry, shared by the `cargo xtask` binary and the end-to-end tests.

/// Every stage this build knows, by the id used in `pipeline.toml`.
pub fn registry() -> pipeline::Registry {
    pipeline::Registry::new()
        .with(loader::Loader)
        .with(preprocess::Preprocess)
        .with(vgg_extract::VggExtract)
        .with(head_nn::HeadNn)
        .with(logreg::LogReg)
        .with(scratch_cnn::ScratchCnn)
        .with(report::Report)
}
