//! `fast`: the online solver. The batch problem is a multiple-choice knapsack with capacities.
//!
//! 1. Budget: for fixed model prices the LP relaxation of a multiple-choice knapsack is solved
//!    exactly by the greedy over each query's upper convex hull of (cost, score) points, taking
//!    hull increments in order of efficiency (Δscore / Δcost) — the Lagrangian price on the budget
//!    is the efficiency of the increment that does not fit. This gives an integral assignment
//!    (one query left at its lower point) and the LP bound.
//! 2. Capacities (slots, KV tokens): Lagrangian prices on saturated models, raised until the
//!    greedy's assignment fits; every price vector gives a valid upper bound.
//! 3. Repair and improve: move queries out of overfull models, downgrade where over budget, then
//!    spend any leftover budget and exchange (one upgrade paid for by cheaper downgrades).
//! 4. Γ-robustness (Bertsimas–Sim): for fixed z the robust problem is a nominal one with scores
//!    μ − (σ − z)⁺ and objective −Γz; a coarse-to-fine search over the breakpoints z ∈ {0, σ}
//!    on the LP bound picks z, and the integral solution's exact robust value is reported.

use super::problem::{min_cost_assignment, Assignment, Problem, SolveStatus, Usage};
use super::Assigner;
use crate::Result;

/// The fast assigner. Defaults suit batches of up to a few thousand queries.
#[derive(Debug, Clone)]
pub struct Fast {
    /// Rounds of capacity-price updates.
    pub price_rounds: usize,
    /// Exchange moves tried per solve.
    pub exchanges: usize,
    /// Candidate values of z (σ quantiles) in the robust search.
    pub z_candidates: usize,
}

impl Default for Fast {
    fn default() -> Self {
        Fast { price_rounds: 12, exchanges: 8, z_candidates: 16 }
    }
}

struct Greedy {
    choice: Vec<usize>,
    lp_bound: f64,
    /// The budget's Lagrangian price (0 when the budget does not bind).
    lambda: f64,
}

#[derive(Clone, Copy)]
struct Inc {
    eff: f64,
    dc: f64,
    da: f64,
    i: u32,
    level: u32,
}

/// Exact LP of the multiple-choice knapsack with one budget row, plus the greedy integral point.
/// `None` when even the cheapest choice per query exceeds the budget.
/// Each query's allowed models by ascending cost (the order does not depend on the scores, so
/// one sort serves every z of the robust search and every price round).
fn cost_order(p: &Problem) -> Vec<Vec<usize>> {
    (0..p.n)
        .map(|i| {
            let mut o: Vec<usize> = (0..p.m).filter(|&j| p.allowed[p.at(i, j)]).collect();
            o.sort_by(|&x, &y| p.cost[p.at(i, x)].total_cmp(&p.cost[p.at(i, y)]));
            o
        })
        .collect()
}

