//! Sparse + low-rank (the HASSLE-free formulation, Makni et al., 2025): W ≈ S + U·V with S in the
//! pattern and U·V of rank R, minimising the layer objective ‖(W − S − UV)X‖² by alternation —
//! S ← prune(W − UV) with the chosen method (its own weight updates included), then
//! UV ← the best rank-R correction of W − S under the same objective.
//!
//! The rank step is exact: with H = XᵀX = C Cᵀ and M = W − S, ‖(M − L)X‖² = ‖(M − L)C‖²_F, whose
//! minimiser over rank-R L is L = P Pᵀ M, P the top-R left singular vectors of M C, i.e. the top-R
//! eigenvectors of M H Mᵀ (rows × rows). Those come from subspace iteration (warm-started from
//! the previous round's P) and a Rayleigh–Ritz step; no factor of H is needed.

use super::linalg::{mul, orthonormalize_columns, symmetric_eigen};
use rand::{Rng, SeedableRng};

/// `--low-rank R`: the rank, the alternation's rounds, subspace iterations per rank step.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Options {
    pub rank: usize,
    pub rounds: usize,
    pub power_iters: usize,
}

/// U (rows × R), V (R × cols), both row-major, and P (rows × R, f64) to warm-start the next round.
pub struct Correction {
    pub rank: usize,
    pub u: Vec<f32>,
    pub v: Vec<f32>,
    pub p: Vec<f64>,
}

impl Correction {
    /// U·V, rows × cols.
    pub fn product(&self, rows: usize, cols: usize) -> Result<Vec<f32>, String> {
        mul(self.u.clone(), self.v.clone(), rows, cols, self.rank)
    }
}

/// The best rank-`opts.rank` correction of `m` (rows × cols) under H (cols × cols, f64).
pub fn correction(
    m: &[f32],
    (rows, cols): (usize, usize),
    h: &[f64],
    opts: &Options,
    warm: Option<&[f64]>,
    seed: u64,
) -> Result<Correction, String> {
    let (rank, iters) = (opts.rank, opts.power_iters);
    if rank == 0 || rank > rows.min(cols) {
        return Err(format!("rank {rank} for a {rows} × {cols} layer: need 1 to {}", rows.min(cols)));
    }
    let m64: Vec<f64> = m.iter().map(|&x| x as f64).collect();
    // G = M H Mᵀ.
    let mh = mul(m64.clone(), h.to_vec(), rows, cols, cols)?;
    let mut mt = vec![0f64; cols * rows];
    for r in 0..rows {
        for c in 0..cols {
            mt[c * rows + r] = m64[r * cols + c];
        }
    }
    let g = mul(mh, mt, rows, rows, cols)?;
    let k = (rank + 10).min(rows);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut q: Vec<f64> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    if let Some(p) = warm {
        let pr = p.len() / rows.max(1);
        for r in 0..rows {
            for j in 0..pr.min(k) {
                q[r * k + j] = p[r * pr + j];
            }
        }
    }
    orthonormalize_columns(&mut q, rows, k);
    for _ in 0..iters {
        q = mul(g.clone(), q, rows, k, rows)?;
        orthonormalize_columns(&mut q, rows, k);
    }
    // Rayleigh–Ritz: T = Qᵀ G Q, P = Q · (T's top eigenvectors).
    let gq = mul(g, q.clone(), rows, k, rows)?;
    let mut t = vec![0f64; k * k];
    for a in 0..k {
        for b in 0..k {
            t[a * k + b] = (0..rows).map(|r| q[r * k + a] * gq[r * k + b]).sum();
        }
    }
    for a in 0..k {
        for b in 0..a {
            let s = 0.5 * (t[a * k + b] + t[b * k + a]);
            t[a * k + b] = s;
            t[b * k + a] = s;
        }
    }
    let (_, e) = symmetric_eigen(&t, k);
    let mut e_r = vec![0f64; k * rank];
    for a in 0..k {
        e_r[a * rank..(a + 1) * rank].copy_from_slice(&e[a * k..a * k + rank]);
    }
    let p = mul(q, e_r, rows, rank, k)?;
    // V = Pᵀ M.
    let mut pt = vec![0f64; rank * rows];
    for r in 0..rows {
        for j in 0..rank {
            pt[j * rows + r] = p[r * rank + j];
        }
    }
    let v = mul(pt, m64, rank, cols, rows)?;
    Ok(Correction { rank, u: p.iter().map(|&x| x as f32).collect(), v: v.iter().map(|&x| x as f32).collect(), p })
}

/// Parameters S + UV store: S's non-zeros plus R·(rows + cols).
pub fn parameters(s: &[f32], rows: usize, cols: usize, rank: usize) -> usize {
    s.iter().filter(|x| **x != 0.0).count() + rank * (rows + cols)
}

