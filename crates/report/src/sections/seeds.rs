//! A seed sweep: every seed's test accuracy, mean and spread, beside a reference's when given.

use serde_json::Value;

use crate::html::Section;
use crate::metrics::mean_std;
use crate::results::{Builder, ModelResult};
use crate::svg;
use crate::text::pct;

/// Per-seed results of a sweep, beside a reference's when given.
pub(crate) fn seeds_section(
    b: &mut Builder,
    results: &[ModelResult],
    reference: Option<&Value>,
) -> Option<Section> {
    let swept = results.iter().any(|r| r.seeds.len() > 1);
    if !swept && reference.is_none() {
        return None;
    }
    let refs = |m: &str| -> Option<Vec<f64>> {
        let v = reference?.get("models")?.get(m)?.as_array()?;
        Some(v.iter().filter_map(Value::as_f64).collect())
    };
    let rows: Vec<svg::SeedRow<'_>> = results
        .iter()
        .map(|r| svg::SeedRow {
            model: r.model,
            ours: r.accuracies(),
            reference: refs(r.model),
        })
        .collect();
    let mut sec = Section::new("seeds", "Seeds");
    let fig = b.svg("seeds", svg::seed_strip(&rows));
    let source = reference
        .and_then(|r| r.get("source"))
        .and_then(Value::as_str)
        .unwrap_or("a reference run");
    sec.figure(
        &fig,
        &format!(
            "Test accuracy per seed (dots), mean (tick) ± one sample standard deviation (bar): ours in colour{}.",
            if reference.is_some() {
                format!(", {source} in grey")
            } else {
                String::new()
            }
        ),
    );
    let mut table_rows = Vec::new();
    for r in results {
        let seeds: Vec<String> = r
            .seeds
            .iter()
            .map(|(s, m, _)| match s {
                Some(s) => format!("{s}: {}", pct(m.test_accuracy)),
                None => pct(m.test_accuracy),
            })
            .collect();
        let (m, s) = mean_std(&r.accuracies());
        let ours = r.accuracies();
        let reference_values = refs(r.model).filter(|v| !v.is_empty());
        let reference_text = reference_values
            .as_ref()
            .map(|v| {
                let (rm, rs) = mean_std(v);
                format!("{} ± {:.1} ({} seeds)", pct(rm), 100.0 * rs, v.len())
            })
            .unwrap_or_else(|| "-".into());
        let difference = reference_values
            .as_ref()
            .map(|v| {
                let (d, t) = crate::metrics::welch(&ours, v);
                match t {
                    Some(t) => format!("{:+.1} points ({:+.1} standard errors)", 100.0 * d, t),
                    None => format!("{:+.1} points", 100.0 * d),
                }
            })
            .unwrap_or_else(|| "-".into());
        table_rows.push(vec![
            r.model.to_string(),
            format!("{} ± {:.1}", pct(m), 100.0 * s),
            seeds.join(", "),
            reference_text,
            difference,
        ]);
    }
    sec.table(
        &[
            "model",
            "ours: mean ± sd",
            "ours per seed",
            "reference: mean ± sd",
            "ours - reference (Welch)",
        ],
        &table_rows,
        &[],
    );
    Some(sec)
}
