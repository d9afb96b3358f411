//! Sends questions to the live OpenAI-compatible servers of a catalog, grades the answers and
//! turns them into routing records (score, tokens, latency and cost per model).
//!
//! One worker thread per (model, slot) pulls questions in order; a failed request is retried
//! (`retries`) and, if it still fails, that model's outcome is left out of the question's record
//! (and counted). Progress goes to a callback once a second.

use super::questions::Question;
use crate::catalog::ModelEntry;
use crate::error::{Error, Result};
use crate::records::{Outcome, Record};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CollectOptions {
    pub max_tokens: u32,
    pub timeout: Duration,
    pub retries: u32,
    /// Concurrent requests per model.
    pub concurrency: usize,
    /// Stop sequences sent with every request (e.g. a base model's runaway chat markers).
    pub stop: Vec<String>,
}

/// One answer from a server.
#[derive(Debug, Clone)]
pub struct Answer {
    pub text: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub latency_ms: f64,
    /// The reply's `model` when it is not the name asked for: the model a router (`model: auto`
    /// on llmroute's facade) chose.
    pub served_by: Option<String>,
    /// The cost the server reported in `x-llmroute-cost-usd` (llmroute's facade), USD.
    pub reported_cost_usd: Option<f64>,
}

/// Per-model totals.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModelSummary {
    pub model: String,
    pub answered: usize,
    pub failed: usize,
    pub accuracy: f64,
    pub mean_output_tokens: f64,
    pub mean_latency_ms: f64,
    pub cost_usd: f64,
    /// First failure message, if any.
    pub first_error: Option<String>,
}

/// A graded answer, for the audit file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Graded {
    pub id: String,
    pub model: String,
    pub answer: String,
    pub reference: String,
    pub score: f64,
    pub output_tokens: u32,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_cost_usd: Option<f64>,
}

/// One model's answer to one question: not yet asked, answered, or failed (why).
type Slot = Option<std::result::Result<Answer, String>>;

/// Progress: (answers done, failed, total).
pub type Progress<'a> = &'a (dyn Fn(usize, usize, usize) + Sync);

fn chat_url(base: &str) -> String {
    let b = base.trim_end_matches('/');
    format!("{}/v1/chat/completions", b.strip_suffix("/v1").unwrap_or(b))
}

/// Asks one question (temperature 0).
pub fn ask(
    client: &reqwest::blocking::Client,
    model: &ModelEntry,
    prompt: &str,
    opts: &CollectOptions,
) -> std::result::Result<Answer, String> {
    let mut body = serde_json::json!({
        "model": model.name,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": opts.max_tokens,
        "temperature": 0.0,
        "stream": false,
    });
    if !opts.stop.is_empty() {
        body["stop"] = serde_json::json!(opts.stop);
    }
    let t0 = Instant::now();
    let resp = client
        .post(chat_url(&model.backend))
        .timeout(opts.timeout)
        .json(&body)
        .send()
        .map_err(|e| format!("{}: {e}", model.backend))?;
    let status = resp.status();
    let reported_cost_usd = resp
        .headers()
        .get("x-llmroute-cost-usd")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|c| c.is_finite() && *c >= 0.0);
    let text = resp.text().map_err(|e| format!("{}: reading the reply: {e}", model.backend))?;
    let latency_ms = t0.elapsed().as_secs_f64() * 1e3;
    if !status.is_success() {
        return Err(format!("{}: HTTP {status}: {}", model.backend, text.chars().take(200).collect::<String>()));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: reply is not JSON: {e}", model.backend))?;
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| format!("{}: reply has no choices[0].message.content", model.backend))?
        .to_string();
    let usage = |k: &str| v["usage"][k].as_u64().map(|x| x as u32);
    Ok(Answer {
        input_tokens: usage("prompt_tokens").unwrap_or_else(|| crate::estimate_tokens(prompt)),
        output_tokens: usage("completion_tokens").unwrap_or_else(|| crate::estimate_tokens(&content)),
        text: content,
        latency_ms,
        served_by: v["model"].as_str().filter(|m| *m != model.name).map(str::to_string),
        reported_cost_usd,
    })
}

