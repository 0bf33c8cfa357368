//! Run leases: how processes on many machines that share one cache say "a run is live here"
//! without a lock (flock cannot be trusted on NFS or Lustre).
//!
//! A run creates `leases/<host>.<pid>.<salt>.json` with create-if-absent semantics
//! (`O_CREAT|O_EXCL`), naming its host, pid, scheduler job and what it runs, and rewrites it
//! every [`HEARTBEAT`] with a new expiry. A lease is live until it expires; one of this host
//! whose process is gone is dead at once. `gc` refuses while another lease is live.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::error::{io_err, StoreError};
use crate::fsutil::{hostname, temp_path, write_atomic};

/// How often a live run renews its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a lease stays live without a heartbeat (a machine that died or lost the file
/// system stops renewing it).
pub const LEASE_TTL: Duration = Duration::from_secs(120);

/// What a lease file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub host: String,
    pub pid: u32,
    /// The scheduler's job (`SLURM_JOB_ID`, array task), if the run is a batch job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What the run does, e.g. `run vgg-extract --shard 3/8`.
    pub what: String,
    pub heartbeat_ms: u64,
    pub expires_ms: u64,
}

impl LeaseInfo {
    /// Live: not expired, and not a lease of this host whose process is gone.
    pub fn is_live(&self, now: u64) -> bool {
        if self.expires_ms <= now {
            return false;
        }
        // Elsewhere, only the expiry tells; here, the process table does.
        self.host != hostname() || Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    pub fn describe(&self, now: u64) -> String {
        format!(
            "`{}`: pid {} on {}{}, last heartbeat {:.0}s ago",
            self.what,
            self.pid,
            self.host,
            self.job
                .as_deref()
                .map(|j| format!(", job {j}"))
                .unwrap_or_default(),
            now.saturating_sub(self.heartbeat_ms) as f64 / 1000.0
        )
    }
}

/// A held lease: renewed by a background thread, removed when dropped.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    beat: Option<JoinHandle<()>>,
}

impl Lease {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.beat.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

fn info(what: &str, job: Option<&str>) -> LeaseInfo {
    let now = now_ms();
    LeaseInfo {
        host: hostname(),
        pid: std::process::id(),
        job: job.map(str::to_string),
        what: what.to_string(),
        heartbeat_ms: now,
        expires_ms: now + LEASE_TTL.as_millis() as u64,
    }
}

/// Creates a lease in `dir` (create-if-absent: a name already taken is never overwritten).
pub(crate) fn acquire(dir: &Path, what: &str, job: Option<&str>) -> Result<Lease, StoreError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let li = info(what, job);
    let bytes = serde_json::to_vec_pretty(&li).expect("leases serialise");
    let path = loop {
        // `temp_path` is unique per host, pid and call; the name only needs the `.json` end.
        let p = temp_path(dir, "lease").with_extension("json");
        match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(mut f) => {
                f.write_all(&bytes).map_err(io_err(&p))?;
                f.sync_all().map_err(io_err(&p))?;
                break p;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&p)(e)),
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s, what, job) = (
        path.clone(),
        stop.clone(),
        what.to_string(),
        job.map(str::to_string),
    );
    let beat = std::thread::Builder::new()
        .name("lease-heartbeat".into())
        .spawn(move || loop {
            std::thread::park_timeout(HEARTBEAT);
            if s.load(Ordering::SeqCst) {
                return;
            }
            let li = info(&what, job.as_deref());
            let _ = write_atomic(&p, &serde_json::to_vec_pretty(&li).expect("serialises"));
        })
        .ok();
    Ok(Lease { path, stop, beat })
}

/// Every lease in `dir` that is live now, with its file. Unreadable leases (being written)
/// count as live for one TTL after their file's modification time.
pub(crate) fn live(dir: &Path) -> Vec<(PathBuf, LeaseInfo)> {
    let now = now_ms();
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let li = fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseInfo>(&b).ok());
        match li {
            Some(li) if li.is_live(now) => out.push((p, li)),
            Some(_) => {}
            None => {
                let young = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < LEASE_TTL);
                if young {
                    out.push((
                        p,
                        LeaseInfo {
                            host: "?".into(),
                            pid: 0,
                            job: None,
                            what: "a lease being written".into(),
                            heartbeat_ms: now,
                            expires_ms: now,
                        },
                    ));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Removes leases that are no longer live (left by killed processes).
pub(crate) fn remove_dead(dir: &Path) {
    let now = now_ms();
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if let Some(li) = fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseInfo>(&b).ok())
        {
            if !li.is_live(now) {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lease_is_live_and_gone_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let l = acquire(d.path(), "run all", Some("12_3")).unwrap();
        let v = live(d.path());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].1.job.as_deref(), Some("12_3"));
        assert_eq!(v[0].1.pid, std::process::id());
        drop(l);
        assert!(live(d.path()).is_empty());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn expired_and_dead_process_leases_are_not_live() {
        let d = tempfile::tempdir().unwrap();
        let now = now_ms();
        let mut other = info("run all", None);
        other.host = "elsewhere".into();
        other.expires_ms = now - 1;
        fs::write(d.path().join("a.json"), serde_json::to_vec(&other).unwrap()).unwrap();
        let mut dead = info("run all", None);
        dead.pid = u32::MAX - 1; // no such process on this host
        fs::write(d.path().join("b.json"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let mut remote = info("run x --shard 1/2", Some("7"));
        remote.host = "elsewhere".into();
        fs::write(
            d.path().join("c.json"),
            serde_json::to_vec(&remote).unwrap(),
        )
        .unwrap();
        let v = live(d.path());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].1.what, "run x --shard 1/2");
        remove_dead(d.path());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
