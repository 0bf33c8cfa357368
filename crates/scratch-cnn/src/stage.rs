//! The `scratch-cnn` stage adapter: preprocessed images -> the study's baseline CNN.

use pipeline::{resolve_params, BoxError, Chunk, Stage, StageContext, Validate};
use serde_json::Value;

use crate::{evaluate, train, Images, Params};

/// Bump when results change without a source change.
pub const CACHE_VERSION: u32 = 1;

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        Params::validate(self).map_err(|e| e.to_string())
    }
}

/// The memory-mapped chunks of one split with their labels and manifest indices.
struct Split {
    chunks: Vec<Chunk>,
    labels: Vec<u32>,
    index: Vec<i64>,
    height: usize,
    width: usize,
}

fn split(ctx: &StageContext<'_>, name: &str) -> Result<Split, BoxError> {
    let input = ctx.input("preprocess", name)?;
    let mut s = Split {
        chunks: Vec::new(),
        labels: Vec::new(),
        index: Vec::new(),
        height: 0,
        width: 0,
    };
    for i in 0..input.len() {
        let c = input.chunk(i)?;
        let (shape, _) = c.u8("images")?;
        (s.height, s.width) = (shape[1], shape[2]);
        s.labels
            .extend(c.i64("labels")?.1.iter().map(|&l| l as u32));
        s.index.extend(c.i64("index")?.1);
        s.chunks.push(c);
    }
    Ok(s)
}

impl Split {
    /// The images, borrowed from the mapped chunks (nothing is copied up front; the caffe
    /// transform is applied per batch).
    fn images(&self) -> Result<Images<'_>, BoxError> {
        let parts = self
            .chunks
            .iter()
            .map(|c| c.u8("images").map(|(_, b)| b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Images::from_chunks(parts, self.height, self.width)?)
    }
}

/// The stage.
pub struct ScratchCnn;

impl Stage for ScratchCnn {
    fn id(&self) -> &'static str {
        "scratch-cnn"
    }
    fn code_version(&self) -> String {
        format!("{}-v{CACHE_VERSION}", env!("CODE_HASH"))
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["model", "history", "predictions"]
    }
    fn resolve_params(&self, raw: &toml::Table) -> Result<Value, String> {
        resolve_params::<Params>(raw)
    }
    /// Trains on every core for a long time: runs alone.
    fn exclusive(&self) -> bool {
        true
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let classes = ctx
            .input("preprocess", "training")?
            .meta("classes")
            .cloned()
            .unwrap_or(Value::Null);
        let k = classes
            .as_array()
            .map(|a| a.len())
            .ok_or("preprocess.training has no class list")?;
        let (tr, va, ev) = (
            split(ctx, "training")?,
            split(ctx, "validation")?,
            split(ctx, "evaluation")?,
        );
        let out = train(
            &tr.images()?,
            &tr.labels,
            &va.images()?,
            &va.labels,
            k,
            &p,
            ctx.seed(),
            &mut nn_train::EpochProgress::new(ctx),
        )?;
        let e = evaluate(out.selected(p.evaluate), &ev.images()?, &ev.labels)?;
        nn_train::write_outputs(ctx, &out, p.evaluate, &e, &ev.labels, &ev.index, &classes)
    }
}
