//! A decided batch → each query to its model's backend, with fallback to the next-best feasible
//! model on an error or timeout (one charge per query: the answer that succeeded), per-model
//! in-flight counts and breakers, then the ledger and the tenants' budgets are settled.

use super::backend::BackendRequest;
use super::budgets::SlotLease;
use super::decide::{planned_output, Decided};
use super::query::{Predicted, Query, Reply};
use super::state::{InFlight, Live, Shared};
use crate::metrics::names;
use crate::otel::{Kind, Span};
use crate::{Result, RouterError};
use llmroute_core::assign::Problem;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The batch's running account: the predicted cost its queries have committed (fallbacks may use
/// what is left of the plan, never the margin kept for prediction error) and what it has
/// realized so far (an answer that takes it past its grant says so in its reply).
struct Account {
    /// The budget the assigner planned against (the grant less the margin).
    plan: f64,
    /// The grant realized cost is judged against.
    grant: f64,
    committed: Mutex<f64>,
    realized: Mutex<f64>,
}

impl Account {
    /// Moves a query's commitment from `from` to `to` if the batch's plan allows.
    fn shift(&self, from: f64, to: f64) -> bool {
        let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if *c - from + to <= self.plan + 1e-12 || to <= from {
            *c += to - from;
            true
        } else {
            false
        }
    }

    /// Adds a query's realized cost; true when the batch is now over its grant.
    fn realize(&self, cost: f64) -> bool {
        let mut r = self.realized.lock().unwrap_or_else(|p| p.into_inner());
        *r += cost;
        *r > self.grant * (1.0 + 1e-9)
    }
}

