//! The HTTP side: the OpenAI-compatible facade (`POST /v1/chat/completions` with `model: "auto"`
//! to route or a model name to pin, `stream: true` as server-sent events; `GET /v1/models`), and
//! `/metrics`, `/healthz`, `POST /admin/reload`.

use super::admission::AdmissionLayer;
use super::api::Api;
use super::backend::ChatMessage;
use super::query::{Reply, RouteInput, StreamSink};
use super::state::Live;
use crate::RouterError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

#[derive(Clone)]
struct Ctx {
    api: Api,
    metrics: PrometheusHandle,
}

pub fn router(api: Api, metrics: PrometheusHandle, admission: AdmissionLayer) -> Router {
    let ctx = Ctx { api, metrics };
    let v1 = Router::new().route("/v1/chat/completions", post(chat)).route("/v1/models", get(models)).layer(admission);
    Router::new()
        .merge(v1)
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/admin/reload", post(reload))
        .with_state(ctx)
}

/// An OpenAI-style error answer.
fn error(e: RouterError) -> Response {
    e.http_response().into_response()
}

fn bearer(h: &HeaderMap) -> Option<String> {
    let v = h.get("authorization").and_then(|v| v.to_str().ok())?.trim();
    Some(v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim().to_string())
}

#[derive(Deserialize)]
struct ChatBody {
    model: Option<String>,
    messages: Option<Vec<RawMessage>>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    stream: bool,
    /// llmroute extensions: `{"task": ..., "dispatch": false, "max_cost_usd": ..., "tenant": ...}`.
    #[serde(default)]
    llmroute: Option<Extensions>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: Option<String>,
    content: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Extensions {
    task: Option<String>,
    dispatch: Option<bool>,
    max_cost_usd: Option<f64>,
    tenant: Option<String>,
}

/// An OpenAI chat-completions body → the router's input and whether to stream.
pub fn parse_chat(live: &Live, body: &[u8], key: Option<String>) -> Result<(RouteInput, bool), RouterError> {
    let b: ChatBody = serde_json::from_slice(body).map_err(|e| RouterError::bad("(body)", e.to_string()))?;
    let model = b.model.ok_or_else(|| RouterError::bad("model", "missing: use \"auto\" to route"))?;
    let mut allowed_models = Vec::new();
    if model != "auto" {
        if live.model_index(&model).is_none() {
            return Err(RouterError::bad(
                "model",
                format!("unknown model `{model}`: use \"auto\" or a name from /v1/models"),
            ));
        }
        allowed_models.push(model);
    }
    let raw = b.messages.ok_or_else(|| RouterError::bad("messages", "missing"))?;
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let role = m.role.ok_or_else(|| RouterError::bad(format!("messages[{i}].role"), "missing"))?;
        // Content is a string or a list of parts ({"type": "text", "text": ...}).
        let content = match m.content {
            Some(Value::String(s)) => s,
            Some(Value::Array(parts)) => {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
            }
            Some(Value::Null) | None => String::new(),
            Some(_) => {
                return Err(RouterError::bad(format!("messages[{i}].content"), "expected a string or text parts"))
            }
        };
        messages.push(ChatMessage { role, content });
    }
    let max = b.max_completion_tokens.or(b.max_tokens);
    let max_output_tokens = match max {
        None => None,
        Some(n) if n <= 0 => return Err(RouterError::bad("max_tokens", "must be at least 1")),
        Some(n) => Some(u32::try_from(n).map_err(|_| RouterError::bad("max_tokens", "too large"))?),
    };
    let ext = b.llmroute.unwrap_or_default();
    Ok((
        RouteInput {
            tenant: ext.tenant.unwrap_or_default(),
            api_key: key,
            prompt: String::new(),
            messages,
            task: ext.task,
            max_output_tokens,
            allowed_models,
            dispatch: ext.dispatch.unwrap_or(true),
            max_cost_usd: ext.max_cost_usd,
        },
        b.stream,
    ))
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn extension(r: &Reply) -> Value {
    json!({
        "predicted": r.predicted, "batch_id": r.batch_id, "batch_size": r.batch_size,
        "batch_budget_usd": r.batch_budget_usd, "cost_usd": r.cost_usd, "assigner": r.assigner,
        "solve_status": r.solve_status, "fallback": r.fallback, "failed_models": r.failed_models,
        "overdraft": r.overdraft, "batch_over_budget": r.batch_over_budget, "dispatched": r.dispatched, "latency_ms": r.latency_ms,
    })
}

async fn chat(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let (input, stream) = match parse_chat(&ctx.api.shared.live(), &body, bearer(&headers)) {
        Ok(v) => v,
        Err(e) => return error(e),
    };
    if !stream {
        return match ctx.api.route(input, None).await {
            Ok(r) => Json(json!({
                "id": format!("chatcmpl-{}", r.batch_id),
                "object": "chat.completion",
                "created": now_s(),
                "model": r.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.answer},
                             "finish_reason": if r.finish_reason.is_empty() { "stop" } else { r.finish_reason.as_str() }}],
                "usage": {"prompt_tokens": r.input_tokens, "completion_tokens": r.output_tokens,
                          "total_tokens": r.input_tokens + r.output_tokens},
                "llmroute": extension(&r),
            }))
            .into_response(),
            Err(e) => error(e),
        };
    }
    let (dtx, drx) = oneshot::channel();
    let (ptx, mut prx) = mpsc::channel::<String>(64);
    let pending = match ctx.api.submit(input, None, Some(StreamSink { decision: dtx, deltas: ptx })).await {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let created = now_s();
        let chunk = |id: u64, model: &str, delta: Value, finish: Value| {
            json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created,
                   "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let (mut id, mut model) = (0, String::new());
        if let Ok(start) = drx.await {
            (id, model) = (start.batch_id, start.model.clone());
            let c = chunk(id, &model, json!({"role": "assistant", "content": ""}), Value::Null);
            let _ = tx.send(Ok(Event::default().data(c.to_string()))).await;
        }
        while let Some(piece) = prx.recv().await {
            let c = chunk(id, &model, json!({"content": piece}), Value::Null);
            let _ = tx.send(Ok(Event::default().data(c.to_string()))).await;
        }
        match pending.wait().await {
            Ok(r) => {
                let finish = if r.finish_reason.is_empty() { "stop".to_string() } else { r.finish_reason.clone() };
                let mut c = chunk(r.batch_id, &r.model, json!({}), json!(finish));
                c["usage"] = json!({"prompt_tokens": r.input_tokens, "completion_tokens": r.output_tokens,
                                    "total_tokens": r.input_tokens + r.output_tokens});
                c["llmroute"] = extension(&r);
                let _ = tx.send(Ok(Event::default().data(c.to_string()))).await;
            }
            Err(e) => {
                let (_, kind) = e.http();
                let c = json!({"error": {"message": e.to_string(), "type": kind}});
                let _ = tx.send(Ok(Event::default().data(c.to_string()))).await;
            }
        }
        let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(rx)).into_response()
}

async fn models(State(ctx): State<Ctx>) -> Response {
    let data: Vec<Value> = ctx
        .api
        .models()
        .into_iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "llmroute", "llmroute": m}))
        .chain(std::iter::once(json!({"id": "auto", "object": "model", "created": 0, "owned_by": "llmroute"})))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn render_metrics(State(ctx): State<Ctx>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], ctx.metrics.render()).into_response()
}

async fn reload(State(ctx): State<Ctx>) -> Response {
    match ctx.api.reload().await {
        Ok(g) => Json(json!({"ok": true, "generation": g})).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"ok": false, "message": format!("rejected, the last good config keeps serving: {e}")})),
        )
            .into_response(),
    }
}
