//! Grid search over C and solver, scored by validation accuracy.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::check::{check_features, check_labels};
use crate::dense::{Design, Precision};
use crate::error::LogRegError;
use crate::fit::{check_options, check_train, fit_design, with_threads, FitOptions, Samples};
use crate::model::Model;
use crate::types::{Progress, Solver, StopReason};

/// The study's values of C, in grid order (outer loop).
pub const STUDY_CS: [f64; 3] = [0.1, 1.0, 10.0];
/// The study's solvers, in grid order (inner loop).
pub const STUDY_SOLVERS: [Solver; 2] = [Solver::NewtonCg, Solver::Lbfgs];

/// What to search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridOptions {
    /// Values of C (outer loop, in this order).
    pub cs: Vec<f64>,
    /// Solvers (inner loop, in this order).
    pub solvers: Vec<Solver>,
    /// Iteration limit of every fit.
    pub max_iter: usize,
    /// Gradient tolerance of every fit.
    pub tol: f64,
    /// Arithmetic of the matrix products.
    pub precision: Precision,
    /// Threads; `None` uses the current rayon pool.
    pub n_threads: Option<usize>,
}

impl Default for GridOptions {
    /// The study's grid: C in {0.1, 1, 10} × {newton-cg, lbfgs}, `max_iter = 200`,
    /// `tol = 1e-4`.
    fn default() -> Self {
        GridOptions {
            cs: STUDY_CS.to_vec(),
            solvers: STUDY_SOLVERS.to_vec(),
            max_iter: 200,
            tol: 1e-4,
            precision: Precision::F64,
            n_threads: None,
        }
    }
}

/// One line of the result table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridRow {
    /// Inverse regularisation strength.
    pub c: f64,
    /// Optimiser.
    pub solver: Solver,
    /// Accuracy on the validation samples.
    pub val_acc: f64,
    /// Iterations done.
    pub n_iter: usize,
    /// Whether the fit met its tolerance.
    pub converged: bool,
    /// Why the optimiser stopped.
    pub stop: StopReason,
    /// Wall-clock seconds of the fit (validation scoring excluded).
    pub seconds: f64,
}

/// Every candidate's row and model, and the winner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridResult {
    /// One row per candidate, in grid order (C outer, solver inner).
    pub rows: Vec<GridRow>,
    /// The fitted models, parallel to `rows`.
    pub models: Vec<Model>,
    /// Index of the best row: the highest validation accuracy, the first in grid order
    /// among equals (the study's `if va > best` loop).
    pub best: usize,
}

impl GridResult {
    /// The winning row.
    pub fn best_row(&self) -> &GridRow {
        &self.rows[self.best]
    }

    /// The winning model.
    pub fn best_model(&self) -> &Model {
        &self.models[self.best]
    }
}

/// Progress of a grid search: which candidate, and its optimiser's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridProgress {
    /// 0-based index of the candidate in grid order.
    pub candidate: usize,
    /// Number of candidates.
    pub n_candidates: usize,
    /// The candidate's C.
    pub c: f64,
    /// The candidate's solver.
    pub solver: Solver,
    /// State after the latest iteration of its fit.
    pub fit: Progress,
}

/// Fits every (C, solver) candidate of `opts` on `train` (C outer, solver inner), scores
/// validation accuracy on `val`, and picks the best (ties: the first in grid order).
/// Sample weights of `train` are used by every fit; those of `val` are ignored.
/// Non-converged fits stay in the table with `converged = false`.
pub fn grid_search(
    train: &Samples<'_>,
    val: &Samples<'_>,
    n_classes: usize,
    opts: &GridOptions,
) -> Result<GridResult, LogRegError> {
    grid_search_with_progress(train, val, n_classes, opts, &mut |_| {})
}

/// [`grid_search`] with a callback after every optimiser iteration of every candidate.
pub fn grid_search_with_progress(
    train: &Samples<'_>,
    val: &Samples<'_>,
    n_classes: usize,
    opts: &GridOptions,
    progress: &mut (dyn FnMut(&GridProgress) + Send),
) -> Result<GridResult, LogRegError> {
    if opts.cs.is_empty() {
        return Err(LogRegError::EmptyGrid("no value of c"));
    }
    if opts.solvers.is_empty() {
        return Err(LogRegError::EmptyGrid("no solver"));
    }
    let candidates: Vec<FitOptions> = opts
        .cs
        .iter()
        .flat_map(|&c| {
            opts.solvers.iter().map(move |&solver| FitOptions {
                c,
                solver,
                max_iter: opts.max_iter,
                tol: opts.tol,
                precision: opts.precision,
                n_threads: None,
            })
        })
        .collect();
    for cand in &candidates {
        check_options(cand)?;
    }
    if opts.n_threads == Some(0) {
        return Err(LogRegError::ThreadPool(
            "n_threads must be at least 1".into(),
        ));
    }
    if val.n_features != train.n_features {
        return Err(LogRegError::FeatureCountMismatch {
            expected: train.n_features,
            got: val.n_features,
        });
    }
    with_threads(opts.n_threads, || {
        check_train(train, n_classes)?;
        check_features(val.x, val.n_samples(), val.n_features)?;
        check_labels(val.y, n_classes, false)?;
        let design = Design::new(train.x, train.n_samples(), train.n_features, opts.precision);
        let n_candidates = candidates.len();
        let mut rows = Vec::with_capacity(n_candidates);
        let mut models = Vec::with_capacity(n_candidates);
        let mut best = 0usize;
        let mut best_acc = f64::NEG_INFINITY;
        for (i, cand) in candidates.iter().enumerate() {
            let mut cb = |p: &Progress| {
                progress(&GridProgress {
                    candidate: i,
                    n_candidates,
                    c: cand.c,
                    solver: cand.solver,
                    fit: *p,
                })
            };
            let model = fit_design(
                &design,
                train.y,
                train.sample_weight,
                n_classes,
                cand,
                &mut cb,
                Instant::now(),
            );
            let val_acc = model.accuracy(val.x, val.y)?;
            if val_acc > best_acc {
                best_acc = val_acc;
                best = i;
            }
            rows.push(GridRow {
                c: cand.c,
                solver: cand.solver,
                val_acc,
                n_iter: model.n_iter,
                converged: model.converged,
                stop: model.stop,
                seconds: model.seconds,
            });
            models.push(model);
        }
        Ok(GridResult { rows, models, best })
    })?
}
