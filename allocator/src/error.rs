use std::path::PathBuf;

/// The allocator crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input file's field is wrong.
    #[error("{path}: field `{field}`: {msg}")]
    Field { path: PathBuf, field: String, msg: String },
    /// No plan meets every constraint; each line says which one and by how much.
    #[error("no plan meets every constraint:\n  - {}", .0.join("\n  - "))]
    Infeasible(Vec<String>),
    #[error("solver error: {0}")]
    Solver(String),
    #[error(transparent)]
    Estimator(#[from] estimator::Error),
    #[error(transparent)]
    Core(#[from] llmroute_core::CoreError),
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl AllocError {
    pub fn field(path: impl Into<PathBuf>, field: impl Into<String>, msg: impl Into<String>) -> Self {
        AllocError::Field { path: path.into(), field: field.into(), msg: msg.into() }
    }
}

pub type Result<T> = std::result::Result<T, AllocError>;
