//! Step 5: a finished stage's run record (written last, after its blobs) and its outcome.

use crate::clock::now_ms;
use crate::error::StoreError;
use crate::record::{RunRecord, Usage};
use crate::run::execute::Finished;
use crate::run::StageOutcome;
use crate::shard::Shard;
use crate::store::{Store, TimelineEntry};

/// Writes the record of a successful execution (the stage's latest only for a primary node); returns it with the outcome and the timeline
/// entry.
pub(crate) fn record_success(
    store: &Store,
    stage: &str,
    f: Finished,
    shared: bool,
    primary: bool,
) -> Result<(RunRecord, StageOutcome, TimelineEntry), StoreError> {
    let reasons = f.reasons.clone();
    let rec = run_record(stage, f, shared);
    let usage = rec.usage.clone().unwrap_or_default();
    if primary {
        store.write_record(&rec)?;
    } else {
        // Another seed of a sweep: stored, but not the stage's latest.
        store.write_record_only(&rec)?;
    }
    let entry = timeline_entry(&rec, "ran");
    let outcome = StageOutcome::Ran {
        seconds: rec.seconds,
        reasons,
        threads: rec.threads,
        usage,
    };
    Ok((rec, outcome, entry))
}

/// Writes the partial record of a shard that succeeded; returns it.
pub(crate) fn record_shard_success(
    store: &Store,
    stage: &str,
    f: Finished,
    shared: bool,
    shard: Shard,
) -> Result<RunRecord, StoreError> {
    let rec = run_record(stage, f, shared);
    store.write_shard_record(&rec, shard)?;
    Ok(rec)
}

fn run_record(stage: &str, f: Finished, shared: bool) -> RunRecord {
    let outputs = f.result.expect("only successes are recorded");
    let usage = Usage {
        cpu_seconds: f.cpu_seconds,
        peak_rss_bytes: f.peak_rss_bytes,
        shared,
        items: f.items,
    };
    RunRecord {
        stage: stage.to_string(),
        key: f.key_inputs.key(),
        key_inputs: f.key_inputs,
        outputs,
        seconds: (f.finished_ms - f.started_ms) as f64 / 1000.0,
        started_ms: f.started_ms,
        finished_ms: f.finished_ms,
        threads: f.threads,
        producer: format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        usage: Some(usage),
    }
}

/// The timeline entry of a stage that ran, or was found fresh (then it takes no time).
pub(crate) fn timeline_entry(rec: &RunRecord, outcome: &str) -> TimelineEntry {
    let (started_ms, finished_ms) = if outcome == "ran" {
        (rec.started_ms, rec.finished_ms)
    } else {
        let now = now_ms();
        (now, now)
    };
    let u = rec.usage.clone().unwrap_or_default();
    TimelineEntry {
        stage: rec.stage.clone(),
        key: rec.key.clone(),
        outcome: outcome.to_string(),
        started_ms,
        finished_ms,
        threads: rec.threads,
        cpu_seconds: if outcome == "ran" { u.cpu_seconds } else { 0.0 },
        peak_rss_bytes: if outcome == "ran" {
            u.peak_rss_bytes
        } else {
            0
        },
    }
}
