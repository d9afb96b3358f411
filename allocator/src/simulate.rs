//! Replays recorded queries at a rate through the router's `fast` assigner with a plan's
//! capacities (slots = instances × max concurrency; a query holds its slot for its output tokens at
//! the instance's per-slot speed). No servers: the recorded outcome of the chosen model is the
//! answer. Reports served accuracy, queries that did not get their preferred model, and spend.

use crate::error::{AllocError, Result};
use crate::solve::Instance;
use estimator::{Catalog, KnnConfig, KnnEstimator, Record};
use llmroute_core::assign::{Assigner, Fast, Problem};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub qps: f64,
    pub duration_s: f64,
    /// Batch window of the simulated router.
    pub step_s: f64,
    /// A query waiting longer than this for a slot is dropped (unserved).
    pub max_wait_s: f64,
    /// USD per query for each batch (∞ = capacity-only routing).
    pub budget_per_query: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub plan: String,
    pub queries: usize,
    pub served: usize,
    /// Mean recorded score over all queries (an unserved query scores 0).
    pub accuracy: f64,
    /// Mean recorded score over served queries.
    pub served_accuracy: f64,
    /// Served queries that did not get their preferred model (argmax μ over all models).
    pub not_preferred: usize,
    pub spend_usd: f64,
    pub spend_per_query: f64,
    pub mean_wait_ms: f64,
}

/// The records and the estimator a simulation replays (shared by the plans compared).
pub struct Workload {
    /// Test records by class.
    by_class: Vec<Vec<usize>>,
    records: Vec<Record>,
    mu: Vec<Vec<f64>>,
    cost: Vec<Vec<f64>>,
}

impl Workload {
    /// Splits `records` 70/30 (seeded), trains the estimator on 70 % and predicts the rest.
    pub fn new(inst: &Instance, records: Vec<Record>, catalog: &Catalog, seed: u64) -> Result<Workload> {
        let names: Vec<String> = inst.models.models.iter().map(|m| m.name.clone()).collect();
        let mut records: Vec<Record> =
            records.into_iter().filter(|r| names.iter().all(|m| r.outcomes.contains_key(m))).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        records.shuffle(&mut rng);
        let cut = records.len() * 7 / 10;
        let test = records.split_off(cut);
        let train: Vec<&Record> = records.iter().collect();
        if train.is_empty() || test.is_empty() {
            return Err(AllocError::Invalid("too few records with outcomes for every model".into()));
        }
        let est = KnnEstimator::train(&train, &names, Some(catalog), KnnConfig::default())?;
        let classes = &inst.traffic.classes;
        let by_class: Vec<Vec<usize>> =
            classes.iter().map(|c| (0..test.len()).filter(|&i| c.matches(test[i].task.as_deref())).collect()).collect();
        if let Some(c) = by_class.iter().position(Vec::is_empty) {
            return Err(AllocError::Invalid(format!("no test record for traffic class `{}`", classes[c].name)));
        }
        let mut mu = Vec::with_capacity(test.len());
        let mut cost = Vec::with_capacity(test.len());
        // A query's price: the catalog's token prices on its prompt's tokens and its class's output
        // tokens (the same cost model the plan's --budget-per-query uses).
        let mut entries = Vec::with_capacity(names.len());
        for m in &names {
            entries
                .push(catalog.get(m).ok_or_else(|| AllocError::Invalid(format!("model `{m}` is not in the catalog")))?);
        }
        let out_tokens = |r: &Record| {
            let c = classes.iter().position(|c| c.matches(r.task.as_deref()));
            c.map_or(256.0, |c| classes[c].output_tokens)
        };
        for r in &test {
            mu.push(est.predict(&r.prompt, r.task.as_deref()).mu);
            let input = estimator::estimate_tokens(&r.prompt) as f64;
            cost.push(entries.iter().map(|e| e.cost(input, out_tokens(r))).collect());
        }
        Ok(Workload { by_class, records: test, mu, cost })
    }
}

struct Pending {
    rec: usize,
    class: usize,
    arrived: f64,
}

