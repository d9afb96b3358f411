//! Router config (YAML) in typed sections, one per top-level key. Each section states its
//! defaults once (`Default`), deserializes with serde (kinds are serde enums; a wrong type or an
//! unknown field is reported with its path by `serde_path_to_error`) and checks its values in
//! its own `validate`, naming the field. Relative paths are relative to the config file.

use crate::{Result, RouterError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A section's validation error: the field (relative to the document) and the message.
type Check = std::result::Result<(), (String, String)>;

fn bad(field: &str, msg: impl Into<String>) -> Check {
    Err((field.to_string(), msg.into()))
}

/// `v` must be at least 1.
fn positive(field: &str, v: u64) -> Check {
    if v == 0 {
        bad(field, "must be at least 1")
    } else {
        Ok(())
    }
}

/// A duration in milliseconds between 0 and an hour.
fn millis(field: &str, v: f64) -> Check {
    if v.is_finite() && (0.0..=3.6e6).contains(&v) {
        Ok(())
    } else {
        bad(field, format!("{v} is not a duration in ms between 0 and 3600000"))
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1e3)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen { grpc: SocketAddr::from(([127, 0, 0, 1], 50051)), http: SocketAddr::from(([127, 0, 0, 1], 8080)) }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EstimatorSection {
    /// Routing records to train on (required).
    pub records: Option<PathBuf>,
    /// A trained estimator (`estimator train --out`) used instead of training a kNN on
    /// `records` (which still feed the replay backends).
    pub artifact: Option<PathBuf>,
    pub k: usize,
    /// Neighbour scoring on the query's heaviest features only (0 = all).
    pub max_query_terms: usize,
    /// Each training prompt indexed under its heaviest features only (0 = all): static index
    /// pruning, so a query can score all its features at serving speed.
    pub max_doc_terms: usize,
    /// Predictions kept per trained estimator, keyed by prompt and task (0 = no cache); a new
    /// size applies from the next retrain.
    pub cache_entries: usize,
    /// Model → recorded model whose outcomes stand in for it in the estimator.
    pub proxies: BTreeMap<String, String>,
}

impl Default for EstimatorSection {
    fn default() -> Self {
        EstimatorSection {
            records: None,
            artifact: None,
            k: 25,
            max_query_terms: 0,
            max_doc_terms: 24,
            cache_entries: 4096,
            proxies: BTreeMap::new(),
        }
    }
}

impl EstimatorSection {
    fn validate(&self) -> Check {
        if self.records.is_none() {
            return bad("estimator.records", "missing: routing records to train on");
        }
        positive("estimator.k", self.k as u64)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaySection {
    /// Records the replay backends answer from (default: `estimator.records`).
    pub records: Option<PathBuf>,
    pub ttft_ms: f64,
    pub ms_per_token: f64,
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection { records: None, ttft_ms: 20.0, ms_per_token: 0.5 }
    }
}

impl ReplaySection {
    fn validate(&self) -> Check {
        millis("replay.ttft_ms", self.ttft_ms)?;
        millis("replay.ms_per_token", self.ms_per_token)
    }
    pub fn ttft(&self) -> Duration {
        ms(self.ttft_ms)
    }
    pub fn per_token(&self) -> Duration {
        ms(self.ms_per_token)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSection {
    pub window_ms: f64,
    pub max_batch: usize,
    pub max_queue: usize,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection { window_ms: 5.0, max_batch: 64, max_queue: 4096 }
    }
}

impl BatchSection {
    fn validate(&self) -> Check {
        millis("batch.window_ms", self.window_ms)?;
        positive("batch.max_batch", self.max_batch as u64)?;
        positive("batch.max_queue", self.max_queue as u64)
    }
    pub fn window(&self) -> Duration {
        ms(self.window_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSection {
    pub max_concurrency: usize,
    pub request_timeout_ms: u64,
    /// Refuse calls at once while the runtime runs this far behind (a saturated CPU); 0 = off
    /// (the default: scripts/bench-serve.sh has not shown it helping on 2 shared cores).
    pub max_loop_lag_ms: u64,
    /// Threads of a second runtime that takes admitted calls' work while the serving runtime is
    /// saturated (it runs more than 2 ms late), so the serving runtime still reads every call
    /// and refuses the excess at once; 0 = off. Read at start.
    pub overflow_threads: usize,
}

impl Default for AdmissionSection {
    fn default() -> Self {
        AdmissionSection { max_concurrency: 2048, request_timeout_ms: 60_000, max_loop_lag_ms: 0, overflow_threads: 1 }
    }
}

impl AdmissionSection {
    fn validate(&self) -> Check {
        positive("admission.max_concurrency", self.max_concurrency as u64)?;
        if self.overflow_threads > 256 {
            return bad("admission.overflow_threads", format!("{}: at most 256 (0 = off)", self.overflow_threads));
        }
        positive("admission.request_timeout_ms", self.request_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn max_loop_lag(&self) -> Option<Duration> {
        (self.max_loop_lag_ms > 0).then(|| Duration::from_millis(self.max_loop_lag_ms))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub max_prompt_chars: usize,
    pub max_output_tokens: u32,
    pub default_output_tokens: u32,
    pub max_batch_request: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_prompt_chars: 32_000,
            max_output_tokens: 4096,
            default_output_tokens: 256,
            max_batch_request: 1024,
        }
    }
}

impl LimitsSection {
    fn validate(&self) -> Check {
        positive("limits.max_prompt_chars", self.max_prompt_chars as u64)?;
        positive("limits.max_output_tokens", self.max_output_tokens as u64)?;
        positive("limits.default_output_tokens", self.default_output_tokens as u64)?;
        positive("limits.max_batch_request", self.max_batch_request as u64)?;
        if self.default_output_tokens > self.max_output_tokens {
            return bad(
                "limits.default_output_tokens",
                format!(
                    "{} is above limits.max_output_tokens ({})",
                    self.default_output_tokens, self.max_output_tokens
                ),
            );
        }
        Ok(())
    }
}

/// A setting written as a word (`auto`, `off`) or a number: `budget.price`, `budget.headroom`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum AutoNumber {
    Number(f64),
    Word(String),
}

/// How the batch price λ (the objective is Σ (μ − λ·ĉ)·x) is set.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(try_from = "AutoNumber")]
pub enum Price {
    /// Calibrated at start-up and on reload on the estimator's own training records (out of
    /// sample) so that pricing alone would spend `per_query_usd / (1 + headroom)`.
    #[default]
    Auto,
    /// Σ μ·x under each batch's grant (no price).
    Off,
    Fixed(f64),
}

impl TryFrom<AutoNumber> for Price {
    type Error = String;
    fn try_from(v: AutoNumber) -> std::result::Result<Price, String> {
        match v {
            AutoNumber::Word(w) if w == "auto" => Ok(Price::Auto),
            AutoNumber::Word(w) if w == "off" => Ok(Price::Off),
            AutoNumber::Number(x) if x.is_finite() && x >= 0.0 => Ok(Price::Fixed(x)),
            AutoNumber::Number(x) => Err(format!("{x}: expected auto, off or a number ≥ 0")),
            AutoNumber::Word(w) => Err(format!("`{w}`: expected auto, off or a number ≥ 0")),
        }
    }
}

/// `budget.headroom`: `auto` (from the training records' batch overruns) or a number in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(try_from = "AutoNumber")]
pub enum Headroom {
    #[default]
    Auto,
    Fixed(f64),
}

impl TryFrom<AutoNumber> for Headroom {
    type Error = String;
    fn try_from(v: AutoNumber) -> std::result::Result<Headroom, String> {
        match v {
            AutoNumber::Word(w) if w == "auto" => Ok(Headroom::Auto),
            AutoNumber::Number(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Ok(Headroom::Fixed(x)),
            AutoNumber::Number(x) => Err(format!("{x}: expected auto or a number in [0, 1]")),
            AutoNumber::Word(w) => Err(format!("`{w}`: expected auto or a number in [0, 1]")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSection {
    /// USD per query (required): each batch may spend it × its size (overspend carries over).
    pub per_query_usd: Option<f64>,
    pub carry_unspent: bool,
    /// The ledger's relative margin until it has calibrated its own.
    pub prior_margin: f64,
    /// Allowed probability that a batch's realized cost exceeds its grant: sets κ of the chance
    /// constraint and the ledger margin's quantile level.
    pub max_over_probability: f64,
    /// The batch price λ: the batch problem maximizes Σ (μ − λ·ĉ)·x under the grant.
    pub price: Price,
    /// With `price: auto`, the price aims at per_query_usd / (1 + headroom): the rest stays in the
    /// ledger's balance for cost surprises.
    pub headroom: Headroom,
}

impl Default for BudgetSection {
    fn default() -> Self {
        BudgetSection {
            per_query_usd: None,
            carry_unspent: false,
            prior_margin: 0.1,
            max_over_probability: 0.05,
            price: Price::Auto,
            headroom: Headroom::Auto,
        }
    }
}

impl BudgetSection {
    fn validate(&self) -> Check {
        match self.per_query_usd {
            None => return bad("budget.per_query_usd", "missing: USD per query"),
            Some(b) if !(b.is_finite() && b > 0.0) => {
                return bad("budget.per_query_usd", format!("{b} is not a positive number"))
            }
            Some(_) => {}
        }
        let m = self.prior_margin;
        if !(m.is_finite() && (0.0..=10.0).contains(&m)) {
            return bad("budget.prior_margin", format!("{m} is not in [0, 10]"));
        }
        let e = self.max_over_probability;
        if !(e.is_finite() && e > 0.0 && e <= 0.5) {
            return bad("budget.max_over_probability", format!("{e} is not in (0, 0.5]"));
        }
        Ok(())
    }

    /// The validated allowance per query.
    pub fn per_query(&self) -> f64 {
        self.per_query_usd.unwrap_or(0.0)
    }

    /// The fixed headroom, or None for `auto`.
    pub fn headroom(&self) -> Option<f64> {
        match self.headroom {
            Headroom::Auto => None,
            Headroom::Fixed(x) => Some(x),
        }
    }
}

/// Which assigner solves each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignerKind {
    #[default]
    Fast,
    /// HiGHS for batches up to `mip_max_batch`, `fast` above (and when HiGHS runs out of time).
    Mip,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssignerSection {
    pub kind: AssignerKind,
    /// Bertsimas–Sim budget of uncertainty (0 = nominal).
    pub gamma: f64,
    pub mip_max_batch: usize,
    pub mip_time_limit_ms: u64,
}

impl Default for AssignerSection {
    fn default() -> Self {
        AssignerSection { kind: AssignerKind::Fast, gamma: 0.0, mip_max_batch: 32, mip_time_limit_ms: 50 }
    }
}

impl AssignerSection {
    fn validate(&self) -> Check {
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return bad("assigner.gamma", format!("{} is not a non-negative number", self.gamma));
        }
        positive("assigner.mip_max_batch", self.mip_max_batch as u64)?;
        positive("assigner.mip_time_limit_ms", self.mip_time_limit_ms)
    }
    pub fn mip_time_limit(&self) -> Duration {
        Duration::from_millis(self.mip_time_limit_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendsSection {
    pub timeout_ms: u64,
    /// Router replicas sharing these backends: each takes 1/replicas of every model's slots
    /// (rounded down, at least 1 where the model runs), so together they never exceed them.
    pub replicas: usize,
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
    /// Pass over a model whose learned answer time for a query (from its recent answers, by
    /// prompt and output length) is past the call's remaining deadline, while another allowed
    /// model is predicted to answer in time.
    pub deadline_aware: bool,
}

impl Default for BackendsSection {
    fn default() -> Self {
        BackendsSection {
            timeout_ms: 30_000,
            replicas: 1,
            breaker_failures: 3,
            breaker_open_ms: 2000,
            deadline_aware: true,
        }
    }
}

impl BackendsSection {
    fn validate(&self) -> Check {
        positive("backends.timeout_ms", self.timeout_ms)?;
        positive("backends.replicas", self.replicas as u64)?;
        positive("backends.breaker_failures", self.breaker_failures as u64)?;
        positive("backends.breaker_open_ms", self.breaker_open_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn breaker_open(&self) -> Duration {
        Duration::from_millis(self.breaker_open_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TenantSection {
    name: Option<String>,
    api_key: Option<String>,
    api_key_env: Option<String>,
    /// The key's SHA-256 (hex), so the file holds no key (`llm-router hash-key` prints it).
    api_key_sha256: Option<String>,
    budget_usd: Option<f64>,
    window_s: u64,
    allowed_models: Option<Vec<String>>,
}

/// SHA-256 of an API key, lowercase hex: what the config may hold and what the router compares.
pub fn key_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
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

impl Default for TenantSection {
    fn default() -> Self {
        TenantSection {
            name: None,
            api_key: None,
            api_key_env: None,
            api_key_sha256: None,
            budget_usd: None,
            window_s: 3600,
            allowed_models: None,
        }
    }
}

impl TenantSection {
    /// The tenant, its key hashed; `others` are the tenants before it (names and keys unique).
    fn validate(self, i: usize, others: &[Tenant]) -> std::result::Result<Tenant, (String, String)> {
        let f = |k: &str| format!("tenants[{i}].{k}");
        let fail = |k: &str, msg: String| Err((f(k), msg));
        let Some(name) = self.name.filter(|s| !s.trim().is_empty()) else {
            return fail("name", "missing or empty".into());
        };
        if others.iter().any(|o| o.name == name) {
            return fail("name", format!("duplicate tenant `{name}`"));
        }
        let given = [self.api_key.is_some(), self.api_key_env.is_some(), self.api_key_sha256.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return fail("api_key", "give one of api_key, api_key_env, api_key_sha256".into());
        }
        let plain = match (self.api_key, self.api_key_env) {
            (Some(k), _) => Some(k),
            (None, Some(var)) => match std::env::var(&var) {
                Ok(k) => Some(k),
                Err(_) => return fail("api_key_env", format!("environment variable `{var}` is not set")),
            },
            (None, None) => None,
        };
        if plain.as_ref().is_some_and(|k| k.len() < 8) {
            return fail("api_key", "too short: use at least 8 characters".into());
        }
        let key_sha256 = match (plain, self.api_key_sha256) {
            (Some(k), _) => Some(key_hash(&k)),
            (None, Some(h)) => {
                let h = h.trim().to_ascii_lowercase();
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return fail("api_key_sha256", "expected 64 hex digits (llm-router hash-key)".into());
                }
                Some(h)
            }
            (None, None) => None,
        };
        if key_sha256.is_some() && others.iter().any(|o| o.key_sha256 == key_sha256) {
            return fail("api_key", "the same key is given to another tenant".into());
        }
        let budget_usd = match self.budget_usd {
            None => return fail("budget_usd", "missing".into()),
            Some(b) if !(b.is_finite() && b > 0.0) => {
                return fail("budget_usd", format!("{b} is not a positive number"))
            }
            Some(b) => b,
        };
        if self.window_s == 0 {
            return fail("window_s", "must be at least 1".into());
        }
        if self.allowed_models.as_ref().is_some_and(|l| l.is_empty()) {
            return fail("allowed_models", "empty: omit it to allow every model".into());
        }
        Ok(Tenant {
            name,
            key_sha256,
            budget_usd,
            window: Duration::from_secs(self.window_s),
            allowed_models: self.allowed_models,
        })
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreachable {
    #[default]
    FailClosed,
    FailOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoreName {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct BudgetStoreSection {
    kind: StoreName,
    redis_url: Option<String>,
    redis_url_env: Option<String>,
    key_prefix: String,
    timeout_ms: u64,
    on_unreachable: Unreachable,
    local_slice: f64,
    /// Default: the request timeout + 60 s.
    lease_s: Option<u64>,
    dedup_s: u64,
}

impl Default for BudgetStoreSection {
    fn default() -> Self {
        BudgetStoreSection {
            kind: StoreName::Memory,
            redis_url: None,
            redis_url_env: None,
            key_prefix: "llmroute".into(),
            timeout_ms: 250,
            on_unreachable: Unreachable::FailClosed,
            local_slice: 0.1,
            lease_s: None,
            dedup_s: 900,
        }
    }
}

impl BudgetStoreSection {
    fn validate(self, request_timeout: Duration) -> std::result::Result<BudgetStore, (String, String)> {
        let fail = |k: &str, msg: String| Err((format!("budget_store.{k}"), msg));
        if self.kind == StoreName::Memory {
            if self.redis_url.is_some() || self.redis_url_env.is_some() {
                return fail("redis_url", "given, but budget_store.kind is `memory`".into());
            }
            return Ok(BudgetStore::default());
        }
        let url = match (self.redis_url, self.redis_url_env) {
            (Some(_), Some(_)) => return fail("redis_url", "give redis_url or redis_url_env, not both".into()),
            (Some(u), None) => u,
            (None, Some(var)) => match std::env::var(&var) {
                Ok(u) => u,
                Err(_) => return fail("redis_url_env", format!("environment variable `{var}` is not set")),
            },
            (None, None) => "redis://127.0.0.1:6379/".to_string(),
        };
        if let Err(e) = redis::Client::open(url.as_str()) {
            // Never echo the URL: it may hold a password.
            return fail("redis_url", format!("not a Redis URL (redis://host:port/db): {e}"));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}', ' ']) {
            return fail("key_prefix", "must be non-empty, without braces or spaces".into());
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return fail("timeout_ms", format!("{} is not in 1..=60000", self.timeout_ms));
        }
        if !(self.local_slice.is_finite() && (0.0..=1.0).contains(&self.local_slice)) {
            return fail("local_slice", format!("{} is not in [0, 1]", self.local_slice));
        }
        let lease = match self.lease_s {
            None => request_timeout + Duration::from_secs(60),
            Some(0) => return fail("lease_s", "must be at least 1".into()),
            Some(s) => Duration::from_secs(s),
        };
        if lease <= request_timeout {
            return fail("lease_s", format!("{} s is not longer than admission.request_timeout_ms", lease.as_secs()));
        }
        if self.dedup_s == 0 {
            return fail("dedup_s", "must be at least 1".into());
        }
        Ok(BudgetStore {
            kind: StoreKind::Redis {
                url,
                key_prefix: self.key_prefix,
                timeout: Duration::from_millis(self.timeout_ms),
                on_unreachable: self.on_unreachable,
                local_slice: self.local_slice,
                lease,
                dedup: Duration::from_secs(self.dedup_s),
            },
        })
    }
}

/// TLS for both listeners (rustls): PEM certificate chain and private key, re-read when they
/// change (checked every `reload_interval`) and on every config reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default = "TlsSection::default_interval")]
    reload_interval_s: u64,
}

impl TlsSection {
    fn default_interval() -> u64 {
        10
    }
    fn validate(self, resolve: impl Fn(&Path) -> PathBuf) -> std::result::Result<Tls, (String, String)> {
        let file = |field: &str, v: Option<PathBuf>| match v.map(|p| resolve(&p)) {
            None => Err((format!("tls.{field}"), "missing: path of a PEM file".to_string())),
            Some(p) if !p.is_file() => Err((format!("tls.{field}"), format!("{} is not a readable file", p.display()))),
            Some(p) => Ok(p),
        };
        let cert = file("cert", self.cert)?;
        let key = file("key", self.key)?;
        positive("tls.reload_interval_s", self.reload_interval_s)?;
        Ok(Tls { cert, key, reload_interval: Duration::from_secs(self.reload_interval_s) })
    }
}

/// What the router keeps of answered queries for feedback (request id → tenant, prompt hash,
/// model, μ, σ).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackSection {
    /// How long an answered query can be named by its request id.
    pub retention_s: u64,
    /// At most this many kept (the oldest go first).
    pub max_requests: usize,
    /// Every accepted score is appended here as one JSON line (relative to the config's folder);
    /// none: not written.
    pub log: Option<PathBuf>,
    /// Predictions learn from accepted scores while the router runs (`online.rs`).
    pub online: bool,
    /// Scored answers the online index holds at most (past it, the oldest half goes).
    pub online_max: usize,
    /// Keep each answered query's prompt text until it is scored or expires, and write it into
    /// the log's lines, so `estimator train --feedback LOG` can learn from them. Off: the router
    /// keeps and logs only a hash of the prompt.
    pub log_prompts: bool,
}

impl Default for FeedbackSection {
    fn default() -> Self {
        FeedbackSection {
            retention_s: 3600,
            max_requests: 50_000,
            log: None,
            online: true,
            online_max: 50_000,
            log_prompts: false,
        }
    }
}

impl FeedbackSection {
    fn validate(&self) -> Check {
        positive("feedback.retention_s", self.retention_s)?;
        positive("feedback.max_requests", self.max_requests as u64)?;
        positive("feedback.online_max", self.online_max as u64)?;
        if self.log_prompts && self.log.is_none() {
            return bad("feedback.log_prompts", "needs feedback.log: the prompts are kept only to be written there");
        }
        Ok(())
    }
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_s)
    }
}

/// OpenTelemetry traces (off unless `otlp_endpoint` is set). Changes take a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSection {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Spans are sent at least this often (and whenever 512 are waiting).
    pub export_interval_ms: u64,
    /// Spans waiting for export at most; beyond it they are dropped (and counted).
    pub max_queue: usize,
    /// Share of new traces recorded; a caller's `traceparent` decides for its own trace.
    pub sample_ratio: f64,
}

impl Default for TracingSection {
    fn default() -> Self {
        TracingSection {
            otlp_endpoint: None,
            service_name: "llmroute".into(),
            export_interval_ms: 1000,
            max_queue: 8192,
            sample_ratio: 1.0,
        }
    }
}

impl TracingSection {
    fn validate(&self) -> Check {
        if let Some(e) = &self.otlp_endpoint {
            let uri: http::Uri =
                e.parse().map_err(|err| ("tracing.otlp_endpoint".to_string(), format!("`{e}` is not a URL: {err}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return bad("tracing.otlp_endpoint", format!("`{e}`: expected http://HOST:PORT or https://HOST:PORT"));
            }
        }
        if self.service_name.trim().is_empty() {
            return bad("tracing.service_name", "empty");
        }
        positive("tracing.export_interval_ms", self.export_interval_ms)?;
        positive("tracing.max_queue", self.max_queue as u64)?;
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return bad("tracing.sample_ratio", format!("{} is not between 0 and 1", self.sample_ratio));
        }
        Ok(())
    }
}

/// The file as written: every section typed, with its defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    listen: Listen,
    catalog: Option<PathBuf>,
    plan: Option<PathBuf>,
    estimator: EstimatorSection,
    replay: ReplaySection,
    batch: BatchSection,
    admission: AdmissionSection,
    limits: LimitsSection,
    budget: BudgetSection,
    assigner: AssignerSection,
    backends: BackendsSection,
    instances: BTreeMap<String, u32>,
    tenants: Vec<TenantSection>,
    budget_store: BudgetStoreSection,
    tls: Option<TlsSection>,
    tracing: TracingSection,
    feedback: FeedbackSection,
}

/// A validated router config: the sections, paths resolved against the file's folder, tenants
/// with their keys hashed, the budget store and TLS settings checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub listen: Listen,
    pub catalog: PathBuf,
    /// The allocator's plan: instances per model (overrides `instances`; a catalog model the plan
    /// does not run gets no slots).
    pub plan: Option<PathBuf>,
    pub estimator: EstimatorSection,
    pub replay: ReplaySection,
    pub batch: BatchSection,
    pub admission: AdmissionSection,
    pub limits: LimitsSection,
    pub budget: BudgetSection,
    pub assigner: AssignerSection,
    pub backends: BackendsSection,
    pub instances: BTreeMap<String, u32>,
    pub tenants: Vec<Tenant>,
    pub budget_store: BudgetStore,
    pub tls: Option<Tls>,
    pub tracing: TracingSection,
    pub feedback: FeedbackSection,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| RouterError::Io { path: path.to_path_buf(), source: e })?;
        Self::parse(&text, path)
    }

    /// Parses and validates; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let err = |(field, msg): (String, String)| RouterError::config(path, field, msg);
        let raw: Raw = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { "(document)".to_string() } else { field };
            err((field, e.into_inner().to_string()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let catalog =
            raw.catalog.as_deref().map(resolve).ok_or(("catalog".into(), "missing: path of the model catalog".into()));
        let catalog = catalog.map_err(err)?;
        let checks = [
            raw.estimator.validate(),
            raw.replay.validate(),
            raw.batch.validate(),
            raw.admission.validate(),
            raw.limits.validate(),
            raw.budget.validate(),
            raw.assigner.validate(),
            raw.backends.validate(),
            raw.tracing.validate(),
            raw.feedback.validate(),
        ];
        checks.into_iter().collect::<std::result::Result<(), _>>().map_err(err)?;
        if let Some((model, _)) = raw.instances.iter().find(|(_, n)| **n == 0) {
            return Err(err((format!("instances.{model}"), "must be at least 1".into())));
        }
        if raw.tenants.is_empty() {
            return Err(err(("tenants".into(), "missing or empty: list at least one tenant".into())));
        }
        let mut tenants: Vec<Tenant> = Vec::with_capacity(raw.tenants.len());
        for (i, t) in raw.tenants.into_iter().enumerate() {
            let t = t.validate(i, &tenants).map_err(err)?;
            tenants.push(t);
        }
        let budget_store = raw.budget_store.validate(raw.admission.request_timeout()).map_err(err)?;
        let tls = raw.tls.map(|t| t.validate(resolve)).transpose().map_err(err)?;
        let mut estimator = raw.estimator;
        estimator.records = estimator.records.as_deref().map(resolve);
        estimator.artifact = estimator.artifact.as_deref().map(resolve);
        let mut replay = raw.replay;
        replay.records = replay.records.as_deref().map(resolve);
        let mut feedback = raw.feedback;
        feedback.log = feedback.log.as_deref().map(resolve);
        Ok(Config {
            path: path.to_path_buf(),
            listen: raw.listen,
            catalog,
            plan: raw.plan.as_deref().map(resolve),
            estimator,
            replay,
            batch: raw.batch,
            admission: raw.admission,
            limits: raw.limits,
            budget: raw.budget,
            assigner: raw.assigner,
            backends: raw.backends,
            instances: raw.instances,
            tenants,
            budget_store,
            tls,
            tracing: raw.tracing,
            feedback,
        })
    }

    /// The records the estimator trains on (validated: present).
    pub fn estimator_records(&self) -> &Path {
        self.estimator.records.as_deref().unwrap_or(Path::new(""))
    }

    /// The records the replay backends answer from: `replay.records`, else the estimator's.
    pub fn replay_records(&self) -> &Path {
        self.replay.records.as_deref().unwrap_or_else(|| self.estimator_records())
    }

    /// What the budget ledger takes from the config (at start and on every reload).
    pub fn ledger_settings(&self) -> llmroute_core::ledger::LedgerSettings {
        llmroute_core::ledger::LedgerSettings {
            budget_per_query: self.budget.per_query(),
            carry_unspent: self.budget.carry_unspent,
            max_over_probability: self.budget.max_over_probability,
            prior_margin: self.budget.prior_margin,
            reference_batch: self.batch.max_batch,
        }
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
        for m in self.estimator.proxies.keys() {
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
        assert_eq!(c.replay_records(), Path::new("/etc/llmroute/r.jsonl"));
        assert_eq!(c.batch.max_batch, 64);
        assert_eq!(c.assigner.kind, AssignerKind::Fast);
        assert_eq!(c.tenants[0].key_sha256, None);
        assert_eq!(
            (c.estimator.k, c.estimator.max_query_terms, c.estimator.max_doc_terms, c.estimator.cache_entries),
            (25, 0, 24, 4096)
        );
        assert_eq!(c.tenants[0].window, Duration::from_secs(3600));
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
            (format!("{GOOD}bogus: 1\n"), "bogus"),
            // Type errors and unknown fields are reported at their path (serde_path_to_error).
            (format!("{GOOD}batch: {{window_ms: soon}}\n"), "batch.window_ms"),
            (format!("{GOOD}batch: {{windw_ms: 5}}\n"), "batch.windw_ms"),
            (format!("{GOOD}admission: {{overflow_threads: 100000}}\n"), "admission.overflow_threads"),
            (GOOD.replace("budget_usd: 1}", "budget_usd: 1, window_s: -1}"), "tenants[0].window_s"),
            (format!("{GOOD}budget_store: {{kind: redis, on_unreachable: 3}}\n"), "budget_store.on_unreachable"),
            ("[1, 2]".to_string(), "(document)"),
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
            assert_eq!(c.budget.price, price);
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
    fn tracing_section() {
        let c = Config::parse(GOOD, Path::new("r.yaml")).unwrap();
        assert_eq!(c.tracing, TracingSection::default());
        assert_eq!(c.tracing.otlp_endpoint, None, "off by default");
        let on = format!("{GOOD}tracing: {{otlp_endpoint: 'http://127.0.0.1:4317', sample_ratio: 0.25}}\n");
        let c = Config::parse(&on, Path::new("r.yaml")).unwrap();
        assert_eq!(c.tracing.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!((c.tracing.sample_ratio, c.tracing.service_name.as_str()), (0.25, "llmroute"));
        let cases = [
            ("tracing: {otlp_endpoint: '127.0.0.1:4317'}", "tracing.otlp_endpoint"),
            ("tracing: {otlp_endpoint: 'grpc://collector:4317'}", "tracing.otlp_endpoint"),
            ("tracing: {otlp_endpoint: 'http://'}", "tracing.otlp_endpoint"),
            ("tracing: {service_name: ' '}", "tracing.service_name"),
            ("tracing: {export_interval_ms: 0}", "tracing.export_interval_ms"),
            ("tracing: {max_queue: 0}", "tracing.max_queue"),
            ("tracing: {sample_ratio: 1.5}", "tracing.sample_ratio"),
            ("tracing: {endpoint: 'http://x:4317'}", "tracing.endpoint"),
            ("feedback: {retention_s: 0}", "feedback.retention_s"),
            ("feedback: {max_requests: 0}", "feedback.max_requests"),
            ("feedback: {log_prompts: true}", "feedback.log_prompts"),
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
