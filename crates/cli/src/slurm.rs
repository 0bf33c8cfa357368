//! The SLURM executor: `run --executor slurm --shards N` plans on the submitting node and
//! submits each stale shardable stage as one job array (`--array`, a task per shard), a
//! gather job that depends on it (`afterok`, `--kill-on-invalid-dep=yes`), and every other
//! stale stage as a job that depends on its upstream's. Each job runs this same binary
//! (`run STAGE --shard $SLURM_ARRAY_TASK_ID/N`, `--gather N`, or `run STAGE`) on the shared
//! cache. What is done is read from the cache's records, never from a scheduler database: a
//! rerun submits only the shards without a record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use pipeline::{plan, Config, Progress, Registry, Shard, StageState, Store};

use crate::globals::Globals;
use crate::run_args::RunArgs;

/// `[executor]` in pipeline.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorSettings {
    /// `local` or `slurm`.
    pub kind: String,
    /// Shards per shardable stage.
    pub shards: usize,
    /// `sbatch -p`; empty: the cluster's default partition.
    pub partition: String,
    /// `sbatch -t`; empty: the partition's default.
    pub time: String,
    /// `sbatch -c`, and the thread budget of each job.
    pub cpus_per_task: usize,
    /// `sbatch --mem`; empty: the partition's default.
    pub mem: String,
    /// `sbatch --gres=gpu:N` when above 0 (untested here: this build runs on the CPU).
    pub gpus_per_task: usize,
    /// Extra `sbatch` arguments, e.g. `["--account=food", "--qos=short"]`.
    pub sbatch_flags: Vec<String>,
}

impl ExecutorSettings {
    pub fn from_config(config: &Config) -> anyhow::Result<ExecutorSettings> {
        let get = |k: &str| config.settings.get(&format!("executor.{k}"));
        let string = |k: &str, d: &str| -> anyhow::Result<String> {
            match get(k) {
                None => Ok(d.to_string()),
                Some(toml::Value::String(s)) => Ok(s.clone()),
                Some(v) => bail!("{}: `executor.{k}` must be a string, not {v}", config.file),
            }
        };
        let count = |k: &str, d: usize| -> anyhow::Result<usize> {
            match get(k) {
                None => Ok(d),
                Some(toml::Value::Integer(i)) if *i >= 0 => Ok(*i as usize),
                Some(v) => bail!(
                    "{}: `executor.{k}` must be a non-negative integer, not {v}",
                    config.file
                ),
            }
        };
        let flags = match get("sbatch_flags") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    v => bail!(
                        "{}: `executor.sbatch_flags` must be strings, not {v}",
                        config.file
                    ),
                })
                .collect::<anyhow::Result<_>>()?,
            Some(v) => bail!(
                "{}: `executor.sbatch_flags` must be an array of strings, not {v}",
                config.file
            ),
        };
        let s = ExecutorSettings {
            kind: string("kind", "local")?,
            shards: count("shards", 8)?,
            partition: string("partition", "")?,
            time: string("time", "")?,
            cpus_per_task: count("cpus_per_task", 2)?,
            mem: string("mem", "")?,
            gpus_per_task: count("gpus_per_task", 0)?,
            sbatch_flags: flags,
        };
        if !["local", "slurm"].contains(&s.kind.as_str()) {
            bail!(
                "{}: `executor.kind` is `{}`: it must be `local` or `slurm`",
                config.file,
                s.kind
            );
        }
        Shard::new(0, s.shards.max(1)).map_err(anyhow::Error::msg)?;
        if s.cpus_per_task == 0 {
            bail!(
                "{}: `executor.cpus_per_task` must be at least 1",
                config.file
            );
        }
        Ok(s)
    }
}

/// Whether `run` should submit to SLURM rather than run here: `--executor slurm` or the
/// config's `executor.kind`, except for the workers' own `--shard`/`--gather` runs.
pub(crate) fn wanted(config: &Config, args: &RunArgs) -> anyhow::Result<bool> {
    let kind = match &args.executor {
        Some(k) => k.clone(),
        None => ExecutorSettings::from_config(config)?.kind,
    };
    if kind != "slurm" {
        if args.shards.is_some() || args.wait {
            bail!("`--shards` and `--wait` apply to `--executor slurm`");
        }
        return Ok(false);
    }
    if args.shard.is_some() || args.gather.is_some() {
        // A worker inside a job: it runs here.
        return Ok(false);
    }
    if args.seeds.is_some() {
        bail!("`--executor slurm` does not run seed sweeps yet: run `--seeds` locally");
    }
    Ok(true)
}

