//! Fine-tuning, the study's second way of transfer learning, made cheap by the build graph.
//!
//! The layers below the first trainable convolution never change while VGG16's top block is
//! fine-tuned, so their output is computed once by the [`VggActivations`] stage (the full maps
//! of `pool4`, `conv5_1` or `conv5_2`, per view) and stored as an artifact; the [`Finetune`]
//! stage then trains only the convolutions above it and a small head, every epoch (and every
//! retry with other hyperparameters) starting from the stored maps.
//!
//! [`VggActivations`]: vgg_activations::VggActivations
//!
//! The trainable convolutions run by Winograd F(4x4, 3x3) on `vgg-extract`'s tile transforms
//! and packed GEMM micro-kernels ([`conv`]): forward pass, input gradient and kernel gradient
//! each 36 products, every value summed in one order on AVX-512, AVX2 and portable code,
//! whatever the thread count.

pub mod conv;
mod data;
pub mod model;
mod predictor;
mod stage;

pub use model::{Grads, Head, Pooling, TopNet};
pub use predictor::FinetunePredictor;
pub use stage::{pretrained_layers, Finetune, Params, Schedule, TrainOn, CACHE_VERSION};
pub use vgg_activations::{layer_of_layout, read_vgg16};
