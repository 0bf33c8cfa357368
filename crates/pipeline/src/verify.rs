//! `verify`: re-hash every blob that a kept run record names (on S3, the bucket's object,
//! freshly downloaded): its content (tensors and metadata) against its digest, and its header
//! (the run's key, params, producer, creation time, which the content digest leaves out)
//! against the header digest the record keeps, so a changed byte anywhere is found; with
//! repair, forget the records whose blobs are corrupt or missing, so that the next run
//! rebuilds them.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::artifact::ChunkRef;
use crate::chunk::Chunk;
use crate::error::StoreError;
use crate::progress::Progress;
use crate::store::Store;

/// A blob that is not what its records say.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobProblem {
    pub digest: String,
    /// `missing`, or why the content does not match.
    pub reason: String,
    /// The run records (stage, key) that name it.
    pub records: Vec<(String, String)>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    /// Distinct blobs checked.
    pub checked: usize,
    pub bytes: u64,
    pub problems: Vec<BlobProblem>,
    /// Records removed by `repair` (stage, key).
    pub removed_records: Vec<(String, String)>,
}

/// Checks every blob named by a run record, in parallel on the current rayon pool. With
/// `repair`, deletes the bad blobs and every record that names one.
pub fn verify(
    store: &Store,
    repair: bool,
    progress: &Progress,
) -> Result<VerifyReport, StoreError> {
    let mut by_digest: BTreeMap<String, (ChunkRef, Vec<(String, String)>)> = BTreeMap::new();
    for rec in store.records()? {
        for a in rec.outputs.values() {
            for c in &a.chunks {
                let e = by_digest
                    .entry(c.digest.clone())
                    .or_insert_with(|| (c.clone(), Vec::new()));
                // A record that knows the blob's header checks it too.
                if e.0.header.is_none() {
                    e.0.header.clone_from(&c.header);
                }
                e.1.push((rec.stage.clone(), rec.key.clone()));
            }
        }
    }
    let bar = progress.bar(by_digest.len() as u64, "verify");
    let checked: Vec<Option<BlobProblem>> = by_digest
        .par_iter()
        .map(|(digest, (r, records))| {
            let reason = if store.is_remote() {
                // The bucket's object, as another machine would read it.
                match store.download_blob(digest) {
                    Ok(None) => Some("missing".to_string()),
                    Err(e) => Some(e.to_string()),
                    Ok(Some(tmp)) => {
                        let reason = match Chunk::open_file(&tmp) {
                            Ok(chunk) => chunk.check(r).err(),
                            Err(e) => Some(e.to_string()),
                        };
                        let _ = std::fs::remove_file(&tmp);
                        reason
                    }
                }
            } else {
                match Chunk::open_unverified(store, r) {
                    Err(StoreError::Missing { .. }) => Some("missing".to_string()),
                    Err(e) => Some(e.to_string()),
                    Ok(chunk) => chunk.check(r).err(),
                }
            };
            bar.inc(1);
            reason.map(|reason| {
                let mut records = records.clone();
                records.sort();
                records.dedup();
                BlobProblem {
                    digest: digest.clone(),
                    reason,
                    records,
                }
            })
        })
        .collect();
    bar.finish_and_clear();
    let problems: Vec<BlobProblem> = checked.into_iter().flatten().collect();
    let mut removed_records = Vec::new();
    if repair {
        for p in &problems {
            store.remove_blob(&p.digest);
            for (stage, key) in &p.records {
                if !removed_records.contains(&(stage.clone(), key.clone())) {
                    store.invalidate(stage, key);
                    removed_records.push((stage.clone(), key.clone()));
                }
            }
        }
    }
    Ok(VerifyReport {
        checked: by_digest.len(),
        bytes: by_digest.values().map(|(r, _)| r.bytes).sum(),
        problems,
        removed_records,
    })
}
