//! A closed batch → the batch problem (μ, σ, cost, KV tokens, allowed, slots) → the ledger's budget
//! → the assigner's choice. Runs on the batcher task; HiGHS (when configured) on a blocking thread,
//! with `fast` as the fallback when it fails or runs out of time.

use super::config::AssignerKind;
use super::latency::LatencyPredictor;
use super::query::Query;
use super::state::{next_batch_id, Live, Shared};
use crate::metrics::names;
use crate::otel::{Kind, Span};
use crate::RouterError;
use llmroute_core::assign::{min_cost_assignment, Assigner, Assignment, Fast, Mip, Problem, SolveStatus};
use llmroute_core::ledger::BatchBudget;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub struct Decided {
    pub batch_id: u64,
    pub live: Arc<Live>,
    pub problem: Arc<Problem>,
    pub choice: Vec<usize>,
    pub assigner: String,
    pub status: SolveStatus,
    pub budget: BatchBudget,
    pub queries: Vec<Query>,
}

/// Answers a query with an error (the caller may have gone away: nothing to do then).
pub fn fail(mut q: Query, e: RouterError) {
    if let Some(tx) = q.reply.take() {
        let _ = tx.send(Err(e));
    }
}

/// Brings a query validated under an older config generation onto `live` (models by name).
fn rebase(q: &mut Query, live: &Arc<Live>) {
    if q.live.generation == live.generation {
        return;
    }
    let mut allowed = vec![false; live.models.len()];
    for (j, ok) in q.allowed.iter().enumerate() {
        if *ok {
            if let Some(k) = live.model_index(&q.live.models[j].entry.name) {
                allowed[k] = true;
            }
        }
    }
    q.allowed = allowed;
    // Columns follow the catalog, which may have changed: predict again (the estimator's part
    // comes from its cache when it was not retrained).
    let prompt = super::backend::prompt_text(&q.messages);
    q.prediction = live.predict(&prompt, q.task.as_deref());
    q.base_mu = q.prediction.mu.clone();
    q.live = live.clone();
}

/// One query's row of the batch problem.
struct Row {
    mu: Vec<f64>,
    sigma: Vec<f64>,
    cost: Vec<f64>,
    cost_var: Vec<f64>,
    tokens: Vec<f64>,
    allowed: Vec<bool>,
}

/// May a query go to a model in this batch: its tenant and request allow it (`allowed`, which
/// also holds the capabilities and context it needs), the model's circuit is not open, the plan
/// runs instances of it, and its predicted cost is within the query's cap.
fn usable(allowed: bool, open: bool, capacity: usize, cost: f64, cost_cap: Option<f64>) -> bool {
    allowed && !open && capacity > 0 && cost_cap.is_none_or(|cap| cost <= cap)
}

/// One model's load when a batch is decided.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ModelLoad {
    /// Its circuit is not open and the plan runs instances of it.
    pub usable: bool,
    pub capacity: usize,
    pub in_flight: usize,
    pub kv_capacity: f64,
    pub kv_in_flight: f64,
}

/// The slots and KV tokens a batch of `n` is solved under, and how many of its queries exceed
/// the free slots. Each model offers its free slots (capacity − calls in flight) and free KV
/// (its KV capacity − the KV tokens its running calls hold). When the usable models' free slots
/// together cannot hold the batch, the overflow is shared out over them in proportion to their
/// capacity (each queues its share, with the KV of those slots): the assigner still places every
/// query by the objective within limits it can meet. Without this the assigners, finding no
/// feasible assignment, answered with the cheapest one, which ignores capacity: a saturated
/// fleet sent the whole overflow to the cheapest model, which then stayed saturated.
pub(crate) fn batch_limits(n: usize, loads: &[ModelLoad]) -> (Vec<usize>, Vec<f64>, usize) {
    let mut slots: Vec<usize> =
        loads.iter().map(|l| if l.usable { l.capacity.saturating_sub(l.in_flight) } else { 0 }).collect();
    let mut kv: Vec<f64> = loads.iter().map(|l| (l.kv_capacity - l.kv_in_flight).max(0.0)).collect();
    let free: usize = slots.iter().sum();
    let total: usize = loads.iter().filter(|l| l.usable).map(|l| l.capacity).sum();
    if free >= n || total == 0 {
        return (slots, kv, 0);
    }
    let overflow = n - free;
    for (j, l) in loads.iter().enumerate().filter(|(_, l)| l.usable && l.capacity > 0) {
        let extra = (overflow * l.capacity).div_ceil(total);
        slots[j] += extra;
        kv[j] += extra as f64 * l.kv_capacity / l.capacity as f64;
    }
    (slots, kv, overflow)
}

