use crate::{CoreError, Result};

/// One batch: n queries × m models, row-major `i * m + j`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub n: usize,
    pub m: usize,
    /// Predicted quality μ[i][j] in [0, 1].
    pub mu: Vec<f64>,
    /// Uncertainty σ[i][j] ≥ 0 of μ.
    pub sigma: Vec<f64>,
    /// Predicted cost c[i][j] ≥ 0 (USD).
    pub cost: Vec<f64>,
    /// KV tokens the query would hold on model j (input + expected output).
    pub tokens: Vec<f64>,
    /// Tenant policy: may query i go to model j.
    pub allowed: Vec<bool>,
    /// Variance of the realized cost around `cost` (USD²); all 0 = costs known exactly.
    pub cost_var: Vec<f64>,
    /// Σ c·x + κ·√(Σ v·x) ≤ budget: the budget row as a chance constraint (κ = 0: point costs).
    pub budget: f64,
    /// The chance constraint's κ (from the allowed over-budget probability; see `kappa_for`).
    pub kappa: f64,
    /// Σ_i x[i][j] ≤ slots[j]; `usize::MAX` = unbounded.
    pub slots: Vec<usize>,
    /// Σ_i tokens[i][j]·x[i][j] ≤ kv_free[j]; `f64::INFINITY` = unbounded.
    pub kv_free: Vec<f64>,
    /// Bertsimas–Sim budget of uncertainty: how many queries' μ may fall by σ (0 = nominal).
    pub gamma: f64,
}

/// How an assignment came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SolveStatus {
    /// Proven optimal (within the solver's gap).
    Optimal,
    /// Feasible, not proven optimal (heuristic, or a solver stopped by its time limit).
    Feasible,
    /// No assignment satisfies budget and capacity: the cheapest assignment the capacities
    /// allow is returned (the ledger then carries any overspend).
    Relaxed,
}

#[derive(Debug, Clone)]
pub struct Assignment {
    /// The chosen model per query.
    pub choice: Vec<usize>,
    /// The (robust) objective of `choice`.
    pub objective: f64,
    /// An upper bound on the optimum when the assigner proves one.
    pub bound: Option<f64>,
    pub status: SolveStatus,
}

impl Problem {
    /// An unconstrained problem (infinite budget, no capacity limits, all models allowed).
    pub fn new(n: usize, m: usize) -> Problem {
        Problem {
            n,
            m,
            mu: vec![0.0; n * m],
            sigma: vec![0.0; n * m],
            cost: vec![0.0; n * m],
            tokens: vec![0.0; n * m],
            allowed: vec![true; n * m],
            cost_var: vec![0.0; n * m],
            budget: f64::INFINITY,
            kappa: 0.0,
            slots: vec![usize::MAX; m],
            kv_free: vec![f64::INFINITY; m],
            gamma: 0.0,
        }
    }

    #[inline]
    pub fn at(&self, i: usize, j: usize) -> usize {
        i * self.m + j
    }

