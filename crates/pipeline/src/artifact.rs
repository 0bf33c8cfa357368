//! Artifacts: named outputs of a stage, stored as one or more safetensors chunks.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{map_blob, Store, StoreError};
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
}

/// A named output of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub stage: String,
    pub name: String,
    /// Digest over the chunk digests and the metadata: equal digests mean equal content.
    pub digest: String,
    pub chunks: Vec<ChunkRef>,
    pub meta: BTreeMap<String, Value>,
}

impl Artifact {
    pub(crate) fn compute_digest(chunks: &[ChunkRef], meta: &BTreeMap<String, Value>) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"artifact-v1\0");
        for c in chunks {
            h.update(c.digest.as_bytes());
            h.update(b"\n");
        }
        h.update(
            crate::hash::canonical_json(&serde_json::to_value(meta).expect("meta is json"))
                .as_bytes(),
        );
        h.finalize().to_hex().to_string()
    }

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

/// Content digest of a chunk, from its parsed safetensors. Volatile header fields (the key of
/// the run that wrote it, its creation time) are excluded so that equal results have equal
/// digests; everything else in the header metadata is included.
pub(crate) fn chunk_digest(
    st: &safetensors::SafeTensors<'_>,
    meta: Option<&std::collections::HashMap<String, String>>,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"chunk-v1\0");
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    for n in names {
        let t = st.tensor(&n).expect("name listed by the file");
        h.update(n.as_bytes());
        h.update(b"\0");
        h.update(format!("{:?}", t.dtype()).as_bytes());
        h.update(format!("{:?}", t.shape()).as_bytes());
        h.update(&(t.data().len() as u64).to_le_bytes());
        h.update(t.data());
    }
    if let Some(m) = meta {
        let sorted: BTreeMap<&String, &String> = m
            .iter()
            .filter(|(k, _)| !VOLATILE_META.contains(&k.as_str()))
            .collect();
        for (k, v) in sorted {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
    }
    h.finalize().to_hex().to_string()
}

/// Header metadata that describes the run, not the content: a rerun with other params (or
/// code) that reproduces the same tensors must get the same digest, for early cutoff.
pub(crate) const VOLATILE_META: &[&str] = &["key", "created", "producer", "params"];

/// A memory-mapped chunk, checked against its digest when opened.
pub struct Chunk {
    mmap: memmap2::Mmap,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("bytes", &self.mmap.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tensor `{name}` not found in chunk")]
    NoTensor { name: String },
    #[error("tensor `{name}` is {found}, expected {expected}")]
    WrongDtype {
        name: String,
        found: String,
        expected: &'static str,
    },
}

impl Chunk {
    /// Opens and verifies a blob. A blob whose content does not match its digest is deleted
    /// and reported as [`StoreError::Corrupt`]: it is never returned.
    pub fn open(store: &Store, r: &ChunkRef) -> Result<Chunk, StoreError> {
        let path = store.blob_path(&r.digest);
        if !path.exists() {
            return Err(StoreError::Missing {
                digest: r.digest.clone(),
            });
        }
        let mmap = map_blob(&path)?;
        let corrupt = |reason: String| {
            store.remove_blob(&r.digest);
            StoreError::Corrupt {
                digest: r.digest.clone(),
                reason,
            }
        };
        let digest = match safetensors::SafeTensors::read_metadata(&mmap) {
            Ok((_, md)) => match safetensors::SafeTensors::deserialize(&mmap) {
                Ok(st) => chunk_digest(&st, md.metadata().as_ref()),
                Err(e) => return Err(corrupt(format!("unreadable safetensors: {e}"))),
            },
            Err(e) => return Err(corrupt(format!("unreadable safetensors header: {e}"))),
        };
        if digest != r.digest {
            return Err(corrupt(format!("content digest is {}", &digest[..16])));
        }
        Ok(Chunk { mmap })
    }

    /// Opens a blob file without a digest to compare with (inspection tools).
    pub fn open_unverified(path: &Path) -> Result<Chunk, StoreError> {
        Ok(Chunk {
            mmap: map_blob(path)?,
        })
    }

    pub fn tensors(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.mmap).expect("verified when opened")
    }

    pub fn header_metadata(&self) -> BTreeMap<String, String> {
        safetensors::SafeTensors::read_metadata(&self.mmap)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }

    pub fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8]), ReadError> {
        let st = self.tensors();
        let t = st.tensor(name).map_err(|_| ReadError::NoTensor {
            name: name.to_string(),
        })?;
        let dtype = Dtype::from_st(t.dtype()).ok_or_else(|| ReadError::WrongDtype {
            name: name.into(),
            found: format!("{:?}", t.dtype()),
            expected: "a supported dtype",
        })?;
        let shape = t.shape().to_vec();
        // Re-borrow the bytes from the mmap itself so they outlive the parsed header.
        let data = t.data();
        let off = data.as_ptr() as usize - self.mmap.as_ptr() as usize;
        Ok((dtype, shape, &self.mmap[off..off + data.len()]))
    }

    fn typed<T: bytemuck::Pod>(
        &self,
        name: &str,
        want: Dtype,
    ) -> Result<(Vec<usize>, Vec<T>), ReadError> {
        let (dtype, shape, bytes) = self.raw(name)?;
        if dtype != want {
            return Err(ReadError::WrongDtype {
                name: name.into(),
                found: dtype.name().into(),
                expected: want.name(),
            });
        }
        // Little-endian targets only (x86-64, aarch64): the bytes are the values.
        let mut out = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
        Ok((shape, out))
    }

    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ReadError> {
        self.typed(name, Dtype::F32)
    }
    pub fn f64(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>), ReadError> {
        self.typed(name, Dtype::F64)
    }
    pub fn i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>), ReadError> {
        self.typed(name, Dtype::I64)
    }
    pub fn u32(&self, name: &str) -> Result<(Vec<usize>, Vec<u32>), ReadError> {
        self.typed(name, Dtype::U32)
    }
    /// Zero-copy view of a U8 tensor.
    pub fn u8(&self, name: &str) -> Result<(Vec<usize>, &[u8]), ReadError> {
        let (dtype, shape, bytes) = self.raw(name)?;
        if dtype != Dtype::U8 {
            return Err(ReadError::WrongDtype {
                name: name.into(),
                found: dtype.name().into(),
                expected: "U8",
            });
        }
        Ok((shape, bytes))
    }
    /// A string stored with [`crate::Tensor::from_text`].
    pub fn string(&self, name: &str) -> Result<String, ReadError> {
        let (_, b) = self.u8(name)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
}

/// An upstream artifact as a stage sees it.
#[derive(Debug, Clone, Copy)]
pub struct InputArtifact<'a> {
    pub artifact: &'a Artifact,
    pub(crate) store: &'a Store,
}

impl<'a> InputArtifact<'a> {
    pub fn len(&self) -> usize {
        self.artifact.chunks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.artifact.chunks.is_empty()
    }
    /// Maps chunk `i`. The runner verified every input chunk against its digest just before
    /// the stage started, and blobs are immutable, so this does not hash again.
    pub fn chunk(&self, i: usize) -> Result<Chunk, StoreError> {
        let r = &self.artifact.chunks[i];
        let path = self.store.blob_path(&r.digest);
        if !path.exists() {
            return Err(StoreError::Missing {
                digest: r.digest.clone(),
            });
        }
        Chunk::open_unverified(&path)
    }
    pub fn meta(&self, key: &str) -> Option<&'a Value> {
        self.artifact.meta.get(key)
    }
    pub fn digest(&self) -> &'a str {
        &self.artifact.digest
    }
}
