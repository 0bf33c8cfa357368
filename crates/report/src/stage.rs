//! The `report` stage: reads the models' artifacts and builds the page one section at a time
//! (`crate::sections`, a file each), over a [`Builder`] that collects the files and
//! `metrics.json`.
//!
//! Layout: the first screen answers the study's question (a comparison figure of the three
//! models beside the study's numbers, the key numbers, the dataset); then the models side by
//! side (confusion matrices on one colour scale, per-class F1, training curves), the mistakes
//! (the most confident wrong predictions as thumbnails, the most confused classes), the
//! logistic-regression grid, seeds (in a sweep), the data, skipped files, and the run.

use std::collections::BTreeMap;

use contracts::{ids, outputs, slots, ManifestMeta, ModelSummary, ReportBundle};
use pipeline::{BoxError, Stage, StageContext};
use serde_json::{json, Value};

use crate::html::page;
use crate::params::{Params, MODELS, REFERENCE_SETTING};
use crate::results::{read_model, Builder};
use crate::sections::data::{data_section, skipped_section};
use crate::sections::grid::{ensemble_section, grid_section};
use crate::sections::mistakes::mistakes;
use crate::sections::models::{model_metrics, side_by_side};
use crate::sections::overview::{describe_dataset, header, overview};
use crate::sections::seeds::seeds_section;

pub const CACHE_VERSION: u32 = 2;

pub struct Report;

impl Stage for Report {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::REPORT
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[outputs::REPORT]
    }
    fn resources(&self) -> pipeline::Resources {
        pipeline::Resources::cpus(1)
    }
    /// In a seed sweep the report reads every seed's predictions (mean and spread).
    fn aggregates_seeds(&self) -> bool {
        true
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let manifest: ManifestMeta = slots::MANIFEST.read(ctx)?;
        let classes = manifest.classes.clone();
        let dataset = describe_dataset(&manifest);
        let reference: Option<Value> = match ctx.setting(REFERENCE_SETTING) {
            Ok(Some(path)) => Some(
                serde_json::from_slice(
                    &std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
                )
                .map_err(|e| format!("{}: not a reference results file: {e}", path.display()))?,
            ),
            _ => None,
        };
        let mut b = Builder {
            files: BTreeMap::new(),
            metrics: json!({"dataset": {"synthetic": manifest.synthetic, "classes": classes, "description": dataset}, "models": {}}),
            md: format!("## Results on {dataset}\n\n"),
        };
        let mut results = Vec::new();
        for model in MODELS {
            if ctx.has_input(model, outputs::PREDICTIONS) {
                results.push(read_model(ctx, model, &classes)?);
            }
        }
        for r in &results {
            model_metrics(&mut b, r);
        }
        if let Some(r) = &reference {
            b.metrics["reference"] = r.clone();
        }
        let mut sections = vec![
            overview(&mut b, &results),
            side_by_side(&mut b, &results, &classes),
            mistakes(ctx, &mut b, &results, &classes, &p)?,
        ];
        sections.extend(grid_section(&mut b, &results));
        sections.extend(ensemble_section(&mut b, &results));
        sections.extend(seeds_section(&mut b, &results, reference.as_ref()));
        sections.push(data_section(ctx, &mut b, &manifest, &p)?);
        sections.push(skipped_section(ctx, &mut b, &manifest)?);
        let html = page(
            "Transfer learning by feature extraction",
            &header(&manifest, &dataset, &results),
            &sections,
        );
        b.files.insert("index.html".into(), html.into_bytes());
        b.files
            .insert("summary.md".into(), b.md.clone().into_bytes());
        b.files.insert(
            "metrics.json".into(),
            serde_json::to_vec_pretty(&b.metrics)?,
        );
        ReportBundle {
            files: b.files,
            models: results
                .iter()
                .map(|r| ModelSummary {
                    model: r.model.to_string(),
                    test_accuracy: r.primary().test_accuracy,
                    mean: r.mean_std().0,
                })
                .collect(),
        }
        .write(ctx)
    }
}
