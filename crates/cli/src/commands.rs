//! The runner's own commands: run, status, why, dag, artifacts, gc, verify, bench.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use pipeline::{
    plan, run, Artifact, Chunk, Config, Dtype, Progress, Registry, RunSummary, StageOutcome,
    StageState, Store,
};

use crate::globals::Globals;
use crate::run_args::RunArgs;
use crate::table::{human_bytes, seconds};

/// The commands of every runner binary (flattened into its own command enum).
#[derive(Debug, Subcommand)]
pub enum CoreCommand {
    /// Bring stages up to date: `run all`, or `run STAGE...` (with their stale upstream).
    Run(RunArgs),
    /// Fresh or stale, with the reason, for every stage; the cache size; `--timeline`: what the
    /// last run did, stage by stage.
    Status {
        #[arg(long)]
        json: bool,
        /// The last run's timeline: stage, start, end, threads, CPU time, peak memory.
        #[arg(long)]
        timeline: bool,
    },
    /// What changed for STAGE since its last run.
    Why { stage: String },
    /// The stage graph.
    Dag {
        #[arg(long, conflicts_with = "mermaid")]
        dot: bool,
        #[arg(long)]
        mermaid: bool,
    },
    /// Inspect cached artifacts.
    Artifacts {
        #[command(subcommand)]
        command: ArtifactsCommand,
    },
    /// Delete blobs that no kept run record refers to.
    Gc {
        /// Older runs to keep per stage, besides the latest.
        #[arg(long, default_value_t = 0)]
        keep: usize,
        /// Keep unreferenced blobs younger than this many seconds (a run on another machine
        /// may have stored them, its record still to come).
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        grace: u64,
    },
    /// Re-hash every cached blob that a run record names; report corrupt or missing ones.
    Verify {
        /// Also forget the records that name a bad blob (the next run rebuilds them).
        #[arg(long)]
        repair: bool,
    },
    /// Run a crate's criterion benchmarks (all crates' without CRATE); `bench scale`: the
    /// runner's cost per input file from 10 k to 1.28 M files (`bench scale -- --help`).
    Bench {
        #[arg(name = "CRATE")]
        krate: Option<String>,
        /// Extra arguments for the bench binary (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// The artifacts of the latest run of each stage (or of one stage).
    Ls { stage: Option<String> },
    /// Tensors, shapes, statistics and metadata of REF: `stage.output` or a digest prefix.
    Show {
        #[arg(name = "REF")]
        reference: String,
    },
}

/// What a binary adds around the core commands.
pub trait Hooks {
    /// Called with the summary of a successful, not dry, `run` (e.g. to write a report).
    fn after_run(
        &self,
        _config: &Config,
        _summary: &RunSummary,
        _progress: &Progress,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    /// Settings outside the stages' declared inputs that hold paths (e.g. a folder written
    /// after a run): a relative `--set` of one is relative to the current directory, as for
    /// the others (see [`Config::load_with_paths`]).
    fn path_settings(&self) -> &'static [&'static str] {
        &[]
    }
}

/// No hooks.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Executes a core command.
pub fn execute(
    cmd: CoreCommand,
    globals: &Globals,
    registry: &Registry,
    hooks: &dyn Hooks,
) -> anyhow::Result<()> {
    let progress = crate::terminal::Terminal::progress(globals.quiet);
    if let CoreCommand::Bench { krate, args } = &cmd {
        return bench(krate.as_deref(), args);
    }
    let config = Config::load_with_paths(&globals.config, &globals.set, hooks.path_settings())?;
    match cmd {
        CoreCommand::Run(args) if crate::slurm::wanted(&config, &args)? => {
            crate::slurm::submit(&config, registry, globals, &args, &progress)?;
        }
        CoreCommand::Run(args) => {
            let opts = args.options();
            let summary = run(&config, registry, &opts, &progress)?;
            if !globals.quiet {
                print_summary(&summary);
            }
            summary.check()?;
            if !opts.dry_run {
                hooks.after_run(&config, &summary, &progress)?;
            }
        }
        CoreCommand::Status { json, timeline } => {
            let store = config.open_store()?;
            if timeline {
                crate::timeline::print(&store)?;
            } else {
                status(&config, registry, &store, json)?;
            }
            for n in store.take_notices() {
                progress.warn(n);
            }
        }
        CoreCommand::Why { stage } => {
            let p = plan(&config, registry)?;
            for n in &p.notices {
                progress.warn(n);
            }
            let e = p
                .get(&stage)
                .with_context(|| format!("unknown stage `{stage}`"))?;
            match &e.state {
                StageState::Fresh { key, .. } => {
                    println!("`{stage}` is fresh (key {})", &key[..12])
                }
                StageState::Stale { reasons, .. } => {
                    println!("`{stage}` is stale:");
                    for r in reasons {
                        println!("  {r}");
                    }
                }
            }
        }
        CoreCommand::Dag { dot, mermaid } => print_dag(&config, dot, mermaid),
        CoreCommand::Artifacts { command } => {
            let store = config.open_store()?;
            match command {
                ArtifactsCommand::Ls { stage } => artifacts_ls(&config, &store, stage.as_deref())?,
                ArtifactsCommand::Show { reference } => artifacts_show(&store, &reference)?,
            }
        }
        CoreCommand::Gc { keep, grace } => {
            let store = config.open_store()?;
            // Before waiting for the local lock: a live run anywhere refuses gc at once.
            store.refuse_if_leased()?;
            let _lock = store.lock(true, |h| {
                progress.warn(format!("waiting for the cache lock (held by {h})"))
            })?;
            let (recs, blobs, bytes) = store.gc(keep, std::time::Duration::from_secs(grace))?;
            let (left, n) = store.blob_usage();
            println!(
                "removed {recs} run records and {blobs} blobs ({}); {n} blobs ({}) remain",
                human_bytes(bytes),
                human_bytes(left)
            );
        }
        CoreCommand::Verify { repair } => {
            let store = config.open_store()?;
            let _lock = if repair {
                Some(store.lock(true, |h| {
                    progress.warn(format!("waiting for the cache lock (held by {h})"))
                })?)
            } else {
                None
            };
            let r = pipeline::verify(&store, repair, &progress)?;
            for n in store.take_notices() {
                progress.warn(n);
            }
            println!(
                "checked {} blobs ({}): {} bad",
                r.checked,
                human_bytes(r.bytes),
                r.problems.len()
            );
            for p in &r.problems {
                let recs: Vec<String> = p
                    .records
                    .iter()
                    .map(|(s, k)| format!("{s} {}", &k[..k.len().min(12)]))
                    .collect();
                println!(
                    "  {} {}: named by {}",
                    &p.digest[..p.digest.len().min(16)],
                    p.reason,
                    recs.join(", ")
                );
            }
            if repair {
                println!(
                    "removed {} run record(s); `run` rebuilds them",
                    r.removed_records.len()
                );
            } else if !r.problems.is_empty() {
                bail!(
                    "{} bad blob(s): run `verify --repair`, then `run`, to rebuild what they invalidate",
                    r.problems.len()
                );
            }
        }
        CoreCommand::Bench { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn status(config: &Config, registry: &Registry, store: &Store, json: bool) -> anyhow::Result<()> {
    let p = plan(config, registry)?;
    for n in &p.notices {
        eprintln!("warning: {n}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    for e in &p.entries {
        match &e.state {
            StageState::Fresh {
                key,
                seconds: secs,
                finished_ms,
                skipped,
            } => {
                let usage = store
                    .read_record(&e.stage, key)?
                    .and_then(|r| r.usage)
                    .map(|u| {
                        format!(
                            ", cpu {}, peak {}",
                            seconds(u.cpu_seconds),
                            human_bytes(u.peak_rss_bytes)
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{:<14} fresh  key {} (ran {}{usage}, finished {}){}",
                    e.stage,
                    &key[..12],
                    seconds(*secs),
                    pipeline::format_unix(finished_ms / 1000),
                    if *skipped > 0 {
                        format!(
                            "; {skipped} input files skipped (see `artifacts show {}...`)",
                            e.stage
                        )
                    } else {
                        String::new()
                    }
                )
            }
            StageState::Stale { reasons, key } => {
                println!("{:<14} stale  {}", e.stage, pipeline::join_reasons(reasons));
                if let Some(key) = key {
                    for line in crate::slurm::shard_status(store, &e.stage, key)? {
                        println!("{:<14}        {line}", "");
                    }
                }
            }
        }
    }
    println!(
        "cache {}: {} blobs, {}",
        p.cache,
        p.cache_blobs,
        human_bytes(p.cache_bytes)
    );
    Ok(())
}

/// The table printed after a run: outcome, seconds, threads, throughput per stage.
pub fn print_summary(s: &RunSummary) {
    println!(
        "\n{:<14} {:<9} {:>9} {:>7} {:>16}  detail",
        "stage", "outcome", "seconds", "threads", "throughput"
    );
    for (id, o) in &s.stages {
        let (what, secs, threads, rate, detail) = match o {
            StageOutcome::Ran {
                seconds: t,
                reasons,
                threads,
                usage,
            } => (
                "ran",
                format!("{t:.1}"),
                threads.to_string(),
                usage
                    .throughput(*t)
                    .map(|(r, unit)| format!("{r:.1} {unit}/s"))
                    .unwrap_or_default(),
                pipeline::join_reasons(reasons),
            ),
            StageOutcome::Cached { seconds: t } => (
                "cached",
                format!("({t:.1})"),
                String::new(),
                String::new(),
                String::new(),
            ),
            StageOutcome::Failed { error } => (
                "FAILED",
                "-".into(),
                String::new(),
                String::new(),
                error.clone(),
            ),
            StageOutcome::Skipped { reason } => (
                "skipped",
                "-".into(),
                String::new(),
                String::new(),
                reason.clone(),
            ),
            StageOutcome::WouldRun { reasons } => (
                "would run",
                "-".into(),
                String::new(),
                String::new(),
                pipeline::join_reasons(reasons),
            ),
        };
        println!("{id:<14} {what:<9} {secs:>9} {threads:>7} {rate:>16}  {detail}");
    }
    println!("total {:.1}s", s.seconds);
}

fn print_dag(config: &Config, dot: bool, mermaid: bool) {
    if dot {
        println!("digraph pipeline {{\n  rankdir=LR;");
        for s in &config.stages {
            println!("  \"{}\";", s.id);
            for n in &s.needs {
                println!("  \"{n}\" -> \"{}\";", s.id);
            }
        }
        println!("}}");
    } else if mermaid {
        println!("graph LR");
        for s in &config.stages {
            if s.needs.is_empty() {
                println!("  {}", s.id);
            }
            for n in &s.needs {
                println!("  {n} --> {}", s.id);
            }
        }
    } else {
        for s in &config.stages {
            if s.needs.is_empty() {
                println!("{}", s.id);
            } else {
                println!("{} <- {}", s.id, s.needs.join(", "));
            }
        }
    }
}

fn artifacts_ls(config: &Config, store: &Store, stage: Option<&str>) -> anyhow::Result<()> {
    let ids: Vec<&str> = match stage {
        Some(s) => {
            if config.stage(s).is_none() {
                bail!("unknown stage `{s}`");
            }
            vec![s]
        }
        None => config.stages.iter().map(|s| s.id.as_str()).collect(),
    };
    for id in ids {
        match store.latest(id)? {
            None => println!("{id}: never run"),
            Some(rec) => {
                for a in rec.outputs.values() {
                    let tensors: Vec<String> = summarize_tensors(a)
                        .iter()
                        .map(|(n, d, s)| format!("{n} {} {s:?}", d.name()))
                        .collect();
                    println!(
                        "{}.{}  {}  {} chunk(s)  {}  {}",
                        a.stage,
                        a.name,
                        &a.digest[..12],
                        a.chunks.len(),
                        human_bytes(a.total_bytes()),
                        tensors.join(", ")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Tensor names with dtype and shape concatenated over chunks along the first axis.
fn summarize_tensors(a: &Artifact) -> Vec<(String, Dtype, Vec<usize>)> {
    let mut out: Vec<(String, Dtype, Vec<usize>)> = Vec::new();
    for c in &a.chunks {
        for t in &c.tensors {
            match out.iter_mut().find(|(n, _, _)| n == &t.name) {
                Some((_, _, shape)) if !shape.is_empty() && !t.shape.is_empty() => {
                    shape[0] += t.shape[0]
                }
                Some(_) => {}
                None => out.push((t.name.clone(), t.dtype, t.shape.clone())),
            }
        }
    }
    out
}

fn find_artifact(store: &Store, reference: &str) -> anyhow::Result<Artifact> {
    if let Some((stage, output)) = reference.split_once('.') {
        if let Some(rec) = store.latest(stage)? {
            return rec.outputs.get(output).cloned().with_context(|| {
                format!(
                    "stage `{stage}` has no output `{output}` (it has: {})",
                    rec.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            });
        }
        bail!("stage `{stage}` has no run in this cache");
    }
    if reference.len() < 4 || !reference.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "`{reference}` is neither `stage.output` nor a digest prefix of at least 4 hex digits"
        );
    }
    let mut found: BTreeMap<String, Artifact> = BTreeMap::new();
    for rec in store.records()? {
        for a in rec.outputs.values() {
            if a.digest.starts_with(reference)
                || a.chunks.iter().any(|c| c.digest.starts_with(reference))
            {
                found.insert(a.digest.clone(), a.clone());
            }
        }
    }
    match found.len() {
        0 => bail!("no artifact or chunk digest starts with `{reference}`"),
        1 => Ok(found.into_values().next().expect("one")),
        _ => bail!(
            "`{reference}` is ambiguous: {}",
            found
                .values()
                .map(|a| format!("{} ({}.{})", &a.digest[..12], a.stage, a.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[derive(Default)]
struct Stats {
    n: u64,
    nan: u64,
    min: f64,
    max: f64,
    sum: f64,
}

impl Stats {
    fn add(&mut self, v: f64) {
        if v.is_nan() {
            self.nan += 1;
            return;
        }
        if self.n == 0 {
            self.min = v;
            self.max = v;
        }
        self.n += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
    }
}

fn artifacts_show(store: &Store, reference: &str) -> anyhow::Result<()> {
    let a = find_artifact(store, reference)?;
    println!("artifact {}.{}", a.stage, a.name);
    println!("digest   {}", a.digest);
    println!(
        "chunks   {} ({})",
        a.chunks.len(),
        human_bytes(a.total_bytes())
    );
    let mut stats: BTreeMap<String, Stats> = BTreeMap::new();
    let mut header = BTreeMap::new();
    for (i, c) in a.chunks.iter().enumerate() {
        let chunk = Chunk::open(store, c)
            .with_context(|| format!("chunk {i} of {}.{}", a.stage, a.name))?;
        if i == 0 {
            header = chunk.header_metadata();
        }
        for t in &c.tensors {
            let s = stats.entry(t.name.clone()).or_default();
            let (_, _, bytes) = chunk.raw(&t.name).map_err(|e| anyhow::anyhow!("{e}"))?;
            accumulate(s, t.dtype, bytes);
        }
    }
    println!("tensors (over all chunks):");
    for (name, dtype, shape) in summarize_tensors(&a) {
        let s = &stats[&name];
        let mean = if s.n > 0 {
            s.sum / s.n as f64
        } else {
            f64::NAN
        };
        println!(
            "  {name:<16} {:<4} {:<22} min {:<10} max {:<10} mean {:<12} NaN {}",
            dtype.name(),
            format!("{shape:?}"),
            fmt_num(s.min),
            fmt_num(s.max),
            fmt_num(mean),
            s.nan
        );
    }
    if !a.meta.is_empty() {
        println!("metadata:");
        for (k, v) in &a.meta {
            let mut text = v.to_string();
            if text.len() > 300 {
                text.truncate(300);
                text.push_str(" …");
            }
            println!("  {k}: {text}");
        }
    }
    println!("chunk header (chunk 0):");
    for (k, v) in header {
        println!("  {k}: {v}");
    }
    Ok(())
}

fn accumulate(s: &mut Stats, dtype: Dtype, bytes: &[u8]) {
    match dtype {
        Dtype::U8 => bytes.iter().for_each(|&b| s.add(b as f64)),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .for_each(|b| s.add(f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .for_each(|b| s.add(f64::from_le_bytes(b.try_into().expect("8 bytes")))),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .for_each(|b| s.add(i32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)),
        Dtype::U32 => bytes
            .chunks_exact(4)
            .for_each(|b| s.add(u32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .for_each(|b| s.add(i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)),
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v == v.trunc() && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn bench(krate: Option<&str>, args: &[String]) -> anyhow::Result<()> {
    if krate == Some("scale") {
        return crate::scale::bench_scale(args);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.arg("bench");
    match krate {
        Some(k) => cmd.args(["-p", k]),
        None => cmd.arg("--workspace"),
    };
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let status = cmd.status().context("starting cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    Ok(())
}
