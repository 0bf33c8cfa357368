//! The `describe` stage adapter: stored features (`vgg-extract`'s or `lite0-extract`'s) -> descriptors per split.

use std::collections::BTreeMap;

use contracts::{
    ids, outputs, slots, tap_tensor, view_tensor, Backbone, FeatureSource, FeaturesMeta,
    FeaturesReader, FeaturesWriter, FEATURES_TENSOR, SPLITS,
};
use pipeline::{BoxError, Resources, Stage, StageContext, Validate};

use crate::{descriptors, Params, Part, TrainViews, ViewData};

/// Bump when the descriptors' meaning changes without a source change.
pub const CACHE_VERSION: u32 = 1;

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        Params::validate(self)
    }
}

/// The stage.
pub struct Describe;

impl Stage for Describe {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::DESCRIBE
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &SPLITS
    }
    /// Single-threaded arithmetic over stored features.
    fn resources(&self) -> Resources {
        Resources {
            cpus: pipeline::Cpus::Count(1),
            ..Resources::default()
        }
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let parts = p.parsed_parts()?;
        let backbone = Backbone::of(ctx);
        let src = backbone.stage();
        for name in &p.parts {
            if let Some(m) = Part::map_layer(name).filter(|m| *m != backbone.feature_layer()) {
                return Err(format!(
                    "descriptor part \"{name}\" pools `{m}` maps, but this describe reads {src}, whose maps are `{}` (write \"{}\")",
                    backbone.feature_layer(),
                    name.replacen(m, backbone.feature_layer(), 1)
                )
                .into());
            }
        }
        for split in SPLITS {
            let f: FeaturesReader<'_> =
                slots::features(FeatureSource::Extracted(backbone), split).read(ctx)?;
            let stored = f.views()?;
            let views: Vec<String> = if p.views.is_empty() {
                stored.clone()
            } else {
                for v in &p.views {
                    if !stored.contains(v) {
                        return Err(format!(
                            "view \"{v}\" is not in {src}.{split} (it has {}); add it to {src}'s `views`",
                            stored.join(", ")
                        )
                        .into());
                    }
                }
                p.views.clone()
            };
            let taps = f.taps()?;
            for (name, part) in p.parts.iter().zip(&parts) {
                if let Some(layer) = part.layer() {
                    if !taps.iter().any(|t| t == layer) {
                        return Err(format!(
                            "descriptor part \"{name}\" needs layer `{layer}`, which {src} did not tap (it tapped: {}); add \"{layer}\" to {src}'s `taps`",
                            if taps.is_empty() { "none".to_string() } else { taps.join(", ") }
                        )
                        .into());
                    }
                }
            }
            let average = split != outputs::TRAINING || p.train_views == TrainViews::Average;
            let mut w = FeaturesWriter::new(ctx, split)?;
            let mut rows_total = 0;
            for ci in 0..f.chunks() {
                let mut base = f.chunk(ci)?;
                let n = base.shape[0];
                let c = *base.shape.last().ok_or("features have no channel axis")?;
                let base_hw = (base.shape[1], base.shape[2]);
                // Every view's stored tensors, by base name.
                let mut stored_views = Vec::with_capacity(views.len());
                for v in &views {
                    let (hw, pool5) = if v == contracts::ORIGINAL_VIEW {
                        (base_hw, std::mem::take(&mut base.features))
                    } else {
                        let (shape, values) =
                            f.chunk_tensor(ci, &view_tensor(FEATURES_TENSOR, v))?;
                        let [_, h, w, _] = shape[..] else {
                            return Err(format!(
                                "{src}.{split}, chunk {ci}: view \"{v}\" has shape {shape:?}, expected [n, h, w, c]"
                            )
                            .into());
                        };
                        ((h, w), values)
                    };
                    let mut t = BTreeMap::new();
                    for layer in &taps {
                        for stat in ["avg", "max"] {
                            let name = tap_tensor(layer, stat);
                            let values = f.chunk_tensor(ci, &view_tensor(&name, v))?.1;
                            t.insert(name, values);
                        }
                    }
                    stored_views.push((hw, pool5, t));
                }
                let data: Vec<ViewData<'_>> = stored_views
                    .iter()
                    .map(|(hw, pool5, t)| ViewData {
                        pool5,
                        pool5_channels: c,
                        pool5_hw: *hw,
                        taps: t.iter().map(|(k, v)| (k.clone(), &v[..])).collect(),
                    })
                    .collect();
                let (x, d) = descriptors(&parts, &p, n, &data, average)
                    .map_err(|e| format!("{src}.{split}, chunk {ci}: {e}"))?;
                let per = if average { 1 } else { views.len() };
                let repeat = |v: &[i64]| -> Vec<i64> {
                    v.iter()
                        .flat_map(|&x| std::iter::repeat_n(x, per))
                        .collect()
                };
                let rows = n * per;
                rows_total += rows;
                w.write_chunk(
                    &x,
                    [rows, 1, 1, d],
                    &repeat(&base.labels),
                    &repeat(&base.index),
                )?;
            }
            ctx.count(rows_total as u64, "rows");
            ctx.progress().println(format!(
                "describe: {split}: {rows_total} rows ({}{})",
                p.recipe(),
                if views.len() > 1 {
                    format!(
                        ", views {} {}",
                        views.join("+"),
                        if average { "averaged" } else { "as rows" }
                    )
                } else {
                    String::new()
                }
            ));
            let (classes, synthetic) = f.carried_meta()?;
            w.finish(&FeaturesMeta {
                classes,
                synthetic,
                convention: f.convention().unwrap_or_default().to_string(),
                weights_digest: f.weights_digest().unwrap_or_default().to_string(),
                views: Vec::new(),
                taps: Vec::new(),
                layout: Some(p.recipe()),
                backbone: (backbone != Backbone::Vgg16).then_some(backbone),
            })?;
        }
        Ok(())
    }
}
