//! The request path shared by gRPC and the HTTP facade: authenticate → validate (and estimate) →
//! queue for a batch (or shed) → wait for the answer within the call's deadline.

use super::batcher::{Batcher, Job};
use super::pressure::{Held, Pressure};
use super::query::{resolve_tenant, validate, Reply, RouteInput, StreamSink};
use super::state::Shared;
use crate::metrics::names;
use crate::otel::{Kind, Remote, Span};
use crate::{Result, RouterError};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Extra time granted past the deadline for an answer already on its way.
const GRACE: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct Api {
    pub shared: Arc<Shared>,
    batcher: Batcher,
    config_path: PathBuf,
    /// Dispatched calls held and their completion rate (queue-aware shedding).
    pressure: Arc<Pressure>,
    /// The same for decision-only calls.
    deciding: Arc<Pressure>,
}

/// A queued call.
pub struct Pending {
    rx: oneshot::Receiver<Result<Reply>>,
    deadline: Instant,
    /// The call counts as held by the router until its answer is taken.
    _held: Held,
    /// The call's `llmroute.route` span (a client batch's queries share theirs: none here).
    span: Span,
}

impl Pending {
    pub async fn wait(mut self) -> Result<Reply> {
        let until = tokio::time::Instant::from_std(self.deadline + GRACE);
        let r = match tokio::time::timeout_at(until, self.rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RouterError::Internal("the query was dropped without an answer".into())),
            Err(_) => Err(RouterError::DeadlineExceeded("no answer before the call's deadline".into())),
        };
        outcome(&mut self.span, r.as_ref());
        r
    }
}

/// A call's result on its span: the model and cost it was answered with, or the error.
fn outcome(span: &mut Span, r: std::result::Result<&Reply, &RouterError>) {
    if !span.is_recording() {
        return;
    }
    match r {
        Ok(rep) => {
            span.set("llmroute.model", rep.model.clone());
            span.set("llmroute.batch_id", rep.batch_id);
            span.set("llmroute.cost_usd", rep.cost_usd);
            span.set("llmroute.fallback", rep.fallback);
            span.set("llmroute.dispatched", rep.dispatched);
        }
        Err(e) => {
            span.set("rpc.grpc.status_code", e.grpc_code() as u32);
            span.fail(e);
        }
    }
}

/// Adds what feedback taught to the query's prediction (`online.rs`): the scores of similar
/// queries as neighbours of their model, then each model's recent bias and σ factor.
pub(crate) fn learn(shared: &Shared, q: &mut crate::query::Query) {
    if q.features.is_empty() || shared.online.is_empty() {
        return;
    }
    for (model, ev) in shared.online.evidence(&q.features) {
        if let Some(j) = q.live.model_index(&model) {
            crate::online::update(&mut q.prediction, j, ev);
        }
    }
    for (j, md) in q.live.models.iter().enumerate() {
        let learned = shared.feedback.learned(&md.entry.name);
        if let Some(mu) = q.prediction.mu.get_mut(j) {
            *mu = (*mu + learned.bias).clamp(0.0, 1.0);
        }
        if let Some(sigma) = q.prediction.sigma.get_mut(j) {
            *sigma *= learned.sigma_scale;
        }
    }
}

/// The root span of a call (none when tracing is off or the caller does not sample).
fn root(shared: &Shared, name: &'static str, remote: Option<Remote>) -> Span {
    shared.tracer.as_ref().map_or_else(Span::none, |t| t.root(name, Kind::Server, remote))
}

/// Model facts for `ListModels` and `/v1/models`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelView {
    pub name: String,
    pub backend: String,
    pub price_in_per_mtok: f64,
    pub price_out_per_mtok: f64,
    pub capacity: usize,
    pub in_flight: usize,
    pub circuit: &'static str,
    /// Set while the model has no records of its own and is predicted from its parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior: Option<String>,
}

/// A call's deadline: its own timeout, capped by the config's.
fn deadline(cap: Duration, timeout: Option<Duration>) -> Instant {
    Instant::now() + timeout.map_or(cap, |t| t.min(cap))
}

