/// The router crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
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
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, RouterError>;