fn mckp(
    p: &Problem,
    order: &[Vec<usize>],
    adj: &[f64],
    hulls: &mut Vec<Vec<usize>>,
    incs: &mut Vec<Inc>,
) -> Option<Greedy> {
    let (n, m) = (p.n, p.m);
    incs.clear();
    hulls.resize_with(n, Vec::new);
    let mut base_cost = 0.0;
    let mut value = 0.0;
    for (i, hull) in hulls.iter_mut().enumerate() {
        let c = |j: usize| p.cost[i * m + j];
        let a = |j: usize| adj[i * m + j];
        hull.clear();
        for &j in &order[i] {
            if let Some(&last) = hull.last() {
                if a(j) <= a(last) {
                    continue;
                }
            }
            while hull.len() >= 2 {
                let (x, y) = (hull[hull.len() - 2], hull[hull.len() - 1]);
                // Drop y when it lies on or below the segment x → j (not strictly concave).
                if (a(y) - a(x)) * (c(j) - c(y)) <= (a(j) - a(y)) * (c(y) - c(x)) {
                    hull.pop();
                } else {
                    break;
                }
            }
            hull.push(j);
        }
        base_cost += c(hull[0]);
        value += a(hull[0]);
        for k in 1..hull.len() {
            let (dc, da) = (c(hull[k]) - c(hull[k - 1]), a(hull[k]) - a(hull[k - 1]));
            incs.push(Inc { eff: da / dc.max(1e-300), dc, da, i: i as u32, level: k as u32 });
        }
    }
    if base_cost > p.budget * (1.0 + 1e-12) {
        return None;
    }
    incs.sort_unstable_by(|x, y| y.eff.total_cmp(&x.eff));
    let mut rem = p.budget - base_cost;
    let mut level = vec![0u32; n];
    let mut blocked = vec![false; n];
    let mut lp_bound = None;
    let mut lambda = 0.0;
    for inc in incs.iter() {
        let i = inc.i as usize;
        if blocked[i] || level[i] + 1 != inc.level {
            continue;
        }
        if inc.dc <= rem {
            rem -= inc.dc;
            value += inc.da;
            level[i] = inc.level;
        } else {
            if lp_bound.is_none() {
                lp_bound = Some(value + inc.da * rem / inc.dc);
                lambda = inc.eff;
            }
            blocked[i] = true;
        }
    }
    let choice = (0..n).map(|i| hulls[i][level[i] as usize]).collect();
    Some(Greedy { choice, lp_bound: lp_bound.unwrap_or(value), lambda })
}

/// Regret of query i leaving model j: its priced score there minus its best alternative's.
fn regret(p: &Problem, s: &[f64], lambda: f64, i: usize, j: usize) -> f64 {
    let v = |k: usize| s[p.at(i, k)] - lambda * p.cost[p.at(i, k)];
    let alt = (0..p.m).filter(|&k| k != j && p.allowed[p.at(i, k)]).map(v).fold(f64::NEG_INFINITY, f64::max);
    v(j) - alt
}

/// Moves queries out of overfull models (least regret first), then downgrades until the budget
/// holds. Returns false if some constraint could not be met.
fn repair(p: &Problem, s: &[f64], lambda: f64, choice: &mut [usize]) -> bool {
    let mut u = Usage::of(p, choice);
    for j in 0..p.m {
        if !u.over(p, j) {
            continue;
        }
        let mut on_j: Vec<(f64, usize)> =
            (0..p.n).filter(|&i| choice[i] == j).map(|i| (regret(p, s, lambda, i, j), i)).collect();
        on_j.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        for (_, i) in on_j {
            if !u.over(p, j) {
                break;
            }
            let best = (0..p.m).filter(|&k| k != j && p.allowed[p.at(i, k)] && u.room(p, i, k)).max_by(|&a, &b| {
                let v = |k: usize| s[p.at(i, k)] - lambda * p.cost[p.at(i, k)];
                v(a).total_cmp(&v(b))
            });
            if let Some(k) = best {
                u.move_query(p, choice, i, k);
            }
        }
    }
    while u.cost > p.budget * (1.0 + 1e-12) {
        // The downgrade that loses the least score per dollar saved.
        let mut best: Option<(f64, usize, usize)> = None;
        for i in 0..p.n {
            let j = choice[i];
            for k in 0..p.m {
                let (kj, kk) = (p.at(i, j), p.at(i, k));
                let saved = p.cost[kj] - p.cost[kk];
                if k == j || !p.allowed[kk] || saved <= 0.0 || !u.room(p, i, k) {
                    continue;
                }
                let ratio = (s[kj] - s[kk]) / saved;
                if best.is_none_or(|b| ratio < b.0) {
                    best = Some((ratio, i, k));
                }
            }
        }
        match best {
            Some((_, i, k)) => u.move_query(p, choice, i, k),
            None => return false,
        }
    }
    (0..p.m).all(|j| !u.over(p, j))
}

