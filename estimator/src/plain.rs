//! `plain-knn`: the reference estimator every improvement is measured against (REFERENCE.md).
//! TF-IDF over lower-cased word 1–2-grams (scikit-learn's smooth idf, raw counts, L2 norm),
//! cosine top-k (k = 25), and nothing else: μ = the neighbours' mean score, σ = √(μ(1−μ)/(k+1)),
//! cost = the neighbours' mean recorded cost and its spread their standard deviation, output
//! tokens their mean. No task hint, no prior, no trained head.

use crate::error::{Error, Result};
use crate::knn::{outcome_cost, Prediction};
use crate::{Catalog, Record};
use std::collections::{BTreeMap, HashMap};

pub struct PlainKnn {
    pub models: Vec<String>,
    pub k: usize,
    vocab: HashMap<String, u32>,
    idf: Vec<f32>,
    /// term → (document, weight)
    postings: Vec<Vec<(u32, f32)>>,
    scores: Vec<Vec<f64>>,
    costs: Vec<Vec<f64>>,
    tokens: Vec<Vec<Option<f64>>>,
}

fn terms(text: &str) -> Vec<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(|w| w.to_lowercase())
        .collect();
    let mut out = words.clone();
    out.extend(words.windows(2).map(|w| format!("{} {}", w[0], w[1])));
    out
}

