//! What a run knows about each stage (a leaf module): not cached, it changes from run to run.

use serde::Serialize;
use serde_json::Value;

/// One stage of the run that wrote the report folder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageProvenance {
    pub stage: String,
    pub seconds: f64,
    pub cached: bool,
    pub key: String,
    pub params: Value,
    /// Unix milliseconds (0 when unknown).
    #[serde(default)]
    pub started_ms: u64,
    #[serde(default)]
    pub finished_ms: u64,
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub cpu_seconds: f64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
}