    /// Checks shapes and values; every query needs at least one allowed model.
    pub fn validate(&self) -> Result<()> {
        let nm = self.n * self.m;
        if self.m == 0 {
            return Err(CoreError::Invalid("problem has no models".into()));
        }
        for (name, len) in [
            ("mu", self.mu.len()),
            ("sigma", self.sigma.len()),
            ("cost", self.cost.len()),
            ("tokens", self.tokens.len()),
            ("allowed", self.allowed.len()),
            ("cost_var", self.cost_var.len()),
        ] {
            if len != nm {
                return Err(CoreError::Invalid(format!("{name} has {len} entries, expected {nm}")));
            }
        }
        if self.slots.len() != self.m || self.kv_free.len() != self.m {
            return Err(CoreError::Invalid("slots / kv_free need one entry per model".into()));
        }
        let finite = |v: &[f64], name: &str| -> Result<()> {
            match v.iter().position(|x| !x.is_finite()) {
                Some(k) => Err(CoreError::Invalid(format!("{name}[{}][{}] is not finite", k / self.m, k % self.m))),
                None => Ok(()),
            }
        };
        finite(&self.mu, "mu")?;
        finite(&self.sigma, "sigma")?;
        finite(&self.cost, "cost")?;
        finite(&self.tokens, "tokens")?;
        finite(&self.cost_var, "cost_var")?;
        if self.sigma.iter().any(|s| *s < 0.0)
            || self.cost.iter().any(|c| *c < 0.0)
            || self.cost_var.iter().any(|v| *v < 0.0)
        {
            return Err(CoreError::Invalid("sigma, cost and cost_var must be non-negative".into()));
        }
        if !(self.kappa.is_finite() && self.kappa >= 0.0) {
            return Err(CoreError::Invalid("kappa must be a number ≥ 0".into()));
        }
        if self.budget.is_nan() || !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(CoreError::Invalid("budget must be a number and gamma ≥ 0".into()));
        }
        for i in 0..self.n {
            if !(0..self.m).any(|j| self.allowed[self.at(i, j)]) {
                return Err(CoreError::Invalid(format!("query {i} has no allowed model")));
            }
        }
        Ok(())
    }

    pub fn cost_of(&self, choice: &[usize]) -> f64 {
        choice.iter().enumerate().map(|(i, &j)| self.cost[self.at(i, j)]).sum()
    }

    /// Σ v·x: the variance of the choice's realized cost.
    pub fn cost_var_of(&self, choice: &[usize]) -> f64 {
        choice.iter().enumerate().map(|(i, &j)| self.cost_var[self.at(i, j)]).sum()
    }

    /// What the choice uses of the budget row: Σ c·x + κ·√(Σ v·x).
    pub fn budget_use(&self, choice: &[usize]) -> f64 {
        let c = self.cost_of(choice);
        if self.kappa > 0.0 {
            c + self.kappa * self.cost_var_of(choice).sqrt()
        } else {
            c
        }
    }

    /// Prices the scores: μ ← μ − λ·ĉ (a priced assigner's objective; replies keep the raw μ).
    pub fn price(&mut self, lambda: f64) {
        for (mu, c) in self.mu.iter_mut().zip(&self.cost) {
            *mu -= lambda * c;
        }
    }

    /// The chance constraint has an uncertainty term.
    pub fn is_chance(&self) -> bool {
        self.kappa > 0.0 && self.budget.is_finite() && self.cost_var.iter().any(|&v| v > 0.0)
    }

    /// The linear problem whose budget row is the tangent of √ at `v0` > 0:
    /// Σ (c + κ·v / (2√v0))·x ≤ B − κ·√v0 / 2. √ is concave, so the tangent lies above it and
    /// every choice that satisfies this row satisfies the chance constraint (a conservative,
    /// exact-at-v0 linearisation).
    pub fn linearized(&self, v0: f64) -> Problem {
        let r = v0.max(f64::MIN_POSITIVE).sqrt();
        let mut q = self.clone();
        for (c, v) in q.cost.iter_mut().zip(&self.cost_var) {
            *c += self.kappa * v / (2.0 * r);
        }
        q.budget = self.budget - self.kappa * r / 2.0;
        q.kappa = 0.0;
        q.cost_var.iter_mut().for_each(|v| *v = 0.0);
        q
    }

    /// The Bertsimas–Sim protection of a choice: the largest total σ over any ⌊Γ⌋ queries plus
    /// the fractional part of Γ times the next largest.
    pub fn protection(&self, choice: &[usize]) -> f64 {
        if self.gamma <= 0.0 {
            return 0.0;
        }
        let mut s: Vec<f64> = choice.iter().enumerate().map(|(i, &j)| self.sigma[self.at(i, j)]).collect();
        s.sort_unstable_by(|a, b| b.total_cmp(a));
        let whole = (self.gamma.floor() as usize).min(s.len());
        let mut p: f64 = s[..whole].iter().sum();
        if whole < s.len() {
            p += (self.gamma - self.gamma.floor()) * s[whole];
        }
        p
    }

    /// Σ μ of the choice minus its protection: the robust objective every assigner maximizes.
    pub fn objective(&self, choice: &[usize]) -> f64 {
        let nominal: f64 = choice.iter().enumerate().map(|(i, &j)| self.mu[self.at(i, j)]).sum();
        nominal - self.protection(choice)
    }

    /// Checks the hard constraints with a small relative tolerance; the first violation found.
    pub fn violation(&self, choice: &[usize]) -> Option<String> {
        if choice.len() != self.n {
            return Some(format!("{} choices for {} queries", choice.len(), self.n));
        }
        let mut count = vec![0usize; self.m];
        let mut kv = vec![0.0; self.m];
        for (i, &j) in choice.iter().enumerate() {
            if j >= self.m || !self.allowed[self.at(i, j)] {
                return Some(format!("query {i} sent to model {j}, which it may not use"));
            }
            count[j] += 1;
            kv[j] += self.tokens[self.at(i, j)];
        }
        let cost = self.budget_use(choice);
        if cost > self.budget * (1.0 + 1e-9) + 1e-12 {
            return Some(format!("cost {cost} (with the κ·√variance term) above budget {}", self.budget));
        }
        for j in 0..self.m {
            if count[j] > self.slots[j] {
                return Some(format!("model {j}: {} queries for {} slots", count[j], self.slots[j]));
            }
            if kv[j] > self.kv_free[j] * (1.0 + 1e-9) {
                return Some(format!("model {j}: {} KV tokens for {} free", kv[j], self.kv_free[j]));
            }
        }
        None
    }
}

