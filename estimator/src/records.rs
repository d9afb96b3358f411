//! Routing records: JSONL, one query per line, optionally gzip-compressed (`.gz`).

use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// One model's recorded outcome on one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// Quality in [0, 1]; 1 = correct.
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u32>,
    /// Wall time of the answer (collected records), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// One query and the outcomes of every model recorded on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub prompt: String,
    pub outcomes: BTreeMap<String, Outcome>,
}

impl Record {
    /// Checks the invariants the rest of the system relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.id.is_empty() {
            return Err("`id` is empty".into());
        }
        if self.outcomes.is_empty() {
            return Err(format!("record {}: `outcomes` is empty", self.id));
        }
        for (model, o) in &self.outcomes {
            if !(o.score.is_finite() && (0.0..=1.0).contains(&o.score)) {
                return Err(format!("record {}: outcomes.{model}.score = {} is not in [0, 1]", self.id, o.score));
            }
            if let Some(c) = o.cost_usd {
                if !(c.is_finite() && c >= 0.0) {
                    return Err(format!(
                        "record {}: outcomes.{model}.cost_usd = {c} is not a non-negative number",
                        self.id
                    ));
                }
            }
        }
        Ok(())
    }
}

fn open_reader(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let inner: Box<dyn Read> =
        if path.extension().is_some_and(|e| e == "gz") { Box::new(GzDecoder::new(f)) } else { Box::new(f) };
    Ok(Box::new(BufReader::new(inner)))
}

/// Reads and validates a records file (`.jsonl` or `.jsonl.gz`). Blank lines are skipped; any
/// malformed line is an error naming the line, never silently dropped.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let reader = open_reader(path)?;
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Record = serde_json::from_str(&line).map_err(|e| Error::Record {
            path: path.into(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        rec.validate().map_err(|msg| Error::Record { path: path.into(), line: i + 1, msg })?;
        if !ids.insert(rec.id.clone()) {
            return Err(Error::Record { path: path.into(), line: i + 1, msg: format!("duplicate id {}", rec.id) });
        }
        out.push(rec);
    }
    if out.is_empty() {
        return Err(Error::Record { path: path.into(), line: 0, msg: "no records".into() });
    }
    Ok(out)
}

/// Writes records as JSONL, gzip-compressed when the path ends in `.gz`.
pub fn write_records(path: &Path, records: &[Record]) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w: Box<dyn Write> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufWriter::new(GzEncoder::new(f, flate2::Compression::best())))
    } else {
        Box::new(BufWriter::new(f))
    };
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| Error::Invalid(e.to_string()))?;
        writeln!(w, "{line}").map_err(|e| Error::io(path, e))?;
    }
    w.flush().map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// The models present in every record, in sorted order, and how many records lack some of the
/// others (those are reported, not silently used with missing outcomes).
pub fn common_models(records: &[Record]) -> (Vec<String>, usize) {
    let mut all: BTreeSet<&String> = BTreeSet::new();
    for r in records {
        all.extend(r.outcomes.keys());
    }
    let common: Vec<String> = all
        .iter()
        .filter(|m| records.iter().all(|r| r.outcomes.contains_key(m.as_str())))
        .map(|m| (*m).clone())
        .collect();
    let partial = records.iter().filter(|r| r.outcomes.len() != common.len()).count();
    (common, partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, score: f64) -> Record {
        let mut outcomes = BTreeMap::new();
        outcomes.insert(
            "a".to_string(),
            Outcome { score, cost_usd: Some(0.1), input_tokens: Some(3), output_tokens: None, latency_ms: None },
        );
        Record { id: id.into(), task: Some("t".into()), prompt: "hi".into(), outcomes }
    }

    #[test]
    fn round_trip_plain_and_gz() {
        let dir = std::env::temp_dir().join(format!("llmroute-rec-{}", std::process::id()));
        let recs = vec![rec("1", 1.0), rec("2", 0.0)];
        for name in ["r.jsonl", "r.jsonl.gz"] {
            let p = dir.join(name);
            write_records(&p, &recs).unwrap();
            assert_eq!(read_records(&p).unwrap(), recs);
        }
    }

    #[test]
    fn bad_score_names_line_and_field() {
        let dir = std::env::temp_dir().join(format!("llmroute-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.jsonl");
        let good = serde_json::to_string(&rec("1", 1.0)).unwrap();
        let bad = serde_json::to_string(&rec("2", 1.5)).unwrap();
        std::fs::write(&p, format!("{good}\n{bad}\n")).unwrap();
        let err = read_records(&p).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("score"), "{err}");
    }

    #[test]
    fn duplicate_ids_rejected() {
        let dir = std::env::temp_dir().join(format!("llmroute-dup-{}", std::process::id()));
        let p = dir.join("dup.jsonl");
        write_records(&p, &[rec("1", 1.0), rec("1", 0.0)]).unwrap();
        assert!(read_records(&p).unwrap_err().to_string().contains("duplicate id"));
    }
}
