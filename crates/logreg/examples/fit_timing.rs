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

use std::collections::HashMap;
use std::time::Instant;

use logreg::{fit_with_progress, FitOptions, Precision, Samples, Solver};
use safetensors::{Dtype, SafeTensors};

fn cpu_seconds() -> f64 {
    // utime + stime of this process (all threads), in clock ticks of 1/100 s
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // fields after the command: state is index 0, utime 11, stime 12
    (t(11) + t(12)) / 100.0
}

fn main() {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("missing value for {k}"));
        args.insert(k.trim_start_matches("--").to_string(), v);
    }
    let get = |k: &str, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_string());
    let solver: Solver = get("solver", "lbfgs").parse().expect("solver");
    let c: f64 = get("c", "1").parse().expect("c");
    let max_iter: usize = get("max-iter", "200").parse().expect("max-iter");
    let tol: f64 = get("tol", "1e-4").parse().expect("tol");
    let repeats: usize = get("repeats", "1").parse().expect("repeats");
    let precision = match get("precision", "f64").as_str() {
        "f32" => Precision::F32,
        _ => Precision::F64,
    };

    let (x, y, d) = match args.get("data") {
        Some(path) => {
            let bytes = std::fs::read(path).expect("read data");
            let st = SafeTensors::deserialize(&bytes).expect("parse safetensors");
            let xt = st.tensor("x").expect("tensor x");
            assert_eq!(xt.dtype(), Dtype::F32, "x must be float32");
            let d = xt.shape()[1];
            let x: Vec<f32> = xt
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let yt = st.tensor("y").expect("tensor y");
            assert_eq!(yt.dtype(), Dtype::I64, "y must be int64");
            let y: Vec<usize> = yt
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
                .collect();
            (x, y, d)
        }
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
    if let (Some(out), Some(m)) = (args.get("out"), last) {
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
