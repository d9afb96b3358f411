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

/// Columns per block of the blocked factorizations: their trailing updates are matrix products
/// (candle's gemm, all cores); the n × n unblocked loops are single-threaded dot products.
const BLOCK: usize = 128;

fn candle_err(e: candle_core::Error) -> String {
    e.to_string()
}

/// `a` (r × k) · `b` (k × c), row-major, through candle's gemm (all cores): r × c.
pub fn mul<T: candle_core::WithDType>(a: Vec<T>, b: Vec<T>, r: usize, c: usize, k: usize) -> Result<Vec<T>, String> {
    use candle_core::{Device, Tensor};
    let a = Tensor::from_vec(a, (r, k), &Device::Cpu).map_err(candle_err)?;
    let b = Tensor::from_vec(b, (k, c), &Device::Cpu).map_err(candle_err)?;
    a.matmul(&b).map_err(candle_err)?.flatten_all().map_err(candle_err)?.to_vec1::<T>().map_err(candle_err)
}

/// tr(D H Dᵀ) = Σ (D H) ∘ D for a row-major `rows × n` D and an n × n H (f32 tensor), through one
/// f32 matrix product: a layer's ‖D X‖² when H = XᵀX.
pub fn quadratic_form(d: Vec<f32>, rows: usize, h: &candle_core::Tensor) -> Result<f64, String> {
    let n = d.len() / rows.max(1);
    let d = candle_core::Tensor::from_vec(d, (rows, n), &candle_core::Device::Cpu).map_err(candle_err)?;
    let v = d.matmul(h).and_then(|p| p.mul(&d)).and_then(|p| p.sum_all()).and_then(|s| s.to_scalar::<f32>());
    Ok(v.map_err(candle_err)? as f64)
}

/// `a` (r × k) · `a`ᵀ, row-major, through candle's gemm: r × r.
fn mul_own_t(a: Vec<f64>, r: usize, k: usize) -> Result<Vec<f64>, String> {
    use candle_core::{Device, Tensor};
    let a = Tensor::from_vec(a, (r, k), &Device::Cpu).map_err(candle_err)?;
    let at = a.t().map_err(candle_err)?;
    a.matmul(&at).map_err(candle_err)?.flatten_all().map_err(candle_err)?.to_vec1::<f64>().map_err(candle_err)
}

/// The sub-matrix rows r0..r1 × columns c0..c1 of the row-major n-column `a`, copied.
fn sub(a: &[f64], n: usize, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) -> Vec<f64> {
    let mut out = Vec::with_capacity((r1 - r0) * (c1 - c0));
    for i in r0..r1 {
        out.extend_from_slice(&a[i * n + c0..i * n + c1]);
    }
    out
}

/// Blocked right-looking Cholesky (same result as `cholesky_lower`, up to rounding): per block of
/// columns, the diagonal block unblocked, the panel below by forward substitution, and the trailing
/// lower part updated with one matrix product.
pub fn cholesky_lower_blocked(a: &mut [f64], n: usize) -> Result<(), String> {
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + BLOCK).min(n);
        let nb = k1 - k0;
        let mut d = sub(a, n, (k0, k1), (k0, k1));
        cholesky_lower(&mut d, nb).map_err(|e| format!("{e} (block at {k0})"))?;
        for i in 0..nb {
            a[(k0 + i) * n + k0..(k0 + i) * n + k1].copy_from_slice(&d[i * nb..(i + 1) * nb]);
        }
        // The panel: row i of L21 solves x · L11ᵀ = a_i.
        for i in k1..n {
            let row = &mut a[i * n + k0..i * n + k1];
            for j in 0..nb {
                let s = row[j] - dot(&row[..j], &d[j * nb..j * nb + j]);
                row[j] = s / d[j * nb + j];
            }
        }
        if k1 < n {
            let m = n - k1;
            let l21 = sub(a, n, (k1, n), (k0, k1));
            let p = mul_own_t(l21, m, nb)?;
            for i in 0..m {
                let row = &mut a[(k1 + i) * n + k1..(k1 + i) * n + k1 + i + 1];
                for (x, y) in row.iter_mut().zip(&p[i * m..i * m + i + 1]) {
                    *x -= y;
                }
            }
        }
        k0 = k1;
    }
    for i in 0..n {
        a[i * n + i + 1..(i + 1) * n].iter_mut().for_each(|x| *x = 0.0);
    }
    Ok(())
}

