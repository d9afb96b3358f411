//! Router config (YAML): parsed into an unvalidated struct, then checked into `Config`. A bad file
//! is rejected with a message naming the field; relative paths are relative to the config file.

use crate::{Result, RouterError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<RawListen>,
    catalog: Option<String>,
    plan: Option<String>,
    estimator: Option<RawEstimator>,
    replay: Option<RawReplay>,
    batch: Option<RawBatch>,
    admission: Option<RawAdmission>,
    limits: Option<RawLimits>,
    budget: Option<RawBudget>,
    assigner: Option<RawAssigner>,
    backends: Option<RawBackends>,
    #[serde(default)]
    instances: BTreeMap<String, u32>,
    tenants: Option<Vec<RawTenant>>,
    budget_store: Option<RawBudgetStore>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudgetStore {
    kind: Option<String>,
    redis_url: Option<String>,
    redis_url_env: Option<String>,
    key_prefix: Option<String>,
    timeout_ms: Option<u64>,
    on_unreachable: Option<String>,
    local_slice: Option<f64>,
    lease_s: Option<u64>,
    dedup_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    reload_interval_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    grpc: Option<String>,
    http: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEstimator {
    records: Option<String>,
    artifact: Option<String>,
    k: Option<usize>,
    max_query_terms: Option<usize>,
    #[serde(default)]
    proxies: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplay {
    records: Option<String>,
    ttft_ms: Option<f64>,
    ms_per_token: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    window_ms: Option<f64>,
    max_batch: Option<usize>,
    max_queue: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmission {
    max_concurrency: Option<usize>,
    request_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_prompt_chars: Option<usize>,
    max_output_tokens: Option<u32>,
    default_output_tokens: Option<u32>,
    max_batch_request: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    per_query_usd: Option<f64>,
    carry_unspent: Option<bool>,
    prior_margin: Option<f64>,
    max_over_probability: Option<f64>,
    price: Option<RawAutoNumber>,
    headroom: Option<RawAutoNumber>,
}

/// A setting written as a word (`auto`, `off`) or a number: `budget.price`, `budget.headroom`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAutoNumber {
    Number(f64),
    Word(String),
}

/// A parsed `RawAutoNumber` (absent = `auto`).
enum Setting {
    Auto,
    Off,
    Number(f64),
}

/// `auto` (or absent), `off` where `allow_off`, or a finite number `valid` accepts; otherwise the
/// message for the field.
fn auto_or_number(
    raw: Option<RawAutoNumber>,
    allow_off: bool,
    valid: impl Fn(f64) -> bool,
    expected: &str,
) -> std::result::Result<Setting, String> {
    let words = if allow_off { "auto, off" } else { "auto" };
    match raw {
        None => Ok(Setting::Auto),
        Some(RawAutoNumber::Word(w)) if w == "auto" => Ok(Setting::Auto),
        Some(RawAutoNumber::Word(w)) if w == "off" && allow_off => Ok(Setting::Off),
        Some(RawAutoNumber::Number(x)) if x.is_finite() && valid(x) => Ok(Setting::Number(x)),
        Some(RawAutoNumber::Number(x)) => Err(format!("{x}: expected {words} or {expected}")),
        Some(RawAutoNumber::Word(w)) => Err(format!("`{w}`: expected {words} or {expected}")),
    }
}

/// How the batch price λ (the objective is Σ (μ − λ·ĉ)·x) is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Price {
    /// Calibrated at start-up and on reload on the estimator's own training records (out of
    /// sample) so that pricing alone would spend `per_query_usd / (1 + headroom)`.
    Auto,
    /// Σ μ·x under each batch's grant (no price).
    Off,
    Fixed(f64),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssigner {
    kind: Option<String>,
    gamma: Option<f64>,
    mip_max_batch: Option<usize>,
    mip_time_limit_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackends {
    timeout_ms: Option<u64>,
    replicas: Option<u32>,
    breaker_failures: Option<u32>,
    breaker_open_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: Option<String>,
    api_key: Option<String>,
    api_key_env: Option<String>,
    /// The key's SHA-256 (hex), so the file holds no key (`llm-router hash-key` prints it).
    api_key_sha256: Option<String>,
    budget_usd: Option<f64>,
    window_s: Option<u64>,
    allowed_models: Option<Vec<String>>,
}

/// SHA-256 of an API key, lowercase hex: what the config may hold and what the router compares.
pub fn key_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Where tenants' rolling budgets are kept.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BudgetStore {
    pub kind: StoreKind,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum StoreKind {
    /// In this process (each replica keeps its own books).
    #[default]
    Memory,
    /// In Redis, shared by every replica.
    Redis {
        url: String,
        key_prefix: String,
        timeout: Duration,
        on_unreachable: Unreachable,
        /// Fraction of each tenant's budget a replica may spend on its own while Redis is
        /// unreachable (fail open).
        local_slice: f64,
        /// A reservation not settled within this long (its replica died) is released.
        lease: Duration,
        /// How long a settled call's id is remembered against a second charge.
        dedup: Duration,
    },
}

/// What a reservation does when Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    FailClosed,
    FailOpen,
}

/// TLS for both listeners (rustls): PEM certificate chain and private key, re-read when they
/// change (checked every `reload_interval`) and on every config reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub reload_interval: Duration,
}

fn parse_budget_store(
    raw: Option<RawBudgetStore>,
    request_timeout: Duration,
    err: &dyn Fn(&str, String) -> RouterError,
) -> Result<BudgetStore> {
    let Some(b) = raw else { return Ok(BudgetStore::default()) };
    match b.kind.as_deref().unwrap_or("memory") {
        "memory" => {
            if b.redis_url.is_some() || b.redis_url_env.is_some() {
                return Err(err("budget_store.redis_url", "given, but budget_store.kind is `memory`".into()));
            }
            Ok(BudgetStore::default())
        }
        "redis" => {
            let url = match (b.redis_url, b.redis_url_env) {
                (Some(_), Some(_)) => {
                    return Err(err("budget_store.redis_url", "give redis_url or redis_url_env, not both".into()))
                }
                (Some(u), None) => u,
                (None, Some(var)) => std::env::var(&var).map_err(|_| {
                    err("budget_store.redis_url_env", format!("environment variable `{var}` is not set"))
                })?,
                (None, None) => "redis://127.0.0.1:6379/".to_string(),
            };
            if let Err(e) = redis::Client::open(url.as_str()) {
                // Never echo the URL: it may hold a password.
                return Err(err("budget_store.redis_url", format!("not a Redis URL (redis://host:port/db): {e}")));
            }
            let key_prefix = b.key_prefix.unwrap_or_else(|| "llmroute".into());
            if key_prefix.is_empty() || key_prefix.contains(['{', '}', ' ']) {
                return Err(err("budget_store.key_prefix", "must be non-empty, without braces or spaces".into()));
            }
            let timeout_ms = b.timeout_ms.unwrap_or(250);
            if !(1..=60_000).contains(&timeout_ms) {
                return Err(err("budget_store.timeout_ms", format!("{timeout_ms} is not in 1..=60000")));
            }
            let on_unreachable = match b.on_unreachable.as_deref().unwrap_or("fail_closed") {
                "fail_closed" => Unreachable::FailClosed,
                "fail_open" => Unreachable::FailOpen,
                other => {
                    return Err(err(
                        "budget_store.on_unreachable",
                        format!("`{other}`: expected fail_closed or fail_open"),
                    ))
                }
            };
            let local_slice = b.local_slice.unwrap_or(0.1);
            if !(local_slice.is_finite() && (0.0..=1.0).contains(&local_slice)) {
                return Err(err("budget_store.local_slice", format!("{local_slice} is not in [0, 1]")));
            }
            let lease = match b.lease_s {
                None => request_timeout + Duration::from_secs(60),
                Some(0) => return Err(err("budget_store.lease_s", "must be at least 1".into())),
                Some(s) => Duration::from_secs(s),
            };
            if lease <= request_timeout {
                return Err(err(
                    "budget_store.lease_s",
                    format!("{} s is not longer than admission.request_timeout_ms", lease.as_secs()),
                ));
            }
            let dedup = match b.dedup_s.unwrap_or(900) {
                0 => return Err(err("budget_store.dedup_s", "must be at least 1".into())),
                s => Duration::from_secs(s),
            };
            Ok(BudgetStore {
                kind: StoreKind::Redis {
                    url,
                    key_prefix,
                    timeout: Duration::from_millis(timeout_ms),
                    on_unreachable,
                    local_slice,
                    lease,
                    dedup,
                },
            })
        }
        other => Err(err("budget_store.kind", format!("`{other}`: expected memory or redis"))),
    }
}

/// Which assigner solves each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignerKind {
    Fast,
    /// HiGHS for batches up to `mip_max_batch`, `fast` above (and when HiGHS runs out of time).
    Mip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: String,
    /// SHA-256 (lowercase hex) of the tenant's API key; keys given in plain text (or through the
    /// environment) are hashed at load, so no key is kept in memory. None: calls without a key are
    /// accepted for this tenant.
    pub key_sha256: Option<String>,
    pub budget_usd: f64,
    pub window: Duration,
    /// None: every catalog model.
    pub allowed_models: Option<Vec<String>>,
}

/// A validated router config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub catalog: PathBuf,
    /// The allocator's plan: instances per model (overrides `instances`; a catalog model the plan
    /// does not run gets no slots).
    pub plan: Option<PathBuf>,
    pub estimator_records: PathBuf,
    /// A trained estimator (`estimator train --out`) used instead of training a kNN on
    /// `estimator_records` (which still feed the replay backends).
    pub estimator_artifact: Option<PathBuf>,
    pub estimator_k: usize,
    /// Neighbour scoring on the query's heaviest features only (0 = all).
    pub estimator_max_query_terms: usize,
    /// Model → recorded model whose outcomes stand in for it in the estimator.
    pub proxies: BTreeMap<String, String>,
    pub replay_records: PathBuf,
    pub replay_ttft: Duration,
    pub replay_per_token: Duration,
    pub window: Duration,
    pub max_batch: usize,
    pub max_queue: usize,
    pub max_concurrency: usize,
    pub request_timeout: Duration,
    pub max_prompt_chars: usize,
    pub max_output_tokens: u32,
    pub default_output_tokens: u32,
    pub max_batch_request: usize,
    pub budget_per_query: f64,
    pub carry_unspent: bool,
    pub prior_margin: f64,
    /// Allowed probability that a batch's realized cost exceeds its grant: sets κ of the chance
    /// constraint and the ledger margin's quantile level.
    pub max_over_probability: f64,
    /// The batch price λ: the batch problem maximizes Σ (μ − λ·ĉ)·x under the grant.
    pub price: Price,
    /// With `price: auto`, the price aims at per_query_usd / (1 + headroom): the rest stays in the
    /// ledger's balance for cost surprises. None (`auto`, the default): from the training records'
    /// batch overruns (`ledger::auto_headroom`).
    pub headroom: Option<f64>,
    pub assigner: AssignerKind,
    pub gamma: f64,
    pub mip_max_batch: usize,
    pub mip_time_limit: Duration,
    pub backend_timeout: Duration,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    /// Router replicas sharing these backends: each takes 1/replicas of every model's slots
    /// (rounded down, at least 1 where the model runs), so together they never exceed them.
    pub replicas: usize,
    pub instances: BTreeMap<String, u32>,
    pub tenants: Vec<Tenant>,
    pub budget_store: BudgetStore,
    pub tls: Option<Tls>,
}

