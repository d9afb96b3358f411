//! Random allocation inputs (for property tests and the solve-time benchmark).

use crate::inputs::{Class, Gpu, Inventory, ModelProfile, Models, Profile, Traffic};
use rand::{Rng, SeedableRng};

/// `nm` models × `ng` GPU types × `nc` classes; memory, throughput and quality drawn in realistic
/// ranges; the GPU counts leave room for the traffic, so the instance is usually feasible.
pub fn random_inputs(nm: usize, ng: usize, nc: usize, seed: u64) -> (Inventory, Models, Traffic) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let gpus: Vec<Gpu> = (0..ng)
        .map(|g| {
            let memory_gb = [24.0, 48.0, 80.0, 141.0][g % 4];
            Gpu {
                kind: format!("gpu{g}"),
                count: rng.gen_range(8..40),
                memory_gb,
                usd_per_hour: memory_gb / 40.0 * rng.gen_range(0.8..1.2),
                node_label: format!("gpu{g}"),
            }
        })
        .collect();
    let models: Vec<ModelProfile> = (0..nm)
        .map(|m| {
            let weights = rng.gen_range(4.0..150.0f64);
            let profiles = (0..ng)
                .filter_map(|g| {
                    let mem = gpus[g].memory_gb;
                    let tp = [1u32, 2, 4, 8].into_iter().find(|&tp| weights * 1.3 <= mem * tp as f64)?;
                    if tp > gpus[g].count || rng.gen_bool(0.2) {
                        return None;
                    }
                    let kv = (mem * tp as f64 - weights).min(weights * 2.0) * rng.gen_range(0.3..0.9);
                    let bw = mem / 24.0 * tp as f64;
                    Some(Profile {
                        gpu: g,
                        tensor_parallel: tp,
                        weights_gb: weights,
                        kv_gb: kv,
                        tokens_per_s: 40_000.0 * bw / weights,
                    })
                })
                .collect::<Vec<_>>();
            ModelProfile {
                name: format!("model{m}"),
                max_concurrency: 32,
                min_replicas: if rng.gen_bool(0.2) { 1 } else { 0 },
                image: "vllm/vllm-openai:latest".into(),
                served_model: format!("model{m}"),
                profiles,
            }
        })
        .filter(|m| !m.profiles.is_empty())
        .collect();
    let classes: Vec<Class> = (0..nc)
        .map(|c| Class {
            name: format!("class{c}"),
            rate_qps: rng.gen_range(1.0..20.0),
            input_tokens: rng.gen_range(100.0..2000.0),
            output_tokens: rng.gen_range(20.0..600.0),
            tasks: vec![format!("class{c}")],
            quality: Some((0..models.len()).map(|_| rng.gen_range(0.2..0.95)).collect()),
        })
        .collect();
    (
        Inventory { gpus, budget_usd_per_hour: None },
        Models { prefill_cost: 0.1, target_utilization: 0.8, models },
        Traffic { classes },
    )
}
