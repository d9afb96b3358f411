//! What the server holds: the live config generation (catalog, backends, estimator, tenants),
//! swapped whole on reload, and the state that outlives reloads (per-model in-flight counts and
//! breakers, the budget ledger, tenants' spend).

use super::backend::{Backend, OpenAi, Replay, ReplayData};
use super::breaker::Breaker;
use super::budgets::Budgets;
use super::config::{Config, Price, Tenant};
use super::latency::LatencyFit;
use super::predictions::{Cached, PredictionCache};
use super::tls::TlsState;
use crate::{Result, RouterError};
use estimator::{Catalog, Estimator, KnnConfig, KnnEstimator, ModelEntry, Record};
use llmroute_core::ledger::Ledger;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// This replica's share of a model's slots: ⌊capacity / replicas⌋, at least 1 when the model has
/// any (a model the plan runs must stay reachable from every replica).
pub fn replica_share(capacity: usize, replicas: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        (capacity / replicas.max(1)).max(1)
    }
}

/// Per-model runtime state, kept across reloads for models that stay in the catalog.
pub struct ModelState {
    /// Calls assigned to the model and not finished (running, or waiting for a slot).
    pub in_flight: AtomicUsize,
    /// KV tokens (input + expected output) those calls hold.
    pub kv_in_flight: AtomicU64,
    pub breaker: Mutex<Breaker>,
    /// One permit per slot: a call holds one while the backend works on it, so the backend never
    /// sees more than the model's capacity at once (a batch over the free slots waits here).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The permits `slots` was given (a reload that changes the capacity adds or forgets some).
    slot_total: AtomicUsize,
    /// How long its answers take, learned from them (`latency.rs`).
    latency: Mutex<LatencyFit>,
}

/// One call running on a model: counted in its slots and KV tokens until dropped (also when the
/// task that holds it ends early).
pub struct InFlight {
    state: Arc<ModelState>,
    kv: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.state.kv_in_flight.fetch_sub(self.kv, Ordering::Relaxed);
    }
}

impl Default for ModelState {
    fn default() -> Self {
        ModelState {
            in_flight: AtomicUsize::new(0),
            kv_in_flight: AtomicU64::new(0),
            breaker: Mutex::new(Breaker::default()),
            slots: Arc::new(tokio::sync::Semaphore::new(0)),
            slot_total: AtomicUsize::new(0),
            latency: Mutex::new(LatencyFit::default()),
        }
    }
}

impl ModelState {
    /// Sets the number of slots (permits) to `capacity`. Shrinking forgets free permits now and
    /// the rest as running calls return them.
    pub fn set_capacity(&self, capacity: usize) {
        let before = self.slot_total.swap(capacity, Ordering::Relaxed);
        if capacity > before {
            self.slots.add_permits(capacity - before);
        } else if capacity < before {
            let mut left = before - capacity;
            left -= self.slots.forget_permits(left);
            if left > 0 {
                let slots = self.slots.clone();
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(left as u32).await {
                        p.forget();
                    }
                });
            }
        }
    }

    /// Counts a call of `kv_tokens` on this model until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>, kv_tokens: f64) -> InFlight {
        let kv = kv_tokens.max(0.0).round() as u64;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.kv_in_flight.fetch_add(kv, Ordering::Relaxed);
        InFlight { state: self.clone(), kv }
    }

    /// The model's learned answer time (`latency.rs`).
    pub fn latency(&self) -> std::sync::MutexGuard<'_, LatencyFit> {
        // As for the breaker: a poisoned lock leaves a valid fit.
        self.latency.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A poisoned breaker lock only means a panic elsewhere; the state itself is still valid.
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct LiveModel {
    pub entry: ModelEntry,
    pub backend: Backend,
    /// Column of this model (or its proxy, or its parent when it runs on a prior) in the
    /// estimator's predictions.
    pub est_index: usize,
    /// Set when the model has no records of its own: it is predicted from its parent.
    pub prior: Option<Prior>,
    /// This replica's slots: instances × max_concurrency ÷ `backends.replicas`.
    pub capacity: usize,
    /// The model's slots over all replicas (instances × max_concurrency): the limit of the slot
    /// leases shared through Redis.
    pub total_capacity: usize,
    pub state: Arc<ModelState>,
}