impl PlainKnn {
    pub fn train(records: &[&Record], models: &[String], catalog: Option<&Catalog>, k: usize) -> Result<PlainKnn> {
        if records.is_empty() {
            return Err(Error::Invalid("plain-knn: no training records".into()));
        }
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut df: Vec<u32> = Vec::new();
        // Term counts in term order (BTreeMap): the float sums below add in the same order on every
        // run, so the neighbours (and every figure built on them) are reproducible.
        let mut doc_terms: Vec<BTreeMap<u32, f32>> = Vec::with_capacity(records.len());
        for r in records {
            let mut tf: BTreeMap<u32, f32> = BTreeMap::new();
            for t in terms(&r.prompt) {
                let next = vocab.len() as u32;
                let id = *vocab.entry(t).or_insert(next);
                if id as usize == df.len() {
                    df.push(0);
                }
                *tf.entry(id).or_insert(0.0) += 1.0;
            }
            for &id in tf.keys() {
                df[id as usize] += 1;
            }
            doc_terms.push(tf);
        }
        let n = records.len() as f32;
        let idf: Vec<f32> = df.iter().map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0).collect();
        let mut postings: Vec<Vec<(u32, f32)>> = vec![Vec::new(); vocab.len()];
        for (d, tf) in doc_terms.iter().enumerate() {
            let norm = tf.iter().map(|(&t, &c)| (c * idf[t as usize]).powi(2)).sum::<f32>().sqrt().max(1e-12);
            for (&t, &c) in tf {
                postings[t as usize].push((d as u32, c * idf[t as usize] / norm));
            }
        }
        let mut scores = Vec::with_capacity(records.len());
        let mut costs = Vec::with_capacity(records.len());
        let mut tokens = Vec::with_capacity(records.len());
        for r in records {
            scores.push(models.iter().map(|m| r.outcomes.get(m).map_or(0.0, |o| o.score)).collect());
            costs.push(models.iter().map(|m| outcome_cost(r, m, catalog)).collect::<Result<Vec<f64>>>()?);
            tokens
                .push(models.iter().map(|m| r.outcomes.get(m).and_then(|o| o.output_tokens).map(f64::from)).collect());
        }
        Ok(PlainKnn { models: models.to_vec(), k: k.max(1), vocab, idf, postings, scores, costs, tokens })
    }

    /// Cosine similarity of `prompt` to every training document.
    fn similarities(&self, prompt: &str) -> Vec<f32> {
        let mut tf: BTreeMap<u32, f32> = BTreeMap::new();
        for t in terms(prompt) {
            if let Some(&id) = self.vocab.get(&t) {
                *tf.entry(id).or_insert(0.0) += 1.0;
            }
        }
        let norm = tf.iter().map(|(&t, &c)| (c * self.idf[t as usize]).powi(2)).sum::<f32>().sqrt().max(1e-12);
        let mut acc = vec![0.0f32; self.scores.len()];
        for (&t, &c) in &tf {
            let w = c * self.idf[t as usize] / norm;
            for &(d, x) in &self.postings[t as usize] {
                acc[d as usize] += w * x;
            }
        }
        acc
    }

    /// Predicts for `prompt`, leaving training document `exclude` out (leave-one-out on train).
    pub fn predict(&self, prompt: &str, exclude: Option<usize>) -> Prediction {
        let acc = self.similarities(prompt);
        let mut hits: Vec<(usize, f32)> =
            acc.iter().enumerate().filter(|&(d, _)| Some(d) != exclude).map(|(d, &s)| (d, s)).collect();
        let k = self.k.min(hits.len());
        if k < hits.len() {
            hits.select_nth_unstable_by(k, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            hits.truncate(k);
        }
        let mm = self.models.len();
        let kf = hits.len().max(1) as f64;
        let mut p = Prediction::zeros(mm);
        for j in 0..mm {
            let mu = hits.iter().map(|&(d, _)| self.scores[d][j]).sum::<f64>() / kf;
            let c = hits.iter().map(|&(d, _)| self.costs[d][j]).sum::<f64>() / kf;
            let cv = hits.iter().map(|&(d, _)| (self.costs[d][j] - c).powi(2)).sum::<f64>() / (kf - 1.0).max(1.0);
            let toks: Vec<f64> = hits.iter().filter_map(|&(d, _)| self.tokens[d][j]).collect();
            let t = toks.iter().sum::<f64>() / toks.len().max(1) as f64;
            let tv = toks.iter().map(|x| (x - t).powi(2)).sum::<f64>() / (toks.len() as f64 - 1.0).max(1.0);
            p.mu[j] = mu;
            p.sigma[j] = (mu * (1.0 - mu) / (kf + 1.0)).sqrt();
            p.cost[j] = c;
            p.cost_sd[j] = cv.sqrt();
            p.output_tokens[j] = t;
            p.output_tokens_sd[j] = tv.sqrt();
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use std::collections::BTreeMap;

    fn rec(id: usize, prompt: &str, a: f64, cost_a: f64) -> Record {
        let o = |s: f64, c: f64| Outcome {
            score: s,
            cost_usd: Some(c),
            input_tokens: None,
            output_tokens: Some(10),
            latency_ms: None,
        };
        Record {
            id: id.to_string(),
            task: None,
            prompt: prompt.into(),
            outcomes: BTreeMap::from([("a".to_string(), o(a, cost_a)), ("b".to_string(), o(1.0 - a, 1.0))]),
        }
    }

    #[test]
    fn neighbours_by_words_and_bigrams_leave_one_out() {
        let recs = [
            rec(0, "integrate the function over the interval", 1.0, 2.0),
            rec(1, "integrate this function please", 1.0, 4.0),
            rec(2, "who wrote the play hamlet", 0.0, 1.0),
            rec(3, "who wrote the novel", 0.0, 1.0),
        ];
        let refs: Vec<&Record> = recs.iter().collect();
        let models = vec!["a".to_string(), "b".to_string()];
        let p = PlainKnn::train(&refs, &models, None, 2).unwrap();
        let q = p.predict("integrate the function", None);
        assert_eq!(q.mu[0], 1.0);
        assert!((q.cost[0] - 3.0).abs() < 1e-12 && (q.cost_sd[0] - 2f64.sqrt()).abs() < 1e-12);
        // Leave-one-out: document 0 is not its own neighbour.
        let q = p.predict(&recs[0].prompt, Some(0));
        assert!((q.cost[0] - 2.5).abs() < 1e-12, "{}", q.cost[0]);
        let q = p.predict("who wrote it", None);
        assert_eq!(q.mu[0], 0.0);
        assert_eq!(q.mu[1], 1.0);
    }

    /// Training twice gives bit-identical predictions (the TF-IDF sums add in term order).
    #[test]
    fn predictions_are_reproducible() {
        let prompts: Vec<String> =
            (0..60).map(|i| format!("question {} about topic {} and more words {}", i % 7, i % 5, i)).collect();
        let recs: Vec<Record> =
            prompts.iter().enumerate().map(|(i, t)| rec(i, t, (i % 2) as f64, 1.0 + i as f64)).collect();
        let refs: Vec<&Record> = recs.iter().collect();
        let models = vec!["a".to_string(), "b".to_string()];
        let (p1, p2) =
            (PlainKnn::train(&refs, &models, None, 5).unwrap(), PlainKnn::train(&refs, &models, None, 5).unwrap());
        // A long query sharing many terms with each document: its similarities are sums of many
        // terms, whose float rounding depends on the order they are added in.
        let long: String = prompts[..20].join(" ");
        for _ in 0..20 {
            let (s1, s2) = (p1.similarities(&long), p2.similarities(&long));
            assert!(s1.iter().zip(&s2).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        for t in ["question 3 about topic 2", "more words topic 4 question", long.as_str()] {
            assert_eq!(p1.predict(t, None), p2.predict(t, None));
        }
    }
}
