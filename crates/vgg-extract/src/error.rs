use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The weights file could not be read.
    #[error("cannot read weights file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file.
    #[error("{origin} is not a valid safetensors file: {message}")]
    Safetensors { origin: String, message: String },
    /// The file's tensors do not match the network: every missing, unexpected, mis-shaped or
    /// non-f32 tensor is listed.
    #[error("weights in {origin} do not match the network: {}", problems.join("; "))]
    WeightsMismatch {
        origin: String,
        problems: Vec<String>,
    },
    /// The layer list is not a usable network.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// The input does not match the network or the stated shape.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A layer produced a NaN or an infinity (an overflow: weights or inputs far out of
    /// range).
    #[error("layer {layer} produced {what} for image {image} of the batch (weights or inputs far out of range?)")]
    NonFinite {
        layer: String,
        /// The image's position in the batch given to the network.
        image: usize,
        what: &'static str,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same error with a non-finite value's image moved `by` images on (its place in a
    /// larger batch).
    pub(crate) fn offset(self, by: usize) -> Error {
        match self {
            Error::NonFinite { layer, image, what } => Error::NonFinite {
                layer,
                image: image + by,
                what,
            },
            e => e,
        }
    }
}
