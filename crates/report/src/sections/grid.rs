//! Model selection: the logistic-regression grid and the ensemble's choice of weight.

use contracts::{ids, Choice, Grid};
use serde_json::json;

use crate::html::Section;
use crate::results::{Builder, ModelResult};

use crate::text::pct;

/// The logistic regression's validation grid, the chosen row highlighted.
pub(crate) fn grid_section(b: &mut Builder, results: &[ModelResult]) -> Option<Section> {
    let r = results
        .iter()
        .find(|r| r.model == ids::LOGREG && r.meta.grid.is_some())?;
    let Some(Grid::LogReg(grid)) = &r.meta.grid else {
        return None;
    };
    let best = match &r.meta.best {
        Some(Choice::LogReg(c)) => Some(c),
        _ => None,
    };
    let mut chosen = Vec::new();
    let rows: Vec<Vec<String>> = grid
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if best.is_some_and(|bst| bst.c == g.c && bst.solver == g.solver) {
                chosen.push(i);
            }
            vec![
                format!("{}", g.c),
                g.solver.clone(),
                pct(g.val_accuracy),
                g.n_iter.to_string(),
                if g.converged { "yes" } else { "no" }.into(),
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
    b.metrics["models"][r.model]["grid"] = json!(grid);
    Some(sec)
}

/// The ensemble's validation grid of head weights, the chosen row highlighted.
pub(crate) fn ensemble_section(b: &mut Builder, results: &[ModelResult]) -> Option<Section> {
    let r = results.iter().find(|r| r.model == ids::ENSEMBLE)?;
    let Some(Grid::Blend(grid)) = &r.meta.grid else {
        return None;
    };
    let Some(Choice::Blend(best)) = &r.meta.best else {
        return None;
    };
    let mut chosen = Vec::new();
    let rows: Vec<Vec<String>> = grid
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let hw = g.head_weight;
            if best.head_weight == hw {
                chosen.push(i);
            }
            vec![
                format!("{hw}"),
                format!("{}", 1.0 - hw),
                pct(g.val_accuracy),
                format!("{:.4}", g.val_loss),
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
    b.metrics["models"][r.model]["grid"] = json!(grid);
    Some(sec)
}
