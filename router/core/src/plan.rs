//! The instance plan the allocator writes and the router reads: instances of each model per GPU
//! type. The router's slots per model are Σ instances × the catalog's max concurrency.

use crate::{CoreError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// What produced it (e.g. "optimized", "uniform", "proportional").
    pub kind: String,
    /// model → GPU type → instances.
    pub instances: BTreeMap<String, BTreeMap<String, u32>>,
    /// class → model → share of the class's traffic.
    #[serde(default)]
    pub routing: BTreeMap<String, BTreeMap<String, f64>>,
    /// Expected quality of the served traffic (rate-weighted mean μ).
    #[serde(default)]
    pub expected_quality: f64,
    #[serde(default)]
    pub usd_per_hour: f64,
    /// GPU type → GPUs used.
    #[serde(default)]
    pub gpus_used: BTreeMap<String, u32>,
    /// The router's USD budget per query the plan was made for (None: no budget).
    #[serde(default)]
    pub budget_per_query: Option<f64>,
    /// The input files the plan was made from (for `allocator simulate`'s baselines).
    #[serde(default)]
    pub inputs: BTreeMap<String, PathBuf>,
}

impl Plan {
    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::Io { path: path.to_path_buf(), source: e })?;
        let plan: Plan =
            serde_yaml::from_str(&text).map_err(|e| CoreError::config(path, "(document)", e.to_string()))?;
        for (m, per) in &plan.instances {
            if m.trim().is_empty() {
                return Err(CoreError::config(path, "instances", "empty model name"));
            }
            if per.is_empty() {
                return Err(CoreError::config(path, format!("instances.{m}"), "no GPU types"));
            }
        }
        Ok(plan)
    }

    /// Instances of `model` over all GPU types (0 when the plan does not run it).
    pub fn instances_of(&self, model: &str) -> u32 {
        self.instances.get(model).map_or(0, |per| per.values().sum())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self)
            .map_err(|e| CoreError::Invalid(format!("the plan cannot be written as YAML: {e}")))?;
        std::fs::write(path, text).map_err(|e| CoreError::Io { path: path.to_path_buf(), source: e })
    }
}
