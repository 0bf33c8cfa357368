//! The most confident wrong predictions as thumbnails, and the most confused classes.

use pipeline::{BoxError, StageContext};
use serde_json::json;

use crate::html::{gallery, Section};
use crate::metrics::confused_pairs;
use crate::params::Params;
use crate::results::{Builder, EvalImages, ModelResult};
use crate::text::{esc, pct};

/// The most confident wrong predictions of every model, and the most confused classes.
pub(crate) fn mistakes(
    ctx: &StageContext<'_>,
    b: &mut Builder,
    results: &[ModelResult],
    classes: &[String],
    p: &Params,
) -> Result<Section, BoxError> {
    let mut sec = Section::new("mistakes", "Mistakes");
    let images = EvalImages::open(ctx)?;
    for r in results {
        let (_, _, preds) = &r.seeds[0];
        let k = preds.n_classes.max(1);
        let mut wrong: Vec<(usize, f32)> = (0..preds.pred.len())
            .filter(|&i| preds.pred[i] != preds.labels[i])
            .map(|i| (i, preds.probs[i * k + preds.pred[i] as usize]))
            .collect();
        wrong.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut tiles = Vec::new();
        for &(i, conf) in wrong.iter().take(p.mistakes) {
            if let Some(jpeg) = images.thumb(preds.index[i])? {
                let name = |c: i64| classes.get(c as usize).cloned().unwrap_or_default();
                tiles.push((
                    jpeg,
                    "image/jpeg",
                    vec![
                        format!("true: {}", name(preds.labels[i])),
                        format!("predicted: {}", name(preds.pred[i])),
                        format!("confidence {}", pct(conf as f64)),
                    ],
                ));
            }
        }
        sec.raw(&format!(
            "<h3>{}: the {} most confident wrong predictions (of {} wrong)</h3>\n",
            esc(r.model),
            tiles.len(),
            wrong.len()
        ));
        sec.raw(&gallery(&tiles, 112));
        let pairs = confused_pairs(&r.primary().confusion, 5);
        b.metrics["models"][r.model]["confused_pairs"] = json!(pairs
            .iter()
            .map(|(t, q, c)| json!({"true": classes[*t], "predicted": classes[*q], "count": c}))
            .collect::<Vec<_>>());
        let rows: Vec<Vec<String>> = pairs
            .iter()
            .map(|(t, q, c)| {
                let support: usize = r.primary().confusion[*t].iter().sum();
                vec![
                    classes[*t].clone(),
                    classes[*q].clone(),
                    format!(
                        "{c} ({} of the class)",
                        pct(*c as f64 / support.max(1) as f64)
                    ),
                ]
            })
            .collect();
        sec.table(&["true class", "predicted as", "images"], &rows, &[]);
    }
    Ok(sec)
}
