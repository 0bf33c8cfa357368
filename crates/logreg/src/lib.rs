//! Class-balanced multinomial logistic regression, fitted as scikit-learn's
//! `LogisticRegression(C=C, solver=s, class_weight="balanced", max_iter=max_iter, tol=tol)`
//! fits it for more than two classes (multinomial loss, L2 penalty on the coefficients but
//! not the intercepts, fitted intercept), on dense row-major `f32` features such as
//! flattened VGG16 pool5 activations (25,088 values per image).
//!
//! # Objective
//!
//! With balanced sample weights `s_i = n / (k · count(y_i))` and `S = Σ s_i`, the solvers
//! minimise scikit-learn's scaled objective
//!
//! ```text
//! f(W, b) = (1/S) Σ_i s_i (logsumexp(W x_i + b) - (W x_i + b)_{y_i}) + ||W||² / (2 C S)
//! ```
//!
//! whose minimiser is that of `C Σ_i s_i loss_i + ||W||² / 2`. The tolerance `tol` applies
//! to the gradient of this scaled objective, as in scikit-learn, so iteration counts and
//! convergence flags are comparable.
//!
//! # Solvers
//!
//! * [`Solver::Lbfgs`]: scipy's L-BFGS-B (no bounds) with scikit-learn's settings
//!   (memory 10, `gtol = tol`, `ftol = 64 eps`, at most 50 line-search steps);
//! * [`Solver::NewtonCg`]: scikit-learn's own Newton-CG (`sklearn.utils.optimize`).
//!
//! Both start from zero and follow the reference algorithms step for step in float64, so
//! on the same data they take the same number of iterations as scikit-learn (the test
//! fixture of `tests/fixtures/` checks this). A fit that stops without meeting the
//! tolerance is reported with [`Model::converged`] `false` and a [`StopReason`], never
//! silently.
//!
//! # Speed
//!
//! The loss, gradient and Hessian-vector products are two skinny matrix products per
//! evaluation, computed blockwise on the current rayon pool. With the default
//! [`Precision::F64`] they run the crate's own SIMD kernels (AVX-512 or AVX2 + FMA,
//! chosen at run time, with a portable fallback) that read the float32 features in place
//! and accumulate in float64, which is exactly float64 arithmetic on the features without
//! a float64 copy of them. [`Precision::F32`] uses float32 GEMMs of the `gemm` crate
//! instead: faster, with float32 rounding in the loss and gradient.
//!
//! Results are deterministic for given inputs, options and thread count (with
//! [`Precision::F64`] they do not depend on the thread count at all).
//!
//! # Sample weights and linfa
//!
//! [`Samples::with_sample_weight`] adds per-sample weights, multiplied into the balanced
//! class weights as scikit-learn's `fit(X, y, sample_weight)` does. [`linfa_compat`]
//! makes [`FitOptions`] a linfa [`Fit`](linfa::traits::Fit) algorithm on `f32` records
//! with `usize` targets (honouring the dataset's weights) and [`Model`] a linfa
//! predictor.
//!
//! With two classes this fits the symmetric two-output softmax model; scikit-learn fits a
//! single-output binomial model there instead, so only `k >= 3` matches it exactly.
//!
//! # Example
//!
//! ```
//! use logreg::{fit, FitOptions, Samples, Solver};
//!
//! // 6 samples x 2 features, 3 classes
//! let x = [0.0, 0.0, 0.1, 0.2, 5.0, 0.0, 5.2, 0.1, 0.0, 5.0, 0.2, 5.1f32];
//! let y = [0, 0, 1, 1, 2, 2];
//! let train = Samples::new(&x, &y, 2);
//! let opts = FitOptions { c: 10.0, solver: Solver::NewtonCg, ..FitOptions::default() };
//! let model = fit(&train, 3, &opts).unwrap();
//! assert!(model.converged);
//! assert_eq!(model.predict(&x).unwrap(), y);
//! ```

mod check;
mod dcsrch;
mod dense;
mod error;
mod fit;
mod grid;
mod kernels;
mod lbfgs;
pub mod linfa_compat;
mod model;
mod newton_cg;
mod objective;
mod predictor;
mod stage;
pub mod synthetic;
mod types;
mod vecops;

pub use dense::Precision;
pub use error::LogRegError;
pub use fit::{fit, fit_with_progress, FitOptions, Samples};
pub use grid::{
    grid_search, grid_search_with_progress, GridOptions, GridProgress, GridResult, GridRow,
    STUDY_CS, STUDY_SOLVERS,
};
pub use model::Model;
pub use predictor::LogRegPredictor;
pub use stage::{LogReg, Params, CACHE_VERSION};
pub use types::{Progress, Solver, StopReason};

#[doc(hidden)]
pub mod __private {
    //! Internals exposed for the crate's own tests and benches only.
    use crate::dense::{Design, Precision};
    use crate::objective::{balanced_sample_weights, Objective};

    /// Scaled objective, gradient and Hessian-vector product at `theta` (class-major,
    /// intercept last) with balanced weights.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_grad_hessp(
        x: &[f32],
        y: &[usize],
        d: usize,
        k: usize,
        c: f64,
        precision: Precision,
        theta: &[f64],
        v: &[f64],
    ) -> (f64, Vec<f64>, Vec<f64>) {
        let design = Design::new(x, y.len(), d, precision);
        let sw = balanced_sample_weights(y, k, None);
        let mut obj = Objective::new(&design, y, k, &sw, c);
        let mut g = vec![0.0; theta.len()];
        let mut p = vec![0.0; y.len() * k];
        let f = obj.loss_grad(theta, &mut g, Some(&mut p));
        let mut hv = vec![0.0; theta.len()];
        obj.hessp(&p, v, &mut hv);
        (f, g, hv)
    }

    /// The instruction sets of the float64 products this machine runs, by name
    /// (`"scalar"`, `"avx2"`, `"avx512"`).
    pub fn kernel_isas() -> Vec<&'static str> {
        crate::kernels::available_isas()
            .into_iter()
            .map(crate::kernels::Isa::name)
            .collect()
    }

    /// One forward product `z = X Wᵀ` (`w`: `k` rows of stride `d + 1`) and one backward
    /// accumulation `out += Aᵀ X` on the named instruction set (see [`kernel_isas`]).
    #[allow(clippy::too_many_arguments)]
    pub fn kernel_products(
        isa: &str,
        x: &[f32],
        n: usize,
        d: usize,
        w: &[f64],
        k: usize,
        a: &[f64],
        z: &mut [f64],
        out: &mut [f64],
    ) {
        let isa = crate::kernels::available_isas()
            .into_iter()
            .find(|i| i.name() == isa)
            .unwrap_or_else(|| panic!("instruction set {isa} is not available here"));
        crate::kernels::forward_isa(isa, x, n, d, w, d + 1, k, z);
        crate::kernels::backward_acc_isa(isa, x, n, d, a, k, out, d + 1);
    }
}