/// Runs one plan (`instances[m][g]`) through the arrival stream `opts` describes.
pub fn run(inst: &Instance, w: &Workload, instances: &[Vec<u32>], name: &str, opts: &SimOptions) -> SimReport {
    let models = &inst.models.models;
    let nm = models.len();
    let capacity: Vec<usize> =
        (0..nm).map(|m| instances[m].iter().sum::<u32>() as usize * models[m].max_concurrency as usize).collect();
    // Per-slot decode speed (tokens/s) of each model: its instances' throughput over its slots.
    let speed: Vec<f64> = (0..nm)
        .map(|m| {
            let tps: f64 = models[m].profiles.iter().map(|p| p.tokens_per_s * instances[m][p.gpu] as f64).sum();
            if capacity[m] > 0 {
                tps / capacity[m] as f64
            } else {
                0.0
            }
        })
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let rates: Vec<f64> = inst.traffic.classes.iter().map(|c| c.rate_qps).collect();
    let total_rate: f64 = rates.iter().sum::<f64>().max(1e-12);
    let mut busy: Vec<BinaryHeap<Reverse<u64>>> = vec![BinaryHeap::new(); nm];
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let (mut queries, mut served, mut score, mut not_pref, mut spend, mut wait) =
        (0usize, 0usize, 0.0, 0usize, 0.0, 0.0);
    let fast = Fast::default();
    let steps = (opts.duration_s / opts.step_s).ceil() as usize;
    let mut owed = 0.0;
    let us = |t: f64| (t * 1e6) as u64;
    for step in 0..steps {
        let now = step as f64 * opts.step_s;
        for h in busy.iter_mut() {
            while h.peek().is_some_and(|Reverse(t)| *t <= us(now)) {
                h.pop();
            }
        }
        owed += opts.qps * opts.step_s;
        while owed >= 1.0 {
            owed -= 1.0;
            let mut x = rng.gen::<f64>() * total_rate;
            let mut class = 0;
            while class + 1 < rates.len() && x >= rates[class] {
                x -= rates[class];
                class += 1;
            }
            let pool = &w.by_class[class];
            queue.push_back(Pending { rec: pool[rng.gen_range(0..pool.len())], class, arrived: now });
            queries += 1;
        }
        while queue.front().is_some_and(|p| now - p.arrived > opts.max_wait_s) {
            queue.pop_front();
        }
        let free: Vec<usize> = (0..nm).map(|m| capacity[m].saturating_sub(busy[m].len())).collect();
        let n = queue.len().min(free.iter().sum());
        if n == 0 {
            continue;
        }
        let batch: Vec<Pending> = queue.drain(..n).collect();
        let mut p = Problem::new(n, nm);
        for (i, q) in batch.iter().enumerate() {
            for m in 0..nm {
                let k = i * nm + m;
                p.mu[k] = w.mu[q.rec][m];
                p.cost[k] = w.cost[q.rec][m];
                p.allowed[k] = capacity[m] > 0;
            }
        }
        p.slots = free.clone();
        p.budget = opts.budget_per_query * n as f64;
        let Ok(a) = fast.solve(&p) else { continue };
        for (i, q) in batch.iter().enumerate() {
            let m = a.choice[i];
            let rec = &w.records[q.rec];
            served += 1;
            score += rec.outcomes[&models[m].name].score;
            spend += w.cost[q.rec][m];
            wait += now - q.arrived;
            let pref = (0..nm).max_by(|&x, &y| w.mu[q.rec][x].total_cmp(&w.mu[q.rec][y])).unwrap_or(m);
            if pref != m {
                not_pref += 1;
            }
            let out = inst.traffic.classes[q.class].output_tokens;
            let hold = if speed[m] > 0.0 { out / speed[m] } else { 0.0 };
            busy[m].push(Reverse(us(now + hold.max(opts.step_s))));
        }
    }
    SimReport {
        plan: name.into(),
        queries,
        served,
        accuracy: score / queries.max(1) as f64,
        served_accuracy: score / served.max(1) as f64,
        not_preferred: not_pref,
        spend_usd: spend,
        spend_per_query: spend / served.max(1) as f64,
        mean_wait_ms: 1e3 * wait / served.max(1) as f64,
    }
}
