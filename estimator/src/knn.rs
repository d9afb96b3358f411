//! The baseline estimator: cosine kNN over hashed TF-IDF features with a Beta posterior per model.
//!
//! For a query, the k most similar training queries vote with weight = cosine similarity:
//! α = s₀·p + Σ w·score, β = s₀·(1 − p) + Σ w·(1 − score), where p is the per-task prior mean
//! (when a task hint is known) or the model's overall mean, and s₀ the prior strength.
//! μ = α / (α + β) and σ = sqrt(μ(1 − μ) / (α + β + 1)) (the posterior's standard deviation).
//! Output tokens are the similarity-weighted neighbour mean shrunk toward the task's mean; cost = price_in · input tokens
//! (known from the prompt) + price_out · predicted output tokens.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::features::{term_counts, Idf, SparseVec};
use crate::records::Record;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnConfig {
    /// Neighbours per query.
    pub k: usize,
    /// Prior strength s₀ (pseudo-observations).
    pub prior_strength: f64,
    /// Use the record's task as a hint for the prior.
    pub use_task: bool,
    /// Features in more than this fraction of training documents are ignored for retrieval.
    pub max_df_frac: f32,
    /// Score neighbours on the query's this many heaviest TF-IDF features only (renormalized);
    /// 0 = all. Trades a little accuracy for speed on long prompts.
    pub max_query_terms: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig { k: 25, prior_strength: 2.0, use_task: true, max_df_frac: 0.5, max_query_terms: 0 }
    }
}

/// Per-model prediction for one query (vectors indexed like `KnnEstimator::models`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub output_tokens: Vec<f64>,
    pub cost: Vec<f64>,
    /// The spread of the realized cost around `cost` (standard deviation, USD): the neighbours'
    /// output-token spread × the output price, with the model's overall spread as one
    /// pseudo-observation. Raw: the eval harness and the router calibrate it per model.
    pub cost_sd: Vec<f64>,
    /// The same spread in output tokens (the router prices it with its catalog).
    pub output_tokens_sd: Vec<f64>,
}

impl Prediction {
    /// All zeros for `m` models.
    pub fn zeros(m: usize) -> Prediction {
        Prediction {
            mu: vec![0.0; m],
            sigma: vec![0.0; m],
            output_tokens: vec![0.0; m],
            cost: vec![0.0; m],
            cost_sd: vec![0.0; m],
            output_tokens_sd: vec![0.0; m],
        }
    }
}

/// Per-token prices of one model, in USD.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenPrices {
    pub input: f64,
    pub output: f64,
}

struct TrainDoc {
    scores: Vec<f64>,
    output_tokens: Vec<Option<f64>>,
    task: Option<String>,
}

pub struct KnnEstimator {
    pub models: Vec<String>,
    pub config: KnnConfig,
    pub prices: Vec<TokenPrices>,
    idf: Idf,
    /// Postings in CSR form: feature f's (document, weight) pairs are
    /// `postings[post_start[f]..post_start[f + 1]]`, in document order.
    post_start: Vec<u32>,
    postings: Vec<(u32, f32)>,
    max_df: u32,
    docs: Vec<TrainDoc>,
    global_mean: Vec<f64>,
    task_mean: HashMap<String, Vec<f64>>,
    mean_output_tokens: Vec<f64>,
    /// Variance of the recorded output tokens per model (0 where none are recorded).
    var_output_tokens: Vec<f64>,
    task_output_tokens: HashMap<String, Vec<f64>>,
    /// Training documents' sentence embeddings (row-major, `dense_dim` wide), when retrieval is
    /// by embedding instead of hashed TF-IDF.
    dense: Option<Vec<f32>>,
    dense_dim: usize,
}

/// The realized cost of `model` on `record`: the recorded `cost_usd`, else catalog prices × tokens.
pub fn outcome_cost(record: &Record, model: &str, catalog: Option<&Catalog>) -> Result<f64> {
    let o = record
        .outcomes
        .get(model)
        .ok_or_else(|| Error::Invalid(format!("record {} has no outcome for model {model}", record.id)))?;
    if let Some(c) = o.cost_usd {
        return Ok(c);
    }
    let entry = catalog.and_then(|c| c.get(model)).ok_or_else(|| {
        Error::Invalid(format!(
            "record {}: model {model} has no cost_usd and no catalog price (pass --catalog)",
            record.id
        ))
    })?;
    let input = o.input_tokens.unwrap_or_else(|| crate::estimate_tokens(&record.prompt));
    let output = o.output_tokens.unwrap_or(entry.default_output_tokens);
    Ok(entry.cost(input as f64, output as f64))
}