/// A day-0 prior: a catalog model with no records of its own (a model the compression worker
/// just made) is predicted as its `parent`, its μ scaled by the quality ratio its model card
/// measured (or the catalog's `quality_ratio`) and its σ widened by the size of that shift; the
/// feedback it gets then moves it faster than a trained model (`feedback.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prior {
    /// The recorded model it is predicted as.
    pub parent: String,
    pub ratio: f64,
    /// Where the ratio came from: `card <path>` or `quality_ratio`.
    pub source: String,
}

/// The least extra spread a prior's μ gets (on top of the parent's σ and the size of the shift).
const PRIOR_MIN_SD: f64 = 0.05;

impl Prior {
    /// The prior's (μ, σ) from the parent's.
    pub fn apply(&self, mu: f64, sigma: f64) -> (f64, f64) {
        let shifted = (mu * self.ratio).clamp(0.0, 1.0);
        let widen = (mu - shifted).abs().max(PRIOR_MIN_SD);
        (shifted, (sigma * sigma + widen * widen).sqrt().min(0.5))
    }

    /// As `ListModels` shows it.
    pub fn describe(&self) -> String {
        format!("prior: {} × {:.3} ({})", self.parent, self.ratio, self.source)
    }
}

/// Each catalog model's name in the estimator (its own, or its proxy) and, for a model with a
/// `parent` and no proxy, the parent's: used when the records have none of the model's own.
type Wanted = Vec<(String, Option<String>)>;

/// What the trained estimator depends on: records, (k, max query terms), proxies, replay records,
/// the models wanted, and the artifact (path, modification time) when there is one.
type TrainKey = (
    PathBuf,
    (usize, usize, usize),
    BTreeMap<String, String>,
    PathBuf,
    Wanted,
    Option<(PathBuf, Option<std::time::SystemTime>)>,
);

/// The estimator and replay data built from one records file (reused across reloads when the
/// estimator settings do not change: training takes a second or two).
pub struct Trained {
    key: TrainKey,
    /// The estimator model each wanted catalog model resolved to (its own name or its parent's).
    pub resolved: Vec<String>,
    pub estimator: Arc<Estimator>,
    pub replay: Arc<ReplayData>,
    /// Out-of-sample predictions on a sample of the training records (leave-one-out when the
    /// estimator was trained here), for calibrating the batch price.
    pub calibration: Vec<CalibQuery>,
    /// This estimator's predictions of recent prompts.
    pub predictions: PredictionCache,
}

impl Trained {
    /// The estimator's prediction for a prompt and the prompt's heaviest features (the online
    /// index's key), from the cache when it was seen recently; a miss extracts the features once
    /// for both.
    pub fn predict(&self, prompt: &str, task: Option<&str>) -> Cached {
        self.predictions.get_or(prompt, task, || {
            let (prediction, full) = self.estimator.predict_and_features(prompt, task);
            Cached { prediction, features: Arc::new(crate::online::heaviest(full, crate::online::TERMS)) }
        })
    }
}

/// One training record as the estimator predicts it without itself.
pub struct CalibQuery {
    pub mu: Vec<f64>,
    pub output_tokens: Vec<f64>,
    pub input_tokens: f64,
    /// The recorded cost of each estimated model's answer (None where the record cannot price it).
    pub realized: Vec<Option<f64>>,
}

/// Training records sampled for the price calibration.
const CALIB_SAMPLE: usize = 1500;

/// One config generation.
pub struct Live {
    pub generation: u64,
    /// The batch price λ (0: none): the batch problem maximizes Σ (μ − λ·ĉ)·x under the grant.
    pub price: f64,
    pub config: Config,
    pub models: Vec<LiveModel>,
    pub trained: Arc<Trained>,
    pub by_key: HashMap<String, usize>,
}

impl Live {
    /// The prediction for a prompt with one column per catalog model, in catalog order (models
    /// estimated as the same recorded model get their own copies, so what feedback teaches one
    /// does not move the other), priors applied.
    pub fn predict(&self, prompt: &str, task: Option<&str>) -> estimator::Prediction {
        self.predict_and_features(prompt, task).0
    }

