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
    /// Index each training prompt under its this many heaviest TF-IDF features only (static
    /// index pruning; the kept weights are not renormalized, so a score is the cosine less the
    /// dropped features' share); 0 = all. Shortens every posting list, most of all the common
    /// features', so a query can keep all its terms.
    #[serde(default)]
    pub max_doc_terms: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig { k: 25, prior_strength: 2.0, use_task: true, max_df_frac: 0.5, max_query_terms: 0, max_doc_terms: 0 }
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
    /// Per hashed feature (and one past the last): where its postings start and its IDF weight,
    /// side by side so a query feature costs one cache miss, not one per table. Postings in CSR
    /// form: feature f's (document, weight) pairs are
    /// `postings[index[f].start..index[f + 1].start]`, in document order.
    index: Vec<Slot>,
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

#[derive(Clone, Copy)]
struct Slot {
    start: u32,
    weight: f32,
}

/// A hint to bring `x`'s cache line in (no effect on results; a no-op off x86-64).
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no state visible to the program; the address
    // comes from a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// The k best (document, score) pairs offered, by score (ties: the lower document first), among
/// positive scores: a binary min-heap of the k best so far whose root (the worst held) is the bar
/// a new offer must pass.
struct TopK {
    k: usize,
    heap: Vec<(usize, f32)>,
}

/// `a` ranks below `b`: a lower score, or the same score and a later document.
fn worse(a: (usize, f32), b: (usize, f32)) -> bool {
    a.1 < b.1 || (a.1 == b.1 && a.0 > b.0)
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK { k, heap: Vec::with_capacity(k) }
    }

    /// The score an offer must reach: 0 until k hits are held, then the worst one's (an equal
    /// score passes only with an earlier document).
    fn bar(&self) -> f32 {
        if self.heap.len() < self.k {
            0.0
        } else {
            self.heap[0].1
        }
    }

    /// Offers `d` with score `s`: the common case (not good enough) returns inline.
    #[inline(always)]
    fn offer(&mut self, d: usize, s: f32) {
        if s <= 0.0 || s < self.bar() {
            return;
        }
        self.insert(d, s);
    }

    #[inline(never)]
    fn insert(&mut self, d: usize, s: f32) {
        if self.heap.len() < self.k {
            // Sift up.
            let mut i = self.heap.len();
            self.heap.push((d, s));
            while i > 0 {
                let parent = (i - 1) / 2;
                if !worse(self.heap[i], self.heap[parent]) {
                    break;
                }
                self.heap.swap(i, parent);
                i = parent;
            }
            return;
        }
        if !worse(self.heap[0], (d, s)) {
            return;
        }
        // Replace the root and sift down.
        self.heap[0] = (d, s);
        let n = self.heap.len();
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && worse(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < n && worse(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == i {
                break;
            }
            self.heap.swap(i, m);
            i = m;
        }
    }

    fn into_sorted(mut self) -> Vec<(usize, f32)> {
        self.heap.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        self.heap
    }
}

