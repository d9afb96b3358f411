//! Loads records, splits them, trains the estimator on the train split, and holds the per-query
//! predictions (leave-one-out on train, plain on test) next to the recorded truth.

use crate::{Result, RouterError};
use estimator::knn::outcome_cost;
use estimator::records::{common_models, read_records};
use estimator::{Catalog, Estimator, KnnConfig, KnnEstimator, Record};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::path::Path;

/// One split's queries: predictions and truth, row-major `q * m + j`.
#[derive(Debug, Clone)]
pub struct SplitData {
    pub n: usize,
    pub m: usize,
    pub tasks: Vec<String>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub pred_cost: Vec<f64>,
    pub tokens: Vec<f64>,
    pub score: Vec<f64>,
    pub cost: Vec<f64>,
}

impl SplitData {
    /// Mean true cost of always using model j.
    pub fn mean_cost(&self, j: usize) -> f64 {
        (0..self.n).map(|q| self.cost[q * self.m + j]).sum::<f64>() / self.n.max(1) as f64
    }
    pub fn mean_score(&self, j: usize) -> f64 {
        (0..self.n).map(|q| self.score[q * self.m + j]).sum::<f64>() / self.n.max(1) as f64
    }
}

pub struct EvalData {
    pub records: usize,
    pub models: Vec<String>,
    pub train: SplitData,
    pub test: SplitData,
}

pub struct DataOptions<'a> {
    pub records: &'a Path,
    pub catalog: Option<&'a Path>,
    pub train_frac: f64,
    pub seed: u64,
    pub knn: KnnConfig,
    pub estimator_noise: f64,
    /// A trained estimator (`estimator train`) instead of the plain kNN; it must have been
    /// trained on this run's train split (same records, train fraction and seed).
    pub artifact: Option<&'a Path>,
    /// MiniLM embedding cache, for a MiniLM artifact.
    pub embedding_cache: &'a Path,
}

fn build(
    est: &Estimator,
    emb: Option<&[Vec<f32>]>,
    recs: &[&Record],
    catalog: Option<&Catalog>,
    loo: bool,
    noise: Option<(&Normal<f64>, &mut ChaCha8Rng, f64)>,
) -> Result<SplitData> {
    let m = est.models().len();
    let n = recs.len();
    let mut d = SplitData {
        n,
        m,
        tasks: Vec::with_capacity(n),
        mu: Vec::with_capacity(n * m),
        sigma: Vec::with_capacity(n * m),
        pred_cost: Vec::with_capacity(n * m),
        tokens: Vec::with_capacity(n * m),
        score: Vec::with_capacity(n * m),
        cost: Vec::with_capacity(n * m),
    };
    let mut noise = noise;
    for (q, r) in recs.iter().enumerate() {
        let e = emb.map(|v| v[q].as_slice());
        let p = est.predict_with(&r.prompt, r.task.as_deref(), e, loo.then_some(q));
        d.tasks.push(r.task.clone().unwrap_or_else(|| "unknown".into()));
        let input = estimator::estimate_tokens(&r.prompt) as f64;
        for (j, model) in est.models().iter().enumerate() {
            let (mut mu, mut sigma) = (p.mu[j], p.sigma[j]);
            if let Some((dist, rng, s)) = noise.as_mut() {
                mu = (mu + dist.sample(*rng)).clamp(0.0, 1.0);
                sigma = (sigma * sigma + *s * *s).sqrt();
            }
            d.mu.push(mu);
            d.sigma.push(sigma);
            d.pred_cost.push(p.cost[j]);
            d.tokens.push(input + p.output_tokens[j]);
            d.score.push(r.outcomes[model].score);
            d.cost.push(outcome_cost(r, model, catalog)?);
        }
    }
    Ok(d)
}

