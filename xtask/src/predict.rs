//! `cargo xtask predict IMAGE... [--model M]`: top-3 classes of new images with a trained model
//! from the cache, preprocessed exactly as the pipeline preprocessed its data.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Parser;
use pipeline::{Chunk, Config, RunRecord, Store};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask predict")]
pub struct PredictArgs {
    /// Image files (JPEG, PNG, WebP, ...).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Which trained model: head-nn, logreg or scratch-cnn.
    #[arg(long, default_value = "head-nn")]
    pub model: String,
    #[arg(long, default_value = "pipeline.toml")]
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

fn latest(store: &Store, stage: &str) -> anyhow::Result<RunRecord> {
    store.latest(stage)?.with_context(|| {
        format!(
            "stage `{stage}` has not run on this cache yet: run `cargo xtask run {stage}` first"
        )
    })
}

fn open_output(store: &Store, rec: &RunRecord, output: &str) -> anyhow::Result<Chunk> {
    let a = rec
        .outputs
        .get(output)
        .with_context(|| format!("`{}` has no output `{output}`", rec.stage))?;
    Ok(Chunk::open(store, &a.chunks[0])?)
}

/// The weights the stage evaluated with (`final.*` or `best.*`), as named tensors.
fn nn_weights(store: &Store, rec: &RunRecord) -> anyhow::Result<nn_train::Weights> {
    let a = &rec.outputs["model"];
    let prefix = match a.meta.get("evaluate").and_then(|v| v.as_str()) {
        Some("best") => "best.",
        _ => "final.",
    };
    let c = open_output(store, rec, "model")?;
    let mut tensors = Vec::new();
    for t in &a.chunks[0].tensors {
        if let Some(name) = t.name.strip_prefix(prefix) {
            let (shape, data) = c.f32(&t.name).map_err(|e| anyhow::anyhow!("{e}"))?;
            tensors.push(nn_train::NamedTensor {
                name: name.to_string(),
                shape,
                data,
            });
        }
    }
    Ok(nn_train::Weights { tensors })
}

/// pool5 features of preprocessed images, with the extraction stage's own convention.
fn features(
    config: &Config,
    store: &Store,
    pixels: &[u8],
    n: usize,
    size: usize,
) -> anyhow::Result<(Vec<f32>, [usize; 3])> {
    let rec = latest(store, "vgg-extract")?;
    let convention: vgg_extract::InputConvention =
        serde_json::from_value(rec.key_inputs.params["convention"].clone())?;
    let wpath = config
        .setting_path("weights.path")
        .context("`weights.path` is empty")?;
    let net = vgg_extract::ConvStack::vgg16_from_safetensors(&wpath)?;
    let x = convention.from_rgb(pixels);
    let (oh, ow, oc) = net.output_shape(size, size)?;
    Ok((net.forward(&x, n, size, size)?, [oh, ow, oc]))
}

pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config, &args.set)?;
    let store = Store::open(&config.cache)?;
    let model = args.model.as_str();
    if !["head-nn", "logreg", "scratch-cnn"].contains(&model) {
        bail!("unknown model `{model}` (known: head-nn, logreg, scratch-cnn)");
    }
    let rec = latest(&store, model)?;
    let classes: Vec<String> = serde_json::from_value(
        rec.outputs["model"]
            .meta
            .get("classes")
            .cloned()
            .unwrap_or_default(),
    )
    .context("the model has no class list")?;
    let pre = latest(&store, "preprocess")?;
    let pp: preprocess::Params = serde_json::from_value(pre.key_inputs.params.clone())?;
    let mut pixels = Vec::new();
    for img in &args.images {
        let bytes = std::fs::read(img).with_context(|| format!("cannot read {}", img.display()))?;
        let px = preprocess::preprocess_one(&bytes, &pp)
            .map_err(|e| anyhow::anyhow!("{}: {e}", img.display()))?;
        pixels.extend(px);
    }
    let n = args.images.len();
    let size = pp.size;
    let probs: Vec<f32> = match model {
        "scratch-cnn" => {
            let w = nn_weights(&store, &rec)?;
            let images = scratch_cnn::Images::new(&pixels, size, size)?;
            scratch_cnn::predict(&w, &images)?.probabilities
        }
        "head-nn" => {
            let (f, [oh, ow, oc]) = features(&config, &store, &pixels, n, size)?;
            let x = head_nn::global_average_pool(&f, n, oc)?;
            let _ = (oh, ow);
            head_nn::predict(&nn_weights(&store, &rec)?, &x)?.probabilities
        }
        _ => {
            let (f, [oh, ow, oc]) = features(&config, &store, &pixels, n, size)?;
            let d = oh * ow * oc;
            let c = open_output(&store, &rec, "model")?;
            let (_, coef) = c.f64("coef").map_err(|e| anyhow::anyhow!("{e}"))?;
            let (_, b) = c.f64("intercept").map_err(|e| anyhow::anyhow!("{e}"))?;
            let k = b.len();
            let mut out = Vec::with_capacity(n * k);
            for i in 0..n {
                let xi = &f[i * d..(i + 1) * d];
                let z: Vec<f64> = (0..k)
                    .map(|j| {
                        b[j] + coef[j * d..(j + 1) * d]
                            .iter()
                            .zip(xi)
                            .map(|(w, x)| w * *x as f64)
                            .sum::<f64>()
                    })
                    .collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
                let s: f64 = e.iter().sum();
                out.extend(e.iter().map(|v| (v / s) as f32));
            }
            out
        }
    };
    let k = classes.len();
    for (i, img) in args.images.iter().enumerate() {
        let row = &probs[i * k..(i + 1) * k];
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&c| format!("{} {:.1}%", classes[c], 100.0 * row[c]))
            .collect();
        println!("{}: {}", img.display(), top.join(", "));
    }
    Ok(())
}
