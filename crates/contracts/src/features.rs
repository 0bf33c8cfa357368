//! `vgg-extract.{training,validation,evaluation}`: f32 feature maps, channels-last; also the
//! `describe` stage's descriptors, stored as `[n, 1, 1, d]` maps so that every reader of
//! features reads them.
//!
//! A chunk holds `features` (pool5 of the original view), `labels` and `index`; with more
//! views, each view's pool5 as `features@{view}`; with taps, each tapped layer's per-image
//! global average and maximum as `{layer}.avg` / `{layer}.max` (`[n, c]`, again suffixed
//! `@{view}` for the other views). The metadata lists the views and taps only when there are
//! more than the default (the original view, no taps), so a default artifact is unchanged.

use pipeline::{InputArtifact, OutputWriter, StageContext, Tensor};
use serde_json::{json, Value};

use crate::{meta, tensor_err, Backbone, Result};

const FEATURES: &str = "features";
const LABELS: &str = "labels";
const INDEX: &str = "index";
const CONVENTION: &str = "convention";
const WEIGHTS_DIGEST: &str = "weights_digest";
const LAYOUT: &str = "layout";
const LAYOUT_VALUE: &str = "NHWC f32 pool5 (Keras flatten order)";
const VIEWS: &str = "views";
const TAPS: &str = "taps";
const BACKBONE: &str = "backbone";

/// The view every features artifact has.
pub const ORIGINAL_VIEW: &str = "original";

/// The name of tensor `base` (`features`, `conv5_3.avg`, ...) of view `view` in a chunk.
pub fn view_tensor(base: &str, view: &str) -> String {
    if view == ORIGINAL_VIEW {
        base.to_string()
    } else {
        format!("{base}@{view}")
    }
}

/// The tensor of a tapped layer's per-image summary (`stat` = `avg` or `max`), original view.
pub fn tap_tensor(layer: &str, stat: &str) -> String {
    format!("{layer}.{stat}")
}

/// The pool5 maps' tensor name.
pub const FEATURES_TENSOR: &str = FEATURES;

/// What a split's features artifact says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct FeaturesMeta {
    /// Carried over from the images (see [`crate::ImagesReader::carried_meta`]).
    pub classes: Option<Vec<String>>,
    pub synthetic: Option<bool>,
    /// The input convention, as the extractor names it (e.g. `"caffe"`).
    pub convention: String,
    pub weights_digest: String,
    /// The views in the chunks, the original first; empty or just the original: the default.
    pub views: Vec<String>,
    /// The tapped layers; empty: none.
    pub taps: Vec<String>,
    /// What the `features` tensor holds, when not pool5 maps (a descriptor's recipe, another
    /// backbone's maps).
    pub layout: Option<String>,
    /// The network, when not VGG16: VGG16's artifacts say nothing, as before there was a
    /// choice.
    pub backbone: Option<Backbone>,
}

/// Writes one split, chunk by chunk.
pub struct FeaturesWriter<'c> {
    w: OutputWriter<'c>,
}

impl<'c> FeaturesWriter<'c> {
    pub fn new(ctx: &'c StageContext<'c>, split: &str) -> Result<Self> {
        Ok(FeaturesWriter {
            w: ctx.output(split)?,
        })
    }

    /// `features` of shape `[n, h, w, c]`, with the images' labels and manifest indices.
    pub fn write_chunk(
        &mut self,
        features: &[f32],
        shape: [usize; 4],
        labels: &[i64],
        index: &[i64],
    ) -> Result<()> {
        self.write_chunk_with(features, shape, labels, index, Vec::new())
    }

    /// [`write_chunk`](Self::write_chunk) with more tensors (other views, taps; see the
    /// module's documentation for their names), each with `n` rows.
    pub fn write_chunk_with(
        &mut self,
        features: &[f32],
        shape: [usize; 4],
        labels: &[i64],
        index: &[i64],
        extra: Vec<(String, Tensor)>,
    ) -> Result<()> {
        let n = shape[0];
        let mut tensors = vec![
            (FEATURES, Tensor::from_f32(&shape, features)),
            (LABELS, Tensor::from_i64(&[n], labels)),
            (INDEX, Tensor::from_i64(&[n], index)),
        ];
        let (names, extra): (Vec<String>, Vec<Tensor>) = extra.into_iter().unzip();
        tensors.extend(names.iter().map(String::as_str).zip(extra));
        self.w.write_chunk(tensors)?;
        Ok(())
    }

    pub fn finish(mut self, m: &FeaturesMeta) -> Result<()> {
        if let Some(v) = &m.classes {
            self.w.set_meta(meta::CLASSES, json!(v));
        }
        if let Some(v) = m.synthetic {
            self.w.set_meta(meta::SYNTHETIC, json!(v));
        }
        self.w.set_meta(CONVENTION, json!(m.convention));
        self.w.set_meta(WEIGHTS_DIGEST, json!(m.weights_digest));
        self.w
            .set_meta(LAYOUT, json!(m.layout.as_deref().unwrap_or(LAYOUT_VALUE)));
        if m.views.iter().any(|v| v != ORIGINAL_VIEW) {
            self.w.set_meta(VIEWS, json!(m.views));
        }
        if !m.taps.is_empty() {
            self.w.set_meta(TAPS, json!(m.taps));
        }
        if let Some(b) = m.backbone {
            self.w.set_meta(BACKBONE, json!(b.name()));
        }
        self.w.finish()?;
        Ok(())
    }
}

