//! The model catalog: prices, capacities and backends. Parsed into a raw struct, then checked
//! into a validated one; a bad file is rejected with a message naming the field.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    name: Option<String>,
    #[serde(default)]
    note: Option<String>,
    models: Option<Vec<RawModel>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Option<String>,
    backend: Option<String>,
    price_in_per_mtok: Option<f64>,
    price_out_per_mtok: Option<f64>,
    #[serde(default)]
    price_source: Option<String>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    kv_tokens: Option<u64>,
    #[serde(default)]
    default_output_tokens: Option<u32>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    recipe: Option<String>,
    #[serde(default)]
    card: Option<String>,
    #[serde(default)]
    quality_ratio: Option<f64>,
    #[serde(default)]
    capabilities: Vec<Capability>,
    #[serde(default)]
    context_tokens: Option<u64>,
}

/// What a model can serve beyond plain text: a request that needs one is routed only among the
/// models that declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Function / tool calling (`tools`, `tool` messages, `tool_calls` in replies).
    Tools,
    /// Image content parts.
    Vision,
    /// `response_format: {type: json_schema}`.
    JsonSchema,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::Tools => "tools",
            Capability::Vision => "vision",
            Capability::JsonSchema => "json_schema",
        }
    }
}

/// A validated catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelEntry {
    pub name: String,
    /// `replay` or an OpenAI-compatible base URL.
    pub backend: String,
    pub price_in_per_mtok: f64,
    pub price_out_per_mtok: f64,
    pub price_source: Option<String>,
    pub max_concurrency: u32,
    /// KV-cache tokens one instance holds; `None` = not a binding limit.
    pub kv_tokens: Option<u64>,
    /// Output tokens assumed when neither the record nor the estimator knows better.
    pub default_output_tokens: u32,
    pub parent: Option<String>,
    pub recipe: Option<String>,
    /// The model card a compression run wrote (JSON; relative paths are from the catalog's
    /// folder): its `tasks` accuracies give the day-0 prior's quality ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<std::path::PathBuf>,
    /// The day-0 prior's quality ratio to `parent` set by hand (overrides the card's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality_ratio: Option<f64>,
    /// What it serves beyond plain text (none: text only).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub capabilities: BTreeSet<Capability>,
    /// Its context window in tokens (prompt + output); `None` = not a binding limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
}

impl ModelEntry {
    pub fn cost(&self, input_tokens: f64, output_tokens: f64) -> f64 {
        (self.price_in_per_mtok * input_tokens + self.price_out_per_mtok * output_tokens) / 1e6
    }
}

/// A validated catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Catalog {
    pub name: String,
    pub note: Option<String>,
    pub models: Vec<ModelEntry>,
}

fn field_err(path: &Path, field: String, msg: impl Into<String>) -> Error {
    Error::Catalog { path: path.into(), field, msg: msg.into() }
}

