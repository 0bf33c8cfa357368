//! The first screen: which data, the study's question answered in one line, the comparison with the study's numbers.

use contracts::{ids, ManifestMeta};

use crate::html::Section;
use crate::params::PUBLISHED;
use crate::results::{Builder, ModelResult};
use crate::svg;
use crate::text::{esc, pct};

/// Which dataset the numbers are about, in words.
pub(crate) fn describe_dataset(m: &ManifestMeta) -> String {
    if m.synthetic {
        format!(
            "the embedded SYNTHETIC demo dataset ({} classes of generated pictures, not food)",
            m.classes.len()
        )
    } else {
        format!(
            "{} ({} classes, {} layout)",
            if m.dataset.is_empty() {
                "dataset"
            } else {
                &m.dataset
            },
            m.classes.len(),
            if m.layout.is_empty() {
                "unknown"
            } else {
                &m.layout
            },
        )
    }
}

/// The line under the title: what the data is, how much, and the answer in one sentence.
pub(crate) fn header(m: &ManifestMeta, dataset: &str, results: &[ModelResult]) -> String {
    let count = |split: &str| -> u64 {
        m.class_counts
            .get(split)
            .map(|c| c.iter().map(|&n| n as u64).sum())
            .unwrap_or(0)
    };
    let mut s = format!(
        "<p>Dataset: <b>{}</b>: {} training, {} validation, {} evaluation images.</p>\n",
        esc(dataset),
        count("training"),
        count("validation"),
        count("evaluation")
    );
    if m.synthetic {
        s.push_str("<p class=\"synthetic\">SYNTHETIC demo data: generated pictures of shapes and textures under varied scale, rotation, position, lighting, clutter and occlusion, so that the pipeline runs on a fresh clone. The numbers show the method, not food classification. Set <code>dataset.root</code> to a real dataset for the study itself.</p>\n");
    }
    let get = |id: &str| {
        results
            .iter()
            .find(|r| r.model == id)
            .map(|r| r.mean_std().0)
    };
    if let (Some(scratch), Some(best)) = (
        get(ids::SCRATCH_CNN),
        [get(ids::HEAD_NN), get(ids::LOGREG)]
            .into_iter()
            .flatten()
            .reduce(f64::max),
    ) {
        let verdict = if best > scratch {
            format!(
                "Transfer learning from ImageNet (VGG16 features) reaches <b>{}</b>, <b>{:.1} points</b> above the CNN trained from scratch ({}).",
                pct(best),
                100.0 * (best - scratch),
                pct(scratch)
            )
        } else {
            format!(
                "Here the CNN trained from scratch ({}) is not beaten by the transfer-learning models ({}).",
                pct(scratch),
                pct(best)
            )
        };
        s.push_str(&format!("<p class=\"answer\">{verdict}</p>\n"));
    }
    s
}

/// The first screen: the comparison figure and the key numbers.
pub(crate) fn overview(b: &mut Builder, results: &[ModelResult]) -> Section {
    let mut sec = Section::new("overview", "Overview");
    let bars: Vec<svg::Bar<'_>> = results
        .iter()
        .map(|r| {
            let (mean, std) = r.mean_std();
            svg::Bar {
                model: r.model,
                mean,
                std,
                values: r.accuracies(),
                study: PUBLISHED.iter().find(|(m, _)| *m == r.model).map(|p| p.1),
            }
        })
        .collect();
    let fig = b.svg("comparison", svg::comparison(&bars));
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.model.to_string(),
                r.accuracy_text(),
                r.correct_text(),
                format!("<!--SECONDS:{}-->", r.model),
                PUBLISHED
                    .iter()
                    .find(|(p, _)| *p == r.model)
                    .map(|p| pct(p.1))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    sec.raw("<div class=\"first\">");
    sec.figure(
        &fig,
        "Figure 1: test accuracy of each model (bars; with a seed sweep the mean, ± one standard deviation, and each seed as a dot) beside the study's published accuracy on Food-11 (grey).",
    );
    sec.raw("<div>");
    sec.table(
        &[
            "model",
            "test accuracy",
            "correct / total",
            "training time",
            "study (Food-11)",
        ],
        &rows,
        &[],
    );
    sec.text("The study's numbers are on Food-11 (11 classes); on other data compare the ordering, not the numbers.");
    sec.raw("</div></div>\n");
    b.md.push_str(
        "| model | test accuracy | correct / total | study, Food-11 |\n|---|---|---|---|\n",
    );
    for r in rows.iter() {
        b.md.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[4]));
    }
    sec
}
