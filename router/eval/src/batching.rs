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

#[cfg(test)]
mod tests {
    use super::*;

    fn split(tasks: &[&str], cost: &[f64]) -> SplitData {
        let n = tasks.len();
        SplitData {
            n,
            m: 1,
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            mu: vec![0.5; n],
            sigma: vec![0.1; n],
            pred_cost: cost.to_vec(),
            cost_sd: vec![0.0; n],
            cost_var: vec![0.0; n],
            tokens: vec![1.0; n],
            score: vec![1.0; n],
            cost: cost.to_vec(),
        }
    }

    #[test]
    fn every_mode_covers_every_query_once() {
        let d = split(&["a", "b", "a", "c", "b", "a", "c"], &[1.0, 5.0, 2.0, 3.0, 6.0, 1.5, 0.5]);
        for mode in [Batching::Random, Batching::ByTask, Batching::Adversarial] {
            let b = make_batches(&d, mode, 2, 7);
            let mut all: Vec<usize> = b.iter().flatten().copied().collect();
            all.sort();
            assert_eq!(all, (0..7).collect::<Vec<_>>(), "{mode:?}");
            assert!(b.iter().all(|x| !x.is_empty() && x.len() <= 2));
            if mode != Batching::Random {
                assert!(
                    b.iter().all(|x| x.iter().all(|&q| d.tasks[q] == d.tasks[x[0]])),
                    "{mode:?}: one task per batch"
                );
            }
        }
    }

    #[test]
    fn adversarial_puts_the_dearest_task_and_queries_first() {
        let d = split(&["a", "b", "a", "c", "b", "a", "c"], &[1.0, 5.0, 2.0, 3.0, 6.0, 1.5, 0.5]);
        let b = make_batches(&d, Batching::Adversarial, 2, 7);
        assert_eq!(b[0], vec![4, 1]); // task b: mean 5.5, dearest query first
        assert_eq!(b[1], vec![3, 6]); // task c: mean 1.75
        assert_eq!(b[2], vec![2, 5]); // task a: mean 1.5, then its last query alone
        assert_eq!(b[3], vec![0]);
    }
}
