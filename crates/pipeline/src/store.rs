//! The content-addressed artifact store.
//!
//! Layout of a cache folder:
//! ```text
//! blobs/ab/<digest>.safetensors   immutable chunk files, named by their content digest
//! runs/<stage>/<key>.json         run records: key inputs, output artifacts, timings
//! latest/<stage>.json             the stage's most recent run record (for `why`)
//! last-run.json                   what the most recent `run` did, stage by stage (timeline)
//! stat-cache/<path hash>.bin     file digests by (size, mtime, ctime, inode), to skip re-hashing
//! runs/<stage>/shards/<key>/I-of-N.json         a shard's partial record (`run --shard I/N`)
//! runs/<stage>/shards/<key>/I-of-N.failed.json  why that shard's last attempt failed
//! tmp/                            files being written (uniquely named per writer)
//! leases/                         one file per live run, renewed by a heartbeat
//! lock                            advisory lock: the single-machine fast path
//! ```
//! With `cache = "s3://bucket/prefix"` the same layout is kept under the prefix of the bucket
//! (blobs, runs, latest, last-run.json, leases), and the local folder keeps the rest: `blobs/`
//! as a read-through copy of the bucket's blobs (downloaded on first read, so that readers can
//! memory-map them), `tmp/`, `stat-cache/` and `lock`.
//!
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

use crate::backend::Backend;
use crate::error::{io_err, StoreError};
use crate::fsutil::{sync_dir, temp_path, write_synced};
use crate::lease::{self, Lease, LeaseInfo};
use crate::record::RunRecord;
use crate::remote::Remote;
use crate::shard::Shard;

