//! What the estimator learns from feedback while the router runs: every scored answer becomes a
//! document of a small kNN index of its own (the query's heaviest TF-IDF features, the model that
//! answered, the score). A new query's prediction is the trained estimator's, with the feedback
//! documents most similar to it added as neighbours for their model: the model's Beta posterior
//! gets α += w·score, β += w·(1 − score) (w the cosine), starting from the α, β its μ and σ imply.
//! A model scored well on queries like this one rises; one scored badly falls; the rest is unchanged.

use estimator::features::SparseVec;
use estimator::Prediction;
use std::collections::HashMap;
use std::sync::RwLock;

/// Features a query is looked up with and a feedback document keeps (its heaviest, renormalized),
/// as the trained retrieval cuts queries; each costs 8 bytes in every kept request (64 did no
/// better than 32 in the stream test).
pub const TERMS: usize = 32;
/// Feedback neighbours a prediction takes.
const K: usize = 25;

/// A query's `n` heaviest TF-IDF features, L2-normalized, by index.
pub fn heaviest(mut v: SparseVec, n: usize) -> SparseVec {
    if v.len() > n {
        v.select_nth_unstable_by(n, |a, b| b.1.total_cmp(&a.1));
        v.truncate(n);
    }
    estimator::features::normalize(&mut v);
    v.sort_unstable_by_key(|p| p.0);
    v
}

struct Doc {
    model: String,
    score: f64,
}

#[derive(Default)]
struct Inner {
    docs: Vec<Doc>,
    /// feature → (document, weight)
    postings: HashMap<u32, Vec<(u32, f32)>>,
    /// The features of every document (to rebuild the postings when the oldest are dropped).
    features: Vec<SparseVec>,
}

/// Adds document `d`'s features to the postings.
fn post(postings: &mut HashMap<u32, Vec<(u32, f32)>>, d: u32, features: &SparseVec) {
    for &(t, w) in features {
        postings.entry(t).or_default().push((d, w));
    }
}

/// The feedback documents, bounded (past `max`, the oldest half is dropped).
pub struct OnlineIndex {
    inner: RwLock<Inner>,
    max: usize,
}

impl OnlineIndex {
    pub fn new(max: usize) -> OnlineIndex {
        OnlineIndex { inner: RwLock::new(Inner::default()), max: max.max(2) }
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a scored answer of `model` to the query with `features`.
    pub fn add(&self, features: &SparseVec, model: &str, score: f64) {
        if features.is_empty() {
            return;
        }
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if g.docs.len() >= self.max {
            let drop = g.docs.len() / 2;
            g.docs.drain(..drop);
            g.features.drain(..drop);
            let Inner { postings, features, .. } = &mut *g;
            postings.clear();
            for (d, f) in features.iter().enumerate() {
                post(postings, d as u32, f);
            }
        }
        let d = g.docs.len() as u32;
        post(&mut g.postings, d, features);
        g.docs.push(Doc { model: model.to_string(), score });
        g.features.push(features.clone());
    }

    /// Per model name: (Σ w·score, Σ w·(1 − score)) over the `K` feedback documents most similar
    /// to the query (cosine > 0). Empty when nothing is similar.
    pub fn evidence(&self, features: &SparseVec) -> HashMap<String, (f64, f64)> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::new();
        if g.docs.is_empty() {
            return out;
        }
        let mut acc: HashMap<u32, f32> = HashMap::new();
        for (t, w) in features {
            if let Some(list) = g.postings.get(t) {
                for &(d, wd) in list {
                    *acc.entry(d).or_default() += w * wd;
                }
            }
        }
        let mut hits: Vec<(u32, f32)> = acc.into_iter().filter(|h| h.1 > 0.0).collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(K);
        for (d, w) in hits {
            let doc = &g.docs[d as usize];
            let e = out.entry(doc.model.clone()).or_insert((0.0, 0.0));
            e.0 += w as f64 * doc.score;
            e.1 += w as f64 * (1.0 - doc.score);
        }
        out
    }
}