/// Per-model load of an assignment (queries, KV tokens) and its cost, kept up to date as
/// queries move; the one place that says whether a model has room.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    pub count: Vec<usize>,
    pub kv: Vec<f64>,
    pub cost: f64,
}

impl Usage {
    pub fn empty(p: &Problem) -> Usage {
        Usage { count: vec![0; p.m], kv: vec![0.0; p.m], cost: 0.0 }
    }

    pub fn of(p: &Problem, choice: &[usize]) -> Usage {
        let mut u = Usage::empty(p);
        for (i, &j) in choice.iter().enumerate() {
            u.add(p, i, j);
        }
        u
    }

    /// Query i now uses model j.
    pub fn add(&mut self, p: &Problem, i: usize, j: usize) {
        self.count[j] += 1;
        self.kv[j] += p.tokens[p.at(i, j)];
        self.cost += p.cost[p.at(i, j)];
    }

    /// Query i no longer uses model j.
    pub fn remove(&mut self, p: &Problem, i: usize, j: usize) {
        self.count[j] -= 1;
        self.kv[j] -= p.tokens[p.at(i, j)];
        self.cost -= p.cost[p.at(i, j)];
    }

    /// Moves query i from its current model to k.
    pub fn move_query(&mut self, p: &Problem, choice: &mut [usize], i: usize, k: usize) {
        self.remove(p, i, choice[i]);
        self.add(p, i, k);
        choice[i] = k;
    }

    /// Model j can take query i (one more slot and its KV tokens).
    pub fn room(&self, p: &Problem, i: usize, j: usize) -> bool {
        self.count[j] < p.slots[j] && self.kv[j] + p.tokens[p.at(i, j)] <= p.kv_free[j]
    }

    pub fn over(&self, p: &Problem, j: usize) -> bool {
        self.count[j] > p.slots[j] || self.kv[j] > p.kv_free[j] * (1.0 + 1e-12)
    }

    /// Queries a and b may trade models (both allowed, KV fits; slot counts do not change).
    pub fn swap_fits(&self, p: &Problem, choice: &[usize], a: usize, b: usize) -> bool {
        let (ja, jb) = (choice[a], choice[b]);
        ja != jb
            && p.allowed[p.at(a, jb)]
            && p.allowed[p.at(b, ja)]
            && self.kv[jb] - p.tokens[p.at(b, jb)] + p.tokens[p.at(a, jb)] <= p.kv_free[jb]
            && self.kv[ja] - p.tokens[p.at(a, ja)] + p.tokens[p.at(b, ja)] <= p.kv_free[ja]
    }

    /// Queries a and b trade models.
    pub fn swap(&mut self, p: &Problem, choice: &mut [usize], a: usize, b: usize) {
        let (ja, jb) = (choice[a], choice[b]);
        self.remove(p, a, ja);
        self.remove(p, b, jb);
        self.add(p, a, jb);
        self.add(p, b, ja);
        choice[a] = jb;
        choice[b] = ja;
    }
}

