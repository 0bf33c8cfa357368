//! The fitter as a [linfa](https://docs.rs/linfa) algorithm.
//!
//! * [`FitOptions`] implements [`Fit`]: `opts.fit(&dataset)` fits on a linfa
//!   [`DatasetBase`] of `f32` records (`n x d`, any ndarray storage and layout) and `usize`
//!   class targets, and returns our [`Model`]. The number of classes is the largest label
//!   plus one, and every class in between must occur (class weights are balanced). The
//!   dataset's per-sample [`DatasetBase::weights`], when present, are used as
//!   [`Samples::sample_weight`]: multiplied into the balanced class weights, which are
//!   then computed from the weighted class counts, as scikit-learn's
//!   `fit(X, y, sample_weight)` does with `class_weight="balanced"`. All weights equal
//!   to one give exactly the unweighted fit.
//! * [`Model`] implements [`PredictInplace`] into `Array1<usize>`, so linfa's blanket
//!   [`Predict`] predicts records (`&ArrayBase`, or by value into a dataset) and datasets,
//!   and linfa's generic code (cross-validation, metrics) takes our models. Method syntax
//!   `model.predict(..)` finds the inherent [`Model::predict`] on row-major slices first,
//!   so name the trait: `Predict::predict(&model, &records)`.
//!
//! The fit is exactly [`crate::fit`]: records in standard (row-major) layout are used in
//! place, others are copied once into row-major order; the results are identical.
//! Validation errors are returned as [`LogRegError`], never panics; linfa's own errors
//! convert into [`LogRegError::Linfa`].
//!
//! [`PredictInplace`] cannot return an error, so prediction panics on input a
//! [`Model::predict`] would reject (another feature count, NaN or infinite features), as
//! linfa's models do; call [`Model::predict`] on the row-major slice to get a `Result`.
//!
//! ```
//! use linfa::prelude::*;
//! use logreg::FitOptions;
//! use ndarray::{array, Array1};
//!
//! let x = array![[0.0f32, 0.0], [0.1, 0.2], [5.0, 0.0], [5.2, 0.1], [0.0, 5.0], [0.2, 5.1]];
//! let y: Array1<usize> = array![0, 0, 1, 1, 2, 2];
//! let data = Dataset::new(x, y);
//! let model = FitOptions { c: 10.0, ..FitOptions::default() }.fit(&data).unwrap();
//! let pred: Array1<usize> = Predict::predict(&model, data.records());
//! assert_eq!(pred, data.targets);
//! // the inherent method on the row-major slice returns a `Result` instead
//! assert_eq!(model.predict(data.records().as_slice().unwrap()).unwrap(), pred.to_vec());
//! ```

use std::borrow::Cow;

use linfa::dataset::{AsSingleTargets, DatasetBase};
#[cfg(doc)]
use linfa::traits::Predict;
use linfa::traits::{Fit, PredictInplace};
use ndarray::{Array1, ArrayBase, Data, Ix2};

use crate::error::LogRegError;
use crate::fit::{fit, FitOptions, Samples};
use crate::model::Model;

impl From<linfa::Error> for LogRegError {
    fn from(e: linfa::Error) -> Self {
        LogRegError::Linfa(e.to_string())
    }
}

/// The elements of a 2-d array in row-major order, borrowed when already contiguous.
fn row_major<D: Data<Elem = f32>>(a: &ArrayBase<D, Ix2>) -> Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// Number of classes implied by the labels: the largest plus one. Every class below it
/// must occur, so a label of at least `y.len()` means a missing class, reported as such
/// (without allocating per-class storage for a huge label).
fn n_classes_of(y: &[usize]) -> Result<usize, LogRegError> {
    let Some(&max) = y.iter().max() else {
        return Ok(0);
    };
    if max >= y.len() {
        let mut labels = y.to_vec();
        labels.sort_unstable();
        labels.dedup();
        // labels has fewer than max + 1 distinct values, so a gap exists below max
        let missing = labels
            .iter()
            .enumerate()
            .find(|&(i, &l)| i != l)
            .map_or(labels.len(), |(i, _)| i);
        return Err(LogRegError::EmptyClass { class: missing });
    }
    Ok(max + 1)
}

/// Fits [`crate::fit`] with these options on a linfa dataset (see the [module
/// docs](self)).
impl<D, T> Fit<ArrayBase<D, Ix2>, T, LogRegError> for FitOptions
where
    D: Data<Elem = f32>,
    T: AsSingleTargets<Elem = usize>,
{
    type Object = Model;

    fn fit(&self, dataset: &DatasetBase<ArrayBase<D, Ix2>, T>) -> Result<Model, LogRegError> {
        let records = &dataset.records;
        let (n, d) = records.dim();
        let targets = dataset.targets.as_single_targets();
        if targets.len() != n {
            return Err(LogRegError::ShapeMismatch {
                what: "targets",
                expected: n,
                got: targets.len(),
            });
        }
        let y: Vec<usize> = targets.iter().copied().collect();
        let weights: Option<Vec<f64>> = dataset
            .weights()
            .map(|w| w.iter().map(|&v| f64::from(v)).collect());
        let x = row_major(records);
        let mut train = Samples::new(&x, &y, d);
        if let Some(w) = &weights {
            train = train.with_sample_weight(w);
        }
        let n_classes = n_classes_of(&y)?;
        fit(&train, n_classes, self)
    }
}

/// Most probable class per row, as [`Model::predict`].
///
/// # Panics
///
/// If `x` does not have [`Model::n_features`] columns, holds a NaN or infinite value, or
/// `y` does not have one element per row of `x`.
impl<D> PredictInplace<ArrayBase<D, Ix2>, Array1<usize>> for Model
where
    D: Data<Elem = f32>,
{
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<usize>) {
        assert_eq!(
            x.nrows(),
            y.len(),
            "logreg: {} rows to predict but {} targets to write",
            x.nrows(),
            y.len()
        );
        assert_eq!(
            x.ncols(),
            self.n_features,
            "logreg: {}",
            LogRegError::FeatureCountMismatch {
                expected: self.n_features,
                got: x.ncols(),
            }
        );
        if x.nrows() == 0 {
            return;
        }
        match self.predict(&row_major(x)) {
            Ok(pred) => y.iter_mut().zip(pred).for_each(|(o, p)| *o = p),
            Err(e) => panic!("logreg: {e}"),
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<usize> {
        Array1::zeros(x.nrows())
    }
}