impl Api {
    pub fn new(shared: Arc<Shared>, config_path: PathBuf) -> Api {
        let queue = shared.live().config.batch.max_queue;
        let batcher = Batcher::start(shared.clone(), queue);
        Api {
            shared,
            batcher,
            config_path,
            pressure: Arc::new(Pressure::default()),
            deciding: Arc::new(Pressure::default()),
        }
    }

    /// Validates one call and queues it. Errors here are the call's status.
    pub async fn submit(
        &self,
        input: RouteInput,
        timeout: Option<Duration>,
        stream: Option<StreamSink>,
    ) -> Result<Pending> {
        let live = self.shared.live();
        let mut span = root(&self.shared, "llmroute.route", input.traceparent);
        let mut admission = span.child("llmroute.admission", Kind::Internal);
        let result = async {
            let tenant = resolve_tenant(&live, &input.tenant, input.api_key.as_deref())?;
            admission.set("llmroute.tenant", tenant.name.clone());
            let deadline = deadline(live.config.admission.request_timeout(), timeout);
            self.refuse_if_late(input.dispatch, deadline)?;
            let mut q = validate(&live, input, "", tenant, deadline)?;
            learn(&self.shared, &mut q);
            span.set("llmroute.request_id", q.request_id.clone());
            if q.dispatch {
                q.reservation = Some(self.shared.budgets.reserve(tenant, q.cost_bound).await?);
            }
            let (tx, rx) = oneshot::channel();
            q.reply = Some(tx);
            q.stream = stream;
            q.trace = span.handle();
            q.waiting = span.child("llmroute.batch_wait", Kind::Internal);
            let held = self.pressure(q.dispatch).enter();
            if !self.batcher.submit(Job::One(Box::new(q))) {
                return Err(RouterError::Overloaded("the batch queue is full; retry later".into()));
            }
            Ok(Pending { rx, deadline, _held: held, span: Span::none() })
        }
        .await;
        match result {
            Ok(mut p) => {
                drop(admission);
                p.span = span;
                Ok(p)
            }
            Err(e) => {
                reject_metric(&e);
                admission.fail(&e);
                drop(admission);
                outcome(&mut span, Err(&e));
                Err(e)
            }
        }
    }

    /// Dispatched calls and decision-only calls leave at their own rates: each kind its own gauge.
    fn pressure(&self, dispatch: bool) -> &Arc<Pressure> {
        if dispatch {
            &self.pressure
        } else {
            &self.deciding
        }
    }

    /// Refuses at once a call that would wait past its deadline (calls of its kind held / their
    /// completion rate over the last second).
    fn refuse_if_late(&self, dispatch: bool, deadline: Instant) -> Result<()> {
        if let Some(wait) = self.pressure(dispatch).expected_wait() {
            let left = deadline.saturating_duration_since(Instant::now());
            if wait > left {
                return Err(RouterError::Overloaded(format!(
                    "the expected wait ({} ms) is longer than the call's deadline ({} ms); retry later",
                    wait.as_millis(),
                    left.as_millis()
                )));
            }
        }
        Ok(())
    }

    pub async fn route(&self, input: RouteInput, timeout: Option<Duration>) -> Result<Reply> {
        self.submit(input, timeout, None).await?.wait().await
    }

