//! What a running stage sees: its params, inputs, settings, progress, and output writers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::artifact::{Artifact, ChunkRef, TensorInfo};
use crate::chunk::InputArtifact;
use crate::digest::artifact_digest;
use crate::error::{io_err, BoxError};
use crate::progress::Progress;
use crate::shard::Shard;
use crate::store::Store;
use crate::tensor::{Dtype, Tensor};

/// The context of one stage execution.
pub struct StageContext<'a> {
    pub(crate) stage: String,
    pub(crate) key: String,
    pub(crate) params: Value,
    /// The seed, for a stage that declared `uses_seed`.
    pub(crate) seed: Option<u64>,
    pub(crate) device: String,
    pub(crate) threads: usize,
    pub(crate) settings: BTreeMap<String, Option<PathBuf>>,
    pub(crate) inputs: BTreeMap<String, Artifact>,
    pub(crate) declared_outputs: Vec<String>,
    pub(crate) store: &'a Store,
    pub(crate) progress: &'a Progress,
    pub(crate) outputs: Mutex<BTreeMap<String, Artifact>>,
    pub(crate) items: Mutex<Option<(u64, String)>>,
    /// The seeds of a sweep (`run --seeds`), in order; empty without one.
    pub(crate) sweep: Vec<u64>,
    /// The shard to compute (`run --shard I/N`), for a shardable stage.
    pub(crate) shard: Option<Shard>,
}

impl<'a> StageContext<'a> {
    pub fn stage(&self) -> &str {
        &self.stage
    }
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The seed of this execution. Only a stage that declares `Stage::uses_seed` gets one
    /// (the seed is then part of its key); any other stage asking is an error.
    pub fn seed(&self) -> Result<u64, BoxError> {
        self.seed.ok_or_else(|| {
            format!(
                "stage `{}` reads the seed but does not declare `uses_seed` (its key would not change with the seed)",
                self.stage
            )
            .into()
        })
    }
    /// The shard this execution computes (`run --shard I/N`), or `None` for all units. Only a
    /// stage that declares `Stage::shardable` is ever run with one.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }
    pub fn device(&self) -> &str {
        &self.device
    }
    /// Threads the stage was given (the size of the thread pool it runs on).
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

    /// Counts `n` processed items of `unit` (e.g. images) for the stage's throughput in the run
    /// summary and record.
    pub fn count(&self, n: u64, unit: &str) {
        if let Ok(mut items) = self.items.lock() {
            let e = items.get_or_insert_with(|| (0, unit.to_string()));
            e.0 += n;
        }
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
            Some(a) => Ok(InputArtifact {
                artifact: a,
                store: self.store,
                verified: true,
            }),
            None => Err(format!(
                "stage `{}` reads `{k}`, which is not among its inputs ({}); add `{stage}` to its `needs`",
                self.stage,
                self.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            )
            .into()),
        }
    }

    /// Every seed's `stage.output` for a stage that aggregates a seed sweep (see
    /// `Stage::aggregates_seeds`): `(seed, artifact)` in the sweep's order. Without a sweep,
    /// the one artifact, with no seed.
    pub fn input_variants(
        &self,
        stage: &str,
        output: &str,
    ) -> Result<Vec<(Option<u64>, InputArtifact<'_>)>, BoxError> {
        let prefix = format!("{stage}@");
        let suffix = format!(".{output}");
        let mut v: Vec<(usize, u64, &Artifact)> = self
            .inputs
            .iter()
            .filter_map(|(k, a)| {
                let seed = k.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
                let seed: u64 = seed.parse().ok()?;
                let pos = self.sweep.iter().position(|s| *s == seed)?;
                Some((pos, seed, a))
            })
            .collect();
        if v.is_empty() {
            return Ok(vec![(None, self.input(stage, output)?)]);
        }
        v.sort_by_key(|(pos, _, _)| *pos);
        Ok(v.into_iter()
            .map(|(_, seed, a)| {
                (
                    Some(seed),
                    InputArtifact {
                        artifact: a,
                        store: self.store,
                        verified: true,
                    },
                )
            })
            .collect())
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
            volatile: BTreeMap::new(),
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
    volatile: BTreeMap<String, Value>,
}

/// The first non-finite value of a float tensor, as (flat index, value).
fn first_non_finite(t: &Tensor) -> Option<(usize, f64)> {
    match t.dtype {
        Dtype::F32 => t
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .enumerate()
            .find(|(_, v)| !v.is_finite()),
        Dtype::F64 => t
            .data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .enumerate()
            .find(|(_, v)| !v.is_finite()),
        _ => None,
    }
}

/// A tensor of a chunk being written: an owned one, or bytes held elsewhere (a mapped file).
enum Part<'a> {
    Tensor(&'a Tensor),
    Bytes(&'a [u8], [usize; 1]),
}

impl Part<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Part::Tensor(t) => t.dtype,
            Part::Bytes(..) => Dtype::U8,
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Part::Tensor(t) => &t.shape,
            Part::Bytes(_, shape) => shape,
        }
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Tensor(t) => &t.data,
            Part::Bytes(b, _) => b,
        }
    }
}

