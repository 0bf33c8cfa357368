//! The fitter through linfa's traits: the same models as the native API, predictions via
//! linfa's `Predict`, sample weights, and errors (not panics) for bad datasets.
//!
//! `Predict::predict(&model, ..)` names linfa's trait: method syntax would find the
//! inherent `Model::predict` on slices.

use linfa::prelude::*;
use logreg::synthetic::{pool5_like, Rng};
use logreg::{fit, FitOptions, LogRegError, Model, Samples, Solver};
use ndarray::{Array1, Array2, ShapeBuilder};

/// Three well separated Gaussian blobs in 5 dimensions, 30 samples per class.
fn blobs() -> (Array2<f32>, Array1<usize>) {
    let (n, d) = (90, 5);
    let mut rng = Rng::new(7);
    let y: Array1<usize> = (0..n).map(|i| i % 3).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        let center = if j == y[i] { 6.0 } else { 0.0 };
        (center + rng.normal() * 0.5) as f32
    });
    (x, y)
}

fn pool5(n: usize, d: usize, k: usize, seed: u64) -> (Array2<f32>, Array1<usize>) {
    let (x, y) = pool5_like(n, d, k, seed);
    (Array2::from_shape_vec((n, d), x).unwrap(), Array1::from(y))
}

/// The model without its wall-clock time, for exact comparisons.
fn timeless(mut m: Model) -> Model {
    m.seconds = 0.0;
    m
}

#[test]
fn linfa_fit_is_the_native_fit() {
    let (n, d, k) = (150, 40, 4);
    let (x, y) = pool5(n, d, k, 5);
    let xs = x.as_slice().unwrap().to_vec();
    let ys = y.to_vec();
    for solver in [Solver::Lbfgs, Solver::NewtonCg] {
        let opts = FitOptions {
            c: 0.5,
            solver,
            ..FitOptions::default()
        };
        let native = timeless(fit(&Samples::new(&xs, &ys, d), k, &opts).unwrap());

        let data = Dataset::new(x.clone(), y.clone());
        let via_linfa = timeless(opts.fit(&data).unwrap());
        assert_eq!(via_linfa, native, "{solver}");

        // a borrowed view, column-major records (copied to row-major), and unit weights
        // all give the very same model
        let view = DatasetView::new(x.view(), y.view());
        assert_eq!(timeless(opts.fit(&view).unwrap()), native, "{solver} view");
        let mut col_major = Array2::zeros((n, d).f());
        col_major.assign(&x);
        assert!(col_major.as_slice().is_none());
        let data_f = Dataset::new(col_major, y.clone());
        assert_eq!(timeless(opts.fit(&data_f).unwrap()), native, "{solver} F");
        let ones = Dataset::new(x.clone(), y.clone()).with_weights(Array1::ones(n));
        assert_eq!(timeless(opts.fit(&ones).unwrap()), native, "{solver} ones");

        let pred: Array1<usize> = Predict::predict(&via_linfa, &x);
        assert_eq!(pred.to_vec(), native.predict(&xs).unwrap(), "{solver}");
        let pred_ds: Array1<usize> = Predict::predict(&via_linfa, &data);
        assert_eq!(pred_ds, pred);
    }
}

#[test]
fn separable_three_classes_are_all_predicted_right() {
    let (x, y) = blobs();
    let data = Dataset::new(x, y);
    let model = FitOptions::default().fit(&data).unwrap();
    assert!(model.converged, "{:?}", model.stop);
    let pred: Array1<usize> = Predict::predict(&model, data.records());
    assert_eq!(pred, data.targets);
    // and as a dataset, through linfa's metrics
    let pred_ds: Dataset<f32, usize, ndarray::Ix1> =
        Predict::predict(&model, data.records().clone());
    let cm = pred_ds.targets().confusion_matrix(&data).unwrap();
    assert_eq!(cm.accuracy(), 1.0);
}

#[test]
fn constant_sample_weights_act_as_c_times_the_weight() {
    // all weights 2 with C = 1 is exactly the unweighted fit with C = 2 (scikit-learn's
    // objective C Σ s_i loss_i + |W|²/2)
    let (n, d, k) = (120, 30, 3);
    let (x, y) = pool5(n, d, k, 9);
    let weighted = Dataset::new(x.clone(), y.clone()).with_weights(Array1::from_elem(n, 2.0));
    let m2 = FitOptions::default().fit(&weighted).unwrap();
    let plain = FitOptions {
        c: 2.0,
        ..FitOptions::default()
    }
    .fit(&Dataset::new(x, y))
    .unwrap();
    assert_eq!(m2.coef, plain.coef);
    assert_eq!(m2.intercept, plain.intercept);
    assert_eq!(m2.n_iter, plain.n_iter);
}

