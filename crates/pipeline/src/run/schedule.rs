//! Step 3: the scheduler. It walks the selected stages in order, finds each one's key once its
//! upstream is done, takes fresh records from the cache, and starts stale stages while their
//! threads (and declared memory) fit the run's budget, first come first served.
//!
//! The units it schedules are *nodes*: one per stage, except that in a seed sweep (`run
//! --seeds`) every stage that uses the seed, and every stage downstream of one that does not
//! aggregate the seeds, gets a node per seed.

use std::collections::BTreeMap;
use std::sync::mpsc;

use crate::artifact::Artifact;
use crate::chunk::Chunk;
use crate::config::Config;
use crate::error::{Error, StoreError};
use crate::key::StaleReason;
use crate::plan::{fresh_record, key_inputs, stage_settings, stale_reasons, Resolved};
use crate::progress::Progress;
use crate::record::RunRecord;
use crate::run::execute::{execute, Finished, Job};
use crate::run::record::{record_shard_success, record_success, timeline_entry};
use crate::run::select::Selection;
use crate::run::{RunOptions, StageOutcome};
use crate::shard::Shard;
use crate::store::{ShardFailure, Store, TimelineEntry};

enum Slot {
    Waiting,
    Running,
    Done(Box<RunRecord>),
    Failed,
    Skipped(String),
}

/// One execution to schedule: a stage, and the seed of its variant in a sweep.
struct Node {
    /// Index into `config.stages`.
    stage: usize,
    /// `Some` for a per-seed variant.
    seed: Option<u64>,
    /// The variant whose record becomes the stage's latest (the first seed of a sweep).
    primary: bool,
}

/// A running stage's share of the budget.
struct Share {
    threads: usize,
    memory: u64,
    /// Another stage ran at the same time.
    overlapped: bool,
}

/// What considering one waiting node did.
enum Step {
    Unchanged,
    Changed,
    /// A corrupt input sent its producer back to waiting: start the pass over.
    Restart,
}

/// What a pass over the waiting nodes achieved.
enum Pass {
    /// Something changed state: look again.
    Progressed,
    /// Nothing can change until a running stage finishes.
    Idle,
}

/// What the run did.
pub(crate) struct Done {
    pub outcomes: Vec<(String, StageOutcome)>,
    pub records: BTreeMap<String, RunRecord>,
    pub timeline: Vec<TimelineEntry>,
}

pub(crate) struct Scheduler<'c, 'r> {
    config: &'c Config,
    resolved: &'c Resolved<'r>,
    externals: BTreeMap<usize, BTreeMap<String, String>>,
    forced: std::collections::BTreeSet<String>,
    nodes: Vec<Node>,
    /// The seeds of a sweep (empty: the config's seed only).
    sweep: Vec<u64>,
    dry_run: bool,
    jobs: usize,
    budget: usize,
    memory_total: u64,
    slots: BTreeMap<usize, Slot>,
    outcomes: BTreeMap<usize, StageOutcome>,
    rebuilds: BTreeMap<usize, usize>,
    running: BTreeMap<usize, Share>,
    timeline: Vec<TimelineEntry>,
    failed_any: bool,
    /// `run STAGE --shard I/N` or `--gather N`: the stage, and which.
    sharding: Option<(String, Sharding)>,
    /// The scheduler job of this run (for a shard's failure note).
    job: Option<String>,
}

/// What a sharded run does to its one stage.
#[derive(Clone, Copy)]
enum Sharding {
    Shard(Shard),
    Gather(usize),
}

/// The nodes of the selected stages, in topological order.
fn nodes(config: &Config, resolved: &Resolved<'_>, sel: &Selection, seeds: &[u64]) -> Vec<Node> {
    let mut seeded = vec![false; config.stages.len()];
    let mut out = Vec::new();
    for &i in &sel.order {
        let sc = &config.stages[i];
        let stage = resolved.stages[i].0;
        let upstream_seeded = sc.needs.iter().any(|n| {
            config
                .stages
                .iter()
                .position(|s| &s.id == n)
                .is_some_and(|u| seeded[u])
        });
        seeded[i] = stage.uses_seed(&stage_settings(config, &sc.inputs))
            || (upstream_seeded && !stage.aggregates_seeds());
        if seeded[i] && seeds.len() > 1 {
            for (k, &s) in seeds.iter().enumerate() {
                out.push(Node {
                    stage: i,
                    seed: Some(s),
                    primary: k == 0,
                });
            }
        } else {
            out.push(Node {
                stage: i,
                seed: seeded[i].then(|| seeds.first().copied().unwrap_or(config.seed)),
                primary: true,
            });
        }
    }
    out
}

