//! llmroute estimator: the routing-records format every tool reads, converters from the shared
//! public data, the model catalog, and the per-(query, model) quality / cost estimator.

// Numeric code indexes row-major (query, model) matrices by position; range loops read clearer.
#![allow(clippy::needless_range_loop)]

pub mod artifact;
mod b64;
pub mod catalog;
pub mod collect;
pub mod convert;
pub mod costmodel;
#[cfg(feature = "minilm")]
pub mod embed;
pub mod error;
pub mod features;
pub mod feedback;
pub mod knn;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod plain;
pub mod records;
pub mod split;
pub mod static_embed;

pub use catalog::{Catalog, ModelEntry};
pub use error::{Error, Result};
pub use knn::{KnnConfig, KnnEstimator, Prediction};
pub use model::{Combine, Embedder, Estimator, TrainOptions};
pub use records::{Outcome, Record};

/// Token count estimate used everywhere a prompt's tokens are not recorded: one token per four
/// characters (the usual rule of thumb for English BPE vocabularies), at least one.
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count() as u32;
    chars.div_ceil(4).max(1)
}