    /// As `predict`, with the prompt's heaviest TF-IDF features (`feedback.online`'s key).
    pub fn predict_and_features(
        &self,
        prompt: &str,
        task: Option<&str>,
    ) -> (estimator::Prediction, Arc<estimator::features::SparseVec>) {
        let Cached { prediction: p, features } = self.trained.predict(prompt, task);
        let mut out = estimator::Prediction::zeros(self.models.len());
        for (j, md) in self.models.iter().enumerate() {
            let e = md.est_index;
            let at = |v: &Vec<f64>| v.get(e).copied().unwrap_or(0.0);
            (out.mu[j], out.sigma[j]) = match &md.prior {
                Some(prior) => prior.apply(at(&p.mu), at(&p.sigma)),
                None => (at(&p.mu), at(&p.sigma)),
            };
            out.output_tokens[j] = at(&p.output_tokens);
            out.cost[j] = at(&p.cost);
            out.cost_sd[j] = at(&p.cost_sd);
            out.output_tokens_sd[j] = at(&p.output_tokens_sd);
        }
        (out, features)
    }

    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.entry.name == name)
    }

    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.config.tenants.iter().find(|t| t.name == name)
    }

    /// The tenant whose key this is (compared by SHA-256: the config keeps no plain key).
    pub fn tenant_by_key(&self, key: &str) -> Option<&Tenant> {
        self.by_key.get(&super::config::key_hash(key)).map(|&i| &self.config.tenants[i])
    }
}

pub struct Shared {
    live: RwLock<Arc<Live>>,
    pub ledger: Mutex<Ledger>,
    pub budgets: Arc<Budgets>,
    /// The listeners' certificate (when `tls` is configured).
    pub tls: Option<Arc<TlsState>>,
    pub batch_seq: AtomicU64,
    states: Mutex<HashMap<String, Arc<ModelState>>>,
    pool: reqwest::Client,
    /// OpenTelemetry export (`tracing.otlp_endpoint`); None: tracing off.
    pub tracer: Option<crate::otel::Tracer>,
    /// Answered queries by request id (for feedback).
    pub requests: crate::requests::RequestLog,
    pub feedback: crate::feedback::Feedback,
    /// Scored answers the predictions learn from (`feedback.online`).
    pub online: crate::online::OnlineIndex,
}

impl Shared {
    pub fn new(config: Config, tracer: Option<crate::otel::Tracer>) -> Result<Shared> {
        let online_max = config.feedback.online_max;
        let pool = OpenAi::pool()?;
        let states = Mutex::new(HashMap::new());
        let live = build_live(config, 1, None, &states, &pool)?;
        let mut ledger = Ledger::new(live.config.budget.per_query(), live.config.budget.prior_margin);
        ledger.configure(&live.config.ledger_settings());
        let budgets = Budgets::new(&live.config.budget_store)?;
        let tls = live.config.tls.as_ref().map(TlsState::new).transpose()?;
        let feedback = crate::feedback::Feedback::default();
        let online = crate::online::OnlineIndex::new(online_max);
        if let Some(path) = &live.config.feedback.log {
            let r = crate::feedback::restore(&feedback, live.config.feedback.online.then_some(&online), path)?;
            tracing::info!(
                path = %path.display(),
                scores = r.scores,
                documents = r.documents,
                skipped = r.skipped,
                "feedback restored from the log"
            );
        }
        Ok(Shared {
            live: RwLock::new(Arc::new(live)),
            ledger: Mutex::new(ledger),
            budgets,
            tls,
            batch_seq: AtomicU64::new(0),
            states,
            pool,
            tracer,
            requests: Default::default(),
            feedback,
            online,
        })
    }

    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads, validates and swaps in a new config; on error the current one keeps serving.
    pub fn reload(&self, path: &std::path::Path) -> Result<u64> {
        let config = Config::load(path)?;
        if config.budget_store != *self.budgets.config() {
            return Err(RouterError::config(
                path,
                "budget_store",
                "changes take a restart (the running store is kept)",
            ));
        }
        if config.tracing != self.live().config.tracing {
            return Err(RouterError::config(path, "tracing", "changes take a restart (the running exporter is kept)"));
        }
        match (&self.tls, &config.tls) {
            (Some(state), Some(t)) => state.reload(t).map_err(|e| match e {
                RouterError::Config { field, msg, .. } => RouterError::config(path, field, msg),
                e => e,
            })?,
            (None, None) => {}
            _ => return Err(RouterError::config(path, "tls", "turning TLS on or off takes a restart")),
        }
        let current = self.live();
        let live = build_live(config, current.generation + 1, Some(&current.trained), &self.states, &self.pool)?;
        let generation = live.generation;
        {
            self.ledger().configure(&live.config.ledger_settings());
        }
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        Ok(generation)
    }
}

