//! `cargo xtask predict IMAGE... [--model M]`: top-3 classes of new images with the trained
//! model that the configuration (with its `--set`s) selects, preprocessed exactly as the
//! pipeline preprocessed its data. Each image gets its own answer; unusable images are reported
//! and make the command fail at the end.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use contracts::predictor::{ModelInputs, Predictor};
use contracts::{ids, Backbone, FeatureSource};
use pipeline::{Config, Plan, RunRecord, StageState, Store};

/// `predict`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// Image files (JPEG, PNG, WebP, ...).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Which trained model.
    #[arg(long, default_value = ids::HEAD_NN, value_parser = clap::builder::PossibleValuesParser::new(crate::predictors().into_iter().map(|(id, _)| id)))]
    pub model: String,
}

/// The record the configuration resolves `stage` to; an error saying how to build it when the
/// cache does not hold it.
fn selected_record(
    plan: &Plan,
    store: &Store,
    stage: &str,
    model: &str,
) -> anyhow::Result<RunRecord> {
    let e = plan
        .get(stage)
        .with_context(|| format!("the pipeline file has no stage `{stage}`"))?;
    match &e.state {
        StageState::Fresh { key, .. } => store
            .read_record(stage, key)?
            .with_context(|| format!("the record of `{stage}` vanished from the cache")),
        StageState::Stale { reasons, .. } => bail!(
            "the `{model}` model that this configuration selects is not in the cache (`{stage}` is stale: {}); build it with `cargo xtask run {model}` and the same --config/--set options",
            pipeline::join_reasons(reasons)
        ),
    }
}

pub fn predict(args: &PredictArgs, globals: &cli::Globals) -> anyhow::Result<()> {
    let config = crate::load_config(globals)?;
    let registry = crate::registry();
    let plan = pipeline::plan(&config, &registry)?;
    let store = config.open_store()?;
    let model = args.model.as_str();
    let predictor = predictor(&plan, &store, model, model)?;
    let pre = selected_record(&plan, &store, ids::PREPROCESS, model)?;
    let pp = preprocess::Params::from_record(&pre).map_err(anyhow::Error::from_boxed)?;

    // Each image on its own: a bad one is reported, the others still get an answer.
    let mut pixels = Vec::new();
    let mut good = Vec::new();
    let mut failures = Vec::new();
    for (i, img) in args.images.iter().enumerate() {
        let r = std::fs::read(img)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|bytes| preprocess::preprocess_one(&bytes, &pp));
        match r {
            Ok(px) => {
                pixels.extend(px);
                good.push(i);
            }
            Err(reason) => failures.push((i, reason)),
        }
    }
    let classes = predictor.classes().to_vec();
    let probs = if good.is_empty() {
        Vec::new()
    } else {
        let mut inputs = Inputs {
            config: &config,
            plan: &plan,
            store: &store,
            model,
            pixels,
            n: good.len(),
            size: pp.size,
            features: Vec::new(),
        };
        predictor
            .predict(&mut inputs)
            .map_err(anyhow::Error::from_boxed)?
    };
    if let Some(v) = probs.iter().find(|v| !v.is_finite()) {
        bail!(
            "the `{model}` model gives a non-finite probability ({v}): the cached model is broken; run `cargo xtask verify --repair`, then `cargo xtask run {model}`"
        );
    }
    let k = classes.len();
    if probs.len() != good.len() * k {
        bail!(
            "the `{model}` model gave {} probabilities for {} images of {k} classes",
            probs.len(),
            good.len()
        );
    }
    for (j, &i) in good.iter().enumerate() {
        let row = &probs[j * k..(j + 1) * k];
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&c| format!("{} {:.1}%", classes[c], 100.0 * row[c]))
            .collect();
        println!("{}: {}", args.images[i].display(), top.join(", "));
    }
    for (i, reason) in &failures {
        eprintln!("{}: error: {reason}", args.images[*i].display());
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} images could not be classified (see above)",
            failures.len(),
            args.images.len()
        );
    }
    Ok(())
}

/// The predictor of the cached model `model` that the configuration selects (`asked` is the
/// model the user asked for, for messages).
fn predictor(
    plan: &Plan,
    store: &Store,
    model: &str,
    asked: &str,
) -> anyhow::Result<Box<dyn Predictor>> {
    let (_, build) = crate::predictors()
        .into_iter()
        .find(|(id, _)| *id == model)
        .with_context(|| format!("`{model}` is not a model that predicts"))?;
    let rec = selected_record(plan, store, model, asked)?;
    build(&rec, store).map_err(|e| {
        anyhow::anyhow!(
            "the cached `{model}` model cannot be read ({e}); run `cargo xtask verify --repair`, then `cargo xtask run {model}`"
        )
    })
}

/// What the models ask for, computed at most once per source: an ensemble's two members read
/// the same features, so VGG16 runs over the images once.
struct Inputs<'a> {
    config: &'a Config,
    plan: &'a Plan,
    store: &'a Store,
    /// The model the user asked for (messages name it).
    model: &'a str,
    pixels: Vec<u8>,
    n: usize,
    size: usize,
    features: Vec<(FeatureSource, Vec<f32>, usize)>,
}

