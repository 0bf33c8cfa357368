//! Step 4: one stage on a thread pool of its own, with its CPU time and the process's peak
//! memory measured; a panic is caught and reported like an error.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::Value;

use crate::artifact::Artifact;
use crate::clock::now_ms;
use crate::context::StageContext;
use crate::key::KeyInputs;
use crate::progress::Progress;
use crate::shard::Shard;
use crate::stage::AnyStage;
use crate::store::Store;
use crate::usage;

/// Everything one execution needs.
pub(crate) struct Job<'r> {
    pub index: usize,
    pub stage: &'r dyn AnyStage,
    pub key_inputs: KeyInputs,
    pub reasons: Vec<crate::key::StaleReason>,
    pub params: Value,
    pub threads: usize,
    pub settings: BTreeMap<String, Option<PathBuf>>,
    pub inputs: BTreeMap<String, Artifact>,
    /// The seed, for a stage that uses it.
    pub seed: Option<u64>,
    pub device: String,
    /// The seeds of a sweep (empty without one).
    pub sweep: Vec<u64>,
    /// Whether the stage starts alone (its peak memory can then be measured from a reset).
    pub alone: bool,
    /// The shard to compute, in a sharded run.
    pub shard: Option<Shard>,
}

/// What an execution returns to the scheduler.
pub(crate) struct Finished {
    pub index: usize,
    pub key_inputs: KeyInputs,
    pub reasons: Vec<crate::key::StaleReason>,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub threads: usize,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub items: Option<(u64, String)>,
    pub shard: Option<Shard>,
    pub result: Result<BTreeMap<String, Artifact>, String>,
}

pub(crate) fn execute(job: Job<'_>, store: &Store, progress: &Progress) -> Finished {
    let started_ms = now_ms();
    if job.alone {
        usage::reset_peak_rss();
    }
    let declared: Vec<String> = job.stage.outputs().iter().map(|s| s.to_string()).collect();
    let ctx = StageContext {
        stage: job.stage.id().to_string(),
        key: job.key_inputs.key(),
        params: job.params,
        seed: job.seed,
        device: job.device,
        threads: job.threads,
        settings: job.settings,
        inputs: job.inputs,
        declared_outputs: declared.clone(),
        store,
        progress,
        outputs: Mutex::new(BTreeMap::new()),
        items: Mutex::new(None),
        sweep: job.sweep,
        shard: job.shard,
    };
    let (result, cpu_seconds) = match rayon::ThreadPoolBuilder::new()
        .num_threads(job.threads)
        .thread_name(move |i| format!("stage-{}-{i}", job.index))
        .build()
    {
        Err(e) => (
            Err(format!("building a thread pool of {}: {e}", job.threads)),
            0.0,
        ),
        Ok(pool) => {
            let r =
                pool.install(|| std::panic::catch_unwind(AssertUnwindSafe(|| job.stage.run(&ctx))));
            // The pool is the stage's own: its threads' CPU time is the stage's.
            let cpu: f64 = pool.broadcast(|_| usage::thread_cpu_seconds()).iter().sum();
            let r = match r {
                Ok(Ok(())) => {
                    let outs = ctx.outputs.lock().map(|o| o.clone()).unwrap_or_default();
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
            (r, cpu)
        }
    };
    Finished {
        index: job.index,
        key_inputs: job.key_inputs,
        reasons: job.reasons,
        started_ms,
        finished_ms: now_ms(),
        threads: job.threads,
        cpu_seconds,
        peak_rss_bytes: usage::peak_rss_bytes(),
        items: ctx.items.lock().ok().and_then(|i| i.clone()),
        shard: job.shard,
        result,
    }
}

/// An error and its causes on one line, each cause once: one that the message above it
/// already ends with (an error that prints its source, as `path: source` does) is not
/// repeated.
fn format_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
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

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_said_once() {
        let full = std::io::Error::from_raw_os_error(28);
        let e = crate::error::StoreError::Io {
            path: "cache/tmp/x.tmp".into(),
            source: full,
        };
        let s = super::format_error(&e);
        assert_eq!(s.matches("os error 28").count(), 1, "{s}");
        assert!(s.starts_with("cache/tmp/x.tmp: "), "{s}");
        // A cause the message does not include is still given.
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "writing the blob")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let s = super::format_error(&Outer(std::io::Error::from_raw_os_error(28)));
        assert!(
            s.starts_with("writing the blob: ") && s.contains("os error 28"),
            "{s}"
        );
    }
}