/// Spends leftover budget on the best-fitting upgrades, then tries exchanges: one upgrade that
/// does not fit, paid for by the cheapest-per-score downgrades of other queries.
fn improve(p: &Problem, s: &[f64], choice: &mut [usize], exchanges: usize) {
    let mut u = Usage::of(p, choice);
    // Upgrades that fit the leftover budget, best gain first, in sorted passes.
    let fill = |u: &mut Usage, choice: &mut [usize]| {
        let mut cands: Vec<(f64, usize, usize)> = Vec::new();
        for _ in 0..4 {
            cands.clear();
            let rem = p.budget - u.cost;
            for i in 0..p.n {
                let kj = p.at(i, choice[i]);
                for k in 0..p.m {
                    let kk = p.at(i, k);
                    let gain = s[kk] - s[kj];
                    if gain > 1e-12 && p.allowed[kk] && p.cost[kk] - p.cost[kj] <= rem {
                        cands.push((gain, i, k));
                    }
                }
            }
            if cands.is_empty() {
                break;
            }
            cands.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            let mut moved = vec![false; p.n];
            let mut any = false;
            for &(_, i, k) in &cands {
                let (kj, kk) = (p.at(i, choice[i]), p.at(i, k));
                if moved[i] || p.cost[kk] - p.cost[kj] > p.budget - u.cost || !u.room(p, i, k) {
                    continue;
                }
                u.move_query(p, choice, i, k);
                moved[i] = true;
                any = true;
            }
            if !any {
                break;
            }
        }
    };
    fill(&mut u, choice);
    // When a model is full, upgrades into it need someone to leave: pairwise swaps.
    if p.n <= 512 && (0..p.m).any(|j| u.count[j] >= p.slots[j]) {
        for _ in 0..3 {
            let mut any = false;
            for a in 0..p.n {
                for b in (a + 1)..p.n {
                    let (ja, jb) = (choice[a], choice[b]);
                    if !u.swap_fits(p, choice, a, b) {
                        continue;
                    }
                    let gain = s[p.at(a, jb)] + s[p.at(b, ja)] - s[p.at(a, ja)] - s[p.at(b, jb)];
                    let dc = p.cost[p.at(a, jb)] + p.cost[p.at(b, ja)] - p.cost[p.at(a, ja)] - p.cost[p.at(b, jb)];
                    if gain > 1e-12 && dc <= p.budget - u.cost {
                        u.swap(p, choice, a, b);
                        any = true;
                    }
                }
            }
            if !any {
                break;
            }
            fill(&mut u, choice);
        }
    }
    if !p.budget.is_finite() {
        return;
    }
    for _ in 0..exchanges {
        let rem = p.budget - u.cost;
        // Upgrades that do not fit, best gain first.
        let mut ups: Vec<(f64, f64, usize, usize)> = Vec::new();
        for i in 0..p.n {
            let kj = p.at(i, choice[i]);
            let mut best: Option<(f64, f64, usize, usize)> = None;
            for k in 0..p.m {
                let kk = p.at(i, k);
                let (gain, dc) = (s[kk] - s[kj], p.cost[kk] - p.cost[kj]);
                if gain > 1e-12
                    && p.allowed[kk]
                    && dc > rem
                    && u.room(p, i, k)
                    && best.is_none_or(|b| gain / dc > b.0 / b.1)
                {
                    best = Some((gain, dc, i, k));
                }
            }
            ups.extend(best);
        }
        ups.sort_unstable_by(|a, b| (b.0 / b.1).total_cmp(&(a.0 / a.1)));
        ups.truncate(16);
        // Downgrades: loss per dollar saved, cheapest first (one per query).
        let mut downs: Vec<(f64, f64, f64, usize, usize)> = Vec::new();
        for i in 0..p.n {
            let kj = p.at(i, choice[i]);
            let mut best: Option<(f64, f64, f64, usize, usize)> = None;
            for k in 0..p.m {
                let kk = p.at(i, k);
                let (loss, saved) = (s[kj] - s[kk], p.cost[kj] - p.cost[kk]);
                if saved > 0.0 && p.allowed[kk] && u.room(p, i, k) && best.is_none_or(|b| loss / saved < b.0) {
                    best = Some((loss / saved, loss, saved, i, k));
                }
            }
            downs.extend(best);
        }
        downs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut applied = false;
        for &(gain, dc, i, k) in &ups {
            let need = dc - rem;
            let (mut saved, mut loss, mut picked) = (0.0, 0.0, Vec::new());
            let mut extra = vec![0usize; p.m];
            let mut extra_kv = vec![0.0; p.m];
            for &(_, l, sv, i2, k2) in &downs {
                if saved >= need || loss >= gain {
                    break;
                }
                // Capacity: downgrades must still fit together, and leave the upgrade's target room.
                let t = p.tokens[p.at(i2, k2)];
                if i2 == i
                    || k2 == k
                    || u.count[k2] + extra[k2] + 1 > p.slots[k2]
                    || u.kv[k2] + extra_kv[k2] + t > p.kv_free[k2]
                {
                    continue;
                }
                extra[k2] += 1;
                extra_kv[k2] += t;
                saved += sv;
                loss += l;
                picked.push((i2, k2));
            }
            if saved >= need && loss + 1e-12 < gain {
                for (i2, k2) in picked {
                    u.move_query(p, choice, i2, k2);
                }
                u.move_query(p, choice, i, k);
                applied = true;
                break;
            }
        }
        if !applied {
            break;
        }
        fill(&mut u, choice);
    }
}

