//! The eval harness behind `llmroute-eval eval`: every comparison at equal realized spend, on
//! recorded outcomes, with bootstrap intervals, under random, by-task and adversarial batching.

pub mod batching;
pub mod bench;
pub mod data;
pub mod policy;
pub mod report;
pub mod stats;

use batching::{make_batches, Batching};
use llmroute_core::ledger::Ledger;
use llmroute_core::{CoreError, Result};
use policy::{accuracy, calibrate, mean_cost, run, sweep_knobs, RunOptions, Spec};
use rand::{Rng, SeedableRng};
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
    /// `--cost-noise lognormal:S`.
    pub cost_noise: Option<f64>,
    /// `--estimator plain-knn`: every assigner on the plain TF-IDF kNN reference.
    pub plain_estimator: bool,
    /// Allowed per-batch over-budget probability (κ of the chance constraint, ledger quantile).
    pub max_over_probability: f64,
    /// Plan on point costs (κ = 0): the old behaviour, for comparison.
    pub no_chance: bool,
    /// Step size of the batch price's pacing (0 = fixed λ).
    pub pacing: f64,
    /// The ledger's adaptive-conformal step γ (0 = fixed quantile level).
    pub adapt_rate: f64,
    /// Priced batch assigners price for allowance / (1 + headroom); None: from the calibration
    /// batches (`ledger::auto_headroom`).
    pub headroom: Option<f64>,
    /// Priced batch assigners ration an over-budget batch by raising its price (`assign::price`)
    /// instead of solving the budgeted problem.
    pub ration_by_price: bool,
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
    /// max over prefixes of the stream of (cumulative realized / cumulative allowance − 1).
    pub rolling_overspend: f64,
    pub solve_ms_p50: f64,
    pub solve_ms_p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchedPoint {
    pub assigner: String,
    pub cost: f64,
    pub accuracy: f64,
    /// 95 % bootstrap interval (whole test batches resampled, the hull's vertices and weights fixed).
    pub ci: [f64; 2],
    /// accuracy − per-query-price's at the same cost, with its paired 95 % interval (same
    /// resampled batches for both), when per-query-price ran on the same estimator.
    pub vs_per_query: Option<[f64; 3]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub assigner: String,
    pub knob: f64,
    pub cost: f64,
    pub accuracy: f64,
    /// Score sum per test batch (for the matched-cost bootstrap).
    #[serde(skip)]
    pub batch_scores: Vec<f64>,
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
    /// Per estimator: the cost model (per-model bias, variance scale) and its check on the test
    /// split, corrected and raw.
    pub cost_models: Vec<serde_json::Value>,
}

fn validate(cfg: &EvalConfig) -> Result<()> {
    if cfg.batch_size == 0 {
        return Err(CoreError::Invalid("--batch-size must be at least 1".into()));
    }
    if let Some(f) = cfg.spend.iter().find(|f| !(f.is_finite() && (0.0..=1.0).contains(*f))) {
        return Err(CoreError::Invalid(format!("--spend {f}: expected fractions in [0, 1]")));
    }
    if let Some(f) = cfg.capacity_frac {
        if !(f > 0.0 && f <= 1.0) {
            return Err(CoreError::Invalid(format!("--capacity-frac {f}: expected a fraction in (0, 1]")));
        }
    }
    if !(cfg.gamma.is_finite() && cfg.gamma >= 0.0) {
        return Err(CoreError::Invalid("--gamma must be ≥ 0".into()));
    }
    if !(cfg.max_over_probability > 0.0 && cfg.max_over_probability <= 0.5) {
        return Err(CoreError::Invalid(format!(
            "--max-over-probability {}: expected (0, 0.5]",
            cfg.max_over_probability
        )));
    }
    if let Some(s) = cfg.cost_noise {
        if !(s.is_finite() && s >= 0.0) {
            return Err(CoreError::Invalid(format!("--cost-noise lognormal:{s}: S must be ≥ 0")));
        }
    }
    if cfg.assigners.is_empty() {
        return Err(CoreError::Invalid("--assigners is empty".into()));
    }
    Ok(())
}

