//! A small MLP shared by all models — a query × model factorization in the spirit of RouteLLM's
//! matrix factorization: the hidden layer h = relu(W₁ᵀx + b₁) is the query's learned embedding,
//! each model has a vector vⱼ, and P(model j answers well) = σ(vⱼ·h + cⱼ).
//!
//! Residual form (`train_residual`): each item also has base logits (the kNN's μ as logits), and
//! the network learns a correction: P = σ(logit(μ_kNN)ⱼ + vⱼ·h + cⱼ), with v and c starting at
//! zero so training starts from the kNN and early stopping never leaves it worse on validation.
//!
//! Input is either the hashed TF-IDF vector (sparse; feature indices folded into 2^16 rows) or a
//! dense sentence embedding. Trained by minibatch Adam on soft-label cross-entropy averaged over
//! models (lazy updates for the sparse first layer: only rows a minibatch touches), with L2, and
//! early stopping on a validation set (the best epoch's weights are kept). Seeded, deterministic.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Rows of the first layer for hashed input (features folded modulo this).
pub const SPARSE_ROWS: usize = 1 << 16;

/// One query's input.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Sparse(&'a [(u32, f32)]),
    Dense(&'a [f32]),
}

#[derive(Debug, Clone)]
pub struct MlpConfig {
    pub hidden: usize,
    pub max_epochs: usize,
    pub lr: f32,
    pub l2: f32,
    pub batch: usize,
    pub seed: u64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig { hidden: 64, max_epochs: 30, lr: 2e-3, l2: 1e-6, batch: 32, seed: 1 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mlp {
    pub sparse: bool,
    pub in_rows: usize,
    pub hidden: usize,
    pub models: usize,
    /// in_rows × hidden, row-major by input feature.
    #[serde(with = "crate::b64")]
    pub w1: Vec<f32>,
    #[serde(with = "crate::b64")]
    pub b1: Vec<f32>,
    /// models × hidden.
    #[serde(with = "crate::b64")]
    pub v: Vec<f32>,
    #[serde(with = "crate::b64")]
    pub c: Vec<f32>,
    /// Predictions add to base logits (`train_residual`).
    #[serde(default)]
    pub residual: bool,
    /// Epochs kept (best validation loss) and that loss.
    pub epochs: usize,
    pub val_loss: f64,
}

fn logit(p: f64) -> f32 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln() as f32
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// (row, value) pairs of an input: folded feature rows, or the dense coordinates.
fn entries<'a>(x: Input<'a>) -> Box<dyn Iterator<Item = (usize, f32)> + 'a> {
    match x {
        Input::Sparse(v) => Box::new(v.iter().map(|&(f, w)| (f as usize % SPARSE_ROWS, w))),
        Input::Dense(v) => Box::new(v.iter().copied().enumerate()),
    }
}

struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new(n: usize) -> Adam {
        Adam { m: vec![0.0; n], v: vec![0.0; n] }
    }
    #[inline]
    fn step(&mut self, i: usize, w: &mut f32, g: f32, lr: f32, t: i32) {
        let (b1, b2) = (0.9f32, 0.999f32);
        self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
        self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
        let mh = self.m[i] / (1.0 - b1.powi(t));
        let vh = self.v[i] / (1.0 - b2.powi(t));
        *w -= lr * mh / (vh.sqrt() + 1e-8);
    }
}

impl Mlp {
    fn hidden_pre(&self, x: Input, z: &mut [f32]) {
        z.copy_from_slice(&self.b1);
        let h = self.hidden;
        for (r, val) in entries(x) {
            if r >= self.in_rows {
                continue;
            }
            let row = &self.w1[r * h..(r + 1) * h];
            for (zk, wk) in z.iter_mut().zip(row) {
                *zk += val * wk;
            }
        }
    }

    /// P(good answer) per model; `base` are the base probabilities a residual net corrects
    /// (ignored by a plain one).
    pub fn predict(&self, x: Input, base: Option<&[f64]>) -> Vec<f64> {
        let mut z = vec![0f32; self.hidden];
        self.hidden_pre(x, &mut z);
        for a in &mut z {
            *a = a.max(0.0);
        }
        (0..self.models)
            .map(|j| {
                let vj = &self.v[j * self.hidden..(j + 1) * self.hidden];
                let off = match (self.residual, base) {
                    (true, Some(b)) => logit(b[j]),
                    _ => 0.0,
                };
                sigmoid(off + self.c[j] + vj.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>()) as f64
            })
            .collect()
    }

    /// Mean cross-entropy over items and models.
    pub fn loss(&self, x: &[Input], y: &[Vec<f64>], base: &[Vec<f64>]) -> f64 {
        let mut s = 0.0;
        for (i, (xi, yi)) in x.iter().zip(y).enumerate() {
            for (p, t) in self.predict(*xi, base.get(i).map(Vec::as_slice)).iter().zip(yi) {
                let p = p.clamp(1e-6, 1.0 - 1e-6);
                s -= t * p.ln() + (1.0 - t) * (1.0 - p).ln();
            }
        }
        s / (x.len() * self.models).max(1) as f64
    }

