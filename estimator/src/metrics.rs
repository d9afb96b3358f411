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

/// Expected calibration error: the item-weighted mean |observed rate − mean μ| over `bins`
/// equal-width bins of μ.
pub fn ece(outcomes: &[f64], probs: &[f64], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut sum = vec![(0.0, 0.0, 0usize); bins];
    for (y, p) in outcomes.iter().zip(probs) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        sum[b].0 += y;
        sum[b].1 += p;
        sum[b].2 += 1;
    }
    let n = outcomes.len().max(1) as f64;
    sum.iter().filter(|b| b.2 > 0).map(|&(y, p, _)| (y - p).abs() / n).sum::<f64>()
}

/// Interval coverage of σ: items are binned by μ (`bins` equal-width bins); a bin is covered when
/// its observed rate lies within mean μ ± (mean σ + √(μ(1−μ)/n), the sampling noise of n items).
/// Returns the share of items in covered bins (1.0 = σ never too narrow; low = overconfident).
pub fn coverage(outcomes: &[f64], probs: &[f64], sigmas: &[f64], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut sum = vec![(0.0, 0.0, 0.0, 0usize); bins];
    for ((y, p), s) in outcomes.iter().zip(probs).zip(sigmas) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        sum[b].0 += y;
        sum[b].1 += p;
        sum[b].2 += s;
        sum[b].3 += 1;
    }
    let mut covered = 0usize;
    for &(y, p, s, k) in sum.iter().filter(|b| b.3 > 0) {
        let kf = k as f64;
        let (rate, mu, sigma) = (y / kf, p / kf, s / kf);
        let noise = (mu * (1.0 - mu) / kf).sqrt();
        if (rate - mu).abs() <= sigma + noise {
            covered += k;
        }
    }
    covered as f64 / outcomes.len().max(1) as f64
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

    #[test]
    fn calibration_metrics() {
        // Perfectly calibrated bins: ECE 0, covered.
        let y = [1.0, 0.0, 1.0, 0.0];
        let p = [0.5; 4];
        assert!(ece(&y, &p, 10) < 1e-12);
        assert_eq!(coverage(&y, &p, &[0.0; 4], 10), 1.0);
        // Overconfident: predicts 0.9, observes 0.
        let y = [0.0; 100];
        let p = [0.9; 100];
        assert!((ece(&y, &p, 10) - 0.9).abs() < 1e-9);
        assert_eq!(coverage(&y, &p, &[0.05; 100], 10), 0.0);
        assert_eq!(coverage(&y, &p, &[0.95; 100], 10), 1.0);
    }
}
