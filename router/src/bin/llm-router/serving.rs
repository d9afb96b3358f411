//! `serve`, `route` and `loadgen`.

use crate::client::{self, LoadSpec};
use clap::Args;
use llmroute_proto::v1 as pb;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Router config YAML (see deploy/local/router.yaml, the embedded default).
    #[arg(long, default_value = "deploy/local/router.yaml")]
    config: PathBuf,
}

/// Where a client command calls, and as whom.
#[derive(Args)]
pub struct Caller {
    /// Router gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    #[arg(long, default_value = "")]
    tenant: String,
    /// API key (sent as `authorization: Bearer KEY`); defaults to $LLMROUTE_API_KEY.
    #[arg(long, env = "LLMROUTE_API_KEY")]
    api_key: Option<String>,
}

#[derive(Args)]
pub struct RouteArgs {
    /// The prompt.
    prompt: String,
    #[command(flatten)]
    caller: Caller,
    /// Task hint, e.g. mmlu/anatomy.
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    max_output_tokens: Option<u32>,
    /// Only these models (comma-separated).
    #[arg(long, value_delimiter = ',')]
    allowed_models: Vec<String>,
    /// Decision only: choose a model, do not call it.
    #[arg(long)]
    no_dispatch: bool,
    #[arg(long)]
    max_cost_usd: Option<f64>,
    /// Stream the answer (RouteStream): pieces are printed to stderr as they come.
    #[arg(long)]
    stream: bool,
    /// Call deadline in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
}

#[derive(Args)]
pub struct FeedbackArgs {
    /// The `request_id` of the Route reply being scored.
    #[arg(long)]
    request_id: String,
    /// The answer's quality, in [0, 1].
    #[arg(long)]
    score: f64,
    /// The answer's realized output tokens, if known.
    #[arg(long)]
    output_tokens: Option<u32>,
    #[command(flatten)]
    caller: Caller,
}

#[derive(Args)]
pub struct LoadgenArgs {
    /// Router (or echo server) gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Offered calls per second (open loop); 0 = closed loop at --concurrency.
    #[arg(long, default_value_t = 1000.0)]
    qps: f64,
    /// Most calls outstanding at once (open loop: calls beyond it are counted as skipped).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Per-call deadline, ms.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// HTTP/2 connections to spread calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Routing records whose prompts are sent (cycled); default: a few built-in prompts.
    #[arg(long)]
    records: Option<PathBuf>,
    /// Dispatch to the models (default: decision only).
    #[arg(long)]
    dispatch: bool,
    #[arg(long, default_value = "")]
    tenant: String,
    #[arg(long, env = "LLMROUTE_API_KEY")]
    api_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also report latencies per slice of this many ms (JSON `timeline`; printed without --json).
    #[arg(long)]
    timeline_ms: Option<u64>,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("tokio runtime: {e}"))
}

pub fn serve(a: ServeArgs) -> Result<(), String> {
    runtime()?.block_on(router::serve(a.config)).map_err(|e| e.to_string())
}

pub fn route(a: RouteArgs) -> Result<(), String> {
    if let Some(c) = a.max_cost_usd {
        if !(c.is_finite() && c >= 0.0) {
            return Err(format!("--max-cost-usd: {c} is not a non-negative number"));
        }
    }
    let msg = pb::RouteRequest {
        tenant: a.caller.tenant,
        prompt: a.prompt,
        task: a.task,
        max_output_tokens: a.max_output_tokens,
        allowed_models: a.allowed_models,
        dispatch: Some(!a.no_dispatch),
        max_cost_usd: a.max_cost_usd,
        ..Default::default()
    };
    let timeout = Some(Duration::from_millis(a.timeout_ms));
    runtime()?.block_on(async move {
        let ch = client::connect(&a.caller.addr).await.map_err(|e| e.to_string())?;
        let mut c = pb::router_client::RouterClient::new(ch);
        let req = client::request(msg, a.caller.api_key.as_deref(), timeout).map_err(|e| e.to_string())?;
        let reply = if a.stream {
            let mut s = c.route_stream(req).await.map_err(|s| client::status_error(s).to_string())?.into_inner();
            let mut done = None;
            while let Some(ev) = s.message().await.map_err(|s| client::status_error(s).to_string())? {
                match ev.event {
                    Some(pb::route_stream_event::Event::Delta(d)) => eprint!("{d}"),
                    Some(pb::route_stream_event::Event::Done(r)) => done = Some(r),
                    _ => {}
                }
            }
            eprintln!();
            done.ok_or("the stream ended without a final reply")?
        } else {
            c.route(req).await.map_err(|s| client::status_error(s).to_string())?.into_inner()
        };
        let json = serde_json::to_string_pretty(&client::reply_json(&reply)).map_err(|e| e.to_string())?;
        println!("{json}");
        Ok(())
    })
}

