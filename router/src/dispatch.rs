//! A decided batch → each query to its model's backend, with fallback to the next-best feasible
//! model on an error or timeout (one charge per query: the answer that succeeded), per-model
//! in-flight counts and breakers, then the ledger and the tenants' budgets are settled.

use super::backend::BackendRequest;
use super::decide::Decided;
use super::query::{Predicted, Query, Reply};
use super::state::{Live, Shared};
use crate::{Result, RouterError};
use llmroute_core::assign::Problem;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Predicted cost committed by the batch's queries; fallbacks may use what is left of its budget.
struct Account {
    budget: f64,
    committed: Mutex<f64>,
}

impl Account {
    /// Moves a query's commitment from `from` to `to` if the batch's budget allows.
    fn shift(&self, from: f64, to: f64) -> bool {
        let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if *c - from + to <= self.budget + 1e-12 || to <= from {
            *c += to - from;
            true
        } else {
            false
        }
    }
}

/// Starts every query of the batch; returns at once (the work runs on spawned tasks).
pub fn launch(shared: &Arc<Shared>, d: Decided) {
    let Decided { batch_id, live, problem, choice, assigner, status, budget, queries } = d;
    let n = queries.len();
    let m = problem.m;
    let account = Arc::new(Account { budget: budget.budget, committed: Mutex::new(problem.cost_of(&choice)) });
    let mut handles = Vec::with_capacity(n);
    let (mut decision_only_cost, mut decision_only_var) = (0.0, 0.0);
    let predicted_total = problem.cost_of(&choice);
    let predicted_var = problem.cost_var_of(&choice);
    for (i, mut q) in queries.into_iter().enumerate() {
        let j = choice[i];
        let base = Reply {
            model: live.models[j].entry.name.clone(),
            predicted: predicted(&problem, &q, &live, i, j),
            batch_id,
            batch_size: n as u32,
            batch_budget_usd: budget.budget,
            assigner: assigner.clone(),
            solve_status: format!("{status:?}"),
            overdraft: budget.overdraft,
            ..Reply::default()
        };
        metrics::histogram!("llmroute_batch_wait_seconds").record(q.enqueued.elapsed().as_secs_f64());
        metrics::histogram!("llmroute_predicted_quality", "model" => base.model.clone()).record(base.predicted.mu);
        if !q.dispatch {
            decision_only_cost += problem.cost[i * m + j];
            decision_only_var += problem.cost_var[i * m + j];
            metrics::counter!("llmroute_requests_total", "model" => base.model.clone(), "outcome" => "decision_only")
                .increment(1);
            if let Some(tx) = q.reply.take() {
                let _ = tx.send(Ok(base));
            }
            continue;
        }
        let model = &live.models[j];
        model.state.in_flight.fetch_add(1, Ordering::Relaxed);
        let (live, problem, account) = (live.clone(), problem.clone(), account.clone());
        handles.push(tokio::spawn(async move {
            let reservation = q.reservation.take();
            let reply_tx = q.reply.take();
            let result = run_query(&live, &problem, &account, i, j, &mut q, base).await;
            let cost = result.as_ref().map_or(0.0, |r| r.cost_usd);
            if let Some(r) = reservation {
                r.settle(cost);
            }
            match reply_tx {
                Some(tx) => {
                    let _ = tx.send(result);
                }
                None => drop(result),
            }
            cost
        }));
    }
    if handles.is_empty() {
        // Decision only: the batch is charged its predicted cost now (its grant must not stay
        // outstanding).
        settle(shared, batch_id, &budget, predicted_total, decision_only_cost, None);
        return;
    }
    let reserved = predicted_total - decision_only_cost;
    add_reserved(reserved);
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut realized = 0.0;
        for h in handles {
            realized += h.await.unwrap_or(0.0);
        }
        add_reserved(-reserved);
        // Only the dispatched queries' cost was measured: the ledger learns from them alone.
        let observed = llmroute_core::ledger::Observation {
            cost: predicted_total - decision_only_cost,
            var: (predicted_var - decision_only_var).max(0.0),
            realized,
        };
        settle(&shared, batch_id, &budget, predicted_total, realized + decision_only_cost, Some(observed));
    });
}

