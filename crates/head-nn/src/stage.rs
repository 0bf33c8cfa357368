//! The `head-nn` stage adapter: pool5 features (or `describe`'s descriptors, when the stage
//! needs it) -> trained dense head, history, predictions.

use contracts::{ids, outputs, slots, FeatureSource, FeaturesReader, Predictions};
use nn_train::{Split, TrainData};
use pipeline::{BoxError, Stage, StageContext, Validate};

use crate::{evaluate, global_average_pool, predict, train, Params};

/// Bump when results change without a source change.
pub const CACHE_VERSION: u32 = 1;

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        Params::validate(self).map_err(|e| e.to_string())
    }
}

/// Globally average-pooled features (N x C), labels and manifest indices of one split.
struct Pooled {
    x: Vec<f32>,
    y: Vec<u32>,
    index: Vec<i64>,
}

fn pooled(features: &FeaturesReader<'_>) -> Result<Pooled, BoxError> {
    let mut p = Pooled {
        x: Vec::new(),
        y: Vec::new(),
        index: Vec::new(),
    };
    for i in 0..features.chunks() {
        let c = features.chunk(i)?;
        let channels = *c.shape.last().ok_or("features have no channel axis")?;
        p.x.extend(global_average_pool(&c.features, c.shape[0], channels)?);
        p.y.extend(c.labels.iter().map(|&l| l as u32));
        p.index.extend(c.index);
    }
    Ok(p)
}

/// The stage.
pub struct HeadNn;

impl Stage for HeadNn {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::HEAD_NN
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            outputs::MODEL,
            outputs::HISTORY,
            outputs::PREDICTIONS,
            outputs::VALIDATION_PREDICTIONS,
        ]
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
        let source = FeatureSource::of(ctx);
        let split = |s: &str| -> Result<FeaturesReader<'_>, BoxError> {
            slots::features(source, s).read(ctx)
        };
        let tr_in = slots::features(source, outputs::TRAINING).input(ctx)?;
        let (classes, k) = nn_train::class_list(&tr_in)?;
        let tr = pooled(&split(outputs::TRAINING)?)?;
        let va = pooled(&split(outputs::VALIDATION)?)?;
        let ev = pooled(&split(outputs::EVALUATION)?)?;
        let data = TrainData {
            train: Split {
                x: &tr.x[..],
                y: &tr.y,
            },
            val: Split {
                x: &va.x[..],
                y: &va.y,
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
        let selected = out.single(p.training.evaluate)?;
        let e = evaluate(selected, &ev.x, &ev.y)?;
        nn_train::write_outputs(
            ctx,
            &out,
            p.training.evaluate,
            &e,
            &ev.y,
            &ev.index,
            &classes,
        )?;
        // The evaluated weights' validation probabilities, for stages that choose among models.
        let v = predict(selected, &va.x)?;
        Predictions {
            pred: v.predictions.iter().map(|&c| c as i64).collect(),
            labels: va.y.iter().map(|&c| c as i64).collect(),
            probs: v.probabilities,
            n_classes: v.n_classes,
            index: va.index,
        }
        .write_validation(ctx, &classes)?;
        Ok(())
    }
}
