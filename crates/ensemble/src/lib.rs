//! An ensemble of the two feature classifiers: the class probabilities of the dense head
//! (`head-nn`) and of the logistic regression (`logreg`) averaged with a weight `w` on the
//! head, `p = w * p_head + (1 - w) * p_logreg`, `w` chosen on the validation split from a grid.
//!
//! The choice: the highest validation accuracy; among equals, the lowest validation
//! cross-entropy; among those, the first in the grid. The evaluation split is scored once,
//! with the chosen weight.

mod predictor;
mod stage;

pub use predictor::EnsemblePredictor;
pub use stage::{Ensemble, CACHE_VERSION};

use serde::{Deserialize, Serialize};

/// Probabilities this small count as this small in the cross-entropy (scikit-learn's
/// `log_loss` clips the same way), so that a confident mistake costs a finite amount.
const MIN_PROBABILITY: f64 = 1e-15;

/// The stage's params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Candidate weights of the head's probabilities, each in [0, 1] (1: the head alone,
    /// 0: the logistic regression alone).
    pub head_weights: Vec<f64>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            head_weights: (0..=10).map(|i| i as f64 / 10.0).collect(),
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), String> {
        if self.head_weights.is_empty() {
            return Err("head_weights needs at least one weight".into());
        }
        if let Some(w) = self
            .head_weights
            .iter()
            .find(|w| !(w.is_finite() && (0.0..=1.0).contains(*w)))
        {
            return Err(format!("head weight {w} is not in [0, 1]"));
        }
        Ok(())
    }
}

/// One grid entry scored on the validation split (the contract's type: the grid is stored in
/// the predictions' metadata).
pub use contracts::BlendCandidate as Candidate;

/// `w * head + (1 - w) * logreg`, row-major `n x k` both; every value must be finite.
pub fn blend(head: &[f32], logreg: &[f32], w: f64) -> Result<Vec<f32>, String> {
    if head.len() != logreg.len() {
        return Err(format!(
            "the head gives {} probabilities, the logistic regression {}",
            head.len(),
            logreg.len()
        ));
    }
    head.iter()
        .zip(logreg)
        .map(|(&h, &l)| {
            if !(h.is_finite() && l.is_finite()) {
                return Err(format!(
                    "a non-finite probability (head {h}, logistic regression {l})"
                ));
            }
            Ok((w * h as f64 + (1.0 - w) * l as f64) as f32)
        })
        .collect()
}