fn build_live(
    config: Config,
    generation: u64,
    previous: Option<&Arc<Trained>>,
    states: &Mutex<HashMap<String, Arc<ModelState>>>,
    pool: &reqwest::Client,
) -> Result<Live> {
    let catalog = Catalog::load(&config.catalog)?;
    let names: Vec<String> = catalog.models.iter().map(|m| m.name.clone()).collect();
    config.check_against(&names)?;
    // The recorded model each catalog model is estimated (and replayed) as: its proxy, its own
    // name, or — with no records of its own — its parent's.
    let proxied = |name: &str| config.estimator.proxies.get(name).cloned().unwrap_or_else(|| name.to_string());
    let wanted: Wanted = catalog
        .models
        .iter()
        .map(|m| {
            let parent = m.parent.as_deref().filter(|_| !config.estimator.proxies.contains_key(&m.name));
            (proxied(&m.name), parent.map(proxied))
        })
        .collect();
    let key = (
        config.estimator_records().to_path_buf(),
        (config.estimator.k, config.estimator.max_query_terms, config.estimator.max_doc_terms),
        config.estimator.proxies.clone(),
        config.replay_records().to_path_buf(),
        wanted.clone(),
        config.estimator.artifact.as_ref().map(|p| (p.clone(), std::fs::metadata(p).and_then(|m| m.modified()).ok())),
    );
    let trained = match previous.filter(|t| t.key == key) {
        Some(t) => t.clone(),
        None => Arc::new(train(&config, &catalog, &wanted, key)?),
    };
    let recorded = &trained.resolved;
    let mut replay_as = config.estimator.proxies.clone();
    let mut priors = Vec::with_capacity(catalog.models.len());
    for (i, (m, rec)) in catalog.models.iter().zip(recorded).enumerate() {
        if *rec == wanted[i].0 {
            priors.push(None);
            continue;
        }
        let (ratio, source) = match (m.quality_ratio, &m.card) {
            (Some(r), _) => (r, "quality_ratio".to_string()),
            (None, Some(card)) => match estimator::catalog::card_quality_ratio(card) {
                Ok(r) => (r, format!("card {}", card.display())),
                Err(e) => return Err(RouterError::config(&config.catalog, format!("models[{i}].card"), e.to_string())),
            },
            (None, None) => {
                return Err(RouterError::config(
                    &config.catalog,
                    format!("models[{i}].quality_ratio"),
                    format!(
                        "`{}` has no records; its day-0 prior from parent `{rec}` needs a quality ratio: set `card` \
                         (the compression worker's model card with task accuracies) or `quality_ratio`",
                        m.name
                    ),
                ))
            }
        };
        tracing::info!(model = %m.name, parent = %rec, ratio, %source, "no records: predicted from its parent (day-0 prior)");
        // Replay answers it as its parent.
        replay_as.insert(m.name.clone(), rec.clone());
        priors.push(Some(Prior { parent: rec.clone(), ratio, source }));
    }
    let plan = match &config.plan {
        Some(path) => {
            let plan = llmroute_core::plan::Plan::load(path)?;
            if let Some(m) = plan.instances.keys().find(|m| !names.contains(m)) {
                return Err(RouterError::config(
                    path,
                    format!("instances.{m}"),
                    format!("`{m}` is not in the catalog"),
                ));
            }
            Some(plan)
        }
        None => None,
    };
    let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
    let mut models = Vec::with_capacity(catalog.models.len());
    for ((entry, rec), prior) in catalog.models.iter().zip(recorded).zip(priors) {
        let est_index = trained
            .estimator
            .models()
            .iter()
            .position(|m| m == rec)
            .ok_or_else(|| RouterError::Internal(format!("estimator lacks model {rec}")))?;
        let backend = if entry.backend == "replay" {
            Backend::Replay(Replay::new(
                trained.replay.clone(),
                replay_as.clone(),
                entry.default_output_tokens.min(config.limits.max_output_tokens),
                config.replay.ttft(),
                config.replay.per_token(),
            ))
        } else {
            Backend::OpenAi(OpenAi::new(&entry.backend, pool.clone()))
        };
        let instances = match &plan {
            Some(p) => p.instances_of(&entry.name) as usize,
            None => config.instances.get(&entry.name).copied().unwrap_or(1) as usize,
        };
        let state = states.entry(entry.name.clone()).or_default().clone();
        let total_capacity = instances * entry.max_concurrency as usize;
        let capacity = replica_share(total_capacity, config.backends.replicas);
        state.set_capacity(capacity);
        models.push(LiveModel { capacity, total_capacity, entry: entry.clone(), backend, est_index, prior, state });
    }
    let by_key =
        config.tenants.iter().enumerate().filter_map(|(i, t)| t.key_sha256.as_ref().map(|k| (k.clone(), i))).collect();
    let price = match config.budget.price {
        Price::Off => 0.0,
        Price::Fixed(x) => x,
        Price::Auto => {
            // The calibration queries with a column per serving model (priors applied).
            let serving_models: Vec<&LiveModel> = models.iter().filter(|m| m.capacity > 0).collect();
            let view: Vec<CalibQuery> = trained
                .calibration
                .iter()
                .map(|q| {
                    let col = |v: &Vec<f64>, e: usize| v.get(e).copied().unwrap_or(0.0);
                    CalibQuery {
                        mu: serving_models
                            .iter()
                            .map(|m| {
                                let mu = col(&q.mu, m.est_index);
                                m.prior.as_ref().map_or(mu, |p| p.apply(mu, 0.0).0)
                            })
                            .collect(),
                        output_tokens: serving_models.iter().map(|m| col(&q.output_tokens, m.est_index)).collect(),
                        input_tokens: q.input_tokens,
                        realized: serving_models
                            .iter()
                            .map(|m| q.realized.get(m.est_index).copied().flatten())
                            .collect(),
                    }
                })
                .collect();
            let serving: Vec<(usize, &ModelEntry)> =
                serving_models.iter().enumerate().map(|(k, m)| (k, &m.entry)).collect();
            let costs = predicted_costs(&view, &serving, config.limits.max_output_tokens as f64);
            let headroom = config
                .budget
                .headroom()
                .unwrap_or_else(|| auto_headroom_from(&view, &serving, &costs, config.budget.max_over_probability));
            let target = config.budget.per_query() / (1.0 + headroom);
            let lambda = calibrate_price(&view, &serving, &costs, target);
            tracing::info!(
                price = lambda,
                target_usd_per_query = target,
                headroom,
                queries = trained.calibration.len(),
                "batch price calibrated"
            );
            lambda
        }
    };
    Ok(Live { generation, price, config, models, trained, by_key })
}