/// One submitted job.
struct Submitted {
    stage: String,
    what: String,
    job: String,
}

pub(crate) fn submit(
    config: &Config,
    registry: &Registry,
    globals: &Globals,
    args: &RunArgs,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut s = ExecutorSettings::from_config(config)?;
    if let Some(n) = args.shards {
        Shard::new(0, n.max(1)).map_err(anyhow::Error::msg)?;
        s.shards = n;
    }
    if !args.dry_run {
        sbatch_version()?;
        if config.remote.is_none() {
            check_shared_cache(&config.cache)?;
        }
    }
    let store = config.open_store()?;
    let p = plan(config, registry)?;
    for n in &p.notices {
        progress.warn(n);
    }
    let opts = args.options();
    let targets: Vec<String> = if opts.targets.is_empty() {
        config.stages.iter().map(|s| s.id.clone()).collect()
    } else {
        opts.targets.clone()
    };
    let mut selected = config.upstream_closure(&targets);
    if opts.downstream {
        for t in &targets {
            selected.extend(config.downstream(t));
        }
    }
    let exe = std::env::current_exe().context("finding this program's path")?;
    let cfg = absolute(&globals.config)?;
    let logs = config.cache.join("slurm");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let worker = |tail: &str| -> String {
        let mut c = vec![quote(&exe.display().to_string())];
        c.push("--config".into());
        c.push(quote(&cfg.display().to_string()));
        for kv in &globals.set {
            c.push("--set".into());
            c.push(quote(kv));
        }
        c.push("--set".into());
        c.push(format!("threads={}", s.cpus_per_task));
        c.push(tail.to_string());
        c.join(" ")
    };
    // The job whose success means the stage is complete, by stage.
    let mut done_by: BTreeMap<String, String> = BTreeMap::new();
    let mut out: Vec<Submitted> = Vec::new();
    for sc in &config.stages {
        if !selected.contains(&sc.id) {
            continue;
        }
        let forced = opts.force && targets.contains(&sc.id);
        let entry = p.get(&sc.id).context("the plan lists every stage")?;
        let key = match &entry.state {
            StageState::Fresh { .. } if !forced => continue,
            StageState::Fresh { key, .. } => Some(key.clone()),
            StageState::Stale { key, .. } => key.clone(),
        };
        let deps: Vec<String> = sc
            .needs
            .iter()
            .filter_map(|n| done_by.get(n).cloned())
            .collect();
        let shardable = registry.get(&sc.id).is_some_and(|st| st.shardable());
        if shardable && !forced {
            let n = s.shards;
            let missing: Vec<usize> = (0..n)
                .filter(|&index| match &key {
                    Some(k) => !matches!(
                        store.read_shard_record(&sc.id, k, Shard { index, count: n }),
                        Ok(Some(_))
                    ),
                    None => true,
                })
                .collect();
            let mut gather_deps = deps.clone();
            if !missing.is_empty() {
                if let (Some(k), false) = (&key, args.dry_run) {
                    store.note_shard_plan(&sc.id, k, n)?;
                }
                let array = compress(&missing);
                let tail = format!(
                    "run {} --executor local --shard \"$SLURM_ARRAY_TASK_ID/{n}\"",
                    sc.id
                );
                let job = sbatch(
                    &s,
                    &format!("{}-shards", sc.id),
                    Some(&array),
                    &deps,
                    &logs,
                    &worker(&tail),
                    args.dry_run,
                )?;
                out.push(Submitted {
                    stage: sc.id.clone(),
                    what: format!("{} of {n} shards (array {array})", missing.len()),
                    job: job.clone(),
                });
                gather_deps = vec![job];
            }
            let job = sbatch(
                &s,
                &format!("{}-gather", sc.id),
                None,
                &gather_deps,
                &logs,
                &worker(&format!("run {} --executor local --gather {n}", sc.id)),
                args.dry_run,
            )?;
            out.push(Submitted {
                stage: sc.id.clone(),
                what: format!("gather of {n} shards"),
                job: job.clone(),
            });
            done_by.insert(sc.id.clone(), job);
        } else {
            let tail = format!(
                "run {} --executor local{}",
                sc.id,
                if forced { " --force" } else { "" }
            );
            let job = sbatch(&s, &sc.id, None, &deps, &logs, &worker(&tail), args.dry_run)?;
            out.push(Submitted {
                stage: sc.id.clone(),
                what: "stage".into(),
                job: job.clone(),
            });
            done_by.insert(sc.id.clone(), job);
        }
    }
    if out.is_empty() {
        println!("every selected stage is fresh: nothing submitted");
        return Ok(());
    }
    println!(
        "{} {} job(s); logs in {}",
        if args.dry_run {
            "would submit"
        } else {
            "submitted"
        },
        out.len(),
        logs.display()
    );
    for j in &out {
        println!("  {:<10} {:<14} {}", j.job, j.stage, j.what);
    }
    if args.dry_run || !args.wait {
        if !args.dry_run {
            println!("follow with `squeue` and `cargo xtask status`");
        }
        return Ok(());
    }
    let ids: Vec<String> = out.iter().map(|j| j.job.clone()).collect();
    wait_for(&ids, progress)?;
    let p = plan(config, registry)?;
    let mut incomplete = Vec::new();
    for e in &p.entries {
        if !selected.contains(&e.stage) {
            continue;
        }
        match &e.state {
            StageState::Fresh { .. } => println!("{:<14} fresh", e.stage),
            StageState::Stale { key, reasons } => {
                incomplete.push(e.stage.clone());
                println!(
                    "{:<14} incomplete: {}",
                    e.stage,
                    pipeline::join_reasons(reasons)
                );
                if let Some(k) = key {
                    for line in shard_status(&store, &e.stage, k)? {
                        println!("{:<14}   {line}", "");
                    }
                }
            }
        }
    }
    if !incomplete.is_empty() {
        bail!(
            "the jobs ended with {} incomplete (logs in {}); rerun the same command to submit only what is missing",
            incomplete.join(", "),
            logs.display()
        );
    }
    Ok(())
}

