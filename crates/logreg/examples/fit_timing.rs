//! Times one `logreg` fit on features stored in a safetensors file, for comparison with
//! scikit-learn on the same data (`crates/logreg/scripts/bench_vs_sklearn.py` drives it).
//!
//! ```text
//! cargo run --release -p logreg --example fit_timing -- \
//!     --data DATA.safetensors [--solver lbfgs|newton-cg] [--c 1] [--max-iter 200] \
//!     [--tol 1e-4] [--precision f64|f32] [--repeats 1] [--out MODEL.safetensors]
//! ```
//!
//! `DATA` holds `x` (float32, `n x d`) and `y` (int64, `n`). Threads: `RAYON_NUM_THREADS`.
//! Prints one JSON line per repeat: seconds, CPU seconds, iterations, convergence, train
//! accuracy. `--out` writes the last model's `coef` (`k x d`) and `intercept` as float64.
//! Without `--data` it generates 2000 x 25088 pool5-like features with 11 classes.

mod common;

use std::time::Instant;

use common::{cpu_seconds, load_xy, Args};
use logreg::{fit_with_progress, FitOptions, Precision, Samples, Solver};
use safetensors::Dtype;

fn main() {
    let args = Args::from_env();
    let solver: Solver = args.get("solver", "lbfgs");
    let c: f64 = args.get("c", "1");
    let max_iter: usize = args.get("max-iter", "200");
    let tol: f64 = args.get("tol", "1e-4");
    let repeats: usize = args.get("repeats", "1");
    let precision = match args.opt("precision") {
        Some("f32") => Precision::F32,
        _ => Precision::F64,
    };

    let (x, y, d) = match args.opt("data") {
        Some(path) => load_xy(path),
        None => {
            let (x, y) = logreg::synthetic::pool5_like(2000, 25088, 11, 0);
            (x, y, 25088)
        }
    };
    let n_classes = y.iter().max().map_or(0, |m| m + 1);
    let train = Samples::new(&x, &y, d);
    let opts = FitOptions {
        c,
        solver,
        max_iter,
        tol,
        precision,
        n_threads: None,
    };
    let mut last = None;
    for _ in 0..repeats {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let m = fit_with_progress(&train, n_classes, &opts, &mut |p| {
            eprintln!(
                "  iter {:3}  loss {:.6e}  max|g| {:.3e}",
                p.iteration, p.loss, p.grad_max_abs
            )
        })
        .expect("fit");
        let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let train_acc = m.accuracy(&x, &y).expect("accuracy");
        println!(
            "{{\"impl\": \"ours\", \"solver\": \"{}\", \"c\": {}, \"seconds\": {:.4}, \"cpu_seconds\": {:.3}, \"n_iter\": {}, \"converged\": {}, \"stop\": \"{:?}\", \"n_evals\": {}, \"n_hessp\": {}, \"train_acc\": {}, \"threads\": {}}}",
            solver, c, secs, cpu, m.n_iter, m.converged, m.stop, m.n_evals, m.n_hessp, train_acc,
            rayon::current_num_threads()
        );
        last = Some(m);
    }
    if let (Some(out), Some(m)) = (args.opt("out"), last) {
        let k = m.n_classes;
        let coef: Vec<u8> = m.coef.iter().flat_map(|v| v.to_le_bytes()).collect();
        let icpt: Vec<u8> = m.intercept.iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            (
                "coef".to_string(),
                safetensors::tensor::TensorView::new(Dtype::F64, vec![k, d], &coef).unwrap(),
            ),
            (
                "intercept".to_string(),
                safetensors::tensor::TensorView::new(Dtype::F64, vec![k], &icpt).unwrap(),
            ),
        ];
        safetensors::serialize_to_file(views, None, std::path::Path::new(out)).expect("write out");
    }
}
