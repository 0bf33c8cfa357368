//! What a running stage sees: its params, inputs, settings, progress, and output writers.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::artifact::{chunk_digest, Artifact, ChunkRef, InputArtifact, TensorInfo};
use crate::progress::Progress;
use crate::stage::BoxError;
use crate::store::{io_err, Store};
use crate::tensor::Tensor;

/// The context of one stage execution.
pub struct StageContext<'a> {
    pub(crate) stage: String,
    pub(crate) key: String,
    pub(crate) params: Value,
    pub(crate) seed: u64,
    pub(crate) device: String,
    pub(crate) threads: usize,
    pub(crate) settings: BTreeMap<String, Option<PathBuf>>,
    pub(crate) inputs: BTreeMap<String, Artifact>,
    pub(crate) declared_outputs: Vec<String>,
    pub(crate) store: &'a Store,
    pub(crate) progress: &'a Progress,
    pub(crate) outputs: Mutex<BTreeMap<String, Artifact>>,
}

impl<'a> StageContext<'a> {
    pub fn stage(&self) -> &str {
        &self.stage
    }
    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn device(&self) -> &str {
        &self.device
    }
    pub fn threads(&self) -> usize {
        self.threads
    }
    pub fn progress(&self) -> &Progress {
        self.progress
    }

    /// The resolved params as JSON (defaults applied).
    pub fn params_json(&self) -> &Value {
        &self.params
    }

    /// The resolved params as the stage's own type.
    pub fn params<P: DeserializeOwned>(&self) -> Result<P, BoxError> {
        Ok(serde_json::from_value(self.params.clone())?)
    }

    /// A path setting the stage declared as an external input (e.g. `dataset.root`), resolved
    /// against the pipeline file's folder; `None` when the setting is empty.
    pub fn setting(&self, name: &str) -> Result<Option<&Path>, BoxError> {
        match self.settings.get(name) {
            Some(p) => Ok(p.as_deref()),
            None => Err(format!(
                "stage `{}` reads setting `{name}` but does not declare it in `inputs`",
                self.stage
            )
            .into()),
        }
    }

    /// Output `output` of upstream stage `stage`.
    pub fn input(&self, stage: &str, output: &str) -> Result<InputArtifact<'_>, BoxError> {
        let k = format!("{stage}.{output}");
        match self.inputs.get(&k) {
            Some(a) => Ok(InputArtifact { artifact: a, store: self.store }),
            None => Err(format!(
                "stage `{}` reads `{k}`, which is not among its inputs ({}); add `{stage}` to its `needs`",
                self.stage,
                self.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            )
            .into()),
        }
    }

    /// Whether the stage has the upstream output `stage.output` among its inputs.
    pub fn has_input(&self, stage: &str, output: &str) -> bool {
        self.inputs.contains_key(&format!("{stage}.{output}"))
    }

    /// Starts writing the declared output `name`.
    pub fn output(&self, name: &str) -> Result<OutputWriter<'_>, BoxError> {
        if !self.declared_outputs.iter().any(|o| o == name) {
            return Err(format!("stage `{}` has no declared output `{name}`", self.stage).into());
        }
        Ok(OutputWriter {
            ctx: self,
            name: name.to_string(),
            chunks: Vec::new(),
            meta: BTreeMap::new(),
        })
    }

    /// Convenience: an output of one chunk.
    pub fn write_single(
        &self,
        name: &str,
        tensors: Vec<(&str, Tensor)>,
        meta: BTreeMap<String, Value>,
    ) -> Result<Artifact, BoxError> {
        let mut w = self.output(name)?;
        w.write_chunk(tensors)?;
        for (k, v) in meta {
            w.set_meta(&k, v);
        }
        w.finish()
    }
}

/// Writes the chunks of one output. Each chunk goes to a temp file, is fsynced and renamed to
/// its content digest; the artifact exists for the runner only after [`OutputWriter::finish`].
pub struct OutputWriter<'c> {
    ctx: &'c StageContext<'c>,
    name: String,
    chunks: Vec<ChunkRef>,
    meta: BTreeMap<String, Value>,
}

impl OutputWriter<'_> {
    /// Writes one chunk of named tensors; returns its content digest.
    pub fn write_chunk(&mut self, tensors: Vec<(&str, Tensor)>) -> Result<String, BoxError> {
        let ctx = self.ctx;
        let mut header: HashMap<String, String> = HashMap::new();
        header.insert("stage".into(), ctx.stage.clone());
        header.insert("output".into(), self.name.clone());
        header.insert("params".into(), crate::hash::canonical_json(&ctx.params));
        header.insert("key".into(), ctx.key.clone());
        header.insert(
            "producer".into(),
            format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        );
        header.insert("created".into(), now_rfc3339());
        let infos: Vec<TensorInfo> = tensors
            .iter()
            .map(|(n, t)| TensorInfo {
                name: n.to_string(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            })
            .collect();
        let views: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        let bytes = safetensors::serialize(views, Some(header.clone()))
            .map_err(|e| format!("serialising output `{}`: {e}", self.name))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("re-reading chunk: {e}"))?;
        let digest = chunk_digest(&st, Some(&header));
        let tmp = ctx.store.tmp_dir().join(format!(
            "{}-{}-{}.part",
            ctx.stage,
            self.name,
            self.chunks.len()
        ));
        write_synced(&tmp, &bytes).map_err(io_err(&tmp))?;
        ctx.store.commit_blob(&tmp, &digest)?;
        self.chunks.push(ChunkRef {
            digest: digest.clone(),
            bytes: bytes.len() as u64,
            tensors: infos,
        });
        Ok(digest)
    }

    /// Artifact-level metadata (part of the artifact digest; stored in the run record).
    pub fn set_meta(&mut self, key: &str, value: Value) {
        self.meta.insert(key.to_string(), value);
    }

    pub fn chunks_written(&self) -> usize {
        self.chunks.len()
    }

    /// Completes the output. Only finished outputs count; a stage that returns without
    /// finishing a declared output fails.
    pub fn finish(self) -> Result<Artifact, BoxError> {
        let digest = Artifact::compute_digest(&self.chunks, &self.meta);
        let a = Artifact {
            stage: self.ctx.stage.clone(),
            name: self.name.clone(),
            digest,
            chunks: self.chunks,
            meta: self.meta,
        };
        let mut outs = self
            .ctx
            .outputs
            .lock()
            .map_err(|_| "output registry poisoned")?;
        if outs.contains_key(&self.name) {
            return Err(format!("output `{}` was written twice", self.name).into());
        }
        outs.insert(self.name, a.clone());
        Ok(a)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_unix(secs)
}

/// `2026-11-28T12:00:00Z` from Unix seconds (civil-from-days, no time-zone database needed).
pub(crate) fn format_unix(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_unix_time() {
        assert_eq!(super::format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_unix(1_795_867_200), "2026-11-28T12:00:00Z");
    }
}
