//! `run`'s arguments (shared by the local run and the SLURM executor) and the seed lists.

use pipeline::{RunOptions, Shard};

/// `run`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Stages to bring up to date (`all`: every stage).
    #[arg(default_value = "all")]
    pub stages: Vec<String>,
    /// Rerun the named stages even if fresh.
    #[arg(long)]
    pub force: bool,
    /// Also bring everything downstream of the named stages up to date.
    #[arg(long)]
    pub downstream: bool,
    /// Print what would run and why; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How many independent stages may run at once.
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Fail at once if another run holds the cache, instead of waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Let stages download missing inputs even where a setting points away from the default
    /// location (e.g. a `weights.path` of your own).
    #[arg(long)]
    pub fetch: bool,
    /// A seed sweep: `1..5` (inclusive) or `1,2,3`. Stages that use the seed run once per
    /// seed (everything else once); the report shows each model's mean and spread.
    #[arg(long, value_name = "SEEDS", value_parser = parse_seeds)]
    pub seeds: Option<SeedList>,
    /// Run one shard of a shardable stage (`preprocess`, `vgg-extract`): `3/8` is shard 3 of
    /// 8, counted from 0. Writes the shard's blobs and a partial record; `--gather 8` then
    /// writes the stage's record. This is what each task of a SLURM job array runs.
    #[arg(long, value_name = "I/N", conflicts_with_all = ["gather", "seeds"])]
    pub shard: Option<Shard>,
    /// Gather the N shards of a stage into its run record (every shard must be done).
    #[arg(long, value_name = "N", conflicts_with = "seeds")]
    pub gather: Option<usize>,
    /// Where stages run: `local` (this process) or `slurm` (job arrays submitted with
    /// `sbatch`; see `[executor]` in pipeline.toml). Default: the config's `executor.kind`.
    #[arg(long, value_name = "KIND", value_parser = ["local", "slurm"])]
    pub executor: Option<String>,
    /// With `--executor slurm`: shards per shardable stage (default: `executor.shards`).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// With `--executor slurm`: wait until the submitted jobs have ended, then print the
    /// stages' status (exit 1 if any stayed incomplete).
    #[arg(long)]
    pub wait: bool,
}

/// The seeds of a sweep, in the order given (one value for clap, not one per seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedList(pub Vec<u64>);

/// The most seeds one sweep runs (each is a full set of seeded stages).
pub const MAX_SEEDS: u64 = 1000;

/// `1..5` (inclusive) or `1,2,3`.
pub fn parse_seeds(s: &str) -> Result<SeedList, String> {
    let bad = || format!("`{s}` is not a seed list such as `1..5` or `1,2,3`");
    let seeds: Vec<u64> = if let Some((a, b)) = s.split_once("..") {
        let (a, b): (u64, u64) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if b < a {
            return Err(format!(
                "`{s}` is reversed: a range goes from the smaller seed up, e.g. `{b}..{a}`"
            ));
        }
        if b - a >= MAX_SEEDS {
            return Err(format!(
                "`{s}` holds {} seeds; a sweep runs at most {MAX_SEEDS}",
                u128::from(b - a) + 1
            ));
        }
        (a..=b).collect()
    } else {
        s.split(',')
            .map(|x| x.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?
    };
    if seeds.len() as u64 > MAX_SEEDS {
        return Err(format!(
            "`{s}` holds {} seeds; a sweep runs at most {MAX_SEEDS}",
            seeds.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if seeds.is_empty() || !seeds.iter().all(|x| seen.insert(*x)) {
        return Err(format!("`{s}`: the seeds must be distinct"));
    }
    Ok(SeedList(seeds))
}

impl RunArgs {
    pub fn options(&self) -> RunOptions {
        RunOptions {
            targets: if self.stages.iter().any(|s| s == "all") {
                Vec::new()
            } else {
                self.stages.clone()
            },
            force: self.force,
            downstream: self.downstream,
            dry_run: self.dry_run,
            jobs: self.jobs,
            no_wait: self.no_wait,
            fetch: self.fetch,
            seeds: self.seeds.clone().map(|s| s.0).unwrap_or_default(),
            shard: self.shard,
            gather: self.gather,
            job: batch_job(),
        }
    }
}

/// The batch scheduler's job this process runs in, from SLURM's environment (`12` or, in a
/// job array, `12_3`).
fn batch_job() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(j), Some(t)) => Some(format!("{j}_{t}")),
        _ => var("SLURM_JOB_ID"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_are_ranges_or_lists_of_distinct_seeds() {
        assert_eq!(parse_seeds("1..3"), Ok(SeedList(vec![1, 2, 3])));
        assert_eq!(parse_seeds("5, 2"), Ok(SeedList(vec![5, 2])));
        assert!(parse_seeds("1,1").unwrap_err().contains("distinct"));
        assert!(
            parse_seeds("3..1").unwrap_err().contains("reversed"),
            "{:?}",
            parse_seeds("3..1")
        );
        let many = parse_seeds("1..100000").unwrap_err();
        assert!(
            many.contains("100000 seeds") && many.contains("at most 1000"),
            "{many}"
        );
        assert_eq!(
            parse_seeds("18446744073709551615"),
            Ok(SeedList(vec![u64::MAX]))
        );
        assert!(parse_seeds("a..b").unwrap_err().contains("`a..b`"));
    }
}
