//! Fit and evaluation speed on seeded pool5-like features (25,088 features, 11 classes).
//!
//! Run: `cargo bench -p logreg --bench fit` (add `-- eval`, `-- fit` or `-- kernels` to pick a group).
//! Threads: the global rayon pool (`RAYON_NUM_THREADS=2` for the study's setting).
//!
//! * `eval/*`: one loss + gradient evaluation followed by one Hessian-vector product on
//!   2000 samples (the work of one newton-cg inner step plus one line-search step), for
//!   float64 and float32 products; the reported throughput counts floating-point
//!   operations of the four products as elements;
//! * `kernels/*`: one forward and one backward float64 product on every instruction set
//!   the machine runs (scalar, AVX2 + FMA, AVX-512);
//! * `fit/*`: complete fits (C = 1, tol = 1e-4, max_iter = 200) on 500 samples.
//!
//! Inputs are generated once, outside the timed code. For a side-by-side timing against
//! scikit-learn use `crates/logreg/scripts/bench_vs_sklearn.py`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logreg::__private::{kernel_isas, kernel_products, loss_grad_hessp};
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

/// The float64 products alone (one forward, one backward) on each instruction set this
/// machine runs, so a kernel change can be timed on every variant from one machine.
fn kernels(c: &mut Criterion) {
    let n = 2000;
    let (x, _) = pool5_like(n, D, K, 1);
    let mut rng = Rng::new(4);
    let w: Vec<f64> = (0..K * (D + 1)).map(|_| 1e-3 * rng.normal()).collect();
    let a: Vec<f64> = (0..n * K).map(|_| rng.normal()).collect();
    let mut z = vec![0.0; n * K];
    let mut out = vec![0.0; K * (D + 1)];
    let mut g = c.benchmark_group("kernels");
    g.sample_size(10);
    g.throughput(Throughput::Elements((4 * n * D * K) as u64));
    for isa in kernel_isas() {
        g.bench_function(format!("forward+backward/{isa}/2000x25088x11"), |b| {
            b.iter(|| {
                kernel_products(isa, &x, n, D, &w, K, &a, &mut z, &mut out);
                z[0]
            })
        });
    }
    g.finish();
}

criterion_group!(benches, eval, fits, kernels);
criterion_main!(benches);