/// One chunk of features, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureChunk {
    /// `[n, h, w, c]`.
    pub shape: Vec<usize>,
    pub features: Vec<f32>,
    pub labels: Vec<i64>,
    pub index: Vec<i64>,
}

impl FeatureChunk {
    /// Values per row (`h * w * c`).
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

/// Reads one split.
pub struct FeaturesReader<'a> {
    input: InputArtifact<'a>,
}

impl<'a> FeaturesReader<'a> {
    pub fn new(input: InputArtifact<'a>) -> Self {
        FeaturesReader { input }
    }

    /// Rows over all chunks.
    pub fn len(&self) -> usize {
        self.input.artifact.rows(FEATURES)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn classes(&self) -> Result<Vec<String>> {
        crate::classes(&self.input)
    }

    /// The class names and the synthetic flag, to carry into a derived artifact (each
    /// `None` where this one has none).
    pub fn carried_meta(&self) -> Result<(Option<Vec<String>>, Option<bool>)> {
        crate::carried_meta(&self.input)
    }

    /// The digest of the weights the features were computed with.
    pub fn weights_digest(&self) -> Option<&str> {
        self.input.meta(WEIGHTS_DIGEST).and_then(Value::as_str)
    }

    /// The input convention the features were computed with (e.g. `"caffe"`).
    pub fn convention(&self) -> Option<&str> {
        self.input.meta(CONVENTION).and_then(Value::as_str)
    }

    pub fn chunks(&self) -> usize {
        self.input.len()
    }

    /// The views the chunks hold, the original first.
    pub fn views(&self) -> Result<Vec<String>> {
        match self.input.meta(VIEWS) {
            None => Ok(vec![ORIGINAL_VIEW.to_string()]),
            Some(v) => Ok(serde_json::from_value(v.clone())?),
        }
    }

    /// The tapped layers whose summaries the chunks hold.
    pub fn taps(&self) -> Result<Vec<String>> {
        match self.input.meta(TAPS) {
            None => Ok(Vec::new()),
            Some(v) => Ok(serde_json::from_value(v.clone())?),
        }
    }

    /// The network the features came from (VGG16 when the artifact names none).
    pub fn backbone(&self) -> Result<Backbone> {
        match self.input.meta(BACKBONE) {
            None => Ok(Backbone::Vgg16),
            Some(v) => v.as_str().and_then(Backbone::from_name).ok_or_else(|| {
                format!(
                    "{}.{}: unknown backbone {v} in the metadata",
                    self.input.artifact.stage, self.input.artifact.name
                )
                .into()
            }),
        }
    }

    /// What the `features` tensor holds (`NHWC f32 pool5 ...` or a descriptor's recipe).
    pub fn layout(&self) -> Option<&str> {
        self.input.meta(LAYOUT).and_then(Value::as_str)
    }

    /// Tensor `name` of chunk `i` (see [`view_tensor`], [`tap_tensor`]): its shape and values.
    pub fn chunk_tensor(&self, i: usize, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let c = self.input.chunk(i)?;
        c.f32(name).map_err(|e| tensor_err(&self.input, e))
    }

    /// Chunk `i` as stored: its maps stay memory-mapped (for readers that take rows at
    /// random from more data than they want in memory); labels and indices are decoded.
    pub fn mapped(&self, i: usize) -> Result<MappedChunk> {
        let c = self.input.chunk(i)?;
        let err = |e| tensor_err(&self.input, e);
        let labels = c.i64(LABELS).map_err(err)?.1;
        let index = c.i64(INDEX).map_err(err)?.1;
        let (_, shape, _) = c.raw(FEATURES).map_err(err)?;
        Ok(MappedChunk {
            chunk: c,
            shape,
            labels,
            index,
            what: format!("{}.{}", self.input.artifact.stage, self.input.artifact.name),
        })
    }

    pub fn chunk(&self, i: usize) -> Result<FeatureChunk> {
        let c = self.input.chunk(i)?;
        let (shape, features) = c.f32(FEATURES).map_err(|e| tensor_err(&self.input, e))?;
        if shape.len() != 4 {
            return Err(format!(
                "{}.{} features have shape {shape:?}, expected [n, h, w, c]",
                self.input.artifact.stage, self.input.artifact.name
            )
            .into());
        }
        Ok(FeatureChunk {
            shape,
            features,
            labels: c.i64(LABELS).map_err(|e| tensor_err(&self.input, e))?.1,
            index: c.i64(INDEX).map_err(|e| tensor_err(&self.input, e))?.1,
        })
    }
}

/// One chunk of features, memory-mapped (see [`FeaturesReader::mapped`]).
pub struct MappedChunk {
    chunk: pipeline::Chunk,
    /// The original view's `[n, h, w, c]`.
    pub shape: Vec<usize>,
    pub labels: Vec<i64>,
    pub index: Vec<i64>,
    what: String,
}

impl MappedChunk {
    /// The maps of view `view` (`n x h x w x c` little-endian f32 bytes), checked to have the
    /// original view's shape and type.
    pub fn view_bytes(&self, view: &str) -> Result<&[u8]> {
        let name = view_tensor(FEATURES, view);
        let (dtype, shape, bytes) = self
            .chunk
            .raw(&name)
            .map_err(|e| format!("{}: {e}", self.what))?;
        if dtype != pipeline::Dtype::F32 || shape != self.shape {
            return Err(format!(
                "{}: tensor `{name}` is {} {shape:?}, expected f32 {:?}",
                self.what,
                dtype.name(),
                self.shape
            )
            .into());
        }
        Ok(bytes)
    }
}
