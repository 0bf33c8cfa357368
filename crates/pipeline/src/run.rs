//! Executing the DAG: stale upstream first, independent stages concurrently, early cutoff.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::artifact::{Artifact, Chunk};
use crate::config::Config;
use crate::context::StageContext;
use crate::hash::{KeyInputs, StatCache};
use crate::plan::{
    external_digests, fresh_record, key_inputs, resolve, stale_reasons, upstream_inputs, Registry,
};
use crate::progress::Progress;

use crate::store::{RunRecord, Store, StoreError};

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
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum StageOutcome {
    Ran { seconds: f64, reasons: Vec<String> },
    Cached { seconds: f64 },
    Failed { error: String },
    Skipped { reason: String },
    WouldRun { reasons: Vec<String> },
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
}

enum Slot {
    Waiting,
    Running,
    Done(Box<RunRecord>),
    Failed,
    Skipped(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Brings the selected stages up to date. Stage failures do not make this return `Err`: they
/// are in the summary (see [`RunSummary::check`]); errors before any stage ran do.
pub fn run(
    config: &Config,
    registry: &Registry,
    opts: &RunOptions,
    progress: &Progress,
) -> anyhow::Result<RunSummary> {
    let t0 = Instant::now();
    let resolved = resolve(config, registry)?;
    for t in &opts.targets {
        if config.stage(t).is_none() {
            bail!(
                "unknown stage `{t}` (stages in {}: {})",
                config.file,
                config
                    .stages
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
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

    let targets: Vec<String> = if opts.targets.is_empty() {
        config.stages.iter().map(|s| s.id.clone()).collect()
    } else {
        opts.targets.clone()
    };
    let mut selected: BTreeSet<String> = config.upstream_closure(&targets).into_iter().collect();
    if opts.downstream {
        for t in &targets {
            selected.extend(config.downstream(t));
        }
    }
    let forced: BTreeSet<String> = if opts.force {
        targets.iter().cloned().collect()
    } else {
        BTreeSet::new()
    };
    let order: Vec<usize> = (0..config.stages.len())
        .filter(|&i| selected.contains(&config.stages[i].id))
        .collect();

    // External inputs that a stage can provide (e.g. weights to download).
    if !opts.dry_run {
        for &i in &order {
            let sc = &config.stages[i];
            for name in &sc.inputs {
                if let Some(p) = config.setting_path(name) {
                    if !p.exists() {
                        let provided = resolved.stages[i]
                            .0
                            .provide_input(name, &p, progress.quiet())
                            .map_err(|e| anyhow::anyhow!("{e}"))
                            .with_context(|| {
                                format!(
                                    "stage `{}` input `{name}` ({}) is missing",
                                    sc.id,
                                    p.display()
                                )
                            })?;
                        if !provided {
                            bail!(
                                "stage `{}` input `{name}`: {} does not exist",
                                sc.id,
                                p.display()
                            );
                        }
                    }
                }
            }
        }
    }

    let mut stat = StatCache::load(&store.stat_cache_path());
    let mut externals = BTreeMap::new();
    for &i in &order {
        let sc = &config.stages[i];
        externals.insert(i, external_digests(config, &sc.id, &sc.inputs, &mut stat)?);
    }
    let _ = stat.save(&store.stat_cache_path());

    let jobs = opts.jobs.unwrap_or(config.jobs).max(1);
    let threads = if config.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building the thread pool")?;

    let mut slots: BTreeMap<usize, Slot> = order.iter().map(|&i| (i, Slot::Waiting)).collect();
    let mut outcomes: BTreeMap<usize, StageOutcome> = BTreeMap::new();
    let mut rebuilds: BTreeMap<usize, usize> = BTreeMap::new();
    let mut failed_any = false;
    let (tx, rx) = mpsc::channel::<(
        usize,
        KeyInputs,
        Vec<String>,
        u64,
        Result<BTreeMap<String, Artifact>, String>,
    )>();

    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut running = 0usize;
        let mut exclusive_running = false;
        loop {
            let mut progressed = false;
            let mut draining = false;
            for &i in &order {
                if !matches!(slots[&i], Slot::Waiting) {
                    continue;
                }
                let sc = &config.stages[i];
                let needs: Vec<usize> = sc
                    .needs
                    .iter()
                    .map(|n| {
                        config
                            .stages
                            .iter()
                            .position(|s| &s.id == n)
                            .expect("validated")
                    })
                    .collect();
                if needs
                    .iter()
                    .any(|n| matches!(slots[n], Slot::Failed | Slot::Skipped(_)))
                {
                    let bad: Vec<&str> = needs
                        .iter()
                        .filter(|n| matches!(slots[n], Slot::Failed | Slot::Skipped(_)))
                        .map(|&n| config.stages[n].id.as_str())
                        .collect();
                    let reason = format!("upstream `{}` did not complete", bad.join("`, `"));
                    slots.insert(i, Slot::Skipped(reason));
                    progressed = true;
                    continue;
                }
                let mut done = BTreeMap::new();
                for &n in &needs {
                    if let Slot::Done(rec) = &slots[&n] {
                        done.insert(config.stages[n].id.clone(), rec.outputs.clone());
                    }
                }
                let Some(inputs) = upstream_inputs(&sc.needs, &done) else {
                    continue;
                };
                let (stage, params) = (resolved.stages[i].0, &resolved.stages[i].1);
                let ki = key_inputs(config, stage, params, inputs, externals[&i].clone());
                let key = ki.key();
                if !forced.contains(&sc.id) {
                    if let Some(rec) = fresh_record(&store, &sc.id, &key)? {
                        if !opts.dry_run {
                            // The latest record is what `why` compares against.
                            store.set_latest(&rec)?;
                        }
                        progress.println(format!("{:>9} {} (cached)", "fresh", sc.id));
                        outcomes.insert(
                            i,
                            StageOutcome::Cached {
                                seconds: rec.seconds,
                            },
                        );
                        slots.insert(i, Slot::Done(Box::new(rec)));
                        progressed = true;
                        continue;
                    }
                }
                let reasons = if forced.contains(&sc.id) {
                    vec!["forced".to_string()]
                } else {
                    stale_reasons(&store, &ki)?
                };
                if opts.dry_run {
                    progress.println(format!(
                        "{:>9} {}: {}",
                        "would run",
                        sc.id,
                        reasons.join("; ")
                    ));
                    outcomes.insert(i, StageOutcome::WouldRun { reasons });
                    // Downstream keys depend on outputs we do not have: they are reported as
                    // waiting on this stage.
                    slots.insert(i, Slot::Skipped(format!("waits for `{}`", sc.id)));
                    progressed = true;
                    continue;
                }
                if failed_any {
                    slots.insert(i, Slot::Skipped("an earlier stage failed".into()));
                    progressed = true;
                    continue;
                }
                if draining
                    || exclusive_running
                    || running >= jobs
                    || (stage.exclusive() && running > 0)
                {
                    if stage.exclusive() {
                        draining = true; // start nothing else until it has run
                    }
                    continue;
                }
                // Inputs are verified against their digests before the stage may read them.
                if let Some((producer, digest, reason)) =
                    verify_inputs(&store, &slots, config, &needs)?
                {
                    let n = rebuilds.entry(producer).or_insert(0);
                    *n += 1;
                    if *n > 1 {
                        bail!("blob {digest} of stage `{}` is corrupt again after a rebuild ({reason})", config.stages[producer].id);
                    }
                    progress.warn(format!(
                        "blob {} of `{}` is corrupt ({reason}); removed it, rebuilding `{}`",
                        &digest[..16],
                        config.stages[producer].id,
                        config.stages[producer].id
                    ));
                    if let Slot::Done(rec) = &slots[&producer] {
                        store.invalidate(&rec.stage, &rec.key);
                    }
                    slots.insert(producer, Slot::Waiting);
                    progressed = true;
                    break;
                }
                progress.println(format!(
                    "{:>9} {} ({})",
                    "running",
                    sc.id,
                    reasons.join("; ")
                ));
                slots.insert(i, Slot::Running);
                running += 1;
                exclusive_running |= stage.exclusive();
                progressed = true;
                let tx = tx.clone();
                let store = &store;
                let pool = &pool;
                let declared: Vec<String> = stage.outputs().iter().map(|s| s.to_string()).collect();
                let settings = sc
                    .inputs
                    .iter()
                    .map(|n| (n.clone(), config.setting_path(n)))
                    .collect();
                let mut input_artifacts = BTreeMap::new();
                for (sid, outs) in &done {
                    for (name, a) in outs {
                        input_artifacts.insert(format!("{sid}.{name}"), a.clone());
                    }
                }
                scope.spawn(move || {
                    let started = now_ms();
                    let ctx = StageContext {
                        stage: sc.id.clone(),
                        key: key.clone(),
                        params: params.clone(),
                        seed: config.seed,
                        device: config.device.clone(),
                        threads,
                        settings,
                        inputs: input_artifacts,
                        declared_outputs: declared.clone(),
                        store,
                        progress,
                        outputs: Mutex::new(BTreeMap::new()),
                    };
                    let result = pool
                        .install(|| std::panic::catch_unwind(AssertUnwindSafe(|| stage.run(&ctx))));
                    let result = match result {
                        Ok(Ok(())) => {
                            let outs = ctx.outputs.into_inner().unwrap_or_default();
                            let missing: Vec<&String> =
                                declared.iter().filter(|d| !outs.contains_key(*d)).collect();
                            if missing.is_empty() {
                                Ok(outs)
                            } else {
                                Err(format!("finished without writing output(s) {missing:?}"))
                            }
                        }
                        Ok(Err(e)) => Err(format_error(e.as_ref())),
                        Err(panic) => Err(format!("panicked: {}", panic_message(&panic))),
                    };
                    let _ = tx.send((i, ki, reasons, started, result));
                });
            }
            if running == 0 && !progressed {
                break;
            }
            if progressed {
                continue;
            }
            let (i, ki, reasons, started, result) = rx.recv().expect("workers hold a sender");
            running -= 1;
            if resolved.stages[i].0.exclusive() {
                exclusive_running = false;
            }
            let id = &config.stages[i].id;
            match result {
                Ok(outputs) => {
                    let finished = now_ms();
                    let rec = RunRecord {
                        stage: id.clone(),
                        key: ki.key(),
                        key_inputs: ki,
                        outputs,
                        seconds: (finished - started) as f64 / 1000.0,
                        started_ms: started,
                        finished_ms: finished,
                        threads,
                        producer: format!(
                            "{} {}",
                            env!("CARGO_PKG_NAME"),
                            env!("CARGO_PKG_VERSION")
                        ),
                    };
                    store.write_record(&rec)?;
                    progress.println(format!("{:>9} {} in {:.1}s", "done", id, rec.seconds));
                    outcomes.insert(
                        i,
                        StageOutcome::Ran {
                            seconds: rec.seconds,
                            reasons,
                        },
                    );
                    slots.insert(i, Slot::Done(Box::new(rec)));
                }
                Err(e) => {
                    progress.warn(format!("stage `{id}` failed: {e}"));
                    outcomes.insert(i, StageOutcome::Failed { error: e });
                    slots.insert(i, Slot::Failed);
                    failed_any = true;
                }
            }
        }
        Ok(())
    })?;

    let mut stages = Vec::new();
    let mut records = BTreeMap::new();
    for &i in &order {
        let id = config.stages[i].id.clone();
        let outcome = match slots.remove(&i).expect("every selected stage has a slot") {
            Slot::Done(rec) => {
                records.insert(id.clone(), *rec);
                outcomes.remove(&i).expect("done stages have an outcome")
            }
            Slot::Skipped(reason) => outcomes
                .remove(&i)
                .unwrap_or(StageOutcome::Skipped { reason }),
            _ => outcomes.remove(&i).unwrap_or(StageOutcome::Skipped {
                reason: "not reached".into(),
            }),
        };
        stages.push((id, outcome));
    }
    Ok(RunSummary {
        stages,
        records,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl RunSummary {
    /// An error naming every failed stage, if any failed.
    pub fn check(&self) -> anyhow::Result<()> {
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
            bail!("{}", msgs.join("\n"))
        }
    }
}

/// Checks every chunk of the inputs of a stage; returns the first corrupt one's producer.
fn verify_inputs(
    store: &Store,
    slots: &BTreeMap<usize, Slot>,
    config: &Config,
    needs: &[usize],
) -> anyhow::Result<Option<(usize, String, String)>> {
    for &n in needs {
        if let Slot::Done(rec) = &slots[&n] {
            for a in rec.outputs.values() {
                for c in &a.chunks {
                    match Chunk::open(store, c) {
                        Ok(_) => {}
                        Err(StoreError::Corrupt { digest, reason }) => {
                            return Ok(Some((n, digest, reason)))
                        }
                        Err(StoreError::Missing { digest }) => {
                            return Ok(Some((n, digest, "missing".into())))
                        }
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("reading an output of `{}`", config.stages[n].id)
                            })
                        }
                    }
                }
            }
        }
    }
    Ok(None)
}

fn format_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
