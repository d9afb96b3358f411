//! Where a decision-only Route call's time goes on this process's request path (issue 16's
//! per-stage breakdown; `cargo run --release -p router --example stage_bench`). Each stage is
//! timed alone, call after call, on the real code the gRPC service runs:
//!
//! - `decode`: the request's protobuf bytes → `RouteRequest` (what tonic's codec does);
//! - `input`: `RouteRequest` → `RouteInput` (`grpc::input`);
//! - `validate`: tenant, fields, token counts, and the prediction with the prompt's heaviest
//!   features (`feedback.online`'s key) from the cache (`query::validate` with the prompt
//!   predicted before — repeated prompts);
//! - `estimate`: what a cache miss adds — the estimator's prediction and the heaviest features,
//!   from one feature extraction;
//! - `decide ×B`: the batch problem, the ledger's grant and the assigner for a batch of B queries
//!   (per query);
//! - `reply`: the decision-only answer built and sent through its channel (`dispatch::launch`);
//! - `encode`: the `Reply` → `RouteResponse` → bytes;
//! - `whole call`: `Api::route` in process — validate, the batcher's queue and window
//!   (`batch.window_ms`), the deciding task, the reply channel — one call at a time, so each batch
//!   holds one query.
//!
//! Not included: the network, HTTP/2 framing and the hops between tokio tasks (submit → batcher →
//! reply); `scripts/bench-serve.sh` measures the whole call against a bare gRPC echo server, so the
//! difference between its figure and the sum here is those hops and the batch window.

use crate::api::learn;
use crate::decide::decide;
use crate::dispatch::launch;
use crate::grpc::{input, to_pb};
use crate::query::{resolve_tenant, validate};
use crate::state::Shared;
use crate::{Result, RouterError};
use llmroute_proto::prost::Message;
use llmroute_proto::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One stage's per-call times (µs).
pub struct Stage {
    pub name: String,
    pub micros: Vec<f64>,
}

impl Stage {
    fn new(name: impl Into<String>) -> Stage {
        Stage { name: name.into(), micros: Vec::new() }
    }
    /// (mean, p50, p99) in µs.
    pub fn summary(&self) -> (f64, f64, f64) {
        let mut v = self.micros.clone();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
        (v.iter().sum::<f64>() / v.len().max(1) as f64, q(0.5), q(0.99))
    }
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

fn request(prompt: &str) -> pb::RouteRequest {
    pb::RouteRequest { prompt: prompt.to_string(), dispatch: Some(false), ..Default::default() }
}

/// Times every stage over `calls` calls cycling through `prompts` (decision only, tenant
/// `default`), and `decide` for each batch size in `batches`.
pub async fn run(shared: Arc<Shared>, prompts: &[String], calls: usize, batches: &[usize]) -> Result<Vec<Stage>> {
    if prompts.is_empty() {
        return Err(RouterError::bad("prompts", "no prompts to time"));
    }
    let live = shared.live();
    let tenant = resolve_tenant(&live, "", None)?;
    let deadline = || Instant::now() + Duration::from_secs(60);
    // As many prompts as the prediction cache keeps for sure (half its capacity), each predicted
    // once: `validate` then reads the cache, as for a repeated prompt.
    let cap = live.config.estimator.cache_entries / 2;
    let prompts = &prompts[..prompts.len().min(cap.max(1))];
    let bytes: Vec<Vec<u8>> = prompts.iter().map(|p| request(p).encode_to_vec()).collect();
    for p in prompts {
        live.predict(p, None);
    }
    let (mut decode, mut inp, mut val, mut est, mut reply, mut enc) = (
        Stage::new("decode"),
        Stage::new("input"),
        Stage::new(if cap > 0 { "validate (cached prediction)" } else { "validate (no cache)" }),
        Stage::new("estimate (cache miss)"),
        Stage::new("reply"),
        Stage::new("encode"),
    );
    let mut decide1 = Stage::new("decide ×1");
    for k in 0..calls {
        let i = k % prompts.len();
        let t = Instant::now();
        let r = pb::RouteRequest::decode(bytes[i].as_slice())
            .map_err(|e| RouterError::bad("request", format!("not a RouteRequest: {e}")))?;
        decode.micros.push(us(t));
        let t = Instant::now();
        let ri = input(r, None, "")?;
        inp.micros.push(us(t));
        let t = Instant::now();
        let mut q = validate(&live, ri, "", tenant, deadline())?;
        learn(&shared, &mut q);
        val.micros.push(us(t));
        let t = Instant::now();
        let (p, full) = live.trained.estimator.predict_and_features(&prompts[i], None);
        std::hint::black_box((p, crate::online::heaviest(full, crate::online::TERMS)));
        est.micros.push(us(t));
        let (tx, rx) = tokio::sync::oneshot::channel();
        q.reply = Some(tx);
        let t = Instant::now();
        let d = decide(&shared, vec![q]).await.ok_or_else(|| RouterError::Internal("no decision".into()))?;
        decide1.micros.push(us(t));
        let t = Instant::now();
        launch(&shared, d);
        let r = rx.await.map_err(|_| RouterError::Internal("no reply".into()))??;
        reply.micros.push(us(t));
        let t = Instant::now();
        std::hint::black_box(to_pb(r).encode_to_vec());
        enc.micros.push(us(t));
    }
    let mut out = vec![decode, inp, val, est, decide1];
    for &b in batches.iter().filter(|&&b| b > 1) {
        let mut st = Stage::new(format!("decide ×{b} (per query)"));
        for round in 0..(calls / b).max(3) {
            let mut qs = Vec::with_capacity(b);
            let mut rxs = Vec::with_capacity(b);
            for k in 0..b {
                let i = (round * b + k) % prompts.len();
                let ri = input(request(&prompts[i]), None, "")?;
                let mut q = validate(&live, ri, "", tenant, deadline())?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                q.reply = Some(tx);
                qs.push(q);
                rxs.push(rx);
            }
            let t = Instant::now();
            let d = decide(&shared, qs).await.ok_or_else(|| RouterError::Internal("no decision".into()))?;
            st.micros.push(us(t) / b as f64);
            launch(&shared, d);
            for rx in rxs {
                rx.await.map_err(|_| RouterError::Internal("no reply".into()))??;
            }
        }
        out.push(st);
    }
    out.push(reply);
    out.push(enc);
    let api = crate::api::Api::new(shared.clone(), std::path::PathBuf::from("stagebench.yaml"));
    let mut whole = Stage::new(format!("whole call (window {} ms)", live.config.batch.window_ms));
    for k in 0..calls.min(5000) {
        let ri = input(request(&prompts[k % prompts.len()]), None, "")?;
        let t = Instant::now();
        api.route(ri, None).await?;
        whole.micros.push(us(t));
    }
    out.push(whole);
    Ok(out)
}