/// Blocked inverse of a lower-triangular matrix (same result as `lower_inverse`, up to rounding):
/// per block row, M_ii = L_ii⁻¹ and M[i, :i] = −M_ii · (L[i, :i] · M[:i, :i]) by matrix products.
pub fn lower_inverse_blocked(l: &[f64], n: usize) -> Result<Vec<f64>, String> {
    let mut m = vec![0.0; n * n];
    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + BLOCK).min(n);
        let nb = i1 - i0;
        let mii = lower_inverse(&sub(l, n, (i0, i1), (i0, i1)), nb);
        for i in 0..nb {
            m[(i0 + i) * n + i0..(i0 + i) * n + i1].copy_from_slice(&mii[i * nb..(i + 1) * nb]);
        }
        if i0 > 0 {
            let t = mul(sub(l, n, (i0, i1), (0, i0)), sub(&m, n, (0, i0), (0, i0)), nb, i0, i0)?;
            let off = mul(mii, t, nb, i0, nb)?;
            for i in 0..nb {
                for (x, y) in m[(i0 + i) * n..(i0 + i) * n + i0].iter_mut().zip(&off[i * i0..(i + 1) * i0]) {
                    *x = -y;
                }
            }
        }
        i0 = i1;
    }
    Ok(m)
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
    cholesky_lower_blocked(&mut rev, n)?;
    let inv = lower_inverse_blocked(&rev, n)?;
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            u[i * n + j] = inv[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    Ok(u)
}

/// H⁻¹ of a symmetric positive-definite H (n × n, row-major): H = L Lᵀ by the blocked Cholesky,
/// then H⁻¹ = L⁻ᵀ L⁻¹ as one matrix product.
pub fn spd_inverse(h: &[f64], n: usize) -> Result<Vec<f64>, String> {
    let mut l = h.to_vec();
    cholesky_lower_blocked(&mut l, n)?;
    let m = lower_inverse_blocked(&l, n)?;
    let mut mt = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            mt[j * n + i] = m[i * n + j];
        }
    }
    mul(mt, m, n, n, n)
}

/// Orthonormalises the `k` columns of the row-major `n × k` matrix `q` in place (modified
/// Gram–Schmidt, twice for stability); a column that is (numerically) in the span of the ones
/// before it becomes zero. Returns how many columns are non-zero.
pub fn orthonormalize_columns(q: &mut [f64], n: usize, k: usize) -> usize {
    let mut rank = 0;
    let mut col = vec![0.0; n];
    let mut other = vec![0.0; n];
    for j in 0..k {
        for i in 0..n {
            col[i] = q[i * k + j];
        }
        let norm0 = dot(&col, &col).sqrt();
        for _ in 0..2 {
            for p in 0..j {
                for i in 0..n {
                    other[i] = q[i * k + p];
                }
                let c = dot(&col, &other);
                for i in 0..n {
                    col[i] -= c * other[i];
                }
            }
        }
        let norm = dot(&col, &col).sqrt();
        let keep = norm > 1e-10 * norm0.max(f64::MIN_POSITIVE);
        for i in 0..n {
            q[i * k + j] = if keep { col[i] / norm } else { 0.0 };
        }
        rank += usize::from(keep);
    }
    rank
}

/// Jacobi eigen-decomposition, shared with the estimator's PCA.
pub use llmroute_linalg::symmetric_eigen;

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

    /// The blocked factorizations (matrix products per block) agree with the plain ones, on a size
    /// that is not a multiple of the block.
    #[test]
    fn blocked_agrees_with_unblocked() {
        let n = 2 * BLOCK + 37;
        let h = spd(n);
        let (mut a, mut b) = (h.clone(), h.clone());
        cholesky_lower(&mut a, n).unwrap();
        cholesky_lower_blocked(&mut b, n).unwrap();
        let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let diff = a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-10 * scale, "cholesky: {diff} of {scale}");
        let (ia, ib) = (lower_inverse(&a, n), lower_inverse_blocked(&a, n).unwrap());
        let scale = ia.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let diff = ia.iter().zip(&ib).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-10 * scale, "inverse: {diff} of {scale}");
        let mut bad = spd(n);
        bad[(n - 1) * n + n - 1] = -1e9;
        assert!(cholesky_lower_blocked(&mut bad, n).is_err());
    }
    #[test]
    fn spd_inverse_gram_schmidt_and_jacobi() {
        let n = BLOCK + 21;
        let h = spd(n);
        let inv = spd_inverse(&h, n).unwrap();
        for i in (0..n).step_by(17) {
            for j in 0..n {
                let p: f64 = (0..n).map(|k| h[i * n + k] * inv[k * n + j]).sum();
                assert!((p - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "{i} {j} {p}");
            }
        }
        // Columns 0, 1, 0 + 1 (dependent), 2 of a 6 × 4 matrix.
        let (rows, k) = (6, 4);
        let mut q = vec![0.0; rows * k];
        for i in 0..rows {
            let (a, b, c) = (i as f64 + 1.0, ((i * i) % 5) as f64, (i % 2) as f64);
            q[i * k] = a;
            q[i * k + 1] = b;
            q[i * k + 2] = a + b;
            q[i * k + 3] = c;
        }
        assert_eq!(orthonormalize_columns(&mut q, rows, k), 3);
        for x in 0..k {
            for y in 0..k {
                let d: f64 = (0..rows).map(|i| q[i * k + x] * q[i * k + y]).sum();
                let want = if x == y && x != 2 { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-12, "{x} {y} {d}");
            }
        }
        // symmetric_eigen is tested with it, in llmroute-linalg.
    }
}
