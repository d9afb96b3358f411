//! Background upkeep: per-model gauges (in flight, free slots, circuit state, tenants' spend) and
//! the prober that checks an open breaker's server and lets traffic back when it answers.

use super::state::Shared;
use crate::metrics::names;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn start(shared: Arc<Shared>) {
    tokio::spawn(tenant_gauges(shared.clone()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let live = shared.live();
            for md in &live.models {
                let name = md.entry.name.clone();
                let inf = md.state.in_flight.load(Ordering::Relaxed);
                metrics::gauge!(names::IN_FLIGHT, "model" => name.clone()).set(inf as f64);
                metrics::gauge!(names::FREE_SLOTS, "model" => name.clone()).set(md.capacity.saturating_sub(inf) as f64);
                let state = md.state.breaker().state();
                metrics::gauge!(names::CIRCUIT_STATE, "model" => name.clone()).set(state.gauge());
                metrics::counter!(names::BACKEND_FAILURES_TOTAL, "model" => name.clone()).increment(0);
                let due = md.state.breaker().due_for_probe(live.config.backends.breaker_open(), Instant::now());
                if due {
                    let ok = md.backend.healthy().await;
                    let mut b = md.state.breaker();
                    if ok {
                        b.on_probe_ok();
                        tracing::info!(model = %name, "probe answered; circuit half-open");
                    } else {
                        b.on_probe_failed(Instant::now());
                        tracing::debug!(model = %name, "probe failed; circuit stays open");
                    }
                    metrics::gauge!(names::CIRCUIT_STATE, "model" => name).set(b.state().gauge());
                }
            }
        }
    });
}

/// Tenants' spend (settled in window + reserved) and budgets, once a second (with Redis, the shared
/// figures; left as they were while it does not answer). The budget store's own gauges move where
/// its state changes (`budgets`).
async fn tenant_gauges(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let live = shared.live();
        for t in &live.config.tenants {
            if let Some((spent, reserved)) = shared.budgets.usage(t).await {
                metrics::gauge!(names::TENANT_SPEND_USD, "tenant" => t.name.clone()).set(spent + reserved);
            }
            metrics::gauge!(names::TENANT_BUDGET_USD, "tenant" => t.name.clone()).set(t.budget_usd);
        }
    }
}
