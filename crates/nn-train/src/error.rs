/// Errors of training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Inputs that do not fit together (lengths, shapes, labels, parameters).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A weight set lacks a tensor or has one of the wrong shape.
    #[error("weights: {0}")]
    Weights(String),
    /// Training produced a non-finite loss or weights.
    #[error("training diverged at epoch {epoch}, batch {batch}: {what} is {value} (not finite); the learning rate ({learning_rate:e}) is likely too high, or the inputs hold huge values")]
    Diverged {
        epoch: usize,
        /// 0 when found after the epoch (validation or weights).
        batch: usize,
        what: String,
        value: f64,
        learning_rate: f64,
    },
    /// An error of the tensor library.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result of this crate and of the stages built on it.
pub type Result<T, E = Error> = std::result::Result<T, E>;
