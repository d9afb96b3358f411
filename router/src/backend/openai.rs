//! OpenAI-compatible `/v1/chat/completions` client: pooled connections, optional streaming (SSE).

use super::{BackendRequest, Completion};
use crate::{Result, RouterError};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub struct OpenAi {
    base: String,
    client: reqwest::Client,
}

impl OpenAi {
    /// `base` is the server's base URL, with or without a trailing `/v1`.
    pub fn new(base: &str, client: reqwest::Client) -> OpenAi {
        let base = base.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
        OpenAi { base, client }
    }

    /// The shared connection pool for all HTTP backends.
    pub fn pool() -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| RouterError::Internal(format!("HTTP client: {e}")))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn healthy(&self) -> bool {
        for path in ["/health", "/v1/models"] {
            let r = self.client.get(format!("{}{path}", self.base)).timeout(Duration::from_secs(2)).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
        }
        false
    }

    pub async fn complete(
        &self,
        model: &str,
        req: &BackendRequest,
        deltas: Option<&mpsc::Sender<String>>,
    ) -> Result<Completion> {
        let start = Instant::now();
        let fail = |what: String| RouterError::Unavailable(format!("{model} at {}: {what}", self.base));
        // A call that offers tools is answered whole (its tool calls come in one piece) and, when
        // the caller streams, sent on as one delta.
        let pass = req.passthrough.as_deref();
        let stream = deltas.is_some() && !pass.is_some_and(|p| p.has_tools());
        let mut body = match pass {
            Some(p) => Value::Object(p.fields.clone()),
            None => json!({}),
        };
        body["model"] = json!(model);
        body["messages"] = match pass {
            Some(p) => Value::Array(p.messages.clone()),
            None => json!(req.messages),
        };
        body["max_tokens"] = json!(req.max_tokens);
        body["stream"] = json!(stream);
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        let run = async {
            let mut post = self.client.post(format!("{}/v1/chat/completions", self.base)).json(&body);
            if let Some(tp) = &req.traceparent {
                post = post.header("traceparent", tp);
            }
            let resp = post.send().await.map_err(|e| fail(format!("request failed: {e}")))?;
            let status = resp.status();
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                return Err(fail(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>())));
            }
            match deltas.filter(|_| stream) {
                None => {
                    let v: Value = resp.json().await.map_err(|e| fail(format!("bad response body: {e}")))?;
                    let c = parse_full(&v, start).ok_or_else(|| fail("response has no choices[0].message".into()))?;
                    if let Some(tx) = deltas {
                        if !c.text.is_empty() {
                            let _ = tx.send(c.text.clone()).await;
                        }
                    }
                    Ok(c)
                }
                Some(tx) => read_stream(resp, tx, start).await.map_err(fail),
            }
        };
        match tokio::time::timeout(req.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(fail(format!("timed out after {} ms", req.timeout.as_millis()))),
        }
    }
}

fn parse_full(v: &Value, start: Instant) -> Option<Completion> {
    let choice = v.get("choices")?.get(0)?;
    let message = choice.get("message")?;
    let text = message.get("content").and_then(Value::as_str).unwrap_or_default().to_string();
    let tool_calls = message.get("tool_calls").filter(|t| t.as_array().is_some_and(|a| !a.is_empty())).cloned();
    let usage = v.get("usage");
    let tok = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0) as u32;
    let total = start.elapsed();
    Some(Completion {
        input_tokens: tok("prompt_tokens"),
        output_tokens: tok("completion_tokens"),
        finish_reason: choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop").to_string(),
        text,
        ttft: total,
        total,
        tool_calls,
    })
}

async fn read_stream(
    resp: reqwest::Response,
    tx: &mpsc::Sender<String>,
    start: Instant,
) -> std::result::Result<Completion, String> {
    let mut out = Completion::default();
    let mut chunks = 0u32;
    let mut buf: Vec<u8> = Vec::new();
    let mut body = resp.bytes_stream();
    let mut done = false;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| format!("stream broke: {e}"))?;
        buf.extend_from_slice(&piece);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim().strip_prefix("data:") else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| format!("bad stream event: {e}"))?;
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                out.input_tokens = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0) as u32;
                out.output_tokens = u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0) as u32;
            }
            let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else { continue };
            if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
                out.finish_reason = fr.to_string();
            }
            if let Some(text) = choice.get("delta").and_then(|d| d.get("content")).and_then(Value::as_str) {
                if text.is_empty() {
                    continue;
                }
                if chunks == 0 {
                    out.ttft = start.elapsed();
                }
                chunks += 1;
                out.text.push_str(text);
                // A caller that went away does not stop the generation being charged; keep reading.
                let _ = tx.send(text.to_string()).await;
            }
        }
    }
    if !done && out.finish_reason.is_empty() {
        return Err("stream ended without [DONE]".into());
    }
    if out.output_tokens == 0 {
        out.output_tokens = chunks;
    }
    if out.finish_reason.is_empty() {
        out.finish_reason = "stop".into();
    }
    out.total = start.elapsed();
    Ok(out)
}
