//! The `vgg-activations` stage (its own crate, so that editing the fine-tuning code does not
//! invalidate the stored maps): preprocessed images -> the full maps of one inner VGG16 layer
//! (`pool4`, `conv5_1` or `conv5_2`), per view, through `vgg-extract`'s loop, views, chunks and
//! shards. The layers below it are frozen during fine-tuning, so their output is computed once
//! and every fine-tuning epoch (and every retry) starts from it.

use contracts::predictor::StoredMaps;
use contracts::{ids, Backbone, SPLITS};
use pipeline::{Artifacts, BoxError, Checked, MissingInput, Stage, StageContext, Store, Validate};
use serde::{Deserialize, Serialize};
use vgg_extract::{ConvStack, ConvWeights, InputConvention, LayerSpec, View, VGG16};

/// Bump when the activations' meaning changes without a source change.
pub const CACHE_VERSION: u32 = 1;

/// The layers whose maps may be stored: the inputs of the convolutions that can be trained.
pub const STORABLE: [&str; 3] = ["pool4", "conv5_1", "conv5_2"];

/// What the metadata says the `features` tensor holds, for stored layer `layer`.
pub fn layout(layer: &str) -> String {
    format!("NHWC f32 vgg16 {layer} maps (after ReLU or pooling)")
}

/// The layer a stored artifact's layout names (see [`layout`]).
pub fn layer_of_layout(layout: &str) -> Option<&str> {
    let rest = layout.strip_prefix("NHWC f32 vgg16 ")?;
    let layer = rest.split(' ').next()?;
    STORABLE.contains(&layer).then_some(layer)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The layer whose maps are stored: `pool4` (14x14x512 at 224 pixels, below all of
    /// block 5), `conv5_1` or `conv5_2`. Fine-tuning trains the convolutions above it.
    pub layer: String,
    /// Pixel convention of the weights (`caffe` for the Keras ImageNet weights).
    pub convention: InputConvention,
    /// Images per forward pass.
    pub batch_size: usize,
    /// The views stored per image, as in `vgg-extract` (`original` first, `flip`, `crop-*`,
    /// `scale-N`): each is one more training row for fine-tuning, and evaluation averages
    /// them.
    pub views: Vec<View>,
    /// The crop views' side as a fraction of the image's shorter side.
    pub crop: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            layer: "conv5_2".into(),
            convention: InputConvention::Caffe,
            batch_size: 16,
            views: vec![View::Original],
            crop: 0.875,
        }
    }
}

impl Params {
    /// The shared extraction loop's params.
    pub fn extraction(&self) -> vgg_extract::Params {
        vgg_extract::Params {
            convention: self.convention,
            batch_size: self.batch_size,
            views: self.views.clone(),
            crop: self.crop,
            taps: Vec::new(),
        }
    }

    /// The params a cached run of this stage used (from its run record).
    pub fn from_record(rec: &pipeline::RunRecord) -> contracts::Result<Params> {
        contracts::predictor::record_params(rec, ids::VGG_ACTIVATIONS)
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        if !STORABLE.contains(&self.layer.as_str()) {
            return Err(format!(
                "layer \"{}\" cannot be stored for fine-tuning; choose one of {}",
                self.layer,
                STORABLE.join(", ")
            ));
        }
        self.extraction()
            .validate_for("VGG16", &vgg_extract::layer_names(VGG16))
    }
}

/// VGG16's layers up to and including `layer`.
pub fn specs_through(layer: &str) -> Result<&'static [LayerSpec], BoxError> {
    let names = vgg_extract::layer_names(VGG16);
    let i = names
        .iter()
        .position(|n| n == layer)
        .ok_or_else(|| format!("no VGG16 layer named `{layer}`"))?;
    Ok(&VGG16[..=i])
}

/// The ImageNet convolution weights of VGG16 (PyTorch layout), checked by `vgg-weights`:
/// one error names every missing, extra or mis-shaped tensor.
pub fn read_vgg16(path: &std::path::Path) -> Result<(Vec<ConvWeights>, String), BoxError> {
    // One read: `load` checks the layout as `validate` does.
    let w = vgg_weights::load(path)?;
    let digest = w.data_digest();
    let mut out = Vec::new();
    for t in ConvStack::tensor_specs(3, VGG16).chunks(2) {
        let get = |name: &str| {
            w.get(name)
                .map(|t| t.data.clone())
                .ok_or_else(|| format!("{}: no tensor {name}", path.display()))
        };
        out.push(ConvWeights {
            weight: get(&t[0].name)?,
            bias: get(&t[1].name)?,
        });
    }
    Ok((out, digest))
}

/// The network that computes `layer`'s maps (VGG16 up to it), from the weights file.
fn network(path: &std::path::Path, layer: &str) -> Result<(ConvStack, String), BoxError> {
    let (weights, digest) = read_vgg16(path)?;
    let specs = specs_through(layer)?;
    let convs = specs
        .iter()
        .filter(|s| matches!(s, LayerSpec::Conv(_)))
        .count();
    Ok((
        ConvStack::from_weights(3, specs, &weights[..convs])?,
        digest,
    ))
}

/// The maps the stage stores, for `n` preprocessed `size x size` RGB images outside the
/// pipeline (`predict`), every view of `p`.
pub fn compute(
    p: &Params,
    weights: &std::path::Path,
    rgb: &[u8],
    n: usize,
    size: usize,
) -> Result<StoredMaps, BoxError> {
    let (net, _) = network(weights, &p.layer)?;
    let views = vgg_extract::extract(&net, &p.extraction(), rgb, (n, size, size), &mut |_| {})?;
    let shape = views.first().map_or((0, 0, 0), |v| v.shape);
    if let Some(v) = views.iter().find(|v| v.shape != shape) {
        return Err(format!(
            "view {} gives {:?} maps, the original {shape:?}: fine-tuned networks take one size",
            v.view.name(),
            v.shape
        )
        .into());
    }
    Ok(StoredMaps {
        views: views.into_iter().map(|v| v.features).collect(),
        shape,
    })
}

/// The stage.
pub struct VggActivations;

impl Stage for VggActivations {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::VGG_ACTIVATIONS
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
    /// As `vgg-extract`: the same weights, fetched the same way.
    fn provide_input(&self, missing: &MissingInput<'_>) -> Result<bool, BoxError> {
        vgg_extract::VggExtract.provide_input(missing)
    }
    fn shardable(&self) -> bool {
        true
    }
    fn check_gathered(&self, outputs: &Artifacts, inputs: &Artifacts, store: &Store) -> Checked {
        vgg_extract::check_gathered_features(ids::VGG_ACTIVATIONS, outputs, inputs, store)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let wpath = ctx
            .setting("weights.path")?
            .ok_or("`weights.path` is empty: the stage needs the VGG16 weights")?;
        let (net, digest) = network(wpath, &p.layer)?;
        if digest != vgg_weights::VGG16_NOTOP_DATA_DIGEST {
            ctx.progress().warn(format!(
                "{} are not the pinned ImageNet VGG16 weights (data digest {})",
                wpath.display(),
                &digest[..16]
            ));
        }
        vgg_extract::run_extraction(
            ctx,
            &net,
            &p.extraction(),
            &vgg_extract::Weights {
                path: wpath,
                digest: &digest,
            },
            Backbone::Vgg16,
            Some(&layout(&p.layer)),
        )
    }
}
