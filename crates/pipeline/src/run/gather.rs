//! The gather of a sharded stage (`run STAGE --gather N`): checks that every shard has a
//! record and that every blob those records name is in place, has the stage check what the
//! shards put together against its upstream (`Stage::check_gathered`: every unit of work
//! once, in order), then writes the record an unsharded run would have written (same
//! artifacts, same digests), so that downstream stages and early cutoff see no difference.

use std::collections::BTreeMap;

use crate::artifact::Artifact;
use crate::digest::artifact_digest;
use crate::key::KeyInputs;
use crate::record::{RunRecord, Usage};
use crate::shard::Shard;
use crate::stage::AnyStage;
use crate::store::Store;

pub(crate) fn gather(
    store: &Store,
    stage: &dyn AnyStage,
    ki: &KeyInputs,
    inputs: &BTreeMap<String, Artifact>,
    count: usize,
) -> Result<RunRecord, String> {
    let id = stage.id();
    let key = ki.key();
    let mut parts = Vec::with_capacity(count);
    let mut missing = Vec::new();
    for index in 0..count {
        let sh = Shard { index, count };
        match store
            .read_shard_record(id, &key, sh)
            .map_err(|e| e.to_string())?
        {
            Some(r) => parts.push(r),
            None => missing.push(index.to_string()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "cannot gather: {} of {count} shards have no record (shard {}): not run yet, still running, or failed (`status` shows which)",
            missing.len(),
            missing.join(", ")
        ));
    }
    for (i, r) in parts.iter().enumerate() {
        for a in r.outputs.values() {
            for c in &a.chunks {
                let p = store.blob_location(&c.digest);
                match store.blob_size(&c.digest).map_err(|e| e.to_string())? {
                    Some(n) if n == c.bytes => {}
                    Some(n) => {
                        return Err(format!(
                            "cannot gather: blob {p} of shard {i}/{count} has {n} bytes, its record says {}",
                            c.bytes
                        ))
                    }
                    None => {
                        return Err(format!(
                            "cannot gather: blob {p} of shard {i}/{count} is missing (is the cache on a file system every node shares?)"
                        ))
                    }
                }
            }
        }
    }
    let mut outputs = BTreeMap::new();
    for name in stage.outputs() {
        let arts: Vec<&Artifact> = parts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.outputs
                    .get(*name)
                    .ok_or_else(|| format!("shard {i}/{count} has no output `{name}`"))
            })
            .collect::<Result<_, _>>()?;
        let chunks: Vec<_> = arts.iter().flat_map(|a| a.chunks.iter().cloned()).collect();
        let metas: Vec<_> = arts.iter().map(|a| a.meta.clone()).collect();
        let meta = stage
            .merge_shard_meta(name, &metas)
            .map_err(|e| e.to_string())?;
        outputs.insert(
            name.to_string(),
            Artifact {
                stage: id.to_string(),
                name: name.to_string(),
                digest: artifact_digest(&chunks, &meta),
                chunks,
                meta,
                volatile: BTreeMap::new(),
            },
        );
    }
    stage
        .check_gathered(&outputs, inputs, store)
        .map_err(|e| format!("cannot gather: {e}"))?;
    let started_ms = parts.iter().map(|r| r.started_ms).min().unwrap_or(0);
    let finished_ms = parts.iter().map(|r| r.finished_ms).max().unwrap_or(0);
    let us: Vec<Usage> = parts.iter().filter_map(|r| r.usage.clone()).collect();
    let items = us
        .iter()
        .filter_map(|u| u.items.clone())
        .reduce(|a, b| (a.0 + b.0, a.1));
    Ok(RunRecord {
        stage: id.to_string(),
        key,
        key_inputs: ki.clone(),
        outputs,
        seconds: parts.iter().map(|r| r.seconds).sum(),
        started_ms,
        finished_ms,
        threads: parts.iter().map(|r| r.threads).max().unwrap_or(1),
        producer: format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        usage: Some(Usage {
            cpu_seconds: us.iter().map(|u| u.cpu_seconds).sum(),
            peak_rss_bytes: us.iter().map(|u| u.peak_rss_bytes).max().unwrap_or(0),
            shared: count > 1,
            items,
        }),
    })
}
