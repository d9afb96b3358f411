//! A scripted OpenAI-compatible backend served in the test process (axum on 127.0.0.1:0): per
//! model latency, failures and token counts, and what it saw — calls, the most calls in flight at
//! once, per model and in all. The router reaches it through its real HTTP backend.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one model's server does with a call.
#[derive(Debug, Clone)]
pub struct Script {
    pub latency: Duration,
    /// Answer HTTP 500 to this many calls first.
    pub fail_first: usize,
    pub output_tokens: u32,
    /// Send `usage` (a server that omits it bills nothing visible).
    pub usage: bool,
    /// Streamed answers: drop the connection after this many pieces (no `[DONE]`).
    pub break_after: Option<usize>,
    /// When the call offers tools, answer with a call of the first one (`finish_reason:
    /// tool_calls`).
    pub tool_call: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            latency: Duration::from_millis(20),
            fail_first: 0,
            output_tokens: 16,
            usage: true,
            break_after: None,
            tool_call: false,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub calls: usize,
    pub failed: usize,
    pub in_flight: usize,
    pub max_in_flight: usize,
}

#[derive(Default)]
struct Inner {
    scripts: BTreeMap<String, Script>,
    default: Script,
    seen: BTreeMap<String, Seen>,
    /// The last request body each model received.
    bodies: BTreeMap<String, Value>,
    /// The last `traceparent` header each model received.
    traceparents: BTreeMap<String, String>,
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone)]
pub struct Scripted {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Scripted {
    /// Starts the server; every model follows `default` unless `set` says otherwise.
    pub async fn start(default: Script) -> Scripted {
        let inner = Arc::new(Mutex::new(Inner { default, ..Inner::default() }));
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/health", get(|| async { "ok" }))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Scripted { url, inner }
    }

    pub fn set(&self, model: &str, s: Script) {
        self.inner.lock().unwrap().scripts.insert(model.to_string(), s);
    }

    pub fn seen(&self) -> BTreeMap<String, Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// The last request body `model` received.
    pub fn last_body(&self, model: &str) -> Option<Value> {
        self.inner.lock().unwrap().bodies.get(model).cloned()
    }

    /// The `traceparent` header of the last call `model` received (if it had one).
    pub fn last_traceparent(&self, model: &str) -> Option<String> {
        self.inner.lock().unwrap().traceparents.get(model).cloned()
    }

    /// The most calls in flight at once over all models.
    pub fn max_in_flight(&self) -> usize {
        self.inner.lock().unwrap().max_in_flight
    }
}

async fn complete(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let model = body["model"].as_str().unwrap_or("").to_string();
    let script = {
        let mut g = inner.lock().unwrap();
        match headers.get("traceparent").and_then(|v| v.to_str().ok()) {
            Some(tp) => g.traceparents.insert(model.clone(), tp.to_string()),
            None => g.traceparents.remove(&model),
        };
        let script = g.scripts.get(&model).cloned().unwrap_or_else(|| g.default.clone());
        g.in_flight += 1;
        g.max_in_flight = g.max_in_flight.max(g.in_flight);
        g.bodies.insert(model.clone(), body.clone());
        let s = g.seen.entry(model.clone()).or_default();
        s.calls += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        script
    };
    tokio::time::sleep(script.latency).await;
    let fail = {
        let mut g = inner.lock().unwrap();
        g.in_flight -= 1;
        let s = g.seen.entry(model.clone()).or_default();
        s.in_flight -= 1;
        let fail = s.failed < script.fail_first;
        if fail {
            s.failed += 1;
        }
        fail
    };
    if fail {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "scripted failure").into_response();
    }
    let tools = body["tools"].as_array().filter(|t| !t.is_empty());
    if let (true, Some(tools)) = (script.tool_call, tools) {
        let name = tools[0]["function"]["name"].as_str().unwrap_or("tool").to_string();
        return Json(json!({
            "id": "scripted", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": name, "arguments": "{\"city\": \"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 9},
        }))
        .into_response();
    }
    if body["stream"].as_bool() == Some(true) {
        return stream(model, script);
    }
    let text = vec!["tok"; script.output_tokens as usize].join(" ");
    let mut reply = json!({
        "id": "scripted", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    });
    if script.usage {
        reply["usage"] = json!({"prompt_tokens": 10, "completion_tokens": script.output_tokens});
    }
    Json(reply).into_response()
}

/// An SSE answer: one piece per output token, the latency spread over them; `usage` and `[DONE]`
/// at the end, unless the script breaks the stream first.
fn stream(model: String, script: Script) -> axum::response::Response {
    let n = script.output_tokens.max(1) as usize;
    let gap = script.latency / n as u32;
    let events = futures_util::stream::unfold(0usize, move |k| {
        let model = model.clone();
        let script = script.clone();
        async move {
            if script.break_after.is_some_and(|b| k >= b) {
                // Ends the body early: the client sees a stream without [DONE].
                return None;
            }
            if k > n {
                return None;
            }
            tokio::time::sleep(gap).await;
            let data = if k < n {
                json!({"model": model, "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": null}]})
                    .to_string()
            } else {
                let mut last = json!({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                if script.usage {
                    last["usage"] = json!({"prompt_tokens": 10, "completion_tokens": n});
                }
                format!("{last}\n\ndata: [DONE]")
            };
            Some((Ok::<_, std::convert::Infallible>(format!("data: {data}\n\n")), k + 1))
        }
    });
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(events))
        .unwrap()
}