/// The most probable class of each row of `probs` (`n x k`), the first one on ties.
pub fn argmax_rows(probs: &[f32], k: usize) -> Vec<usize> {
    probs
        .chunks_exact(k.max(1))
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// Correct count and mean cross-entropy of probabilities `probs` (`n x k`) for `labels`.
pub fn score(probs: &[f32], k: usize, labels: &[usize]) -> Result<(usize, f64), String> {
    if k == 0 || probs.len() != labels.len() * k {
        return Err(format!(
            "{} probabilities are not {} rows of {k} classes",
            probs.len(),
            labels.len()
        ));
    }
    let pred = argmax_rows(probs, k);
    let mut loss = 0.0;
    for (row, &y) in probs.chunks_exact(k).zip(labels) {
        let p = *row
            .get(y)
            .ok_or_else(|| format!("label {y} is not one of the {k} classes"))?;
        if !p.is_finite() {
            return Err(format!("a non-finite probability ({p})"));
        }
        loss -= (p as f64).max(MIN_PROBABILITY).ln();
    }
    let correct = pred.iter().zip(labels).filter(|(a, b)| a == b).count();
    Ok((correct, loss / labels.len().max(1) as f64))
}

/// Scores every weight of `weights` on validation probabilities of the head and the logistic
/// regression and returns the chosen entry's position and the scored grid (see the crate
/// docs for the rule).
pub fn choose(
    head: &[f32],
    logreg: &[f32],
    k: usize,
    labels: &[usize],
    weights: &[f64],
) -> Result<(usize, Vec<Candidate>), String> {
    if labels.is_empty() {
        return Err("the validation split is empty: nothing to choose the weight on".into());
    }
    let mut grid = Vec::with_capacity(weights.len());
    for &w in weights {
        let (correct, loss) = score(&blend(head, logreg, w)?, k, labels)?;
        grid.push(Candidate {
            head_weight: w,
            val_accuracy: correct as f64 / labels.len() as f64,
            val_correct: correct,
            val_loss: loss,
        });
    }
    let best = (0..grid.len())
        .reduce(|b, i| {
            let (x, y) = (&grid[i], &grid[b]);
            if x.val_correct > y.val_correct
                || (x.val_correct == y.val_correct && x.val_loss < y.val_loss)
            {
                i
            } else {
                b
            }
        })
        .ok_or("head_weights is empty")?;
    Ok((best, grid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_is_the_weighted_average_and_its_ends_are_the_models() {
        let h = [0.7f32, 0.3, 0.2, 0.8];
        let l = [0.1f32, 0.9, 0.6, 0.4];
        assert_eq!(blend(&h, &l, 1.0).unwrap(), h);
        assert_eq!(blend(&h, &l, 0.0).unwrap(), l);
        let m = blend(&h, &l, 0.25).unwrap();
        for ((m, h), l) in m.iter().zip(h).zip(l) {
            assert!((m - (0.25 * h + 0.75 * l)).abs() < 1e-7);
        }
        assert!(blend(&h, &l[..2], 0.5).is_err());
        let e = blend(&[f32::NAN, 1.0], &[0.5, 0.5], 0.5).unwrap_err();
        assert!(e.contains("non-finite"), "{e}");
    }

    #[test]
    fn score_counts_and_averages_the_cross_entropy() {
        // Rows: [0.9 0.1] label 0, [0.4 0.6] label 0, [0.5 0.5] label 1 (a tie goes to 0).
        let p = [0.9f32, 0.1, 0.4, 0.6, 0.5, 0.5];
        let (c, loss) = score(&p, 2, &[0, 0, 1]).unwrap();
        assert_eq!(c, 1);
        let want = -((0.9f32 as f64).ln() + (0.4f32 as f64).ln() + (0.5f64).ln()) / 3.0;
        assert!((loss - want).abs() < 1e-12);
        // A probability of 0 for the label costs -ln(1e-15), not infinity.
        let (_, loss) = score(&[1.0, 0.0], 2, &[1]).unwrap();
        assert!((loss - 1e-15f64.ln().abs()).abs() < 1e-9);
        assert!(score(&p, 2, &[0, 0]).is_err());
        assert!(score(&p, 2, &[0, 0, 2]).is_err());
    }

    #[test]
    fn the_choice_takes_accuracy_then_loss_then_grid_order() {
        // Two rows, two classes. The head is right on row 0, the logistic regression on
        // row 1; together (w = 0.5) both rows are right.
        let head = [0.9f32, 0.1, 0.6, 0.4];
        let logreg = [0.45f32, 0.55, 0.0, 1.0];
        let labels = [0, 1];
        let (best, grid) = choose(&head, &logreg, 2, &labels, &[0.0, 0.5, 1.0]).unwrap();
        assert_eq!(
            grid.iter().map(|c| c.val_correct).collect::<Vec<_>>(),
            [1, 2, 1]
        );
        assert_eq!(best, 1);
        // Equal accuracy: the lower loss wins, wherever it is in the grid.
        let (best, grid) = choose(&head, &logreg, 2, &labels, &[0.0, 1.0]).unwrap();
        assert_eq!(grid[0].val_correct, grid[1].val_correct);
        assert_eq!(best, usize::from(grid[1].val_loss < grid[0].val_loss));
        // Equal everything: the first.
        let (best, _) = choose(&head, &head, 2, &labels, &[0.2, 0.8]).unwrap();
        assert_eq!(best, 0);
        assert!(choose(&head, &logreg, 2, &[], &[0.5]).is_err());
    }

    #[test]
    fn params_refuse_weights_outside_the_unit_interval() {
        assert!(Params::default().validate().is_ok());
        assert_eq!(Params::default().head_weights.len(), 11);
        for bad in [vec![], vec![1.5], vec![-0.1], vec![f64::NAN]] {
            assert!(Params { head_weights: bad }.validate().is_err());
        }
    }
}
