//! The `preprocess` stage adapter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use contracts::{ids, Entry, ImagesMeta, ImagesWriter, ManifestReader, Skipped, SPLITS};
use pipeline::{Artifacts, BoxError, Checked, InputArtifact, Stage, StageContext, Store, Validate};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decode::decode_rgb;
use crate::resize::{resize_antialias, resize_center_crop, resize_nearest_pillow, Fit};

pub const CACHE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Keras `load_img(target_size=...)`: Pillow nearest-neighbour, aspect not kept.
    Keras,
    /// Lanczos3 with `fit`.
    Antialias,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadFile {
    Skip,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub resize: ResizeMode,
    /// Only for `resize = "antialias"`.
    pub fit: Fit,
    pub size: usize,
    /// With `fit = "center-crop"`: the short side the image is scaled to before the centred
    /// `size x size` crop (e.g. 256 for a 224 crop); 0: `size` (the largest centred square).
    pub short_side: usize,
    pub exif_orientation: bool,
    /// Images with more pixels are skipped before decoding.
    pub max_pixels: u64,
    /// Images per stored chunk (and per unit of parallel work).
    pub chunk_size: usize,
    pub on_bad_file: OnBadFile,
}

impl Params {
    /// The params a cached run of this stage used (from its run record).
    pub fn from_record(rec: &pipeline::RunRecord) -> contracts::Result<Params> {
        contracts::predictor::record_params(rec, contracts::ids::PREPROCESS)
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            resize: ResizeMode::Keras,
            fit: Fit::Squash,
            size: 224,
            short_side: 0,
            exif_orientation: false,
            max_pixels: 50_000_000,
            chunk_size: 128,
            on_bad_file: OnBadFile::Skip,
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        if !(8..=2048).contains(&self.size) {
            return Err(format!(
                "size must be between 8 and 2048, not {}",
                self.size
            ));
        }
        if self.chunk_size == 0 || self.chunk_size > 4096 {
            return Err("chunk_size must be between 1 and 4096".into());
        }
        if self.max_pixels == 0 {
            return Err("max_pixels must be positive".into());
        }
        if self.short_side != 0
            && (self.fit != Fit::CenterCrop
                || self.short_side < self.size
                || self.short_side > 4096)
        {
            return Err(format!(
                "short_side {} needs fit = \"center-crop\" and a value from size ({}) to 4096",
                self.short_side, self.size
            ));
        }
        if self.resize == ResizeMode::Keras && self.fit != Fit::Squash {
            return Err(
                "fit applies to resize = \"antialias\" only (keras always squashes)".into(),
            );
        }
        Ok(())
    }
}

/// Decodes and resizes one file's bytes as the params say.
pub fn preprocess_one(bytes: &[u8], p: &Params) -> Result<Vec<u8>, String> {
    let d = decode_rgb(bytes, p.max_pixels, p.exif_orientation).map_err(|e| e.to_string())?;
    Ok(match p.resize {
        ResizeMode::Keras => resize_nearest_pillow(&d.rgb, d.width, d.height, p.size, p.size),
        ResizeMode::Antialias if p.fit == Fit::CenterCrop && p.short_side > p.size => {
            resize_center_crop(&d.rgb, d.width, d.height, p.size, p.short_side)?
        }
        ResizeMode::Antialias => {
            resize_antialias(&d.rgb, d.width, d.height, p.size, p.size, p.fit)?
        }
    })
}

pub struct Preprocess;