impl<'c, 'r> Scheduler<'c, 'r> {
    pub(crate) fn new(
        config: &'c Config,
        resolved: &'c Resolved<'r>,
        sel: &'c Selection,
        externals: BTreeMap<usize, BTreeMap<String, String>>,
        opts: &RunOptions,
    ) -> Self {
        let seeds: Vec<u64> = if opts.seeds.is_empty() {
            vec![config.seed]
        } else {
            opts.seeds.clone()
        };
        let nodes = nodes(config, resolved, sel, &seeds);
        Scheduler {
            config,
            resolved,
            externals,
            forced: sel.forced.clone(),
            slots: (0..nodes.len()).map(|n| (n, Slot::Waiting)).collect(),
            nodes,
            sweep: if seeds.len() > 1 { seeds } else { Vec::new() },
            dry_run: opts.dry_run,
            jobs: opts.jobs.unwrap_or(config.jobs).max(1),
            budget: config.cpu_budget(),
            memory_total: crate::usage::total_memory_bytes(),
            outcomes: BTreeMap::new(),
            rebuilds: BTreeMap::new(),
            running: BTreeMap::new(),
            timeline: Vec::new(),
            failed_any: false,
            sharding: match (opts.shard, opts.gather, opts.targets.first()) {
                (Some(sh), _, Some(t)) => Some((t.clone(), Sharding::Shard(sh))),
                (None, Some(n), Some(t)) => Some((t.clone(), Sharding::Gather(n))),
                _ => None,
            },
            job: opts.job.clone(),
        }
    }

