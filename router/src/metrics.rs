//! Prometheus metrics (`metrics` facade + `metrics-exporter-prometheus`, served on `/metrics`).
//! Labels carry model, outcome, assigner, tenant names only: never prompt text.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Every metric's name, once: the code and the tests refer to these, never to a string.
pub mod names {
    pub const BACKEND_FAILURES_TOTAL: &str = "llmroute_backend_failures_total";
    pub const BACKEND_SECONDS: &str = "llmroute_backend_seconds";
    pub const BACKEND_TTFT_SECONDS: &str = "llmroute_backend_ttft_seconds";
    pub const BATCH_SIZE: &str = "llmroute_batch_size";
    pub const BATCH_WAIT_SECONDS: &str = "llmroute_batch_wait_seconds";
    pub const BATCHES_OVER_BUDGET_TOTAL: &str = "llmroute_batches_over_budget_total";
    pub const BUDGET_ALLOWED_USD: &str = "llmroute_budget_allowed_usd";
    pub const BUDGET_CARRIED_USD: &str = "llmroute_budget_carried_usd";
    pub const BUDGET_KAPPA: &str = "llmroute_budget_kappa";
    pub const BUDGET_LOCAL_SLICE_TOTAL: &str = "llmroute_budget_local_slice_total";
    pub const BUDGET_MARGIN: &str = "llmroute_budget_margin";
    pub const BUDGET_OVERRUNS_TOTAL: &str = "llmroute_budget_overruns_total";
    pub const BUDGET_RELEASES_TOTAL: &str = "llmroute_budget_releases_total";
    pub const BUDGET_RESERVED_USD: &str = "llmroute_budget_reserved_usd";
    pub const BUDGET_SETTLE_DUPLICATES_TOTAL: &str = "llmroute_budget_settle_duplicates_total";
    pub const BUDGET_SETTLES_PENDING: &str = "llmroute_budget_settles_pending";
    pub const BUDGET_STORE_ERRORS_TOTAL: &str = "llmroute_budget_store_errors_total";
    pub const BUDGET_STORE_UP: &str = "llmroute_budget_store_up";
    pub const CIRCUIT_STATE: &str = "llmroute_circuit_state";
    pub const CONFIG_GENERATION: &str = "llmroute_config_generation";
    pub const CONFIG_RELOADS_TOTAL: &str = "llmroute_config_reloads_total";
    pub const DECISION_QUEUE_SECONDS: &str = "llmroute_decision_queue_seconds";
    pub const DECISION_SECONDS: &str = "llmroute_decision_seconds";
    pub const FALLBACKS_TOTAL: &str = "llmroute_fallbacks_total";
    pub const FEEDBACK_SIGMA_COVERAGE: &str = "llmroute_feedback_sigma_coverage";
    pub const FEEDBACK_SIGMA_SCALE: &str = "llmroute_feedback_sigma_scale";
    pub const FEEDBACK_TOTAL: &str = "llmroute_feedback_total";
    pub const FREE_SLOTS: &str = "llmroute_free_slots";
    pub const IN_FLIGHT: &str = "llmroute_in_flight";
    pub const OVERDRAFT_BATCHES_TOTAL: &str = "llmroute_overdraft_batches_total";
    pub const OVERFLOW_CALLS: &str = "llmroute_overflow_calls";
    pub const PASSED_OVER_LATE_TOTAL: &str = "llmroute_passed_over_late_total";
    pub const PREDICTED_QUALITY: &str = "llmroute_predicted_quality";
    pub const PREDICTION_CACHE_TOTAL: &str = "llmroute_prediction_cache_total";
    pub const QUERIES_OVER_CAPACITY_TOTAL: &str = "llmroute_queries_over_capacity_total";
    pub const QUEUE_DEPTH: &str = "llmroute_queue_depth";
    pub const REJECTED_TOTAL: &str = "llmroute_rejected_total";
    pub const REQUESTS_KEPT: &str = "llmroute_requests_kept";
    pub const REQUESTS_TOTAL: &str = "llmroute_requests_total";
    pub const SOLVER_SECONDS: &str = "llmroute_solver_seconds";
    pub const SPEND_USD: &str = "llmroute_spend_usd";
    pub const TENANT_BUDGET_USD: &str = "llmroute_tenant_budget_usd";
    pub const TENANT_SPEND_USD: &str = "llmroute_tenant_spend_usd";
    pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "llmroute_tls_handshake_failures_total";
    pub const TLS_RELOADS_TOTAL: &str = "llmroute_tls_reloads_total";
    pub const TRACE_EXPORT_FAILURES_TOTAL: &str = "llmroute_trace_export_failures_total";
    pub const TRACE_SPANS_DROPPED_TOTAL: &str = "llmroute_trace_spans_dropped_total";
    pub const TRACE_SPANS_EXPORTED_TOTAL: &str = "llmroute_trace_spans_exported_total";
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the global recorder once per process and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(names::BATCH_SIZE.into()), SIZES));
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Fails only when another recorder is installed (then ours renders nothing new).
            let _ = metrics::set_global_recorder(recorder);
            describe();
            zero();
            handle
        })
        .clone()
}

