//! `shared/data/routellm`: GPT-4-1106-preview vs Mixtral-8x7B-Instruct on MMLU (57 subjects),
//! GSM8K (with the full responses) and MT-Bench (GPT-4 judge ratings 1–10).
//!
//! Prices come from a catalog (`deploy/catalogs/routellm.yaml` lists the published list prices and
//! their sources). Tokens: input = prompt chars / 4; output = MMLU 1 token (a letter after
//! "Answer:"), GSM8K and MT-Bench the recorded response's chars / 4. Prompts RouteLLM flagged as
//! contaminated are dropped (and counted); duplicate prompt strings keep their first row.

use super::{csv_err, dedupe, ConvertReport};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::records::{Outcome, Record};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

const MIXTRAL_SRC: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
const GPT4_SRC: &str = "gpt-4-1106-preview";

/// The record model name for a source column name.
pub fn model_name(src: &str) -> String {
    src.rsplit('/').next().unwrap_or(src).to_lowercase()
}

/// Which parts of the folder to convert.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub mmlu: bool,
    pub gsm8k: bool,
    pub mt_bench: bool,
}

fn contaminated(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = HashSet::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Record {
            path: path.into(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        if let Some(p) = v.get("eval_prompt").and_then(|p| p.as_str()) {
            out.insert(p.trim().to_string());
        }
    }
    Ok(out)
}

struct Pricer<'a> {
    catalog: &'a Catalog,
}

impl Pricer<'_> {
    fn outcome(&self, model: &str, score: f64, input: u32, output: u32) -> Result<Outcome> {
        let entry = self
            .catalog
            .get(model)
            .ok_or_else(|| Error::Invalid(format!("catalog `{}` has no model `{model}`", self.catalog.name)))?;
        Ok(Outcome {
            score,
            cost_usd: Some(entry.cost(input as f64, output as f64)),
            input_tokens: Some(input),
            output_tokens: Some(output),
            latency_ms: None,
        })
    }
}

fn parse_bool(s: Option<&str>, path: &Path, line: usize, col: &str) -> Result<f64> {
    match s {
        Some("True") | Some("true") => Ok(1.0),
        Some("False") | Some("false") => Ok(0.0),
        other => Err(csv_err(path, format!("line {line}: column {col}: expected True/False, got {other:?}"))),
    }
}

fn header_index(h: &csv::StringRecord, name: &str, path: &Path) -> Result<usize> {
    h.iter().position(|x| x == name).ok_or_else(|| csv_err(path, format!("missing column `{name}`")))
}

fn mmlu(dir: &Path, pricer: &Pricer, report: &mut ConvertReport) -> Result<Vec<Record>> {
    let path = dir.join("mmlu_all.csv");
    // The shared copy merges MMLU's per-subject files and ships no contaminated list for it.
    let list = dir.join("mmlu").join("contaminated_prompts.jsonl");
    let bad = if list.exists() {
        contaminated(&list)?
    } else {
        tracing::warn!(path = %list.display(), "no contaminated-prompt list for MMLU; keeping every row");
        HashSet::new()
    };
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| csv_err(&path, e))?;
    let h = rdr.headers().map_err(|e| csv_err(&path, e))?.clone();
    let (c_sub, c_p, c_mx, c_g4) = (
        header_index(&h, "subject", &path)?,
        header_index(&h, "prompt", &path)?,
        header_index(&h, MIXTRAL_SRC, &path)?,
        header_index(&h, GPT4_SRC, &path)?,
    );
    let mut out = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let row = row.map_err(|e| csv_err(&path, e))?;
        report.rows_read += 1;
        let prompt = row.get(c_p).unwrap_or_default().to_string();
        if bad.contains(prompt.trim()) {
            report.contaminated_dropped += 1;
            continue;
        }
        let input = crate::estimate_tokens(&prompt);
        let mut outcomes = BTreeMap::new();
        for (c, src) in [(c_mx, MIXTRAL_SRC), (c_g4, GPT4_SRC)] {
            let score = parse_bool(row.get(c), &path, i + 2, src)?;
            outcomes.insert(model_name(src), pricer.outcome(&model_name(src), score, input, 1)?);
        }
        out.push(Record {
            id: format!("mmlu-{i:05}"),
            task: Some(format!("mmlu/{}", row.get(c_sub).unwrap_or("unknown"))),
            prompt,
            outcomes,
        });
    }
    Ok(out)
}

fn gsm8k(dir: &Path, pricer: &Pricer, report: &mut ConvertReport) -> Result<Vec<Record>> {
    let path = dir.join("gsm8k").join("gsm8k_responses.csv");
    let bad = contaminated(&dir.join("gsm8k").join("contaminated_prompts.jsonl"))?;
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| csv_err(&path, e))?;
    let h = rdr.headers().map_err(|e| csv_err(&path, e))?.clone();
    let c_p = header_index(&h, "prompt", &path)?;
    let cols: Vec<(usize, usize, &str)> = [MIXTRAL_SRC, GPT4_SRC]
        .into_iter()
        .map(|src| Ok((header_index(&h, src, &path)?, header_index(&h, &format!("{src}_response"), &path)?, src)))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let row = row.map_err(|e| csv_err(&path, e))?;
        report.rows_read += 1;
        let prompt = row.get(c_p).unwrap_or_default().to_string();
        if bad.contains(prompt.trim()) {
            report.contaminated_dropped += 1;
            continue;
        }
        let input = crate::estimate_tokens(&prompt);
        let mut outcomes = BTreeMap::new();
        for &(c_score, c_resp, src) in &cols {
            let score = parse_bool(row.get(c_score), &path, i + 2, src)?;
            let output = crate::estimate_tokens(row.get(c_resp).unwrap_or_default().trim());
            outcomes.insert(model_name(src), pricer.outcome(&model_name(src), score, input, output)?);
        }
        out.push(Record { id: format!("gsm8k-{i:04}"), task: Some("gsm8k".into()), prompt, outcomes });
    }
    Ok(out)
}