/// The output length a query's answer time is judged by on model `j`: the predicted output plus
/// one standard deviation, at most `max_tokens`.
pub(crate) fn planned_output(q: &Query, j: usize) -> f64 {
    let p = &q.prediction;
    let out = p.output_tokens.get(j).copied().unwrap_or(0.0) + p.output_tokens_sd.get(j).copied().unwrap_or(0.0);
    out.min(q.max_tokens as f64)
}

/// A model's learned answer time as one batch sees it.
struct Timing {
    fit: LatencyPredictor,
    /// The fit was stale: this query of the batch (the one with the most time left) is let
    /// through to measure the model again.
    probe: Option<usize>,
}

/// With `backends.deadline_aware`, each model's `Timing` for this batch of `queries` (None: too
/// few answers yet). A stale fit is marked probed on the model, so later batches go by it until
/// the probe's answer (or cut) updates it.
fn timings(live: &Live, queries: &[Query], now: Instant) -> Vec<Option<Timing>> {
    let probe = queries.iter().enumerate().max_by_key(|(_, q)| q.deadline).map(|(i, _)| i);
    live.models
        .iter()
        .map(|md| {
            let mut fit = md.state.latency();
            let probe = if fit.usable(now) {
                None
            } else if fit.stale(now) {
                fit.probed(now);
                probe
            } else {
                return None;
            };
            fit.predictor().map(|fit| Timing { fit, probe })
        })
        .collect()
}

/// With `backends.deadline_aware`: takes out of `allowed` each model whose learned answer time
/// for query `i` (90th percentile, `latency.rs`, by its prompt and `planned_output`) is past the
/// call's remaining deadline — while at least one allowed model is predicted in time (otherwise
/// the query keeps them all: the prediction may be wrong, and a late answer beats none). Models
/// with too few answers yet are never taken out; a stale one not for its probe query.
fn pass_over_late(allowed: &mut [bool], q: &Query, i: usize, timing: &[Option<Timing>], live: &Live) {
    if timing.iter().all(Option::is_none) {
        return;
    }
    let left = q.deadline.saturating_duration_since(Instant::now());
    let late: Vec<bool> = timing
        .iter()
        .enumerate()
        .map(|(j, t)| {
            let Some(t) = t else { return false };
            t.probe != Some(i) && t.fit.predict(q.input_tokens as f64, planned_output(q, j)).is_some_and(|t| t > left)
        })
        .collect();
    if !allowed.iter().zip(&late).any(|(&a, &l)| a && !l) {
        return;
    }
    for (j, a) in allowed.iter_mut().enumerate() {
        if *a && late[j] {
            *a = false;
            metrics::counter!(names::PASSED_OVER_LATE_TOTAL, "model" => live.models[j].entry.name.clone()).increment(1);
        }
    }
}

