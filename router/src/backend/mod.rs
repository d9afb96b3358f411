//! Model backends: an OpenAI-compatible HTTP server (vLLM, llama.cpp server, ...) or `replay`,
//! which answers from the routing records with a latency model.

mod openai;
mod replay;

pub use openai::OpenAi;
pub use replay::{Replay, ReplayData};

use crate::Result;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct BackendRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    /// Limit for this attempt (the smaller of the backend timeout and the call's remaining time).
    pub timeout: Duration,
    /// What an OpenAI-shaped call carries beyond the router's own fields, forwarded as is to
    /// OpenAI-compatible backends (replay answers from the text alone).
    pub passthrough: Option<std::sync::Arc<Passthrough>>,
    /// W3C `traceparent` of the router's backend-call span (tracing on).
    pub traceparent: Option<String>,
}

/// The parts of an OpenAI chat call the router does not interpret: the messages as sent (tool
/// calls, tool results, content parts) and every other body field (tools, tool_choice,
/// temperature, top_p, stop, seed, response_format, logprobs, n, user, ...).
#[derive(Debug, Clone, Default)]
pub struct Passthrough {
    pub messages: Vec<serde_json::Value>,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Passthrough {
    /// The call offers tools (its answer may be tool calls).
    pub fn has_tools(&self) -> bool {
        self.fields.get("tools").and_then(|t| t.as_array()).is_some_and(|t| !t.is_empty())
    }

    /// Bytes of prompt the backend sees beyond the messages' text: the tools' JSON schemas and
    /// the assistant turns' tool calls (a chat template writes both into the prompt).
    pub fn extra_prompt_bytes(&self) -> usize {
        let json_len = |v: &serde_json::Value| serde_json::to_string(v).map_or(0, |s| s.len());
        let tools = self.fields.get("tools").map_or(0, json_len);
        let calls: usize = self.messages.iter().filter_map(|m| m.get("tool_calls")).map(json_len).sum();
        tools + calls
    }
}

#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub text: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub finish_reason: String,
    pub ttft: Duration,
    pub total: Duration,
    /// The assistant's tool calls (OpenAI `message.tool_calls`), when it made any.
    pub tool_calls: Option<serde_json::Value>,
}

pub enum Backend {
    OpenAi(OpenAi),
    Replay(Replay),
}

impl Backend {
    /// Runs one completion on `model`. With `deltas`, the answer is streamed into it piece by
    /// piece as it arrives (and the returned completion still holds the whole text).
    pub async fn complete(
        &self,
        model: &str,
        req: &BackendRequest,
        deltas: Option<&mpsc::Sender<String>>,
    ) -> Result<Completion> {
        match self {
            Backend::OpenAi(b) => b.complete(model, req, deltas).await,
            Backend::Replay(b) => b.complete(model, req, deltas).await,
        }
    }

    /// Does the server answer its health endpoint?
    pub async fn healthy(&self) -> bool {
        match self {
            Backend::OpenAi(b) => b.healthy().await,
            Backend::Replay(_) => true,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::OpenAi(b) => b.base_url().to_string(),
            Backend::Replay(_) => "replay".into(),
        }
    }
}

/// The prompt as one string (for the estimator and the replay lookup): the user turns joined.
pub fn prompt_text(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    for m in messages.iter().filter(|m| m.role != "assistant") {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&m.content);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The tools' schemas and earlier tool calls count as prompt (found by the live tool-call
    /// test: the tenant's reservation was below what the call realized).
    #[test]
    fn tools_and_tool_calls_are_prompt_bytes() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
        let call = json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]);
        let mut fields = serde_json::Map::new();
        fields.insert("tools".into(), tools.clone());
        let p = Passthrough {
            messages: vec![json!({"role": "user", "content": "hi"}), json!({"role": "assistant", "tool_calls": call})],
            fields,
        };
        assert!(p.has_tools());
        assert_eq!(p.extra_prompt_bytes(), tools.to_string().len() + call.to_string().len());
        assert_eq!(Passthrough { messages: vec![], fields: Default::default() }.extra_prompt_bytes(), 0);
    }
}
