//! Rationing by price: a priced batch assigner (maximize Σ (μ − λ·ĉ)·x) whose answer does not fit
//! the batch's budget raises the batch's price λ' ≥ λ, the same for every query, to the least
//! value whose answer fits (Σ ĉ·x + κ·√(Σ v·x) ≤ B and the capacities), instead of solving the
//! budgeted problem.
//!
//! Why try it: the budgeted problem's chance row rations by cost spread as well as by expected
//! cost, so a heavy-tailed model loses to a cheap one even where it is worth its expected cost.
//! A uniform price keeps every answer on the per-query-price family that the price was
//! calibrated on, so what the batch gives up is what per-query pricing at a slightly higher price
//! gives up. Measured over 6 splits per dataset (`scripts/real_cost_seeds.py`,
//! docs/results/real-cost-seeds.txt): the worst matched-cost point moves by +0.2 point on
//! SimpleQA and −0.5 on the reasoning set against the budgeted solve, so `llmroute-eval --ration
//! price` is an option, not the default, and the router does not use it.
//!
//! The price search: double λ' until the answer fits (or 40 doublings: then the budgeted
//! problem is solved as before, which returns its cheapest answer marked relaxed), then bisect
//! between the last price that did not fit and the first that did (`ROUNDS` steps), keeping the
//! fitting answer with the lowest price. Each step is one solve of the priced problem with no
//! budget row (the capacities stay): for `fast` a per-query argmax unless capacities bind.

use super::problem::{Assignment, Problem, SolveStatus};
use crate::Result;

/// Bisection steps between the last price that did not fit and the first that did.
const ROUNDS: usize = 24;
/// Doublings of the price before giving up on a fitting answer.
const DOUBLINGS: usize = 40;

/// `p` (raw μ, its budget and κ the batch's plan) rationed at a uniform price λ' ≥ `lambda`,
/// through `linear` (an assigner's solve). Returns the answer (its objective and status as for
/// `p` at price λ': Σ (μ − λ'·ĉ)·x) and λ'.
pub fn ration(p: &Problem, lambda: f64, linear: impl Fn(&Problem) -> Result<Assignment>) -> Result<(Assignment, f64)> {
    let lambda = lambda.max(0.0);
    let at = |l: f64| -> Result<Assignment> {
        let mut q = p.clone();
        q.budget = f64::INFINITY;
        q.kappa = 0.0;
        q.price(l);
        linear(&q)
    };
    let fits = |a: &Assignment| p.violation(&a.choice).is_none();
    let first = at(lambda)?;
    if fits(&first) {
        return Ok((first, lambda));
    }
    // A starting step for a zero price: one unit of μ per mean predicted cost.
    let positive: Vec<f64> = p.cost.iter().copied().filter(|&c| c > 0.0).collect();
    let scale = if lambda > 0.0 {
        lambda
    } else if positive.is_empty() {
        return whole(p, lambda, linear);
    } else {
        positive.len() as f64 / positive.iter().sum::<f64>()
    };
    let (mut lo, mut hi) = (lambda, lambda + scale);
    let mut found = None;
    for _ in 0..DOUBLINGS {
        let a = at(hi)?;
        if fits(&a) {
            found = Some(a);
            break;
        }
        lo = hi;
        hi = lambda + 2.0 * (hi - lambda);
    }
    let Some(mut best) = found else {
        return whole(p, lambda, linear);
    };
    for _ in 0..ROUNDS {
        let mid = 0.5 * (lo + hi);
        let a = at(mid)?;
        if fits(&a) {
            best = a;
            hi = mid;
        } else {
            lo = mid;
        }
    }
    best.status = SolveStatus::Feasible;
    best.bound = None;
    Ok((best, hi))
}

/// No price makes the answer fit (the budget does not cover the cheapest answer's spread, or
/// capacity binds): the budgeted problem at price `lambda`, as the assigner solves it.
fn whole(p: &Problem, lambda: f64, linear: impl Fn(&Problem) -> Result<Assignment>) -> Result<(Assignment, f64)> {
    let mut q = p.clone();
    q.price(lambda);
    Ok((linear(&q)?, lambda))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::chance::kappa_for;
    use crate::assign::{Assigner, Fast};

    fn problem() -> Problem {
        // 12 queries, 3 models: cheap/weak, middle, dear/strong with a wide cost spread.
        let (n, m) = (12, 3);
        let mut p = Problem::new(n, m);
        for i in 0..n {
            let t = i as f64 / n as f64;
            for (j, (mu, c, v)) in
                [(0.3 + 0.2 * t, 1.0, 0.0), (0.5 + 0.3 * t, 3.0, 1.0), (0.9, 8.0, 16.0)].iter().enumerate()
            {
                let k = p.at(i, j);
                p.mu[k] = *mu;
                p.cost[k] = *c;
                p.cost_var[k] = *v;
            }
        }
        p
    }

    #[test]
    fn an_answer_that_fits_is_the_priced_argmax() {
        let mut p = problem();
        p.budget = 1e9;
        let (a, l) = ration(&p, 0.01, |q| Fast::default().solve(q)).unwrap();
        assert_eq!(l, 0.01);
        for i in 0..p.n {
            let best = (0..p.m).max_by(|&x, &y| {
                (p.mu[p.at(i, x)] - 0.01 * p.cost[p.at(i, x)])
                    .total_cmp(&(p.mu[p.at(i, y)] - 0.01 * p.cost[p.at(i, y)]))
            });
            assert_eq!(Some(a.choice[i]), best);
        }
    }

    #[test]
    fn a_tight_budget_raises_one_price_to_the_least_that_fits() {
        let mut p = problem();
        p.budget = 40.0;
        p.kappa = kappa_for(0.05);
        let (a, l) = ration(&p, 0.01, |q| Fast::default().solve(q)).unwrap();
        assert!(p.violation(&a.choice).is_none(), "{:?}", p.violation(&a.choice));
        assert!(l > 0.01);
        // Every query takes its argmax at λ' (one price for all), and a slightly lower price
        // breaks the budget.
        let argmax = |l: f64| -> Vec<usize> {
            (0..p.n)
                .map(|i| {
                    (0..p.m)
                        .max_by(|&x, &y| {
                            (p.mu[p.at(i, x)] - l * p.cost[p.at(i, x)])
                                .total_cmp(&(p.mu[p.at(i, y)] - l * p.cost[p.at(i, y)]))
                        })
                        .unwrap_or(0)
                })
                .collect()
        };
        assert_eq!(a.choice, argmax(l));
        assert!(p.violation(&argmax(l * 0.98)).is_some());
    }

    #[test]
    fn a_budget_below_the_cheapest_answer_falls_back_to_the_solver() {
        let mut p = problem();
        p.budget = 5.0;
        let (a, _) = ration(&p, 0.01, |q| Fast::default().solve(q)).unwrap();
        assert_eq!(a.status, SolveStatus::Relaxed);
        assert!(a.choice.iter().all(|&j| j == 0));
    }
}