/// Collects every model's graded answer to every question. Records keep the questions' order;
/// a question no model answered is left out.
pub fn collect(
    models: &[ModelEntry],
    questions: &[Question],
    opts: &CollectOptions,
    progress: Progress,
) -> Result<(Vec<Record>, Vec<ModelSummary>, Vec<Graded>)> {
    if models.is_empty() {
        return Err(Error::Invalid("no model with an HTTP backend to collect from".into()));
    }
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(opts.concurrency.max(1))
        .build()
        .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
    let total = models.len() * questions.len();
    let (done, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    // results[model][question]
    let results: Vec<Mutex<Vec<Slot>>> = models.iter().map(|_| Mutex::new(vec![None; questions.len()])).collect();
    let next: Vec<AtomicUsize> = models.iter().map(|_| AtomicUsize::new(0)).collect();
    let finished = AtomicUsize::new(0);
    let workers = models.len() * opts.concurrency.max(1);
    std::thread::scope(|s| {
        for (mi, model) in models.iter().enumerate() {
            for _ in 0..opts.concurrency.max(1) {
                let (client, results, next, done, failed, finished) =
                    (&client, &results, &next, &done, &failed, &finished);
                s.spawn(move || {
                    loop {
                        let qi = next[mi].fetch_add(1, Ordering::Relaxed);
                        let Some(q) = questions.get(qi) else { break };
                        let mut r = ask(client, model, &q.prompt, opts);
                        for _ in 0..opts.retries {
                            if r.is_ok() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(500));
                            r = ask(client, model, &q.prompt, opts);
                        }
                        if r.is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Ok(mut g) = results[mi].lock() {
                            g[qi] = Some(r);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    finished.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
        while finished.load(Ordering::Relaxed) < workers {
            std::thread::sleep(Duration::from_millis(200));
            progress(done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), total);
        }
    });
    progress(done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), total);

    let answers: Vec<Vec<Slot>> =
        results.into_iter().map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner())).collect();
    let mut records = Vec::new();
    let mut graded = Vec::new();
    let mut summary: Vec<ModelSummary> =
        models.iter().map(|m| ModelSummary { model: m.name.clone(), ..Default::default() }).collect();
    for (qi, q) in questions.iter().enumerate() {
        let mut outcomes = BTreeMap::new();
        for (mi, model) in models.iter().enumerate() {
            let sm = &mut summary[mi];
            match &answers[mi][qi] {
                Some(Ok(a)) => {
                    let score = q.grader.grade(&a.text, &q.answer);
                    let cost = model.cost(a.input_tokens as f64, a.output_tokens as f64);
                    sm.answered += 1;
                    sm.accuracy += score;
                    sm.mean_output_tokens += a.output_tokens as f64;
                    sm.mean_latency_ms += a.latency_ms;
                    sm.cost_usd += cost;
                    graded.push(Graded {
                        id: q.id.clone(),
                        model: model.name.clone(),
                        answer: a.text.clone(),
                        reference: q.answer.clone(),
                        score,
                        output_tokens: a.output_tokens,
                        latency_ms: (a.latency_ms * 10.0).round() / 10.0,
                        served_by: a.served_by.clone(),
                        reported_cost_usd: a.reported_cost_usd,
                    });
                    outcomes.insert(
                        model.name.clone(),
                        Outcome {
                            score,
                            cost_usd: Some(cost),
                            input_tokens: Some(a.input_tokens),
                            output_tokens: Some(a.output_tokens),
                            latency_ms: Some((a.latency_ms * 10.0).round() / 10.0),
                        },
                    );
                }
                Some(Err(e)) => {
                    sm.failed += 1;
                    sm.first_error.get_or_insert_with(|| e.clone());
                }
                None => sm.failed += 1,
            }
        }
        if !outcomes.is_empty() {
            records.push(Record { id: q.id.clone(), task: q.task.clone(), prompt: q.prompt.clone(), outcomes });
        }
    }
    for sm in &mut summary {
        let n = sm.answered.max(1) as f64;
        sm.accuracy /= n;
        sm.mean_output_tokens /= n;
        sm.mean_latency_ms /= n;
    }
    Ok((records, summary, graded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_url_accepts_either_base() {
        assert_eq!(chat_url("http://h:1"), "http://h:1/v1/chat/completions");
        assert_eq!(chat_url("http://h:1/v1/"), "http://h:1/v1/chat/completions");
    }

    #[test]
    fn unreachable_server_is_a_counted_failure_not_a_panic() {
        let entry = ModelEntry {
            name: "m".into(),
            backend: "http://127.0.0.1:9".into(),
            price_in_per_mtok: 1.0,
            price_out_per_mtok: 1.0,
            price_source: None,
            max_concurrency: 1,
            kv_tokens: None,
            default_output_tokens: 16,
            parent: None,
            recipe: None,
            card: None,
            quality_ratio: None,
            capabilities: Default::default(),
            context_tokens: None,
        };
        let q = Question {
            id: "1".into(),
            task: None,
            prompt: "2+2?".into(),
            answer: "4".into(),
            grader: super::super::grade::Grader::Number,
        };
        let opts =
            CollectOptions { max_tokens: 8, timeout: Duration::from_secs(2), retries: 0, concurrency: 1, stop: vec![] };
        let (records, summary, _) = collect(&[entry], &[q], &opts, &|_, _, _| {}).unwrap();
        assert!(records.is_empty());
        assert_eq!(summary[0].failed, 1);
        assert!(summary[0].first_error.is_some());
    }
}