fn train(config: &Config, catalog: &Catalog, wanted: &Wanted, key: TrainKey) -> Result<Trained> {
    let t0 = std::time::Instant::now();
    let records = estimator::records::read_records(config.estimator_records())?;
    let loaded = match &config.estimator.artifact {
        Some(path) => Some(
            estimator::artifact::load_tuned(
                path,
                Some((config.estimator.max_query_terms, config.estimator.max_doc_terms)),
            )
            .map_err(|e| RouterError::config(&config.path, "estimator.artifact", e.to_string()))?,
        ),
        None => None,
    };
    // A model the estimator has no data for falls back to its parent (a day-0 prior).
    let known = |m: &str| match &loaded {
        Some(l) => l.estimator.models().iter().any(|x| x == m),
        None => records.iter().any(|r| r.outcomes.contains_key(m)),
    };
    let recorded: Vec<String> = wanted
        .iter()
        .map(|(own, parent)| match parent {
            Some(p) if !known(own) && known(p) => p.clone(),
            _ => own.clone(),
        })
        .collect();
    let mut est_models: Vec<String> = recorded.clone();
    est_models.sort();
    est_models.dedup();
    let usable: Vec<&Record> =
        records.iter().filter(|r| est_models.iter().all(|m| r.outcomes.contains_key(m))).collect();
    if usable.is_empty() {
        let field = if config.estimator.proxies.is_empty() { "estimator.records" } else { "estimator.proxies" };
        return Err(RouterError::config(
            &config.path,
            field,
            format!(
                "no record in {} has outcomes for every catalog model ({}); map models without records to \
                 recorded ones with estimator.proxies",
                config.estimator_records().display(),
                est_models.join(", ")
            ),
        ));
    }
    // Prices for the estimator's own cost column: the catalog entry of that name, else of a model
    // estimated as it.
    let est_catalog = Catalog {
        name: catalog.name.clone(),
        note: None,
        models: est_models
            .iter()
            .filter_map(|m| {
                let i = catalog
                    .models
                    .iter()
                    .position(|c| c.name == *m)
                    .or_else(|| recorded.iter().position(|r| r == m))?;
                let mut e = catalog.models[i].clone();
                e.name = m.clone();
                Some(e)
            })
            .collect(),
    };
    let knn = KnnConfig {
        k: config.estimator.k,
        max_query_terms: config.estimator.max_query_terms,
        max_doc_terms: config.estimator.max_doc_terms,
        ..KnnConfig::default()
    };
    let same_records = config.replay_records() == config.estimator_records();
    let (estimator, n_train, source) = match (loaded, &config.estimator.artifact) {
        (Some(loaded), Some(path)) => {
            if let Some(m) = est_models.iter().find(|m| !loaded.estimator.models().contains(m)) {
                return Err(RouterError::config(
                    &config.path,
                    "estimator.artifact",
                    format!(
                        "{} has no model `{m}` (it has {}); retrain it or map the model with estimator.proxies",
                        path.display(),
                        loaded.estimator.models().join(", ")
                    ),
                ));
            }
            (Arc::new(loaded.estimator), loaded.records.len(), "artifact")
        }
        _ => (
            Arc::new(Estimator::from_knn(KnnEstimator::train(&usable, &est_models, Some(&est_catalog), knn.clone())?)),
            usable.len(),
            "records",
        ),
    };
    let calibration =
        calibration_queries(&estimator, &usable, &est_models, &est_catalog, config.estimator.artifact.is_none());
    let replay_records: Vec<Record> = if same_records {
        usable.into_iter().cloned().collect()
    } else {
        estimator::records::read_records(config.replay_records())?
    };
    // Replay finds the most similar record by hashed features: the estimator's own index when it
    // was trained on the replay records, else a kNN index over them.
    let nearest = if same_records && config.estimator.artifact.is_none() {
        Some(estimator.clone())
    } else {
        let refs: Vec<&Record> = replay_records.iter().collect();
        KnnEstimator::train(&refs, &est_models, Some(&est_catalog), knn).ok().map(|k| Arc::new(Estimator::from_knn(k)))
    };
    tracing::info!(
        records = n_train,
        source,
        embedder = ?estimator.embedder(),
        combine = ?estimator.combine(),
        models = est_models.len(),
        ms = t0.elapsed().as_millis() as u64,
        "estimator trained"
    );
    Ok(Trained {
        key,
        resolved: recorded,
        estimator,
        replay: Arc::new(ReplayData::new(replay_records, nearest)),
        calibration,
        predictions: PredictionCache::new(config.estimator.cache_entries),
    })
}