/// The assistant's answer inside a single-turn judge prompt, if the prompt has the usual markers.
fn judged_answer(user_prompt: &str) -> Option<&str> {
    let start = user_prompt.find("[The Start of Assistant's Answer]")?;
    let rest = &user_prompt[start + "[The Start of Assistant's Answer]".len()..];
    let end = rest.find("[The End of Assistant's Answer]")?;
    Some(rest[..end].trim())
}

fn mt_bench(dir: &Path, pricer: &Pricer, report: &mut ConvertReport) -> Result<Vec<Record>> {
    let qpath = dir.join("mt_bench").join("question.jsonl");
    let jpath = dir.join("mt_bench").join("judgements.jsonl");
    let bad = contaminated(&dir.join("mt_bench").join("contaminated_prompts.jsonl"))?;
    let parse_lines = |path: &Path| -> Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| Error::Record {
                    path: path.into(),
                    line: i + 1,
                    msg: e.to_string(),
                })
            })
            .collect()
    };
    // (question_id, model) -> (rating, output tokens) for turn 1.
    let mut judged: HashMap<(i64, String), (f64, Option<u32>)> = HashMap::new();
    for j in parse_lines(&jpath)? {
        if j.get("turn").and_then(|t| t.as_i64()) != Some(1) {
            continue;
        }
        let (Some(qid), Some(model), Some(score)) = (
            j.get("question_id").and_then(|v| v.as_i64()),
            j.get("model").and_then(|v| v.as_str()),
            j.get("score").and_then(|v| v.as_f64()),
        ) else {
            return Err(Error::Invalid(format!("{}: judgement without question_id/model/score", jpath.display())));
        };
        let out = j.get("user_prompt").and_then(|v| v.as_str()).and_then(judged_answer).map(crate::estimate_tokens);
        judged.insert((qid, model_name(model)), (score, out));
    }
    let mut out = Vec::new();
    for q in parse_lines(&qpath)? {
        report.rows_read += 1;
        let qid = q.get("question_id").and_then(|v| v.as_i64()).unwrap_or(-1);
        let Some(prompt) = q.get("turns").and_then(|t| t.get(0)).and_then(|t| t.as_str()) else {
            return Err(Error::Invalid(format!("{}: question {qid} has no turns", qpath.display())));
        };
        if bad.contains(prompt.trim()) {
            report.contaminated_dropped += 1;
            continue;
        }
        let input = crate::estimate_tokens(prompt);
        let mut outcomes = BTreeMap::new();
        for src in [MIXTRAL_SRC, GPT4_SRC] {
            let name = model_name(src);
            let Some(&(rating, out_tokens)) = judged.get(&(qid, name.clone())) else { continue };
            // Ratings 1..10 mapped to [0, 1].
            let score = ((rating - 1.0) / 9.0).clamp(0.0, 1.0);
            let output = out_tokens.unwrap_or(pricer.catalog.get(&name).map_or(256, |m| m.default_output_tokens));
            outcomes.insert(name.clone(), pricer.outcome(&name, score, input, output)?);
        }
        if outcomes.len() < 2 {
            continue;
        }
        let category = q.get("category").and_then(|v| v.as_str()).unwrap_or("unknown");
        out.push(Record {
            id: format!("mtbench-{qid}"),
            task: Some(format!("mt_bench/{category}")),
            prompt: prompt.to_string(),
            outcomes,
        });
    }
    Ok(out)
}

/// Converts the selected parts; prices from `catalog` (must list both models).
pub fn convert(dir: &Path, catalog: &Catalog, parts: Parts) -> Result<(Vec<Record>, ConvertReport)> {
    let pricer = Pricer { catalog };
    let mut report = ConvertReport::default();
    let mut records = Vec::new();
    if parts.mmlu {
        records.extend(mmlu(dir, &pricer, &mut report)?);
    }
    if parts.gsm8k {
        records.extend(gsm8k(dir, &pricer, &mut report)?);
    }
    if parts.mt_bench {
        records.extend(mt_bench(dir, &pricer, &mut report)?);
    }
    let records = dedupe(records, &mut report);
    report.records = records.len();
    Ok((records, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_answers() {
        assert_eq!(model_name(MIXTRAL_SRC), "mixtral-8x7b-instruct-v0.1");
        assert_eq!(model_name(GPT4_SRC), "gpt-4-1106-preview");
        let p = "x [The Start of Assistant's Answer]\n 12345678 \n[The End of Assistant's Answer]";
        assert_eq!(judged_answer(p), Some("12345678"));
        assert_eq!(judged_answer("none"), None);
    }
}
