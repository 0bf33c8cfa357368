//! The run: the report folder written after every `run`, with that run's provenance.

use std::path::Path;

use contracts::ReportBundle;
use pipeline::BoxError;
use serde_json::{json, Value};

use crate::params::MODELS;
use crate::provenance::StageProvenance;
use crate::text::seconds;

/// Writes the report artifact's files into `out`, adding this run's provenance to
/// `metrics.json` (`stages`) and `index.html` (the run section, the training times). Returns
/// the Markdown summary.
pub fn write_folder(
    bundle: &ReportBundle,
    out: &Path,
    provenance: &[StageProvenance],
    extra: &Value,
) -> Result<String, BoxError> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut summary = String::new();
    for (file, bytes) in &bundle.files {
        let mut bytes = bytes.clone();
        match file.as_str() {
            "metrics.json" => {
                let mut m: Value = serde_json::from_slice(&bytes)?;
                m["stages"] = provenance.iter().map(|p| (p.stage.clone(), json!({"seconds": p.seconds, "cached": p.cached, "key": p.key, "params": p.params, "threads": p.threads, "cpu_seconds": p.cpu_seconds, "peak_rss_bytes": p.peak_rss_bytes}))).collect::<serde_json::Map<_, _>>().into();
                m["run"] = extra.clone();
                bytes = serde_json::to_vec_pretty(&m)?;
            }
            "index.html" => {
                let mut html = String::from_utf8_lossy(&bytes).replace(
                    "<!--PROVENANCE-->",
                    &crate::html::provenance(provenance, extra),
                );
                for model in MODELS {
                    html = html.replace(
                        &format!("&lt;!--SECONDS:{model}--&gt;"),
                        &training_time(model, provenance),
                    );
                }
                bytes = html.into_bytes();
            }
            "summary.md" => summary = String::from_utf8_lossy(&bytes).into_owned(),
            _ => {}
        }
        let path = out.join(file);
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(summary)
}

/// A model's training time for the overview table: its stage's seconds, or in a seed sweep
/// (stages `model (seed N)`) the mean per seed.
pub(crate) fn training_time(model: &str, provenance: &[StageProvenance]) -> String {
    let sweep = format!("{model} (seed ");
    let runs: Vec<&StageProvenance> = provenance
        .iter()
        .filter(|p| p.stage == model || p.stage.starts_with(&sweep))
        .collect();
    let cached = if runs.iter().any(|p| p.cached) {
        " (cached)"
    } else {
        ""
    };
    match runs.as_slice() {
        [] => "-".into(),
        [p] => format!("{}{cached}", seconds(p.seconds)),
        many => {
            let mean = many.iter().map(|p| p.seconds).sum::<f64>() / many.len() as f64;
            format!("{} per seed{cached}", seconds(mean))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_time_of_a_sweep_is_per_seed() {
        let p = |stage: &str, seconds: f64, cached: bool| StageProvenance {
            stage: stage.into(),
            seconds,
            cached,
            ..Default::default()
        };
        let single = [p("head-nn", 1.5, false)];
        assert_eq!(training_time("head-nn", &single), "1.5 s");
        let sweep = [
            p("head-nn (seed 1)", 2.0, true),
            p("head-nn (seed 2)", 4.0, false),
            p("logreg", 30.0, false),
        ];
        assert_eq!(training_time("head-nn", &sweep), "3.0 s per seed (cached)");
        assert_eq!(training_time("scratch-cnn", &sweep), "-");
    }
}
