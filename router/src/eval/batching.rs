//! How test traffic is cut into batches.

use super::data::SplitData;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Batching {
    /// Shuffled traffic.
    Random,
    /// Each batch holds queries of one task, tasks in random order.
    ByTask,
    /// Each batch holds queries of one task, the most expensive tasks and queries first: what a
    /// knob calibrated on average traffic gets wrong.
    Adversarial,
}

pub fn make_batches(d: &SplitData, mode: Batching, size: usize, seed: u64) -> Vec<Vec<usize>> {
    let size = size.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xba7c);
    if mode == Batching::Random {
        let mut idx: Vec<usize> = (0..d.n).collect();
        idx.shuffle(&mut rng);
        return idx.chunks(size).map(|c| c.to_vec()).collect();
    }
    let mut by_task: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for q in 0..d.n {
        by_task.entry(d.tasks[q].as_str()).or_default().push(q);
    }
    // The most expensive model's true cost: the cost a query drives when routed up.
    let max_cost = |q: usize| (0..d.m).map(|j| d.cost[q * d.m + j]).fold(0.0, f64::max);
    let mut groups: Vec<Vec<usize>> = by_task.into_values().collect();
    match mode {
        Batching::ByTask => {
            groups.shuffle(&mut rng);
            for g in &mut groups {
                g.shuffle(&mut rng);
            }
        }
        _ => {
            for g in &mut groups {
                g.sort_by(|&a, &b| max_cost(b).total_cmp(&max_cost(a)).then(a.cmp(&b)));
            }
            let mean = |g: &Vec<usize>| g.iter().map(|&q| max_cost(q)).sum::<f64>() / g.len() as f64;
            groups.sort_by(|a, b| mean(b).total_cmp(&mean(a)));
        }
    }
    groups.iter().flat_map(|g| g.chunks(size).map(|c| c.to_vec())).collect()
}