impl Stage for Preprocess {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::PREPROCESS
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &SPLITS
    }
    fn shardable(&self) -> bool {
        true
    }
    fn merge_shard_meta(
        &self,
        output: &str,
        parts: &[BTreeMap<String, Value>],
    ) -> Result<BTreeMap<String, Value>, BoxError> {
        let metas: Vec<ImagesMeta> = parts
            .iter()
            .map(ImagesMeta::from_meta)
            .collect::<Result<_, _>>()?;
        let first = metas.first().ok_or("no shards to gather")?;
        let merged = ImagesMeta {
            classes: first.classes.clone(),
            count: metas.iter().map(|m| m.count).sum(),
            skipped: metas
                .iter()
                .flat_map(|m| m.skipped.iter().cloned())
                .collect(),
            synthetic: first.synthetic,
        };
        if merged.count == 0 {
            return Err(no_image(output).into());
        }
        Ok(merged.to_meta())
    }
    /// Each split's images hold every manifest entry of the split that was not skipped, once,
    /// in manifest order.
    fn check_gathered(&self, outputs: &Artifacts, inputs: &Artifacts, store: &Store) -> Checked {
        let reader: ManifestReader = contracts::slots::MANIFEST.read_among(inputs, store)?;
        for split in SPLITS {
            let entries = reader
                .manifest
                .splits
                .get(split)
                .ok_or_else(|| format!("manifest has no split `{split}`"))?;
            let art = outputs
                .get(split)
                .ok_or_else(|| format!("no output `{split}`"))?;
            let meta = ImagesMeta::from_meta(&art.meta)?;
            let skipped: BTreeSet<&str> = meta.skipped.iter().map(|s| s.path.as_str()).collect();
            let want: Vec<i64> = (0..entries.len())
                .filter(|&i| !skipped.contains(entries[i].path.as_str()))
                .map(|i| i as i64)
                .collect();
            let got = contracts::chunk_rows(&InputArtifact::new(art, store))?.concat();
            contracts::check_same_rows(&format!("{}.{split}", ids::PREPROCESS), &[got], &[want])?;
        }
        Ok(())
    }
    fn skipped_inputs(&self, rec: &pipeline::RunRecord) -> usize {
        contracts::skipped_inputs(rec)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let reader: ManifestReader = contracts::slots::MANIFEST.read(ctx)?;
        let m = &reader.manifest;
        // The loader's `on_bad_file = "error"` holds here too: one switch for every stage.
        let stop_on_bad_file = p.on_bad_file == OnBadFile::Error || reader.stop_on_bad_file;
        let root = ctx.setting("dataset.root")?;
        if !m.synthetic && root.is_none() {
            return Err(
                "the manifest lists files of a dataset but `dataset.root` is not set".into(),
            );
        }
        // Work units, for shards: the chunks of every split, in split order.
        let mut units = Vec::new();
        for split in SPLITS {
            let n = m
                .splits
                .get(split)
                .ok_or_else(|| format!("manifest has no split `{split}`"))?
                .len();
            units.push(n.div_ceil(p.chunk_size));
        }
        let mine = ctx.shard().map(|s| s.range(units.iter().sum()));
        let mut base = 0usize;
        let mut first_unit = 0usize;
        for (si, split) in SPLITS.iter().enumerate() {
            let split = *split;
            let entries = &m.splits[split];
            let (lo, hi) = match &mine {
                Some(r) => (
                    r.start.clamp(first_unit, first_unit + units[si]) - first_unit,
                    r.end.clamp(first_unit, first_unit + units[si]) - first_unit,
                ),
                None => (0, units[si]),
            };
            first_unit += units[si];
            let todo = entries
                .len()
                .min(hi * p.chunk_size)
                .saturating_sub(lo * p.chunk_size);
            let pb = ctx.progress().bar(todo as u64, split);
            let mut w = ImagesWriter::new(ctx, split)?;
            let mut skipped = Vec::new();
            let mut kept = 0usize;
            for (ci, chunk) in entries.chunks(p.chunk_size).enumerate() {
                if !(lo..hi).contains(&ci) {
                    continue;
                }
                let start = ci * p.chunk_size;
                let results: Vec<Result<Vec<u8>, String>> = chunk
                    .par_iter()
                    .enumerate()
                    .map(|(k, e)| {
                        let r = if m.synthetic {
                            reader
                                .synthetic_file(base + start + k)
                                .map_err(|e| e.to_string())
                                .and_then(|bytes| preprocess_one(bytes, &p))
                        } else {
                            read_checked(root.expect("checked above"), e)
                                .and_then(|bytes| preprocess_one(&bytes, &p))
                        };
                        pb.inc(1);
                        r
                    })
                    .collect();
                let mut images = Vec::with_capacity(chunk.len() * p.size * p.size * 3);
                let (mut labels, mut index) = (Vec::new(), Vec::new());
                for (k, (e, r)) in chunk.iter().zip(results).enumerate() {
                    match r {
                        Ok(px) => {
                            images.extend_from_slice(&px);
                            labels.push(e.label as i64);
                            index.push((start + k) as i64);
                        }
                        Err(reason) => {
                            if stop_on_bad_file {
                                return Err(format!(
                                    "{}: {reason} (on_bad_file = \"error\")",
                                    e.path
                                )
                                .into());
                            }
                            ctx.progress().warn(format!("skipped {}: {reason}", e.path));
                            skipped.push(Skipped {
                                path: e.path.clone(),
                                reason,
                            });
                        }
                    }
                }
                if labels.is_empty() {
                    continue;
                }
                kept += labels.len();
                w.write_chunk(images, p.size, p.size, &labels, &index)?;
            }
            pb.finish_and_clear();
            // A shard may hold no chunk of a split: the gather checks the whole split.
            if kept == 0 && mine.is_none() {
                return Err(no_image(split).into());
            }
            ctx.count(todo as u64, "images");
            let n_skipped = skipped.len();
            w.finish(&ImagesMeta {
                classes: m.classes.clone(),
                count: kept,
                skipped,
                synthetic: m.synthetic,
            })?;
            ctx.progress().println(format!(
                "preprocess: {split}: {kept} images, {n_skipped} skipped"
            ));
            base += entries.len();
        }
        Ok(())
    }
}

fn no_image(split: &str) -> String {
    format!("no image of split `{split}` could be decoded")
}

/// Reads a manifest file and checks it is still the file the loader saw.
fn read_checked(root: &Path, e: &Entry) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(root.join(&e.path)).map_err(|err| format!("unreadable: {err}"))?;
    if blake3::hash(&bytes).to_hex().as_str() != e.digest {
        return Err("file changed since the loader listed it (rerun the loader)".into());
    }
    Ok(bytes)
}
