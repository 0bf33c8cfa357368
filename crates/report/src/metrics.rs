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

/// Mean and sample standard deviation (n - 1; 0 for a single value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

/// The difference of two samples' means (`a - b`) and Welch's t statistic: the difference
/// over its standard error `sqrt(sa^2/na + sb^2/nb)` (sample standard deviations). `None`
/// for the statistic when a sample has fewer than two values or both have no spread.
pub fn welch(a: &[f64], b: &[f64]) -> (f64, Option<f64>) {
    let (ma, sa) = mean_std(a);
    let (mb, sb) = mean_std(b);
    let d = ma - mb;
    if a.len() < 2 || b.len() < 2 {
        return (d, None);
    }
    let se = (sa * sa / a.len() as f64 + sb * sb / b.len() as f64).sqrt();
    (d, (se > 0.0).then(|| d / se))
}

/// The off-diagonal cells of a confusion matrix with the most images, largest first:
/// `(true class, predicted class, count)`.
pub fn confused_pairs(confusion: &[Vec<usize>], top: usize) -> Vec<(usize, usize, usize)> {
    let mut v: Vec<(usize, usize, usize)> = confusion
        .iter()
        .enumerate()
        .flat_map(|(t, row)| {
            row.iter()
                .enumerate()
                .filter(move |(p, &c)| *p != t && c > 0)
                .map(move |(p, &c)| (t, p, c))
        })
        .collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    v.truncate(top);
    v
}

#[cfg(test)]
mod spread_tests {
    #[test]
    fn mean_std_and_pairs() {
        // numpy: np.mean([0.7, 0.72, 0.74]) = 0.72, np.std(..., ddof=1) = 0.02
        let (m, s) = super::mean_std(&[0.7, 0.72, 0.74]);
        assert!((m - 0.72).abs() < 1e-12 && (s - 0.02).abs() < 1e-12);
        assert_eq!(super::mean_std(&[0.5]), (0.5, 0.0));
        let c = vec![vec![5, 2, 0], vec![3, 4, 1], vec![0, 0, 9]];
        assert_eq!(super::confused_pairs(&c, 2), [(1, 0, 3), (0, 1, 2)]);
    }

    #[test]
    fn welch_matches_scipy() {
        // scipy 1.x: stats.ttest_ind([0.7, 0.72, 0.74, 0.69], [0.75, 0.73, 0.78],
        // equal_var=False).statistic = -2.234207687679006
        let (d, t) = super::welch(&[0.7, 0.72, 0.74, 0.69], &[0.75, 0.73, 0.78]);
        assert!((d - (0.7125 - 2.26 / 3.0)).abs() < 1e-12, "{d}");
        assert!((t.unwrap() - -2.234207687679006).abs() < 1e-9, "{t:?}");
        // No spread on either side (a deterministic model), or one value: no statistic.
        assert_eq!(super::welch(&[0.5, 0.5], &[0.6, 0.6]).1, None);
        assert_eq!(super::welch(&[0.5], &[0.6, 0.7]).1, None);
    }
}