impl safetensors::View for Part<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        Part::dtype(self).to_st()
    }
    fn shape(&self) -> &[usize] {
        Part::shape(self)
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

impl OutputWriter<'_> {
    /// Writes one chunk of named tensors; returns its content digest. A float tensor with a
    /// NaN or infinite value is refused: non-finite numbers are errors, never results.
    pub fn write_chunk(&mut self, tensors: Vec<(&str, Tensor)>) -> Result<String, BoxError> {
        self.check_finite(&tensors)?;
        let parts = tensors.iter().map(|(n, t)| (*n, Part::Tensor(t))).collect();
        self.write_parts(parts)
    }

    /// Like [`OutputWriter::write_chunk`], with one more tensor of bytes (`u8`, one
    /// dimension) named `text_name` whose content `fill` writes piece by piece: a text of
    /// hundreds of megabytes (a million-row manifest) is never held in memory. The chunk is
    /// byte for byte what `write_chunk` would store with that text as a tensor.
    pub fn write_chunk_with_text(
        &mut self,
        tensors: Vec<(&str, Tensor)>,
        text_name: &str,
        fill: impl FnOnce(&mut dyn std::io::Write) -> Result<(), BoxError>,
    ) -> Result<String, BoxError> {
        self.check_finite(&tensors)?;
        let ctx = self.ctx;
        let tmp = ctx
            .store
            .temp_file(&format!("{}-{}-text", ctx.stage, self.name));
        let mapped = (|| -> Result<memmap2::Mmap, BoxError> {
            let mut w = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&tmp).map_err(io_err(&tmp))?,
            );
            fill(&mut w)?;
            let f = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
            drop(f);
            let f = std::fs::File::open(&tmp).map_err(io_err(&tmp))?;
            // Safety: the temp file is this writer's alone and no longer written.
            Ok(unsafe { memmap2::Mmap::map(&f) }.map_err(io_err(&tmp))?)
        })();
        let _ = std::fs::remove_file(&tmp);
        let text = mapped?;
        let mut parts: Vec<(&str, Part<'_>)> =
            tensors.iter().map(|(n, t)| (*n, Part::Tensor(t))).collect();
        parts.insert(0, (text_name, Part::Bytes(&text, [text.len()])));
        self.write_parts(parts)
    }

    /// Refuses a float tensor with a NaN or infinite value.
    fn check_finite(&self, tensors: &[(&str, Tensor)]) -> Result<(), BoxError> {
        for (n, t) in tensors {
            if let Some((i, v)) = first_non_finite(t) {
                return Err(format!(
                    "output `{}` tensor `{n}` has a non-finite value ({v} at flat index {i} of shape {:?}); nothing was stored",
                    self.name, t.shape
                )
                .into());
            }
        }
        Ok(())
    }

    fn write_parts(&mut self, parts: Vec<(&str, Part<'_>)>) -> Result<String, BoxError> {
        let ctx = self.ctx;
        let mut header: HashMap<String, String> = HashMap::new();
        header.insert("stage".into(), ctx.stage.clone());
        header.insert("output".into(), self.name.clone());
        header.insert("params".into(), crate::digest::canonical_json(&ctx.params));
        header.insert("key".into(), ctx.key.clone());
        header.insert(
            "producer".into(),
            format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        );
        header.insert("created".into(), crate::clock::now_rfc3339());
        let infos: Vec<TensorInfo> = parts
            .iter()
            .map(|(n, p)| TensorInfo {
                name: n.to_string(),
                dtype: p.dtype(),
                shape: p.shape().to_vec(),
            })
            .collect();
        // The digest from the tensors themselves (what the file holds), then the chunk
        // serialised straight to the temp file: a large chunk is never held twice in memory.
        let digest = crate::digest::parts_digest(
            parts
                .iter()
                .map(|(n, p)| (*n, p.dtype().to_st(), p.shape(), p.bytes()))
                .collect(),
            Some(&header),
        );
        let tmp = ctx.store.temp_file(&format!("{}-{}", ctx.stage, self.name));
        let written = safetensors::serialize_to_file(parts, Some(header.clone()), &tmp)
            .map_err(|e| BoxError::from(format!("serialising output `{}`: {e}", self.name)))
            .and_then(|()| {
                let f = std::fs::File::open(&tmp).map_err(io_err(&tmp))?;
                Ok(f.sync_all().map_err(io_err(&tmp))?)
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let (stored, header) = ctx.store.commit_blob(&tmp, &digest)?;
        self.chunks.push(ChunkRef {
            digest: digest.clone(),
            bytes: stored,
            tensors: infos,
            header,
        });
        Ok(digest)
    }

    /// Artifact-level metadata (part of the artifact digest; stored in the run record).
    pub fn set_meta(&mut self, key: &str, value: Value) {
        self.meta.insert(key.to_string(), value);
    }

    /// Run-specific metadata (timings): stored in the run record, not part of the digest.
    pub fn set_volatile(&mut self, key: &str, value: Value) {
        self.volatile.insert(key.to_string(), value);
    }

    pub fn chunks_written(&self) -> usize {
        self.chunks.len()
    }

    /// Completes the output. Only finished outputs count; a stage that returns without
    /// finishing a declared output fails.
    pub fn finish(self) -> Result<Artifact, BoxError> {
        let digest = artifact_digest(&self.chunks, &self.meta);
        let a = Artifact {
            stage: self.ctx.stage.clone(),
            name: self.name.clone(),
            digest,
            chunks: self.chunks,
            meta: self.meta,
            volatile: self.volatile,
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
