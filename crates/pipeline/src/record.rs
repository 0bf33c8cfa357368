//! Run records: what one completed execution of a stage produced, and how.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::key::KeyInputs;

/// One completed execution of a stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub stage: String,
    pub key: String,
    pub key_inputs: KeyInputs,
    pub outputs: BTreeMap<String, Artifact>,
    pub seconds: f64,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub finished_ms: u64,
    pub threads: usize,
    pub producer: String,
    /// Resources the stage used (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What a stage's execution cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU seconds of every thread that worked for the stage.
    pub cpu_seconds: f64,
    /// Peak resident memory of the process while the stage ran, in bytes.
    pub peak_rss_bytes: u64,
    /// True when another stage ran at the same time (the peak then covers both).
    #[serde(default)]
    pub shared: bool,
    /// Items the stage processed and their unit (`5000 images`), when it counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<(u64, String)>,
}

impl Usage {
    /// Items per second of wall time, when the stage counts items.
    pub fn throughput(&self, seconds: f64) -> Option<(f64, &str)> {
        self.items
            .as_ref()
            .map(|(n, unit)| (*n as f64 / seconds.max(1e-9), unit.as_str()))
    }
}
