//! `cargo xtask predict IMAGE... [--model M]`: top-3 classes of new images with the trained
//! model that the configuration (with its `--set`s) selects, preprocessed exactly as the
//! pipeline preprocessed its data. Each image gets its own answer; unusable images are reported
//! and make the command fail at the end.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use contracts::{ids, outputs, BlendChoice, Choice, LogRegModel, NnModel, PredictionsMeta};
use pipeline::{Config, InputArtifact, Plan, RunRecord, StageState, Store};

/// `predict`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// Image files (JPEG, PNG, WebP, ...).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Which trained model.
    #[arg(long, default_value = ids::HEAD_NN, value_parser = [ids::HEAD_NN, ids::LOGREG, ids::SCRATCH_CNN, ids::ENSEMBLE])]
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

/// Adds the advice for a cached model that cannot be read.
fn broken(model: &str) -> impl FnOnce(pipeline::BoxError) -> anyhow::Error + '_ {
    move |e| {
        anyhow::anyhow!(
            "the cached `{model}` model cannot be read ({e}); run `cargo xtask verify --repair`, then `cargo xtask run {model}`"
        )
    }
}

pub fn predict(args: &PredictArgs, globals: &cli::Globals) -> anyhow::Result<()> {
    let config = crate::load_config(globals)?;
    let registry = crate::registry();
    let plan = pipeline::plan(&config, &registry)?;
    let store = config.open_store()?;
    let model = args.model.as_str();
    let rec = selected_record(&plan, &store, model, model)?;
    let pre = selected_record(&plan, &store, ids::PREPROCESS, model)?;
    let pp: preprocess::Params = serde_json::from_value(pre.key_inputs.params.clone())?;

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
    let n = good.len();
    let size = pp.size;
    let (probs, classes) = if n == 0 {
        (Vec::new(), Vec::new())
    } else if model == ids::ENSEMBLE {
        // The blend the ensemble chose on validation, of the two models it read.
        let preds = rec
            .outputs
            .get(outputs::PREDICTIONS)
            .context("`ensemble` has no predictions output")?;
        let meta = PredictionsMeta::read(&InputArtifact::new(preds, &store))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(Choice::Blend(BlendChoice { head_weight: w, .. })) = meta.best else {
            bail!("the cached ensemble names no head weight; run `cargo xtask run ensemble`");
        };
        let mut memo = None;
        let (h, classes) = probabilities(
            &config,
            &plan,
            &store,
            ids::HEAD_NN,
            &pixels,
            n,
            size,
            &mut memo,
        )?;
        let (l, _) = probabilities(
            &config,
            &plan,
            &store,
            ids::LOGREG,
            &pixels,
            n,
            size,
            &mut memo,
        )?;
        (
            ensemble::blend(&h, &l, w).map_err(anyhow::Error::msg)?,
            classes,
        )
    } else {
        probabilities(&config, &plan, &store, model, &pixels, n, size, &mut None)?
    };
    if let Some(v) = probs.iter().find(|v| !v.is_finite()) {
        bail!(
            "the `{model}` model gives a non-finite probability ({v}): the cached model is broken; run `cargo xtask verify --repair`, then `cargo xtask run {model}`"
        );
    }
    let k = classes.len();
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

/// Class probabilities (`n x classes`) and class names of one trained model on `n`
/// preprocessed images.
#[allow(clippy::too_many_arguments)]
fn probabilities(
    config: &Config,
    plan: &Plan,
    store: &Store,
    model: &str,
    pixels: &[u8],
    n: usize,
    size: usize,
    memo: &mut FeatureMemo,
) -> anyhow::Result<(Vec<f32>, Vec<String>)> {
    let rec = selected_record(plan, store, model, model)?;
    let model_art = rec
        .outputs
        .get(outputs::MODEL)
        .with_context(|| format!("`{model}` has no model output"))?;
    let model_in = InputArtifact::new(model_art, store);
    Ok(match model {
        ids::SCRATCH_CNN => {
            let (w, classes) = NnModel::read_selected(&model_in).map_err(broken(model))?;
            let weights = nn_train::Weights { tensors: w };
            let images = scratch_cnn::Images::new(pixels, size, size)?;
            (
                scratch_cnn::predict(&weights, &images)?.probabilities,
                classes,
            )
        }
        ids::HEAD_NN => {
            let (w, classes) = NnModel::read_selected(&model_in).map_err(broken(model))?;
            let (f, oc) = features(config, plan, store, &rec, model, pixels, (n, size), memo)?;
            let x = head_nn::global_average_pool(&f, n, oc)?;
            let weights = nn_train::Weights { tensors: w };
            (head_nn::predict(&weights, &x)?.probabilities, classes)
        }
        _ => {
            let m = LogRegModel::read(&model_in).map_err(broken(model))?;
            let classes = m.classes;
            let lr = logreg::Model::from_coefficients(m.coef, m.intercept, m.n_features)?;
            let (f, _) = features(config, plan, store, &rec, model, pixels, (n, size), memo)?;
            let p = lr.predict_proba(&f)?;
            (p.into_iter().map(|v| v as f32).collect(), classes)
        }
    })
}

/// The features of the last `features` call and their key (the extraction's and, when the
/// model read `describe`, the descriptors' record keys): the ensemble's two models read the
/// same ones, so VGG16 runs over the images once.
type FeatureMemo = Option<(String, Vec<f32>, usize)>;

/// The features the model `rec` was trained on, of preprocessed images: pool5 maps with the
/// extraction stage's own convention and the configured weights, or, when the model read
/// `describe`, the descriptors of its recipe (views averaged, as for evaluation). Returns the
/// rows and their channel count (the last axis); the memo's copy when it holds the same ones.
#[allow(clippy::too_many_arguments)]
fn features(
    config: &Config,
    plan: &Plan,
    store: &Store,
    rec: &RunRecord,
    model: &str,
    pixels: &[u8],
    (n, size): (usize, usize),
    memo: &mut FeatureMemo,
) -> anyhow::Result<(Vec<f32>, usize)> {
    let vgg = selected_record(plan, store, ids::VGG_EXTRACT, model)?;
    let described = if reads_descriptors(rec) {
        Some(selected_record(plan, store, ids::DESCRIBE, model)?)
    } else {
        None
    };
    let key = match &described {
        Some(d) => format!("{}+{}", vgg.key, d.key),
        None => vgg.key.clone(),
    };
    if let Some((k, x, dim)) = memo {
        if *k == key {
            return Ok((x.clone(), *dim));
        }
    }
    let (x, dim) = compute_features(config, &vgg, described.as_ref(), pixels, n, size)?;
    *memo = Some((key, x.clone(), dim));
    Ok((x, dim))
}

/// Whether the model `rec` was trained on `describe`'s descriptors.
fn reads_descriptors(rec: &RunRecord) -> bool {
    rec.key_inputs
        .inputs
        .keys()
        .any(|k| k.starts_with(&format!("{}.", ids::DESCRIBE)))
}

/// [`features`] computed: the extraction `vgg`'s recipe on the images, then, with the
/// `describe` record `described`, its descriptors.
fn compute_features(
    config: &Config,
    vgg: &RunRecord,
    described: Option<&RunRecord>,
    pixels: &[u8],
    n: usize,
    size: usize,
) -> anyhow::Result<(Vec<f32>, usize)> {
    let p: vgg_extract::Params = serde_json::from_value(vgg.key_inputs.params.clone())?;
    let wpath = config
        .setting_path("weights.path")
        .context("`weights.path` is empty")?;
    vgg_weights::validate(&wpath)?;
    let net = vgg_extract::ConvStack::vgg16_from_safetensors(&wpath)?;
    let (_, _, oc) = net.output_shape(size, size)?;
    let Some(d) = described else {
        let original = vgg_extract::Params {
            views: vec![vgg_extract::View::Original],
            taps: Vec::new(),
            ..p
        };
        let mut v = vgg_extract::extract(&net, &original, pixels, (n, size, size), &mut |_| {})?;
        return Ok((v.remove(0).features, oc));
    };
    let dp: describe::Params = serde_json::from_value(d.key_inputs.params.clone())?;
    let parts = dp.parsed_parts().map_err(anyhow::Error::msg)?;
    let views = vgg_extract::extract(&net, &p, pixels, (n, size, size), &mut |_| {})?;
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
