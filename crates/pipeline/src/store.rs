//! The content-addressed artifact store.
//!
//! Layout of a cache folder:
//! ```text
//! blobs/ab/<digest>.safetensors   immutable chunk files, named by their content digest
//! runs/<stage>/<key>.json         run records: key inputs, output artifacts, timings
//! latest/<stage>.json             the stage's most recent run record (for `why`)
//! last-run.json                   what the most recent `run` did, stage by stage (timeline)
//! stat-cache.json                 file digests by (size, mtime, inode), to skip re-hashing
//! runs/<stage>/shards/<key>/I-of-N.json         a shard's partial record (`run --shard I/N`)
//! runs/<stage>/shards/<key>/I-of-N.failed.json  why that shard's last attempt failed
//! tmp/                            files being written (uniquely named per writer)
//! leases/                         one file per live run, renewed by a heartbeat
//! lock                            advisory lock: the single-machine fast path
//! ```
//! Invariants: a blob is never rewritten; a run record is written (atomically) only after every
//! blob it names is durable; a damaged record counts as absent and is moved aside. Blob and
//! record writes take no lock, so that many processes and machines can write one cache:
//! temp names are unique per host, pid and call, blobs are created only if absent, and no
//! writer empties `tmp/` (only temp files of dead processes of its own host, or older than a
//! day, are removed). Where exclusion is needed (`gc`), leases stand in for the lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{io_err, StoreError};
use crate::fsutil::{sync_dir, temp_path, write_atomic};
use crate::lease::{self, Lease, LeaseInfo};
use crate::record::RunRecord;
use crate::shard::Shard;

/// Temp files older than this are left-overs of dead writers and may be deleted.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// A cache folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Things worth telling the user (damaged records moved aside), taken by the caller.
    notices: Arc<Mutex<Vec<String>>>,
}

/// Held while a process runs stages on the store; dropping it (or the process dying) releases
/// it.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Why a shard's last attempt failed, for `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardFailure {
    pub error: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub finished_ms: u64,
}

/// One stage of the most recent run, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub stage: String,
    pub key: String,
    /// `ran` or `cached`.
    pub outcome: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub threads: usize,
    #[serde(default)]
    pub cpu_seconds: f64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
}