    /// Runs until every node is done, failed or skipped.
    pub(crate) fn drive(mut self, store: &Store, progress: &Progress) -> Result<Done, Error> {
        let (tx, rx) = mpsc::channel::<Finished>();
        std::thread::scope(|scope| -> Result<(), Error> {
            loop {
                let pass = self.pass(store, progress, &mut |job: Job<'r>| {
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let _ = tx.send(execute(job, store, progress));
                    });
                });
                match pass {
                    Err(e) => {
                        // Let running stages finish (their records stay valid), then fail.
                        while !self.running.is_empty() {
                            let f = rx.recv().expect("workers hold a sender");
                            let _ = self.finish(f, store, progress);
                        }
                        return Err(e);
                    }
                    Ok(Pass::Progressed) => continue,
                    Ok(Pass::Idle) if self.running.is_empty() => return Ok(()),
                    Ok(Pass::Idle) => {
                        let f = rx.recv().expect("workers hold a sender");
                        self.finish(f, store, progress)?;
                    }
                }
            }
        })?;
        Ok(self.into_done())
    }

    /// The stage id of node `n`, with its seed in a sweep: `head-nn` or `head-nn (seed 2)`.
    fn name(&self, n: usize) -> String {
        let node = &self.nodes[n];
        let id = &self.config.stages[node.stage].id;
        match (node.seed, self.sweep.is_empty()) {
            (Some(s), false) => format!("{id} (seed {s})"),
            _ => id.clone(),
        }
    }

    /// The nodes node `n` reads: for each upstream stage, the variant of the same seed, or
    /// (for a stage that aggregates a sweep, or an unseeded upstream) every variant.
    fn needs(&self, n: usize) -> Vec<usize> {
        let node = &self.nodes[n];
        let mut out = Vec::new();
        for need in &self.config.stages[node.stage].needs {
            let u = self
                .config
                .stages
                .iter()
                .position(|s| &s.id == need)
                .expect("validated");
            for (m, other) in self.nodes.iter().enumerate() {
                let same_variant = match (node.seed, other.seed) {
                    (Some(a), Some(b)) => a == b || self.sweep.is_empty(),
                    _ => true,
                };
                if other.stage == u && same_variant {
                    out.push(m);
                }
            }
        }
        out
    }

    /// One pass over the waiting nodes, in order.
    fn pass(
        &mut self,
        store: &Store,
        progress: &Progress,
        spawn: &mut dyn FnMut(Job<'r>),
    ) -> Result<Pass, Error> {
        let mut progressed = false;
        // Once a stage waits for resources, later ones do not overtake it.
        let mut blocked = false;
        for n in 0..self.nodes.len() {
            if !matches!(self.slots[&n], Slot::Waiting) {
                continue;
            }
            match self.consider(n, store, progress, &mut blocked, spawn)? {
                Step::Unchanged => {}
                Step::Changed => progressed = true,
                Step::Restart => return Ok(Pass::Progressed),
            }
        }
        Ok(if progressed {
            Pass::Progressed
        } else {
            Pass::Idle
        })
    }

    /// Moves waiting node `n` on if it can: skipped, cached, would-run, or started.
    fn consider(
        &mut self,
        n: usize,
        store: &Store,
        progress: &Progress,
        blocked: &mut bool,
        spawn: &mut dyn FnMut(Job<'r>),
    ) -> Result<Step, Error> {
        let i = self.nodes[n].stage;
        let sc = &self.config.stages[i];
        let needs = self.needs(n);
        if let Some(reason) = self.failed_upstream(&needs) {
            self.slots.insert(n, Slot::Skipped(reason));
            return Ok(Step::Changed);
        }
        let Some(inputs) = self.input_artifacts(n, &needs) else {
            return Ok(Step::Unchanged);
        };
        let digests = inputs
            .iter()
            .map(|(k, a)| (k.clone(), a.digest.clone()))
            .collect();
        let (stage, params, resources) = &self.resolved.stages[i];
        let seed = self.nodes[n].seed.unwrap_or(self.config.seed);
        let ki = key_inputs(
            self.config,
            *stage,
            params,
            digests,
            self.externals[&i].clone(),
            seed,
        );
        let forced = self.forced.contains(&sc.id);
        if !forced {
            if let Some(rec) = fresh_record(store, &sc.id, &ki.key())? {
                self.take_cached(n, rec, store, progress)?;
                return Ok(Step::Changed);
            }
        }
        let shard = match self.sharded(n, &ki, &inputs, store, progress)? {
            Ok(shard) => shard,
            Err(step) => return Ok(step),
        };
        let reasons = if forced {
            vec![StaleReason::Forced]
        } else {
            stale_reasons(store, &ki)?
        };
        let name = match shard {
            Some(sh) => format!("{} shard {sh}", self.name(n)),
            None => self.name(n),
        };
        if self.dry_run {
            progress.println(format!(
                "{:>9} {name}: {}",
                "would run",
                crate::key::join_reasons(&reasons)
            ));
            self.outcomes.insert(n, StageOutcome::WouldRun { reasons });
            // Downstream keys depend on outputs we do not have: they wait on this stage.
            self.slots
                .insert(n, Slot::Skipped(format!("waits for `{name}`")));
            return Ok(Step::Changed);
        }
        if self.failed_any {
            self.slots
                .insert(n, Slot::Skipped("an earlier stage failed".into()));
            return Ok(Step::Changed);
        }
        let share = Share {
            threads: resources.threads(self.budget),
            memory: resources.memory.unwrap_or(0),
            overlapped: false,
        };
        if *blocked || !self.fits(&share) {
            *blocked = true;
            return Ok(Step::Unchanged);
        }
        // Inputs are verified against their digests before the stage may read them.
        if self.rebuild_corrupt_input(store, &needs, progress)? {
            return Ok(Step::Restart);
        }
        let job = Job {
            index: n,
            stage: *stage,
            seed: ki.seed,
            key_inputs: ki,
            reasons,
            params: params.clone(),
            threads: share.threads,
            settings: stage_settings(self.config, &sc.inputs),
            inputs,
            device: self.config.device.clone(),
            sweep: self.sweep.clone(),
            alone: self.running.is_empty(),
            shard,
        };
        self.start(job, share, progress, spawn);
        Ok(Step::Changed)
    }

    /// The part of [`Self::consider`] that a sharded run adds (`run STAGE --shard I/N` or
    /// `--gather N`): `Err(step)` when that settles node `n` (another stage than the target, a
    /// cached shard, a gather), else the shard to compute (`None` outside a sharded run).
    fn sharded(
        &mut self,
        n: usize,
        ki: &crate::key::KeyInputs,
        inputs: &BTreeMap<String, Artifact>,
        store: &Store,
        progress: &Progress,
    ) -> Result<Result<Option<Shard>, Step>, Error> {
        let Some((target, how)) = self.sharding.clone() else {
            return Ok(Ok(None));
        };
        let i = self.nodes[n].stage;
        let config = self.config;
        let sc = &config.stages[i];
        let stage = self.resolved.stages[i].0;
        if sc.id != target {
            let e = format!(
                "`{}` is not complete, and a sharded run of `{target}` runs only that stage: run `{}` first (or its gather)",
                sc.id, sc.id
            );
            progress.warn(format!("stage `{}`: {e}", sc.id));
            self.outcomes.insert(n, StageOutcome::Failed { error: e });
            self.slots.insert(n, Slot::Failed);
            self.failed_any = true;
            return Ok(Err(Step::Changed));
        }
        match how {
            Sharding::Shard(sh) => {
                if let Some(rec) = store.read_shard_record(&sc.id, &ki.key(), sh)? {
                    progress.println(format!("{:>9} {} shard {sh} (cached)", "fresh", sc.id));
                    self.outcomes.insert(
                        n,
                        StageOutcome::Cached {
                            seconds: rec.seconds,
                        },
                    );
                    self.slots.insert(n, Slot::Done(Box::new(rec)));
                    return Ok(Err(Step::Changed));
                }
                // `status` shows the sharded run from now on ("0 of N done").
                let _ = store.note_shard_plan(&sc.id, &ki.key(), sh.count);
                return Ok(Ok(Some(sh)));
            }
            Sharding::Gather(count) if !self.dry_run => {
                let t0 = std::time::Instant::now();
                match super::gather::gather(store, stage, ki, inputs, count) {
                    Ok(rec) => {
                        store.write_record(&rec)?;
                        store.clear_shard_plans(&sc.id, &rec.key);
                        progress.println(format!(
                            "{:>9} {}: {count} shards gathered in {:.1}s",
                            "done",
                            sc.id,
                            t0.elapsed().as_secs_f64()
                        ));
                        self.timeline.push(timeline_entry(&rec, "ran"));
                        self.outcomes.insert(
                            n,
                            StageOutcome::Ran {
                                seconds: t0.elapsed().as_secs_f64(),
                                reasons: vec![StaleReason::Gathered(count)],
                                threads: 1,
                                usage: rec.usage.clone().unwrap_or_default(),
                            },
                        );
                        self.slots.insert(n, Slot::Done(Box::new(rec)));
                    }
                    Err(e) => {
                        progress.warn(format!("stage `{}`: {e}", sc.id));
                        self.outcomes.insert(n, StageOutcome::Failed { error: e });
                        self.slots.insert(n, Slot::Failed);
                        self.failed_any = true;
                    }
                }
                return Ok(Err(Step::Changed));
            }
            Sharding::Gather(_) => {}
        }
        Ok(Ok(None))
    }

    /// The reason to skip a node whose upstream failed or was skipped.
    fn failed_upstream(&self, needs: &[usize]) -> Option<String> {
        let bad: Vec<String> = needs
            .iter()
            .filter(|m| matches!(self.slots[m], Slot::Failed | Slot::Skipped(_)))
            .map(|&m| self.name(m))
            .collect();
        (!bad.is_empty()).then(|| format!("upstream `{}` did not complete", bad.join("`, `")))
    }

    /// The input artifacts of node `n`, by `stage.output`, once every upstream node is done.
    /// A node that reads every variant of a sweep (it aggregates the seeds) also gets each
    /// variant as `stage@seed.output`; `stage.output` is then the first seed's.
    fn input_artifacts(&self, n: usize, needs: &[usize]) -> Option<BTreeMap<String, Artifact>> {
        let per_seed = self.nodes[n].seed.is_some() && !self.sweep.is_empty();
        let mut out = BTreeMap::new();
        for &m in needs {
            let Slot::Done(rec) = &self.slots[&m] else {
                return None;
            };
            let node = &self.nodes[m];
            let id = &self.config.stages[node.stage].id;
            for (name, a) in &rec.outputs {
                if per_seed || node.primary {
                    out.insert(format!("{id}.{name}"), a.clone());
                }
                if let (Some(s), false, false) = (node.seed, self.sweep.is_empty(), per_seed) {
                    out.insert(format!("{id}@{s}.{name}"), a.clone());
                }
            }
        }
        Some(out)
    }

    fn take_cached(
        &mut self,
        n: usize,
        rec: RunRecord,
        store: &Store,
        progress: &Progress,
    ) -> Result<(), Error> {
        if !self.dry_run {
            if self.nodes[n].primary {
                // The latest record is what `why` and `predict` compare against.
                store.set_latest(&rec)?;
            }
            let mut entry = timeline_entry(&rec, "cached");
            entry.stage = self.name(n);
            self.timeline.push(entry);
        }
        progress.println(format!("{:>9} {} (cached)", "fresh", self.name(n)));
        self.outcomes.insert(
            n,
            StageOutcome::Cached {
                seconds: rec.seconds,
            },
        );
        self.slots.insert(n, Slot::Done(Box::new(rec)));
        Ok(())
    }

    /// If an input blob is corrupt or missing: invalidates its producer so that it runs
    /// again (once; a second time is an error) and returns true.
    fn rebuild_corrupt_input(
        &mut self,
        store: &Store,
        needs: &[usize],
        progress: &Progress,
    ) -> Result<bool, Error> {
        let Some((producer, digest, reason)) = self.verify_inputs(store, needs)? else {
            return Ok(false);
        };
        let pid = self.name(producer);
        let count = self.rebuilds.entry(producer).or_insert(0);
        *count += 1;
        if *count > 1 {
            return Err(Error::CorruptAgain {
                stage: pid,
                digest,
                reason,
            });
        }
        progress.warn(format!(
            "blob {} of `{pid}` is corrupt ({reason}); removed it, rebuilding `{pid}`",
            &digest[..digest.len().min(16)],
        ));
        if let Slot::Done(rec) = &self.slots[&producer] {
            store.invalidate(&rec.stage, &rec.key);
        }
        self.slots.insert(producer, Slot::Waiting);
        Ok(true)
    }

    fn start(
        &mut self,
        job: Job<'r>,
        mut share: Share,
        progress: &Progress,
        spawn: &mut dyn FnMut(Job<'r>),
    ) {
        let n = job.index;
        progress.println(format!(
            "{:>9} {} ({}; {} thread{})",
            "running",
            self.name(n),
            crate::key::join_reasons(&job.reasons),
            job.threads,
            if job.threads == 1 { "" } else { "s" }
        ));
        share.overlapped = !self.running.is_empty();
        for s in self.running.values_mut() {
            s.overlapped = true;
        }
        self.running.insert(n, share);
        self.slots.insert(n, Slot::Running);
        spawn(job);
    }

    /// Whether a stage needing `s` may start now: within `jobs`, within the CPU budget and,
    /// when it declares memory, within the machine's memory (a stage alone always starts).
    fn fits(&self, s: &Share) -> bool {
        let used: usize = self.running.values().map(|r| r.threads).sum();
        let mem: u64 = self.running.values().map(|r| r.memory).sum();
        self.running.is_empty()
            || (self.running.len() < self.jobs
                && used + s.threads <= self.budget.max(1)
                && (s.memory == 0 || self.memory_total == 0 || mem + s.memory <= self.memory_total))
    }

    fn finish(&mut self, f: Finished, store: &Store, progress: &Progress) -> Result<(), Error> {
        let n = f.index;
        let share = self.running.remove(&n);
        let name = self.name(n);
        let id = self.config.stages[self.nodes[n].stage].id.clone();
        if let Some(sh) = f.shard {
            let key = f.key_inputs.key();
            return match &f.result {
                Ok(_) => {
                    let shared = share.is_some_and(|s| s.overlapped);
                    let rec = record_shard_success(store, &id, f, shared, sh)?;
                    progress.println(format!(
                        "{:>9} {name} shard {sh} in {:.1}s",
                        "done", rec.seconds
                    ));
                    self.outcomes.insert(
                        n,
                        StageOutcome::Ran {
                            seconds: rec.seconds,
                            reasons: vec![StaleReason::Shard(sh.to_string())],
                            threads: rec.threads,
                            usage: rec.usage.clone().unwrap_or_default(),
                        },
                    );
                    self.slots.insert(n, Slot::Done(Box::new(rec)));
                    Ok(())
                }
                Err(e) => {
                    progress.warn(format!("stage `{name}` shard {sh} failed: {e}"));
                    store.write_shard_failure(
                        &id,
                        &key,
                        sh,
                        &ShardFailure {
                            error: e.clone(),
                            host: crate::fsutil::hostname(),
                            job: self.job.clone(),
                            finished_ms: f.finished_ms,
                        },
                    )?;
                    self.outcomes
                        .insert(n, StageOutcome::Failed { error: e.clone() });
                    self.slots.insert(n, Slot::Failed);
                    self.failed_any = true;
                    Ok(())
                }
            };
        }
        match &f.result {
            Ok(_) => {
                let shared = share.is_some_and(|s| s.overlapped);
                let (rec, outcome, mut entry) =
                    record_success(store, &id, f, shared, self.nodes[n].primary)?;
                progress.println(format!("{:>9} {name} in {:.1}s", "done", rec.seconds));
                entry.stage = name;
                self.outcomes.insert(n, outcome);
                self.timeline.push(entry);
                self.slots.insert(n, Slot::Done(Box::new(rec)));
            }
            Err(e) => {
                progress.warn(format!("stage `{name}` failed: {e}"));
                self.outcomes
                    .insert(n, StageOutcome::Failed { error: e.clone() });
                self.slots.insert(n, Slot::Failed);
                self.failed_any = true;
            }
        }
        Ok(())
    }

    /// Checks every chunk of the inputs of a node; returns the first corrupt one's producer.
    fn verify_inputs(
        &self,
        store: &Store,
        needs: &[usize],
    ) -> Result<Option<(usize, String, String)>, Error> {
        for &m in needs {
            if let Slot::Done(rec) = &self.slots[&m] {
                for a in rec.outputs.values() {
                    for c in &a.chunks {
                        match Chunk::open(store, c) {
                            Ok(_) => {}
                            Err(StoreError::Corrupt { digest, reason }) => {
                                return Ok(Some((m, digest, reason)))
                            }
                            Err(StoreError::Missing { digest }) => {
                                return Ok(Some((m, digest, "missing".into())))
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn into_done(mut self) -> Done {
        let mut outcomes = Vec::new();
        let mut records = BTreeMap::new();
        for n in 0..self.nodes.len() {
            let name = self.name(n);
            let outcome = match self.slots.remove(&n).expect("every node has a slot") {
                Slot::Done(rec) => {
                    let key = if self.nodes[n].primary {
                        self.config.stages[self.nodes[n].stage].id.clone()
                    } else {
                        name.clone()
                    };
                    records.insert(key, *rec);
                    self.outcomes
                        .remove(&n)
                        .expect("done nodes have an outcome")
                }
                Slot::Skipped(reason) => self
                    .outcomes
                    .remove(&n)
                    .unwrap_or(StageOutcome::Skipped { reason }),
                _ => self.outcomes.remove(&n).unwrap_or(StageOutcome::Skipped {
                    reason: "not reached".into(),
                }),
            };
            outcomes.push((name, outcome));
        }
        Done {
            outcomes,
            records,
            timeline: self.timeline,
        }
    }
}
