//! Model selection: the logistic-regression grid and the ensemble's choice of weight.

use contracts::ids;
use serde_json::Value;

use crate::html::Section;
use crate::results::{Builder, ModelResult};

use crate::text::pct;

/// The logistic regression's validation grid, the chosen row highlighted.
pub(crate) fn grid_section(b: &mut Builder, results: &[ModelResult]) -> Option<Section> {
    let r = results
        .iter()
        .find(|r| r.model == ids::LOGREG && r.meta.grid.is_some())?;
    let grid = r.meta.grid.as_ref()?.as_array()?;
    let best = r.meta.best.as_ref();
    let mut chosen = Vec::new();
    let rows: Vec<Vec<String>> = grid
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let c = g["C"].as_f64().unwrap_or(f64::NAN);
            let solver = g["solver"].as_str().unwrap_or("").to_string();
            if best.is_some_and(|bst| {
                bst["C"].as_f64() == Some(c) && bst["solver"].as_str() == Some(&solver)
            }) {
                chosen.push(i);
            }
            vec![
                format!("{c}"),
                solver,
                pct(g["val_accuracy"].as_f64().unwrap_or(f64::NAN)),
                g["n_iter"].to_string(),
                if g["converged"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    let mut sec = Section::new("grid", "Logistic regression: model selection");
    sec.text("Every candidate is fitted on the training split and scored on the validation split; the highlighted row is the one chosen (highest validation accuracy, the first in grid order among equals).");
    sec.table(
        &[
            "C",
            "solver",
            "validation accuracy",
            "iterations",
            "converged",
        ],
        &rows,
        &chosen,
    );
    b.metrics["models"][r.model]["grid"] = Value::Array(grid.clone());
    Some(sec)
}

/// The ensemble's validation grid of head weights, the chosen row highlighted.
pub(crate) fn ensemble_section(b: &mut Builder, results: &[ModelResult]) -> Option<Section> {
    let r = results.iter().find(|r| r.model == ids::ENSEMBLE)?;
    let grid = r.meta.grid.as_ref()?.as_array()?;
    let w = r.meta.best.as_ref()?["head_weight"].as_f64();
    let mut chosen = Vec::new();
    let rows: Vec<Vec<String>> = grid
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let hw = g["head_weight"].as_f64().unwrap_or(f64::NAN);
            if w == Some(hw) {
                chosen.push(i);
            }
            vec![
                format!("{hw}"),
                format!("{}", 1.0 - hw),
                pct(g["val_accuracy"].as_f64().unwrap_or(f64::NAN)),
                format!("{:.4}", g["val_loss"].as_f64().unwrap_or(f64::NAN)),
            ]
        })
        .collect();
    let mut sec = Section::new("ensemble", "Ensemble: head and logistic regression");
    sec.text("The ensemble averages the class probabilities of the dense head and of the logistic regression, weighted; each weight is scored on the validation split, and the highlighted row is the one chosen (highest validation accuracy, then lowest validation cross-entropy, then the first in grid order).");
    sec.table(
        &[
            "head weight",
            "logistic regression weight",
            "validation accuracy",
            "validation cross-entropy",
        ],
        &rows,
        &chosen,
    );
    b.metrics["models"][r.model]["grid"] = Value::Array(grid.clone());
    Some(sec)
}