/// `0,1,2,5` as SLURM's `--array` syntax: `0-2,5`.
fn compress(v: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Single-quotes a word for `sh`.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn sbatch_version() -> anyhow::Result<()> {
    match Command::new("sbatch").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "`sbatch --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => {
            bail!("the slurm executor needs `sbatch` on PATH (run it on a SLURM submit node): {e}")
        }
    }
}

/// Every node must see the cache. A network or cluster file system passes; a local one only
/// when the cluster has a single node.
fn check_shared_cache(cache: &Path) -> anyhow::Result<()> {
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(cache)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    const SHARED: &[&str] = &[
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "cifs",
        "smb2",
        "ceph",
        "beegfs",
        "panfs",
        "fuseblk",
        "fuse",
        "9p",
        "afs",
        "glusterfs",
    ];
    if SHARED.iter().any(|t| fs_type.starts_with(t)) {
        return Ok(());
    }
    let nodes = Command::new("sinfo")
        .args(["-h", "-N", "-o", "%N"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            v.sort();
            v.dedup();
            v.len()
        })
        .unwrap_or(0);
    if nodes == 1 {
        return Ok(());
    }
    bail!(
        "the slurm executor needs the cache on a file system that every node mounts (NFS, Lustre, GPFS, CephFS, ...): `cache` is {}, on a local `{fs_type}` file system, and the cluster has {} nodes; set `cache` (in pipeline.toml or with `--set cache=...`) to a shared path",
        cache.display(),
        if nodes == 0 { "an unknown number of".to_string() } else { nodes.to_string() }
    )
}

