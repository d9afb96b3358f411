//! What the server holds: the live config generation (catalog, backends, estimator, tenants),
//! swapped whole on reload, and the state that outlives reloads (per-model in-flight counts and
//! breakers, the budget ledger, tenants' spend).

use super::backend::{Backend, OpenAi, Replay, ReplayData};
use super::breaker::Breaker;
use super::budgets::Budgets;
use super::config::{Config, Price, Tenant};
use super::predictions::PredictionCache;
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

    pub fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A poisoned breaker lock only means a panic elsewhere; the state itself is still valid.
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct LiveModel {
    pub entry: ModelEntry,
    pub backend: Backend,
    /// Column of this model (or its proxy) in the estimator's predictions.
    pub est_index: usize,
    /// This replica's slots: instances × max_concurrency ÷ `backends.replicas`.
    pub capacity: usize,
    /// The model's slots over all replicas (instances × max_concurrency): the limit of the slot
    /// leases shared through Redis.
    pub total_capacity: usize,
    pub state: Arc<ModelState>,
}

/// What the trained estimator depends on: records, (k, max query terms), proxies, replay records,
/// estimated models, and the artifact (path, modification time) when there is one.
type TrainKey = (
    PathBuf,
    (usize, usize),
    BTreeMap<String, String>,
    PathBuf,
    Vec<String>,
    Option<(PathBuf, Option<std::time::SystemTime>)>,
);

/// The estimator and replay data built from one records file (reused across reloads when the
/// estimator settings do not change: training takes a second or two).
pub struct Trained {
    key: TrainKey,
    pub estimator: Arc<Estimator>,
    pub replay: Arc<ReplayData>,
    /// Out-of-sample predictions on a sample of the training records (leave-one-out when the
    /// estimator was trained here), for calibrating the batch price.
    pub calibration: Vec<CalibQuery>,
    /// This estimator's predictions of recent prompts.
    pub predictions: PredictionCache,
}

impl Trained {
    /// The estimator's prediction for a prompt, from the cache when it was seen recently.
    pub fn predict(&self, prompt: &str, task: Option<&str>) -> estimator::Prediction {
        self.predictions.get_or(prompt, task, || self.estimator.predict(prompt, task))
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
            feedback: Default::default(),
            online: crate::online::OnlineIndex::new(online_max),
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
    // The recorded model each catalog model is estimated (and replayed) as.
    let recorded: Vec<String> = catalog
        .models
        .iter()
        .map(|m| config.estimator.proxies.get(&m.name).cloned().unwrap_or_else(|| m.name.clone()))
        .collect();
    let mut est_models: Vec<String> = recorded.clone();
    est_models.sort();
    est_models.dedup();
    let key = (
        config.estimator_records().to_path_buf(),
        (config.estimator.k, config.estimator.max_query_terms),
        config.estimator.proxies.clone(),
        config.replay_records().to_path_buf(),
        est_models.clone(),
        config.estimator.artifact.as_ref().map(|p| (p.clone(), std::fs::metadata(p).and_then(|m| m.modified()).ok())),
    );
    let trained = match previous.filter(|t| t.key == key) {
        Some(t) => t.clone(),
        None => Arc::new(train(&config, &catalog, &recorded, est_models.clone(), key)?),
    };
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
    for (entry, rec) in catalog.models.iter().zip(&recorded) {
        let est_index = trained
            .estimator
            .models()
            .iter()
            .position(|m| m == rec)
            .ok_or_else(|| RouterError::Internal(format!("estimator lacks model {rec}")))?;
        let backend = if entry.backend == "replay" {
            Backend::Replay(Replay::new(
                trained.replay.clone(),
                config.estimator.proxies.clone(),
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
        models.push(LiveModel { capacity, total_capacity, entry: entry.clone(), backend, est_index, state });
    }
    let by_key =
        config.tenants.iter().enumerate().filter_map(|(i, t)| t.key_sha256.as_ref().map(|k| (k.clone(), i))).collect();
    let price = match config.budget.price {
        Price::Off => 0.0,
        Price::Fixed(x) => x,
        Price::Auto => {
            let serving: Vec<(usize, &ModelEntry)> =
                models.iter().filter(|m| m.capacity > 0).map(|m| (m.est_index, &m.entry)).collect();
            let costs = predicted_costs(&trained.calibration, &serving, config.limits.max_output_tokens as f64);
            let headroom = config.budget.headroom().unwrap_or_else(|| {
                auto_headroom_from(&trained.calibration, &serving, &costs, config.budget.max_over_probability)
            });
            let target = config.budget.per_query() / (1.0 + headroom);
            let lambda = calibrate_price(&trained.calibration, &serving, &costs, target);
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

fn train(
    config: &Config,
    catalog: &Catalog,
    recorded: &[String],
    est_models: Vec<String>,
    key: TrainKey,
) -> Result<Trained> {
    let t0 = std::time::Instant::now();
    let records = estimator::records::read_records(config.estimator_records())?;
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
    // Prices for the estimator's own cost column: the catalog entry of a model estimated as it.
    let est_catalog = Catalog {
        name: catalog.name.clone(),
        note: None,
        models: est_models
            .iter()
            .filter_map(|m| {
                let i = recorded.iter().position(|r| r == m)?;
                let mut e = catalog.models[i].clone();
                e.name = m.clone();
                Some(e)
            })
            .collect(),
    };
    let knn =
        KnnConfig { k: config.estimator.k, max_query_terms: config.estimator.max_query_terms, ..KnnConfig::default() };
    let same_records = config.replay_records() == config.estimator_records();
    let (estimator, n_train, source) = match &config.estimator.artifact {
        Some(path) => {
            let loaded = estimator::artifact::load_tuned(path, Some(config.estimator.max_query_terms))
                .map_err(|e| RouterError::config(&config.path, "estimator.artifact", e.to_string()))?;
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
        None => (
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
            capabilities: Default::default(),
            context_tokens: None,
        }
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
