//! The stat cache and content digests of external inputs (files and folders).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the stat cache remembers of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StatEntry {
    len: u64,
    mtime_ns: i128,
    ino: u64,
    digest: String,
}

/// Remembers file digests by (size, mtime, inode). It only decides whether a file must be
/// re-hashed: the content hash is what goes into keys. Entries whose mtime is too close to the
/// moment they were recorded are not trusted (a file written in the same clock tick as it
/// was hashed could change without changing its mtime).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StatCache {
    /// Unix nanoseconds when the cache was last saved.
    saved_at_ns: i128,
    entries: BTreeMap<PathBuf, StatEntry>,
    #[serde(skip)]
    dirty: bool,
    /// Digests already computed in this process, by path (several stages often read the same
    /// dataset folder).
    #[serde(skip)]
    memo: BTreeMap<PathBuf, String>,
}

const RACY_WINDOW_NS: i128 = 2_000_000_000;

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn mtime_ns(md: &fs::Metadata) -> i128 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[cfg(unix)]
fn inode(md: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(md)
}
#[cfg(not(unix))]
fn inode(_md: &fs::Metadata) -> u64 {
    0
}

impl StatCache {
    pub(crate) fn load(path: &Path) -> StatCache {
        fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(crate) fn save(&mut self, path: &Path) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.saved_at_ns = now_ns();
        let bytes = serde_json::to_vec(self).expect("stat cache serialises");
        crate::fsutil::write_atomic(path, &bytes)?;
        self.dirty = false;
        Ok(())
    }

    /// Digest of one file's content, from the cache when its stat is unchanged and not racy.
    fn file_digest(&mut self, path: &Path, md: &fs::Metadata) -> std::io::Result<String> {
        let (len, mt, ino) = (md.len(), mtime_ns(md), inode(md));
        if let Some(e) = self.entries.get(path) {
            if e.len == len
                && e.mtime_ns == mt
                && e.ino == ino
                && mt + RACY_WINDOW_NS < self.saved_at_ns
            {
                return Ok(e.digest.clone());
            }
        }
        let mut h = blake3::Hasher::new();
        h.update_reader(fs::File::open(path)?)?;
        let digest = h.finalize().to_hex().to_string();
        self.entries.insert(
            path.to_path_buf(),
            StatEntry {
                len,
                mtime_ns: mt,
                ino,
                digest: digest.clone(),
            },
        );
        self.dirty = true;
        Ok(digest)
    }

    /// Content digest of a file, or of a folder as a whole (sorted relative paths and file
    /// digests). An unreadable file inside a folder does not fail the digest: its error kind is
    /// hashed instead, so that the stage that reads the folder can report it by name.
    pub(crate) fn path_digest(&mut self, path: &Path) -> std::io::Result<String> {
        if let Some(d) = self.memo.get(path) {
            return Ok(d.clone());
        }
        let d = self.compute_path_digest(path)?;
        self.memo.insert(path.to_path_buf(), d.clone());
        Ok(d)
    }

    fn compute_path_digest(&mut self, path: &Path) -> std::io::Result<String> {
        let md = fs::metadata(path)?;
        if md.is_file() {
            return self.file_digest(path, &md);
        }
        let mut files = Vec::new();
        walk(path, path, &mut files)?;
        files.sort();
        let mut h = blake3::Hasher::new();
        h.update(b"tree-v1\0");
        for rel in files {
            let full = path.join(&rel);
            let d = match fs::metadata(&full).and_then(|md| {
                if md.is_file() {
                    self.file_digest(&full, &md)
                } else {
                    Ok("not-a-file".to_string())
                }
            }) {
                Ok(d) => d,
                Err(e) => format!("unreadable:{:?}", e.kind()),
            };
            h.update(rel.as_bytes());
            h.update(b"\0");
            h.update(d.as_bytes());
            h.update(b"\n");
        }
        Ok(h.finalize().to_hex().to_string())
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() || (ft.is_symlink() && p.is_dir()) {
            walk(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_digest_follows_content_not_mtime() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("d/sub")).unwrap();
        fs::write(t.path().join("d/a.txt"), "one").unwrap();
        fs::write(t.path().join("d/sub/b.txt"), "two").unwrap();
        let mut sc = StatCache::default();
        let d1 = sc.path_digest(&t.path().join("d")).unwrap();
        // Same content elsewhere: same digest (no absolute paths).
        fs::create_dir_all(t.path().join("e/sub")).unwrap();
        fs::write(t.path().join("e/a.txt"), "one").unwrap();
        fs::write(t.path().join("e/sub/b.txt"), "two").unwrap();
        assert_eq!(sc.path_digest(&t.path().join("e")).unwrap(), d1);
        fs::write(t.path().join("d/a.txt"), "uno").unwrap();
        sc.memo.clear();
        assert_ne!(sc.path_digest(&t.path().join("d")).unwrap(), d1);
    }

    #[test]
    fn stat_cache_never_trusts_a_racy_entry() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, "aaaa").unwrap();
        let mut sc = StatCache::default();
        let d1 = sc.path_digest(&f).unwrap();
        sc.saved_at_ns = now_ns();
        // Rewrite with the same size within the same second: the entry is racy, so re-hashed.
        fs::write(&f, "bbbb").unwrap();
        sc.memo.clear();
        assert_ne!(sc.path_digest(&f).unwrap(), d1);
    }
}
