//! The stat cache and content digests of external inputs (files and folders).
//!
//! One binary file per input path (`stat-cache/<blake3 of the absolute path>.bin` in the
//! store's local folder), memory-mapped when read, never parsed whole:
//!
//! ```text
//! magic "XTSTAT03" | saved_at_ns i64 | tree digest [32] | dirs u64 | files u64 | names u64 | targets u64
//! dir records    (dirs x 48 bytes: name offset u64, name length u64, mtime i64, ctime i64, ino u64, 0)
//! file records   (files x 88 bytes: name offset, name length, kind u32, link target u32,
//!                 len, mtime, ctime, ino, digest [32])
//! target records (targets x 16 bytes: name offset, name length)
//! names (relative paths, then link targets, each followed by a NUL), then the blake3 of
//! everything before it
//! ```
//!
//! Updated incrementally: while a tree keeps its listing, what changed is appended to a
//! journal beside it (`<same name>.log`), one batch per run, each batch whole or ignored:
//!
//! ```text
//! "XTJRNL01" | base id [16] (the first bytes of the base file's checksum) | saved_at_ns i64
//! | tree digest [32] | n u64 | n x (file index u64, kind u32, link target u32, len, mtime,
//! ctime, ino, digest [32])
//! | blake3 of the batch before it
//! ```
//!
//! A torn or damaged batch ends the journal (what follows is ignored, its files hashed again);
//! a journal of another base is ignored. The base is rewritten when the listing changes or
//! the journal grows past an eighth of the files.
//!
//! Files are sorted by relative path (the order of the folder digest), so a lookup is a binary
//! search and the no-op needs neither a map nor a parse. A folder's listing is reused when
//! every folder of the tree has the status it had (adding, removing or renaming an entry
//! changes its folder's mtime and ctime); otherwise the tree is walked again. Every file is
//! still `stat`ed (in parallel): a file whose (size, mtime, ctime, inode) differ, or whose
//! times are too close to the moment the cache was saved (a write in the same clock tick
//! could leave them unchanged), is hashed again. A file that is truncated, damaged (checksum)
//! or of another format is ignored and rewritten: it only ever saves hashing, never decides a
//! digest.
//!
//! A tree of symbolic links (a dataset view over a few thousand images, say) costs less: a
//! link's target cannot change in place and its folder's status changes when it is replaced,
//! so while the folders are unchanged each link still names the target it named, and only the
//! distinct targets (stored once, resolved) need a `stat`, not every link. The status kept for
//! a link is its target's, as for any path that is read through a link.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;

const MAGIC: &[u8; 8] = b"XTSTAT03";
const HEADER: usize = 80;
const TARGET_REC: usize = 16;
const DIR_REC: usize = 48;
const FILE_REC: usize = 88;
const TRAILER: usize = 32;
const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Kind of a file record: a regular file with its content digest, or something whose
/// digest is recomputed every time (not a file, unreadable).
const KIND_FILE: u64 = 0;
const KIND_OTHER: u64 = 1;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// What identifies a version of a file or folder without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Stat {
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl Stat {
    #[cfg(unix)]
    fn of(md: &fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            len: md.len(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
        }
    }
    #[cfg(not(unix))]
    fn of(md: &fs::Metadata) -> Stat {
        let t = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Stat {
            len: md.len(),
            mtime_ns: t,
            ctime_ns: t,
            ino: 0,
        }
    }

    /// Old enough, compared with when the cache was saved, to be trusted.
    fn settled(&self, saved_at_ns: i64) -> bool {
        self.mtime_ns.max(self.ctime_ns) + RACY_WINDOW_NS < saved_at_ns
    }
}

/// One file of a tree, as found now.
#[derive(Debug, Clone)]
struct FileNow {
    kind: u64,
    stat: Stat,
    digest: [u8; 32],
    /// For KIND_OTHER: the text hashed into the folder digest.
    other: Option<Box<str>>,
    /// For a symbolic link: the path it resolves through (its folder joined with its target).
    target: Option<Arc<[u8]>>,
}

/// A stored cache file, memory-mapped and checked.
struct Stored {
    map: Mmap,
    saved_at_ns: i64,
    tree: [u8; 32],
    dirs: usize,
    files: usize,
    targets: usize,
    /// File records replaced by the journal, by index.
    newer: std::collections::HashMap<usize, FileRec>,
    /// Records in the journal (its size, to decide when to fold it into the base).
    journal_records: usize,
    /// Whether the journal was read to its end (a torn or foreign tail is never appended to:
    /// what followed it could not be read).
    journal_clean: bool,
    /// The first bytes of the base's checksum: what its journal's batches name.
    base_id: [u8; 16],
}

/// A file record: kind and link target (the low and high halves: see the module docs),
/// status, digest.
type FileRec = (u64, Stat, [u8; 32]);

/// The kind half of a stored kind-and-target field.
fn kind_of(raw: u64) -> u64 {
    raw & 0xffff_ffff
}

/// The link target half (0: not a link; `t`: target `t - 1` of the tree's table).
fn target_of(raw: u64) -> usize {
    (raw >> 32) as usize
}

const JOURNAL_MAGIC: &[u8; 8] = b"XTJRNL01";
const BATCH_HEAD: usize = 8 + 16 + 8 + 32 + 8;
const JOURNAL_REC: usize = 6 * 8 + 32;