/// Starts every query of the batch; returns at once (the work runs on spawned tasks).
pub fn launch(shared: &Arc<Shared>, d: Decided) {
    let Decided { batch_id, live, problem, choice, assigner, status, budget, queries } = d;
    let n = queries.len();
    let m = problem.m;
    let account = Arc::new(Account {
        plan: budget.plan.max(problem.cost_of(&choice)),
        grant: budget.budget,
        committed: Mutex::new(problem.cost_of(&choice)),
        realized: Mutex::new(0.0),
    });
    let mut dispatched: Vec<(usize, usize, Query, Reply, InFlight)> = Vec::with_capacity(n);
    let (mut decision_only_cost, mut decision_only_var) = (0.0, 0.0);
    let predicted_total = problem.cost_of(&choice);
    let predicted_var = problem.cost_var_of(&choice);
    for (i, mut q) in queries.into_iter().enumerate() {
        let j = choice[i];
        let base = Reply {
            request_id: q.request_id.clone(),
            model: live.models[j].entry.name.clone(),
            predicted: predicted(&problem, &q, i, j),
            batch_id,
            batch_size: n as u32,
            batch_budget_usd: budget.budget,
            assigner: assigner.clone(),
            solve_status: format!("{status:?}"),
            overdraft: budget.overdraft,
            ..Reply::default()
        };
        metrics::histogram!(names::BATCH_WAIT_SECONDS).record(q.enqueued.elapsed().as_secs_f64());
        metrics::histogram!(names::PREDICTED_QUALITY, "model" => base.model.clone()).record(base.predicted.mu);
        if !q.dispatch {
            decision_only_cost += problem.cost[i * m + j];
            decision_only_var += problem.cost_var[i * m + j];
            metrics::counter!(names::REQUESTS_TOTAL, "model" => base.model.clone(), "outcome" => "decision_only")
                .increment(1);
            keep(shared, &live, &q, &base);
            if let Some(tx) = q.reply.take() {
                let _ = tx.send(Ok(base));
            }
            continue;
        }
        let in_flight = live.models[j].state.begin(problem.tokens[i * m + j]);
        dispatched.push((i, j, q, base, in_flight));
    }
    if dispatched.is_empty() {
        // Decision only: the batch is charged its predicted cost now (its grant must not stay
        // outstanding).
        settle(shared, batch_id, &budget, predicted_total, decision_only_cost, None);
        return;
    }
    let reserved = predicted_total - decision_only_cost;
    add_reserved(reserved);
    let shared = shared.clone();
    tokio::spawn(async move {
        // Slots shared by the replicas (Redis): one round trip leases what the batch needs per
        // model; a query its model had no free slot for waits for one before it is sent.
        let mut leases = lease_batch(&shared, &live, &dispatched).await;
        let mut handles = Vec::with_capacity(dispatched.len());
        for (i, j, mut q, base, in_flight) in dispatched {
            let slot = leases.get_mut(j).and_then(Vec::pop);
            let (live, problem, account, shared) = (live.clone(), problem.clone(), account.clone(), shared.clone());
            handles.push(tokio::spawn(async move {
                let reservation = q.reservation.take();
                let reply_tx = q.reply.take();
                let held = Held { _in_flight: in_flight, slot };
                let (mut result, cost) = run_query(&shared, &live, &problem, &account, i, j, held, &mut q, base).await;
                if let Ok(r) = &result {
                    keep(&shared, &live, &q, r);
                }
                if account.realize(cost) {
                    if let Ok(r) = result.as_mut() {
                        r.batch_over_budget = true;
                    }
                }
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
        drop(leases);
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
        metrics::counter!(names::BATCHES_OVER_BUDGET_TOTAL).increment(1);
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
    metrics::gauge!(names::BUDGET_KAPPA).set(kappa);
    metrics::gauge!(names::BUDGET_MARGIN).set(ledger.margin_at(kappa));
    let (spent, allowed) = ledger.totals();
    metrics::gauge!(names::SPEND_USD).set(spent);
    metrics::gauge!(names::BUDGET_ALLOWED_USD).set(allowed);
    metrics::gauge!(names::BUDGET_CARRIED_USD).set(ledger.carried());
}

/// Keeps what feedback on this answer will need, under its request id.
fn keep(shared: &Shared, live: &Live, q: &Query, r: &Reply) {
    let j = live.model_index(&r.model);
    let a = crate::requests::Answered {
        tenant: q.tenant.clone(),
        prompt_hash: q.prompt_hash,
        prompt: q.prompt.clone(),
        task: q.task.clone(),
        model: r.model.clone(),
        mu: r.predicted.mu,
        // σ as the estimator predicted it (before the feedback's re-calibration), which the
        // window calibrates against.
        sigma: r.predicted.sigma / shared.feedback.sigma_scale(&r.model),
        dispatched: r.dispatched,
        features: q.features.clone(),
        base_mu: j.and_then(|j| q.base_mu.get(j)).copied().unwrap_or(r.predicted.mu),
        prior: j.is_some_and(|j| live.models[j].prior.is_some()),
    };
    shared.requests.record(&r.request_id, a, &live.config.feedback, Instant::now());
}

fn add_reserved(delta: f64) {
    metrics::gauge!(names::BUDGET_RESERVED_USD).increment(delta);
}

fn predicted(p: &Problem, q: &Query, i: usize, j: usize) -> Predicted {
    let k = i * p.m + j;
    Predicted {
        mu: p.mu[k],
        sigma: p.sigma[k],
        output_tokens: q.prediction.output_tokens[j].min(q.max_tokens as f64),
        cost_usd: p.cost[k],
    }
}

/// The next-best feasible model for query `i` after `tried` failed: allowed, circuit not open, and
/// its predicted cost fits what is left of the batch's budget; by μ, preferring models with a free
/// slot (a busy server queues the query rather than the query failing). Without one, why each
/// other model was passed over (for the caller's error).
fn next_model(
    live: &Live,
    p: &Problem,
    account: &Account,
    i: usize,
    cur: usize,
    tried: &[usize],
) -> std::result::Result<usize, String> {
    let m = p.m;
    let free = |k: usize| live.models[k].state.in_flight.load(Ordering::Relaxed) < live.models[k].capacity;
    let mut why = Vec::new();
    let mut order = Vec::new();
    for k in (0..m).filter(|k| !tried.contains(k)) {
        let name = &live.models[k].entry.name;
        if !p.allowed[i * m + k] {
            why.push(format!("{name}: not usable for this query when its batch was decided"));
        } else if !live.models[k].state.breaker().allows() {
            why.push(format!("{name}: circuit open"));
        } else {
            order.push(k);
        }
    }
    order.sort_by(|&a, &b| {
        free(b)
            .cmp(&free(a))
            .then(p.mu[i * m + b].total_cmp(&p.mu[i * m + a]))
            .then(p.cost[i * m + a].total_cmp(&p.cost[i * m + b]))
    });
    for k in order {
        if account.shift(p.cost[i * m + cur], p.cost[i * m + k]) {
            return Ok(k);
        }
        why.push(format!("{}: its predicted cost does not fit the batch's budget", live.models[k].entry.name));
    }
    Err(why.join("; "))
}

/// What a running query holds: its place in its model's in-flight count, and (slots shared
/// through Redis) its model's slot lease.
struct Held {
    /// Held for its `Drop` (it counts the call until then).
    _in_flight: InFlight,
    slot: Option<SlotLease>,
}

/// Leases, in one round trip, the slots the batch's dispatched queries need per model; empty
/// when slots are not shared (or Redis did not answer: each replica's own limits then).
async fn lease_batch(
    shared: &Shared,
    live: &Live,
    dispatched: &[(usize, usize, Query, Reply, InFlight)],
) -> Vec<Vec<SlotLease>> {
    if !shared.budgets.shares_slots() {
        return Vec::new();
    }
    let mut want = vec![0u64; live.models.len()];
    for (_, j, ..) in dispatched {
        want[*j] += 1;
    }
    let asks: Vec<(&str, u64, u64)> =
        live.models.iter().zip(&want).map(|(md, &w)| (md.entry.name.as_str(), md.total_capacity as u64, w)).collect();
    shared.budgets.lease_slots(&asks).await.unwrap_or_default()
}

/// Waits for a shared slot of model `j` (polling Redis every 10 ms) until the call's deadline.
/// Ok(None) when slots are not shared or Redis does not answer (this replica's limits apply).
async fn wait_for_slot(shared: &Shared, live: &Live, j: usize, deadline: Instant) -> Result<Option<SlotLease>> {
    if !shared.budgets.shares_slots() {
        return Ok(None);
    }
    let md = &live.models[j];
    loop {
        match shared.budgets.lease_slots(&[(md.entry.name.as_str(), md.total_capacity as u64, 1)]).await {
            None => return Ok(None),
            Some(mut got) => {
                if let Some(lease) = got.first_mut().and_then(Vec::pop) {
                    return Ok(Some(lease));
                }
            }
        }
        if Instant::now() + std::time::Duration::from_millis(10) >= deadline {
            return Err(RouterError::DeadlineExceeded(format!(
                "no slot of {} came free on any replica before the deadline",
                md.entry.name
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// What a provider bills for an attempt's output: its reported tokens, or — when it reports none
/// (no `usage`, or an attempt cut short) — the text's characters / 4, at most `max_tokens`.
fn billable_output(reported: u32, text_chars: usize, max_tokens: u32) -> u32 {
    if reported > 0 {
        reported
    } else {
        (text_chars.div_ceil(4) as u64).min(max_tokens as u64) as u32
    }
}

/// Runs query `i` on its model, falling back on failure. Returns the reply (or error) and what
/// the call is charged: the answer that succeeded plus every failed attempt's streamed output.
#[allow(clippy::too_many_arguments)]
async fn run_query(
    shared: &Shared,
    live: &Arc<Live>,
    p: &Problem,
    account: &Account,
    i: usize,
    first: usize,
    mut held: Held,
    q: &mut Query,
    mut reply: Reply,
) -> (Result<Reply>, f64) {
    let cfg = &live.config;
    let mut j = first;
    let mut tried: Vec<usize> = Vec::new();
    let mut stream = q.stream.take();
    let started = Instant::now();
    // Failed attempts' charges (output streamed before the failure).
    let mut failed_cost = 0.0;
    // One span per attempt (slot waits included), the backend call inside it; assigning the next
    // attempt's ends the last.
    let mut attempt: Span;
    let outcome = loop {
        let model = &live.models[j];
        let name = model.entry.name.clone();
        attempt = q.trace.child("llmroute.dispatch", Kind::Internal);
        attempt.set("llmroute.model", name.clone());
        attempt.set("llmroute.attempt", tried.len() + 1);
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
        // A slot shared by the replicas first (when they share them), then one of this
        // replica's: a batch over the free slots queues here, not at the backend; the call's
        // deadline bounds both waits.
        if held.slot.is_none() {
            match wait_for_slot(shared, live, j, q.deadline).await {
                Ok(s) => held.slot = s,
                Err(e) => break Err(e),
            }
        }
        let permit = match tokio::time::timeout(remaining, model.state.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => break Err(RouterError::Internal(format!("{name}: slot semaphore closed"))),
            Err(_) => {
                break Err(RouterError::DeadlineExceeded(format!("no slot of {name} came free before the deadline")))
            }
        };
        let mut call = attempt.child("llmroute.backend", Kind::Client);
        call.set("llmroute.model", name.clone());
        call.set("llmroute.backend", model.backend.describe());
        let req = BackendRequest {
            messages: q.messages.clone(),
            max_tokens: q.max_tokens,
            timeout: q.deadline.saturating_duration_since(Instant::now()).min(cfg.backends.timeout()),
            passthrough: q.passthrough.clone(),
            traceparent: call.traceparent(),
        };
        // Streamed pieces go straight to the caller; `sent` counts the characters that reached it
        // (a fallback is clean only while it is 0, and a failed attempt is charged for them).
        let sent = Arc::new(AtomicUsize::new(0));
        let (tx, pump) = match stream.as_ref() {
            Some(s) => {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
                let out = s.deltas.clone();
                let sent = sent.clone();
                let pump = tokio::spawn(async move {
                    while let Some(piece) = rx.recv().await {
                        sent.fetch_add(piece.chars().count(), Ordering::Relaxed);
                        let _ = out.send(piece).await;
                    }
                });
                (Some(tx), Some(pump))
            }
            None => (None, None),
        };
        let started = Instant::now();
        let result = model.backend.complete(&name, &req, tx.as_ref()).await;
        match &result {
            Ok(c) if call.is_recording() => {
                call.set("gen_ai.usage.input_tokens", c.input_tokens);
                call.set("gen_ai.usage.output_tokens", c.output_tokens);
                call.set("llmroute.finish_reason", c.finish_reason.clone());
                call.set("llmroute.ttft_ms", c.ttft.as_secs_f64() * 1e3);
            }
            Ok(_) => {}
            Err(e) => call.fail(e),
        }
        drop(call);
        drop(permit);
        drop(tx);
        if let Some(h) = pump {
            let _ = h.await;
        }
        match result {
            Ok(c) => {
                model.state.breaker().on_success();
                metrics::gauge!(names::CIRCUIT_STATE, "model" => name.clone()).set(0.0);
                metrics::histogram!(names::BACKEND_TTFT_SECONDS, "model" => name.clone()).record(c.ttft.as_secs_f64());
                metrics::histogram!(names::BACKEND_SECONDS, "model" => name.clone()).record(c.total.as_secs_f64());
                let input_tokens = if c.input_tokens > 0 { c.input_tokens } else { q.input_tokens };
                let output_tokens = billable_output(c.output_tokens, c.text.chars().count(), q.max_tokens);
                let planned = planned_output(q, j);
                model.state.latency().observe(input_tokens as f64, output_tokens as f64, planned, c.total);
                reply.cost_usd = model.entry.cost(input_tokens as f64, output_tokens as f64) + failed_cost;
                reply.model = name;
                reply.predicted = predicted(p, q, i, j);
                reply.answer = c.text;
                reply.input_tokens = input_tokens;
                reply.output_tokens = output_tokens;
                reply.finish_reason = c.finish_reason;
                reply.tool_calls = c.tool_calls;
                reply.dispatched = true;
                break Ok(reply);
            }
            Err(e) => {
                let streamed = sent.load(Ordering::Relaxed);
                if streamed > 0 {
                    // Output reached the caller: the provider bills it, and so do we.
                    let out = billable_output(0, streamed, q.max_tokens);
                    failed_cost += model.entry.cost(q.input_tokens as f64, out as f64);
                }
                if Instant::now() >= q.deadline {
                    // The call's own deadline cut the attempt short: not the backend's fault, but
                    // what the deadline-aware decision learns from (the answer would have taken
                    // at least this long).
                    model.state.latency().observe_cut(q.input_tokens as f64, planned_output(q, j), started.elapsed());
                    break Err(RouterError::DeadlineExceeded(format!(
                        "{name} did not answer before the call's deadline"
                    )));
                }
                metrics::counter!(names::BACKEND_FAILURES_TOTAL, "model" => name.clone()).increment(1);
                let opened = model.state.breaker().on_failure(cfg.backends.breaker_failures, Instant::now());
                if opened {
                    tracing::warn!(model = %name, "circuit opened");
                    metrics::gauge!(names::CIRCUIT_STATE, "model" => name.clone()).set(1.0);
                }
                tracing::info!(model = %name, batch_id = reply.batch_id, error = %e, "backend failed");
                attempt.fail(&e);
                reply.failed_models.push(format!("{name}: {e}"));
                tried.push(j);
                if streamed > 0 {
                    break Err(RouterError::Unavailable(format!("{name} failed mid-stream: {e}")));
                }
                match next_model(live, p, account, i, j, &tried) {
                    Ok(k) => {
                        held = Held { _in_flight: live.models[k].state.begin(p.tokens[i * p.m + k]), slot: None };
                        metrics::counter!(names::FALLBACKS_TOTAL, "from" => name, "to" => live.models[k].entry.name.clone())
                            .increment(1);
                        reply.fallback = true;
                        j = k;
                    }
                    Err(passed_over) => {
                        break Err(RouterError::Unavailable(format!(
                            "no feasible model answered: {}{}",
                            reply.failed_models.join("; "),
                            if passed_over.is_empty() {
                                String::new()
                            } else {
                                format!(" (passed over: {passed_over})")
                            }
                        )))
                    }
                }
            }
        }
    };
    drop(held);
    match &outcome {
        Ok(r) => attempt.set("llmroute.cost_usd", r.cost_usd),
        Err(e) => attempt.fail(e),
    }
    drop(attempt);
    let label = live.models[j].entry.name.clone();
    let cost = match &outcome {
        Ok(r) => {
            let outcome = if r.fallback { "fallback" } else { "ok" };
            metrics::counter!(names::REQUESTS_TOTAL, "model" => label, "outcome" => outcome).increment(1);
            r.cost_usd
        }
        Err(_) => {
            metrics::counter!(names::REQUESTS_TOTAL, "model" => label, "outcome" => "error").increment(1);
            failed_cost
        }
    };
    let outcome = outcome.map(|mut r| {
        r.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        r
    });
    (outcome, cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_without_usage_is_billed_by_characters_capped_at_max_tokens() {
        assert_eq!(billable_output(17, 400, 32), 17, "reported tokens win");
        assert_eq!(billable_output(0, 10, 32), 3, "10 chars → ⌈10/4⌉");
        assert_eq!(billable_output(0, 4000, 32), 32, "capped at max_tokens");
        assert_eq!(billable_output(0, 0, 32), 0);
    }

    #[test]
    fn fallbacks_spend_the_plan_not_the_margin() {
        // Grant 1.0, plan 0.8 (0.2 kept for prediction error), 0.7 committed.
        let a = Account { plan: 0.8, grant: 1.0, committed: Mutex::new(0.7), realized: Mutex::new(0.0) };
        assert!(!a.shift(0.1, 0.3), "0.9 committed would eat the margin");
        assert!(a.shift(0.1, 0.2), "0.8 fits the plan");
        assert!(a.shift(0.3, 0.1), "a cheaper fallback always fits");
    }

    #[test]
    fn the_answer_that_passes_the_grant_is_flagged() {
        let a = Account { plan: 0.8, grant: 1.0, committed: Mutex::new(0.0), realized: Mutex::new(0.0) };
        assert!(!a.realize(0.6));
        assert!(!a.realize(0.4));
        assert!(a.realize(0.01));
    }
}
