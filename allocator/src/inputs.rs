//! The allocator's inputs (YAML): GPU inventory, model profiles, traffic classes. Each is parsed
//! into a raw struct and checked into a validated one; a bad file names the field.

use crate::error::{AllocError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| AllocError::Io { path: path.to_path_buf(), source: e })
}

fn num(path: &Path, field: &str, v: Option<f64>, positive: bool) -> Result<f64> {
    let v = v.ok_or_else(|| AllocError::field(path, field, "missing"))?;
    if !v.is_finite() || v < 0.0 || (positive && v == 0.0) {
        let what = if positive { "a positive number" } else { "a non-negative number" };
        return Err(AllocError::field(path, field, format!("{v} is not {what}")));
    }
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    gpus: Option<Vec<RawGpu>>,
    usd_per_hour_budget: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    #[serde(rename = "type")]
    kind: Option<String>,
    count: Option<u32>,
    memory_gb: Option<f64>,
    usd_per_hour: Option<f64>,
    /// Kubernetes node label value selecting this GPU type (nvidia.com/gpu.product).
    node_label: Option<String>,
    source: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub kind: String,
    pub count: u32,
    pub memory_gb: f64,
    pub usd_per_hour: f64,
    pub node_label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    pub gpus: Vec<Gpu>,
    /// Optional cap on Σ GPUs used × $/hour.
    pub budget_usd_per_hour: Option<f64>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory> {
        Self::parse(&read(path)?, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Inventory> {
        let raw: RawInventory =
            serde_yaml::from_str(text).map_err(|e| AllocError::field(path, "(document)", e.to_string()))?;
        let list =
            raw.gpus.filter(|g| !g.is_empty()).ok_or_else(|| AllocError::field(path, "gpus", "missing or empty"))?;
        let mut gpus: Vec<Gpu> = Vec::new();
        for (i, g) in list.into_iter().enumerate() {
            let f = |k: &str| format!("gpus[{i}].{k}");
            let kind =
                g.kind.filter(|s| !s.trim().is_empty()).ok_or_else(|| AllocError::field(path, f("type"), "missing"))?;
            if gpus.iter().any(|o| o.kind == kind) {
                return Err(AllocError::field(path, f("type"), format!("duplicate GPU type `{kind}`")));
            }
            let count = g.count.ok_or_else(|| AllocError::field(path, f("count"), "missing"))?;
            let _ = g.source;
            gpus.push(Gpu {
                node_label: g.node_label.unwrap_or_else(|| kind.clone()),
                kind,
                count,
                memory_gb: num(path, &f("memory_gb"), g.memory_gb, true)?,
                usd_per_hour: num(path, &f("usd_per_hour"), g.usd_per_hour, false)?,
            });
        }
        let budget_usd_per_hour = match raw.usd_per_hour_budget {
            None => None,
            Some(b) => Some(num(path, "usd_per_hour_budget", Some(b), true)?),
        };
        Ok(Inventory { gpus, budget_usd_per_hour })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    /// Input tokens cost this fraction of an output token's decode time (prefill is batched).
    prefill_cost: Option<f64>,
    /// Plan for at most this fraction of each instance's throughput (headroom for bursts).
    target_utilization: Option<f64>,
    models: Option<Vec<RawModel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Option<String>,
    max_concurrency: Option<u32>,
    min_replicas: Option<u32>,
    /// Container image for the manifests (vLLM or llama.cpp server).
    image: Option<String>,
    /// The model as the server loads it (e.g. a Hugging Face id).
    served_model: Option<String>,
    profiles: Option<Vec<RawProfile>>,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    gpu: Option<String>,
    tensor_parallel: Option<u32>,
    weights_gb: Option<f64>,
    kv_gb: Option<f64>,
    tokens_per_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Index into `Inventory::gpus`.
    pub gpu: usize,
    pub tensor_parallel: u32,
    pub weights_gb: f64,
    pub kv_gb: f64,
    /// Output tokens/s one instance sustains at the latency SLO.
    pub tokens_per_s: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    pub name: String,
    pub max_concurrency: u32,
    pub min_replicas: u32,
    pub image: String,
    pub served_model: String,
    pub profiles: Vec<Profile>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Models {
    pub prefill_cost: f64,
    pub target_utilization: f64,
    pub models: Vec<ModelProfile>,
}

impl Models {
    pub fn load(path: &Path, inv: &Inventory) -> Result<Models> {
        Self::parse(&read(path)?, path, inv)
    }

    pub fn parse(text: &str, path: &Path, inv: &Inventory) -> Result<Models> {
        let raw: RawModels =
            serde_yaml::from_str(text).map_err(|e| AllocError::field(path, "(document)", e.to_string()))?;
        let prefill_cost = num(path, "prefill_cost", Some(raw.prefill_cost.unwrap_or(0.1)), false)?;
        let target_utilization = raw.target_utilization.unwrap_or(0.8);
        if !(target_utilization > 0.0 && target_utilization <= 1.0) {
            return Err(AllocError::field(
                path,
                "target_utilization",
                format!("{target_utilization} is not in (0, 1]"),
            ));
        }
        let list = raw
            .models
            .filter(|m| !m.is_empty())
            .ok_or_else(|| AllocError::field(path, "models", "missing or empty"))?;
        let mut models: Vec<ModelProfile> = Vec::new();
        for (i, m) in list.into_iter().enumerate() {
            let f = |k: &str| format!("models[{i}].{k}");
            let name =
                m.name.filter(|s| !s.trim().is_empty()).ok_or_else(|| AllocError::field(path, f("name"), "missing"))?;
            if models.iter().any(|o| o.name == name) {
                return Err(AllocError::field(path, f("name"), format!("duplicate model `{name}`")));
            }
            let max_concurrency = m.max_concurrency.unwrap_or(32);
            if max_concurrency == 0 {
                return Err(AllocError::field(path, f("max_concurrency"), "must be at least 1"));
            }
            let raw_profiles = m
                .profiles
                .filter(|p| !p.is_empty())
                .ok_or_else(|| AllocError::field(path, f("profiles"), "missing or empty"))?;
            let mut profiles: Vec<Profile> = Vec::new();
            for (k, p) in raw_profiles.into_iter().enumerate() {
                let g = |x: &str| format!("models[{i}].profiles[{k}].{x}");
                let gpu_name = p.gpu.ok_or_else(|| AllocError::field(path, g("gpu"), "missing"))?;
                let gpu = inv.gpus.iter().position(|x| x.kind == gpu_name).ok_or_else(|| {
                    AllocError::field(path, g("gpu"), format!("`{gpu_name}` is not a GPU type in the inventory"))
                })?;
                if profiles.iter().any(|o| o.gpu == gpu) {
                    return Err(AllocError::field(path, g("gpu"), format!("a second profile for `{gpu_name}`")));
                }
                let tp = p.tensor_parallel.unwrap_or(1);
                if tp == 0 {
                    return Err(AllocError::field(path, g("tensor_parallel"), "must be at least 1"));
                }
                let weights_gb = num(path, &g("weights_gb"), p.weights_gb, true)?;
                let kv_gb = num(path, &g("kv_gb"), p.kv_gb, false)?;
                let have = inv.gpus[gpu].memory_gb * tp as f64;
                if weights_gb + kv_gb > have {
                    return Err(AllocError::field(
                        path,
                        g("kv_gb"),
                        format!(
                            "weights {weights_gb} GB + KV {kv_gb} GB do not fit in {tp} x {} GB of `{gpu_name}`",
                            inv.gpus[gpu].memory_gb
                        ),
                    ));
                }
                profiles.push(Profile {
                    gpu,
                    tensor_parallel: tp,
                    weights_gb,
                    kv_gb,
                    tokens_per_s: num(path, &g("tokens_per_s"), p.tokens_per_s, true)?,
                });
            }
            let _ = m.source;
            models.push(ModelProfile {
                served_model: m.served_model.unwrap_or_else(|| name.clone()),
                name,
                max_concurrency,
                min_replicas: m.min_replicas.unwrap_or(0),
                image: m.image.unwrap_or_else(|| "vllm/vllm-openai:latest".into()),
                profiles,
            });
        }
        Ok(Models { prefill_cost, target_utilization, models })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    classes: Option<Vec<RawClass>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: Option<String>,
    rate_qps: Option<f64>,
    input_tokens: Option<f64>,
    output_tokens: Option<f64>,
    /// The records' task(s) this class stands for (quality from the estimator on them).
    tasks: Option<Vec<String>>,
    /// Expected quality per model (overrides what the records give).
    quality: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub name: String,
    pub rate_qps: f64,
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub tasks: Vec<String>,
    /// Expected quality per model, by model index; filled from records when not given.
    pub quality: Option<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    pub classes: Vec<Class>,
}

impl Class {
    /// Is a record of `task` traffic of this class (its task, or a subtask `task/...`)?
    pub fn matches(&self, task: Option<&str>) -> bool {
        task.is_some_and(|t| {
            self.tasks.iter().any(|k| t == k || t.strip_prefix(k.as_str()).is_some_and(|r| r.starts_with('/')))
        })
    }
}

impl Traffic {
    pub fn load(path: &Path, models: &Models) -> Result<Traffic> {
        Self::parse(&read(path)?, path, models)
    }

    pub fn parse(text: &str, path: &Path, models: &Models) -> Result<Traffic> {
        let raw: RawTraffic =
            serde_yaml::from_str(text).map_err(|e| AllocError::field(path, "(document)", e.to_string()))?;
        let list = raw
            .classes
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AllocError::field(path, "classes", "missing or empty"))?;
        let mut classes: Vec<Class> = Vec::new();
        for (i, c) in list.into_iter().enumerate() {
            let f = |k: &str| format!("classes[{i}].{k}");
            let name =
                c.name.filter(|s| !s.trim().is_empty()).ok_or_else(|| AllocError::field(path, f("name"), "missing"))?;
            if classes.iter().any(|o| o.name == name) {
                return Err(AllocError::field(path, f("name"), format!("duplicate class `{name}`")));
            }
            let quality = match c.quality {
                None => None,
                Some(q) => {
                    let mut v = vec![f64::NAN; models.models.len()];
                    for (m, x) in q {
                        let j = models.models.iter().position(|p| p.name == m).ok_or_else(|| {
                            AllocError::field(path, f(&format!("quality.{m}")), "not a model in the models file")
                        })?;
                        if !(0.0..=1.0).contains(&x) {
                            return Err(AllocError::field(
                                path,
                                f(&format!("quality.{m}")),
                                format!("{x} is not in [0, 1]"),
                            ));
                        }
                        v[j] = x;
                    }
                    if let Some(j) = v.iter().position(|x| x.is_nan()) {
                        return Err(AllocError::field(
                            path,
                            f("quality"),
                            format!("no value for model `{}`", models.models[j].name),
                        ));
                    }
                    Some(v)
                }
            };
            let tasks = c.tasks.unwrap_or_else(|| vec![name.clone()]);
            classes.push(Class {
                rate_qps: num(path, &f("rate_qps"), c.rate_qps, false)?,
                input_tokens: num(path, &f("input_tokens"), c.input_tokens, false)?,
                output_tokens: num(path, &f("output_tokens"), c.output_tokens, true)?,
                name,
                tasks,
                quality,
            });
        }
        Ok(Traffic { classes })
    }

    /// Σ rates.
    pub fn total_rate(&self) -> f64 {
        self.classes.iter().map(|c| c.rate_qps).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "gpus:\n  - {type: a100, count: 4, memory_gb: 80, usd_per_hour: 1.3}\n";
    const MODELS: &str =
        "models:\n  - name: m\n    profiles:\n      - {gpu: a100, weights_gb: 16, kv_gb: 40, tokens_per_s: 2000}\n";

    #[test]
    fn bad_fields_are_named() {
        let p = Path::new("x.yaml");
        let e = Inventory::parse("gpus:\n  - {type: a, count: 1, memory_gb: -1, usd_per_hour: 1}\n", p).unwrap_err();
        assert!(e.to_string().contains("gpus[0].memory_gb"), "{e}");
        let inv = Inventory::parse(INV, p).unwrap();
        let e = Models::parse(&MODELS.replace("kv_gb: 40", "kv_gb: 70"), p, &inv).unwrap_err();
        assert!(e.to_string().contains("models[0].profiles[0].kv_gb") && e.to_string().contains("do not fit"), "{e}");
        let e = Models::parse(&MODELS.replace("gpu: a100", "gpu: h100"), p, &inv).unwrap_err();
        assert!(e.to_string().contains("models[0].profiles[0].gpu"), "{e}");
        let models = Models::parse(MODELS, p, &inv).unwrap();
        let e = Traffic::parse("classes:\n  - {name: c, rate_qps: 1, input_tokens: 1, output_tokens: 0}\n", p, &models)
            .unwrap_err();
        assert!(e.to_string().contains("classes[0].output_tokens"), "{e}");
        let e = Traffic::parse(
            "classes:\n  - {name: c, rate_qps: 1, input_tokens: 1, output_tokens: 5, quality: {z: 0.5}}\n",
            p,
            &models,
        )
        .unwrap_err();
        assert!(e.to_string().contains("classes[0].quality.z"), "{e}");
    }
}