/// The suffix that runs an assigner on the plain TF-IDF kNN reference estimator.
pub const PLAIN_SUFFIX: &str = "@plain-knn";

/// One assigner as run: its spec and which estimator feeds it.
struct Arm {
    spec: Spec,
    plain: bool,
}

impl Arm {
    fn name(&self) -> String {
        if self.plain {
            format!("{}{PLAIN_SUFFIX}", self.spec.name())
        } else {
            self.spec.name()
        }
    }
}

pub fn run_eval(cfg: &EvalConfig) -> Result<EvalReport> {
    validate(cfg)?;
    let mut arms = Vec::new();
    let data = {
        let needs_plain = cfg.plain_estimator || cfg.assigners.iter().any(|a| a.trim().ends_with(PLAIN_SUFFIX));
        data::load(&data::DataOptions {
            records: &cfg.records,
            catalog: cfg.catalog.as_deref(),
            train_frac: cfg.train_frac,
            seed: cfg.seed,
            knn: cfg.knn.clone(),
            estimator_noise: cfg.estimator_noise,
            artifact: cfg.estimator_artifact.as_deref(),
            embedding_cache: &cfg.embedding_cache,
            cost_noise: cfg.cost_noise,
            plain_knn: needs_plain,
        })?
    };
    for a in &cfg.assigners {
        let a = a.trim();
        let (base, plain) = match a.strip_suffix(PLAIN_SUFFIX) {
            Some(b) => (b, true),
            None => (a, cfg.plain_estimator),
        };
        arms.push(Arm { spec: Spec::parse(base, &data.models)?, plain });
    }
    if let Some(f) = cfg.capacity_frac {
        if (f * cfg.batch_size as f64).ceil() * (data.models.len() as f64) < (cfg.batch_size as f64) {
            return Err(CoreError::Invalid(format!(
                "--capacity-frac {f}: {} models × ⌈{f}·{}⌉ slots cannot hold a batch",
                data.models.len(),
                cfg.batch_size
            )));
        }
    }
    let pred_of = |plain: bool| -> &data::Predicted {
        match (&data.plain, plain) {
            (Some(p), true) => p,
            _ => &data.main,
        }
    };
    let (train, test) = (&data.main.train, &data.main.test);
    let costs: Vec<f64> = (0..train.m).map(|j| train.mean_cost(j)).collect();
    let c_min = costs.iter().copied().fold(f64::INFINITY, f64::min);
    let c_max = costs.iter().copied().fold(0.0, f64::max);
    // Calibration runs on average (random) train traffic; evaluation on the chosen batching.
    let train_batches = make_batches(train, Batching::Random, cfg.batch_size, cfg.seed);
    let test_batches = make_batches(test, cfg.batching, cfg.batch_size, cfg.seed);
    let kappa = if cfg.no_chance { 0.0 } else { llmroute_core::assign::chance::kappa_for(cfg.max_over_probability) };
    let base_opts = |p: &data::Predicted| -> RunOptions {
        let mut o = RunOptions {
            gamma: cfg.gamma,
            capacity_frac: cfg.capacity_frac,
            ledger: cfg.ledger,
            prior_margin: cost_margin(&p.train, &train_batches),
            mip_time_limit_s: cfg.mip_time_limit_s,
            mip_rel_gap: cfg.mip_rel_gap,
            seed: cfg.seed,
            carry_unspent: cfg.carry_unspent,
            dual_price: cfg.dual_price,
            batch_size: cfg.batch_size,
            kappa,
            pacing: cfg.pacing,
            headroom: 0.0,
            adapt_rate: cfg.adapt_rate,
            ration_by_price: cfg.ration_by_price,
            max_over_probability: cfg.max_over_probability,
            calibration: Vec::new(),
        };
        o.calibration = calibration_batches(&p.train, &train_batches);
        o.headroom = cfg
            .headroom
            .unwrap_or_else(|| llmroute_core::ledger::auto_headroom(&o.calibration, cfg.max_over_probability));
        o
    };
    let main_opts = base_opts(&data.main);
    let plain_opts = data.plain.as_ref().map(base_opts);
    let opts_of = |plain: bool| -> &RunOptions {
        match (&plain_opts, plain) {
            (Some(o), true) => o,
            _ => &main_opts,
        }
    };
    tracing::info!(
        records = data.records,
        train = train.n,
        test = test.n,
        models = data.models.len(),
        c_min,
        c_max,
        kappa,
        margin = Ledger::new(0.0, main_opts.prior_margin).with_calibration(&main_opts.calibration).margin(),
        calibrated_kappa = Ledger::new(0.0, 0.0).with_calibration(&main_opts.calibration).kappa(),
        "data ready"
    );
    let mut results = Vec::new();
    for arm in &arms {
        let (pd, opts) = (pred_of(arm.plain), opts_of(arm.plain));
        for &f in &cfg.spend {
            let target = c_min + f * (c_max - c_min);
            let t0 = std::time::Instant::now();
            let knob = calibrate(&arm.spec, target, &pd.train, &train_batches, opts)?;
            let r = run(&arm.spec, knob, &pd.test, &test_batches, opts)?;
            let row = summarize(&arm.name(), f, target, knob, &r, cfg);
            tracing::info!(assigner = %row.assigner, spend = f, accuracy = row.accuracy, mean_cost = row.mean_cost, over_budget = row.batches_over_budget, rolling_overspend = row.rolling_overspend, secs = t0.elapsed().as_secs_f64(), "spend level done");
            results.push(row);
        }
    }
    // Cost–accuracy sweeps on the test split, for matched-cost comparison, AIQ and the plot.
    // Priced batch assigners sweep spend levels (λ calibrated on train for each); the others
    // sweep their knob directly.
    let mut sweep = Vec::new();
    for arm in &arms {
        let (pd, opts) = (pred_of(arm.plain), opts_of(arm.plain));
        let spec = &arm.spec;
        let priced = cfg.dual_price && matches!(spec, Spec::Fast | Spec::Mip);
        let knobs: Vec<policy::Knob> = if priced {
            // The same λ grid as per-query pricing, each with the allowance that λ spends on
            // train traffic (the calibration's relation between λ and target, inverted).
            sweep_knobs(&Spec::PerQueryPrice, &pd.test, cfg.sweep_points)
                .into_iter()
                .map(|l| {
                    let free = policy::Knob { value: l, allowance: f64::INFINITY };
                    let spend = mean_cost(&run(&Spec::PerQueryPrice, free, &pd.train, &train_batches, opts)?);
                    Ok(policy::Knob { value: l, allowance: spend * (1.0 + opts.headroom.max(0.0)) })
                })
                .collect::<Result<_>>()?
        } else {
            sweep_knobs(spec, &pd.test, cfg.sweep_points)
                .into_iter()
                .map(|x| policy::Knob { value: x, allowance: if spec.is_batch() { x } else { f64::INFINITY } })
                .collect()
        };
        for knob in knobs {
            let r = run(spec, knob, &pd.test, &test_batches, opts)?;
            sweep.push(SweepPoint {
                assigner: arm.name(),
                knob: knob.value,
                cost: mean_cost(&r),
                accuracy: accuracy(&r),
                batch_scores: r.iter().map(|b| b.score).collect(),
            });
        }
    }
    let batch_n: Vec<usize> = test_batches.iter().map(|b| b.len()).collect();
    let (matched, aiq) = matched_and_aiq(&arms, &sweep, &batch_n, cfg.bootstrap, cfg.seed);
    let single_models = data
        .models
        .iter()
        .enumerate()
        .map(|(j, m)| serde_json::json!({"model": m, "accuracy": test.mean_score(j), "mean_cost": test.mean_cost(j)}))
        .collect();
    let mut cost_models = vec![cost_model_json("default", &data.models, &data.main)];
    if let Some(p) = &data.plain {
        cost_models.push(cost_model_json("plain-knn", &data.models, p));
    }
    Ok(EvalReport {
        records: data.records,
        n_train: train.n,
        n_test: test.n,
        models: data.models.clone(),
        settings: serde_json::json!({
            "batch_size": cfg.batch_size, "batching": cfg.batching, "capacity_frac": cfg.capacity_frac,
            "gamma": cfg.gamma, "estimator_noise": cfg.estimator_noise, "train_frac": cfg.train_frac,
            "seed": cfg.seed, "bootstrap": cfg.bootstrap, "ledger": cfg.ledger, "carry_unspent": cfg.carry_unspent, "dual_price": cfg.dual_price, "k": cfg.knn.k,
            "task_hint": cfg.knn.use_task, "estimator_artifact": cfg.estimator_artifact, "c_min": c_min, "c_max": c_max,
            "prior_cost_margin": main_opts.prior_margin, "kappa": kappa, "max_over_probability": cfg.max_over_probability,
            "cost_noise_lognormal_s": cfg.cost_noise, "pacing": cfg.pacing, "headroom": main_opts.headroom, "headroom_auto": cfg.headroom.is_none(), "adapt_rate": cfg.adapt_rate, "plain_estimator": cfg.plain_estimator, "ration_by_price": cfg.ration_by_price,
        }),
        single_models,
        results,
        matched,
        aiq,
        sweep,
        cost_models,
    })
}

