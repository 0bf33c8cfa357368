//! Artifacts: named outputs of a stage, stored as one or more safetensors chunks (a leaf
//! module of plain data; reading chunks is [`crate::chunk`]'s job).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tensor::Dtype;

/// Name, element type and shape of one tensor in a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// One stored chunk file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Content digest: tensors (names, dtypes, shapes, bytes) and the chunk's own metadata.
    pub digest: String,
    pub bytes: u64,
    pub tensors: Vec<TensorInfo>,
    /// blake3 of the stored blob's safetensors header (its length prefix and JSON), which
    /// holds what the content digest leaves out (the run's key, params, producer, creation
    /// time): with it, a changed byte anywhere in a blob is found. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// A stage's artifacts by name (its outputs), or by `stage.output` (a stage's inputs).
pub type Artifacts = BTreeMap<String, Artifact>;

/// A named output of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub stage: String,
    pub name: String,
    /// Digest over the chunk digests and the metadata: equal digests mean equal content.
    pub digest: String,
    pub chunks: Vec<ChunkRef>,
    pub meta: BTreeMap<String, Value>,
    /// Facts about the run that made the artifact (e.g. seconds per epoch): kept in the run
    /// record, never part of the digest, so that timings do not defeat early cutoff.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volatile: BTreeMap<String, Value>,
}

impl Artifact {
    /// Rows along the first axis of the tensor `name`, summed over chunks.
    pub fn rows(&self, name: &str) -> usize {
        self.chunks
            .iter()
            .filter_map(|c| c.tensors.iter().find(|t| t.name == name))
            .map(|t| t.shape.first().copied().unwrap_or(1))
            .sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.bytes).sum()
    }
}
