//! Reading stored chunks: memory-mapped, verified against their digest.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::artifact::{Artifact, ChunkRef};
use crate::digest::chunk_digest;
use crate::error::StoreError;
use crate::store::{map_blob, Store};
use crate::tensor::Dtype;

/// A memory-mapped chunk.
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

/// A tensor that a chunk lacks or holds with the wrong type.
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
        let chunk = Self::open_unverified(store, r)?;
        match chunk.check(r) {
            Ok(()) => Ok(chunk),
            Err(reason) => {
                drop(chunk);
                store.remove_blob(&r.digest);
                Err(StoreError::Corrupt {
                    digest: r.digest.clone(),
                    reason,
                })
            }
        }
    }

    /// Maps a blob without hashing it (its digest was verified earlier in this run).
    pub(crate) fn open_unverified(store: &Store, r: &ChunkRef) -> Result<Chunk, StoreError> {
        let path = store.fetch_blob(&r.digest)?;
        // SAFETY: `path` is a blob of `store`, immutable once stored (see `map_blob`).
        let mmap = unsafe { map_blob(&path) }?;
        Ok(Chunk { mmap })
    }

    /// Maps a file that nobody writes to (a verify download of this process).
    pub(crate) fn open_file(path: &std::path::Path) -> Result<Chunk, StoreError> {
        // SAFETY: the caller's file is written once and never modified while mapped.
        let mmap = unsafe { map_blob(path) }?;
        Ok(Chunk { mmap })
    }

    /// `Err(reason)` if the mapped bytes do not hash to `r`'s digest.
    pub(crate) fn check(&self, r: &ChunkRef) -> Result<(), String> {
        let digest = match safetensors::SafeTensors::read_metadata(&self.mmap) {
            Ok((_, md)) => match safetensors::SafeTensors::deserialize(&self.mmap) {
                Ok(st) => chunk_digest(&st, md.metadata().as_ref()),
                Err(e) => return Err(format!("unreadable safetensors: {e}")),
            },
            Err(e) => return Err(format!("unreadable safetensors header: {e}")),
        };
        if digest != r.digest {
            return Err(format!("content digest is {}", &digest[..16]));
        }
        if let Some(want) = &r.header {
            if crate::digest::header_digest(&self.mmap).as_ref() != Some(want) {
                return Err(
                    "its header is not the one stored (a byte of the run's key, params, producer or creation time changed)"
                        .into(),
                );
            }
        }
        Ok(())
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

/// An upstream artifact as a stage (or a tool) sees it.
#[derive(Debug, Clone, Copy)]
pub struct InputArtifact<'a> {
    pub artifact: &'a Artifact,
    pub(crate) store: &'a Store,
    /// Whether every chunk was verified in this run (then reading does not hash again).
    pub(crate) verified: bool,
}

impl<'a> InputArtifact<'a> {
    /// An artifact of `store` whose chunks are verified as they are opened.
    pub fn new(artifact: &'a Artifact, store: &'a Store) -> Self {
        InputArtifact {
            artifact,
            store,
            verified: false,
        }
    }
    pub fn len(&self) -> usize {
        self.artifact.chunks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.artifact.chunks.is_empty()
    }
    /// Maps chunk `i`. Inside a run the runner verified every input chunk against its digest
    /// just before the stage started, and blobs are immutable, so this does not hash again;
    /// outside a run the chunk is verified here.
    pub fn chunk(&self, i: usize) -> Result<Chunk, StoreError> {
        let r = &self.artifact.chunks[i];
        if self.verified {
            Chunk::open_unverified(self.store, r)
        } else {
            Chunk::open(self.store, r)
        }
    }
    pub fn meta(&self, key: &str) -> Option<&'a Value> {
        self.artifact.meta.get(key)
    }
    pub fn digest(&self) -> &'a str {
        &self.artifact.digest
    }
    /// Run-specific metadata (see [`Artifact::volatile`]).
    pub fn volatile(&self, key: &str) -> Option<&'a Value> {
        self.artifact.volatile.get(key)
    }
}