#[cfg(test)]
mod tests {
    use super::super::mask::{check, layer_error, Pattern};
    use super::super::sparsegpt;
    use super::*;

    fn o(rank: usize) -> Options {
        Options { rank, rounds: 4, power_iters: 8 }
    }

    fn layer(rows: usize, cols: usize, n: usize) -> (Vec<f32>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // A weight with a strong low-rank part (as attention projections have) plus noise.
        let r0 = 4;
        let a: Vec<f32> = (0..rows * r0).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let b: Vec<f32> = (0..r0 * cols).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let mut w = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                w[r * cols + c] =
                    (0..r0).map(|t| a[r * r0 + t] * b[t * cols + c]).sum::<f32>() + 0.3 * rng.gen_range(-1.0f32..1.0);
            }
        }
        let mut x = vec![0f64; n * cols];
        for v in x.iter_mut() {
            *v = rng.gen_range(-1.0..1.0);
        }
        let mut h = vec![0f64; cols * cols];
        for s in 0..n {
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += x[s * cols + i] * x[s * cols + j];
                }
            }
        }
        (w, h)
    }

    /// The rank step is the optimum: on M of exact rank 3, rank 3 recovers M; a rank-R correction
    /// never does worse than rank R − 1 on the objective.
    #[test]
    fn the_rank_step_recovers_a_low_rank_matrix() {
        let (rows, cols) = (20, 30);
        let (_, h) = layer(rows, cols, 100);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let a: Vec<f32> = (0..rows * 3).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let b: Vec<f32> = (0..3 * cols).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let m = mul(a, b, rows, cols, 3).unwrap();
        let c = correction(&m, (rows, cols), &h, &o(3), None, 1).unwrap();
        let l = c.product(rows, cols).unwrap();
        let scale = m.iter().fold(0f32, |x, y| x.max(y.abs()));
        let diff = m.iter().zip(&l).fold(0f32, |x, (p, q)| x.max((p - q).abs()));
        assert!(diff < 1e-3 * scale, "{diff} of {scale}");
        let (w, _) = layer(rows, cols, 1);
        let mut last = f64::MAX;
        for r in 1..6 {
            let l = correction(&w, (rows, cols), &h, &o(r), None, 1).unwrap().product(rows, cols).unwrap();
            let e = layer_error(&w, &l, rows, cols, &h);
            assert!(e <= last * (1.0 + 1e-6), "rank {r}: {e} after {last}");
            last = e;
        }
        assert!(correction(&w, (rows, cols), &h, &o(0), None, 1).is_err());
        assert!(correction(&w, (rows, cols), &h, &o(21), None, 1).is_err());
    }

    /// Alternating SparseGPT and the rank step: S keeps 2:4, and S + UV beats SparseGPT alone by a
    /// wide margin on a layer with a low-rank part; each round is no worse than the one before.
    #[test]
    fn sparse_plus_low_rank_beats_sparse_alone() {
        let (rows, cols) = (32, 64);
        let (w, h) = layer(rows, cols, 400);
        let p = Pattern::Nm { n: 2, m: 4 };
        let opts = sparsegpt::Options { block: 16, damp: 0.01 };
        let mut s0 = w.clone();
        sparsegpt::prune(&mut s0, rows, cols, &h, p, &opts).unwrap();
        let alone = layer_error(&w, &s0, rows, cols, &h);
        let mut l = vec![0f32; rows * cols];
        let mut warm: Option<Vec<f64>> = None;
        let mut errs = Vec::new();
        for round in 0..4 {
            let mut s: Vec<f32> = w.iter().zip(&l).map(|(a, b)| a - b).collect();
            sparsegpt::prune(&mut s, rows, cols, &h, p, &opts).unwrap();
            check(&s, rows, cols, p).unwrap();
            let m: Vec<f32> = w.iter().zip(&s).map(|(a, b)| a - b).collect();
            let c = correction(&m, (rows, cols), &h, &o(4), warm.as_deref(), round).unwrap();
            l = c.product(rows, cols).unwrap();
            warm = Some(c.p);
            let eff: Vec<f32> = s.iter().zip(&l).map(|(a, b)| a + b).collect();
            errs.push(layer_error(&w, &eff, rows, cols, &h));
        }
        eprintln!("SparseGPT alone {alone:.2}; with rank 4, by round: {errs:?}");
        assert!(errs[3] < 0.5 * alone, "{errs:?} vs {alone}");
        assert!(errs[3] <= errs[0] * 1.05, "{errs:?}");
        assert_eq!(parameters(&s0, rows, cols, 4), rows * cols / 2 + 4 * (rows + cols));
    }
}
