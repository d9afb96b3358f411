//! The HTTP side: the OpenAI-compatible facade (`POST /v1/chat/completions` with `model: "auto"`
//! to route or a model name to pin, `stream: true` as server-sent events; the legacy
//! `POST /v1/completions` and a minimal `POST /v1/responses`, text in / text out, routed the same
//! way; `GET /v1/models`), and `/metrics`, `/healthz`, `POST /admin/reload`. Every answer carries
//! `x-llmroute-request-id`; routed ones `x-llmroute-model` (and `x-llmroute-cost-usd` when not
//! streamed).

use super::admission::AdmissionLayer;
use super::api::Api;
use super::backend::{ChatMessage, Passthrough};
use super::query::{content_text, needs_of, openai_messages, Reply, RouteInput, StreamSink};
use super::state::Live;
use crate::feedback::FeedbackInput;
use crate::otel::Remote;
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
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
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
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/responses", post(responses))
        .route("/v1/models", get(models))
        .route("/v1/feedback", post(feedback))
        .layer(admission);
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
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    request_id: String,
    score: f64,
    output_tokens: Option<u32>,
    tenant: Option<String>,
}

/// `POST /v1/feedback`: `{"request_id", "score", "output_tokens"?, "tenant"?}` →
/// `{"model", "predicted_mu", "predicted_sigma"}`.
async fn feedback(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Result<FeedbackBody, RouterError> =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)).map_err(|e| {
            let field = e.path().to_string();
            RouterError::bad(if field == "." { "(body)".to_string() } else { field }, e.into_inner().to_string())
        });
    let result = parsed.and_then(|b| {
        let input = FeedbackInput {
            tenant: b.tenant.unwrap_or_default(),
            api_key: bearer(&headers),
            request_id: b.request_id,
            score: b.score,
            output_tokens: b.output_tokens,
        };
        crate::feedback::submit(&ctx.api.shared, input)
    });
    match result {
        Ok(r) => Json(json!({"model": r.model, "predicted_mu": r.predicted_mu, "predicted_sigma": r.predicted_sigma}))
            .into_response(),
        Err(e) => error(e),
    }
}

#[derive(Deserialize)]
struct ChatBody {
    model: Option<String>,
    messages: Option<Vec<Value>>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    stream: bool,
    /// llmroute extensions: `{"task": ..., "dispatch": false, "max_cost_usd": ..., "tenant": ...}`.
    #[serde(default)]
    llmroute: Option<Extensions>,
    /// Every other field (tools, tool_choice, temperature, top_p, stop, seed, response_format,
    /// logprobs, n, user, ...): forwarded to OpenAI-compatible backends as is.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
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
    let raw = b.messages.ok_or_else(|| RouterError::bad("messages", "missing"))?;
    let messages = openai_messages(&raw, "")?;
    let mut rest = b.rest;
    // The router streams (or not) and asks for usage itself.
    rest.remove("stream_options");
    let needs = needs_of(&rest, &raw);
    let passthrough = Some(Arc::new(Passthrough { messages: raw, fields: rest }));
    let input = route_input(live, Some(model), messages, b.max_completion_tokens.or(b.max_tokens), b.llmroute, key)?;
    Ok((RouteInput { passthrough, needs, ..input }, b.stream))
}

/// The router's input from the parts every OpenAI shape shares: the model (`auto` routes, a
/// name pins), the turns, the output limit, the `llmroute` extensions, the key.
fn route_input(
    live: &Live,
    model: Option<String>,
    messages: Vec<ChatMessage>,
    max: Option<i64>,
    ext: Option<Extensions>,
    key: Option<String>,
) -> Result<RouteInput, RouterError> {
    let model = model.ok_or_else(|| RouterError::bad("model", "missing: use \"auto\" to route"))?;
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
    let max_output_tokens = match max {
        None => None,
        Some(n) if n <= 0 => return Err(RouterError::bad("max_tokens", "must be at least 1")),
        Some(n) => Some(u32::try_from(n).map_err(|_| RouterError::bad("max_tokens", "too large"))?),
    };
    let ext = ext.unwrap_or_default();
    Ok(RouteInput {
        tenant: ext.tenant.unwrap_or_default(),
        api_key: key,
        prompt: String::new(),
        messages,
        task: ext.task,
        max_output_tokens,
        allowed_models,
        dispatch: ext.dispatch.unwrap_or(true),
        max_cost_usd: ext.max_cost_usd,
        passthrough: None,
        needs: BTreeSet::new(),
        traceparent: None,
        request_id: String::new(),
    })
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
        "request_id": r.request_id,
    })
}

