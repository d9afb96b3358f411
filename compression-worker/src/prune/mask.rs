//! Sparsity patterns, the magnitude and Wanda criteria, pattern checks, and the layer objective.
//! Weights are row-major (rows = output features, columns = input features).

pub use super::transpose::Solver;
use std::str::FromStr;

/// What to zero: a fraction of each row, or `n` of every `m` consecutive inputs of each row
/// (2:4 and 4:8 are the patterns sparse tensor cores accelerate: 50 %).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Pattern {
    Unstructured {
        sparsity: f64,
    },
    Nm {
        n: usize,
        m: usize,
    },
    /// N:M in the rows and in the columns of every M×M block (`transpose.rs`); rows of a last
    /// partial block of M rows are N:M along the row only.
    Transposable {
        n: usize,
        m: usize,
    },
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        if let Some(p) = s.strip_prefix("unstructured:") {
            let f: f64 =
                p.parse().map_err(|_| format!("`{s}`: expected unstructured:FRACTION, e.g. unstructured:0.5"))?;
            if !(0.0..1.0).contains(&f) {
                return Err(format!("`{s}`: the fraction must be in [0, 1)"));
            }
            return Ok(Pattern::Unstructured { sparsity: f });
        }
        let (s, transposable) = match s.strip_suffix("-transposable") {
            Some(nm) => (nm, true),
            None => (s, false),
        };
        let (a, b) =
            s.split_once(':').ok_or_else(|| format!("`{s}`: expected N:M (e.g. 2:4) or unstructured:FRACTION"))?;
        let (n, m): (usize, usize) = match (a.parse(), b.parse()) {
            (Ok(n), Ok(m)) => (n, m),
            _ => return Err(format!("`{s}`: expected N:M with integers (e.g. 2:4)")),
        };
        if m == 0 || n == 0 || n >= m {
            return Err(format!("`{s}`: need 0 < N < M"));
        }
        if transposable {
            return Pattern::Nm { n, m }.transposable();
        }
        Ok(Pattern::Nm { n, m })
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Unstructured { sparsity } => write!(f, "unstructured:{sparsity}"),
            Pattern::Nm { n, m } => write!(f, "{n}:{m}"),
            Pattern::Transposable { n, m } => write!(f, "{n}:{m}-transposable"),
        }
    }
}

impl Pattern {
    /// The fraction of weights the pattern zeroes.
    pub fn target(&self) -> f64 {
        match *self {
            Pattern::Unstructured { sparsity } => sparsity,
            Pattern::Nm { n, m } | Pattern::Transposable { n, m } => n as f64 / m as f64,
        }
    }

    /// The transposable form of an N:M pattern (`--transposable`); unstructured has none.
    pub fn transposable(self) -> Result<Pattern, String> {
        match self {
            Pattern::Nm { n, m } | Pattern::Transposable { n, m } => {
                if m > 16 {
                    return Err(format!("{n}:{m}: transposable masks need M ≤ 16"));
                }
                Ok(Pattern::Transposable { n, m })
            }
            Pattern::Unstructured { .. } => Err(format!("{self}: --transposable needs an N:M pattern")),
        }
    }
}

/// Transposable masks of the full M×M blocks of the keep-scores `score(row, col)`, each pruned
/// entry passed to `set(row, col)`: blocks are rows r0..r0+M (every full block of M rows) ×
/// columns c0..c0+M for the column starts given.
pub fn transposable_blocks(
    solver: &Solver,
    score: &dyn Fn(usize, usize) -> f64,
    rows: usize,
    col_starts: &[usize],
    set: &mut dyn FnMut(usize, usize),
) {
    let m = solver.m;
    let mut block = vec![0f64; m * m];
    for r0 in (0..rows / m * m).step_by(m) {
        for &c0 in col_starts {
            for i in 0..m {
                for j in 0..m {
                    block[i * m + j] = score(r0 + i, c0 + j);
                }
            }
            let pruned = solver.block_mask(&block);
            for (b, &p) in pruned.iter().enumerate() {
                if p {
                    set(r0 + b / m, c0 + b % m);
                }
            }
        }
    }
}

