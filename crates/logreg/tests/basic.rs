//! Behaviour on small problems: separable data, exact gradients, input errors, grid
//! search bookkeeping, determinism.

use logreg::__private::loss_grad_hessp;
use logreg::synthetic::{pool5_like, Rng};
use logreg::{
    fit, fit_with_progress, grid_search, FitOptions, GridOptions, LogRegError, Precision, Samples,
    Solver, StopReason,
};

/// Three well separated Gaussian blobs in 5 dimensions, 40 samples per class.
fn blobs() -> (Vec<f32>, Vec<usize>, usize) {
    let d = 5;
    let mut rng = Rng::new(7);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..120 {
        let c = i % 3;
        for j in 0..d {
            let center = if j == c { 6.0 } else { 0.0 };
            x.push((center + rng.normal() * 0.5) as f32);
        }
        y.push(c);
    }
    (x, y, d)
}

#[test]
fn separable_toy_set_is_fitted_exactly_by_both_solvers() {
    let (x, y, d) = blobs();
    let train = Samples::new(&x, &y, d);
    for solver in [Solver::Lbfgs, Solver::NewtonCg] {
        for c in [0.1, 1.0, 10.0] {
            let opts = FitOptions {
                c,
                solver,
                ..FitOptions::default()
            };
            let m = fit(&train, 3, &opts).unwrap();
            assert_eq!(m.accuracy(&x, &y).unwrap(), 1.0, "{solver} C={c}");
            assert!(m.converged, "{solver} C={c}: {:?}", m.stop);
            assert!(m.grad_max_abs <= 1e-4, "{solver} C={c}: {}", m.grad_max_abs);
            let p = m.predict_proba(&x).unwrap();
            for row in p.chunks(3) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn gradient_and_hessian_vector_product_match_finite_differences() {
    // imbalanced classes, pool5-like magnitudes, a non-zero point
    let (n, d, k) = (60, 7, 4);
    let (x, y) = pool5_like(n, d, k, 3);
    let dim = k * (d + 1);
    let mut rng = Rng::new(11);
    let theta: Vec<f64> = (0..dim).map(|_| 0.05 * rng.normal()).collect();
    let v: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
    let c = 0.7;
    let f = |t: &[f64]| loss_grad_hessp(&x, &y, d, k, c, Precision::F64, t, &v);
    let (_, g, hv) = f(&theta);
    let h = 1e-6;
    let mut max_err: f64 = 0.0;
    for i in 0..dim {
        let mut tp = theta.clone();
        let mut tm = theta.clone();
        tp[i] += h;
        tm[i] -= h;
        let num = (f(&tp).0 - f(&tm).0) / (2.0 * h);
        max_err = max_err.max((num - g[i]).abs() / (1.0 + g[i].abs()));
    }
    assert!(
        max_err < 1e-6,
        "gradient vs central differences: {max_err:e}"
    );

    // H v against the directional difference of the gradient
    let eps = 1e-6;
    let tp: Vec<f64> = theta.iter().zip(&v).map(|(t, w)| t + eps * w).collect();
    let tm: Vec<f64> = theta.iter().zip(&v).map(|(t, w)| t - eps * w).collect();
    let (gp, gm) = (f(&tp).1, f(&tm).1);
    let scale = hv.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    for i in 0..dim {
        let num = (gp[i] - gm[i]) / (2.0 * eps);
        assert!(
            (num - hv[i]).abs() <= 1e-6 * (1.0 + scale),
            "hessp[{i}]: {num} vs {}",
            hv[i]
        );
    }

    // the objective at zero is ln(k) (weighted mean of ln k)
    let (f0, _, _) = f(&vec![0.0; dim]);
    assert!((f0 - (k as f64).ln()).abs() < 1e-12);

    // float32 products stay close to float64 ones
    let (f32v, g32, _) = loss_grad_hessp(&x, &y, d, k, c, Precision::F32, &theta, &v);
    let (f64v, g64, _) = f(&theta);
    assert!((f32v - f64v).abs() < 1e-5 * f64v.abs());
    let gscale = g64.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    for (a, b) in g32.iter().zip(&g64) {
        assert!((a - b).abs() < 1e-5 * gscale);
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (x, y, d) = blobs();
    let opts = FitOptions::default();
    let k = 3;
    let err = |x: &[f32], y: &[usize], d: usize, k: usize, o: &FitOptions| {
        fit(&Samples::new(x, y, d), k, o).unwrap_err()
    };
    assert_eq!(
        err(&[], &[], d, k, &opts),
        LogRegError::EmptyData("no samples")
    );
    assert_eq!(
        err(&[], &y, 0, k, &opts),
        LogRegError::EmptyData("no features")
    );
    assert!(matches!(
        err(&x[1..], &y, d, k, &opts),
        LogRegError::ShapeMismatch { what: "x", .. }
    ));
    let mut y_bad = y.clone();
    y_bad[5] = 3;
    assert_eq!(
        err(&x, &y_bad, d, k, &opts),
        LogRegError::LabelOutOfRange {
            sample: 5,
            label: 3,
            n_classes: 3
        }
    );
    // class 3 of 4 never occurs
    assert_eq!(
        err(&x, &y, d, 4, &opts),
        LogRegError::EmptyClass { class: 3 }
    );
    assert_eq!(err(&x, &y, d, 1, &opts), LogRegError::TooFewClasses(1));
    let mut x_bad = x.clone();
    x_bad[2 * d + 4] = f32::NAN;
    x_bad[7 * d] = f32::INFINITY;
    assert!(matches!(
        err(&x_bad, &y, d, k, &opts),
        LogRegError::NonFiniteFeature {
            sample: 2,
            feature: 4,
            ..
        }
    ));
    for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let o = FitOptions {
            c,
            ..FitOptions::default()
        };
        assert!(matches!(err(&x, &y, d, k, &o), LogRegError::InvalidC(_)));
    }
    let o = FitOptions {
        tol: -1.0,
        ..FitOptions::default()
    };
    assert_eq!(err(&x, &y, d, k, &o), LogRegError::InvalidTol(-1.0));
    let o = FitOptions {
        max_iter: 0,
        ..FitOptions::default()
    };
    assert_eq!(err(&x, &y, d, k, &o), LogRegError::InvalidMaxIter);
    let o = FitOptions {
        n_threads: Some(0),
        ..FitOptions::default()
    };
    assert!(matches!(err(&x, &y, d, k, &o), LogRegError::ThreadPool(_)));

    // messages are lowercase
    let msg = LogRegError::EmptyClass { class: 2 }.to_string();
    assert!(msg.starts_with("class 2 has no training sample"), "{msg}");

    // prediction input
    let m = fit(&Samples::new(&x, &y, d), k, &opts).unwrap();
    assert!(matches!(
        m.predict(&x[1..]),
        Err(LogRegError::ShapeMismatch { .. })
    ));
    assert!(matches!(m.predict(&[]), Err(LogRegError::EmptyData(_))));
    assert!(matches!(
        m.accuracy(&x, &y[1..]),
        Err(LogRegError::ShapeMismatch { .. })
    ));
    let mut broken = m.clone();
    broken.coef.pop();
    assert!(matches!(
        broken.predict(&x),
        Err(LogRegError::ShapeMismatch {
            what: "model coef",
            ..
        })
    ));
    let mut x_nan = x[..d].to_vec();
    x_nan[0] = f32::NAN;
    assert!(matches!(
        m.predict(&x_nan),
        Err(LogRegError::NonFiniteFeature { .. })
    ));

    // grid input
    let train = Samples::new(&x, &y, d);
    let g = GridOptions {
        cs: vec![],
        ..GridOptions::default()
    };
    assert!(matches!(
        grid_search(&train, &train, k, &g),
        Err(LogRegError::EmptyGrid(_))
    ));
    let val = Samples::new(&x[..2 * d], &y[..4], d);
    assert!(matches!(
        grid_search(&train, &val, k, &GridOptions::default()),
        Err(LogRegError::ShapeMismatch { .. })
    ));
}

#[test]
fn iteration_limit_is_flagged_as_not_converged() {
    let (x, y) = pool5_like(200, 300, 5, 1);
    let train = Samples::new(&x, &y, 300);
    for solver in [Solver::Lbfgs, Solver::NewtonCg] {
        let opts = FitOptions {
            c: 100.0,
            solver,
            max_iter: 2,
            tol: 1e-10,
            ..FitOptions::default()
        };
        let mut calls = Vec::new();
        let m = fit_with_progress(&train, 5, &opts, &mut |p| calls.push(p.iteration)).unwrap();
        assert!(!m.converged, "{solver}");
        assert_eq!(m.stop, StopReason::MaxIter);
        assert_eq!(m.n_iter, 2);
        assert_eq!(
            calls,
            vec![1, 2],
            "{solver}: one progress call per iteration"
        );
    }
}

#[test]
fn solvers_agree_and_results_are_deterministic() {
    let (n, d, k) = (150, 64, 4);
    let (x, y) = pool5_like(n, d, k, 5);
    let train = Samples::new(&x, &y, d);
    let run = |solver, threads| {
        fit(
            &train,
            k,
            &FitOptions {
                c: 0.5,
                solver,
                tol: 1e-8,
                max_iter: 5000,
                n_threads: Some(threads),
                ..FitOptions::default()
            },
        )
        .unwrap()
    };
    let a = run(Solver::Lbfgs, 2);
    let b = run(Solver::NewtonCg, 2);
    assert!(
        a.converged && b.converged,
        "{:?} {} {:?} {}",
        a.stop,
        a.grad_max_abs,
        b.stop,
        b.grad_max_abs
    );
    let num: f64 = a
        .coef
        .iter()
        .zip(&b.coef)
        .map(|(p, q)| (p - q).powi(2))
        .sum();
    let den: f64 = b.coef.iter().map(|q| q * q).sum();
    assert!(
        (num / den).sqrt() < 1e-4,
        "lbfgs vs newton-cg: {}",
        (num / den).sqrt()
    );
    for solver in [Solver::Lbfgs, Solver::NewtonCg] {
        let r1 = run(solver, 2);
        let r2 = run(solver, 2);
        assert_eq!(r1.coef, r2.coef);
        assert_eq!(r1.intercept, r2.intercept);
        assert_eq!(r1.n_iter, r2.n_iter);
        // float64 products do not depend on the thread count at all
        let r3 = run(solver, 1);
        let r4 = run(solver, 3);
        assert_eq!(r1.coef, r3.coef);
        assert_eq!(r1.coef, r4.coef);
        assert_eq!(r1.intercept, r4.intercept);
    }
}

#[test]
fn grid_search_reports_every_candidate_and_first_best() {
    let (x, y, d) = blobs();
    let train = Samples::new(&x[..90 * d], &y[..90], d);
    let val = Samples::new(&x[90 * d..], &y[90..], d);
    let mut seen = Vec::new();
    let r = logreg::grid_search_with_progress(&train, &val, 3, &GridOptions::default(), &mut |p| {
        seen.push(p.candidate)
    })
    .unwrap();
    let order: Vec<(f64, Solver)> = r.rows.iter().map(|row| (row.c, row.solver)).collect();
    assert_eq!(
        order,
        vec![
            (0.1, Solver::NewtonCg),
            (0.1, Solver::Lbfgs),
            (1.0, Solver::NewtonCg),
            (1.0, Solver::Lbfgs),
            (10.0, Solver::NewtonCg),
            (10.0, Solver::Lbfgs),
        ]
    );
    // every candidate separates the blobs: the first one wins the tie
    assert!(r.rows.iter().all(|row| row.val_acc == 1.0 && row.converged));
    assert_eq!(r.best, 0);
    assert_eq!(r.best_row().solver, Solver::NewtonCg);
    assert_eq!(r.models.len(), 6);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]) && seen.contains(&5));
    // serde names
    let json = serde_json::to_string(&r.rows[0]).unwrap();
    assert!(json.contains("\"solver\":\"newton-cg\""), "{json}");
    assert!(json.contains("\"stop\":\"gradient_tol\""), "{json}");
    assert_eq!(serde_json::to_string(&Solver::Lbfgs).unwrap(), "\"lbfgs\"");
}

#[test]
fn synthetic_split_extends_the_training_sample() {
    use logreg::synthetic::pool5_like_split;
    let (n, n_val, d, k) = (40, 25, 9, 4);
    let ((x, y), (xv, yv)) = pool5_like_split(n, n_val, d, k, 6);
    assert_eq!((x, y), pool5_like(n, d, k, 6));
    assert_eq!((xv.len(), yv.len()), (n_val * d, n_val));
    assert!(yv.iter().all(|&c| c < k));
    assert!(xv.iter().all(|v| v.is_finite() && *v >= 0.0));
}
