//! The `replay` backend: answers from the routing records — the record with the same prompt (or
//! the most similar one), its recorded correctness and token counts — after a latency model's
//! delay (time to first token + time per output token). No model runs; the embedded default.

use super::{prompt_text, BackendRequest, Completion};
use crate::Result;
use estimator::{Estimator, Record};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The records a replay backend answers from.
pub struct ReplayData {
    records: Vec<Record>,
    by_prompt: HashMap<String, usize>,
    /// Finds the most similar record when the prompt is new (trained on the same records).
    nearest: Option<Arc<Estimator>>,
}

impl ReplayData {
    pub fn new(records: Vec<Record>, nearest: Option<Arc<Estimator>>) -> ReplayData {
        let by_prompt = records.iter().enumerate().map(|(i, r)| (r.prompt.clone(), i)).collect();
        ReplayData { records, by_prompt, nearest }
    }

    fn lookup(&self, prompt: &str) -> Option<(&Record, bool)> {
        if let Some(&i) = self.by_prompt.get(prompt) {
            return Some((&self.records[i], true));
        }
        if let Some((i, _)) = self.nearest.as_ref().and_then(|e| e.nearest(prompt)) {
            return self.records.get(i).map(|r| (r, false));
        }
        // No shared feature with any record: a deterministic pick by hash.
        let h = crate::requests::prompt_hash(prompt);
        self.records.get(h as usize % self.records.len().max(1)).map(|r| (r, false))
    }
}

pub struct Replay {
    data: Arc<ReplayData>,
    /// Catalog model → the recorded model whose outcomes it replays.
    proxies: BTreeMap<String, String>,
    default_output_tokens: u32,
    ttft: Duration,
    per_token: Duration,
}

impl Replay {
    pub fn new(
        data: Arc<ReplayData>,
        proxies: BTreeMap<String, String>,
        default_output_tokens: u32,
        ttft: Duration,
        per_token: Duration,
    ) -> Replay {
        Replay { data, proxies, default_output_tokens, ttft, per_token }
    }

    pub async fn complete(
        &self,
        model: &str,
        req: &BackendRequest,
        deltas: Option<&mpsc::Sender<String>>,
    ) -> Result<Completion> {
        let start = Instant::now();
        let prompt = prompt_text(&req.messages);
        let recorded = self.proxies.get(model).map_or(model, String::as_str);
        let (text, outcome_tokens) = match self.data.lookup(&prompt) {
            Some((rec, exact)) => {
                let o = rec.outcomes.get(recorded);
                let verdict = match o.map(|o| o.score) {
                    Some(s) if s >= 0.5 => format!("recorded score {s:.2} (correct)"),
                    Some(s) => format!("recorded score {s:.2} (wrong)"),
                    None => "no recorded outcome".into(),
                };
                let how = if exact { "record" } else { "nearest record" };
                let task = rec.task.as_deref().unwrap_or("-");
                (
                    format!("[replay] {model} answering {how} {} (task {task}): {verdict}.", rec.id),
                    o.and_then(|o| o.output_tokens),
                )
            }
            None => (format!("[replay] {model}: no records to answer from."), None),
        };
        let output_tokens = outcome_tokens.unwrap_or(self.default_output_tokens).min(req.max_tokens).max(1);
        let input_tokens = estimator::estimate_tokens(&prompt);
        let finish_reason = if outcome_tokens.is_some_and(|t| t > req.max_tokens) { "length" } else { "stop" };
        let delay = self.ttft + self.per_token.mul_f64(output_tokens as f64);
        if delay > req.timeout {
            tokio::time::sleep(req.timeout).await;
            return Err(crate::RouterError::Unavailable(format!(
                "{model} (replay): timed out after {} ms",
                req.timeout.as_millis()
            )));
        }
        tokio::time::sleep(self.ttft).await;
        let ttft = start.elapsed();
        if let Some(tx) = deltas {
            let words: Vec<&str> = text.split_inclusive(' ').collect();
            let per_word = self.per_token.mul_f64(output_tokens as f64 / words.len().max(1) as f64);
            for w in words {
                tokio::time::sleep(per_word).await;
                let _ = tx.send(w.to_string()).await;
            }
        } else {
            tokio::time::sleep(self.per_token.mul_f64(output_tokens as f64)).await;
        }
        Ok(Completion {
            text,
            input_tokens,
            output_tokens,
            finish_reason: finish_reason.into(),
            ttft,
            total: start.elapsed(),
            tool_calls: None,
        })
    }
}