/// Per-token prices: from the catalog when it lists the model, else fitted by least squares on
/// the training records' (input tokens, output tokens) → cost_usd.
fn token_prices(records: &[&Record], model: &str, catalog: Option<&Catalog>) -> Result<TokenPrices> {
    if let Some(e) = catalog.and_then(|c| c.get(model)) {
        return Ok(TokenPrices { input: e.price_in_per_mtok / 1e6, output: e.price_out_per_mtok / 1e6 });
    }
    let (mut sii, mut sio, mut soo, mut sic, mut soc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut n = 0;
    for r in records {
        let o = &r.outcomes[model];
        let Some(c) = o.cost_usd else { continue };
        let i = o.input_tokens.unwrap_or_else(|| crate::estimate_tokens(&r.prompt)) as f64;
        let t = o.output_tokens.unwrap_or(0) as f64;
        sii += i * i;
        sio += i * t;
        soo += t * t;
        sic += i * c;
        soc += t * c;
        n += 1;
    }
    if n == 0 {
        return Err(Error::Invalid(format!(
            "model {model}: no cost_usd in the records and no catalog entry; pass --catalog"
        )));
    }
    let det = sii * soo - sio * sio;
    if det.abs() > 1e-9 * (sii * soo).max(1.0) {
        let input = (sic * soo - soc * sio) / det;
        let output = (soc * sii - sic * sio) / det;
        if input >= 0.0 && output >= 0.0 {
            return Ok(TokenPrices { input, output });
        }
    }
    // Degenerate (e.g. constant output length): charge everything per input token.
    Ok(TokenPrices { input: if sii > 0.0 { sic / sii } else { 0.0 }, output: 0.0 })
}

impl KnnEstimator {
    /// Trains on `records` (each must have an outcome for every model in `models`).
    pub fn train(
        records: &[&Record],
        models: &[String],
        catalog: Option<&Catalog>,
        config: KnnConfig,
    ) -> Result<KnnEstimator> {
        if records.is_empty() {
            return Err(Error::Invalid("no training records".into()));
        }
        if config.k == 0 {
            return Err(Error::Invalid("k must be at least 1".into()));
        }
        for r in records {
            if let Some(m) = models.iter().find(|m| !r.outcomes.contains_key(m.as_str())) {
                return Err(Error::Invalid(format!("training record {} lacks model {m}", r.id)));
            }
        }
        let counts: Vec<_> = records.iter().map(|r| term_counts(&r.prompt)).collect();
        let idf = Idf::fit(&counts);
        let vectors: Vec<SparseVec> = counts.iter().map(|c| idf.transform(c)).collect();
        let mut post_start = vec![0u32; crate::features::DIM + 1];
        for v in &vectors {
            for (f, _) in v {
                post_start[*f as usize + 1] += 1;
            }
        }
        for f in 0..crate::features::DIM {
            post_start[f + 1] += post_start[f];
        }
        let mut fill: Vec<u32> = post_start[..crate::features::DIM].to_vec();
        let mut postings = vec![(0u32, 0f32); post_start[crate::features::DIM] as usize];
        for (d, v) in vectors.iter().enumerate() {
            for &(f, w) in v {
                postings[fill[f as usize] as usize] = (d as u32, w);
                fill[f as usize] += 1;
            }
        }
        let mm = models.len();
        let docs: Vec<TrainDoc> = records
            .iter()
            .map(|r| TrainDoc {
                scores: models.iter().map(|m| r.outcomes[m].score).collect(),
                output_tokens: models.iter().map(|m| r.outcomes[m].output_tokens.map(f64::from)).collect(),
                task: r.task.clone(),
            })
            .collect();
        let mut global_mean = vec![0.0; mm];
        for d in &docs {
            for (g, s) in global_mean.iter_mut().zip(&d.scores) {
                *g += s / docs.len() as f64;
            }
        }
        let mut task_sum: HashMap<String, (Vec<f64>, f64)> = HashMap::new();
        for (r, d) in records.iter().zip(&docs) {
            if let Some(t) = &r.task {
                let e = task_sum.entry(t.clone()).or_insert_with(|| (vec![0.0; mm], 0.0));
                for (a, s) in e.0.iter_mut().zip(&d.scores) {
                    *a += s;
                }
                e.1 += 1.0;
            }
        }
        // Task means shrunk toward the global mean with 5 pseudo-observations.
        let task_mean = task_sum
            .into_iter()
            .map(|(t, (sum, n))| {
                let m = sum.iter().zip(&global_mean).map(|(s, g)| (s + 5.0 * g) / (n + 5.0)).collect();
                (t, m)
            })
            .collect();
        // Per model: the mean of the recorded output tokens (the catalog default when none are
        // recorded) and their variance (0 below two records), from one collection each.
        let (mean_output_tokens, var_output_tokens): (Vec<f64>, Vec<f64>) = (0..mm)
            .map(|j| {
                let v: Vec<f64> = docs.iter().filter_map(|d| d.output_tokens[j]).collect();
                if v.is_empty() {
                    let default =
                        catalog.and_then(|c| c.get(&models[j])).map_or(256.0, |e| e.default_output_tokens as f64);
                    return (default, 0.0);
                }
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let var = if v.len() < 2 {
                    0.0
                } else {
                    v.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / (v.len() - 1) as f64
                };
                (mean, var)
            })
            .unzip();
        // Per-task mean output tokens (where recorded), the prior for a query with a task hint.
        let mut task_tokens: HashMap<String, (Vec<f64>, Vec<f64>)> = HashMap::new();
        for (r, d) in records.iter().zip(&docs) {
            if let Some(t) = &r.task {
                let e = task_tokens.entry(t.clone()).or_insert_with(|| (vec![0.0; mm], vec![0.0; mm]));
                for j in 0..mm {
                    if let Some(tok) = d.output_tokens[j] {
                        e.0[j] += tok;
                        e.1[j] += 1.0;
                    }
                }
            }
        }
        let task_output_tokens = task_tokens
            .into_iter()
            .map(|(t, (sum, n))| {
                let v = (0..mm).map(|j| if n[j] > 0.0 { sum[j] / n[j] } else { mean_output_tokens[j] }).collect();
                (t, v)
            })
            .collect();
        let prices = models.iter().map(|m| token_prices(records, m, catalog)).collect::<Result<_>>()?;
        let max_df = ((config.max_df_frac * records.len() as f32).ceil() as u32).max(1);
        Ok(KnnEstimator {
            models: models.to_vec(),
            config,
            prices,
            idf,
            post_start,
            postings,
            max_df,
            docs,
            global_mean,
            task_mean,
            mean_output_tokens,
            var_output_tokens,
            task_output_tokens,
            dense: None,
            dense_dim: 0,
        })
    }

    pub fn n_train(&self) -> usize {
        self.docs.len()
    }

    /// The prompt's full TF-IDF vector (this estimator's IDF), the trained head's hashed input.
    pub fn features(&self, prompt: &str) -> SparseVec {
        self.idf.transform(&term_counts(prompt))
    }

    fn vectorize(&self, prompt: &str) -> SparseVec {
        self.cut(self.features(prompt))
    }

    /// The retrieval vector from the full TF-IDF vector: its `max_query_terms` heaviest features
    /// (renormalized), or all of them.
    fn cut(&self, mut v: SparseVec) -> SparseVec {
        let t = self.config.max_query_terms;
        if t > 0 && v.len() > t {
            v.select_nth_unstable_by(t, |a, b| b.1.total_cmp(&a.1));
            v.truncate(t);
            let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
            if norm > 0.0 {
                for (_, w) in &mut v {
                    *w /= norm;
                }
            }
        }
        v
    }

    /// The k nearest training documents (index, cosine), best first, skipping `exclude`: term at
    /// a time over the postings into a dense per-thread accumulator (one float per training
    /// document). A prompt of a few hundred features touches most documents, so a scan of all
    /// beats tracking which were touched; a query with fewer postings than half the documents
    /// keeps the touched list instead.
    ///
    /// Exact pruning (MaxScore-style: stop scanning once the k-th best score exceeds what the
    /// terms left can add) was measured and dropped: on the dcrouter prompts (~500 features each,
    /// ~110k postings per query, word 1–2-grams and char 4-grams) the bounds are loose — the sum
    /// of the terms' bounds is ~2.3 against a k-th score of ~0.5 — and even stopping at the ideal
    /// term leaves about half the postings to score.
    fn neighbours(&self, v: &SparseVec, exclude: Option<usize>) -> Vec<(usize, f32)> {
        thread_local! {
            // All zeros between calls.
            static ACC: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let n = self.docs.len();
        ACC.with(|cell| {
            let mut acc = cell.borrow_mut();
            if acc.len() < n {
                acc.resize(n, 0.0);
            }
            let acc = &mut acc[..n];
            let ranges: Vec<(usize, usize, f32)> = v
                .iter()
                .map(|&(f, w)| (self.post_start[f as usize] as usize, self.post_start[f as usize + 1] as usize, w))
                .filter(|&(lo, hi, _)| (hi - lo) as u32 <= self.max_df)
                .collect();
            let total: usize = ranges.iter().map(|(lo, hi, _)| hi - lo).sum();
            let mut hits: Vec<(usize, f32)> = Vec::with_capacity(4 * self.config.k);
            if total < n / 2 {
                // Few postings (a short query or the heaviest-terms cut): keep the touched list.
                let mut touched: Vec<u32> = Vec::with_capacity(total);
                for &(lo, hi, w) in &ranges {
                    for &(d, wd) in &self.postings[lo..hi] {
                        let a = &mut acc[d as usize];
                        if *a == 0.0 {
                            touched.push(d);
                        }
                        *a += w * wd;
                    }
                }
                for d in touched {
                    let s = std::mem::replace(&mut acc[d as usize], 0.0);
                    if Some(d as usize) != exclude {
                        hits.push((d as usize, s));
                    }
                }
            } else {
                for &(lo, hi, w) in &ranges {
                    for &(d, wd) in &self.postings[lo..hi] {
                        acc[d as usize] += w * wd;
                    }
                }
                hits.extend(
                    acc.iter().enumerate().filter(|&(d, &s)| s > 0.0 && Some(d) != exclude).map(|(d, &s)| (d, s)),
                );
                acc.fill(0.0);
            }
            let k = self.config.k.min(hits.len());
            if k < hits.len() {
                hits.select_nth_unstable_by(k, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                hits.truncate(k);
            }
            hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            hits
        })
    }

    /// The training record (by position in the training slice) most similar to `prompt`, with its
    /// cosine similarity; None when no training prompt shares a feature with it.
    pub fn nearest(&self, prompt: &str) -> Option<(usize, f32)> {
        let v = self.vectorize(prompt);
        self.neighbours(&v, None).first().copied()
    }

    /// Seconds spent per stage of `predict` over `prompts` (each stage run over all of them in
    /// turn): features (term counts, TF-IDF, the heaviest-terms cut), retrieval (the k nearest),
    /// posterior (μ, σ, tokens and cost per model). For `estimator bench`.
    pub fn stage_seconds(&self, prompts: &[(&str, Option<&str>)]) -> [f64; 3] {
        let t0 = std::time::Instant::now();
        let vs: Vec<SparseVec> = prompts.iter().map(|(p, _)| self.vectorize(p)).collect();
        let t1 = std::time::Instant::now();
        let nbs: Vec<Vec<(usize, f32)>> = vs.iter().map(|v| self.neighbours(v, None)).collect();
        let t2 = std::time::Instant::now();
        for (nb, (p, task)) in nbs.iter().zip(prompts) {
            std::hint::black_box(self.posterior(nb, p, *task));
        }
        [(t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64(), t2.elapsed().as_secs_f64()]
    }

    /// Predicts μ, σ, output tokens and cost per model for one prompt.
    pub fn predict(&self, prompt: &str, task: Option<&str>) -> Prediction {
        self.predict_excluding(prompt, task, None)
    }

    /// As `predict`, but never uses training document `exclude` (leave-one-out predictions on
    /// the training split, for calibrating knobs without looking at the test split).
    pub fn predict_excluding(&self, prompt: &str, task: Option<&str>, exclude: Option<usize>) -> Prediction {
        let v = self.vectorize(prompt);
        let nb = self.neighbours(&v, exclude);
        self.posterior(&nb, prompt, task)
    }

    /// As `predict_excluding`, from the prompt's full TF-IDF vector (`features`) computed once by
    /// the caller, who needs it for something else too (the head, the router's online index).
    pub fn predict_from_features(
        &self,
        full: &SparseVec,
        prompt: &str,
        task: Option<&str>,
        exclude: Option<usize>,
    ) -> Prediction {
        let v = self.cut(full.clone());
        let nb = self.neighbours(&v, exclude);
        self.posterior(&nb, prompt, task)
    }

    /// Switches retrieval to sentence embeddings: `embeddings[d]` is training document d's
    /// (L2-normalized) embedding. Predictions then need the query's embedding
    /// (`predict_embedded`).
    pub fn with_embeddings(mut self, embeddings: &[Vec<f32>]) -> Result<KnnEstimator> {
        if embeddings.len() != self.docs.len() {
            return Err(Error::Invalid(format!(
                "{} embeddings for {} training documents",
                embeddings.len(),
                self.docs.len()
            )));
        }
        let dim = embeddings.first().map_or(0, Vec::len);
        if dim == 0 || embeddings.iter().any(|e| e.len() != dim) {
            return Err(Error::Invalid("embeddings must be non-empty and of one dimension".into()));
        }
        self.dense = Some(embeddings.iter().flatten().copied().collect());
        self.dense_dim = dim;
        Ok(self)
    }

    /// Width of the training embeddings (0 without them).
    pub fn dense_dim(&self) -> usize {
        self.dense_dim
    }

    /// Is retrieval by embedding?
    pub fn is_dense(&self) -> bool {
        self.dense.is_some()
    }

    /// Predicts from the query's embedding (`with_embeddings` retrieval): an exact scan over the
    /// training rows; falls back to the hashed
    /// features when the estimator has no embeddings.
    pub fn predict_embedded(
        &self,
        prompt: &str,
        task: Option<&str>,
        embedding: &[f32],
        exclude: Option<usize>,
    ) -> Prediction {
        let Some(dense) = &self.dense else { return self.predict_excluding(prompt, task, exclude) };
        let mut hits: Vec<(usize, f32)> = dense
            .chunks_exact(self.dense_dim)
            .enumerate()
            .map(|(d, row)| (d, dot(row, embedding)))
            .filter(|&(d, s)| s > 0.0 && Some(d) != exclude)
            .collect();
        let k = self.config.k.min(hits.len());
        if k < hits.len() {
            hits.select_nth_unstable_by(k, |a, b| b.1.total_cmp(&a.1));
            hits.truncate(k);
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        self.posterior(&hits, prompt, task)
    }

    /// μ, σ (Beta posterior over the neighbours' outcomes, weighted by similarity, on the task's
    /// or global prior), output tokens and cost per model.
    fn posterior(&self, nb: &[(usize, f32)], prompt: &str, task: Option<&str>) -> Prediction {
        let task = task.filter(|_| self.config.use_task);
        let prior = task.and_then(|t| self.task_mean.get(t)).unwrap_or(&self.global_mean);
        let token_prior = task.and_then(|t| self.task_output_tokens.get(t)).unwrap_or(&self.mean_output_tokens);
        let s0 = self.config.prior_strength;
        let input_tokens = crate::estimate_tokens(prompt) as f64;
        let mm = self.models.len();
        let mut p = Prediction::zeros(mm);
        for j in 0..mm {
            let mut a = s0 * prior[j];
            let mut b = s0 * (1.0 - prior[j]);
            let (mut tw, mut tsum, mut tsq) = (0.0, 0.0, 0.0);
            for &(d, s) in nb {
                let w = s as f64;
                let doc = &self.docs[d];
                a += w * doc.scores[j];
                b += w * (1.0 - doc.scores[j]);
                // Answer length follows the task's format: with a task hint, only same-task
                // neighbours vote on it.
                let same_task = task.is_none() || doc.task.as_deref() == task;
                if let (Some(t), true) = (doc.output_tokens[j], same_task) {
                    tw += w;
                    tsum += w * t;
                    tsq += w * t * t;
                }
            }
            let n = (a + b).max(1e-9);
            let mu = (a / n).clamp(0.0, 1.0);
            p.mu[j] = mu;
            p.sigma[j] = (mu * (1.0 - mu) / (n + 1.0)).sqrt();
            // Neighbour mean shrunk toward the task's (or the model's) mean, one pseudo-observation.
            let out = (tsum + token_prior[j]) / (tw + 1.0);
            p.output_tokens[j] = out;
            p.cost[j] = self.prices[j].input * input_tokens + self.prices[j].output * out;
            // Weighted spread of the neighbours' lengths around `out`, the model's overall
            // variance as one pseudo-observation (a lone neighbour does not claim certainty).
            let spread = (tsq - 2.0 * out * tsum + out * out * tw).max(0.0);
            let var = (spread + self.var_output_tokens[j]) / (tw + 1.0);
            p.output_tokens_sd[j] = var.sqrt();
            p.cost_sd[j] = self.prices[j].output * p.output_tokens_sd[j];
        }
        p
    }
}

/// Dot product in eight independent lanes (the compiler vectorizes it; a single running sum
/// cannot be reordered and runs one multiply-add at a time). A length mismatch reads the common
/// prefix.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Outcome;
    use std::collections::BTreeMap;

    fn rec(id: usize, prompt: &str, task: &str, a: f64, b: f64) -> Record {
        let mut outcomes = BTreeMap::new();
        let o = |s: f64, c: f64| Outcome {
            score: s,
            cost_usd: Some(c),
            input_tokens: Some(10),
            output_tokens: Some(20),
            latency_ms: None,
        };
        outcomes.insert("a".into(), o(a, 1e-6 * 10.0 + 2e-6 * 20.0));
        outcomes.insert("b".into(), o(b, 5e-6 * 10.0 + 5e-6 * 20.0));
        Record { id: id.to_string(), task: Some(task.into()), prompt: prompt.into(), outcomes }
    }

    #[test]
    fn neighbours_drive_mu_and_prices_are_fitted() {
        let mut recs = Vec::new();
        for i in 0..40 {
            recs.push(rec(i, &format!("integrate the polynomial x^{i} dx calculus"), "math", 0.0, 1.0));
            recs.push(rec(100 + i, &format!("who wrote the novel number {i} in french literature"), "lit", 1.0, 1.0));
        }
        let refs: Vec<&Record> = recs.iter().collect();
        let models = vec!["a".to_string(), "b".to_string()];
        let est = KnnEstimator::train(&refs, &models, None, KnnConfig::default()).unwrap();
        let p = est.predict("integrate the polynomial x^77 dx calculus", None);
        assert!(p.mu[0] < 0.2 && p.mu[1] > 0.8, "{p:?}");
        assert!(p.sigma.iter().all(|s| *s > 0.0 && *s < 0.2));
        let q = est.predict("who wrote the novel number 99 in french literature", Some("lit"));
        assert!(q.mu[0] > 0.8, "{q:?}");
        // Least-squares price fit is degenerate here (constant tokens) but cost stays close.
        assert!((p.output_tokens[0] - 20.0).abs() < 1e-6);
        assert!(p.cost[1] > p.cost[0]);
        // Leave-one-out never returns the excluded document itself.
        let loo = est.predict_excluding(&recs[0].prompt, None, Some(0));
        assert!(loo.mu[0] < 0.3);

        // Retrieval by embedding: two clusters on two axes; the query's embedding decides.
        let embs: Vec<Vec<f32>> = recs
            .iter()
            .map(|r| if r.task.as_deref() == Some("math") { vec![1.0, 0.0] } else { vec![0.0, 1.0] })
            .collect();
        let dense = est.with_embeddings(&embs).unwrap();
        assert!(dense.is_dense());
        // The text says math, the embedding says literature: the embedding wins.
        let e = dense.predict_embedded("integrate the polynomial x^77 dx calculus", None, &[0.1, 0.99], None);
        assert!(e.mu[0] > 0.8, "{e:?}");
        let e = dense.predict_embedded("anything", None, &[1.0, 0.0], None);
        assert!(e.mu[0] < 0.2, "{e:?}");
    }

    #[test]
    fn embeddings_must_match_the_training_documents() {
        let recs: Vec<Record> = (0..3).map(|i| rec(i, "a prompt", "t", 1.0, 0.0)).collect();
        let refs: Vec<&Record> = recs.iter().collect();
        let models = vec!["a".to_string(), "b".to_string()];
        let est = KnnEstimator::train(&refs, &models, None, KnnConfig::default()).unwrap();
        assert!(est.with_embeddings(&[vec![1.0]]).is_err());
        let est = KnnEstimator::train(&refs, &models, None, KnnConfig::default()).unwrap();
        assert!(est.with_embeddings(&[vec![1.0], vec![1.0, 0.0], vec![0.5]]).is_err());
    }
}
