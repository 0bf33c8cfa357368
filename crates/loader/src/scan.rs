//! Scanning a dataset folder.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::FOOD11_CLASSES;
use contracts::{Entry, Manifest, Skipped, SPLITS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `<split>/<class_id>_<n>.<ext>`
    Flat,
    /// `<split>/<class>/<file>`
    ClassFolders,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{root}: no `{split}` folder (a dataset needs training/, validation/ and evaluation/)"
    )]
    MissingSplit { root: PathBuf, split: String },
    #[error("{path}: {reason}")]
    BadClasses { path: PathBuf, reason: String },
    #[error("{path}: {reason} (on_bad_file = \"error\")")]
    BadFile { path: String, reason: String },
    #[error("{root}: no usable image in split `{split}`")]
    EmptySplit { root: PathBuf, split: String },
    #[error("class `{class}` has no training images ({others}) (on_bad_file = \"error\"; with \"skip\" the class is left out)")]
    ClassWithoutTraining { class: String, others: String },
}

const IMAGE_EXTS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];
const SYSTEM_FILES: [&str; 3] = [".ds_store", "thumbs.db", "desktop.ini"];

/// Reads `classes.txt`: one class per line, either `name` or `id<TAB or space>name`.
fn read_classes(path: &Path) -> Result<Option<Vec<String>>, ScanError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ScanError::Io {
                path: path.into(),
                source: e,
            })
        }
    };
    let bad = |reason: String| ScanError::BadClasses {
        path: path.into(),
        reason,
    };
    let mut by_id = BTreeMap::new();
    for (i, line) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let (id, name) = match line.split_once(['\t', ' ']) {
            Some((a, b)) if a.chars().all(|c| c.is_ascii_digit()) => (
                a.parse::<usize>()
                    .map_err(|e| bad(format!("line {}: {e}", i + 1)))?,
                b.trim().to_string(),
            ),
            _ => (i, line.to_string()),
        };
        if by_id.insert(id, name).is_some() {
            return Err(bad(format!("class id {id} appears twice")));
        }
    }
    if by_id.is_empty() {
        return Err(bad("no classes listed".into()));
    }
    let n = by_id.len();
    if by_id.keys().copied().ne(0..n) {
        return Err(bad(format!("class ids must be 0..{} without gaps", n - 1)));
    }
    Ok(Some(by_id.into_values().collect()))
}

struct Candidate {
    /// Path relative to the root (the full path is built when the file is read: a million
    /// candidates hold no second copy of it).
    rel: String,
    label: Result<usize, String>,
}

