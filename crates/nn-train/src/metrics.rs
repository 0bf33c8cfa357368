//! Softmax probabilities, predictions, categorical cross-entropy and accuracy from logits.

use crate::{Error, Result};

/// Class predictions and softmax probabilities of a set of rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Number of classes (columns of `probabilities`).
    pub n_classes: usize,
    /// Most probable class of each row (the first one on ties).
    pub predictions: Vec<u32>,
    /// Row-major N x `n_classes` softmax probabilities.
    pub probabilities: Vec<f32>,
}

/// A [`Prediction`] scored against labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean categorical cross-entropy (natural log).
    pub loss: f64,
    /// Fraction of rows whose prediction equals the label.
    pub accuracy: f64,
    /// Predictions and probabilities.
    pub prediction: Prediction,
}

/// Turns row-major N x `n_classes` logits into predictions and probabilities, and, given labels,
/// into the summed cross-entropy (computed in f64) and the number of correct rows.
pub fn softmax_metrics(
    logits: &[f32],
    n_classes: usize,
    labels: Option<&[u32]>,
) -> Result<(Prediction, Option<(f64, usize)>)> {
    if n_classes == 0 || !logits.len().is_multiple_of(n_classes) {
        return Err(Error::Invalid(format!(
            "{} logits do not split into rows of {n_classes}",
            logits.len()
        )));
    }
    let n = logits.len() / n_classes;
    if let Some(y) = labels {
        if y.len() != n {
            return Err(Error::Invalid(format!("{} labels for {n} rows", y.len())));
        }
        if let Some(&bad) = y.iter().find(|&&c| c as usize >= n_classes) {
            return Err(Error::Invalid(format!(
                "label {bad} >= {n_classes} classes"
            )));
        }
    }
    let mut predictions = Vec::with_capacity(n);
    let mut probabilities = Vec::with_capacity(logits.len());
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (i, row) in logits.chunks_exact(n_classes).enumerate() {
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        let max = row[best] as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        probabilities.extend(row.iter().map(|&v| ((v as f64 - max).exp() / sum) as f32));
        predictions.push(best as u32);
        if let Some(y) = labels {
            let c = y[i] as usize;
            loss += sum.ln() - (row[c] as f64 - max);
            correct += usize::from(best == c);
        }
    }
    let scored = labels.map(|_| (loss, correct));
    Ok((
        Prediction {
            n_classes,
            predictions,
            probabilities,
        },
        scored,
    ))
}

impl Evaluation {
    /// Scores logits against labels.
    pub fn from_logits(logits: &[f32], n_classes: usize, labels: &[u32]) -> Result<Self> {
        let (prediction, scored) = softmax_metrics(logits, n_classes, Some(labels))?;
        let (loss, correct) = scored.unwrap_or_default();
        let n = labels.len().max(1) as f64;
        Ok(Evaluation {
            loss: loss / n,
            accuracy: correct as f64 / n,
            prediction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits() {
        let e = Evaluation::from_logits(&[0.0, 0.0, 1.0, 3.0], 2, &[0, 1]).unwrap();
        assert_eq!(e.prediction.predictions, vec![0, 1]);
        let l1 = 2f64.ln();
        let l2 = (1.0 + (-2f64).exp()).ln();
        assert!((e.loss - (l1 + l2) / 2.0).abs() < 1e-12);
        assert_eq!(e.accuracy, 1.0);
        assert!((e.prediction.probabilities[0] - 0.5).abs() < 1e-7);
    }
}
