//! The router's feedback log as training data (`estimator train --feedback LOG`).
//!
//! Each line of the log (`feedback.log` in the router's config) is one scored answer: the model
//! that answered, the score in [0, 1], optionally the realized output tokens, and — with
//! `feedback.log_prompts` — the prompt's text and task. Lines are grouped by prompt (and task):
//! one query, the mean score of each model scored on it. A scored query names one model's outcome
//! (rarely more); a record needs every model's, so the others are filled with a trained
//! estimator's predictions for that query (`to_records`): the query then adds evidence about the
//! models that were scored and leaves the rest where the estimator already had them.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::knn::Prediction;
use crate::records::{Outcome, Record};
use std::collections::BTreeMap;
use std::path::Path;

/// One prompt's scores from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub prompt: String,
    pub task: Option<String>,
    /// Model → (sum of scores, count, sum of output tokens, count of lines that gave them).
    pub scores: BTreeMap<String, (f64, usize, f64, usize)>,
}

/// What `read_log` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    /// One entry per distinct (prompt, task), in the order first seen.
    pub queries: Vec<Scored>,
    /// Scores read (lines with a prompt).
    pub lines: usize,
    /// Lines without a prompt (written without `feedback.log_prompts`): not usable, counted.
    pub without_prompt: usize,
}

#[derive(serde::Deserialize)]
struct Line {
    model: String,
    score: f64,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

/// Reads a feedback log. A line that is not a feedback record (bad JSON, no model or score, a
/// score outside [0, 1]) is an error naming the file and line: a training set is never silently
/// shortened. Lines without a prompt are counted in `without_prompt`.
pub fn read_log(path: &Path) -> Result<Log> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut log = Log::default();
    let mut index: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let l: Line =
            serde_json::from_str(raw).map_err(|e| Error::Invalid(format!("{}: not a feedback line ({e})", at())))?;
        if !(l.score.is_finite() && (0.0..=1.0).contains(&l.score)) {
            return Err(Error::Invalid(format!("{}: score {} is not in [0, 1]", at(), l.score)));
        }
        let Some(prompt) = l.prompt.filter(|p| !p.is_empty()) else {
            log.without_prompt += 1;
            continue;
        };
        log.lines += 1;
        let key = (prompt, l.task);
        let q = *index.entry(key.clone()).or_insert_with(|| {
            log.queries.push(Scored { prompt: key.0.clone(), task: key.1.clone(), scores: BTreeMap::new() });
            log.queries.len() - 1
        });
        let s = log.queries[q].scores.entry(l.model).or_insert((0.0, 0, 0.0, 0));
        s.0 += l.score;
        s.1 += 1;
        if let Some(t) = l.output_tokens.filter(|t| t.is_finite() && *t >= 0.0) {
            s.2 += t;
            s.3 += 1;
        }
    }
    Ok(log)
}

/// What `to_records` made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converted {
    pub records: Vec<Record>,
    /// Outcomes from scores.
    pub observed: usize,
    /// Outcomes filled from the estimator's prediction.
    pub imputed: usize,
    /// Scores of models that are not among `models` (not trained on), by model.
    pub unknown_models: BTreeMap<String, usize>,
}