/// What the most recent `run` on this cache did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub started_ms: u64,
    pub finished_ms: u64,
    pub stages: Vec<TimelineEntry>,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["blobs", "runs", "latest", "tmp", "leases"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            notices: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Notices collected since the last call (e.g. damaged records that were moved aside).
    pub fn take_notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    fn notice(&self, msg: String) {
        if let Ok(mut n) = self.notices.lock() {
            if !n.contains(&msg) {
                n.push(msg);
            }
        }
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
        write!(
            file,
            "pid {} on {}",
            std::process::id(),
            crate::fsutil::hostname()
        )
        .map_err(io_err(&path))?;
        self.remove_stale_temps();
        Ok(StoreLock { _file: file })
    }

    /// Deletes temp files that no live writer can still own: those of dead processes of this
    /// host, and any older than a day. Never the whole folder: other processes or machines
    /// may be writing there right now.
    fn remove_stale_temps(&self) {
        let now = SystemTime::now();
        let host = crate::fsutil::hostname();
        if let Ok(rd) = fs::read_dir(self.tmp_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // `.<name>.<host>.<pid>.<salt>.tmp`
                let parts: Vec<&str> = name.rsplitn(5, '.').collect();
                let dead_here = parts.len() == 5
                    && parts[0] == "tmp"
                    && parts[3] == host
                    && parts[2]
                        .parse::<u32>()
                        .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > STALE_TEMP);
                if dead_here || old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// A fresh, uniquely named temp path in `tmp/` for a file that will be called `name`.
    pub(crate) fn temp_file(&self, name: &str) -> PathBuf {
        temp_path(&self.tmp_dir(), name)
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let prefix = digest.get(..2).unwrap_or("00");
        self.root
            .join("blobs")
            .join(prefix)
            .join(format!("{digest}.safetensors"))
    }

    /// Moves a finished, fsynced temp file into place under its digest, if no blob of that
    /// digest exists (create-if-absent: same digest, same content, so the first one stays),
    /// and returns the size of the blob now in place. That size can differ from the temp
    /// file's: the digest leaves out the run-specific metadata (creation time, producer), so
    /// an earlier run's blob of the same content may have a header of another length, and the
    /// run record must name the file that is there.
    pub(crate) fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<u64, StoreError> {
        let dest = self.blob_path(digest);
        if let Ok(md) = fs::metadata(&dest) {
            let _ = fs::remove_file(tmp);
            return Ok(md.len());
        }
        let dir = dest.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Create-if-absent even against a writer on another machine: a hard link fails with
        // "exists" where a rename would silently replace the other writer's file (whose size
        // its record may already name).
        match fs::hard_link(tmp, &dest) {
            Ok(()) => {
                let _ = fs::remove_file(tmp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(tmp);
            }
            // A file system without hard links: rename (atomic, last writer's file stays).
            Err(_) => fs::rename(tmp, &dest).map_err(io_err(&dest))?,
        }
        sync_dir(dir);
        fs::metadata(&dest).map(|m| m.len()).map_err(io_err(&dest))
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
        self.read_json(&self.record_path(stage, key))
    }

    pub fn latest(&self, stage: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read_json(&self.root.join("latest").join(format!("{stage}.json")))
    }

    /// Writes the record (last step of a stage run) and makes it the stage's latest.
    pub(crate) fn write_record(&self, rec: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("records serialise");
        let p = self.record_path(&rec.stage, &rec.key);
        write_atomic(&p, &bytes).map_err(io_err(&p))?;
        self.set_latest(rec)
    }

    /// Writes the record without making it the stage's latest (another seed of a sweep).
    pub(crate) fn write_record_only(&self, rec: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("records serialise");
        let p = self.record_path(&rec.stage, &rec.key);
        write_atomic(&p, &bytes).map_err(io_err(&p))
    }

    pub(crate) fn set_latest(&self, rec: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("records serialise");
        let p = self.root.join("latest").join(format!("{}.json", rec.stage));
        write_atomic(&p, &bytes).map_err(io_err(&p))
    }

    /// Forgets a run (its outputs turned out corrupt): the stage becomes stale.
    pub(crate) fn invalidate(&self, stage: &str, key: &str) {
        let _ = fs::remove_file(self.record_path(stage, key));
        let latest = self.root.join("latest").join(format!("{stage}.json"));
        if let Ok(Some(l)) = self.read_json::<RunRecord>(&latest) {
            if l.key == key {
                let _ = fs::remove_file(latest);
            }
        }
    }

    fn shard_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("runs").join(stage).join("shards").join(key)
    }

    /// `runs/<stage>/shards/<key>/I-of-N<suffix>`.
    fn shard_file(&self, stage: &str, key: &str, shard: Shard, suffix: &str) -> PathBuf {
        self.shard_dir(stage, key)
            .join(format!("{}{suffix}", shard.file_stem()))
    }

    /// The partial record of one shard of a stage run (written last by `run --shard`).
    pub(crate) fn write_shard_record(
        &self,
        rec: &RunRecord,
        shard: Shard,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("records serialise");
        let p = self.shard_file(&rec.stage, &rec.key, shard, ".json");
        write_atomic(&p, &bytes).map_err(io_err(&p))?;
        let _ = fs::remove_file(self.shard_file(&rec.stage, &rec.key, shard, ".failed.json"));
        Ok(())
    }

    /// The partial record of `shard` of the run with `key`, if that shard completed.
    pub fn read_shard_record(
        &self,
        stage: &str,
        key: &str,
        shard: Shard,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.read_json(&self.shard_file(stage, key, shard, ".json"))
    }

    /// Notes why a shard's attempt failed (for `status`); a later success removes it.
    pub(crate) fn write_shard_failure(
        &self,
        stage: &str,
        key: &str,
        shard: Shard,
        failure: &ShardFailure,
    ) -> Result<(), StoreError> {
        let p = self.shard_file(stage, key, shard, ".failed.json");
        let bytes = serde_json::to_vec_pretty(failure).expect("serialises");
        write_atomic(&p, &bytes).map_err(io_err(&p))
    }

    pub fn read_shard_failure(
        &self,
        stage: &str,
        key: &str,
        shard: Shard,
    ) -> Result<Option<ShardFailure>, StoreError> {
        self.read_json(&self.shard_file(stage, key, shard, ".failed.json"))
    }

    /// The shard counts that shards of the run with `key` were started with (`N` of each
    /// `I-of-N` record or failure note), ascending.
    pub fn shard_counts(&self, stage: &str, key: &str) -> Vec<usize> {
        let mut out = BTreeSet::new();
        if let Ok(rd) = fs::read_dir(self.shard_dir(stage, key)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.split('.').next().unwrap_or("");
                if let Some((_, n)) = stem.split_once("-of-") {
                    if let Ok(n) = n.parse::<usize>() {
                        out.insert(n);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Every shard record in the store (their blobs are live until the gather).
    fn shard_records(&self) -> Vec<(PathBuf, RunRecord)> {
        let mut out = Vec::new();
        let Ok(stages) = fs::read_dir(self.root.join("runs")) else {
            return out;
        };
        for st in stages.flatten() {
            let Ok(keys) = fs::read_dir(st.path().join("shards")) else {
                continue;
            };
            for k in keys.flatten() {
                let Ok(files) = fs::read_dir(k.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let p = f.path();
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    if name.is_some_and(|n| n.ends_with(".json") && !n.ends_with(".failed.json")) {
                        if let Ok(Some(r)) = self.read_json::<RunRecord>(&p) {
                            out.push((p, r));
                        }
                    }
                }
            }
        }
        out
    }

    /// Takes a run lease (a file under `leases/`, refreshed by a heartbeat): `what` the run does and its scheduler job.
    pub fn lease(&self, what: &str, job: Option<&str>) -> Result<Lease, StoreError> {
        lease::acquire(&self.root.join("leases"), what, job)
    }

    /// The run leases that are live now (other runs, here or on other machines).
    pub fn live_leases(&self) -> Vec<LeaseInfo> {
        lease::live(&self.root.join("leases"))
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    /// Every run record in the store.
    pub fn records(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        let runs = self.root.join("runs");
        for d in fs::read_dir(&runs).map_err(io_err(&runs))?.flatten() {
            if !d.path().is_dir() {
                continue;
            }
            for f in fs::read_dir(d.path()).map_err(io_err(&d.path()))?.flatten() {
                if f.path().extension().is_some_and(|e| e == "json") {
                    if let Some(r) = self.read_json(&f.path())? {
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

    /// Records what a run did (for `status --timeline` and the report's timeline).
    pub fn write_last_run(&self, run: &LastRun) -> Result<(), StoreError> {
        let p = self.root.join("last-run.json");
        let bytes = serde_json::to_vec_pretty(run).expect("last run serialises");
        write_atomic(&p, &bytes).map_err(io_err(&p))
    }

    /// What the most recent run did, if any run finished on this cache.
    pub fn last_run(&self) -> Result<Option<LastRun>, StoreError> {
        self.read_json(&self.root.join("last-run.json"))
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

    /// Fails with [`StoreError::Leased`] while any run holds a live lease (removing the
    /// leases of dead runs on the way).
    pub fn refuse_if_leased(&self) -> Result<(), StoreError> {
        lease::remove_dead(&self.root.join("leases"));
        let live_leases = self.live_leases();
        if live_leases.is_empty() {
            return Ok(());
        }
        let now = crate::clock::now_ms();
        Err(StoreError::Leased {
            path: self.root.clone(),
            holders: live_leases.iter().map(|l| l.describe(now)).collect(),
        })
    }

    /// Deletes run records beyond the newest `keep + 1` of each stage (the latest always stays),
    /// shard records of runs already gathered, and every blob that no remaining record refers
    /// to and that is older than `grace` (a writer elsewhere may have just stored it, with its
    /// record still to come). Refused while another run holds a live lease. Returns (records
    /// removed, blobs removed, bytes freed).
    pub fn gc(&self, keep: usize, grace: Duration) -> Result<(usize, usize, u64), StoreError> {
        self.refuse_if_leased()?;
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
        for (p, r) in self.shard_records() {
            if self.record_path(&r.stage, &r.key).exists() {
                // Gathered: the full record names the same blobs.
                let _ = fs::remove_file(&p);
                if let Some(dir) = p.parent() {
                    let _ = fs::remove_dir(dir);
                }
                continue;
            }
            for a in r.outputs.values() {
                live.extend(a.chunks.iter().map(|c| c.digest.clone()));
            }
        }
        let now = SystemTime::now();
        let (mut removed_blobs, mut freed) = (0, 0);
        for_each_blob(&self.root.join("blobs"), |p, md| {
            let digest = p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let young = md
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_none_or(|age| age < grace);
            if !live.contains(&digest) && !young && fs::remove_file(p).is_ok() {
                removed_blobs += 1;
                freed += md.len();
            }
        });
        Ok((removed_records, removed_blobs, freed))
    }

    /// Reads a JSON file of the store. A file that exists but does not parse (truncated by a
    /// crash of something outside our write protocol, or edited by hand) counts as absent: it
    /// is moved aside to `<name>.damaged`, and a notice says so once.
    fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, StoreError> {
        match fs::read(path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(v) => Ok(Some(v)),
                Err(e) => {
                    let aside = path.with_extension("json.damaged");
                    let moved = fs::rename(path, &aside).is_ok();
                    self.notice(format!(
                        "{} is damaged ({e}); {}; the stage counts as not run",
                        path.display(),
                        if moved {
                            format!("moved it aside to {}", aside.display())
                        } else {
                            "ignored it".to_string()
                        }
                    ));
                    Ok(None)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
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

/// Memory-maps a stored blob.
///
/// # Safety
/// Mapping a file is sound only while nobody modifies or truncates it. The caller must pass
/// the path of a blob of this store (or another file nobody writes to while it is mapped).
/// Blobs are immutable: written once under a temp name, renamed into place, never opened for
/// writing again; `gc` deletes only unreferenced blobs, and deleting a mapped file on POSIX
/// keeps the mapping valid.
pub(crate) unsafe fn map_blob(path: &Path) -> Result<memmap2::Mmap, StoreError> {
    let f = File::open(path).map_err(io_err(path))?;
    // SAFETY: the caller upholds the contract above.
    unsafe { memmap2::Mmap::map(&f) }.map_err(io_err(path))
}