fn settle(
    shared: &Shared,
    batch_id: u64,
    budget: &llmroute_core::ledger::BatchBudget,
    cost: f64,
    realized: f64,
    observed: Option<llmroute_core::ledger::Observation>,
) {
    if realized > budget.budget * (1.0 + 1e-9) && !budget.overdraft {
        metrics::counter!("llmroute_batches_over_budget_total").increment(1);
        tracing::warn!(
            batch_id,
            realized_usd = realized,
            granted_usd = budget.budget,
            predicted_usd = cost,
            "batch realized more than its grant; later batches repay it"
        );
    }
    let mut ledger = shared.ledger();
    ledger.settle_with(budget, realized, observed);
    let kappa = ledger.kappa();
    metrics::gauge!("llmroute_budget_kappa").set(kappa);
    metrics::gauge!("llmroute_budget_margin").set(ledger.margin_at(kappa));
    let (spent, allowed) = ledger.totals();
    metrics::gauge!("llmroute_spend_usd").set(spent);
    metrics::gauge!("llmroute_budget_allowed_usd").set(allowed);
    metrics::gauge!("llmroute_budget_carried_usd").set(ledger.carried());
}

fn add_reserved(delta: f64) {
    metrics::gauge!("llmroute_budget_reserved_usd").increment(delta);
}

fn predicted(p: &Problem, q: &Query, live: &Live, i: usize, j: usize) -> Predicted {
    let k = i * p.m + j;
    let e = live.models[j].est_index;
    Predicted {
        mu: p.mu[k],
        sigma: p.sigma[k],
        output_tokens: q.prediction.output_tokens[e].min(q.max_tokens as f64),
        cost_usd: p.cost[k],
    }
}

/// The next-best feasible model for query `i` after `tried` failed: allowed, circuit not open, and
/// its predicted cost fits what is left of the batch's budget; by μ, preferring models with a free
/// slot (a busy server queues the query rather than the query failing).
fn next_model(live: &Live, p: &Problem, account: &Account, i: usize, cur: usize, tried: &[usize]) -> Option<usize> {
    let m = p.m;
    let free = |k: usize| live.models[k].state.in_flight.load(Ordering::Relaxed) < live.models[k].capacity;
    let mut order: Vec<usize> = (0..m)
        .filter(|&k| p.allowed[i * m + k] && !tried.contains(&k))
        .filter(|&k| live.models[k].state.breaker().allows())
        .collect();
    order.sort_by(|&a, &b| {
        free(b)
            .cmp(&free(a))
            .then(p.mu[i * m + b].total_cmp(&p.mu[i * m + a]))
            .then(p.cost[i * m + a].total_cmp(&p.cost[i * m + b]))
    });
    order.into_iter().find(|&k| account.shift(p.cost[i * m + cur], p.cost[i * m + k]))
}

