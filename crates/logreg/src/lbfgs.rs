//! L-BFGS-B without bounds, driven like `scipy.optimize.minimize(method="L-BFGS-B")`
//! is by scikit-learn's lbfgs solver: `maxcor = 10`, `gtol = tol`, `ftol = 64 * eps`,
//! `maxls = 50`, `maxfun = 15000`, `maxiter = max_iter`.
//!
//! Without bounds the generalized Cauchy point and subspace minimisation of L-BFGS-B
//! reduce to the plain L-BFGS direction `-H g` (`H0 = I / theta`, `theta = yᵀy / sᵀy`
//! of the newest accepted pair), computed here with the two-loop recursion. The rest
//! follows `mainlb` / `lnsrlb`:
//!
//! * first iteration (and after a memory reset) the direction is `-g`; the very first
//!   trial step is `min(1 / ||d||, 1e10)`, later ones `1`;
//! * line search `dcsrch(ftol = 1e-3, gtol = 0.9, xtol = 0.1, stpmin = 0, stpmax = 1e10)`,
//!   a warning from it still accepts the step; more than `maxls` evaluations, an ascent
//!   direction or an input error reset the memory and retry, or stop (abnormal
//!   termination) if the memory was already empty;
//! * after each accepted step the iteration counter grows; reaching `maxiter` stops
//!   before any convergence test (scipy's driver does this on `NEW_X`); otherwise the
//!   fit has converged when `max |g| <= gtol` or `(f_old - f) <= ftol * max(|f_old|, |f|,
//!   1)`;
//! * the pair `(s, y)` is skipped when `sᵀy <= eps * (-g_oldᵀ s)`.

use crate::dcsrch::{Dcsrch, Task};
use crate::objective::Objective;
use crate::types::{Progress, StopReason};
use crate::vecops::{axpy, dot, max_abs, norm2};

const M: usize = 10;
const MAXLS: usize = 50;
const MAXFUN: usize = 15000;
const STPMX: f64 = 1e10;

pub(crate) struct Outcome {
    pub n_iter: usize,
    pub stop: StopReason,
    pub loss: f64,
    pub grad_max_abs: f64,
}