impl Catalog {
    pub fn load(path: &Path) -> Result<Catalog> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates catalog YAML; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Catalog> {
        let raw: RawCatalog =
            serde_yaml::from_str(text).map_err(|e| field_err(path, "(document)".into(), e.to_string()))?;
        let name = raw.name.ok_or_else(|| field_err(path, "name".into(), "missing"))?;
        let raw_models = raw.models.ok_or_else(|| field_err(path, "models".into(), "missing"))?;
        if raw_models.is_empty() {
            return Err(field_err(path, "models".into(), "empty: list at least one model"));
        }
        let mut seen = BTreeSet::new();
        let mut models = Vec::with_capacity(raw_models.len());
        for (i, m) in raw_models.into_iter().enumerate() {
            let f = |k: &str| format!("models[{i}].{k}");
            let name = m
                .name
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| field_err(path, f("name"), "missing or empty"))?;
            if !seen.insert(name.clone()) {
                return Err(field_err(path, f("name"), format!("duplicate model `{name}`")));
            }
            let backend = m.backend.unwrap_or_else(|| "replay".into());
            if backend != "replay" && !(backend.starts_with("http://") || backend.starts_with("https://")) {
                return Err(field_err(
                    path,
                    f("backend"),
                    format!("`{backend}`: expected `replay` or an http(s) base URL"),
                ));
            }
            let price = |v: Option<f64>, k: &str| -> Result<f64> {
                let v = v.ok_or_else(|| field_err(path, f(k), "missing"))?;
                if !(v.is_finite() && v >= 0.0) {
                    return Err(field_err(path, f(k), format!("{v} is not a non-negative number")));
                }
                Ok(v)
            };
            let price_in_per_mtok = price(m.price_in_per_mtok, "price_in_per_mtok")?;
            let price_out_per_mtok = price(m.price_out_per_mtok, "price_out_per_mtok")?;
            let max_concurrency = m.max_concurrency.unwrap_or(64);
            if max_concurrency == 0 {
                return Err(field_err(path, f("max_concurrency"), "must be at least 1"));
            }
            if m.kv_tokens == Some(0) {
                return Err(field_err(path, f("kv_tokens"), "must be at least 1 (omit for no limit)"));
            }
            if let Some(r) = m.quality_ratio {
                if !(r.is_finite() && r > 0.0 && r <= 2.0) {
                    return Err(field_err(path, f("quality_ratio"), format!("{r} is not a number in (0, 2]")));
                }
            }
            if (m.card.is_some() || m.quality_ratio.is_some()) && m.parent.is_none() {
                let k = if m.card.is_some() { "card" } else { "quality_ratio" };
                return Err(field_err(path, f(k), "is a day-0 prior relative to `parent`, which is not set"));
            }
            let base = path.parent().unwrap_or(Path::new("."));
            let card = m.card.filter(|c| !c.trim().is_empty()).map(|c| base.join(c));
            if m.context_tokens == Some(0) {
                return Err(field_err(path, f("context_tokens"), "must be at least 1 (omit for no limit)"));
            }
            models.push(ModelEntry {
                name,
                backend,
                price_in_per_mtok,
                price_out_per_mtok,
                price_source: m.price_source,
                max_concurrency,
                kv_tokens: m.kv_tokens,
                default_output_tokens: m.default_output_tokens.unwrap_or(256),
                parent: m.parent,
                recipe: m.recipe,
                card,
                quality_ratio: m.quality_ratio,
                capabilities: m.capabilities.into_iter().collect(),
                context_tokens: m.context_tokens,
            });
        }
        Ok(Catalog { name, note: raw.note, models })
    }

    /// A catalog with the same price (1 USD per million tokens) for every model: for uses where
    /// prices do not matter (quality estimates) but the estimator wants a price table.
    pub fn flat(models: &[String]) -> Catalog {
        Catalog {
            name: "flat".into(),
            note: None,
            models: models
                .iter()
                .map(|n| ModelEntry {
                    name: n.clone(),
                    backend: "replay".into(),
                    price_in_per_mtok: 1.0,
                    price_out_per_mtok: 1.0,
                    price_source: None,
                    max_concurrency: 1,
                    kv_tokens: None,
                    default_output_tokens: 256,
                    parent: None,
                    recipe: None,
                    card: None,
                    quality_ratio: None,
                    capabilities: Default::default(),
                    context_tokens: None,
                })
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// The quality ratio a model card measured: Σ (pruned − chance)⁺ / Σ (dense − chance) over its
/// `tasks` (`[{name, dense, pruned, chance?, n?}]`, each in [0, 1]; `chance` — what guessing
/// scores, 0.25 for four options — defaults to 0), counting only the tasks where the dense model is
/// above chance: a task both models guess at says nothing about what pruning kept. With `n` (the
/// questions asked) the dense model must beat chance by more than sampling explains — one-sided
/// 95 %: dense − chance > 1.645 · √(chance (1 − chance) / n) — so a task where it is only a few
/// lucky answers above guessing does not weigh in. An error names what the card lacks.
pub fn card_quality_ratio(path: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| field_err(path, "tasks".into(), msg);
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| field_err(path, "(document)".into(), e.to_string()))?;
    let tasks = v.get("tasks").and_then(|t| t.as_array()).ok_or_else(|| {
        bad("missing: the card holds no task accuracies (`tasks`: [{name, dense, pruned}]); set the catalog \
             entry's quality_ratio instead"
            .into())
    })?;
    let (mut dense, mut pruned) = (0.0, 0.0);
    for (i, t) in tasks.iter().enumerate() {
        let acc = |k: &str| {
            t.get(k)
                .and_then(|x| x.as_f64())
                .filter(|x| x.is_finite() && (0.0..=1.0).contains(x))
                .ok_or_else(|| bad(format!("tasks[{i}].{k} is not an accuracy in [0, 1]")))
        };
        let chance = match t.get("chance") {
            None => 0.0,
            Some(_) => acc("chance")?,
        };
        let (d, p) = (acc("dense")?, acc("pruned")?);
        let margin = match t.get("n") {
            None => 0.0,
            Some(n) => {
                let n = n
                    .as_f64()
                    .filter(|n| n.is_finite() && *n >= 1.0)
                    .ok_or_else(|| bad(format!("tasks[{i}].n is not a count of questions (1 or more)")))?;
                1.645 * (chance * (1.0 - chance) / n).sqrt()
            }
        };
        if d - chance > margin {
            dense += d - chance;
            pruned += (p - chance).max(0.0);
        }
    }
    if dense <= 0.0 {
        return Err(bad(
            "no task where the dense model scores above chance: no ratio to take; set the catalog entry's \
             quality_ratio instead"
                .into(),
        ));
    }
    Ok((pruned / dense).clamp(1e-3, 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: t\nmodels:\n  - name: a\n    price_in_per_mtok: 1\n    price_out_per_mtok: 2\n";

    #[test]
    fn parses_and_costs() {
        let c = Catalog::parse(GOOD, Path::new("c.yaml")).unwrap();
        assert_eq!(c.models[0].backend, "replay");
        assert!((c.models[0].cost(1e6, 1e6) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = GOOD.replace("price_out_per_mtok: 2", "price_out_per_mtok: -2");
        let e = Catalog::parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("models[0].price_out_per_mtok"), "{e}");
        let bad = GOOD.replace("    price_in_per_mtok: 1\n", "");
        let e = Catalog::parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("models[0].price_in_per_mtok") && e.contains("missing"), "{e}");
        let bad = format!("{GOOD}  - name: a\n    price_in_per_mtok: 1\n    price_out_per_mtok: 1\n");
        let e = Catalog::parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("models[1].name") && e.contains("duplicate"), "{e}");
        let e = Catalog::parse("name: x\nmodelz: []\n", Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("modelz"), "{e}");
        let bad = GOOD.replace("price_out_per_mtok: 2", "price_out_per_mtok: 2\n    quality_ratio: 0.8");
        let e = Catalog::parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("models[0].quality_ratio") && e.contains("parent"), "{e}");
        let bad = GOOD.replace("price_out_per_mtok: 2", "price_out_per_mtok: 2\n    parent: b\n    quality_ratio: 0");
        let e = Catalog::parse(&bad, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("models[0].quality_ratio") && e.contains("(0, 2]"), "{e}");
    }

    #[test]
    fn card_paths_are_from_the_catalog_folder_and_give_the_task_ratio() {
        let dir = std::env::temp_dir().join(format!("llmroute-card-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = GOOD.replace("price_out_per_mtok: 2", "price_out_per_mtok: 2\n    parent: b\n    card: card.json");
        let c = Catalog::parse(&good, &dir.join("c.yaml")).unwrap();
        let card = c.models[0].card.clone().unwrap();
        assert_eq!(card, dir.join("card.json"));
        std::fs::write(&card, r#"{"tasks": [{"name": "mmlu", "dense": 0.4, "pruned": 0.3}, {"name": "gsm8k", "dense": 0.2, "pruned": 0.15}]}"#).unwrap();
        assert!((card_quality_ratio(&card).unwrap() - 0.75).abs() < 1e-12);
        // Chance-corrected: mmlu's dense 0.24 is below its chance 0.25 and does not count; arith
        // (chance 0) keeps 0.05 of 0.2.
        std::fs::write(&card, r#"{"tasks": [{"name": "mmlu", "dense": 0.24, "pruned": 0.27, "chance": 0.25}, {"name": "arith", "dense": 0.2, "pruned": 0.05, "chance": 0}]}"#).unwrap();
        assert!((card_quality_ratio(&card).unwrap() - 0.25).abs() < 1e-12);
        // Above chance, each counts from chance: (0.35 − 0.25) + 0.05 over (0.45 − 0.25) + 0.2.
        std::fs::write(&card, r#"{"tasks": [{"name": "mmlu", "dense": 0.45, "pruned": 0.35, "chance": 0.25}, {"name": "arith", "dense": 0.2, "pruned": 0.05}]}"#).unwrap();
        assert!((card_quality_ratio(&card).unwrap() - 0.375).abs() < 1e-12);
        std::fs::write(&card, r#"{"tasks": [{"name": "mmlu", "dense": 0.2, "pruned": 0.3, "chance": 0.25}]}"#).unwrap();
        let e = card_quality_ratio(&card).unwrap_err().to_string();
        assert!(e.contains("above chance"), "{e}");
        // With n, a task counts only where the dense model beats chance by more than sampling
        // explains: 0.268 of 250 four-option questions is not (margin 1.645 · 0.0274 = 0.045);
        // 0.392 of 250 is; an exact-number task (chance 0) counts from any right answer.
        let t = |d: f64, n: u32| format!(r#"{{"name": "mc", "dense": {d}, "pruned": 0.25, "chance": 0.25, "n": {n}}}"#);
        let arith = r#"{"name": "arith", "dense": 0.2, "pruned": 0.05, "chance": 0, "n": 100}"#;
        std::fs::write(&card, format!(r#"{{"tasks": [{}, {arith}]}}"#, t(0.268, 250))).unwrap();
        assert!((card_quality_ratio(&card).unwrap() - 0.25).abs() < 1e-12);
        std::fs::write(&card, format!(r#"{{"tasks": [{}, {arith}]}}"#, t(0.392, 250))).unwrap();
        assert!((card_quality_ratio(&card).unwrap() - 0.05 / (0.142 + 0.2)).abs() < 1e-9);
        // Without n, as before: 0.268 counts.
        std::fs::write(&card, format!(r#"{{"tasks": [{}, {arith}]}}"#, t(0.268, 250).replace(r#", "n": 250"#, "")))
            .unwrap();
        assert!((card_quality_ratio(&card).unwrap() - 0.05 / (0.018 + 0.2)).abs() < 1e-9);
        std::fs::write(&card, format!(r#"{{"tasks": [{}]}}"#, t(0.4, 0))).unwrap();
        let e = card_quality_ratio(&card).unwrap_err().to_string();
        assert!(e.contains("tasks[0].n"), "{e}");
        std::fs::write(&card, r#"{"tasks": [{"name": "mmlu", "dense": 0.4, "pruned": 0.3, "chance": 2}]}"#).unwrap();
        let e = card_quality_ratio(&card).unwrap_err().to_string();
        assert!(e.contains("tasks[0].chance"), "{e}");
        std::fs::write(&card, r#"{"perplexity": {"ratio": 1.8}}"#).unwrap();
        let e = card_quality_ratio(&card).unwrap_err().to_string();
        assert!(e.contains("tasks") && e.contains("quality_ratio"), "{e}");
        std::fs::write(&card, r#"{"tasks": [{"name": "mmlu", "dense": 0.4, "pruned": 1.3}]}"#).unwrap();
        let e = card_quality_ratio(&card).unwrap_err().to_string();
        assert!(e.contains("tasks[0].pruned"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
