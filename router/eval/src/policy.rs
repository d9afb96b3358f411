//! Assigner specs as the harness runs them: each has one knob (budget per query, λ, τ, or none),
//! calibrated on the train split to a target mean cost and swept on the test split.

use super::data::SplitData;
use llmroute_core::assign::{
    min_cost_assignment, Assigner, Fast, Mip, PerQueryPrice, PerQueryThreshold, Problem, RandomAssigner, Single,
};
use llmroute_core::ledger::Ledger;
use llmroute_core::{CoreError, Result};
use std::time::Instant;

#[derive(Debug, Clone)]
pub enum Spec {
    Fast,
    Mip,
    Oracle,
    PerQueryPrice,
    PerQueryThreshold,
    Single(usize, String),
    Random,
}

impl Spec {
    pub fn parse(s: &str, models: &[String]) -> Result<Spec> {
        Ok(match s {
            "fast" => Spec::Fast,
            "mip" => Spec::Mip,
            "oracle" => Spec::Oracle,
            "per-query-price" => Spec::PerQueryPrice,
            "per-query-threshold" => Spec::PerQueryThreshold,
            "random" => Spec::Random,
            other => match other.strip_prefix("single:") {
                Some(name) => {
                    let single = Single::new(models, name)?;
                    Spec::Single(single.model, name.to_string())
                }
                None => {
                    return Err(CoreError::Invalid(format!(
                        "unknown assigner `{other}` (fast, mip, oracle, per-query-price, per-query-threshold, single:MODEL, random)"
                    )))
                }
            },
        })
    }

    pub fn name(&self) -> String {
        match self {
            Spec::Fast => "fast".into(),
            Spec::Mip => "mip".into(),
            Spec::Oracle => "oracle".into(),
            Spec::PerQueryPrice => "per-query-price".into(),
            Spec::PerQueryThreshold => "per-query-threshold".into(),
            Spec::Single(_, n) => format!("single:{n}"),
            Spec::Random => "random".into(),
        }
    }

    pub fn has_knob(&self) -> bool {
        !matches!(self, Spec::Single(..) | Spec::Random)
    }

    pub fn is_batch(&self) -> bool {
        matches!(self, Spec::Fast | Spec::Mip | Spec::Oracle)
    }
}

/// Settings shared by every run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub gamma: f64,
    pub capacity_frac: Option<f64>,
    pub ledger: bool,
    /// Initial cost-prediction margin of the ledger (relative).
    pub prior_margin: f64,
    pub mip_time_limit_s: f64,
    pub mip_rel_gap: f64,
    pub seed: u64,
    /// Carry unspent budget forward (a rolling budget) as well as overspend.
    pub carry_unspent: bool,
    /// The batch size the cost margin was measured on.
    pub batch_size: usize,
    /// Batch assigners maximize Σ (μ − λ·ĉ)·x under the ledger's rolling budget, with the price λ
    /// calibrated on train traffic; off: Σ μ·x under budget-per-query × n.
    pub dual_price: bool,
    /// κ of the chance constraint (0: plan on point costs).
    pub kappa: f64,
    /// Step size of the price pacing (0: λ fixed).
    pub pacing: f64,
    /// Priced batch assigners price for allowance / (1 + headroom).
    pub headroom: f64,
    /// The ledger's adaptive-conformal step γ.
    pub adapt_rate: f64,
    /// Priced batch assigners ration an over-budget batch by a uniform price (`assign::price`).
    pub ration_by_price: bool,
    /// The ledger's allowed per-batch over-budget probability.
    pub max_over_probability: f64,
    /// Batches planned on train traffic (cross-fitted predictions): the ledger's starting
    /// quantiles.
    pub calibration: Vec<llmroute_core::ledger::Observation>,
}

impl RunOptions {
    /// Budgets roll over (cumulative allowance minus cumulative spend).
    pub fn rolling(&self) -> bool {
        self.carry_unspent || self.dual_price
    }
}

