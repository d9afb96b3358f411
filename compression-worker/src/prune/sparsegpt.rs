//! SparseGPT (Frantar & Alistarh, 2023): prune columns left to right in blocks; each pruned
//! weight's error is spread over the not-yet-visited weights of its row through the upper Cholesky
//! factor U of the damped inverse Hessian (Uᵀ U = (H + λI)⁻¹, H = XᵀX): the optimal-brain-surgeon
//! update, one column at a time. The mask is chosen inside each block (unstructured: the block's
//! lowest w² / U_jj² per row; N:M: per group of M columns when the group starts).

use super::linalg::{mul, upper_cholesky_of_inverse};
use super::mask::Pattern;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub block: usize,
    /// λ = damp × mean(diag H).
    pub damp: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { block: 128, damp: 0.01 }
    }
}

/// What SparseGPT needs from H, computed once for layers that share an input (q, k, v; gate, up).
pub struct Factor {
    cols: usize,
    /// Inputs that never fire (their weights are zeroed).
    dead: Vec<usize>,
    /// Uᵀ U = (H + λI)⁻¹, upper triangular, row-major.
    u: Vec<f32>,
}

pub fn factor(h: &[f64], cols: usize, damp: f64) -> Result<Factor, String> {
    let mut h = h.to_vec();
    let dead = super::mask::dead_inputs(&h, cols);
    for &j in &dead {
        h[j * cols + j] = 1.0;
    }
    let mean_diag = (0..cols).map(|j| h[j * cols + j]).sum::<f64>() / cols.max(1) as f64;
    let lambda = damp * mean_diag;
    for j in 0..cols {
        h[j * cols + j] += lambda;
    }
    let u = upper_cholesky_of_inverse(&h, cols)?.iter().map(|&x| x as f32).collect();
    Ok(Factor { cols, dead, u })
}

/// Prunes `w` (rows × cols, row-major) in place to `pattern` given H (cols × cols, f64).
pub fn prune(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    pattern: Pattern,
    opts: &Options,
) -> Result<(), String> {
    let f = factor(h, cols, opts.damp)?;
    prune_with(w, rows, &f, pattern, opts.block)
}