pub async fn decide(shared: &Arc<Shared>, queries: Vec<Query>) -> Option<Decided> {
    let start = Instant::now();
    let live = shared.live();
    let cfg = &live.config;
    let m = live.models.len();
    let open: Vec<bool> = live.models.iter().map(|md| !md.state.breaker().allows()).collect();
    // Each model's learned answer time, read once per batch (`backends.deadline_aware`).
    let timing = if cfg.backends.deadline_aware { timings(&live, &queries, Instant::now()) } else { Vec::new() };
    // Rows of the problem; queries with no feasible model are answered now.
    let mut kept: Vec<Query> = Vec::with_capacity(queries.len());
    let mut rows: Vec<Row> = Vec::with_capacity(queries.len());
    let mut spans: Vec<Span> = Vec::with_capacity(queries.len());
    for (i, mut q) in queries.into_iter().enumerate() {
        if Instant::now() >= q.deadline {
            let e = RouterError::DeadlineExceeded("the call's deadline passed while it waited for a batch".into());
            q.waiting.fail(&e);
            fail(q, e);
            continue;
        }
        drop(std::mem::take(&mut q.waiting));
        let mut span = q.trace.child("llmroute.decide", Kind::Internal);
        rebase(&mut q, &live);
        let p = &q.prediction;
        let (mut mu, mut sigma, mut cost, mut cost_var, mut tokens, mut allowed) =
            (vec![0.0; m], vec![0.0; m], vec![0.0; m], vec![0.0; m], vec![0.0; m], vec![false; m]);
        for (j, md) in live.models.iter().enumerate() {
            let out = p.output_tokens[j].min(q.max_tokens as f64);
            mu[j] = p.mu[j];
            sigma[j] = p.sigma[j];
            cost[j] = md.entry.cost(q.input_tokens as f64, out);
            // The realized output length's spread, priced like the output (capped by max_tokens).
            let sd = p.output_tokens_sd.get(j).copied().unwrap_or(0.0).min(q.max_tokens as f64);
            cost_var[j] = (md.entry.price_out_per_mtok / 1e6 * sd).powi(2);
            tokens[j] = q.input_tokens as f64 + out;
            allowed[j] = usable(q.allowed[j], open[j], md.capacity, cost[j], q.cost_cap);
        }
        pass_over_late(&mut allowed, &q, i, &timing, &live);
        if !allowed.iter().any(|&a| a) {
            let why = if q.allowed.iter().zip(&open).any(|(&a, &o)| a && o) {
                "every allowed model's circuit is open, it has no instances in the plan, or its predicted cost is above max_cost_usd"
            } else {
                "every allowed model has no instances in the plan or a predicted cost above max_cost_usd"
            };
            let e = RouterError::NoFeasibleModel(why.into());
            span.fail(&e);
            fail(q, e);
            continue;
        }
        rows.push(Row { mu, sigma, cost, cost_var, tokens, allowed });
        spans.push(span);
        kept.push(q);
    }
    if kept.is_empty() {
        return None;
    }
    let n = kept.len();
    let mut p = Problem::new(n, m);
    for (i, Row { mu, sigma, cost, cost_var, tokens, allowed }) in rows.into_iter().enumerate() {
        let r = i * m..(i + 1) * m;
        p.mu[r.clone()].copy_from_slice(&mu);
        p.sigma[r.clone()].copy_from_slice(&sigma);
        p.cost[r.clone()].copy_from_slice(&cost);
        p.cost_var[r.clone()].copy_from_slice(&cost_var);
        p.tokens[r.clone()].copy_from_slice(&tokens);
        p.allowed[r].copy_from_slice(&allowed);
    }
    let loads: Vec<ModelLoad> = live
        .models
        .iter()
        .zip(&open)
        .map(|(md, &open)| {
            let instances = (md.capacity / md.entry.max_concurrency.max(1) as usize) as f64;
            ModelLoad {
                usable: !open && md.capacity > 0,
                capacity: md.capacity,
                in_flight: md.state.in_flight.load(Ordering::Relaxed),
                kv_capacity: md.entry.kv_tokens.map_or(f64::INFINITY, |kv| kv as f64 * instances),
                kv_in_flight: md.state.kv_in_flight.load(Ordering::Relaxed) as f64,
            }
        })
        .collect();
    let (slots, kv_free, spilled) = batch_limits(n, &loads);
    p.slots = slots;
    p.kv_free = kv_free;
    if spilled > 0 {
        metrics::counter!(names::QUERIES_OVER_CAPACITY_TOTAL).increment(spilled as u64);
        tracing::debug!(n, spilled, "the free slots cannot hold the batch; the overflow queues at the models by share");
    }
    p.gamma = cfg.assigner.gamma.min(n as f64);
    let mc = min_cost_assignment(&p);
    let budget = shared.ledger().reserve(n, p.cost_of(&mc), p.cost_var_of(&mc));
    p.budget = budget.plan;
    p.kappa = budget.kappa;
    if budget.overdraft {
        metrics::counter!(names::OVERDRAFT_BATCHES_TOTAL).increment(1);
    }
    let p = Arc::new(p);
    // The batch price: solve Σ (μ − λ·ĉ)·x under the grant; replies and fallbacks keep the raw μ.
    let (assignment, assigner) = if live.price > 0.0 {
        let mut priced = (*p).clone();
        priced.price(live.price);
        solve(&live, &Arc::new(priced)).await
    } else {
        solve(&live, &p).await
    };
    let batch_id = next_batch_id(shared);
    metrics::histogram!(names::DECISION_SECONDS).record(start.elapsed().as_secs_f64());
    metrics::histogram!(names::BATCH_SIZE).record(n as f64);
    tracing::debug!(batch_id, n, assigner = %assigner, status = ?assignment.status, budget = budget.budget, "batch decided");
    for (i, s) in spans.iter_mut().enumerate().filter(|(_, s)| s.is_recording()) {
        let j = assignment.choice[i];
        s.set("llmroute.batch_id", batch_id);
        s.set("llmroute.batch_size", n);
        s.set("llmroute.assigner", assigner.clone());
        s.set("llmroute.solve_status", format!("{:?}", assignment.status));
        s.set("llmroute.model", live.models[j].entry.name.clone());
        s.set("llmroute.predicted_quality", p.mu[i * m + j]);
        s.set("llmroute.predicted_cost_usd", p.cost[i * m + j]);
        s.set("llmroute.batch_budget_usd", budget.budget);
    }
    drop(spans);
    Some(Decided {
        batch_id,
        live: live.clone(),
        problem: p,
        choice: assignment.choice,
        assigner,
        status: assignment.status,
        budget,
        queries: kept,
    })
}

