//! The weights in memory, their validation, and safetensors reading/writing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::digest::Digester;
use crate::error::{Error, TensorProblem};
use crate::layout::expected_tensors;

/// One float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions (weights `[out, in, 3, 3]`, biases `[out]`).
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A set of named float32 tensors plus safetensors metadata.
///
/// [`load`] and [`crate::convert_onnx`] only return sets with exactly the 26 VGG16 tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    /// Tensors by name (`features.N.weight|bias`).
    pub tensors: BTreeMap<String, Tensor>,
    /// Safetensors `__metadata__` (free-form strings).
    pub metadata: BTreeMap<String, String>,
}

impl Weights {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Weight `[out, in, 3, 3]` of the conv at `features.{index}`.
    pub fn weight(&self, index: usize) -> Option<&Tensor> {
        self.get(&format!("features.{index}.weight"))
    }

    /// Bias `[out]` of the conv at `features.{index}`.
    pub fn bias(&self, index: usize) -> Option<&Tensor> {
        self.get(&format!("features.{index}.bias"))
    }

    /// The canonical data digest ([`crate::tensor_data_digest`]) of these tensors.
    pub fn data_digest(&self) -> String {
        let mut d = Digester::new(self.tensors.len());
        for (name, t) in &self.tensors {
            d.tensor_header(name, Dtype::F32, &t.shape, t.data.len() * 4);
            d.f32_data(&t.data);
        }
        d.finish()
    }

    /// Every difference from the VGG16 layout (names, shapes, data lengths); empty when valid.
    pub fn layout_problems(&self) -> Vec<TensorProblem> {
        let mut problems = Vec::new();
        let expected = expected_tensors();
        for (name, shape) in &expected {
            match self.tensors.get(name) {
                None => problems.push(TensorProblem::Missing {
                    name: name.clone(),
                    expected: shape.clone(),
                }),
                Some(t) if &t.shape != shape => problems.push(TensorProblem::WrongShape {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: t.shape.clone(),
                }),
                Some(t) if t.data.len() != shape.iter().product::<usize>() => {
                    problems.push(TensorProblem::BadData {
                        name: name.clone(),
                        reason: format!("{} values for shape {shape:?}", t.data.len()),
                    })
                }
                Some(_) => {}
            }
        }
        for (name, t) in &self.tensors {
            if !expected.iter().any(|(n, _)| n == name) {
                problems.push(TensorProblem::Unexpected {
                    name: name.clone(),
                    dtype: "F32".into(),
                    shape: t.shape.clone(),
                });
            }
        }
        problems
    }

    /// Serializes as safetensors, with [`Weights::metadata`] as `__metadata__`.
    ///
    /// Fails if a tensor's data length does not match its shape.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, Error> {
        let bytes: Vec<(&String, &Tensor, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                (
                    name,
                    t,
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, t, b)| {
                TensorView::new(Dtype::F32, t.shape.clone(), b).map(|v| (name.as_str(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Serialize)?;
        let metadata = (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>()
        });
        safetensors::serialize(views, metadata).map_err(Error::Serialize)
    }

    /// Writes [`Weights::to_safetensors`] to `dest` atomically: a temporary file in the same
    /// folder (created if missing), fsync, rename over `dest`, then fsync of the folder.
    pub fn write_atomic(&self, dest: &Path) -> Result<(), Error> {
        write_atomic(dest, &self.to_safetensors()?)
    }
}

/// Writes `bytes` to `dest` atomically: a temporary file in the same folder (created if
/// missing), fsync, rename over `dest`, then fsync of the folder where supported.
pub(crate) fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir: PathBuf = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    fs::create_dir_all(&dir).map_err(werr(&dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".vgg16-weights-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(werr(&dir))?;
    tmp.write_all(bytes).map_err(werr(tmp.path()))?;
    tmp.as_file().sync_all().map_err(werr(tmp.path()))?;
    tmp.persist(dest).map_err(|e| Error::Write {
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    #[cfg(unix)]
    {
        // Make the rename itself durable.
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(werr(&dir))?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks the names, dtypes and shapes of a parsed safetensors buffer against VGG16.
fn check(st: &SafeTensors<'_>, what: &str) -> Result<(), Error> {
    let expected = expected_tensors();
    let mut problems = Vec::new();
    for (name, shape) in &expected {
        match st.tensor(name) {
            Err(_) => problems.push(TensorProblem::Missing {
                name: name.clone(),
                expected: shape.clone(),
            }),
            Ok(v) if v.dtype() != Dtype::F32 => problems.push(TensorProblem::WrongDtype {
                name: name.clone(),
                found: v.dtype().to_string(),
                shape: v.shape().to_vec(),
            }),
            Ok(v) if v.shape() != shape.as_slice() => problems.push(TensorProblem::WrongShape {
                name: name.clone(),
                expected: shape.clone(),
                found: v.shape().to_vec(),
            }),
            Ok(v) => {
                let mut bad = v
                    .data()
                    .chunks_exact(4)
                    .enumerate()
                    .filter(|(_, b)| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
                if let Some((first, _)) = bad.next() {
                    problems.push(TensorProblem::NonFinite {
                        name: name.clone(),
                        count: 1 + bad.count(),
                        first,
                    });
                }
            }
        }
    }
    let mut extra: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !expected.iter().any(|(e, _)| e == n))
        .collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, v) in extra {
        problems.push(TensorProblem::Unexpected {
            name,
            dtype: v.dtype().to_string(),
            shape: v.shape().to_vec(),
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Layout {
            what: what.to_owned(),
            problems,
        })
    }
}

fn parse<'a>(bytes: &'a [u8], what: &str) -> Result<SafeTensors<'a>, Error> {
    let st = SafeTensors::deserialize(bytes).map_err(|source| Error::Safetensors {
        what: what.to_owned(),
        source,
    })?;
    check(&st, what)?;
    Ok(st)
}

/// Checks that `path` is a safetensors file with exactly the 26 VGG16 conv tensors, float32,
/// with their exact shapes; returns its data digest ([`crate::tensor_data_digest`]).
///
/// Every missing, unexpected, non-float32 or mis-shaped tensor is listed in one
/// [`Error::Layout`]. The digest is not required to be [`crate::VGG16_NOTOP_DATA_DIGEST`].
pub fn validate(path: &Path) -> Result<String, Error> {
    let bytes = read(path)?;
    let st = parse(&bytes, &path.display().to_string())?;
    Ok(crate::digest::tensor_data_digest(&st))
}

/// [`validate`]s `path` and returns its tensors and metadata.
pub fn load(path: &Path) -> Result<Weights, Error> {
    let bytes = read(path)?;
    load_bytes(&bytes, &path.display().to_string())
}

/// [`load`] from a buffer; `what` names it in errors.
pub fn load_bytes(bytes: &[u8], what: &str) -> Result<Weights, Error> {
    let st = parse(bytes, what)?;
    let mut weights = Weights::default();
    for (name, view) in st.tensors() {
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        weights.tensors.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    // Metadata is only read when the header parsed above, so this cannot fail here.
    if let Ok((_, meta)) = SafeTensors::read_metadata(bytes) {
        if let Some(m) = meta.metadata() {
            weights.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
    }
    Ok(weights)
}