fn journal_of(file: &Path) -> PathBuf {
    file.with_extension("log")
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Stored {
    /// The cache file at `path` if it is whole and of this format; `None` otherwise (a
    /// missing, truncated, damaged or foreign file is never trusted).
    fn open(path: &Path) -> Option<Stored> {
        let file = fs::File::open(path).ok()?;
        // Safety: the file is only ever replaced by rename, never written in place; a
        // concurrent replacement leaves this mapping on the old inode.
        let map = unsafe { Mmap::map(&file) }.ok()?;
        let b = &map[..];
        if b.len() < HEADER + TRAILER || &b[..8] != MAGIC {
            return None;
        }
        let (dirs, files, names) = (u64_at(b, 48), u64_at(b, 56), u64_at(b, 64));
        let targets = u64_at(b, 72);
        let body = (dirs as u128) * DIR_REC as u128
            + (files as u128) * FILE_REC as u128
            + (targets as u128) * TARGET_REC as u128
            + names as u128;
        if HEADER as u128 + body + TRAILER as u128 != b.len() as u128 {
            return None;
        }
        let end = b.len() - TRAILER;
        if blake3::hash(&b[..end]).as_bytes() != &b[end..] {
            return None;
        }
        let (saved_at_ns, tree) = (i64_at(b, 8), b[16..48].try_into().expect("32 bytes"));
        let base_id = b[end..end + 16].try_into().expect("16 bytes");
        let mut s = Stored {
            saved_at_ns,
            tree,
            newer: Default::default(),
            journal_records: 0,
            journal_clean: true,
            base_id,
            dirs: dirs as usize,
            files: files as usize,
            targets: targets as usize,
            map,
        };
        // Every name must lie inside the names area.
        let names_at = s.names_at();
        let b = &s.map[..];
        let ok = (0..s.dirs)
            .map(|i| HEADER + i * DIR_REC)
            .chain((0..s.files).map(|i| s.file_at(i)))
            .chain((0..s.targets).map(|t| s.target_at(t)))
            .all(|r| {
                let (off, len) = (u64_at(b, r) as u128, u64_at(b, r + 8) as u128);
                names_at as u128 + off + len < end as u128
            })
            && (0..s.files).all(|i| target_of(u64_at(b, s.file_at(i) + 16)) <= s.targets);
        if !ok {
            return None;
        }
        if let Ok(journal) = fs::read(journal_of(path)) {
            s.journal_clean = s.apply_journal(&journal);
        }
        Some(s)
    }

    /// Applies the journal's whole batches, in order, up to the first that is not; whether
    /// that was the end.
    fn apply_journal(&mut self, j: &[u8]) -> bool {
        let mut at = 0;
        while j.len() >= at + BATCH_HEAD + 32 && &j[at..at + 8] == JOURNAL_MAGIC {
            let h = &j[at..];
            let n = u64_at(h, BATCH_HEAD - 8) as u128;
            let len = BATCH_HEAD as u128 + n * JOURNAL_REC as u128;
            if h[8..24] != self.base_id || (h.len() as u128) < len + 32 {
                return false;
            }
            let len = len as usize;
            if blake3::hash(&h[..len]).as_bytes() != &h[len..len + 32] {
                return false;
            }
            let recs: Vec<(usize, FileRec)> = (0..n as usize)
                .map(|k| {
                    let r = BATCH_HEAD + k * JOURNAL_REC;
                    let stat = Stat {
                        len: u64_at(h, r + 16),
                        mtime_ns: i64_at(h, r + 24),
                        ctime_ns: i64_at(h, r + 32),
                        ino: u64_at(h, r + 40),
                    };
                    let digest = h[r + 48..r + 80].try_into().expect("32 bytes");
                    (u64_at(h, r) as usize, (u64_at(h, r + 8), stat, digest))
                })
                .collect();
            if recs
                .iter()
                .any(|(i, r)| *i >= self.files || target_of(r.0) > self.targets)
            {
                return false;
            }
            self.saved_at_ns = i64_at(h, 24);
            self.tree = h[32..64].try_into().expect("32 bytes");
            self.journal_records += recs.len();
            self.newer.extend(recs);
            at += len + 32;
        }
        at == j.len()
    }

    fn names_at(&self) -> usize {
        HEADER + self.dirs * DIR_REC + self.files * FILE_REC + self.targets * TARGET_REC
    }
    fn target_at(&self, t: usize) -> usize {
        HEADER + self.dirs * DIR_REC + self.files * FILE_REC + t * TARGET_REC
    }
    /// The path of link target `t` (as resolved: the link's folder joined with its target).
    fn target_path(&self, t: usize) -> &[u8] {
        let b = &self.map[..];
        let r = self.target_at(t);
        let (off, len) = (u64_at(b, r) as usize, u64_at(b, r + 8) as usize);
        let at = self.names_at() + off;
        &b[at..at + len]
    }
    fn file_at(&self, i: usize) -> usize {
        HEADER + self.dirs * DIR_REC + i * FILE_REC
    }
    fn name(&self, rec: usize) -> &str {
        let b = &self.map[..];
        let (off, len) = (u64_at(b, rec) as usize, u64_at(b, rec + 8) as usize);
        let at = self.names_at() + off;
        std::str::from_utf8(&b[at..at + len]).unwrap_or("\u{fffd}")
    }
    fn dir(&self, i: usize) -> (&str, Stat) {
        let r = HEADER + i * DIR_REC;
        let b = &self.map[..];
        let stat = Stat {
            len: 0,
            mtime_ns: i64_at(b, r + 16),
            ctime_ns: i64_at(b, r + 24),
            ino: u64_at(b, r + 32),
        };
        (self.name(r), stat)
    }
    fn file_name(&self, i: usize) -> &str {
        self.name(self.file_at(i))
    }
    /// File `i`'s kind (without its link target), status and digest.
    fn file(&self, i: usize) -> FileRec {
        let (raw, stat, digest) = self.raw_file(i);
        (kind_of(raw), stat, digest)
    }
    /// File `i`'s link target's index plus one (0: not a link).
    fn target(&self, i: usize) -> usize {
        target_of(self.raw_file(i).0)
    }
    fn raw_file(&self, i: usize) -> FileRec {
        if !self.newer.is_empty() {
            if let Some(rec) = self.newer.get(&i) {
                return *rec;
            }
        }
        let r = self.file_at(i);
        let b = &self.map[..];
        let stat = Stat {
            len: u64_at(b, r + 24),
            mtime_ns: i64_at(b, r + 32),
            ctime_ns: i64_at(b, r + 40),
            ino: u64_at(b, r + 48),
        };
        (
            u64_at(b, r + 16),
            stat,
            b[r + 56..r + 88].try_into().expect("32 bytes"),
        )
    }
    fn find(&self, rel: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.files);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.file_name(mid).cmp(rel) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The tree's folders, if every one still has its cached status (then the cached listing
    /// of files is the listing now).
    fn dirs_if_unchanged(&self, root: &Path) -> Option<Vec<(String, Stat)>> {
        let mut dirs = Vec::with_capacity(self.dirs);
        for i in 0..self.dirs {
            let (rel, then) = self.dir(i);
            let now = Stat::of(&fs::metadata(join(root, rel)).ok()?);
            let now = Stat { len: 0, ..now };
            if now != then || !then.settled(self.saved_at_ns) {
                return None;
            }
            dirs.push((rel.to_string(), now));
        }
        Some(dirs)
    }

    fn names(&self) -> Names {
        let mut names = Names::default();
        for i in 0..self.files {
            names.push(self.file_name(i));
        }
        names
    }
}

/// Relative paths in one buffer (a million `String`s would cost twice the memory).
#[derive(Debug, Default)]
struct Names {
    blob: String,
    spans: Vec<(usize, usize)>,
}

impl Names {
    fn push(&mut self, rel: &str) {
        self.spans.push((self.blob.len(), rel.len()));
        self.blob.push_str(rel);
    }
    fn get(&self, i: usize) -> &str {
        let (at, len) = self.spans[i];
        &self.blob[at..at + len]
    }
    fn len(&self) -> usize {
        self.spans.len()
    }
    fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }
    fn sort(&mut self) {
        let blob = &self.blob;
        self.spans
            .par_sort_unstable_by(|a, b| blob[a.0..a.0 + a.1].cmp(&blob[b.0..b.0 + b.1]));
    }
}