/// The three OpenAI shapes the facade answers in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chat,
    Completion,
    Responses,
}

const REQUEST_ID: &str = "x-llmroute-request-id";
const MODEL_HEADER: &str = "x-llmroute-model";
const COST_HEADER: &str = "x-llmroute-cost-usd";

fn with_headers(mut resp: Response, id: &str, model: Option<&str>, cost: Option<f64>) -> Response {
    let h = resp.headers_mut();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put(REQUEST_ID, id.to_string());
    if let Some(m) = model {
        put(MODEL_HEADER, m.to_string());
    }
    if let Some(c) = cost {
        put(COST_HEADER, format!("{c:.9}"));
    }
    resp
}

fn finish(r: &Reply) -> &str {
    if r.finish_reason.is_empty() {
        "stop"
    } else {
        r.finish_reason.as_str()
    }
}

/// The chat / completions `usage` object.
fn usage(r: &Reply) -> Value {
    json!({"prompt_tokens": r.input_tokens, "completion_tokens": r.output_tokens,
           "total_tokens": r.input_tokens + r.output_tokens})
}

/// The whole (non-streamed) answer in `shape`.
fn full_body(shape: Shape, r: &Reply) -> Value {
    let usage = usage(r);
    match shape {
        Shape::Chat => json!({
            "id": format!("chatcmpl-{}", r.batch_id), "object": "chat.completion", "created": now_s(),
            "model": r.model,
            "choices": [{"index": 0, "message": assistant_message(r), "finish_reason": finish(r)}],
            "usage": usage, "llmroute": extension(r),
        }),
        Shape::Completion => json!({
            "id": format!("cmpl-{}", r.batch_id), "object": "text_completion", "created": now_s(), "model": r.model,
            "choices": [{"index": 0, "text": r.answer, "logprobs": null, "finish_reason": finish(r)}],
            "usage": usage, "llmroute": extension(r),
        }),
        Shape::Responses => response_object(r, "completed", &r.answer),
    }
}

/// The reply's assistant message: its text, and its tool calls when it made any (content null
/// then, when there is no text, as OpenAI answers).
fn assistant_message(r: &Reply) -> Value {
    match &r.tool_calls {
        Some(calls) => json!({"role": "assistant",
            "content": if r.answer.is_empty() { Value::Null } else { json!(r.answer) }, "tool_calls": calls}),
        None => json!({"role": "assistant", "content": r.answer}),
    }
}

/// Tool calls as one streamed delta: each call with its `index`.
fn tool_call_delta(calls: &Value) -> Value {
    let calls: Vec<Value> = calls
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    c["index"] = json!(i);
                    c
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"tool_calls": calls})
}

/// A `/v1/responses` response object (`status` completed or in_progress).
fn response_object(r: &Reply, status: &str, text: &str) -> Value {
    let content = if text.is_empty() && status != "completed" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({
        "id": format!("resp_{}", r.batch_id), "object": "response", "created_at": now_s(), "status": status,
        "model": r.model, "error": null, "incomplete_details": null, "instructions": null,
        "output": [{"type": "message", "id": format!("msg_{}", r.batch_id), "status": status, "role": "assistant",
                    "content": content}],
        "parallel_tool_calls": false, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                  "total_tokens": r.input_tokens + r.output_tokens,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        "llmroute": extension(r),
    })
}