/// Queries assigned to model j.
fn u_count(choice: &[usize], j: usize) -> usize {
    choice.iter().filter(|&&c| c == j).count()
}

impl Fast {
    /// Nominal solve with per-pair scores `s`; returns (choice, upper bound on Σ s·x, feasible).
    fn nominal(&self, p: &Problem, order: &[Vec<usize>], s: &[f64]) -> (Vec<usize>, f64, bool) {
        let mut hulls = Vec::new();
        let mut incs = Vec::new();
        let mut nu = vec![0.0; p.m];
        let mut kappa = vec![0.0; p.m];
        let mut adj = s.to_vec();
        let mut bound = f64::INFINITY;
        let mut last: Option<Greedy> = None;
        for _ in 0..self.price_rounds.max(1) {
            let Some(g) = mckp(p, order, &adj, &mut hulls, &mut incs) else {
                return (min_cost_assignment(p), f64::INFINITY, false);
            };
            let dual_extra: f64 = (0..p.m)
                .map(|j| {
                    let slots = if p.slots[j] >= p.n { 0.0 } else { nu[j] * p.slots[j] as f64 };
                    let kv = if p.kv_free[j].is_finite() { kappa[j] * p.kv_free[j] } else { 0.0 };
                    slots + kv
                })
                .sum();
            bound = bound.min(g.lp_bound + dual_extra);
            let u = Usage::of(p, &g.choice);
            let over: Vec<usize> = (0..p.m).filter(|&j| u.over(p, j)).collect();
            if over.is_empty() {
                last = Some(g);
                break;
            }
            for &j in &over {
                let mut regrets: Vec<(f64, usize)> = (0..p.n)
                    .filter(|&i| g.choice[i] == j)
                    .map(|i| (regret(p, &adj, g.lambda, i, j).max(0.0), i))
                    .collect();
                regrets.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
                if u.count[j] > p.slots[j] {
                    let excess = u.count[j] - p.slots[j];
                    nu[j] += regrets[excess - 1].0 + 1e-9;
                }
                if u.kv[j] > p.kv_free[j] {
                    let mut per_token: Vec<(f64, f64)> = regrets
                        .iter()
                        .map(|&(r, i)| (r / p.tokens[p.at(i, j)].max(1e-9), p.tokens[p.at(i, j)]))
                        .collect();
                    per_token.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
                    let mut freed = 0.0;
                    for (ratio, t) in per_token {
                        freed += t;
                        if u.kv[j] - freed <= p.kv_free[j] {
                            kappa[j] += ratio + 1e-12;
                            break;
                        }
                    }
                }
            }
            for i in 0..p.n {
                for j in 0..p.m {
                    let k = p.at(i, j);
                    adj[k] = s[k] - nu[j] - kappa[j] * p.tokens[k];
                }
            }
            last = Some(g);
        }
        let Some(mut g) = last else {
            return (min_cost_assignment(p), f64::INFINITY, false);
        };
        // The additive price updates can cycle when one model's slots and the budget bind
        // together (moving queries off it costs budget, which moves others onto it). With a single
        // over-full model, bisect its slot price: its count falls as the price rises.
        let u = Usage::of(p, &g.choice);
        let over: Vec<usize> = (0..p.m).filter(|&j| u.over(p, j)).collect();
        if let [j] = over[..] {
            if u.count[j] > p.slots[j] {
                let spread = s.iter().fold(0.0f64, |a, &x| a.max(x.abs())) * 2.0 + 1.0;
                let (mut lo, mut hi) = (nu[j], nu[j] + spread);
                let mut best: Option<Greedy> = None;
                for _ in 0..24 {
                    let mid = 0.5 * (lo + hi);
                    for i in 0..p.n {
                        let k = p.at(i, j);
                        adj[k] = s[k] - mid - kappa[j] * p.tokens[k];
                    }
                    let Some(t) = mckp(p, order, &adj, &mut hulls, &mut incs) else { break };
                    if u_count(&t.choice, j) <= p.slots[j] {
                        hi = mid;
                        best = Some(t);
                    } else {
                        lo = mid;
                    }
                }
                if let Some(t) = best {
                    g = t;
                }
            }
        }
        let mut choice = g.choice;
        if !repair(p, s, g.lambda, &mut choice) {
            // Budget and capacity both bind: start from the cheapest capacity-feasible
            // assignment and let the improvement steps spend what is left.
            choice = min_cost_assignment(p);
            if p.violation(&choice).is_some() {
                return (choice, f64::INFINITY, false);
            }
        }
        improve(p, s, &mut choice, self.exchanges);
        (choice, bound, true)
    }

