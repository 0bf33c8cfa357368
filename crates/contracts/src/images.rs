//! `preprocess.{training,validation,evaluation}`: u8 RGB images, channels-last, in chunks.

use std::collections::BTreeMap;

use pipeline::{Chunk, InputArtifact, OutputWriter, StageContext, Tensor};
use serde_json::{json, Value};

use crate::manifest::Skipped;
use crate::{meta, tensor_err, Result};

const IMAGES: &str = "images";
const LABELS: &str = "labels";
const INDEX: &str = "index";
const COUNT: &str = "count";
const LAYOUT: &str = "layout";
const LAYOUT_VALUE: &str = "NHWC u8 RGB";

/// What a split's images artifact says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagesMeta {
    pub classes: Vec<String>,
    pub count: usize,
    pub skipped: Vec<Skipped>,
    pub synthetic: bool,
}

impl ImagesMeta {
    /// The artifact metadata this writes (what [`ImagesWriter::finish`] stores).
    pub fn to_meta(&self) -> BTreeMap<String, Value> {
        BTreeMap::from([
            (meta::CLASSES.to_string(), json!(self.classes)),
            (COUNT.to_string(), json!(self.count)),
            (meta::SKIPPED.to_string(), json!(self.skipped)),
            (meta::SYNTHETIC.to_string(), json!(self.synthetic)),
            (LAYOUT.to_string(), json!(LAYOUT_VALUE)),
        ])
    }

    /// Reads it back from an images artifact's metadata (e.g. of one shard, to gather them).
    pub fn from_meta(m: &BTreeMap<String, Value>) -> std::result::Result<ImagesMeta, String> {
        fn field<T: serde::de::DeserializeOwned>(
            m: &BTreeMap<String, Value>,
            k: &str,
        ) -> std::result::Result<T, String> {
            let v = m
                .get(k)
                .ok_or_else(|| format!("images metadata has no `{k}`"))?;
            serde_json::from_value(v.clone()).map_err(|e| format!("images metadata `{k}`: {e}"))
        }
        if m.get(LAYOUT) != Some(&json!(LAYOUT_VALUE)) {
            return Err(format!(
                "images metadata: `{LAYOUT}` is not `{LAYOUT_VALUE}`"
            ));
        }
        Ok(ImagesMeta {
            classes: field(m, meta::CLASSES)?,
            count: field(m, COUNT)?,
            skipped: field(m, meta::SKIPPED)?,
            synthetic: field(m, meta::SYNTHETIC)?,
        })
    }
}

/// Writes one split, chunk by chunk.
pub struct ImagesWriter<'c> {
    w: OutputWriter<'c>,
}

impl<'c> ImagesWriter<'c> {
    pub fn new(ctx: &'c StageContext<'c>, split: &str) -> Result<Self> {
        Ok(ImagesWriter {
            w: ctx.output(split)?,
        })
    }

    /// `images` holds `labels.len()` images of `height x width x 3`; `index` gives each one's
    /// position in the manifest's split.
    pub fn write_chunk(
        &mut self,
        images: Vec<u8>,
        height: usize,
        width: usize,
        labels: &[i64],
        index: &[i64],
    ) -> Result<()> {
        let n = labels.len();
        self.w.write_chunk(vec![
            (IMAGES, Tensor::from_u8(&[n, height, width, 3], images)),
            (LABELS, Tensor::from_i64(&[n], labels)),
            (INDEX, Tensor::from_i64(&[n], index)),
        ])?;
        Ok(())
    }

    pub fn finish(mut self, m: &ImagesMeta) -> Result<()> {
        for (k, v) in m.to_meta() {
            self.w.set_meta(&k, v);
        }
        self.w.finish()?;
        Ok(())
    }
}

/// Reads one split.
pub struct ImagesReader<'a> {
    input: InputArtifact<'a>,
}

impl<'a> ImagesReader<'a> {
    pub fn new(input: InputArtifact<'a>) -> Self {
        ImagesReader { input }
    }

    pub fn input(&self) -> &InputArtifact<'a> {
        &self.input
    }

    /// Images over all chunks.
    pub fn len(&self) -> usize {
        self.input.artifact.rows(IMAGES)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn chunks(&self) -> usize {
        self.input.len()
    }

    /// Images in chunk `i`, from the artifact's description (the chunk is not read).
    pub fn chunk_rows(&self, i: usize) -> usize {
        self.input
            .artifact
            .chunks
            .get(i)
            .and_then(|c| c.tensors.iter().find(|t| t.name == IMAGES))
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(0)
    }

    pub fn chunk(&self, i: usize) -> Result<ImagesChunk> {
        let chunk = self.input.chunk(i)?;
        let (shape, _) = chunk.u8(IMAGES).map_err(|e| tensor_err(&self.input, e))?;
        let [n, h, w, 3] = shape[..] else {
            return Err(format!(
                "{}.{} images have shape {shape:?}, expected [n, h, w, 3]",
                self.input.artifact.stage, self.input.artifact.name
            )
            .into());
        };
        Ok(ImagesChunk {
            chunk,
            n,
            height: h,
            width: w,
        })
    }

    pub fn classes(&self) -> Result<Vec<String>> {
        crate::classes(&self.input)
    }

    /// Files this split skipped.
    pub fn skipped(&self) -> Result<Vec<Skipped>> {
        Ok(self
            .input
            .meta(meta::SKIPPED)
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()?
            .unwrap_or_default())
    }

    /// The metadata values that downstream artifacts carry on (`classes`, `synthetic`).
    pub fn carried_meta(&self) -> Result<(Option<Vec<String>>, Option<bool>)> {
        crate::carried_meta(&self.input)
    }
}

/// One mapped chunk of images.
pub struct ImagesChunk {
    chunk: Chunk,
    pub n: usize,
    pub height: usize,
    pub width: usize,
}

impl ImagesChunk {
    /// The pixels, zero-copy: `n x height x width x 3` bytes.
    pub fn images(&self) -> &[u8] {
        self.chunk.u8(IMAGES).expect("checked when opened").1
    }
    pub fn labels(&self) -> Result<Vec<i64>> {
        Ok(self.chunk.i64(LABELS)?.1)
    }
    pub fn index(&self) -> Result<Vec<i64>> {
        Ok(self.chunk.i64(INDEX)?.1)
    }
}
