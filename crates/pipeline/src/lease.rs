//! Run leases: how processes on many machines that share one cache say "a run is live here"
//! without a lock (flock cannot be trusted on NFS or Lustre).
//!
//! A run creates `leases/<name>.<host>.<pid>.<salt>.json` with create-if-absent semantics
//! (a hard link on a file system, `If-None-Match: *` on S3), naming its host, pid, scheduler job and what it runs, and rewrites it
//! every [`HEARTBEAT`] with a new expiry. A lease is live until it expires; one of this host
//! whose process is gone is dead at once. `gc` refuses while another lease is live.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::clock::now_ms;
use crate::error::StoreError;
use crate::fsutil::{hostname, temp_path};

/// The folder (or key prefix) of the leases, relative to the cache root.
const DIR: &str = "leases";

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
    backend: Backend,
    rel: String,
    stop: Arc<AtomicBool>,
    beat: Option<JoinHandle<()>>,
}

impl Lease {
    /// Where the lease is: a path, or an `s3://` URL.
    pub fn location(&self) -> String {
        self.backend.describe(&self.rel)
    }
}

impl Drop for Lease {
    /// Stops the heartbeat and removes the lease, without holding up the process's exit for a
    /// bucket that does not answer: a heartbeat still in a request after a second is left to
    /// finish on its own, and the removal is tried for a few seconds only (a lease left behind
    /// expires after its TTL).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.beat.take() {
            t.thread().unpark();
            let give_up = std::time::Instant::now() + Duration::from_secs(1);
            while !t.is_finished() && std::time::Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let _ = self.backend.delete_soon(&self.rel);
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

/// Creates a lease under `leases/` (create-if-absent: a name already taken is never
/// overwritten).
pub(crate) fn acquire(
    backend: &Backend,
    what: &str,
    job: Option<&str>,
) -> Result<Lease, StoreError> {
    let li = info(what, job);
    let bytes = serde_json::to_vec_pretty(&li).expect("leases serialise");
    let rel = loop {
        // `temp_path` is unique per host, pid and call; drop its leading dot (temp files are
        // left out of listings) and give it the `.json` end.
        let name = temp_path(Path::new(""), "lease").with_extension("json");
        let name = name.to_string_lossy();
        let rel = format!("{DIR}/{}", name.trim_start_matches('.'));
        if backend.create(&rel, &bytes)? {
            break rel;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (b, r, s, what, job) = (
        backend.clone(),
        rel.clone(),
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
            let _ = b.write(&r, &serde_json::to_vec_pretty(&li).expect("serialises"));
        })
        .ok();
    Ok(Lease {
        backend: backend.clone(),
        rel,
        stop,
        beat,
    })
}

/// Every lease that is live now, with its name. Unreadable leases (being written, on a file
/// system without atomic rename) count as live for one TTL after their modification time.
pub(crate) fn live(backend: &Backend) -> Vec<(String, LeaseInfo)> {
    let now = now_ms();
    let mut out = Vec::new();
    for e in backend.list(DIR).unwrap_or_default() {
        if !e.rel.ends_with(".json") {
            continue;
        }
        let li = backend
            .read(&e.rel)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<LeaseInfo>(&b).ok());
        match li {
            Some(li) if li.is_live(now) => out.push((e.rel, li)),
            Some(_) => {}
            None => {
                let young = now.saturating_sub(e.modified_ms) < LEASE_TTL.as_millis() as u64;
                if young {
                    out.push((
                        e.rel,
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
    out
}

/// Removes leases that are no longer live (left by killed processes).
pub(crate) fn remove_dead(backend: &Backend) {
    let now = now_ms();
    for e in backend.list(DIR).unwrap_or_default() {
        if let Some(li) = backend
            .read(&e.rel)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<LeaseInfo>(&b).ok())
        {
            if !li.is_live(now) {
                let _ = backend.delete(&e.rel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_held_lease_is_live_and_gone_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let b = Backend::Local(d.path().to_path_buf());
        let l = acquire(&b, "run all", Some("12_3")).unwrap();
        let v = live(&b);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].1.job.as_deref(), Some("12_3"));
        assert_eq!(v[0].1.pid, std::process::id());
        drop(l);
        assert!(live(&b).is_empty());
        assert_eq!(fs::read_dir(d.path().join(DIR)).unwrap().count(), 0);
    }

    #[test]
    fn expired_and_dead_process_leases_are_not_live() {
        let root = tempfile::tempdir().unwrap();
        let b = Backend::Local(root.path().to_path_buf());
        let d = root.path().join(DIR);
        fs::create_dir_all(&d).unwrap();
        let now = now_ms();
        let mut other = info("run all", None);
        other.host = "elsewhere".into();
        other.expires_ms = now - 1;
        fs::write(d.join("a.json"), serde_json::to_vec(&other).unwrap()).unwrap();
        let mut dead = info("run all", None);
        dead.pid = u32::MAX - 1; // no such process on this host
        fs::write(d.join("b.json"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let mut remote = info("run x --shard 1/2", Some("7"));
        remote.host = "elsewhere".into();
        fs::write(d.join("c.json"), serde_json::to_vec(&remote).unwrap()).unwrap();
        let v = live(&b);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].1.what, "run x --shard 1/2");
        remove_dead(&b);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
    }
}