fn join(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// Walks `dir` (following symbolic links to folders), noting every folder's status before
/// reading it and every other entry's path relative to `root`.
fn walk(
    root: &Path,
    dir: &Path,
    dirs: &mut Vec<(String, Stat)>,
    out: &mut Names,
) -> std::io::Result<()> {
    let rel_of = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let stat = Stat::of(&fs::metadata(dir)?);
    dirs.push((rel_of(dir), Stat { len: 0, ..stat }));
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() || (ft.is_symlink() && p.is_dir()) {
            walk(root, &p, dirs, out)?;
        } else {
            out.push(&rel_of(&p));
        }
    }
    Ok(())
}

/// The state of one file now, hashing it only when the cached entry cannot be trusted.
fn check_file(
    path: &Path,
    found: Found,
    cached: Option<(u64, Stat, [u8; 32])>,
    saved_at_ns: i64,
) -> FileNow {
    let (found, target) = found;
    let other = |what: String| FileNow {
        kind: KIND_OTHER,
        stat: Stat::default(),
        digest: [0; 32],
        other: Some(what.into()),
        target: None,
    };
    let stat = match found {
        Ok((stat, true)) => stat,
        Ok((_, false)) => return other("not-a-file".into()),
        Err(e) => return other(unreadable(e.kind())),
    };
    if let Some((KIND_FILE, then, digest)) = cached {
        if then == stat && stat.settled(saved_at_ns) {
            return FileNow {
                kind: KIND_FILE,
                stat,
                digest,
                other: None,
                target,
            };
        }
    }
    let hashed = fs::File::open(path).and_then(|f| {
        let mut h = blake3::Hasher::new();
        h.update_reader(f)?;
        Ok(*h.finalize().as_bytes())
    });
    match hashed {
        Ok(digest) => FileNow {
            kind: KIND_FILE,
            stat,
            digest,
            other: None,
            target,
        },
        Err(e) => other(unreadable(e.kind())),
    }
}

