//! Pruning one linear layer W (rows = outputs, columns = inputs) given H = XᵀX of its inputs.

pub mod alps;
pub mod linalg;
pub mod lowrank;
pub mod mask;
pub mod sparsegpt;
pub mod transpose;

/// Shared by the pruning tests.
#[cfg(test)]
pub(crate) mod testutil {
    use rand::{Rng, SeedableRng};

    /// A random layer with correlated, unevenly scaled inputs (as activations are): W (rows ×
    /// cols) and H = XᵀX over `n` inputs.
    pub fn layer(rows: usize, cols: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let scale: Vec<f64> = (0..cols).map(|j| 0.2 + 3.0 * ((j * 13 % 17) as f64 / 17.0)).collect();
        let mut x = vec![0f64; n * cols];
        for s in 0..n {
            let common: f64 = rng.gen_range(-1.0..1.0);
            for j in 0..cols {
                x[s * cols + j] = scale[j] * (0.6 * common + rng.gen_range(-1.0..1.0));
            }
        }
        let mut h = vec![0f64; cols * cols];
        for s in 0..n {
            let row = &x[s * cols..(s + 1) * cols];
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += row[i] * row[j];
                }
            }
        }
        (w, h)
    }
}
