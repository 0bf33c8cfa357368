//! Step 3: the scheduler. It walks the selected stages in order, finds each one's key once its
//! upstream is done, takes fresh records from the cache, and starts stale stages while their
//! threads (and declared memory) fit the run's budget, first come first served.

use std::collections::BTreeMap;
use std::sync::mpsc;

use crate::artifact::Artifact;
use crate::chunk::Chunk;
use crate::config::Config;
use crate::error::{Error, StoreError};
use crate::plan::{fresh_record, key_inputs, stale_reasons, upstream_inputs, Resolved};
use crate::progress::Progress;
use crate::record::RunRecord;
use crate::run::execute::{execute, Finished, Job};
use crate::run::record::{record_success, timeline_entry};
use crate::run::select::Selection;
use crate::run::{RunOptions, StageOutcome};
use crate::store::{Store, TimelineEntry};

enum Slot {
    Waiting,
    Running,
    Done(Box<RunRecord>),
    Failed,
    Skipped(String),
}

/// A running stage's share of the budget.
struct Share {
    threads: usize,
    memory: u64,
    /// Another stage ran at the same time.
    overlapped: bool,
}

/// What considering one waiting stage did.
enum Step {
    Unchanged,
    Changed,
    /// A corrupt input sent its producer back to waiting: start the pass over.
    Restart,
}

/// What a pass over the waiting stages achieved.
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
    sel: &'c Selection,
    externals: BTreeMap<usize, BTreeMap<String, String>>,
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
}

impl<'c, 'r> Scheduler<'c, 'r> {
    pub(crate) fn new(
        config: &'c Config,
        resolved: &'c Resolved<'r>,
        sel: &'c Selection,
        externals: BTreeMap<usize, BTreeMap<String, String>>,
        opts: &RunOptions,
    ) -> Self {
        Scheduler {
            config,
            resolved,
            sel,
            externals,
            dry_run: opts.dry_run,
            jobs: opts.jobs.unwrap_or(config.jobs).max(1),
            budget: config.cpu_budget(),
            memory_total: crate::usage::total_memory_bytes(),
            slots: sel.order.iter().map(|&i| (i, Slot::Waiting)).collect(),
            outcomes: BTreeMap::new(),
            rebuilds: BTreeMap::new(),
            running: BTreeMap::new(),
            timeline: Vec::new(),
            failed_any: false,
        }
    }

    /// Runs until every selected stage is done, failed or skipped.
    pub(crate) fn drive(mut self, store: &Store, progress: &Progress) -> Result<Done, Error> {
        let (tx, rx) = mpsc::channel::<Finished>();
        let (config, resolved) = (self.config, self.resolved);
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
        let _ = (config, resolved);
        Ok(self.into_done())
    }

    fn needs(&self, i: usize) -> Vec<usize> {
        self.config.stages[i]
            .needs
            .iter()
            .map(|n| {
                self.config
                    .stages
                    .iter()
                    .position(|s| &s.id == n)
                    .expect("validated")
            })
            .collect()
    }