/// Every ⌈n / CALIB_SAMPLE⌉-th training record predicted without itself (`loo`: the estimator's
/// documents are these records in this order; an artifact's are not, so it predicts plainly).
fn calibration_queries(
    estimator: &Estimator,
    records: &[&Record],
    models: &[String],
    catalog: &Catalog,
    loo: bool,
) -> Vec<CalibQuery> {
    let step = records.len().div_ceil(CALIB_SAMPLE).max(1);
    records
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(q, r)| {
            let p = if loo {
                estimator.predict_with(&r.prompt, r.task.as_deref(), None, Some(q))
            } else {
                estimator.predict(&r.prompt, r.task.as_deref())
            };
            CalibQuery {
                mu: p.mu,
                output_tokens: p.output_tokens,
                input_tokens: estimator::estimate_tokens(&r.prompt) as f64,
                realized: models.iter().map(|m| estimator::knn::outcome_cost(r, m, Some(catalog)).ok()).collect(),
            }
        })
        .collect()
}

/// The predicted cost of each calibration query on each serving model (catalog prices ×
/// predicted tokens, capped at `max_tokens`), row per query.
fn predicted_costs(queries: &[CalibQuery], models: &[(usize, &ModelEntry)], max_tokens: f64) -> Vec<Vec<f64>> {
    queries
        .iter()
        .map(|q| models.iter().map(|(e, m)| m.cost(q.input_tokens, q.output_tokens[*e].min(max_tokens))).collect())
        .collect()
}

