//! The eval harness behind `llm-router eval`: every comparison at equal realized spend, on
//! recorded outcomes, with bootstrap intervals, under random, by-task and adversarial batching.

pub mod batching;
pub mod data;
pub mod policy;
pub mod report;
pub mod stats;

use crate::{Result, RouterError};
use batching::{make_batches, Batching};
use policy::{accuracy, calibrate, mean_cost, run, sweep_knobs, RunOptions, Spec};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub records: PathBuf,
    pub catalog: Option<PathBuf>,
    pub assigners: Vec<String>,
    pub spend: Vec<f64>,
    pub batch_size: usize,
    pub batching: Batching,
    pub capacity_frac: Option<f64>,
    pub gamma: f64,
    pub estimator_noise: f64,
    pub train_frac: f64,
    pub seed: u64,
    pub bootstrap: usize,
    pub ledger: bool,
    pub sweep_points: usize,
    pub knn: estimator::KnnConfig,
    /// A trained estimator artifact instead of the plain kNN (see `data::DataOptions`).
    pub estimator_artifact: Option<std::path::PathBuf>,
    pub embedding_cache: std::path::PathBuf,
    pub mip_time_limit_s: f64,
    pub mip_rel_gap: f64,
    pub carry_unspent: bool,
    pub dual_price: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    pub assigner: String,
    pub spend_frac: f64,
    pub target_cost: f64,
    pub knob: f64,
    pub accuracy: f64,
    pub accuracy_ci: [f64; 2],
    pub mean_cost: f64,
    pub batches: usize,
    pub batches_over_budget: usize,
    /// Batches whose cheapest assignment cost more than their allowance (budget raised to it).
    pub batches_overdraft: usize,
    /// Total realized spend / total allowance (target × queries): the budget over the whole run.
    pub spend_vs_allowance: f64,
    /// Largest relative overspend of a batch: max(realized / budget − 1, 0).
    pub max_overspend: f64,
    pub solve_ms_p50: f64,
    pub solve_ms_p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchedPoint {
    pub assigner: String,
    pub cost: f64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub assigner: String,
    pub knob: f64,
    pub cost: f64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub records: usize,
    pub n_train: usize,
    pub n_test: usize,
    pub models: Vec<String>,
    pub settings: serde_json::Value,
    /// Mean true cost and accuracy of each single model on the test split.
    pub single_models: Vec<serde_json::Value>,
    pub results: Vec<ResultRow>,
    pub matched: Vec<MatchedPoint>,
    pub aiq: std::collections::BTreeMap<String, f64>,
    pub sweep: Vec<SweepPoint>,
}

fn validate(cfg: &EvalConfig) -> Result<()> {
    if cfg.batch_size == 0 {
        return Err(RouterError::Invalid("--batch-size must be at least 1".into()));
    }
    if let Some(f) = cfg.spend.iter().find(|f| !(f.is_finite() && (0.0..=1.0).contains(*f))) {
        return Err(RouterError::Invalid(format!("--spend {f}: expected fractions in [0, 1]")));
    }
    if let Some(f) = cfg.capacity_frac {
        if !(f > 0.0 && f <= 1.0) {
            return Err(RouterError::Invalid(format!("--capacity-frac {f}: expected a fraction in (0, 1]")));
        }
    }
    if !(cfg.gamma.is_finite() && cfg.gamma >= 0.0) {
        return Err(RouterError::Invalid("--gamma must be ≥ 0".into()));
    }
    if cfg.assigners.is_empty() {
        return Err(RouterError::Invalid("--assigners is empty".into()));
    }
    Ok(())
}

