//! The `scratch-cnn` stage adapter: preprocessed images -> the study's baseline CNN.

use contracts::{ids, outputs, slots, ImagesChunk, ImagesReader};
use nn_train::{Split, TrainData};
use pipeline::{BoxError, Stage, StageContext, Validate};

use crate::{evaluate, train, Images, Params};

/// Bump when results change without a source change.
pub const CACHE_VERSION: u32 = 1;

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        Params::validate(self).map_err(|e| e.to_string())
    }
}

/// The memory-mapped chunks of one split with their labels and manifest indices.
struct SplitImages {
    chunks: Vec<ImagesChunk>,
    labels: Vec<u32>,
    index: Vec<i64>,
    height: usize,
    width: usize,
}

fn split(ctx: &StageContext<'_>, name: &str) -> Result<SplitImages, BoxError> {
    let reader: ImagesReader<'_> = slots::images(name).read(ctx)?;
    let mut s = SplitImages {
        chunks: Vec::new(),
        labels: Vec::new(),
        index: Vec::new(),
        height: 0,
        width: 0,
    };
    for i in 0..reader.chunks() {
        let c = reader.chunk(i)?;
        (s.height, s.width) = (c.height, c.width);
        s.labels.extend(c.labels()?.iter().map(|&l| l as u32));
        s.index.extend(c.index()?);
        s.chunks.push(c);
    }
    Ok(s)
}

impl SplitImages {
    /// The images, borrowed from the mapped chunks (nothing is copied up front; the caffe
    /// transform is applied per batch).
    fn images(&self) -> Result<Images<'_>, BoxError> {
        let parts = self.chunks.iter().map(|c| c.images()).collect();
        Ok(Images::from_chunks(parts, self.height, self.width)?)
    }
}

/// The stage.
pub struct ScratchCnn;

impl Stage for ScratchCnn {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::SCRATCH_CNN
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[outputs::MODEL, outputs::HISTORY, outputs::PREDICTIONS]
    }
    /// Initialisation, shuffling (and dropout) draw from the seed.
    fn uses_seed(
        &self,
        _: &std::collections::BTreeMap<String, Option<std::path::PathBuf>>,
    ) -> bool {
        true
    }
    fn uses_device(&self) -> bool {
        true
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let (classes, k) = nn_train::class_list(&slots::images(outputs::TRAINING).input(ctx)?)?;
        let (tr, va, ev) = (
            split(ctx, outputs::TRAINING)?,
            split(ctx, outputs::VALIDATION)?,
            split(ctx, outputs::EVALUATION)?,
        );
        let (tr_images, va_images) = (tr.images()?, va.images()?);
        let data = TrainData {
            train: Split {
                x: &tr_images,
                y: &tr.labels,
            },
            val: Split {
                x: &va_images,
                y: &va.labels,
            },
            n_classes: k,
        };
        let out = train(
            &data,
            &p,
            ctx.seed()?,
            &mut nn_train::EpochProgress::new(ctx),
        )
        .map_err(|e| format!("{e} (stage `{}`)", ctx.stage()))?;
        let e = evaluate(out.single(p.training.evaluate)?, &ev.images()?, &ev.labels)?;
        nn_train::write_outputs(
            ctx,
            &out,
            p.training.evaluate,
            &e,
            &ev.labels,
            &ev.index,
            &classes,
        )
    }
}
