//! The `logreg` stage adapter: flattened pool5 features -> the study's class-balanced logistic
//! regression, C and solver chosen on the validation split (on `describe`'s descriptors
//! instead, when the stage needs it).

use contracts::{
    ids, outputs, slots, Choice, FeatureSource, FeaturesReader, Grid, LogRegChoice, LogRegFit,
    LogRegModel, Predictions, PredictionsMeta,
};
use pipeline::{BoxError, Stage, StageContext, Validate};
use serde::{Deserialize, Serialize};

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
struct Flat {
    x: Vec<f32>,
    y: Vec<usize>,
    index: Vec<i64>,
    d: usize,
}

fn flat(features: &FeaturesReader<'_>) -> Result<Flat, BoxError> {
    let n = features.len();
    let mut f = Flat {
        x: Vec::new(),
        y: Vec::with_capacity(n),
        index: Vec::with_capacity(n),
        d: 0,
    };
    for i in 0..features.chunks() {
        let c = features.chunk(i)?;
        f.d = c.row_len();
        if f.x.is_empty() {
            f.x.reserve(n * f.d);
        }
        f.x.extend_from_slice(&c.features);
        f.y.extend(c.labels.iter().map(|&l| l as usize));
        f.index.extend(c.index);
    }
    Ok(f)
}

/// The stage.
pub struct LogReg;

impl Stage for LogReg {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::LOGREG
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            outputs::MODEL,
            outputs::PREDICTIONS,
            outputs::VALIDATION_PREDICTIONS,
        ]
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let source = FeatureSource::of(ctx);
        let split = |s: &str| -> Result<FeaturesReader<'_>, BoxError> {
            slots::features(source, s).read(ctx)
        };
        let tr_reader = split(outputs::TRAINING)?;
        let classes = tr_reader.classes()?;
        let k = classes.len();
        let Flat {
            x: tx, y: ty, d, ..
        } = flat(&tr_reader)?;
        let Flat {
            x: vx,
            y: vy,
            index: vidx,
            ..
        } = flat(&split(outputs::VALIDATION)?)?;
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
        let tx_rows = ty.len();
        drop(tx);
        // The grid as a result (timings go to the run record only).
        let rows: Vec<LogRegFit> = result
            .rows
            .iter()
            .map(|r| LogRegFit {
                c: r.c,
                solver: r.solver.as_str().to_string(),
                val_accuracy: r.val_acc,
                n_iter: r.n_iter,
                converged: r.converged,
                stop: format!("{:?}", r.stop),
            })
            .collect();
        let grid_seconds: Vec<f64> = result.rows.iter().map(|r| r.seconds).collect();
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
        // The chosen model's validation probabilities, for stages that choose among models.
        let validation = Predictions {
            pred: best.predict(&vx)?.iter().map(|&v| v as i64).collect(),
            labels: vy.iter().map(|&v| v as i64).collect(),
            probs: best.predict_proba(&vx)?.iter().map(|&v| v as f32).collect(),
            n_classes: k,
            index: vidx,
        };
        drop(vx);
        let choice = LogRegChoice {
            c: b.c,
            solver: b.solver.as_str().to_string(),
            val_accuracy: b.val_acc,
        };

        let Flat {
            x: ex,
            y: ey,
            index: eidx,
            ..
        } = flat(&split(outputs::EVALUATION)?)?;
        let probs = best.predict_proba(&ex)?;
        let pred = best.predict(&ex)?;
        ctx.count((tx_rows + ey.len()) as u64, "rows");

        LogRegModel {
            coef: best.coef.clone(),
            intercept: best.intercept.clone(),
            n_features: d,
            best: choice.clone(),
            classes: classes.clone(),
        }
        .write(ctx)?;
        let preds_classes = classes;
        let preds = Predictions {
            pred: pred.iter().map(|&v| v as i64).collect(),
            labels: ey.iter().map(|&v| v as i64).collect(),
            probs: probs.iter().map(|&v| v as f32).collect(),
            n_classes: k,
            index: eidx,
        };
        preds.write(
            ctx,
            &PredictionsMeta {
                classes: preds_classes.clone(),
                grid: Some(Grid::LogReg(rows)),
                best: Some(Choice::LogReg(choice)),
                grid_seconds: Some(grid_seconds),
                ..PredictionsMeta::default()
            },
        )?;
        validation.write_validation(ctx, &preds_classes)?;
        let (correct, n) = (preds.correct(), preds.labels.len());
        ctx.progress().println(format!(
            "logreg: best C={} {}; test accuracy {:.4} ({correct}/{n})",
            b.c,
            b.solver.as_str(),
            correct as f64 / n.max(1) as f64
        ));
        Ok(())
    }
}
