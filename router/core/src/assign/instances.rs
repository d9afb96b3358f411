//! Random batch problems shaped like the shipped catalogs: the instances `bench-solver` times and
//! the property and certification tests solve.

use super::Problem;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random batch: m models with prices from $0.1 to $30 per 1M tokens, quality rising with
/// price, per-query difficulty, σ in [0.03, 0.2], a budget at 30 % of the way from the cheapest
/// to the dearest assignment, and (when `capacity`) slots that bind for the best models.
pub fn random_problem(n: usize, m: usize, seed: u64, capacity: bool, gamma: f64) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut p = Problem::new(n, m);
    let mut prices: Vec<f64> = (0..m).map(|_| (rng.gen_range(0.1f64.ln()..30f64.ln())).exp()).collect();
    prices.sort_by(|a, b| a.total_cmp(b));
    let logit = |x: f64| (x / (1.0 - x)).ln();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (mut lo, mut hi) = (0.0, 0.0);
    for i in 0..n {
        let difficulty: f64 = rng.gen_range(-2.0..2.0);
        let input: f64 = rng.gen_range(50.0..2000.0);
        let output: f64 = rng.gen_range(5.0..500.0);
        let (mut cmin, mut cmax) = (f64::INFINITY, 0.0f64);
        for (j, price) in prices.iter().enumerate() {
            let k = p.at(i, j);
            let q = 0.35 + 0.5 * (j as f64 + 0.5) / m as f64;
            p.mu[k] = sig(logit(q) - difficulty + rng.gen_range(-0.7..0.7));
            p.sigma[k] = rng.gen_range(0.03..0.2);
            p.cost[k] = price * (input + output) / 1e6;
            p.tokens[k] = input + output;
            cmin = cmin.min(p.cost[k]);
            cmax = cmax.max(p.cost[k]);
        }
        lo += cmin;
        hi += cmax;
    }
    p.budget = lo + 0.3 * (hi - lo);
    if capacity {
        let s = ((n as f64) * if m > 2 { 0.35 } else { 0.7 }).ceil() as usize;
        p.slots = vec![s.max(1); m];
    }
    p.gamma = gamma;
    p
}

/// `random_problem` with uncertain costs: each model's realized cost has a coefficient of
/// variation in [0.2, 1.5] (reasoning models' thinking tokens), and the budget row is the chance
/// constraint at ε = 0.05 (κ = 1.645).
pub fn random_chance_problem(n: usize, m: usize, seed: u64, capacity: bool, gamma: f64) -> Problem {
    let mut p = random_problem(n, m, seed, capacity, gamma);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a7ce);
    let cv: Vec<f64> = (0..m).map(|_| rng.gen_range(0.2..1.5)).collect();
    for i in 0..n {
        for (j, c) in cv.iter().enumerate() {
            let k = p.at(i, j);
            p.cost_var[k] = (c * p.cost[k]).powi(2);
        }
    }
    p.kappa = super::chance::kappa_for(0.05);
    p
}
