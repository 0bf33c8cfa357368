//! Fitting one model: options, input validation, solver dispatch.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::check::{check_features, check_labels, check_sample_weight};
use crate::dense::{Design, Precision};
use crate::error::LogRegError;
use crate::model::Model;
use crate::objective::{balanced_sample_weights, Objective};
use crate::types::{Progress, Solver};
use crate::{lbfgs, newton_cg};

/// Settings of one fit. The defaults are the study's: `C = 1`, lbfgs, `max_iter = 200`,
/// `tol = 1e-4`, float64 products, the current rayon pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Inverse L2 regularisation strength (scikit-learn's `C`), `> 0`.
    pub c: f64,
    /// Optimiser.
    pub solver: Solver,
    /// Iteration limit (scikit-learn's `max_iter`), `>= 1`.
    pub max_iter: usize,
    /// Gradient tolerance (scikit-learn's `tol`): the fit has converged when the largest
    /// absolute gradient component of the scaled objective is at most `tol`.
    pub tol: f64,
    /// Arithmetic of the matrix products.
    pub precision: Precision,
    /// Threads; `None` uses the current rayon pool (the global one unless the caller
    /// runs inside `ThreadPool::install`).
    pub n_threads: Option<usize>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            c: 1.0,
            solver: Solver::Lbfgs,
            max_iter: 200,
            tol: 1e-4,
            precision: Precision::F64,
            n_threads: None,
        }
    }
}

/// Training (or validation) samples: `x` is row-major `y.len() x n_features`.
#[derive(Debug, Clone, Copy)]
pub struct Samples<'a> {
    /// Features, row-major, `n_samples * n_features` values.
    pub x: &'a [f32],
    /// Labels in `0..n_classes`.
    pub y: &'a [usize],
    /// Features per sample.
    pub n_features: usize,
    /// Optional per-sample weights (scikit-learn's `fit(X, y, sample_weight)`), one finite
    /// non-negative value per sample. A fit multiplies them into the balanced class
    /// weights, which are then computed from the weighted class counts as scikit-learn
    /// (1.9) does: `s_i = w_i · W / (k · W_{y_i})` with `W` the total weight and `W_c`
    /// that of class `c`. `None` gives exactly the unweighted fit; all weights equal to
    /// `a` act as `C` multiplied by `a`, as in scikit-learn. Accuracies (and the
    /// validation samples of a grid search) ignore them.
    pub sample_weight: Option<&'a [f64]>,
}

impl<'a> Samples<'a> {
    /// Bundles a row-major feature matrix with its labels (checked when used), without
    /// sample weights.
    pub fn new(x: &'a [f32], y: &'a [usize], n_features: usize) -> Self {
        Samples {
            x,
            y,
            n_features,
            sample_weight: None,
        }
    }

    /// The same samples with per-sample weights (see [`Samples::sample_weight`]).
    pub fn with_sample_weight(self, sample_weight: &'a [f64]) -> Self {
        Samples {
            sample_weight: Some(sample_weight),
            ..self
        }
    }

    /// Number of samples (`y.len()`).
    pub fn n_samples(&self) -> usize {
        self.y.len()
    }
}

/// Validates training samples: features, labels (every class present) and weights.
pub(crate) fn check_train(train: &Samples<'_>, n_classes: usize) -> Result<(), LogRegError> {
    check_features(train.x, train.n_samples(), train.n_features)?;
    check_labels(train.y, n_classes, true)?;
    check_sample_weight(train.sample_weight, train.y, n_classes)
}

pub(crate) fn check_options(opts: &FitOptions) -> Result<(), LogRegError> {
    if !(opts.c > 0.0 && opts.c.is_finite()) {
        return Err(LogRegError::InvalidC(opts.c));
    }
    if !(opts.tol >= 0.0 && opts.tol.is_finite()) {
        return Err(LogRegError::InvalidTol(opts.tol));
    }
    if opts.max_iter == 0 {
        return Err(LogRegError::InvalidMaxIter);
    }
    if opts.n_threads == Some(0) {
        return Err(LogRegError::ThreadPool(
            "n_threads must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Runs `f` on a pool of `n_threads` threads, or on the current pool for `None`.
pub(crate) fn with_threads<T: Send>(
    n_threads: Option<usize>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, LogRegError> {
    match n_threads {
        None => Ok(f()),
        Some(t) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .map_err(|e| LogRegError::ThreadPool(e.to_string().to_lowercase()))?;
            Ok(pool.install(f))
        }
    }
}

/// Fits `LogisticRegression(C, solver, class_weight="balanced", max_iter, tol)` (multinomial,
/// L2 on the coefficients, fitted intercept) on `train`, whose labels lie in
/// `0..n_classes`, with `train`'s sample weights if it has any. Every class must occur
/// (with a positive total weight).
///
/// A fit that stops without meeting the tolerance returns `Ok` with
/// [`Model::converged`] false and [`Model::stop`] saying why.
pub fn fit(train: &Samples<'_>, n_classes: usize, opts: &FitOptions) -> Result<Model, LogRegError> {
    fit_with_progress(train, n_classes, opts, &mut |_| {})
}

/// [`fit`] with a callback after every optimiser iteration (e.g. for a progress bar).
pub fn fit_with_progress(
    train: &Samples<'_>,
    n_classes: usize,
    opts: &FitOptions,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Model, LogRegError> {
    let start = Instant::now();
    check_options(opts)?;
    with_threads(opts.n_threads, || {
        check_train(train, n_classes)?;
        let design = Design::new(train.x, train.n_samples(), train.n_features, opts.precision);
        Ok(fit_design(
            &design,
            train.y,
            train.sample_weight,
            n_classes,
            opts,
            progress,
            start,
        ))
    })?
}

/// Fits on an already prepared (validated) design matrix.
pub(crate) fn fit_design(
    design: &Design<'_>,
    y: &[usize],
    sample_weight: Option<&[f64]>,
    k: usize,
    opts: &FitOptions,
    progress: &mut (dyn FnMut(&Progress) + Send),
    start: Instant,
) -> Model {
    let sw = balanced_sample_weights(y, k, sample_weight);
    let mut obj = Objective::new(design, y, k, &sw, opts.c);
    let mut theta = vec![0.0; obj.dim()];
    let out = match opts.solver {
        Solver::Lbfgs => lbfgs::minimize(&mut obj, &mut theta, opts.max_iter, opts.tol, progress),
        Solver::NewtonCg => {
            newton_cg::minimize(&mut obj, &mut theta, opts.max_iter, opts.tol, progress)
        }
    };
    let d = obj.d();
    let mut coef = Vec::with_capacity(k * d);
    let mut intercept = Vec::with_capacity(k);
    for row in theta.chunks_exact(d + 1) {
        coef.extend_from_slice(&row[..d]);
        intercept.push(row[d]);
    }
    Model {
        n_classes: k,
        n_features: d,
        coef,
        intercept,
        solver: opts.solver,
        c: opts.c,
        n_iter: out.n_iter,
        converged: out.stop.converged(),
        stop: out.stop,
        loss: out.loss,
        grad_max_abs: out.grad_max_abs,
        n_evals: obj.n_evals,
        n_hessp: obj.n_hessp,
        seconds: start.elapsed().as_secs_f64(),
    }
}
