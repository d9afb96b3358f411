//! A call's input checked into a `Query` (every bad field gets a typed error naming it), and the
//! reply the router sends back. Shared by the gRPC service and the HTTP facade.

use super::backend::{prompt_text, ChatMessage, Passthrough};
use super::budgets::Reservation;
use super::config::Tenant;
use super::state::Live;
use crate::otel::{Parent, Remote, Span};
use crate::{Result, RouterError};
use estimator::catalog::Capability;
use estimator::Prediction;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// A call as it arrives (before validation), from gRPC or HTTP.
#[derive(Debug, Clone, Default)]
pub struct RouteInput {
    pub tenant: String,
    pub api_key: Option<String>,
    pub prompt: String,
    pub messages: Vec<ChatMessage>,
    pub task: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub allowed_models: Vec<String>,
    pub dispatch: bool,
    pub max_cost_usd: Option<f64>,
    /// OpenAI fields and raw messages to forward (HTTP facade); None for gRPC calls.
    pub passthrough: Option<Arc<Passthrough>>,
    /// Capabilities the call needs (tools offered, image parts, a JSON schema response).
    pub needs: BTreeSet<Capability>,
    /// The caller's W3C `traceparent` (gRPC metadata or HTTP header), when it sent a valid one.
    pub traceparent: Option<Remote>,
    /// The call's request id (the HTTP facade makes it first, for its header); empty: the router
    /// makes one.
    pub request_id: String,
}

/// Predicted quality and cost of the chosen model.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Predicted {
    pub mu: f64,
    pub sigma: f64,
    pub output_tokens: f64,
    pub cost_usd: f64,
}

/// What the router answers for one query.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Reply {
    /// Unique per query: what feedback names.
    pub request_id: String,
    pub model: String,
    pub answer: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cost_usd: f64,
    pub predicted: Predicted,
    pub batch_id: u64,
    pub batch_size: u32,
    /// The batch's budget from the ledger.
    pub batch_budget_usd: f64,
    pub assigner: String,
    pub solve_status: String,
    pub fallback: bool,
    pub failed_models: Vec<String>,
    pub overdraft: bool,
    /// The batch's realized cost had passed its grant when this answer was charged.
    pub batch_over_budget: bool,
    pub dispatched: bool,
    pub finish_reason: String,
    /// The assistant's tool calls (OpenAI shape), when it made any.
    pub tool_calls: Option<serde_json::Value>,
    pub latency_ms: f64,
}

/// Streaming calls get the decision first, then the answer's pieces.
pub struct StreamSink {
    pub decision: oneshot::Sender<Reply>,
    pub deltas: mpsc::Sender<String>,
}

/// A validated query waiting for its batch.
pub struct Query {
    pub live: Arc<Live>,
    pub tenant: String,
    pub messages: Vec<ChatMessage>,
    pub task: Option<String>,
    pub max_tokens: u32,
    pub input_tokens: u32,
    /// Per live model: may this query go there (tenant policy ∩ request list).
    pub allowed: Vec<bool>,
    pub dispatch: bool,
    pub cost_cap: Option<f64>,
    pub prediction: Prediction,
    pub deadline: Instant,
    pub enqueued: Instant,
    pub stream: Option<StreamSink>,
    pub reply: Option<oneshot::Sender<Result<Reply>>>,
    /// An upper bound of what the call can cost on any allowed model (prompt bytes as input
    /// tokens, `max_tokens` output tokens): what is reserved from the tenant's budget.
    pub cost_bound: f64,
    /// The tenant's budget reserved for this call (dispatched calls only).
    pub reservation: Option<Reservation>,
    pub passthrough: Option<Arc<Passthrough>>,
    /// The call's span, for the spans of its decision and dispatch.
    pub trace: Parent,
    /// `llmroute.batch_wait`: open from the queue to the decision.
    pub waiting: Span,
    pub request_id: String,
    /// The prompt's hash (kept with the answer for feedback).
    pub prompt_hash: u64,
    /// The prompt's text, kept with the answer only with `feedback.log_prompts` (for the log that
    /// `estimator train --feedback` reads).
    pub prompt: Option<String>,
    /// Its heaviest TF-IDF features (`feedback.online`; empty when off).
    pub features: estimator::features::SparseVec,
    /// The trained estimator's μ per catalog model (priors applied), before feedback moved it.
    pub base_mu: Vec<f64>,
}

/// What a chat template that offers tools writes around them (instructions, tags), in tokens: part
/// of a tool call's input bound (and half of it of its estimate).
const TOOL_TEMPLATE_TOKENS: usize = 256;