pub fn run_eval(cfg: &EvalConfig) -> Result<EvalReport> {
    validate(cfg)?;
    let data = data::load(&data::DataOptions {
        records: &cfg.records,
        catalog: cfg.catalog.as_deref(),
        train_frac: cfg.train_frac,
        seed: cfg.seed,
        knn: cfg.knn.clone(),
        estimator_noise: cfg.estimator_noise,
        artifact: cfg.estimator_artifact.as_deref(),
        embedding_cache: &cfg.embedding_cache,
    })?;
    let specs: Vec<Spec> = cfg.assigners.iter().map(|a| Spec::parse(a.trim(), &data.models)).collect::<Result<_>>()?;
    if let Some(f) = cfg.capacity_frac {
        if (f * cfg.batch_size as f64).ceil() * (data.models.len() as f64) < (cfg.batch_size as f64) {
            return Err(RouterError::Invalid(format!(
                "--capacity-frac {f}: {} models × ⌈{f}·{}⌉ slots cannot hold a batch",
                data.models.len(),
                cfg.batch_size
            )));
        }
    }
    let (train, test) = (&data.train, &data.test);
    let costs: Vec<f64> = (0..train.m).map(|j| train.mean_cost(j)).collect();
    let c_min = costs.iter().copied().fold(f64::INFINITY, f64::min);
    let c_max = costs.iter().copied().fold(0.0, f64::max);
    // Calibration runs on average (random) train traffic; evaluation on the chosen batching.
    let train_batches = make_batches(train, Batching::Random, cfg.batch_size, cfg.seed);
    let test_batches = make_batches(test, cfg.batching, cfg.batch_size, cfg.seed);
    let prior_margin = cost_margin(train, &train_batches);
    let opts = RunOptions {
        gamma: cfg.gamma,
        capacity_frac: cfg.capacity_frac,
        ledger: cfg.ledger,
        prior_margin,
        mip_time_limit_s: cfg.mip_time_limit_s,
        mip_rel_gap: cfg.mip_rel_gap,
        seed: cfg.seed,
        carry_unspent: cfg.carry_unspent,
        dual_price: cfg.dual_price,
        batch_size: cfg.batch_size,
    };
    tracing::info!(
        records = data.records,
        train = train.n,
        test = test.n,
        models = data.models.len(),
        c_min,
        c_max,
        prior_margin,
        "data ready"
    );
    let mut results = Vec::new();
    for spec in &specs {
        for &f in &cfg.spend {
            let target = c_min + f * (c_max - c_min);
            let t0 = std::time::Instant::now();
            let knob = calibrate(spec, target, train, &train_batches, &opts)?;
            let r = run(spec, knob, test, &test_batches, &opts)?;
            let row = summarize(spec, f, target, knob, &r, cfg);
            tracing::info!(assigner = %row.assigner, spend = f, accuracy = row.accuracy, mean_cost = row.mean_cost, over_budget = row.batches_over_budget, secs = t0.elapsed().as_secs_f64(), "spend level done");
            results.push(row);
        }
    }
    // Cost–accuracy sweeps on the test split, for matched-cost comparison, AIQ and the plot.
    // Priced batch assigners sweep spend levels (λ calibrated on train for each); the others
    // sweep their knob directly.
    let mut sweep = Vec::new();
    for spec in &specs {
        let priced = cfg.dual_price && matches!(spec, Spec::Fast | Spec::Mip);
        let knobs: Vec<policy::Knob> = if priced {
            (0..cfg.sweep_points.max(2))
                .map(|k| {
                    let f = (k as f64 / (cfg.sweep_points.max(2) - 1) as f64).powi(2);
                    calibrate(spec, c_min + f * (c_max - c_min), train, &train_batches, &opts)
                })
                .collect::<Result<_>>()?
        } else {
            sweep_knobs(spec, test, cfg.sweep_points)
                .into_iter()
                .map(|x| policy::Knob { value: x, allowance: if spec.is_batch() { x } else { f64::INFINITY } })
                .collect()
        };
        for knob in knobs {
            let r = run(spec, knob, test, &test_batches, &opts)?;
            sweep.push(SweepPoint {
                assigner: spec.name(),
                knob: knob.value,
                cost: mean_cost(&r),
                accuracy: accuracy(&r),
            });
        }
    }
    let (matched, aiq) = matched_and_aiq(&specs, &sweep);
    let single_models = data
        .models
        .iter()
        .enumerate()
        .map(|(j, m)| serde_json::json!({"model": m, "accuracy": test.mean_score(j), "mean_cost": test.mean_cost(j)}))
        .collect();
    Ok(EvalReport {
        records: data.records,
        n_train: train.n,
        n_test: test.n,
        models: data.models.clone(),
        settings: serde_json::json!({
            "batch_size": cfg.batch_size, "batching": cfg.batching, "capacity_frac": cfg.capacity_frac,
            "gamma": cfg.gamma, "estimator_noise": cfg.estimator_noise, "train_frac": cfg.train_frac,
            "seed": cfg.seed, "bootstrap": cfg.bootstrap, "ledger": cfg.ledger, "carry_unspent": cfg.carry_unspent, "dual_price": cfg.dual_price, "k": cfg.knn.k,
            "task_hint": cfg.knn.use_task, "estimator_artifact": cfg.estimator_artifact, "c_min": c_min, "c_max": c_max, "prior_cost_margin": prior_margin,
        }),
        single_models,
        results,
        matched,
        aiq,
        sweep,
    })
}

