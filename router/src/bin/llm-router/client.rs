//! Clients: `llm-router route` (one call, prints the JSON reply) and `llm-router loadgen` (gRPC
//! load at a fixed rate, or at a fixed concurrency, for a duration; prints achieved QPS and
//! latency percentiles).

use llmroute_proto::v1 as pb;
use llmroute_proto::v1::router_client::RouterClient;
use router::{Result, RouterError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

pub async fn connect(addr: &str) -> Result<Channel> {
    let uri = if addr.starts_with("http://") { addr.to_string() } else { format!("http://{addr}") };
    Endpoint::from_shared(uri)
        .map_err(|e| RouterError::bad("--addr", format!("`{addr}`: {e}")))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| RouterError::Unavailable(format!("cannot connect to {addr}: {e}")))
}

/// Adds `authorization: Bearer <key>` and a deadline to a request.
pub fn request<T>(msg: T, api_key: Option<&str>, timeout: Option<Duration>) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = api_key {
        let v = format!("Bearer {k}").parse().map_err(|_| RouterError::bad("--api-key", "not a valid header value"))?;
        r.metadata_mut().insert("authorization", v);
    }
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    Ok(r)
}

pub fn status_error(s: tonic::Status) -> RouterError {
    RouterError::Unavailable(format!("{:?}: {}", s.code(), s.message()))
}

/// The JSON printed for a reply.
pub fn reply_json(r: &pb::RouteResponse) -> serde_json::Value {
    let usage = r.usage.unwrap_or_default();
    let p = r.predicted.unwrap_or_default();
    let why = r.why.clone().unwrap_or_default();
    serde_json::json!({
        "request_id": r.request_id, "model": r.model, "answer": r.answer, "dispatched": r.dispatched,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        "cost_usd": r.cost_usd,
        "predicted": {"mu": p.mu, "sigma": p.sigma, "output_tokens": p.output_tokens, "cost_usd": p.cost_usd},
        "batch_id": r.batch_id, "batch_size": r.batch_size,
        "why": {"assigner": why.assigner, "solve_status": why.solve_status, "fallback": why.fallback,
                "failed_models": why.failed_models, "overdraft": why.overdraft},
        "finish_reason": r.finish_reason, "latency_ms": r.latency_ms,
    })
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: String,
    /// Offered rate (calls/s); 0 = closed loop at `concurrency`.
    pub qps: f64,
    pub concurrency: usize,
    pub duration: Duration,
    pub timeout: Duration,
    pub connections: usize,
    pub prompts: Vec<String>,
    pub dispatch: bool,
    pub tenant: String,
    pub api_key: Option<String>,
    /// Report latencies per slice of this length too (None: totals only).
    pub timeline: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub offered_qps: f64,
    pub achieved_qps: f64,
    pub ok_qps: f64,
    pub sent: u64,
    pub ok: u64,
    /// Calls not sent because `concurrency` calls were already outstanding (open loop only).
    pub skipped_client_limit: u64,
    pub errors: BTreeMap<String, u64>,
    /// Per error code, the distinct messages seen (numbers masked; up to `MESSAGE_SAMPLES` each,
    /// with their counts and one unmasked example), so a run says why calls failed, not only how
    /// many.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub error_messages: BTreeMap<String, Vec<MessageCount>>,
    pub ok_latency_ms: Percentiles,
    pub rejected_latency_ms: Percentiles,
    pub duration_s: f64,
    /// Latencies per time slice of `LoadSpec::timeline` (by when calls were sent); empty without.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Slice>,
}

/// A kind of error message (numbers masked as `#`), how often it came, and its first instance.
#[derive(Debug, Clone, Serialize)]
pub struct MessageCount {
    pub message: String,
    pub n: u64,
    pub example: String,
}