impl ModelInputs for Inputs<'_> {
    fn len(&self) -> usize {
        self.n
    }
    fn images(&mut self) -> contracts::Result<(&[u8], usize)> {
        Ok((&self.pixels, self.size))
    }
    fn features(&mut self, source: FeatureSource) -> contracts::Result<(Vec<f32>, usize)> {
        if let Some((_, x, dim)) = self.features.iter().find(|(s, ..)| *s == source) {
            return Ok((x.clone(), *dim));
        }
        let (described, backbone) = match source {
            FeatureSource::Described => {
                let d = selected_record(self.plan, self.store, ids::DESCRIBE, self.model)?;
                let backbone = match FeatureSource::of_record(&d) {
                    FeatureSource::Extracted(b) => b,
                    FeatureSource::Described => Backbone::Vgg16,
                };
                (Some(d), backbone)
            }
            FeatureSource::Extracted(b) => (None, b),
        };
        let extracted = selected_record(self.plan, self.store, backbone.stage(), self.model)?;
        let (x, dim) = compute_features(
            self.config,
            backbone,
            &extracted,
            described.as_ref(),
            &self.pixels,
            self.n,
            self.size,
        )?;
        self.features.push((source, x.clone(), dim));
        Ok((x, dim))
    }
    fn probabilities(&mut self, model: &str) -> contracts::Result<(Vec<f32>, Vec<String>)> {
        let p = predictor(self.plan, self.store, model, self.model)?;
        let probs = p.predict(self)?;
        Ok((probs, p.classes().to_vec()))
    }
    fn activations(&mut self) -> contracts::Result<contracts::predictor::StoredMaps> {
        let rec = selected_record(self.plan, self.store, ids::VGG_ACTIVATIONS, self.model)?;
        let p = vgg_activations::Params::from_record(&rec)?;
        let wpath = self
            .config
            .setting_path("weights.path")
            .ok_or("`weights.path` is empty")?;
        vgg_activations::compute(&p, &wpath, &self.pixels, self.n, self.size)
    }
}

/// The views, crop, taps and convention a cached extraction (`backbone`'s stage) ran with.
pub(crate) fn extraction_params(
    backbone: Backbone,
    rec: &RunRecord,
) -> anyhow::Result<vgg_extract::Params> {
    match backbone {
        Backbone::Vgg16 => vgg_extract::Params::from_record(rec),
        Backbone::Lite0 => lite0_extract::Params::from_record(rec).map(|p| p.extraction()),
    }
    .map_err(anyhow::Error::from_boxed)
    .with_context(|| format!("the {} params", backbone.stage()))
}

/// The features of preprocessed images as the pipeline computed them: the extraction stage's
/// maps (`backbone`'s, with that stage's own params in `extracted` and the configured weights),
/// or, with the `describe` record `described`, the descriptors of its recipe (views averaged,
/// as for evaluation). Returns the rows and their channel count (the last axis).
fn compute_features(
    config: &Config,
    backbone: Backbone,
    extracted: &RunRecord,
    described: Option<&RunRecord>,
    pixels: &[u8],
    n: usize,
    size: usize,
) -> anyhow::Result<(Vec<f32>, usize)> {
    let wpath = config
        .setting_path("weights.path")
        .context("`weights.path` is empty")?;
    let p = extraction_params(backbone, extracted)?;
    let net: Box<dyn vgg_extract::Network> = match backbone {
        Backbone::Vgg16 => {
            vgg_weights::validate(&wpath)?;
            Box::new(vgg_extract::ConvStack::vgg16_from_safetensors(&wpath)?)
        }
        Backbone::Lite0 => Box::new(lite0_extract::Lite0::new(&lite0_weights::load(&wpath)?)),
    };
    let net = &*net;
    let (_, _, oc) = net.output_shape(size, size)?;
    let Some(d) = described else {
        let original = vgg_extract::Params {
            views: vec![vgg_extract::View::Original],
            taps: Vec::new(),
            ..p
        };
        let mut v = vgg_extract::extract(net, &original, pixels, (n, size, size), &mut |_| {})?;
        return Ok((v.remove(0).features, oc));
    };
    let dp = describe::Params::from_record(d).map_err(anyhow::Error::from_boxed)?;
    let parts = dp.parsed_parts().map_err(anyhow::Error::msg)?;
    let views = vgg_extract::extract(net, &p, pixels, (n, size, size), &mut |_| {})?;
    let data: Vec<describe::ViewData<'_>> = views
        .iter()
        .filter(|v| dp.views.is_empty() || dp.views.iter().any(|w| *w == v.view.name()))
        .map(|v| describe::ViewData {
            pool5: &v.features,
            pool5_channels: oc,
            pool5_hw: (v.shape.0, v.shape.1),
            taps: p
                .taps
                .iter()
                .zip(&v.taps)
                .flat_map(|(layer, t)| {
                    [
                        (contracts::tap_tensor(layer, "avg"), &t.avg[..]),
                        (contracts::tap_tensor(layer, "max"), &t.max[..]),
                    ]
                })
                .collect(),
        })
        .collect();
    let (x, dim) =
        describe::descriptors(&parts, &dp, n, &data, true).map_err(anyhow::Error::msg)?;
    Ok((x, dim))
}