fn cost_model_json(name: &str, models: &[String], p: &data::Predicted) -> serde_json::Value {
    let rows = estimator::costmodel::report_rows(models, &p.cost_model, &p.cost_checks, &p.cost_checks_raw);
    serde_json::json!({"estimator": name, "models": rows})
}

/// The ledger's calibration batches, cross-fitted: on the train split's out-of-sample
/// predictions, every random train batch planned by per-query pricing at λ spread over its range
/// and by each single model — predicted Σ ĉ·x, Σ v·x and the realized cost. The pool covers cheap
/// to dear policies, and the argmax choices carry the selection bias live batches have.
fn calibration_batches(d: &data::SplitData, batches: &[Vec<usize>]) -> Vec<llmroute_core::ledger::Observation> {
    let lambdas = sweep_knobs(&Spec::PerQueryPrice, d, 8);
    let mut out = Vec::new();
    for b in batches {
        let mut choices: Vec<Vec<usize>> = (0..d.m).map(|j| vec![j; b.len()]).collect();
        for &l in &lambdas {
            choices.push(
                b.iter()
                    .map(|&q| {
                        (0..d.m)
                            .max_by(|&x, &y| {
                                let v = |j: usize| d.mu[q * d.m + j] - l * d.pred_cost[q * d.m + j];
                                v(x).total_cmp(&v(y))
                            })
                            .unwrap_or(0)
                    })
                    .collect(),
            );
        }
        for ch in choices {
            let (mut cost, mut var, mut realized) = (0.0, 0.0, 0.0);
            for (&q, &j) in b.iter().zip(&ch) {
                let k = q * d.m + j;
                cost += d.pred_cost[k];
                var += d.cost_var[k];
                realized += d.cost[k];
            }
            out.push(llmroute_core::ledger::Observation { cost, var, realized });
        }
    }
    out
}