/// Prunes with a precomputed factor.
pub fn prune_with(w: &mut [f32], rows: usize, f: &Factor, pattern: Pattern, block: usize) -> Result<(), String> {
    let cols = f.cols;
    if w.len() != rows * cols {
        return Err(format!("weights of {} values for {rows} × {cols}", w.len()));
    }
    // Inputs that never fire: their weights do nothing.
    super::mask::zero_columns(w, rows, cols, &f.dead);
    let u = &f.u;
    // SparseGPT's saliency of w[r, c]: w² / [U]²_cc (lower = pruned first).
    let saliency = |w: &[f32], r: usize, c: usize| {
        let d = u[c * cols + c];
        w[r * cols + c] * w[r * cols + c] / (d * d)
    };
    // Transposable N:M: the block solver, its exhaustive patterns listed once per layer.
    let solver = match pattern {
        Pattern::Transposable { n, m } => Some(super::mask::Solver::new(n, m)),
        _ => None,
    };
    let bs = block.max(1);
    let mut err = vec![0f32; rows * bs];
    let mut mask = vec![false; rows * bs];
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + bs).min(cols);
        let count = i2 - i1;
        mask.iter_mut().for_each(|m| *m = false);
        if let Pattern::Unstructured { sparsity } = pattern {
            // The block's mask: per row, the lowest w² / U_jj². The blocks' counts are cut from
            // the running total, so a row gets round(sparsity × cols) zeros in all (rounding each
            // block alone fell short: 4 × round(0.3 × 128) + round(0.3 × 64) = 171 of 576, not 173).
            let k = ((sparsity * i2 as f64).round() - (sparsity * i1 as f64).round()).max(0.0) as usize;
            let mut idx: Vec<usize> = Vec::with_capacity(count);
            for r in 0..rows {
                let score = |t: usize| saliency(w, r, i1 + t);
                idx.clear();
                idx.extend(0..count);
                if k > 0 {
                    idx.select_nth_unstable_by(k - 1, |&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
                    for &t in &idx[..k] {
                        mask[r * bs + t] = true;
                    }
                }
            }
        }
        for t in 0..count {
            let j = i1 + t;
            if let Pattern::Nm { n, m } | Pattern::Transposable { n, m } = pattern {
                if (j - i1) % m == 0 && j + m <= cols {
                    // Transposable: the rows in full blocks of m choose their m×m masks together.
                    let first_free_row = match &solver {
                        Some(solver) => {
                            let score = |r: usize, c: usize| saliency(w, r, c) as f64;
                            super::mask::transposable_blocks(solver, &score, rows, &[j], &mut |r, c| {
                                if t + c - j < bs {
                                    mask[r * bs + t + c - j] = true;
                                }
                            });
                            rows / m * m
                        }
                        None => 0,
                    };
                    for r in first_free_row..rows {
                        let mut g: Vec<usize> = (0..m).collect();
                        let score = |q: usize| saliency(w, r, j + q);
                        g.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
                        for &q in &g[..n] {
                            if t + q < bs {
                                mask[r * bs + t + q] = true;
                            }
                        }
                    }
                }
            }
            let d = u[j * cols + j];
            let urow = &u[j * cols + j..j * cols + i2];
            for r in 0..rows {
                let wrj = w[r * cols + j];
                let q = if mask[r * bs + t] { 0.0 } else { wrj };
                let e = (wrj - q) / d;
                err[r * bs + t] = e;
                if e != 0.0 {
                    let row = &mut w[r * cols + j..r * cols + i2];
                    for (x, uu) in row.iter_mut().zip(urow) {
                        *x -= e * uu;
                    }
                }
                w[r * cols + j] = q;
            }
        }
        // The block's errors onto the columns after it: W[:, i2..] −= E · U[i1..i2, i2..], one
        // matrix product (candle's gemm, all cores).
        if i2 < cols {
            let rest = cols - i2;
            let e: Vec<f32> = (0..rows).flat_map(|r| err[r * bs..r * bs + count].iter().copied()).collect();
            let ublk: Vec<f32> = (i1..i2).flat_map(|j| u[j * cols + i2..j * cols + cols].iter().copied()).collect();
            let p = mul(e, ublk, rows, rest, count)?;
            for r in 0..rows {
                for (x, y) in w[r * cols + i2..r * cols + cols].iter_mut().zip(&p[r * rest..(r + 1) * rest]) {
                    *x -= y;
                }
            }
        }
        i1 = i2;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::mask::{check, layer_error, magnitude, sparsity, wanda, Pattern};
    use super::*;

    fn layer(rows: usize, cols: usize, n: usize) -> (Vec<f32>, Vec<f64>) {
        super::super::testutil::layer(rows, cols, n, 7)
    }

    /// A width that is not a multiple of the block (88 = 5 × 16 + 8), a sparsity whose per-block share is not whole:
    /// every row still gets its round(sparsity × cols) zeros (SmolLM2's 576-wide layers at 0.3
    /// failed the worker's pattern check before).
    #[test]
    fn unstructured_rows_get_their_whole_share_across_blocks() {
        // Blocks of 16: 0.2 × 16 = 3.2 and 0.7 × 16 = 11.2 round down in every block.
        let (rows, cols) = (8, 88);
        let (w, h) = layer(rows, cols, 256);
        for s in [0.2, 0.3, 0.5, 0.7] {
            let p = Pattern::Unstructured { sparsity: s };
            let mut sg = w.clone();
            prune(&mut sg, rows, cols, &h, p, &Options { block: 16, damp: 0.01 }).unwrap();
            check(&sg, rows, cols, p).unwrap_or_else(|e| panic!("sparsity {s}: {e}"));
        }
    }

    /// Transposable 2:4 / 4:8: W and Wᵀ both follow N:M (a plain N:M mask does not); SparseGPT's
    /// updates still beat magnitude pruning under the same transposable constraint. (On this layer,
    /// whose input scales differ 16×, the columns' constraint costs: plain N:M prunes the same weak
    /// inputs in every row, a transposable mask cannot.)
    #[test]
    fn transposable_masks_hold_in_both_directions() {
        let (rows, cols) = (32, 64);
        let (w, h) = layer(rows, cols, 512);
        for (plain, tr) in [("2:4", "2:4-transposable"), ("4:8", "4:8-transposable")] {
            let (p, t): (Pattern, Pattern) = (plain.parse().unwrap(), tr.parse().unwrap());
            let opts = Options { block: 16, damp: 0.01 };
            let (mut a, mut b) = (w.clone(), w.clone());
            prune(&mut a, rows, cols, &h, p, &opts).unwrap();
            prune(&mut b, rows, cols, &h, t, &opts).unwrap();
            check(&b, rows, cols, t).unwrap();
            assert!(check(&a, rows, cols, t).is_err(), "{plain}: the plain mask happened to be transposable");
            let bt: Vec<f32> =
                (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| b[r * cols + c]).collect();
            check(&bt, cols, rows, p).unwrap_or_else(|e| panic!("{tr}: Wᵀ is not {plain}: {e}"));
            let mut mag = w.clone();
            magnitude(&mut mag, rows, cols, t);
            check(&mag, rows, cols, t).unwrap();
            let (ea, eb, em) = (
                layer_error(&w, &a, rows, cols, &h),
                layer_error(&w, &b, rows, cols, &h),
                layer_error(&w, &mag, rows, cols, &h),
            );
            eprintln!("{plain}: SparseGPT layer error {ea:.1}; transposable: SparseGPT {eb:.1}, magnitude {em:.1}");
            assert!(eb < em, "{tr}: SparseGPT {eb} vs magnitude {em}");
        }
    }

    #[test]
    fn sparsegpt_beats_wanda_beats_magnitude_on_the_layer_objective() {
        let (rows, cols) = (32, 64);
        let (w, h) = layer(rows, cols, 512);
        let diag: Vec<f64> = (0..cols).map(|j| h[j * cols + j]).collect();
        for p in ["2:4", "4:8", "unstructured:0.5", "2:4-transposable", "4:8-transposable"] {
            let p: Pattern = p.parse().unwrap();
            let mut mag = w.clone();
            magnitude(&mut mag, rows, cols, p);
            let mut wan = w.clone();
            wanda(&mut wan, rows, cols, &diag, p);
            let mut sg = w.clone();
            prune(&mut sg, rows, cols, &h, p, &Options { block: 16, damp: 0.01 }).unwrap();
            for m in [&mag, &wan, &sg] {
                check(m, rows, cols, p).unwrap();
                assert!(sparsity(m) >= p.target() - 1e-9);
            }
            let (em, ew, es) = (
                layer_error(&w, &mag, rows, cols, &h),
                layer_error(&w, &wan, rows, cols, &h),
                layer_error(&w, &sg, rows, cols, &h),
            );
            assert!(es < ew && ew < em, "{p}: sparsegpt {es:.1}, wanda {ew:.1}, magnitude {em:.1}");
        }
    }
}