/// One result row: accuracy with its bootstrap interval, realized cost, budget adherence (a batch
/// is over budget when its realized cost exceeds 1.01 × its budget) and solve-time percentiles.
fn summarize(
    spec: &Spec,
    f: f64,
    target: f64,
    knob: policy::Knob,
    r: &[policy::BatchOutcome],
    cfg: &EvalConfig,
) -> ResultRow {
    let solve_ms: Vec<f64> = r.iter().map(|b| b.solve_s * 1e3).collect();
    let relative_over = |b: &policy::BatchOutcome| {
        if b.budget > 0.0 {
            b.realized / b.budget - 1.0
        } else if b.realized > 0.0 {
            f64::MAX
        } else {
            0.0
        }
    };
    ResultRow {
        assigner: spec.name(),
        spend_frac: f,
        target_cost: target,
        knob: knob.value,
        accuracy: accuracy(r),
        accuracy_ci: stats::bootstrap_ci(r, cfg.bootstrap, cfg.seed),
        mean_cost: mean_cost(r),
        batches: r.len(),
        batches_over_budget: r.iter().filter(|b| b.realized > 1.01 * b.budget + 1e-15).count(),
        batches_overdraft: r.iter().filter(|b| b.overdraft).count(),
        spend_vs_allowance: mean_cost(r) / target.max(1e-300),
        max_overspend: r.iter().map(relative_over).fold(0.0, f64::max),
        solve_ms_p50: stats::percentile(&solve_ms, 50.0),
        solve_ms_p99: stats::percentile(&solve_ms, 99.0),
    }
}

/// The ledger's starting margin: the largest relative under-prediction of a random train batch's
/// cost when every query goes to the dearest predicted model (a conservative, offline figure).
fn cost_margin(d: &data::SplitData, batches: &[Vec<usize>]) -> f64 {
    let mut worst: f64 = 0.0;
    for j in 0..d.m {
        for b in batches {
            let (p, r): (f64, f64) = b
                .iter()
                .map(|&q| (d.pred_cost[q * d.m + j], d.cost[q * d.m + j]))
                .fold((0.0, 0.0), |a, x| (a.0 + x.0, a.1 + x.1));
            if p > 0.0 {
                worst = worst.max(r / p - 1.0);
            }
        }
    }
    worst
}

fn matched_and_aiq(
    specs: &[Spec],
    sweep: &[SweepPoint],
) -> (Vec<MatchedPoint>, std::collections::BTreeMap<String, f64>) {
    let hulls: Vec<(String, Vec<(f64, f64)>)> = specs
        .iter()
        .filter(|s| s.has_knob())
        .map(|s| {
            let name = s.name();
            let pts: Vec<(f64, f64)> =
                sweep.iter().filter(|p| p.assigner == name).map(|p| (p.cost, p.accuracy)).collect();
            (name, stats::upper_hull(&pts))
        })
        .filter(|(_, h)| !h.is_empty())
        .collect();
    let lo = hulls.iter().map(|(_, h)| h[0].0).fold(f64::NEG_INFINITY, f64::max);
    let hi = hulls.iter().map(|(_, h)| h[h.len() - 1].0).fold(f64::INFINITY, f64::min);
    let mut matched = Vec::new();
    let mut aiq = std::collections::BTreeMap::new();
    if hulls.is_empty() || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return (matched, aiq);
    }
    for k in 0..8 {
        let c = lo + (hi - lo) * k as f64 / 7.0;
        for (name, h) in &hulls {
            if let Some(a) = stats::hull_at(h, c) {
                matched.push(MatchedPoint { assigner: name.clone(), cost: c, accuracy: a });
            }
        }
    }
    for (name, h) in &hulls {
        if let Some(v) = stats::aiq(h, lo, hi) {
            aiq.insert(name.clone(), v);
        }
    }
    (matched, aiq)
}