    /// The caller's own batch: validated whole (a bad query names its index), decided together.
    pub async fn route_batch(
        &self,
        tenant: &str,
        api_key: Option<&str>,
        inputs: Vec<RouteInput>,
        timeout: Option<Duration>,
        remote: Option<Remote>,
    ) -> Result<Vec<Result<Reply>>> {
        let live = self.shared.live();
        let mut span = root(&self.shared, "llmroute.route_batch", remote);
        let mut admission = span.child("llmroute.admission", Kind::Internal);
        let result = async {
            if inputs.is_empty() {
                return Err(RouterError::bad("queries", "empty: send at least one query"));
            }
            if inputs.len() > live.config.limits.max_batch_request {
                return Err(RouterError::bad(
                    "queries",
                    format!("{} queries, over the limit of {}", inputs.len(), live.config.limits.max_batch_request),
                ));
            }
            let t = resolve_tenant(&live, tenant, api_key)?;
            admission.set("llmroute.tenant", t.name.clone());
            admission.set("llmroute.batch_size", inputs.len());
            let deadline = deadline(live.config.admission.request_timeout(), timeout);
            for dispatch in [false, true] {
                if inputs.iter().any(|i| i.dispatch == dispatch) {
                    self.refuse_if_late(dispatch, deadline)?;
                }
            }
            let mut pending = Vec::with_capacity(inputs.len());
            let mut queries = Vec::with_capacity(inputs.len());
            for (i, mut input) in inputs.into_iter().enumerate() {
                if !input.tenant.is_empty() && input.tenant != t.name {
                    return Err(RouterError::bad(format!("queries[{i}].tenant"), "differs from the batch's tenant"));
                }
                input.tenant = t.name.clone();
                let mut q = validate(&live, input, &format!("queries[{i}]."), t, deadline)?;
                learn(&self.shared, &mut q);
                if q.dispatch {
                    // A query over budget fails the call; what was reserved for the others is
                    // released with them.
                    q.reservation = Some(self.shared.budgets.reserve(t, q.cost_bound).await?);
                }
                let (tx, rx) = oneshot::channel();
                q.reply = Some(tx);
                q.trace = span.handle();
                q.waiting = span.child("llmroute.batch_wait", Kind::Internal);
                q.waiting.set("llmroute.request_id", q.request_id.clone());
                let held = self.pressure(q.dispatch).enter();
                pending.push(Pending { rx, deadline, _held: held, span: Span::none() });
                queries.push(q);
            }
            if !self.batcher.submit(Job::Batch(queries)) {
                return Err(RouterError::Overloaded("the batch queue is full; retry later".into()));
            }
            Ok(pending)
        }
        .await;
        let pending = match result {
            Ok(p) => p,
            Err(e) => {
                reject_metric(&e);
                admission.fail(&e);
                drop(admission);
                outcome(&mut span, Err(&e));
                return Err(e);
            }
        };
        drop(admission);
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(p.wait().await);
        }
        if let Some(e) = out.iter().find_map(|r| r.as_ref().err()) {
            span.fail(e);
        }
        Ok(out)
    }

    pub fn models(&self) -> Vec<ModelView> {
        let live = self.shared.live();
        live.models
            .iter()
            .map(|m| ModelView {
                name: m.entry.name.clone(),
                backend: m.backend.describe(),
                price_in_per_mtok: m.entry.price_in_per_mtok,
                price_out_per_mtok: m.entry.price_out_per_mtok,
                capacity: m.capacity,
                in_flight: m.state.in_flight.load(Ordering::Relaxed),
                circuit: m.state.breaker().state().as_str(),
                prior: m.prior.as_ref().map(|p| p.describe()),
            })
            .collect()
    }

    /// Re-reads the config file; on error the current config keeps serving.
    pub async fn reload(&self) -> Result<u64> {
        let shared = self.shared.clone();
        let path = self.config_path.clone();
        let r = tokio::task::spawn_blocking(move || shared.reload(&path))
            .await
            .map_err(|e| RouterError::Internal(format!("reload task: {e}")))?;
        match &r {
            Ok(g) => {
                tracing::info!(generation = g, "config reloaded");
                metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => "ok").increment(1);
                metrics::gauge!(names::CONFIG_GENERATION).set(*g as f64);
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload rejected; the last good config keeps serving");
                metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => "rejected").increment(1);
            }
        }
        r
    }
}

fn reject_metric(e: &RouterError) {
    let reason = match e {
        RouterError::BadRequest { .. } => "invalid",
        RouterError::Unauthenticated(_) => "unauthenticated",
        RouterError::PermissionDenied(_) => "permission",
        RouterError::Overloaded(m) if m.starts_with("the expected wait") => "expected_wait",
        RouterError::Overloaded(_) => "overloaded",
        RouterError::TenantOverBudget { .. } => "tenant_budget",
        RouterError::StoreUnavailable(_) => "budget_store",
        _ => "other",
    };
    metrics::counter!(names::REJECTED_TOTAL, "reason" => reason).increment(1);
}