    /// Trains on (x, y) with early stopping on (val_x, val_y). `dense_dim` is the embedding
    /// width for dense input (ignored for sparse).
    pub fn train(
        x: &[Input],
        y: &[Vec<f64>],
        val_x: &[Input],
        val_y: &[Vec<f64>],
        dense_dim: usize,
        cfg: &MlpConfig,
    ) -> Mlp {
        Self::fit(x, y, &[], val_x, val_y, &[], dense_dim, cfg)
    }

    /// Trains a correction to base probabilities (`base[i]` for item i, `val_base` likewise).
    #[allow(clippy::too_many_arguments)]
    pub fn train_residual(
        x: &[Input],
        y: &[Vec<f64>],
        base: &[Vec<f64>],
        val_x: &[Input],
        val_y: &[Vec<f64>],
        val_base: &[Vec<f64>],
        dense_dim: usize,
        cfg: &MlpConfig,
    ) -> Mlp {
        Self::fit(x, y, base, val_x, val_y, val_base, dense_dim, cfg)
    }

    #[allow(clippy::too_many_arguments)]
    fn fit(
        x: &[Input],
        y: &[Vec<f64>],
        base: &[Vec<f64>],
        val_x: &[Input],
        val_y: &[Vec<f64>],
        val_base: &[Vec<f64>],
        dense_dim: usize,
        cfg: &MlpConfig,
    ) -> Mlp {
        let residual = !base.is_empty();
        let sparse = matches!(x.first(), Some(Input::Sparse(_)));
        let in_rows = if sparse { SPARSE_ROWS } else { dense_dim };
        let (h, m) = (cfg.hidden.max(1), y.first().map_or(0, Vec::len));
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        // Inputs are L2-normalized, so W₁ entries of unit scale give hidden units of unit scale.
        let w1: Vec<f32> = (0..in_rows * h).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        // A residual net starts as the identity correction (v = 0, c = 0); a plain one at the
        // models' base rates.
        let vr = if residual { 0.0 } else { (6.0 / (h + m.max(1)) as f32).sqrt() };
        let v: Vec<f32> = (0..m * h).map(|_| if vr > 0.0 { rng.gen_range(-vr..vr) } else { 0.0 }).collect();
        let c: Vec<f32> = (0..m)
            .map(|j| {
                if residual {
                    return 0.0;
                }
                let p = (y.iter().map(|r| r[j]).sum::<f64>() / y.len().max(1) as f64).clamp(0.01, 0.99);
                (p / (1.0 - p)).ln() as f32
            })
            .collect();
        let mut net = Mlp {
            sparse,
            in_rows,
            hidden: h,
            models: m,
            w1,
            b1: vec![0.0; h],
            v,
            c,
            residual,
            epochs: 0,
            val_loss: f64::INFINITY,
        };
        let mut best = net.clone();
        best.val_loss = net.loss(val_x, val_y, val_base);
        let (mut a_w1, mut a_b1, mut a_v, mut a_c) =
            (Adam::new(in_rows * h), Adam::new(h), Adam::new(m * h), Adam::new(m));
        let mut g_w1 = vec![0f32; in_rows * h];
        let mut touched: Vec<usize> = Vec::new();
        let mut seen = vec![false; in_rows];
        let (mut g_b1, mut g_v, mut g_c) = (vec![0f32; h], vec![0f32; m * h], vec![0f32; m]);
        let (mut z, mut dz) = (vec![0f32; h], vec![0f32; h]);
        let mut order: Vec<usize> = (0..x.len()).collect();
        let mut t = 0i32;
        let mut since_best = 0;
        for epoch in 1..=cfg.max_epochs {
            order.shuffle(&mut rng);
            for batch in order.chunks(cfg.batch.max(1)) {
                let scale = 1.0 / (batch.len() * m.max(1)) as f32;
                for &i in batch {
                    net.hidden_pre(x[i], &mut z);
                    let mut a = z.clone();
                    for ak in &mut a {
                        *ak = ak.max(0.0);
                    }
                    dz.iter_mut().for_each(|d| *d = 0.0);
                    for j in 0..m {
                        let vj = &net.v[j * h..(j + 1) * h];
                        let off = if residual { logit(base[i][j]) } else { 0.0 };
                        let p = sigmoid(off + net.c[j] + vj.iter().zip(&a).map(|(p, q)| p * q).sum::<f32>());
                        let g = (p - y[i][j] as f32) * scale;
                        g_c[j] += g;
                        for k in 0..h {
                            g_v[j * h + k] += g * a[k];
                            dz[k] += g * vj[k];
                        }
                    }
                    for k in 0..h {
                        if z[k] <= 0.0 {
                            dz[k] = 0.0;
                        }
                        g_b1[k] += dz[k];
                    }
                    for (r, val) in entries(x[i]) {
                        if r >= in_rows {
                            continue;
                        }
                        if !seen[r] {
                            seen[r] = true;
                            touched.push(r);
                        }
                        for k in 0..h {
                            g_w1[r * h + k] += val * dz[k];
                        }
                    }
                }
                t += 1;
                for &r in &touched {
                    for k in 0..h {
                        let idx = r * h + k;
                        let g = g_w1[idx] + cfg.l2 * net.w1[idx];
                        a_w1.step(idx, &mut net.w1[idx], g, cfg.lr, t);
                        g_w1[idx] = 0.0;
                    }
                    seen[r] = false;
                }
                touched.clear();
                for k in 0..h {
                    a_b1.step(k, &mut net.b1[k], g_b1[k], cfg.lr, t);
                    g_b1[k] = 0.0;
                }
                for idx in 0..m * h {
                    let g = g_v[idx] + cfg.l2 * net.v[idx];
                    a_v.step(idx, &mut net.v[idx], g, cfg.lr, t);
                    g_v[idx] = 0.0;
                }
                for j in 0..m {
                    a_c.step(j, &mut net.c[j], g_c[j], cfg.lr, t);
                    g_c[j] = 0.0;
                }
            }
            let vl = net.loss(val_x, val_y, val_base);
            tracing::debug!(epoch, val_loss = vl, "mlp epoch");
            if vl < best.val_loss - 1e-5 {
                best = net.clone();
                best.val_loss = vl;
                best.epochs = epoch;
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= 4 {
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_nonlinear_model_split_and_stops_early() {
        // Model 0 is good on cluster A, model 1 on cluster B (XOR-like across models).
        let xs: Vec<Vec<(u32, f32)>> =
            (0..200).map(|i| if i % 2 == 0 { vec![(3, 0.8), (7, 0.6)] } else { vec![(11, 0.6), (13, 0.8)] }).collect();
        let ys: Vec<Vec<f64>> = (0..200).map(|i| if i % 2 == 0 { vec![1.0, 0.0] } else { vec![0.0, 1.0] }).collect();
        let x: Vec<Input> = xs.iter().map(|v| Input::Sparse(v)).collect();
        let cfg = MlpConfig { max_epochs: 40, ..MlpConfig::default() };
        let net = Mlp::train(&x[..160], &ys[..160], &x[160..], &ys[160..], 0, &cfg);
        let a = net.predict(Input::Sparse(&xs[0]), None);
        let b = net.predict(Input::Sparse(&xs[1]), None);
        assert!(a[0] > 0.9 && a[1] < 0.1 && b[0] < 0.1 && b[1] > 0.9, "{a:?} {b:?}");
        assert!(net.epochs >= 1 && net.val_loss < 0.1);
        // Serialized weights round-trip exactly.
        let json = serde_json::to_string(&net).unwrap();
        let back: Mlp = serde_json::from_str(&json).unwrap();
        assert_eq!(back.predict(Input::Sparse(&xs[0]), None), a);
    }

    #[test]
    fn residual_net_corrects_a_biased_base_and_never_ends_worse() {
        let xs: Vec<Vec<(u32, f32)>> =
            (0..200).map(|i| if i % 2 == 0 { vec![(3, 1.0)] } else { vec![(11, 1.0)] }).collect();
        let ys: Vec<Vec<f64>> = (0..200).map(|i| vec![if i % 2 == 0 { 1.0 } else { 0.0 }]).collect();
        // The base is uninformative (0.5 everywhere): the correction must learn the split.
        let base = vec![vec![0.5]; 200];
        let x: Vec<Input> = xs.iter().map(|v| Input::Sparse(v)).collect();
        let cfg = MlpConfig::default();
        let net =
            Mlp::train_residual(&x[..160], &ys[..160], &base[..160], &x[160..], &ys[160..], &base[160..], 0, &cfg);
        assert!(net.residual);
        assert!(net.predict(Input::Sparse(&xs[0]), Some(&[0.5]))[0] > 0.8);
        assert!(net.predict(Input::Sparse(&xs[1]), Some(&[0.5]))[0] < 0.2);
        // A perfect base: nothing to learn; validation loss is never above the base's own.
        let perfect: Vec<Vec<f64>> = ys.iter().map(|y| vec![y[0].clamp(0.01, 0.99)]).collect();
        let net = Mlp::train_residual(
            &x[..160],
            &ys[..160],
            &perfect[..160],
            &x[160..],
            &ys[160..],
            &perfect[160..],
            0,
            &cfg,
        );
        let untouched = -(0.99f64.ln());
        assert!(net.val_loss <= untouched + 1e-6, "{} vs {untouched}", net.val_loss);
    }
}
