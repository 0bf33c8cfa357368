//! Typed artifact addresses: a [`Slot`] names a stage's output *and* the kind of artifact it
//! holds, so a read names its reader and a wrong pair (a manifest read as features, say) does
//! not compile. Every address a stage reads is declared here, once.
//!
//! A stage reads the manifest's metadata so:
//! ```
//! use contracts::{slots, ManifestMeta};
//! fn classes(ctx: &pipeline::StageContext<'_>) -> contracts::Result<Vec<String>> {
//!     let m: ManifestMeta = slots::MANIFEST.read(ctx)?;
//!     Ok(m.classes)
//! }
//! ```
//! and the same read with a features reader is refused by the compiler:
//! ```compile_fail
//! use contracts::{slots, FeaturesReader};
//! fn rows(ctx: &pipeline::StageContext<'_>) -> contracts::Result<usize> {
//!     let f: FeaturesReader<'_> = slots::MANIFEST.read(ctx)?;
//!     Ok(f.len())
//! }
//! ```

use std::marker::PhantomData;

use pipeline::{InputArtifact, StageContext};

use crate::{
    ids, outputs, FeaturesReader, History, ImagesReader, LogRegModel, ManifestMeta, ManifestReader,
    NamedTensor, NnModel, Predictions, PredictionsMeta, ReportBundle, Result,
};

/// The kinds of artifact that cross a stage boundary (type-level tags of [`Slot`]).
pub mod kind {
    /// `loader.manifest`.
    pub enum Manifest {}
    /// `preprocess.<split>`: u8 images.
    pub enum Images {}
    /// `vgg-extract.<split>` or `describe.<split>`: feature maps.
    pub enum Features {}
    /// A trained network's weights (`head-nn.model`, `scratch-cnn.model`).
    pub enum NnModel {}
    /// A trained network's epochs (`<model>.history`).
    pub enum History {}
    /// `logreg.model`.
    pub enum LogRegModel {}
    /// A model's class probabilities on a split (`<model>.predictions`,
    /// `<model>.validation-predictions`).
    pub enum Predictions {}
    /// `report.report`.
    pub enum Report {}
}

/// A reader of artifacts of kind `K`.
pub trait Read<'a, K>: Sized {
    fn read_input(input: InputArtifact<'a>) -> Result<Self>;
}

/// The address of an artifact of kind `K`: the stage that writes it and the output's name.
pub struct Slot<'s, K> {
    pub stage: &'s str,
    pub output: &'s str,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Slot<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for Slot<'_, K> {}

impl<K> std::fmt::Debug for Slot<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stage, self.output)
    }
}

impl<'s, K> Slot<'s, K> {
    const fn new(stage: &'s str, output: &'s str) -> Self {
        Slot {
            stage,
            output,
            kind: PhantomData,
        }
    }

    /// The artifact, read with `R` (one of the readers of kind `K`).
    pub fn read<'a, R: Read<'a, K>>(&self, ctx: &'a StageContext<'_>) -> Result<R> {
        R::read_input(ctx.input(self.stage, self.output)?)
    }

    /// An artifact of this kind that the caller found another way (a run record's output, a
    /// seed variant), read with `R`.
    pub fn read_from<'a, R: Read<'a, K>>(&self, input: InputArtifact<'a>) -> Result<R> {
        R::read_input(input)
    }

    /// Every seed's variant of the artifact, for a stage that aggregates a seed sweep (see
    /// [`StageContext::input_variants`]), each read with `R`.
    pub fn read_variants<'a, R: Read<'a, K>>(
        &self,
        ctx: &'a StageContext<'_>,
    ) -> Result<Vec<(Option<u64>, InputArtifact<'a>, R)>> {
        ctx.input_variants(self.stage, self.output)?
            .into_iter()
            .map(|(seed, input)| Ok((seed, input, R::read_input(input)?)))
            .collect()
    }

    /// The artifact itself (its metadata, its digest), not read.
    pub fn input<'a>(&self, ctx: &'a StageContext<'_>) -> Result<InputArtifact<'a>> {
        ctx.input(self.stage, self.output)
    }

    /// The artifact among a stage's input artifacts (keyed `stage.output`, as a run's inputs
    /// are), read with `R`.
    pub fn read_among<'a, R: Read<'a, K>>(
        &self,
        inputs: &'a std::collections::BTreeMap<String, pipeline::Artifact>,
        store: &'a pipeline::Store,
    ) -> Result<R> {
        let key = format!("{}.{}", self.stage, self.output);
        let art = inputs
            .get(&key)
            .ok_or_else(|| format!("`{key}` is not among the inputs"))?;
        R::read_input(InputArtifact::new(art, store))
    }

    /// Whether the running stage has this artifact among its inputs.
    pub fn is_input(&self, ctx: &StageContext<'_>) -> bool {
        ctx.has_input(self.stage, self.output)
    }
}

/// `loader.manifest`.
pub const MANIFEST: Slot<'static, kind::Manifest> = Slot::new(ids::LOADER, outputs::MANIFEST);

/// `preprocess.<split>`.
pub fn images(split: &str) -> Slot<'_, kind::Images> {
    Slot::new(ids::PREPROCESS, split)
}