#[test]
fn integer_sample_weights_equal_repeated_samples() {
    // weight 2 on a sample is the sample twice, class weights included (they are computed
    // from weighted class counts)
    let (n, d, k) = (90, 12, 3);
    let (x, y) = pool5(n, d, k, 21);
    let w: Array1<f32> = (0..n).map(|i| if i % 3 == 0 { 2.0 } else { 1.0 }).collect();
    let opts = FitOptions {
        solver: Solver::NewtonCg,
        tol: 1e-9,
        ..FitOptions::default()
    };
    let weighted = opts
        .fit(&Dataset::new(x.clone(), y.clone()).with_weights(w.clone()))
        .unwrap();

    let rows: Vec<usize> = (0..n)
        .flat_map(|i| std::iter::repeat_n(i, w[i] as usize))
        .collect();
    let xr = x.select(ndarray::Axis(0), &rows);
    let yr = y.select(ndarray::Axis(0), &rows);
    let repeated = opts.fit(&Dataset::new(xr, yr)).unwrap();
    assert!(weighted.converged && repeated.converged);
    let scale = repeated.coef.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let both = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()))
    };
    let (dc, di) = (
        both(&weighted.coef, &repeated.coef),
        both(&weighted.intercept, &repeated.intercept),
    );
    assert!(
        dc <= 1e-6 * scale && di <= 1e-6,
        "{dc} {di} (scale {scale})"
    );
}

fn fit_err<D: ndarray::Data<Elem = f32>>(
    data: &DatasetBase<ndarray::ArrayBase<D, ndarray::Ix2>, Array1<usize>>,
) -> LogRegError {
    FitOptions::default()
        .fit(data)
        .expect_err("expected an error")
}

#[test]
fn bad_datasets_are_errors_not_panics() {
    let (x, y) = blobs();
    let n = y.len();

    // fewer targets than records
    let short = Dataset::new(x.clone(), y.slice(ndarray::s![..n - 1]).to_owned());
    assert_eq!(
        fit_err(&short),
        LogRegError::ShapeMismatch {
            what: "targets",
            expected: n,
            got: n - 1
        }
    );
    // no samples, no features
    let empty = Dataset::new(Array2::<f32>::zeros((0, 5)), Array1::<usize>::zeros(0));
    assert_eq!(fit_err(&empty), LogRegError::EmptyData("no samples"));
    let featureless = Dataset::new(Array2::<f32>::zeros((n, 0)), y.clone());
    assert_eq!(fit_err(&featureless), LogRegError::EmptyData("no features"));
    // a label far out of range: classes 3.. are missing (nothing of its size is allocated)
    let mut huge = y.clone();
    huge[4] = usize::MAX;
    assert_eq!(
        fit_err(&Dataset::new(x.clone(), huge)),
        LogRegError::EmptyClass { class: 3 }
    );
    // a class missing below the largest label
    let gap = y.mapv(|c| if c == 1 { 2 } else { c });
    assert_eq!(
        fit_err(&Dataset::new(x.clone(), gap)),
        LogRegError::EmptyClass { class: 1 }
    );
    // a single class
    let one = Dataset::new(x.clone(), Array1::<usize>::zeros(n));
    assert_eq!(fit_err(&one), LogRegError::TooFewClasses(1));
    // a non-finite feature
    let mut nan = x.clone();
    nan[[7, 2]] = f32::NAN;
    assert!(matches!(
        fit_err(&Dataset::new(nan, y.clone())),
        LogRegError::NonFiniteFeature {
            sample: 7,
            feature: 2,
            ..
        }
    ));
    // weights: wrong length, negative, NaN, a class weighing nothing
    let ds = |w: Array1<f32>| Dataset::new(x.clone(), y.clone()).with_weights(w);
    assert_eq!(
        fit_err(&ds(Array1::ones(n + 1))),
        LogRegError::ShapeMismatch {
            what: "sample_weight",
            expected: n,
            got: n + 1
        }
    );
    let mut neg = Array1::ones(n);
    neg[3] = -1.0;
    assert_eq!(
        fit_err(&ds(neg)),
        LogRegError::InvalidSampleWeight {
            sample: 3,
            value: -1.0
        }
    );
    let mut w_nan = Array1::ones(n);
    w_nan[5] = f32::NAN;
    assert!(matches!(
        fit_err(&ds(w_nan)),
        LogRegError::InvalidSampleWeight { sample: 5, .. }
    ));
    let zero_class: Array1<f32> = y.mapv(|c| if c == 2 { 0.0 } else { 1.0 });
    assert_eq!(
        fit_err(&ds(zero_class)),
        LogRegError::ZeroClassWeight { class: 2 }
    );
    // bad options
    let bad_c = FitOptions {
        c: -1.0,
        ..FitOptions::default()
    };
    assert_eq!(
        bad_c.fit(&Dataset::new(x, y)).unwrap_err(),
        LogRegError::InvalidC(-1.0)
    );
    // linfa's errors convert
    let e: LogRegError = linfa::Error::NotEnoughSamples.into();
    assert_eq!(e.to_string(), "linfa: not enough samples");
}

#[test]
fn predicting_empty_records_gives_no_labels() {
    let (x, y) = blobs();
    let model = FitOptions::default().fit(&Dataset::new(x, y)).unwrap();
    let pred: Array1<usize> = Predict::predict(&model, &Array2::<f32>::zeros((0, 5)));
    assert!(pred.is_empty());
}

#[test]
#[should_panic(expected = "feature count mismatch: model has 5 features, input has 4")]
fn predicting_with_another_feature_count_panics_with_the_reason() {
    let (x, y) = blobs();
    let model = FitOptions::default().fit(&Dataset::new(x, y)).unwrap();
    let _: Array1<usize> = Predict::predict(&model, &Array2::<f32>::zeros((3, 4)));
}
