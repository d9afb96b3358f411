//! Per-query baselines: each query decided alone (no batch budget); when a model is full the
//! query spills to its next preference, as a per-query router with admission control would.

use super::problem::{Assignment, Problem, SolveStatus, Usage};
use super::Assigner;
use crate::{CoreError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Assigns each query, in order, to its highest-ranked allowed model that still has room
/// (rank = larger key first). With no room anywhere, capacity is relaxed.
fn pick_with_spill(p: &Problem, mut key: impl FnMut(usize, usize) -> f64) -> Assignment {
    let mut u = Usage::empty(p);
    let mut choice = vec![0; p.n];
    let mut relaxed = false;
    let mut prefs: Vec<(f64, usize)> = Vec::with_capacity(p.m);
    for (i, c) in choice.iter_mut().enumerate() {
        prefs.clear();
        prefs.extend((0..p.m).filter(|&j| p.allowed[p.at(i, j)]).map(|j| (key(i, j), j)));
        prefs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let j = match prefs.iter().find(|(_, j)| u.room(p, i, *j)) {
            Some(&(_, j)) => j,
            None => {
                relaxed = true;
                prefs[0].1
            }
        };
        u.add(p, i, j);
        *c = j;
    }
    let objective = p.objective(&choice);
    Assignment {
        choice,
        objective,
        bound: None,
        status: if relaxed { SolveStatus::Relaxed } else { SolveStatus::Feasible },
    }
}

/// argmax_j μ[i][j] − λ·ĉ[i][j] per query (λ in quality per USD).
#[derive(Debug, Clone)]
pub struct PerQueryPrice {
    pub lambda: f64,
}

impl Assigner for PerQueryPrice {
    fn name(&self) -> String {
        "per-query-price".into()
    }
    fn solve(&self, p: &Problem) -> Result<Assignment> {
        p.validate()?;
        Ok(pick_with_spill(p, |i, j| p.mu[p.at(i, j)] - self.lambda * p.cost[p.at(i, j)]))
    }
}

/// RouteLLM-style cascade: models ordered by mean predicted cost; the first whose μ ≥ τ takes
/// the query, else the model with the highest μ.
#[derive(Debug, Clone)]
pub struct PerQueryThreshold {
    pub tau: f64,
}

impl Assigner for PerQueryThreshold {
    fn name(&self) -> String {
        "per-query-threshold".into()
    }
    fn solve(&self, p: &Problem) -> Result<Assignment> {
        p.validate()?;
        let mean_cost: Vec<f64> =
            (0..p.m).map(|j| (0..p.n).map(|i| p.cost[p.at(i, j)]).sum::<f64>() / p.n.max(1) as f64).collect();
        let mut by_price: Vec<usize> = (0..p.m).collect();
        by_price.sort_by(|&a, &b| mean_cost[a].total_cmp(&mean_cost[b]));
        let mut rank = vec![0usize; p.m];
        for (r, &j) in by_price.iter().enumerate() {
            rank[j] = r;
        }
        // Models passing the threshold rank first (cheapest first), then the rest by μ.
        Ok(pick_with_spill(p, |i, j| {
            let mu = p.mu[p.at(i, j)];
            if mu >= self.tau {
                2.0 + (p.m - rank[j]) as f64
            } else {
                mu
            }
        }))
    }
}

/// Every query to one model (spilling by μ when it is full or not allowed).
#[derive(Debug, Clone)]
pub struct Single {
    pub model: usize,
    pub name: String,
}

impl Single {
    pub fn new(models: &[String], name: &str) -> Result<Single> {
        let model = models.iter().position(|m| m == name).ok_or_else(|| {
            CoreError::Invalid(format!("single:{name}: no such model (known: {})", models.join(", ")))
        })?;
        Ok(Single { model, name: name.to_string() })
    }
}

impl Assigner for Single {
    fn name(&self) -> String {
        format!("single:{}", self.name)
    }
    fn solve(&self, p: &Problem) -> Result<Assignment> {
        p.validate()?;
        Ok(pick_with_spill(p, |i, j| if j == self.model { 2.0 } else { p.mu[p.at(i, j)] }))
    }
}

/// Uniformly random allowed model per query, seeded (per batch: seed + batch content).
#[derive(Debug, Clone)]
pub struct RandomAssigner {
    pub seed: u64,
}

impl Assigner for RandomAssigner {
    fn name(&self) -> String {
        "random".into()
    }
    fn solve(&self, p: &Problem) -> Result<Assignment> {
        p.validate()?;
        let salt = p.mu.iter().fold(0u64, |h, x| h.rotate_left(5) ^ x.to_bits());
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ salt);
        let keys: Vec<f64> = (0..p.n * p.m).map(|_| rng.gen::<f64>()).collect();
        Ok(pick_with_spill(p, |i, j| keys[p.at(i, j)]))
    }
}
