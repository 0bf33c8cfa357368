//! The small types every solver and the model share (a leaf module): the solver's name, why it
//! stopped, and its per-iteration progress.

use serde::{Deserialize, Serialize};

/// Optimiser, named as scikit-learn names it (`"lbfgs"`, `"newton-cg"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Solver {
    /// Limited-memory BFGS (scipy's L-BFGS-B without bounds).
    Lbfgs,
    /// scikit-learn's inexact Newton method with a conjugate-gradient inner solver.
    NewtonCg,
}

impl Solver {
    /// The scikit-learn name.
    pub fn as_str(self) -> &'static str {
        match self {
            Solver::Lbfgs => "lbfgs",
            Solver::NewtonCg => "newton-cg",
        }
    }
}

impl std::fmt::Display for Solver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Solver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lbfgs" => Ok(Solver::Lbfgs),
            "newton-cg" => Ok(Solver::NewtonCg),
            other => Err(format!(
                "unknown solver {other:?} (expected \"lbfgs\" or \"newton-cg\")"
            )),
        }
    }
}

/// Why the optimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max |gradient| <= tol` (converged).
    GradientTol,
    /// lbfgs only: the objective fell by at most `64 eps max(|f|, 1)` in one step
    /// (converged, as scipy reports it).
    RelativeReduction,
    /// `max_iter` iterations done (not converged).
    MaxIter,
    /// lbfgs only: more than 15000 evaluations (not converged).
    MaxFunEvals,
    /// No acceptable step along the search direction (not converged).
    LineSearchFailed,
}

impl StopReason {
    /// Whether scikit-learn would report the fit as converged (no `ConvergenceWarning`).
    pub fn converged(self) -> bool {
        matches!(
            self,
            StopReason::GradientTol | StopReason::RelativeReduction
        )
    }
}

/// State after one optimiser iteration, handed to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Iterations done so far (1-based).
    pub iteration: usize,
    /// The iteration limit.
    pub max_iter: usize,
    /// Objective value at the new iterate.
    pub loss: f64,
    /// `max |gradient|` at the new iterate (NaN when the solver has not evaluated it
    /// there).
    pub grad_max_abs: f64,
}
