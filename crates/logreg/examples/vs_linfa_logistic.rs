//! Times our lbfgs fit against `linfa_logistic::MultiLogisticRegression` on the same
//! features, both through linfa's `Fit` / `Predict` traits.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run -p logreg --example vs_linfa_logistic -- \
//!     [--data TRAIN.safetensors [--val VAL.safetensors]] \
//!     [--n 2000] [--n-val 500] [--d 25088] [--k 11] [--seed 0] \
//!     [--c 1] [--max-iter 200] [--linfa-float f64|f32]
//! ```
//!
//! Data: `--data` holds `x` (float32, `n x d`) and `y` (int64, `n`), `--val` the same for
//! the validation accuracy (none without it). Without `--data`: the pool5-like features
//! of [`logreg::synthetic::pool5_like_split`]: `--n` training samples and `--n-val`
//! validation samples of the same distribution. With the defaults (2000 x 25088,
//! 11 classes, seed 0, the study's shape) the training samples are exactly those the
//! `fit_timing` example generates.
//!
//! The two fits:
//!
//! * ours: `LogisticRegression(C, solver="lbfgs", class_weight="balanced",
//!   max_iter, tol=1e-4)` exactly as scikit-learn fits it, float64 arithmetic on the
//!   float32 features in place, on the rayon pool (`RAYON_NUM_THREADS`);
//! * linfa-logistic: `MultiLogisticRegression::default()` (argmin's L-BFGS, memory 10,
//!   More-Thuente line search, `gradient_tolerance` 1e-4, fitted intercept) with
//!   `.alpha(1 / C)` and `.max_iterations(max_iter)`, on the features converted to
//!   float64 (`--linfa-float f64`, the default: the same arithmetic as ours; the
//!   conversion is timed separately) or on the float32 features (`f32`). Its matrix
//!   products are ndarray's, single-threaded here (ndarray's `matrixmultiply-threading`
//!   feature is not enabled).
//!
//! Regularisation: scikit-learn minimises `C Σ_i s_i loss_i + ||W||² / 2`, i.e.
//! `Σ_i s_i loss_i + ||W||² / (2 C)`; linfa-logistic minimises
//! `Σ_i loss_i + (alpha / 2) ||W||²`; neither penalises the intercepts. Hence
//! `alpha = 1 / C`. The balanced weights `s_i` sum to `n` like linfa-logistic's implicit
//! unit weights, so the data term and the penalty are in the same proportion in both.
//! linfa-logistic has no sample weights, so it cannot do `class_weight="balanced"`: it
//! fits the unweighted (`class_weight=None`) model, a different optimum on imbalanced
//! classes. Its stopping rules also differ: the L2 norm of the gradient of the summed
//! objective below 1e-4, or a cost change below machine epsilon, or `max_iterations`;
//! ours (scikit-learn's) is `max |gradient| <= 1e-4` on the objective divided by
//! `C Σ s_i`, or scipy's relative reduction test. linfa-logistic does not report its
//! iteration count (printed as `null`).
//!
//! Prints one JSON line per fit (wall and CPU seconds, iterations, train and validation
//! accuracy) and the ratios linfa-logistic / ours.

mod common;

use std::time::Instant;

use common::{cpu_seconds, load_xy, Args};
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use logreg::{FitOptions, Solver};
use ndarray::{Array1, ArrayView1, ArrayView2};

/// Samples in row-major order with their labels.
struct Split {
    x: Vec<f32>,
    y: Vec<usize>,
}

impl Split {
    fn view(&self, d: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.y.len(), d), &self.x).expect("x is n x d")
    }
}

fn accuracy(pred: &Array1<usize>, y: &[usize]) -> f64 {
    let hits = pred.iter().zip(y).filter(|(p, t)| p == t).count();
    hits as f64 / y.len() as f64
}

/// `null` for NaN or infinity (no validation set; a CPU time below the clock tick), else
/// the number with `decimals` decimals.
fn json_num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "null".into()
    }
}

/// Timing and accuracies of one fit.
struct Outcome {
    seconds: f64,
    cpu_seconds: f64,
    train_acc: f64,
    val_acc: f64,
}