/// The cheapest assignment the capacities allow: queries with the most to lose go first (Vogel's
/// rule: largest gap between their cheapest and second-cheapest model) to their cheapest model
/// with room, then pairwise swaps and single moves that lower the cost. Used as the feasible
/// start when budget and capacity both bind, and as the answer when the budget cannot be met.
pub fn min_cost_assignment(p: &Problem) -> Vec<usize> {
    let mut u = Usage::empty(p);
    let opts: Vec<Vec<usize>> = (0..p.n)
        .map(|i| {
            let mut o: Vec<usize> = (0..p.m).filter(|&j| p.allowed[p.at(i, j)]).collect();
            o.sort_by(|&a, &b| {
                p.cost[p.at(i, a)].total_cmp(&p.cost[p.at(i, b)]).then(p.mu[p.at(i, b)].total_cmp(&p.mu[p.at(i, a)]))
            });
            o
        })
        .collect();
    let regret = |i: usize| match opts[i].as_slice() {
        [a, b, ..] => p.cost[p.at(i, *b)] - p.cost[p.at(i, *a)],
        _ => f64::INFINITY,
    };
    let mut order: Vec<usize> = (0..p.n).collect();
    order.sort_by(|&a, &b| regret(b).total_cmp(&regret(a)));
    let mut choice = vec![0; p.n];
    for i in order {
        // With no room anywhere, capacity is relaxed too: the cheapest model takes it.
        let j = opts[i].iter().copied().find(|&j| u.room(p, i, j)).unwrap_or(opts[i][0]);
        u.add(p, i, j);
        choice[i] = j;
    }
    // Local search: cheaper single moves into free room, and cost-lowering swaps.
    for _ in 0..4 {
        let mut improved = false;
        for i in 0..p.n {
            let j = choice[i];
            for &k in &opts[i] {
                if p.cost[p.at(i, k)] >= p.cost[p.at(i, j)] {
                    break;
                }
                if u.room(p, i, k) {
                    u.move_query(p, &mut choice, i, k);
                    improved = true;
                    break;
                }
            }
        }
        if p.n <= 2048 {
            for a in 0..p.n {
                for b in (a + 1)..p.n {
                    let (ja, jb) = (choice[a], choice[b]);
                    if !u.swap_fits(p, &choice, a, b) {
                        continue;
                    }
                    let delta = p.cost[p.at(a, jb)] + p.cost[p.at(b, ja)] - p.cost[p.at(a, ja)] - p.cost[p.at(b, jb)];
                    if delta < -1e-15 {
                        u.swap(p, &mut choice, a, b);
                        improved = true;
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    if p.kv_free.iter().all(|k| k.is_infinite()) {
        cancel_negative_cycles(p, &mut choice);
    }
    choice
}

/// Exact min-cost repair under slot limits: while the model graph has a negative cycle — a chain
/// of single-query moves a → b → … that lowers the cost and ends in a model with a free slot,
/// or closes on itself — apply it (cycle-cancelling for the transportation problem). Chains
/// out of overfull models come first, so capacity is restored wherever it can be.
fn cancel_negative_cycles(p: &Problem, choice: &mut [usize]) {
    let m = p.m;
    let s = m; // the free-capacity node
    let nodes = m + 1;
    let mut count = vec![0usize; m];
    for &j in choice.iter() {
        count[j] += 1;
    }
    for _ in 0..(4 * p.n + 16) {
        let mut w = vec![f64::INFINITY; nodes * nodes];
        let mut who = vec![usize::MAX; m * m];
        for (i, &a) in choice.iter().enumerate() {
            for b in 0..m {
                if b != a && p.allowed[p.at(i, b)] {
                    let d = p.cost[p.at(i, b)] - p.cost[p.at(i, a)];
                    if d < w[a * nodes + b] {
                        w[a * nodes + b] = d;
                        who[a * m + b] = i;
                    }
                }
            }
        }
        for f in 0..m {
            if count[f] < p.slots[f] {
                w[f * nodes + s] = 0.0;
            }
            // An overfull model (no room was left for some query) pays anyone to take a query
            // away along a chain that ends in a free slot.
            w[s * nodes + f] = if count[f] > p.slots[f] { -1e6 } else { 0.0 };
        }
        // Bellman–Ford from a virtual source at distance 0 to every node.
        let mut dist = vec![0.0f64; nodes];
        let mut pred = vec![usize::MAX; nodes];
        let mut last = usize::MAX;
        for _ in 0..nodes {
            last = usize::MAX;
            for a in 0..nodes {
                for b in 0..nodes {
                    let e = w[a * nodes + b];
                    if e.is_finite() && dist[a] + e < dist[b] - 1e-15 {
                        dist[b] = dist[a] + e;
                        pred[b] = a;
                        last = b;
                    }
                }
            }
            if last == usize::MAX {
                break;
            }
        }
        if last == usize::MAX {
            return;
        }
        // Walk back into the cycle, then collect it.
        let mut v = last;
        for _ in 0..nodes {
            v = pred[v];
        }
        let start = v;
        let mut edges = Vec::new();
        loop {
            let u = pred[v];
            edges.push((u, v));
            v = u;
            if v == start {
                break;
            }
        }
        for (a, b) in edges {
            if a < m && b < m {
                let i = who[a * m + b];
                choice[i] = b;
                count[a] -= 1;
                count[b] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_takes_the_largest_sigmas_with_fractional_gamma() {
        let mut p = Problem::new(3, 1);
        p.sigma = vec![0.1, 0.3, 0.2];
        p.mu = vec![1.0, 1.0, 1.0];
        p.gamma = 1.5;
        assert!((p.protection(&[0, 0, 0]) - (0.3 + 0.5 * 0.2)).abs() < 1e-12);
        p.gamma = 10.0;
        assert!((p.objective(&[0, 0, 0]) - (3.0 - 0.6)).abs() < 1e-12);
    }

    #[test]
    fn validate_rejects_bad_shapes() {
        let mut p = Problem::new(2, 2);
        assert!(p.validate().is_ok());
        p.allowed = vec![false, false, true, true];
        assert!(p.validate().unwrap_err().to_string().contains("query 0"));
        let mut p = Problem::new(2, 2);
        p.mu[3] = f64::NAN;
        assert!(p.validate().unwrap_err().to_string().contains("mu[1][1]"));
    }
}
