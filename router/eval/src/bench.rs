//! Solver benchmark (`llmroute-eval bench-solver`): `fast` against HiGHS on random instances shaped
//! like real batches, nominal and Γ-robust; prints time percentiles and the objective gap.

use llmroute_core::assign::instances::{random_chance_problem, random_problem};
use llmroute_core::assign::{Assigner, Fast, Mip, SolveStatus};
use llmroute_core::Result;
use std::time::Instant;

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
