//! Estimator quality metrics.

/// ROC AUC of scores for binary labels (ties get half credit). `None` if one class is empty.
pub fn auc(labels: &[bool], scores: &[f64]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..labels.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|l| **l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Mean squared error of probabilities against outcomes in [0, 1].
pub fn brier(outcomes: &[f64], probs: &[f64]) -> f64 {
    outcomes.iter().zip(probs).map(|(y, p)| (p - y) * (p - y)).sum::<f64>() / outcomes.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_known_values() {
        assert_eq!(auc(&[false, true], &[0.1, 0.9]), Some(1.0));
        assert_eq!(auc(&[false, true], &[0.9, 0.1]), Some(0.0));
        assert_eq!(auc(&[false, true, false, true], &[0.5; 4]), Some(0.5));
        assert_eq!(auc(&[true, true], &[0.1, 0.2]), None);
        assert!((brier(&[1.0, 0.0], &[0.5, 0.5]) - 0.25).abs() < 1e-12);
    }
}