/// The most pseudo-observations a trained prediction counts for against feedback: what its own
/// neighbours weigh — the prior's 2 plus k = 25 neighbours at a typical cosine of 0.3. (Its σ,
/// scaled by the estimator's calibration, would imply hundreds, and feedback would never move it.)
const BASE_WEIGHT: f64 = 2.0 + 25.0 * 0.3;

/// Adds feedback evidence (α, β increments) to model `e`'s prediction: the Beta posterior its μ
/// and σ imply (n = μ(1 − μ)/σ² − 1 pseudo-observations, between 1 and `BASE_WEIGHT`), updated
/// and turned back into μ; σ keeps the estimator's calibration — it scales by the ratio of the
/// Beta's spread after and before.
pub fn update(p: &mut Prediction, e: usize, (a, b): (f64, f64)) {
    let (Some(mu), Some(sigma)) = (p.mu.get(e).copied(), p.sigma.get(e).copied()) else { return };
    let mu = mu.clamp(1e-6, 1.0 - 1e-6);
    let n = if sigma > 0.0 { (mu * (1.0 - mu) / (sigma * sigma) - 1.0).clamp(1.0, BASE_WEIGHT) } else { 1.0 };
    let (alpha, beta) = (mu * n + a, (1.0 - mu) * n + b);
    let m = alpha / (alpha + beta);
    let before = (mu * (1.0 - mu) / (n + 1.0)).sqrt();
    let after = (m * (1.0 - m) / (alpha + beta + 1.0)).sqrt();
    p.mu[e] = m;
    p.sigma[e] = sigma * after / before;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fv(terms: &[(u32, f32)]) -> SparseVec {
        heaviest(terms.to_vec(), TERMS)
    }

    #[test]
    fn similar_feedback_moves_its_models_mu_and_nothing_else() {
        let idx = OnlineIndex::new(100);
        let math = fv(&[(1, 1.0), (2, 1.0), (3, 0.5)]);
        for _ in 0..10 {
            idx.add(&math, "b", 1.0);
            idx.add(&math, "a", 0.0);
        }
        idx.add(&fv(&[(9, 1.0)]), "a", 1.0); // unrelated
        let ev = idx.evidence(&fv(&[(1, 1.0), (2, 0.8)]));
        assert!(ev["b"].0 > 5.0 && ev["b"].1 == 0.0, "{ev:?}");
        assert!(ev["a"].0 == 0.0 && ev["a"].1 > 5.0, "{ev:?}");
        assert!(idx.evidence(&fv(&[(42, 1.0)])).is_empty(), "nothing similar, no evidence");

        let mut p = Prediction::zeros(2);
        p.mu = vec![0.7, 0.4];
        p.sigma = vec![0.1, 0.1];
        update(&mut p, 0, ev["a"]);
        update(&mut p, 1, ev["b"]);
        assert!(p.mu[0] < 0.5 && p.mu[1] > 0.5, "{:?}", p.mu);
        assert!(p.sigma[1] < 0.1, "more evidence, narrower: {:?}", p.sigma);
    }

    #[test]
    fn the_index_stays_bounded_and_keeps_the_newest() {
        let idx = OnlineIndex::new(10);
        for i in 0..25 {
            idx.add(&fv(&[(i, 1.0)]), "m", 1.0);
        }
        assert!(idx.len() <= 10, "{}", idx.len());
        assert!(!idx.evidence(&fv(&[(24, 1.0)])).is_empty(), "the newest is kept");
        assert!(idx.evidence(&fv(&[(0, 1.0)])).is_empty(), "the oldest went");
    }

    #[test]
    fn features_keep_the_heaviest_terms_normalized() {
        let v: SparseVec = (0..40).map(|i| (i, i as f32)).collect();
        let f = heaviest(v, TERMS);
        assert_eq!(f.len(), TERMS);
        assert!(f.iter().all(|(t, _)| *t >= 8));
        assert!((f.iter().map(|(_, w)| w * w).sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
