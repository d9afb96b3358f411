//! Small dense linear algebra shared by the estimator and the compression worker, f64, row-major.

// Index loops over row-major matrices read clearer than iterator chains.
#![allow(clippy::needless_range_loop)]

/// Eigen-decomposition of a symmetric matrix (k × k, row-major) by cyclic Jacobi rotations:
/// (eigenvalues, eigenvectors as the columns of a row-major k × k matrix), sorted by decreasing
/// eigenvalue. O(k³) per sweep: for the compression worker's Rayleigh–Ritz step (k of a few
/// dozen) and the estimator's PCA of a static table (k = 384, about a second).
pub fn symmetric_eigen(a: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; k * k];
    for i in 0..k {
        v[i * k + i] = 1.0;
    }
    let scale = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    for _sweep in 0..60 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j] * a[i * k + j])
            .sum();
        if off.sqrt() <= 1e-14 * scale {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&x, &y| a[y * k + y].total_cmp(&a[x * k + x]));
    let vals = order.iter().map(|&i| a[i * k + i]).collect();
    let mut vecs = vec![0.0; k * k];
    for (new, &old) in order.iter().enumerate() {
        for r in 0..k {
            vecs[r * k + new] = v[r * k + old];
        }
    }
    (vals, vecs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_eigenpairs_satisfy_a_v_equals_lambda_v_sorted() {
        // A Aᵀ + k I for a fixed A: symmetric positive definite.
        let k = 9;
        let m: Vec<f64> = (0..k * k).map(|i| ((i * 37 % 17) as f64 - 8.0) / 8.0).collect();
        let mut a = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                a[i * k + j] =
                    (0..k).map(|t| m[i * k + t] * m[j * k + t]).sum::<f64>() + if i == j { k as f64 } else { 0.0 };
            }
        }
        let (vals, vecs) = symmetric_eigen(&a, k);
        assert!(vals.windows(2).all(|w| w[0] >= w[1]), "{vals:?}");
        for e in 0..k {
            for i in 0..k {
                let av: f64 = (0..k).map(|j| a[i * k + j] * vecs[j * k + e]).sum();
                assert!((av - vals[e] * vecs[i * k + e]).abs() < 1e-9 * vals[0], "{e} {i}");
            }
        }
        let (values, vectors) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((values[0] - 3.0).abs() < 1e-12 && (values[1] - 1.0).abs() < 1e-12);
        assert!((vectors[0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
    }
}
