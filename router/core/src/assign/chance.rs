//! The budget as a chance constraint: Σ ĉ·x + κ·√(Σ v·x) ≤ B (DESIGN.md, "cost uncertainty").
//!
//! Both `fast` and `mip` solve it the same way, through their linear solver: first the point-cost
//! problem (κ = 0), a relaxation whose bound is an upper bound on the chance-constrained optimum
//! and whose answer is optimal when it already satisfies the chance row; otherwise a few rounds
//! of the tangent linearisation at the current answer's variance v0 (`Problem::linearized`):
//! every answer of the tangent problem satisfies the chance row (√ is concave), and re-taking the
//! tangent at the new answer's variance converges to a fixed point of the KKT conditions. The
//! best chance-feasible answer is returned.

use super::problem::{Assignment, Problem, SolveStatus};
use crate::Result;

/// Tangent rounds after the point-cost solve.
const ROUNDS: usize = 3;

/// κ for an allowed over-budget probability ε under a normal batch sum: Φ⁻¹(1 − ε).
pub fn kappa_for(max_over_probability: f64) -> f64 {
    let e = max_over_probability.clamp(1e-9, 0.5);
    normal_quantile(1.0 - e)
}

/// Φ⁻¹(p) by Acklam's rational approximation (relative error < 1.2e-9), p in (0, 1).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let pl = 0.02425;
    if p < pl {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - pl {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

/// Solves `p` with its chance row through `linear`, an exact or heuristic solver of the linear
/// (point-cost) problem.
pub fn solve(p: &Problem, linear: impl Fn(&Problem) -> Result<Assignment>) -> Result<Assignment> {
    if !p.is_chance() {
        return linear(p);
    }
    let mut point = p.clone();
    point.kappa = 0.0;
    let first = linear(&point)?;
    // The point-cost problem relaxes the chance row: its bound bounds ours.
    let bound = first.bound;
    if first.status != SolveStatus::Relaxed && p.violation(&first.choice).is_none() {
        return Ok(first);
    }
    let mut v0 = p.cost_var_of(&first.choice);
    if v0 <= 0.0 {
        let pos: Vec<f64> = p.cost_var.iter().copied().filter(|&v| v > 0.0).collect();
        v0 = pos.iter().sum::<f64>() / pos.len().max(1) as f64 * p.n as f64 / 2.0;
    }
    let mut best: Option<Assignment> = None;
    let mut least_over: Option<(f64, Assignment)> = None;
    for _ in 0..ROUNDS {
        let a = linear(&p.linearized(v0))?;
        if p.violation(&a.choice).is_none() {
            if best.as_ref().is_none_or(|b| a.objective > b.objective) {
                best = Some(a.clone());
            }
        } else {
            let over = p.budget_use(&a.choice) - p.budget;
            if least_over.as_ref().is_none_or(|(o, _)| over < *o) {
                least_over = Some((over, a.clone()));
            }
        }
        let v1 = p.cost_var_of(&a.choice);
        if v1 <= 0.0 || (v1 - v0).abs() <= 1e-3 * v0 {
            break;
        }
        v0 = v1;
    }
    Ok(match best {
        Some(mut a) => {
            a.bound = bound;
            a.status = if bound.is_some_and(|b| b - a.objective <= 1e-9 * b.abs().max(1.0)) {
                SolveStatus::Optimal
            } else {
                SolveStatus::Feasible
            };
            a
        }
        None => {
            // No tangent answer met the chance row (the budget cannot cover even the cheapest
            // choice's spread, or capacity binds): the one closest to it, marked relaxed.
            let mut a = least_over.map(|(_, a)| a).unwrap_or(first);
            a.status = SolveStatus::Relaxed;
            a
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::{Assigner, Fast, Mip};

    #[test]
    fn normal_quantiles() {
        assert!((normal_quantile(0.95) - 1.6448536).abs() < 1e-6);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.001) + 3.0902323).abs() < 1e-6);
        assert!((kappa_for(0.05) - 1.6448536).abs() < 1e-6);
    }

    /// Two models: a cheap certain one and a dear uncertain one. The point-cost answer sends every
    /// query it can afford to the dear model; the chance row keeps room for its spread.
    #[test]
    fn chance_row_holds_and_point_answer_would_break_it() {
        let (n, m) = (20, 2);
        let mut p = Problem::new(n, m);
        for i in 0..n {
            let (a, b) = (i * m, i * m + 1);
            p.mu[a] = 0.5;
            p.mu[b] = 0.8 + 0.005 * i as f64;
            p.cost[a] = 1.0;
            p.cost[b] = 3.0;
            p.cost_var[b] = 4.0;
        }
        p.budget = 40.0;
        p.kappa = kappa_for(0.05);
        let mut point = p.clone();
        point.kappa = 0.0;
        let pa = Fast::default().solve(&point).unwrap();
        assert!(p.violation(&pa.choice).is_some(), "the point answer must break the chance row");
        for a in [Fast::default().solve(&p).unwrap(), Mip::default().solve(&p).unwrap()] {
            assert!(p.violation(&a.choice).is_none(), "{:?}", p.violation(&a.choice));
            assert!(a.status != SolveStatus::Relaxed);
            assert!(a.objective < pa.objective);
            // Not needlessly timid: one more dear query would break the row.
            let dear = a.choice.iter().filter(|&&j| j == 1).count();
            let (c, v) = (n as f64 + 2.0 * (dear + 1) as f64, 4.0 * (dear + 1) as f64);
            assert!(c + p.kappa * v.sqrt() > p.budget, "dear {dear}");
        }
    }
}
