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
