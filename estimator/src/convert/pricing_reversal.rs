//! `shared/data/pricing-reversal`: frontier models with the real token counts their APIs reported
//! and the USD cost of each answer (thinking tokens billed as output), from the "price reversal"
//! data (MIT). One JSON object per line: `id`, `task`, `query`, `prompt`, `ground_truth`,
//! `outcomes[model] = {score, cost, prompt_tokens, completion_tokens, thinking_tokens}`.
//!
//! Each record keeps the recorded cost as `cost_usd` (the realized cost a router is judged on),
//! `prompt_tokens` as `input_tokens` and `completion_tokens` (thinking included) as
//! `output_tokens`. The routed text is `prompt` (what was sent). Nothing is estimated.

use super::{dedupe, ConvertReport};
use crate::error::{Error, Result};
use crate::records::{Outcome, Record};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// The files of the folder, in the order they are converted.
pub const PARTS: [&str; 4] = ["simpleqa-test", "gpqa-test", "aime-hybrid", "livemathbench-test"];

#[derive(Deserialize)]
struct Row {
    id: String,
    #[serde(default)]
    task: Option<String>,
    prompt: String,
    outcomes: BTreeMap<String, RowOutcome>,
}

#[derive(Deserialize)]
struct RowOutcome {
    score: f64,
    cost: f64,
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

fn bad(path: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}:{line}: {msg}", path.display()))
}

/// Converts the named parts (file stems, see `PARTS`) of the folder `dir`.
pub fn convert(dir: &Path, parts: &[String]) -> Result<(Vec<Record>, ConvertReport)> {
    let mut report = ConvertReport::default();
    let mut records = Vec::new();
    for part in parts {
        if !PARTS.contains(&part.as_str()) {
            return Err(Error::Invalid(format!("--parts: unknown part `{part}` (expected {})", PARTS.join(", "))));
        }
        let path: PathBuf = dir.join(format!("{part}.jsonl"));
        let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| Error::io(&path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            report.rows_read += 1;
            let row: Row = serde_json::from_str(&line).map_err(|e| bad(&path, i + 1, e))?;
            let mut outcomes = BTreeMap::new();
            for (model, o) in row.outcomes {
                if !(o.score.is_finite() && (0.0..=1.0).contains(&o.score)) {
                    return Err(bad(&path, i + 1, format!("outcomes.{model}.score = {} is not in [0, 1]", o.score)));
                }
                if !(o.cost.is_finite() && o.cost >= 0.0) {
                    return Err(bad(&path, i + 1, format!("outcomes.{model}.cost = {} is not a cost", o.cost)));
                }
                outcomes.insert(
                    model,
                    Outcome {
                        score: o.score,
                        cost_usd: Some(o.cost),
                        input_tokens: o.prompt_tokens,
                        output_tokens: o.completion_tokens,
                        latency_ms: None,
                    },
                );
            }
            let task = row.task.unwrap_or_else(|| part.split('-').next().unwrap_or(part).to_string());
            let r = Record { id: row.id, task: Some(task), prompt: row.prompt, outcomes };
            r.validate().map_err(|e| bad(&path, i + 1, e))?;
            records.push(r);
        }
    }
    let records = dedupe(records, &mut report);
    report.records = records.len();
    Ok((records, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_costs_and_tokens_and_rejects_bad_rows() {
        let dir = std::env::temp_dir().join(format!("pr-convert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = r#"{"id": "q1", "task": "simpleqa", "query": "x", "prompt": "Who?", "ground_truth": "A", "outcomes": {"a": {"score": 1.0, "cost": 0.002, "prompt_tokens": 10, "completion_tokens": 300, "thinking_tokens": 250}, "b": {"score": 0.0, "cost": 0.0001, "prompt_tokens": 10, "completion_tokens": 20, "thinking_tokens": 0}}}
{"id": "q2", "task": "simpleqa", "query": "x", "prompt": "Who?", "ground_truth": "A", "outcomes": {"a": {"score": 1.0, "cost": 0.002}, "b": {"score": 0.0, "cost": 0.0001}}}
"#;
        std::fs::write(dir.join("simpleqa-test.jsonl"), ok).unwrap();
        let (recs, rep) = convert(&dir, &["simpleqa-test".to_string()]).unwrap();
        assert_eq!((rep.rows_read, rep.records, rep.duplicates_dropped), (2, 1, 1));
        let a = &recs[0].outcomes["a"];
        assert_eq!((a.cost_usd, a.input_tokens, a.output_tokens), (Some(0.002), Some(10), Some(300)));
        std::fs::write(dir.join("gpqa-test.jsonl"), ok.replace("\"cost\": 0.002,", "\"cost\": -1,")).unwrap();
        let e = convert(&dir, &["gpqa-test".to_string()]).unwrap_err().to_string();
        assert!(e.contains("gpqa-test.jsonl:1") && e.contains("outcomes.a.cost"), "{e}");
        let e = convert(&dir, &["nope".to_string()]).unwrap_err().to_string();
        assert!(e.contains("unknown part `nope`"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