fn rel_of(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The entries of `dir`, sorted by name, without hidden ones (`.` first: `.ipynb_checkpoints`,
/// `.DS_Store`, editors' swap files).
fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>, ScanError> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(|e| ScanError::Io {
            path: dir.into(),
            source: e,
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| ScanError::Io {
            path: dir.into(),
            source: e,
        })?;
    v.retain(|e| !e.file_name().as_encoded_bytes().starts_with(b"."));
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Why a file or folder name cannot go into the manifest (which stores paths as text).
fn non_utf8(e: &fs::DirEntry) -> Option<String> {
    e.file_name().to_str().is_none().then(|| {
        "name is not valid UTF-8; rename it (the manifest stores paths as text)".to_string()
    })
}

fn has_image_ext(e: &fs::DirEntry) -> bool {
    let name = e.file_name().to_string_lossy().to_lowercase();
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTS.contains(&ext))
}

/// Class folders if more images sit in sub-folders of `training/` than directly in it: one
/// stray folder (or a folder named `x.jpg`) in a flat split does not switch the layout, nor one
/// stray image in a class-folder split.
fn detect_layout(training: &Path) -> Result<Layout, ScanError> {
    let (mut direct, mut nested) = (0usize, 0usize);
    for e in sorted_entries(training)? {
        if is_dir(&e) {
            nested += fs::read_dir(e.path())
                .map(|rd| {
                    rd.flatten()
                        .filter(|f| !is_dir(f) && has_image_ext(f))
                        .count()
                })
                .unwrap_or(0);
        } else if has_image_ext(&e) {
            direct += 1;
        }
    }
    Ok(if nested > direct {
        Layout::ClassFolders
    } else {
        Layout::Flat
    })
}

fn is_dir(e: &fs::DirEntry) -> bool {
    e.path().is_dir()
}

/// Scans `root`. `report_skip` may turn a skip into an error (`on_bad_file = "error"`).
pub fn scan(root: &Path, fail_on_bad: bool) -> Result<Manifest, ScanError> {
    scan_with_progress(root, fail_on_bad, &pipeline::Progress::silent())
}

/// [`scan`], with a bar of the files checked (read, hashed, header sniffed) on `progress`.
pub fn scan_with_progress(
    root: &Path,
    fail_on_bad: bool,
    progress: &pipeline::Progress,
) -> Result<Manifest, ScanError> {
    for s in SPLITS {
        if !root.join(s).is_dir() {
            return Err(ScanError::MissingSplit {
                root: root.into(),
                split: s.into(),
            });
        }
    }
    let mut skipped = Vec::new();
    for e in sorted_entries(root)? {
        let name = e.file_name().to_string_lossy().to_string();
        if is_dir(&e) && !SPLITS.contains(&name.as_str()) && !name.starts_with('.') {
            let n = walk_count(&e.path());
            skipped.push(Skipped {
                path: format!("{name}/"),
                reason: format!("unknown split folder `{name}` ({n} files not used)"),
            });
        }
    }
    let layout = detect_layout(&root.join("training"))?;
    let listed = read_classes(&root.join("classes.txt"))?;
    let classes: Vec<String> = match (&listed, layout) {
        (Some(c), _) => c.clone(),
        (None, Layout::Flat) => FOOD11_CLASSES.iter().map(|s| s.to_string()).collect(),
        (None, Layout::ClassFolders) => {
            let mut names = std::collections::BTreeSet::new();
            for s in SPLITS {
                for e in sorted_entries(&root.join(s))? {
                    if is_dir(&e) && non_utf8(&e).is_none() {
                        names.insert(e.file_name().to_string_lossy().to_string());
                    }
                }
            }
            names.into_iter().collect()
        }
    };
    let n = classes.len();
    let class_of_folder = |name: &str| -> Result<usize, String> {
        if let Some(i) = classes.iter().position(|c| c == name) {
            return Ok(i);
        }
        match name.parse::<usize>() {
            Ok(i) if i < n => Ok(i),
            Ok(i) => Err(format!("class id {i} out of range ({n} classes)")),
            Err(_) => Err(format!("unknown class folder `{name}`")),
        }
    };

    let mut candidates: Vec<(usize, Candidate)> = Vec::new();
    for (si, split) in SPLITS.iter().enumerate() {
        let sdir = root.join(split);
        for e in sorted_entries(&sdir)? {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(reason) = non_utf8(&e) {
                let dir = if is_dir(&e) { "/" } else { "" };
                skipped.push(Skipped {
                    path: rel_of(root, &p) + dir,
                    reason,
                });
                continue;
            }
            match layout {
                Layout::Flat => {
                    if p.is_dir() {
                        skipped.push(Skipped { path: rel_of(root, &p) + "/", reason: "folder inside a flat split (layout is `<split>/<class_id>_<n>.<ext>`)".into() });
                        continue;
                    }
                    let label = flat_label(&name, n);
                    candidates.push((
                        si,
                        Candidate {
                            rel: rel_of(root, &p),
                            label,
                        },
                    ));
                }
                Layout::ClassFolders => {
                    if !p.is_dir() {
                        candidates.push((
                            si,
                            Candidate {
                                rel: rel_of(root, &p),
                                label: Err("file outside a class folder".into()),
                            },
                        ));
                        continue;
                    }
                    let label = class_of_folder(&name);
                    for f in sorted_entries(&p)? {
                        let fp = f.path();
                        if let Some(reason) = non_utf8(&f) {
                            skipped.push(Skipped {
                                path: rel_of(root, &fp),
                                reason,
                            });
                            continue;
                        }
                        if fp.is_dir() {
                            skipped.push(Skipped {
                                path: rel_of(root, &fp) + "/",
                                reason: "nested folder inside a class folder".into(),
                            });
                            continue;
                        }
                        candidates.push((
                            si,
                            Candidate {
                                rel: rel_of(root, &fp),
                                label: label.clone(),
                            },
                        ));
                    }
                }
            }
        }
    }

    // Read, hash and sniff every candidate in parallel; the order stays deterministic.
    let bar = progress.bar(candidates.len() as u64, "loader");
    bar.set_message(format!("checking {}", root.display()));
    let checked: Vec<(usize, String, Checked)> = candidates
        .into_par_iter()
        .with_min_len(64)
        .map(|(si, c)| {
            let r = check_file(root, &c);
            bar.inc(1);
            (si, c.rel, r)
        })
        .collect();
    bar.finish_and_clear();

    let mut splits: BTreeMap<String, Vec<Entry>> =
        SPLITS.iter().map(|s| (s.to_string(), Vec::new())).collect();
    for (si, rel, r) in checked {
        match r {
            Ok((label, digest)) => splits
                .get_mut(SPLITS[si])
                .expect("known split")
                .push(Entry {
                    path: rel,
                    label,
                    digest,
                }),
            Err(reason) => {
                if fail_on_bad {
                    return Err(ScanError::BadFile { path: rel, reason });
                }
                skipped.push(Skipped { path: rel, reason });
            }
        }
    }
    if fail_on_bad {
        if let Some(s) = skipped.first() {
            return Err(ScanError::BadFile {
                path: s.path.clone(),
                reason: s.reason.clone(),
            });
        }
    }
    let (classes, splits) = drop_untrained_classes(classes, splits, &mut skipped, fail_on_bad)?;
    for s in SPLITS {
        if splits[s].is_empty() {
            return Err(ScanError::EmptySplit {
                root: root.into(),
                split: s.into(),
            });
        }
    }
    let leakage = find_leakage(&splits);
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest {
        layout: match layout {
            Layout::Flat => "flat".into(),
            Layout::ClassFolders => "class-folders".into(),
        },
        synthetic: false,
        classes,
        splits,
        skipped,
        leakage,
    })
}

/// A class without training images cannot be learnt (and breaks class-balanced weights): with
/// `fail_on_bad` it is an error; otherwise the class is left out, its validation and evaluation
/// files are skipped with that reason, and the remaining classes are numbered anew.
#[allow(clippy::type_complexity)]
fn drop_untrained_classes(
    classes: Vec<String>,
    mut splits: BTreeMap<String, Vec<Entry>>,
    skipped: &mut Vec<Skipped>,
    fail_on_bad: bool,
) -> Result<(Vec<String>, BTreeMap<String, Vec<Entry>>), ScanError> {
    let count = |split: &str, c: usize| splits[split].iter().filter(|e| e.label == c).count();
    let untrained: Vec<usize> = (0..classes.len())
        .filter(|&c| count("training", c) == 0)
        .collect();
    if untrained.is_empty() {
        return Ok((classes, splits));
    }
    let mut new_label = vec![None; classes.len()];
    let mut kept = Vec::new();
    for (c, name) in classes.iter().enumerate() {
        if !untrained.contains(&c) {
            new_label[c] = Some(kept.len());
            kept.push(name.clone());
        }
    }
    let mut empty = Vec::new();
    for &c in &untrained {
        let (v, e) = (count("validation", c), count("evaluation", c));
        if v + e == 0 {
            empty.push(classes[c].clone());
            continue;
        }
        let others = format!("{v} validation, {e} evaluation files");
        if fail_on_bad {
            return Err(ScanError::ClassWithoutTraining {
                class: classes[c].clone(),
                others,
            });
        }
        skipped.push(Skipped {
            path: format!("class:{}", classes[c]),
            reason: format!("no training images: class left out ({others} skipped)"),
        });
    }
    if !empty.is_empty() {
        skipped.push(Skipped {
            path: "classes without images".into(),
            reason: format!("no image in any split, left out: {}", empty.join(", ")),
        });
    }
    for entries in splits.values_mut() {
        let mut keep = Vec::with_capacity(entries.len());
        for mut e in std::mem::take(entries) {
            match new_label[e.label] {
                Some(l) => {
                    e.label = l;
                    keep.push(e);
                }
                None => skipped.push(Skipped {
                    reason: format!(
                        "class `{}` has no training images (class left out)",
                        classes[e.label]
                    ),
                    path: e.path,
                }),
            }
        }
        *entries = keep;
    }
    Ok((kept, splits))
}

fn walk_count(p: &Path) -> usize {
    fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Label from a Food-11 file name `<class_id>_<n>.<ext>`.
fn flat_label(name: &str, n: usize) -> Result<usize, String> {
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    let fits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match stem.split_once('_') {
        Some((c, i)) if fits(c) && fits(i) => match c.parse::<usize>() {
            Ok(id) if id < n => Ok(id),
            Ok(id) => Err(format!("class id {id} out of range ({n} classes)")),
            Err(e) => Err(format!("class id `{c}`: {e}")),
        },
        _ => Err("name does not fit the layout `<class_id>_<n>.<ext>`".into()),
    }
}

/// The label and content digest of a usable file, or why it cannot be used.
type Checked = Result<(usize, String), String>;

fn check_file(root: &Path, c: &Candidate) -> Checked {
    let name = c
        .rel
        .rsplit_once('/')
        .map_or(c.rel.as_str(), |(_, n)| n)
        .to_lowercase();
    if SYSTEM_FILES.contains(&name.as_str()) || name.starts_with("._") {
        return Err("not an image (system file)".into());
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_string())
        .unwrap_or_default();
    if !IMAGE_EXTS.contains(&ext.as_str()) {
        return Err(if ext.is_empty() {
            "not an image file (no extension)".into()
        } else {
            format!("not an image file (extension .{ext})")
        });
    }
    let label = c.label.clone()?;
    let bytes = fs::read(root.join(&c.rel)).map_err(|e| format!("unreadable: {e}"))?;
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    let reader = image::ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("unreadable: {e}"))?;
    if reader.format().is_none() {
        return Err("not an image (content is not a known image format)".into());
    }
    match reader.into_dimensions() {
        Ok((w, h)) if w > 0 && h > 0 => {}
        Ok((w, h)) => return Err(format!("image has no pixels ({w}x{h})")),
        Err(e) => return Err(format!("corrupt image header: {}", e.to_string().trim())),
    }
    Ok((label, blake3::hash(&bytes).to_hex().to_string()))
}

fn find_leakage(splits: &BTreeMap<String, Vec<Entry>>) -> Vec<Vec<String>> {
    let mut by_digest: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (s, es) in splits {
        for e in es {
            by_digest.entry(&e.digest).or_default().push((s, &e.path));
        }
    }
    let mut out: Vec<Vec<String>> = by_digest
        .into_values()
        .filter(|v| v.iter().any(|(s, _)| *s != v[0].0))
        .map(|v| v.into_iter().map(|(_, p)| p.to_string()).collect())
        .collect();
    out.sort();
    out
}
