//! Cache keys, canonical encodings and digests of external inputs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Canonical JSON: object keys sorted at every level, no whitespace. Used for params in keys.
pub fn canonical_json(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).expect("json values always serialise")
}

/// Everything that goes into a stage's key, kept in its run record so that a later run can say
/// exactly what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub stage: String,
    pub code: String,
    pub params: Value,
    /// `upstream.output` -> artifact digest.
    pub inputs: BTreeMap<String, String>,
    /// Setting name (e.g. `dataset.root`) -> content digest of the file or folder.
    pub externals: BTreeMap<String, String>,
    pub seed: u64,
    pub device: String,
}

impl KeyInputs {
    pub fn key(&self) -> String {
        let mut h = blake3::Hasher::new();
        let mut field = |name: &str, v: &str| {
            h.update(name.as_bytes());
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
        };
        field("stage", &self.stage);
        field("code", &self.code);
        field("params", &canonical_json(&self.params));
        for (k, v) in &self.inputs {
            field("input", k);
            field("digest", v);
        }
        for (k, v) in &self.externals {
            field("external", k);
            field("digest", v);
        }
        field("seed", &self.seed.to_string());
        field("device", &self.device);
        h.finalize().to_hex().to_string()
    }

    /// Human-readable reasons why `self` differs from `old`, e.g.
    /// `params changed: lr 0.001 -> 0.01`.
    pub fn diff(&self, old: &KeyInputs) -> Vec<String> {
        let mut out = Vec::new();
        if self.code != old.code {
            out.push("code changed".to_string());
        }
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &old.params, &mut a);
        flatten("", &self.params, &mut b);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) if x != y => out.push(format!("params changed: {k} {x} -> {y}")),
                (None, Some(y)) => out.push(format!("params changed: {k} (new) -> {y}")),
                (Some(x), None) => out.push(format!("params changed: {k} {x} -> (removed)")),
                _ => {}
            }
        }
        for (k, v) in &self.inputs {
            match old.inputs.get(k) {
                Some(o) if o == v => {}
                Some(_) => out.push(format!("input changed: {k}")),
                None => out.push(format!("input added: {k}")),
            }
        }
        for k in old.inputs.keys().filter(|k| !self.inputs.contains_key(*k)) {
            out.push(format!("input removed: {k}"));
        }
        for (k, v) in &self.externals {
            match old.externals.get(k) {
                Some(o) if o == v => {}
                _ => out.push(format!("external input changed: {k}")),
            }
        }
        for k in old
            .externals
            .keys()
            .filter(|k| !self.externals.contains_key(*k))
        {
            out.push(format!("external input removed: {k}"));
        }
        if self.seed != old.seed {
            out.push(format!("seed changed: {} -> {}", old.seed, self.seed));
        }
        if self.device != old.device {
            out.push(format!("device changed: {} -> {}", old.device, self.device));
        }
        out
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

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
        crate::store::write_atomic(path, &bytes)?;
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
    use serde_json::json;

    fn ki() -> KeyInputs {
        KeyInputs {
            stage: "s".into(),
            code: "c1".into(),
            params: json!({"lr": 0.001, "opt": {"beta": 0.9}}),
            inputs: [("a.out".to_string(), "d1".to_string())].into(),
            externals: BTreeMap::new(),
            seed: 1,
            device: "cpu".into(),
        }
    }

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": {"d": 2, "c": 3}})),
            r#"{"a":{"c":3,"d":2},"b":1}"#
        );
    }

    #[test]
    fn key_depends_on_each_field() {
        let base = ki();
        let k = base.key();
        let mut v = ki();
        v.params = json!({"opt": {"beta": 0.9}, "lr": 0.001});
        assert_eq!(v.key(), k, "param order does not matter");
        let variants: [fn(&mut KeyInputs); 6] = [
            |k| k.code = "c2".into(),
            |k| k.params = json!({"lr": 0.01, "opt": {"beta": 0.9}}),
            |k| {
                k.inputs.insert("a.out".into(), "d2".into());
            },
            |k| k.seed = 2,
            |k| k.device = "cuda".into(),
            |k| {
                k.externals.insert("dataset.root".into(), "x".into());
            },
        ];
        for f in variants {
            let mut v = ki();
            f(&mut v);
            assert_ne!(v.key(), k);
        }
    }

    #[test]
    fn diff_names_what_changed() {
        let old = ki();
        let mut new = ki();
        new.params = json!({"lr": 0.01, "opt": {"beta": 0.9}});
        new.code = "c2".into();
        new.inputs.insert("a.out".into(), "d9".into());
        assert_eq!(
            new.diff(&old),
            [
                "code changed",
                "params changed: lr 0.001 -> 0.01",
                "input changed: a.out"
            ]
        );
    }

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