/// Pruned-mask (true = zero) of a `rows × cols` matrix from keep-scores (lower = pruned first):
/// per row the lowest fraction (unstructured), or the `n` lowest of every `m` (N:M; a trailing
/// partial group keeps its proportional share).
pub fn mask_from_scores(scores: &[f32], rows: usize, cols: usize, pattern: Pattern) -> Vec<bool> {
    let mut mask = vec![false; rows * cols];
    let mut idx: Vec<usize> = Vec::with_capacity(cols);
    for r in 0..rows {
        let s = &scores[r * cols..(r + 1) * cols];
        match pattern {
            Pattern::Unstructured { sparsity } => {
                let k = (sparsity * cols as f64).round() as usize;
                idx.clear();
                idx.extend(0..cols);
                if k > 0 && k <= cols {
                    idx.select_nth_unstable_by(k - 1, |&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
                    for &j in &idx[..k] {
                        mask[r * cols + j] = true;
                    }
                }
            }
            Pattern::Nm { n, m } | Pattern::Transposable { n, m } => {
                // Transposable: a row in a full block of M rows gets its full groups below,
                // block by block; here only a trailing partial group.
                let from = match pattern {
                    Pattern::Transposable { .. } if r < rows / m * m => cols / m * m,
                    _ => 0,
                };
                for g in (from..cols).step_by(m) {
                    let end = (g + m).min(cols);
                    let k = if end - g == m { n } else { (n * (end - g)) / m };
                    idx.clear();
                    idx.extend(g..end);
                    idx.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
                    for &j in &idx[..k] {
                        mask[r * cols + j] = true;
                    }
                }
            }
        }
    }
    if let Pattern::Transposable { n, m } = pattern {
        let starts: Vec<usize> = (0..cols / m * m).step_by(m).collect();
        transposable_blocks(&Solver::new(n, m), &|r, c| scores[r * cols + c] as f64, rows, &starts, &mut |r, c| {
            mask[r * cols + c] = true
        });
    }
    mask
}

/// Inputs that never fire on the calibration text (H_jj = 0): their weights do nothing.
pub fn dead_inputs(h: &[f64], cols: usize) -> Vec<usize> {
    (0..cols).filter(|&j| h[j * cols + j] == 0.0).collect()
}

/// Zeroes the weights of `columns` (inputs) in the row-major `rows × cols` W.
pub fn zero_columns(w: &mut [f32], rows: usize, cols: usize, columns: &[usize]) {
    for &j in columns {
        for r in 0..rows {
            w[r * cols + j] = 0.0;
        }
    }
}

pub fn apply(w: &mut [f32], mask: &[bool]) {
    for (x, &z) in w.iter_mut().zip(mask) {
        if z {
            *x = 0.0;
        }
    }
}

/// Magnitude pruning: keep the largest |w|.
pub fn magnitude(w: &mut [f32], rows: usize, cols: usize, pattern: Pattern) {
    let scores: Vec<f32> = w.iter().map(|x| x.abs()).collect();
    apply(w, &mask_from_scores(&scores, rows, cols, pattern));
}

/// Wanda: keep the largest |w_ij| · ‖X_j‖₂ per output row (`h_diag` = diag(XᵀX) = ‖X_j‖²).
pub fn wanda(w: &mut [f32], rows: usize, cols: usize, h_diag: &[f64], pattern: Pattern) {
    let norms: Vec<f32> = h_diag.iter().map(|d| d.max(0.0).sqrt() as f32).collect();
    let scores: Vec<f32> = w.iter().enumerate().map(|(k, x)| x.abs() * norms[k % cols]).collect();
    apply(w, &mask_from_scores(&scores, rows, cols, pattern));
}

/// Share of exact zeros.
pub fn sparsity(w: &[f32]) -> f64 {
    w.iter().filter(|x| **x == 0.0).count() as f64 / w.len().max(1) as f64
}

/// Does `w` follow the pattern? N:M: every full group of `m` in every row has at least `n`
/// zeros; transposable also every column of every full m×m block. Unstructured: every row has at
/// least its share of zeros.
pub fn check(w: &[f32], rows: usize, cols: usize, pattern: Pattern) -> Result<(), String> {
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        match pattern {
            Pattern::Nm { n, m } | Pattern::Transposable { n, m } => {
                for g in (0..cols / m * m).step_by(m) {
                    let z = row[g..g + m].iter().filter(|x| **x == 0.0).count();
                    if z < n {
                        return Err(format!("row {r}, inputs {g}..{}: {z} zeros, pattern {n}:{m}", g + m));
                    }
                }
            }
            Pattern::Unstructured { sparsity } => {
                let need = (sparsity * cols as f64).round() as usize;
                let z = row.iter().filter(|x| **x == 0.0).count();
                if z < need {
                    return Err(format!("row {r}: {z} zeros, need {need}"));
                }
            }
        }
    }
    if let Pattern::Transposable { n, m } = pattern {
        for r0 in (0..rows / m * m).step_by(m) {
            for c in 0..cols / m * m {
                let z = (r0..r0 + m).filter(|&r| w[r * cols + c] == 0.0).count();
                if z < n {
                    return Err(format!("input {c}, rows {r0}..{}: {z} zeros, transposable {n}:{m}", r0 + m));
                }
            }
        }
    }
    Ok(())
}

