//! Executing the DAG: stale upstream first, independent stages concurrently as far as their
//! resources fit, early cutoff.
//!
//! The steps, one module each (as cargo separates its job queue from its fingerprints):
//! [`select`] (which stages, which forced), [`prepare`] (external inputs: obtain missing ones,
//! digest them), [`schedule`] (freshness, readiness and the resource budget), [`execute`]
//! (one stage on its own thread pool, measured), and [`record`] (the run record, written last,
//! and the outcome).

mod execute;
mod gather;
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
use crate::shard::Shard;
use crate::store::LastRun;

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
    /// Run one shard of the one target stage (`run STAGE --shard I/N`): its upstream must be
    /// complete; it writes the shard's blobs and a partial record, not the stage's record.
    pub shard: Option<Shard>,
    /// Gather the target stage's `N` shards into its run record (`run STAGE --gather N`).
    pub gather: Option<usize>,
    /// The batch scheduler's job this run is (e.g. `SLURM_JOB_ID`), for its lease.
    pub job: Option<String>,
}

impl RunOptions {
    /// What the run does, in words (for its lease).
    fn describe(&self) -> String {
        let targets = if self.targets.is_empty() {
            "all".to_string()
        } else {
            self.targets.join(" ")
        };
        match (self.shard, self.gather) {
            (Some(s), _) => format!("run {targets} --shard {s}"),
            (None, Some(n)) => format!("run {targets} --gather {n}"),
            _ => format!("run {targets}"),
        }
    }

    /// Checks the shard options against the selection; returns the sharded stage.
    fn check_shard_options(&self, registry: &Registry) -> Result<Option<String>, Error> {
        if self.shard.is_none() && self.gather.is_none() {
            return Ok(None);
        }
        let flag = if self.shard.is_some() {
            "--shard"
        } else {
            "--gather"
        };
        if self.shard.is_some() && self.gather.is_some() {
            return Err(Error::Other(
                "`--shard` and `--gather` exclude each other".into(),
            ));
        }
        let [target] = self.targets.as_slice() else {
            return Err(Error::Other(format!(
                "`{flag}` applies to one stage: `run STAGE {flag} ...`"
            )));
        };
        if !self.seeds.is_empty() || self.downstream || self.force {
            return Err(Error::Other(format!(
                "`{flag}` cannot be combined with `--seeds`, `--downstream` or `--force`"
            )));
        }
        if let Some(n) = self.gather {
            Shard::new(0, n).map_err(Error::Other)?;
        }
        match registry.get(target) {
            Some(st) if !st.shardable() => {
                let able: Vec<&str> = registry
                    .ids()
                    .into_iter()
                    .filter(|id| registry.get(id).is_some_and(|s| s.shardable()))
                    .collect();
                Err(Error::Other(format!(
                    "stage `{target}` cannot run in shards (shardable: {})",
                    if able.is_empty() {
                        "none".to_string()
                    } else {
                        able.join(", ")
                    }
                )))
            }
            _ => Ok(Some(target.clone())),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum StageOutcome {
    Ran {
        seconds: f64,
        reasons: Vec<crate::key::StaleReason>,
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
        reasons: Vec<crate::key::StaleReason>,
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
    let sharded = opts.check_shard_options(registry)?;
    let store = config.open_store()?;
    // Every run says it is live with a lease (what `gc` on any machine checks). Shards and
    // gathers of one stage run side by side from many processes and machines: they write
    // only content-addressed blobs and their own records, so they take no lock; other runs
    // also take the local lock (the fast path on one machine).
    let _lease = if opts.dry_run {
        None
    } else {
        Some(store.lease(&opts.describe(), opts.job.as_deref())?)
    };
    let _lock = if opts.dry_run || sharded.is_some() {
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
    let externals = prepare::digest_externals(config, &selection, &store, progress)?;
    let scheduler = schedule::Scheduler::new(config, &resolved, &selection, externals, opts);
    let done = scheduler.drive(&store, progress);
    for n in store.take_notices() {
        progress.warn(n);
    }
    let done = done?;
    if !opts.dry_run && sharded.is_none() {
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
