//! Executing the DAG: stale upstream first, independent stages concurrently as far as their
//! resources fit, early cutoff.
//!
//! The steps, one module each (as cargo separates its job queue from its fingerprints):
//! [`select`] (which stages, which forced), [`prepare`] (external inputs: obtain missing ones,
//! digest them), [`schedule`] (freshness, readiness and the resource budget), [`execute`]
//! (one stage on its own thread pool, measured), and [`record`] (the run record, written last,
//! and the outcome).

mod execute;
mod prepare;
mod record;
mod schedule;
mod select;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::error::Error;
use crate::plan::{resolve, Registry};
use crate::progress::Progress;
use crate::record::{RunRecord, Usage};
use crate::store::{LastRun, Store};

/// What `run` should do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stages to bring up to date (with their stale upstream); empty = all.
    pub targets: Vec<String>,
    /// Rerun the targets even when fresh.
    pub force: bool,
    /// Also bring everything downstream of the targets up to date.
    pub downstream: bool,
    /// Print what would run and why, run nothing.
    pub dry_run: bool,
    /// Stages at once; `None` = the config's `jobs`.
    pub jobs: Option<usize>,
    /// Fail instead of waiting when another run holds the cache.
    pub no_wait: bool,
    /// Let stages obtain missing external inputs wherever they point (e.g. download weights
    /// to a non-default path).
    pub fetch: bool,
    /// A seed sweep: every stage that uses the seed (and its downstream, up to a stage that
    /// aggregates the seeds) runs once per seed; the first seed's results are the stages'
    /// latest. Empty: the config's seed.
    pub seeds: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum StageOutcome {
    Ran {
        seconds: f64,
        reasons: Vec<String>,
        threads: usize,
        usage: Usage,
    },
    Cached {
        seconds: f64,
    },
    Failed {
        error: String,
    },
    Skipped {
        reason: String,
    },
    WouldRun {
        reasons: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub stages: Vec<(String, StageOutcome)>,
    /// Records of the stages that are done (ran or cached), by stage.
    #[serde(skip)]
    pub records: BTreeMap<String, RunRecord>,
    pub seconds: f64,
}

impl RunSummary {
    pub fn ran(&self) -> Vec<&str> {
        self.stages
            .iter()
            .filter(|(_, o)| matches!(o, StageOutcome::Ran { .. }))
            .map(|(s, _)| s.as_str())
            .collect()
    }
    pub fn failed(&self) -> Vec<&str> {
        self.stages
            .iter()
            .filter(|(_, o)| matches!(o, StageOutcome::Failed { .. }))
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// An error naming every failed stage, if any failed.
    pub fn check(&self) -> Result<(), Error> {
        let msgs: Vec<String> = self
            .stages
            .iter()
            .filter_map(|(s, o)| match o {
                StageOutcome::Failed { error } => Some(format!("stage `{s}` failed: {error}")),
                _ => None,
            })
            .collect();
        if msgs.is_empty() {
            Ok(())
        } else {
            Err(Error::Other(msgs.join("\n")))
        }
    }
}

/// Brings the selected stages up to date. Stage failures do not make this return `Err`: they
/// are in the summary (see [`RunSummary::check`]); errors before any stage ran do.
pub fn run(
    config: &Config,
    registry: &Registry,
    opts: &RunOptions,
    progress: &Progress,
) -> Result<RunSummary, Error> {
    let t0 = Instant::now();
    let started_ms = crate::clock::now_ms();
    let resolved = resolve(config, registry)?;
    let selection = select::Selection::new(config, opts)?;
    let store = Store::open(&config.cache)?;
    let _lock = if opts.dry_run {
        None
    } else {
        Some(store.lock(!opts.no_wait, |holder| {
            progress.warn(format!(
                "waiting for the cache lock on {} (held by {holder})",
                config.cache.display()
            ))
        })?)
    };
    if !opts.dry_run {
        prepare::provide_missing(config, &resolved, &selection, opts.fetch, progress)?;
    }
    let externals = prepare::digest_externals(config, &selection, &store)?;
    let scheduler = schedule::Scheduler::new(config, &resolved, &selection, externals, opts);
    let done = scheduler.drive(&store, progress);
    for n in store.take_notices() {
        progress.warn(n);
    }
    let done = done?;
    if !opts.dry_run {
        store.write_last_run(&LastRun {
            started_ms,
            finished_ms: crate::clock::now_ms(),
            stages: done.timeline,
        })?;
    }
    Ok(RunSummary {
        stages: done.outcomes,
        records: done.records,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