impl Config {
    /// What the budget ledger takes from the config (at start and on every reload).
    pub fn ledger_settings(&self) -> llmroute_core::ledger::LedgerSettings {
        llmroute_core::ledger::LedgerSettings {
            budget_per_query: self.budget_per_query,
            carry_unspent: self.carry_unspent,
            max_over_probability: self.max_over_probability,
            prior_margin: self.prior_margin,
            reference_batch: self.max_batch,
        }
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| RouterError::Io { path: path.to_path_buf(), source: e })?;
        Self::parse(&text, path)
    }

    /// Parses and validates; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let err = |field: &str, msg: String| RouterError::config(path, field, msg);
        let raw: Raw = serde_yaml::from_str(text).map_err(|e| err("(document)", e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| -> PathBuf {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        let addr = |field: &str, v: Option<String>, default: &str| -> Result<SocketAddr> {
            let v = v.unwrap_or_else(|| default.to_string());
            v.parse().map_err(|_| err(field, format!("`{v}` is not an address like 127.0.0.1:50051")))
        };
        let listen = raw.listen.unwrap_or_default();
        let grpc_listen = addr("listen.grpc", listen.grpc, "127.0.0.1:50051")?;
        let http_listen = addr("listen.http", listen.http, "127.0.0.1:8080")?;
        let catalog = resolve(&raw.catalog.ok_or_else(|| err("catalog", "missing: path of the model catalog".into()))?);
        let est = raw.estimator.unwrap_or_default();
        let estimator_records = resolve(
            &est.records.ok_or_else(|| err("estimator.records", "missing: routing records to train on".into()))?,
        );
        let estimator_k = est.k.unwrap_or(25);
        if estimator_k == 0 {
            return Err(err("estimator.k", "must be at least 1".into()));
        }
        let replay = raw.replay.unwrap_or_default();
        let replay_records = replay.records.map(|p| resolve(&p)).unwrap_or_else(|| estimator_records.clone());
        let ms = |field: &str, v: Option<f64>, default: f64| -> Result<Duration> {
            let v = v.unwrap_or(default);
            if !(v.is_finite() && (0.0..=3.6e6).contains(&v)) {
                return Err(err(field, format!("{v} is not a duration in ms between 0 and 3600000")));
            }
            Ok(Duration::from_secs_f64(v / 1e3))
        };
        let replay_ttft = ms("replay.ttft_ms", replay.ttft_ms, 20.0)?;
        let replay_per_token = ms("replay.ms_per_token", replay.ms_per_token, 0.5)?;
        let batch = raw.batch.unwrap_or_default();
        let window = ms("batch.window_ms", batch.window_ms, 5.0)?;
        let pos = |field: &str, v: Option<usize>, default: usize| -> Result<usize> {
            match v.unwrap_or(default) {
                0 => Err(err(field, "must be at least 1".into())),
                v => Ok(v),
            }
        };
        let max_batch = pos("batch.max_batch", batch.max_batch, 64)?;
        let max_queue = pos("batch.max_queue", batch.max_queue, 4096)?;
        let adm = raw.admission.unwrap_or_default();
        let max_concurrency = pos("admission.max_concurrency", adm.max_concurrency, 2048)?;
        let request_timeout = Duration::from_millis(pos(
            "admission.request_timeout_ms",
            adm.request_timeout_ms.map(|v| v as usize),
            60_000,
        )? as u64);
        let lim = raw.limits.unwrap_or_default();
        let max_prompt_chars = pos("limits.max_prompt_chars", lim.max_prompt_chars, 32_000)?;
        let max_output_tokens =
            pos("limits.max_output_tokens", lim.max_output_tokens.map(|v| v as usize), 4096)? as u32;
        let default_output_tokens =
            pos("limits.default_output_tokens", lim.default_output_tokens.map(|v| v as usize), 256)? as u32;
        if default_output_tokens > max_output_tokens {
            return Err(err(
                "limits.default_output_tokens",
                format!("{default_output_tokens} is above limits.max_output_tokens ({max_output_tokens})"),
            ));
        }
        let max_batch_request = pos("limits.max_batch_request", lim.max_batch_request, 1024)?;
        let bud = raw.budget.unwrap_or_default();
        let budget_per_query =
            bud.per_query_usd.ok_or_else(|| err("budget.per_query_usd", "missing: USD per query".into()))?;
        if !(budget_per_query.is_finite() && budget_per_query > 0.0) {
            return Err(err("budget.per_query_usd", format!("{budget_per_query} is not a positive number")));
        }
        let prior_margin = bud.prior_margin.unwrap_or(0.1);
        if !(prior_margin.is_finite() && (0.0..=10.0).contains(&prior_margin)) {
            return Err(err("budget.prior_margin", format!("{prior_margin} is not in [0, 10]")));
        }
        let max_over_probability = bud.max_over_probability.unwrap_or(0.05);
        if !(max_over_probability.is_finite() && max_over_probability > 0.0 && max_over_probability <= 0.5) {
            return Err(err("budget.max_over_probability", format!("{max_over_probability} is not in (0, 0.5]")));
        }
        let price =
            match auto_or_number(bud.price, true, |x| x >= 0.0, "a number ≥ 0").map_err(|m| err("budget.price", m))? {
                Setting::Auto => Price::Auto,
                Setting::Off => Price::Off,
                Setting::Number(x) => Price::Fixed(x),
            };
        let headroom = match auto_or_number(bud.headroom, false, |x| (0.0..=1.0).contains(&x), "a number in [0, 1]")
            .map_err(|m| err("budget.headroom", m))?
        {
            Setting::Number(x) => Some(x),
            Setting::Auto | Setting::Off => None,
        };
        let asg = raw.assigner.unwrap_or_default();
        let assigner = match asg.kind.as_deref().unwrap_or("fast") {
            "fast" => AssignerKind::Fast,
            "mip" => AssignerKind::Mip,
            other => return Err(err("assigner.kind", format!("`{other}`: expected `fast` or `mip`"))),
        };
        let gamma = asg.gamma.unwrap_or(0.0);
        if !(gamma.is_finite() && gamma >= 0.0) {
            return Err(err("assigner.gamma", format!("{gamma} is not a non-negative number")));
        }
        let mip_max_batch = pos("assigner.mip_max_batch", asg.mip_max_batch, 32)?;
        let mip_time_limit =
            Duration::from_millis(
                pos("assigner.mip_time_limit_ms", asg.mip_time_limit_ms.map(|v| v as usize), 50)? as u64
            );
        let be = raw.backends.unwrap_or_default();
        let backend_timeout =
            Duration::from_millis(pos("backends.timeout_ms", be.timeout_ms.map(|v| v as usize), 30_000)? as u64);
        let replicas = pos("backends.replicas", be.replicas.map(|v| v as usize), 1)?;
        let breaker_failures = pos("backends.breaker_failures", be.breaker_failures.map(|v| v as usize), 3)? as u32;
        let breaker_open = Duration::from_millis(pos(
            "backends.breaker_open_ms",
            be.breaker_open_ms.map(|v| v as usize),
            2000,
        )? as u64);
        for (model, n) in &raw.instances {
            if *n == 0 {
                return Err(err(&format!("instances.{model}"), "must be at least 1".into()));
            }
        }
        let raw_tenants = raw.tenants.unwrap_or_default();
        if raw_tenants.is_empty() {
            return Err(err("tenants", "missing or empty: list at least one tenant".into()));
        }
        let mut tenants: Vec<Tenant> = Vec::new();
        for (i, t) in raw_tenants.into_iter().enumerate() {
            let f = |k: &str| format!("tenants[{i}].{k}");
            let name =
                t.name.filter(|s| !s.trim().is_empty()).ok_or_else(|| err(&f("name"), "missing or empty".into()))?;
            if tenants.iter().any(|o| o.name == name) {
                return Err(err(&f("name"), format!("duplicate tenant `{name}`")));
            }
            let given = [t.api_key.is_some(), t.api_key_env.is_some(), t.api_key_sha256.is_some()];
            if given.iter().filter(|g| **g).count() > 1 {
                return Err(err(&f("api_key"), "give one of api_key, api_key_env, api_key_sha256".into()));
            }
            let plain = match (t.api_key, t.api_key_env) {
                (Some(k), _) => Some(k),
                (None, Some(var)) => Some(
                    std::env::var(&var)
                        .map_err(|_| err(&f("api_key_env"), format!("environment variable `{var}` is not set")))?,
                ),
                (None, None) => None,
            };
            if plain.as_ref().is_some_and(|k| k.len() < 8) {
                return Err(err(&f("api_key"), "too short: use at least 8 characters".into()));
            }
            let key_sha256 = match (plain, t.api_key_sha256) {
                (Some(k), _) => Some(key_hash(&k)),
                (None, Some(h)) => {
                    let h = h.trim().to_ascii_lowercase();
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(err(&f("api_key_sha256"), "expected 64 hex digits (llm-router hash-key)".into()));
                    }
                    Some(h)
                }
                (None, None) => None,
            };
            if key_sha256.is_some() && tenants.iter().any(|o| o.key_sha256 == key_sha256) {
                return Err(err(&f("api_key"), "the same key is given to another tenant".into()));
            }
            let budget_usd = t.budget_usd.ok_or_else(|| err(&f("budget_usd"), "missing".into()))?;
            if !(budget_usd.is_finite() && budget_usd > 0.0) {
                return Err(err(&f("budget_usd"), format!("{budget_usd} is not a positive number")));
            }
            let window_s = t.window_s.unwrap_or(3600);
            if window_s == 0 {
                return Err(err(&f("window_s"), "must be at least 1".into()));
            }
            if let Some(list) = &t.allowed_models {
                if list.is_empty() {
                    return Err(err(&f("allowed_models"), "empty: omit it to allow every model".into()));
                }
            }
            tenants.push(Tenant {
                name,
                key_sha256,
                budget_usd,
                window: Duration::from_secs(window_s),
                allowed_models: t.allowed_models,
            });
        }
        let budget_store = parse_budget_store(raw.budget_store, request_timeout, &err)?;
        let tls = match raw.tls {
            None => None,
            Some(t) => {
                let file = |field: &str, v: Option<String>| -> Result<PathBuf> {
                    let p = resolve(&v.ok_or_else(|| err(field, "missing: path of a PEM file".into()))?);
                    if !p.is_file() {
                        return Err(err(field, format!("{} is not a readable file", p.display())));
                    }
                    Ok(p)
                };
                let cert = file("tls.cert", t.cert)?;
                let key = file("tls.key", t.key)?;
                let every = pos("tls.reload_interval_s", t.reload_interval_s.map(|v| v as usize), 10)?;
                Some(Tls { cert, key, reload_interval: Duration::from_secs(every as u64) })
            }
        };
        Ok(Config {
            path: path.to_path_buf(),
            grpc_listen,
            http_listen,
            catalog,
            plan: raw.plan.map(|p| resolve(&p)),
            estimator_records,
            estimator_artifact: est.artifact.map(|p| resolve(&p)),
            estimator_k,
            estimator_max_query_terms: est.max_query_terms.unwrap_or(32),
            proxies: est.proxies,
            replay_records,
            replay_ttft,
            replay_per_token,
            window,
            max_batch,
            max_queue,
            max_concurrency,
            request_timeout,
            max_prompt_chars,
            max_output_tokens,
            default_output_tokens,
            max_batch_request,
            budget_per_query,
            carry_unspent: bud.carry_unspent.unwrap_or(false),
            prior_margin,
            max_over_probability,
            price,
            headroom,
            assigner,
            gamma,
            mip_max_batch,
            mip_time_limit,
            backend_timeout,
            breaker_failures,
            breaker_open,
            replicas,
            instances: raw.instances,
            tenants,
            budget_store,
            tls,
        })
    }

    /// Checks names that refer to the catalog (instances, proxies, tenants' allowed models).
    pub fn check_against(&self, models: &[String]) -> Result<()> {
        let known = |m: &str| models.iter().any(|n| n == m);
        let err = |field: String, msg: String| RouterError::config(&self.path, field, msg);
        for m in self.instances.keys() {
            if !known(m) {
                return Err(err(format!("instances.{m}"), format!("`{m}` is not in the catalog")));
            }
        }
        for m in self.proxies.keys() {
            if !known(m) {
                return Err(err(format!("estimator.proxies.{m}"), format!("`{m}` is not in the catalog")));
            }
        }
        for (i, t) in self.tenants.iter().enumerate() {
            for (k, m) in t.allowed_models.iter().flatten().enumerate() {
                if !known(m) {
                    return Err(err(
                        format!("tenants[{i}].allowed_models[{k}]"),
                        format!("`{m}` is not in the catalog"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "catalog: c.yaml\nestimator: {records: r.jsonl}\nbudget: {per_query_usd: 0.001}\n\
                        tenants: [{name: default, budget_usd: 1}]\n";

    #[test]
    fn good_config_gets_defaults_and_relative_paths() {
        let c = Config::parse(GOOD, Path::new("/etc/llmroute/router.yaml")).unwrap();
        assert_eq!(c.catalog, PathBuf::from("/etc/llmroute/c.yaml"));
        assert_eq!(c.replay_records, PathBuf::from("/etc/llmroute/r.jsonl"));
        assert_eq!(c.max_batch, 64);
        assert_eq!(c.assigner, AssignerKind::Fast);
        assert_eq!(c.tenants[0].key_sha256, None);
    }

    #[test]
    fn api_keys_are_kept_hashed() {
        let plain = GOOD.replace("budget_usd: 1}", "budget_usd: 1, api_key: secret-key-123}");
        let c = Config::parse(&plain, Path::new("r.yaml")).unwrap();
        let h = key_hash("secret-key-123");
        assert_eq!(c.tenants[0].key_sha256.as_deref(), Some(h.as_str()));
        assert_eq!(h.len(), 64);
        // Only the hash in the file: same tenant key, upper case hex accepted.
        let hashed = GOOD.replace("budget_usd: 1}", &format!("budget_usd: 1, api_key_sha256: {}}}", h.to_uppercase()));
        let c = Config::parse(&hashed, Path::new("r.yaml")).unwrap();
        assert_eq!(c.tenants[0].key_sha256.as_deref(), Some(h.as_str()));
        for bad in ["api_key_sha256: abc", "api_key: secret-key-123, api_key_sha256: 00"] {
            let text = GOOD.replace("budget_usd: 1}", &format!("budget_usd: 1, {bad}}}"));
            let e = Config::parse(&text, Path::new("r.yaml")).unwrap_err().to_string();
            assert!(e.contains("tenants[0].api_key"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (GOOD.replace("0.001", "-1"), "budget.per_query_usd"),
            (format!("{GOOD}batch: {{max_batch: 0}}\n"), "batch.max_batch"),
            (format!("{GOOD}assigner: {{kind: greedy}}\n"), "assigner.kind"),
            (format!("{GOOD}listen: {{grpc: nowhere}}\n"), "listen.grpc"),
            (GOOD.replace("budget_usd: 1", "budget_usd: 1, api_key: abc"), "tenants[0].api_key"),
            (format!("{GOOD}bogus: 1\n"), "(document)"),
            (GOOD.replace("catalog: c.yaml\n", ""), "catalog"),
            (GOOD.replace("per_query_usd: 0.001", "per_query_usd: 0.001, price: cheap"), "budget.price"),
            (GOOD.replace("per_query_usd: 0.001", "per_query_usd: 0.001, price: -3"), "budget.price"),
            (GOOD.replace("per_query_usd: 0.001", "per_query_usd: 0.001, headroom: 2"), "budget.headroom"),
            (GOOD.replace("per_query_usd: 0.001", "per_query_usd: 0.001, headroom: lots"), "budget.headroom"),
            (
                GOOD.replace("per_query_usd: 0.001", "per_query_usd: 0.001, max_over_probability: 0.7"),
                "budget.max_over_probability",
            ),
        ];
        for (text, price) in [("auto", Price::Auto), ("off", Price::Off), ("250", Price::Fixed(250.0))] {
            let c = Config::parse(
                &GOOD.replace("per_query_usd: 0.001", &format!("per_query_usd: 0.001, price: {text}")),
                Path::new("r.yaml"),
            )
            .unwrap();
            assert_eq!(c.price, price);
        }
        for (text, field) in cases {
            let e = Config::parse(&text, Path::new("r.yaml")).unwrap_err().to_string();
            assert!(e.contains(&format!("field `{field}`")), "{field}: {e}");
        }
    }

    #[test]
    fn budget_store_and_tls_sections() {
        let c = Config::parse(GOOD, Path::new("r.yaml")).unwrap();
        assert_eq!(c.budget_store.kind, StoreKind::Memory);
        assert_eq!(c.tls, None);
        let text =
            format!("{GOOD}budget_store: {{kind: redis, redis_url: 'redis://h:6380/2', on_unreachable: fail_open}}\n");
        let c = Config::parse(&text, Path::new("r.yaml")).unwrap();
        let StoreKind::Redis { url, on_unreachable, local_slice, lease, .. } = c.budget_store.kind else {
            panic!("not redis")
        };
        assert_eq!((url.as_str(), on_unreachable, local_slice), ("redis://h:6380/2", Unreachable::FailOpen, 0.1));
        assert_eq!(lease, Duration::from_secs(120));
        let cases = [
            ("budget_store: {kind: etcd}", "budget_store.kind"),
            ("budget_store: {kind: redis, redis_url: 'http://x'}", "budget_store.redis_url"),
            ("budget_store: {kind: redis, on_unreachable: maybe}", "budget_store.on_unreachable"),
            ("budget_store: {kind: redis, local_slice: 2}", "budget_store.local_slice"),
            ("budget_store: {kind: redis, lease_s: 5}", "budget_store.lease_s"),
            ("budget_store: {kind: redis, key_prefix: 'a{b'}", "budget_store.key_prefix"),
            ("budget_store: {kind: redis, redis_url_env: LLMROUTE_SURELY_UNSET_VAR}", "budget_store.redis_url_env"),
            ("budget_store: {redis_url: 'redis://x'}", "budget_store.redis_url"),
            ("tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}", "tls.cert"),
            ("tls: {key: k.pem}", "tls.cert"),
        ];
        for (extra, field) in cases {
            let e = Config::parse(&format!("{GOOD}{extra}\n"), Path::new("r.yaml")).unwrap_err().to_string();
            assert!(e.contains(&format!("field `{field}`")), "{field}: {e}");
        }
    }

    #[test]
    fn names_are_checked_against_the_catalog() {
        let text = format!("{GOOD}instances: {{ghost: 2}}\n");
        let c = Config::parse(&text, Path::new("r.yaml")).unwrap();
        let e = c.check_against(&["a".into()]).unwrap_err().to_string();
        assert!(e.contains("instances.ghost"), "{e}");
    }
}
