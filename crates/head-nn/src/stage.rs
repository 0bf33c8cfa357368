//! The `head-nn` stage adapter: pool5 features -> trained dense head, history, predictions.

use pipeline::{resolve_params, BoxError, InputArtifact, Stage, StageContext, Validate};
use serde_json::Value;

use crate::{evaluate, global_average_pool, train, Params};

/// Bump when results change without a source change.
pub const CACHE_VERSION: u32 = 1;

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        Params::validate(self).map_err(|e| e.to_string())
    }
}

/// Globally average-pooled features (N x C), labels, manifest indices and C of one split.
type Pooled = (Vec<f32>, Vec<u32>, Vec<i64>, usize);

fn pooled(input: &InputArtifact<'_>) -> Result<Pooled, BoxError> {
    let (mut x, mut y, mut idx, mut channels) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for i in 0..input.len() {
        let c = input.chunk(i)?;
        let (shape, f) = c.f32("features")?;
        let n = shape[0];
        channels = *shape.last().ok_or("features have no channel axis")?;
        x.extend(global_average_pool(&f, n, channels)?);
        y.extend(c.i64("labels")?.1.iter().map(|&l| l as u32));
        idx.extend(c.i64("index")?.1);
    }
    Ok((x, y, idx, channels))
}

/// The stage.
pub struct HeadNn;

impl Stage for HeadNn {
    fn id(&self) -> &'static str {
        "head-nn"
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
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let tr = ctx.input("vgg-extract", "training")?;
        let classes = tr.meta("classes").cloned().unwrap_or(Value::Null);
        let k = classes
            .as_array()
            .map(|a| a.len())
            .ok_or("vgg-extract.training has no class list")?;
        let (tx, ty, _, _) = pooled(&tr)?;
        let (vx, vy, _, _) = pooled(&ctx.input("vgg-extract", "validation")?)?;
        let (ex, ey, eidx, _) = pooled(&ctx.input("vgg-extract", "evaluation")?)?;
        let out = train(
            &tx,
            &ty,
            &vx,
            &vy,
            k,
            &p,
            ctx.seed(),
            &mut nn_train::EpochProgress::new(ctx),
        )?;
        let ev = evaluate(out.selected(p.evaluate), &ex, &ey)?;
        nn_train::write_outputs(ctx, &out, p.evaluate, &ev, &ey, &eidx, &classes)
    }
}