/// Finds the caller's tenant from its API key and/or tenant name.
pub fn resolve_tenant<'a>(live: &'a Live, tenant: &str, api_key: Option<&str>) -> Result<&'a Tenant> {
    match api_key.filter(|k| !k.is_empty()) {
        Some(key) => {
            let t = live.tenant_by_key(key).ok_or_else(|| RouterError::Unauthenticated("unknown API key".into()))?;
            if !tenant.is_empty() && tenant != t.name {
                return Err(RouterError::PermissionDenied(format!(
                    "field `tenant`: the API key belongs to another tenant than `{tenant}`"
                )));
            }
            Ok(t)
        }
        None => {
            let name = if tenant.is_empty() { "default" } else { tenant };
            let t = live.tenant(name).ok_or_else(|| {
                RouterError::Unauthenticated(format!("field `tenant`: unknown tenant `{name}` (and no API key given)"))
            })?;
            if t.key_sha256.is_some() {
                return Err(RouterError::Unauthenticated(format!(
                    "tenant `{name}` needs an API key (metadata `authorization: Bearer <key>`)"
                )));
            }
            Ok(t)
        }
    }
}

/// Checks a call, names the first bad field (prefixed by `at`, e.g. `queries[3].`), and predicts
/// quality and cost for it. The tenant's budget is reserved after (`Api`), for `cost_bound`.
pub fn validate(live: &Arc<Live>, input: RouteInput, at: &str, tenant: &Tenant, deadline: Instant) -> Result<Query> {
    let cfg = &live.config;
    let given_messages = !input.messages.is_empty();
    let f = |k: &str| format!("{at}{k}");
    let messages = if !input.messages.is_empty() {
        if !input.prompt.is_empty() {
            return Err(RouterError::bad(f("prompt"), "give `prompt` or `messages`, not both"));
        }
        for (i, m) in input.messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(RouterError::bad(
                    f(&format!("messages[{i}].role")),
                    format!(
                        "`{}`: expected system, developer, user, assistant or tool",
                        m.role.chars().take(20).collect::<String>()
                    ),
                ));
            }
        }
        if !input.messages.iter().any(|m| m.role == "user" && !m.content.trim().is_empty()) {
            return Err(RouterError::bad(f("messages"), "no non-empty user message"));
        }
        input.messages
    } else {
        if input.prompt.trim().is_empty() {
            return Err(RouterError::bad(f("prompt"), "empty: give a prompt or messages"));
        }
        vec![ChatMessage { role: "user".into(), content: input.prompt }]
    };
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    if chars > cfg.limits.max_prompt_chars {
        return Err(RouterError::bad(
            f(if given_messages { "messages" } else { "prompt" }),
            format!("{chars} characters, over the limit of {}", cfg.limits.max_prompt_chars),
        ));
    }
    let max_tokens = match input.max_output_tokens {
        None => cfg.limits.default_output_tokens,
        Some(0) => return Err(RouterError::bad(f("max_output_tokens"), "must be at least 1")),
        Some(n) if n > cfg.limits.max_output_tokens => {
            return Err(RouterError::bad(
                f("max_output_tokens"),
                format!("{n} is over the limit of {}", cfg.limits.max_output_tokens),
            ))
        }
        Some(n) => n,
    };
    if let Some(c) = input.max_cost_usd {
        if !(c.is_finite() && c >= 0.0) {
            return Err(RouterError::bad(f("max_cost_usd"), format!("{c} is not a non-negative number")));
        }
    }
    if let Some(t) = &input.task {
        if t.len() > 200 {
            return Err(RouterError::bad(f("task"), "longer than 200 bytes"));
        }
    }
    let mut allowed: Vec<bool> = live
        .models
        .iter()
        .map(|m| tenant.allowed_models.as_ref().is_none_or(|list| list.contains(&m.entry.name)))
        .collect();
    if !input.allowed_models.is_empty() {
        let mut req = vec![false; live.models.len()];
        for (k, name) in input.allowed_models.iter().enumerate() {
            let j = live.model_index(name).ok_or_else(|| {
                RouterError::bad(f(&format!("allowed_models[{k}]")), format!("unknown model `{name}`"))
            })?;
            if !allowed[j] {
                return Err(RouterError::PermissionDenied(format!(
                    "field `{}`: tenant `{}` may not use model `{name}`",
                    f(&format!("allowed_models[{k}]")),
                    tenant.name
                )));
            }
            req[j] = true;
        }
        allowed = req;
    }
    let prompt = prompt_text(&messages);
    // Tools and tool calls are prompt too; a template that offers tools adds its instructions.
    let (extra, tool_text) = input
        .passthrough
        .as_deref()
        .map_or((0, 0), |p| (p.extra_prompt_bytes(), if p.has_tools() { TOOL_TEMPLATE_TOKENS } else { 0 }));
    // Every tokenizer here spends at most one token per byte, plus a few per message for the chat
    // template.
    let bound_in = (prompt.len() + extra + tool_text + 8 * messages.len() + 32) as f64;
    let input_tokens = estimator::estimate_tokens(&prompt) + (extra.div_ceil(4) + tool_text / 2) as u32;
    serves(live, &mut allowed, &input.needs, input_tokens as u64 + max_tokens as u64, &f)?;
    let cost_bound = live
        .models
        .iter()
        .zip(&allowed)
        .filter(|(_, &a)| a)
        .map(|(m, _)| m.entry.cost(bound_in, max_tokens as f64))
        .fold(0.0, f64::max);
    let (prediction, features) = live.predict_and_features(&prompt, input.task.as_deref());
    let base_mu = prediction.mu.clone();
    let now = Instant::now();
    Ok(Query {
        live: live.clone(),
        tenant: tenant.name.clone(),
        input_tokens,
        messages,
        task: input.task,
        max_tokens,
        allowed,
        dispatch: input.dispatch,
        cost_cap: input.max_cost_usd,
        prediction,
        deadline,
        enqueued: now,
        stream: None,
        reply: None,
        cost_bound,
        reservation: None,
        passthrough: input.passthrough,
        trace: Parent::default(),
        waiting: Span::none(),
        request_id: if input.request_id.is_empty() { crate::requests::new_request_id() } else { input.request_id },
        prompt_hash: crate::requests::prompt_hash(&prompt),
        prompt: live.config.feedback.log_prompts.then(|| prompt.clone()),
        features: if live.config.feedback.online { features.to_vec() } else { Vec::new() },
        base_mu,
    })
}