/// The text hashed for an entry that cannot be read.
fn unreadable(kind: std::io::ErrorKind) -> String {
    format!("unreadable:{kind:?}")
}

/// Writes the cache file (see the module docs), its checksum last.
fn encode(
    w: &mut dyn Write,
    saved_at_ns: i64,
    tree: &[u8; 32],
    dirs: &[(String, Stat)],
    names: &Names,
    files: &[FileNow],
) -> std::io::Result<()> {
    let mut h = blake3::Hasher::new();
    let mut put = |bytes: &[u8]| -> std::io::Result<()> {
        h.update(bytes);
        w.write_all(bytes)
    };
    // The distinct link targets, numbered in order of first use.
    let mut index: std::collections::HashMap<&[u8], u64> = Default::default();
    let mut targets: Vec<&[u8]> = Vec::new();
    let target_ids: Vec<u64> = files
        .iter()
        .map(|f| match &f.target {
            None => 0,
            Some(t) => *index.entry(t).or_insert_with(|| {
                targets.push(t);
                targets.len() as u64
            }),
        })
        .collect();
    let names_len: usize = dirs.iter().map(|(n, _)| n.len() + 1).sum::<usize>()
        + names.iter().map(|n| n.len() + 1).sum::<usize>()
        + targets.iter().map(|t| t.len() + 1).sum::<usize>();
    put(MAGIC)?;
    put(&saved_at_ns.to_le_bytes())?;
    put(tree)?;
    for n in [dirs.len(), files.len(), names_len, targets.len()] {
        put(&(n as u64).to_le_bytes())?;
    }
    let mut off = 0u64;
    let mut rec = Vec::with_capacity(FILE_REC);
    let mut name_ref = |rec: &mut Vec<u8>, n: &[u8]| {
        rec.clear();
        rec.extend_from_slice(&off.to_le_bytes());
        rec.extend_from_slice(&(n.len() as u64).to_le_bytes());
        off += n.len() as u64 + 1;
    };
    for (n, s) in dirs {
        name_ref(&mut rec, n.as_bytes());
        for v in [s.mtime_ns, s.ctime_ns, s.ino as i64, 0] {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        put(&rec)?;
    }
    for ((n, f), t) in names.iter().zip(files).zip(&target_ids) {
        name_ref(&mut rec, n.as_bytes());
        rec.extend_from_slice(&(f.kind | t << 32).to_le_bytes());
        rec.extend_from_slice(&f.stat.len.to_le_bytes());
        for v in [f.stat.mtime_ns, f.stat.ctime_ns, f.stat.ino as i64] {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        rec.extend_from_slice(&f.digest);
        put(&rec)?;
    }
    for t in &targets {
        name_ref(&mut rec, t);
        put(&rec)?;
    }
    let all = dirs.iter().map(|(n, _)| n.as_bytes());
    for n in all
        .chain(names.iter().map(str::as_bytes))
        .chain(targets.iter().copied())
    {
        put(n)?;
        put(&[0])?;
    }
    let sum = h.finalize();
    w.write_all(sum.as_bytes())
}

/// Stores a tree's state (a failure only costs hashing next time).
fn save(file: &Path, tree: &[u8; 32], dirs: &[(String, Stat)], names: &Names, files: &[FileNow]) {
    let saved_at = now_ns();
    let _ =
        crate::fsutil::write_atomic_with(file, |w| encode(w, saved_at, tree, dirs, names, files));
}

/// The folder digest: sorted relative paths and their files' digests.
fn tree_digest(names: &Names, files: &[FileNow]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"tree-v1\0");
    let mut buf = Vec::with_capacity(1 << 20);
    for (rel, f) in names.iter().zip(files) {
        buf.extend_from_slice(rel.as_bytes());
        buf.push(0);
        if f.kind == KIND_FILE {
            buf.extend_from_slice(blake3::Hash::from_bytes(f.digest).to_hex().as_bytes());
        } else {
            buf.extend_from_slice(f.other.as_deref().unwrap_or("").as_bytes());
        }
        buf.push(b'\n');
        if buf.len() >= 1 << 20 {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    *h.finalize().as_bytes()
}

/// Content digests of external inputs, remembered by file status (see the module docs).
#[derive(Debug)]
pub(crate) struct StatCache {
    /// Where the per-input cache files live.
    dir: PathBuf,
    /// Digests already computed in this process, by path (several stages often read the same
    /// dataset folder).
    memo: BTreeMap<PathBuf, String>,
    /// Where a bar shows the check of a tree that cannot take the no-op path.
    progress: Option<crate::Progress>,
}

impl StatCache {
    pub(crate) fn open(dir: PathBuf) -> StatCache {
        // The JSON stat cache of earlier versions (hundreds of megabytes on a large tree) is
        // no longer read.
        let _ = fs::remove_file(dir.with_file_name("stat-cache.json"));
        StatCache {
            dir,
            memo: BTreeMap::new(),
            progress: None,
        }
    }

    /// Shows a bar while a tree's files are checked (and hashed where they changed).
    pub(crate) fn with_progress(mut self, progress: crate::Progress) -> StatCache {
        self.progress = Some(progress);
        self
    }

    fn file_for(&self, path: &Path) -> PathBuf {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let key = blake3::hash(abs.as_os_str().as_encoded_bytes()).to_hex();
        self.dir.join(format!("{}.bin", &key[..32]))
    }

    /// Content digest of a file, or of a folder as a whole (sorted relative paths and file
    /// digests). An unreadable file inside a folder does not fail the digest: its error kind is
    /// hashed instead, so that the stage that reads the folder can report it by name.
    pub(crate) fn path_digest(&mut self, path: &Path) -> std::io::Result<String> {
        if let Some(d) = self.memo.get(path) {
            return Ok(d.clone());
        }
        let md = fs::metadata(path)?;
        let store = self.file_for(path);
        let stored = Stored::open(&store);
        let d = if md.is_file() {
            single_file(path, stored.as_ref(), &store)?
        } else {
            tree(path, stored.as_ref(), &store, self.progress.as_ref())?
        };
        self.memo.insert(path.to_path_buf(), d.clone());
        Ok(d)
    }
}

/// A single file's digest, and the cache file to write if it changed.
fn single_file(path: &Path, stored: Option<&Stored>, store: &Path) -> std::io::Result<String> {
    let saved = stored.map_or(i64::MIN, |s| s.saved_at_ns);
    let cached = stored.filter(|s| s.files == 1).map(|s| s.file(0));
    let found = fs::metadata(path).map(|md| (Stat::of(&md), md.is_file()));
    let now = check_file(path, (found, None), cached, saved);
    if now.kind != KIND_FILE {
        // Unreadable: the error itself, as before the cache.
        fs::File::open(path)?;
        return Err(std::io::Error::other(
            now.other.unwrap_or_default().to_string(),
        ));
    }
    let hex = blake3::Hash::from_bytes(now.digest).to_hex().to_string();
    let unchanged =
        cached.is_some_and(|(_, s, d)| s == now.stat && d == now.digest) && now.stat.settled(saved);
    if !unchanged {
        let mut names = Names::default();
        names.push("");
        let digest = now.digest;
        save(store, &digest, &[], &names, &[now]);
    }
    Ok(hex)
}

/// Open handles of a tree's folders, to `stat` each file by its name in its folder (a path
/// walk from the root for every file costs more than the `stat` itself).
struct Folders<'a> {
    root: &'a Path,
    open: BTreeMap<String, fs::File>,
}

impl Folders<'_> {
    fn open<'a>(root: &'a Path, dirs: &[(String, Stat)]) -> Folders<'a> {
        let open = dirs
            .iter()
            .filter_map(|(rel, _)| Some((rel.clone(), fs::File::open(join(root, rel)).ok()?)))
            .collect();
        Folders { root, open }
    }

    /// The status of the file at `rel` (following symbolic links) and whether it is a file.
    fn stat(&self, rel: &str) -> std::io::Result<(Stat, bool)> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        match self.open.get(dir) {
            #[cfg(unix)]
            Some(d) if name.len() < NAME_MAX && !name.contains('\0') => {
                stat_in(d, name, 0).map(|(st, mode)| (st, mode == libc::S_IFREG))
            }
            _ => fs::metadata(self.root.join(rel)).map(|md| (Stat::of(&md), md.is_file())),
        }
    }

    /// Like [`Folders::stat`], and for a symbolic link the path it resolves through; each
    /// distinct target is looked up once per `memo`.
    fn stat_noting_link(&self, rel: &str, memo: &mut Targets) -> Found {
        #[cfg(unix)]
        {
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            if let Some(d) = self.open.get(dir) {
                if name.len() < NAME_MAX && !name.contains('\0') {
                    match stat_in(d, name, libc::AT_SYMLINK_NOFOLLOW) {
                        Err(e) => return (Err(e), None),
                        Ok((st, mode)) if mode != libc::S_IFLNK => {
                            return (Ok((st, mode == libc::S_IFREG)), None)
                        }
                        Ok(_) => {}
                    }
                    if let Ok(target) = link_in(d, name) {
                        use std::os::unix::ffi::OsStrExt;
                        let full = join(self.root, dir).join(target);
                        let key = full.as_os_str().as_bytes();
                        if let Some((path, found)) = memo.get(key) {
                            return (found.map_err(std::io::Error::from), Some(path.clone()));
                        }
                        let found = fs::metadata(&full)
                            .map(|md| (Stat::of(&md), md.is_file()))
                            .map_err(|e| e.kind());
                        let path: Arc<[u8]> = Arc::from(key);
                        memo.insert(key.to_vec(), (path.clone(), found));
                        return (found.map_err(std::io::Error::from), Some(path));
                    }
                }
            }
        }
        (self.stat(rel), None)
    }
}

