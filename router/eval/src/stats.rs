//! Bootstrap intervals, percentiles, cost–accuracy hulls, matched-cost interpolation and AIQ.

use super::policy::BatchOutcome;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Percentile (0..=100) by nearest rank of an unsorted slice; NaN when empty.
pub fn percentile(v: &[f64], pct: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((pct / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// 95 % percentile-bootstrap interval of accuracy, resampling whole batches.
pub fn bootstrap_ci(r: &[BatchOutcome], reps: usize, seed: u64) -> [f64; 2] {
    if r.is_empty() || reps == 0 {
        return [f64::NAN, f64::NAN];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xb007);
    let accs: Vec<f64> = (0..reps)
        .map(|_| {
            let (mut s, mut n) = (0.0, 0usize);
            for _ in 0..r.len() {
                let b = &r[rng.gen_range(0..r.len())];
                s += b.score;
                n += b.n;
            }
            s / n.max(1) as f64
        })
        .collect();
    [percentile(&accs, 2.5), percentile(&accs, 97.5)]
}

/// Upper concave, non-decreasing hull of (cost, accuracy) points, sorted by cost.
pub fn upper_hull(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    upper_hull_idx(points).into_iter().map(|k| points[k]).collect()
}

/// The same hull as indices into `points`.
pub fn upper_hull_idx(points: &[(f64, f64)]) -> Vec<usize> {
    let mut p: Vec<usize> = (0..points.len()).filter(|&k| points[k].0.is_finite() && points[k].1.is_finite()).collect();
    p.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(points[b].1.total_cmp(&points[a].1)));
    let mut h: Vec<usize> = Vec::new();
    for k in p {
        let q = points[k];
        // Non-decreasing: a point no better than the best so far adds nothing.
        if h.last().is_some_and(|&l| q.1 <= points[l].1) {
            continue;
        }
        while h.len() >= 2 {
            let (a, b) = (points[h[h.len() - 2]], points[h[h.len() - 1]]);
            if (b.1 - a.1) * (q.0 - b.0) <= (q.1 - b.1) * (b.0 - a.0) {
                h.pop();
            } else {
                break;
            }
        }
        h.push(k);
    }
    h
}

/// `hull_at` as weights on the hull's vertices: (vertex, weight) pairs summing to 1.
pub fn hull_weights(h: &[(f64, f64)], cost: f64) -> Option<Vec<(usize, f64)>> {
    let first = h.first()?;
    if cost < first.0 - 1e-15 {
        return None;
    }
    for (k, w) in h.windows(2).enumerate() {
        if cost <= w[1].0 {
            let t = if w[1].0 > w[0].0 { (cost - w[0].0) / (w[1].0 - w[0].0) } else { 1.0 };
            return Some(vec![(k, 1.0 - t), (k + 1, t)]);
        }
    }
    Some(vec![(h.len() - 1, 1.0)])
}

/// The hull's accuracy at `cost` (linear between points, flat after the last; None before the first).
pub fn hull_at(h: &[(f64, f64)], cost: f64) -> Option<f64> {
    let first = h.first()?;
    if cost < first.0 - 1e-15 {
        return None;
    }
    for w in h.windows(2) {
        if cost <= w[1].0 {
            let t = if w[1].0 > w[0].0 { (cost - w[0].0) / (w[1].0 - w[0].0) } else { 1.0 };
            return Some(w[0].1 + t * (w[1].1 - w[0].1));
        }
    }
    h.last().map(|l| l.1)
}

/// Mean of the hull over [lo, hi] (area / width, trapezoids on a fine grid): RouterBench's AIQ.
pub fn aiq(h: &[(f64, f64)], lo: f64, hi: f64) -> Option<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let steps = 400;
    let mut area = 0.0;
    let mut prev = hull_at(h, lo)?;
    for k in 1..=steps {
        let c = lo + (hi - lo) * k as f64 / steps as f64;
        let v = hull_at(h, c)?;
        area += 0.5 * (prev + v) * (hi - lo) / steps as f64;
        prev = v;
    }
    Some(area / (hi - lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_and_aiq() {
        let h = upper_hull(&[(1.0, 0.5), (2.0, 0.55), (3.0, 0.8), (4.0, 0.7)]);
        assert_eq!(h, vec![(1.0, 0.5), (3.0, 0.8)]);
        assert!((hull_at(&h, 2.0).unwrap() - 0.65).abs() < 1e-12);
        assert_eq!(hull_at(&h, 10.0), Some(0.8));
        assert_eq!(hull_at(&h, 0.5), None);
        assert!((aiq(&h, 1.0, 3.0).unwrap() - 0.65).abs() < 1e-9);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        let w = hull_weights(&h, 2.0).unwrap();
        assert_eq!(w, vec![(0, 0.5), (1, 0.5)]);
        assert_eq!(hull_weights(&h, 9.0).unwrap(), vec![(1, 1.0)]);
        assert_eq!(upper_hull_idx(&[(1.0, 0.5), (2.0, 0.55), (3.0, 0.8), (4.0, 0.7)]), vec![0, 2]);
    }
}