/// `ledger::auto_headroom` on the training records: consecutive batches of 64 calibration
/// queries, each sent whole to one serving model and by best μ, predicted cost (`costs`, from
/// `predicted_costs`) against the recorded cost.
fn auto_headroom_from(queries: &[CalibQuery], models: &[(usize, &ModelEntry)], costs: &[Vec<f64>], eps: f64) -> f64 {
    let mut obs = Vec::new();
    for (batch, batch_costs) in queries.chunks(64).zip(costs.chunks(64)) {
        let mut plans: Vec<Vec<usize>> = (0..models.len()).map(|k| vec![k; batch.len()]).collect();
        plans.push(
            batch
                .iter()
                .map(|q| {
                    (0..models.len()).max_by(|&a, &b| q.mu[models[a].0].total_cmp(&q.mu[models[b].0])).unwrap_or(0)
                })
                .collect(),
        );
        for plan in plans {
            let (mut cost, mut realized, mut priced) = (0.0, 0.0, true);
            for ((q, c), &k) in batch.iter().zip(batch_costs).zip(&plan) {
                cost += c[k];
                match q.realized.get(models[k].0).copied().flatten() {
                    Some(r) => realized += r,
                    None => priced = false,
                }
            }
            if priced {
                obs.push(llmroute_core::ledger::Observation { cost, var: 0.0, realized });
            }
        }
    }
    llmroute_core::ledger::auto_headroom(&obs, eps)
}

/// The price λ at which routing each calibration query to its best model by μ − λ·ĉ among
/// `models` (the serving ones: estimator column, catalog entry; `costs` from `predicted_costs`)
/// spends `target` USD per query on average: 0 when the best-μ choice already spends no more;
/// found by bisection on log λ.
pub fn calibrate_price(
    queries: &[CalibQuery],
    models: &[(usize, &ModelEntry)],
    costs: &[Vec<f64>],
    target: f64,
) -> f64 {
    let spend = |lambda: f64| -> f64 {
        let total: f64 = queries
            .iter()
            .zip(costs)
            .map(|(q, c)| {
                let mut best = (f64::NEG_INFINITY, 0.0);
                for ((e, _), &cost) in models.iter().zip(c) {
                    let v = q.mu[*e] - lambda * cost;
                    if v > best.0 {
                        best = (v, cost);
                    }
                }
                best.1
            })
            .sum();
        total / queries.len().max(1) as f64
    };
    if queries.is_empty() || target.is_nan() || target <= 0.0 || spend(0.0) <= target {
        return 0.0;
    }
    // λ is in quality per USD: bracket around 1 / target.
    let (mut lo, mut hi) = ((1e-4 / target).ln(), (1e4 / target).ln());
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if spend(mid.exp()) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi.exp()
}

