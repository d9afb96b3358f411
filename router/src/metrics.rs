//! Prometheus metrics (`metrics` facade + `metrics-exporter-prometheus`, served on `/metrics`).
//! Labels carry model, outcome, assigner, tenant names only: never prompt text.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

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
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("llmroute_batch_size".into()), SIZES));
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
    metrics::counter!("llmroute_fallbacks_total").increment(0);
    metrics::counter!("llmroute_overdraft_batches_total").increment(0);
    metrics::counter!("llmroute_batches_over_budget_total").increment(0);
    metrics::counter!("llmroute_queries_over_capacity_total").increment(0);
    metrics::counter!("llmroute_rejected_total", "reason" => "overloaded").increment(0);
    metrics::counter!("llmroute_budget_overruns_total").increment(0);
    metrics::gauge!("llmroute_budget_settles_pending").set(0.0);
    metrics::gauge!("llmroute_budget_store_up").set(1.0);
    for op in ["reserve", "settle"] {
        metrics::counter!("llmroute_budget_store_errors_total", "op" => op).increment(0);
    }
    for result in ["ok", "rejected"] {
        metrics::counter!("llmroute_config_reloads_total", "result" => result).increment(0);
    }
}

fn describe() {
    describe_counter!("llmroute_requests_total", "Queries answered, by model and outcome.");
    describe_counter!("llmroute_rejected_total", "Calls refused before routing, by reason.");
    describe_histogram!(
        "llmroute_decision_seconds",
        Unit::Seconds,
        "Batch close to assignment (estimate + solve + ledger)."
    );
    describe_histogram!("llmroute_batch_wait_seconds", Unit::Seconds, "Time a query waited for its batch to close.");
    describe_histogram!("llmroute_batch_size", Unit::Count, "Queries per batch.");
    describe_histogram!("llmroute_solver_seconds", Unit::Seconds, "Assigner solve time, by assigner.");
    describe_histogram!("llmroute_backend_ttft_seconds", Unit::Seconds, "Backend time to first token, by model.");
    describe_histogram!("llmroute_backend_seconds", Unit::Seconds, "Backend total time, by model.");
    describe_gauge!("llmroute_in_flight", Unit::Count, "Queries dispatched and not finished, by model.");
    describe_gauge!("llmroute_free_slots", Unit::Count, "Capacity minus in-flight queries, by model.");
    describe_gauge!("llmroute_spend_usd", "Realized spend since start (USD).");
    describe_gauge!("llmroute_budget_allowed_usd", "Budget allowed since start: per-query budget x settled queries.");
    describe_gauge!("llmroute_budget_reserved_usd", "Predicted cost of dispatched, unsettled queries (USD).");
    describe_gauge!("llmroute_budget_carried_usd", "Overspend carried into the next batch's budget (USD).");
    describe_gauge!("llmroute_tenant_spend_usd", "Tenant spend in its rolling window (USD).");
    describe_gauge!("llmroute_tenant_budget_usd", "Tenant budget per rolling window (USD).");
    describe_histogram!(
        "llmroute_predicted_quality",
        "Predicted quality (mu) of the model each query was routed to, by model: the accuracy proxy."
    );
    describe_counter!("llmroute_fallbacks_total", "Queries moved to another model after a backend failure.");
    describe_counter!("llmroute_backend_failures_total", "Backend errors and timeouts, by model.");
    describe_counter!(
        "llmroute_queries_over_capacity_total",
        "Queries of batches larger than the free slots (queued at the models by share of capacity)."
    );
    describe_histogram!(
        "llmroute_decision_queue_seconds",
        Unit::Seconds,
        "From a batch's close to the start of its decision (behind slower decisions)."
    );
    describe_counter!("llmroute_overdraft_batches_total", "Batches whose cheapest assignment exceeded the allowance.");
    describe_counter!(
        "llmroute_batches_over_budget_total",
        "Batches whose realized cost exceeded their grant (the ledger keeps this near budget.max_over_probability)."
    );
    describe_gauge!(
        "llmroute_budget_kappa",
        "κ of the batch budget's chance constraint (conformal quantile of batch errors)."
    );
    describe_gauge!("llmroute_budget_margin", "The ledger's relative margin on predicted budget use.");
    describe_gauge!("llmroute_circuit_state", "Circuit breaker per model: 0 closed, 1 open, 2 half-open.");
    describe_gauge!("llmroute_queue_depth", Unit::Count, "Queries waiting for a batch.");
    describe_gauge!("llmroute_config_generation", "Config generation serving (1 at start, +1 per reload).");
    describe_counter!("llmroute_config_reloads_total", "Config reloads, by result.");
    describe_gauge!(
        "llmroute_budget_store_up",
        "1 when the tenant budget store answered last time (always 1 for memory)."
    );
    describe_gauge!("llmroute_budget_settles_pending", Unit::Count, "Settles waiting to reach the Redis budget store.");
    describe_counter!("llmroute_budget_store_errors_total", "Redis budget store calls that failed, by op.");
    describe_counter!(
        "llmroute_budget_settle_duplicates_total",
        "Settle retries Redis had already applied (not charged again)."
    );
    describe_counter!(
        "llmroute_budget_local_slice_total",
        "Calls admitted on a local budget slice (Redis unreachable, fail open)."
    );
    describe_counter!("llmroute_budget_overruns_total", "Calls whose realized cost exceeded their reservation.");
    describe_counter!("llmroute_tls_reloads_total", "TLS certificate reloads, by result.");
    describe_counter!("llmroute_tls_handshake_failures_total", "TLS handshakes that failed or timed out.");
}