/// A file's status (following links) and whether it is a regular file; for a link, the path
/// it resolves through.
type Found = (std::io::Result<(Stat, bool)>, Option<Arc<[u8]>>);

/// Link targets already looked up: path, status (or why not).
type Targets =
    std::collections::HashMap<Vec<u8>, (Arc<[u8]>, Result<(Stat, bool), std::io::ErrorKind>)>;

const NAME_MAX: usize = 1024;

#[cfg(unix)]
fn c_name(name: &str) -> [u8; NAME_MAX] {
    let mut c = [0u8; NAME_MAX];
    c[..name.len()].copy_from_slice(name.as_bytes());
    c
}

/// The target of the symbolic link `name` in the open folder `dir`.
#[cfg(unix)]
fn link_in(dir: &fs::File, name: &str) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = c_name(name);
    let mut buf = vec![0u8; 4096];
    // Safety: `c` is NUL-terminated, `buf` is writable for its length, the handle is open.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize == buf.len() {
        return Err(std::io::Error::other("link target too long"));
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&buf)))
}

/// `fstatat` of `name` in the open folder `dir`: its status and file type bits.
#[cfg(unix)]
fn stat_in(
    dir: &fs::File,
    name: &str,
    flags: libc::c_int,
) -> std::io::Result<(Stat, libc::mode_t)> {
    use std::os::fd::AsRawFd;
    let c = c_name(name);
    // Safety: `c` is NUL-terminated (name is shorter than the buffer and has no NUL), `st`
    // is a plain struct the call fills, and the folder's handle is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr().cast(), &mut st, flags) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let stat = Stat {
        len: st.st_size as u64,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        ino: st.st_ino,
    };
    Ok((stat, st.st_mode & libc::S_IFMT))
}