/// A network whose per-view feature maps an extraction stage stores: each has its own stage,
/// and every stage that reads features reads either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backbone {
    /// The study's VGG16 (`vgg-extract`): pool5 maps, 7x7x512 at 224 pixels.
    Vgg16,
    /// EfficientNet-Lite0 (`lite0-extract`): the head's maps, 7x7x1280 at 224 pixels.
    Lite0,
}

impl Backbone {
    pub const ALL: [Backbone; 2] = [Backbone::Vgg16, Backbone::Lite0];

    /// The extraction stage's id.
    pub fn stage(self) -> &'static str {
        match self {
            Backbone::Vgg16 => ids::VGG_EXTRACT,
            Backbone::Lite0 => ids::LITE0_EXTRACT,
        }
    }

    /// The name of the layer whose maps are the `features` tensor.
    pub fn feature_layer(self) -> &'static str {
        match self {
            Backbone::Vgg16 => "pool5",
            Backbone::Lite0 => "head",
        }
    }

    /// The name written in metadata and shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Vgg16 => "vgg16",
            Backbone::Lite0 => "efficientnet-lite0",
        }
    }

    /// The backbone of that [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Backbone> {
        Backbone::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The backbone whose extraction the running stage reads (VGG16 unless `lite0-extract`).
    pub fn of(ctx: &StageContext<'_>) -> Backbone {
        Backbone::ALL
            .into_iter()
            .find(|b| features(FeatureSource::Extracted(*b), outputs::TRAINING).is_input(ctx))
            .unwrap_or(Backbone::Vgg16)
    }
}

/// Where a classifier reads its features: `describe`'s descriptors or an extraction stage's
/// maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureSource {
    Extracted(Backbone),
    Described,
}

impl FeatureSource {
    /// `describe` when the running stage reads it, else the extraction it reads.
    pub fn of(ctx: &StageContext<'_>) -> FeatureSource {
        if features(FeatureSource::Described, outputs::TRAINING).is_input(ctx) {
            FeatureSource::Described
        } else {
            FeatureSource::Extracted(Backbone::of(ctx))
        }
    }

    /// The stage id.
    pub fn stage(self) -> &'static str {
        match self {
            FeatureSource::Extracted(b) => b.stage(),
            FeatureSource::Described => ids::DESCRIBE,
        }
    }
}

/// `vgg-extract.<split>`, `lite0-extract.<split>` or `describe.<split>`.
pub fn features(source: FeatureSource, split: &str) -> Slot<'_, kind::Features> {
    Slot::new(source.stage(), split)
}

/// `vgg-activations.<split>`: an inner layer's full maps, per view (fine-tuning's input).
pub fn activations(split: &str) -> Slot<'_, kind::Features> {
    Slot::new(ids::VGG_ACTIVATIONS, split)
}

/// The trained network `model` (`head-nn` or `scratch-cnn`).
pub fn nn_model(model: &str) -> Slot<'_, kind::NnModel> {
    Slot::new(model, outputs::MODEL)
}

/// The epochs of the trained network `model`.
pub fn history(model: &str) -> Slot<'_, kind::History> {
    Slot::new(model, outputs::HISTORY)
}

/// `logreg.model`.
pub const LOGREG_MODEL: Slot<'static, kind::LogRegModel> = Slot::new(ids::LOGREG, outputs::MODEL);

/// Model `model`'s predictions on the evaluation split.
pub fn predictions(model: &str) -> Slot<'_, kind::Predictions> {
    Slot::new(model, outputs::PREDICTIONS)
}

/// Model `model`'s class probabilities on the validation split (written by the feature
/// classifiers, read by `ensemble`).
pub fn validation_predictions(model: &str) -> Slot<'_, kind::Predictions> {
    Slot::new(model, outputs::VALIDATION_PREDICTIONS)
}

/// `report.report`.
pub const REPORT: Slot<'static, kind::Report> = Slot::new(ids::REPORT, outputs::REPORT);

/// Any artifact as it is (its chunks, its metadata), whatever its kind.
impl<'a, K> Read<'a, K> for InputArtifact<'a> {
    fn read_input(input: InputArtifact<'a>) -> Result<Self> {
        Ok(input)
    }
}

/// `impl Read<'a, kind::K> for T` with `read` (a function of the input artifact).
macro_rules! readers {
    ($($kind:ident => $t:ty: $read:expr;)*) => {$(
        impl<'a> Read<'a, kind::$kind> for $t {
            fn read_input(input: InputArtifact<'a>) -> Result<Self> {
                let read: fn(InputArtifact<'a>) -> Result<Self> = $read;
                read(input)
            }
        }
    )*};
}

readers! {
    Manifest => ManifestReader: |i| ManifestReader::open(&i);
    Manifest => ManifestMeta: |i| ManifestMeta::read(&i);
    Images => ImagesReader<'a>: |i| Ok(ImagesReader::new(i));
    Features => FeaturesReader<'a>: |i| Ok(FeaturesReader::new(i));
    // The weights of the evaluated epoch, and the class names.
    NnModel => (Vec<NamedTensor>, Vec<String>): |i| NnModel::read_selected(&i);
    History => History: |i| History::read(&i);
    LogRegModel => LogRegModel: |i| LogRegModel::read(&i);
    Predictions => Predictions: |i| Predictions::read(&i);
    Predictions => PredictionsMeta: |i| PredictionsMeta::read(&i);
    Report => ReportBundle: |i| ReportBundle::read(&i);
}
