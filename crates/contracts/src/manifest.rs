//! `loader.manifest`: the labelled files of every split, and what was skipped.

use std::collections::BTreeMap;

use pipeline::{Chunk, InputArtifact, StageContext, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::outputs::{MANIFEST, SPLITS};
use crate::{meta, tensor_err, Result};

const MANIFEST_JSON: &str = "manifest_json";
const SYNTHETIC_OFFSETS: &str = "synthetic.offsets";
const SYNTHETIC_BYTES: &str = "synthetic.bytes";
const CLASS_COUNTS: &str = "class_counts";
const LAYOUT: &str = "layout";
const DATASET: &str = "dataset";
const LEAKAGE: &str = "leakage";
const ON_BAD_FILE: &str = "on_bad_file";

/// One usable file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the dataset root with `/` separators (or `synthetic/...`).
    pub path: String,
    pub label: usize,
    /// blake3 of the file's bytes.
    pub digest: String,
}

/// A file that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub layout: String,
    pub synthetic: bool,
    pub classes: Vec<String>,
    /// Split name -> entries, sorted by path.
    pub splits: BTreeMap<String, Vec<Entry>>,
    pub skipped: Vec<Skipped>,
    /// Groups of files with identical content found in more than one split.
    pub leakage: Vec<Vec<String>>,
}

impl Manifest {
    /// Per split, the number of files of each class.
    pub fn class_counts(&self) -> BTreeMap<String, Vec<usize>> {
        self.splits
            .iter()
            .map(|(s, es)| {
                let mut c = vec![0; self.classes.len()];
                for e in es {
                    c[e.label] += 1;
                }
                (s.clone(), c)
            })
            .collect()
    }
}

/// What the loader writes: the manifest, the dataset's name (never its path) and, for the
/// synthetic set, the embedded files (in training, validation, evaluation order).
pub struct ManifestArtifact<'a> {
    /// Taken (and freed once written: at a million files it is hundreds of megabytes).
    pub manifest: Manifest,
    pub dataset: &'a str,
    pub synthetic_files: &'a [Vec<u8>],
    /// The user asked to stop at the first bad file, whichever stage finds it (the loader's
    /// `on_bad_file = "error"`): carried to the stages that decode the files. Stored only
    /// when set, so a manifest of the default (skip) reads as before.
    pub stop_on_bad_file: bool,
}

impl ManifestArtifact<'_> {
    pub fn write(self, ctx: &StageContext<'_>) -> Result<()> {
        let m = self.manifest;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for s in SPLITS {
            let labels: Vec<i64> = m.splits[s].iter().map(|e| e.label as i64).collect();
            tensors.push((
                format!("{s}.labels"),
                Tensor::from_i64(&[labels.len()], &labels),
            ));
        }
        if m.synthetic {
            let mut offsets = vec![0i64];
            let mut all = Vec::new();
            for f in self.synthetic_files {
                all.extend_from_slice(f);
                offsets.push(all.len() as i64);
            }
            tensors.push((
                SYNTHETIC_OFFSETS.into(),
                Tensor::from_i64(&[offsets.len()], &offsets),
            ));
            tensors.push((SYNTHETIC_BYTES.into(), Tensor::from_u8(&[all.len()], all)));
        }
        let mut w = ctx.output(MANIFEST)?;
        w.set_meta(meta::CLASSES, json!(m.classes));
        w.set_meta(CLASS_COUNTS, json!(m.class_counts()));
        w.set_meta(LAYOUT, json!(m.layout));
        w.set_meta(DATASET, json!(self.dataset));
        w.set_meta(meta::SYNTHETIC, json!(m.synthetic));
        w.set_meta(meta::SKIPPED, json!(m.skipped));
        w.set_meta(LEAKAGE, json!(m.leakage));
        // The manifest's JSON goes straight to disk (at a million files it is a text of over
        // a hundred megabytes), and the manifest is freed before the chunk is assembled.
        let (names, tensors): (Vec<String>, Vec<Tensor>) = tensors.into_iter().unzip();
        w.write_chunk_with_text(
            names.iter().map(String::as_str).zip(tensors).collect(),
            MANIFEST_JSON,
            move |out| {
                serde_json::to_writer(out, &m)?;
                drop(m);
                pipeline::release_freed_memory();
                Ok(())
            },
        )?;
        if self.stop_on_bad_file {
            w.set_meta(ON_BAD_FILE, json!("error"));
        }
        w.finish()?;
        Ok(())
    }
}

/// The manifest as a downstream stage reads it.
pub struct ManifestReader {
    chunk: Chunk,
    pub manifest: Manifest,
    offsets: Option<Vec<i64>>,
    /// See [`ManifestArtifact::stop_on_bad_file`].
    pub stop_on_bad_file: bool,
}

impl ManifestReader {
    pub fn open(input: &InputArtifact<'_>) -> Result<ManifestReader> {
        let chunk = input.chunk(0)?;
        let text = chunk
            .string(MANIFEST_JSON)
            .map_err(|e| tensor_err(input, e))?;
        let manifest: Manifest = serde_json::from_str(&text)?;
        let offsets = if manifest.synthetic {
            Some(
                chunk
                    .i64(SYNTHETIC_OFFSETS)
                    .map_err(|e| tensor_err(input, e))?
                    .1,
            )
        } else {
            None
        };
        Ok(ManifestReader {
            chunk,
            manifest,
            offsets,
            stop_on_bad_file: input.meta(ON_BAD_FILE).and_then(Value::as_str) == Some("error"),
        })
    }

    /// The embedded bytes of synthetic file `i` (in training, validation, evaluation order).
    pub fn synthetic_file(&self, i: usize) -> Result<&[u8]> {
        let off = self
            .offsets
            .as_ref()
            .ok_or("the manifest embeds no synthetic files")?;
        let (_, bytes) = self.chunk.u8(SYNTHETIC_BYTES)?;
        let (a, b) = (
            *off.get(i).ok_or("synthetic file index out of range")? as usize,
            *off.get(i + 1).ok_or("synthetic file index out of range")? as usize,
        );
        Ok(&bytes[a..b])
    }
}

/// The manifest's metadata (what the report shows without opening the chunk).
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestMeta {
    pub classes: Vec<String>,
    pub synthetic: bool,
    pub dataset: String,
    pub layout: String,
    /// Split -> images per class.
    pub class_counts: BTreeMap<String, Vec<usize>>,
    pub skipped: Vec<Skipped>,
    /// Groups of identical files in more than one split.
    pub leakage: Vec<Vec<String>>,
}

impl ManifestMeta {
    pub fn read(input: &InputArtifact<'_>) -> Result<ManifestMeta> {
        let s = |k: &str| {
            input
                .meta(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Ok(ManifestMeta {
            classes: crate::classes(input)?,
            synthetic: input
                .meta(meta::SYNTHETIC)
                .and_then(Value::as_bool)
                .unwrap_or(false),
            dataset: s(DATASET),
            layout: s(LAYOUT),
            class_counts: input
                .meta(CLASS_COUNTS)
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()?
                .unwrap_or_default(),
            skipped: input
                .meta(meta::SKIPPED)
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()?
                .unwrap_or_default(),
            leakage: input
                .meta(LEAKAGE)
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}
