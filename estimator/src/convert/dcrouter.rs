//! `shared/data/llmrouter-dcrouter`: 9 open models × 14 tasks, per-query scores in a wide CSV,
//! per-model prices in `model_prices.csv` (NVIDIA NIM list prices, $/1M tokens).
//!
//! The data has no token counts: input tokens are estimated from the prompt (chars / 4) and the
//! output is assumed to be `output_tokens` tokens for every model (256 by default, as in
//! REFERENCE.md). Both estimates are written into the records so the cost is explicit.

use super::{csv_err, dedupe, ConvertReport};
use crate::catalog::{Catalog, ModelEntry};
use crate::error::{Error, Result};
use crate::records::{Outcome, Record};
use std::collections::BTreeMap;
use std::path::Path;

const SCORE_PREFIX: &str = "score__";

/// Reads `model_prices.csv` into catalog entries (only models that have scores).
pub fn read_prices(dir: &Path, output_tokens: u32) -> Result<Vec<ModelEntry>> {
    let path = dir.join("model_prices.csv");
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| csv_err(&path, e))?;
    let headers = rdr.headers().map_err(|e| csv_err(&path, e))?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| csv_err(&path, format!("missing column `{name}`")))
    };
    let (c_model, c_in, c_out, c_scored) =
        (col("model")?, col("input_price_per_1M")?, col("output_price_per_1M")?, col("in_dcrouter_scores")?);
    let mut out = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let row = row.map_err(|e| csv_err(&path, e))?;
        if row.get(c_scored) != Some("True") {
            continue;
        }
        let num = |c: usize| -> Result<f64> {
            row.get(c)
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| csv_err(&path, format!("row {}: bad price", i + 2)))
        };
        out.push(ModelEntry {
            name: row.get(c_model).unwrap_or_default().to_string(),
            backend: "replay".into(),
            price_in_per_mtok: num(c_in)?,
            price_out_per_mtok: num(c_out)?,
            price_source: Some("llmrouter-dcrouter model_prices.csv (NVIDIA NIM list price)".into()),
            max_concurrency: 64,
            kv_tokens: None,
            default_output_tokens: output_tokens,
            parent: None,
            recipe: None,
            card: None,
            quality_ratio: None,
            capabilities: Default::default(),
            context_tokens: None,
        });
    }
    Ok(out)
}

/// Converts `dcrouter_wide.csv`; prices come from `model_prices.csv` beside it.
pub fn convert(dir: &Path, output_tokens: u32) -> Result<(Vec<Record>, ConvertReport, Catalog)> {
    let prices = read_prices(dir, output_tokens)?;
    let path = dir.join("dcrouter_wide.csv");
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| csv_err(&path, e))?;
    let headers = rdr.headers().map_err(|e| csv_err(&path, e))?.clone();
    let find = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| csv_err(&path, format!("missing column `{name}`")))
    };
    let (c_split, c_idx, c_task, c_q) = (find("split")?, find("idx_in_split")?, find("task_name")?, find("question")?);
    let score_cols: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.strip_prefix(SCORE_PREFIX).map(|m| (i, m.to_string())))
        .collect();
    if score_cols.is_empty() {
        return Err(csv_err(&path, "no score__<model> columns"));
    }
    let mut report = ConvertReport::default();
    let mut records = Vec::new();
    for row in rdr.records() {
        let row = row.map_err(|e| csv_err(&path, e))?;
        report.rows_read += 1;
        let line = report.rows_read + 1;
        let prompt = row.get(c_q).unwrap_or_default().to_string();
        let input_tokens = crate::estimate_tokens(&prompt);
        let mut outcomes = BTreeMap::new();
        for (c, model) in &score_cols {
            let score: f64 =
                row.get(*c).and_then(|s| s.parse().ok()).filter(|s: &f64| (0.0..=1.0).contains(s)).ok_or_else(
                    || Error::Csv {
                        path: path.clone(),
                        msg: format!("line {line}: score__{model} is not a number in [0, 1]"),
                    },
                )?;
            let entry = prices.iter().find(|p| &p.name == model).ok_or_else(|| Error::Csv {
                path: dir.join("model_prices.csv"),
                msg: format!("no price for scored model `{model}`"),
            })?;
            outcomes.insert(
                model.clone(),
                Outcome {
                    score,
                    cost_usd: Some(entry.cost(input_tokens as f64, output_tokens as f64)),
                    input_tokens: Some(input_tokens),
                    output_tokens: Some(output_tokens),
                    latency_ms: None,
                },
            );
        }
        records.push(Record {
            id: format!("dcrouter-{}-{}", row.get(c_split).unwrap_or("x"), row.get(c_idx).unwrap_or("0")),
            task: row.get(c_task).map(str::to_string),
            prompt,
            outcomes,
        });
    }
    let records = dedupe(records, &mut report);
    report.records = records.len();
    let catalog = Catalog {
        name: "dcrouter".into(),
        note: Some(format!(
            "Prices: NVIDIA NIM list prices shipped in llmrouter-dcrouter/model_prices.csv. \
             Tokens: input = prompt chars / 4, output = {output_tokens} (assumed; the data has none)."
        )),
        models: prices,
    };
    Ok((records, report, catalog))
}
