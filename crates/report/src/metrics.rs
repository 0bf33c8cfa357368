//! Accuracy, confusion matrices and per-class precision / recall / F1.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub test_accuracy: f64,
    pub correct: usize,
    pub total: usize,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassScore>,
}

/// Metrics of predictions `pred` against `labels` over `classes`.
pub fn evaluate(labels: &[i64], pred: &[i64], classes: &[String]) -> Result<ModelMetrics, String> {
    if labels.len() != pred.len() {
        return Err(format!(
            "{} labels but {} predictions",
            labels.len(),
            pred.len()
        ));
    }
    let k = classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in labels.iter().zip(pred) {
        let (t, p) = (t as usize, p as usize);
        if t >= k || p >= k {
            return Err(format!(
                "class index out of range ({t} or {p} >= {k} classes)"
            ));
        }
        confusion[t][p] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let total = labels.len();
    let per_class = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let precision = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassScore {
                class: classes[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    Ok(ModelMetrics {
        test_accuracy: if total > 0 {
            correct as f64 / total as f64
        } else {
            0.0
        },
        correct,
        total,
        confusion,
        per_class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_scores() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = evaluate(&[0, 0, 1, 1, 2, 2], &[0, 1, 1, 1, 2, 0], &classes).unwrap();
        assert_eq!(m.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]]);
        assert_eq!((m.correct, m.total), (4, 6));
        // Class b: precision 2/3, recall 1, F1 0.8 (hand-computed).
        assert!((m.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.per_class[1].recall - 1.0).abs() < 1e-12);
        assert!((m.per_class[1].f1 - 0.8).abs() < 1e-12);
        assert!(evaluate(&[0], &[3], &classes).is_err());
    }
}
