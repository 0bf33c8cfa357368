//! scikit-learn's own inexact Newton method (`sklearn.utils.optimize._newton_cg`), step
//! for step, in float64:
//!
//! * outer loop while `k < max_iter`: stop (converged) when `max |g| <= tol`;
//! * direction: conjugate gradients on `H p = -g` from 0, at most 201 inner steps, until
//!   `Σ |r| <= min(0.5, sqrt(Σ |g|)) Σ |g|`, stopping early on tiny or negative
//!   curvature (a negative curvature on the first step falls back to steepest descent);
//! * step: scipy's `line_search_wolfe1` (`c1 = 1e-4, c2 = 0.9, amax = 50, amin = 1e-8,
//!   xtol = 1e-14`, first trial `min(1, 2.02 (f_k - f_{k-1}) / gᵀp)`); when it fails, the
//!   full step is still taken if it changes the loss by at most `16 eps |f|` and lowers
//!   `Σ |g|` (scikit-learn's `_line_search_wolfe12`);
//! * `max_iter` outer steps without meeting the tolerance is a non-converged fit.
//!
//! Where scikit-learn's `_line_search_wolfe12` would then try scipy's
//! `line_search_wolfe2` as a last resort (its own comments say its tests never reach
//! that branch), this implementation stops and reports
//! [`StopReason::LineSearchFailed`](crate::StopReason::LineSearchFailed): the fit is
//! flagged as not converged. scikit-learn also gives up at that point if the fallback
//! fails, with a "Line Search failed" warning.
//!
//! Evaluations are shared: the loss, gradient and class probabilities of the accepted
//! line-search point are reused for the next outer step (the same parameter vector,
//! bit for bit), where scikit-learn recomputes them.

use crate::dcsrch::{Dcsrch, Task};
use crate::lbfgs::Outcome;
use crate::objective::Objective;
use crate::types::{Progress, StopReason};
use crate::vecops::{axpy, dot, max_abs, sum_abs};

const MAXINNER: usize = 200;

/// The last loss / gradient / probability evaluation.
struct Eval {
    theta: Vec<f64>,
    f: f64,
    g: Vec<f64>,
    proba: Vec<f64>,
    valid: bool,
}

impl Eval {
    /// Evaluates at `x` unless the cached point is `x` itself.
    fn at(&mut self, obj: &mut Objective<'_>, x: &[f64]) {
        if self.valid && self.theta.as_slice() == x {
            return;
        }
        self.theta.copy_from_slice(x);
        self.f = obj.loss_grad(x, &mut self.g, Some(&mut self.proba));
        self.valid = true;
    }
}

pub(crate) fn minimize(
    obj: &mut Objective<'_>,
    x: &mut [f64],
    max_iter: usize,
    tol: f64,
    progress: &mut dyn FnMut(&Progress),
) -> Outcome {
    let n = x.len();
    let mut ev = Eval {
        theta: vec![0.0; n],
        f: 0.0,
        g: vec![0.0; n],
        proba: vec![0.0; obj.n() * obj.k],
        valid: false,
    };
    ev.at(obj, x);
    let mut old_fval = ev.f;
    let mut old_old_fval: Option<f64> = None;
    let mut fgrad = vec![0.0; n];
    let mut proba = vec![0.0; obj.n() * obj.k];
    let mut xsupi = vec![0.0; n];
    let mut trial = vec![0.0; n];
    let mut k = 0usize;
    let mut last_gmax = f64::NAN;

    while k < max_iter {
        ev.at(obj, x);
        fgrad.copy_from_slice(&ev.g);
        proba.copy_from_slice(&ev.proba);
        let max_absgrad = max_abs(&fgrad);
        last_gmax = max_absgrad;
        if max_absgrad <= tol {
            return Outcome {
                n_iter: k,
                stop: StopReason::GradientTol,
                loss: old_fval,
                grad_max_abs: max_absgrad,
            };
        }
        let maggrad = sum_abs(&fgrad);
        let eta = 0.5f64.min(maggrad.sqrt());
        let termcond = eta * maggrad;
        cg(obj, &proba, &fgrad, MAXINNER, termcond, &mut xsupi);

        let Some((alphak, fval)) = line_search_wolfe12(
            obj,
            &mut ev,
            x,
            &xsupi,
            &fgrad,
            old_fval,
            old_old_fval,
            &mut trial,
        ) else {
            return Outcome {
                n_iter: k,
                stop: StopReason::LineSearchFailed,
                loss: old_fval,
                grad_max_abs: max_absgrad,
            };
        };
        old_old_fval = Some(old_fval);
        old_fval = fval;
        for (xi, &pi) in x.iter_mut().zip(&xsupi) {
            *xi += alphak * pi;
        }
        k += 1;
        let gmax = if ev.valid && ev.theta.as_slice() == &*x {
            Some(max_abs(&ev.g))
        } else {
            None
        };
        if let Some(v) = gmax {
            last_gmax = v;
        }
        progress(&Progress {
            iteration: k,
            max_iter,
            loss: old_fval,
            grad_max_abs: gmax.unwrap_or(f64::NAN),
        });
    }
    Outcome {
        n_iter: k,
        stop: StopReason::MaxIter,
        loss: old_fval,
        grad_max_abs: last_gmax,
    }
}