pub fn feedback(a: FeedbackArgs) -> Result<(), String> {
    let msg = pb::FeedbackRequest {
        request_id: a.request_id,
        score: a.score,
        output_tokens: a.output_tokens,
        tenant: a.caller.tenant,
    };
    runtime()?.block_on(async move {
        let ch = client::connect(&a.caller.addr).await.map_err(|e| e.to_string())?;
        let mut c = pb::router_client::RouterClient::new(ch);
        let req = client::request(msg, a.caller.api_key.as_deref(), Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let r = c.feedback(req).await.map_err(|s| client::status_error(s).to_string())?.into_inner();
        let json =
            serde_json::json!({"model": r.model, "predicted_mu": r.predicted_mu, "predicted_sigma": r.predicted_sigma});
        println!("{}", serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?);
        Ok(())
    })
}

const BUILTIN_PROMPTS: &[&str] = &[
    "What is the capital of Australia?",
    "Write a Python function that reverses a linked list.",
    "A train travels 120 km in 1.5 hours. What is its average speed in km/h?",
    "Which organ produces insulin? A) liver B) pancreas C) kidney D) spleen",
    "Summarize the causes of the French Revolution in three sentences.",
    "Translate 'good morning, how are you?' into Spanish.",
    "Solve for x: 3x + 7 = 22.",
    "Explain the difference between TCP and UDP.",
];

pub fn loadgen(a: LoadgenArgs) -> Result<(), String> {
    if !(a.qps.is_finite() && a.qps >= 0.0) {
        return Err("--qps must be a non-negative number".into());
    }
    if !(a.duration.is_finite() && a.duration > 0.0) {
        return Err("--duration must be positive".into());
    }
    let prompts: Vec<String> = match &a.records {
        Some(p) => {
            estimator::records::read_records(p).map_err(|e| e.to_string())?.into_iter().map(|r| r.prompt).collect()
        }
        None => BUILTIN_PROMPTS.iter().map(|s| s.to_string()).collect(),
    };
    let spec = LoadSpec {
        addr: a.addr,
        qps: a.qps,
        concurrency: a.concurrency,
        duration: Duration::from_secs_f64(a.duration),
        timeout: Duration::from_millis(a.timeout_ms),
        connections: a.connections,
        prompts,
        dispatch: a.dispatch,
        tenant: a.tenant,
        api_key: a.api_key,
        timeline: a.timeline_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
    };
    eprintln!(
        "loadgen: {} for {:.0} s at {} (concurrency {}), {}",
        spec.addr,
        a.duration,
        if spec.qps > 0.0 { format!("{} calls/s", spec.qps) } else { "closed loop".into() },
        spec.concurrency,
        if spec.dispatch { "dispatching" } else { "decision only" }
    );
    let r = runtime()?.block_on(client::loadgen(spec)).map_err(|e| e.to_string())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?);
    } else {
        println!(
            "offered {}/s  sent {}/s  ok {}/s  ({} sent, {} ok, {} skipped at the client limit)",
            rate(r.offered_qps),
            rate(r.achieved_qps),
            rate(r.ok_qps),
            r.sent,
            r.ok,
            r.skipped_client_limit
        );
        let l = r.ok_latency_ms;
        println!("ok latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}", l.p50, l.p90, l.p99, l.max);
        if !r.errors.is_empty() {
            let l = r.rejected_latency_ms;
            println!("errors: {:?}", r.errors);
            if l.n > 0 {
                println!("RESOURCE_EXHAUSTED latency ms: p50 {:.3}  p99 {:.3}  max {:.3}", l.p50, l.p99, l.max);
            }
        }
        for s in &r.timeline {
            let (o, j) = (s.ok_latency_ms, s.rejected_latency_ms);
            println!(
                "{:7.2} s  ok {:6} p50 {:8.3} p99 {:8.3}  refused {:6} p50 {:8.3} p99 {:8.3}",
                s.start_s, o.n, o.p50, o.p99, j.n, j.p50, j.p99
            );
        }
    }
    Ok(())
}

/// A rate for the loadgen report: whole numbers from 100/s, two decimals below (0.5/s stays 0.50).
fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}
