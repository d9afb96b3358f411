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
}

#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub text: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub finish_reason: String,
    pub ttft: Duration,
    pub total: Duration,
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