/// Minimises `obj` from `x` (updated in place).
pub(crate) fn minimize(
    obj: &mut Objective<'_>,
    x: &mut [f64],
    max_iter: usize,
    gtol: f64,
    progress: &mut dyn FnMut(&Progress),
) -> Outcome {
    let epsmch = f64::EPSILON;
    let ftol_rel = 64.0 * epsmch; // scikit-learn's ftol; factr * epsmch in lbfgsb
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut f = obj.loss_grad(x, &mut g, None);
    let mut nfev = 1usize;

    let mut sbgnrm = max_abs(&g);
    if sbgnrm <= gtol {
        return Outcome {
            n_iter: 0,
            stop: StopReason::GradientTol,
            loss: f,
            grad_max_abs: sbgnrm,
        };
    }

    // memory: ring of (s, y, rho)
    let mut s_mem: Vec<Vec<f64>> = Vec::with_capacity(M);
    let mut y_mem: Vec<Vec<f64>> = Vec::with_capacity(M);
    let mut rho_mem: Vec<f64> = Vec::with_capacity(M);
    let mut head = 0usize; // index of the oldest pair once the ring is full
    let mut theta = 1.0f64;

    let mut iter = 0usize; // lbfgsb's iteration counter (first-step rule)
    let mut n_iterations = 0usize; // scipy driver's counter (reported)
    let mut d = vec![0.0; n];
    let mut t = vec![0.0; n]; // x at the start of the line search
    let mut r = vec![0.0; n]; // g at the start of the line search
    let mut alpha = [0.0; M];

    loop {
        // ---- search direction
        let col = s_mem.len();
        if col == 0 {
            for (di, &gi) in d.iter_mut().zip(&g) {
                *di = -gi / theta;
            }
        } else {
            // two-loop recursion, newest to oldest then back
            d.copy_from_slice(&g);
            for j in (0..col).rev() {
                let idx = (head + j) % col;
                let a = rho_mem[idx] * dot(&s_mem[idx], &d);
                alpha[j] = a;
                axpy(-a, &y_mem[idx], &mut d);
            }
            let h0 = 1.0 / theta;
            for v in d.iter_mut() {
                *v *= h0;
            }
            for (j, &a) in alpha.iter().enumerate().take(col) {
                let idx = (head + j) % col;
                let b = rho_mem[idx] * dot(&y_mem[idx], &d);
                axpy(a - b, &s_mem[idx], &mut d);
            }
            for v in d.iter_mut() {
                *v = -*v;
            }
        }

        // ---- line search (lnsrlb)
        let dnorm = norm2(&d);
        let mut stp = if iter == 0 {
            (1.0 / dnorm).min(STPMX)
        } else {
            1.0
        };
        t.copy_from_slice(x);
        r.copy_from_slice(&g);
        let fold = f;
        let gdold = dot(&g, &d);
        let mut gd = gdold;
        let mut failed = gdold >= 0.0 || !gdold.is_finite();
        let mut ifun = 0usize;
        if !failed {
            let mut ls = Dcsrch::new(1e-3, 0.9, 0.1, 0.0, STPMX);
            let mut fcur = f;
            loop {
                let (new_stp, task) = ls.iterate(stp, fcur, gd);
                stp = new_stp;
                match task {
                    Task::Convergence | Task::Warning(_) => break,
                    Task::Error(_) => {
                        failed = true;
                        break;
                    }
                    Task::Fg => {
                        ifun += 1;
                        let iback = ifun - 1;
                        if iback >= MAXLS || !stp.is_finite() {
                            failed = true;
                            break;
                        }
                        if stp == 1.0 {
                            for ((xi, &ti), &di) in x.iter_mut().zip(&t).zip(&d) {
                                *xi = ti + di;
                            }
                        } else {
                            for ((xi, &ti), &di) in x.iter_mut().zip(&t).zip(&d) {
                                *xi = stp * di + ti;
                            }
                        }
                        fcur = obj.loss_grad(x, &mut g, None);
                        nfev += 1;
                        f = fcur;
                        gd = dot(&g, &d);
                        if !fcur.is_finite() || !gd.is_finite() {
                            failed = true;
                            break;
                        }
                    }
                }
            }
        }
        if failed {
            x.copy_from_slice(&t);
            g.copy_from_slice(&r);
            f = fold;
            if s_mem.is_empty() {
                return Outcome {
                    n_iter: n_iterations,
                    stop: StopReason::LineSearchFailed,
                    loss: f,
                    grad_max_abs: max_abs(&g),
                };
            }
            s_mem.clear();
            y_mem.clear();
            rho_mem.clear();
            head = 0;
            theta = 1.0;
            continue;
        }

        // ---- new iterate
        iter += 1;
        sbgnrm = max_abs(&g);
        n_iterations += 1;
        progress(&Progress {
            iteration: n_iterations,
            max_iter,
            loss: f,
            grad_max_abs: sbgnrm,
        });
        if n_iterations >= max_iter {
            return Outcome {
                n_iter: n_iterations,
                stop: StopReason::MaxIter,
                loss: f,
                grad_max_abs: sbgnrm,
            };
        }
        if nfev > MAXFUN {
            return Outcome {
                n_iter: n_iterations,
                stop: StopReason::MaxFunEvals,
                loss: f,
                grad_max_abs: sbgnrm,
            };
        }
        if sbgnrm <= gtol {
            return Outcome {
                n_iter: n_iterations,
                stop: StopReason::GradientTol,
                loss: f,
                grad_max_abs: sbgnrm,
            };
        }
        let ddum = fold.abs().max(f.abs()).max(1.0);
        if fold - f <= ftol_rel * ddum {
            return Outcome {
                n_iter: n_iterations,
                stop: StopReason::RelativeReduction,
                loss: f,
                grad_max_abs: sbgnrm,
            };
        }

        // ---- memory update: y = g - g_old, s = stp * d
        for (ri, &gi) in r.iter_mut().zip(&g) {
            *ri = gi - *ri;
        }
        let rr = dot(&r, &r);
        let (dr, ddum) = if stp == 1.0 {
            (gd - gdold, -gdold)
        } else {
            for v in d.iter_mut() {
                *v *= stp;
            }
            ((gd - gdold) * stp, -gdold * stp)
        };
        if dr <= epsmch * ddum {
            continue; // skip the update
        }
        theta = rr / dr;
        if s_mem.len() < M {
            s_mem.push(d.clone());
            y_mem.push(r.clone());
            rho_mem.push(1.0 / dr);
        } else {
            s_mem[head].copy_from_slice(&d);
            y_mem[head].copy_from_slice(&r);
            rho_mem[head] = 1.0 / dr;
            head = (head + 1) % M;
        }
    }
}