/// Next batch id.
pub fn next_batch_id(shared: &Shared) -> u64 {
    shared.batch_seq.fetch_add(1, Ordering::Relaxed) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, price_out: f64) -> ModelEntry {
        ModelEntry {
            name: name.into(),
            backend: "replay".into(),
            price_in_per_mtok: 0.0,
            price_out_per_mtok: price_out,
            price_source: None,
            max_concurrency: 8,
            kv_tokens: None,
            default_output_tokens: 100,
            parent: None,
            recipe: None,
            card: None,
            quality_ratio: None,
            capabilities: Default::default(),
            context_tokens: None,
        }
    }

    /// A day-0 prior scales the parent's μ by its ratio and widens σ by the shift (at least
    /// 0.05), never past [0, 1] or σ 0.5.
    #[test]
    fn a_prior_scales_mu_and_widens_sigma() {
        let p = Prior { parent: "a".into(), ratio: 0.8, source: "quality_ratio".into() };
        let (mu, sigma) = p.apply(0.5, 0.1);
        assert!((mu - 0.4).abs() < 1e-12 && (sigma - (0.01f64 + 0.01).sqrt()).abs() < 1e-12, "{mu} {sigma}");
        let (mu, sigma) = Prior { ratio: 0.99, ..p.clone() }.apply(0.5, 0.0);
        assert!((mu - 0.495).abs() < 1e-12 && (sigma - 0.05).abs() < 1e-12, "{mu} {sigma}");
        let (mu, sigma) = Prior { ratio: 1.5, ..p.clone() }.apply(0.9, 0.6);
        assert!(mu == 1.0 && sigma == 0.5, "{mu} {sigma}");
        assert_eq!(p.describe(), "prior: a × 0.800 (quality_ratio)");
    }

    /// Half the queries gain 0.4 from the dear model, half 0.05: a price that spends the
    /// midpoint sends only the first half up.
    #[test]
    fn price_spends_the_target_and_is_zero_when_it_need_not_bind() {
        let (cheap, dear) = (entry("cheap", 1.0), entry("dear", 20.0));
        let models = vec![(0usize, &cheap), (1usize, &dear)];
        let queries: Vec<CalibQuery> = (0..100)
            .map(|q| CalibQuery {
                mu: vec![0.5, if q % 2 == 0 { 0.9 } else { 0.55 }],
                output_tokens: vec![100.0, 100.0],
                input_tokens: 10.0,
                realized: vec![None, None],
            })
            .collect();
        let (c_cheap, c_dear) = (cheap.cost(10.0, 100.0), dear.cost(10.0, 100.0));
        let target = 0.5 * (c_cheap + c_dear);
        let costs = predicted_costs(&queries, &models, 4096.0);
        let lambda = calibrate_price(&queries, &models, &costs, target);
        // Between the two gains per extra dollar: 0.05 / Δc < λ ≤ 0.4 / Δc.
        let dc = c_dear - c_cheap;
        assert!(lambda > 0.05 / dc && lambda <= 0.4 / dc * 1.0001, "{lambda}");
        assert_eq!(calibrate_price(&queries, &models, &costs, c_dear * 2.0), 0.0);
        assert_eq!(calibrate_price(&[], &models, &[], target), 0.0);
    }

    /// Records whose costs are predicted exactly need no headroom; records that overrun their
    /// prediction by half get the cap.
    #[test]
    fn auto_headroom_from_the_training_records() {
        let (cheap, dear) = (entry("cheap", 1.0), entry("dear", 20.0));
        let models = vec![(0usize, &cheap), (1usize, &dear)];
        let queries = |over: f64| -> Vec<CalibQuery> {
            (0..640)
                .map(|q| CalibQuery {
                    mu: vec![0.5, if q % 2 == 0 { 0.9 } else { 0.4 }],
                    output_tokens: vec![100.0, 100.0],
                    input_tokens: 10.0,
                    realized: vec![Some(cheap.cost(10.0, 100.0) * over), Some(dear.cost(10.0, 100.0) * over)],
                })
                .collect()
        };
        let headroom = |qs: &[CalibQuery]| auto_headroom_from(qs, &models, &predicted_costs(qs, &models, 4096.0), 0.05);
        assert_eq!(headroom(&queries(1.0)), 0.0);
        assert_eq!(headroom(&queries(1.5)), llmroute_core::ledger::MAX_HEADROOM);
        // Records that cannot be priced are left out: no batch, no headroom.
        let mut unpriced = queries(1.5);
        unpriced.iter_mut().for_each(|q| q.realized = vec![None, None]);
        assert_eq!(headroom(&unpriced), 0.0);
    }
}
