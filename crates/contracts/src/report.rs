//! `report.report`: the report's files (HTML, figures, JSON), stored as one artifact.

use std::collections::BTreeMap;

use pipeline::{InputArtifact, StageContext, Tensor};
use serde::{Deserialize, Serialize};

use crate::outputs::REPORT;
use crate::{tensor_err, Result};

const FILE_PREFIX: &str = "file:";
const MODELS: &str = "models";

/// One model's line in the report's summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub model: String,
    /// Test accuracy of the seed the figures show.
    pub test_accuracy: f64,
    /// Mean test accuracy over the seeds (the same value without a sweep).
    pub mean: f64,
}

/// The report folder's files by name, and a summary of the models.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportBundle {
    pub files: BTreeMap<String, Vec<u8>>,
    pub models: Vec<ModelSummary>,
}

impl ReportBundle {
    pub fn write(&self, ctx: &StageContext<'_>) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .files
            .iter()
            .map(|(k, v)| {
                (
                    format!("{FILE_PREFIX}{k}"),
                    Tensor::from_u8(&[v.len()], v.clone()),
                )
            })
            .collect();
        let mut w = ctx.output(REPORT)?;
        w.write_chunk(
            tensors
                .iter()
                .map(|(k, t)| (k.as_str(), t.clone()))
                .collect(),
        )?;
        w.set_meta(MODELS, serde_json::to_value(&self.models)?);
        w.finish()?;
        Ok(())
    }

    pub fn read(input: &InputArtifact<'_>) -> Result<ReportBundle> {
        let c = input.chunk(0)?;
        let mut files = BTreeMap::new();
        for t in &input.artifact.chunks[0].tensors {
            if let Some(name) = t.name.strip_prefix(FILE_PREFIX) {
                let (_, bytes) = c.u8(&t.name).map_err(|e| tensor_err(input, e))?;
                files.insert(name.to_string(), bytes.to_vec());
            }
        }
        Ok(ReportBundle {
            files,
            models: input
                .meta(MODELS)
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}
