//! `vgg-extract.{training,validation,evaluation}`: f32 feature maps, channels-last.

use pipeline::{InputArtifact, OutputWriter, StageContext, Tensor};
use serde_json::{json, Value};

use crate::{meta, tensor_err, Result};

const FEATURES: &str = "features";
const LABELS: &str = "labels";
const INDEX: &str = "index";
const CONVENTION: &str = "convention";
const WEIGHTS_DIGEST: &str = "weights_digest";
const LAYOUT: &str = "layout";
const LAYOUT_VALUE: &str = "NHWC f32 pool5 (Keras flatten order)";

/// What a split's features artifact says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct FeaturesMeta {
    /// Carried over from the images (see [`crate::ImagesReader::carried_meta`]).
    pub classes: Option<Value>,
    pub synthetic: Option<Value>,
    /// The input convention, as serialised by the extractor (e.g. `"caffe"`).
    pub convention: Value,
    pub weights_digest: String,
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
        let n = shape[0];
        self.w.write_chunk(vec![
            (FEATURES, Tensor::from_f32(&shape, features)),
            (LABELS, Tensor::from_i64(&[n], labels)),
            (INDEX, Tensor::from_i64(&[n], index)),
        ])?;
        Ok(())
    }

    pub fn finish(mut self, m: &FeaturesMeta) -> Result<()> {
        if let Some(v) = &m.classes {
            self.w.set_meta(meta::CLASSES, v.clone());
        }
        if let Some(v) = &m.synthetic {
            self.w.set_meta(meta::SYNTHETIC, v.clone());
        }
        self.w.set_meta(CONVENTION, m.convention.clone());
        self.w.set_meta(WEIGHTS_DIGEST, json!(m.weights_digest));
        self.w.set_meta(LAYOUT, json!(LAYOUT_VALUE));
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

    /// The `classes` metadata as stored.
    pub fn classes_value(&self) -> Option<Value> {
        self.input.meta(meta::CLASSES).cloned()
    }

    pub fn convention(&self) -> Option<&Value> {
        self.input.meta(CONVENTION)
    }

    pub fn chunks(&self) -> usize {
        self.input.len()
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