/// An assigner's setting: its knob (λ, τ, or budget per query) and the mean cost per query it
/// is allowed (what batches are judged against).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knob {
    pub value: f64,
    pub allowance: f64,
}

/// One batch's outcome.
#[derive(Debug, Clone, Copy)]
pub struct BatchOutcome {
    pub n: usize,
    /// The budget the batch is judged against.
    pub budget: f64,
    pub realized: f64,
    pub predicted: f64,
    pub score: f64,
    pub solve_s: f64,
    /// The ledger raised the budget to the batch's cheapest feasible cost.
    pub overdraft: bool,
    /// The batch's share of the allowance (target × n).
    pub allowance: f64,
}

fn problem(d: &SplitData, batch: &[usize], oracle: bool, budget: f64, opts: &RunOptions) -> Problem {
    let (n, m) = (batch.len(), d.m);
    let mut p = Problem::new(n, m);
    for (i, &q) in batch.iter().enumerate() {
        for j in 0..m {
            let (k, s) = (i * m + j, q * m + j);
            if oracle {
                p.mu[k] = d.score[s];
                p.cost[k] = d.cost[s];
            } else {
                p.mu[k] = d.mu[s];
                p.sigma[k] = d.sigma[s];
                p.cost[k] = d.pred_cost[s];
                p.cost_var[k] = d.cost_var[s];
            }
            p.tokens[k] = d.tokens[s];
        }
    }
    p.budget = budget;
    p.gamma = if oracle { 0.0 } else { opts.gamma };
    p.kappa = if oracle { 0.0 } else { opts.kappa };
    if let Some(f) = opts.capacity_frac {
        p.slots = vec![((f * n as f64).ceil() as usize).max(1); m];
    }
    p
}

