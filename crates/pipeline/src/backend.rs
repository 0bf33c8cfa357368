//! Where the store's shared files live: a folder (a local disk or a shared file system) or an
//! S3 bucket. Files are named by their path relative to the cache root (`runs/gen/<key>.json`),
//! with `/` separators on both.
//!
//! Both give the same four operations with the same meaning: read, atomic overwrite,
//! create-if-absent (the first writer's file stays), delete, and a recursive listing.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{io_err, StoreError};
use crate::fsutil::{sync_dir, temp_path, write_atomic, write_synced};
use crate::remote::Remote;

/// A file of the backend, from a listing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub rel: String,
    pub size: u64,
    pub modified_ms: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Local(PathBuf),
    Remote(Arc<Remote>),
}

impl Backend {
    fn local(root: &Path, rel: &str) -> PathBuf {
        rel.split('/').fold(root.to_path_buf(), |p, c| p.join(c))
    }

    /// What to call a file in messages: its path, or its `s3://` URL.
    pub(crate) fn describe(&self, rel: &str) -> String {
        match self {
            Backend::Local(root) => Self::local(root, rel).display().to_string(),
            Backend::Remote(r) => format!("{}/{rel}", r.url().trim_end_matches('/')),
        }
    }

    pub(crate) fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Backend::Local(root) => {
                let p = Self::local(root, rel);
                match fs::read(&p) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_err(&p)(e)),
                }
            }
            Backend::Remote(r) => r.get(rel),
        }
    }

    pub(crate) fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Backend::Local(root) => {
                let p = Self::local(root, rel);
                write_atomic(&p, bytes).map_err(io_err(&p))
            }
            Backend::Remote(r) => r.put(rel, bytes.to_vec()),
        }
    }

    /// Creates the file only if there is none: `true` if this call created it.
    pub(crate) fn create(&self, rel: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        match self {
            Backend::Local(root) => {
                let p = Self::local(root, rel);
                let dir = p.parent().expect("backend files have a parent");
                fs::create_dir_all(dir).map_err(io_err(dir))?;
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tmp = temp_path(dir, &name);
                write_synced(&tmp, bytes).map_err(io_err(&tmp))?;
                // A hard link fails with "exists" where a rename would replace the file.
                let r = fs::hard_link(&tmp, &p);
                let _ = fs::remove_file(&tmp);
                match r {
                    Ok(()) => {
                        sync_dir(dir);
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(io_err(&p)(e)),
                }
            }
            Backend::Remote(r) => r.create(rel, bytes.to_vec()),
        }
    }

    pub(crate) fn delete(&self, rel: &str) -> Result<(), StoreError> {
        match self {
            Backend::Local(root) => {
                let p = Self::local(root, rel);
                match fs::remove_file(&p) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err(&p)(e)),
                }
            }
            Backend::Remote(r) => r.delete(rel),
        }
    }

    /// [`Backend::delete`] that gives up after a few seconds on a bucket that does not
    /// answer (for what expires by itself, such as a lease, on the way out).
    pub(crate) fn delete_soon(&self, rel: &str) -> Result<(), StoreError> {
        match self {
            Backend::Local(_) => self.delete(rel),
            Backend::Remote(r) => r.delete_soon(rel),
        }
    }

    /// Every file under `dir`, recursively, sorted by name; temp files (names starting with
    /// `.`) are left out.
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<Entry>, StoreError> {
        let mut out = match self {
            Backend::Local(root) => {
                let mut out = Vec::new();
                walk(&Self::local(root, dir), dir.trim_end_matches('/'), &mut out);
                out
            }
            Backend::Remote(r) => r
                .list(dir)?
                .into_iter()
                .map(|e| Entry {
                    rel: e.rel,
                    size: e.size,
                    modified_ms: e.modified_ms,
                })
                .collect(),
        };
        out.retain(|e| {
            !e.rel
                .rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with('.'))
        });
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<Entry>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let sub = format!("{rel}/{name}");
        let Ok(md) = e.metadata() else { continue };
        if md.is_dir() {
            walk(&e.path(), &sub, out);
        } else {
            let modified_ms = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            out.push(Entry {
                rel: sub,
                size: md.len(),
                modified_ms,
            });
        }
    }
}