async fn chat(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&ctx, &headers, parse_chat(&ctx.api.shared.live(), &body, bearer(&headers)), Shape::Chat).await
}

async fn completions(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&ctx, &headers, parse_completion(&ctx.api.shared.live(), &body, bearer(&headers)), Shape::Completion).await
}

async fn responses(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&ctx, &headers, parse_responses(&ctx.api.shared.live(), &body, bearer(&headers)), Shape::Responses).await
}

#[derive(Deserialize)]
struct CompletionBody {
    model: Option<String>,
    prompt: Option<Value>,
    max_tokens: Option<i64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    llmroute: Option<Extensions>,
}

/// A `POST /v1/completions` body: the prompt (a string, or a list of one) is routed as one user
/// turn.
fn parse_completion(live: &Live, body: &[u8], key: Option<String>) -> Result<(RouteInput, bool), RouterError> {
    let b: CompletionBody = serde_json::from_slice(body).map_err(|e| RouterError::bad("(body)", e.to_string()))?;
    let prompt = match b.prompt {
        Some(Value::String(s)) => s,
        Some(Value::Array(v)) if v.len() == 1 && v[0].is_string() => v[0].as_str().unwrap_or_default().to_string(),
        Some(Value::Array(_)) => {
            return Err(RouterError::bad("prompt", "one prompt per call (a string or a list of one)"))
        }
        _ => return Err(RouterError::bad("prompt", "missing: a string")),
    };
    let messages = vec![ChatMessage { role: "user".into(), content: prompt }];
    Ok((route_input(live, b.model, messages, b.max_tokens, b.llmroute, key)?, b.stream))
}

#[derive(Deserialize)]
struct ResponsesBody {
    model: Option<String>,
    input: Option<Value>,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    llmroute: Option<Extensions>,
}

/// A `POST /v1/responses` body (minimal): `input` is a string or a list of `{role, content}`
/// turns (content a string or `input_text` parts); `instructions` becomes a system turn.
fn parse_responses(live: &Live, body: &[u8], key: Option<String>) -> Result<(RouteInput, bool), RouterError> {
    let b: ResponsesBody = serde_json::from_slice(body).map_err(|e| RouterError::bad("(body)", e.to_string()))?;
    let mut messages = Vec::new();
    if let Some(sys) = b.instructions {
        messages.push(ChatMessage { role: "system".into(), content: sys });
    }
    match b.input {
        Some(Value::String(s)) => messages.push(ChatMessage { role: "user".into(), content: s }),
        Some(Value::Array(turns)) => {
            for (i, t) in turns.iter().enumerate() {
                let role = t.get("role").and_then(Value::as_str).unwrap_or("user").to_string();
                let content = t.get("content").and_then(content_text).ok_or_else(|| {
                    RouterError::bad(format!("input[{i}].content"), "expected a string or text parts")
                })?;
                messages.push(ChatMessage { role, content });
            }
        }
        _ => return Err(RouterError::bad("input", "missing: a string or a list of turns")),
    }
    Ok((route_input(live, b.model, messages, b.max_output_tokens, b.llmroute, key)?, b.stream))
}