/// Keeps only the allowed models that can serve the call: every capability it needs, and a
/// context window for its prompt and output (`tokens`). When none is left, the call is refused
/// naming what is missing.
fn serves(
    live: &Live,
    allowed: &mut [bool],
    needs: &BTreeSet<Capability>,
    tokens: u64,
    f: &dyn Fn(&str) -> String,
) -> Result<()> {
    let before: Vec<usize> = (0..allowed.len()).filter(|&j| allowed[j]).collect();
    for &j in &before {
        let e = &live.models[j].entry;
        allowed[j] = needs.is_subset(&e.capabilities) && e.context_tokens.is_none_or(|c| tokens <= c);
    }
    if allowed.iter().any(|&a| a) {
        return Ok(());
    }
    let capable: Vec<usize> =
        before.iter().copied().filter(|&j| needs.is_subset(&live.models[j].entry.capabilities)).collect();
    if capable.is_empty() {
        let missing: Vec<&str> = needs
            .iter()
            .filter(|c| !before.iter().any(|&j| live.models[j].entry.capabilities.contains(c)))
            .map(|c| c.name())
            .collect();
        let field = match needs.iter().next() {
            Some(Capability::Tools) => "tools",
            Some(Capability::JsonSchema) => "response_format",
            _ => "messages",
        };
        return Err(RouterError::bad(
            f(field),
            format!(
                "needs {} ({}), which no model this call may use declares in the catalog's `capabilities`",
                needs.iter().map(|c| c.name()).collect::<Vec<_>>().join(" + "),
                if missing.is_empty() {
                    "not all together".to_string()
                } else {
                    format!("missing: {}", missing.join(", "))
                }
            ),
        ));
    }
    let largest = capable.iter().filter_map(|&j| live.models[j].entry.context_tokens).max().unwrap_or(0);
    Err(RouterError::bad(
        f("max_tokens"),
        format!("{tokens} tokens (prompt + max_tokens) do not fit any model's context; the largest is {largest}"),
    ))
}

/// The capabilities a chat call needs: tools offered or tool turns in the conversation, image
/// content parts, a JSON-schema response format.
pub fn needs_of(rest: &serde_json::Map<String, Value>, messages: &[Value]) -> BTreeSet<Capability> {
    let mut needs = BTreeSet::new();
    let tools = rest.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if tools
        || messages
            .iter()
            .any(|m| m.get("role").and_then(Value::as_str) == Some("tool") || m.get("tool_calls").is_some())
    {
        needs.insert(Capability::Tools);
    }
    let image = |p: &Value| matches!(p.get("type").and_then(Value::as_str), Some("image_url" | "input_image"));
    if messages.iter().any(|m| m.get("content").and_then(Value::as_array).is_some_and(|parts| parts.iter().any(image)))
    {
        needs.insert(Capability::Vision);
    }
    if rest.get("response_format").and_then(|r| r.get("type")).and_then(Value::as_str) == Some("json_schema") {
        needs.insert(Capability::JsonSchema);
    }
    needs
}

/// OpenAI chat messages (JSON) → the router's text turns (the text parts of each content; the
/// raw messages themselves are what backends get). `at` prefixes field names in errors.
pub fn openai_messages(raw: &[Value], at: &str) -> Result<Vec<ChatMessage>> {
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| RouterError::bad(format!("{at}messages[{i}].role"), "missing"))?
            .to_string();
        let content = match m.get("content") {
            Some(Value::Null) | None => String::new(),
            Some(c) => content_text(c)
                .ok_or_else(|| RouterError::bad(format!("{at}messages[{i}].content"), "expected a string or parts"))?,
        };
        messages.push(ChatMessage { role, content });
    }
    Ok(messages)
}

/// The text of an OpenAI message content: the string itself, or the `text` of its parts joined
/// by newlines (other parts — images — carry no text). None for anything else.
pub fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"))
        }
        _ => None,
    }
}