/// Whether every file of an unchanged listing still has its cached, settled status.
/// A link is not `stat`ed itself: its target's status, looked up once, is compared.
fn all_files_unchanged(s: &Stored, folders: &Folders<'_>) -> bool {
    let targets: Vec<Option<Stat>> = (0..s.targets)
        .into_par_iter()
        .map(|t| {
            let md = fs::metadata(os_str(s.target_path(t))).ok()?;
            md.is_file().then(|| Stat::of(&md))
        })
        .collect();
    (0..s.files).into_par_iter().with_min_len(1024).all(|i| {
        let (raw, then, _) = s.raw_file(i);
        if kind_of(raw) != KIND_FILE || !then.settled(s.saved_at_ns) {
            return false;
        }
        let now = match target_of(raw) {
            0 => folders
                .stat(s.file_name(i))
                .ok()
                .and_then(|(now, is_file)| is_file.then_some(now)),
            t => targets[t - 1],
        };
        now == Some(then)
    })
}

#[cfg(unix)]
fn os_str(b: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(b)
}
#[cfg(not(unix))]
fn os_str(b: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(std::str::from_utf8(b).unwrap_or(""))
}

/// A folder's digest; the cache file is rewritten if anything changed.
fn tree(
    root: &Path,
    stored: Option<&Stored>,
    store: &Path,
    progress: Option<&crate::Progress>,
) -> std::io::Result<String> {
    let saved = stored.map_or(i64::MIN, |s| s.saved_at_ns);
    let same_dirs = stored.and_then(|s| Some((s, s.dirs_if_unchanged(root)?)));
    // The no-op: the same folders, every file with its cached status.
    if let Some((s, dirs)) = &same_dirs {
        if all_files_unchanged(s, &Folders::open(root, dirs)) {
            return Ok(blake3::Hash::from_bytes(s.tree).to_hex().to_string());
        }
    }
    let listing_same = same_dirs.is_some();
    let (dirs, names) = match same_dirs {
        Some((s, dirs)) => (dirs, s.names()),
        None => {
            let (mut dirs, mut names) = (Vec::new(), Names::default());
            walk(root, root, &mut dirs, &mut names)?;
            names.sort();
            dirs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            (dirs, names)
        }
    };
    let folders = Folders::open(root, &dirs);
    let bar = progress
        .filter(|_| names.len() >= 10_000)
        .map(|p| p.bar(names.len() as u64, "inputs"));
    if let Some(b) = &bar {
        b.set_message(format!("checking {}", root.display()));
    }
    let files: Vec<FileNow> = (0..names.len())
        .into_par_iter()
        .with_min_len(256)
        .map_init(Targets::new, |memo, i| {
            let rel = names.get(i);
            let cached = stored.and_then(|s| {
                let at = if listing_same { Some(i) } else { s.find(rel) };
                at.map(|j| s.file(j))
            });
            let now = check_file(
                &root.join(rel),
                folders.stat_noting_link(rel, memo),
                cached,
                saved,
            );
            if let Some(b) = &bar {
                b.inc(1);
            }
            now
        })
        .collect();
    drop(bar);
    let digest = tree_digest(&names, &files);
    let journaled = match stored {
        Some(s) if listing_same => append_journal(store, s, &digest, &files),
        _ => false,
    };
    if !journaled {
        save(store, &digest, &dirs, &names, &files);
        let _ = fs::remove_file(journal_of(store));
    }
    Ok(blake3::Hash::from_bytes(digest).to_hex().to_string())
}