/// Inexact solve of `H xsupi = -fgrad` (scikit-learn's `_cg`).
fn cg(
    obj: &mut Objective<'_>,
    proba: &[f64],
    fgrad: &[f64],
    maxiter: usize,
    tol: f64,
    xsupi: &mut [f64],
) {
    let eps = 16.0 * f64::EPSILON;
    let n = fgrad.len();
    xsupi.fill(0.0);
    let mut ri = fgrad.to_vec();
    let mut psupi: Vec<f64> = ri.iter().map(|v| -v).collect();
    let mut ap = vec![0.0; n];
    let mut i = 0usize;
    let mut dri0 = dot(&ri, &ri);
    let mut psupi_norm2 = dri0;
    while i <= maxiter {
        if sum_abs(&ri) <= tol {
            break;
        }
        obj.hessp(proba, &psupi, &mut ap);
        let curv = dot(&psupi, &ap);
        if 0.0 <= curv && curv <= eps * psupi_norm2 {
            break;
        } else if curv < 0.0 {
            if i == 0 {
                // steepest descent fallback
                axpy(dri0 / curv, &psupi, xsupi);
            }
            break;
        }
        let alphai = dri0 / curv;
        axpy(alphai, &psupi, xsupi);
        axpy(alphai, &ap, &mut ri);
        let dri1 = dot(&ri, &ri);
        let betai = dri1 / dri0;
        for (p, &r) in psupi.iter_mut().zip(&ri) {
            *p = -r + betai * *p;
        }
        psupi_norm2 = dri1 + betai * betai * psupi_norm2;
        i += 1;
        dri0 = dri1;
    }
}

/// scikit-learn's `_line_search_wolfe12` without the wolfe2 fallback. Returns the step
/// and the loss there; on success `ev` holds the evaluation at `x + step * p`.
#[allow(clippy::too_many_arguments)]
fn line_search_wolfe12(
    obj: &mut Objective<'_>,
    ev: &mut Eval,
    xk: &[f64],
    pk: &[f64],
    gfk: &[f64],
    old_fval: f64,
    old_old_fval: Option<f64>,
    trial: &mut [f64],
) -> Option<(f64, f64)> {
    if let Some(r) = line_search_wolfe1(obj, ev, xk, pk, gfk, old_fval, old_old_fval, trial) {
        return Some(r);
    }
    let eps = 16.0 * f64::EPSILON;
    for ((t, &x), &p) in trial.iter_mut().zip(xk).zip(pk) {
        *t = x + p;
    }
    ev.at(obj, trial);
    let fval = ev.f;
    let tiny_loss = (old_fval * eps).abs();
    if (fval - old_fval).abs() <= tiny_loss && sum_abs(&ev.g) < sum_abs(gfk) {
        return Some((1.0, fval));
    }
    None
}

/// scipy's `line_search_wolfe1` / `scalar_search_wolfe1`.
#[allow(clippy::too_many_arguments)]
fn line_search_wolfe1(
    obj: &mut Objective<'_>,
    ev: &mut Eval,
    xk: &[f64],
    pk: &[f64],
    gfk: &[f64],
    phi0: f64,
    old_phi0: Option<f64>,
    trial: &mut [f64],
) -> Option<(f64, f64)> {
    let derphi0 = dot(gfk, pk);
    let mut alpha1 = match old_phi0 {
        Some(old) if derphi0 != 0.0 => {
            let a = 1.0f64.min(1.01 * 2.0 * (phi0 - old) / derphi0);
            if a < 0.0 {
                1.0
            } else {
                a
            }
        }
        _ => 1.0,
    };
    let mut ls = Dcsrch::new(1e-4, 0.9, 1e-14, 1e-8, 50.0);
    let (mut phi1, mut derphi1) = (phi0, derphi0);
    for _ in 0..100 {
        let (stp, task) = ls.iterate(alpha1, phi1, derphi1);
        if !stp.is_finite() {
            return None;
        }
        match task {
            Task::Fg => {
                alpha1 = stp;
                for ((t, &x), &p) in trial.iter_mut().zip(xk).zip(pk) {
                    *t = x + stp * p;
                }
                ev.at(obj, trial);
                phi1 = ev.f;
                derphi1 = dot(&ev.g, pk);
            }
            Task::Convergence => return Some((stp, phi1)),
            Task::Warning(_) | Task::Error(_) => return None,
        }
    }
    None
}