async fn solve(live: &Live, p: &Arc<Problem>) -> (Assignment, String) {
    let cfg = &live.config;
    let fast_name = if p.gamma > 0.0 { format!("fast(gamma={})", p.gamma) } else { "fast".to_string() };
    if cfg.assigner.kind == AssignerKind::Mip && p.n <= cfg.assigner.mip_max_batch {
        let mip = Mip { time_limit_s: cfg.assigner.mip_time_limit().as_secs_f64(), rel_gap: 1e-3 };
        let pc = p.clone();
        let t0 = Instant::now();
        let hard = cfg.assigner.mip_time_limit() * 2;
        let run = tokio::task::spawn_blocking(move || mip.solve(&pc));
        match tokio::time::timeout(hard, run).await {
            Ok(Ok(Ok(a))) if a.status == SolveStatus::Relaxed || p.violation(&a.choice).is_none() => {
                metrics::histogram!(names::SOLVER_SECONDS, "assigner" => "mip").record(t0.elapsed().as_secs_f64());
                return (a, "mip".into());
            }
            Ok(Ok(Ok(a))) => {
                // HiGHS's tolerances can pass an answer our own check rejects: never serve it.
                let why = p.violation(&a.choice).unwrap_or_default();
                tracing::warn!(violation = %why, "mip's answer breaks a hard constraint; falling back to fast");
            }
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "mip failed; falling back to fast"),
            Ok(Err(e)) => tracing::warn!(error = %e, "mip task failed; falling back to fast"),
            Err(_) => {
                tracing::warn!(limit_ms = hard.as_millis() as u64, "mip ran past its limit; falling back to fast")
            }
        }
    }
    let t0 = Instant::now();
    let result = Fast::default().solve(p);
    metrics::histogram!(names::SOLVER_SECONDS, "assigner" => "fast").record(t0.elapsed().as_secs_f64());
    match result {
        Ok(a) => (a, fast_name),
        Err(e) => {
            // Cannot happen for a validated problem; serve the cheapest assignment rather than fail.
            tracing::error!(error = %e, "fast assigner failed; using the cheapest assignment");
            let choice = min_cost_assignment(p);
            let objective = p.objective(&choice);
            (Assignment { choice, objective, bound: None, status: SolveStatus::Relaxed }, "min-cost".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(capacity: usize, in_flight: usize) -> ModelLoad {
        ModelLoad { usable: true, capacity, in_flight, kv_capacity: f64::INFINITY, kv_in_flight: 0.0 }
    }

    #[test]
    fn free_slots_that_hold_the_batch_are_the_limits() {
        let (slots, _, spilled) = batch_limits(5, &[load(4, 1), load(4, 0)]);
        assert_eq!((slots, spilled), (vec![3, 4], 0));
    }

    /// Finding 1: 9 models × 2 slots, all busy, 64 queries: every usable model takes a share of
    /// the overflow in proportion to its capacity, so the batch fits and no model takes it all.
    #[test]
    fn a_batch_over_the_free_slots_spreads_its_overflow_by_capacity() {
        let mut loads = vec![load(2, 2); 9];
        loads.push(ModelLoad { usable: false, ..load(2, 0) }); // circuit open
        let (slots, _, spilled) = batch_limits(64, &loads);
        assert_eq!(spilled, 64);
        assert!(slots.iter().sum::<usize>() >= 64, "{slots:?}");
        assert!(slots[..9].iter().all(|&s| s == 8), "{slots:?}");
        assert_eq!(slots[9], 0, "an unusable model takes nothing");
        // Unequal capacities: shares follow capacity.
        let (slots, _, _) = batch_limits(30, &[load(10, 10), load(20, 15)]);
        assert_eq!(slots, vec![9, 5 + 17]);
    }

    #[test]
    fn a_model_is_usable_only_when_nothing_excludes_it() {
        assert!(usable(true, false, 4, 0.01, None));
        assert!(usable(true, false, 4, 0.01, Some(0.01)), "a cost at the cap fits");
        assert!(!usable(false, false, 4, 0.01, None), "the tenant or the request disallows it");
        assert!(!usable(true, true, 4, 0.01, None), "its circuit is open");
        assert!(!usable(true, false, 0, 0.01, None), "the plan runs no instance of it");
        assert!(!usable(true, false, 4, 0.02, Some(0.01)), "predicted above the call's max_cost_usd");
    }

    /// Finding 3: KV tokens held by running calls are not free.
    #[test]
    fn kv_held_by_running_calls_is_not_free() {
        let busy = ModelLoad { usable: true, capacity: 8, in_flight: 3, kv_capacity: 10_000.0, kv_in_flight: 7_500.0 };
        let (_, kv, _) = batch_limits(2, &[busy]);
        assert_eq!(kv, vec![2_500.0]);
        // Over-committed KV is 0 free, not negative; the overflow share brings its slots' KV.
        let over = ModelLoad { kv_in_flight: 12_000.0, in_flight: 8, ..busy };
        let (slots, kv, _) = batch_limits(2, &[over]);
        assert_eq!(slots, vec![2]);
        assert_eq!(kv, vec![2.0 * 10_000.0 / 8.0]);
    }
}