/// One result row: accuracy with its bootstrap interval, realized cost, budget adherence (a batch
/// is over budget when its realized cost exceeds 1.01 × its budget) and solve-time percentiles.
fn summarize(
    name: &str,
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
        assigner: name.to_string(),
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
        rolling_overspend: policy::rolling_overspend(r),
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

/// An assigner's hull: name, is the oracle, (cost, accuracy) vertices, their sweep indices.
type Hull = (String, bool, Vec<(f64, f64)>, Vec<usize>);

fn matched_and_aiq(
    arms: &[Arm],
    sweep: &[SweepPoint],
    batch_n: &[usize],
    reps: usize,
    seed: u64,
) -> (Vec<MatchedPoint>, std::collections::BTreeMap<String, f64>) {
    // Each hull vertex keeps the index of its sweep point, for the bootstrap.
    let hulls: Vec<Hull> = arms
        .iter()
        .filter(|a| a.spec.has_knob())
        .map(|a| {
            let name = a.name();
            let idx: Vec<usize> =
                sweep.iter().enumerate().filter(|(_, p)| p.assigner == name).map(|(k, _)| k).collect();
            let pts: Vec<(f64, f64)> = idx.iter().map(|&k| (sweep[k].cost, sweep[k].accuracy)).collect();
            let h = stats::upper_hull_idx(&pts);
            let hull: Vec<(f64, f64)> = h.iter().map(|&v| pts[v]).collect();
            let at: Vec<usize> = h.iter().map(|&v| idx[v]).collect();
            (name, matches!(a.spec, Spec::Oracle), hull, at)
        })
        .filter(|(_, _, h, _)| !h.is_empty())
        .collect();
    // The common cost range of the non-oracle assigners (the oracle's narrow range must not cut
    // the comparison); the oracle is reported where its hull reaches.
    let real: Vec<&Hull> = hulls.iter().filter(|h| !h.1).collect();
    let range_of = if real.is_empty() { hulls.iter().collect::<Vec<_>>() } else { real };
    let lo = range_of.iter().map(|h| h.2[0].0).fold(f64::NEG_INFINITY, f64::max);
    let hi = range_of.iter().map(|h| h.2[h.2.len() - 1].0).fold(f64::INFINITY, f64::min);
    let mut matched = Vec::new();
    let mut aiq = std::collections::BTreeMap::new();
    if hulls.is_empty() || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return (matched, aiq);
    }
    // Resampled batch indices, shared by every assigner (paired).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x3a7c);
    let draws: Vec<Vec<usize>> =
        (0..reps).map(|_| (0..batch_n.len()).map(|_| rng.gen_range(0..batch_n.len().max(1))).collect()).collect();
    let acc_on = |k: usize, draw: &[usize]| -> f64 {
        let (s, n) = draw.iter().fold((0.0, 0usize), |a, &b| {
            (a.0 + sweep[k].batch_scores.get(b).copied().unwrap_or(0.0), a.1 + batch_n[b])
        });
        s / n.max(1) as f64
    };
    // The bootstrap distribution of a hull's value at cost c: vertices' accuracies on each draw,
    // mixed with the full-sample weights.
    let boot = |hull: &[(f64, f64)], at: &[usize], c: f64| -> Option<Vec<f64>> {
        let w = stats::hull_weights(hull, c)?;
        Some(draws.iter().map(|d| w.iter().map(|&(v, t)| t * acc_on(at[v], d)).sum()).collect())
    };
    let base = hulls.iter().find(|h| h.0 == Spec::PerQueryPrice.name());
    // Geometric spacing: prices span orders of magnitude and budgets bind hardest at the low end.
    for k in 0..8 {
        let c = if lo > 0.0 { lo * (hi / lo).powf(k as f64 / 7.0) } else { lo + (hi - lo) * k as f64 / 7.0 };
        let base_boot = base.and_then(|b| boot(&b.2, &b.3, c).map(|v| (stats::hull_at(&b.2, c), v)));
        for (name, _, h, at) in &hulls {
            let Some(a) = stats::hull_at(h, c) else { continue };
            let b = boot(h, at, c).unwrap_or_default();
            let ci = [stats::percentile(&b, 2.5), stats::percentile(&b, 97.5)];
            let vs_per_query = match &base_boot {
                Some((Some(a0), b0)) if !name.ends_with(PLAIN_SUFFIX) || name == "per-query-price" => {
                    let d: Vec<f64> = b.iter().zip(b0).map(|(x, y)| x - y).collect();
                    Some([a - a0, stats::percentile(&d, 2.5), stats::percentile(&d, 97.5)])
                }
                _ => None,
            };
            matched.push(MatchedPoint { assigner: name.clone(), cost: c, accuracy: a, ci, vs_per_query });
        }
    }
    for (name, _, h, _) in &hulls {
        if let Some(v) = stats::aiq(h, lo, hi) {
            aiq.insert(name.clone(), v);
        }
    }
    (matched, aiq)
}
