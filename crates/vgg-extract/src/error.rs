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
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