/// Temp files older than this are left-overs of dead writers and may be deleted.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// A cache folder.
#[derive(Debug, Clone)]
pub struct Store {
    /// The local folder (the whole cache, or the local tier of an S3 cache).
    root: PathBuf,
    /// Where records, leases and (for S3) the blobs of record live.
    backend: Backend,
    /// Sizes of blobs known to be in the bucket (S3 only; blobs are immutable).
    known: Arc<Mutex<BTreeMap<String, u64>>>,
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
        Self::open_local(root, &["blobs", "runs", "latest", "tmp", "leases"])
    }

    fn open_local(root: &Path, subs: &[&str]) -> Result<Store, StoreError> {
        for sub in subs {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            backend: Backend::Local(root.to_path_buf()),
            known: Arc::default(),
            notices: Arc::default(),
        })
    }

    /// A cache in an S3 bucket (`s3://bucket/prefix`) with `local` as its local tier.
    /// `options` are `object_store` S3 settings over the AWS environment (`aws_endpoint`, ...).
    pub fn open_s3(
        local: &Path,
        url: &str,
        options: &[(String, String)],
    ) -> Result<Store, StoreError> {
        let mut s = Store::open_local(local, &["blobs", "tmp"])?;
        s.backend = Backend::Remote(Arc::new(Remote::connect(url, options)?));
        Ok(s)
    }

    /// The local folder: the whole cache, or an S3 cache's local tier.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache as users name it: its folder or its `s3://` URL.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Local(root) => root.display().to_string(),
            Backend::Remote(r) => r.url().to_string(),
        }
    }

    /// Whether the cache's records and blobs live in a bucket.
    pub fn is_remote(&self) -> bool {
        matches!(self.backend, Backend::Remote(_))
    }

    /// Where a blob is kept for good: its local path, or its object's URL on S3.
    pub fn blob_location(&self, digest: &str) -> String {
        match &self.backend {
            Backend::Local(_) => self.blob_path(digest).display().to_string(),
            Backend::Remote(_) => self.backend.describe(&blob_rel(digest)),
        }
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

    /// The stat cache's folder (one file per external input; see `statcache`).
    pub(crate) fn stat_cache_dir(&self) -> PathBuf {
        self.root.join("stat-cache")
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
    pub(crate) fn commit_blob(
        &self,
        tmp: &Path,
        digest: &str,
    ) -> Result<(u64, Option<String>), StoreError> {
        if let Backend::Remote(r) = &self.backend {
            return self.commit_blob_remote(r, tmp, digest);
        }
        let dest = self.blob_path(digest);
        if let Ok(md) = fs::metadata(&dest) {
            let _ = fs::remove_file(tmp);
            return Ok((md.len(), local_header_digest(&dest)));
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
        // The blob that stays (ours, or an identical one another writer stored first).
        let size = fs::metadata(&dest)
            .map(|m| m.len())
            .map_err(io_err(&dest))?;
        Ok((size, local_header_digest(&dest)))
    }

    /// S3: uploads the blob if the bucket has none of its digest (create-if-absent), then
    /// keeps the file as the local copy when it is the bucket's object.
    fn commit_blob_remote(
        &self,
        r: &Remote,
        tmp: &Path,
        digest: &str,
    ) -> Result<(u64, Option<String>), StoreError> {
        let rel = blob_rel(digest);
        let bytes = fs::read(tmp).map_err(io_err(tmp))?;
        let ours = bytes.len() as u64;
        let our_header = crate::digest::header_digest(&bytes);
        let dest = self.blob_path(digest);
        let (size, header) = if r.create(&rel, bytes)? {
            // The bucket's object is ours: so is the local copy (an older one of the same
            // digest may carry another header).
            let _ = fs::remove_file(&dest);
            self.place_local(tmp, &dest)?;
            (ours, our_header)
        } else {
            // Another writer's object (same content, its own header): ours is not kept
            // locally, so that the local tier holds the bucket's bytes.
            let size = r.head(&rel)?.map(|(n, _)| n).unwrap_or(ours);
            (size, r.header_digest(&rel)?)
        };
        let _ = fs::remove_file(tmp);
        self.remember(digest, size);
        Ok((size, header))
    }

    fn remember(&self, digest: &str, size: u64) {
        if let Ok(mut k) = self.known.lock() {
            k.insert(digest.to_string(), size);
        }
    }

    /// Moves a finished temp file to `dest` unless a file is there already.
    fn place_local(&self, tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        let dir = dest.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        match fs::hard_link(tmp, dest) {
            Ok(()) | Err(_) if dest.exists() => {}
            Ok(()) => {}
            Err(_) => fs::rename(tmp, dest).map_err(io_err(dest))?,
        }
        let _ = fs::remove_file(tmp);
        Ok(())
    }

    /// The size of the stored blob, `None` if the cache has none of that digest. On S3 the
    /// bucket's object is the one that counts (the local copy may not be downloaded yet).
    pub(crate) fn blob_size(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        match &self.backend {
            Backend::Local(_) => Ok(fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())),
            Backend::Remote(r) => {
                if let Some(n) = self.known.lock().ok().and_then(|k| k.get(digest).copied()) {
                    return Ok(Some(n));
                }
                let n = r.head(&blob_rel(digest))?.map(|(n, _)| n);
                if let Some(n) = n {
                    self.remember(digest, n);
                }
                Ok(n)
            }
        }
    }

    /// The local path of a blob, downloading it first from the bucket if needed (S3).
    /// [`StoreError::Missing`] if the cache has no blob of that digest.
    pub(crate) fn fetch_blob(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(path);
        }
        let missing = || StoreError::Missing {
            digest: digest.to_string(),
        };
        let Backend::Remote(r) = &self.backend else {
            return Err(missing());
        };
        let bytes = r.get(&blob_rel(digest))?.ok_or_else(missing)?;
        let tmp = self.temp_file(&format!("{digest}.download"));
        write_synced(&tmp, &bytes).map_err(io_err(&tmp))?;
        self.place_local(&tmp, &path)?;
        Ok(path)
    }

    /// S3: a fresh download of the bucket's object into a temp file (for `verify`, which
    /// checks what other machines will read, not this machine's copy); `None` if the bucket
    /// has no such object. The caller deletes the file.
    pub(crate) fn download_blob(&self, digest: &str) -> Result<Option<PathBuf>, StoreError> {
        let Backend::Remote(r) = &self.backend else {
            return Ok(Some(self.blob_path(digest)).filter(|p| p.exists()));
        };
        let Some(bytes) = r.get(&blob_rel(digest))? else {
            return Ok(None);
        };
        let tmp = self.temp_file(&format!("{digest}.verify"));
        write_synced(&tmp, &bytes).map_err(io_err(&tmp))?;
        Ok(Some(tmp))
    }

    /// Removes a blob found corrupt (its local copy and, on S3, the bucket's object), so that
    /// it is rebuilt rather than read again.
    pub(crate) fn remove_blob(&self, digest: &str) {
        let _ = fs::remove_file(self.blob_path(digest));
        if let Backend::Remote(r) = &self.backend {
            let _ = r.delete(&blob_rel(digest));
            if let Ok(mut k) = self.known.lock() {
                k.remove(digest);
            }
        }
    }

    fn record_rel(stage: &str, key: &str) -> String {
        format!("runs/{stage}/{key}.json")
    }

    fn latest_rel(stage: &str) -> String {
        format!("latest/{stage}.json")
    }

    pub fn read_record(&self, stage: &str, key: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read_json(&Self::record_rel(stage, key))
    }

    pub fn latest(&self, stage: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read_json(&Self::latest_rel(stage))
    }

    /// Writes the record (last step of a stage run) and makes it the stage's latest.
    pub(crate) fn write_record(&self, rec: &RunRecord) -> Result<(), StoreError> {
        self.write_record_only(rec)?;
        self.set_latest(rec)
    }

    /// Writes the record without making it the stage's latest (another seed of a sweep).
    pub(crate) fn write_record_only(&self, rec: &RunRecord) -> Result<(), StoreError> {
        self.put_record(&Self::record_rel(&rec.stage, &rec.key), rec)
    }

    /// Stores a record. On a folder: an atomic overwrite. On S3: a conditional create, where
    /// "already exists" means another writer stored the same run first; its record stays if it
    /// names the same outputs and they are all there, and is replaced otherwise (its blobs
    /// were removed since).
    fn put_record(&self, rel: &str, rec: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("records serialise");
        if !self.is_remote() || self.backend.create(rel, &bytes)? {
            return if self.is_remote() {
                Ok(())
            } else {
                self.backend.write(rel, &bytes)
            };
        }
        if let Some(there) = self.read_json::<RunRecord>(rel)? {
            if there.outputs == rec.outputs && self.blobs_present(&there)? {
                return Ok(());
            }
        }
        self.backend.write(rel, &bytes)
    }

    pub(crate) fn set_latest(&self, rec: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(rec).expect("records serialise");
        self.backend.write(&Self::latest_rel(&rec.stage), &bytes)
    }

    /// Forgets a run (its outputs turned out corrupt): the stage becomes stale.
    pub(crate) fn invalidate(&self, stage: &str, key: &str) {
        let _ = self.backend.delete(&Self::record_rel(stage, key));
        if let Ok(Some(l)) = self.latest(stage) {
            if l.key == key {
                let _ = self.backend.delete(&Self::latest_rel(stage));
            }
        }
    }

    fn shard_dir(stage: &str, key: &str) -> String {
        format!("runs/{stage}/shards/{key}")
    }

    /// Notes that `stage` (key `key`) is to run in `count` shards, so that `status` shows
    /// "0 of N done" from the moment a sharded run is planned, before any shard has a record
    /// (`runs/<stage>/shards/<key>/planned-of-N.plan`; the gather removes it).
    pub fn note_shard_plan(&self, stage: &str, key: &str, count: usize) -> Result<(), StoreError> {
        let rel = format!("{}/planned-of-{count}.plan", Self::shard_dir(stage, key));
        self.backend.create(&rel, b"")?;
        Ok(())
    }

    /// Removes the plans [`Store::note_shard_plan`] left for `stage` (key `key`).
    pub(crate) fn clear_shard_plans(&self, stage: &str, key: &str) {
        for e in self
            .backend
            .list(&Self::shard_dir(stage, key))
            .unwrap_or_default()
        {
            if e.rel.ends_with(".plan") {
                let _ = self.backend.delete(&e.rel);
            }
        }
    }

    /// `runs/<stage>/shards/<key>/I-of-N<suffix>`.
    fn shard_file(stage: &str, key: &str, shard: Shard, suffix: &str) -> String {
        format!(
            "{}/{}{suffix}",
            Self::shard_dir(stage, key),
            shard.file_stem()
        )
    }

    /// The partial record of one shard of a stage run (written last by `run --shard`).
    pub(crate) fn write_shard_record(
        &self,
        rec: &RunRecord,
        shard: Shard,
    ) -> Result<(), StoreError> {
        self.put_record(&Self::shard_file(&rec.stage, &rec.key, shard, ".json"), rec)?;
        let _ = self.backend.delete(&Self::shard_file(
            &rec.stage,
            &rec.key,
            shard,
            ".failed.json",
        ));
        Ok(())
    }

    /// Whether every blob `rec` names is stored with the size it records.
    pub(crate) fn blobs_present(&self, rec: &RunRecord) -> Result<bool, StoreError> {
        for a in rec.outputs.values() {
            for c in &a.chunks {
                if self.blob_size(&c.digest)? != Some(c.bytes) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The partial record of `shard` of the run with `key`, if that shard completed.
    pub fn read_shard_record(
        &self,
        stage: &str,
        key: &str,
        shard: Shard,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.read_json(&Self::shard_file(stage, key, shard, ".json"))
    }

    /// Notes why a shard's attempt failed (for `status`); a later success removes it.
    pub(crate) fn write_shard_failure(
        &self,
        stage: &str,
        key: &str,
        shard: Shard,
        failure: &ShardFailure,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(failure).expect("serialises");
        self.backend
            .write(&Self::shard_file(stage, key, shard, ".failed.json"), &bytes)
    }

    pub fn read_shard_failure(
        &self,
        stage: &str,
        key: &str,
        shard: Shard,
    ) -> Result<Option<ShardFailure>, StoreError> {
        self.read_json(&Self::shard_file(stage, key, shard, ".failed.json"))
    }

    /// The shard counts that shards of the run with `key` were started with (`N` of each
    /// `I-of-N` record or failure note), ascending.
    pub fn shard_counts(&self, stage: &str, key: &str) -> Vec<usize> {
        let mut out = BTreeSet::new();
        for e in self
            .backend
            .list(&Self::shard_dir(stage, key))
            .unwrap_or_default()
        {
            let name = e.rel.rsplit('/').next().unwrap_or("");
            let stem = name.split('.').next().unwrap_or("");
            if let Some((_, n)) = stem.split_once("-of-") {
                if let Ok(n) = n.parse::<usize>() {
                    out.insert(n);
                }
            }
        }
        out.into_iter().collect()
    }

    /// Every shard record in the store, by name (their blobs are live until the gather).
    fn shard_records(&self) -> Result<Vec<(String, RunRecord)>, StoreError> {
        let mut out = Vec::new();
        for e in self.backend.list("runs")? {
            // runs/<stage>/shards/<key>/<I-of-N>.json
            let parts: Vec<&str> = e.rel.split('/').collect();
            if parts.len() == 5
                && parts[2] == "shards"
                && parts[4].ends_with(".json")
                && !parts[4].ends_with(".failed.json")
            {
                if let Some(r) = self.read_json::<RunRecord>(&e.rel)? {
                    out.push((e.rel, r));
                }
            }
        }
        Ok(out)
    }

    /// Takes a run lease (a file under `leases/`, refreshed by a heartbeat): `what` the run does and its scheduler job.
    pub fn lease(&self, what: &str, job: Option<&str>) -> Result<Lease, StoreError> {
        lease::acquire(&self.backend, what, job)
    }

    /// The run leases that are live now (other runs, here or on other machines).
    pub fn live_leases(&self) -> Vec<LeaseInfo> {
        lease::live(&self.backend)
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    /// Every run record in the store.
    pub fn records(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        for e in self.backend.list("runs")? {
            // runs/<stage>/<key>.json
            let parts: Vec<&str> = e.rel.split('/').collect();
            if parts.len() == 3 && parts[2].ends_with(".json") {
                if let Some(r) = self.read_json(&e.rel)? {
                    out.push(r);
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
        let bytes = serde_json::to_vec_pretty(run).expect("last run serialises");
        self.backend.write("last-run.json", &bytes)
    }

    /// What the most recent run did, if any run finished on this cache.
    pub fn last_run(&self) -> Result<Option<LastRun>, StoreError> {
        self.read_json("last-run.json")
    }

    /// Total size of the blobs, in bytes, and their count.
    pub fn blob_usage(&self) -> (u64, usize) {
        let blobs = self.stored_blobs().unwrap_or_default();
        (blobs.iter().map(|b| b.size).sum(), blobs.len())
    }

    /// The stored blobs (the bucket's, on S3): digest, size, modification time.
    fn stored_blobs(&self) -> Result<Vec<crate::backend::Entry>, StoreError> {
        let mut v = self.backend.list("blobs")?;
        v.retain(|e| e.rel.ends_with(".safetensors"));
        Ok(v)
    }

    /// Fails with [`StoreError::Leased`] while any run holds a live lease (removing the
    /// leases of dead runs on the way).
    pub fn refuse_if_leased(&self) -> Result<(), StoreError> {
        lease::remove_dead(&self.backend);
        let live_leases = self.live_leases();
        if live_leases.is_empty() {
            return Ok(());
        }
        let now = crate::clock::now_ms();
        Err(StoreError::Leased {
            path: PathBuf::from(self.location()),
            holders: live_leases.iter().map(|l| l.describe(now)).collect(),
            ttl_secs: lease::LEASE_TTL.as_secs(),
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
                    let _ = self.backend.delete(&Self::record_rel(&r.stage, &r.key));
                    removed_records += 1;
                }
            }
        }
        for (rel, r) in self.shard_records()? {
            if self.read_record(&r.stage, &r.key)?.is_some() {
                // Gathered: the full record names the same blobs.
                let _ = self.backend.delete(&rel);
                if let (Backend::Local(root), Some((dir, _))) =
                    (&self.backend, rel.rsplit_once('/'))
                {
                    let _ = fs::remove_dir(root.join(dir));
                }
                continue;
            }
            for a in r.outputs.values() {
                live.extend(a.chunks.iter().map(|c| c.digest.clone()));
            }
        }
        let now = crate::clock::now_ms();
        let grace_ms = grace.as_millis() as u64;
        let (mut removed_blobs, mut freed) = (0, 0);
        for b in self.stored_blobs()? {
            let digest = digest_of(&b.rel);
            let young = now.saturating_sub(b.modified_ms) < grace_ms;
            if !live.contains(&digest) && !young && self.backend.delete(&b.rel).is_ok() {
                removed_blobs += 1;
                freed += b.size;
                if self.is_remote() {
                    let _ = fs::remove_file(self.blob_path(&digest));
                }
            }
        }
        if self.is_remote() {
            // Local copies of blobs that no kept record names.
            for b in Backend::Local(self.root.clone()).list("blobs")? {
                let digest = digest_of(&b.rel);
                let young = now.saturating_sub(b.modified_ms) < grace_ms;
                if !live.contains(&digest) && !young {
                    let _ = fs::remove_file(self.blob_path(&digest));
                }
            }
        }
        Ok((removed_records, removed_blobs, freed))
    }

    /// Reads a JSON file of the store. A file that exists but does not parse (truncated by a
    /// crash of something outside our write protocol, or edited by hand) counts as absent: it
    /// is moved aside to `<name>.damaged`, and a notice says so once.
    fn read_json<T: for<'de> Deserialize<'de>>(&self, rel: &str) -> Result<Option<T>, StoreError> {
        let Some(b) = self.backend.read(rel)? else {
            return Ok(None);
        };
        match serde_json::from_slice(&b) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                let aside = format!("{rel}.damaged");
                let moved =
                    self.backend.write(&aside, &b).is_ok() && self.backend.delete(rel).is_ok();
                self.notice(format!(
                    "{} is damaged ({e}); {}; the stage counts as not run",
                    self.backend.describe(rel),
                    if moved {
                        format!("moved it aside to {}", self.backend.describe(&aside))
                    } else {
                        "ignored it".to_string()
                    }
                ));
                Ok(None)
            }
        }
    }
}

/// `blobs/ab/<digest>.safetensors`.
/// [`crate::digest::header_digest`] of a blob file (its first bytes only).
fn local_header_digest(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = usize::try_from(u64::from_le_bytes(len)).ok()?;
    let mut head = len.to_vec();
    head.resize(8usize.checked_add(n)?, 0);
    f.read_exact(&mut head[8..]).ok()?;
    crate::digest::header_digest(&head)
}

fn blob_rel(digest: &str) -> String {
    let prefix = digest.get(..2).unwrap_or("00");
    format!("blobs/{prefix}/{digest}.safetensors")
}

/// The digest in a blob's name.
fn digest_of(rel: &str) -> String {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.strip_suffix(".safetensors")
        .unwrap_or(name)
        .to_string()
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
