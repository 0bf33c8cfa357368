//! Fit and evaluation speed on seeded pool5-like features (25,088 features, 11 classes).
//!
//! Run: `cargo bench -p logreg --bench fit` (add `-- eval` or `-- fit` to pick a group).
//! Threads: the global rayon pool (`RAYON_NUM_THREADS=2` for the study's setting).
//!
//! * `eval/*`: one loss + gradient evaluation followed by one Hessian-vector product on
//!   2000 samples (the work of one newton-cg inner step plus one line-search step), for
//!   float64 and float32 products; the reported throughput counts floating-point
//!   operations of the four products as elements;
//! * `fit/*`: complete fits (C = 1, tol = 1e-4, max_iter = 200) on 500 samples.
//!
//! Inputs are generated once, outside the timed code. For a side-by-side timing against
//! scikit-learn use `crates/logreg/scripts/bench_vs_sklearn.py`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logreg::__private::loss_grad_hessp;
use logreg::synthetic::{pool5_like, Rng};
use logreg::{fit, FitOptions, Precision, Samples, Solver};

const D: usize = 25088;
const K: usize = 11;

fn eval(c: &mut Criterion) {
    let n = 2000;
    let (x, y) = pool5_like(n, D, K, 1);
    let dim = K * (D + 1);
    let mut rng = Rng::new(2);
    let theta: Vec<f64> = (0..dim).map(|_| 1e-4 * rng.normal()).collect();
    let v: Vec<f64> = (0..dim).map(|_| 1e-4 * rng.normal()).collect();
    let mut g = c.benchmark_group("eval");
    g.sample_size(10);
    // two passes over X per product pair, 2 n d k flops each
    g.throughput(Throughput::Elements((4 * n * D * K) as u64));
    for (name, p) in [("f64", Precision::F64), ("f32", Precision::F32)] {
        g.bench_function(format!("loss_grad+hessp/{name}/2000x25088x11"), |b| {
            b.iter(|| loss_grad_hessp(&x, &y, D, K, 1.0, p, &theta, &v).0)
        });
    }
    g.finish();
}

fn fits(c: &mut Criterion) {
    let n = 500;
    let (x, y) = pool5_like(n, D, K, 3);
    let train = Samples::new(&x, &y, D);
    let mut g = c.benchmark_group("fit");
    g.sample_size(10);
    for solver in [Solver::Lbfgs, Solver::NewtonCg] {
        let opts = FitOptions {
            c: 1.0,
            solver,
            ..FitOptions::default()
        };
        g.bench_function(format!("{solver}/C1/500x25088x11"), |b| {
            b.iter(|| fit(&train, K, &opts).unwrap().n_iter)
        });
    }
    g.finish();
}

criterion_group!(benches, eval, fits);
criterion_main!(benches);