/// Turns the log's queries into records over `models`: a scored model's outcome is its mean score
/// (and mean output tokens when the log gave them), every other model's is `predict`'s μ, output
/// tokens and cost for the query. Queries with no score for any of `models` are left out (counted
/// in `unknown_models`).
pub fn to_records(
    log: &Log,
    models: &[String],
    catalog: Option<&Catalog>,
    predict: &dyn Fn(&str, Option<&str>) -> Prediction,
) -> Converted {
    let mut out = Converted::default();
    for q in &log.queries {
        for (m, s) in &q.scores {
            if !models.contains(m) {
                *out.unknown_models.entry(m.clone()).or_default() += s.1;
            }
        }
        if !models.iter().any(|m| q.scores.contains_key(m)) {
            continue;
        }
        let p = predict(&q.prompt, q.task.as_deref());
        let input = crate::estimate_tokens(&q.prompt);
        let mut outcomes = BTreeMap::new();
        for (j, m) in models.iter().enumerate() {
            let (score, tokens) = match q.scores.get(m) {
                Some(&(sum, n, tsum, tn)) => {
                    out.observed += 1;
                    (sum / n as f64, if tn > 0 { tsum / tn as f64 } else { p.output_tokens[j] })
                }
                None => {
                    out.imputed += 1;
                    (p.mu[j].clamp(0.0, 1.0), p.output_tokens[j])
                }
            };
            // The catalog's prices on the tokens when it lists the model, else the prediction's
            // cost scaled to the tokens.
            let cost = match catalog.and_then(|c| c.get(m)) {
                Some(e) => e.cost(input as f64, tokens),
                None if p.output_tokens[j] > 0.0 => p.cost[j] * tokens / p.output_tokens[j],
                None => p.cost[j],
            };
            outcomes.insert(
                m.clone(),
                Outcome {
                    score,
                    cost_usd: Some(cost.max(0.0)),
                    input_tokens: Some(input),
                    output_tokens: Some(tokens.round().max(0.0) as u32),
                    latency_ms: None,
                },
            );
        }
        // A stable id: FNV-1a over the prompt, a 0 byte and the task.
        let key = format!("{}\0{}", q.prompt, q.task.as_deref().unwrap_or(""));
        let id = format!("feedback-{:016x}", crate::features::fnv1a(0, key.as_bytes()));
        out.records.push(Record { id, task: q.task.clone(), prompt: q.prompt.clone(), outcomes });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes its file when dropped.
    struct Temp(std::path::PathBuf);
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write(lines: &[&str]) -> (Temp, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("llmroute-feedback-{}-{n}.jsonl", std::process::id()));
        std::fs::write(&p, lines.join("\n")).unwrap_or_else(|e| panic!("{e}"));
        (Temp(p.clone()), p)
    }

    #[test]
    fn lines_group_by_prompt_and_the_rest_is_predicted() {
        let (_d, p) = write(&[
            r#"{"model": "a", "score": 1.0, "prompt": "what is 2+2", "task": "math", "output_tokens": 10}"#,
            r#"{"model": "a", "score": 0.0, "prompt": "what is 2+2", "task": "math"}"#,
            r#"{"model": "b", "score": 1.0, "prompt": "capital of France"}"#,
            r#"{"model": "a", "score": 1.0}"#,
            "",
            r#"{"model": "z", "score": 1.0, "prompt": "only an unknown model"}"#,
        ]);
        let log = read_log(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((log.lines, log.without_prompt, log.queries.len()), (4, 1, 3));
        let models = vec!["a".to_string(), "b".to_string()];
        let predict = |_: &str, _: Option<&str>| Prediction {
            mu: vec![0.3, 0.6],
            sigma: vec![0.1, 0.1],
            output_tokens: vec![20.0, 40.0],
            cost: vec![2e-6, 8e-6],
            cost_sd: vec![0.0, 0.0],
            output_tokens_sd: vec![0.0, 0.0],
        };
        let c = to_records(&log, &models, None, &predict);
        assert_eq!(c.records.len(), 2, "the query scored only for an unknown model is left out");
        assert_eq!((c.observed, c.imputed), (2, 2));
        assert_eq!(c.unknown_models.get("z"), Some(&1));
        let r = &c.records[0];
        assert_eq!(r.task.as_deref(), Some("math"));
        assert!((r.outcomes["a"].score - 0.5).abs() < 1e-12, "mean of the two scores");
        assert_eq!(r.outcomes["a"].output_tokens, Some(10), "the tokens the log gave");
        assert!((r.outcomes["a"].cost_usd.unwrap_or(0.0) - 1e-6).abs() < 1e-12, "predicted cost scaled to 10 tokens");
        assert!((r.outcomes["b"].score - 0.6).abs() < 1e-12, "b was not scored: its predicted μ");
        assert!((c.records[1].outcomes["a"].score - 0.3).abs() < 1e-12);
        assert!(r.validate().is_ok() && c.records[1].validate().is_ok());
        assert_ne!(r.id, c.records[1].id);
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        let (_d, p) = write(&[r#"{"model": "a", "score": 1.0, "prompt": "x"}"#, r#"{"model": "a", "score": 1.5}"#]);
        let e = read_log(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("line 2") && e.contains("score 1.5"), "{e}");
        let (_d, p) = write(&["not json"]);
        let e = read_log(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("line 1") && e.contains("not a feedback line"), "{e}");
    }
}