/// ‖W X − Ŵ X‖²_F = Σ_rows δ H δᵀ with δ = W − Ŵ and H = XᵀX (`cols × cols`, f64).
pub fn layer_error(w: &[f32], pruned: &[f32], rows: usize, cols: usize, h: &[f64]) -> f64 {
    let mut total = 0.0;
    let mut hd = vec![0.0f64; cols];
    for r in 0..rows {
        let d: Vec<f64> = (0..cols).map(|j| (w[r * cols + j] - pruned[r * cols + j]) as f64).collect();
        if d.iter().all(|x| *x == 0.0) {
            continue;
        }
        for i in 0..cols {
            hd[i] = h[i * cols..(i + 1) * cols].iter().zip(&d).map(|(a, b)| a * b).sum();
        }
        total += d.iter().zip(&hd).map(|(a, b)| a * b).sum::<f64>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_masks_are_valid() {
        assert_eq!("2:4".parse::<Pattern>().unwrap(), Pattern::Nm { n: 2, m: 4 });
        assert_eq!("unstructured:0.5".parse::<Pattern>().unwrap(), Pattern::Unstructured { sparsity: 0.5 });
        for bad in ["4:2", "0:4", "x", "2:x", "unstructured:1.5", "unstructured:"] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad}");
        }
        let (rows, cols) = (5, 24);
        let w0: Vec<f32> = (0..rows * cols).map(|k| ((k * 37 % 101) as f32 - 50.0) / 10.0).collect();
        for p in ["2:4", "4:8", "unstructured:0.5", "1:4"] {
            let p: Pattern = p.parse().unwrap();
            let mut w = w0.clone();
            magnitude(&mut w, rows, cols, p);
            check(&w, rows, cols, p).unwrap();
            assert!((sparsity(&w) - p.target()).abs() < 1e-9, "{p}: {}", sparsity(&w));
            // Within each group the kept weights are the largest.
            if let Pattern::Nm { m, .. } = p {
                for r in 0..rows {
                    for g in (0..cols).step_by(m) {
                        let kept_min = (g..g + m)
                            .filter(|&j| w[r * cols + j] != 0.0)
                            .map(|j| w0[r * cols + j].abs())
                            .fold(f32::MAX, f32::min);
                        let pruned_max = (g..g + m)
                            .filter(|&j| w[r * cols + j] == 0.0)
                            .map(|j| w0[r * cols + j].abs())
                            .fold(0.0, f32::max);
                        assert!(kept_min >= pruned_max);
                    }
                }
            }
        }
        // A dense matrix fails the check.
        assert!(check(&w0, rows, cols, Pattern::Nm { n: 2, m: 4 }).is_err());
    }

    /// `2:4-transposable` parses and prints back; unstructured has no transposable form. On a
    /// 10 × 26 matrix (two full 4-row blocks, a partial one; six full 4-column groups, a partial
    /// one) magnitude's transposable mask holds in rows and in every full block's columns, with the
    /// plain pattern's sparsity on the full groups.
    #[test]
    fn transposable_patterns_parse_and_hold_in_columns() {
        let t: Pattern = "2:4-transposable".parse().unwrap();
        assert_eq!(t, Pattern::Transposable { n: 2, m: 4 });
        assert_eq!(t.to_string().parse::<Pattern>().unwrap(), t);
        assert_eq!(Pattern::Nm { n: 4, m: 8 }.transposable().unwrap(), Pattern::Transposable { n: 4, m: 8 });
        let e = Pattern::Unstructured { sparsity: 0.5 }.transposable().unwrap_err();
        assert!(e.contains("needs an N:M pattern"), "{e}");
        assert!("2:4-transposable-transposable".parse::<Pattern>().is_err());
        let (rows, cols) = (10, 26);
        let w0: Vec<f32> = (0..rows * cols).map(|k| ((k * 53 % 97) as f32 - 48.0) / 7.0).collect();
        let mut w = w0.clone();
        magnitude(&mut w, rows, cols, t);
        check(&w, rows, cols, t).unwrap();
        assert!(check(&w, rows, cols, Pattern::Nm { n: 2, m: 4 }).is_ok());
        let mut plain = w0.clone();
        magnitude(&mut plain, rows, cols, Pattern::Nm { n: 2, m: 4 });
        assert!(check(&plain, rows, cols, t).is_err(), "plain magnitude 2:4 happened to be transposable");
        assert_eq!(sparsity(&w), sparsity(&plain));
    }
}
