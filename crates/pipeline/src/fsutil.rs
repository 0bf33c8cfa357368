//! File-system helpers of the store (a leaf module).
//!
//! Temp files are named `.<name>.<host>.<pid>.<random>.tmp`, unique across processes and
//! machines that share one cache folder, so writers never need a lock to write a file.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temp-file name in `dir` for a file that will be called `name`: host, pid and a
/// per-process counter mixed with the time make it unique across writers.
pub(crate) fn temp_path(dir: &Path, name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let salt = blake3::hash(format!("{n}:{nanos}:{:p}", &COUNTER).as_bytes()).to_hex();
    dir.join(format!(
        ".{name}.{}.{}.{}.tmp",
        hostname(),
        std::process::id(),
        &salt[..12]
    ))
}

/// This machine's host name (for temp names and leases); `unknown-host` if it cannot be read.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.replace(['/', '.', ' '], "_"))
        .unwrap_or_else(|| "unknown-host".into())
}

/// Writes `bytes` to `path` via a uniquely named temp file in the same folder, fsync and
/// rename: readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], for content written piece by piece (never held whole in memory).
pub(crate) fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temp_path(dir, &name);
    let r = (|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        fill(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r?;
    sync_dir(dir);
    Ok(())
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes a rename durable on POSIX file systems; not supported everywhere, and harmless to
/// skip where it is not.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