/// Runs one spec with one knob over the batches, in order (the ledger carries over).
pub fn run(
    spec: &Spec,
    knob: Knob,
    d: &SplitData,
    batches: &[Vec<usize>],
    opts: &RunOptions,
) -> Result<Vec<BatchOutcome>> {
    let oracle = matches!(spec, Spec::Oracle);
    let priced = opts.dual_price && matches!(spec, Spec::Fast | Spec::Mip);
    let mut ledger = Ledger::new(knob.allowance, if oracle { 0.0 } else { opts.prior_margin })
        .with_reference_batch(opts.batch_size)
        .with_calibration(if oracle { &[] } else { &opts.calibration });
    ledger.carry_unspent = opts.rolling() && !oracle;
    ledger.max_over_probability = opts.max_over_probability;
    ledger.chance = opts.kappa > 0.0;
    ledger.adapt_rate = opts.adapt_rate;
    let solver: Box<dyn Assigner> = match spec {
        Spec::Fast | Spec::Oracle => Box::new(Fast::default()),
        Spec::Mip => Box::new(Mip { time_limit_s: opts.mip_time_limit_s, rel_gap: opts.mip_rel_gap }),
        Spec::PerQueryPrice => Box::new(PerQueryPrice { lambda: knob.value }),
        Spec::PerQueryThreshold => Box::new(PerQueryThreshold { tau: knob.value }),
        Spec::Single(j, name) => Box::new(Single { model: *j, name: name.clone() }),
        Spec::Random => Box::new(RandomAssigner { seed: opts.seed }),
    };
    let (mut allowed_so_far, mut spent_so_far) = (0.0, 0.0);
    // The batch price, paced (dual mirror descent on the rolling budget): a batch that spends
    // less than its allowance lowers it, one that spends more raises it, within [λ₀/4, 4λ₀].
    let mut lambda = knob.value;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let n = batch.len();
        let mut p = problem(d, batch, oracle, f64::INFINITY, opts);
        // The batch's share of the allowance.
        let allowance = knob.allowance * n as f64;
        allowed_so_far += allowance;
        let mut grant = None;
        let (budget, overdraft) = if !spec.is_batch() {
            // Per-query routers keep no ledger: they are judged like the batch assigners' ledger
            // would judge them (rolling or per batch), or against the batch's cheapest true cost
            // when even that exceeds it.
            let cheapest: f64 =
                batch.iter().map(|&q| (0..d.m).map(|j| d.cost[q * d.m + j]).fold(f64::INFINITY, f64::min)).sum();
            let t = if opts.rolling() { allowed_so_far - spent_so_far } else { allowance };
            (t.max(cheapest), cheapest > t)
        } else if opts.ledger {
            let mc = min_cost_assignment(&p);
            let b = ledger.reserve(n, p.cost_of(&mc), p.cost_var_of(&mc));
            p.budget = b.plan;
            p.kappa = b.kappa;
            grant = Some(b);
            (b.budget, b.overdraft)
        } else {
            p.budget = allowance;
            (p.budget, false)
        };
        let t = Instant::now();
        let a = if priced && opts.ration_by_price {
            llmroute_core::assign::price::ration(&p, lambda, |q| solver.solve(q))?.0
        } else {
            if priced {
                p.price(lambda);
            }
            solver.solve(&p)?
        };
        let solve_s = t.elapsed().as_secs_f64();
        let (mut realized, mut score) = (0.0, 0.0);
        for (i, &q) in batch.iter().enumerate() {
            realized += d.cost[q * d.m + a.choice[i]];
            score += d.score[q * d.m + a.choice[i]];
        }
        spent_so_far += realized;
        let predicted = p.budget_use(&a.choice);
        if let Some(b) = grant {
            ledger.settle(&b, p.cost_of(&a.choice), p.cost_var_of(&a.choice), realized);
        }
        if priced && opts.pacing > 0.0 && allowance.is_finite() && allowance > 0.0 {
            let step = (opts.pacing * (realized - allowance) / allowance).clamp(-1.0, 1.0);
            lambda = (lambda * step.exp()).clamp(knob.value / 4.0, knob.value * 4.0);
        }
        tracing::trace!(
            assigner = %spec.name(), lambda, n, grant = budget, plan = p.budget, predicted_use = predicted, realized, score,
            overdraft, margin = ledger.margin(), balance = ledger.balance(), status = ?a.status, "batch"
        );
        out.push(BatchOutcome { n, budget, realized, predicted, score, solve_s, overdraft, allowance });
    }
    Ok(out)
}

pub fn mean_cost(r: &[BatchOutcome]) -> f64 {
    r.iter().map(|b| b.realized).sum::<f64>() / r.iter().map(|b| b.n).sum::<usize>().max(1) as f64
}

/// max over prefixes of (cumulative realized / cumulative allowance − 1), at least 0: how far the
/// run was ever ahead of its budget.
pub fn rolling_overspend(r: &[BatchOutcome]) -> f64 {
    let (mut spent, mut allowed, mut worst) = (0.0, 0.0, 0.0f64);
    for b in r {
        spent += b.realized;
        allowed += b.allowance;
        if allowed > 0.0 && allowed.is_finite() {
            worst = worst.max(spent / allowed - 1.0);
        }
    }
    worst
}

pub fn accuracy(r: &[BatchOutcome]) -> f64 {
    r.iter().map(|b| b.score).sum::<f64>() / r.iter().map(|b| b.n).sum::<usize>().max(1) as f64
}

/// The knob range of a spec on a split: (lo, hi, log-scale, cost increases with knob).
fn knob_range(spec: &Spec, d: &SplitData) -> (f64, f64, bool, bool) {
    let costs: Vec<f64> = (0..d.m).map(|j| d.mean_cost(j)).collect();
    let (cmin, cmax) = costs.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &c| (a.min(c), b.max(c)));
    match spec {
        Spec::PerQueryPrice => {
            let scale = 1.0 / (cmax - cmin).max(1e-12);
            (scale * 1e-3, scale * 1e4, true, false)
        }
        Spec::PerQueryThreshold => (0.0, 1.0, false, true),
        _ => {
            // Budget per query: from the cheapest per-query choice to the dearest.
            let lo = (0..d.n)
                .map(|q| {
                    (0..d.m).map(|j| d.pred_cost[q * d.m + j].min(d.cost[q * d.m + j])).fold(f64::INFINITY, f64::min)
                })
                .sum::<f64>()
                / d.n.max(1) as f64;
            let hi = (0..d.n)
                .map(|q| (0..d.m).map(|j| d.pred_cost[q * d.m + j].max(d.cost[q * d.m + j])).fold(0.0, f64::max))
                .sum::<f64>()
                / d.n.max(1) as f64;
            (lo * 0.5, hi * 1.05, false, true)
        }
    }
}

