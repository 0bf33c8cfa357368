//! scikit-learn's multinomial logistic objective with sample weights and an L2 penalty on
//! the coefficients (not the intercepts):
//!
//! ```text
//! f(W, b) = (1/S) Σ_i s_i (logsumexp(z_i) - z_{i, y_i}) + (l2 / 2) ||W||²,
//! z_i = W x_i + b,  S = Σ_i s_i,  l2 = 1 / (C S)
//! ```
//!
//! This is `LinearModelLoss(HalfMultinomialLoss)` with `l2_reg_strength = 1 / (C *
//! sum(sample_weight))`, as `LogisticRegression` builds it for the lbfgs and newton-cg
//! solvers; its minimiser is that of `C Σ_i s_i loss_i + ||W||² / 2`.
//!
//! The parameter vector `theta` is class-major with the intercept last (see
//! [`crate::dense`]).

use crate::dense::{Design, Scratch};

/// Loss, gradient and Hessian-vector products on one training set.
pub(crate) struct Objective<'a> {
    design: &'a Design<'a>,
    scratch: Scratch,
    y: &'a [usize],
    /// `s_i / S`.
    sw: Vec<f64>,
    pub k: usize,
    pub l2: f64,
    z: Vec<f64>,
    /// Number of loss + gradient evaluations.
    pub n_evals: usize,
    /// Number of Hessian-vector products.
    pub n_hessp: usize,
}

impl<'a> Objective<'a> {
    /// `sample_weight` need not be normalised. Inputs are validated by the caller.
    pub fn new(
        design: &'a Design<'a>,
        y: &'a [usize],
        k: usize,
        sample_weight: &[f64],
        c: f64,
    ) -> Self {
        let n = y.len();
        debug_assert_eq!(n, design.n);
        let s: f64 = sample_weight.iter().sum();
        Objective {
            design,
            scratch: Scratch::default(),
            y,
            sw: sample_weight.iter().map(|w| w / s).collect(),
            k,
            l2: 1.0 / (c * s),
            z: vec![0.0; n * k],
            n_evals: 0,
            n_hessp: 0,
        }
    }

    pub fn n(&self) -> usize {
        self.design.n
    }

    pub fn d(&self) -> usize {
        self.design.d
    }

    /// Length of the parameter vector, `k (d + 1)`.
    pub fn dim(&self) -> usize {
        self.k * (self.design.d + 1)
    }

    fn penalty_and_grad_init(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let d = self.design.d;
        let mut sq = 0.0;
        for (t, g) in theta.chunks_exact(d + 1).zip(grad.chunks_exact_mut(d + 1)) {
            for (&w, gw) in t[..d].iter().zip(&mut g[..d]) {
                sq += w * w;
                *gw = self.l2 * w;
            }
            g[d] = 0.0;
        }
        0.5 * self.l2 * sq
    }

    /// Objective value at `theta`; writes the gradient into `grad` and, if given, the
    /// class probabilities (`n x k`, row-major) into `proba`.
    pub fn loss_grad(&mut self, theta: &[f64], grad: &mut [f64], proba: Option<&mut [f64]>) -> f64 {
        self.n_evals += 1;
        let k = self.k;
        self.design
            .forward(theta, k, &mut self.z, &mut self.scratch);
        // z becomes the pointwise gradient s_i/S (p_i - e_{y_i}), the loss is summed in
        // sample order.
        let mut data_loss = 0.0;
        let mut proba = proba;
        for (i, row) in self.z.chunks_exact_mut(k).enumerate() {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let yi = self.y[i];
            // logsumexp(z) - z_y = ln(Σ exp(z - max)) - (z_y - max)
            let zy_shift = row[yi] - max;
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let lse_shift = sum.ln();
            let inv = 1.0 / sum;
            for v in row.iter_mut() {
                *v *= inv;
            }
            if let Some(p) = proba.as_deref_mut() {
                p[i * k..(i + 1) * k].copy_from_slice(row);
            }
            let w = self.sw[i];
            data_loss += w * (lse_shift - zy_shift);
            row[yi] -= 1.0;
            for v in row.iter_mut() {
                *v *= w;
            }
        }
        let pen = self.penalty_and_grad_init(theta, grad);
        self.design
            .backward_acc(&self.z, k, grad, &mut self.scratch);
        data_loss + pen
    }

    /// `out = H(theta) v`, with `proba` the class probabilities at `theta` (from
    /// [`Objective::loss_grad`]).
    pub fn hessp(&mut self, proba: &[f64], v: &[f64], out: &mut [f64]) {
        self.n_hessp += 1;
        let (k, d) = (self.k, self.design.d);
        self.design.forward(v, k, &mut self.z, &mut self.scratch);
        for (i, (t, p)) in self
            .z
            .chunks_exact_mut(k)
            .zip(proba.chunks_exact(k))
            .enumerate()
        {
            let dot: f64 = t.iter().zip(p).map(|(a, b)| a * b).sum();
            let w = self.sw[i];
            for (tv, &pv) in t.iter_mut().zip(p) {
                *tv = (*tv - dot) * pv * w;
            }
        }
        for (vc, oc) in v.chunks_exact(d + 1).zip(out.chunks_exact_mut(d + 1)) {
            for (&a, o) in vc[..d].iter().zip(&mut oc[..d]) {
                *o = self.l2 * a;
            }
            oc[d] = 0.0;
        }
        self.design.backward_acc(&self.z, k, out, &mut self.scratch);
    }
}

/// Balanced class weights times the optional sample weights `w` (all ones when `None`),
/// per sample: `s_i = w_i · W / (k · W_{y_i})` with `W = Σ w` and `W_c` the total weight
/// of class `c` (scikit-learn's `compute_class_weight("balanced", sample_weight=w)`; with
/// unit weights exactly `n / (k · count_{y_i})`). Inputs are validated by the caller:
/// every class has a positive total weight.
pub(crate) fn balanced_sample_weights(y: &[usize], k: usize, w: Option<&[f64]>) -> Vec<f64> {
    let weight = |i: usize| w.map_or(1.0, |w| w[i]);
    let mut class_total = vec![0.0f64; k];
    for (i, &c) in y.iter().enumerate() {
        class_total[c] += weight(i);
    }
    let total: f64 = class_total.iter().sum();
    let cw: Vec<f64> = class_total
        .iter()
        .map(|&t| total / (k as f64 * t))
        .collect();
    y.iter()
        .enumerate()
        .map(|(i, &c)| weight(i) * cw[c])
        .collect()
}
