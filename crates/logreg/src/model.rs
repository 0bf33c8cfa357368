//! A fitted model and its predictions.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::check::check_features;
use crate::error::LogRegError;
use crate::types::{Solver, StopReason};

/// A fitted multinomial logistic regression plus how the fit went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Number of classes `k`.
    pub n_classes: usize,
    /// Number of features `d`.
    pub n_features: usize,
    /// Coefficients, row-major `k x d` (scikit-learn's `coef_`).
    pub coef: Vec<f64>,
    /// Intercepts, `k` values (scikit-learn's `intercept_`).
    pub intercept: Vec<f64>,
    /// Optimiser used.
    pub solver: Solver,
    /// Inverse regularisation strength used.
    pub c: f64,
    /// Iterations done (scikit-learn's `n_iter_`).
    pub n_iter: usize,
    /// Whether the fit met its stopping tolerance (false exactly when scikit-learn would
    /// warn that it did not converge, or its line search failed).
    pub converged: bool,
    /// Why the optimiser stopped.
    pub stop: StopReason,
    /// Final value of the scaled objective (weighted mean loss + penalty).
    pub loss: f64,
    /// `max |gradient|` at the final parameters (NaN if not evaluated there).
    pub grad_max_abs: f64,
    /// Loss-and-gradient evaluations.
    pub n_evals: usize,
    /// Hessian-vector products (newton-cg).
    pub n_hessp: usize,
    /// Wall-clock seconds of the fit, validation included.
    pub seconds: f64,
}

impl Model {
    /// A model from stored coefficients (`k x d`, row-major) and intercepts (`k`), e.g. one
    /// read back from the cache for prediction. Fit statistics are unknown (NaN / 0).
    pub fn from_coefficients(
        coef: Vec<f64>,
        intercept: Vec<f64>,
        n_features: usize,
    ) -> Result<Model, LogRegError> {
        let k = intercept.len();
        if k < 2 || n_features == 0 || coef.len() != k * n_features {
            return Err(LogRegError::ShapeMismatch {
                what: "coef",
                expected: k * n_features,
                got: coef.len(),
            });
        }
        Ok(Model {
            n_classes: k,
            n_features,
            coef,
            intercept,
            solver: Solver::Lbfgs,
            c: f64::NAN,
            n_iter: 0,
            converged: true,
            stop: StopReason::GradientTol,
            loss: f64::NAN,
            grad_max_abs: f64::NAN,
            n_evals: 0,
            n_hessp: 0,
            seconds: 0.0,
        })
    }

    fn check(&self, x: &[f32]) -> Result<usize, LogRegError> {
        let (d, k) = (self.n_features, self.n_classes);
        if d == 0 {
            return Err(LogRegError::EmptyData("model has no features"));
        }
        if k == 0 {
            return Err(LogRegError::TooFewClasses(0));
        }
        if self.coef.len() != k.saturating_mul(d) {
            return Err(LogRegError::ShapeMismatch {
                what: "model coef",
                expected: k.saturating_mul(d),
                got: self.coef.len(),
            });
        }
        if self.intercept.len() != k {
            return Err(LogRegError::ShapeMismatch {
                what: "model intercept",
                expected: k,
                got: self.intercept.len(),
            });
        }
        if !x.len().is_multiple_of(d) {
            return Err(LogRegError::ShapeMismatch {
                what: "x (rows of n_features values)",
                expected: x.len().div_ceil(d) * d,
                got: x.len(),
            });
        }
        let n = x.len() / d;
        check_features(x, n, d)?;
        Ok(n)
    }

    /// Raw scores `x · coefᵀ + intercept`, row-major `n x k`, for row-major `x` with
    /// `n_features` columns.
    pub fn decision_function(&self, x: &[f32]) -> Result<Vec<f64>, LogRegError> {
        let n = self.check(x)?;
        let (d, k) = (self.n_features, self.n_classes);
        let mut z = vec![0.0; n * k];
        z.par_chunks_mut(k)
            .zip(x.par_chunks(d))
            .for_each(|(zr, xr)| {
                for (c, zc) in zr.iter_mut().enumerate() {
                    *zc = dot_f32_f64(xr, &self.coef[c * d..(c + 1) * d]) + self.intercept[c];
                }
            });
        Ok(z)
    }

    /// Class probabilities (softmax of the scores), row-major `n x k`.
    pub fn predict_proba(&self, x: &[f32]) -> Result<Vec<f64>, LogRegError> {
        let mut z = self.decision_function(x)?;
        for row in z.chunks_exact_mut(self.n_classes) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in row.iter_mut() {
                *v /= sum;
            }
        }
        Ok(z)
    }

    /// Most probable class per row (the first one on ties, like `numpy.argmax`).
    pub fn predict(&self, x: &[f32]) -> Result<Vec<usize>, LogRegError> {
        let z = self.decision_function(x)?;
        Ok(z.chunks_exact(self.n_classes).map(argmax).collect())
    }

    /// Fraction of rows of `x` predicted as their label in `y`.
    pub fn accuracy(&self, x: &[f32], y: &[usize]) -> Result<f64, LogRegError> {
        let pred = self.predict(x)?;
        if pred.len() != y.len() {
            return Err(LogRegError::ShapeMismatch {
                what: "y",
                expected: pred.len(),
                got: y.len(),
            });
        }
        if y.is_empty() {
            return Err(LogRegError::EmptyData("no samples"));
        }
        let hits = pred.iter().zip(y).filter(|(p, t)| p == t).count();
        Ok(hits as f64 / y.len() as f64)
    }
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// `Σ x_j w_j` in float64 with a fixed summation order.
fn dot_f32_f64(x: &[f32], w: &[f64]) -> f64 {
    const L: usize = 8;
    let mut acc = [0.0f64; L];
    let cx = x.chunks_exact(L);
    let cw = w.chunks_exact(L);
    let (rx, rw) = (cx.remainder(), cw.remainder());
    for (a, b) in cx.zip(cw) {
        for l in 0..L {
            acc[l] += f64::from(a[l]) * b[l];
        }
    }
    let mut s = 0.0;
    for (a, b) in rx.iter().zip(rw) {
        s += f64::from(*a) * b;
    }
    acc.iter().sum::<f64>() + s
}