/// Counters exported at 0 from the start, so dashboards and alert rules see the series before the
/// first event (a missing series is not a zero rate).
fn zero() {
    metrics::counter!(names::FALLBACKS_TOTAL).increment(0);
    metrics::counter!(names::OVERDRAFT_BATCHES_TOTAL).increment(0);
    metrics::counter!(names::BATCHES_OVER_BUDGET_TOTAL).increment(0);
    metrics::counter!(names::QUERIES_OVER_CAPACITY_TOTAL).increment(0);
    metrics::counter!(names::REJECTED_TOTAL, "reason" => "overloaded").increment(0);
    metrics::counter!(names::BUDGET_OVERRUNS_TOTAL).increment(0);
    metrics::gauge!(names::BUDGET_SETTLES_PENDING).set(0.0);
    metrics::gauge!(names::BUDGET_STORE_UP).set(1.0);
    for op in ["reserve", "settle"] {
        metrics::counter!(names::BUDGET_STORE_ERRORS_TOTAL, "op" => op).increment(0);
    }
    for result in ["hit", "miss"] {
        metrics::counter!(names::PREDICTION_CACHE_TOTAL, "result" => result).increment(0);
    }
    for result in ["ok", "rejected"] {
        metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
}

fn describe() {
    describe_counter!(names::REQUESTS_TOTAL, "Queries answered, by model and outcome.");
    describe_counter!(names::REJECTED_TOTAL, "Calls refused before routing, by reason.");
    describe_histogram!(
        names::DECISION_SECONDS,
        Unit::Seconds,
        "Batch close to assignment (estimate + solve + ledger)."
    );
    describe_histogram!(names::BATCH_WAIT_SECONDS, Unit::Seconds, "Time a query waited for its batch to close.");
    describe_histogram!(names::BATCH_SIZE, Unit::Count, "Queries per batch.");
    describe_histogram!(names::SOLVER_SECONDS, Unit::Seconds, "Assigner solve time, by assigner.");
    describe_histogram!(names::BACKEND_TTFT_SECONDS, Unit::Seconds, "Backend time to first token, by model.");
    describe_histogram!(names::BACKEND_SECONDS, Unit::Seconds, "Backend total time, by model.");
    describe_gauge!(names::IN_FLIGHT, Unit::Count, "Queries dispatched and not finished, by model.");
    describe_gauge!(names::FREE_SLOTS, Unit::Count, "Capacity minus in-flight queries, by model.");
    describe_gauge!(names::SPEND_USD, "Realized spend since start (USD).");
    describe_gauge!(names::BUDGET_ALLOWED_USD, "Budget allowed since start: per-query budget x settled queries.");
    describe_gauge!(names::BUDGET_RESERVED_USD, "Predicted cost of dispatched, unsettled queries (USD).");
    describe_gauge!(names::BUDGET_CARRIED_USD, "Overspend carried into the next batch's budget (USD).");
    describe_gauge!(names::TENANT_SPEND_USD, "Tenant spend in its rolling window (USD).");
    describe_gauge!(names::TENANT_BUDGET_USD, "Tenant budget per rolling window (USD).");
    describe_histogram!(
        names::PREDICTED_QUALITY,
        "Predicted quality (mu) of the model each query was routed to, by model: the accuracy proxy."
    );
    describe_counter!(
        names::PREDICTION_CACHE_TOTAL,
        "Estimator predictions served from the prompt cache (hit) or computed (miss)."
    );
    describe_counter!(names::FALLBACKS_TOTAL, "Queries moved to another model after a backend failure.");
    describe_counter!(
        names::PASSED_OVER_LATE_TOTAL,
        "Queries for which a model was passed over because its learned answer time was past their deadline, by model."
    );
    describe_counter!(names::BACKEND_FAILURES_TOTAL, "Backend errors and timeouts, by model.");
    describe_counter!(
        names::QUERIES_OVER_CAPACITY_TOTAL,
        "Queries of batches larger than the free slots (queued at the models by share of capacity)."
    );
    describe_histogram!(
        names::DECISION_QUEUE_SECONDS,
        Unit::Seconds,
        "From a batch's close to the start of its decision (behind slower decisions)."
    );
    describe_counter!(names::OVERDRAFT_BATCHES_TOTAL, "Batches whose cheapest assignment exceeded the allowance.");
    describe_gauge!(
        names::OVERFLOW_CALLS,
        Unit::Count,
        "Admitted calls running on the overflow runtime (moved there while the serving runtime is saturated)."
    );
    describe_counter!(
        names::BATCHES_OVER_BUDGET_TOTAL,
        "Batches whose realized cost exceeded their grant (the ledger keeps this near budget.max_over_probability)."
    );
    describe_gauge!(
        names::BUDGET_KAPPA,
        "κ of the batch budget's chance constraint (conformal quantile of batch errors)."
    );
    describe_gauge!(names::BUDGET_MARGIN, "The ledger's relative margin on predicted budget use.");
    describe_gauge!(names::CIRCUIT_STATE, "Circuit breaker per model: 0 closed, 1 open, 2 half-open.");
    describe_gauge!(names::QUEUE_DEPTH, Unit::Count, "Queries waiting for a batch.");
    describe_gauge!(names::CONFIG_GENERATION, "Config generation serving (1 at start, +1 per reload).");
    describe_counter!(names::CONFIG_RELOADS_TOTAL, "Config reloads, by result.");
    describe_gauge!(names::BUDGET_STORE_UP, "1 when the tenant budget store answered last time (always 1 for memory).");
    describe_gauge!(names::BUDGET_SETTLES_PENDING, Unit::Count, "Settles waiting to reach the Redis budget store.");
    describe_counter!(names::BUDGET_STORE_ERRORS_TOTAL, "Redis budget store calls that failed, by op.");
    describe_counter!(
        names::BUDGET_SETTLE_DUPLICATES_TOTAL,
        "Settle retries Redis had already applied (not charged again)."
    );
    describe_counter!(
        names::BUDGET_LOCAL_SLICE_TOTAL,
        "Calls admitted on a local budget slice (Redis unreachable, fail open)."
    );
    describe_counter!(
        names::BUDGET_RELEASES_TOTAL,
        "Redis reservations whose reply was lost, released by id (a settle of 0)."
    );
    describe_counter!(names::BUDGET_OVERRUNS_TOTAL, "Calls whose realized cost exceeded their reservation.");
    describe_counter!(names::TLS_RELOADS_TOTAL, "TLS certificate reloads, by result.");
    describe_counter!(names::TLS_HANDSHAKE_FAILURES_TOTAL, "TLS handshakes that failed or timed out.");
    metrics::describe_gauge!(names::REQUESTS_KEPT, "Answered queries kept for feedback (by request id).");
    describe_counter!(names::FEEDBACK_TOTAL, "Scores accepted by Feedback, by the model that answered.");
    metrics::describe_gauge!(
        names::FEEDBACK_SIGMA_COVERAGE,
        "Share of a model's last 500 scores whose μ bin's rate lies within μ ± σ (nominal 0.68+)."
    );
    metrics::describe_gauge!(
        names::FEEDBACK_SIGMA_SCALE,
        "Factor a model's predicted σ is multiplied by, re-calibrated on its last 500 scores (1–4: only widened; 1 before 50)."
    );
    describe_counter!(names::TRACE_SPANS_EXPORTED_TOTAL, "Trace spans the OTLP collector accepted.");
    describe_counter!(
        names::TRACE_SPANS_DROPPED_TOTAL,
        "Trace spans dropped: the export queue was full or the collector refused them."
    );
    describe_counter!(names::TRACE_EXPORT_FAILURES_TOTAL, "OTLP export requests that failed.");
}
