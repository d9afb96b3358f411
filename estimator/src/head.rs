//! A trained head: per-model logistic regression on sentence embeddings (or any dense features),
//! fitted by full-batch Adam with L2 regularization. Deterministic (zero init, fixed order).

/// One logistic model per routed model: p = σ(w·x + b).
#[derive(Debug, Clone)]
pub struct LogisticHead {
    /// weights[m] has dim + 1 entries (the last is the bias).
    pub weights: Vec<Vec<f32>>,
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl LogisticHead {
    /// Fits one model per column of `y` (scores in [0, 1], used as soft labels).
    pub fn train(x: &[Vec<f32>], y: &[Vec<f64>], l2: f32, epochs: usize) -> LogisticHead {
        let n = x.len();
        let dim = x.first().map_or(0, Vec::len);
        let models = y.first().map_or(0, Vec::len);
        let mut weights = Vec::with_capacity(models);
        for m in 0..models {
            let mut w = vec![0f32; dim + 1];
            let (mut mom, mut vel) = (vec![0f32; dim + 1], vec![0f32; dim + 1]);
            let (lr, b1, b2, eps) = (0.05f32, 0.9f32, 0.999f32, 1e-8f32);
            for t in 1..=epochs {
                let mut grad = vec![0f32; dim + 1];
                for (xi, yi) in x.iter().zip(y) {
                    let z: f32 = xi.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + w[dim];
                    let e = sigmoid(z) - yi[m] as f32;
                    for (g, a) in grad.iter_mut().zip(xi) {
                        *g += e * a;
                    }
                    grad[dim] += e;
                }
                for k in 0..=dim {
                    let reg = if k < dim { l2 * w[k] } else { 0.0 };
                    let g = grad[k] / n.max(1) as f32 + reg;
                    mom[k] = b1 * mom[k] + (1.0 - b1) * g;
                    vel[k] = b2 * vel[k] + (1.0 - b2) * g * g;
                    let mh = mom[k] / (1.0 - b1.powi(t as i32));
                    let vh = vel[k] / (1.0 - b2.powi(t as i32));
                    w[k] -= lr * mh / (vh.sqrt() + eps);
                }
            }
            weights.push(w);
        }
        LogisticHead { weights }
    }

    /// Probability of a good answer per model.
    pub fn predict(&self, x: &[f32]) -> Vec<f64> {
        self.weights
            .iter()
            .map(|w| {
                let d = w.len() - 1;
                sigmoid(x.iter().zip(&w[..d]).map(|(a, b)| a * b).sum::<f32>() + w[d]) as f64
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_data_is_learned() {
        let x: Vec<Vec<f32>> = (0..40).map(|i| if i % 2 == 0 { vec![1.0, 0.0] } else { vec![0.0, 1.0] }).collect();
        let y: Vec<Vec<f64>> = (0..40).map(|i| vec![if i % 2 == 0 { 1.0 } else { 0.0 }, 0.5]).collect();
        let h = LogisticHead::train(&x, &y, 1e-3, 300);
        let a = h.predict(&[1.0, 0.0]);
        let b = h.predict(&[0.0, 1.0]);
        assert!(a[0] > 0.9 && b[0] < 0.1, "{a:?} {b:?}");
        assert!((a[1] - 0.5).abs() < 0.05);
    }
}
