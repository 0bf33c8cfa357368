//! The `loader` stage adapter.

use std::collections::BTreeMap;

use contracts::{Entry, Manifest, ManifestArtifact, SPLITS};
use pipeline::{BoxError, Stage, StageContext, Validate};
use serde::{Deserialize, Serialize};

use crate::{scan_with_progress, synthetic};

/// Bump when the manifest's meaning changes without a source change.
pub const CACHE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadFile {
    Skip,
    Error,
}

/// Which generated dataset stands in when no dataset is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyntheticKind {
    /// 11 classes of one object each (textured discs and shapes) in random colours, under
    /// varied scale, rotation, position, lighting, clutter and occlusion: few examples are not
    /// enough for a CNN trained from scratch, ImageNet features separate them well.
    Scenes,
    /// The first demo set: 11 classes of colour + pattern, trivially separable.
    Shapes,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub on_bad_file: OnBadFile,
    /// The generated dataset (used when `dataset.root` is empty).
    pub synthetic: SyntheticKind,
    /// Synthetic set (used when `dataset.root` is empty): images per class in training,
    /// validation, evaluation.
    pub synthetic_per_class: [usize; 3],
    /// Synthetic image width and height.
    pub synthetic_size: [u32; 2],
}

impl Default for Params {
    fn default() -> Self {
        Params {
            on_bad_file: OnBadFile::Skip,
            synthetic: SyntheticKind::Scenes,
            synthetic_per_class: [8, 8, 20],
            synthetic_size: [160, 160],
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        if self.synthetic_per_class.contains(&0) {
            return Err("synthetic_per_class entries must be at least 1".into());
        }
        if self
            .synthetic_size
            .iter()
            .any(|&s| !(8..=4096).contains(&s))
        {
            return Err("synthetic_size must be between 8 and 4096 pixels".into());
        }
        Ok(())
    }
}

/// The stage.
pub struct Loader;

impl Loader {
    fn synthetic(p: &Params, seed: u64) -> (Manifest, Vec<Vec<u8>>) {
        let names: &[&str] = match p.synthetic {
            SyntheticKind::Shapes => &synthetic::CLASSES,
            SyntheticKind::Scenes => &synthetic::SCENE_CLASSES,
        };
        let mut splits = BTreeMap::new();
        let mut files = Vec::new();
        for (si, split) in SPLITS.iter().enumerate() {
            let mut entries = Vec::new();
            for class in 0..names.len() {
                for i in 0..p.synthetic_per_class[si] {
                    let index = (si * 100_000 + i) as u64;
                    let [w, h] = p.synthetic_size;
                    let bytes = match p.synthetic {
                        SyntheticKind::Shapes => synthetic::png(class, index, w, h, seed),
                        SyntheticKind::Scenes => synthetic::scene_png(class, index, w, h, seed),
                    };
                    entries.push(Entry {
                        path: format!("synthetic/{split}/{class}_{i}.png"),
                        label: class,
                        digest: blake3::hash(&bytes).to_hex().to_string(),
                    });
                    files.push(bytes);
                }
            }
            splits.insert(split.to_string(), entries);
        }
        let m = Manifest {
            layout: "synthetic".into(),
            synthetic: true,
            classes: names.iter().map(|s| s.to_string()).collect(),
            splits,
            skipped: Vec::new(),
            leakage: Vec::new(),
        };
        (m, files)
    }
}

impl Stage for Loader {
    type Params = Params;
    fn id(&self) -> &'static str {
        contracts::ids::LOADER
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[contracts::outputs::MANIFEST]
    }
    /// Only the generated (synthetic) dataset depends on the seed.
    fn uses_seed(
        &self,
        settings: &std::collections::BTreeMap<String, Option<std::path::PathBuf>>,
    ) -> bool {
        settings.get("dataset.root").is_none_or(|r| r.is_none())
    }
    fn skipped_inputs(&self, rec: &pipeline::RunRecord) -> usize {
        contracts::skipped_inputs(rec)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let root = ctx.setting("dataset.root")?;
        // The folder's name (never its path) labels the results, e.g. "food101-10".
        let name = match root {
            Some(r) => r
                .canonicalize()
                .unwrap_or_else(|_| r.to_path_buf())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "dataset".into()),
            None => "synthetic".into(),
        };
        let (m, files) = match root {
            Some(root) => {
                let m =
                    scan_with_progress(root, p.on_bad_file == OnBadFile::Error, ctx.progress())?;
                (m, Vec::new())
            }
            None => {
                ctx.progress().println("no dataset.root configured: using the embedded SYNTHETIC demo dataset (11 classes of generated pictures, not food)");
                Self::synthetic(&p, ctx.seed()?)
            }
        };
        // A million-file tree may skip or leak thousands: the first few are named here, all
        // of them in the manifest (`cargo xtask artifacts show loader.manifest`).
        const SHOWN: usize = 20;
        for s in m.skipped.iter().take(SHOWN) {
            ctx.progress()
                .warn(format!("skipped {}: {}", s.path, s.reason));
        }
        if m.skipped.len() > SHOWN {
            ctx.progress().warn(format!(
                "... and {} more skipped files (all listed in the manifest: cargo xtask artifacts show loader.manifest)",
                m.skipped.len() - SHOWN
            ));
        }
        for group in m.leakage.iter().take(SHOWN) {
            let more = group.len().saturating_sub(SHOWN);
            let names = group
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            ctx.progress().warn(if more > 0 {
                format!("same image in more than one split: {names} and {more} more copies")
            } else {
                format!("same image in more than one split: {names}")
            });
        }
        if m.leakage.len() > SHOWN {
            ctx.progress().warn(format!(
                "... and {} more groups of identical images (all listed in the manifest)",
                m.leakage.len() - SHOWN
            ));
        }
        ctx.progress().println(format!(
            "loader: {} classes; training {}, validation {}, evaluation {}; {} skipped; {} leaked",
            m.classes.len(),
            m.splits["training"].len(),
            m.splits["validation"].len(),
            m.splits["evaluation"].len(),
            m.skipped.len(),
            m.leakage.len()
        ));
        ctx.count(
            m.splits.values().map(|v| v.len() as u64).sum::<u64>(),
            "files",
        );
        ManifestArtifact {
            manifest: m,
            dataset: &name,
            synthetic_files: &files,
            stop_on_bad_file: p.on_bad_file == OnBadFile::Error,
        }
        .write(ctx)?;
        Ok(())
    }
}
