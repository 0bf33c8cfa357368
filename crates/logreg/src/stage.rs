//! The `logreg` stage adapter: flattened pool5 features -> the study's class-balanced logistic
//! regression, C and solver chosen on the validation split.

use pipeline::{resolve_params, BoxError, InputArtifact, Stage, StageContext, Tensor, Validate};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    grid_search_with_progress, GridOptions, Precision, Samples, Solver, STUDY_CS, STUDY_SOLVERS,
};

/// Bump when results change without a source change.
pub const CACHE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Values of C, outer loop of the grid.
    pub cs: Vec<f64>,
    /// Solvers, inner loop of the grid.
    pub solvers: Vec<Solver>,
    pub max_iter: usize,
    pub tol: f64,
    /// `f64` (scikit-learn's arithmetic) or `f32` (faster, less exact).
    pub precision: Precision,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            cs: STUDY_CS.to_vec(),
            solvers: STUDY_SOLVERS.to_vec(),
            max_iter: 200,
            tol: 1e-4,
            precision: Precision::F64,
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        if self.cs.is_empty() || self.solvers.is_empty() {
            return Err("the grid needs at least one C and one solver".into());
        }
        if self.cs.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
            return Err("every C must be positive".into());
        }
        if self.max_iter == 0 || self.tol.is_nan() || self.tol <= 0.0 {
            return Err("max_iter and tol must be positive".into());
        }
        Ok(())
    }
}

/// Flattened features (N x 25,088 in Keras' HWC order), labels, manifest indices, width.
type Flat = (Vec<f32>, Vec<usize>, Vec<i64>, usize);

fn flat(input: &InputArtifact<'_>) -> Result<Flat, BoxError> {
    let n = input.artifact.rows("features");
    let (mut x, mut y, mut idx, mut d) =
        (Vec::new(), Vec::with_capacity(n), Vec::with_capacity(n), 0);
    for i in 0..input.len() {
        let c = input.chunk(i)?;
        let (shape, f) = c.f32("features")?;
        d = shape[1..].iter().product();
        if x.is_empty() {
            x.reserve(n * d);
        }
        x.extend_from_slice(&f);
        y.extend(c.i64("labels")?.1.iter().map(|&l| l as usize));
        idx.extend(c.i64("index")?.1);
    }
    Ok((x, y, idx, d))
}

/// The stage.
pub struct LogReg;

impl Stage for LogReg {
    fn id(&self) -> &'static str {
        "logreg"
    }
    fn code_version(&self) -> String {
        format!("{}-v{CACHE_VERSION}", env!("CODE_HASH"))
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["model", "predictions"]
    }
    fn resolve_params(&self, raw: &toml::Table) -> Result<Value, String> {
        resolve_params::<Params>(raw)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let tr = ctx.input("vgg-extract", "training")?;
        let classes = tr.meta("classes").cloned().unwrap_or(Value::Null);
        let k = classes
            .as_array()
            .map(|a| a.len())
            .ok_or("vgg-extract.training has no class list")?;
        let (tx, ty, _, d) = flat(&tr)?;
        let (vx, vy, _, _) = flat(&ctx.input("vgg-extract", "validation")?)?;
        let opts = GridOptions {
            cs: p.cs.clone(),
            solvers: p.solvers.clone(),
            max_iter: p.max_iter,
            tol: p.tol,
            precision: p.precision,
            n_threads: None,
        };
        let n_cand = opts.cs.len() * opts.solvers.len();
        let bar = ctx
            .progress()
            .bar((n_cand * p.max_iter) as u64, "logreg grid");
        let mut last = usize::MAX;
        let result = grid_search_with_progress(
            &Samples::new(&tx, &ty, d),
            &Samples::new(&vx, &vy, d),
            k,
            &opts,
            &mut |g| {
                if g.candidate != last {
                    last = g.candidate;
                    bar.set_position((g.candidate * p.max_iter) as u64);
                }
                bar.set_message(format!(
                    "C={} {} iter {} loss {:.5}",
                    g.c,
                    g.solver.as_str(),
                    g.fit.iteration,
                    g.fit.loss
                ));
                bar.inc(1);
            },
        )?;
        bar.finish_and_clear();
        drop((tx, vx));
        let rows: Vec<Value> = result
            .rows
            .iter()
            .map(|r| json!({"C": r.c, "solver": r.solver.as_str(), "val_accuracy": r.val_acc, "n_iter": r.n_iter, "converged": r.converged, "stop": format!("{:?}", r.stop), "seconds": r.seconds}))
            .collect();
        for r in &result.rows {
            let flag = if r.converged { "" } else { "  NOT CONVERGED" };
            ctx.progress().println(format!(
                "logreg: C={:<5} {:<9} val_accuracy {:.4}  iterations {:>3}  {:.1}s{flag}",
                r.c,
                r.solver.as_str(),
                r.val_acc,
                r.n_iter,
                r.seconds
            ));
            if !r.converged {
                ctx.progress().warn(format!(
                    "logreg C={} {} did not converge in {} iterations ({:?})",
                    r.c,
                    r.solver.as_str(),
                    r.n_iter,
                    r.stop
                ));
            }
        }
        let best = result.best_model();
        let b = result.best_row();
        let best_json = json!({"C": b.c, "solver": b.solver.as_str(), "val_accuracy": b.val_acc});

        let (ex, ey, eidx, _) = flat(&ctx.input("vgg-extract", "evaluation")?)?;
        let probs = best.predict_proba(&ex)?;
        let pred = best.predict(&ex)?;
        let n = ey.len();
        let correct = pred.iter().zip(&ey).filter(|(a, b)| a == b).count();

        let mut m = ctx.output("model")?;
        m.write_chunk(vec![
            ("coef", Tensor::from_f64(&[k, d], &best.coef)),
            ("intercept", Tensor::from_f64(&[k], &best.intercept)),
        ])?;
        m.set_meta("best", best_json.clone());
        m.set_meta("classes", classes.clone());
        m.finish()?;

        let mut w = ctx.output("predictions")?;
        w.write_chunk(vec![
            (
                "pred",
                Tensor::from_i64(&[n], &pred.iter().map(|&v| v as i64).collect::<Vec<_>>()),
            ),
            (
                "labels",
                Tensor::from_i64(&[n], &ey.iter().map(|&v| v as i64).collect::<Vec<_>>()),
            ),
            (
                "probs",
                Tensor::from_f32(
                    &[n, k],
                    &probs.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                ),
            ),
            ("index", Tensor::from_i64(&[n], &eidx)),
        ])?;
        w.set_meta("classes", classes);
        w.set_meta("grid", json!(rows));
        w.set_meta("best", best_json);
        w.set_meta("test_accuracy", json!(correct as f64 / n.max(1) as f64));
        w.set_meta("correct", json!(correct));
        w.set_meta("total", json!(n));
        w.finish()?;
        ctx.progress().println(format!(
            "logreg: best C={} {}; test accuracy {:.4} ({correct}/{n})",
            b.c,
            b.solver.as_str(),
            correct as f64 / n.max(1) as f64
        ));
        Ok(())
    }
}
