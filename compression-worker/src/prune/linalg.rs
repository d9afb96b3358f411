//! Dense symmetric positive-definite helpers in f64, row-major n × n, written so the inner loops
//! run over contiguous memory (they vectorize).

/// Dot product with 8 independent accumulators (a sequential f64 sum cannot be vectorized:
/// floating-point addition is not reassociated by the compiler).
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Lower Cholesky factor L (H = L Lᵀ) in place of `a`; the upper triangle is zeroed. Fails on a
/// non-positive pivot.
pub fn cholesky_lower(a: &mut [f64], n: usize) -> Result<(), String> {
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (i * n, j * n);
            let mut s = a[ri + j];
            s -= dot(&a[ri..ri + j], &a[rj..rj + j]);
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return Err(format!("matrix not positive definite at pivot {i} ({s})"));
                }
                a[ri + i] = s.sqrt();
            } else {
                a[ri + j] = s / a[rj + j];
            }
        }
        for j in i + 1..n {
            a[i * n + j] = 0.0;
        }
    }
    Ok(())
}

/// Inverse of a lower-triangular matrix (lower-triangular), row by row.
pub fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    let mut acc = vec![0.0; n];
    for i in 0..n {
        acc[..=i].iter_mut().for_each(|x| *x = 0.0);
        acc[i] = 1.0;
        for k in 0..i {
            let c = l[i * n + k];
            if c != 0.0 {
                let row = &m[k * n..k * n + k + 1];
                for (a, r) in acc[..=k].iter_mut().zip(row) {
                    *a -= c * r;
                }
            }
        }
        let d = l[i * n + i];
        for j in 0..=i {
            m[i * n + j] = acc[j] / d;
        }
    }
    m
}

/// U, upper triangular with Uᵀ U = H⁻¹ (what SparseGPT's updates use), from H in two cubic
/// steps: with J the index reversal, J H J = L̃ L̃ᵀ gives H = R Rᵀ for the upper R = J L̃ J, so
/// H⁻¹ = (R⁻¹)ᵀ R⁻¹ and U = R⁻¹ = J L̃⁻¹ J.
pub fn upper_cholesky_of_inverse(h: &[f64], n: usize) -> Result<Vec<f64>, String> {
    let mut rev = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            rev[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    cholesky_lower(&mut rev, n)?;
    let inv = lower_inverse(&rev, n);
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            u[i * n + j] = inv[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> Vec<f64> {
        // A Aᵀ + n I for a fixed A.
        let a: Vec<f64> = (0..n * n).map(|k| ((k * 7919 % 97) as f64 / 97.0) - 0.5).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] =
                    (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>() + if i == j { n as f64 } else { 0.0 };
            }
        }
        h
    }

    #[test]
    fn upper_factor_of_the_inverse() {
        let n = 7;
        let h = spd(n);
        let u = upper_cholesky_of_inverse(&h, n).unwrap();
        // U is upper triangular with a positive diagonal, and H · (Uᵀ U) = I.
        for i in 0..n {
            assert!(u[i * n + i] > 0.0);
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0);
            }
        }
        let mut hinv = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                hinv[i * n + j] = (0..n).map(|k| u[k * n + i] * u[k * n + j]).sum();
            }
        }
        for i in 0..n {
            for j in 0..n {
                let p: f64 = (0..n).map(|k| h[i * n + k] * hinv[k * n + j]).sum();
                assert!((p - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "{i} {j} {p}");
            }
        }
        let mut bad = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky_lower(&mut bad, 2).is_err());
    }
}
