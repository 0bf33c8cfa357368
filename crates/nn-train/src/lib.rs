//! Training pieces shared by the study's two neural-network stages (`head-nn`, `scratch-cnn`):
//! a seeded random-number generator, Glorot-uniform initialisation, Adam with the bias
//! correction of `torch.optim.Adam` (which Keras also applies), the epoch loop with per-epoch
//! reshuffling and divergence checks, the per-epoch history, best-by-`val_loss` checkpointing,
//! softmax metrics, the settings both stages' params flatten in ([`AdamConfig`],
//! [`TrainSettings`]), and the artifacts both stages write ([`write_outputs`]).
//!
//! Everything random comes from [`Rng`], an algorithm fixed in this crate, so that the same seed
//! gives the same run on every machine and with every version of the dependencies.

mod adam;
mod error;
mod fit;
mod metrics;
mod rng;
mod stage_io;
mod weights;

pub use adam::{Adam, AdamConfig};
pub use error::{Error, Result};
pub use fit::{
    fit, BatchInfo, Callbacks, EpochRecord, Evaluate, FitConfig, Observer, Split, TrainData,
    TrainOutput, TrainSettings, Trainable,
};
pub use metrics::{softmax_metrics, Evaluation, Prediction};
pub use rng::{glorot_uniform, Rng, STREAM_DROPOUT, STREAM_INIT, STREAM_SHUFFLE};
pub use stage_io::{class_list, write_outputs, EpochProgress};
pub use weights::{NamedTensor, Weights};