    fn robust(&self, p: &Problem, order: &[Vec<usize>]) -> (Vec<usize>, bool) {
        // Candidate z: 0 and quantiles of the σ values (the optimum sits at a breakpoint z = σ;
        // a nearby quantile loses at most the σ spacing times Γ, far below the solver gap).
        let mut sig: Vec<f64> = p.sigma.iter().zip(&p.allowed).filter(|(_, a)| **a).map(|(s, _)| *s).collect();
        sig.sort_unstable_by(|a, b| a.total_cmp(b));
        let q = self.z_candidates.max(2);
        let mut zs: Vec<f64> = if sig.len() <= 4 * q {
            std::iter::once(0.0).chain(sig.iter().copied()).collect()
        } else {
            std::iter::once(0.0).chain((0..q).map(|k| sig[k * (sig.len() - 1) / (q - 1)])).collect()
        };
        zs.dedup();
        let solve_at = |z: f64| {
            let s: Vec<f64> = p.mu.iter().zip(&p.sigma).map(|(m, sg)| m - (sg - z).max(0.0)).collect();
            let (choice, _, feasible) = self.nominal(p, order, &s);
            (p.objective(&choice), choice, feasible)
        };
        // Small batches: try every breakpoint (exact Bertsimas–Sim over z).
        if p.n * p.m <= 64 {
            let mut best: Option<(f64, Vec<usize>, bool)> = None;
            for &z in &zs {
                let r = solve_at(z);
                if best.as_ref().is_none_or(|b| better_candidate(p, &r, b)) {
                    best = Some(r);
                }
            }
            if let Some((_, choice, feasible)) = best {
                return (choice, feasible);
            }
        }
        let (mut scores, mut hulls, mut incs) = (vec![0.0; p.n * p.m], Vec::new(), Vec::new());
        // Bisection on the supergradient of the fixed-z bound: d/dz = #{i : σ[i][x(z)] > z} − Γ.
        let (mut lo, mut hi) = (0, zs.len() - 1);
        let mut memo: Vec<Option<Option<(f64, f64)>>> = vec![None; zs.len()];
        let mut value = |idx: usize, scores: &mut Vec<f64>, hulls: &mut Vec<Vec<usize>>, incs: &mut Vec<Inc>| {
            if let Some(v) = memo[idx] {
                return v;
            }
            let z = zs[idx];
            for (k, sc) in scores.iter_mut().enumerate() {
                *sc = p.mu[k] - (p.sigma[k] - z).max(0.0);
            }
            let v = mckp(p, order, scores, hulls, incs).map(|g| {
                let above = g.choice.iter().enumerate().filter(|&(i, &j)| p.sigma[p.at(i, j)] > z).count();
                (g.lp_bound - p.gamma * z, above as f64 - p.gamma)
            });
            memo[idx] = Some(v);
            v
        };
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            match value(mid, &mut scores, &mut hulls, &mut incs) {
                Some((_, slope)) if slope > 0.0 => lo = mid,
                _ => hi = mid,
            }
        }
        let v = |r: Option<(f64, f64)>| r.map_or(f64::NEG_INFINITY, |x| x.0);
        let best_idx =
            if v(value(lo, &mut scores, &mut hulls, &mut incs)) >= v(value(hi, &mut scores, &mut hulls, &mut incs)) {
                lo
            } else {
                hi
            };
        let (_, choice, feasible) = solve_at(zs[best_idx]);
        (choice, feasible)
    }
}

