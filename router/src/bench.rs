//! Solver benchmark (`llm-router bench-solver`): `fast` against HiGHS on random instances shaped
//! like real batches, nominal and Γ-robust; prints time percentiles and the objective gap.

use crate::assign::{Assigner, Fast, Mip, Problem, SolveStatus};
use crate::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

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
    p.kappa = crate::assign::chance::kappa_for(0.05);
    p
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub n: usize,
    pub m: usize,
    pub mode: &'static str,
    pub fast_p50_ms: f64,
    pub fast_p99_ms: f64,
    pub highs_ms: f64,
    pub highs_status: String,
    /// (HiGHS objective − fast objective) / |HiGHS objective|, in percent (negative: fast better).
    pub gap_pct: f64,
    /// (HiGHS dual bound − fast objective) / |bound|, in percent, when HiGHS reports a bound.
    pub gap_to_bound_pct: Option<f64>,
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let r = ((q / 100.0) * v.len() as f64).ceil() as usize;
    v[r.clamp(1, v.len()) - 1]
}

/// Runs the benchmark grid; `reps` timed `fast` solves per cell, one HiGHS solve per cell.
pub fn bench_solver(ns: &[usize], ms: &[usize], reps: usize, highs_limit_s: f64, seed: u64) -> Result<Vec<BenchRow>> {
    let fast = Fast::default();
    let mip = Mip { time_limit_s: highs_limit_s, rel_gap: 1e-4 };
    let mut rows = Vec::new();
    for &n in ns {
        for &m in ms {
            for (mode, gamma, chance) in
                [("nominal", 0.0, false), ("robust", (n as f64 * 0.1).round(), false), ("chance", 0.0, true)]
            {
                let s = seed ^ (n as u64 * 131 + m as u64);
                let p = if chance {
                    random_chance_problem(n, m, s, true, gamma)
                } else {
                    random_problem(n, m, s, true, gamma)
                };
                let mut times = Vec::with_capacity(reps);
                let mut a = fast.solve(&p)?;
                for _ in 0..reps.max(1) {
                    let t = Instant::now();
                    a = fast.solve(&p)?;
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
                let t = Instant::now();
                // The chance row: HiGHS solves its exact piecewise-linear relaxation, whose dual
                // bound is an upper bound on the chance optimum (`Mip::chance_bound`).
                let h = if chance { mip.chance_bound(&p, 64)? } else { mip.solve(&p)? };
                let highs_ms = t.elapsed().as_secs_f64() * 1e3;
                let status = match h.status {
                    SolveStatus::Optimal => "optimal",
                    SolveStatus::Feasible => "time-limit",
                    SolveStatus::Relaxed => "infeasible",
                };
                let row = BenchRow {
                    n,
                    m,
                    mode,
                    fast_p50_ms: pct(&mut times, 50.0),
                    fast_p99_ms: pct(&mut times, 99.0),
                    highs_ms,
                    highs_status: status.into(),
                    gap_pct: 100.0 * (h.objective - a.objective) / h.objective.abs().max(1e-12),
                    gap_to_bound_pct: h.bound.map(|b| 100.0 * (b - a.objective) / b.abs().max(1e-12)),
                };
                eprintln!(
                    "n={n:>5} m={m:>3} {mode:<8} fast p50 {:.3} ms p99 {:.3} ms | HiGHS {:.1} ms ({status}) | gap {:+.4} %",
                    row.fast_p50_ms, row.fast_p99_ms, row.highs_ms, row.gap_pct
                );
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
