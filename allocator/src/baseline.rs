//! Naive plans an operator might write by hand, with the same GPUs of each type as a given plan:
//! `uniform` (instances spread evenly over the models each GPU type can run) and `proportional`
//! (instances in proportion to the load each model would get if every class went to its best
//! model).

use crate::inputs::Models;
use crate::solve::Instance;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    Uniform,
    Proportional,
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Uniform => "uniform",
            Baseline::Proportional => "proportional",
        }
    }

    pub fn parse(s: &str) -> Option<Baseline> {
        match s {
            "uniform" => Some(Baseline::Uniform),
            "proportional" => Some(Baseline::Proportional),
            _ => None,
        }
    }
}

/// Instances[m][g] for a baseline using at most `gpus[g]` GPUs of each type.
pub fn plan(inst: &Instance, kind: Baseline, gpus: &[u32]) -> Vec<Vec<u32>> {
    let models: &Models = inst.models;
    let (nm, ng) = (models.models.len(), inst.inv.gpus.len());
    // Target weight per model: 1 (uniform) or its best-model load share (proportional).
    let mut weight = vec![1.0; nm];
    if kind == Baseline::Proportional {
        weight = vec![0.0; nm];
        for c in 0..inst.traffic.classes.len() {
            let best = (0..nm).max_by(|&a, &b| inst.quality(c, a).total_cmp(&inst.quality(c, b))).unwrap_or(0);
            weight[best] += inst.traffic.classes[c].rate_qps * inst.load(c);
        }
    }
    let mut inst_out = vec![vec![0u32; ng]; nm];
    let mut left: Vec<u32> = gpus.to_vec();
    // Hand out instances one at a time to the model furthest below its share of instances
    // (weighted), on a GPU type it fits, until nothing fits.
    let total_w: f64 = weight.iter().sum::<f64>().max(1e-12);
    loop {
        let placed: u32 = inst_out.iter().flatten().sum();
        let mut best: Option<(f64, usize, usize)> = None;
        for m in 0..nm {
            if weight[m] <= 0.0 {
                continue;
            }
            let have: u32 = inst_out[m].iter().sum();
            let deficit = weight[m] / total_w * (placed + 1) as f64 - have as f64;
            // The GPU type with room that gives the most tokens/s per GPU.
            let g = models.models[m]
                .profiles
                .iter()
                .filter(|p| left[p.gpu] >= p.tensor_parallel)
                .max_by(|a, b| {
                    (a.tokens_per_s / a.tensor_parallel as f64).total_cmp(&(b.tokens_per_s / b.tensor_parallel as f64))
                })
                .map(|p| p.gpu);
            if let Some(g) = g {
                if best.is_none_or(|(d, _, _)| deficit > d) {
                    best = Some((deficit, m, g));
                }
            }
        }
        let Some((_, m, g)) = best else { break };
        let tp = models.models[m].profiles.iter().find(|p| p.gpu == g).map_or(1, |p| p.tensor_parallel);
        left[g] -= tp;
        inst_out[m][g] += 1;
    }
    inst_out
}
