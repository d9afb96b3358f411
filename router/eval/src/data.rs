//! Loads records, splits them, trains the estimator on the train split, and holds the per-query
//! predictions (cross-fitted on train, plain on test) next to the recorded truth.

use estimator::costmodel::{self, CostCalibration, CostCheck};
use estimator::knn::outcome_cost;
use estimator::plain::PlainKnn;
use estimator::records::{common_models, read_records};
use estimator::{Catalog, Estimator, KnnConfig, KnnEstimator, Prediction, Record};
use llmroute_core::{CoreError, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use std::path::Path;

/// One split's queries: predictions and truth, row-major `q * m + j`.
#[derive(Debug, Clone)]
pub struct SplitData {
    pub n: usize,
    pub m: usize,
    pub tasks: Vec<String>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    /// Predicted cost: calibrated (per-model bias) once `load` returns.
    pub pred_cost: Vec<f64>,
    /// The estimator's raw spread of the cost (sd, before calibration).
    pub cost_sd: Vec<f64>,
    /// Calibrated variance of the realized cost.
    pub cost_var: Vec<f64>,
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

/// One estimator's predictions on both splits, with its cost model.
pub struct Predicted {
    pub train: SplitData,
    pub test: SplitData,
    pub cost_model: CostCalibration,
    /// The cost model checked on the test split (raw predictions, corrected).
    pub cost_checks: Vec<CostCheck>,
    /// The identity cost model on the test split (what an uncalibrated router sees).
    pub cost_checks_raw: Vec<CostCheck>,
}

pub struct EvalData {
    pub records: usize,
    pub models: Vec<String>,
    /// The default estimator (or the artifact).
    pub main: Predicted,
    /// The plain TF-IDF kNN reference, when an assigner asks for it.
    pub plain: Option<Predicted>,
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
    /// `--cost-noise lognormal:S`: S.
    pub cost_noise: Option<f64>,
    /// Also predict with the plain TF-IDF kNN reference (`--estimator plain-knn`, `ASSIGNER@plain-knn`).
    pub plain_knn: bool,
}

/// One split's predictions next to the truth. Noise N(0, S) on μ (σ² grows by S²) when given.
fn build(
    models: &[String],
    preds: &[Prediction],
    recs: &[&Record],
    catalog: Option<&Catalog>,
    noise: Option<(&Normal<f64>, &mut ChaCha8Rng, f64)>,
) -> Result<SplitData> {
    let m = models.len();
    let n = recs.len();
    let mut d = SplitData {
        n,
        m,
        tasks: Vec::with_capacity(n),
        mu: Vec::with_capacity(n * m),
        sigma: Vec::with_capacity(n * m),
        pred_cost: Vec::with_capacity(n * m),
        cost_sd: Vec::with_capacity(n * m),
        cost_var: Vec::with_capacity(n * m),
        tokens: Vec::with_capacity(n * m),
        score: Vec::with_capacity(n * m),
        cost: Vec::with_capacity(n * m),
    };
    let mut noise = noise;
    for (r, p) in recs.iter().zip(preds) {
        d.tasks.push(r.task.clone().unwrap_or_else(|| "unknown".into()));
        let input = estimator::estimate_tokens(&r.prompt) as f64;
        for (j, model) in models.iter().enumerate() {
            let (mut mu, mut sigma) = (p.mu[j], p.sigma[j]);
            if let Some((dist, rng, s)) = noise.as_mut() {
                mu = (mu + dist.sample(*rng)).clamp(0.0, 1.0);
                sigma = (sigma * sigma + *s * *s).sqrt();
            }
            d.mu.push(mu);
            d.sigma.push(sigma);
            d.pred_cost.push(p.cost[j]);
            d.cost_sd.push(p.cost_sd[j]);
            d.cost_var.push(p.cost_sd[j] * p.cost_sd[j]);
            d.tokens.push(input + p.output_tokens[j]);
            d.score.push(r.outcomes[model].score);
            d.cost.push(outcome_cost(r, model, catalog)?);
        }
    }
    Ok(d)
}

/// Multiplies every realized cost by an independent, mean-one log-normal factor
/// exp(S·Z − S²/2), seeded (`--cost-noise lognormal:S`).
fn add_cost_noise(d: &mut SplitData, s: f64, rng: &mut ChaCha8Rng) {
    for c in d.cost.iter_mut() {
        let z: f64 = rng.sample(StandardNormal);
        *c *= (s * z - s * s / 2.0).exp();
    }
}

/// Model j's (raw predicted cost, raw predicted sd, realized cost) on every query of a split.
fn cost_triples(d: &SplitData, j: usize) -> Vec<(f64, f64, f64)> {
    (0..d.n)
        .map(|q| {
            let k = q * d.m + j;
            (d.pred_cost[k], d.cost_sd[k], d.cost[k])
        })
        .collect()
}

/// Fits the cost model on the train split's out-of-sample (cross-fitted) predictions and
/// applies it to both splits.
fn calibrate_costs(train: &mut SplitData, test: &mut SplitData) -> CostCalibration {
    let per_model: Vec<Vec<(f64, f64, f64)>> = (0..train.m).map(|j| cost_triples(train, j)).collect();
    let cal = CostCalibration::fit(&per_model);
    for d in [train, test] {
        for q in 0..d.n {
            for j in 0..d.m {
                let k = q * d.m + j;
                let (c, v) = cal.apply(j, d.pred_cost[k], d.cost_sd[k]);
                d.pred_cost[k] = c;
                d.cost_var[k] = v;
            }
        }
    }
    cal
}

/// The calibration table of a cost model on a split: per model, realized / predicted and p90
/// coverage (on the raw predictions of `raw`, corrected by `cal`).
pub fn cost_checks(cal: &CostCalibration, raw: &SplitData) -> Vec<CostCheck> {
    (0..raw.m).map(|j| costmodel::check(cal, j, &cost_triples(raw, j))).collect()
}

/// Loads, splits, trains, predicts. Noise N(0, S) is added to the test split's μ only (the
/// online predictions), and σ² grows by S² (an estimator calibrated to its own error).
pub fn load(opts: &DataOptions) -> Result<EvalData> {
    if !(opts.train_frac > 0.0 && opts.train_frac < 1.0) {
        return Err(CoreError::Invalid(format!("--train-frac {}: expected a fraction in (0, 1)", opts.train_frac)));
    }
    if !(opts.estimator_noise.is_finite() && opts.estimator_noise >= 0.0) {
        return Err(CoreError::Invalid("--estimator-noise must be ≥ 0".into()));
    }
    let catalog = opts.catalog.map(Catalog::load).transpose()?;
    let all = read_records(opts.records)?;
    let (models, partial) = common_models(&all);
    if models.len() < 2 {
        return Err(CoreError::Invalid(format!(
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
    let predict = |recs: &[&Record], emb: Option<&[Vec<f32>]>, loo: bool| -> Vec<Prediction> {
        recs.iter()
            .enumerate()
            .map(|(q, r)| {
                let e = emb.map(|v| v[q].as_slice());
                est.predict_with(&r.prompt, r.task.as_deref(), e, loo.then_some(q))
            })
            .collect()
    };
    // Train-split predictions (what every knob and the cost model are calibrated on) are
    // cross-fitted: the default estimator is retrained on 4 of 5 folds of the train split and
    // predicts the fifth, so its task priors and token priors are out-of-sample too. An artifact
    // (a trained head) cannot be refitted here: its train predictions are leave-one-out kNN.
    let train_preds = match opts.artifact {
        Some(_) => predict(&train, train_emb.as_deref(), true),
        None => cross_fit(&train, &models, catalog.as_ref(), &opts.knn, opts.seed)?,
    };
    let main_preds = (train_preds, predict(&test, test_emb.as_deref(), false));
    let plain_preds = if opts.plain_knn {
        let p = PlainKnn::train(&train, &models, catalog.as_ref(), opts.knn.k)?;
        let tr: Vec<Prediction> = train.iter().enumerate().map(|(q, r)| p.predict(&r.prompt, Some(q))).collect();
        let te: Vec<Prediction> = test.iter().map(|r| p.predict(&r.prompt, None)).collect();
        Some((tr, te))
    } else {
        None
    };
    let finish = |preds: (Vec<Prediction>, Vec<Prediction>)| -> Result<Predicted> {
        let mut train_d = build(&models, &preds.0, &train, catalog.as_ref(), None)?;
        let mut test_d = if opts.estimator_noise > 0.0 {
            let dist = Normal::new(0.0, opts.estimator_noise).map_err(|e| CoreError::Invalid(e.to_string()))?;
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed);
            build(&models, &preds.1, &test, catalog.as_ref(), Some((&dist, &mut rng, opts.estimator_noise)))?
        } else {
            build(&models, &preds.1, &test, catalog.as_ref(), None)?
        };
        if let Some(s) = opts.cost_noise {
            // The same seed for every estimator: they see the same noisy costs.
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xc057);
            add_cost_noise(&mut train_d, s, &mut rng);
            add_cost_noise(&mut test_d, s, &mut rng);
        }
        let raw_test = test_d.clone();
        let cost_model = calibrate_costs(&mut train_d, &mut test_d);
        let checks = cost_checks(&cost_model, &raw_test);
        let checks_raw = cost_checks(&CostCalibration::identity(models.len()), &raw_test);
        Ok(Predicted { train: train_d, test: test_d, cost_model, cost_checks: checks, cost_checks_raw: checks_raw })
    };
    let main = finish(main_preds)?;
    let plain = plain_preds.map(finish).transpose()?;
    Ok(EvalData { records: all.len(), models, main, plain })
}

/// Folds of the train split for cross-fitted predictions.
const FOLDS: usize = 5;

/// Each train record predicted by the default estimator trained on the other folds.
fn cross_fit(
    train: &[&Record],
    models: &[String],
    catalog: Option<&Catalog>,
    knn: &KnnConfig,
    seed: u64,
) -> Result<Vec<Prediction>> {
    let n = train.len();
    if n < 2 * FOLDS {
        // Too few records to fold: leave-one-out on one estimator.
        let est = KnnEstimator::train(train, models, catalog, knn.clone())?;
        return Ok(train
            .iter()
            .enumerate()
            .map(|(q, r)| est.predict_excluding(&r.prompt, r.task.as_deref(), Some(q)))
            .collect());
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xf01d));
    let mut fold = vec![0usize; n];
    for (k, &q) in order.iter().enumerate() {
        fold[q] = k % FOLDS;
    }
    let mut out: Vec<Option<Prediction>> = vec![None; n];
    for f in 0..FOLDS {
        let fit: Vec<&Record> = (0..n).filter(|&q| fold[q] != f).map(|q| train[q]).collect();
        let est = KnnEstimator::train(&fit, models, catalog, knn.clone())?;
        for q in (0..n).filter(|&q| fold[q] == f) {
            out[q] = Some(est.predict(&train[q].prompt, train[q].task.as_deref()));
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(q, p)| p.ok_or_else(|| CoreError::Invalid(format!("train record {q} was in no fold"))))
        .collect()
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
        return Err(CoreError::Invalid(format!(
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
        return Err(CoreError::Invalid(format!(
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