/// Finds the knob whose realized mean cost on `d` (train) is closest to `target` without
/// exceeding it where possible, by bisection (22 steps). Priced batch assigners calibrate λ as
/// per-query pricing does (see below), so `mip`'s calibration does not cost 22 × HiGHS per batch.
pub fn calibrate(spec: &Spec, target: f64, d: &SplitData, batches: &[Vec<usize>], opts: &RunOptions) -> Result<Knob> {
    let priced = opts.dual_price && matches!(spec, Spec::Fast | Spec::Mip);
    if !spec.has_knob() {
        return Ok(Knob { value: 0.0, allowance: target });
    }
    if spec.is_batch() && !priced {
        // Without a price a batch assigner's only knob is its budget: it is given the target
        // itself and judged against it, like every other assigner.
        return Ok(Knob { value: target, allowance: target });
    }
    let (lo, hi, log, increasing) = if priced { knob_range(&Spec::PerQueryPrice, d) } else { knob_range(spec, d) };
    // A priced batch assigner's λ is the per-query price that spends the target on train traffic
    // with no budget row: the batch's chance constraint and the ledger are then a safety net that
    // binds only when a batch would overrun what the balance holds. (Calibrating λ through the
    // budgeted run instead lets the budget row do the rationing; its variance term then prices
    // spread, not expected cost, and loses accuracy at matched spend on heavy-tailed costs.)
    let runner = if priced { &Spec::PerQueryPrice } else { spec };
    let (mut a, mut b) = if log { (lo.ln(), hi.ln()) } else { (lo, hi) };
    let val = |x: f64| if log { x.exp() } else { x };
    // Batch assigners without a price spend their allowance: the knob is the allowance itself.
    let knob_at = |x: f64| {
        if spec.is_batch() && !priced {
            Knob { value: x, allowance: x }
        } else {
            Knob { value: x, allowance: target }
        }
    };
    // A priced batch assigner prices for target / (1 + headroom): the rest of the allowance stays
    // in the balance for cost surprises, so the chance row binds (and rations by spread) less.
    let aim = if priced { target / (1.0 + opts.headroom.max(0.0)) } else { target };
    for _ in 0..22 {
        let mid = 0.5 * (a + b);
        let c = mean_cost(&run(runner, knob_at(val(mid)), d, batches, opts)?);
        if (c > aim) == increasing {
            b = mid;
        } else {
            a = mid;
        }
    }
    // The end whose cost does not exceed the target.
    Ok(knob_at(if increasing { val(a) } else { val(b) }))
}

/// Knob values for the cost–accuracy sweep on the test split.
pub fn sweep_knobs(spec: &Spec, d: &SplitData, points: usize) -> Vec<f64> {
    if !spec.has_knob() {
        return vec![0.0];
    }
    let (lo, hi, log, _) = knob_range(spec, d);
    let points = points.max(2);
    (0..points)
        .map(|k| {
            let t = k as f64 / (points - 1) as f64;
            if log {
                (lo.ln() + t * (hi.ln() - lo.ln())).exp()
            } else if matches!(spec, Spec::PerQueryThreshold) {
                lo + t * (hi - lo)
            } else {
                // Denser at the low end, where budgets bind hardest.
                lo + t * t * (hi - lo)
            }
        })
        .collect()
}