/// One time slice of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct Slice {
    pub start_s: f64,
    pub ok_latency_ms: Percentiles,
    /// RESOURCE_EXHAUSTED answers.
    pub rejected_latency_ms: Percentiles,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Distinct error messages kept per code in `LoadReport::error_messages` (the rest are counted in
/// `errors` only).
const MESSAGE_SAMPLES: usize = 5;

/// A status message with its numbers replaced by `#` (waits, counts and ids vary per call), so
/// messages that differ only in them are counted together.
fn message_shape(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut chars = m.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            out.push('#');
            // The rest of the number, a decimal point inside it included.
            while let Some(&d) = chars.peek() {
                let point = d == '.' && chars.clone().nth(1).is_some_and(|e| e.is_ascii_digit());
                if !(d.is_ascii_digit() || point) {
                    break;
                }
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    Percentiles { n: v.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), max: v[v.len() - 1] }
}

pub async fn loadgen(spec: LoadSpec) -> Result<LoadReport> {
    if spec.prompts.is_empty() {
        return Err(RouterError::bad("--prompts", "no prompts"));
    }
    let mut clients = Vec::new();
    for _ in 0..spec.connections.max(1) {
        clients.push(RouterClient::new(connect(&spec.addr).await?));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(f64, Option<(tonic::Code, String)>, f64)>();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(spec.concurrency.max(1)));
    let start = Instant::now();
    let end = start + spec.duration;
    let mut sent = 0u64;
    let mut skipped = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut owed = 0.0f64;
    let mut last = Instant::now();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let burst = if spec.qps > 0.0 {
            tick.tick().await;
            let t = Instant::now();
            owed += spec.qps * t.duration_since(last).as_secs_f64();
            last = t;
            let k = owed.floor();
            owed -= k;
            k as u64
        } else {
            1
        };
        for _ in 0..burst {
            let permit = if spec.qps > 0.0 {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        skipped += 1;
                        continue;
                    }
                }
            } else {
                match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let msg = pb::RouteRequest {
                tenant: spec.tenant.clone(),
                prompt: spec.prompts[sent as usize % spec.prompts.len()].clone(),
                dispatch: Some(spec.dispatch),
                ..Default::default()
            };
            let req = request(msg, spec.api_key.as_deref(), Some(spec.timeout))?;
            let mut client = clients[sent as usize % clients.len()].clone();
            let tx = tx.clone();
            sent += 1;
            tokio::spawn(async move {
                let t0 = Instant::now();
                let r = client.route(req).await;
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                let err = r.err().map(|s| (s.code(), s.message().to_string()));
                let _ = tx.send((ms, err, t0.duration_since(start).as_secs_f64()));
                drop(permit);
            });
        }
    }
    drop(tx);
    let mut ok_lat = Vec::new();
    let mut rej_lat = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut error_messages: BTreeMap<String, Vec<MessageCount>> = BTreeMap::new();
    // Per time slice (by when each call was sent): ok and refused latencies.
    let mut slices: BTreeMap<u64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    while let Some((ms, code, at)) = rx.recv().await {
        if let Some(every) = spec.timeline.filter(|d| !d.is_zero()) {
            let slice = slices.entry((at / every.as_secs_f64()) as u64).or_default();
            match &code {
                None => slice.0.push(ms),
                Some((tonic::Code::ResourceExhausted, _)) => slice.1.push(ms),
                Some(_) => {}
            }
        }
        match code {
            None => ok_lat.push(ms),
            Some((c, message)) => {
                *errors.entry(format!("{c:?}")).or_default() += 1;
                let seen = error_messages.entry(format!("{c:?}")).or_default();
                let shape = message_shape(&message);
                if let Some(k) = seen.iter_mut().find(|k| k.message == shape) {
                    k.n += 1;
                } else if seen.len() < MESSAGE_SAMPLES {
                    seen.push(MessageCount { message: shape, n: 1, example: message });
                }
                if c == tonic::Code::ResourceExhausted {
                    rej_lat.push(ms);
                }
            }
        }
    }
    let every = spec.timeline.map_or(0.0, |d| d.as_secs_f64());
    let timeline = slices
        .into_iter()
        .map(|(i, (ok, refused))| Slice {
            start_s: i as f64 * every,
            ok_latency_ms: percentiles(ok),
            rejected_latency_ms: percentiles(refused),
        })
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok_lat.len() as u64;
    Ok(LoadReport {
        offered_qps: spec.qps,
        achieved_qps: sent as f64 / spec.duration.as_secs_f64(),
        ok_qps: ok as f64 / spec.duration.as_secs_f64(),
        sent,
        ok,
        skipped_client_limit: skipped,
        errors,
        error_messages,
        ok_latency_ms: percentiles(ok_lat),
        rejected_latency_ms: percentiles(rej_lat),
        duration_s: elapsed,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_ramp() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!((p.n, p.p50, p.p99, p.max), (100, 51.0, 99.0, 100.0));
        assert_eq!(percentiles(vec![]).n, 0);
    }

    #[test]
    fn messages_that_differ_only_in_numbers_have_one_shape() {
        let a = message_shape("the expected wait (1204 ms) is longer than the call's deadline (998 ms); retry later");
        let b = message_shape("the expected wait (87 ms) is longer than the call's deadline (5 ms); retry later");
        assert_eq!(a, b);
        assert_eq!(a, "the expected wait (# ms) is longer than the call's deadline (# ms); retry later");
        assert_eq!(message_shape("spent $0.25 of $1.5"), "spent $# of $#");
        assert_eq!(message_shape("took 5. Then 7"), "took #. Then #");
        assert_ne!(message_shape("model a is down"), message_shape("model b is down"));
    }
}
