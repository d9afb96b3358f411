//! A bounded cache of the estimator's predictions, keyed by the prompt and task hint: repeated
//! prompts (common in real traffic) skip the kNN search. One per trained estimator (a retrain
//! starts an empty one). Two generations: lookups hit the young map or promote from the old one;
//! when the young map holds half the capacity it becomes the old one, so the least recently used
//! half is dropped at once — an LRU approximation with O(1) operations and at most `capacity`
//! entries.

use crate::metrics::names;
use estimator::features::SparseVec;
use estimator::Prediction;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::Mutex;

/// Two independent 64-bit hashes of (task, prompt): the key and a check against collisions.
fn key(prompt: &str, task: Option<&str>) -> (u64, u64) {
    let mut a = std::hash::DefaultHasher::new();
    (task, prompt).hash(&mut a);
    let mut b = std::hash::DefaultHasher::new();
    (prompt.len(), prompt, "llmroute", task).hash(&mut b);
    (a.finish(), b.finish())
}

/// What is kept per prompt: the estimator's prediction and the prompt's heaviest TF-IDF features
/// (the online index's key), both from one feature extraction on a miss — a hit needs neither.
#[derive(Debug, Clone)]
pub struct Cached {
    pub prediction: Prediction,
    pub features: Arc<SparseVec>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<u64, (u64, Cached)>,
    old: HashMap<u64, (u64, Cached)>,
}

pub struct PredictionCache {
    capacity: usize,
    maps: Mutex<Generations>,
}

impl PredictionCache {
    /// A cache of at most `capacity` predictions (0: no caching).
    pub fn new(capacity: usize) -> PredictionCache {
        PredictionCache { capacity, maps: Mutex::new(Generations::default()) }
    }

    /// The cached prediction for (prompt, task), or `predict`'s, which is then cached.
    pub fn get_or(&self, prompt: &str, task: Option<&str>, predict: impl FnOnce() -> Cached) -> Cached {
        if self.capacity == 0 {
            return predict();
        }
        let (k, check) = key(prompt, task);
        {
            let mut g = self.maps.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((c, p)) = g.young.get(&k) {
                if *c == check {
                    metrics::counter!(names::PREDICTION_CACHE_TOTAL, "result" => "hit").increment(1);
                    return p.clone();
                }
            }
            if let Some((c, p)) = g.old.remove(&k) {
                if c == check {
                    metrics::counter!(names::PREDICTION_CACHE_TOTAL, "result" => "hit").increment(1);
                    let out = p.clone();
                    let dropped = self.insert(&mut g, k, (c, p));
                    drop(g);
                    drop(dropped);
                    return out;
                }
            }
        }
        metrics::counter!(names::PREDICTION_CACHE_TOTAL, "result" => "miss").increment(1);
        // Predict outside the lock: concurrent misses on different prompts run in parallel.
        let p = predict();
        let mut g = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = self.insert(&mut g, k, (check, p.clone()));
        drop(g);
        drop(dropped);
        p
    }

    /// Inserts into the young generation; when it is full it becomes the old one and a new young
    /// one is made with room for a whole generation (no growth rehashes). Returns the generation
    /// dropped, for the caller to free after the lock (thousands of predictions).
    fn insert(&self, g: &mut Generations, k: u64, v: (u64, Cached)) -> Option<HashMap<u64, (u64, Cached)>> {
        let half = self.capacity.div_ceil(2);
        let mut dropped = None;
        if g.young.len() >= half {
            let young = std::mem::replace(&mut g.young, HashMap::with_capacity(half));
            dropped = Some(std::mem::replace(&mut g.old, young));
        }
        g.young.insert(k, v);
        dropped
    }

    /// Entries held (both generations).
    pub fn len(&self) -> usize {
        let g = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(x: f64) -> Cached {
        let mut p = Prediction::zeros(1);
        p.mu[0] = x;
        Cached { prediction: p, features: Arc::new(vec![(7, 1.0)]) }
    }

    #[test]
    fn hits_return_the_first_prediction_and_skip_the_estimator() {
        let c = PredictionCache::new(8);
        let mut calls = 0;
        let a = c.get_or("what is 2+2", None, || {
            calls += 1;
            pred(0.5)
        });
        let b = c.get_or("what is 2+2", None, || {
            calls += 1;
            pred(0.9)
        });
        assert_eq!((a.prediction.mu[0], b.prediction.mu[0], calls), (0.5, 0.5, 1));
        // The features come back with the prediction (a hit computes neither).
        assert_eq!(*b.features, vec![(7, 1.0)]);
        // The task hint is part of the key.
        let t = c.get_or("what is 2+2", Some("math"), || pred(0.7));
        assert_eq!(t.prediction.mu[0], 0.7);
    }

    #[test]
    fn it_stays_bounded_and_keeps_what_is_used() {
        let c = PredictionCache::new(8);
        c.get_or("hot", None, || pred(1.0));
        for i in 0..100 {
            c.get_or(&format!("cold {i}"), None, || pred(0.0));
            // The hot prompt is used all the time: it survives every generation change.
            assert_eq!(c.get_or("hot", None, || pred(-1.0)).prediction.mu[0], 1.0, "evicted at {i}");
            assert!(c.len() <= 8, "{} entries", c.len());
        }
        assert_eq!(PredictionCache::new(0).get_or("x", None, || pred(0.3)).prediction.mu[0], 0.3);
    }
}