#[allow(clippy::too_many_arguments)]
async fn run_query(
    live: &Arc<Live>,
    p: &Problem,
    account: &Account,
    i: usize,
    first: usize,
    q: &mut Query,
    mut reply: Reply,
) -> Result<Reply> {
    let cfg = &live.config;
    let mut j = first;
    let mut tried: Vec<usize> = Vec::new();
    let mut stream = q.stream.take();
    let started = Instant::now();
    let outcome = loop {
        let model = &live.models[j];
        let name = model.entry.name.clone();
        if let Some(s) = stream.as_mut() {
            // The decision goes out once, before the first attempt.
            let sink = std::mem::replace(&mut s.decision, tokio::sync::oneshot::channel().0);
            let mut start = reply.clone();
            start.model = name.clone();
            let _ = sink.send(start);
        }
        let remaining = q.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break Err(RouterError::DeadlineExceeded(format!("no answer before the deadline (tried {})", tried.len())));
        }
        let req = BackendRequest {
            messages: q.messages.clone(),
            max_tokens: q.max_tokens,
            timeout: remaining.min(cfg.backend_timeout),
        };
        let (tx, mut forward) = match &stream {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        // Streamed pieces go straight to the caller; `sent` tells whether a fallback is still clean.
        let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pump = match (forward.take(), stream.as_ref()) {
            (Some(mut rx), Some(s)) => {
                let out = s.deltas.clone();
                let sent = sent.clone();
                Some(tokio::spawn(async move {
                    while let Some(piece) = rx.recv().await {
                        sent.store(true, Ordering::Relaxed);
                        let _ = out.send(piece).await;
                    }
                }))
            }
            _ => None,
        };
        let result = model.backend.complete(&name, &req, tx.as_ref()).await;
        drop(tx);
        if let Some(h) = pump {
            let _ = h.await;
        }
        match result {
            Ok(c) => {
                model.state.breaker().on_success();
                metrics::gauge!("llmroute_circuit_state", "model" => name.clone()).set(0.0);
                metrics::histogram!("llmroute_backend_ttft_seconds", "model" => name.clone())
                    .record(c.ttft.as_secs_f64());
                metrics::histogram!("llmroute_backend_seconds", "model" => name.clone()).record(c.total.as_secs_f64());
                let input_tokens = if c.input_tokens > 0 { c.input_tokens } else { q.input_tokens };
                reply.cost_usd = model.entry.cost(input_tokens as f64, c.output_tokens as f64);
                reply.model = name;
                reply.predicted = predicted(p, q, live, i, j);
                reply.answer = c.text;
                reply.input_tokens = input_tokens;
                reply.output_tokens = c.output_tokens;
                reply.finish_reason = c.finish_reason;
                reply.dispatched = true;
                break Ok(reply);
            }
            Err(_) if Instant::now() >= q.deadline => {
                // The call's own deadline cut the attempt short: not the backend's fault.
                break Err(RouterError::DeadlineExceeded(format!("{name} did not answer before the call's deadline")));
            }
            Err(e) => {
                metrics::counter!("llmroute_backend_failures_total", "model" => name.clone()).increment(1);
                let opened = model.state.breaker().on_failure(cfg.breaker_failures, Instant::now());
                if opened {
                    tracing::warn!(model = %name, "circuit opened");
                    metrics::gauge!("llmroute_circuit_state", "model" => name.clone()).set(1.0);
                }
                tracing::info!(model = %name, batch_id = reply.batch_id, error = %e, "backend failed");
                reply.failed_models.push(format!("{name}: {e}"));
                tried.push(j);
                if sent.load(Ordering::Relaxed) {
                    break Err(RouterError::Unavailable(format!("{name} failed mid-stream: {e}")));
                }
                match next_model(live, p, account, i, j, &tried) {
                    Some(k) => {
                        live.models[k].state.in_flight.fetch_add(1, Ordering::Relaxed);
                        model.state.in_flight.fetch_sub(1, Ordering::Relaxed);
                        metrics::counter!("llmroute_fallbacks_total", "from" => name, "to" => live.models[k].entry.name.clone())
                            .increment(1);
                        reply.fallback = true;
                        j = k;
                    }
                    None => {
                        break Err(RouterError::Unavailable(format!(
                            "no feasible model answered: {}",
                            reply.failed_models.join("; ")
                        )))
                    }
                }
            }
        }
    };
    live.models[j].state.in_flight.fetch_sub(1, Ordering::Relaxed);
    let label = live.models[j].entry.name.clone();
    match &outcome {
        Ok(r) => {
            let outcome = if r.fallback { "fallback" } else { "ok" };
            metrics::counter!("llmroute_requests_total", "model" => label, "outcome" => outcome).increment(1);
        }
        Err(_) => {
            metrics::counter!("llmroute_requests_total", "model" => label, "outcome" => "error").increment(1);
        }
    }
    outcome.map(|mut r| {
        r.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        r
    })
}
