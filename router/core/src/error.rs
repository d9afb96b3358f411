use std::path::PathBuf;

/// The core crate's one error type: a malformed problem or file, a solver failure. The server
/// turns it into its own `RouterError` (`From`), which it maps to gRPC / HTTP in one place.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The caller's input is malformed (bad problem shape, bad flag, bad file).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The solver failed (not: the problem was infeasible, which assigners answer with a
    /// best-effort assignment and a status).
    #[error("solver error: {0}")]
    Solver(String),
    #[error(transparent)]
    Estimator(#[from] estimator::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file field is wrong.
    #[error("{path}: field `{field}`: {msg}")]
    Config { path: PathBuf, field: String, msg: String },
}

impl CoreError {
    pub fn config(path: impl Into<PathBuf>, field: impl Into<String>, msg: impl Into<String>) -> Self {
        CoreError::Config { path: path.into(), field: field.into(), msg: msg.into() }
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;