fn sbatch(
    s: &ExecutorSettings,
    name: &str,
    array: Option<&str>,
    deps: &[String],
    logs: &Path,
    command: &str,
    dry_run: bool,
) -> anyhow::Result<String> {
    let mut a: Vec<String> = vec![
        "--parsable".into(),
        format!("--job-name=xtask-{name}"),
        format!(
            "--output={}/%x-{}.out",
            logs.display(),
            if array.is_some() { "%A_%a" } else { "%j" }
        ),
        format!("--cpus-per-task={}", s.cpus_per_task),
        "--kill-on-invalid-dep=yes".into(),
    ];
    if let Some(arr) = array {
        a.push(format!("--array={arr}"));
    }
    if !deps.is_empty() {
        a.push(format!("--dependency=afterok:{}", deps.join(":")));
    }
    if !s.partition.is_empty() {
        a.push(format!("--partition={}", s.partition));
    }
    if !s.time.is_empty() {
        a.push(format!("--time={}", s.time));
    }
    if !s.mem.is_empty() {
        a.push(format!("--mem={}", s.mem));
    }
    if s.gpus_per_task > 0 {
        a.push(format!("--gres=gpu:{}", s.gpus_per_task));
    }
    a.extend(s.sbatch_flags.iter().cloned());
    if let Ok(cwd) = std::env::current_dir() {
        a.push(format!("--chdir={}", cwd.display()));
    }
    a.push("--wrap".into());
    a.push(command.to_string());
    if dry_run {
        return Ok(format!("(sbatch {})", name));
    }
    let o = Command::new("sbatch")
        .args(&a)
        .output()
        .context("starting sbatch")?;
    if !o.status.success() {
        bail!(
            "sbatch refused the job `{name}`: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&o.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id for `{name}` ({id:?})");
    }
    Ok(id)
}

/// Waits until none of the jobs is pending or running any more (per `squeue`).
fn wait_for(ids: &[String], progress: &Progress) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut said = 0;
    loop {
        let o = Command::new("squeue")
            .args(["-h", "-o", "%F"])
            .output()
            .context("starting squeue")?;
        if !o.status.success() {
            bail!(
                "squeue failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let listed = String::from_utf8_lossy(&o.stdout).into_owned();
        let left = listed
            .lines()
            .map(str::trim)
            .filter(|l| ids.iter().any(|i| i == l))
            .count();
        if left == 0 {
            return Ok(());
        }
        let secs = t0.elapsed().as_secs();
        if secs >= said + 30 {
            said = secs;
            progress.println(format!("waiting for {left} job(s) ({secs}s)"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the cache says about the shards of the run with `key`: per shard count, how many
/// are done, running (a live lease), failed (with the error) or not started.
pub(crate) fn shard_status(store: &Store, stage: &str, key: &str) -> anyhow::Result<Vec<String>> {
    let leases = store.live_leases();
    let mut lines = Vec::new();
    for count in store.shard_counts(stage, key) {
        let (mut done, mut running, mut failed, mut waiting) =
            (0, Vec::new(), Vec::new(), Vec::new());
        for index in 0..count {
            let sh = Shard { index, count };
            if store.read_shard_record(stage, key, sh)?.is_some() {
                done += 1;
                continue;
            }
            let what = format!("run {stage} --shard {sh}");
            if let Some(l) = leases.iter().find(|l| l.what == what) {
                running.push(format!(
                    "{index} (pid {} on {}{})",
                    l.pid,
                    l.host,
                    l.job
                        .as_deref()
                        .map(|j| format!(", job {j}"))
                        .unwrap_or_default()
                ));
            } else if let Some(f) = store.read_shard_failure(stage, key, sh)? {
                let first = f.error.lines().next().unwrap_or("").to_string();
                failed.push(format!(
                    "{index}{}: {first}",
                    f.job.map(|j| format!(" (job {j})")).unwrap_or_default()
                ));
            } else {
                waiting.push(index.to_string());
            }
        }
        lines.push(format!(
            "shards of {count}: {done} done, {} running, {} failed, {} not started",
            running.len(),
            failed.len(),
            waiting.len()
        ));
        if !running.is_empty() {
            lines.push(format!("  running: {}", running.join("; ")));
        }
        for f in failed {
            lines.push(format!("  failed: shard {f}"));
        }
        if !waiting.is_empty() {
            lines.push(format!("  not started: {}", waiting.join(", ")));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_lists_are_compressed_to_ranges() {
        assert_eq!(compress(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(compress(&[3]), "3");
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("x='y'"), r"'x='\''y'\'''");
    }

    #[test]
    fn a_planned_sharded_run_shows_before_any_shard_has_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(shard_status(&store, "square", "k1").unwrap().is_empty());
        store.note_shard_plan("square", "k1", 3).unwrap();
        // Planned twice (a resubmission): one line still.
        store.note_shard_plan("square", "k1", 3).unwrap();
        assert_eq!(
            shard_status(&store, "square", "k1").unwrap(),
            [
                "shards of 3: 0 done, 0 running, 0 failed, 3 not started",
                "  not started: 0, 1, 2"
            ]
        );
        assert!(shard_status(&store, "square", "other-key")
            .unwrap()
            .is_empty());
    }
}