    /// One pass over the waiting stages, in order.
    fn pass(
        &mut self,
        store: &Store,
        progress: &Progress,
        spawn: &mut dyn FnMut(Job<'r>),
    ) -> Result<Pass, Error> {
        let mut progressed = false;
        // Once a stage waits for resources, later ones do not overtake it.
        let mut blocked = false;
        for &i in &self.sel.order {
            if !matches!(self.slots[&i], Slot::Waiting) {
                continue;
            }
            match self.consider(i, store, progress, &mut blocked, spawn)? {
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

    /// Moves waiting stage `i` on if it can: skipped, cached, would-run, or started.
    fn consider(
        &mut self,
        i: usize,
        store: &Store,
        progress: &Progress,
        blocked: &mut bool,
        spawn: &mut dyn FnMut(Job<'r>),
    ) -> Result<Step, Error> {
        let sc = &self.config.stages[i];
        let needs = self.needs(i);
        if let Some(reason) = self.failed_upstream(&needs) {
            self.slots.insert(i, Slot::Skipped(reason));
            return Ok(Step::Changed);
        }
        let Some(done) = self.done_outputs(&needs) else {
            return Ok(Step::Unchanged);
        };
        let inputs = upstream_inputs(&sc.needs, &done).expect("every upstream is done");
        let (stage, params, resources) = &self.resolved.stages[i];
        let ki = key_inputs(
            self.config,
            *stage,
            params,
            inputs,
            self.externals[&i].clone(),
        );
        let forced = self.sel.forced.contains(&sc.id);
        if !forced {
            if let Some(rec) = fresh_record(store, &sc.id, &ki.key())? {
                self.take_cached(i, rec, store, progress)?;
                return Ok(Step::Changed);
            }
        }
        let reasons = if forced {
            vec!["forced".to_string()]
        } else {
            stale_reasons(store, &ki)?
        };
        if self.dry_run {
            progress.println(format!(
                "{:>9} {}: {}",
                "would run",
                sc.id,
                reasons.join("; ")
            ));
            self.outcomes.insert(i, StageOutcome::WouldRun { reasons });
            // Downstream keys depend on outputs we do not have: they wait on this stage.
            self.slots
                .insert(i, Slot::Skipped(format!("waits for `{}`", sc.id)));
            return Ok(Step::Changed);
        }
        if self.failed_any {
            self.slots
                .insert(i, Slot::Skipped("an earlier stage failed".into()));
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
            index: i,
            stage: *stage,
            key_inputs: ki,
            reasons,
            params: params.clone(),
            threads: share.threads,
            settings: sc
                .inputs
                .iter()
                .map(|n| (n.clone(), self.config.setting_path(n)))
                .collect(),
            inputs: done
                .iter()
                .flat_map(|(sid, outs)| {
                    outs.iter()
                        .map(move |(name, a)| (format!("{sid}.{name}"), a.clone()))
                })
                .collect(),
            seed: self.config.seed,
            device: self.config.device.clone(),
            alone: self.running.is_empty(),
        };
        self.start(job, share, progress, spawn);
        Ok(Step::Changed)
    }

    /// The reason to skip a stage whose upstream failed or was skipped.
    fn failed_upstream(&self, needs: &[usize]) -> Option<String> {
        let bad: Vec<&str> = needs
            .iter()
            .filter(|n| matches!(self.slots[n], Slot::Failed | Slot::Skipped(_)))
            .map(|&n| self.config.stages[n].id.as_str())
            .collect();
        (!bad.is_empty()).then(|| format!("upstream `{}` did not complete", bad.join("`, `")))
    }

    /// The outputs of every upstream stage, once all are done.
    fn done_outputs(
        &self,
        needs: &[usize],
    ) -> Option<BTreeMap<String, BTreeMap<String, Artifact>>> {
        let mut done = BTreeMap::new();
        for &n in needs {
            match &self.slots[&n] {
                Slot::Done(rec) => {
                    done.insert(self.config.stages[n].id.clone(), rec.outputs.clone());
                }
                _ => return None,
            }
        }
        Some(done)
    }

    fn take_cached(
        &mut self,
        i: usize,
        rec: RunRecord,
        store: &Store,
        progress: &Progress,
    ) -> Result<(), Error> {
        if !self.dry_run {
            // The latest record is what `why` compares against.
            store.set_latest(&rec)?;
            self.timeline.push(timeline_entry(&rec, "cached"));
        }
        progress.println(format!(
            "{:>9} {} (cached)",
            "fresh", self.config.stages[i].id
        ));
        self.outcomes.insert(
            i,
            StageOutcome::Cached {
                seconds: rec.seconds,
            },
        );
        self.slots.insert(i, Slot::Done(Box::new(rec)));
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
        let n = self.rebuilds.entry(producer).or_insert(0);
        *n += 1;
        let pid = self.config.stages[producer].id.clone();
        if *n > 1 {
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
        let i = job.index;
        progress.println(format!(
            "{:>9} {} ({}; {} thread{})",
            "running",
            self.config.stages[i].id,
            job.reasons.join("; "),
            job.threads,
            if job.threads == 1 { "" } else { "s" }
        ));
        share.overlapped = !self.running.is_empty();
        for s in self.running.values_mut() {
            s.overlapped = true;
        }
        self.running.insert(i, share);
        self.slots.insert(i, Slot::Running);
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
        let i = f.index;
        let share = self.running.remove(&i);
        let id = self.config.stages[i].id.clone();
        match &f.result {
            Ok(_) => {
                let shared = share.is_some_and(|s| s.overlapped);
                let (rec, outcome, entry) = record_success(store, &id, f, shared)?;
                progress.println(format!("{:>9} {} in {:.1}s", "done", id, rec.seconds));
                self.outcomes.insert(i, outcome);
                self.timeline.push(entry);
                self.slots.insert(i, Slot::Done(Box::new(rec)));
            }
            Err(e) => {
                progress.warn(format!("stage `{id}` failed: {e}"));
                self.outcomes
                    .insert(i, StageOutcome::Failed { error: e.clone() });
                self.slots.insert(i, Slot::Failed);
                self.failed_any = true;
            }
        }
        Ok(())
    }

    /// Checks every chunk of the inputs of a stage; returns the first corrupt one's producer.
    fn verify_inputs(
        &self,
        store: &Store,
        needs: &[usize],
    ) -> Result<Option<(usize, String, String)>, Error> {
        for &n in needs {
            if let Slot::Done(rec) = &self.slots[&n] {
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
        for &i in &self.sel.order {
            let id = self.config.stages[i].id.clone();
            let outcome = match self
                .slots
                .remove(&i)
                .expect("every selected stage has a slot")
            {
                Slot::Done(rec) => {
                    records.insert(id.clone(), *rec);
                    self.outcomes
                        .remove(&i)
                        .expect("done stages have an outcome")
                }
                Slot::Skipped(reason) => self
                    .outcomes
                    .remove(&i)
                    .unwrap_or(StageOutcome::Skipped { reason }),
                _ => self.outcomes.remove(&i).unwrap_or(StageOutcome::Skipped {
                    reason: "not reached".into(),
                }),
            };
            outcomes.push((id, outcome));
        }
        Done {
            outcomes,
            records,
            timeline: self.timeline,
        }
    }
}
