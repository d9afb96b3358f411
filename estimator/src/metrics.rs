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

/// How well σ describes the error of μ, seen through outcome rates: items are sorted by μ and
/// cut into `bins` equal-count bins; in bin b, z_b = (observed rate − mean μ) /
/// √(mean σ² + μ̄(1 − μ̄)/n_b) (the estimator's error plus the sampling noise of n_b outcomes).
/// If σ is right, z_b ~ N(0, 1): `coverage` (share of items in bins with |z_b| ≤ 1, i.e. the
/// rate inside μ ± σ widened by the noise) is ≈ 0.683 and `mean_z2` ≈ 1. Coverage near 1 with
/// mean_z2 ≪ 1 means σ is too wide; low coverage with mean_z2 ≫ 1 means too narrow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SigmaCheck {
    pub coverage: f64,
    pub mean_z2: f64,
}

/// Per-bin (observed rate, mean μ, mean σ², items), equal-count bins by μ.
fn mu_bins(outcomes: &[f64], probs: &[f64], sigmas: &[f64], bins: usize) -> Vec<(f64, f64, f64, usize)> {
    let mut idx: Vec<usize> = (0..outcomes.len()).collect();
    idx.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    let bins = bins.clamp(1, idx.len().max(1));
    let mut out = Vec::with_capacity(bins);
    for b in 0..bins {
        let lo = b * idx.len() / bins;
        let hi = (b + 1) * idx.len() / bins;
        if hi <= lo {
            continue;
        }
        let k = (hi - lo) as f64;
        let (mut y, mut p, mut s2) = (0.0, 0.0, 0.0);
        for &i in &idx[lo..hi] {
            y += outcomes[i];
            p += probs[i];
            s2 += sigmas[i] * sigmas[i];
        }
        out.push((y / k, p / k, s2 / k, hi - lo));
    }
    out
}

fn z2(rate: f64, mu: f64, s2: f64, k: usize, scale: f64) -> f64 {
    let var = scale * scale * s2 + mu * (1.0 - mu) / k as f64;
    (rate - mu).powi(2) / var.max(1e-12)
}

pub fn sigma_check(outcomes: &[f64], probs: &[f64], sigmas: &[f64], bins: usize) -> SigmaCheck {
    let b = mu_bins(outcomes, probs, sigmas, bins);
    let n = outcomes.len().max(1) as f64;
    let covered: usize = b.iter().filter(|&&(r, m, s2, k)| z2(r, m, s2, k, 1.0) <= 1.0).map(|x| x.3).sum();
    let mean_z2 = b.iter().map(|&(r, m, s2, k)| z2(r, m, s2, k, 1.0)).sum::<f64>() / b.len().max(1) as f64;
    SigmaCheck { coverage: covered as f64 / n, mean_z2 }
}

/// The factor s that makes σ' = s·σ calibrated on these (validation) items: mean z_b² = 1
/// (bisection; z² falls as s grows), clamped to [lo, hi]. When the sampling noise alone already
/// explains the bins' errors (mean z² ≤ 1 at s = 0), the answer is `lo`.
pub fn sigma_scale(outcomes: &[f64], probs: &[f64], sigmas: &[f64], bins: usize, lo: f64, hi: f64) -> f64 {
    let b = mu_bins(outcomes, probs, sigmas, bins);
    let f = |s: f64| b.iter().map(|&(r, m, s2, k)| z2(r, m, s2, k, s)).sum::<f64>() / b.len().max(1) as f64;
    if f(lo) <= 1.0 {
        return lo;
    }
    if f(hi) >= 1.0 {
        return hi;
    }
    let (mut a, mut c) = (lo, hi);
    for _ in 0..60 {
        let mid = 0.5 * (a + c);
        if f(mid) > 1.0 {
            a = mid;
        } else {
            c = mid;
        }
    }
    0.5 * (a + c)
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
        assert_eq!(sigma_check(&y, &p, &[0.0; 4], 1).coverage, 1.0);
        // Overconfident: predicts 0.9, observes 0.
        let y = [0.0; 100];
        let p = [0.9; 100];
        assert!((ece(&y, &p, 10) - 0.9).abs() < 1e-9);
        assert_eq!(sigma_check(&y, &p, &[0.05; 100], 10).coverage, 0.0);
        assert_eq!(sigma_check(&y, &p, &[0.95; 100], 10).coverage, 1.0);
        // The scale that calibrates σ: here the error is 0.9 in every bin, so s·0.05 ≈ 0.9.
        let s = sigma_scale(&y, &p, &[0.05; 100], 10, 0.1, 100.0);
        assert!((s * 0.05 - 0.9).abs() < 0.02, "{s}");
        let c = sigma_check(&y, &p, &[s * 0.05; 100], 10);
        assert!((c.mean_z2 - 1.0).abs() < 1e-6, "{c:?}");
    }
}