/// Is candidate `a` (objective, choice, feasible) better than `b`? A candidate that meets every
/// hard constraint beats one that does not, whatever their objectives; then the objective decides.
fn better_candidate(p: &Problem, a: &(f64, Vec<usize>, bool), b: &(f64, Vec<usize>, bool)) -> bool {
    let ok = |c: &(f64, Vec<usize>, bool)| c.2 && p.violation(&c.1).is_none();
    match (ok(a), ok(b)) {
        (true, false) => true,
        (false, true) => false,
        _ => a.0 > b.0,
    }
}

impl Assigner for Fast {
    fn name(&self) -> String {
        "fast".into()
    }

    fn solve(&self, p: &Problem) -> Result<Assignment> {
        p.validate()?;
        super::chance::solve(p, |q| self.solve_linear(q))
    }
}

impl Fast {
    /// The linear problem (κ = 0 or no cost variance).
    fn solve_linear(&self, p: &Problem) -> Result<Assignment> {
        if p.n == 0 {
            return Ok(Assignment { choice: vec![], objective: 0.0, bound: Some(0.0), status: SolveStatus::Optimal });
        }
        let order = cost_order(p);
        let (choice, bound, feasible) = if p.gamma > 0.0 {
            let (c, f) = self.robust(p, &order);
            (c, None, f)
        } else {
            let (c, b, f) = self.nominal(p, &order, &p.mu);
            (c, Some(b).filter(|b| b.is_finite()), f)
        };
        let objective = p.objective(&choice);
        let status = if !feasible || p.violation(&choice).is_some() {
            SolveStatus::Relaxed
        } else if bound.is_some_and(|b| b - objective <= 1e-9 * b.abs().max(1.0)) {
            SolveStatus::Optimal
        } else {
            SolveStatus::Feasible
        };
        Ok(Assignment { choice, objective, bound, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 10: among the robust path's candidates (one per z), a feasible assignment beats an
    /// infeasible one with a higher objective (the old rule compared objectives only).
    #[test]
    fn a_feasible_candidate_beats_a_better_scoring_infeasible_one() {
        let mut p = Problem::new(2, 2);
        p.mu = vec![0.9, 0.5, 0.9, 0.5];
        p.slots = vec![1, 2];
        let over = (1.8, vec![0, 0], true); // two queries on model 0, which has one slot
        let fits = (1.4, vec![0, 1], true);
        assert!(p.violation(&over.1).is_some() && p.violation(&fits.1).is_none());
        assert!(better_candidate(&p, &fits, &over));
        assert!(!better_candidate(&p, &over, &fits));
        // Both feasible (or both not): the objective decides.
        let also = (1.4, vec![1, 0], true);
        assert!(!better_candidate(&p, &also, &fits));
        assert!(better_candidate(&p, &(1.5, vec![1, 0], true), &fits));
        // A candidate marked infeasible by its solve loses even if the check passes.
        assert!(better_candidate(&p, &fits, &(1.9, vec![1, 0], false)));
    }
}
