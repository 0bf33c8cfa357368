//! The core's error types (a leaf module: every other module may use it).

use std::fmt;
use std::path::{Path, PathBuf};

/// Errors crossing the stage boundary: each stage crate has its own error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cache {path} is locked by another run ({holder}); rerun without --no-wait to wait for it"
    )]
    Locked { path: PathBuf, holder: String },
    #[error("{}", leased_message(path, holders, *ttl_secs))]
    Leased {
        path: PathBuf,
        holders: Vec<String>,
        /// How long a lease lives without a heartbeat (a killed run's expires after this).
        ttl_secs: u64,
    },
    #[error("blob {digest} is corrupt ({reason}); it was removed and will be rebuilt")]
    Corrupt { digest: String, reason: String },
    #[error("blob {digest} is missing from the cache")]
    Missing { digest: String },
    #[error("S3 cache {url}: {message}")]
    Remote { url: String, message: String },
}

fn leased_message(path: &Path, holders: &[String], ttl_secs: u64) -> String {
    format!(
        "refused: {} run(s) hold a live lease on the cache {} ({}); gc runs only while no run is live (a lease of a killed run expires after {}s)",
        holders.len(),
        path.display(),
        holders.join("; "),
        ttl_secs
    )
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A configuration error, with the place in the file where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// An error that stops a run (or a plan) before or between stages. A stage's own failure is
/// not one: it is reported in the run's summary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A missing or unusable external input (a file or folder a stage reads).
    #[error("stage `{stage}` input `{setting}`: {message}")]
    Input {
        stage: String,
        setting: String,
        message: String,
    },
    #[error("blob {digest} of stage `{stage}` is corrupt again after a rebuild ({reason})")]
    CorruptAgain {
        stage: String,
        digest: String,
        reason: String,
    },
    #[error("{0}")]
    Other(String),
}