/// Answers a parsed call in `shape`, whole or as server-sent events (a call that did not parse
/// gets its error); every answer carries a fresh request id.
async fn answer(
    ctx: &Ctx,
    headers: &HeaderMap,
    parsed: Result<(RouteInput, bool), RouterError>,
    shape: Shape,
) -> Response {
    // The call's request id: its header, and (when it is answered) the id feedback names.
    let id = &crate::requests::new_request_id();
    let (mut input, stream) = match parsed {
        Ok(v) => v,
        Err(e) => return with_headers(error(e), id, None, None),
    };
    input.traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(Remote::parse);
    input.request_id = id.clone();
    if !stream {
        return match ctx.api.route(input, None).await {
            Ok(r) => with_headers(Json(full_body(shape, &r)).into_response(), id, Some(&r.model), Some(r.cost_usd)),
            Err(e) => with_headers(error(e), id, None, None),
        };
    }
    let (dtx, drx) = oneshot::channel();
    let (ptx, mut prx) = mpsc::channel::<String>(64);
    let pending = match ctx.api.submit(input, None, Some(StreamSink { decision: dtx, deltas: ptx })).await {
        Ok(p) => p,
        Err(e) => return with_headers(error(e), id, None, None),
    };
    // The decision comes before the first byte: its model goes in the headers, and a call that
    // fails before it is decided gets a plain error answer, not an event stream.
    let start = match drx.await {
        Ok(start) => start,
        Err(_) => {
            let e = match pending.wait().await {
                Err(e) => e,
                Ok(_) => RouterError::Internal("a streamed call ended without its decision".into()),
            };
            return with_headers(error(e), id, None, None);
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let model = start.model.clone();
    tokio::spawn(async move {
        let send = |v: Value, name: Option<&'static str>| {
            let mut ev = Event::default().data(v.to_string());
            if let Some(n) = name {
                ev = ev.event(n);
            }
            tx.send(Ok(ev))
        };
        let created = now_s();
        let chunk = |delta: &str, fin: Value| match shape {
            Shape::Chat => json!({"id": format!("chatcmpl-{}", start.batch_id), "object": "chat.completion.chunk",
                "created": created, "model": start.model,
                "choices": [{"index": 0, "delta": if fin.is_null() { json!({"content": delta}) } else { json!({}) },
                             "finish_reason": fin}]}),
            Shape::Completion => json!({"id": format!("cmpl-{}", start.batch_id), "object": "text_completion",
                "created": created, "model": start.model,
                "choices": [{"index": 0, "text": delta, "logprobs": null, "finish_reason": fin}]}),
            Shape::Responses => {
                json!({"type": "response.output_text.delta", "item_id": format!("msg_{}", start.batch_id),
                "output_index": 0, "content_index": 0, "delta": delta})
            }
        };
        let mut seq = 0u64;
        let mut numbered = |mut v: Value| {
            if shape == Shape::Responses {
                v["sequence_number"] = json!(seq);
                seq += 1;
            }
            v
        };
        match shape {
            Shape::Chat => {
                let c = json!({"id": format!("chatcmpl-{}", start.batch_id), "object": "chat.completion.chunk",
                    "created": created, "model": start.model,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
                let _ = send(c, None).await;
            }
            Shape::Completion => {}
            Shape::Responses => {
                let v = numbered(
                    json!({"type": "response.created", "response": response_object(&start, "in_progress", "")}),
                );
                let _ = send(v, Some("response.created")).await;
            }
        }
        while let Some(piece) = prx.recv().await {
            let v = numbered(chunk(&piece, Value::Null));
            let name = (shape == Shape::Responses).then_some("response.output_text.delta");
            let _ = send(v, name).await;
        }
        match pending.wait().await {
            Ok(r) => {
                let (v, name) = match shape {
                    Shape::Responses => (
                        numbered(
                            json!({"type": "response.completed", "response": response_object(&r, "completed", &r.answer)}),
                        ),
                        Some("response.completed"),
                    ),
                    _ => {
                        if let (Shape::Chat, Some(calls)) = (shape, &r.tool_calls) {
                            let mut c = chunk("", Value::Null);
                            c["choices"][0]["delta"] = tool_call_delta(calls);
                            let _ = send(c, None).await;
                        }
                        let mut c = chunk("", json!(finish(&r)));
                        c["model"] = json!(r.model);
                        c["usage"] = usage(&r);
                        c["llmroute"] = extension(&r);
                        (c, None)
                    }
                };
                let _ = send(v, name).await;
            }
            Err(e) => {
                let name = (shape == Shape::Responses).then_some("error");
                let _ = send(e.http_body(), name).await;
            }
        }
        if shape != Shape::Responses {
            let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
        }
    });
    with_headers(Sse::new(ReceiverStream::new(rx)).into_response(), id, Some(&model), None)
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
