//! VGG16's convolutional stack on the CPU, for pool5 feature extraction.
//!
//! [`ConvStack`] runs any VGG-style list of 3x3 stride-1 pad-1 convolutions (each followed by
//! ReLU) and 2x2 stride-2 max-pools ([`LayerSpec`]); [`VGG16`] is the 13-convolution,
//! 5-pool configuration whose weights (PyTorch layout, torchvision `features.{i}` names) load
//! with [`ConvStack::vgg16_from_safetensors`]. Inputs and outputs are channels-last (`NHWC`)
//! `f32`; a 224 x 224 image gives a `7 x 7 x 512` pool5 map. [`InputConvention`] turns RGB
//! pixels into that input exactly as the Python reference (Keras `caffe` preprocessing) does;
//! the `preprocess` stage has already resized them as Pillow does.
//!
//! # Design
//! - **Channels-last throughout**: every 3x3 convolution becomes matrix products whose inner
//!   dimension is the channel axis, contiguous in memory, with no layout shuffles between
//!   layers.
//! - **Winograd minimal filtering** for every layer with more than three input channels:
//!   `a²` GEMMs of `tiles x C_in` by `C_in x C_out` replace a `9 C_in`-deep direct
//!   convolution. F(4x4, 3x3) (4x fewer multiplications) where its transformed weights stay
//!   cache-sized (VGG16's layers up to 256 -> 256 channels), F(2x2, 3x3) (2.25x) for the
//!   512-output layers, whose F4 weights (19-38 MB) would stream from memory for every block of
//!   tiles. Accuracy, measured on the real weights and photos against PyTorch: pool5 within
//!   about `2e-6` of the output's scale (F2 alone: `5e-7`; F4 everywhere: `4e-6`).
//! - **Packed GEMM with register-blocked micro-kernels** (AVX-512 `12 x 32`, AVX2+FMA
//!   `6 x 16`, portable fallback), chosen at run time. Weights are transformed and packed once,
//!   at load; activations are never packed (the micro-kernel broadcasts from rows of the
//!   transformed input).
//! - **Fused epilogues**: bias, ReLU and, when a pool follows, the 2x2 max-pool are applied
//!   in the Winograd output transform (an output tile holds whole pooling windows), so the
//!   unpooled activation is never written.
//! - **Bounded memory**: layers are cut into units of (tile block, output-channel range) run
//!   in parallel with rayon, each with per-thread scratch of about a megabyte; images go
//!   through the stack a few at a time, so memory does not grow with the batch.
//! - The first layer (three input channels) runs as an im2col GEMM over bands of rows.
//! - **Reproducible**: every output is summed in the same order whatever the batch size, the
//!   way a batch is cut, the thread count or the x86 instruction set (AVX2 and AVX-512 give
//!   bit-identical features; only the portable fallback, without FMA, rounds differently).

mod error;
mod finite;
mod gemm;
mod im2col;
mod input;
mod net;
mod stage;
mod views;
mod winograd;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};

/// The packed GEMM and its instruction-set dispatch, for the other backbone
/// (`lite0-extract`'s 1x1 convolutions), and the Winograd F(4x4, 3x3) tile transforms, for
/// `finetune`'s training convolutions.
pub mod kernels {
    pub use crate::gemm::{gemm, microkernel, pack_b, AlignedBuf, Isa, Job};
    pub use crate::winograd::{Lanes, Tile as WinogradTile, F4 as WinogradF4};
}
pub(crate) use finite::{nan_max, nan_relu};
pub use input::InputConvention;
pub use net::{layer_names, ConvStack, ConvWeights, LayerSpec, TapSummary, TensorSpec, VGG16};
pub use stage::{
    check_gathered_features, extract, provide_weights, run_extraction, Extracted, FetchWeights,
    Network, Params, VggExtract, Weights, WeightsSource, CACHE_VERSION, DEFAULT_WEIGHTS_PATH,
};
pub use views::{crop_rgb, crop_side, flip_rgb, resize_rgb, CropAt, View};