/// Appends what changed since `s` as one journal batch; `false` when the journal would grow
/// past an eighth of the files (or cannot be written): then the base is rewritten.
fn append_journal(file: &Path, s: &Stored, tree: &[u8; 32], files: &[FileNow]) -> bool {
    // A link whose target is not the base's cannot be journaled (targets live in the base).
    let same_target = |i: usize, f: &FileNow| match (s.target(i), &f.target) {
        (0, None) => true,
        (t, Some(p)) if t > 0 => s.target_path(t - 1) == &p[..],
        _ => false,
    };
    if !(0..files.len())
        .into_par_iter()
        .all(|i| same_target(i, &files[i]))
    {
        return false;
    }
    let changed: Vec<usize> = (0..files.len())
        .into_par_iter()
        .with_min_len(4096)
        .filter(|&i| {
            let (kind, stat, digest) = s.file(i);
            let f = &files[i];
            f.kind != kind || f.stat != stat || f.digest != digest
        })
        .collect();
    if !s.journal_clean || s.journal_records + changed.len() > (s.files / 8).max(1024) {
        return false;
    }
    let mut b = Vec::with_capacity(BATCH_HEAD + changed.len() * JOURNAL_REC + 32);
    b.extend_from_slice(JOURNAL_MAGIC);
    b.extend_from_slice(&s.base_id);
    b.extend_from_slice(&now_ns().to_le_bytes());
    b.extend_from_slice(tree);
    b.extend_from_slice(&(changed.len() as u64).to_le_bytes());
    for i in changed {
        let f = &files[i];
        for v in [i as u64, f.kind | (s.target(i) as u64) << 32, f.stat.len] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [f.stat.mtime_ns, f.stat.ctime_ns, f.stat.ino as i64] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&f.digest);
    }
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    let appended = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal_of(file))
        .and_then(|mut j| {
            j.write_all(&b)?;
            j.sync_data()
        });
    appended.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(t: &tempfile::TempDir) -> StatCache {
        StatCache::open(t.path().join("sc"))
    }

    #[test]
    fn folder_digest_follows_content_not_mtime() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("d/sub")).unwrap();
        fs::write(t.path().join("d/a.txt"), "one").unwrap();
        fs::write(t.path().join("d/sub/b.txt"), "two").unwrap();
        let mut sc = cache(&t);
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

    /// The folder digest of the JSON-era cache (tree-v1 over hex digests), computed directly.
    fn reference_digest(root: &Path) -> String {
        fn files(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    files(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into());
                }
            }
        }
        let mut v = Vec::new();
        files(root, root, &mut v);
        v.sort();
        let mut h = blake3::Hasher::new();
        h.update(b"tree-v1\0");
        for rel in v {
            let d = blake3::hash(&fs::read(root.join(&rel)).unwrap()).to_hex();
            h.update(rel.as_bytes());
            h.update(b"\0");
            h.update(d.as_bytes());
            h.update(b"\n");
        }
        h.finalize().to_hex().to_string()
    }

    #[test]
    fn digest_is_the_json_era_digest_and_survives_a_reload() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(d.join("b/c")).unwrap();
        for (p, c) in [("a", "1"), ("b/x", "2"), ("b/c/y", "3"), ("b.txt", "4")] {
            fs::write(d.join(p), c).unwrap();
        }
        let want = reference_digest(&d);
        assert_eq!(cache(&t).path_digest(&d).unwrap(), want);
        // From the stored file (a new process), unchanged.
        assert_eq!(cache(&t).path_digest(&d).unwrap(), want);
    }

    /// Pretends the stored cache was saved `secs` later than it was, so entries are settled.
    fn age_cache(t: &tempfile::TempDir, secs: i64) {
        for e in fs::read_dir(t.path().join("sc")).unwrap() {
            let p = e.unwrap().path();
            let mut b = fs::read(&p).unwrap();
            let saved = i64_at(&b, 8) + secs * 1_000_000_000;
            b[8..16].copy_from_slice(&saved.to_le_bytes());
            let end = b.len() - TRAILER;
            let sum = *blake3::hash(&b[..end]).as_bytes();
            b[end..].copy_from_slice(&sum);
            fs::write(&p, b).unwrap();
        }
    }

    #[test]
    fn touched_added_and_removed_files_are_found() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(d.join("s")).unwrap();
        for i in 0..50 {
            fs::write(d.join(format!("s/{i}.txt")), format!("{i}")).unwrap();
        }
        let d0 = cache(&t).path_digest(&d).unwrap();
        age_cache(&t, 10);
        assert_eq!(cache(&t).path_digest(&d).unwrap(), d0, "no change");
        // Same size, new content; an added file; a removed file.
        let d1 = after_change(&t, &d, &d0, || fs::write(d.join("s/7.txt"), "x").unwrap());
        let d2 = after_change(&t, &d, &d1, || fs::write(d.join("s/new.txt"), "n").unwrap());
        after_change(&t, &d, &d2, || fs::remove_file(d.join("s/3.txt")).unwrap());
    }

    /// The digest after `change` (made once the cache has settled): the reference digest,
    /// and not `before`.
    fn after_change(
        t: &tempfile::TempDir,
        d: &Path,
        before: &str,
        change: impl FnOnce(),
    ) -> String {
        age_cache(t, 10);
        change();
        let now = cache(t).path_digest(d).unwrap();
        assert_eq!(now, reference_digest(d));
        assert_ne!(now, before);
        now
    }

    #[test]
    fn a_damaged_or_truncated_cache_is_never_trusted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("a"), "aaaa").unwrap();
        let d0 = cache(&t).path_digest(&d).unwrap();
        age_cache(&t, 10);
        let file = fs::read_dir(t.path().join("sc"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = fs::read(&file).unwrap();
        // A cache that claims another digest for the tree (and for the file), with a valid
        // layout but a wrong checksum, is ignored.
        let mut bad = good.clone();
        bad[20] ^= 1;
        // The only file's digest: after the header and the one folder record.
        bad[HEADER + DIR_REC + 56] ^= 1;
        fs::write(&file, &bad).unwrap();
        assert_eq!(cache(&t).path_digest(&d).unwrap(), d0);
        for cut in [0, 7, HEADER, good.len() - 1] {
            fs::write(&file, &good[..cut]).unwrap();
            assert_eq!(cache(&t).path_digest(&d).unwrap(), d0, "cut at {cut}");
            assert_eq!(fs::read(&file).unwrap().len(), good.len(), "rebuilt");
        }
    }

    fn only(t: &tempfile::TempDir, ext: &str) -> PathBuf {
        let v: Vec<PathBuf> = fs::read_dir(t.path().join("sc"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].clone()
    }

    #[test]
    fn a_changed_file_is_journaled_and_a_torn_journal_is_not_trusted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        fs::create_dir_all(&d).unwrap();
        for i in 0..20 {
            fs::write(d.join(format!("{i}")), format!("{i:02}")).unwrap();
        }
        cache(&t).path_digest(&d).unwrap();
        age_cache(&t, 10);
        let base = fs::read(only(&t, "bin")).unwrap();
        // One file changed: the base stays, one batch of one record is appended.
        fs::write(d.join("4"), "xx").unwrap();
        let d1 = cache(&t).path_digest(&d).unwrap();
        assert_eq!(d1, reference_digest(&d));
        assert_eq!(
            fs::read(only(&t, "bin")).unwrap(),
            base,
            "base not rewritten"
        );
        let journal = fs::read(only(&t, "log")).unwrap();
        assert_eq!(journal.len(), BATCH_HEAD + JOURNAL_REC + 32);
        // Read back through the journal: the changed file's record comes from it.
        let s = Stored::open(&only(&t, "bin")).unwrap();
        assert!(s.journal_clean);
        assert_eq!(s.newer.len(), 1);
        assert_eq!(s.tree, *blake3::Hash::from_hex(&d1).unwrap().as_bytes());
        // A torn batch: ignored (the file is hashed again), and the base is rewritten rather
        // than appended to a journal whose tail cannot be read.
        fs::write(only(&t, "log"), &journal[..journal.len() - 5]).unwrap();
        let s = Stored::open(&only(&t, "bin")).unwrap();
        assert!(!s.journal_clean && s.newer.is_empty());
        drop(s);
        assert_eq!(cache(&t).path_digest(&d).unwrap(), d1);
        assert!(fs::read_dir(t.path().join("sc")).unwrap().all(|e| e
            .unwrap()
            .path()
            .extension()
            .is_some_and(|e| e == "bin")));
        assert_ne!(fs::read(only(&t, "bin")).unwrap(), base);
    }

    #[cfg(unix)]
    #[test]
    fn a_tree_of_links_is_checked_through_its_targets() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().unwrap();
        let (src, d) = (t.path().join("src"), t.path().join("d"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(d.join("sub")).unwrap();
        for i in 0..3 {
            fs::write(src.join(format!("{i}")), format!("content {i}")).unwrap();
        }
        // Absolute and relative links, several to one target, one through a linked folder.
        for k in 0..30 {
            symlink(src.join(format!("{}", k % 3)), d.join(format!("a{k}"))).unwrap();
        }
        symlink("../../src/1", d.join("sub/rel")).unwrap();
        symlink(&src, d.join("linked")).unwrap();
        let d0 = cache(&t).path_digest(&d).unwrap();
        assert_eq!(d0, reference_digest(&d));
        let s = Stored::open(&only(&t, "bin")).unwrap();
        assert_eq!(
            (s.files, s.targets),
            (34, 4),
            "three targets and the relative one"
        );
        drop(s);
        age_cache(&t, 10);
        assert_eq!(cache(&t).path_digest(&d).unwrap(), d0);
        // A target's content changes: every link to it is found changed.
        fs::write(src.join("1"), "content X").unwrap();
        age_cache(&t, 10);
        let d1 = cache(&t).path_digest(&d).unwrap();
        assert_eq!(d1, reference_digest(&d));
        assert_ne!(d1, d0);
        // A link now names another target.
        let d2 = after_change(&t, &d, &d1, || {
            fs::remove_file(d.join("a4")).unwrap();
            symlink(src.join("2"), d.join("a4")).unwrap();
        });
        // A dangling link: an error kind in the digest, as before the cache.
        age_cache(&t, 10);
        fs::remove_file(src.join("0")).unwrap();
        let d3 = cache(&t).path_digest(&d).unwrap();
        assert_ne!(d3, d2);
        assert_eq!(cache(&t).path_digest(&d).unwrap(), d3);
    }

    #[test]
    fn stat_cache_never_trusts_a_racy_entry() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, "aaaa").unwrap();
        let d1 = cache(&t).path_digest(&f).unwrap();
        // Rewrite with the same size within the same second: the entry is racy, so re-hashed.
        fs::write(&f, "bbbb").unwrap();
        assert_ne!(cache(&t).path_digest(&f).unwrap(), d1);
    }
}