fn main() {
    let args = Args::from_env();
    let c: f64 = args.get("c", "1");
    let max_iter: usize = args.get("max-iter", "200");
    let linfa_float: String = args.get("linfa-float", "f64");
    assert!(
        linfa_float == "f64" || linfa_float == "f32",
        "--linfa-float must be f64 or f32"
    );

    let (train, val, d, source) = match args.opt("data") {
        Some(path) => {
            let (x, y, d) = load_xy(path);
            let val = args.opt("val").map(|p| {
                let (x, y, dv) = load_xy(p);
                assert_eq!(dv, d, "validation features must have {d} columns");
                Split { x, y }
            });
            (Split { x, y }, val, d, path.to_string())
        }
        None => {
            let n: usize = args.get("n", "2000");
            let n_val: usize = args.get("n-val", "500");
            let d: usize = args.get("d", "25088");
            let k: usize = args.get("k", "11");
            let seed: u64 = args.get("seed", "0");
            let ((x, y), (xv, yv)) = logreg::synthetic::pool5_like_split(n, n_val, d, k, seed);
            let val = (n_val > 0).then_some(Split { x: xv, y: yv });
            (
                Split { x, y },
                val,
                d,
                format!("synthetic pool5-like, seed {seed}"),
            )
        }
    };
    let n_classes = train.y.iter().max().map_or(0, |m| m + 1);
    eprintln!(
        "data: {source}; train {} x {d}, val {}, {n_classes} classes; rayon threads {}",
        train.y.len(),
        val.as_ref().map_or(0, |v| v.y.len()),
        rayon::current_num_threads()
    );
    let train_ds = DatasetView::new(train.view(d), ArrayView1::from(train.y.as_slice()));

    // ours
    let opts = FitOptions {
        c,
        solver: Solver::Lbfgs,
        max_iter,
        ..FitOptions::default()
    };
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let model = opts.fit(&train_ds).expect("our fit");
    let (seconds, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let ours = Outcome {
        seconds,
        cpu_seconds: cpu,
        train_acc: accuracy(&Predict::predict(&model, &train.view(d)), &train.y),
        val_acc: val.as_ref().map_or(f64::NAN, |v| {
            accuracy(&Predict::predict(&model, &v.view(d)), &v.y)
        }),
    };
    println!(
        "{{\"impl\": \"ours\", \"solver\": \"lbfgs\", \"class_weight\": \"balanced\", \"c\": {c}, \"max_iter\": {max_iter}, \"seconds\": {:.3}, \"cpu_seconds\": {:.3}, \"n_iter\": {}, \"converged\": {}, \"stop\": \"{:?}\", \"train_acc\": {}, \"val_acc\": {}}}",
        ours.seconds,
        ours.cpu_seconds,
        model.n_iter,
        model.converged,
        model.stop,
        json_num(ours.train_acc, 4),
        json_num(ours.val_acc, 4)
    );

    // linfa-logistic. The two branches differ only in the float type; they cannot share a
    // generic function because linfa-logistic's `Float` bound is a private trait.
    let (theirs, convert_seconds) = if linfa_float == "f64" {
        let t0 = Instant::now();
        let x64 = train.view(d).mapv(f64::from);
        let val64 = val.as_ref().map(|v| v.view(d).mapv(f64::from));
        let convert = t0.elapsed().as_secs_f64();
        let ds = DatasetView::new(x64.view(), ArrayView1::from(train.y.as_slice()));
        let params = MultiLogisticRegression::<f64>::default()
            .alpha(1.0 / c)
            .max_iterations(max_iter as u64);
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let m = params.fit(&ds).expect("linfa-logistic fit");
        let (seconds, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let out = Outcome {
            seconds,
            cpu_seconds: cpu,
            train_acc: accuracy(&m.predict(&x64), &train.y),
            val_acc: val
                .as_ref()
                .zip(val64.as_ref())
                .map_or(f64::NAN, |(v, x)| accuracy(&m.predict(x), &v.y)),
        };
        (out, Some(convert))
    } else {
        let params = MultiLogisticRegression::<f32>::default()
            .alpha((1.0 / c) as f32)
            .max_iterations(max_iter as u64);
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let m = params.fit(&train_ds).expect("linfa-logistic fit");
        let (seconds, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let out = Outcome {
            seconds,
            cpu_seconds: cpu,
            train_acc: accuracy(&m.predict(&train.view(d)), &train.y),
            val_acc: val
                .as_ref()
                .map_or(f64::NAN, |v| accuracy(&m.predict(&v.view(d)), &v.y)),
        };
        (out, None)
    };
    println!(
        "{{\"impl\": \"linfa-logistic\", \"float\": \"{linfa_float}\", \"class_weight\": null, \"alpha\": {}, \"max_iterations\": {max_iter}, \"seconds\": {:.3}, \"cpu_seconds\": {:.3}, \"convert_seconds\": {}, \"n_iter\": null, \"train_acc\": {}, \"val_acc\": {}}}",
        1.0 / c,
        theirs.seconds,
        theirs.cpu_seconds,
        convert_seconds.map_or("null".into(), |s| format!("{s:.3}")),
        json_num(theirs.train_acc, 4),
        json_num(theirs.val_acc, 4)
    );
    println!(
        "{{\"ratio_linfa_logistic_over_ours\": {{\"seconds\": {}, \"cpu_seconds\": {}}}}}",
        json_num(theirs.seconds / ours.seconds, 2),
        json_num(theirs.cpu_seconds / ours.cpu_seconds, 2)
    );
}