/// The `t` heaviest entries of `v` (all when `t` is 0 or `v` is no longer), not renormalized.
fn heaviest(mut v: SparseVec, t: usize) -> SparseVec {
    if t > 0 && v.len() > t {
        v.select_nth_unstable_by(t, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(t);
    }
    v
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
        let vectors: Vec<SparseVec> = counts.iter().map(|c| heaviest(idf.transform(c), config.max_doc_terms)).collect();
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
            index: post_start
                .iter()
                .enumerate()
                .map(|(f, &start)| Slot { start, weight: idf.weight(f as u32) })
                .collect(),
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
        // As `Idf::transform` (the same weights, copied into the index), the next features'
        // slots prefetched while this one's is weighed.
        let counts = term_counts(prompt);
        const AHEAD: usize = 24;
        for &(f, _) in counts.iter().take(AHEAD) {
            prefetch(&self.index[f as usize]);
        }
        let mut v: SparseVec = Vec::with_capacity(counts.len());
        for (i, &(f, c)) in counts.iter().enumerate() {
            if let Some(&(g, _)) = counts.get(i + AHEAD) {
                prefetch(&self.index[g as usize]);
            }
            v.push((f, crate::features::sublinear_tf(c) * self.index[f as usize].weight));
        }
        crate::features::normalize(&mut v);
        v
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
            crate::features::normalize(&mut v);
        }
        v
    }

    /// The k nearest training documents (index, cosine), best first, skipping `exclude`: term at
    /// a time over the postings into a dense per-thread accumulator (one float per training
    /// document). A prompt of a few hundred features touches most documents, so a scan of all
    /// beats tracking which were touched; a query with fewer postings than an eighth of the
    /// documents keeps the touched list instead. The scan offers the heap only the documents at
    /// or above a floor no true neighbour is below (the k-th best of the blocks' best scores):
    /// offered in document order, every new best so far went through the heap (12 % of a
    /// prediction's time in `perf`).
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
            // Per block of 8 documents, its best score, and a copy to select in (scratch).
            static BLOCK_BEST: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
                const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
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
                .map(|&(f, w)| (self.index[f as usize].start as usize, self.index[f as usize + 1].start as usize, w))
                .filter(|&(lo, hi, _)| (hi - lo) as u32 <= self.max_df)
                .collect();
            let total: usize = ranges.iter().map(|(lo, hi, _)| hi - lo).sum();
            let mut top = TopK::new(self.config.k);
            if total < n / 8 {
                // Few postings (a short query or the heaviest-terms cut): keep the touched list.
                let mut touched: Vec<u32> = Vec::with_capacity(total);
                for (i, &(lo, hi, w)) in ranges.iter().enumerate() {
                    self.prefetch_list(&ranges, i + 4);
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
                        top.offer(d as usize, s);
                    }
                }
            } else {
                for (i, &(lo, hi, w)) in ranges.iter().enumerate() {
                    self.prefetch_list(&ranges, i + 4);
                    for &(d, wd) in &self.postings[lo..hi] {
                        acc[d as usize] += w * wd;
                    }
                }
                // Blocks of 8: each block's best score, then a floor no top-k score is below —
                // the k-th best of the block bests (k distinct documents score at least that;
                // the (k+1)-th when one document is excluded) — so the heap sees the few
                // documents at or above it instead of every new best in document order.
                BLOCK_BEST.with(|cell| {
                    let (best, scratch) = &mut *cell.borrow_mut();
                    best.clear();
                    best.extend(acc.chunks(8).map(|b| b.iter().fold(0.0f32, |m, &s| m.max(s))));
                    let rank = self.config.k + usize::from(exclude.is_some());
                    let floor = if best.len() > rank {
                        scratch.clear();
                        scratch.extend_from_slice(best);
                        let (_, kth, _) = scratch.select_nth_unstable_by(rank - 1, |a, b| b.total_cmp(a));
                        *kth
                    } else {
                        0.0
                    };
                    for (b, block) in acc.chunks(8).enumerate() {
                        if best[b] < floor || best[b] < top.bar() {
                            continue;
                        }
                        for (i, &s) in block.iter().enumerate() {
                            let d = 8 * b + i;
                            if s >= floor && Some(d) != exclude {
                                top.offer(d, s);
                            }
                        }
                    }
                });
                acc.fill(0.0);
            }
            top.into_sorted()
        })
    }

    /// Starts loading the head of the `i`-th posting list (a query's lists lie far apart).
    fn prefetch_list(&self, ranges: &[(usize, usize, f32)], i: usize) {
        if let Some(p) = ranges.get(i).and_then(|&(lo, _, _)| self.postings.get(lo)) {
            prefetch(p);
        }
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
        // Answer length follows the task's format: with a task hint, only same-task neighbours
        // vote on it (compared once per neighbour, not once per model).
        let same_task: Vec<bool> =
            nb.iter().map(|&(d, _)| task.is_none() || self.docs[d].task.as_deref() == task).collect();
        for j in 0..mm {
            let mut a = s0 * prior[j];
            let mut b = s0 * (1.0 - prior[j]);
            let (mut tw, mut tsum, mut tsq) = (0.0, 0.0, 0.0);
            for (&(d, s), &same_task) in nb.iter().zip(&same_task) {
                let w = s as f64;
                let doc = &self.docs[d];
                a += w * doc.scores[j];
                b += w * (1.0 - doc.scores[j]);
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
    fn the_index_cut_keeps_each_prompts_heaviest_features() {
        let v: SparseVec = vec![(7, 0.1), (3, 0.5), (9, 0.3), (1, 0.5), (4, 0.2)];
        let mut got = heaviest(v.clone(), 3);
        got.sort_by_key(|p| p.0);
        // Ties at 0.5 both kept; weights not renormalized.
        assert_eq!(got, vec![(1, 0.5), (3, 0.5), (9, 0.3)]);
        assert_eq!(heaviest(v.clone(), 0), v);
        assert_eq!(heaviest(v.clone(), 5), v);

        // A cut above every prompt's feature count changes nothing; a tight one still finds the
        // obvious neighbour.
        let recs: Vec<Record> = (0..30)
            .map(|i| rec(i, &format!("topic{} word{} shared filler text here", i % 3, i), "t", (i % 2) as f64, 1.0))
            .collect();
        let refs: Vec<&Record> = recs.iter().collect();
        let models = vec!["a".to_string(), "b".to_string()];
        let full = KnnEstimator::train(&refs, &models, None, KnnConfig::default()).unwrap();
        let wide = KnnConfig { max_doc_terms: 10_000, ..KnnConfig::default() };
        let same = KnnEstimator::train(&refs, &models, None, wide).unwrap();
        let tight =
            KnnEstimator::train(&refs, &models, None, KnnConfig { max_doc_terms: 8, ..KnnConfig::default() }).unwrap();
        for q in ["topic1 word7 shared filler text here", "word12"] {
            assert_eq!(full.predict(q, None), same.predict(q, None));
        }
        assert_eq!(tight.nearest("topic1 word7 shared filler text here").map(|n| n.0), Some(7));
    }

    /// The dense scan's floor (the k-th best block best) never drops a true neighbour: on a
    /// corpus where every query touches most documents, `neighbours` equals the full sort of the
    /// same accumulated scores, with and without an excluded document.
    #[test]
    fn neighbours_equal_a_full_sort_of_the_scores() {
        let mut x = 99u64;
        let mut word = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            format!("w{}", (x >> 33) % 60)
        };
        let recs: Vec<Record> = (0..600)
            .map(|i| {
                let text: Vec<String> = (0..12).map(|_| word()).collect();
                rec(i, &text.join(" "), "t", (i % 2) as f64, 1.0)
            })
            .collect();
        let refs: Vec<&Record> = recs.iter().collect();
        let models = vec!["a".to_string(), "b".to_string()];
        for k in [1, 5, 25] {
            let est = KnnEstimator::train(&refs, &models, None, KnnConfig { k, ..KnnConfig::default() }).unwrap();
            for (q, exclude) in [(0, None), (1, Some(1)), (2, Some(17)), (3, None)] {
                let v = est.vectorize(&recs[q].prompt);
                let mut scores = vec![0f32; est.n_train()];
                let mut postings = 0;
                for &(f, w) in &v {
                    let (lo, hi) = (est.index[f as usize].start as usize, est.index[f as usize + 1].start as usize);
                    if (hi - lo) as u32 <= est.max_df {
                        postings += hi - lo;
                        for &(d, wd) in &est.postings[lo..hi] {
                            scores[d as usize] += w * wd;
                        }
                    }
                }
                assert!(postings >= est.n_train() / 8, "the dense path: {postings} postings");
                let mut want: Vec<(usize, f32)> = scores
                    .iter()
                    .enumerate()
                    .filter(|&(d, &s)| s > 0.0 && Some(d) != exclude)
                    .map(|(d, &s)| (d, s))
                    .collect();
                want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                want.truncate(k);
                assert_eq!(est.neighbours(&v, exclude), want, "k {k}, query {q}, exclude {exclude:?}");
            }
        }
    }

    #[test]
    fn top_k_matches_a_full_sort_with_ties() {
        // Scores on a coarse grid (many ties), some zero or negative; offered in document order
        // (the dense scan) and in a scrambled order (the touched list).
        let mut x = 12345u64;
        let scores: Vec<f32> = (0..500)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 33) % 12) as f32 / 4.0 - 0.5
            })
            .collect();
        for k in [1, 5, 25, 600] {
            let mut want: Vec<(usize, f32)> =
                scores.iter().enumerate().filter(|p| *p.1 > 0.0).map(|(d, &s)| (d, s)).collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(k);
            let mut top = TopK::new(k);
            for (d, &s) in scores.iter().enumerate() {
                top.offer(d, s);
            }
            assert_eq!(top.into_sorted(), want, "k {k}, document order");
            let mut top = TopK::new(k);
            for d in (0..scores.len()).map(|i| (i * 7919) % scores.len()) {
                top.offer(d, scores[d]);
            }
            assert_eq!(top.into_sorted(), want, "k {k}, scrambled");
        }
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
