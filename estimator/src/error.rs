use std::path::PathBuf;

/// The estimator crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Record { path: PathBuf, line: usize, msg: String },
    #[error("{path}: {msg}")]
    Csv { path: PathBuf, msg: String },
    #[error("catalog {path}: field `{field}`: {msg}")]
    Catalog { path: PathBuf, field: String, msg: String },
    #[error("invalid input: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
