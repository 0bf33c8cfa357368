//! The content-addressed artifact store.
//!
//! Layout of a cache folder:
//! ```text
//! blobs/ab/<digest>.safetensors   immutable chunk files, named by their content digest
//! runs/<stage>/<key>.json         run records: key inputs, output artifacts, timings
//! latest/<stage>.json             the stage's most recent run record (for `why`)
//! stat-cache.json                 file digests by (size, mtime, inode), to skip re-hashing
//! tmp/                            files being written; emptied whenever the lock is taken
//! lock                            advisory lock held by the process that writes
//! ```
//! Invariants: a blob is never rewritten; a run record is written (atomically) only after every
//! blob it names is durable; anything in `tmp/` is garbage once the lock is held.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::hash::KeyInputs;

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
    #[error("blob {digest} is corrupt ({reason}); it was removed and will be rebuilt")]
    Corrupt { digest: String, reason: String },
    #[error("blob {digest} is missing from the cache")]
    Missing { digest: String },
    #[error("{path}: not a valid run record: {reason}")]
    BadRecord { path: PathBuf, reason: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` via a temp file in the same folder, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable on POSIX file systems; not supported everywhere, and harmless
    // to skip where it is not.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

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
}

/// A cache folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Held while a process writes to the store; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["blobs", "runs", "latest", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn stat_cache_path(&self) -> PathBuf {
        self.root.join("stat-cache.json")
    }

    /// Takes the store's write lock. When another live process holds it, either waits (after
    /// calling `on_wait` with a description of the holder) or fails with [`StoreError::Locked`].
    /// A lock left by a dead process is released by the OS with the process, so it never blocks.
    pub fn lock(&self, wait: bool, on_wait: impl FnOnce(&str)) -> Result<StoreLock, StoreError> {
        let path = self.root.join("lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = if holder.trim().is_empty() {
                    "unknown process".to_string()
                } else {
                    holder.trim().to_string()
                };
                if !wait {
                    return Err(StoreError::Locked {
                        path: self.root.clone(),
                        holder,
                    });
                }
                on_wait(&holder);
                file.lock().map_err(io_err(&path))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        file.set_len(0).map_err(io_err(&path))?;
        write!(file, "pid {}", std::process::id()).map_err(io_err(&path))?;
        // Whatever a dead or killed writer left half-written is garbage now.
        let tmp = self.tmp_dir();
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(StoreLock { _file: file })
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let prefix = digest.get(..2).unwrap_or("00");
        self.root
            .join("blobs")
            .join(prefix)
            .join(format!("{digest}.safetensors"))
    }

    /// Moves a finished, fsynced temp file into place under its digest. If the blob exists
    /// already (same content), the temp file is dropped: blobs are never rewritten.
    pub(crate) fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<(), StoreError> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
        let dir = dest.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::rename(tmp, &dest).map_err(io_err(&dest))?;
        sync_dir(dir);
        Ok(())
    }

    /// Removes a blob found corrupt, so that it is rebuilt rather than read again.
    pub(crate) fn remove_blob(&self, digest: &str) {
        let _ = fs::remove_file(self.blob_path(digest));
    }

    fn record_path(&self, stage: &str, key: &str) -> PathBuf {
        self.root
            .join("runs")
            .join(stage)
            .join(format!("{key}.json"))
    }

    pub fn read_record(&self, stage: &str, key: &str) -> Result<Option<RunRecord>, StoreError> {
        read_json(&self.record_path(stage, key))
    }

    pub fn latest(&self, stage: &str) -> Result<Option<RunRecord>, StoreError> {
        read_json(&self.root.join("latest").join(format!("{stage}.json")))
    }

    /// Writes the record (last step of a stage run) and makes it the stage's latest.
    pub(crate) fn write_record(&self, rec: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("records serialise");
        let p = self.record_path(&rec.stage, &rec.key);
        write_atomic(&p, &bytes).map_err(io_err(&p))?;
        self.set_latest(rec)
    }

    pub(crate) fn set_latest(&self, rec: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("records serialise");
        let p = self.root.join("latest").join(format!("{}.json", rec.stage));
        write_atomic(&p, &bytes).map_err(io_err(&p))
    }

    /// Forgets a run (its outputs turned out corrupt): the stage becomes stale.
    pub(crate) fn invalidate(&self, stage: &str, key: &str) {
        let _ = fs::remove_file(self.record_path(stage, key));
    }

    /// Every run record in the store.
    pub fn records(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        let runs = self.root.join("runs");
        for d in fs::read_dir(&runs).map_err(io_err(&runs))?.flatten() {
            for f in fs::read_dir(d.path()).map_err(io_err(&d.path()))?.flatten() {
                if f.path().extension().is_some_and(|e| e == "json") {
                    if let Some(r) = read_json(&f.path())? {
                        out.push(r);
                    }
                }
            }
        }
        out.sort_by(|a: &RunRecord, b| {
            (a.stage.as_str(), a.finished_ms).cmp(&(b.stage.as_str(), b.finished_ms))
        });
        Ok(out)
    }

    /// Total size of the blobs, in bytes, and their count.
    pub fn blob_usage(&self) -> (u64, usize) {
        let mut bytes = 0;
        let mut n = 0;
        for_each_blob(&self.root.join("blobs"), |_, md| {
            bytes += md.len();
            n += 1;
        });
        (bytes, n)
    }

    /// Deletes run records beyond the newest `keep + 1` of each stage (the latest always stays)
    /// and every blob that no remaining record refers to. Returns (records removed, blobs
    /// removed, bytes freed).
    pub fn gc(&self, keep: usize) -> Result<(usize, usize, u64), StoreError> {
        let mut by_stage: BTreeMap<String, Vec<RunRecord>> = BTreeMap::new();
        for r in self.records()? {
            by_stage.entry(r.stage.clone()).or_default().push(r);
        }
        let mut live = BTreeSet::new();
        let mut removed_records = 0;
        for (stage, mut recs) in by_stage {
            let latest_key = self.latest(&stage)?.map(|r| r.key);
            recs.sort_by_key(|r| std::cmp::Reverse(r.finished_ms));
            let mut kept = 0;
            for r in recs {
                let is_latest = latest_key.as_deref() == Some(r.key.as_str());
                if is_latest || kept <= keep {
                    kept += 1;
                    for a in r.outputs.values() {
                        live.extend(a.chunks.iter().map(|c| c.digest.clone()));
                    }
                } else {
                    let _ = fs::remove_file(self.record_path(&r.stage, &r.key));
                    removed_records += 1;
                }
            }
        }
        let (mut removed_blobs, mut freed) = (0, 0);
        for_each_blob(&self.root.join("blobs"), |p, md| {
            let digest = p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            if !live.contains(&digest) && fs::remove_file(p).is_ok() {
                removed_blobs += 1;
                freed += md.len();
            }
        });
        Ok((removed_records, removed_blobs, freed))
    }
}

fn for_each_blob(dir: &Path, mut f: impl FnMut(&Path, &fs::Metadata)) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for sub in rd.flatten() {
        let Ok(files) = fs::read_dir(sub.path()) else {
            continue;
        };
        for file in files.flatten() {
            if let Ok(md) = file.metadata() {
                f(&file.path(), &md);
            }
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError::BadRecord {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Memory-maps a stored blob.
///
/// # Safety contract
/// This is the only `unsafe` in the store. Mapping a file is sound only while nobody modifies
/// or truncates it. Blobs are immutable: they are written once under a temp name, renamed into
/// place, and never opened for writing again; `gc` deletes only unreferenced blobs, under the
/// write lock, and deleting a mapped file on POSIX keeps the mapping valid.
pub fn map_blob(path: &Path) -> Result<memmap2::Mmap, StoreError> {
    let f = File::open(path).map_err(io_err(path))?;
    // SAFETY: see the contract above; the file is an immutable blob.
    unsafe { memmap2::Mmap::map(&f) }.map_err(io_err(path))
}
