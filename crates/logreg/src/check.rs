//! Input checks shared by fitting, grid search and prediction.

use crate::error::LogRegError;

pub(crate) fn check_features(x: &[f32], n: usize, d: usize) -> Result<(), LogRegError> {
    if n == 0 {
        return Err(LogRegError::EmptyData("no samples"));
    }
    if d == 0 {
        return Err(LogRegError::EmptyData("no features"));
    }
    let expected = n.checked_mul(d).ok_or(LogRegError::ShapeMismatch {
        what: "x",
        expected: usize::MAX,
        got: x.len(),
    })?;
    if x.len() != expected {
        return Err(LogRegError::ShapeMismatch {
            what: "x",
            expected,
            got: x.len(),
        });
    }
    use rayon::prelude::*;
    // first non-finite value in row-major order, independent of the thread count
    let bad = x
        .par_chunks(d)
        .enumerate()
        .find_first(|(_, row)| row.iter().any(|v| !v.is_finite()));
    if let Some((i, row)) = bad {
        let j = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(LogRegError::NonFiniteFeature {
            sample: i,
            feature: j,
            value: row[j],
        });
    }
    Ok(())
}

pub(crate) fn check_labels(
    y: &[usize],
    n_classes: usize,
    balanced: bool,
) -> Result<(), LogRegError> {
    if n_classes < 2 {
        return Err(LogRegError::TooFewClasses(n_classes));
    }
    let mut counts = vec![0usize; n_classes];
    for (i, &c) in y.iter().enumerate() {
        if c >= n_classes {
            return Err(LogRegError::LabelOutOfRange {
                sample: i,
                label: c,
                n_classes,
            });
        }
        counts[c] += 1;
    }
    if balanced {
        if let Some(c) = counts.iter().position(|&n| n == 0) {
            return Err(LogRegError::EmptyClass { class: c });
        }
    }
    Ok(())
}

/// Checks optional sample weights against labels already checked by [`check_labels`].
pub(crate) fn check_sample_weight(
    sample_weight: Option<&[f64]>,
    y: &[usize],
    n_classes: usize,
) -> Result<(), LogRegError> {
    let Some(w) = sample_weight else {
        return Ok(());
    };
    if w.len() != y.len() {
        return Err(LogRegError::ShapeMismatch {
            what: "sample_weight",
            expected: y.len(),
            got: w.len(),
        });
    }
    let mut class_total = vec![0.0f64; n_classes];
    let mut total = 0.0f64;
    for (i, (&c, &v)) in y.iter().zip(w).enumerate() {
        total += v;
        if !(v >= 0.0 && v.is_finite() && total.is_finite()) {
            return Err(LogRegError::InvalidSampleWeight {
                sample: i,
                value: v,
            });
        }
        class_total[c] += v;
    }
    if let Some(c) = class_total.iter().position(|&t| t == 0.0) {
        return Err(LogRegError::ZeroClassWeight { class: c });
    }
    Ok(())
}