/// Loads, splits, trains, predicts. Noise N(0, S) is added to the test split's μ only (the
/// online predictions), and σ² grows by S² (an estimator calibrated to its own error).
pub fn load(opts: &DataOptions) -> Result<EvalData> {
    if !(opts.train_frac > 0.0 && opts.train_frac < 1.0) {
        return Err(RouterError::Invalid(format!("--train-frac {}: expected a fraction in (0, 1)", opts.train_frac)));
    }
    if !(opts.estimator_noise.is_finite() && opts.estimator_noise >= 0.0) {
        return Err(RouterError::Invalid("--estimator-noise must be ≥ 0".into()));
    }
    let catalog = opts.catalog.map(Catalog::load).transpose()?;
    let all = read_records(opts.records)?;
    let (models, partial) = common_models(&all);
    if models.len() < 2 {
        return Err(RouterError::Invalid(format!(
            "{}: need at least 2 models with outcomes in every record, found {}",
            opts.records.display(),
            models.len()
        )));
    }
    if partial > 0 {
        tracing::warn!(partial, "records lack some model; evaluating the models every record has");
    }
    let (tr, te) = estimator::split::train_test(all.len(), opts.train_frac, opts.seed);
    let train: Vec<&Record> = tr.iter().map(|&i| &all[i]).collect();
    let test: Vec<&Record> = te.iter().map(|&i| &all[i]).collect();
    let est = match opts.artifact {
        Some(path) => from_artifact(path, opts, &models, &all, &train)?,
        None => Estimator::from_knn(KnnEstimator::train(&train, &models, catalog.as_ref(), opts.knn.clone())?),
    };
    let embed = |recs: &[&Record]| {
        let texts: Vec<&str> = recs.iter().map(|r| r.prompt.as_str()).collect();
        est.embed_queries(&texts, opts.embedding_cache)
    };
    let (train_emb, test_emb) = (embed(&train)?, embed(&test)?);
    let train_d = build(&est, train_emb.as_deref(), &train, catalog.as_ref(), true, None)?;
    let test_d = if opts.estimator_noise > 0.0 {
        let dist = Normal::new(0.0, opts.estimator_noise).map_err(|e| RouterError::Invalid(e.to_string()))?;
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed);
        build(&est, test_emb.as_deref(), &test, catalog.as_ref(), false, Some((&dist, &mut rng, opts.estimator_noise)))?
    } else {
        build(&est, test_emb.as_deref(), &test, catalog.as_ref(), false, None)?
    };
    Ok(EvalData { records: all.len(), models, train: train_d, test: test_d })
}

/// Loads an estimator artifact and checks it was trained on exactly this run's train split —
/// otherwise its "test" predictions would be in-sample.
fn from_artifact(
    path: &Path,
    opts: &DataOptions,
    models: &[String],
    all: &[Record],
    train: &[&Record],
) -> Result<Estimator> {
    let loaded = estimator::artifact::load(path)?;
    let s = &loaded.split;
    let retrain = format!(
        "retrain it on this split: estimator train --records {} --train-frac {} --seed {} --out {}",
        opts.records.display(),
        opts.train_frac,
        opts.seed,
        path.display()
    );
    if loaded.estimator.models() != models {
        return Err(RouterError::Invalid(format!(
            "estimator artifact {}: models {:?}, the records have {:?}",
            path.display(),
            loaded.estimator.models(),
            models
        )));
    }
    let same_split = s.records == all.len()
        && (s.train_frac - opts.train_frac).abs() < 1e-12
        && s.seed == opts.seed
        && loaded.records.len() == train.len()
        && loaded.records.iter().zip(train).all(|(a, b)| a.id == b.id);
    if !same_split {
        return Err(RouterError::Invalid(format!(
            "estimator artifact {} was trained on another split ({} of {} records in {}, train fraction {}, seed {}); {retrain}",
            path.display(),
            loaded.records.len(),
            s.records,
            s.source,
            s.train_frac,
            s.seed
        )));
    }
    tracing::info!(artifact = %path.display(), embedder = ?loaded.estimator.embedder(), combine = ?loaded.estimator.combine(), "estimator artifact loaded");
    Ok(loaded.estimator)
}
