use llmroute_core::CoreError;
use std::path::PathBuf;

/// The server crate's one error type, mapped to gRPC status codes and HTTP answers in one place
/// (`status.rs`). Core errors (problem, solver, plan file) arrive through `From<CoreError>`.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// From the core crate: a malformed batch problem, a solver failure, an estimator or plan
    /// file error.
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file field is wrong.
    #[error("config {path}: field `{field}`: {msg}")]
    Config { path: PathBuf, field: String, msg: String },
    /// A request field is wrong (never retry unchanged).
    #[error("field `{field}`: {msg}")]
    BadRequest { field: String, msg: String },
    /// Missing, unknown or mismatched API key / tenant.
    #[error("{0}")]
    Unauthenticated(String),
    /// The tenant may not do this (e.g. a model outside its allowed list).
    #[error("{0}")]
    PermissionDenied(String),
    /// What the call names does not exist for its tenant (e.g. an unknown or expired request id).
    #[error("not found: {0}")]
    NotFound(String),
    /// The call repeats one that already took effect (e.g. a second score for one request).
    #[error("already done: {0}")]
    AlreadyExists(String),
    /// Load shed: the router is at its concurrency or queue limit (safe to retry later).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The tenant's rolling budget is used up.
    #[error("tenant `{tenant}` is over budget: spent ${spent:.6} of ${budget:.6} in the last {window_s} s")]
    TenantOverBudget { tenant: String, spent: f64, budget: f64, window_s: u64 },
    /// No allowed model fits the request's constraints (cost cap, open circuits).
    #[error("no feasible model: {0}")]
    NoFeasibleModel(String),
    /// The call's deadline passed.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// Every feasible backend failed for this query (safe to retry: nothing was charged).
    #[error("backends unavailable: {0}")]
    Unavailable(String),
    /// The shared budget store (Redis) did not answer and the policy is fail closed (safe to
    /// retry: nothing was reserved or charged).
    #[error("budget store unavailable: {0}")]
    StoreUnavailable(String),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RouterError {
    pub fn bad(field: impl Into<String>, msg: impl Into<String>) -> Self {
        RouterError::BadRequest { field: field.into(), msg: msg.into() }
    }

    pub fn config(path: impl Into<PathBuf>, field: impl Into<String>, msg: impl Into<String>) -> Self {
        RouterError::Config { path: path.into(), field: field.into(), msg: msg.into() }
    }
}

impl From<estimator::Error> for RouterError {
    fn from(e: estimator::Error) -> Self {
        RouterError::Core(CoreError::Estimator(e))
    }
}

pub type Result<T> = std::result::Result<T, RouterError>;
